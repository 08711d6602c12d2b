"""Magnitude pruning: native Keras 3 masks (every backend), tfmot's schedule step for step, the tfmot
bridge, global thresholds, strip, sparse TFLite from both, and the Keras 3 process intact after tfmot."""

import importlib.util
import json
import os
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest
import tensorflow as tf

import keras_visrec
from keras_visrec import cifar
from keras_visrec.pruning import magnitude

HAS_TFMOT = importlib.util.find_spec("tensorflow_model_optimization") is not None and \
    importlib.util.find_spec("tf_keras") is not None
# find_spec, not importorskip: importing tfmot here would flip TF_USE_LEGACY_KERAS for the process,
# which is exactly what the bridge must not do
needs_tfmot = pytest.mark.skipif(not HAS_TFMOT, reason="needs tensorflow-model-optimization and tf_keras")

RNG = np.random.default_rng(0)
X = RNG.uniform(0, 255, (64, 16, 16, 3)).astype("float32")
Y = RNG.integers(0, 10, 64).astype("int32")


def _vgg():
    keras.utils.set_random_seed(0)
    return cifar.CIFARVGG([8, "M", 16, "M", 16], head="l1", name="v", input_shape=(16, 16, 3))


def _data():
    return tf.data.Dataset.from_tensor_slices((X, Y)).batch(16)


def _kept(size, sparsity):  # tfmot's rule for the weights a mask keeps
    return max(int(np.round(np.float32(size) * np.float32(1 - sparsity))), 1)


def test_import_keeps_tfmot_out_of_the_process():
    code = ("import sys, keras_visrec, keras_visrec.pruning.surgery, keras_visrec.pruning.magnitude; "
            "keras_visrec.VGG16CIFAR; assert 'tensorflow_model_optimization' not in sys.modules; "
            "import os; assert 'TF_USE_LEGACY_KERAS' not in os.environ")
    env = {k: v for k, v in os.environ.items() if k != "TF_USE_LEGACY_KERAS"}
    subprocess.run([sys.executable, "-c", code], check=True, env=env, timeout=300)


@needs_tfmot
def test_schedules_match_tfmot_step_for_step():
    from keras_visrec.pruning.tfmot_bridge import _import_tfmot

    _, tfmot = _import_tfmot()
    api = tfmot.sparsity.keras
    pairs = [
        (magnitude.PolynomialSparsity(0.0, 0.8, begin_step=3, end_step=43, frequency=4),
         api.PolynomialDecay(0.0, 0.8, begin_step=3, end_step=43, frequency=4)),
        (magnitude.PolynomialSparsity(0.1, 0.9, begin_step=0, end_step=10, power=2, frequency=1),
         api.PolynomialDecay(0.1, 0.9, begin_step=0, end_step=10, power=2, frequency=1)),
        (magnitude.ConstantSparsity(0.6, begin_step=5, end_step=30, frequency=7),
         api.ConstantSparsity(0.6, begin_step=5, end_step=30, frequency=7)),
        (magnitude.ConstantSparsity(0.5, frequency=3), api.ConstantSparsity(0.5, begin_step=0, frequency=3)),
    ]
    for ours, theirs in pairs:
        for step in range(60):
            update, sparsity = ours(step)
            expected_update, expected_sparsity = theirs(tf.constant(step, tf.int64))
            assert update == bool(expected_update), (ours, step)
            assert sparsity == pytest.approx(float(expected_sparsity), abs=1e-6), (ours, step)


def test_schedule_arguments_are_checked():
    for kwargs, match in ((dict(final_sparsity=1.0), "final_sparsity"), (dict(begin_step=-1), "begin_step"),
                          (dict(end_step=2), "end_step"), (dict(frequency=0), "frequency")):
        arguments = {**dict(initial_sparsity=0.0, final_sparsity=0.5, begin_step=3, end_step=10), **kwargs}
        with pytest.raises(ValueError, match=match):
            magnitude.PolynomialSparsity(**arguments)
    with pytest.raises(ValueError, match="target_sparsity"):
        magnitude.ConstantSparsity(-0.1)
    model = _vgg()
    for ratio in (1.0, -0.5, "0.5"):
        with pytest.raises(ValueError, match="ratio"):
            magnitude.magnitude_prune(model, None, ratio=ratio)
    with pytest.raises(ValueError, match="schedule"):
        magnitude.magnitude_prune(model, _data(), schedule="cubic")
    with pytest.raises(ValueError, match="backend"):
        magnitude.magnitude_prune(model, _data(), backend="torch")
    with pytest.raises(ValueError, match="not a conv"):
        magnitude.global_magnitude_sparsities(model, 0.5, layers=["v_bn_0"])
    with pytest.raises(TypeError, match="cannot be magnitude-masked"):
        magnitude.MagnitudeMask(model.get_layer("v_bn_0"), magnitude.ConstantSparsity(0.5))
    with pytest.warns(DeprecationWarning, match="use `ratio=`"):
        _, report = magnitude.magnitude_prune(model, None, sparsity=0.25)
    assert all(share == pytest.approx(0.25, abs=0.01) for share in report.sparsity.values())


def test_native_masks_follow_the_schedule_at_every_update_and_strip_bakes_them():
    model = _vgg()
    schedule = magnitude.PolynomialSparsity(0.0, 0.7, begin_step=0, end_step=6, frequency=2)
    masked = magnitude.prune_low_magnitude(model, schedule)
    assert [layer.name for layer in magnitude.masked_layers(masked)] == ["v_conv_0", "v_conv_2", "v_conv_4", "v_fc_1",
                                                                        "v_classifier"]
    seen = []

    def record(step, shares):
        zeros = {w.name: int((keras.ops.convert_to_numpy(w.mask) == 0).sum()) for w in magnitude.masked_layers(masked)}
        seen.append((step, dict(shares), zeros))

    masked.compile(keras.optimizers.SGD(0.01), "sparse_categorical_crossentropy")
    masked.fit(X, Y, batch_size=16, epochs=2, verbose=0, callbacks=[magnitude.UpdatePruningMasks(on_update=record)])
    assert [step for step, _, _ in seen] == [2, 4, 6]  # first batch is step 1, as in tfmot
    for step, shares, zeros in seen:
        for wrapper in magnitude.masked_layers(masked):
            size = int(np.prod(wrapper.mask.shape))
            assert shares[wrapper.name] == pytest.approx(schedule(step)[1])
            assert zeros[wrapper.name] == size - _kept(size, schedule(step)[1])
    assert int(keras.ops.convert_to_numpy(magnitude.masked_layers(masked)[0].pruning_step)) == 8

    stripped = magnitude.strip_pruning(masked, name="v_sparse")
    assert stripped.name == "v_sparse" and not magnitude.masked_layers(stripped)
    assert [type(layer) for layer in stripped.layers] == [type(layer) for layer in model.layers]
    np.testing.assert_allclose(stripped.predict(X[:4], verbose=0), masked.predict(X[:4], verbose=0), atol=1e-5)
    assert magnitude.weight_sparsity(stripped)["v_fc_1"] == pytest.approx(0.7, abs=0.01)


def test_one_shot_global_threshold_is_one_threshold_over_all_layers():
    model = _vgg()
    pruned, report = magnitude.magnitude_prune(model, None, ratio=0.8, global_threshold=True, name="v80")
    assert pruned.name == "v80" and report.method == "magnitude" and report.details["schedule"] == "one-shot"
    before = {n: np.abs(model.get_layer(n).kernel.numpy()) for n in report.sparsity}
    after = {n: pruned.get_layer(n).kernel.numpy() for n in report.sparsity}
    kept = np.concatenate([before[n][after[n] != 0] for n in before])
    dropped = np.concatenate([before[n][after[n] == 0] for n in before])
    assert dropped.max() <= kept.min()  # one threshold for every layer
    assert dropped.size / (dropped.size + kept.size) == pytest.approx(0.8, abs=1e-3)
    assert max(report.sparsity.values()) - min(report.sparsity.values()) > 0.1  # unequal layers
    text = str(report)
    assert "v_fc_1" in text and "non-zero" in text and "removed" in text
    per_layer, report = magnitude.magnitude_prune(model, None, ratio={"v_conv_2": 0.5, "v_fc_1": 0.9})
    assert report.sparsity == {"v_conv_2": pytest.approx(0.5, abs=1e-3), "v_fc_1": pytest.approx(0.9, abs=1e-3)}
    assert magnitude.weight_sparsity(per_layer)["v_conv_0"] == 0.0


def test_masked_model_saves_and_reloads_with_its_masks(tmp_path):
    masked = magnitude.prune_low_magnitude(_vgg(), magnitude.ConstantSparsity(0.5, frequency=1), layers=["v_fc_1"])
    masked.compile(keras.optimizers.SGD(0.01), "sparse_categorical_crossentropy")
    masked.fit(X, Y, batch_size=32, epochs=1, verbose=0, callbacks=[magnitude.UpdatePruningMasks()])
    masked.save(tmp_path / "masked.keras")
    again = keras.models.load_model(tmp_path / "masked.keras")
    wrapper = again.get_layer("v_fc_1")
    assert isinstance(wrapper, magnitude.MagnitudeMask) and wrapper.schedule == magnitude.ConstantSparsity(0.5, frequency=1)
    assert float(np.mean(wrapper.mask.numpy())) == 0.5 and int(wrapper.pruning_step.numpy()) == 2
    np.testing.assert_allclose(again.predict(X[:4], verbose=0), masked.predict(X[:4], verbose=0), atol=1e-5)


def test_native_convnext_with_constant_sparsity():
    model = keras_visrec.ConvNeXt((1, 1, 1, 1), (8, 16, 32, 64), input_shape=(32, 32, 3), classes=10, name="cx")
    x32 = np.repeat(np.repeat(X[:32], 2, axis=1), 2, axis=2)
    pruned, report = magnitude.magnitude_prune(model, (x32, Y[:32]), ratio=0.5, schedule="constant", epochs=1,
                                               batch_size=16, frequency=1)
    assert set(report.sparsity) >= {"cx_stage_0_block_0_pointwise_conv_1", "cx_head_dense"}
    assert all(abs(s - 0.5) < 0.01 for s in report.sparsity.values())
    # PointwiseDense layers were masked and baked back as PointwiseDense
    assert type(pruned.get_layer("cx_stage_0_block_0_pointwise_conv_1")) is type(
        model.get_layer("cx_stage_0_block_0_pointwise_conv_1"))
    np.testing.assert_array_equal(pruned.predict(x32[:2], verbose=0).shape, (2, 10))


@needs_tfmot
def test_tfmot_bridge_reaches_the_native_sparsities_exports_sparse_and_keeps_keras_3(tmp_path):
    model = _vgg()
    twin = magnitude.to_tf_keras(model)
    np.testing.assert_allclose(twin.predict(X[:4], verbose=0), model.predict(X[:4], verbose=0), atol=1e-5)
    before = os.environ.get("TF_USE_LEGACY_KERAS")
    settings = dict(ratio=0.8, epochs=2, frequency=2)
    bridged, bridged_report = magnitude.magnitude_prune(model, _data(), backend="tfmot", name="vb", **settings)
    native, native_report = magnitude.magnitude_prune(model, _data(), **settings)
    assert isinstance(bridged, keras.Model) and not hasattr(bridged, "_keras_api_names_v1") and bridged.name == "vb"
    # the same schedule reaches the same count of zeros in every layer
    assert bridged_report.sparsity == native_report.sparsity
    assert bridged_report.details["backend"] == "tfmot" and native_report.details["backend"] == "keras"
    kernels = [bridged.get_layer(n).kernel.numpy() for n in bridged_report.sparsity]
    dense_bytes = 4 * sum(k.size for k in kernels)  # the kernels alone, stored densely
    pytest.importorskip("ai_edge_litert")
    for pruned, name in ((bridged, "tfmot"), (native, "keras")):
        exported = keras_visrec.export_tflite(pruned, tmp_path / f"{name}.tflite", sparse=True)
        assert exported.size_bytes < 0.6 * dense_bytes, (name, exported.size_bytes, dense_bytes)

    # the Keras 3 process still works: env restored, tf.keras unchanged, new models train and save
    assert os.environ.get("TF_USE_LEGACY_KERAS") == before
    assert tf.keras.Model is keras.Model
    again = keras_visrec.ConvNeXt((1, 1, 1, 1), (8, 16, 32, 64), input_shape=(32, 32, 3), classes=10, name="again")
    again.compile("adam", "sparse_categorical_crossentropy")
    again.fit(np.zeros((8, 32, 32, 3), "float32"), Y[:8], epochs=1, verbose=0)
    again.save(str(tmp_path / "again.keras"))
    assert keras.models.load_model(str(tmp_path / "again.keras")).name == "again"


_BACKEND_SCRIPT = textwrap.dedent("""
    import json, sys
    import numpy as np, keras
    from keras_visrec.pruning import magnitude
    keras.utils.set_random_seed(0)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(32, 8, 8, 3)).astype("float32")
    y = rng.integers(0, 4, 32).astype("int32")
    inputs = keras.Input((8, 8, 3))
    h = keras.layers.Conv2D(8, 3, padding="same", activation="relu", name="conv")(inputs)
    h = keras.layers.DepthwiseConv2D(3, padding="same", name="dw")(h)
    h = keras.layers.GlobalAveragePooling2D()(h)
    model = keras.Model(inputs, keras.layers.Dense(4, name="head")(h))
    pruned, report = magnitude.magnitude_prune(model, (x, y), ratio={"conv": 0.5, "dw": 0.5, "head": 0.75},
                                               epochs=2, batch_size=8, frequency=2)
    masked = magnitude.prune_low_magnitude(model, magnitude.ConstantSparsity(0.5, frequency=1), layers=["conv"])
    masked.compile(keras.optimizers.SGD(0.01), keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    masked.fit(x, y, batch_size=16, epochs=1, verbose=0, callbacks=[magnitude.UpdatePruningMasks()])
    wrapper = masked.get_layer("conv")
    kernel = keras.ops.convert_to_numpy(wrapper.layer.kernel)
    mask = keras.ops.convert_to_numpy(wrapper.mask)
    stripped = magnitude.strip_pruning(masked)
    same = float(np.abs(keras.ops.convert_to_numpy(stripped(x[:4])) - keras.ops.convert_to_numpy(masked(x[:4]))).max())
    masked.save("masked.keras")
    again = keras.models.load_model("masked.keras")
    reloaded = float(np.abs(keras.ops.convert_to_numpy(again(x[:4])) - keras.ops.convert_to_numpy(masked(x[:4]))).max())
    reloaded_step = int(keras.ops.convert_to_numpy(again.get_layer("conv").pruning_step))
    try:
        from keras_visrec.tflite.export import export_tflite
        export_tflite(stripped, "unused.tflite")
        export_error = None
    except RuntimeError as error:
        export_error = str(error)
    print("RESULT", json.dumps(dict(backend=keras.backend.backend(), sparsity=report.sparsity,
                                    mask_share=float(mask.mean()), kernel_zero_where_masked=bool((kernel[mask == 0] == 0).all()),
                                    strip_diff=same, reload_diff=reloaded, reloaded_step=reloaded_step,
                                    export_error=export_error)))
""")


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["torch", "jax"])
def test_native_pruning_runs_on_other_keras_backends(backend, tmp_path):
    pytest.importorskip(backend)
    env = {**os.environ, "KERAS_BACKEND": backend, "CUDA_VISIBLE_DEVICES": ""}
    env.pop("TF_USE_LEGACY_KERAS", None)
    result = subprocess.run([sys.executable, "-c", _BACKEND_SCRIPT], capture_output=True, text=True, timeout=900,
                            env=env, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    line = next(line for line in result.stdout.splitlines() if line.startswith("RESULT "))
    data = json.loads(line[len("RESULT "):])
    assert data["backend"] == backend
    assert data["sparsity"] == {"conv": pytest.approx(0.5, abs=0.01), "dw": pytest.approx(0.5, abs=0.05),
                                "head": pytest.approx(0.75, abs=0.01)}
    assert data["mask_share"] == pytest.approx(0.5, abs=0.01) and data["kernel_zero_where_masked"]
    assert data["strip_diff"] < 1e-5 and data["reload_diff"] < 1e-5 and data["reloaded_step"] == 2
    assert "needs the TensorFlow Keras backend" in data["export_error"] and repr(backend) in data["export_error"]

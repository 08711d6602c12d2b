"""The tfmot bridge: tf_keras twin, pruning schedules, global threshold, sparse TFLite, and the
Keras 3 process still intact afterwards."""

import importlib.util
import os
import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf

# find_spec, not importorskip: importing tfmot here would flip TF_USE_LEGACY_KERAS for the process,
# which is exactly what the bridge must not do
if importlib.util.find_spec("tensorflow_model_optimization") is None or importlib.util.find_spec("tf_keras") is None:
    pytest.skip("needs tensorflow-model-optimization and tf_keras", allow_module_level=True)

import keras_visrec  # noqa: E402
from keras_visrec import cifar  # noqa: E402
from keras_visrec.pruning import magnitude  # noqa: E402

RNG = np.random.default_rng(0)
X = RNG.uniform(0, 255, (64, 32, 32, 3)).astype("float32")
Y = RNG.integers(0, 10, 64).astype("int32")


def _data():
    return tf.data.Dataset.from_tensor_slices((X, Y)).batch(16)


def test_import_keeps_tfmot_out_of_the_process():
    code = ("import sys, keras_visrec, keras_visrec.pruning.surgery, keras_visrec.pruning.magnitude; "
            "keras_visrec.VGG16CIFAR; assert 'tensorflow_model_optimization' not in sys.modules; "
            "import os; assert 'TF_USE_LEGACY_KERAS' not in os.environ")
    env = {k: v for k, v in os.environ.items() if k != "TF_USE_LEGACY_KERAS"}
    subprocess.run([sys.executable, "-c", code], check=True, env=env, timeout=300)


def test_cifar_net_pruned_with_global_threshold_and_exported_sparse(tmp_path):
    model = cifar.CIFARVGG([8, "M", 16, "M", 16], head="l1", name="v")
    twin = magnitude.to_tf_keras(model)
    np.testing.assert_allclose(twin.predict(X[:4], verbose=0), model.predict(X[:4], verbose=0), atol=1e-5)
    before = os.environ.get("TF_USE_LEGACY_KERAS")
    pruned, sparsity = magnitude.magnitude_prune(model, _data(), sparsity=0.8, epochs=2, global_threshold=True)
    assert isinstance(pruned, keras.Model) and not hasattr(pruned, "_keras_api_names_v1")
    kernels = [pruned.get_layer(n).kernel.numpy() for n in sparsity]
    overall = sum((k == 0).sum() for k in kernels) / sum(k.size for k in kernels)
    assert overall == pytest.approx(0.8, abs=0.02)
    assert max(sparsity.values()) - min(sparsity.values()) > 0.1  # one threshold, unequal layers
    sparse = magnitude.export_sparse_tflite(pruned, str(tmp_path / "v.tflite"))
    dense_bytes = 4 * sum(k.size for k in kernels)  # the kernels alone, stored densely
    assert os.path.getsize(tmp_path / "v.tflite") == len(sparse) < 0.6 * dense_bytes

    # the Keras 3 process still works: env restored, tf.keras unchanged, new models train and save
    assert os.environ.get("TF_USE_LEGACY_KERAS") == before
    assert tf.keras.Model is keras.Model
    again = keras_visrec.ConvNeXt((1, 1, 1, 1), (8, 16, 32, 64), input_shape=(32, 32, 3), classes=10, name="again")
    again.compile("adam", "sparse_categorical_crossentropy")
    again.fit(X[:8], Y[:8], epochs=1, verbose=0)
    again.save(str(tmp_path / "again.keras"))
    assert keras.models.load_model(str(tmp_path / "again.keras")).name == "again"


def test_convnext_pruned_per_layer_with_constant_sparsity():
    model = keras_visrec.ConvNeXt((1, 1, 1, 1), (8, 16, 32, 64), input_shape=(32, 32, 3), classes=10, name="cx")
    twin = magnitude.to_tf_keras(model)
    np.testing.assert_allclose(twin.predict(X[:2], verbose=0), model.predict(X[:2], verbose=0), atol=1e-5)
    pruned, sparsity = magnitude.magnitude_prune(model, _data(), sparsity=0.5, schedule="constant", epochs=1)
    assert set(sparsity) >= {"cx_stage_0_block_0_pointwise_conv_1", "cx_head_dense"}
    assert all(abs(s - 0.5) < 0.01 for s in sparsity.values())
    assert pruned.predict(X[:2], verbose=0).shape == (2, 10)


def test_bad_arguments():
    model = cifar.CIFARVGG([4], head="slimming", name="v", input_shape=(2, 2, 3))
    with pytest.raises(ValueError, match="sparsity"):
        magnitude.magnitude_prune(model, _data(), sparsity=1.0)
    with pytest.raises(ValueError, match="schedule"):
        magnitude.magnitude_prune(model, _data(), schedule="cubic")
    with pytest.raises(ValueError, match="not a conv"):
        magnitude.global_magnitude_sparsities(model, 0.5, layers=["v_bn_0"])

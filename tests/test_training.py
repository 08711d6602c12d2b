"""Training works: drop path on, mixed precision, two-device MirroredStrategy, real digits."""

import functools

import keras
import numpy as np
import pytest

import keras_visrec as kv
from keras_visrec.demo import run_demo, train_digits

TINY = functools.partial(kv.ConvNeXt, (1, 1, 1, 1), (16, 32, 64, 128), name="tiny")


def test_fit_with_drop_path_updates_every_trainable_weight():
    model = TINY(input_shape=(32, 32, 3), classes=4, drop_path_rate=0.5)
    before = [w.numpy().copy() for w in model.trainable_weights]
    model.compile(optimizer=keras.optimizers.AdamW(1e-3), loss="sparse_categorical_crossentropy")
    x = np.random.rand(16, 32, 32, 3).astype("float32") * 255
    history = model.fit(x, np.arange(16) % 4, batch_size=8, epochs=2, verbose=0)
    assert np.all(np.isfinite(history.history["loss"]))
    changed = [not np.allclose(b, w.numpy()) for b, w in zip(before, model.trainable_weights)]
    assert all(changed)
    # drop path is off at inference: predictions are deterministic
    np.testing.assert_array_equal(model.predict(x, verbose=0), model.predict(x, verbose=0))


def test_mixed_bfloat16_builds_and_fits():
    keras.mixed_precision.set_global_policy("mixed_bfloat16")
    try:
        model = TINY(input_shape=(32, 32, 3), classes=3, drop_path_rate=0.1, use_grn=True)
        assert model.get_layer("tiny_stem_conv").compute_dtype == "bfloat16"
        assert model.output.dtype == "float32"  # the classifier activation stays float32
        model.compile(optimizer="adamw", loss="sparse_categorical_crossentropy")
        x = np.random.rand(8, 32, 32, 3).astype("float32") * 255
        history = model.fit(x, np.arange(8) % 3, batch_size=4, epochs=1, verbose=0)
        assert np.isfinite(history.history["loss"][0])
    finally:
        keras.mixed_precision.set_global_policy("float32")


def test_fit_under_mirrored_strategy_over_two_cpu_devices(two_cpu_strategy):
    model, accuracy, history = train_digits(TINY, epochs=1, strategy=two_cpu_strategy, verbose=0)
    assert model.distribute_strategy is two_cpu_strategy
    assert two_cpu_strategy.num_replicas_in_sync == 2
    assert np.isfinite(history.history["loss"][0]) and 0.0 <= accuracy <= 1.0


@pytest.mark.slow
def test_fine_tunes_on_real_digits_to_90_percent_held_out():
    _, accuracy, history = train_digits(TINY, epochs=6, verbose=0)
    assert accuracy >= 0.90, history.history["val_accuracy"]


@pytest.mark.slow
def test_demo_runs_end_to_end(tmp_path):
    results = run_demo(model="convnext_atto", epochs=1, output_dir=str(tmp_path), export=True)
    assert results["reload_identical"]
    assert (tmp_path / "convnext_atto_digits.keras").is_file()
    assert {"tflite_fp32_accuracy", "tflite_int8_accuracy"} <= set(results)
    assert abs(results["tflite_fp32_accuracy"] - results["accuracy"]) < 0.01


def test_strategy_names_are_validated():
    from keras_visrec.training import resolve_strategy

    assert resolve_strategy(None) is resolve_strategy("default")
    with pytest.raises(ValueError, match="strategy"):
        resolve_strategy("tpu")
    with pytest.raises(ValueError, match="epochs"):
        train_digits(TINY, epochs=0)


def test_build_optimizer_creates_the_slots_before_the_first_step():
    from keras_visrec.adpc import AnytimeHRNet, compile_anytime
    from keras_visrec.training import build_optimizer

    model = TINY(input_shape=(32, 32, 3), classes=4)
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="sparse_categorical_crossentropy")
    assert not model.optimizer.built
    assert build_optimizer(model) is model and model.optimizer.built
    slots = len(model.optimizer.variables)
    assert slots == 2 * len(model.trainable_variables) + 2  # Adam's m and v per weight, iterations, learning rate
    build_optimizer(model)  # already built: nothing is added
    assert len(model.optimizer.variables) == slots
    history = model.fit(np.random.rand(8, 32, 32, 3).astype("float32") * 255, np.arange(8) % 4, epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"][0])
    uncompiled = TINY(input_shape=(32, 32, 3), classes=4, name="tiny_uncompiled")
    assert build_optimizer(uncompiled) is uncompiled  # no optimizer yet: nothing to build
    tiny = dict(stem=16, layer1=(1, 8), stages=((1, (1, 1), (8, 16)), (1, (1, 1, 1), (8, 16, 32)),
                                              (1, (1, 1, 1, 1), (8, 16, 32, 64))))
    anytime = compile_anytime(AnytimeHRNet(tiny, classes=3, exit_width=8, mode="none"), total_steps=4)
    assert anytime.optimizer.built  # the family compile helpers build it

"""AnytimeHRNet's argument surface: the shared vocabulary, mask_fn, the compiled-function cache, saving."""

import keras
import numpy as np
import pytest

from keras_visrec.adpc import AnytimeHRNet, confidence_mask, heatmap_compute_mask

X = np.random.default_rng(0).uniform(0, 255, (1, 64, 64, 3)).astype("float32")


@pytest.fixture(scope="module")
def model(tiny_config):
    return AnytimeHRNet(tiny_config, classes=np.int64(5), exit_width=8, threshold=0.3, name="tiny")


def test_shared_arguments_and_defaults(model, tiny_config):
    assert model.classes == 5 and isinstance(model.classes, int)
    assert model.network.get_layer("tiny_preprocessing") is not None  # 0–255 in, ImageNet mean/std inside
    assert model.mask_fn is confidence_mask and model.task == "segmentation"
    pose = AnytimeHRNet(tiny_config, exit_width=8, task="pose", name="tp", include_preprocessing=False)
    assert pose.classes == 16 and pose.threshold == 0.1 and pose.mask_fn is heatmap_compute_mask
    assert not any(layer.name.endswith("preprocessing") for layer in pose.network.layers)
    # same threshold as `model`: the masks (taken from the logits) must agree for the outputs to
    probabilities = AnytimeHRNet(tiny_config, classes=5, exit_width=8, threshold=model.threshold,
                                 classifier_activation="softmax", name="tiny")
    probabilities.set_weights(model.get_weights())
    for p, logits in zip(probabilities.anytime(X, mode="dense"), model.anytime(X, mode="dense")):
        np.testing.assert_allclose(np.asarray(p), np.asarray(keras.ops.softmax(logits)), atol=1e-6)


@pytest.mark.parametrize("kwargs, error, match", [
    (dict(task="depth"), ValueError, "`task` must be one of"),
    (dict(classes=1), ValueError, "classes"),
    (dict(exit_type="xx"), ValueError, "exit_type"),
    (dict(mask_fn="entropy"), ValueError, "mask_fn"),
    (dict(mask_fn=3), TypeError, "mask_fn"),
    (dict(mask_fn=lambda outputs, threshold: outputs), ValueError, r"`mask_fn` must return a \(batch, height, width\)"),
    (dict(input_shape=(48, 64, 3)), ValueError, "multiples of 32"),
    (dict(weights="no_such_model.zoo_id"), ValueError, "Unknown zoo id"),
    (dict(weights="missing.pth"), FileNotFoundError, "missing.pth"),
])
def test_bad_arguments(tiny_config, kwargs, error, match):
    with pytest.raises(error, match=match):
        AnytimeHRNet(tiny_config, **{"classes": 5, "exit_width": 8, **kwargs})


def test_settings_are_validated_when_set(model):
    for attribute, bad in (("tile", 0), ("dense_above", 1.5), ("threshold", 0.0), ("mode", "fast")):
        with pytest.raises(ValueError, match=attribute):
            setattr(model, attribute, bad)


def test_mask_fn_chooses_the_rule(model, tiny_config):
    calls = []

    def everything(outputs, threshold):
        calls.append(threshold)
        return keras.ops.ones(outputs.shape[:3])

    custom = AnytimeHRNet(tiny_config, classes=5, exit_width=8, threshold=0.3, name="tiny", mask_fn=everything)
    custom.set_weights(model.get_weights())
    plain = model.anytime(X, mode="none")
    for ours, theirs in zip(custom.anytime(X, mode="dense"), plain):  # all computed: the unmasked network
        np.testing.assert_allclose(np.asarray(ours), np.asarray(theirs), atol=1e-5)
    assert calls and set(calls) == {0.3}
    assert all(share == 1.0 for shares in custom.computed_fractions() for share in shares.values())
    heat = AnytimeHRNet(tiny_config, classes=5, exit_width=8, threshold=0.3, name="tiny", mask_fn="heatmap")
    assert heat.mask_fn is heatmap_compute_mask
    wrong = AnytimeHRNet(tiny_config, classes=5, exit_width=8, name="tiny")
    wrong.mask_fn = lambda outputs, threshold: keras.ops.ones((1, 2, 2))  # set after construction: checked per call
    with pytest.raises(ValueError, match="mask_fn"):
        list(wrong.iter_exits(X, mode="dense"))


def test_compiled_function_cache_keys_on_every_setting(model):
    first = model.compiled_anytime("dense")
    assert model.compiled_anytime("dense") is first
    for attribute, value in (("tile", 2), ("dense_above", 0.3), ("mask_fn", "heatmap"), ("threshold", 0.5)):
        before = model.compiled_anytime("dense")
        previous = getattr(model, "_mask_rule" if attribute == "mask_fn" else attribute)
        setattr(model, attribute, value)
        assert model.compiled_anytime("dense") is not before, attribute
        setattr(model, attribute, previous)
        assert model.compiled_anytime("dense") is before, attribute


def test_save_and_load_keep_task_rule_and_preprocessing(tiny_config, tmp_path):
    pose = AnytimeHRNet(tiny_config, exit_width=8, task="pose", name="tp", threshold=0.2, mask_fn="softmax")
    expected = keras.ops.convert_to_numpy(pose(X))
    path = str(tmp_path / "pose.keras")
    pose.save(path)
    loaded = keras.models.load_model(path)
    assert (loaded.task, loaded.threshold, loaded.mask_fn, loaded.include_preprocessing) == ("pose", 0.2,
                                                                                            confidence_mask, True)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(loaded(X)), expected, atol=1e-5)
    again = AnytimeHRNet(tiny_config, exit_width=8, task="pose", name="tp", threshold=0.2, mask_fn="softmax",
                         weights=path)  # weights= from a .keras file: the weights only, the settings are the call's
    np.testing.assert_allclose(keras.ops.convert_to_numpy(again(X)), expected, atol=1e-5)

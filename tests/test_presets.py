"""keras-hub-style preset directories written by keras_visrec and read back, and keras-hub task models on our backbones."""

import json
import os

import numpy as np
import pytest

import keras_visrec
from keras_visrec.presets import load_preset, read_metadata, save_preset

TINY = dict(depths=(1, 1, 1, 1), dims=(8, 16, 32, 64))


def _tiny(**kwargs):
    return keras_visrec.ConvNeXt(**TINY, input_shape=(32, 32, 3), classes=5, layer_scale_init_value=0.5, **kwargs)


def test_a_preset_round_trips_and_loads_through_weights(tmp_path):
    model = _tiny(name="convnext_atto")
    x = np.random.default_rng(0).uniform(0, 255, (2, 32, 32, 3)).astype("float32")
    path = save_preset(model, tmp_path / "preset")
    assert sorted(os.listdir(path)) == ["config.json", "metadata.json", "model.weights.h5"]
    metadata = read_metadata(path)
    assert metadata["parameter_count"] == model.count_params()
    assert metadata["keras_visrec"] == {"arch": "convnext_atto", "name": "convnext_atto"}
    assert json.loads((tmp_path / "preset" / "config.json").read_text())["class_name"] == "Functional"
    reloaded = load_preset(path)
    np.testing.assert_allclose(reloaded.predict(x, verbose=0), model.predict(x, verbose=0), atol=1e-6)
    # a preset is a `weights=` value too: copied by layer name, so a headless model takes it
    headless = keras_visrec.ConvNeXt(**TINY, include_top=False, weights=str(path), name="convnext_atto")
    np.testing.assert_array_equal(headless.get_layer("convnext_atto_stem_conv").kernel.numpy(),
                                  model.get_layer("convnext_atto_stem_conv").kernel.numpy())


def test_preset_errors_name_the_directory_and_leave_nothing(tmp_path):
    model = _tiny()
    save_preset(model, tmp_path / "p")
    with pytest.raises(FileExistsError, match="overwrite=True"):
        save_preset(model, tmp_path / "p")
    with pytest.raises(TypeError, match="keras.Model"):
        save_preset("not a model", tmp_path / "q")
    assert sorted(os.listdir(tmp_path)) == ["p"]
    (tmp_path / "half").mkdir()
    (tmp_path / "half" / "config.json").write_text("{}")
    with pytest.raises(ValueError, match="model.weights.h5 missing"):
        load_preset(tmp_path / "half")


def test_a_keras_visrec_backbone_inside_keras_hubs_image_classifier(tmp_path):
    keras_hub = pytest.importorskip("keras_hub")
    backbone = keras_visrec.ConvNeXt(**TINY, include_top=False, input_shape=(32, 32, 3), layer_scale_init_value=0.5)
    classifier = keras_hub.models.ImageClassifier(backbone=backbone, num_classes=4, activation="softmax")
    classifier.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    rng = np.random.default_rng(1)
    x, y = rng.uniform(0, 255, (8, 32, 32, 3)).astype("float32"), rng.integers(0, 4, 8)
    history = classifier.fit(x, y, epochs=2, batch_size=4, verbose=0)
    assert np.isfinite(history.history["loss"]).all()
    assert classifier.predict(x, verbose=0).shape == (8, 4)

"""AnytimeHRNet survives model.save -> keras.models.load_model without custom_objects."""

import keras
import numpy as np


def test_save_and_load(tiny_config, tmp_path):
    from keras_visrec.adpc import AnytimeHRNet

    model = AnytimeHRNet(tiny_config, classes=5, exit_width=8, threshold=0.9, name="tiny")
    x = np.random.default_rng(0).uniform(-1, 1, (1, 64, 64, 3)).astype("float32")
    expected = keras.ops.convert_to_numpy(model(x))
    path = str(tmp_path / "anytime.keras")
    model.save(path)
    loaded = keras.models.load_model(path)
    assert loaded.threshold == 0.9 and loaded.classes == 5
    np.testing.assert_allclose(keras.ops.convert_to_numpy(loaded(x)), expected, atol=1e-5)

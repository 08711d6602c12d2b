"""MPII loading from the HRNet JSON layout, heatmaps, PCKh@0.5 and the heatmap confidence rule."""

import json

import keras
import numpy as np
import pytest

from keras_visrec.data.mpii import gaussian_heatmaps, heatmap_compute_mask, heatmap_peaks, load_mpii, pckh


@pytest.fixture
def mpii_root(tmp_path):
    from PIL import Image

    (tmp_path / "annot").mkdir()
    (tmp_path / "images").mkdir()
    Image.fromarray(np.full((300, 400, 3), 90, np.uint8)).save(tmp_path / "images" / "000001.jpg")
    joints = [[150 + 5 * j, 100 + 6 * j] for j in range(16)]
    record = {"image": "000001.jpg", "center": [200, 150], "scale": 1.0, "joints": joints,
              "joints_vis": [1] * 15 + [0]}
    (tmp_path / "annot" / "valid.json").write_text(json.dumps([record]))
    return tmp_path


def test_load_mpii(mpii_root):
    images, maps, joints, visible, heads = load_mpii(mpii_root, "valid", (64, 64), (16, 16))
    assert images.shape == (1, 64, 64, 3) and maps.shape == (1, 16, 16, 16)
    # box of 200 px around (200, 150): joint 0 at (150, 100) -> (50/200 * 16, 50/200 * 16)
    np.testing.assert_allclose(joints[0, 0], [4.0, 4.0], atol=1e-5)
    assert maps[0, 4, 4, 0] == pytest.approx(1.0) and maps[0, ..., 15].max() == 0.0
    np.testing.assert_allclose(heatmap_peaks(maps)[0, :15], np.round(joints[0, :15]), atol=1)
    assert heads[0] == pytest.approx(np.hypot(5, 6) / 200 * 16, rel=1e-5)
    with pytest.raises(ValueError, match="split"):
        load_mpii(mpii_root, "test")
    with pytest.raises(ValueError, match="annotations"):
        load_mpii(mpii_root, "train")


def test_pckh():
    truth = np.zeros((2, 16, 2))
    predicted = truth.copy()
    predicted[0, :4, 0] = 3.0  # 3 px off with head size 10: within 0.5 × 10
    predicted[1, :8, 0] = 6.0  # 6 px off: outside
    visible = np.ones((2, 16))
    assert pckh(predicted, truth, visible, np.array([10.0, 10.0])) == pytest.approx(100 * 24 / 32)


def test_heatmap_confidence_rule():
    maps = gaussian_heatmaps([[2, 2], [10, 10]], [1, 1], (16, 16))[None]
    mask = keras.ops.convert_to_numpy(heatmap_compute_mask(maps, 0.1))
    assert mask[0, 2, 2] == 1 and mask[0, 10, 10] == 1 and mask[0, 15, 0] == 0
    assert 0 < mask.mean() < 0.6

"""MPII as deep-high-resolution-net prepares it: JSON annotations, the crop, Gaussian targets with target
weights, peak refinement, PCKh@0.5 (head size 0.6 × head-box diagonal, pelvis and thorax left out)."""

import json

import keras
import numpy as np
import pytest

from keras_visrec.data.mpii import (MPII_PCKH_EXCLUDED, heatmap_compute_mask, heatmap_peaks, joint_targets, load_mpii,
                                    pckh)


def _official_target(joint, visible, size, sigma):
    """``JointsDataset.generate_target`` for one joint, transcribed loop by loop."""
    w, h = size
    target = np.zeros((h, w), np.float32)
    tmp = sigma * 3
    mu_x, mu_y = int(joint[0] + 0.5), int(joint[1] + 0.5)
    ul, br = [int(mu_x - tmp), int(mu_y - tmp)], [int(mu_x + tmp + 1), int(mu_y + tmp + 1)]
    if ul[0] >= w or ul[1] >= h or br[0] < 0 or br[1] < 0:
        return target, 0.0
    n = 2 * tmp + 1
    x = np.arange(0, n, 1, np.float32)
    y = x[:, None]
    g = np.exp(-((x - n // 2) ** 2 + (y - n // 2) ** 2) / (2 * sigma ** 2))
    gx, gy = (max(0, -ul[0]), min(br[0], w) - ul[0]), (max(0, -ul[1]), min(br[1], h) - ul[1])
    ix, iy = (max(0, ul[0]), min(br[0], w)), (max(0, ul[1]), min(br[1], h))
    if visible > 0.5:
        target[iy[0]:iy[1], ix[0]:ix[1]] = g[gy[0]:gy[1], gx[0]:gx[1]]
    return target, float(visible)


def test_targets_match_the_official_generator():
    joints = np.array([[10.3, 20.7], [0.2, 63.4], [-5.0, 30.0], [70.0, 70.0], [33.0, 40.0]])
    visible = np.array([1, 1, 1, 1, 0])
    maps, weights = joint_targets(joints, visible, (64, 64), sigma=2.0)
    for j, joint in enumerate(joints):
        target, weight = _official_target(joint, visible[j], (64, 64), 2)
        np.testing.assert_allclose(maps[..., j], target, atol=1e-6)
        assert weights[j] == weight, j
    assert list(weights) == [1, 1, 1, 0, 0]  # (-5, 30) still reaches the map; (70, 70) does not
    with pytest.raises(ValueError, match="joints"):
        joint_targets([[np.nan, 1.0]], [1], (8, 8))


def test_peaks_refine_a_quarter_pixel_towards_the_higher_neighbour():
    maps = np.zeros((1, 8, 8, 2), np.float32)
    maps[0, 3, 4, 0], maps[0, 3, 5, 0], maps[0, 4, 4, 0] = 1.0, 0.5, 0.2  # right and down are higher
    maps[0, 0, 0, 1] = 1.0  # on the border: not refined
    np.testing.assert_allclose(heatmap_peaks(maps)[0], [[4.25, 3.25], [0.0, 0.0]])
    np.testing.assert_allclose(heatmap_peaks(maps, refine=False)[0], [[4, 3], [0, 0]])


def test_pckh_normalises_by_head_size_and_leaves_out_pelvis_and_thorax():
    truth = np.zeros((2, 16, 2))
    predicted = truth.copy()
    predicted[0, :4, 0] = 3.0  # 3 px off with head size 10: within 0.5 × 10
    predicted[1, :8, 0] = 6.0  # 6 px off: outside
    visible = np.ones((2, 16))
    assert pckh(predicted, truth, visible, np.array([10.0, 10.0])) == pytest.approx(100 * 24 / 32)
    # pelvis and thorax (6, 7) are among the misses of image 1: the official mean drops them from
    # hits and count alike (14 + 8 hits of 2 × 14 joints)
    assert pckh(predicted, truth, visible, np.array([10.0, 10.0]), excluded=MPII_PCKH_EXCLUDED) == pytest.approx(
        100 * 22 / 28)
    with pytest.raises(ValueError, match="predicted"):
        pckh(predicted[:, :, :1], truth, visible, np.ones(2))


def test_heatmap_confidence_rule():
    maps = np.stack([joint_targets([[2, 2], [10, 10]], [1, 1], (16, 16), sigma=2.0)[0]])
    mask = keras.ops.convert_to_numpy(heatmap_compute_mask(maps, 0.1))
    assert mask[0, 2, 2] == 1 and mask[0, 10, 10] == 1 and mask[0, 15, 0] == 0
    assert 0 < mask.mean() < 0.6


@pytest.fixture
def mpii_root(tmp_path):
    from PIL import Image

    (tmp_path / "annot").mkdir()
    (tmp_path / "images").mkdir()
    image = np.zeros((300, 400, 3), np.uint8)
    image[100:140, 150:190] = 200  # a bright square whose top-left corner is joint 0
    Image.fromarray(image).save(tmp_path / "images" / "000001.jpg", quality=100)
    joints = [[151 + 5 * j, 101 + 6 * j] for j in range(16)]  # Matlab's 1-based pixels
    record = {"image": "000001.jpg", "center": [201, 151 - 15 * 0.8], "scale": 0.8, "joints": joints,
              "joints_vis": [1] * 15 + [0], "headbox": [[100, 50], [130, 90]]}
    (tmp_path / "annot" / "valid.json").write_text(json.dumps([record]))
    return tmp_path


def test_load_mpii_crops_as_the_official_affine_transform(mpii_root):
    data = load_mpii(mpii_root, "valid", (64, 64), (16, 16))
    assert data.images.shape == (1, 64, 64, 3) and data.heatmaps.shape == (1, 16, 16, 16)
    # box 1.25 × 0.8 × 200 = 200 px centred on (200, 150) (0-based): joint 0 at (150, 100) lands at
    # (150 − 200) · 64/200 + 32 = 16 input px = 4 heatmap px, and at y = (100 − 150) · 0.32 + 32 = 16 too
    np.testing.assert_allclose(data.joints[0, 0], [4.0, 4.0], atol=1e-5)
    assert data.heatmaps[0, 4, 4, 0] == pytest.approx(1.0) and data.heatmaps[0, ..., 15].max() == 0.0
    assert list(data.target_weights[0]) == [1.0] * 15 + [0.0]
    crop = data.images[0, ..., 0]
    assert crop[17, 17] > 150 and crop[15, 15] < 50  # the square starts where joint 0 does
    assert data.head_sizes[0] == pytest.approx(0.6 * np.hypot(30, 40) / 200 * 16, rel=1e-5)
    np.testing.assert_allclose(heatmap_peaks(data.heatmaps)[0, :15], data.joints[0, :15], atol=0.8)


def test_load_mpii_bad_input(mpii_root):
    with pytest.raises(ValueError, match="split"):
        load_mpii(mpii_root, "test")
    with pytest.raises(ValueError, match="annotations"):
        load_mpii(mpii_root, "train")
    records = json.loads((mpii_root / "annot" / "valid.json").read_text())
    records[0]["joints"][3] = [450.0, 120.0]  # the image is 400 px wide
    (mpii_root / "annot" / "train.json").write_text(json.dumps(records))
    with pytest.raises(ValueError, match=r"train.json.*record 0.*000001.jpg.*joint 3 visible at \(450.0, 120.0\), "
                                         r"outside the image"):
        load_mpii(mpii_root, "train")

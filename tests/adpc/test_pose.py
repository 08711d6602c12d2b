"""ADP-C pose end to end: the heatmap loss, flip testing, the digit keypoint task, per-exit PCKh and FLOPs."""

import numpy as np
import pytest

from keras_visrec.adpc import AnytimeHRNet, MultiExitHeatmapLoss, evaluate_pose_exits, exit_flops, flip_back
from keras_visrec.data import load_digit_keypoints
from keras_visrec.data.mpii import MPII_FLIP_PAIRS, PoseSet


def _official_joints_mse(output, target, weight):
    """deep-high-resolution-net ``JointsMSELoss(use_target_weight=True)``, NCHW, transcribed."""
    batch, joints = output.shape[:2]
    pred, gt = output.reshape(batch, joints, -1), target.reshape(batch, joints, -1)
    loss = 0.0
    for j in range(joints):
        loss += 0.5 * np.mean((pred[:, j] * weight[:, j:j + 1] - gt[:, j] * weight[:, j:j + 1]) ** 2)
    return loss / joints


def test_heatmap_loss_is_the_official_joints_mse_per_exit():
    rng = np.random.default_rng(0)
    outputs = rng.normal(size=(3, 4, 8, 8, 5)).astype("float32")
    target = rng.uniform(size=(3, 8, 8, 5)).astype("float32")
    weight = (rng.uniform(size=(3, 5)) > 0.3).astype("float32")
    exit_weights = (1.0, 0.5, 0.0, 2.0)
    ours = float(MultiExitHeatmapLoss(exit_weights)(target, outputs, sample_weight=weight))
    expected = sum(w * _official_joints_mse(outputs[:, k].transpose(0, 3, 1, 2), target.transpose(0, 3, 1, 2), weight)
                   for k, w in enumerate(exit_weights))
    assert ours == pytest.approx(expected, rel=1e-5)
    with pytest.raises(ValueError, match="do not match"):
        MultiExitHeatmapLoss()(target[:, :4], outputs)


def test_flip_back_mirrors_swaps_pairs_and_shifts():
    maps = np.zeros((1, 4, 6, 16), "float32")
    maps[0, 1, 1, 0] = 1.0  # right ankle at x = 1 in the mirrored image
    back = flip_back(maps, MPII_FLIP_PAIRS)
    # mirrored x = 6 − 1 − 1 = 4, shifted right to 5, now the left ankle (joint 5)
    assert back[0, 1, 5, 5] == 1.0 and back[..., 0].max() == 0.0
    assert flip_back(maps, MPII_FLIP_PAIRS, shift=False)[0, 1, 4, 5] == 1.0
    with pytest.raises(ValueError, match="flip_pairs"):
        flip_back(maps[..., :4], MPII_FLIP_PAIRS)


def test_digit_keypoints_are_the_box_corners_and_centre():
    train, test = load_digit_keypoints(size=64, num_train=12, num_test=4, seed=3)
    assert train.images.shape == (12, 64, 64, 3) and train.heatmaps.shape == (12, 16, 16, 5)
    assert test.images.shape == (4, 64, 64, 3) and train.flip_pairs == ((1, 2), (3, 4))
    joints = train.joints * 4  # input pixels
    centre, tl, tr, br, bl = (joints[:, j] for j in range(5))
    np.testing.assert_allclose(centre, (tl + br) / 2)
    np.testing.assert_array_equal(tl[:, 0], bl[:, 0])
    np.testing.assert_array_equal(tr[:, 1], tl[:, 1])
    for n in range(12):  # the box is the bright digit's (the distractor is dimmer): it holds the brightest pixel
        y, x = np.unravel_index(train.images[n].max(-1).argmax(), (64, 64))
        assert tl[n, 0] <= x <= br[n, 0] and tl[n, 1] <= y <= br[n, 1], n
    assert np.all(train.target_weights == 1) and np.all(train.head_sizes > 0.5)
    with pytest.raises(ValueError, match="size"):
        load_digit_keypoints(size=48)


def test_pose_exits_predict_heatmaps_with_flip_and_count_flops(tiny_config):
    model = AnytimeHRNet(tiny_config, classes=5, exit_width=8, task="pose", name="tp", threshold=0.05)
    _, data = load_digit_keypoints(size=64, num_train=1, num_test=4)
    plain = evaluate_pose_exits(model, data, mode="none", flip=False, progress=False)
    flipped = evaluate_pose_exits(model, data, mode="dense", flip=True, progress=False)
    assert len(plain.pckh) == 4 and all(0 <= p <= 100 for p in plain.pckh + flipped.pckh)
    assert "PCKh@0.5" in flipped.table() and flipped.flip
    full = exit_flops(model, (64, 64, 3))
    np.testing.assert_allclose(plain.gflops, full.gflops)
    assert full.segments[3] > 0 and flipped.gflops[3] <= plain.gflops[3]
    with pytest.raises(ValueError, match="joints"):
        evaluate_pose_exits(model, PoseSet(*(a[..., :3] if getattr(a, "ndim", 0) == 4 and a.shape[-1] == 5 else a
                                               for a in data)), progress=False)
    segmentation = AnytimeHRNet(tiny_config, classes=5, exit_width=8, name="ts")
    with pytest.raises(ValueError, match="pose"):
        evaluate_pose_exits(segmentation, data, progress=False)


# branch 0 as wide as the others: the pose head is a 1×1 conv on it alone, so a narrower one (8)
# leaves the final exit below exit 3 however long it trains
POSE_CONFIG = dict(stem=16, layer1=(1, 8), stages=((1, (1, 1), (32, 32)), (1, (1, 1, 1), (32, 32, 32)),
                                                   (1, (1, 1, 1, 1), (32, 32, 32, 32))))
# 1024 canvases for 8 epochs, the final exit's loss weighted 2: shorter runs left unmasked exit 4 only
# 0.4-4 PCKh above exit 3 for some seeds (a CPU's numerics act as another seed), and masked 1.7 below
# it on CI's CPU; here unmasked it is 5.6-17.9 above over seeds 0-2 and both TensorFlow CPU paths
NUM_TRAIN, NUM_TEST, EPOCHS, EXIT_WEIGHTS, THRESHOLD = 1024, 96, 8, (1.0, 1.0, 1.0, 2.0), 0.05


@pytest.mark.slow
def test_digit_keypoints_pckh_rises_exit_to_exit_and_pixels_are_skipped():
    import keras
    import tensorflow as tf

    from keras_visrec.adpc import train_anytime

    keras.utils.set_random_seed(0)
    train, test = load_digit_keypoints(size=64, num_train=NUM_TRAIN, num_test=NUM_TEST, seed=0)
    data = tf.data.Dataset.from_tensor_slices((train.images, train.heatmaps, train.target_weights)).shuffle(
        NUM_TRAIN, seed=0).batch(16, drop_remainder=True)
    model, _ = train_anytime(
        lambda: AnytimeHRNet(POSE_CONFIG, classes=5, exit_width=16, exit_type="rh", task="pose", mode="none",
                             bn_momentum=0.9),
        data, epochs=EPOCHS, optimizer=keras.optimizers.Adam(5e-3), exit_weights=EXIT_WEIGHTS, verbose=0)
    plain = evaluate_pose_exits(model, test, mode="none", flip=False, progress=False)
    assert all(a < b for a, b in zip(plain.pckh, plain.pckh[1:])), plain.table()
    assert plain.pckh[3] > plain.pckh[0] + 15, plain.table()
    # the heatmap rule: pixels where no joint's heatmap reaches the threshold are background, skipped
    masked = evaluate_pose_exits(model, test, mode="sparse", threshold=THRESHOLD, flip=False, progress=False)
    assert max(masked.computed) < 0.5, masked.table()
    assert masked.pckh[0] < masked.pckh[1] < masked.pckh[2], masked.table()
    # a pixel skipped once stays skipped (its copied heatmaps stay under the threshold), so joints that
    # exits 1-2 miss are never looked at again: masked, exit 4 lands within a few PCKh of exit 3
    # (-4.4 ... +9.4 over the runs above), well above exits 1 and 2
    assert masked.pckh[3] > masked.pckh[1] + 5 and masked.pckh[3] > masked.pckh[0] + 10, masked.table()
    assert masked.gflops[3] < 0.6 * plain.gflops[3], masked.table()

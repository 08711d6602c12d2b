"""The tf.data training pipeline against mmseg's rules (rescale, crop, flip, photometric, pad)."""

import numpy as np
import pytest
import tensorflow as tf

from keras_visrec.segmentation.pipeline import (IMAGENET_MEAN_PIXEL, TrainAugment, augment_example,
                                                photometric_distortion, random_crop, random_rescale, rescaled_size,
                                                train_dataset)


def _mmcv_rescale_size(w, h, scale):
    # mmcv.rescale_size(old_size=(w, h), scale=(long, short)) as written in mmcv 1.x
    max_long, max_short = max(scale), min(scale)
    factor = min(max_long / max(h, w), max_short / min(h, w))
    return int(w * factor + 0.5), int(h * factor + 0.5)


@pytest.mark.parametrize("h, w, ratio", [(512, 683, 1.0), (375, 500, 0.5), (1024, 2048, 1.75), (300, 1500, 2.0)])
def test_rescaled_size_is_mmcv_imrescale(h, w, ratio):
    scale = (int(2048 * ratio), int(512 * ratio))
    new_w, new_h = _mmcv_rescale_size(w, h, scale)
    assert rescaled_size(h, w, (2048, 512), ratio) == (new_h, new_w)
    assert rescaled_size(h, w, None, ratio) == (int(h * ratio + 0.5), int(w * ratio + 0.5))


def test_random_rescale_sizes_and_nearest_labels():
    image = np.zeros((30, 40, 3), "float32")
    label = np.arange(30 * 40, dtype="int32").reshape(30, 40) % 7
    seed = tf.constant([3, 4], tf.int64)
    ratio = float(tf.random.stateless_uniform([], seed, 0.5, 2.0, dtype=tf.float64))
    out_image, out_label = random_rescale(image, label, seed, scale=(80, 20), ratio_range=(0.5, 2.0))
    expected = rescaled_size(30, 40, (80, 20), ratio)
    assert tuple(out_image.shape[:2]) == expected == tuple(out_label.shape)
    # OpenCV INTER_NEAREST: source index floor(i * in / out)
    rows = np.minimum(np.floor(np.arange(expected[0]) * 30 / expected[0]).astype(int), 29)
    cols = np.minimum(np.floor(np.arange(expected[1]) * 40 / expected[1]).astype(int), 39)
    np.testing.assert_array_equal(out_label.numpy(), label[rows][:, cols])


def _ok(crop, ratio, ignore=255):
    values, counts = np.unique(crop, return_counts=True)
    counts = counts[values != ignore]
    return len(counts) > 1 and counts.max() / counts.sum() < ratio


def test_crop_redraws_until_no_class_dominates():
    label = np.zeros((64, 64), "int32")
    label[40:, 40:] = 1  # only windows near the corner mix the two classes enough
    label[:8] = 255
    image = np.stack([label] * 3, -1).astype("float32")
    crop_fn = tf.function(lambda i, l, s: random_crop(i, l, s, (32, 32), cat_max_ratio=0.75))
    accepted = 0
    for k in range(20):
        out_image, out_label = crop_fn(image, label, tf.constant([k, 1], tf.int64))
        crop = out_label.numpy()
        assert crop.shape == (32, 32)
        np.testing.assert_array_equal(out_image.numpy()[..., 0], crop)
        accepted += _ok(crop, 0.75)
    assert accepted >= 15  # a good window turns up within ten redraws almost always (p ~ 0.2 per draw)
    # one class only: no window qualifies, the eleventh draw is used, still the crop size
    _, crop = crop_fn(image, np.zeros((64, 64), "int32"), tf.constant([0, 1], tf.int64))
    assert crop.shape == (32, 32)
    # smaller than the crop: the whole image
    _, crop = crop_fn(image[:20], label[:20], tf.constant([0, 1], tf.int64))
    assert crop.shape == (20, 32)


def test_photometric_distortion_stays_in_range_and_is_seeded():
    image = tf.constant(np.random.default_rng(0).uniform(0, 255, (16, 16, 3)), tf.float32)
    outs = [photometric_distortion(image, tf.constant([k, 0], tf.int64)).numpy() for k in range(12)]
    assert all(o.min() >= 0 and o.max() <= 255 for o in outs)
    assert sum(not np.allclose(o, image.numpy(), atol=1e-3) for o in outs) >= 10  # 1/16 chance of no step
    np.testing.assert_array_equal(outs[3], photometric_distortion(image, tf.constant([3, 0], tf.int64)).numpy())


def test_augment_keeps_pixels_and_labels_aligned_and_pads():
    rng = np.random.default_rng(1)
    label = rng.integers(0, 5, (24, 40)).astype("int32")
    colours = np.array([[10, 20, 30], [200, 0, 0], [0, 200, 0], [0, 0, 200], [90, 90, 90]], "float32")
    augment = TrainAugment(crop_size=(32, 32), scale=None, ratio_range=(1.0, 1.0), cat_max_ratio=1.0,
                           flip_prob=0.5, photometric=False)
    flipped = 0
    for k in range(8):
        image, out = augment_example(colours[label], label, tf.constant([k, 7], tf.int64), augment)
        image, out = image.numpy(), out.numpy()
        assert image.shape == (32, 32, 3) and out.shape == (32, 32)
        valid = out != 255
        assert valid[:24].all() and not valid[24:].any()  # padded at the bottom with the ignore label
        np.testing.assert_array_equal(image[valid], colours[out[valid]])
        np.testing.assert_allclose(image[24:], np.broadcast_to(IMAGENET_MEAN_PIXEL, (8, 32, 3)), atol=1e-4)
        flipped += not any(np.array_equal(out[:24], label[:, c:c + 32]) for c in range(9))
    assert 1 <= flipped <= 7


def test_train_dataset_reproducible_and_new_each_epoch():
    (x, y) = (np.random.default_rng(0).uniform(0, 255, (6, 40, 40, 3)).astype("float32"),
              np.random.default_rng(1).integers(0, 3, (6, 40, 40)).astype("int32"))
    augment = TrainAugment(crop_size=32, scale=None)

    def epochs(dataset, n=2):
        return [np.concatenate([b[0].numpy() for b in dataset]) for _ in range(n)]

    first = epochs(train_dataset((x, y), 3, augment=augment, seed=5))
    again = epochs(train_dataset((x, y), 3, augment=augment, seed=5), n=1)
    np.testing.assert_array_equal(first[0], again[0])
    assert not np.allclose(first[0], first[1])
    batch = next(iter(train_dataset((x, y), 4, augment=augment, shuffle=False)))
    assert batch[0].shape == (4, 32, 32, 3) and batch[1].shape == (4, 32, 32) and batch[1].dtype == tf.int32


def test_bad_settings_name_the_argument():
    with pytest.raises(ValueError, match="crop_size"):
        TrainAugment(crop_size=0)
    with pytest.raises(ValueError, match="ratio_range"):
        TrainAugment(ratio_range=(2.0, 0.5))
    with pytest.raises(ValueError, match="cat_max_ratio"):
        TrainAugment(cat_max_ratio=0.0)
    with pytest.raises(ValueError, match="batch_size"):
        train_dataset((np.zeros((2, 8, 8, 3)), np.zeros((2, 8, 8))), 0)
    with pytest.raises(ValueError, match="label maps"):
        train_dataset((np.zeros((2, 8, 8, 3)), np.zeros((3, 8, 8))), 1)

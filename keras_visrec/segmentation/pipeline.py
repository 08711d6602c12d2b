"""The training augmentation of mmseg's ADE20K pipeline as a ``tf.data`` pipeline (TensorFlow by design).

mmseg's ``train_pipeline`` for the ConvNeXt UperNet configs, step by step:

1. ``Resize(img_scale=(2048, 512), ratio_range=(0.5, 2.0))``: draw ``r`` in the range, rescale
   keeping the aspect ratio so the long side fits ``2048 r`` and the short side ``512 r``
   (mmcv's ``imrescale``: factor ``min(long / max(h, w), short / min(h, w))``, size
   ``int(x · factor + 0.5)``); images bilinear, labels nearest (OpenCV's ``floor`` rule).
   With ``scale=None`` the factor is ``r`` itself (for small images such as the digit canvases).
2. ``RandomCrop(crop_size, cat_max_ratio=0.75)``: up to ten draws of a crop window until one
   holds more than one class and no class (ignore label aside) covers 75 % of it or more;
   after ten failures the eleventh draw is used.
3. ``RandomFlip(prob=0.5)``: horizontal.
4. ``PhotoMetricDistortion``: each with probability 1/2 — brightness ``+U(−32, 32)``, contrast
   ``×U(0.5, 1.5)`` (before or after the HSV steps, also at random), saturation ``×U(0.5, 1.5)``,
   hue ``+randint(−18, 18)`` of OpenCV's 180-step circle; every step clips to [0, 255]. (mmseg
   rounds down to uint8 after each step; this pipeline stays in float32.)
5. ``Pad(size=crop_size, pad_val=0, seg_pad_val=255)`` at the bottom and right. mmseg pads the
   *normalised* image with 0; our models normalise inside, so the image is padded with the
   ImageNet mean colour, which normalises to 0.

Randomness is stateless and per example (a seed pair drawn by ``tf.data.Dataset.random``), so a
run is reproducible from ``seed`` and independent of ``num_parallel_calls``; each epoch draws anew.
"""

import dataclasses

import numpy as np
import tensorflow as tf

from keras_visrec.layers.preprocessing import IMAGENET_MEAN
from keras_visrec.segmentation.metrics import IGNORE_LABEL

__all__ = ["IMAGENET_MEAN_PIXEL", "TrainAugment", "augment_example", "photometric_distortion", "random_crop",
           "random_rescale", "rescaled_size", "train_dataset"]

IMAGENET_MEAN_PIXEL = tuple(255.0 * m for m in IMAGENET_MEAN)
_CROP_TRIES = 10


def _pair(value, name):
    if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
        value = (value, value)
    try:
        pair = tuple(int(v) for v in value)
    except (TypeError, ValueError):
        raise ValueError(f"`{name}` must be an int or a (height, width) pair of ints; received {name}={value!r}.")
    if len(pair) != 2 or min(pair) < 1:
        raise ValueError(f"`{name}` must be positive (height, width); received {name}={value!r}.")
    return pair


@dataclasses.dataclass(frozen=True)
class TrainAugment:
    """The settings of mmseg's training pipeline (defaults: ADE20K at 512).

    Args:
        crop_size: int or ``(height, width)``. Defaults to `512`.
        scale: ``(long, short)`` of mmseg's ``img_scale`` or `None` (rescale by the ratio
            alone). Defaults to `(2048, 512)`.
        ratio_range: ``(low, high)`` of the random rescale ratio. Defaults to `(0.5, 2.0)`.
        cat_max_ratio: float in (0, 1]; `1.0` turns the check off. Defaults to `0.75`.
        flip_prob: float in [0, 1]. Defaults to `0.5`.
        photometric: bool. Apply ``PhotoMetricDistortion``. Defaults to `True`.
        pad_value: 3 floats. Image padding (0–255 RGB). Defaults to the ImageNet mean.
        ignore_label: int. Label padding and the label the crop check leaves out. Defaults to `255`.
    """

    crop_size: tuple = (512, 512)
    scale: tuple | None = (2048, 512)
    ratio_range: tuple = (0.5, 2.0)
    cat_max_ratio: float = 0.75
    flip_prob: float = 0.5
    photometric: bool = True
    pad_value: tuple = IMAGENET_MEAN_PIXEL
    ignore_label: int = IGNORE_LABEL

    def __post_init__(self):
        object.__setattr__(self, "crop_size", _pair(self.crop_size, "crop_size"))
        if self.scale is not None:
            object.__setattr__(self, "scale", _pair(self.scale, "scale"))
        low, high = (float(v) for v in self.ratio_range)
        if not 0 < low <= high:
            raise ValueError(f"`ratio_range` must be (low, high) with 0 < low <= high; received {self.ratio_range!r}.")
        object.__setattr__(self, "ratio_range", (low, high))
        if not 0 < float(self.cat_max_ratio) <= 1:
            raise ValueError(f"`cat_max_ratio` must be in (0, 1]; received cat_max_ratio={self.cat_max_ratio!r}.")
        if not 0 <= float(self.flip_prob) <= 1:
            raise ValueError(f"`flip_prob` must be in [0, 1]; received flip_prob={self.flip_prob!r}.")
        if len(tuple(self.pad_value)) != 3:
            raise ValueError(f"`pad_value` must be 3 floats (RGB); received pad_value={self.pad_value!r}.")
        object.__setattr__(self, "pad_value", tuple(float(v) for v in self.pad_value))


def rescaled_size(height, width, scale=None, ratio=1.0):
    """mmcv's keep-ratio rescale: the ``(height, width)`` an image takes at ``ratio`` of ``scale``.

    Args:
        height, width: ints, the image size.
        scale: ``(long, short)`` or `None` (the factor is ``ratio``).
        ratio: float.
    """
    if scale is None:
        factor = float(ratio)
    else:
        long_side, short_side = int(max(scale) * ratio), int(min(scale) * ratio)
        factor = min(long_side / max(height, width), short_side / min(height, width))
    return int(height * factor + 0.5), int(width * factor + 0.5)


def _resize_nearest(label, height, width):
    """OpenCV's ``INTER_NEAREST``: source index ``floor(i · in / out)``."""
    in_h, in_w = tf.shape(label)[0], tf.shape(label)[1]

    def index(out, size):
        scale = tf.cast(size, tf.float64) / tf.cast(out, tf.float64)
        return tf.minimum(tf.cast(tf.floor(tf.cast(tf.range(out), tf.float64) * scale), tf.int32), size - 1)

    return tf.gather(tf.gather(label, index(height, in_h), axis=0), index(width, in_w), axis=1)


def random_rescale(image, label, seed, scale=(2048, 512), ratio_range=(0.5, 2.0)):
    """Step 1: rescale by a random ratio (keep-ratio), bilinear images, nearest labels."""
    ratio = tf.random.stateless_uniform([], seed, ratio_range[0], ratio_range[1], dtype=tf.float64)
    shape = tf.cast(tf.shape(image)[:2], tf.float64)
    if scale is None:
        factor = ratio
    else:
        long_side = tf.floor(max(scale) * ratio)
        short_side = tf.floor(min(scale) * ratio)
        factor = tf.minimum(long_side / tf.reduce_max(shape), short_side / tf.reduce_min(shape))
    size = tf.maximum(tf.cast(tf.floor(shape * factor + 0.5), tf.int32), 1)
    image = tf.image.resize(image, size, method="bilinear", antialias=False)
    return image, _resize_nearest(label, size[0], size[1])


def _crop_window(seed, shape, crop_size):
    """Top-left corner of a crop: uniform in ``[0, max(size - crop, 0)]`` per axis (numpy's ``randint``)."""
    margin = tf.maximum(shape - tf.constant(crop_size), 0)
    rows, cols = tf.unstack(tf.random.experimental.stateless_split(seed, 2))
    return tf.stack([tf.random.stateless_uniform([], rows, 0, margin[0] + 1, dtype=tf.int32),
                     tf.random.stateless_uniform([], cols, 0, margin[1] + 1, dtype=tf.int32)])


def random_crop(image, label, seed, crop_size, cat_max_ratio=0.75, ignore_label=IGNORE_LABEL):
    """Step 2: a random crop of at most ``crop_size``, redrawn while one class dominates it."""
    image, label = tf.convert_to_tensor(image), tf.convert_to_tensor(label)
    shape = tf.shape(label)[:2]

    def window(array, start):
        return array[start[0]:start[0] + crop_size[0], start[1]:start[1] + crop_size[1]]

    def draw(attempt):
        return _crop_window(tf.random.experimental.stateless_fold_in(seed, attempt), shape, crop_size)

    def mixed(start):
        counts = tf.math.bincount(tf.reshape(window(label, start), [-1]), minlength=256, maxlength=256)
        counts = tf.tensor_scatter_nd_update(counts, [[ignore_label]], [0])
        share = tf.cast(tf.reduce_max(counts), tf.float64) / tf.cast(tf.maximum(tf.reduce_sum(counts), 1), tf.float64)
        return tf.logical_and(tf.math.count_nonzero(counts) > 1, share < cat_max_ratio)

    offset = draw(0)
    if cat_max_ratio < 1.0:
        # mmseg: for 10 tries, keep the window if it is mixed enough, else draw the next one
        _, offset = tf.while_loop(lambda attempt, start: tf.logical_and(attempt <= _CROP_TRIES, ~mixed(start)),
                                  lambda attempt, start: (attempt + 1, draw(attempt)), (tf.constant(1), offset))
    return window(image, offset), window(label, offset)


def photometric_distortion(image, seed, brightness_delta=32.0, contrast_range=(0.5, 1.5),
                           saturation_range=(0.5, 1.5), hue_delta=18):
    """Step 4: mmseg's ``PhotoMetricDistortion`` on a float 0–255 RGB image."""
    seeds = tf.random.experimental.stateless_split(seed, 9)

    def coin(k):
        return tf.random.stateless_uniform([], seeds[k]) < 0.5

    def draw(k, low, high):
        return tf.random.stateless_uniform([], seeds[k], low, high)

    def clip(x):
        return tf.clip_by_value(x, 0.0, 255.0)

    def contrast(x):
        return tf.cond(coin(2), lambda: clip(x * draw(3, *contrast_range)), lambda: x)

    def hsv_steps(x):
        hsv = tf.image.rgb_to_hsv(x / 255.0)
        h, s, v = tf.unstack(hsv, axis=-1)
        s = tf.cond(coin(4), lambda: tf.clip_by_value(s * draw(5, *saturation_range), 0.0, 1.0), lambda: s)
        shift = tf.cast(tf.random.stateless_uniform([], seeds[7], -hue_delta, hue_delta, dtype=tf.int32), tf.float32)
        h = tf.cond(coin(6), lambda: tf.math.floormod(h + shift / 180.0, 1.0), lambda: h)
        return clip(tf.image.hsv_to_rgb(tf.stack([h, s, v], axis=-1)) * 255.0)

    image = tf.cond(coin(0), lambda: clip(image + draw(1, -brightness_delta, brightness_delta)), lambda: image)
    contrast_first = coin(8)
    image = tf.cond(contrast_first, lambda: contrast(image), lambda: image)
    image = hsv_steps(image)
    return tf.cond(contrast_first, lambda: image, lambda: contrast(image))


def _pad(image, label, crop_size, pad_value, ignore_label):
    shape = tf.shape(label)
    bottom, right = tf.maximum(crop_size[0] - shape[0], 0), tf.maximum(crop_size[1] - shape[1], 0)
    paddings = [[0, bottom], [0, right]]
    channels = [tf.pad(image[..., c], paddings, constant_values=pad_value[c]) for c in range(3)]
    image = tf.stack(channels, axis=-1)
    label = tf.pad(label, paddings, constant_values=ignore_label)
    return tf.ensure_shape(image, (*crop_size, 3)), tf.ensure_shape(label, crop_size)


@tf.autograph.experimental.do_not_convert  # plain graph code: autograph's conversion costs seconds per trace
def augment_example(image, label, seed, augment=TrainAugment()):
    """The whole training pipeline on one example.

    Args:
        image: float or uint8 RGB ``(h, w, 3)`` in 0–255.
        label: int ``(h, w)`` (or ``(h, w, 1)``) class map, ``ignore_label`` where unlabelled.
        seed: int tensor of shape ``(2,)``: the example's stateless seed.
        augment: :class:`TrainAugment`.

    Returns:
        float32 image ``(*crop_size, 3)`` and int32 label ``(*crop_size)``.
    """
    image = tf.cast(image, tf.float32)
    label = tf.cast(label, tf.int32)
    if label.shape.rank == 3:
        label = label[..., 0]
    seeds = tf.random.experimental.stateless_split(tf.cast(seed, tf.int64), 4)
    image, label = random_rescale(image, label, seeds[0], augment.scale, augment.ratio_range)
    image, label = random_crop(image, label, seeds[1], augment.crop_size, augment.cat_max_ratio, augment.ignore_label)
    if augment.flip_prob > 0:
        flip = tf.random.stateless_uniform([], seeds[2]) < augment.flip_prob
        image, label = tf.cond(flip, lambda: (image[:, ::-1], label[:, ::-1]), lambda: (image, label))
    if augment.photometric:
        image = photometric_distortion(image, seeds[3])
    return _pad(image, label, augment.crop_size, augment.pad_value, augment.ignore_label)


def train_dataset(data, batch_size, *, augment=TrainAugment(), seed=0, shuffle=True, repeat=False,
                  drop_remainder=True):
    """A batched, augmented ``tf.data.Dataset`` of ``(images, labels)`` for ``model.fit``.

    Args:
        data: ``(images, labels)`` arrays (``(n, h, w, 3)``, ``(n, h, w)``) or a
            ``tf.data.Dataset`` of single ``(image, label)`` examples of any sizes.
        batch_size: int. Global batch size.
        augment: :class:`TrainAugment`, or `None` to batch the examples as they are.
        seed: int. Seeds the shuffle and every random draw. Defaults to `0`.
        shuffle: bool. Shuffle the examples (reshuffled each epoch). Defaults to `True`.
        repeat: bool. Repeat forever (pass ``steps_per_epoch`` to ``fit``). Defaults to `False`.
        drop_remainder: bool. Defaults to `True`.
    """
    if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
        raise ValueError(f"`batch_size` must be a positive integer; received batch_size={batch_size!r}.")
    if isinstance(data, tf.data.Dataset):
        dataset = data
    else:
        images, labels = data
        if len(images) != len(labels):
            raise ValueError(f"`data` has {len(images)} images but {len(labels)} label maps.")
        dataset = tf.data.Dataset.from_tensor_slices((images, labels))
    if shuffle:
        size = int(dataset.cardinality())
        dataset = dataset.shuffle(size if size > 0 else 1024, seed=seed, reshuffle_each_iteration=True)
    if augment is not None:
        seeds = tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True).batch(2)
        dataset = tf.data.Dataset.zip((dataset, seeds)).map(
            tf.autograph.experimental.do_not_convert(lambda example, pair: augment_example(*example, pair, augment)),
            num_parallel_calls=tf.data.AUTOTUNE)
    if repeat:
        dataset = dataset.repeat()
    return dataset.batch(batch_size, drop_remainder=drop_remainder).prefetch(tf.data.AUTOTUNE)

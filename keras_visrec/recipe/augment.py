"""Training-time augmentation of the ConvNeXt recipe from ``keras.layers``, for ``tf.data``.

The official fine-tuning uses RandomResizedCrop + flip, RandAugment (``rand-m9-mstd0.5-inc1``),
random erasing 0.25, Mixup 0.8 / CutMix 1.0 (one of the two per batch, switch prob 0.5) and
label smoothing 0.1. Here RandAugment, MixUp, CutMix and RandomErasing are Keras' own layers;
label smoothing is the loss's (`recipe_loss`), which gives the same targets as timm's mixup
with smoothing because both are linear in the one-hot label.

Given a ``seed`` tensor (shape ``(2,)``, integer), an augmenter call is a pure function of its
input and that seed: every random draw — the crop box, and each Keras layer's, whose generator is
stood in for by a stateless stream of ``fold_in(seed, draw)`` — is stateless. That lets
``finetune`` make each image's augmentation a function of (seed, epoch, position), so a run resumed
in the middle of an epoch sees the very images an uninterrupted run would, and parallel ``tf.data``
maps stay reproducible. Without a seed tensor the layers draw from their own generators.
"""

import contextlib

import keras
import tensorflow as tf

from keras_visrec.recipe.transforms import resize_bicubic_pil

__all__ = ["MixupOrCutMix", "random_resized_crop", "recipe_loss", "train_image_augmenter"]


class _SeedStream(keras.random.SeedGenerator):
    """A stand-in for a layer's SeedGenerator without state: draw ``n`` is ``fold_in(seed, n)``.

    It is only ever passed while a layer is traced into a graph, so the count is a trace-time
    constant and the graph holds stateless ops keyed by the (per-image) ``seed`` tensor.
    """

    def __init__(self, seed):  # no super().__init__(): no state variable
        self._seed = tf.cast(seed, tf.int64)
        self._draws = 0

    def next(self, ordered=True):
        self._draws += 1
        return tf.random.experimental.stateless_fold_in(self._seed, self._draws)


@contextlib.contextmanager
def _drawing_from(layer, seed):
    """While it runs, ``layer`` draws every random number from ``seed`` instead of its generator.

    Keras' preprocessing layers get their generator through ``_get_seed_generator``, which returns
    ``layer.generator`` (and a per-backend copy inside ``tf.data``); both point at the stream. The
    attributes are set without Keras' tracking and restored afterwards.
    """
    stream = _SeedStream(seed)
    saved = {key: layer.__dict__[key] for key in ("generator", "_backend_generators") if key in layer.__dict__}
    object.__setattr__(layer, "generator", stream)
    object.__setattr__(layer, "_backend_generators", {"tensorflow": stream})
    try:
        yield
    finally:
        for key in ("generator", "_backend_generators"):
            if key in saved:
                object.__setattr__(layer, key, saved[key])
            else:
                object.__delattr__(layer, key)


def _is_seed_tensor(seed):
    return seed is not None and not isinstance(seed, int)


def random_resized_crop(image, size, scale=(0.08, 1.0), ratio=(3.0 / 4.0, 4.0 / 3.0), seed=None):
    """Inception-style random crop (area share in `scale`, aspect in `ratio`) resized bicubic to `size`.

    Args:
        image: `uint8` tensor `(height, width, 3)`.
        size: int. Output side.
        scale: 2 floats in (0, 1]. Range of the crop's share of the image area.
        ratio: 2 floats > 0. Range of the crop's aspect ratio (width / height).
        seed: optional int (an op seed), or an integer tensor of shape `(2,)`: then the crop is a
            stateless function of it.
    """
    if not 0.0 < scale[0] <= scale[1] <= 1.0:
        raise ValueError(f"`scale` must satisfy 0 < low <= high <= 1; received scale={scale!r}.")
    common = dict(min_object_covered=0.0, aspect_ratio_range=ratio, area_range=scale, max_attempts=10,
                  use_image_if_no_bounding_boxes=True)
    boxes = tf.zeros([0, 0, 4], tf.float32)
    if _is_seed_tensor(seed):
        begin, crop_size, _ = tf.image.stateless_sample_distorted_bounding_box(
            tf.shape(image), boxes, seed=tf.cast(seed, tf.int64), **common)
    else:
        begin, crop_size, _ = tf.image.sample_distorted_bounding_box(tf.shape(image), boxes, seed=seed, **common)
    crop = tf.slice(image, begin, crop_size)
    return resize_bicubic_pil(crop, (size, size))


def train_image_augmenter(image_size, *, crop_scale=(0.08, 1.0), flip=True, rand_augment=True,
                          rand_augment_ops=2, rand_augment_factor=0.9, random_erasing=0.25, seed=None):
    """A per-image ``uint8 (h, w, 3) -> float32 (size, size, 3)`` 0–255 training transform.

    Random resized crop (bicubic, as PIL) → horizontal flip → ``keras.layers.RandAugment`` →
    ``keras.layers.RandomErasing``. Models normalise with ``include_preprocessing=True``.

    Args:
        image_size: int. Output side.
        crop_scale: 2 floats. Area range of the random crop; `None` resizes the whole image.
            Defaults to `(0.08, 1.0)`.
        flip: bool. Random horizontal flip. Defaults to `True`.
        rand_augment: bool. Apply RandAugment. Defaults to `True`.
        rand_augment_ops: int. Operations per image (official: 2). Defaults to `2`.
        rand_augment_factor: float. Magnitude as a fraction of the maximum (official m9 of
            10: 0.9). Defaults to `0.9`.
        random_erasing: float. Probability of erasing a random rectangle (0 turns it off).
            Defaults to `0.25`.
        seed: optional int. Seeds the layers' own generators (used when a call passes no seed).

    Returns:
        ``augment(image, seed=None)``; with a `(2,)` integer ``seed`` tensor the result is a
        stateless function of ``(image, seed)``.
    """
    base_seed = seed
    layers = []
    if flip:
        layers.append(keras.layers.RandomFlip("horizontal", seed=seed))
    if rand_augment:
        layers.append(keras.layers.RandAugment(value_range=(0, 255), num_ops=rand_augment_ops,
                                               factor=rand_augment_factor, seed=seed))
    if random_erasing:
        layers.append(keras.layers.RandomErasing(factor=float(random_erasing), value_range=(0, 255), seed=seed))

    def augment(image, seed=None):
        # one independent stateless seed per random step (crop = 0, then the layers), else the old way
        part = (lambda i: tf.random.experimental.stateless_fold_in(tf.cast(seed, tf.int64), i)) \
            if _is_seed_tensor(seed) else None
        if crop_scale is None:
            out = resize_bicubic_pil(image, (image_size, image_size))
        else:
            out = random_resized_crop(image, image_size, scale=crop_scale, seed=base_seed if part is None else part(0))
        out = tf.cast(out, tf.float32)
        out.set_shape([image_size, image_size, 3])
        for index, layer in enumerate(layers, start=1):
            with _drawing_from(layer, part(index)) if part is not None else contextlib.nullcontext():
                out = layer(out, training=True)
        out.set_shape([image_size, image_size, 3])
        return out

    return augment


class MixupOrCutMix:
    """Per batch, Mixup or CutMix (``keras.layers``) with `switch_prob` of CutMix, applied with `prob`.

    Call it on a batch ``(images, one_hot_labels)`` inside ``tf.data``; labels must be float
    one-hot (or soft) targets. A `(2,)` integer ``seed`` tensor as third argument makes the call a
    stateless function of the batch and that seed.

    Args:
        mixup_alpha: float. Beta(alpha, alpha) of Mixup; 0 turns Mixup off. Defaults to `0.8`.
        cutmix_alpha: float. Beta parameter of CutMix; 0 turns CutMix off. Defaults to `1.0`.
        prob: float. Probability of mixing a batch at all. Defaults to `1.0`.
        switch_prob: float. Probability of CutMix when both are on. Defaults to `0.5`.
        seed: optional int.
    """

    def __init__(self, mixup_alpha=0.8, cutmix_alpha=1.0, prob=1.0, switch_prob=0.5, seed=None):
        for name, value in (("prob", prob), ("switch_prob", switch_prob)):
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"`{name}` must be in [0, 1]; received {name}={value!r}.")
        if mixup_alpha < 0 or cutmix_alpha < 0:
            raise ValueError(f"Mixup/CutMix alphas must be >= 0; received {mixup_alpha!r}, {cutmix_alpha!r}.")
        self.mixup = keras.layers.MixUp(alpha=mixup_alpha, seed=seed) if mixup_alpha > 0 else None
        self.cutmix = keras.layers.CutMix(factor=cutmix_alpha, seed=seed) if cutmix_alpha > 0 else None
        self.prob, self.switch_prob = float(prob), float(switch_prob)
        self.seed = seed

    def _apply(self, layer, images, labels, seed=None):
        if seed is None:
            out = layer({"images": images, "labels": labels}, training=True)
        else:
            with _drawing_from(layer, seed):
                out = layer({"images": images, "labels": labels}, training=True)
        return tf.cast(out["images"], images.dtype), tf.cast(out["labels"], labels.dtype)

    def __call__(self, images, labels, seed=None):
        if self.mixup is None and self.cutmix is None:
            return images, labels
        stateless = _is_seed_tensor(seed)
        if stateless:
            seed = tf.cast(seed, tf.int64)
            draws = tf.random.stateless_uniform([2], seed=seed)
            layer_seed = tf.random.experimental.stateless_fold_in(seed, 1)
        else:
            draws, layer_seed = tf.random.uniform([2], seed=self.seed), None
        if self.mixup is None:
            mixed = lambda: self._apply(self.cutmix, images, labels, layer_seed)  # noqa: E731
        elif self.cutmix is None:
            mixed = lambda: self._apply(self.mixup, images, labels, layer_seed)  # noqa: E731
        else:
            mixed = lambda: tf.cond(draws[1] < self.switch_prob,  # noqa: E731
                                    lambda: self._apply(self.cutmix, images, labels, layer_seed),
                                    lambda: self._apply(self.mixup, images, labels, layer_seed))
        return tf.cond(draws[0] < self.prob, mixed, lambda: (images, labels))


def recipe_loss(label_smoothing=0.1, from_logits=True):
    """Cross-entropy on one-hot (or mixed) targets with label smoothing (official: 0.1)."""
    if not 0.0 <= label_smoothing < 1.0:
        raise ValueError(f"`label_smoothing` must be in [0, 1); received label_smoothing={label_smoothing!r}.")
    return keras.losses.CategoricalCrossentropy(from_logits=from_logits, label_smoothing=label_smoothing)

"""Top-1 / top-5 of a model on ImageNet-1k validation (tfds or an image folder), as published.

Images go through the official evaluation transform (`eval_transform`: PIL-exact bicubic,
shorter side 256, centre crop 224; 384 and up: squash, no crop), and the result is set beside the
top-1 the zoo catalogue publishes for the weights (or one given by hand).
"""

import dataclasses

import keras
import tensorflow as tf

from keras_visrec.recipe.datasets import load_image_source
from keras_visrec.recipe.transforms import eval_transform

__all__ = ["EvalResult", "evaluate", "published_top1"]


@dataclasses.dataclass
class EvalResult:
    """Accuracy of one evaluation.

    Attributes:
        top1, top5: floats in percent.
        count: int. Images evaluated.
        published_top1: float or None. The reference figure (percent).
        source: str. Where the images came from.
        image_size: int. Evaluation side (0 when unknown).
    """

    top1: float
    top5: float
    count: int
    published_top1: float | None
    source: str
    image_size: int = 0

    @property
    def delta(self):
        """``top1 - published_top1`` in points (None without a reference)."""
        return None if self.published_top1 is None else self.top1 - self.published_top1

    def summary(self):
        """One line for people: the figures and the comparison with the published top-1."""
        line = (f"{self.source} at {self.image_size}px: top-1 {self.top1:.2f}%  top-5 {self.top5:.2f}%  "
                f"({self.count} images)")
        if self.published_top1 is not None:
            line += f"  published top-1 {self.published_top1:.2f}%  delta {self.delta:+.2f} points"
        return line


def published_top1(weights, arch=None):
    """The catalogue's published top-1 (percent) of ``weights``, or None for a file / an entry without one.

    A misspelled zoo id raises (with close matches), never reads as "no published reference".
    """
    entry = _zoo_entry(weights, arch)
    return None if entry is None else entry.top1


def _zoo_entry(weights, arch=None):
    """The catalogue entry ``weights`` names (a zoo id, or "imagenet" for ``arch``); None for None or a file."""
    from keras_visrec.weights import is_weights_file, resolve_weights

    if weights is None or is_weights_file(weights):
        return None
    kind, detail = resolve_weights(weights, arch=arch)
    return detail if kind == "zoo" else None


def evaluate(model, data="imagenet2012", *, weights=None, split="validation", image_size=None, crop_pct=None,
             batch_size=50, published=None, max_examples=None, data_dir=None, manual_dir=None,
             pass_order="horizontal_first", verbose=1):
    """Top-1 / top-5 accuracy of a classifier with the official evaluation transform.

    Args:
        model: a `keras.Model`, or a registry name built with `weights`.
        data: image folder or tfds name (`"imagenet2012"` with `manual_dir`, `"imagenet_v2"`).
            Defaults to `"imagenet2012"`.
        weights: zoo id or weights file for a registry name.
        split: tfds split. Defaults to `"validation"` (`imagenet_v2` has only `"test"`).
        image_size: int or None. Evaluation side; `None`: the zoo entry's resolution, else the
            model's input size, else 224.
        crop_pct: float or None. `None`: the zoo entry's, else the official choice.
        batch_size: int. Defaults to `50`.
        published: float or None. Reference top-1 (percent); `None` takes the catalogue's
            figure for a zoo id `weights`.
        max_examples: int or None. Evaluate only the first N images (quick checks).
        data_dir, manual_dir: tfds options.
        pass_order: resize pass order, see `resize_bicubic_pil`.
        verbose: int. 1 shows a progress bar.

    Returns:
        An `EvalResult`.
    """
    entry = _zoo_entry(weights, model if isinstance(model, str) else model.name)
    if published is None and entry is not None:
        published = entry.top1
    if crop_pct is None and entry is not None:
        crop_pct = (entry.preprocessing or {}).get("crop_pct")
    if not isinstance(model, keras.Model):
        from keras_visrec.models import get_model

        size = image_size or (entry.resolution if entry is not None else 224)
        model = get_model(model, weights=weights, input_shape=(size, size, 3))
    if image_size is None:
        image_size = entry.resolution if entry is not None else (model.input_shape[1] or 224)
    if isinstance(split, str) and split == "validation" and isinstance(data, str) and data.startswith("imagenet_v2"):
        split = "test"
    source = load_image_source(data, split, data_dir, manual_dir)
    classes = model.output_shape[-1]
    if source.num_classes > classes:
        raise ValueError(
            f"{source.description} has {source.num_classes} classes but the model's head has {classes}."
        )
    normalize = not any(layer.name.endswith("_preprocessing") for layer in model.layers)
    dataset = source.dataset
    total = source.num_examples
    if max_examples is not None:
        dataset = dataset.take(max_examples)
        total = max_examples if total is None else min(total, max_examples)
    dataset = dataset.map(
        lambda image, label: (eval_transform(image, image_size, crop_pct, normalize, pass_order), label),
        num_parallel_calls=tf.data.AUTOTUNE,
    ).batch(batch_size).prefetch(tf.data.AUTOTUNE)

    predict = tf.function(lambda x: model(x, training=False))
    top1 = top5 = seen = 0
    progress = keras.utils.Progbar(total, stateful_metrics=["top1", "top5"], verbose=verbose)
    for images, labels in dataset:
        scores = tf.cast(predict(images), tf.float32)
        labels = tf.cast(labels, tf.int32)
        top1 += int(tf.reduce_sum(tf.cast(tf.math.in_top_k(labels, scores, 1), tf.int32)))
        top5 += int(tf.reduce_sum(tf.cast(tf.math.in_top_k(labels, scores, min(5, classes)), tf.int32)))
        seen += int(labels.shape[0])
        progress.update(seen, [("top1", 100.0 * top1 / seen), ("top5", 100.0 * top5 / seen)])
    if seen == 0:
        raise ValueError(f"{source.description} yielded no images.")
    return EvalResult(100.0 * top1 / seen, 100.0 * top5 / seen, seen,
                      None if published is None else float(published), source.description, int(image_size))

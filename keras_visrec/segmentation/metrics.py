"""The one confusion matrix of the package, in NumPy (evaluation loops) and as a Keras metric (``fit``).

Rows are labels, columns predictions. Pixels labelled ``ignore_label`` (255, as in mmseg and the
Cityscapes / ADE20K tools) are left out; any other label outside ``[0, classes)`` is an error on
both paths, never folded silently into the matrix. mIoU averages the IoU of the classes whose
union is non-empty over the whole dataset (mmseg's ``nanmean`` over accumulated areas).
"""

import dataclasses

import keras
import numpy as np
from keras import ops

__all__ = ["IGNORE_LABEL", "ConfusionMatrix", "MeanIoU", "SegmentationScores", "check_labels", "confusion_matrix",
           "mean_iou", "upsample_logits"]

IGNORE_LABEL = 255


def upsample_logits(logits, height, width):
    """Bilinear (half-pixel, PyTorch ``align_corners=False``) resize of logits to ``(height, width)``."""
    if int(logits.shape[1]) == height and int(logits.shape[2]) == width:
        return logits
    return ops.image.resize(logits, (height, width), interpolation="bilinear")


def check_labels(labels, classes, ignore_label=IGNORE_LABEL, *, source="labels"):
    """Raises a ValueError naming ``source`` when a label is outside ``[0, classes)`` and not ``ignore_label``."""
    labels = np.asarray(labels)
    bad = (labels != ignore_label) & ((labels < 0) | (labels >= classes))
    if bad.any():
        values = np.unique(labels[bad])[:10].tolist()
        raise ValueError(f"{source} hold values {values} outside [0, {classes}) that are not the ignore label "
                         f"{ignore_label}; pass the right `classes` or map them to {ignore_label}.")
    return labels


def confusion_matrix(labels, predictions, classes, ignore_label=IGNORE_LABEL):
    """``(classes, classes)`` int64 counts of (label, prediction) over non-ignored pixels."""
    labels = check_labels(np.asarray(labels).reshape(-1), classes, ignore_label)
    predictions = np.asarray(predictions).reshape(-1)
    if predictions.shape != labels.shape:
        raise ValueError(f"`predictions` have {predictions.size} pixels but `labels` have {labels.size}.")
    keep = labels != ignore_label
    index = labels[keep].astype(np.int64) * classes + predictions[keep].astype(np.int64)
    return np.bincount(index, minlength=classes * classes).reshape(classes, classes)


def _iou(confusion):
    confusion = np.asarray(confusion, np.float64)
    hits = np.diag(confusion)
    union = confusion.sum(0) + confusion.sum(1) - hits
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(union > 0, hits / np.maximum(union, 1e-300), np.nan)


def mean_iou(confusion):
    """mIoU (0–1) over the classes with a non-empty union; 0.0 when there is none."""
    iou = _iou(confusion)
    return float(np.nanmean(iou)) if np.isfinite(iou).any() else 0.0


@dataclasses.dataclass
class SegmentationScores:
    """mIoU, per-class IoU, pixel accuracy and mean class accuracy (all in percent) of a confusion matrix."""

    miou: float
    per_class_iou: list
    pixel_accuracy: float
    mean_accuracy: float
    class_names: tuple = ()

    @classmethod
    def from_confusion(cls, confusion, class_names=()):
        confusion = np.asarray(confusion, np.float64)
        iou = _iou(confusion)
        support = confusion.sum(1)
        with np.errstate(invalid="ignore", divide="ignore"):
            accuracy = np.where(support > 0, np.diag(confusion) / np.maximum(support, 1e-300), np.nan)
        total = confusion.sum()
        return cls(
            miou=100.0 * mean_iou(confusion),
            per_class_iou=[None if np.isnan(v) else 100.0 * float(v) for v in iou],
            pixel_accuracy=100.0 * float(np.trace(confusion) / total) if total else 0.0,
            mean_accuracy=100.0 * float(np.nanmean(accuracy)) if np.isfinite(accuracy).any() else 0.0,
            class_names=tuple(class_names),
        )

    def table(self):
        """The per-class table and the summary line, as mmseg prints them."""
        names = self.class_names or tuple(str(i) for i in range(len(self.per_class_iou)))
        width = max(5, *(len(n) for n in names))
        lines = [f"{'class':<{width}}  IoU"]
        for name, iou in zip(names, self.per_class_iou):
            lines.append(f"{name:<{width}}  {'  n/a' if iou is None else f'{iou:5.2f}'}")
        lines.append(f"mIoU {self.miou:.2f}  aAcc {self.pixel_accuracy:.2f}  mAcc {self.mean_accuracy:.2f}")
        return "\n".join(lines)


class ConfusionMatrix:
    """Accumulates a confusion matrix over a dataset (NumPy): ``update(labels, predictions)``, ``scores()``."""

    def __init__(self, classes, ignore_label=IGNORE_LABEL, class_names=()):
        if isinstance(classes, bool) or not isinstance(classes, (int, np.integer)) or classes < 1:
            raise ValueError(f"`classes` must be a positive integer; received classes={classes!r}.")
        self.classes = int(classes)
        self.ignore_label = int(ignore_label)
        self.class_names = tuple(class_names)
        self.matrix = np.zeros((self.classes, self.classes), np.int64)

    def update(self, labels, predictions):
        self.matrix += confusion_matrix(labels, predictions, self.classes, self.ignore_label)
        return self

    def scores(self):
        return SegmentationScores.from_confusion(self.matrix, self.class_names)


def _labels(y_true):
    y_true = ops.convert_to_tensor(y_true)
    if len(y_true.shape) == 4:
        y_true = y_true[..., 0]
    return ops.cast(y_true, "int32")


def _assert_label_range(labels, classes, ignore_label):
    """Fails the step when a label is out of range (TensorFlow: a runtime assertion; eager backends: a ValueError)."""
    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        if tf.executing_eagerly():
            check_labels(labels.numpy(), classes, ignore_label)
            return labels
        bad = tf.logical_and(tf.not_equal(labels, ignore_label), tf.logical_or(labels < 0, labels >= classes))
        check = tf.debugging.assert_equal(
            tf.reduce_any(bad), False,
            message=f"labels outside [0, {classes}) that are not the ignore label {ignore_label}")
        with tf.control_dependencies([check]):
            return tf.identity(labels)
    try:
        values = ops.convert_to_numpy(labels)
    except Exception:  # traced (JAX jit): no error can be raised here; update_state turns the metric NaN
        return labels
    check_labels(values, classes, ignore_label)
    return labels


@keras.saving.register_keras_serializable(package="keras_visrec")
class MeanIoU(keras.metrics.Metric):
    """mIoU of segmentation logits against integer labels, accumulated as a confusion matrix.

    Logits of another size than the labels are upsampled bilinearly first (half-pixel,
    PyTorch ``align_corners=False``).

    Args:
        classes: int. Number of classes.
        ignore_label: int. Label left out. Defaults to `255`.
        output_index: int or `None`. For stacked outputs ``(batch, exits, h, w, classes)``, the
            exit to score. Defaults to `None` (logits are ``(batch, h, w, classes)``).
        name: str. Defaults to `"miou"` (``exit{k}_miou`` with ``output_index``).
    """

    def __init__(self, classes, ignore_label=IGNORE_LABEL, output_index=None, name=None, **kwargs):
        if name is None:
            name = "miou" if output_index is None else f"exit{int(output_index) + 1}_miou"
        super().__init__(name=name, **kwargs)
        self.classes = int(classes)
        self.ignore_label = int(ignore_label)
        self.output_index = None if output_index is None else int(output_index)
        self.confusion = self.add_variable(shape=(self.classes, self.classes), initializer="zeros",
                                           name="confusion", dtype="float32")

    def update_state(self, y_true, y_pred, sample_weight=None):
        labels = _assert_label_range(_labels(y_true), self.classes, self.ignore_label)
        logits = y_pred if self.output_index is None else y_pred[:, self.output_index]
        logits = upsample_logits(logits, int(labels.shape[1]), int(labels.shape[2]))
        predicted = ops.cast(ops.argmax(logits, axis=-1), "int32")
        valid = ops.not_equal(labels, self.ignore_label)
        index = ops.where(valid, labels, 0) * self.classes + predicted
        # segment_sum with a static segment count traces on every backend (JAX's bincount does not)
        counts = ops.segment_sum(ops.reshape(ops.cast(valid, "float32"), (-1,)), ops.reshape(index, (-1,)),
                                 num_segments=self.classes * self.classes)
        counts = ops.reshape(counts, (self.classes, self.classes))
        # where no error can be raised (a JAX-traced step), an out-of-range label makes the metric NaN
        out_of_range = ops.logical_and(valid, ops.logical_or(labels < 0, labels >= self.classes))
        counts = counts + ops.where(ops.any(out_of_range), float("nan"), 0.0)
        self.confusion.assign_add(ops.cast(counts, "float32"))

    def result(self):
        confusion = ops.convert_to_tensor(self.confusion, "float32")
        hits = ops.diagonal(confusion)
        union = ops.sum(confusion, axis=0) + ops.sum(confusion, axis=1) - hits
        present = ops.cast(union > 0, "float32")
        iou = hits / ops.maximum(union, 1.0)
        return ops.sum(iou * present) / ops.maximum(ops.sum(present), 1.0)

    def reset_state(self):
        self.confusion.assign(ops.zeros(self.confusion.shape, "float32"))  # zeros_like(variable) fails on JAX

    def get_config(self):
        return {**super().get_config(), "classes": self.classes, "ignore_label": self.ignore_label,
                "output_index": self.output_index}

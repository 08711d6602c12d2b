"""Pixel cross-entropy as mmseg and the ADP-C code compute it: ignore label 255, optional class
weights (PyTorch ``CrossEntropyLoss(weight=…, ignore_index=255)``: the weighted mean over the
non-ignored pixels), on logits upsampled bilinearly (``align_corners=False``) to the label size."""

import keras
from keras import ops

from keras_visrec.segmentation.metrics import IGNORE_LABEL, _labels, upsample_logits

__all__ = ["SegmentationLoss", "pixel_cross_entropy", "upsample_logits"]


def _pixel_weights(labels, class_weights, ignore_label):
    valid = ops.not_equal(labels, ignore_label)
    safe = ops.where(valid, labels, 0)
    weight = ops.cast(valid, "float32")
    if class_weights is not None:
        weight = weight * ops.take(ops.convert_to_tensor(class_weights, "float32"), safe)
    return safe, weight


def pixel_cross_entropy(labels, logits, *, class_weights=None, ignore_label=IGNORE_LABEL):
    """Weighted mean cross-entropy over non-ignored pixels; logits are upsampled to the labels first.

    Args:
        labels: int tensor ``(batch, h, w)`` or ``(batch, h, w, 1)``.
        logits: float tensor ``(batch, h', w', classes)``.
        class_weights: sequence of floats, one per class, or `None`.
        ignore_label: int. Defaults to `255`.
    """
    labels = _labels(labels)
    classes = int(logits.shape[-1])
    if class_weights is not None and len(class_weights) != classes:
        raise ValueError(f"`class_weights` has {len(class_weights)} entries; the logits have {classes} classes.")
    safe, weight = _pixel_weights(labels, class_weights, ignore_label)
    logits = ops.cast(upsample_logits(logits, int(labels.shape[1]), int(labels.shape[2])), "float32")
    ce = keras.losses.sparse_categorical_crossentropy(safe, logits, from_logits=True)
    return ops.sum(ce * weight) / ops.maximum(ops.sum(weight), 1e-8)


@keras.saving.register_keras_serializable(package="keras_visrec")
class SegmentationLoss(keras.losses.Loss):
    """:func:`pixel_cross_entropy` as a Keras loss (one per output; weight outputs with ``loss_weights``).

    Args:
        class_weights: sequence of floats (one per class) or `None`. Defaults to `None`.
        ignore_label: int. Label excluded from the loss. Defaults to `255`.
    """

    def __init__(self, class_weights=None, ignore_label=IGNORE_LABEL, name="segmentation_loss", **kwargs):
        super().__init__(name=name, **kwargs)
        self.class_weights = None if class_weights is None else tuple(float(w) for w in class_weights)
        self.ignore_label = int(ignore_label)

    def call(self, y_true, y_pred):
        return pixel_cross_entropy(y_true, y_pred, class_weights=self.class_weights, ignore_label=self.ignore_label)

    def get_config(self):
        return {**super().get_config(), "class_weights": self.class_weights, "ignore_label": self.ignore_label}

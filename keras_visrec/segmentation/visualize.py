"""Colour overlays of predicted class maps, written as PNG atomically (nothing half-written on failure)."""

import numpy as np

from keras_visrec.files import atomic_path
from keras_visrec.segmentation.datasets import palette
from keras_visrec.segmentation.metrics import IGNORE_LABEL

__all__ = ["colorize", "overlay", "write_png"]


def colorize(labels, classes, colours=None, ignore_label=IGNORE_LABEL):
    """uint8 RGB ``(h, w, 3)`` of a class map; ``ignore_label`` pixels are black.

    Args:
        labels: int array ``(h, w)``.
        classes: int. Number of classes (size of the palette).
        colours: uint8 ``(classes, 3)`` or `None` for :func:`~keras_visrec.segmentation.datasets.palette`.
    """
    labels = np.asarray(labels)
    colours = palette(classes) if colours is None else np.asarray(colours, np.uint8)
    if colours.shape != (classes, 3):
        raise ValueError(f"`colours` must have shape ({classes}, 3); received {colours.shape}.")
    ignored = labels == ignore_label
    bad = ~ignored & ((labels < 0) | (labels >= classes))
    if bad.any():
        raise ValueError(f"`labels` hold values {np.unique(labels[bad])[:10].tolist()} outside [0, {classes}).")
    rgb = colours[np.where(ignored, 0, labels)]
    rgb[ignored] = 0
    return rgb


def overlay(image, labels, classes, alpha=0.5, colours=None):
    """The image with the class colours blended in: ``(1 − alpha) · image + alpha · colour`` (uint8).

    Args:
        image: RGB ``(h, w, 3)`` in 0–255.
        labels: int ``(h, w)`` of the same size.
        classes: int.
        alpha: float in [0, 1]. Defaults to `0.5`.
        colours: optional uint8 ``(classes, 3)``.
    """
    image = np.asarray(image, np.float32)
    labels = np.asarray(labels)
    if image.ndim != 3 or image.shape[-1] != 3 or image.shape[:2] != labels.shape:
        raise ValueError(f"`image` (h, w, 3) and `labels` (h, w) must match; received {image.shape} and {labels.shape}.")
    if not 0.0 <= float(alpha) <= 1.0:
        raise ValueError(f"`alpha` must be in [0, 1]; received alpha={alpha!r}.")
    blended = (1.0 - alpha) * image + alpha * colorize(labels, classes, colours).astype(np.float32)
    return np.clip(np.rint(blended), 0, 255).astype(np.uint8)


def write_png(path, array):
    """Writes a uint8 ``(h, w, 3)`` or ``(h, w)`` array to ``path`` as PNG, atomically."""
    import tensorflow as tf

    array = np.asarray(array)
    if array.dtype != np.uint8 or array.ndim not in (2, 3):
        raise ValueError(f"`array` must be uint8 (h, w) or (h, w, channels); received {array.dtype} {array.shape}.")
    if array.ndim == 2:
        array = array[..., None]
    with atomic_path(path) as temporary:
        tf.io.write_file(temporary, tf.io.encode_png(array))
    return path

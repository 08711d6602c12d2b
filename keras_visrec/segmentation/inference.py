"""Test-time inference as mmseg's ``EncoderDecoder`` does it: whole or sliding-window, flip and multi-scale.

* ``whole``: the image in one pass; the logits are upsampled (bilinear, ``align_corners=False``)
  to the image.
* ``slide``: windows of ``crop_size`` every ``stride`` pixels (ADE20K: 512, 341). As mmseg's
  ``slide_inference``: ``grids = max(size − crop + stride − 1, 0) // stride + 1`` per axis, a
  window starts at ``i · stride`` and the last is pulled back to end at the border
  (``start = max(min(start + crop, size) − crop, 0)``); each window's logits are upsampled to
  the window and the *logits* of overlapping windows averaged.
* Augmentations (mmseg's ``aug_test``): for each ratio of ``ratios`` the image is rescaled keeping
  its aspect ratio (mmcv's ``imrescale`` to ``ratio × scale``, or by ``ratio`` alone without a
  ``scale``), optionally flipped; each pass's logits are resized to the original image, turned
  into probabilities and flipped back, and the *probabilities* averaged. mmseg's multi-scale
  ratios are 0.5, 0.75, 1.0, 1.25, 1.5, 1.75 (:data:`MULTI_SCALE_RATIOS`).

A Keras model with a static input size takes windows of exactly that size: a window (or, in
``whole`` mode, an image) smaller than the input is padded at the bottom and right — with the
ImageNet mean colour when the model normalises its input itself (0 after normalisation, as
mmseg pads), else with 0 — and the padding is cut from the logits, as mmseg 1.x does with padded
batches. A model built with ``input_shape=(None, None, 3)`` takes every window as it is.
"""

import dataclasses
import weakref

import keras
import numpy as np
from keras import ops

from keras_visrec.segmentation.losses import upsample_logits
from keras_visrec.segmentation.pipeline import IMAGENET_MEAN_PIXEL, _pair, rescaled_size

__all__ = ["MODES", "MULTI_SCALE_RATIOS", "InferenceSettings", "inference_model", "model_input_size", "predict_labels",
           "segment", "slide_windows"]

MODES = ("whole", "slide")
MULTI_SCALE_RATIOS = (0.5, 0.75, 1.0, 1.25, 1.5, 1.75)


def model_input_size(model):
    """``(height, width)`` of the model's image input, ``None`` entries where it is dynamic."""
    shape = model.input_shape
    if isinstance(shape, list):
        shape = shape[0]
    return shape[1], shape[2]


def inference_model(model):
    """The model with its first output only (a training model's ``[logits, aux_logits]`` → ``logits``).

    The same layers and weights; for UperNet this is what ``keras_visrec.upernet.drop_auxiliary``
    returns, for any functional segmenter.
    """
    outputs = model.outputs if isinstance(model.outputs, (list, tuple)) else [model.outputs]
    if len(outputs) == 1:
        return model
    import keras

    return keras.Model(model.inputs, outputs[0], name=model.name)


@dataclasses.dataclass(frozen=True)
class InferenceSettings:
    """Validated test-time settings for one model (see :meth:`for_model`).

    Attributes:
        mode: ``"whole"`` or ``"slide"``.
        crop_size: ``(h, w)`` of a window (slide) or `None`.
        stride: ``(h, w)`` between windows (slide) or `None`.
        flip: bool. Add horizontally flipped passes.
        ratios: tuple of floats. Rescale ratios.
        scale: ``(long, short)`` mmseg ``img_scale`` the ratios apply to, or `None` (the
            ratios rescale the image itself).
        pad_value: 3 floats. Padding colour of windows smaller than a static input.
        batch_size: int. Windows per forward pass.
    """

    mode: str = "whole"
    crop_size: tuple | None = None
    stride: tuple | None = None
    flip: bool = False
    ratios: tuple = (1.0,)
    scale: tuple | None = None
    pad_value: tuple = IMAGENET_MEAN_PIXEL
    batch_size: int = 4

    @classmethod
    def for_model(cls, model, mode="whole", crop_size=None, stride=None, flip=False, ratios=(1.0,), scale=None,
                  pad_value=None, batch_size=4):
        """Checks every setting against ``model`` and fills the defaults.

        ``crop_size`` defaults to the model's static input size; ``stride`` to two thirds of the
        crop (mmseg's 341 for 512, 426 for 640); ``pad_value`` to the ImageNet mean when the model
        has a ``*_preprocessing`` layer, else 0.
        """
        if mode not in MODES:
            raise ValueError(f"`mode` must be one of {MODES}; received mode={mode!r}.")
        if not isinstance(flip, bool):
            raise ValueError(f"`flip` must be True or False; received flip={flip!r}.")
        try:
            ratios = tuple(float(r) for r in ((ratios,) if isinstance(ratios, (int, float)) else ratios))
        except (TypeError, ValueError):
            raise ValueError(f"`ratios` must be positive floats; received ratios={ratios!r}.")
        if not ratios or min(ratios) <= 0:
            raise ValueError(f"`ratios` must be one or more positive floats; received ratios={ratios!r}.")
        if scale is not None:
            scale = _pair(scale, "scale")
        if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
            raise ValueError(f"`batch_size` must be a positive integer; received batch_size={batch_size!r}.")
        if pad_value is None:
            normalises = any(layer.name.endswith("_preprocessing") for layer in model.layers)
            pad_value = IMAGENET_MEAN_PIXEL if normalises else (0.0, 0.0, 0.0)
        input_size = model_input_size(model)
        static = None not in input_size
        if mode == "slide":
            if crop_size is None:
                if not static:
                    raise ValueError(f"`crop_size` is needed for mode='slide' with model {model.name!r}, whose "
                                     "input size is dynamic.")
                crop_size = input_size
            crop_size = _pair(crop_size, "crop_size")
            if static and crop_size != tuple(input_size):
                raise ValueError(
                    f"`crop_size` {crop_size} does not fit the input of model {model.name!r}, which is static at "
                    f"{tuple(input_size)}: pass crop_size={tuple(input_size)}, or build the model with "
                    f"input_shape=({crop_size[0]}, {crop_size[1]}, 3) or (None, None, 3).")
            stride = tuple(max(1, 2 * c // 3) for c in crop_size) if stride is None else _pair(stride, "stride")
            if any(s > c for s, c in zip(stride, crop_size)):
                raise ValueError(f"`stride` {stride} must not exceed `crop_size` {crop_size}: windows further apart "
                                 "than their size leave pixels unpredicted.")
        elif crop_size is not None or stride is not None:
            raise ValueError("`crop_size` and `stride` are settings of mode='slide'; received them with "
                             f"mode={mode!r}.")
        return cls(mode, crop_size, stride, flip, ratios, scale, tuple(float(v) for v in pad_value), int(batch_size))


def slide_windows(height, width, crop_size, stride):
    """The ``(y1, y2, x1, x2)`` windows of mmseg's ``slide_inference`` over an image."""
    (crop_h, crop_w), (stride_h, stride_w) = crop_size, stride
    rows = max(height - crop_h + stride_h - 1, 0) // stride_h + 1
    cols = max(width - crop_w + stride_w - 1, 0) // stride_w + 1
    windows = []
    for row in range(rows):
        for col in range(cols):
            y2, x2 = min(row * stride_h + crop_h, height), min(col * stride_w + crop_w, width)
            windows.append((max(y2 - crop_h, 0), y2, max(x2 - crop_w, 0), x2))
    return windows


_PREDICT = weakref.WeakKeyDictionary()


def _logits(model, batch):
    """The model's logits on a batch; on TensorFlow one graph per model for every batch and window size."""
    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        if model not in _PREDICT:
            spec = tf.TensorSpec([None, *model_input_size(model), batch.shape[-1]], tf.float32)
            _PREDICT[model] = tf.function(lambda x: model(x, training=False), input_signature=[spec])
        outputs = _PREDICT[model](tf.convert_to_tensor(batch, tf.float32))
    else:
        outputs = model.predict_on_batch(batch)
    if isinstance(outputs, (list, tuple)):
        outputs = outputs[0]  # a training model's [logits, aux_logits]
    return outputs


def _forward(model, crops, settings):
    """Logits of equally sized crops ``(n, h, w, 3)`` at the crop size, ``(n, h, w, classes)``."""
    input_h, input_w = model_input_size(model)
    height, width = crops.shape[1:3]
    if input_h is not None and (height > input_h or width > input_w):
        raise ValueError(
            f"An image of {height}×{width} does not fit the static {input_h}×{input_w} input of model "
            f"{model.name!r} in mode='whole': use mode='slide', or a model built with input_shape=(None, None, 3).")
    if input_h is not None and (height, width) != (input_h, input_w):
        padded = np.empty((len(crops), input_h, input_w, 3), "float32")
        padded[:] = np.asarray(settings.pad_value, "float32")
        padded[:, :height, :width] = crops
        crops = padded
    out = []
    for start in range(0, len(crops), settings.batch_size):
        logits = _logits(model, crops[start:start + settings.batch_size])
        logits = ops.convert_to_numpy(upsample_logits(ops.convert_to_tensor(logits, "float32"),
                                                      crops.shape[1], crops.shape[2]))
        out.append(logits[:, :height, :width])
    return np.concatenate(out)


def _slide(model, image, settings):
    height, width = image.shape[:2]
    windows = slide_windows(height, width, settings.crop_size, settings.stride)
    crops = np.stack([image[y1:y2, x1:x2] for y1, y2, x1, x2 in windows])
    logits = _forward(model, crops, settings)
    summed = np.zeros((height, width, logits.shape[-1]), "float32")
    count = np.zeros((height, width, 1), "float32")
    for (y1, y2, x1, x2), window in zip(windows, logits):
        summed[y1:y2, x1:x2] += window
        count[y1:y2, x1:x2] += 1.0
    return summed / count


def _resize(array, height, width):
    if array.shape[:2] == (height, width):
        return array
    return ops.convert_to_numpy(ops.image.resize(ops.convert_to_tensor(array, "float32"), (height, width),
                                                 interpolation="bilinear", antialias=False))


def _softmax(logits):
    shifted = logits - logits.max(-1, keepdims=True)
    exp = np.exp(shifted)
    return exp / exp.sum(-1, keepdims=True)


def segment(model, image, settings=None, **options):
    """Class probabilities of one image, averaged over the test-time augmentations.

    Args:
        model: a segmenter (the first output is used if it has two: the logits).
        image: RGB array ``(h, w, 3)``, 0–255 (the model's own input convention).
        settings: :class:`InferenceSettings` or `None` to build them from ``options``.
        **options: :meth:`InferenceSettings.for_model` arguments (``mode``, ``crop_size``,
            ``stride``, ``flip``, ``ratios``, ``scale``, ``pad_value``, ``batch_size``).

    Returns:
        float32 ``(h, w, classes)`` probabilities at the image's size.

    Examples:

    >>> probabilities = segment(model, image, mode="slide", crop_size=512, stride=341, flip=True)
    """
    if settings is None:
        settings = InferenceSettings.for_model(model, **options)
    elif options:
        raise ValueError(f"Pass either `settings` or keyword options, not both; received {sorted(options)}.")
    image = np.asarray(image, "float32")
    if image.ndim != 3 or image.shape[-1] != 3:
        raise ValueError(f"`image` must be one RGB image (height, width, 3); received shape {image.shape}.")
    height, width = image.shape[:2]
    total = None
    passes = 0
    for ratio in settings.ratios:
        size = rescaled_size(height, width, settings.scale, ratio)
        scaled = _resize(image, *size)
        for flip in (False, True) if settings.flip else (False,):
            view = scaled[:, ::-1] if flip else scaled
            logits = _slide(model, view, settings) if settings.mode == "slide" else _forward(model, view[None],
                                                                                             settings)[0]
            probabilities = _softmax(_resize(logits, height, width))
            probabilities = probabilities[:, ::-1] if flip else probabilities
            total = probabilities if total is None else total + probabilities
            passes += 1
    return total / passes


def predict_labels(model, image, settings=None, **options):
    """The predicted class map ``(h, w)`` (int32) of one image; see :func:`segment`."""
    return segment(model, image, settings, **options).argmax(-1).astype("int32")

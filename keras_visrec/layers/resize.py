"""Resizing as PyTorch's ``F.interpolate`` does it, to a fixed size or to another tensor's size.

mmseg's ``resize`` and mmdet's FPN call ``F.interpolate(x, size=…)``:

* ``bilinear`` with ``align_corners=False`` samples at half-pixel centres, ``(i + ½)·in/out − ½``,
  clamped to the border — TensorFlow's ``ResizeBilinear`` with ``half_pixel_centers=True``, which
  ``keras.ops.image.resize`` emits (TFLite ``RESIZE_BILINEAR``, run by XNNPACK and the Edge TPU);
* ``nearest`` takes pixel ``floor(i·in/out)``. For whole upscaling factors that is also what
  TensorFlow's half-pixel nearest resize picks (TFLite ``RESIZE_NEAREST_NEIGHBOR``); whole
  downscaling factors are a strided slice; any other ratio a gather with PyTorch's indices.

Called on ``[x, like]`` the layer resizes ``x`` to the height and width of ``like`` (the size
need not be known when the model is built); with ``size=(h, w)`` it resizes to that size.
"""

import keras
import numpy as np
from keras import ops

__all__ = ["INTERPOLATIONS", "Resize", "torch_nearest_indices"]

INTERPOLATIONS = ("bilinear", "nearest")


def torch_nearest_indices(in_size, out_size):
    """Source pixel of each output pixel under PyTorch's ``nearest`` mode (``floor(i·in/out)``)."""
    scale = in_size / out_size
    return np.minimum(np.floor(np.arange(out_size) * scale).astype("int64"), in_size - 1)


def _nearest_axis(x, axis, in_size, out_size):
    """PyTorch-exact nearest resize of one spatial axis of known sizes (not a whole upscale)."""
    if in_size == out_size:
        return x
    if in_size % out_size == 0:
        step = in_size // out_size
        return x[:, ::step] if axis == 1 else x[:, :, ::step]
    return ops.take(x, ops.convert_to_tensor(torch_nearest_indices(in_size, out_size), "int32"), axis=axis)


@keras.saving.register_keras_serializable(package="keras_visrec")
class Resize(keras.layers.Layer):
    """Channels-last ``F.interpolate(x, size, mode, align_corners=False)``.

    Args:
        size: (int, int) or None. Output height and width; None to take them from a second
            input (``layer([x, like])``). Defaults to `None`.
        interpolation: str. `"bilinear"` (half-pixel, ``align_corners=False``) or `"nearest"`
            (PyTorch's legacy nearest). Defaults to `"bilinear"`.
    """

    def __init__(self, size=None, interpolation="bilinear", **kwargs):
        super().__init__(**kwargs)
        if interpolation not in INTERPOLATIONS:
            raise ValueError(f"`interpolation` must be one of {INTERPOLATIONS}; received "
                             f"interpolation={interpolation!r}.")
        if size is not None:
            size = tuple(size)
            if len(size) != 2 or not all(isinstance(s, (int, np.integer)) and s >= 1 for s in size):
                raise ValueError(f"`size` must be None or a pair of positive ints; received size={size!r}.")
            size = tuple(int(s) for s in size)
        self.size = size
        self.interpolation = interpolation

    def _split(self, inputs):
        if isinstance(inputs, (list, tuple)):
            if len(inputs) != 2 or self.size is not None:
                raise ValueError(f"Layer {self.name!r}: call it on one tensor with `size=` set, or on [x, like] "
                                 f"with size=None; received {len(inputs)} inputs with size={self.size}.")
            return inputs[0], inputs[1]
        if self.size is None:
            raise ValueError(f"Layer {self.name!r} has size=None: call it on [x, like] to take like's size.")
        return inputs, None

    def call(self, inputs):
        x, like = self._split(inputs)
        if like is None:
            static = self.size
        else:
            static = (like.shape[1], like.shape[2])
        if static[0] is not None and static[1] is not None:
            target = (int(static[0]), int(static[1]))
            if tuple(x.shape[1:3]) == target:
                return x
        else:
            target = tuple(ops.shape(like)[1:3])
        if self.interpolation == "bilinear":
            return ops.image.resize(x, target, interpolation="bilinear")
        height, width = x.shape[1], x.shape[2]
        known = None not in (height, width) and all(isinstance(t, int) for t in target)
        if not known or (target[0] % height == 0 and target[1] % width == 0):
            # whole upscaling factors: TensorFlow's half-pixel nearest picks floor(i·in/out) too
            # (runtime sizes: exact for whole factors, as the FPN's top-down path has them)
            return ops.image.resize(x, target, interpolation="nearest")
        return _nearest_axis(_nearest_axis(x, 1, height, target[0]), 2, width, target[1])

    def compute_output_shape(self, input_shape):
        if self.size is not None:
            return (input_shape[0],) + self.size + (input_shape[-1],)
        x_shape, like_shape = input_shape
        return (x_shape[0], like_shape[1], like_shape[2], x_shape[-1])

    def get_config(self):
        return {**super().get_config(), "size": None if self.size is None else list(self.size),
                "interpolation": self.interpolation}

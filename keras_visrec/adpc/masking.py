"""Confidence masks and the three ways of applying them to a convolution.

* ``"none"``: no masking; every exit sees the full network.
* ``"dense"``: the paper's simulation — the convolution runs on every pixel, then
  ``y·m + RBF(y·m)·(1 − m)``.
* ``"sparse"``: block-sparse — the active tiles of the output (with the halo the kernel needs)
  are gathered from the input into a batch, convolved, and scattered back; 1×1 convolutions
  gather single pixels. The blend is then the same as ``"dense"``. Because every blended map
  depends on ``y`` only where ``m = 1``, and those positions are computed exactly, ``"sparse"``
  reproduces ``"dense"`` everywhere up to float rounding.

The sparse kernels use TensorFlow gather/scatter ops (the TensorFlow backend).
"""

import keras
import numpy as np
from keras import ops

__all__ = ["MASK_MODES", "confidence_mask", "resize_mask", "MaskHook"]

MASK_MODES = ("none", "dense", "sparse")


def validate_threshold(threshold):
    if isinstance(threshold, bool) or not isinstance(threshold, (int, float)) or not 0.0 < threshold <= 1.0:
        raise ValueError(f"`threshold` must be a number in (0, 1]; received threshold={threshold!r}.")
    return float(threshold)


def validate_mode(mode):
    if mode not in MASK_MODES:
        raise ValueError(f"`mode` must be one of {MASK_MODES}; received mode={mode!r}.")
    return mode


def confidence_mask(logits, threshold=0.998):
    """1.0 where the max softmax probability is ``<= threshold`` (to compute), else 0.0.

    Args:
        logits: tensor ``(batch, height, width, classes)``.
        threshold: float in (0, 1]. Defaults to `0.998` (the paper's).

    Returns:
        A float tensor ``(batch, height, width)``; gradients do not flow through it.
    """
    confidence = ops.max(ops.softmax(logits, axis=-1), axis=-1)
    return ops.stop_gradient(ops.cast(confidence <= threshold, logits.dtype))


def _nearest_indices(src, dst):
    # PyTorch's "nearest": source index floor(i * src / dst)
    return np.minimum((np.arange(dst) * src) // dst, src - 1).astype("int32")


def resize_mask(mask, height, width):
    """Nearest resize of a ``(batch, h, w)`` mask to ``(height, width)``, PyTorch's index rule."""
    h, w = int(mask.shape[1]), int(mask.shape[2])
    if (h, w) == (height, width):
        return mask
    if h % height == 0 and w % width == 0:
        return mask[:, :: h // height, :: w // width]
    mask = ops.take(mask, _nearest_indices(h, height), axis=1)
    return ops.take(mask, _nearest_indices(w, width), axis=2)


def _out_size(size, kernel, stride, pad):
    return (size + 2 * pad - kernel) // stride + 1


def _tile_for(height, width, tile):
    t = tile
    while t > 1 and (height % t or width % t):
        t //= 2
    return t


class MaskHook:
    """The ``conv_hook`` of :class:`keras_visrec.hrnet.HRNetOps` for one masked segment.

    Args:
        mask: ``(batch, h, w)`` mask at the exit's resolution (1/4 of the input).
        mode: `"dense"` or `"sparse"`.
        tile: int. Output tile side of the sparse mode. Defaults to `8`.
        dense_above: float. In sparse mode, a convolution whose active share of tiles exceeds
            this runs densely (same result, less overhead). Defaults to `0.6`.
    """

    def __init__(self, mask, mode="dense", tile=8, dense_above=0.6):
        self.mask = mask
        self.mode = mode
        self.tile = int(tile)
        self.dense_above = float(dense_above)
        self._cache = {}
        self.computed = {}  # (h, w) -> computed fraction, for FLOP accounting

    def mask_at(self, height, width):
        key = (height, width)
        if key not in self._cache:
            self._cache[key] = resize_mask(self.mask, height, width)
        return self._cache[key]

    def __call__(self, layer, x, stride, pad):
        kernel = layer.kernel_size[0]
        height = _out_size(int(x.shape[1]), kernel, stride, pad)
        width = _out_size(int(x.shape[2]), kernel, stride, pad)
        mask = self.mask_at(height, width)
        if self.mode == "sparse":
            y = sparse_conv(layer, x, mask, stride, pad, self.tile, self.dense_above)
        else:
            y = dense_conv(layer, x, stride, pad)
        if not hasattr(layer, "blend"):
            raise TypeError(f"Layer {layer.name!r} is not a MaskedConv2D; build the model with masking enabled.")
        return layer.blend(y, mask)


def dense_conv(layer, x, stride, pad):
    """The layer applied to every pixel (explicit symmetric padding for strided convs)."""
    if stride != 1 and pad:
        x = ops.pad(x, ((0, 0), (pad, pad), (pad, pad), (0, 0)))
    return layer(x)


def sparse_conv(layer, x, mask, stride, pad, tile=8, dense_above=0.6):
    """Convolution computed only on the active tiles of ``mask`` (output resolution); zeros elsewhere."""
    import tensorflow as tf

    kernel = layer.kernel_size[0]
    if kernel == 1 and stride == 1:
        return _sparse_pointwise(layer, x, mask, dense_above)
    batch = tf.shape(x)[0]
    height, width = int(mask.shape[1]), int(mask.shape[2])
    t = _tile_for(height, width, tile)
    rows, cols = height // t, width // t
    tiles = tf.reduce_max(tf.reshape(mask, (-1, rows, t, cols, t)), axis=(2, 4))
    active_share = tf.reduce_mean(tiles)

    def dense():
        return dense_conv(layer, x, stride, pad)

    def sparse():
        index = tf.cast(tf.where(tiles > 0), tf.int32)  # (n, 3): batch, tile row, tile col
        padded = tf.pad(x, ((0, 0), (pad, pad), (pad, pad), (0, 0)))
        hp, wp = int(x.shape[1]) + 2 * pad, int(x.shape[2]) + 2 * pad
        span = (t - 1) * stride + kernel
        flat = tf.reshape(padded, (-1, int(x.shape[-1])))
        base = index[:, 0] * (hp * wp) + index[:, 1] * (t * stride * wp) + index[:, 2] * (t * stride)
        offsets = tf.constant((np.arange(span)[:, None] * wp + np.arange(span)[None, :]).astype("int32"))
        patches = tf.gather(flat, base[:, None, None] + offsets[None])
        y = tf.nn.conv2d(patches, layer.kernel, strides=stride, padding="VALID")
        if layer.use_bias:
            y = y + layer.bias
        channels = int(layer.filters)
        grid = tf.scatter_nd(index, y, tf.stack([batch, rows, cols, t, t, channels]))
        grid = tf.transpose(grid, (0, 1, 3, 2, 4, 5))
        return tf.reshape(grid, tf.stack([batch, height, width, channels]))

    def empty():
        return tf.zeros(tf.stack([batch, height, width, int(layer.filters)]), x.dtype)

    return tf.cond(active_share > dense_above, dense, lambda: tf.cond(active_share > 0, sparse, empty))


def _sparse_pointwise(layer, x, mask, dense_above):
    import tensorflow as tf

    def sparse():
        index = tf.where(mask > 0)
        y = tf.matmul(tf.gather_nd(x, index), layer.kernel[0, 0])
        if layer.use_bias:
            y = y + layer.bias
        shape = tf.concat([tf.shape(x, out_type=tf.int64)[:3], [int(layer.filters)]], axis=0)
        return tf.scatter_nd(index, y, shape)

    return tf.cond(tf.reduce_mean(mask) > dense_above, lambda: layer(x), sparse)


def as_float(value):
    return float(keras.ops.convert_to_numpy(value))

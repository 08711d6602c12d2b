"""Confidence masks and the three ways of applying them to a convolution.

* ``"none"``: no masking; every exit sees the full network.
* ``"dense"``: the paper's simulation — the convolution runs on every pixel, then
  ``y·m + RBF(y·m)·(1 − m)``.
* ``"sparse"``: block-sparse (:mod:`keras_visrec.adpc.sparse`) — the active tiles of the output
  (single pixels by default, with the halo the kernel needs) are gathered from the input into a
  batch, convolved, scattered into a zero map and blended by an XLA-fused RBF fill. Because
  every blended map depends on ``y`` only where ``m = 1``, and those positions are computed
  exactly, ``"sparse"`` reproduces ``"dense"`` everywhere up to float rounding.

The sparse kernels use TensorFlow gather/scatter ops (the TensorFlow backend).
"""

import keras
import numpy as np
from keras import ops

from keras_visrec.adpc.layers import batch_norm_affine, fused_rbf_interpolate
from keras_visrec.adpc.sparse import TilePlan, sparse_conv, sparse_pointwise_head, tile_side

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


class MaskHook:
    """The ``conv_hook`` of :class:`keras_visrec.hrnet.HRNetOps` for one masked segment.

    The mask is resized once per resolution, and in sparse mode its tiles and gather indices are
    planned once per resolution (:class:`keras_visrec.adpc.sparse.TilePlan`); every convolution
    of the segment reuses them. A resolution that is a single tile runs densely (nothing to skip).

    Args:
        mask: ``(batch, h, w)`` mask at the exit's resolution (1/4 of the input).
        mode: `"dense"` or `"sparse"`.
        tile: int. Output tile side of the sparse mode (`1`: single pixels). Defaults to `1`.
        dense_above: float. In sparse mode, a resolution whose active share of tiles exceeds
            this runs its convolutions densely (same result, less overhead). Defaults to `0.5`.
    """

    def __init__(self, mask, mode="dense", tile=1, dense_above=0.5):
        self.mask = mask
        self.mode = mode
        self.tile = int(tile)
        self.dense_above = float(dense_above)
        self._cache = {}  # (h, w) -> mask at that resolution
        self._plans = {}  # (h, w) -> TilePlan

    def mask_at(self, height, width):
        key = (height, width)
        if key not in self._cache:
            self._cache[key] = resize_mask(self.mask, height, width)
        return self._cache[key]

    def plan_at(self, height, width):
        """The :class:`~keras_visrec.adpc.sparse.TilePlan` of the mask at ``(height, width)``."""
        key = (height, width)
        if key not in self._plans:
            self._plans[key] = TilePlan(self.mask_at(height, width), self.tile)
        return self._plans[key]

    @staticmethod
    def _out_shape(layer, x, stride, pad):
        if not hasattr(layer, "blend"):
            raise TypeError(f"Layer {layer.name!r} is not a MaskedConv2D; build the model with masking enabled.")
        kernel = layer.kernel_size[0]
        return _out_size(int(x.shape[1]), kernel, stride, pad), _out_size(int(x.shape[2]), kernel, stride, pad)

    def __call__(self, layer, x, stride, pad):
        height, width = self._out_shape(layer, x, stride, pad)
        if self.mode == "sparse":
            return fused_rbf_interpolate(*self._sparse_output(layer, x, stride, pad, height, width), layer.rbf_lambda)
        return layer.blend(dense_conv(layer, x, stride, pad), self.mask_at(height, width))

    def conv_bn(self, layer, bn, x, stride, pad, relu, residual=None):
        """``relu(bn(conv(x)) + residual)`` of a masked conv (ReLU and sum optional); in sparse mode one
        fused pass after the tile convs.

        The sparse mode is an inference path: its BatchNorm uses the moving statistics.
        """
        if self.mode != "sparse":
            y = bn(self(layer, x, stride, pad))
            y = y if residual is None else y + residual
            return ops.relu(y) if relu else y
        height, width = self._out_shape(layer, x, stride, pad)
        y, mask = self._sparse_output(layer, x, stride, pad, height, width)
        scale, offset = batch_norm_affine(bn)
        return fused_rbf_interpolate(y, mask, layer.rbf_lambda, scale, offset, relu, residual)

    def pointwise_head(self, xs, conv, bn, classifier, default):
        """HRNetV2's head over the branches ``xs`` (see :func:`keras_visrec.hrnet.branches_head`); in
        sparse mode at the computed pixels only (:func:`keras_visrec.adpc.sparse.sparse_pointwise_head`),
        otherwise ``default()``."""
        if self.mode != "sparse":
            return default()
        for layer in (conv, classifier):
            self._out_shape(layer, xs[0], 1, 0)  # both MaskedConv2D
        return sparse_pointwise_head(self.plan_at(int(xs[0].shape[1]), int(xs[0].shape[2])), xs, conv, bn, classifier)

    def _sparse_output(self, layer, x, stride, pad, height, width):
        """``(y, mask)``: the conv exact on the mask's tiles (zero elsewhere) and the ``(b, h, w, 1)`` mask."""
        if tile_side(height, width, self.tile) < max(height, width):
            plan = self.plan_at(height, width)
            return sparse_conv(layer, x, plan, stride, pad, lambda: dense_conv(layer, x, stride, pad),
                               self.dense_above), plan.mask
        return dense_conv(layer, x, stride, pad), self.mask_at(height, width)[..., None]


def dense_conv(layer, x, stride, pad):
    """The layer applied to every pixel (explicit symmetric padding for strided convs)."""
    if stride != 1 and pad:
        x = ops.pad(x, ((0, 0), (pad, pad), (pad, pad), (0, 0)))
    return layer(x)


def as_float(value):
    return float(keras.ops.convert_to_numpy(value))

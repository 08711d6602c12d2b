"""Confidence masks and the three ways of applying them to a convolution.

* ``"none"``: no masking; every exit sees the full network.
* ``"dense"``: the paper's simulation — the convolution runs on every pixel, then
  ``y·m + RBF(y·m)·(1 − m)`` (:class:`DenseSimulation`; the training path).
* ``"sparse"``: the computed pixels only (:class:`SparseExecutor`, :mod:`keras_visrec.adpc.sparse`):
  gathered pixels, strips or tiles, or the dense convolution when that is measured to be faster
  (:mod:`keras_visrec.adpc.crossover`), then an XLA-fused blend. Every blended map depends on
  ``y`` only where ``m = 1``, and those positions are computed exactly, so ``"sparse"`` reproduces
  ``"dense"`` everywhere up to float rounding.

What a convolution that the sparse mode runs densely does with the skipped pixels is
``dense_fill``: `"rbf"` (default) blends them as above, so the result stays the dense
simulation's; `"computed"` keeps the values it computed there, as the unmasked network does,
and saves the blend pass, so that a busy segment (most convs dense) can cost what the unmasked one
does (at paper scale: ``bench/README.md``); it changes the outputs: a pixel computed next to a skipped one then reads
its neighbour's real features instead of the RBF fill (the exit still copies the previous
prediction wherever the mask is 0).

:class:`MaskHook` is the ``conv_hook`` of one masked segment; it hands each convolution to the
executor of its output resolution. The sparse kernels use TensorFlow gather/scatter ops (the
TensorFlow backend).
"""

import keras
import numpy as np
from keras import ops

from keras_visrec.adpc.layers import affine_finish, batch_norm_affine, fused_rbf_interpolate
from keras_visrec.adpc.sparse import TilePlan, dense_conv, dense_pointwise_head, tile_side
from keras_visrec.arguments import check_choice

__all__ = ["DENSE_FILLS", "MASK_MODES", "DenseSimulation", "MaskHook", "SparseExecutor", "confidence_mask",
           "resize_mask", "share_mask"]

MASK_MODES = ("none", "dense", "sparse")
DENSE_FILLS = ("rbf", "computed")


def validate_dense_fill(dense_fill):
    return check_choice(dense_fill, "dense_fill", DENSE_FILLS)


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


def share_mask(logits, share):
    """1.0 on the ``share`` least confident pixels of each image (lowest max softmax probability), else 0.0.

    A rule with the computed share fixed instead of the confidence threshold: ADP-C's segments
    compute exactly ``share`` of the pixels (ties broken by position). The official code has only
    the threshold rule; this one sets the paper's operating point on any task (experiments).

    Args:
        logits: tensor ``(batch, height, width, classes)``.
        share: float in (0, 1].

    Returns:
        A float tensor ``(batch, height, width)``; gradients do not flow through it.
    """
    if isinstance(share, bool) or not isinstance(share, (int, float)) or not 0.0 < share <= 1.0:
        raise ValueError(f"`share` must be a number in (0, 1]; received share={share!r}.")
    import tensorflow as tf

    height, width = int(logits.shape[1]), int(logits.shape[2])
    count = max(1, int(round(share * height * width)))
    confidence = tf.reshape(ops.max(ops.softmax(logits, axis=-1), axis=-1), (-1, height * width))
    rank = tf.argsort(tf.argsort(confidence, axis=-1, stable=True), axis=-1, stable=True)  # 0: least confident
    return ops.stop_gradient(tf.reshape(tf.cast(rank < count, logits.dtype), (-1, height, width)))


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


def _conv_out_shape(layer, x, stride, pad):
    if not hasattr(layer, "blend"):
        raise TypeError(f"Layer {layer.name!r} is not a MaskedConv2D; build the model with masking enabled.")
    kernel = layer.kernel_size[0]
    return _out_size(int(x.shape[1]), kernel, stride, pad), _out_size(int(x.shape[2]), kernel, stride, pad)


class MaskHook:
    """The ``conv_hook`` of :class:`keras_visrec.hrnet.HRNetOps` for one masked segment.

    It hands every convolution to the executor of its output resolution: one per resolution,
    built once, owning the resized mask and (sparse mode) the tile plan, the dense/sparse choice
    and the fallback. See :class:`DenseSimulation` and :class:`SparseExecutor`.

    Args:
        mask: ``(batch, h, w)`` mask at the exit's resolution (1/4 of the input).
        mode: `"dense"` or `"sparse"`.
        tile: int. Output tile side of the sparse mode (`1`: single pixels). Defaults to `1`.
        dense_above: float or `None`. Sparse mode: `None` runs each convolution densely when the
            share of active tiles is above the *measured* crossover of its kind
            (:mod:`keras_visrec.adpc.crossover`); a number in [0, 1] is one fixed share for every
            convolution instead. Defaults to `None`.
        crossover: :class:`keras_visrec.adpc.crossover.CrossoverTable` or `None`. The measured
            crossovers; `None` uses :func:`keras_visrec.adpc.crossover.default_table`.
        dense_fill: `"rbf"` or `"computed"`. Sparse mode: what a convolution run densely leaves at
            the skipped pixels (see the module docstring). Defaults to `"rbf"`.
    """

    def __init__(self, mask, mode="dense", tile=1, dense_above=None, crossover=None, dense_fill="rbf"):
        self.mask = mask
        self.mode = validate_mode(mode)
        self.tile = int(tile)
        if dense_above is not None and (isinstance(dense_above, bool) or not isinstance(dense_above, (int, float))
                                        or not 0.0 <= dense_above <= 1.0):
            raise ValueError(f"`dense_above` must be None or a number in [0, 1]; received dense_above={dense_above!r}.")
        self.dense_above = None if dense_above is None else float(dense_above)
        self.crossover = crossover
        self.dense_fill = validate_dense_fill(dense_fill)
        self._cache = {}  # (h, w) -> mask at that resolution
        self._executors = {}  # (h, w) -> executor

    def mask_at(self, height, width):
        key = (height, width)
        if key not in self._cache:
            self._cache[key] = resize_mask(self.mask, height, width)
        return self._cache[key]

    def executor(self, height, width):
        """The executor of output resolution ``(height, width)`` (built on first use)."""
        key = (height, width)
        if key not in self._executors:
            cls = SparseExecutor if self.mode == "sparse" else DenseSimulation
            self._executors[key] = cls(self, height, width)
        return self._executors[key]

    def plan_at(self, height, width):
        """The :class:`~keras_visrec.adpc.sparse.TilePlan` of the mask at ``(height, width)`` (sparse mode)."""
        return self.executor(height, width).plan

    def __call__(self, layer, x, stride, pad):
        return self.executor(*_conv_out_shape(layer, x, stride, pad)).conv(layer, x, stride, pad)

    def conv_bn(self, layer, bn, x, stride, pad, relu, residual=None):
        """``relu(bn(conv(x)) + residual)`` of a masked conv (ReLU and sum optional); in sparse mode one
        fused pass after the conv.

        The sparse mode is an inference path: its BatchNorm uses the moving statistics.
        """
        return self.executor(*_conv_out_shape(layer, x, stride, pad)).conv_bn(layer, bn, x, stride, pad, relu,
                                                                               residual)

    def pointwise_head(self, xs, conv, bn, classifier, default):
        """HRNetV2's head over the branches ``xs`` (see :func:`keras_visrec.hrnet.branches_head`)."""
        for layer in (conv, classifier):
            _conv_out_shape(layer, xs[0], 1, 0)  # both MaskedConv2D
        return self.executor(int(xs[0].shape[1]), int(xs[0].shape[2])).pointwise_head(xs, conv, bn, classifier,
                                                                                       default)


class DenseSimulation:
    """The paper's masked computation at one resolution: the conv on every pixel, then
    ``y·m + RBF(y·m)·(1 − m)``, then BatchNorm (training statistics when training), sum and ReLU.

    The training path, and the reference the sparse mode is tested against.
    """

    def __init__(self, hook, height, width):
        self.mask = hook.mask_at(height, width)

    def conv(self, layer, x, stride, pad):
        return layer.blend(dense_conv(layer, x, stride, pad), self.mask)

    def conv_bn(self, layer, bn, x, stride, pad, relu, residual=None):
        y = bn(self.conv(layer, x, stride, pad))
        y = y if residual is None else y + residual
        return ops.relu(y) if relu else y

    def pointwise_head(self, xs, conv, bn, classifier, default):
        return default()


class SparseExecutor:
    """The sparse mode at one resolution of a masked segment: owns the mask, the tile plan and, per
    convolution, the choice between running densely and the sparse ways of
    :class:`~keras_visrec.adpc.sparse.TilePlan` (gathered pixels, strips, tiles).

    With the hook's fixed ``dense_above``, a convolution gathers its active tiles while their share
    is at or below it. Otherwise the kind's measured costs decide
    (:meth:`keras_visrec.adpc.crossover.CrossoverTable.costs`, probed once per kind): a way that is
    not cheaper than the dense convolution even with nothing to compute is dropped at trace time;
    among the rest and the dense convolution, the one whose predicted time at the measured share is
    least runs (``tf.switch_case``). Every way is exact on the computed pixels, and one XLA-fused pass
    (:func:`keras_visrec.adpc.layers.fused_rbf_interpolate`) does the blend and what follows the
    conv; with the hook's ``dense_fill="computed"`` the dense choice skips the blend (BatchNorm, sum
    and ReLU on every pixel, as unmasked) and the ways' predicted costs carry the kind's measured blend. A map that is a single tile always runs densely.
    """

    def __init__(self, hook, height, width):
        self.hook = hook
        self.height, self.width = height, width
        self.mask = hook.mask_at(height, width)
        self.mask4 = self.mask[..., None]
        self.tile = tile_side(height, width, hook.tile)
        self.single_tile = self.tile >= max(height, width)
        self._plan = None

    @property
    def plan(self):
        if self._plan is None:
            self._plan = TilePlan(self.mask, self.tile)
        return self._plan

    def costs(self, kind):
        """The :class:`~keras_visrec.adpc.crossover.KindCosts` deciding ``kind``, or `None` for the fixed rule."""
        if self.hook.dense_above is not None:
            return None
        if self.hook.crossover is None:
            from keras_visrec.adpc.crossover import default_table

            self.hook.crossover = default_table()
        return self.hook.crossover.costs(kind)

    def _choose(self, kind, dense, ways, stride=1, blend_only_in_ways=False):
        """Runs ``dense()`` or one of ``ways`` (``{way: (fn, prepare)}``): the fixed rule, or the least predicted
        cost at the measured share. Every choice gives the same values where they are used.

        ``blend_only_in_ways``: the ways pay the blend and ``dense()`` does not (``dense_fill="computed"``),
        so the kind's measured blend cost is added to theirs."""
        import tensorflow as tf

        if self.single_tile:
            return dense()
        costs = self.costs(kind)
        if costs is None:  # the fixed rule: the first way up to dense_above
            way, (fn, prepare) = next(iter(ways.items()))
            if self.hook.dense_above <= 0.0:
                return dense()
            prepare()
            return fn() if self.hook.dense_above >= 1.0 else tf.cond(self.plan.tile_share > self.hook.dense_above,
                                                                     dense, fn)
        extra = costs.blend if blend_only_in_ways else 0.0
        options = [way for way in ways if way in costs.ways and costs.ways[way][0] + extra < costs.dense]
        if not options:
            return dense()
        for way in options:
            ways[way][1]()  # indices shared by later convs: built outside the branches
        predicted = [tf.constant(costs.dense, tf.float32)]
        predicted += [costs.cost(way, self.plan.share(way, stride)) + extra for way in options]
        choice = tf.argmin(tf.stack([tf.cast(p, tf.float32) for p in predicted]), output_type=tf.int32)
        return tf.switch_case(choice, [dense] + [ways[way][0] for way in options])

    def _masked_conv(self, layer, x, stride, pad, scale=1.0, offset=0.0, relu=False, residual=None):
        """``relu(blend(conv(x)) · scale + offset + residual)``, the conv by the chosen way; a dense choice
        under ``dense_fill="computed"`` leaves out the blend."""
        from keras_visrec.adpc.crossover import conv_kind, ways_of

        def blended(y):
            return fused_rbf_interpolate(y, self.mask4, layer.rbf_lambda, scale, offset, relu, residual)

        def computed(y):
            return affine_finish(y, scale, offset, relu, residual)

        finish = computed if self.hook.dense_fill == "computed" else blended
        kind = conv_kind(layer.kernel_size[0], stride, x.shape[-1], layer.filters, self.height, self.width, self.tile)
        ways = {way: (lambda way=way: blended(self.plan.conv(layer, x, stride, pad, way)),
                      lambda way=way: self.plan.prepare(x, layer, stride, pad, way))
                for way in ways_of(kind) if way != "strips" or pad == 1}
        return self._choose(kind, lambda: finish(dense_conv(layer, x, stride, pad)), ways, stride,
                            blend_only_in_ways=self.hook.dense_fill == "computed")

    def conv(self, layer, x, stride, pad):
        return self._masked_conv(layer, x, stride, pad)

    def conv_bn(self, layer, bn, x, stride, pad, relu, residual=None):
        scale, offset = batch_norm_affine(bn)
        return self._masked_conv(layer, x, stride, pad, scale, offset, relu, residual)

    def pointwise_head(self, xs, conv, bn, classifier, default):
        """The head at the computed pixels only (:meth:`TilePlan.pointwise_head`), or on every pixel
        (:func:`keras_visrec.adpc.sparse.dense_pointwise_head`) when that is predicted faster."""
        from keras_visrec.adpc.crossover import head_kind, ways_of

        kind = head_kind([x.shape[-1] for x in xs], classifier.filters, self.height, self.width, self.tile)
        (way,) = ways_of(kind)
        ways = {way: (lambda: self.plan.pointwise_head(xs, conv, bn, classifier),
                      lambda: self.plan.tile_output_index())}  # the indices, built outside the branches
        return self._choose(kind, lambda: dense_pointwise_head(xs, conv, bn, classifier), ways)


def as_float(value):
    return float(keras.ops.convert_to_numpy(value))

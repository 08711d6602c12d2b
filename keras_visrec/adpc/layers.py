"""The masked convolution of ADP-C and its learnable RBF interpolation.

A convolution in a masked segment computes its output only where the previous exit is not
confident (``mask == 1``); the skipped positions are filled from computed neighbours by a 7×7
radial-basis kernel ``exp(-λ² d²)`` with a zero centre, normalised to sum to one, with a
learnable ``λ`` (initial 3.0) per convolution:

    out = y·m + RBF(y·m)·(1 − m)

The kernel is separable (``exp(-λ²(dx² + dy²)) = a(dx)·a(dy)``), so it runs as a 7×1 and a 1×7
depthwise convolution; the zero centre needs no subtraction because ``y·m`` is zero wherever the
result is used (``1 − m > 0``).
"""

import functools

import keras
import numpy as np
from keras import ops

from keras_visrec.layers.conv import Conv2D

__all__ = ["MaskedConv2D", "RBFInterpolation", "rbf_interpolate", "fused_rbf_interpolate", "NEAR_LAMBDA"]

RBF_RADIUS = 3
MATMUL_SIDE = 128  # up to this map side the dense RBF runs as banded matmuls (see _smooth_matmul)


_NEG_SQUARED_OFFSETS = -np.arange(-RBF_RADIUS, RBF_RADIUS + 1, dtype="float32") ** 2


def _axis_weights(lam):
    # ops.multiply, not `*`: a NumPy right operand would turn a torch tensor that needs grad into NumPy
    return ops.exp(ops.multiply(ops.square(lam), ops.convert_to_tensor(_NEG_SQUARED_OFFSETS)))


def _kernel_total(weights):
    side = ops.sum(weights[RBF_RADIUS + 1:])  # a(1) + a(2) + a(3)
    return 4.0 * side + 4.0 * side * side  # sum of the 7×7 kernel without its centre, without cancellation


def rbf_interpolate(values, mask, lam):
    """Fills the positions where ``mask == 0`` from the masked ``values``.

    Args:
        values: tensor ``(batch, height, width, channels)``.
        mask: tensor ``(batch, height, width)`` or ``(…, 1)`` of 0/1.
        lam: scalar tensor, the RBF sharpness ``λ``.

    Returns:
        ``values·m + RBF(values·m)·(1 − m)``.
    """
    if len(mask.shape) == 3:
        mask = mask[..., None]
    if mask.dtype != values.dtype:
        mask = ops.cast(mask, values.dtype)
    kept = values * mask
    weights = _axis_weights(lam)
    total = _kernel_total(weights)
    height, width, channels = values.shape[1], values.shape[2], int(values.shape[-1])
    scale = 1.0 / (total + 1e-5)
    if height is not None and width is not None and max(height, width) <= MATMUL_SIDE:
        smoothed = _smooth_matmul(kept, weights, scale, int(height), int(width), channels)
    else:
        column = ops.tile(ops.reshape(weights, (2 * RBF_RADIUS + 1, 1, 1, 1)), (1, 1, channels, 1))
        row = ops.reshape(column, (1, 2 * RBF_RADIUS + 1, channels, 1))
        smoothed = ops.depthwise_conv(ops.depthwise_conv(kept, column, padding="same"), row, padding="same") * scale
    return kept + smoothed * (1.0 - mask)


# From this sharpness up, every tap two or more pixels away weighs under 1e-9 of a nearest one
# (a(2) / a(1) = exp(-3λ²)), so the 3×3 taps give the 7×7 fill to float rounding (the paper's
# initial λ = 3 gives 1e-12).
NEAR_LAMBDA = 2.65


def _near_smooth(kept, weights):
    """The fill's sum over the 3×3 neighbourhood, nine shifted slices of one padded map."""
    import tensorflow as tf

    height, width = int(kept.shape[1]), int(kept.shape[2])
    near = weights[RBF_RADIUS - 1:RBF_RADIUS + 2]
    padded = tf.pad(kept, [[0, 0], [1, 1], [1, 1], [0, 0]])
    return tf.add_n([near[i] * near[j] * padded[:, i:i + height, j:j + width] for i in range(3) for j in range(3)])


def _separable_smooth(kept, weights):
    """The fill's sum over the 7×7 neighbourhood, rows then columns."""
    import tensorflow as tf

    height, width = int(kept.shape[1]), int(kept.shape[2])
    taps = range(2 * RBF_RADIUS + 1)
    rows = tf.pad(kept, [[0, 0], [RBF_RADIUS, RBF_RADIUS], [0, 0], [0, 0]])
    rows = tf.add_n([weights[i] * rows[:, i:i + height] for i in taps])
    cols = tf.pad(rows, [[0, 0], [0, 0], [RBF_RADIUS, RBF_RADIUS], [0, 0]])
    return tf.add_n([weights[i] * cols[:, :, i:i + width] for i in taps])


def _shift_interpolate(values, mask, lam, scale, offset, residual, relu, smooth):
    """:func:`rbf_interpolate` as shifted sums (``smooth``), then ``· scale + offset + residual`` and an optional ReLU."""
    import tensorflow as tf

    kept = values * mask
    weights = _axis_weights(lam)
    fill = smooth(kept, weights) * (1.0 / (_kernel_total(weights) + 1e-5))
    out = (kept + fill * (1.0 - mask)) * scale + offset + residual
    return tf.nn.relu(out) if relu else out


_FUSED = {}


def fused_rbf_interpolate(values, mask, lam, scale=1.0, offset=0.0, relu=False, residual=None):
    """:func:`rbf_interpolate` compiled by XLA (TensorFlow), then ``relu(· scale + offset + residual)``.

    The inference path of the sparse mode: on CPU the fill is memory-bound, and XLA fuses its
    shifted sums, the blend and what follows the convolution (inference BatchNorm as per-channel
    ``scale`` and ``offset``, a residual sum, ReLU) into one or two passes over the map, where the
    unfused ops take ten or more. A sharp kernel (``|λ| >= NEAR_LAMBDA``) sums the 3×3
    neighbourhood only, in one pass. Needs static map sides; ``mask`` is ``(batch, h, w, 1)``.
    """
    import tensorflow as tf

    if not _FUSED:
        for name, smooth in (("near", _near_smooth), ("separable", _separable_smooth)):
            _FUSED[name] = tf.function(functools.partial(_shift_interpolate, smooth=smooth), jit_compile=True)
    dtype = values.dtype
    residual = tf.zeros((), dtype) if residual is None else tf.cast(residual, dtype)
    args = (values, tf.cast(mask, dtype), tf.cast(lam, dtype), tf.cast(scale, dtype), tf.cast(offset, dtype), residual,
            bool(relu))
    return tf.cond(tf.abs(args[2]) >= NEAR_LAMBDA, lambda: _FUSED["near"](*args), lambda: _FUSED["separable"](*args))


def affine_finish(values, scale=1.0, offset=0.0, relu=False, residual=None):
    """``relu(values · scale + offset + residual)``: what follows a conv whose every pixel is computed
    (the sparse mode's dense choice under ``dense_fill="computed"``), without the blend."""
    values = values * scale + offset
    values = values if residual is None else values + residual
    return ops.relu(values) if relu else values


def batch_norm_affine(bn):
    """``(scale, offset)`` of an inference-mode ``keras.layers.BatchNormalization`` (moving statistics)."""
    scale = ops.rsqrt(bn.moving_variance + bn.epsilon)
    if bn.scale:
        scale = scale * bn.gamma
    offset = -bn.moving_mean * scale
    if bn.center:
        offset = offset + bn.beta
    return scale, offset


def _band(weights, size):
    """The ``(size, size)`` matrix of the 7-tap filter ``weights`` with zero padding (banded Toeplitz)."""
    d = np.arange(size)[:, None] - np.arange(size)[None, :]
    inside = (np.abs(d) <= RBF_RADIUS).astype("float32")
    return ops.multiply(ops.take(weights, np.clip(d + RBF_RADIUS, 0, 2 * RBF_RADIUS)), ops.convert_to_tensor(inside))


def _smooth_matmul(kept, weights, scale, height, width, channels):
    """The separable 7×7 smoothing, times ``scale``, as two banded matmuls (rows, then columns).

    On CPU a depthwise convolution with few channels is several times slower than the dense
    convolution next to it; two matmuls against banded matrices do the same sums fast while the
    map sides are small (``<= MATMUL_SIDE``).
    """
    band_h = _band(weights, height)
    band_w = band_h if width == height else _band(weights, width)
    rows = ops.matmul((band_h * scale)[None], ops.reshape(kept, (-1, height, width * channels)))
    # columns: one transpose puts W in front, so the second product is one matmul per image too
    rows = ops.transpose(ops.reshape(rows, (-1, height, width, channels)), (0, 2, 1, 3))
    cols = ops.matmul(band_w[None], ops.reshape(rows, (-1, width, height * channels)))
    return ops.transpose(ops.reshape(cols, (-1, width, height, channels)), (0, 2, 1, 3))


@keras.saving.register_keras_serializable(package="keras_visrec")
class RBFInterpolation(keras.layers.Layer):
    """Learnable RBF fill of masked positions: ``call(values, mask)``.

    Args:
        initial_lambda: float. Initial ``λ``. Defaults to `3.0` (the paper's).
    """

    def __init__(self, initial_lambda=3.0, **kwargs):
        super().__init__(**kwargs)
        self.initial_lambda = float(initial_lambda)

    def build(self, input_shape=None):
        self.rbf_lambda = self.add_weight(name="rbf_lambda", shape=(),
                                          initializer=keras.initializers.Constant(self.initial_lambda))

    def call(self, values, mask):
        return rbf_interpolate(values, mask, self.rbf_lambda)

    def get_config(self):
        return {**super().get_config(), "initial_lambda": self.initial_lambda}


@keras.saving.register_keras_serializable(package="keras_visrec")
class MaskedConv2D(Conv2D):
    """A ``Conv2D`` that also owns the RBF ``λ`` of its masked output.

    Called plainly it is an ordinary convolution (the unmasked network, FLOP counting);
    :meth:`blend` applies the mask and the RBF fill to an output computed densely or sparsely.

    Args:
        initial_lambda: float. Initial ``λ``. Defaults to `3.0`.
        **kwargs: ``keras.layers.Conv2D`` arguments.
    """

    def __init__(self, *args, initial_lambda=3.0, **kwargs):
        super().__init__(*args, **kwargs)
        self.initial_lambda = float(initial_lambda)

    def build(self, input_shape):
        super().build(input_shape)
        self.rbf_lambda = self.add_weight(name="rbf_lambda", shape=(),
                                          initializer=keras.initializers.Constant(self.initial_lambda))

    # Conv2D's own (quantization-aware) variable store skips extra weights: store all of them.
    def save_own_variables(self, store):
        keras.layers.Layer.save_own_variables(self, store)

    def load_own_variables(self, store):
        keras.layers.Layer.load_own_variables(self, store)

    def blend(self, outputs, mask):
        """``outputs·m + RBF(outputs·m)·(1 − m)`` with this layer's ``λ``."""
        return rbf_interpolate(outputs, mask, self.rbf_lambda)

    def get_config(self):
        return {**super().get_config(), "initial_lambda": self.initial_lambda}

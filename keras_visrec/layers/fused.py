"""Training fast paths: GELU and LayerNorm forward/backward each as one XLA-compiled kernel.

Autodiff of exact GELU and of a channel LayerNorm on TensorFlow's CPU kernels runs every
elementwise step as its own full-size pass: GELU's backward alone is eight ops over the widest
tensor of a ConvNeXt block (the 4C-channel MLP hidden layer), and in a ConvNeXt-T training step
GELU and LayerNorm took about 15 % of the time (profile in ``bench/README.md``). Here each
forward and each backward is one small ``tf.function(jit_compile=True)`` inside an ordinary
graph, so XLA fuses it into one or two loops over memory; the gradients are the analytic ones
written out (``tests/test_training_gradients.py`` checks them against autodiff of the generic
code).

This is TensorFlow-specific on purpose (XLA clusters inside a non-XLA graph). Layers call
:func:`gelu` and :func:`layer_norm` only while training and only when :func:`fused_enabled`
says so — the TensorFlow backend, float32 (LayerNorm and GELU also bfloat16 and float16, computed
in float32 inside the kernel: under ``mixed_bfloat16`` autodiff of GELU is a dozen bfloat16 passes
that cost more than the AMX matmuls save), and the switch on; every other case runs the layer's
generic ``keras.ops`` code, which is what other backends always run. Inference keeps the generic
graph, where TensorFlow's oneDNN rewrite fuses MatMul + BiasAdd + GELU into one kernel, and which
every exporter reads.

The switch: ``fused_training(False)`` (a context manager, per thread) or the environment
variable ``KERAS_VISREC_FUSED_TRAINING=0`` turns the fast paths off; the choice is read when a
layer is traced.
"""

import contextlib
import functools
import math
import os
import threading

import keras

__all__ = ["fused_enabled", "fused_training", "gelu", "layer_norm"]

_STATE = threading.local()
_HALF = ("bfloat16", "float16")
_ENV = "KERAS_VISREC_FUSED_TRAINING"
_SQRT_HALF = math.sqrt(0.5)
_INV_SQRT_2PI = 1.0 / math.sqrt(2.0 * math.pi)


def _switch():
    default = os.environ.get(_ENV, "1").strip().lower() not in ("0", "false", "no", "off")
    return getattr(_STATE, "enabled", default)


@contextlib.contextmanager
def fused_training(enabled=True):
    """Context manager turning the fused training kernels on or off for layers traced inside it.

    Args:
        enabled: bool. Whether layers may take the fused TensorFlow path. Defaults to `True`.
    """
    previous = getattr(_STATE, "enabled", None)
    _STATE.enabled = bool(enabled)
    try:
        yield
    finally:
        if previous is None:
            del _STATE.enabled
        else:
            _STATE.enabled = previous


def fused_enabled(training=True, dtype="float32", half=False):
    """Whether a layer called with ``training`` on a ``dtype`` tensor takes the fused path.

    ``half``: the caller's fused op also takes bfloat16 / float16 tensors (it computes in float32).
    """
    dtypes = ("float32", *_HALF) if half else ("float32",)
    return (bool(training) and keras.backend.backend() == "tensorflow" and _switch()
            and keras.backend.standardize_dtype(dtype) in dtypes)


@functools.lru_cache(maxsize=None)
def _tf_gelu():
    import tensorflow as tf

    # float32 inside; a bfloat16 / float16 tensor is read and written in its own dtype (casts fuse away).
    # Φ(z) = (1 + erf(z/√2)) / 2, as Keras and TensorFlow write exact GELU: XLA's erf costs a third less than its
    # erfc here (stage-1 hidden layer of ConvNeXt-T at batch 8: forward 16.5 -> 11.5 ms, backward 17.9 -> 14.4 ms)
    @tf.function(jit_compile=True, autograph=False)
    def forward(z):
        wide = tf.cast(z, tf.float32)
        return tf.cast(wide * (0.5 + 0.5 * tf.math.erf(wide * _SQRT_HALF)), z.dtype)

    @tf.function(jit_compile=True, autograph=False)
    def backward(z, upstream):
        # d/dz [z·Φ(z)] = Φ(z) + z·φ(z)
        wide = tf.cast(z, tf.float32)
        cdf = 0.5 + 0.5 * tf.math.erf(wide * _SQRT_HALF)
        slope = cdf + wide * (_INV_SQRT_2PI * tf.exp(-0.5 * tf.square(wide)))
        return tf.cast(tf.cast(upstream, tf.float32) * slope, z.dtype)

    @tf.custom_gradient
    def gelu_op(z):
        return forward(z), lambda upstream: backward(z, upstream)

    return gelu_op


def gelu(x):
    """Exact (erf) GELU whose forward and backward are each one XLA kernel (TensorFlow).

    ``x``: float32, bfloat16 or float16 (computed in float32, returned in ``x``'s dtype). Equal to
    ``keras.activations.gelu(x, approximate=False)`` up to float rounding.
    """
    return _tf_gelu()(x)


@functools.lru_cache(maxsize=None)
def _tf_layer_norm(epsilon):
    import tensorflow as tf

    @tf.function(jit_compile=True, autograph=False)
    def forward(x, gamma, beta):
        centred = x - tf.reduce_mean(x, axis=-1, keepdims=True)
        inv_std = tf.math.rsqrt(tf.reduce_mean(tf.square(centred), axis=-1, keepdims=True) + epsilon)
        normalised = centred * inv_std
        return normalised * gamma + beta, normalised, inv_std

    @tf.function(jit_compile=True, autograph=False)
    def backward(upstream, normalised, inv_std, gamma):
        # dx = rstd · (g − mean(g) − x̂ · mean(g · x̂)) with g = dy · γ; dγ = Σ dy · x̂; dβ = Σ dy
        scaled = upstream * gamma
        grad_x = inv_std * (scaled - tf.reduce_mean(scaled, axis=-1, keepdims=True)
                            - normalised * tf.reduce_mean(scaled * normalised, axis=-1, keepdims=True))
        axes = list(range(len(upstream.shape) - 1))
        return grad_x, tf.reduce_sum(upstream * normalised, axis=axes), tf.reduce_sum(upstream, axis=axes)

    @tf.custom_gradient
    def layer_norm_op(x, gamma, beta):
        outputs, normalised, inv_std = forward(x, gamma, beta)
        # Keeps x̂ and 1/σ (one value per pixel) rather than x: the same memory, no recomputation.
        return outputs, lambda upstream: backward(upstream, normalised, inv_std, gamma)

    return layer_norm_op


def layer_norm(x, gamma, beta, epsilon):
    """LayerNorm over the last axis, ``(x − μ)·rsqrt(σ² + ε)·γ + β``, as fused XLA kernels.

    Args:
        x: float32 tensor, normalised over its last axis.
        gamma, beta: float32 vectors of the last axis' size.
        epsilon: float. Added to the variance.
    """
    return _tf_layer_norm(float(epsilon))(x, gamma, beta)

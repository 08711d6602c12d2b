"""Conv2D that keeps TensorFlow's CPU convolution off oneDNN's slow paths.

``import keras_visrec`` turns TensorFlow's oneDNN rewrites on (they fuse ConvNeXt's MatMul +
BiasAdd + GELU, ~1.4× on this project's CPUs). The same rewrite also sends every ``Conv2D`` to
oneDNN, which on the 2-core AVX2 machine here runs the dense 3×3 convolutions of HRNet, ADP-C and
UperNet's head several times slower than TensorFlow's own kernel, and at batch 1 on large maps
falls back to a reference loop (measured, TF 2.21: a 3×3 256→48 conv on a 256×512 map, 0.6 s on
TensorFlow's kernel, over 40 s through oneDNN; UperNet's 3×3 2048→512 fusion conv at 128×128,
5.3 s against over 100 s; ``bench/README.md``). TensorFlow's generic ``Conv`` op is not rewritten
and runs the same Eigen kernel as ``Conv2D`` without oneDNN, so on the TensorFlow backend, on
CPU, for float32 channels-last ungrouped undilated convolutions, this layer computes the convolution with
it and takes ``Conv2D``'s own gradient ops for the backward pass. Other backends, dtypes, GPUs,
``KERAS_VISREC_FUSED_TRAINING=0`` and processes without oneDNN rewrites run Keras's code.
Weights, names and config are Keras's ``Conv2D``'s; exporters emit it as a plain ``Conv2D``.

:class:`DepthwiseConv2D` is the same idea for mixed precision: oneDNN's bfloat16 depthwise
gradient kernels are about 2.5× slower than its float32 ones (ConvNeXt-T's 7×7 convs at batch 8 on
an AVX-512/AMX CPU), so while training on the TensorFlow CPU path a bfloat16 / float16 depthwise
convolution computes in float32 (kernel and inputs as the mixed policy rounds them, output cast
back): the same function with float32 accumulation, at float32 speed.
"""

import functools

import keras

from keras_visrec.layers import fused

__all__ = ["Conv2D", "DepthwiseConv2D", "generic_conv_active", "tf_conv2d"]


@functools.lru_cache(maxsize=None)
def _onednn_on_cpu_only():
    """Whether TensorFlow rewrites convolutions to oneDNN and no GPU would take them instead."""
    import tensorflow as tf
    from tensorflow.python.util import _pywrap_util_port  # what TensorFlow itself asks

    return bool(_pywrap_util_port.IsMklEnabled()) and not tf.config.list_physical_devices("GPU")


@functools.lru_cache(maxsize=None)
def _generic_conv(strides, padding):
    import tensorflow as tf

    strides4, dilations4 = [1, *strides, 1], [1, 1, 1, 1]

    @tf.custom_gradient
    def conv(x, kernel):
        y = tf.raw_ops.Conv(input=x, filter=kernel, strides=strides4, padding=padding,
                            data_format="CHANNELS_LAST", dilations=dilations4)

        def grad(upstream):
            # the ops TensorFlow's own Conv2D gradient uses, with the same attributes
            dx = tf.raw_ops.Conv2DBackpropInput(input_sizes=tf.shape(x), filter=kernel, out_backprop=upstream,
                                                strides=strides4, padding=padding, dilations=dilations4)
            dk = tf.raw_ops.Conv2DBackpropFilter(input=x, filter_sizes=tf.shape(kernel), out_backprop=upstream,
                                                 strides=strides4, padding=padding, dilations=dilations4)
            return dx, dk

        return y, grad

    return conv


def generic_conv_active(dtype="float32"):
    """Whether float32 convolutions take TensorFlow's generic ``Conv`` op here (timings depend on it)."""
    return _onednn_on_cpu_only() and fused.fused_enabled(True, dtype)


def _generic_applies(x, kernel, dilations):
    # undilated only: the CPU gradient kernels take no dilation
    return (tuple(dilations) == (1, 1) and keras.backend.standardize_dtype(kernel.dtype) == "float32"
            and generic_conv_active(x.dtype))


def _generic(x, kernel, strides, padding):
    import tensorflow as tf

    conv = _generic_conv(tuple(strides), padding.upper())
    return conv(x, tf.convert_to_tensor(kernel))  # a tensor: the gradient reaches a variable kernel


def tf_conv2d(x, kernel, strides=(1, 1), padding="VALID", dilations=(1, 1)):
    """``tf.nn.conv2d`` (NHWC) for TensorFlow code paths, off oneDNN where :class:`Conv2D` would be."""
    import tensorflow as tf

    if _generic_applies(x, kernel, dilations):
        return _generic(x, kernel, strides, padding)
    return tf.nn.conv2d(x, kernel, (1, *strides, 1), padding.upper(), dilations=(1, *dilations, 1))


@keras.saving.register_keras_serializable(package="keras_visrec")
class Conv2D(keras.layers.Conv2D):
    """``keras.layers.Conv2D`` (same arguments) whose TensorFlow CPU convolution avoids oneDNN."""

    def convolution_op(self, inputs, kernel):
        if self.groups == 1 and self.data_format == "channels_last" and _generic_applies(inputs, kernel,
                                                                                          self.dilation_rate):
            return _generic(inputs, kernel, self.strides, self.padding)
        return super().convolution_op(inputs, kernel)


@keras.saving.register_keras_serializable(package="keras_visrec")
class DepthwiseConv2D(keras.layers.DepthwiseConv2D):
    """``keras.layers.DepthwiseConv2D`` (same arguments) whose half-precision TensorFlow CPU training
    computes in float32 (oneDNN's bfloat16 depthwise gradients are the slow ones)."""

    def call(self, inputs, training=None):
        if not self._widens(inputs, training):
            return super().call(inputs)
        ops = keras.ops
        outputs = ops.depthwise_conv(ops.cast(inputs, "float32"), ops.cast(self.kernel, "float32"),
                                     strides=self.strides, padding=self.padding, dilation_rate=self.dilation_rate,
                                     data_format=self.data_format)
        if self.use_bias:
            outputs = ops.add(outputs, ops.cast(self.bias, "float32"))
        return ops.cast(outputs, inputs.dtype)

    def _widens(self, inputs, training):
        """Whether this call computes in float32: half-precision training on TensorFlow's oneDNN CPU path."""
        dtype = keras.backend.standardize_dtype(inputs.dtype)
        return (dtype != "float32" and self.data_format == "channels_last"
                and self.activation in (None, keras.activations.linear)
                and fused.fused_enabled(training, dtype, half=True) and _onednn_on_cpu_only())

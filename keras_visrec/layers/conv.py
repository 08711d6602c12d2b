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

On CPUs with AVX-512, oneDNN has kernels of its own for these shapes and is the faster one below
``ONEDNN_MAX_CHANNELS`` input channels (HRNet's and ADP-C's convs, 0.62–0.95× the generic op's time on
2-core AVX-512 VMs, ``bench/conv_onednn.py``; its strip convolutions too): there those convolutions stay on
oneDNN's ``Conv2D``, and only the wide ones (UperNet's 512+ channels, where oneDNN takes 1.8–2.3×) take the
generic op.

Wide 3×3 convolutions (stride 1, ``same`` padding, at least ``WINOGRAD_MIN_CHANNELS`` input
channels on a map of at least ``WINOGRAD_MIN_PIXELS``: UperNet's FPN and fusion convs) compute their
forward pass as Winograd F(2×2, 3×3) instead: 16 GEMMs over 4×4 input tiles do 2.25× fewer
multiplications than the direct convolution, and the tile transforms are one XLA loop each. The
result equals the direct convolution to float32 rounding (~1e-6 relative). The input gradient, itself
a 3×3 "same" convolution (of the upstream gradient with the rotated kernel), takes Winograd too where
it is as wide; the kernel gradient is ``Conv2D``'s own op.
The tiles are processed in chunks of tile rows whose transformed input and products each take at most
``WINOGRAD_CHUNK_BYTES`` (per image when the batch size is unknown at trace time), so neither (4× the
map's size) has to exist whole. HRNet and ADP-C have no such convs.

:class:`DepthwiseConv2D` is the same idea for mixed precision: oneDNN's bfloat16 depthwise
gradient kernels are about 2.5× slower than its float32 ones (ConvNeXt-T's 7×7 convs at batch 8 on
an AVX-512/AMX CPU), so while training on the TensorFlow CPU path a bfloat16 / float16 depthwise
convolution computes in float32 (kernel and inputs as the mixed policy rounds them, output cast
back): the same function with float32 accumulation, at float32 speed.

Its kernel gradient, too, avoids oneDNN's op when training on that path (stride 1, ``same`` padding, odd
kernel, multiplier 1, static shapes): oneDNN's 7×7 depthwise kernel gradient runs at 2–12 GFLOP/s, worst on
small maps (ConvNeXt-T's stage 4 at batch 8: 12 ms). The same sums are a *forward* depthwise convolution
with the roles swapped: a group of images moved into the channels, ``(1, H + k − 1, W + k − 1, g·C)``,
convolved ``valid`` with the upstream gradient as the kernel ``(H, W, g·C, 1)``, gives each channel's
correlation at the ``k×k`` offsets; the groups' results are summed. Groups of ``DEPTHWISE_GRAD_GROUP`` (4) images
were fastest at every ConvNeXt-T stage at batch 8 and 32 (2-core AVX-512/AMX VM: 1.5–7× oneDNN's op,
``bench/README.md``). Without oneDNN, TensorFlow's own kernel gradient is the fast one and is kept.
"""

import functools

import keras
import numpy as np

from keras_visrec.layers import fused

__all__ = ["Conv2D", "DepthwiseConv2D", "conv_routing", "generic_conv_active", "swapped_depthwise_kernel_gradient",
           "tf_conv2d", "winograd_applies"]

# Images per forward depthwise conv of the swapped kernel gradient (see the module docstring): at least
# DEPTHWISE_GRAD_GROUP, doubled until a group holds DEPTHWISE_GRAD_MIN_ELEMENTS input elements, so that the small
# maps of small models (ConvNeXt-Atto on 32x32 digits: 8x8x40 in stage 1) do not become hundreds of tiny convs
DEPTHWISE_GRAD_GROUP = 4
DEPTHWISE_GRAD_MIN_ELEMENTS = 2 ** 17
# On AVX-512 CPUs, convolutions with fewer input channels than this stay on oneDNN (see the module docstring)
ONEDNN_MAX_CHANNELS = 512
# Where Winograd F(2x2, 3x3) beats the direct convolution (2-core AVX-512 VM, bench/README.md: 2048->512 at
# 128x128 0.63x the time, 512->512 at 64x64 0.73x; 512->512 at 32x32 1.39x, 64->48 2.0x)
WINOGRAD_MIN_CHANNELS = 512
WINOGRAD_MIN_PIXELS = 64 * 64
WINOGRAD_CHUNK_BYTES = 64 * 2 ** 20
# F(2x2, 3x3): kernel transform G, input transform B^T (rows), output transform A^T (rows)
_WINOGRAD_G = np.array([[1.0, 0.0, 0.0], [0.5, 0.5, 0.5], [0.5, -0.5, 0.5], [0.0, 0.0, 1.0]], "float32")


@functools.lru_cache(maxsize=None)
def _onednn_on_cpu_only():
    """Whether TensorFlow rewrites convolutions to oneDNN and no GPU would take them instead."""
    import tensorflow as tf
    from tensorflow.python.util import _pywrap_util_port  # what TensorFlow itself asks

    return bool(_pywrap_util_port.IsMklEnabled()) and not tf.config.list_physical_devices("GPU")


# the ops TensorFlow's own Conv2D gradient uses, with the same attributes (undilated)
def _input_gradient(x, kernel, upstream, strides4, padding):
    import tensorflow as tf

    return tf.raw_ops.Conv2DBackpropInput(input_sizes=tf.shape(x), filter=kernel, out_backprop=upstream,
                                          strides=strides4, padding=padding, dilations=[1, 1, 1, 1])


def _kernel_gradient(x, kernel, upstream, strides4, padding):
    import tensorflow as tf

    return tf.raw_ops.Conv2DBackpropFilter(input=x, filter_sizes=tf.shape(kernel), out_backprop=upstream,
                                           strides=strides4, padding=padding, dilations=[1, 1, 1, 1])


@functools.lru_cache(maxsize=None)
def _generic_conv(strides, padding):
    import tensorflow as tf

    strides4, dilations4 = [1, *strides, 1], [1, 1, 1, 1]

    @tf.custom_gradient
    def conv(x, kernel):
        y = tf.raw_ops.Conv(input=x, filter=kernel, strides=strides4, padding=padding,
                            data_format="CHANNELS_LAST", dilations=dilations4)

        def grad(upstream):
            return (_input_gradient(x, kernel, upstream, strides4, padding),
                    _kernel_gradient(x, kernel, upstream, strides4, padding))

        return y, grad

    return conv


@functools.lru_cache(maxsize=None)
def _cpu_has_avx512():
    """Whether this CPU has AVX-512 (``avx512f`` in ``/proc/cpuinfo``; elsewhere assumed not)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            return any(line.startswith("flags") and " avx512f" in line for line in handle)
    except OSError:
        return False


def generic_conv_active(dtype="float32"):
    """Whether float32 convolutions may take TensorFlow's generic ``Conv`` op here (timings depend on it; which
    ones: :func:`conv_routing`)."""
    return _onednn_on_cpu_only() and fused.fused_enabled(True, dtype)


def conv_routing():
    """Which kernel runs float32 convolutions here: `"tf"` (Keras's ``Conv2D``, no oneDNN rewrite), `"generic"`
    (TensorFlow's generic ``Conv`` op) or `"onednn-narrow"` (oneDNN below ``ONEDNN_MAX_CHANNELS`` input channels,
    the generic op from there)."""
    if not generic_conv_active():
        return "tf"
    return "onednn-narrow" if _cpu_has_avx512() else "generic"


def _generic_applies(x, kernel, dilations, narrow_on_onednn=True):
    # undilated only: the CPU gradient kernels take no dilation
    narrow = narrow_on_onednn and _cpu_has_avx512() and int(kernel.shape[2]) < ONEDNN_MAX_CHANNELS
    return (tuple(dilations) == (1, 1) and keras.backend.standardize_dtype(kernel.dtype) == "float32"
            and generic_conv_active(x.dtype) and not narrow)


def _generic(x, kernel, strides, padding):
    import tensorflow as tf

    if winograd_applies(x.shape, kernel.shape, strides, padding):
        return _winograd_conv()(x, tf.convert_to_tensor(kernel))
    conv = _generic_conv(tuple(strides), padding.upper())
    return conv(x, tf.convert_to_tensor(kernel))  # a tensor: the gradient reaches a variable kernel


def winograd_applies(input_shape, kernel_shape, strides=(1, 1), padding="same"):
    """Whether a convolution of these shapes takes the Winograd forward pass (static map size only)."""
    height, width = input_shape[1], input_shape[2]
    return (tuple(kernel_shape[:2]) == (3, 3) and tuple(strides) == (1, 1) and padding.lower() == "same"
            and height is not None and width is not None and height * width >= WINOGRAD_MIN_PIXELS
            and kernel_shape[2] >= WINOGRAD_MIN_CHANNELS)


@functools.lru_cache(maxsize=None)
def _winograd_transforms():
    import tensorflow as tf

    @tf.function(jit_compile=True, autograph=False)
    def tiles(padded, tile_rows, tile_cols):
        """``B^T d B`` of every 4×4 tile (stride 2) of ``padded``: ``(16, batch·rows·cols, C)``."""
        rows = [padded[:, a:a + 2 * tile_rows:2] for a in range(4)]
        transformed = []
        for r in (rows[0] - rows[2], rows[1] + rows[2], rows[2] - rows[1], rows[1] - rows[3]):
            cols = [r[:, :, b:b + 2 * tile_cols:2] for b in range(4)]
            transformed += [cols[0] - cols[2], cols[1] + cols[2], cols[2] - cols[1], cols[1] - cols[3]]
        return tf.reshape(tf.stack(transformed), (16, -1, padded.shape[-1]))

    @tf.function(jit_compile=True, autograph=False)
    def untile(products, tile_rows, tile_cols):
        """``A^T m A`` of every tile's 4×4 products, laid out as the ``(batch, 2·rows, 2·cols, C)`` map."""
        m = [products[k] for k in range(16)]
        half = [(m[b] + m[4 + b] + m[8 + b], m[4 + b] - m[8 + b] - m[12 + b]) for b in range(4)]
        out = [[c[0] + c[1] + c[2], c[1] - c[2] - c[3]] for c in ([half[b][i] for b in range(4)] for i in range(2))]
        y = tf.stack([tf.stack(out[0], axis=1), tf.stack(out[1], axis=1)], axis=1)  # (P, 2, 2, C)
        y = tf.reshape(y, (-1, tile_rows, tile_cols, 2, 2, products.shape[-1]))
        return tf.reshape(tf.transpose(y, (0, 1, 3, 2, 4, 5)), (-1, 2 * tile_rows, 2 * tile_cols, products.shape[-1]))

    return tiles, untile


def _winograd_forward(x, kernel):
    """3×3, stride 1, ``same`` convolution as Winograd F(2×2, 3×3), in chunks of tile rows."""
    import tensorflow as tf

    tiles, untile = _winograd_transforms()
    height, width, channels, filters = x.shape[1], x.shape[2], kernel.shape[2], kernel.shape[3]
    tile_rows, tile_cols = (height + 1) // 2, (width + 1) // 2
    # one pixel of zeros around the map (the "same" padding), plus one more where a side is odd
    padded = tf.pad(x, [[0, 0], [1, 1 + height % 2], [1, 1 + width % 2], [0, 0]])
    transformed_kernel = tf.reshape(tf.einsum("ai,ijco,bj->abco", _WINOGRAD_G, kernel, _WINOGRAD_G),
                                    (16, channels, filters))
    batch = x.shape[0] or 1
    # the transformed input (16 x tiles x C_in) and the products (16 x tiles x C_out) of a chunk within the budget
    chunk = max(1, WINOGRAD_CHUNK_BYTES // (16 * 4 * batch * tile_cols * max(channels, filters)))
    outputs = []
    for start in range(0, tile_rows, chunk):
        rows = min(chunk, tile_rows - start)
        window = padded[:, 2 * start:2 * (start + rows) + 2]
        outputs.append(untile(tf.matmul(tiles(window, rows, tile_cols), transformed_kernel), rows, tile_cols))
    y = outputs[0] if len(outputs) == 1 else tf.concat(outputs, axis=1)
    return y[:, :height, :width]


@functools.lru_cache(maxsize=None)
def _winograd_conv():
    import tensorflow as tf

    strides4 = [1, 1, 1, 1]

    @tf.custom_gradient
    def conv(x, kernel):
        def grad(upstream):
            # the input gradient of a 3x3 stride-1 "same" conv is the "same" conv of the upstream gradient with
            # the kernel rotated by 180° and its channel axes swapped: Winograd again where that one is wide
            flipped = tf.transpose(tf.reverse(kernel, [0, 1]), [0, 1, 3, 2])
            if winograd_applies(upstream.shape, flipped.shape):
                dx = _winograd_forward(upstream, flipped)
            else:
                dx = _input_gradient(x, kernel, upstream, strides4, "SAME")
            return dx, _kernel_gradient(x, kernel, upstream, strides4, "SAME")

        return _winograd_forward(x, kernel), grad

    return conv


def tf_conv2d(x, kernel, strides=(1, 1), padding="VALID", dilations=(1, 1)):
    """``tf.nn.conv2d`` (NHWC) for TensorFlow code paths, off oneDNN where :class:`Conv2D` would be, and where the
    batch size is unknown at trace time: oneDNN's conv gives a wrongly shaped result for an empty batch (the sparse
    tile convolutions of an empty mask)."""
    import tensorflow as tf

    if _generic_applies(x, kernel, dilations, narrow_on_onednn=bool(x.shape[0])):
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


def swapped_depthwise_kernel_gradient(x, upstream, kernel_size):
    """The kernel gradient ``(kh, kw, C, 1)`` of a stride-1 ``same`` depthwise conv (multiplier 1) of ``x``
    (NHWC, static shape) whose output gradient is ``upstream``, as forward depthwise convs with the roles of
    input and kernel swapped, a group of images at a time (see the module docstring)."""
    import tensorflow as tf

    batch, height, width, channels = (int(d) for d in x.shape)
    kh, kw = (int(k) for k in kernel_size)
    # after the upstream gradient exists: TensorFlow would otherwise build every layer's padded copy as soon
    # as the forward pass made ``x``, and hold them all until the backward pass reached them
    with tf.control_dependencies([upstream]):
        padded = tf.pad(x, [[0, 0], [kh // 2, kh // 2], [kw // 2, kw // 2], [0, 0]])
    size = DEPTHWISE_GRAD_GROUP
    while size < batch and size * height * width * channels < DEPTHWISE_GRAD_MIN_ELEMENTS:
        size *= 2
    total = None
    for start in range(0, batch, size):
        group = min(size, batch - start)
        # the group's images into the channels: channel c of image i becomes channel i·C + c (the transpose
        # moves whole pixels of C values)
        image = tf.reshape(tf.transpose(padded[start:start + group], (1, 2, 0, 3)),
                           (1, height + kh - 1, width + kw - 1, group * channels))
        kernel = tf.reshape(tf.transpose(upstream[start:start + group], (1, 2, 0, 3)), (height, width, group * channels, 1))
        part = tf.nn.depthwise_conv2d(image, kernel, [1, 1, 1, 1], "VALID")  # (1, kh, kw, group·C)
        part = tf.reduce_sum(tf.reshape(part, (kh, kw, group, channels)), 2)
        total = part if total is None else total + part
    return total[..., None]


@functools.lru_cache(maxsize=None)
def _depthwise_same(kernel_size):
    """``tf.nn.depthwise_conv2d`` (stride 1, ``same``) whose kernel gradient is the swapped one."""
    import tensorflow as tf

    strides4 = [1, 1, 1, 1]

    @tf.custom_gradient
    def conv(x, kernel):
        def grad(upstream):
            dx = tf.raw_ops.DepthwiseConv2dNativeBackpropInput(input_sizes=tf.shape(x), filter=kernel,
                                                               out_backprop=upstream, strides=strides4, padding="SAME")
            return dx, swapped_depthwise_kernel_gradient(x, upstream, kernel_size)

        return tf.nn.depthwise_conv2d(x, kernel, strides4, "SAME"), grad

    return conv


@keras.saving.register_keras_serializable(package="keras_visrec")
class DepthwiseConv2D(keras.layers.DepthwiseConv2D):
    """``keras.layers.DepthwiseConv2D`` (same arguments) that trains faster on TensorFlow's oneDNN CPU path:
    half precision computes in float32 (oneDNN's bfloat16 depthwise gradients are the slow ones), and the
    kernel gradient of stride-1 ``same`` convs is the swapped one (:func:`swapped_depthwise_kernel_gradient`)."""

    def call(self, inputs, training=None):
        widen, swap = self._widens(inputs, training), self._swaps_kernel_gradient(inputs, training)
        if not (widen or swap):
            return super().call(inputs)
        ops = keras.ops
        x, kernel = (ops.cast(inputs, "float32"), ops.cast(self.kernel, "float32")) if widen else (inputs, self.kernel)
        if swap:  # TensorFlow's path only
            import tensorflow as tf

            # a tensor kernel: the gradient reaches the variable (a variable would need grad_fn(variables=))
            outputs = _depthwise_same(tuple(self.kernel_size))(x, tf.convert_to_tensor(kernel))
        else:
            outputs = ops.depthwise_conv(x, kernel, strides=self.strides, padding=self.padding,
                                         dilation_rate=self.dilation_rate, data_format=self.data_format)
        if self.use_bias:
            outputs = ops.add(outputs, ops.cast(self.bias, outputs.dtype))
        return ops.cast(outputs, inputs.dtype)

    def _trains_on_onednn(self, inputs, training):
        """Whether this call trains on TensorFlow's oneDNN CPU path (channels-last, no activation of its own),
        where both of this layer's changes apply."""
        return (self.data_format == "channels_last" and self.activation in (None, keras.activations.linear)
                and fused.fused_enabled(training, inputs.dtype, half=True) and _onednn_on_cpu_only())

    def _swaps_kernel_gradient(self, inputs, training):
        """Whether this call's kernel gradient is the swapped one: training on TensorFlow's oneDNN CPU path, a
        stride-1 ``same`` undilated conv of odd kernel and multiplier 1, static non-empty input shape."""
        kh, kw = self.kernel_size
        return (tuple(self.strides) == (1, 1) and self.padding == "same" and tuple(self.dilation_rate) == (1, 1)
                and self.depth_multiplier == 1 and kh % 2 == 1 and kw % 2 == 1 and all(tuple(inputs.shape))
                and self._trains_on_onednn(inputs, training))

    def _widens(self, inputs, training):
        """Whether this call computes in float32: half-precision training on TensorFlow's oneDNN CPU path."""
        return (keras.backend.standardize_dtype(inputs.dtype) != "float32"
                and self._trains_on_onednn(inputs, training))

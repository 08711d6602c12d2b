"""Graph preparation: rewrite a Keras model into the graph a phone or a Coral runs well.

The converter sees whatever TensorFlow ops a model lowers to. A Keras ``Dense`` on a 4-D tensor
lowers to reshapes, shape arithmetic and a batched matmul; ``LayerNormalization`` lowers to
``MEAN``/``SQUARED_DIFFERENCE``/``RSQRT`` over the channel axis; GELU fuses into the builtin
``GELU`` op. In int8 most of these miss XNNPACK's fast path (and the Edge TPU's op table), so
:func:`prepare_graph` walks the Keras graph layer by layer and emits, with static batch 1:

* per-pixel linear layers as 1×1 ``CONV_2D`` (no reshape, no shape-computing ops);
* exact float folds: input normalisation into the stem conv, LayerNorm scale/shift into the
  linear layer that alone consumes it, layer scale into the linear layer before it;
* LayerNorm with its channel means as 1×1 convolutions against a constant ``1/C`` kernel
  (``layernorm="conv"``, the same math — int8 ``CONV_2D`` is XNNPACK's and the Edge TPU's
  best-supported op) or as ``MEAN`` over the channel axis (``layernorm="reduce"``);
* GELU as the builtin op (``gelu="exact"``) or as the tanh approximation written as
  ``x * sigmoid(...)`` (``gelu="tanh"``, not fused by the converter; max error 5e-4 against exact);
* 7×7 depthwise convs as row bands of ≤ 25 taps (``depthwise="split"``): XNNPACK's multipass
  depthwise path for larger kernels is 30–100× slower on x86 (measured, LiteRT 2.3);
* with ``float_islands=True``, LayerNorm's ``variance + eps`` and ``RSQRT`` as named nodes
  (listed in ``PreparedGraph.float_nodes``) that the int8 exporter keeps in float: XNNPACK
  takes neither in int8 (the ``eps`` constant's scale is out of its range, and it has no int8
  ``RSQRT``), but takes the float island ``DEQUANTIZE → ADD → RSQRT → QUANTIZE`` on the
  per-pixel ``H×W×1`` statistics;
* with ``patchify=True``, k×k stride-k convs (patchify stem, downsampling) as ``SPACE_TO_DEPTH``
  + 1×1 ``CONV_2D`` — exact; XNNPACK's int8 conv over 3-channel pixels is slow.

Layers it does not know are called as they are (their variables are frozen to constants by the
exporter), so any functional model exports; the report then shows what they became.
"""

import dataclasses

import numpy as np

__all__ = [
    "DEPTHWISE_CHOICES", "GELU_CHOICES", "LAYERNORM_CHOICES", "PreparedGraph", "prepare_graph", "resolve_forms",
]

LAYERNORM_CHOICES = ("auto", "conv", "reduce")
GELU_CHOICES = ("auto", "exact", "tanh")
DEPTHWISE_CHOICES = ("auto", "split", "single")

_LINEAR = ("Conv2D", "Dense")


def _kind(layer):
    """The layer's class name, with subclasses of Dense / Conv2D / LayerNormalization folded in.

    Subclasses such as ``PointwiseDense`` or keras_visrec's ``LayerNorm`` compute the same
    function with the same weights as their Keras base and are emitted like it.
    """
    import keras

    for base in (keras.layers.Dense, keras.layers.Conv2D, keras.layers.LayerNormalization):
        if isinstance(layer, base):
            return base.__name__
    return type(layer).__name__


@dataclasses.dataclass
class PreparedGraph:
    """A batch-1, constant-weight ``tf.function`` ready for the TFLite converter.

    Attributes:
        function: the concrete function (one float32 input of ``input_shape``).
        input_shape: static input shape, batch included.
        folds: human-readable list of the exact folds applied.
        lowered: layer class name -> how it was emitted.
        layernorm: the LayerNorm form used. gelu: the GELU form used.
        float_nodes: names of the graph nodes an int8 conversion should keep in float.
    """

    function: object
    input_shape: tuple
    folds: list
    lowered: dict
    layernorm: str
    gelu: str
    float_nodes: list = dataclasses.field(default_factory=list)


def resolve_forms(target, quantization, layernorm="auto", gelu="auto", depthwise="auto"):
    """Picks the LayerNorm, GELU and depthwise forms for a target: ``(layernorm, gelu, depthwise)``.

    ``auto``: on CPU the builtin GELU and ``MEAN``-based LayerNorm (XNNPACK takes int8 ``MEAN``
    over channels; its 1-output-channel conv is slower) with split depthwise kernels; on the Edge
    TPU the conv-mean LayerNorm and the unfused tanh GELU, which its op table needs.
    """
    if layernorm not in LAYERNORM_CHOICES:
        raise ValueError(f"`layernorm` must be one of {LAYERNORM_CHOICES}; received layernorm={layernorm!r}.")
    if gelu not in GELU_CHOICES:
        raise ValueError(f"`gelu` must be one of {GELU_CHOICES}; received gelu={gelu!r}.")
    if layernorm == "auto":  # int8 MEAN over channels is XNNPACK's; the Edge TPU maps MEAN over x/y only
        layernorm = "conv" if target == "edgetpu" else "reduce"
    if depthwise not in DEPTHWISE_CHOICES:
        raise ValueError(f"`depthwise` must be one of {DEPTHWISE_CHOICES}; received depthwise={depthwise!r}.")
    if gelu == "auto":
        gelu = "tanh" if target == "edgetpu" else "exact"
    if depthwise == "auto":
        depthwise = "split" if target == "cpu" else "single"
    return layernorm, gelu, depthwise


def prepare_graph(model, *, layernorm="conv", gelu="exact", depthwise="split", float_islands=False, patchify=False,
                  batch_size=1):
    """Builds the export graph of a functional Keras ``model`` (see the module docstring).

    Args:
        model: a functional `keras.Model` with one image input of static height and width.
        layernorm: str. `"conv"` or `"reduce"` (see module docstring). Defaults to `"conv"`.
        gelu: str. `"exact"` (the builtin GELU op) or `"tanh"` (tanh approximation written as
            ``x * sigmoid(x * (a + b * x * x))``, an identity of ``0.5 x (1 + tanh(...))`` the
            converter does not fuse). Defaults to `"exact"`.
        depthwise: str. `"split"` (kernels over 25 taps as row bands, XNNPACK's fast path) or
            `"single"` (one DEPTHWISE_CONV_2D). Defaults to `"split"`.
        float_islands: bool. Name LayerNorm's `variance + eps` and `RSQRT` nodes so an int8
            conversion can keep them in float (see the module docstring). Defaults to `False`.
        patchify: bool. Emit k×k stride-k convs (ConvNeXt's stem and downsampling) as
            `SPACE_TO_DEPTH` + 1×1 conv, exact and faster on XNNPACK. Defaults to `False`.
        batch_size: int. Static batch dimension. Defaults to `1`.

    Returns:
        A :class:`PreparedGraph`.
    """
    import tensorflow as tf

    if layernorm not in LAYERNORM_CHOICES[1:]:
        raise ValueError(f"`layernorm` must be one of {LAYERNORM_CHOICES[1:]}; received layernorm={layernorm!r}.")
    if gelu not in GELU_CHOICES[1:]:
        raise ValueError(f"`gelu` must be one of {GELU_CHOICES[1:]}; received gelu={gelu!r}.")
    if not hasattr(model, "_nodes_by_depth") or len(model.inputs) != 1:
        raise TypeError(
            "`model` must be a functional keras.Model with exactly one input (as every zoo model is); "
            f"received {type(model).__name__} with {len(getattr(model, 'inputs', []) or [])} inputs."
        )
    shape = tuple(model.inputs[0].shape[1:])
    if any(d is None for d in shape):
        raise ValueError(
            f"`model` input shape must be static for export (batch 1, fixed height and width); received "
            f"{model.inputs[0].shape}. Rebuild the model with e.g. input_shape=(224, 224, 3)."
        )
    nodes = [node for depth in sorted(model._nodes_by_depth, reverse=True) for node in model._nodes_by_depth[depth]]
    if depthwise not in DEPTHWISE_CHOICES[1:]:
        raise ValueError(f"`depthwise` must be one of {DEPTHWISE_CHOICES[1:]}; received depthwise={depthwise!r}.")
    plan = _plan_folds(nodes)
    plan["depthwise"] = depthwise
    plan["float_islands"] = bool(float_islands)
    plan["patchify"] = bool(patchify)
    plan["float_nodes"] = []
    lowered = {}
    input_shape = (int(batch_size),) + tuple(int(d) for d in shape)

    def forward(x):
        values = {id(model.inputs[0]): x}
        for node in nodes:
            layer = node.operation
            if not node.input_tensors:  # the InputLayer
                continue
            inputs = [values[id(t)] for t in node.input_tensors]
            call = node.arguments.fill_in(values)  # the layer's own (args, kwargs) structure
            outputs = _emit(layer, inputs, plan, layernorm, gelu, lowered, call)
            for tensor, value in zip(node.outputs, _as_list(outputs)):
                values[id(tensor)] = value
        outs = [values[id(t)] for t in model.outputs]
        return outs[0] if len(outs) == 1 else outs

    function = tf.function(forward, autograph=False).get_concrete_function(tf.TensorSpec(input_shape, tf.float32, name="image"))
    # layers called as they are (e.g. GRN) capture variables: freeze them into constants
    from tensorflow.python.framework.convert_to_constants import convert_variables_to_constants_v2

    function = convert_variables_to_constants_v2(function)
    return PreparedGraph(function, input_shape, plan["folds"], lowered, layernorm, gelu,
                         list(dict.fromkeys(plan["float_nodes"])))


def _as_list(value):
    return list(value) if isinstance(value, (list, tuple)) else [value]


# ---------------------------------------------------------------- fold planning (numpy, exact)


def _plan_folds(nodes):
    """Computes folded weights; returns ``{"weights": {layer: (kernel, bias)}, "skip": {...}, ...}``."""
    consumers = {}
    producer = {}
    for node in nodes:
        for tensor in node.input_tensors:
            consumers.setdefault(id(tensor), []).append(node)
        for tensor in node.outputs:
            producer[id(tensor)] = node
    weights = {}
    plan = {"weights": weights, "identity": set(), "plain_layernorm": set(), "folds": []}

    def linear_weights(layer):
        if layer.name not in weights:
            kernel, bias = _linear_kernel(layer)
            weights[layer.name] = (kernel, bias)
        return weights[layer.name]

    def sole_linear_consumer(node):
        users = consumers.get(id(node.outputs[0]), [])
        if len(users) != 1 or len(users[0].input_tensors) != 1:
            return None
        layer = users[0].operation
        if _kind(layer) not in _LINEAR or not _exactly_foldable_input(layer):
            return None
        return layer

    for node in nodes:
        layer = node.operation
        kind = _kind(layer)
        if kind == "ImageNetNormalization" or kind == "Rescaling":
            target = sole_linear_consumer(node)
            if target is None:
                continue
            scale, offset = _affine_of(layer)
            kernel, bias = linear_weights(target)
            weights[target.name] = _fold_input_affine(kernel, bias, scale, offset)
            plan["identity"].add(layer.name)
            plan["folds"].append(f"{layer.name} -> {target.name} (input normalisation)")
        elif kind == "LayerNormalization" and _is_channel_layernorm(layer):
            target = sole_linear_consumer(node)
            if target is None:
                continue
            gamma = _np(layer.gamma) if layer.scale else 1.0
            beta = _np(layer.beta) if layer.center else 0.0
            kernel, bias = linear_weights(target)
            channels = kernel.shape[-2]
            weights[target.name] = _fold_input_affine(
                kernel, bias, np.broadcast_to(gamma, (channels,)), np.broadcast_to(beta, (channels,)))
            plan["plain_layernorm"].add(layer.name)
            plan["folds"].append(f"{layer.name} scale/shift -> {target.name}")
        elif kind == "LayerScale":
            source = producer.get(id(node.input_tensors[0]))
            if source is None or _kind(source.operation) not in _LINEAR:
                continue
            if len(consumers.get(id(source.outputs[0]), [])) != 1 or source.operation.activation.__name__ != "linear":
                continue
            kernel, bias = linear_weights(source.operation)
            gamma = _np(layer.gamma)
            weights[source.operation.name] = (kernel * gamma, bias * gamma)
            plan["identity"].add(layer.name)
            plan["folds"].append(f"{layer.name} -> {source.operation.name} (layer scale)")
    return plan


def _np(variable):
    """A weight as a float64 numpy array (read eagerly even while a function is being traced)."""
    import tensorflow as tf

    if not hasattr(variable, "numpy"):
        return np.asarray(variable, "float64")
    with tf.init_scope():
        return np.asarray(variable.numpy(), "float64")


def _affine_of(layer):
    """Per-channel ``(scale, offset)`` of an input normalisation layer."""
    if type(layer).__name__ == "Rescaling":
        return np.asarray(layer.scale, "float64"), np.asarray(layer.offset, "float64")
    scale, offset = layer.scale_and_offset
    return np.asarray(scale, "float64"), np.asarray(offset, "float64")


def _is_channel_layernorm(layer):
    axis = layer.axis if isinstance(layer.axis, (list, tuple)) else [layer.axis]
    rank = len(layer.input.shape) if hasattr(layer, "input") else None
    last = [-1] if rank is None else [-1, rank - 1]
    return len(axis) == 1 and axis[0] in last and not getattr(layer, "rms_scaling", False)


def _exactly_foldable_input(layer):
    """True when an input affine commutes with ``layer`` exactly (no zero padding touched)."""
    if _kind(layer) == "Dense":
        return True
    kernel_size = tuple(layer.kernel_size)
    return (layer.padding == "valid" or kernel_size == (1, 1)) and tuple(layer.dilation_rate) == (1, 1) \
        and getattr(layer, "groups", 1) == 1


def _linear_kernel(layer):
    """``(kernel, bias)`` as float64 with kernel ``(..., C_in, C_out)``."""
    kernel = _np(layer.kernel)
    bias = _np(layer.bias) if layer.use_bias else np.zeros(kernel.shape[-1])
    return kernel, bias


def _fold_input_affine(kernel, bias, scale, offset):
    """Folds ``x -> x * scale + offset`` (per input channel) into a linear layer's weights."""
    scale = np.asarray(scale, "float64")
    offset = np.asarray(offset, "float64")
    new_bias = bias + np.tensordot(kernel, offset, axes=([kernel.ndim - 2], [0])).reshape(
        -1, kernel.shape[-1]).sum(axis=0)
    shape = (1,) * (kernel.ndim - 2) + (-1, 1)
    return kernel * scale.reshape(shape), new_bias


# ---------------------------------------------------------------- emission (tf ops)


def _emit(layer, inputs, plan, layernorm, gelu, lowered, call):
    import tensorflow as tf

    kind = _kind(layer)
    x = inputs[0]
    if layer.name in plan["identity"] or kind in ("StochasticDepth", "Dropout", "SpatialDropout2D", "Identity"):
        lowered.setdefault(kind, "removed (folded or inference identity)")
        return x
    if kind in ("Conv2D", "Dense"):
        if plan["patchify"] and _is_patchify(layer, x):
            lowered.setdefault(f"{type(layer).__name__} (k == stride)", "SPACE_TO_DEPTH + 1x1 CONV_2D")
            return _emit_patchify(layer, x, plan, gelu)
        lowered.setdefault(type(layer).__name__, "CONV_2D" if kind == "Conv2D" or x.shape.rank == 4 else "FULLY_CONNECTED")
        return _emit_linear(layer, x, plan, gelu)
    if kind == "DepthwiseConv2D":
        return _activation(layer.activation, _emit_depthwise(layer, x, plan["depthwise"], lowered), gelu)
    if kind == "LayerNormalization" and _is_channel_layernorm(layer):
        lowered.setdefault(kind, f"layernorm={layernorm}")
        return _emit_layernorm(layer, x, affine=layer.name not in plan["plain_layernorm"], form=layernorm,
                               float_nodes=plan["float_nodes"] if plan["float_islands"] else None)
    if kind == "GELU" or (kind == "Activation" and "gelu" in getattr(layer.activation, "__name__", "")):
        lowered.setdefault(kind, f"gelu={gelu}")
        return _emit_gelu(x, gelu)
    if kind == "LayerScale":
        lowered.setdefault(kind, "MUL")
        return x * _np(layer.gamma).astype("float32")
    if kind in ("ImageNetNormalization", "Rescaling"):
        lowered.setdefault(kind, "MUL+ADD")
        scale, offset = _affine_of(layer)
        return x * scale.astype("float32") + offset.astype("float32")
    if kind == "Add":
        lowered.setdefault(kind, "ADD")
        total = inputs[0]
        for other in inputs[1:]:
            total = total + other
        return total
    if kind == "GlobalAveragePooling2D":
        lowered.setdefault(kind, "MEAN over H, W")
        return tf.reduce_mean(x, axis=(1, 2), keepdims=bool(layer.keepdims))
    if kind == "Activation":
        lowered.setdefault(kind, getattr(layer.activation, "__name__", "activation"))
        return _activation(layer.activation, x, gelu)
    lowered.setdefault(kind, "called as is")
    args, kwargs = call  # e.g. Concatenate takes a list, other layers positional tensors
    return layer(*args, **kwargs)


def _activation(activation, y, gelu="exact"):
    import tensorflow as tf

    name = getattr(activation, "__name__", "")
    if name in ("linear", ""):
        return y
    if "gelu" in name:  # gelu, gelu_tanh, gelu_tanh_cubic: emitted in the target's form
        return _emit_gelu(y, gelu)
    if name == "softmax":
        return tf.nn.softmax(y, axis=-1)
    if name == "relu":
        return tf.nn.relu(y)
    return activation(y)


def _emit_linear(layer, x, plan, gelu):
    import tensorflow as tf

    kernel, bias = plan["weights"].get(layer.name) or _linear_kernel(layer)
    kernel, bias = kernel.astype("float32"), bias.astype("float32")
    if _kind(layer) == "Dense":
        if x.shape.rank == 2:
            y = tf.matmul(x, kernel) + bias
            return _activation(layer.activation, y, gelu)
        if x.shape.rank != 4:
            raise ValueError(f"Layer {layer.name!r}: Dense on a rank-{x.shape.rank} tensor cannot be exported as a conv.")
        kernel = kernel.reshape((1, 1) + kernel.shape)
        strides, padding, dilations = (1, 1), "VALID", (1, 1)
    else:
        if getattr(layer, "groups", 1) != 1:
            raise ValueError(f"Layer {layer.name!r}: grouped Conv2D (groups={layer.groups}) is not exportable; "
                             "use DepthwiseConv2D (as keras_visrec's ConvNeXt does).")
        strides, padding, dilations = tuple(layer.strides), layer.padding.upper(), tuple(layer.dilation_rate)
    y = tf.nn.conv2d(x, kernel, (1,) + strides + (1,), padding, dilations=dilations)
    y = tf.nn.bias_add(y, bias)
    return _activation(layer.activation, y, gelu)


def _is_patchify(layer, x):
    """A Conv2D over non-overlapping square patches (kernel == stride > 1) that tile the input exactly."""
    if _kind(layer) != "Conv2D" or getattr(layer, "groups", 1) != 1 or tuple(layer.dilation_rate) != (1, 1):
        return False
    size = tuple(layer.kernel_size)
    if size != tuple(layer.strides) or size[0] != size[1] or size[0] < 2 or x.shape.rank != 4:
        return False
    return int(x.shape[1]) % size[0] == 0 and int(x.shape[2]) % size[0] == 0  # then "same" pads nothing either


def _emit_patchify(layer, x, plan, gelu):
    """A k×k stride-k conv as ``SPACE_TO_DEPTH(k)`` + 1×1 conv (the kernel reshaped; exact).

    XNNPACK's int8 conv runs ConvNeXt-T's 4×4/4 stem on 3 channels 2.2× slower than fp32 (an
    indirect GEMM over 3-channel pixels); as a GEMM over 48-channel pixels it is faster than the
    fp32 conv (measured 0.80 ms vs 2.1 ms int8, 0.94 ms fp32, 2 threads). The same holds for the
    2×2/2 downsampling convs.
    """
    import tensorflow as tf

    kernel, bias = plan["weights"].get(layer.name) or _linear_kernel(layer)
    block = int(layer.kernel_size[0])
    kernel = kernel.astype("float32").reshape(1, 1, block * block * kernel.shape[2], kernel.shape[3])
    y = tf.nn.conv2d(tf.nn.space_to_depth(x, block), kernel, 1, "VALID")
    return _activation(layer.activation, tf.nn.bias_add(y, bias.astype("float32")), gelu)


def _emit_depthwise(layer, x, form, lowered):
    """A depthwise conv; large kernels as row bands of at most ``_FAST_TAPS`` taps when ``form="split"``.

    XNNPACK runs depthwise kernels of up to 25 taps in one pass; a 7×7 (49 taps) takes its
    multipass path, measured 30× (fp32) to 100× (int8) slower than a 5×5 on x86 LiteRT 2.3.
    Splitting the kernel into row bands over one zero-padded input is exact in float:
    ``y = sum_b conv_valid(pad(x)[rows of band b], K[band b])``. On maps smaller than the
    kernel, taps that only ever meet the zero padding are dropped first (exact too): a band of
    them would be an all-zero tensor whose int8 scale XNNPACK's ADD rejects.
    """
    import tensorflow as tf

    kernel = _np(layer.kernel).astype("float32")
    bias = _np(layer.bias).astype("float32") if layer.use_bias else None
    kh, kw = kernel.shape[:2]
    simple = tuple(layer.strides) == (1, 1) and tuple(layer.dilation_rate) == (1, 1) and layer.padding == "same"
    if form != "split" or kh * kw <= _FAST_TAPS or not simple or kw > _FAST_TAPS or kh % 2 == 0 or kw % 2 == 0:
        lowered.setdefault("DepthwiseConv2D", "DEPTHWISE_CONV_2D")
        y = tf.nn.depthwise_conv2d(x, kernel, (1,) + tuple(layer.strides) + (1,), layer.padding.upper(),
                                   dilations=tuple(layer.dilation_rate))
        return y if bias is None else tf.nn.bias_add(y, bias)
    height, width = int(x.shape[1]), int(x.shape[2])
    (top, bottom, rows), (left, right, cols) = _live_taps(kh, height), _live_taps(kw, width)
    kernel = kernel[rows[0]:rows[1], cols[0]:cols[1]]
    kh, kw = kernel.shape[:2]
    rows_per_band = max(1, _FAST_TAPS // kw)
    bands = [(start, min(kh, start + rows_per_band)) for start in range(0, kh, rows_per_band)]
    lowered.setdefault("DepthwiseConv2D", f"PAD + {len(bands)} row-band DEPTHWISE_CONV_2D ({kh}x{kw} split)")
    padded = tf.pad(x, [[0, 0], [top, bottom], [left, right], [0, 0]])
    total = None
    for start, stop in bands:
        window = padded if len(bands) == 1 else padded[:, start:start + height + (stop - start) - 1]
        part = tf.nn.depthwise_conv2d(window, kernel[start:stop], (1, 1, 1, 1), "VALID")
        total = part if total is None else total + part
    return total if bias is None else tf.nn.bias_add(total, bias)


def _live_taps(size, length):
    """For a centred odd kernel of ``size`` taps over ``length`` pixels ('same' padding):
    ``(pad_before, pad_after, (first, stop))`` keeping only taps that can meet real pixels."""
    centre = size // 2
    first, stop = max(0, centre - length + 1), min(size, centre + length)
    return centre - first, stop - 1 - centre, (first, stop)


_FAST_TAPS = 25


def _channel_mean(x, form):
    """Mean over the channel axis, keepdims, as a 1×1 conv / matmul (``conv``) or ``MEAN``.

    The Edge TPU maps ``MEAN`` only over x/y, and a constant ``1/C`` kernel quantizes exactly,
    so the conv form keeps LayerNorm on the Edge TPU with unchanged math.
    """
    import tensorflow as tf

    channels = int(x.shape[-1])
    if form == "reduce":
        return tf.reduce_mean(x, axis=-1, keepdims=True)
    weights = np.full((channels, 1), 1.0 / channels, "float32")
    if x.shape.rank == 4:
        return tf.nn.conv2d(x, weights.reshape(1, 1, channels, 1), 1, "VALID")
    return tf.matmul(x, weights)


def _emit_layernorm(layer, x, *, affine, form, float_nodes=None):
    """LayerNorm over channels; with ``float_nodes`` (a list) its eps-add and rsqrt are named and listed there."""
    import tensorflow as tf

    centred = x - _channel_mean(x, form)
    variance = _channel_mean(centred * centred, form)
    if float_nodes is None:
        inverse = tf.math.rsqrt(variance + float(layer.epsilon))
    else:
        names = (f"{layer.name}_variance_eps", f"{layer.name}_rsqrt")
        inverse = tf.math.rsqrt(tf.math.add(variance, float(layer.epsilon), name=names[0]), name=names[1])
        float_nodes.extend(names)
    y = centred * inverse
    if affine:
        if layer.scale:
            y = y * _np(layer.gamma).astype("float32")
        if layer.center:
            y = y + _np(layer.beta).astype("float32")
    return y


_GELU_A = np.float32(2.0 * np.sqrt(2.0 / np.pi))
_GELU_B = np.float32(2.0 * np.sqrt(2.0 / np.pi) * 0.044715)


def _emit_gelu(x, form):
    """GELU; ``tanh``: ``0.5 x (1 + tanh(u)) == x * sigmoid(2u)`` with ``2u = x (A + B x^2)``.

    The converter fuses both the erf form and the tanh form (even written with ``x*x*x``) into
    its GELU op, which the Edge TPU lacks; the sigmoid identity stays MUL/ADD/LOGISTIC.
    """
    import tensorflow as tf

    if form == "exact":
        return tf.nn.gelu(x, approximate=False)
    return x * tf.math.sigmoid(x * (_GELU_A + _GELU_B * (x * x)))

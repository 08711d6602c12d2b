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

Each layer is emitted by the **rule registered for its class** (:func:`register_export_rule`),
found along the class's MRO as ``keras_visrec.flops`` finds its counting rules: a subclass or a
renamed layer that keeps its base's ``call`` uses its base's rule; a subclass that overrides
``call`` needs its own. Nested functional models are walked through the same rules. A layer with
no rule is called as it is (its variables are frozen to constants by the exporter) and listed
in ``PreparedGraph.unruled``, which the exporter reports; if calling it fails, the error names
the layer and says that it has no rule.
"""

import dataclasses

import keras
import numpy as np

from keras_visrec.cifar import ChannelSelection, ShortcutA
from keras_visrec.layers import (GELU, GRN, BatchNorm, ConvNeXtBlock, DepthwiseConv2D, ImageNetNormalization, LayerNorm,
                                 LayerScale, PointwiseDense, StochasticDepth, gelu_tanh, gelu_tanh_cubic)

__all__ = [
    "DEPTHWISE_CHOICES", "ExportRule", "GELU_CHOICES", "LAYERNORM_CHOICES", "PreparedGraph", "export_rule",
    "prepare_graph", "register_export_rule", "resolve_forms",
]

LAYERNORM_CHOICES = ("auto", "conv", "reduce")
GELU_CHOICES = ("auto", "exact", "tanh")
DEPTHWISE_CHOICES = ("auto", "split", "single")
_FOLDS = (None, "linear", "input_affine", "norm_affine", "output_scale")

_RULES = {}


@dataclasses.dataclass(frozen=True)
class ExportRule:
    """How the exporter emits one layer class.

    Attributes:
        layer_class: the class the rule was registered for.
        emit: ``emit(layer, inputs, context) -> outputs``: TensorFlow ops for one call.
        fold: what exact fold the layer takes part in: `None`; `"linear"` (a Conv2D / Dense the
            folds below write into); `"input_affine"` (a per-channel ``x * scale + offset``,
            ``affine(layer) -> (scale, offset)``, folded into the linear layer that alone reads
            it); `"norm_affine"` (a LayerNorm whose γ/β fold into the linear layer that alone
            reads it); `"output_scale"` (a per-channel ``gamma`` folded into the linear layer
            before it).
        affine: ``layer -> (scale, offset)`` for `"input_affine"`.
    """

    layer_class: type
    emit: object
    fold: str = None
    affine: object = None


def register_export_rule(*layer_classes, fold=None, affine=None):
    """Decorator: ``emit(layer, inputs, context) -> outputs`` emits layers of ``layer_classes``.

    ``inputs`` are the layer's input tensors (TensorFlow, static batch); ``context`` carries the
    chosen forms (``context.layernorm``, ``.gelu``, ``.depthwise``, ``.patchify``), the layer's
    own call arguments (``context.call``, an ``(args, kwargs)`` pair) and ``context.note(layer,
    how)``, which records how the layer was emitted for the report.

    Args:
        *layer_classes: the Keras layer classes the rule emits (and their subclasses that keep
            the class's ``call``).
        fold: str or None. The exact fold the layer takes part in (see :class:`ExportRule`).
        affine: callable. ``layer -> (scale, offset)`` when ``fold="input_affine"``.
    """
    if fold not in _FOLDS:
        raise ValueError(f"`fold` must be one of {_FOLDS}; received fold={fold!r}.")
    if fold == "input_affine" and affine is None:
        raise ValueError("`fold='input_affine'` needs `affine`, a function layer -> (scale, offset).")
    for cls in layer_classes:
        if not (isinstance(cls, type) and issubclass(cls, keras.layers.Layer)):
            raise TypeError(f"register_export_rule takes keras.layers.Layer subclasses; received {cls!r}.")

    def wrap(emit):
        for cls in layer_classes:
            _RULES[cls] = ExportRule(cls, emit, fold, affine)
        return emit

    return wrap


def export_rule(layer):
    """The :class:`ExportRule` of ``layer``, or None when it has none.

    The rule of the nearest class on the layer's MRO; a subclass that overrides that class's
    ``call`` computes something else and has no rule until one is registered for it.
    """
    for cls in type(layer).__mro__:
        rule = _RULES.get(cls)
        if rule is not None:
            return rule if getattr(type(layer), "call", None) is getattr(cls, "call", None) else None
    return None


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
        unruled: ``{layer name: class name}`` of layers with no export rule (called as they are).
    """

    function: object
    input_shape: tuple
    folds: list
    lowered: dict
    layernorm: str
    gelu: str
    float_nodes: list = dataclasses.field(default_factory=list)
    unruled: dict = dataclasses.field(default_factory=dict)


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


class _Context:
    """What a rule sees besides its layer and inputs: the forms, the fold plan, the report."""

    def __init__(self, plan, *, layernorm, gelu, depthwise, float_islands, patchify):
        self.plan = plan
        self.layernorm, self.gelu, self.depthwise = layernorm, gelu, depthwise
        self.float_islands, self.patchify = bool(float_islands), bool(patchify)
        self.lowered, self.unruled, self.float_nodes = {}, {}, []
        self.call = ((), {})

    def note(self, layer, how, key=None):
        """Records how a layer class was emitted (first call per class wins)."""
        self.lowered.setdefault(key or type(layer).__name__, how)

    def folded(self, layer):
        """``(kernel, bias)`` of a linear layer after the folds into it, as float64."""
        return self.plan.weights.get(id(layer)) or _linear_kernel(layer)


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
    if depthwise not in DEPTHWISE_CHOICES[1:]:
        raise ValueError(f"`depthwise` must be one of {DEPTHWISE_CHOICES[1:]}; received depthwise={depthwise!r}.")
    functional = _functional(model)
    if functional is None or len(functional.inputs) != 1:
        raise TypeError(
            "`model` must be a functional keras.Model with exactly one input (as every zoo model is); "
            f"received {type(model).__name__} with {len(getattr(model, 'inputs', []) or [])} inputs."
        )
    shape = tuple(functional.inputs[0].shape[1:])
    if any(d is None for d in shape):
        raise ValueError(
            f"`model` input shape must be static for export (batch 1, fixed height and width); received "
            f"{functional.inputs[0].shape}. Rebuild the model with e.g. input_shape=(224, 224, 3)."
        )
    context = _Context(_Plan(), layernorm=layernorm, gelu=gelu, depthwise=depthwise, float_islands=float_islands,
                       patchify=patchify)
    input_shape = (int(batch_size),) + tuple(int(d) for d in shape)

    def forward(x):
        outs = _emit_functional(functional, [x], context)
        return outs[0] if len(outs) == 1 else outs

    function = tf.function(forward, autograph=False).get_concrete_function(tf.TensorSpec(input_shape, tf.float32, name="image"))
    # layers called as they are (e.g. GRN) capture variables: freeze them into constants
    from tensorflow.python.framework.convert_to_constants import convert_variables_to_constants_v2

    function = convert_variables_to_constants_v2(function)
    return PreparedGraph(function, input_shape, context.plan.folds, context.lowered, layernorm, gelu,
                         list(dict.fromkeys(context.float_nodes)), dict(context.unruled))


def _functional(model):
    """The functional graph of a functional or Sequential model, else None."""
    graph = getattr(model, "_functional", None) if isinstance(model, keras.Sequential) else model
    return graph if graph is not None and hasattr(graph, "_nodes_by_depth") else None


def _nodes(functional):
    return [node for depth in sorted(functional._nodes_by_depth, reverse=True)
            for node in functional._nodes_by_depth[depth]]


def _emit_functional(functional, inputs, context):
    """Emits a functional graph on ``inputs`` through the rules; returns its outputs (a list)."""
    nodes = _nodes(functional)
    context.plan.add(nodes)
    values = {id(t): x for t, x in zip(keras.tree.flatten(functional.inputs), inputs)}
    for node in nodes:
        if not node.input_tensors:  # the InputLayer
            continue
        inputs_ = [values[id(t)] for t in node.input_tensors]
        context.call = node.arguments.fill_in(values)  # the layer's own (args, kwargs) structure
        outputs = _emit(node.operation, inputs_, context)
        for tensor, value in zip(node.outputs, _as_list(outputs)):
            values[id(tensor)] = value
    return [values[id(t)] for t in keras.tree.flatten(functional.outputs)]


def _emit(layer, inputs, context):
    """One layer: folded away, a nested graph, its rule, or (no rule) called as it is."""
    if id(layer) in context.plan.identity:
        context.note(layer, "removed (folded)")
        return inputs[0]
    nested = _functional(layer) if isinstance(layer, keras.Model) else None
    if nested is not None:
        context.note(layer, "nested model: walked layer by layer")
        outs = _emit_functional(nested, inputs, context)
        return outs[0] if len(outs) == 1 else outs
    rule = export_rule(layer)
    if rule is not None:
        return rule.emit(layer, inputs, context)
    context.unruled[layer.name] = type(layer).__name__
    context.note(layer, "no export rule: called as is")
    try:
        return _call_as_is(layer, inputs, context)
    except Exception as error:
        raise TypeError(
            f"Layer {layer.name!r} ({type(layer).__name__}) has no export rule, and calling it as it is while "
            f"tracing the export graph failed: {error}. Register one with "
            "keras_visrec.tflite.prepare.register_export_rule."
        ) from error


def _as_list(value):
    return list(value) if isinstance(value, (list, tuple)) else [value]


def _call_as_is(layer, inputs, context):
    args, kwargs = context.call  # e.g. Concatenate takes a list, other layers positional tensors
    return layer(*args, **kwargs)


# ---------------------------------------------------------------- fold planning (numpy, exact)


class _Plan:
    """Folded weights (by layer id), layers folded away, LayerNorms emitted without γ/β, fold notes."""

    def __init__(self):
        self.weights, self.identity, self.plain_layernorm, self.folds = {}, set(), set(), []

    def linear_weights(self, layer):
        if id(layer) not in self.weights:
            self.weights[id(layer)] = _linear_kernel(layer)
        return self.weights[id(layer)]

    def add(self, nodes):
        """Plans the exact folds of one graph's nodes (numpy, float64)."""
        consumers, producer = {}, {}
        for node in nodes:
            for tensor in node.input_tensors:
                consumers.setdefault(id(tensor), []).append(node)
            for tensor in node.outputs:
                producer[id(tensor)] = node

        def sole_linear_consumer(node):
            users = consumers.get(id(node.outputs[0]), [])
            if len(users) != 1 or len(users[0].input_tensors) != 1:
                return None
            layer = users[0].operation
            rule = export_rule(layer)
            if rule is None or rule.fold != "linear" or not _exactly_foldable_input(layer):
                return None
            return layer

        for node in nodes:
            layer = node.operation
            rule = export_rule(layer)
            fold = rule.fold if rule is not None else None
            if fold == "input_affine":
                target = sole_linear_consumer(node)
                if target is None:
                    continue
                scale, offset = rule.affine(layer)
                kernel, bias = self.linear_weights(target)
                self.weights[id(target)] = _fold_input_affine(kernel, bias, scale, offset)
                self.identity.add(id(layer))
                self.folds.append(f"{layer.name} -> {target.name} (input normalisation)")
            elif fold == "norm_affine" and _is_channel_layernorm(layer, len(node.input_tensors[0].shape)):
                target = sole_linear_consumer(node)
                if target is None:
                    continue
                gamma = _np(layer.gamma) if layer.scale else 1.0
                beta = _np(layer.beta) if layer.center else 0.0
                kernel, bias = self.linear_weights(target)
                channels = kernel.shape[-2]
                self.weights[id(target)] = _fold_input_affine(
                    kernel, bias, np.broadcast_to(gamma, (channels,)), np.broadcast_to(beta, (channels,)))
                self.plain_layernorm.add(id(layer))
                self.folds.append(f"{layer.name} scale/shift -> {target.name}")
            elif fold == "output_scale":
                source = producer.get(id(node.input_tensors[0]))
                if source is None:
                    continue
                source_rule = export_rule(source.operation)
                if source_rule is None or source_rule.fold != "linear":
                    continue
                if len(consumers.get(id(source.outputs[0]), [])) != 1 or not _is_linear_activation(source.operation):
                    continue
                kernel, bias = self.linear_weights(source.operation)
                gamma = _np(layer.gamma)
                self.weights[id(source.operation)] = (kernel * gamma, bias * gamma)
                self.identity.add(id(layer))
                self.folds.append(f"{layer.name} -> {source.operation.name} (layer scale)")


def _np(variable):
    """A weight as a float64 numpy array (read eagerly even while a function is being traced)."""
    import tensorflow as tf

    if not hasattr(variable, "numpy"):
        return np.asarray(variable, "float64")
    with tf.init_scope():
        return np.asarray(variable.numpy(), "float64")


def _normalization_affine(layer):
    scale, offset = layer.scale_and_offset
    return np.asarray(scale, "float64"), np.asarray(offset, "float64")


def _rescaling_affine(layer):
    return np.asarray(layer.scale, "float64"), np.asarray(layer.offset, "float64")


def _is_channel_layernorm(layer, rank):
    """Whether a LayerNormalization on a rank-``rank`` input normalises over the channel axis only."""
    axis = layer.axis if isinstance(layer.axis, (list, tuple)) else [layer.axis]
    return len(axis) == 1 and axis[0] in (-1, rank - 1) and not getattr(layer, "rms_scaling", False)


def _is_linear_activation(layer):
    return layer.activation in (None, keras.activations.linear)


def _exactly_foldable_input(layer):
    """True when an input affine commutes with ``layer`` exactly (no zero padding touched)."""
    if isinstance(layer, keras.layers.Dense):
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
    """Folds ``x -> x * scale + offset`` (per input channel, or scalars) into a linear layer's weights."""
    channels = kernel.shape[-2]
    scale = np.broadcast_to(np.asarray(scale, "float64"), (channels,))
    offset = np.broadcast_to(np.asarray(offset, "float64"), (channels,))
    new_bias = bias + np.tensordot(kernel, offset, axes=([kernel.ndim - 2], [0])).reshape(
        -1, kernel.shape[-1]).sum(axis=0)
    shape = (1,) * (kernel.ndim - 2) + (-1, 1)
    return kernel * scale.reshape(shape), new_bias


# ---------------------------------------------------------------- the rules (tf ops)


@register_export_rule(StochasticDepth, keras.layers.Dropout, keras.layers.SpatialDropout1D,
                      keras.layers.SpatialDropout2D, keras.layers.GaussianNoise, keras.layers.GaussianDropout,
                      keras.layers.AlphaDropout, keras.layers.Identity, keras.layers.ActivityRegularization)
def _inference_identity(layer, inputs, context):
    context.note(layer, "removed (inference identity)")
    return inputs[0]


@register_export_rule(keras.layers.Conv2D, keras.layers.Dense, PointwiseDense, fold="linear")
def _linear(layer, inputs, context):
    x = inputs[0]
    if context.patchify and _is_patchify(layer, x):
        context.note(layer, "SPACE_TO_DEPTH + 1x1 CONV_2D", key=f"{type(layer).__name__} (k == stride)")
        return _emit_patchify(layer, x, context)
    is_dense = isinstance(layer, keras.layers.Dense)
    context.note(layer, "FULLY_CONNECTED" if is_dense and x.shape.rank == 2 else "CONV_2D")
    return _emit_linear(layer, x, context)


@register_export_rule(keras.layers.DepthwiseConv2D, DepthwiseConv2D)  # ours: Keras' call at inference
def _depthwise(layer, inputs, context):
    y = _emit_depthwise(layer, inputs[0], context)
    return _activation(layer.activation, y, context.gelu)


@register_export_rule(keras.layers.LayerNormalization, LayerNorm, fold="norm_affine")
def _layernorm(layer, inputs, context):
    if not _is_channel_layernorm(layer, inputs[0].shape.rank):
        context.note(layer, "called as is (not over the channel axis)")
        return _call_as_is(layer, inputs, context)
    context.note(layer, f"layernorm={context.layernorm}")
    return _emit_layernorm(layer, inputs[0], affine=id(layer) not in context.plan.plain_layernorm,
                           form=context.layernorm, float_nodes=context.float_nodes if context.float_islands else None)


@register_export_rule(GELU)
def _gelu_layer(layer, inputs, context):
    context.note(layer, f"gelu={context.gelu}")
    return _emit_gelu(inputs[0], context.gelu)


@register_export_rule(keras.layers.Activation)
def _activation_layer(layer, inputs, context):
    gelu = layer.activation in _GELU_FUNCTIONS
    context.note(layer, f"gelu={context.gelu}" if gelu else getattr(layer.activation, "__name__", "activation"))
    return _activation(layer.activation, inputs[0], context.gelu)


@register_export_rule(LayerScale, fold="output_scale")
def _layer_scale(layer, inputs, context):
    context.note(layer, "MUL")
    return inputs[0] * _np(layer.gamma).astype("float32")


@register_export_rule(ImageNetNormalization, fold="input_affine", affine=_normalization_affine)
@register_export_rule(keras.layers.Rescaling, fold="input_affine", affine=_rescaling_affine)
def _input_affine(layer, inputs, context):
    context.note(layer, "MUL+ADD")
    scale, offset = export_rule(layer).affine(layer)
    return inputs[0] * scale.astype("float32") + offset.astype("float32")


@register_export_rule(keras.layers.Add)
def _add(layer, inputs, context):
    context.note(layer, "ADD")
    total = inputs[0]
    for other in inputs[1:]:
        total = total + other
    return total


@register_export_rule(keras.layers.GlobalAveragePooling2D)
def _global_average(layer, inputs, context):
    import tensorflow as tf

    context.note(layer, "MEAN over H, W")
    return tf.reduce_mean(inputs[0], axis=(1, 2), keepdims=bool(layer.keepdims))


@register_export_rule(ConvNeXtBlock)
def _convnext_block(layer, inputs, context):
    """The packaged block through the same rules as the flat layers (no folds inside it)."""
    context.note(layer, "its sublayers, each by its rule")
    x = inputs[0]
    for sublayer in (layer.depthwise_conv, layer.layernorm, layer.pointwise_conv_1, layer.grn,
                     layer.pointwise_conv_2, layer.layer_scale):
        if sublayer is not None:
            context.call = ((x,), {})
            x = _emit(sublayer, [x], context)
    return inputs[0] + x


# Layers whose own call converts to builtin TFLite ops as it is (keras.ops on TensorFlow): BN
# (FusedBatchNorm, folded into the conv before it by the converter), pooling, padding, resizing,
# merges, reshapes and keras_visrec's per-channel layers (BatchNorm: its inference call is Keras's).
@register_export_rule(
    keras.layers.BatchNormalization, BatchNorm, keras.layers.ReLU, keras.layers.LeakyReLU, keras.layers.ELU,
    keras.layers.PReLU, keras.layers.Softmax,
    keras.layers.MaxPooling2D, keras.layers.AveragePooling2D, keras.layers.GlobalMaxPooling2D,
    keras.layers.ZeroPadding2D, keras.layers.Cropping2D, keras.layers.UpSampling2D, keras.layers.Resizing,
    keras.layers.Concatenate, keras.layers.Multiply, keras.layers.Subtract, keras.layers.Average,
    keras.layers.Maximum, keras.layers.Minimum, keras.layers.Flatten, keras.layers.Reshape, keras.layers.Permute,
    GRN, ChannelSelection, ShortcutA,
)
def _builtin(layer, inputs, context):
    context.note(layer, "called as is (converts to builtin ops)")
    return _call_as_is(layer, inputs, context)


_GELU_FUNCTIONS = (keras.activations.gelu, gelu_tanh, gelu_tanh_cubic)


def _activation(activation, y, gelu="exact"):
    import tensorflow as tf

    if activation in (None, keras.activations.linear):
        return y
    if activation in _GELU_FUNCTIONS:  # exact, tanh, tanh-cubic: emitted in the target's form
        return _emit_gelu(y, gelu)
    if activation is keras.activations.softmax:
        return tf.nn.softmax(y, axis=-1)
    if activation is keras.activations.relu:
        return tf.nn.relu(y)
    return activation(y)


def _emit_linear(layer, x, context):
    import tensorflow as tf

    kernel, bias = context.folded(layer)
    kernel, bias = kernel.astype("float32"), bias.astype("float32")
    if isinstance(layer, keras.layers.Dense):
        if x.shape.rank == 2:
            y = tf.matmul(x, kernel) + bias
            return _activation(layer.activation, y, context.gelu)
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
    return _activation(layer.activation, y, context.gelu)


def _is_patchify(layer, x):
    """A Conv2D over non-overlapping square patches (kernel == stride > 1) that tile the input exactly."""
    if not isinstance(layer, keras.layers.Conv2D) or getattr(layer, "groups", 1) != 1 \
            or tuple(layer.dilation_rate) != (1, 1):
        return False
    size = tuple(layer.kernel_size)
    if size != tuple(layer.strides) or size[0] != size[1] or size[0] < 2 or x.shape.rank != 4:
        return False
    return int(x.shape[1]) % size[0] == 0 and int(x.shape[2]) % size[0] == 0  # then "same" pads nothing either


def _emit_patchify(layer, x, context):
    """A k×k stride-k conv as ``SPACE_TO_DEPTH(k)`` + 1×1 conv (the kernel reshaped; exact).

    XNNPACK's int8 conv runs ConvNeXt-T's 4×4/4 stem on 3 channels 2.2× slower than fp32 (an
    indirect GEMM over 3-channel pixels); as a GEMM over 48-channel pixels it is faster than the
    fp32 conv (measured 0.80 ms vs 2.1 ms int8, 0.94 ms fp32, 2 threads). The same holds for the
    2×2/2 downsampling convs.
    """
    import tensorflow as tf

    kernel, bias = context.folded(layer)
    block = int(layer.kernel_size[0])
    kernel = kernel.astype("float32").reshape(1, 1, block * block * kernel.shape[2], kernel.shape[3])
    y = tf.nn.conv2d(tf.nn.space_to_depth(x, block), kernel, 1, "VALID")
    return _activation(layer.activation, tf.nn.bias_add(y, bias.astype("float32")), context.gelu)


def _emit_depthwise(layer, x, context):
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
    if context.depthwise != "split" or kh * kw <= _FAST_TAPS or not simple or kw > _FAST_TAPS or kh % 2 == 0 \
            or kw % 2 == 0:
        context.note(layer, "DEPTHWISE_CONV_2D")
        y = tf.nn.depthwise_conv2d(x, kernel, (1,) + tuple(layer.strides) + (1,), layer.padding.upper(),
                                   dilations=tuple(layer.dilation_rate))
        return y if bias is None else tf.nn.bias_add(y, bias)
    height, width = int(x.shape[1]), int(x.shape[2])
    (top, bottom, rows), (left, right, cols) = _live_taps(kh, height), _live_taps(kw, width)
    kernel = kernel[rows[0]:rows[1], cols[0]:cols[1]]
    kh, kw = kernel.shape[:2]
    rows_per_band = max(1, _FAST_TAPS // kw)
    bands = [(start, min(kh, start + rows_per_band)) for start in range(0, kh, rows_per_band)]
    context.note(layer, f"PAD + {len(bands)} row-band DEPTHWISE_CONV_2D ({kh}x{kw} split)")
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

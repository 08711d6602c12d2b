"""Multiply-accumulate (MAC) counting with a per-layer breakdown, and mmcv's convention beside it.

"FLOPs" in this project means multiply-accumulates, as the ConvNeXt paper, timm and the ADP-C
paper report them (``convention="macs"``, the default). Counted: convolutions, depthwise
convolutions and dense layers (weight count × output positions; biases are free). Not counted,
as the papers do not count them: normalisation, activations, pooling, resizing, element-wise ops.

``convention="mmcv"`` counts as mmcv 1.x's ``get_model_complexity_info`` (``mmcv/cnn/utils/
flops_counter.py``), with which the ConvNeXt paper reports its UperNet FLOPs (mmseg's
``tools/get_flops.py``, on ``forward_dummy``: backbone and decode head, no auxiliary head, no
final resize). mmcv hooks the *modules* whose type is exactly one of its table and adds, per image:

* ``nn.Conv1d/2d/3d`` (groups too): kernel × in-channels × out-channels / groups × output
  positions, plus out-channels × output positions when the conv has a bias (one add per output);
* ``nn.ConvTranspose2d``: kernel × in × out / groups × *input* positions, plus the bias adds;
* ``nn.Linear``: input elements × output features (the bias is not counted);
* ``nn.BatchNorm1d/2d/3d``, ``nn.GroupNorm``, ``nn.InstanceNorm*``, ``nn.LayerNorm``: input
  elements, twice with an affine transform — but ConvNeXt's own ``LayerNorm`` module (both
  formats) is not ``nn.LayerNorm`` and counts 0, so keras_visrec's ``LayerNorm`` counts 0 and a
  plain ``keras.layers.LayerNormalization`` counts as ``nn.LayerNorm``;
* ``nn.ReLU``, ``PReLU``, ``ELU``, ``LeakyReLU``, ``ReLU6``: output elements (also when a Keras
  conv / dense layer carries ``activation="relu"``); GELU, sigmoid, softmax … count 0;
* max / average / adaptive pooling: *input* elements; ``nn.Upsample``: output elements;
* everything that is a function rather than such a module counts 0: ``F.interpolate`` (mmseg's
  ``resize``, our :class:`~keras_visrec.layers.Resize`), adds, concatenation, layer scale, drop
  path, dropout, GRN, input normalisation.

Other modules extend the rules rather than re-implementing the walk:

* ``register_flops_rule(LayerClass)`` adds a counting rule for a custom layer;
* ``FlopReport.per_layer`` lets ADP-C scale a layer's cost by the fraction of pixels it
  computes, and pruning compare budgets (Scratch-B) of two architectures.
"""

import dataclasses

import keras
import numpy as np

__all__ = ["CONVENTIONS", "FlopReport", "LayerFlops", "count_flops", "register_flops_rule"]

CONVENTIONS = ("macs", "mmcv")
_RULES = {convention: {} for convention in CONVENTIONS}


def register_flops_rule(layer_class, convention="macs"):
    """Decorator: ``rule(layer, input_shapes, output_shape) -> int`` counts ``layer_class`` in a convention.

    ``input_shapes`` is a list of per-input shapes and ``output_shape`` the (first) output's shape,
    each including the batch axis. Rules are looked up along the class MRO; a layer without an
    ``"mmcv"`` rule is counted by its ``"macs"`` rule there.
    """
    if convention not in CONVENTIONS:
        raise ValueError(f"`convention` must be one of {CONVENTIONS}; received convention={convention!r}.")

    def wrap(rule):
        _RULES[convention][layer_class] = rule
        return rule

    return wrap


def _positions(shape):
    """Number of output positions per sample (every axis except batch and channels)."""
    return int(np.prod([int(d) for d in shape[1:-1]], dtype=np.int64)) if len(shape) > 2 else 1


@register_flops_rule(keras.layers.Conv2D)
@register_flops_rule(keras.layers.Conv1D)
@register_flops_rule(keras.layers.Conv3D)
def _conv_macs(layer, input_shapes, output_shape):
    kernel = layer.kernel.shape  # (*k, cin / groups, cout)
    return int(np.prod(kernel, dtype=np.int64)) * _positions(output_shape)


@register_flops_rule(keras.layers.Conv2DTranspose)
def _conv_transpose_macs(layer, input_shapes, output_shape):
    kernel = layer.kernel.shape  # (*k, cout, cin): every input position touches the whole kernel
    return int(np.prod(kernel, dtype=np.int64)) * _positions(input_shapes[0])


@register_flops_rule(keras.layers.DepthwiseConv2D)
def _depthwise_macs(layer, input_shapes, output_shape):
    return int(np.prod(layer.kernel.shape, dtype=np.int64)) * _positions(output_shape)


@register_flops_rule(keras.layers.SeparableConv2D)
def _separable_macs(layer, input_shapes, output_shape):
    depthwise = int(np.prod(layer.depthwise_kernel.shape, dtype=np.int64))
    pointwise = int(np.prod(layer.pointwise_kernel.shape, dtype=np.int64))
    return (depthwise + pointwise) * _positions(output_shape)


@register_flops_rule(keras.layers.Dense)
def _dense_macs(layer, input_shapes, output_shape):
    return int(np.prod(layer.kernel.shape, dtype=np.int64)) * _positions(output_shape)


# ---- mmcv 1.x get_model_complexity_info (see the module docstring) ------------------------------

def _elements(shape):
    return int(np.prod([int(d) for d in shape[1:]], dtype=np.int64))


_MMCV_ACTIVATIONS = ("relu", "relu6", "leaky_relu", "elu")


def _mmcv_activation(layer, output_shape):
    """mmcv counts a ReLU-family module's output elements; a Keras layer may carry one as ``activation``."""
    name = getattr(getattr(layer, "activation", None), "__name__", "")
    return _elements(output_shape) if name in _MMCV_ACTIVATIONS else 0


def _mmcv_bias(layer, output_shape):
    return _positions(output_shape) * int(layer.bias.shape[0]) if getattr(layer, "use_bias", False) else 0


@register_flops_rule(keras.layers.Conv1D, "mmcv")
@register_flops_rule(keras.layers.Conv2D, "mmcv")
@register_flops_rule(keras.layers.Conv3D, "mmcv")
@register_flops_rule(keras.layers.DepthwiseConv2D, "mmcv")
def _mmcv_conv(layer, input_shapes, output_shape):
    macs = _RULES["macs"][keras.layers.DepthwiseConv2D if isinstance(layer, keras.layers.DepthwiseConv2D)
                          else keras.layers.Conv2D](layer, input_shapes, output_shape)
    return macs + _mmcv_bias(layer, output_shape) + _mmcv_activation(layer, output_shape)


@register_flops_rule(keras.layers.SeparableConv2D, "mmcv")
def _mmcv_separable(layer, input_shapes, output_shape):
    return _separable_macs(layer, input_shapes, output_shape) + _mmcv_bias(layer, output_shape) + \
        _mmcv_activation(layer, output_shape)


@register_flops_rule(keras.layers.Conv2DTranspose, "mmcv")
def _mmcv_conv_transpose(layer, input_shapes, output_shape):
    return _conv_transpose_macs(layer, input_shapes, output_shape) + _mmcv_bias(layer, output_shape) + \
        _mmcv_activation(layer, output_shape)


@register_flops_rule(keras.layers.Dense, "mmcv")
def _mmcv_linear(layer, input_shapes, output_shape):
    return _dense_macs(layer, input_shapes, output_shape) + _mmcv_activation(layer, output_shape)


@register_flops_rule(keras.layers.BatchNormalization, "mmcv")
@register_flops_rule(keras.layers.GroupNormalization, "mmcv")
@register_flops_rule(keras.layers.LayerNormalization, "mmcv")
def _mmcv_norm(layer, input_shapes, output_shape):
    affine = getattr(layer, "scale", False) or getattr(layer, "center", False)
    return _elements(input_shapes[0]) * (2 if affine else 1)


@register_flops_rule(keras.layers.ReLU, "mmcv")
@register_flops_rule(keras.layers.LeakyReLU, "mmcv")
@register_flops_rule(keras.layers.ELU, "mmcv")
@register_flops_rule(keras.layers.PReLU, "mmcv")
def _mmcv_relu(layer, input_shapes, output_shape):
    return _elements(output_shape)


@register_flops_rule(keras.layers.Activation, "mmcv")
def _mmcv_activation_layer(layer, input_shapes, output_shape):
    return _mmcv_activation(layer, output_shape)


@register_flops_rule(keras.layers.AveragePooling2D, "mmcv")
@register_flops_rule(keras.layers.MaxPooling2D, "mmcv")
@register_flops_rule(keras.layers.AveragePooling1D, "mmcv")
@register_flops_rule(keras.layers.MaxPooling1D, "mmcv")
@register_flops_rule(keras.layers.AveragePooling3D, "mmcv")
@register_flops_rule(keras.layers.MaxPooling3D, "mmcv")
@register_flops_rule(keras.layers.GlobalAveragePooling2D, "mmcv")
@register_flops_rule(keras.layers.GlobalMaxPooling2D, "mmcv")
def _mmcv_pool(layer, input_shapes, output_shape):
    return _elements(input_shapes[0])


@register_flops_rule(keras.layers.UpSampling2D, "mmcv")
def _mmcv_upsample(layer, input_shapes, output_shape):
    return _elements(output_shape)


@dataclasses.dataclass(frozen=True)
class LayerFlops:
    """MACs of one call of one layer."""

    name: str
    class_name: str
    macs: int
    output_shape: tuple


@dataclasses.dataclass(frozen=True)
class FlopReport:
    """Result of :func:`count_flops`: the total and the per-layer breakdown (per sample).

    ``convention`` says what was counted: ``"macs"`` (multiply-accumulates, ``gmacs``) or
    ``"mmcv"`` (mmcv's FLOPs, ``gflops``); ``total`` is in that unit.
    """

    per_layer: tuple
    input_shape: tuple
    convention: str = "macs"

    @property
    def total(self):
        return int(sum(entry.macs for entry in self.per_layer))

    @property
    def gmacs(self):
        return self.total / 1e9

    @property
    def gflops(self):
        """``total / 1e9`` — mmcv's GFLOPs under ``convention="mmcv"`` (its ``flops_to_string`` unit)."""
        return self.total / 1e9

    def __int__(self):
        return self.total

    def by_layer(self):
        """``{layer name: MACs}`` summed over the layer's calls."""
        totals = {}
        for entry in self.per_layer:
            totals[entry.name] = totals.get(entry.name, 0) + entry.macs
        return totals

    def by_type(self):
        """``{layer class name: MACs}``."""
        totals = {}
        for entry in self.per_layer:
            totals[entry.class_name] = totals.get(entry.class_name, 0) + entry.macs
        return totals

    def select(self, predicate):
        """Sum of MACs over layers whose name satisfies ``predicate(name)``."""
        return int(sum(e.macs for e in self.per_layer if predicate(e.name)))

    def table(self, top=None):
        """A plain-text per-layer table, largest first (``top`` rows, all by default)."""
        rows = sorted((e for e in self.per_layer if e.macs), key=lambda e: -e.macs)[:top]
        width = max([len(r.name) for r in rows] + [5])
        unit = "MMACs" if self.convention == "macs" else "MFLOPs"
        lines = [f"{'layer':<{width}}  {'type':<22} {unit:>10}  output"]
        lines += [f"{r.name:<{width}}  {r.class_name:<22} {r.macs / 1e6:>10.3f}  {r.output_shape}" for r in rows]
        lines.append(f"{'total':<{width}}  {'':<22} {self.total / 1e6:>10.3f}  ({self.total / 1e9:.3f} G{unit[1:]})")
        return "\n".join(lines)

    def __str__(self):
        unit = "MACs" if self.convention == "macs" else "FLOPs (mmcv)"
        return f"FlopReport(total={self.total:,} {unit} = {self.total / 1e9:.3f} G, layers={len(self.per_layer)})"


def count_flops(model, input_shape=None, *, convention="macs"):
    """Counts multiply-accumulates (or mmcv's FLOPs) of one forward pass of ``model`` on one sample.

    Args:
        model: keras.Model. A functional or sequential model; nested models are walked, custom
            layers need a rule (``register_flops_rule``) or are counted as 0 when weightless.
        input_shape: tuple, or a list of tuples for several inputs, *without* the batch axis.
            Required when the model's input has `None` spatial dimensions. Defaults to the
            model's own input shape.
        convention: str. `"macs"` (this project's FLOPs: multiply-accumulates of convs and
            dense layers) or `"mmcv"` (mmcv 1.x `get_model_complexity_info`, as mmseg / mmdet
            papers report FLOPs; see the module docstring). Defaults to `"macs"`.

    Returns:
        A :class:`FlopReport` (``int(report)`` is the total).

    Examples:

    >>> model = keras_visrec.ConvNeXtAtto(input_shape=(64, 64, 3))
    >>> report = keras_visrec.count_flops(model)
    >>> report.total > 0
    True
    """
    if convention not in CONVENTIONS:
        raise ValueError(f"`convention` must be one of {CONVENTIONS}; received convention={convention!r}.")
    shapes = _resolve_input_shapes(model, input_shape)
    entries = []
    _walk(model, [(1,) + s for s in shapes], entries, prefix="", convention=convention)
    return FlopReport(per_layer=tuple(entries), input_shape=shapes[0] if len(shapes) == 1 else tuple(shapes),
                      convention=convention)


def _resolve_input_shapes(model, input_shape):
    model_shapes = [tuple(t.shape[1:]) for t in model.inputs]
    if input_shape is None:
        shapes = model_shapes
    elif input_shape and isinstance(input_shape[0], (tuple, list)):
        shapes = [tuple(s) for s in input_shape]
    else:
        shapes = [tuple(input_shape)]
    if len(shapes) != len(model_shapes):
        raise ValueError(f"`input_shape` must give {len(model_shapes)} input shape(s); received {input_shape!r}.")
    for shape, own in zip(shapes, model_shapes):
        if any(d is None for d in shape):
            raise ValueError(
                f"`input_shape` is needed because {model.name!r} takes inputs of shape {own}; "
                f"pass e.g. input_shape=(224, 224, 3). Received {input_shape!r}."
            )
        if len(shape) != len(own) or any(o is not None and o != s for o, s in zip(own, shape)):
            raise ValueError(f"`input_shape` {shape} does not fit {model.name!r}'s input shape {own}.")
    return shapes


def _shape_of(value):
    return tuple(int(d) for d in value.shape)


def _walk(model, input_shapes, entries, prefix, convention="macs"):
    """Traces ``model`` symbolically on concrete shapes, recording every layer call."""
    inputs = [keras.Input(batch_shape=s) for s in input_shapes]

    def call(layer, *args, **kwargs):
        outputs = layer(*args, **kwargs)
        tensors = [t for t in keras.tree.flatten((args, kwargs)) if isinstance(t, keras.KerasTensor)]
        first = keras.tree.flatten(outputs)[0]
        in_shapes = [_shape_of(t) for t in tensors]
        name = prefix + layer.name
        if isinstance(layer, keras.Model) and hasattr(layer, "inputs") and layer.inputs:
            _walk(layer, in_shapes[: len(layer.inputs)], entries, prefix=name + "/", convention=convention)
        else:
            count = _layer_macs(layer, in_shapes, _shape_of(first), convention)
            entries.append(LayerFlops(name, type(layer).__name__, count, _shape_of(first)))
        return outputs

    model_inputs = inputs[0] if len(inputs) == 1 else inputs
    keras.models.clone_model(model, input_tensors=model_inputs, clone_function=lambda layer: layer,
                             call_function=call)


def _layer_macs(layer, input_shapes, output_shape, convention="macs"):
    for table in (_RULES[convention], _RULES["macs"]) if convention != "macs" else (_RULES["macs"],):
        for cls in type(layer).__mro__:
            rule = table.get(cls)
            if rule is not None:
                return int(rule(layer, input_shapes, output_shape))
    if hasattr(layer, "count_macs"):
        return int(layer.count_macs(input_shapes, output_shape))
    sublayers = [sub for sub in getattr(layer, "_layers", []) if sub.weights]
    if sublayers:
        raise ValueError(
            f"count_flops has no rule for layer {layer.name!r} ({type(layer).__name__}), which holds "
            "sublayers with weights; add one with keras_visrec.flops.register_flops_rule."
        )
    return 0


def _register_block_rules():
    from keras_visrec.layers import AdaptiveAveragePooling2D, LayerNorm, Resize
    from keras_visrec.layers.convnext_block import ConvNeXtBlock

    @register_flops_rule(ConvNeXtBlock)
    def _convnext_block_macs(layer, input_shapes, output_shape):
        positions = _positions(output_shape)
        weights = [layer.depthwise_conv.kernel, layer.pointwise_conv_1.kernel, layer.pointwise_conv_2.kernel]
        return sum(int(np.prod(w.shape, dtype=np.int64)) for w in weights) * positions

    @register_flops_rule(ConvNeXtBlock, "mmcv")
    def _convnext_block_mmcv(layer, input_shapes, output_shape):
        # the official block: depthwise nn.Conv2d with bias, two nn.Linear, custom LayerNorm, nn.GELU
        return _convnext_block_macs(layer, input_shapes, output_shape) + _positions(output_shape) * int(
            layer.depthwise_conv.bias.shape[0])

    register_flops_rule(AdaptiveAveragePooling2D, "mmcv")(_mmcv_pool)  # nn.AdaptiveAvgPool2d
    register_flops_rule(LayerNorm, "mmcv")(lambda layer, input_shapes, output_shape: 0)  # ConvNeXt's LayerNorm
    register_flops_rule(Resize, "mmcv")(lambda layer, input_shapes, output_shape: 0)  # F.interpolate


_register_block_rules()

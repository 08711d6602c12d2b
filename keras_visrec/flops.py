"""Multiply-accumulate (MAC) counting with a per-layer breakdown.

"FLOPs" in this project means multiply-accumulates, as the ConvNeXt paper, timm and the ADP-C
paper report them. Counted: convolutions, depthwise convolutions and dense layers (weight count ×
output positions; biases are free). Not counted, as the papers do not count them: normalisation,
activations, pooling, resizing, element-wise ops.

Other modules extend the rules rather than re-implementing the walk:

* ``register_flops_rule(LayerClass)`` adds a counting rule for a custom layer;
* ``FlopReport.per_layer`` lets ADP-C scale a layer's cost by the fraction of pixels it
  computes, and pruning compare budgets (Scratch-B) of two architectures.
"""

import dataclasses

import keras
import numpy as np

__all__ = ["FlopReport", "LayerFlops", "count_flops", "register_flops_rule"]

_RULES = {}


def register_flops_rule(layer_class):
    """Decorator: ``rule(layer, input_shapes, output_shape) -> int`` counts MACs of ``layer_class``.

    ``input_shapes`` is a list of per-input shapes and ``output_shape`` the (first) output's shape,
    each including the batch axis. Rules are looked up along the class MRO.
    """

    def wrap(rule):
        _RULES[layer_class] = rule
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


@dataclasses.dataclass(frozen=True)
class LayerFlops:
    """MACs of one call of one layer."""

    name: str
    class_name: str
    macs: int
    output_shape: tuple


@dataclasses.dataclass(frozen=True)
class FlopReport:
    """Result of :func:`count_flops`: the total and the per-layer breakdown (MACs per sample)."""

    per_layer: tuple
    input_shape: tuple

    @property
    def total(self):
        return int(sum(entry.macs for entry in self.per_layer))

    @property
    def gmacs(self):
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
        lines = [f"{'layer':<{width}}  {'type':<22} {'MMACs':>10}  output"]
        lines += [f"{r.name:<{width}}  {r.class_name:<22} {r.macs / 1e6:>10.3f}  {r.output_shape}" for r in rows]
        lines.append(f"{'total':<{width}}  {'':<22} {self.total / 1e6:>10.3f}  ({self.gmacs:.3f} GMACs)")
        return "\n".join(lines)

    def __str__(self):
        return f"FlopReport(total={self.total:,} MACs = {self.gmacs:.3f} G, layers={len(self.per_layer)})"


def count_flops(model, input_shape=None):
    """Counts multiply-accumulates of one forward pass of ``model`` on one sample.

    Args:
        model: keras.Model. A functional or sequential model; nested models are walked, custom
            layers need a rule (``register_flops_rule``) or are counted as 0 when weightless.
        input_shape: tuple, or a list of tuples for several inputs, *without* the batch axis.
            Required when the model's input has `None` spatial dimensions. Defaults to the
            model's own input shape.

    Returns:
        A :class:`FlopReport` (``int(report)`` is the total).

    Examples:

    >>> model = keras_visrec.ConvNeXtAtto(input_shape=(64, 64, 3))
    >>> report = keras_visrec.count_flops(model)
    >>> report.total > 0
    True
    """
    shapes = _resolve_input_shapes(model, input_shape)
    entries = []
    _walk(model, [(1,) + s for s in shapes], entries, prefix="")
    return FlopReport(per_layer=tuple(entries), input_shape=shapes[0] if len(shapes) == 1 else tuple(shapes))


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


def _walk(model, input_shapes, entries, prefix):
    """Traces ``model`` symbolically on concrete shapes, recording every layer call."""
    inputs = [keras.Input(batch_shape=s) for s in input_shapes]

    def call(layer, *args, **kwargs):
        outputs = layer(*args, **kwargs)
        tensors = [t for t in keras.tree.flatten((args, kwargs)) if isinstance(t, keras.KerasTensor)]
        first = keras.tree.flatten(outputs)[0]
        in_shapes = [_shape_of(t) for t in tensors]
        name = prefix + layer.name
        if isinstance(layer, keras.Model) and hasattr(layer, "inputs") and layer.inputs:
            _walk(layer, in_shapes[: len(layer.inputs)], entries, prefix=name + "/")
        else:
            entries.append(LayerFlops(name, type(layer).__name__, _layer_macs(layer, in_shapes, _shape_of(first)),
                                      _shape_of(first)))
        return outputs

    model_inputs = inputs[0] if len(inputs) == 1 else inputs
    keras.models.clone_model(model, input_tensors=model_inputs, clone_function=lambda layer: layer,
                             call_function=call)


def _layer_macs(layer, input_shapes, output_shape):
    for cls in type(layer).__mro__:
        rule = _RULES.get(cls)
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


def _register_block_rule():
    from keras_visrec.layers.convnext_block import ConvNeXtBlock

    @register_flops_rule(ConvNeXtBlock)
    def _convnext_block_macs(layer, input_shapes, output_shape):
        positions = _positions(output_shape)
        weights = [layer.depthwise_conv.kernel, layer.pointwise_conv_1.kernel, layer.pointwise_conv_2.kernel]
        return sum(int(np.prod(w.shape, dtype=np.int64)) for w in weights) * positions


_register_block_rule()

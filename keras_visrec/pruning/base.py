"""What every pruner shares: the ``ratio`` argument, the report it returns, and the helpers under them.

Every pruner of :mod:`keras_visrec.pruning` (L1-norm, network slimming, magnitude, the ConvNeXt
MLP and HRNet branch widths) takes the amount as ``ratio`` — a float in [0, 1), the share to
remove, or a per-layer dict ``{layer name: float}`` — honours ``name=`` and returns ``(pruned
model, PruneReport)``. This module holds what they would otherwise each write again: ratio
validation, the per-layer dict, the walk over nested layers, the copy made when nothing is
pruned, the report, and the deprecated spellings of one release.
"""

import dataclasses
import difflib
import numbers
import warnings

import keras
import numpy as np

from keras_visrec.arguments import validate_rate
from keras_visrec.cifar import ChannelSelection

__all__ = ["LayerChange", "PruneReport", "check_ratio", "copy_model", "iter_layers", "make_report",
           "per_layer_ratio", "renamed_arguments"]


# layers that create output channels (what structured pruning narrows)
_PRODUCERS = (keras.layers.Conv1D, keras.layers.Conv2D, keras.layers.Conv3D, keras.layers.Dense,
              keras.layers.Conv2DTranspose, keras.layers.SeparableConv2D)


def check_ratio(value, argument="ratio"):
    """A share to remove: a real number in [0, 1) (the error names ``argument``)."""
    return validate_rate(value, argument, high=1)


def per_layer_ratio(ratio, candidates, *, what="layer", resolve=None):
    """``{candidate: ratio}`` from a float (every candidate) or a per-layer dict (the listed ones).

    Args:
        ratio: float in [0, 1), or dict ``{key: float}``.
        candidates: the names a dict may use (in order).
        what: str. What a candidate is, for messages. Defaults to `"layer"`.
        resolve: callable or None. Maps a dict key to a candidate (e.g. a block prefix to its
            layer name); defaults to the key itself.

    Returns:
        dict ``{candidate: float}``.
    """
    candidates = list(candidates)
    if isinstance(ratio, dict):
        result = {}
        for key, value in ratio.items():
            name = resolve(key) if resolve is not None else key
            if name not in candidates:
                close = difflib.get_close_matches(str(name), candidates, n=3)
                hint = f" Close matches: {close}." if close else f" The {what}s are: {candidates[:8]}" + (
                    " …" if len(candidates) > 8 else "") + "."
                raise ValueError(f"`ratio` names {key!r}, which is not a prunable {what} of this model.{hint}")
            result[name] = check_ratio(value, f"ratio[{key!r}]")
        return result
    if isinstance(ratio, (str, bytes)) or not isinstance(ratio, numbers.Real):
        raise ValueError(f"`ratio` must be a float in [0, 1) or a dict {{{what} name: float}}; received "
                        f"{type(ratio).__name__}: {ratio!r}.")
    value = check_ratio(ratio)
    return {name: value for name in candidates}


def iter_layers(model):
    """Every layer of ``model`` in graph order, the layers of nested models included (each once).

    Nested models are yielded and then walked; layers a custom layer builds inside itself (e.g.
    ``ConvNeXtBlock``'s) are not, as a pruner cannot rewire them.
    """
    seen = set()

    def walk(parent):
        for layer in parent.layers:
            if id(layer) in seen:
                continue
            seen.add(id(layer))
            yield layer
            if isinstance(layer, keras.Model):
                yield from walk(layer)

    yield from walk(model)


def copy_model(model, name=None):
    """A clone of ``model`` with its weights (what a pruner returns when nothing is pruned)."""
    copy = keras.models.clone_model(model)
    copy.set_weights(model.get_weights())
    if name:
        copy.name = name
    return copy


@dataclasses.dataclass(frozen=True)
class LayerChange:
    """What pruning did to one layer: its output channels, or its non-zero weights."""

    name: str
    unit: str  # "channels" | "weights"
    before: int
    after: int

    @property
    def removed(self):
        """Share removed, in [0, 1]."""
        return 1.0 - self.after / self.before if self.before else 0.0


@dataclasses.dataclass(frozen=True)
class PruneReport:
    """What a pruner did; ``print(report)`` shows it as a table.

    Attributes:
        method: str. `"l1"`, `"slimming"`, `"magnitude"`, `"convnext_mlp"` or `"hrnet_branches"`.
        model: str. Name of the pruned model.
        ratio: the requested amount (float, dict, or a named configuration's description).
        layers: tuple of :class:`LayerChange`, one per pruned layer.
        params: ``(before, after)`` parameter counts.
        nonzero: ``(before, after)`` counts of non-zero parameters.
        macs: ``(before, after)`` multiply-accumulates per sample, or None when the input
            shape is not static.
        details: dict. What is particular to the method (slimming's ``threshold``, ``kept``,
            ``emptied``, ``skipped``; magnitude's ``schedule``, ``backend`` …), also readable as
            attributes (``report.threshold``).
    """

    method: str
    model: str
    ratio: object
    layers: tuple
    params: tuple
    nonzero: tuple
    macs: tuple = None
    details: dict = dataclasses.field(default_factory=dict)

    def __getattr__(self, name):
        if name == "details" or name.startswith("__"):
            raise AttributeError(name)
        details = object.__getattribute__(self, "details")
        if name in details:
            return details[name]
        raise AttributeError(f"'PruneReport' has no attribute {name!r} (details: {sorted(details)})")

    @property
    def sparsity(self):
        """``{layer name: share of its weights (or channels) removed}``."""
        return {change.name: change.removed for change in self.layers}

    def table(self):
        """The per-layer changes as plain text."""
        width = max([len(c.name) for c in self.layers] + [5])
        lines = [f"{'layer':<{width}}  {'unit':<8} {'before':>9} {'after':>9} {'removed':>8}"]
        lines += [f"{c.name:<{width}}  {c.unit:<8} {c.before:>9,} {c.after:>9,} {c.removed:>8.1%}" for c in self.layers]
        return "\n".join(lines)

    def __str__(self):
        ratio = self.ratio if not isinstance(self.ratio, dict) else f"per layer ({len(self.ratio)} layers)"
        lines = [f"{self.method} pruning -> {self.model!r} (ratio {ratio})", self.table()]
        summary = [_change("params", *self.params), _change("non-zero", *self.nonzero)]
        if self.macs is not None:
            summary.append(_change("MACs", *self.macs))
        lines.append("; ".join(summary))
        return "\n".join(lines)


def _change(label, before, after):
    share = 1.0 - after / before if before else 0.0
    return f"{label} {before:,} -> {after:,} (-{share:.1%})"


def _counts(model):
    values = [keras.ops.convert_to_numpy(w) for w in model.weights]
    return int(sum(v.size for v in values)), int(sum(np.count_nonzero(v) for v in values))


def _macs(model):
    from keras_visrec.flops import count_flops

    try:
        return count_flops(model).total
    except (ValueError, TypeError):  # dynamic spatial input: no per-sample count without a shape
        return None


def make_report(method, original, pruned, ratio, *, unit="channels", layers=None, details=None):
    """The :class:`PruneReport` of ``original`` -> ``pruned``.

    Args:
        method: str. The pruner's name.
        original, pruned: keras.Model.
        ratio: what was asked for.
        unit: `"channels"` (rows: layers whose output channels changed) or `"weights"` (rows:
            ``layers``, by non-zero kernel weights).
        layers: list of str. The layers to list for `"weights"`.
        details: dict. Method-specific facts.
    """
    if unit == "channels":
        changes = [LayerChange(name, "channels", before, after) for name, before, after in _channel_changes(original, pruned)]
    else:
        changes = []
        for name in layers or ():
            kernel = keras.ops.convert_to_numpy(pruned.get_layer(name).kernel)
            before = int(np.count_nonzero(keras.ops.convert_to_numpy(original.get_layer(name).kernel)))
            changes.append(LayerChange(name, "weights", before, int(np.count_nonzero(kernel))))
    params_before, nonzero_before = _counts(original)
    params_after, nonzero_after = _counts(pruned)
    macs_before, macs_after = _macs(original), _macs(pruned)
    macs = None if macs_before is None or macs_after is None else (macs_before, macs_after)
    return PruneReport(method, pruned.name, ratio, tuple(changes), (params_before, params_after),
                       (nonzero_before, nonzero_after), macs, dict(details or {}))


def _channel_changes(original, pruned):
    """``(layer, channels before, after)`` for layers whose output channels (or selection) shrank."""
    after = {layer.name: layer for layer in iter_layers(pruned)}
    rows = []
    for layer in iter_layers(original):
        new = after.get(layer.name)
        if new is None:
            continue
        width = _output_width(layer)
        new_width = _output_width(new)
        if width is not None and new_width is not None and new_width != width:
            rows.append((layer.name, width, new_width))
    return rows


def _output_width(layer):
    """Output channels a layer creates (Conv, Dense) or selects (ChannelSelection); None for the rest."""
    if isinstance(layer, ChannelSelection):
        if layer.indices is not None:
            return len(layer.indices)
        try:
            return int(layer.input.shape[-1])
        except (AttributeError, ValueError):
            return None
    if isinstance(layer, _PRODUCERS) and not isinstance(layer, keras.layers.DepthwiseConv2D):
        return int(layer.kernel.shape[-1])
    return None


def renamed_arguments(function, deprecated, renames, *, current, defaults=None):
    """The arguments' values with their old spellings folded in, each with a DeprecationWarning.

    Args:
        function: str. The function's public name, for messages.
        deprecated: dict. The ``**deprecated`` keyword arguments the function received.
        renames: dict ``{old name: new name}`` of the spellings accepted for one release.
        current: dict ``{new name: value received}``.
        defaults: dict ``{new name: default}`` (None where absent): a new argument differing
            from its default counts as given.

    Returns:
        ``current`` with the old spellings' values in place of their new names.

    Raises:
        TypeError: a keyword that is neither an argument nor a deprecated spelling, or an old
            spelling given beside its new name.
    """
    values, defaults = dict(current), defaults or {}
    for old, value in deprecated.items():
        if old not in renames:
            raise TypeError(f"{function}() got an unexpected keyword argument {old!r}")
        new = renames[old]
        if values.get(new) is not defaults.get(new) and values.get(new) != defaults.get(new):
            raise TypeError(f"{function}(): give `{new}=`, not the deprecated `{old}=` as well.")
        warnings.warn(f"`{function}({old}=...)` is deprecated and will be removed in the next release; use "
                      f"`{new}=` instead.", DeprecationWarning, stacklevel=3)
        values[new] = value
    return values

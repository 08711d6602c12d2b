"""Network slimming (Liu et al., "Learning Efficient Convolutional Networks through Network
Slimming", ICCV 2017).

Training adds an L1 penalty ``s·Σ|γ|`` on every BatchNorm scale, whose gradient is the paper's
``s·sign(γ)`` added to each γ gradient (:func:`add_bn_sparsity` sets it as the γ variables'
regulariser, so plain ``model.fit`` applies it, under any ``tf.distribute`` strategy). Then one
*global* threshold over all |γ| picks the channels to remove (:func:`slimming_plan`) and the
surgery removes them (:func:`network_slimming`):

* a BN right after a conv (VGG, the inner BNs of PreResNet bottlenecks) prunes that conv's
  output channels;
* a BN on a shared stream (PreResNet's residual stream, DenseNet's concatenation) is followed
  by a :class:`~keras_visrec.cifar.ChannelSelection`, which is narrowed instead.

A layer whose every channel falls under the threshold keeps its single largest-|γ| channel
(the network would otherwise be cut in two); the report lists such layers. A per-layer dict
``ratio={bn name: share}`` prunes each listed BatchNorm by its own threshold instead.
"""

import dataclasses

import keras
import numpy as np

from keras_visrec.cifar import ChannelSelection
from keras_visrec.pruning.base import check_ratio, copy_model, iter_layers, make_report, per_layer_ratio, \
    renamed_arguments
from keras_visrec.pruning.surgery import SurgeryError, _Graph, _PASSTHROUGH, prune_channels

__all__ = ["SlimmingPlan", "add_bn_sparsity", "network_slimming", "remove_bn_sparsity", "slimming_plan"]


def _batch_norms(model):
    return [layer for layer in iter_layers(model)
            if isinstance(layer, keras.layers.BatchNormalization) and layer.scale]


def add_bn_sparsity(model, strength=1e-4, layers=None, **deprecated):
    """Adds ``strength·|γ|`` (gradient ``strength·sign(γ)``) on the scale of every BatchNorm of ``model``.

    Call before ``compile``/``fit``. The penalty lives on the variables, not in the layer
    configs, so clones and pruned copies are free of it.

    Args:
        model: keras.Model. A built model.
        strength: float. The paper's sparsity strength ``s`` (1e-4 for VGG, 1e-5 for
            PreResNet-164 and DenseNet-40); ``s=`` is its deprecated spelling. Defaults to `1e-4`.
        layers: list of str or `None`. BatchNorm names; defaults to all.

    Returns:
        The names of the penalised BatchNorm layers.
    """
    strength = renamed_arguments("add_bn_sparsity", deprecated, {"s": "strength"}, current={"strength": strength},
                                 defaults={"strength": 1e-4})["strength"]
    if isinstance(strength, bool) or not isinstance(strength, (int, float)) or strength < 0:
        raise ValueError(f"`strength` must be a non-negative float; received strength={strength!r}.")
    bns = _batch_norms(model) if layers is None else [model.get_layer(n) for n in layers]
    for bn in bns:
        if not isinstance(bn, keras.layers.BatchNormalization):
            raise ValueError(f"Layer {bn.name!r} is a {type(bn).__name__}, not a BatchNormalization.")
        bn.gamma.regularizer = keras.regularizers.L1(float(strength)) if strength else None
    return [bn.name for bn in bns]


def remove_bn_sparsity(model):
    """Removes the penalty :func:`add_bn_sparsity` set."""
    for bn in _batch_norms(model):
        bn.gamma.regularizer = None


@dataclasses.dataclass(frozen=True)
class SlimmingPlan:
    """What :func:`slimming_plan` decided (``SlimmingReport`` is its old name, kept one release).

    Attributes:
        ratio: float or dict. Requested share of the candidate channels to remove.
        threshold: float. The global |γ| threshold (channels at or below it go; with a
            per-layer dict, the largest of the per-layer thresholds).
        kept: dict. ``{BN name: kept channel indices}``.
        total: int. Candidate channels over all slimmable BNs.
        removed: int. Channels removed.
        emptied: tuple. BNs whose channels all fell under the threshold (one kept each).
        skipped: tuple. BNs that cannot be slimmed (fixed channel groups without selection).
    """

    ratio: float
    threshold: float
    kept: dict
    total: int
    removed: int
    emptied: tuple
    skipped: tuple


def _slimming_targets(model):
    """``{BN name: ("select", selection layer) | ("group", None)}`` and the skipped BN names."""
    graph = _Graph(model)
    groups = graph.groups()
    targets, skipped = {}, []
    consumers = {}
    for node in graph.nodes:
        for tensor in node.input_tensors:
            consumers.setdefault(id(tensor), []).append(node.operation)
    for bn in _batch_norms(model):
        nodes = graph.layer_nodes.get(bn.name, [])
        if len(nodes) != 1:
            skipped.append(bn.name)
            continue
        tensor = nodes[0].outputs[0]
        selection = _selection_after(tensor, consumers, graph)
        if selection is not None:
            targets[bn.name] = ("select", selection)
            continue
        members, sources, _, ids = groups[graph.find(id(tensor))]
        prunable, _ = graph.group_status(sources, ids)
        if prunable and sum(isinstance(model.get_layer(m), keras.layers.BatchNormalization) for m in members) == 1:
            targets[bn.name] = ("group", None)
        else:
            skipped.append(bn.name)
    return targets, tuple(skipped)


def _selection_after(tensor, consumers, graph):
    """The ChannelSelection that alone reads ``tensor`` (through weightless layers), if any."""
    while True:
        readers = consumers.get(id(tensor), [])
        if len(readers) != 1:
            return None
        layer = readers[0]
        if isinstance(layer, ChannelSelection):
            return layer
        if not isinstance(layer, _PASSTHROUGH):
            return None
        tensor = graph.layer_nodes[layer.name][0].outputs[0]


def slimming_plan(model, ratio):
    """The channels network slimming removes: one global |γ| threshold (or one per listed BN).

    Args:
        model: keras.Model. Trained with :func:`add_bn_sparsity`.
        ratio: float in [0, 1), the share of all slimmable BN channels to remove under one
            global threshold (VGG-19: 0.7, PreResNet-164 and DenseNet-40: 0.4), or a dict
            ``{BN name: float}`` pruning each listed BN by its own threshold.

    Returns:
        A :class:`SlimmingPlan`.
    """
    targets, skipped = _slimming_targets(model)
    if not targets:
        raise ValueError(f"Model {model.name!r} has no BatchNorm that network slimming can prune.")
    shares = per_layer_ratio(ratio, list(targets), what="BatchNorm")
    scales = {}
    for bn_name, (kind, selection) in targets.items():
        gamma = np.abs(keras.ops.convert_to_numpy(model.get_layer(bn_name).gamma))
        if kind == "select" and selection.indices is not None:
            gamma = gamma[np.asarray(selection.indices)]  # candidates: the channels still selected
        scales[bn_name] = gamma
    if isinstance(ratio, dict):  # one threshold per listed BN
        groups = [{bn_name: scales[bn_name]} for bn_name in shares]
        requested = ratio
    else:
        groups = [scales]
        requested = check_ratio(ratio)
    kept, emptied, removed, total, threshold = {}, [], 0, 0, 0.0
    for group in groups:
        share = shares[next(iter(group))]
        everything = np.concatenate(list(group.values()))
        count = int(everything.size * share)
        order = np.argsort(everything, kind="stable")
        removed_mask = np.zeros(everything.size, bool)
        removed_mask[order[:count]] = True
        threshold = max(threshold, float(everything[order[count - 1]]) if count else 0.0)
        offset = 0
        for bn_name, gamma in group.items():
            mask = ~removed_mask[offset: offset + gamma.size]
            offset += gamma.size
            if not mask.any():
                mask[int(np.argmax(gamma))] = True
                emptied.append(bn_name)
            kept[bn_name] = np.flatnonzero(mask)
            removed += int((~mask).sum())
        total += everything.size
    for bn_name, gamma in scales.items():  # BNs a per-layer dict leaves out keep every channel
        if bn_name not in kept:
            kept[bn_name] = np.arange(gamma.size)
            total += gamma.size
    return SlimmingPlan(requested, threshold, kept, int(total), removed, tuple(emptied), skipped)


def network_slimming(model, ratio, *, name=None):
    """Prunes ``model`` by network slimming; returns ``(pruned model, PruneReport)``.

    Args:
        model: keras.Model. Trained with the BN sparsity term.
        ratio: float in [0, 1) (one global threshold) or dict ``{BN name: float}`` (see
            :func:`slimming_plan`).
        name: str. Name of the pruned model. Defaults to the model's.

    Returns:
        ``(pruned keras.Model, PruneReport)``; the report's details (also attributes) are the
        plan's ``threshold``, ``kept``, ``total``, ``removed``, ``emptied`` and ``skipped``.
    """
    plan = slimming_plan(model, ratio)
    targets, _ = _slimming_targets(model)
    keep = {}
    for bn_name, kept in plan.kept.items():
        kind, selection = targets[bn_name]
        channels = int(model.get_layer(bn_name).gamma.shape[0])
        if kind == "select":
            current = selection.indices if selection.indices is not None else list(range(channels))
            if len(kept) < len(current):
                keep[selection.name] = kept
        elif len(kept) < channels:
            keep[bn_name] = kept
    if not keep:
        pruned = copy_model(model, name)
    else:
        try:
            pruned = prune_channels(model, keep, name=name)
        except SurgeryError as error:
            raise SurgeryError(f"Network slimming of {model.name!r} failed: {error}") from error
    details = {field.name: getattr(plan, field.name) for field in dataclasses.fields(plan) if field.name != "ratio"}
    return pruned, make_report("slimming", model, pruned, plan.ratio, details=details)


def __getattr__(name):
    if name == "SlimmingReport":
        import warnings

        warnings.warn("`SlimmingReport` is deprecated and will be removed in the next release; use `SlimmingPlan` "
                      "(the plan slimming_plan returns; network_slimming returns a PruneReport).",
                      DeprecationWarning, stacklevel=2)
        return SlimmingPlan
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

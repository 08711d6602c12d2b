"""Channel surgery on Keras 3 functional models: remove output channels, keep a dense model.

Removing channels of one layer touches every layer that reads them. The surgery walks the graph
once and sorts tensors into *channel groups*: tensors whose last axis holds the very same
channels — a conv's output, the BN and ReLU after it, and everything summed with it by a residual
``Add``. A group can be pruned when every tensor in it is produced by a layer that creates
channels (Conv, Dense); pruning it removes those output channels from all its producers at once,
the per-channel layers on the way (BN, LayerNorm, depthwise conv, LayerScale, GRN) lose the
same channels and the consumers (the next conv or Dense, also after ``Flatten`` or
``Concatenate``) lose the matching input rows. A group tied to the model input or output, or to a
parameter-free shortcut, cannot be pruned — this is the rule of the pruning papers for residual
networks (prune inside blocks, keep the residual stream).

:class:`~keras_visrec.cifar.ChannelSelection` layers (network slimming's channel selection) are
narrowed instead: pruning one selects fewer channels of a shared stream.

The new model is a clone built from the layers' configs (names kept) with the weights sliced
accordingly, so removing channels whose contribution is already zero leaves outputs unchanged.
Layers the surgery does not understand are allowed anywhere the pruned channels do not reach;
where they do, it raises an error naming the layer.
"""

import dataclasses

import keras
import numpy as np

from keras_visrec.cifar import ChannelSelection
from keras_visrec.layers import GRN, LayerScale, StochasticDepth
from keras_visrec.pruning.base import _PRODUCERS, iter_layers

__all__ = ["ChannelGroup", "SurgeryError", "channel_groups", "find_channel_group", "prune_channels",
           "keep_largest"]


class SurgeryError(ValueError):
    """A pruning request the graph does not allow, or a layer the surgery does not understand."""


# layers whose output channel c depends only on input channel c, with per-channel weights
_PER_CHANNEL = (keras.layers.BatchNormalization, keras.layers.LayerNormalization, keras.layers.DepthwiseConv2D,
                LayerScale, GRN, keras.layers.PReLU)
# weightless layers that keep the channels as they are
_PASSTHROUGH = (
    keras.layers.ReLU, keras.layers.Activation, keras.layers.LeakyReLU, keras.layers.ELU, keras.layers.Softmax,
    keras.layers.Dropout, keras.layers.SpatialDropout1D, keras.layers.SpatialDropout2D,
    keras.layers.GaussianNoise, keras.layers.GaussianDropout, keras.layers.Identity, keras.layers.ActivityRegularization,
    keras.layers.MaxPooling1D, keras.layers.MaxPooling2D, keras.layers.MaxPooling3D,
    keras.layers.AveragePooling1D, keras.layers.AveragePooling2D, keras.layers.AveragePooling3D,
    keras.layers.GlobalAveragePooling1D, keras.layers.GlobalAveragePooling2D, keras.layers.GlobalAveragePooling3D,
    keras.layers.GlobalMaxPooling1D, keras.layers.GlobalMaxPooling2D, keras.layers.GlobalMaxPooling3D,
    keras.layers.ZeroPadding1D, keras.layers.ZeroPadding2D, keras.layers.ZeroPadding3D,
    keras.layers.Cropping1D, keras.layers.Cropping2D, keras.layers.Cropping3D,
    keras.layers.UpSampling1D, keras.layers.UpSampling2D, keras.layers.UpSampling3D, StochasticDepth,
)
_MERGES = (keras.layers.Add, keras.layers.Subtract, keras.layers.Multiply, keras.layers.Average,
           keras.layers.Maximum, keras.layers.Minimum)
_SUPPORTED = sorted({c.__name__ for c in _PRODUCERS + _PER_CHANNEL + _PASSTHROUGH + _MERGES}
                    | {"Concatenate", "Flatten", "ChannelSelection", "InputLayer"})


@dataclasses.dataclass(frozen=True)
class ChannelGroup:
    """Tensors sharing one set of channels.

    Attributes:
        members: names of the layers whose output lies in the group, in graph order.
        producers: names of the layers creating these channels (pruned together).
        channels: int. Number of channels.
        prunable: bool. Whether :func:`prune_channels` can remove channels of this group.
        reason: str. Why not, when ``prunable`` is false.
    """

    members: tuple
    producers: tuple
    channels: int
    prunable: bool
    reason: str = ""


class _Graph:
    """The model's nodes in topological order, with channel groups (union-find over tensors)."""

    def __init__(self, model):
        functional = model._functional if isinstance(model, keras.Sequential) else model
        if functional is None or not hasattr(functional, "_nodes_by_depth"):
            raise TypeError(f"Channel surgery needs a built functional or Sequential model; {model.name!r} "
                            f"({type(model).__name__}) is neither.")
        self.model = model
        self.nodes = [node for depth in sorted(functional._nodes_by_depth, reverse=True)
                      for node in functional._nodes_by_depth[depth]]
        self.output_ids = {id(t) for t in keras.tree.flatten(functional.outputs)}
        self.input_ids = {id(t) for t in keras.tree.flatten(functional.inputs)}
        self.parent = {}
        self.producer_of = {}  # tensor id -> layer creating it
        self.layer_nodes = {}
        for node in self.nodes:
            layer = node.operation
            self.layer_nodes.setdefault(layer.name, []).append(node)
            for tensor in node.outputs:
                self.producer_of[id(tensor)] = layer
                self.parent.setdefault(id(tensor), id(tensor))
            ins = [id(t) for t in node.input_tensors]
            for t in ins:
                self.parent.setdefault(t, t)
            if not ins:
                continue
            if isinstance(layer, _PER_CHANNEL + _PASSTHROUGH):
                self._union(ins[0], id(node.outputs[0]))
            elif isinstance(layer, _MERGES):
                for t in ins:
                    self._union(t, id(node.outputs[0]))

    def find(self, tid):
        root = tid
        while self.parent[root] != root:
            root = self.parent[root]
        while self.parent[tid] != root:
            self.parent[tid], tid = root, self.parent[tid]
        return root

    def _union(self, a, b):
        ra, rb = self.find(a), self.find(b)
        if ra != rb:
            self.parent[rb] = ra

    def groups(self):
        """``{root: (member layers, source layers, channels, ids)}`` in graph order."""
        out = {}
        for node in self.nodes:
            for tensor in node.outputs:
                root = self.find(id(tensor))
                entry = out.setdefault(root, ([], [], int(tensor.shape[-1] or 0), set()))
                entry[3].add(id(tensor))
                if node.operation.name not in entry[0]:
                    entry[0].append(node.operation.name)
                if self._is_source(node.operation):
                    entry[1].append(node.operation)
        return out

    def _is_source(self, layer):
        return not isinstance(layer, _PER_CHANNEL + _PASSTHROUGH + _MERGES)

    def group_status(self, sources, ids):
        if ids & self.output_ids:
            return False, "it reaches the model's output"
        for layer in sources:
            if isinstance(layer, keras.layers.InputLayer):
                return False, "it is the model's input"
            if not isinstance(layer, _PRODUCERS):
                return False, (f"it is also produced by {layer.name!r} ({type(layer).__name__}), whose output "
                               "channels cannot be removed")
            if getattr(layer, "groups", 1) != 1:
                return False, f"it is produced by the grouped convolution {layer.name!r}"
        return True, ""


def channel_groups(model):
    """The model's channel groups (see :class:`ChannelGroup`), in graph order.

    Args:
        model: keras.Model. A functional or Sequential model.
    """
    graph = _Graph(model)
    result = []
    for members, sources, channels, ids in graph.groups().values():
        prunable, reason = graph.group_status(sources, ids)
        result.append(ChannelGroup(tuple(members), tuple(s.name for s in sources), channels, prunable, reason))
    return result


def find_channel_group(model, layer_name):
    """The :class:`ChannelGroup` holding the output of layer ``layer_name``."""
    for group in channel_groups(model):
        if layer_name in group.members:
            return group
    raise ValueError(f"`layer_name` {layer_name!r} is not a layer of model {model.name!r}.")


def keep_largest(scores, count):
    """Sorted indices of the ``count`` largest ``scores`` (ties: lower index first)."""
    scores = np.asarray(scores)
    count = int(count)
    if not 1 <= count <= scores.size:
        raise ValueError(f"`count` must be in [1, {scores.size}]; received count={count}.")
    order = np.argsort(-scores, kind="stable")
    return np.sort(order[:count])


def prune_channels(model, keep=None, *, remove=None, name=None):
    """Returns a smaller copy of ``model`` without the given output channels.

    Args:
        model: keras.Model. A functional or Sequential model.
        keep: dict. ``{layer name: channel indices to keep}``. The layer's channel group loses
            the other channels everywhere (all its producers, per-channel layers and consumers).
            For a :class:`~keras_visrec.cifar.ChannelSelection` the indices are positions of its
            current output. Requests on the same group must agree.
        remove: dict. ``{layer name: channel indices to remove}``, the complement form of
            ``keep``. Give one of ``keep`` and ``remove``.
        name: str. Name of the new model. Defaults to the model's.

    Returns:
        A new `keras.Model` with the same layer names and sliced weights.

    Raises:
        SurgeryError: a request the graph does not allow (a group tied to the input/output or
            to a parameter-free shortcut, inconsistent requests) or a layer reached by pruned
            channels that the surgery does not understand — the message names the layer.
    """
    if (keep is None) == (remove is None):
        raise ValueError("Give exactly one of `keep` and `remove` ({layer name: channel indices}).")
    graph = _Graph(model)
    requests = keep if keep is not None else remove
    if not isinstance(requests, dict):
        raise TypeError(f"`keep`/`remove` must be a dict {{layer name: indices}}; received {type(requests).__name__}.")
    groups = graph.groups()
    group_keep, select_keep = {}, {}
    for layer_name, indices in requests.items():
        nodes = graph.layer_nodes.get(layer_name)
        if not nodes:
            raise ValueError(f"Layer {layer_name!r} is not in model {model.name!r}.")
        tensor = nodes[0].outputs[0]
        channels = int(tensor.shape[-1])
        kept = _as_keep(indices, channels, layer_name, complement=remove is not None)
        layer = nodes[0].operation
        if isinstance(layer, ChannelSelection):
            select_keep[layer_name] = kept
            continue
        root = graph.find(id(tensor))
        members, sources, _, ids = groups[root]
        prunable, reason = graph.group_status(sources, ids)
        if not prunable:
            raise SurgeryError(f"Cannot prune channels of layer {layer_name!r}: its channel group "
                               f"({', '.join(members[:6])}{', …' if len(members) > 6 else ''}) is fixed because {reason}.")
        if root in group_keep and not np.array_equal(group_keep[root][1], kept):
            raise SurgeryError(f"Conflicting requests for one channel group: {group_keep[root][0]!r} and "
                               f"{layer_name!r} keep different channels.")
        group_keep[root] = (layer_name, kept)
    plan = _propagate(graph, {root: kept for root, (_, kept) in group_keep.items()}, select_keep)
    return _rebuild(model, plan, name)


def _as_keep(indices, channels, layer_name, complement):
    values = np.asarray(list(indices), dtype=np.int64).ravel()
    if values.size and (values.min() < 0 or values.max() >= channels):
        raise ValueError(f"Channel indices for {layer_name!r} must be in [0, {channels}); received "
                         f"{values.tolist()}.")
    if len(np.unique(values)) != values.size:
        raise ValueError(f"Channel indices for {layer_name!r} repeat: {values.tolist()}.")
    kept = np.setdiff1d(np.arange(channels), values) if complement else np.sort(values)
    if kept.size == 0:
        raise ValueError(f"Pruning would remove every channel of {layer_name!r}; keep at least one.")
    return kept


@dataclasses.dataclass
class _Plan:
    inputs: dict  # layer name -> kept input channels (None: all)
    outputs: dict  # layer name -> kept output channels
    configs: dict  # layer name -> config updates


def _propagate(graph, group_keep, select_keep):
    """Forward pass over the graph computing the kept channels of every tensor and layer."""
    kept = {}
    plan = _Plan({}, {}, {})
    for node in graph.nodes:
        layer = node.operation
        if node.is_input or isinstance(layer, keras.layers.InputLayer):
            for tensor in node.outputs:
                kept[id(tensor)] = None
            continue
        ins = [kept.get(id(t)) for t in node.input_tensors]
        in_tensors = node.input_tensors
        out = node.outputs[0]
        first = ins[0] if ins else None
        if isinstance(layer, _PRODUCERS):
            result = group_keep.get(graph.find(id(out)))
            if getattr(layer, "groups", 1) != 1 and (first is not None or result is not None):
                raise SurgeryError(f"Layer {layer.name!r} is a grouped convolution (groups={layer.groups}); "
                                   "channel surgery does not prune through it.")
            if isinstance(layer, keras.layers.Dense) and first is not None and len(in_tensors[0].shape) < 2:
                raise SurgeryError(f"Layer {layer.name!r} has an input without a channel axis.")
            if result is not None:
                plan.configs[layer.name] = {"units" if isinstance(layer, keras.layers.Dense) else "filters": len(result)}
        elif isinstance(layer, _PER_CHANNEL + _PASSTHROUGH):
            result = first
            if first is not None:
                _check_per_channel(layer, len(in_tensors[0].shape))
        elif isinstance(layer, _MERGES):
            result = first
            for other in ins[1:]:
                if (other is None) != (first is None) or (other is not None and not np.array_equal(other, first)):
                    raise SurgeryError(f"Layer {layer.name!r} ({type(layer).__name__}) combines tensors pruned "
                                       "differently; prune the whole channel group (see channel_groups).")
        elif isinstance(layer, keras.layers.Concatenate):
            result = _concat_keep(layer, in_tensors, ins)
        elif isinstance(layer, keras.layers.Flatten):
            result = _flatten_keep(layer, in_tensors[0], first)
        elif isinstance(layer, ChannelSelection):
            result = _selection(layer, in_tensors[0], first, select_keep.get(layer.name), plan)
        else:
            if any(k is not None for k in ins):
                source = in_tensors[[k is not None for k in ins].index(True)]._keras_history.operation.name
                raise SurgeryError(
                    f"Layer {layer.name!r} ({type(layer).__name__}) receives pruned channels (from {source!r}), "
                    f"but channel surgery does not understand this layer. Supported layers: {', '.join(_SUPPORTED)}."
                )
            result = None
        _record(plan, layer, first, result)
        for tensor in node.outputs:
            kept[id(tensor)] = result
    for tid in graph.output_ids:
        if kept.get(tid) is not None:
            raise SurgeryError("Pruning would change the shape of the model's output; the requested channels "
                               "reach it.")
    return plan


def _record(plan, layer, first, result):
    for table, value in ((plan.inputs, first), (plan.outputs, result)):
        previous = table.get(layer.name, "unset")
        if previous != "unset" and not _same(previous, value):
            raise SurgeryError(f"Shared layer {layer.name!r} is called on tensors pruned differently.")
        table[layer.name] = value


def _same(a, b):
    return (a is None and b is None) or (a is not None and b is not None and np.array_equal(a, b))


def _check_per_channel(layer, rank):
    if isinstance(layer, (keras.layers.BatchNormalization, keras.layers.LayerNormalization)):
        axes = layer.axis if isinstance(layer.axis, (list, tuple)) else [layer.axis]
        if [a % rank for a in axes] != [rank - 1]:
            raise SurgeryError(f"Layer {layer.name!r} normalises over axes {layer.axis}, not the channel axis; "
                               "channel surgery cannot prune through it.")
    if isinstance(layer, keras.layers.DepthwiseConv2D) and layer.depth_multiplier != 1:
        raise SurgeryError(f"Depthwise layer {layer.name!r} has depth_multiplier={layer.depth_multiplier}; "
                           "only 1 is supported when its channels are pruned.")
    if isinstance(layer, keras.layers.Softmax) and [a % rank for a in np.atleast_1d(layer.axis)] == [rank - 1]:
        raise SurgeryError(f"Softmax {layer.name!r} mixes the channels it would lose.")
    if isinstance(layer, keras.layers.PReLU) and layer.shared_axes and (rank - 1) in [a % rank for a in layer.shared_axes]:
        raise SurgeryError(f"PReLU {layer.name!r} shares its slope over the channel axis.")


def _concat_keep(layer, in_tensors, ins):
    if all(k is None for k in ins):
        return None
    rank = len(in_tensors[0].shape)
    if layer.axis % rank != rank - 1:
        raise SurgeryError(f"Concatenate {layer.name!r} joins along axis {layer.axis}, not channels, and "
                           "receives pruned channels.")
    parts, offset = [], 0
    for tensor, k in zip(in_tensors, ins):
        channels = int(tensor.shape[-1])
        parts.append(offset + (np.arange(channels) if k is None else k))
        offset += channels
    return np.concatenate(parts)


def _flatten_keep(layer, tensor, first):
    if first is None:
        return None
    shape = tensor.shape[1:]
    if any(d is None for d in shape):
        raise SurgeryError(f"Flatten {layer.name!r} has a dynamic input shape {tuple(shape)}; pruning through "
                           "it needs static spatial sizes.")
    positions, channels = int(np.prod(shape[:-1], dtype=np.int64)), int(shape[-1])
    return (np.arange(positions)[:, None] * channels + first[None, :]).ravel()


def _selection(layer, tensor, first, request, plan):
    channels = int(tensor.shape[-1])
    current = np.arange(channels) if layer.indices is None else np.asarray(layer.indices)
    positions = np.arange(current.size) if request is None else request
    new_indices, surviving = [], []
    for pos in positions:
        channel = current[pos]
        if first is None:
            new_indices.append(int(channel))
            surviving.append(int(pos))
        elif channel in first:
            new_indices.append(int(np.searchsorted(first, channel)))
            surviving.append(int(pos))
    if not new_indices:
        raise SurgeryError(f"ChannelSelection {layer.name!r} would select no channel after pruning.")
    new_channels = channels if first is None else len(first)
    unchanged = first is None and request is None
    if not unchanged:
        plan.configs[layer.name] = {"indices": None if new_indices == list(range(new_channels)) else new_indices}
    return None if len(surviving) == current.size else np.asarray(surviving)


def _rebuild(model, plan, name):
    def clone(layer):
        config = layer.get_config()
        config.update(plan.configs.get(layer.name, {}))
        return layer.__class__.from_config(config)

    new = keras.models.clone_model(model, clone_function=clone)
    if name:
        new.name = name
    old_layers = {layer.name: layer for layer in iter_layers(model)}
    for layer in iter_layers(new):
        if not layer.weights or isinstance(layer, keras.Model):
            continue
        old = old_layers[layer.name]
        expected = [tuple(w.shape) for w in layer.weights]
        values = _slice_weights(old, plan.inputs.get(layer.name), plan.outputs.get(layer.name), expected)
        if [tuple(v.shape) for v in values] != expected:
            raise SurgeryError(f"Layer {layer.name!r}: sliced weights {[v.shape for v in values]} do not fit the "
                               f"rebuilt layer {expected}.")
        layer.set_weights(values)
    return new


def _take(array, axis, index):
    return array if index is None else np.take(array, index, axis=axis)


def _slice_weights(layer, kin, kout, expected):
    values = layer.get_weights()
    if kin is None and kout is None:
        return values
    if isinstance(layer, keras.layers.SeparableConv2D):
        depthwise, pointwise, *bias = values
        mult = depthwise.shape[-1]
        rows = None if kin is None else (kin[:, None] * mult + np.arange(mult)[None, :]).ravel()
        return [_take(depthwise, -2, kin), _take(_take(pointwise, -2, rows), -1, kout)] + [_take(b, 0, kout) for b in bias]
    if isinstance(layer, keras.layers.Conv2DTranspose):
        kernel, *bias = values  # (*k, out, in)
        return [_take(_take(kernel, -2, kout), -1, kin)] + [_take(b, 0, kout) for b in bias]
    if isinstance(layer, _PRODUCERS):
        kernel, *bias = values  # (*k, in, out) / (in, out)
        return [_take(_take(kernel, -2, kin), -1, kout)] + [_take(b, 0, kout) for b in bias]
    if isinstance(layer, keras.layers.DepthwiseConv2D):
        kernel, *bias = values  # (kh, kw, in, 1)
        return [_take(kernel, -2, kin)] + [_take(b, 0, kin) for b in bias]
    if isinstance(layer, _PER_CHANNEL):
        return [_take(v, -1, kin) if v.ndim and tuple(v.shape) != shape else v for v, shape in zip(values, expected)]
    raise SurgeryError(f"Layer {layer.name!r} ({type(layer).__name__}) holds weights on pruned channels, but "
                       "channel surgery does not know how to slice them.")

"""L1-norm filter pruning (Li et al., "Pruning Filters for Efficient ConvNets", ICLR 2017).

Each pruned conv keeps the filters with the largest sum of absolute kernel weights; the
surgery removes the rest with their BN channels and the next layer's input rows. The
configurations are those re-evaluated by "Rethinking the Value of Network Pruning":

* VGG-16-A: conv widths ``[32, 64, M, 128, 128, M, 256, 256, 256, M, 256, 256, 256, M, 256, 256, 256]``;
* ResNet-56/110-A/B: only the *first* conv of a residual block is pruned (the residual stream and
  the block's second conv stay), a fixed ratio per stage, some sensitive layers skipped. Layer
  ids count convs from the stem (= 1), so a block's first conv has an even id.
"""

import dataclasses
import numbers
import warnings

import keras
import numpy as np

from keras_visrec.pruning.base import check_ratio, copy_model, make_report, per_layer_ratio, renamed_arguments
from keras_visrec.pruning.surgery import channel_groups, keep_largest, prune_channels

__all__ = ["L1_CONFIGS", "VGG16_A", "l1_candidates", "l1_filter_norms", "l1_prune", "l1_prune_config",
           "l1_prune_resnet", "l1_prune_vgg", "resnet_l1_widths"]

VGG16_A = (32, 64, "M", 128, 128, "M", 256, 256, 256, "M", 256, 256, 256, "M", 256, 256, 256)

# name -> the configuration of the paper: depth, skipped conv ids, prune ratio per stage
L1_CONFIGS = {
    "vgg16_a": dict(arch="vgg16", cfg=VGG16_A),
    "resnet56_a": dict(arch="resnet56", depth=56, skip=(16, 20, 38, 54), ratio=(0.1, 0.1, 0.1)),
    "resnet56_b": dict(arch="resnet56", depth=56, skip=(16, 18, 20, 34, 38, 54), ratio=(0.6, 0.3, 0.1)),
    "resnet110_a": dict(arch="resnet110", depth=110, skip=(36,), ratio=(0.5, 0.0, 0.0)),
    "resnet110_b": dict(arch="resnet110", depth=110, skip=(36, 38, 74), ratio=(0.5, 0.4, 0.3)),
}

_CONVS = (keras.layers.Conv1D, keras.layers.Conv2D, keras.layers.Conv3D)


def l1_filter_norms(layer):
    """Sum of absolute kernel weights per output channel of a conv or Dense layer."""
    kernel = keras.ops.convert_to_numpy(layer.kernel)
    return np.abs(kernel).reshape(-1, kernel.shape[-1]).sum(axis=0)


def l1_candidates(model):
    """Convolutions whose filters L1-norm pruning can remove on their own.

    A conv qualifies when its output channel group has no other producer and is tied neither to
    the model's input or output nor to a parameter-free shortcut (VGG's convs, the first conv of
    every residual block); the shared residual stream does not.
    """
    names = []
    for group in channel_groups(model):
        if group.prunable and len(group.producers) == 1:
            layer = model.get_layer(group.producers[0])
            if isinstance(layer, _CONVS) and not isinstance(layer, keras.layers.DepthwiseConv2D):
                names.append(layer.name)
    return names


def l1_prune(model, ratio=None, *, widths=None, name=None, **deprecated):
    """Prunes convolutions to their filters of largest L1 norm; returns ``(model, PruneReport)``.

    Args:
        model: keras.Model. A functional model (unchanged by this call).
        ratio: float in [0, 1), the share of filters removed from every conv of
            :func:`l1_candidates`, or a dict ``{layer name: float}`` for the listed layers
            (a Dense layer may be listed too). Filters kept: ``int(filters * (1 - ratio))``, at
            least 1, as the official code rounds.
        widths: dict ``{layer name: int}``. Filters to keep per layer (e.g. a paper
            configuration's widths); with a float `ratio`, the listed layers take their width
            and the other candidates the ratio.
        name: str. Name of the pruned model. Defaults to the model's.

    Returns:
        ``(pruned keras.Model, PruneReport)`` (kept filters inherit their weights).

    ``targets=`` (a dict mixing ratios and keep counts) is accepted for one release with a
    DeprecationWarning: its floats mean `ratio`, its ints >= 1 `widths`. The same holds for an
    int >= 1 inside a `ratio` dict, which can only be such a keep count.
    """
    ratio = renamed_arguments("l1_prune", deprecated, {"targets": "ratio"}, current={"ratio": ratio})["ratio"]
    if isinstance(ratio, dict):
        ratio, counts = _split_keep_counts(ratio, warn="targets" not in deprecated)
        if counts:
            widths = {**(widths or {}), **counts}
            ratio = ratio or None
    if ratio is None and widths is None:
        raise ValueError("Give `ratio` (share of filters removed) or `widths` (filters kept per layer); received "
                         "neither.")
    counts = _checked_widths(model, widths) if widths is not None else {}
    shares = {}
    if ratio is not None:
        candidates = l1_candidates(model) if not isinstance(ratio, dict) else [
            layer.name for layer in model.layers
            if hasattr(layer, "kernel") and not isinstance(layer, keras.layers.DepthwiseConv2D)]
        shares = per_layer_ratio(ratio, candidates, what="convolution")
        both = sorted(set(shares) & set(counts)) if isinstance(ratio, dict) else []
        if both:
            raise ValueError(f"Layers {both} are given both a `ratio` and a `widths` entry; give one.")
        shares = {layer: share for layer, share in shares.items() if layer not in counts}
    keep = {}
    for layer_name, share in shares.items():
        norms = l1_filter_norms(model.get_layer(layer_name))
        count = max(1, int(norms.size * (1 - share)))  # the official code's rounding
        if count < norms.size:
            keep[layer_name] = keep_largest(norms, count)
    for layer_name, count in counts.items():
        norms = l1_filter_norms(model.get_layer(layer_name))
        if count < norms.size:
            keep[layer_name] = keep_largest(norms, count)
    pruned = prune_channels(model, keep, name=name) if keep else copy_model(model, name)
    if not counts:
        asked = ratio
    elif ratio is None:
        asked = {"widths": counts}
    else:
        asked = {"ratio": ratio, "widths": counts}
    return pruned, make_report("l1", model, pruned, asked)


def _checked_widths(model, widths):
    if not isinstance(widths, dict):
        raise TypeError(f"`widths` must be a dict {{layer name: filters kept}}; received {widths!r}.")
    counts = {}
    for layer_name, count in widths.items():
        layer = model.get_layer(layer_name)
        if not hasattr(layer, "kernel"):
            raise ValueError(f"Layer {layer_name!r} has no kernel to rank filters by.")
        filters = int(layer.kernel.shape[-1])
        if isinstance(count, bool) or not isinstance(count, numbers.Integral) or not 1 <= count <= filters:
            raise ValueError(f"`widths[{layer_name!r}]` must be an int in [1, {filters}] (its filters); received "
                             f"{count!r}.")
        counts[layer_name] = int(count)
    return counts


def _split_keep_counts(ratio, *, warn):
    """Splits the keep counts (ints >= 1) of the old ``targets`` form out of a ratio dict."""
    counts = {k: v for k, v in ratio.items()
              if isinstance(v, numbers.Integral) and not isinstance(v, bool) and v >= 1}
    if counts and warn:
        warnings.warn("An int >= 1 in `l1_prune(ratio={...})` is read as a count of filters to keep, as the "
                      "deprecated `targets=` meant; pass it as `widths={layer: count}` (this reading goes in the "
                      "next release).", DeprecationWarning, stacklevel=3)
    return {k: v for k, v in ratio.items() if k not in counts}, counts


def _vgg_convs(model):
    prefix = f"{model.name}_conv_"
    convs = [layer for layer in model.layers if layer.name.startswith(prefix)]
    return {int(layer.name[len(prefix):]): layer for layer in convs}


def l1_prune_vgg(model, cfg=VGG16_A, *, name=None):
    """Prunes a :func:`~keras_visrec.cifar.CIFARVGG` to the widths of ``cfg`` by filter L1 norm.

    Args:
        model: keras.Model. A CIFAR VGG (layers ``{name}_conv_{i}``).
        cfg: sequence of int / `"M"`, the same length and pool positions as the model's own.
            Defaults to VGG-16-A.
        name: str. Name of the pruned model.

    Returns:
        ``(pruned keras.Model, PruneReport)``.
    """
    convs = _vgg_convs(model)
    positions = sorted(convs)
    cfg = list(cfg)
    model_len = (positions[-1] + 1) if positions else 0
    conv_positions = [i for i, c in enumerate(cfg) if c != "M"]
    if len(cfg) != model_len or conv_positions != positions:
        raise ValueError(f"`cfg` has {len(cfg)} entries with convs at {conv_positions}, but model {model.name!r} "
                         f"has convs at {positions} (cfg length {model_len}).")
    widths = {}
    for i in positions:
        width, channels = int(cfg[i]), convs[i].filters
        if not 1 <= width <= channels:
            raise ValueError(f"`cfg[{i}]`={width} must be in [1, {channels}] for {convs[i].name!r}.")
        widths[convs[i].name] = width
    return l1_prune(model, widths=widths, name=name)


def _resnet_n(model, depth):
    blocks = [layer.name for layer in model.layers
              if layer.name.startswith(f"{model.name}_stage_") and layer.name.endswith("_conv_1")]
    n = len(blocks) // 3
    if depth is not None and 6 * n + 2 != depth:
        raise ValueError(f"Configuration is for ResNet-{depth}, but model {model.name!r} has {len(blocks)} "
                         f"blocks (ResNet-{6 * n + 2}).")
    return n


def resnet_l1_widths(depth, skip, ratio):
    """First-conv widths of every block after pruning (the official code's arithmetic).

    Args:
        depth: int. 6n + 2.
        skip: sequence of int. Conv ids (stem = 1) left unpruned.
        ratio: float, or 3 floats (one per stage), in [0, 1).
    """
    n = (depth - 2) // 6
    ratio = _stage_ratios(ratio)
    _validate_resnet(depth, skip)
    widths = []
    for j in range(3 * n):
        planes = (16, 32, 64)[j // n]
        layer_id = 2 + 2 * j
        widths.append(planes if layer_id in skip else int(planes * (1 - ratio[j // n])))
    return widths


def _stage_ratios(ratio):
    if not isinstance(ratio, (list, tuple)):
        return (check_ratio(ratio),) * 3
    if len(ratio) != 3:
        raise ValueError(f"`ratio` needs one ratio per stage (3) or one float; received {len(ratio)}: {ratio!r}.")
    return tuple(check_ratio(r, f"ratio[{i}]") for i, r in enumerate(ratio))


def _validate_resnet(depth, skip):
    if not isinstance(depth, int) or depth < 8 or (depth - 2) % 6:
        raise ValueError(f"`depth` must be 6n + 2; received depth={depth!r}.")
    n = (depth - 2) // 6
    valid = range(2, 2 + 6 * n, 2)
    bad = [s for s in skip if s not in valid]
    if bad:
        raise ValueError(f"`skip` lists conv ids {bad} that are not first convs of blocks of ResNet-{depth} "
                         f"(even ids 2..{2 * 3 * n}).")


def l1_prune_resnet(model, skip, ratio=None, *, depth=None, name=None, **deprecated):
    """Prunes the first conv of every block of a :func:`~keras_visrec.cifar.CIFARResNet`.

    Args:
        model: keras.Model. A CIFAR ResNet (layers ``{name}_stage_{s}_block_{b}_conv_1``).
        skip: sequence of int. Conv ids (stem = 1) left unpruned.
        ratio: float, or 3 floats (one per stage), in [0, 1). Share of filters removed.
            (``ratios=`` is its deprecated spelling.)
        depth: int or `None`. Checked against the model when given.
        name: str. Name of the pruned model.

    Returns:
        ``(pruned keras.Model, PruneReport)``.
    """
    ratio = renamed_arguments("l1_prune_resnet", deprecated, {"ratios": "ratio"}, current={"ratio": ratio})["ratio"]
    if ratio is None:
        raise TypeError("l1_prune_resnet() needs `ratio` (one float, or one per stage).")
    n = _resnet_n(model, depth)
    widths = resnet_l1_widths(6 * n + 2, tuple(skip), ratio)
    by_layer = {f"{model.name}_stage_{j // n}_block_{j % n}_conv_1": width for j, width in enumerate(widths)}
    pruned, report = l1_prune(model, widths=by_layer, name=name)
    return pruned, dataclasses.replace(report, ratio=ratio, details={"skip": tuple(skip)})


def l1_prune_config(model, config, *, name=None):
    """Applies a named configuration of ``L1_CONFIGS`` (``"vgg16_a"``, ``"resnet56_b"``, …).

    Returns:
        ``(pruned keras.Model, PruneReport)`` (``report.ratio`` is the configuration's name).
    """
    if config not in L1_CONFIGS:
        raise ValueError(f"`config` must be one of {sorted(L1_CONFIGS)}; received config={config!r}.")
    spec = L1_CONFIGS[config]
    if "cfg" in spec:
        pruned, report = l1_prune_vgg(model, spec["cfg"], name=name)
    else:
        pruned, report = l1_prune_resnet(model, spec["skip"], spec["ratio"], depth=spec["depth"], name=name)
    return pruned, dataclasses.replace(report, ratio=config)

"""L1-norm filter pruning (Li et al., "Pruning Filters for Efficient ConvNets", ICLR 2017).

Each pruned conv keeps the filters with the largest sum of absolute kernel weights; the
surgery removes the rest with their BN channels and the next layer's input rows. The
configurations are those re-evaluated by "Rethinking the Value of Network Pruning":

* VGG-16-A: conv widths ``[32, 64, M, 128, 128, M, 256, 256, 256, M, 256, 256, 256, M, 256, 256, 256]``;
* ResNet-56/110-A/B: only the *first* conv of a residual block is pruned (the residual stream and
  the block's second conv stay), a fixed ratio per stage, some sensitive layers skipped. Layer
  ids count convs from the stem (= 1), so a block's first conv has an even id.
"""

import keras
import numpy as np

from keras_visrec.pruning.surgery import keep_largest, prune_channels

__all__ = ["L1_CONFIGS", "VGG16_A", "l1_filter_norms", "l1_prune", "l1_prune_config", "l1_prune_resnet",
           "l1_prune_vgg", "resnet_l1_widths"]

VGG16_A = (32, 64, "M", 128, 128, "M", 256, 256, 256, "M", 256, 256, 256, "M", 256, 256, 256)

# name -> the configuration of the paper: depth, skipped conv ids, prune ratio per stage
L1_CONFIGS = {
    "vgg16_a": dict(arch="vgg16", cfg=VGG16_A),
    "resnet56_a": dict(arch="resnet56", depth=56, skip=(16, 20, 38, 54), ratios=(0.1, 0.1, 0.1)),
    "resnet56_b": dict(arch="resnet56", depth=56, skip=(16, 18, 20, 34, 38, 54), ratios=(0.6, 0.3, 0.1)),
    "resnet110_a": dict(arch="resnet110", depth=110, skip=(36,), ratios=(0.5, 0.0, 0.0)),
    "resnet110_b": dict(arch="resnet110", depth=110, skip=(36, 38, 74), ratios=(0.5, 0.4, 0.3)),
}


def l1_filter_norms(layer):
    """Sum of absolute kernel weights per output channel of a conv or Dense layer."""
    kernel = keras.ops.convert_to_numpy(layer.kernel)
    return np.abs(kernel).reshape(-1, kernel.shape[-1]).sum(axis=0)


def _check_ratio(ratio, what):
    if isinstance(ratio, bool) or not isinstance(ratio, (int, float)) or not 0.0 <= ratio < 1.0:
        raise ValueError(f"Prune ratio for {what} must be in [0, 1); received {ratio!r}.")


def l1_prune(model, targets, *, name=None):
    """Prunes each listed conv to its largest-L1 filters.

    Args:
        model: keras.Model. A functional model.
        targets: dict. ``{conv layer name: ratio in [0, 1) or int channels to keep}``.
        name: str. Name of the pruned model. Defaults to the model's.

    Returns:
        The pruned `keras.Model` (weights of the kept filters inherited).
    """
    keep = {}
    for layer_name, target in targets.items():
        layer = model.get_layer(layer_name)
        if not hasattr(layer, "kernel"):
            raise ValueError(f"Layer {layer_name!r} has no kernel to rank filters by.")
        norms = l1_filter_norms(layer)
        channels = norms.size
        if isinstance(target, (int, np.integer)) and not isinstance(target, bool) and target >= 1:
            if target > channels:
                raise ValueError(f"Cannot keep {target} filters of {layer_name!r}, which has {channels}.")
            count = int(target)
        else:
            _check_ratio(target, repr(layer_name))
            # the official code's rounding: int(channels * (1 - ratio))
            count = max(1, int(channels * (1 - target)))
        if count < channels:
            keep[layer_name] = keep_largest(norms, count)
    if not keep:
        return _copy(model, name)
    return prune_channels(model, keep, name=name)


def _copy(model, name):
    copy = keras.models.clone_model(model)
    copy.set_weights(model.get_weights())
    if name:
        copy.name = name
    return copy


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
    """
    convs = _vgg_convs(model)
    positions = sorted(convs)
    cfg = list(cfg)
    model_len = (positions[-1] + 1) if positions else 0
    conv_positions = [i for i, c in enumerate(cfg) if c != "M"]
    if len(cfg) != model_len or conv_positions != positions:
        raise ValueError(f"`cfg` has {len(cfg)} entries with convs at {conv_positions}, but model {model.name!r} "
                         f"has convs at {positions} (cfg length {model_len}).")
    targets = {}
    for i in positions:
        width, channels = int(cfg[i]), convs[i].filters
        if not 1 <= width <= channels:
            raise ValueError(f"`cfg[{i}]`={width} must be in [1, {channels}] for {convs[i].name!r}.")
        targets[convs[i].name] = width
    return l1_prune(model, targets, name=name)


def _resnet_n(model, depth):
    blocks = [layer.name for layer in model.layers
              if layer.name.startswith(f"{model.name}_stage_") and layer.name.endswith("_conv_1")]
    n = len(blocks) // 3
    if depth is not None and 6 * n + 2 != depth:
        raise ValueError(f"Configuration is for ResNet-{depth}, but model {model.name!r} has {len(blocks)} "
                         f"blocks (ResNet-{6 * n + 2}).")
    return n


def resnet_l1_widths(depth, skip, ratios):
    """First-conv widths of every block after pruning (the official code's arithmetic)."""
    n = (depth - 2) // 6
    _validate_resnet(depth, skip, ratios)
    widths = []
    for j in range(3 * n):
        planes = (16, 32, 64)[j // n]
        layer_id = 2 + 2 * j
        widths.append(planes if layer_id in skip else int(planes * (1 - ratios[j // n])))
    return widths


def _validate_resnet(depth, skip, ratios):
    if not isinstance(depth, int) or depth < 8 or (depth - 2) % 6:
        raise ValueError(f"`depth` must be 6n + 2; received depth={depth!r}.")
    if len(ratios) != 3:
        raise ValueError(f"`ratios` needs one ratio per stage (3); received {len(ratios)}: {ratios!r}.")
    for r in ratios:
        _check_ratio(r, "a ResNet stage")
    n = (depth - 2) // 6
    valid = range(2, 2 + 6 * n, 2)
    bad = [s for s in skip if s not in valid]
    if bad:
        raise ValueError(f"`skip` lists conv ids {bad} that are not first convs of blocks of ResNet-{depth} "
                         f"(even ids 2..{2 * 3 * n}).")


def l1_prune_resnet(model, skip, ratios, *, depth=None, name=None):
    """Prunes the first conv of every block of a :func:`~keras_visrec.cifar.CIFARResNet`.

    Args:
        model: keras.Model. A CIFAR ResNet (layers ``{name}_stage_{s}_block_{b}_conv_1``).
        skip: sequence of int. Conv ids (stem = 1) left unpruned.
        ratios: 3 floats in [0, 1). Fraction of filters removed per stage.
        depth: int or `None`. Checked against the model when given.
        name: str. Name of the pruned model.
    """
    n = _resnet_n(model, depth)
    widths = resnet_l1_widths(6 * n + 2, tuple(skip), tuple(ratios))
    targets = {}
    for j, width in enumerate(widths):
        layer = model.get_layer(f"{model.name}_stage_{j // n}_block_{j % n}_conv_1")
        targets[layer.name] = width
    return l1_prune(model, targets, name=name)


def l1_prune_config(model, config, *, name=None):
    """Applies a named configuration of ``L1_CONFIGS`` (``"vgg16_a"``, ``"resnet56_b"``, …)."""
    if config not in L1_CONFIGS:
        raise ValueError(f"`config` must be one of {sorted(L1_CONFIGS)}; received config={config!r}.")
    spec = L1_CONFIGS[config]
    if "cfg" in spec:
        return l1_prune_vgg(model, spec["cfg"], name=name)
    return l1_prune_resnet(model, spec["skip"], spec["ratios"], depth=spec["depth"], name=name)

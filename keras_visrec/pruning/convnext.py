"""Structured pruning of the zoo's own models through the same channel surgery.

* **ConvNeXt MLP width** (:func:`prune_convnext_mlp`): each block's inverted-bottleneck MLP
  (``pointwise_conv_1``: C → 4C with GELU, optional GRN, ``pointwise_conv_2``: 4C → C) keeps the
  hidden units with the largest L1 norm of their ``pointwise_conv_1`` weights; the residual
  stream is untouched. Without GRN (ConvNeXt V1) removing units whose weights are zero leaves the
  outputs unchanged; GRN (V2) normalises by the mean over hidden units, so there pruning is a
  true approximation.
* **HRNet branch width** (:func:`prune_hrnet_branches`): a branch's channels run through every
  block, every fuse and the head, so they form one channel group; the surgery narrows it
  everywhere (ranked by the summed |γ| of the group's BatchNorms).

A pruned model exports like any other, with :func:`keras_visrec.export_tflite`.
"""

import keras
import numpy as np

from keras_visrec.pruning.base import check_ratio, copy_model, make_report, per_layer_ratio, renamed_arguments
from keras_visrec.pruning.l1_norm import l1_filter_norms
from keras_visrec.pruning.surgery import find_channel_group, keep_largest, prune_channels

__all__ = ["convnext_mlp_layers", "export_pruned_tflite", "hrnet_branch_layers", "prune_convnext_mlp",
           "prune_hrnet_branches"]

_MLP_SUFFIX = "_pointwise_conv_1"


def convnext_mlp_layers(model):
    """Names of every block's first pointwise layer (``…_stage_{s}_block_{b}_pointwise_conv_1``)."""
    names = [layer.name for layer in model.layers if layer.name.endswith(_MLP_SUFFIX) and "_stage_" in layer.name]
    if not names:
        raise ValueError(f"Model {model.name!r} has no ConvNeXt block MLP (layers named '…{_MLP_SUFFIX}').")
    return names


def prune_convnext_mlp(model, ratio, *, name=None):
    """Removes a share of every ConvNeXt block's MLP hidden units (largest L1 norm kept).

    Args:
        model: keras.Model. A keras_visrec ConvNeXt (V1, V2 or isotropic; plain or exportable).
        ratio: float in [0, 1), or a dict ``{block prefix or pointwise_conv_1 name: ratio}``
            (blocks not listed are kept whole).
        name: str. Name of the pruned model. Defaults to the model's.

    Returns:
        ``(pruned keras.Model, PruneReport)``.
    """
    layers = convnext_mlp_layers(model)
    ratios = per_layer_ratio(ratio, layers, what="ConvNeXt block MLP",
                             resolve=lambda key: key if key.endswith(_MLP_SUFFIX) else key + _MLP_SUFFIX)
    keep = {}
    for layer_name, share in ratios.items():
        norms = l1_filter_norms(model.get_layer(layer_name))
        count = max(1, int(norms.size * (1 - share)))
        if count < norms.size:
            keep[layer_name] = keep_largest(norms, count)
    pruned = prune_channels(model, keep, name=name) if keep else copy_model(model, name)
    return pruned, make_report("convnext_mlp", model, pruned, ratio)


def hrnet_branch_layers(model):
    """``[layer in branch b's channel group]`` for each branch of an HRNetV2 (first block adds)."""
    names = []
    for branch in range(4):
        stage = max(2, branch + 1)
        layer_name = f"{model.name}_stage{stage}_0_branches_{branch}_0_add"
        try:
            model.get_layer(layer_name)
        except ValueError:
            break
        names.append(layer_name)
    if not names:
        raise ValueError(f"Model {model.name!r} is not a keras_visrec HRNetV2 (no '{model.name}_stage2_0_branches_0_0_add').")
    return names


def prune_hrnet_branches(model, ratio=None, *, name=None, **deprecated):
    """Narrows HRNet's branches (each branch's width everywhere it is used).

    Args:
        model: keras.Model. A :func:`keras_visrec.hrnet.HRNetV2`.
        ratio: float in [0, 1) for every branch, a sequence of one float per branch (4 for
            HRNetV2), or a dict ``{branch index or layer of hrnet_branch_layers: float}``.
            ``ratios=`` is its deprecated spelling.
        name: str. Name of the pruned model. Defaults to the model's.

    Returns:
        ``(pruned keras.Model, PruneReport)``.
    """
    ratio = renamed_arguments("prune_hrnet_branches", deprecated, {"ratios": "ratio"},
                              current={"ratio": ratio})["ratio"]
    branches = hrnet_branch_layers(model)
    if isinstance(ratio, (list, tuple)):
        if len(ratio) != len(branches):
            raise ValueError(f"`ratio` needs one entry per branch ({len(branches)}); received {len(ratio)}: "
                             f"{list(ratio)}.")
        ratio_by_layer = {layer: check_ratio(r, f"ratio[{i}]") for i, (layer, r) in enumerate(zip(branches, ratio))}
    elif ratio is None:
        raise TypeError("prune_hrnet_branches() needs `ratio` (a float, one per branch, or a dict).")
    else:
        ratio_by_layer = per_layer_ratio(ratio, branches, what="HRNet branch",
                                         resolve=lambda key: branches[key] if isinstance(key, int)
                                         and 0 <= key < len(branches) else key)
    keep = {}
    for layer_name, share in ratio_by_layer.items():
        group = find_channel_group(model, layer_name)
        scores = np.zeros(group.channels)
        for member in group.members:
            layer = model.get_layer(member)
            if isinstance(layer, keras.layers.BatchNormalization):
                scores += np.abs(keras.ops.convert_to_numpy(layer.gamma))
        count = max(1, int(group.channels * (1 - share)))
        if count < group.channels:
            keep[layer_name] = keep_largest(scores, count)
    pruned = prune_channels(model, keep, name=name) if keep else copy_model(model, name)
    return pruned, make_report("hrnet_branches", model, pruned, ratio)


def export_pruned_tflite(model, path, **kwargs):
    """Exports a (pruned) model with :func:`keras_visrec.tflite.export_tflite`; returns its report.

    Kept one release for its callers: call ``export_tflite`` (``sparse=True`` for magnitude-
    pruned weights). ``method="converter"`` (a plain converter and its own interpreter loop)
    is gone; ``method="export_tflite"`` is accepted with a DeprecationWarning.
    """
    import warnings

    method = kwargs.pop("method", None)
    if method not in (None, "export_tflite"):
        raise ValueError("export_pruned_tflite(method=...) is gone: every export goes through "
                         f"keras_visrec.export_tflite; received method={method!r}.")
    warnings.warn("`export_pruned_tflite` is deprecated and will be removed in the next release; use "
                  "`keras_visrec.export_tflite(model, path, ...)`.", DeprecationWarning, stacklevel=2)
    from keras_visrec.tflite.export import export_tflite

    return export_tflite(model, path, **kwargs)

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

:func:`export_pruned_tflite` exports a pruned model with ``keras_visrec.tflite.export_tflite``.
"""

import keras
import numpy as np

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


def _ratio(value, what):
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value < 1.0:
        raise ValueError(f"Prune ratio for {what} must be in [0, 1); received {value!r}.")
    return float(value)


def prune_convnext_mlp(model, ratio, *, name=None):
    """Removes a share of every ConvNeXt block's MLP hidden units (largest L1 norm kept).

    Args:
        model: keras.Model. A keras_visrec ConvNeXt (V1, V2 or isotropic; plain or exportable).
        ratio: float in [0, 1), or a dict ``{block prefix or pointwise_conv_1 name: ratio}``
            (blocks not listed are kept whole).
        name: str. Name of the pruned model.

    Returns:
        The pruned `keras.Model`.
    """
    layers = convnext_mlp_layers(model)
    if isinstance(ratio, dict):
        ratios = {}
        for key, value in ratio.items():
            layer_name = key if key.endswith(_MLP_SUFFIX) else key + _MLP_SUFFIX
            if layer_name not in layers:
                raise ValueError(f"{key!r} is not a ConvNeXt block of {model.name!r}; blocks: "
                                 f"{[n[: -len(_MLP_SUFFIX)] for n in layers]}.")
            ratios[layer_name] = _ratio(value, key)
    else:
        ratios = {n: _ratio(ratio, "the ConvNeXt MLPs") for n in layers}
    keep = {}
    for layer_name, r in ratios.items():
        norms = l1_filter_norms(model.get_layer(layer_name))
        count = max(1, int(norms.size * (1 - r)))
        if count < norms.size:
            keep[layer_name] = keep_largest(norms, count)
    if not keep:
        copy = keras.models.clone_model(model)
        copy.set_weights(model.get_weights())
        return copy
    return prune_channels(model, keep, name=name)


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


def prune_hrnet_branches(model, ratios, *, name=None):
    """Narrows HRNet's branches (each branch's width everywhere it is used).

    Args:
        model: keras.Model. A :func:`keras_visrec.hrnet.HRNetV2`.
        ratios: sequence of float in [0, 1), one per branch (4 for HRNetV2).
        name: str. Name of the pruned model.
    """
    branches = hrnet_branch_layers(model)
    ratios = list(ratios)
    if len(ratios) != len(branches):
        raise ValueError(f"`ratios` needs one entry per branch ({len(branches)}); received {len(ratios)}: {ratios}.")
    keep = {}
    for branch, (layer_name, r) in enumerate(zip(branches, ratios)):
        r = _ratio(r, f"branch {branch}")
        group = find_channel_group(model, layer_name)
        scores = np.zeros(group.channels)
        for member in group.members:
            layer = model.get_layer(member)
            if isinstance(layer, keras.layers.BatchNormalization):
                scores += np.abs(keras.ops.convert_to_numpy(layer.gamma))
        count = max(1, int(group.channels * (1 - r)))
        if count < group.channels:
            keep[layer_name] = keep_largest(scores, count)
    if not keep:
        copy = keras.models.clone_model(model)
        copy.set_weights(model.get_weights())
        return copy
    return prune_channels(model, keep, name=name)


def export_pruned_tflite(model, path, *, method="export_tflite", **kwargs):
    """Exports a (pruned) model to TFLite; returns a report.

    Args:
        model: keras.Model.
        path: str. The ``.tflite`` file to write (atomically).
        method: str. `"export_tflite"` (``keras_visrec.tflite.export_tflite``: graph preparation,
            quantization, agreement check; returns its ``ExportReport``) or `"converter"` (plain
            ``tf.lite.TFLiteConverter``; returns ``{"size", "max_abs_diff"}`` measured on 2
            random inputs). Defaults to `"export_tflite"`.
        **kwargs: passed to ``export_tflite`` (``quantization``, ``representative_data`` …).
    """
    if method == "export_tflite":
        from keras_visrec.tflite.export import export_tflite

        return export_tflite(model, path, **kwargs)
    if method != "converter":
        raise ValueError(f"`method` must be 'export_tflite' or 'converter'; received method={method!r}.")
    if kwargs:
        raise TypeError(f"method='converter' takes no further options; received {sorted(kwargs)}.")
    import tensorflow as tf

    from keras_visrec.pruning.magnitude import export_sparse_tflite

    content = export_sparse_tflite(model, path, sparse=False)
    shape = (1,) + tuple(model.input.shape[1:])
    images = np.random.default_rng(0).uniform(0, 255, (2,) + shape[1:]).astype("float32")
    interpreter = tf.lite.Interpreter(model_content=content)
    interpreter.allocate_tensors()
    diffs = []
    for image in images:
        interpreter.set_tensor(interpreter.get_input_details()[0]["index"], image[None])
        interpreter.invoke()
        lite = interpreter.get_tensor(interpreter.get_output_details()[0]["index"])
        diffs.append(float(np.abs(lite - keras.ops.convert_to_numpy(model(image[None]))).max()))
    return {"size": len(content), "max_abs_diff": max(diffs)}

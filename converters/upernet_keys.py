"""Dense-prediction key maps: mmseg / Hugging Face UperNet and mmdet ConvNeXt files → keras_visrec layers.

Layouts (the official code, read; see ``keras_visrec.upernet`` for our layer names):

* ``mmseg`` — facebookresearch/ConvNeXt ``semantic_segmentation/`` checkpoints,
  ``{"meta": {...}, "state_dict": {...}}``: ``backbone.*`` (the official ConvNeXt keys plus
  ``backbone.norm{s}``, the per-stage output norms), ``decode_head.{psp_modules.j.1, bottleneck,
  lateral_convs.i, fpn_convs.i, fpn_bottleneck}.{conv, bn}``, ``decode_head.conv_seg``,
  ``auxiliary_head.convs.k.{conv, bn}``, ``auxiliary_head.conv_seg``; SyncBN statistics
  (``running_mean``, ``running_var``, ``num_batches_tracked``);
* ``hf`` — transformers' ``UperNetForSemanticSegmentation`` (``openmmlab/upernet-convnext-*``):
  ``backbone.{embeddings, encoder}.*`` (transformers' ConvNext keys),
  ``backbone.hidden_states_norms.stage{s+1}``, the same head paths with ``batch_norm`` for ``bn``
  and ``classifier`` for ``conv_seg``;
* ``mmdet`` — facebookresearch/ConvNeXt ``object_detection/`` Mask R-CNN / Cascade Mask R-CNN
  checkpoints: ``backbone.*`` as in mmseg, ``neck.{lateral_convs, fpn_convs}.i.conv`` (FPN, with
  bias), ``rpn_head.*``, ``roi_head.*``.

The ``meta`` entry (mmcv config text, ``CLASSES``, ``PALETTE``, versions) and ``optimizer`` state are
read as inert data by the torch-free reader and only summarised. Three loaders live here, registered
by :mod:`keras_visrec.converters.loading`: ``"upernet"`` (UperNet models), ``"fpn"`` (ConvNeXt + FPN
neck) and the ConvNeXt families, for which ``backbone.*`` files and the output norms of
``features_only=True, output_norms=True`` models are handled here and every other file goes to the
classification loader unchanged. This module never imports a model builder.
"""

import re
import warnings

import numpy as np

from keras_visrec.converters.convnext_keys import (
    KeyMismatchError, assign_state_dict, conv_kernel, convert_state_dict, detect_layout, load_convnext_checkpoint,
    unwrap_state_dict, vector,
)

__all__ = [
    "CONVNEXT_FAMILIES",
    "UPERNET_LAYOUTS",
    "checkpoint_metadata",
    "convert_dense_backbone",
    "convert_heads",
    "load_dense_convnext",
    "load_fpn",
    "load_upernet",
    "summarise_keys",
]

UPERNET_LAYOUTS = ("mmseg", "hf")
CONVNEXT_FAMILIES = ("convnext", "convnext_v2", "convnext_isotropic")
_BN_SLOTS = {"weight": "gamma", "bias": "beta", "running_mean": "moving_mean", "running_var": "moving_variance"}
_OUTPUT_NORM = re.compile(r"(?:norm(?P<s>[0-3])|hidden_states_norms\.stage(?P<hf>[1-4]))\.(?P<w>weight|bias)")
_HEAD_MODULES = (
    (r"decode_head\.psp_modules\.(\d+)\.1", "decode_psp_{}"),
    (r"decode_head\.bottleneck", "decode_bottleneck"),
    (r"decode_head\.lateral_convs\.(\d+)", "decode_lateral_{}"),
    (r"decode_head\.fpn_convs\.(\d+)", "decode_fpn_{}"),
    (r"decode_head\.fpn_bottleneck", "decode_fpn_bottleneck"),
    (r"auxiliary_head\.convs\.(\d+)", "auxiliary_{}"),
)
_CLASSIFIERS = {"decode_head": "decode_classifier", "auxiliary_head": "auxiliary_classifier"}
_NECK = re.compile(r"neck\.(?P<kind>lateral|fpn)_convs\.(?P<i>\d+)\.conv\.(?P<w>weight|bias)")


# ---- pieces of a checkpoint ----------------------------------------------------------------------

def checkpoint_metadata(checkpoint):
    """A short, inert description of what an mmcv checkpoint carries beside its weights.

    ``{"entries": [...top-level keys other than the state dict...], "classes": n, "config_chars": n, ...}``;
    nothing in it is executed or imported (the reader rebuilds only plain data).
    """
    if not isinstance(checkpoint, dict) or "state_dict" not in checkpoint:
        return {}
    info = {"entries": sorted(str(k) for k in checkpoint if k != "state_dict")}
    meta = checkpoint.get("meta")
    if isinstance(meta, dict):
        if isinstance(meta.get("CLASSES"), (list, tuple)):
            info["classes"] = len(meta["CLASSES"])
        if isinstance(meta.get("PALETTE"), (list, tuple)):
            info["palette"] = len(meta["PALETTE"])
        if isinstance(meta.get("config"), str):
            info["config_chars"] = len(meta["config"])
        for key in ("mmseg_version", "mmdet_version", "mmcv_version", "iter", "epoch"):
            if isinstance(meta.get(key), (str, int)):
                info[key] = meta[key]
    return info


def summarise_keys(keys):
    """``{"rpn_head": 6, "roi_head": 60, …}``: upstream keys left out, counted by their first component."""
    counts = {}
    for key in keys:
        head = key.split(".", 1)[0]
        counts[head] = counts.get(head, 0) + 1
    return dict(sorted(counts.items()))


def _split(state, prefix):
    inside = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
    return inside, {k: v for k, v in state.items() if not k.startswith(prefix)}


def convert_dense_backbone(backbone, *, key_prefix="", layout=None, source="checkpoint"):
    """Converts a ConvNeXt state dict with output norms (``key_prefix``, e.g. ``backbone.``, stripped).

    Returns:
        ``(converted, unmapped, layout, has_norms)``: ``converted`` as
        :func:`convnext_keys.convert_state_dict` returns it, with ``output_norm_{s}`` entries for
        the official ``norm{s}`` / transformers ``hidden_states_norms.stage{s+1}`` keys; upstream
        keys (in ``converted`` and ``unmapped``) carry ``key_prefix`` again, as the file names them.
        ``layout`` (a ConvNeXt layout of ``convnext_keys.LAYOUTS``) is detected when None.
    """
    norms, rest = {}, {}
    for key, value in backbone.items():
        match = _OUTPUT_NORM.fullmatch(key)
        if match:
            stage = int(match["s"]) if match["s"] is not None else int(match["hf"]) - 1
            slot = "gamma" if match["w"] == "weight" else "beta"
            norms.setdefault(f"output_norm_{stage}", {})[slot] = (np.asarray(value, np.float32), key)
        else:
            rest[key] = value
    layout = layout or detect_layout(rest, source=source)
    converted, unmapped = convert_state_dict(rest, layout, source=source)
    converted.update(norms)
    converted = {suffix: {slot: (value, key_prefix + key) for slot, (value, key) in slots.items()}
                 for suffix, slots in converted.items()}
    return converted, [key_prefix + key for key in unmapped], layout, bool(norms)


def _bn_or_conv(part, which, key, value):
    """(slot, array) of one ``conv`` / ``bn`` / ``batch_norm`` tensor of an mmcv ConvModule."""
    if part == "conv":
        return ("kernel", conv_kernel(value)) if which == "weight" else ("bias", vector(value))
    return _BN_SLOTS[which], vector(value)


def convert_heads(state):
    """Maps ``decode_head.*`` / ``auxiliary_head.*`` keys (mmseg or transformers) to our layer suffixes.

    Returns:
        ``(converted, unmapped, skipped)``; ``skipped`` lists ``num_batches_tracked`` counters.
    """
    converted, unmapped, skipped = {}, [], []
    for key, value in state.items():
        if key.endswith(".num_batches_tracked"):
            skipped.append(key)
            continue
        target = None
        for pattern, suffix in _HEAD_MODULES:
            match = re.fullmatch(pattern + r"\.(conv|bn|batch_norm)\.(weight|bias|running_mean|running_var)", key)
            if match:
                *index, part, which = match.groups()
                layer = suffix.format(*index)
                slot, array = _bn_or_conv("conv" if part == "conv" else "bn", which, key, value)
                target = (f"{layer}_{'conv' if part == 'conv' else 'bn'}", slot, array)
                break
        if target is None:
            match = re.fullmatch(r"(decode_head|auxiliary_head)\.(?:conv_seg|classifier)\.(weight|bias)", key)
            if match:
                slot, array = _bn_or_conv("conv", match[2], key, value)
                target = (_CLASSIFIERS[match[1]], slot, array)
        if target is None:
            unmapped.append(key)
            continue
        layer, slot, array = target
        converted.setdefault(layer, {})[slot] = (np.asarray(array, np.float32), key)
    return converted, unmapped, skipped


def _detect_upernet_layout(state, source):
    keys = list(state)
    if any(k.startswith(("backbone.embeddings.", "backbone.encoder.")) or k.startswith("decode_head.classifier.")
           for k in keys):
        return "hf"
    if any(k.startswith("backbone.downsample_layers.") or k.startswith("decode_head.conv_seg.") for k in keys):
        return "mmseg"
    raise ValueError(f"{source}: not an UperNet checkpoint (no backbone.* / decode_head.* keys in the mmseg or "
                     f"transformers layout; first keys: {keys[:6]}).")


def _layer_shape(model, name, slot):
    for layer in model.layers:
        if layer.name == name:
            for variable in layer.weights:
                if variable.name.split("/")[-1] == slot:
                    return tuple(variable.shape)
    return None


def _check_classes(model, converted, source):
    """A checkpoint head of another class count is one error naming ``classes`` and the file."""
    for suffix in ("decode_classifier", "auxiliary_classifier"):
        entry = converted.get(suffix, {}).get("kernel")
        shape = _layer_shape(model, f"{model.name}_{suffix}", "kernel")
        if entry is None or shape is None:
            continue
        checkpoint_classes, model_classes = entry[0].shape[-1], shape[-1]
        if checkpoint_classes != model_classes:
            raise ValueError(
                f"Checkpoint {source} has a {checkpoint_classes}-class head ({entry[1]} of shape "
                f"{tuple(entry[0].shape)} in Keras layout) but the model was built with classes={model_classes}; "
                f"pass classes={checkpoint_classes}."
            )


def _require_strict(strict, source):
    if not strict:
        raise ValueError(f"{source}: dense-prediction checkpoints load strictly (every layer filled, every key "
                         "used or reported by name); strict=False is not supported here.")


def _model_suffixes(model):
    prefix = model.name + "_"
    return {layer.name[len(prefix):] for layer in model.layers if layer.weights and layer.name.startswith(prefix)}


# ---- loaders ----------------------------------------------------------------------------------

def load_upernet(model, state, *, include_top=True, source="checkpoint", strict=True, layout=None, **_):
    """Loads an mmseg or transformers UperNet checkpoint into a keras_visrec UperNet (``family="upernet"``).

    Returns:
        A summary: ``layout``, ``backbone_layout``, ``assigned``, ``ignored`` (keys left out by name:
        an auxiliary head the model does not have, BN step counters), ``metadata``.
    """
    _require_strict(strict, source)
    metadata = checkpoint_metadata(state)
    state = unwrap_state_dict(state, source=source)
    layout = layout or _detect_upernet_layout(state, source)
    if layout not in UPERNET_LAYOUTS:
        raise ValueError(f"`layout` must be one of {UPERNET_LAYOUTS} for an UperNet; received layout={layout!r}.")
    backbone, rest = _split(state, "backbone.")
    if not backbone:
        raise ValueError(f"{source}: no backbone.* keys; an UperNet checkpoint holds the backbone and the heads.")
    converted, unmapped, backbone_layout, has_norms = convert_dense_backbone(backbone, key_prefix="backbone.",
                                                                             source=source)
    converted = {f"backbone_{suffix}": slots for suffix, slots in converted.items()}
    heads, head_unmapped, ignored = convert_heads(rest)
    unmapped += head_unmapped
    _check_classes(model, heads, source)
    present = _model_suffixes(model)
    for suffix, slots in heads.items():
        if suffix.startswith("auxiliary_") and suffix not in present:
            ignored.extend(key for _, key in slots.values())  # an inference model: no auxiliary head
        else:
            converted[suffix] = slots
    summary = assign_state_dict(model, converted, include_top=True, source=source, unmapped=unmapped)
    summary.update(layout=layout, backbone_layout=backbone_layout, metadata=metadata,
                   ignored=summary["ignored"] + ignored)
    if not has_norms:
        summary["note"] = "no output norms in the checkpoint"
    return summary


def load_fpn(model, state, *, include_top=True, source="checkpoint", strict=True, **_):
    """Loads an mmdet checkpoint (``backbone.*`` + ``neck.*``) into a keras_visrec FPN (``family="fpn"``).

    The detection heads (``rpn_head.*``, ``roi_head.*``, …) are left out and summarised in
    ``left_out``; their key names are in ``ignored``.
    """
    _require_strict(strict, source)
    metadata = checkpoint_metadata(state)
    state = unwrap_state_dict(state, source=source)
    backbone, rest = _split(state, "backbone.")
    if not backbone:
        raise ValueError(f"{source}: no backbone.* keys; expected an mmdet checkpoint (backbone.*, neck.*, …).")
    converted, unmapped, backbone_layout, _ = convert_dense_backbone(backbone, key_prefix="backbone.", source=source)
    converted = {f"backbone_{suffix}": slots for suffix, slots in converted.items()}
    neck, left_out = _split(rest, "neck.")
    if not neck:
        raise ValueError(f"{source}: no neck.* keys; FPN weights come from an mmdet Mask R-CNN / Cascade Mask "
                         "R-CNN file (use backbone_weights= for a backbone-only file).")
    for key, value in neck.items():
        match = _NECK.fullmatch("neck." + key)
        if match is None:
            unmapped.append("neck." + key)
            continue
        slot, array = _bn_or_conv("conv", match["w"], key, value)
        converted.setdefault(f"{match['kind']}_{match['i']}", {})[slot] = (np.asarray(array, np.float32),
                                                                         "neck." + key)
    summary = assign_state_dict(model, converted, include_top=True, source=source, unmapped=unmapped)
    summary.update(layout="mmdet", backbone_layout=backbone_layout, metadata=metadata,
                   ignored=summary["ignored"] + sorted(left_out), left_out=summarise_keys(left_out))
    return summary


def load_dense_convnext(model, state, *, include_top, source="checkpoint", strict=True, layout=None,
                        prefer_ema=False, **kw):
    """The ConvNeXt families' loader: dense-prediction files and output norms here, the rest as before.

    * an mmdet / mmseg file (``backbone.*`` keys) loads its backbone, with ``norm{s}`` into the
      output norms of a ``features_only=True, output_norms=True`` model; necks and heads are
      summarised in ``left_out`` (by first key component) and named in ``ignored``;
    * a classification file into a model with output norms leaves the norms at their initial
      values (listed in ``initialised``), as the official dense-prediction code starts;
    * every other file (mmpretrain's ``backbone.*`` + ``head.fc`` classifiers included) goes to the
      classification loader (:func:`~keras_visrec.converters.convnext_keys.load_convnext_checkpoint`).
    """
    checkpoint, metadata = state, checkpoint_metadata(state)
    state = unwrap_state_dict(state, prefer_ema=prefer_ema, source=source)
    suffixes = _model_suffixes(model)
    model_norms = sorted(s for s in suffixes if re.fullmatch(r"output_norm_\d", s))
    backbone, left_out = _split(state, "backbone.")
    key_prefix = "backbone." if backbone else ""
    if not backbone or ("head.fc.weight" in state and not model_norms):  # mmpretrain classifiers too
        if not model_norms:
            return load_convnext_checkpoint(model, checkpoint, include_top=include_top, source=source, strict=strict,
                                            layout=layout, prefer_ema=prefer_ema)
        backbone, left_out = state, {}
    _require_strict(strict, source)
    converted, unmapped, backbone_layout, _ = convert_dense_backbone(backbone, key_prefix=key_prefix, layout=layout,
                                                                     source=source)
    ignored, initialised = [], []
    for suffix in [s for s in converted if s.startswith("output_norm_") and s not in suffixes]:
        ignored.extend(key for _, key in converted.pop(suffix).values())
    if ignored:
        warnings.warn(f"{source}: the checkpoint has per-stage output norms ({', '.join(ignored[:2])}, …) that "
                      f"model {model.name!r} lacks; build it with features_only=True, output_norms=True to get the "
                      "features the official dense-prediction backbone computes.", stacklevel=3)
    for suffix in model_norms:
        if suffix not in converted:  # keep the model's initial values
            layer = next(layer for layer in model.layers if layer.name == f"{model.name}_{suffix}")
            converted[suffix] = {v.name.split("/")[-1]: (np.asarray(v), f"(initial {v.name})")
                                 for v in layer.weights}
            initialised.append(layer.name)
    try:
        summary = assign_state_dict(model, converted, include_top=include_top, source=source, unmapped=unmapped)
    except KeyMismatchError as error:
        if left_out and include_top:
            raise KeyMismatchError(f"{error}\n  (a dense-prediction file holds no classification head: build the "
                                   "model with include_top=False, features_only=True)") from None
        raise
    summary.update(layout=f"{'mmdet/mmseg backbone, ' if left_out else ''}{backbone_layout}",
                   ignored=summary["ignored"] + ignored + sorted(left_out), left_out=summarise_keys(left_out),
                   initialised=initialised, metadata=metadata)
    return summary



"""ConvNeXt key maps: official / timm / Hugging Face state dicts → keras_visrec layer names.

Every upstream key becomes ``(layer suffix, slot, kind)``: the layer is
``f"{model.name}_{suffix}"`` (see ``keras_visrec.convnext`` for the names), the slot is the
Keras variable (``kernel``, ``bias``, ``gamma``, ``beta``) and the kind selects one of the
per-layer-kind helpers below, each stating its transpose. Layouts (REFERENCES.md):

* ``official`` — facebookresearch/ConvNeXt and ConvNeXt-V2: ``downsample_layers.i.j``,
  ``stages.s.b.{dwconv, norm, pwconv1, pwconv2, gamma, grn}``, ``norm``, ``head``;
* ``official_isotropic`` — ``stem``, ``blocks.b.*``, ``norm``, ``head``;
* ``timm`` — ``stem.{0,1}``, ``stages.s.downsample.{0,1}``, ``stages.s.blocks.b.{conv_dw, norm,
  mlp.fc1, mlp.fc2, mlp.grn, gamma}``, ``head.{norm, fc}`` (atto–nano: 1×1 conv MLP weights);
* ``hf`` — transformers' ConvNext / ConvNextV2: ``[convnext.|convnextv2.]embeddings.*``,
  ``encoder.stages.s.{downsampling_layer, layers.b.*}``, ``layernorm``, ``classifier``;
* ``torchvision`` — ``torchvision.models.convnext_*``: ``features.0.{0,1}`` stem,
  ``features.{1,3,5,7}.b.{block.{0,2,3,5}, layer_scale}`` stages (``block`` = depthwise conv,
  permute, LayerNorm, Linear, GELU, Linear, permute; ``layer_scale`` shaped ``(C, 1, 1)``; its
  ``StochasticDepth`` holds no parameters), ``features.{2,4,6}.{0,1}`` downsampling,
  ``classifier.{0,2}`` (LayerNorm2d, Linear);
* ``mmpretrain`` — mmpretrain / mmcls ``ImageClassifier`` (usually inside ``state_dict``):
  ``backbone.downsample_layers`` as official, ``backbone.stages.s.b.{depthwise_conv, norm,
  pointwise_conv1, pointwise_conv2, gamma, grn.{gamma, beta}}``, ``backbone.norm3`` (after global
  pooling), ``head.fc``.

This module never imports a model builder: it maps keys onto a *given* Keras model.
"""

import re

import numpy as np

from keras_visrec.converters.pytorch_reader import Record

__all__ = [
    "KeyMismatchError",
    "LAYOUTS",
    "assign_state_dict",
    "conv_kernel",
    "convert_state_dict",
    "depthwise_kernel",
    "detect_layout",
    "grn_vector",
    "layer_scale_vector",
    "linear_kernel",
    "load_convnext_checkpoint",
    "map_key",
    "unwrap_checkpoint",
    "unwrap_state_dict",
    "vector",
]

LAYOUTS = ("official", "official_isotropic", "timm", "hf", "torchvision", "mmpretrain")
_WRAPPERS = ("model", "state_dict", "model_ema", "state_dict_ema", "module")


class KeyMismatchError(ValueError):
    """A checkpoint that does not fit the model: lists every missing, unexpected and mis-shaped key."""


# ---- one helper per layer kind; each states its transpose --------------------------------------

def conv_kernel(weight):
    """Conv2D: torch (out, in, kh, kw) → Keras (kh, kw, in, out)."""
    return np.transpose(weight, (2, 3, 1, 0))


def depthwise_kernel(weight):
    """DepthwiseConv2D: torch (C, 1, kh, kw) → Keras (kh, kw, C, 1)."""
    return np.transpose(weight, (2, 3, 0, 1))


def linear_kernel(weight):
    """Dense / pointwise: torch Linear (out, in) or 1×1 conv (out, in, 1, 1) → Keras (in, out)."""
    if weight.ndim == 4:
        weight = weight.reshape(weight.shape[0], weight.shape[1])
    return np.transpose(weight)


def vector(weight):
    """LayerNorm weight / bias, biases, layer scale: unchanged 1-D vectors."""
    return weight


def grn_vector(weight):
    """GRN gamma / beta: official / HF (1, 1, 1, C) or timm (C,) → Keras (C,)."""
    return weight.reshape(-1)


def layer_scale_vector(weight):
    """Layer scale: official (C,) or torchvision (C, 1, 1) → Keras (C,)."""
    return weight.reshape(-1)


_KINDS = {"conv": conv_kernel, "depthwise": depthwise_kernel, "linear": linear_kernel,
          "vector": vector, "grn": grn_vector, "layer_scale": layer_scale_vector}


def _param(kind, which):
    """(slot, kind) for a torch 'weight' / 'bias' of a layer kind."""
    if kind == "norm":
        return ("gamma", "vector") if which == "weight" else ("beta", "vector")
    if which == "bias":
        return "bias", "vector"
    return "kernel", kind


# ---- per-layout key maps: upstream key → (suffix, slot, kind) or None ------------------------

_BLOCK_PARTS = {
    # official / HF part name → (our suffix, layer kind)
    "dwconv": ("depthwise_conv", "depthwise"),
    "conv_dw": ("depthwise_conv", "depthwise"),
    "norm": ("layernorm", "norm"),
    "layernorm": ("layernorm", "norm"),
    "pwconv1": ("pointwise_conv_1", "linear"),
    "pwconv2": ("pointwise_conv_2", "linear"),
    "mlp.fc1": ("pointwise_conv_1", "linear"),
    "mlp.fc2": ("pointwise_conv_2", "linear"),
    "depthwise_conv": ("depthwise_conv", "depthwise"),  # mmpretrain
    "pointwise_conv1": ("pointwise_conv_1", "linear"),
    "pointwise_conv2": ("pointwise_conv_2", "linear"),
    "block.0": ("depthwise_conv", "depthwise"),  # torchvision's CNBlock.block Sequential
    "block.2": ("layernorm", "norm"),
    "block.3": ("pointwise_conv_1", "linear"),
    "block.5": ("pointwise_conv_2", "linear"),
}
_BLOCK = re.compile(r"(?P<part>dwconv|conv_dw|norm|layernorm|pwconv1|pwconv2|mlp\.fc1|mlp\.fc2|depthwise_conv"
                    r"|pointwise_conv1|pointwise_conv2|block\.[0235])\.(?P<w>weight|bias)")
_GRN = re.compile(r"(?:mlp\.)?grn\.(?P<w>gamma|beta|weight|bias)")
_SCALE = re.compile(r"gamma|layer_scale_parameter|layer_scale")


def _block_param(prefix, rest):
    match = _BLOCK.fullmatch(rest)
    if match:
        suffix, kind = _BLOCK_PARTS[match["part"]]
        slot, kind = _param(kind, match["w"])
        return f"{prefix}_{suffix}", slot, kind
    match = _GRN.fullmatch(rest)
    if match:
        slot = "gamma" if match["w"] in ("gamma", "weight") else "beta"
        return f"{prefix}_grn", slot, "grn"
    if _SCALE.fullmatch(rest):
        return f"{prefix}_layer_scale", "gamma", "layer_scale"
    return None


def _layer(suffix, kind, which):
    slot, kind = _param(kind, which)
    return suffix, slot, kind


def _map_official(key):
    if m := re.fullmatch(r"downsample_layers\.0\.0\.(weight|bias)", key):
        return _layer("stem_conv", "conv", m[1])
    if m := re.fullmatch(r"downsample_layers\.0\.1\.(weight|bias)", key):
        return _layer("stem_layernorm", "norm", m[1])
    if m := re.fullmatch(r"downsample_layers\.([123])\.0\.(weight|bias)", key):
        return _layer(f"downsampling_layernorm_{int(m[1]) - 1}", "norm", m[2])
    if m := re.fullmatch(r"downsample_layers\.([123])\.1\.(weight|bias)", key):
        return _layer(f"downsampling_conv_{int(m[1]) - 1}", "conv", m[2])
    if m := re.fullmatch(r"stages\.(\d+)\.(\d+)\.(.+)", key):
        return _block_param(f"stage_{m[1]}_block_{m[2]}", m[3])
    return _map_head(key, {"norm": "norm", "head": "head"})


def _map_official_isotropic(key):
    if m := re.fullmatch(r"stem\.(weight|bias)", key):
        return _layer("stem_conv", "conv", m[1])
    if m := re.fullmatch(r"blocks\.(\d+)\.(.+)", key):
        return _block_param(f"stage_0_block_{m[1]}", m[2])
    return _map_head(key, {"norm": "norm", "head": "head"})


def _map_timm(key):
    if m := re.fullmatch(r"stem\.0\.(weight|bias)", key):
        return _layer("stem_conv", "conv", m[1])
    if m := re.fullmatch(r"stem\.1\.(weight|bias)", key):
        return _layer("stem_layernorm", "norm", m[1])
    if m := re.fullmatch(r"stages\.([123])\.downsample\.0\.(weight|bias)", key):
        return _layer(f"downsampling_layernorm_{int(m[1]) - 1}", "norm", m[2])
    if m := re.fullmatch(r"stages\.([123])\.downsample\.1\.(weight|bias)", key):
        return _layer(f"downsampling_conv_{int(m[1]) - 1}", "conv", m[2])
    if m := re.fullmatch(r"stages\.(\d+)\.blocks\.(\d+)\.(.+)", key):
        return _block_param(f"stage_{m[1]}_block_{m[2]}", m[3])
    return _map_head(key, {"head.norm": "norm", "head.fc": "head"})


def _map_hf(key):
    key = re.sub(r"^convnext(?:v2)?\.", "", key)
    if m := re.fullmatch(r"embeddings\.patch_embeddings\.(weight|bias)", key):
        return _layer("stem_conv", "conv", m[1])
    if m := re.fullmatch(r"embeddings\.layernorm\.(weight|bias)", key):
        return _layer("stem_layernorm", "norm", m[1])
    if m := re.fullmatch(r"encoder\.stages\.([123])\.downsampling_layer\.0\.(weight|bias)", key):
        return _layer(f"downsampling_layernorm_{int(m[1]) - 1}", "norm", m[2])
    if m := re.fullmatch(r"encoder\.stages\.([123])\.downsampling_layer\.1\.(weight|bias)", key):
        return _layer(f"downsampling_conv_{int(m[1]) - 1}", "conv", m[2])
    if m := re.fullmatch(r"encoder\.stages\.(\d+)\.layers\.(\d+)\.(.+)", key):
        return _block_param(f"stage_{m[1]}_block_{m[2]}", m[3])
    return _map_head(key, {"layernorm": "norm", "classifier": "head"})


def _map_torchvision(key):
    if m := re.fullmatch(r"features\.0\.0\.(weight|bias)", key):
        return _layer("stem_conv", "conv", m[1])
    if m := re.fullmatch(r"features\.0\.1\.(weight|bias)", key):
        return _layer("stem_layernorm", "norm", m[1])
    if m := re.fullmatch(r"features\.([246])\.0\.(weight|bias)", key):
        return _layer(f"downsampling_layernorm_{int(m[1]) // 2 - 1}", "norm", m[2])
    if m := re.fullmatch(r"features\.([246])\.1\.(weight|bias)", key):
        return _layer(f"downsampling_conv_{int(m[1]) // 2 - 1}", "conv", m[2])
    if m := re.fullmatch(r"features\.([1357])\.(\d+)\.(.+)", key):
        return _block_param(f"stage_{int(m[1]) // 2}_block_{m[2]}", m[3])
    return _map_head(key, {"classifier.0": "norm", "classifier.2": "head"})


def _map_mmpretrain(key):
    if key.startswith("backbone."):
        rest = key[len("backbone."):]
        if rest.startswith(("downsample_layers.", "stages.")):
            return _map_official(rest)
        return _map_head(rest, {"norm3": "norm"})
    return _map_head(key, {"head.fc": "head"})


def _map_head(key, names):
    for upstream, role in names.items():
        if m := re.fullmatch(re.escape(upstream) + r"\.(weight|bias)", key):
            if role == "norm":
                return _layer("head_layernorm", "norm", m[1])
            return _layer("head_dense", "linear", m[1])
    return None


_MAPPERS = {"official": _map_official, "official_isotropic": _map_official_isotropic,
            "timm": _map_timm, "hf": _map_hf, "torchvision": _map_torchvision, "mmpretrain": _map_mmpretrain}


def map_key(key, layout):
    """The ``(layer suffix, slot, kind)`` an upstream ``key`` maps to in ``layout``, or None."""
    if layout not in _MAPPERS:
        raise ValueError(f"`layout` must be one of {LAYOUTS}; received layout={layout!r}.")
    return _MAPPERS[layout](key)


# ---- wrappers, layout detection, conversion ----------------------------------------------------

def unwrap_checkpoint(checkpoint, *, prefer_ema=False, source="checkpoint"):
    """Finds the state dict inside a checkpoint; returns ``(state, report)``.

    Released files are a bare state dict or ``{"model": …}``; the official training code saves
    ``{"model", "optimizer", "epoch", "scaler", "model_ema", "args"}`` and mmcv / mmseg / mmdet
    ``{"meta", "state_dict", "optimizer"}``. The first of ``model``, ``state_dict``, ``model_ema``,
    ``state_dict_ema``, ``module`` holding a dict is taken (``model_ema`` / ``state_dict_ema`` first
    when ``prefer_ema``; ``model`` when the file has no EMA entry), up to three wrappers deep, and
    a DistributedDataParallel ``module.`` prefix is stripped.

    Args:
        checkpoint: dict. What ``load_pytorch_checkpoint`` returned.
        prefer_ema: bool. Take the EMA weights when the file has them. Defaults to `False`.
        source: str. File name for error messages. Defaults to `"checkpoint"`.

    Returns:
        ``(state, report)``: ``state`` the flat ``{key: array}``; ``report`` a dict with
        ``entry`` (the wrapper path taken, e.g. ``"model"``, or None for a bare state dict) and
        ``other_entries`` (the top-level entries left out, by name, in file order).
    """
    if not isinstance(checkpoint, dict):
        raise ValueError(f"{source}: expected a dict of tensors, got {type(checkpoint).__name__}.")
    order = ("model_ema", "state_dict_ema") + _WRAPPERS if prefer_ema else _WRAPPERS
    state, path = checkpoint, []
    for _ in range(3):
        if any(isinstance(v, np.ndarray) for v in state.values()):
            break
        key = next((k for k in order if _is_wrapped_state(state.get(k))), None)
        if key is None:
            break
        state = state[key]
        path.append(key)
    tensors = {k: v for k, v in state.items() if isinstance(v, np.ndarray)}
    if not tensors:
        raise ValueError(f"{source}: no tensors found (top-level keys: {sorted(map(str, checkpoint))[:10]}).")
    if all(isinstance(k, str) and k.startswith("module.") for k in tensors):
        tensors = {k[len("module."):]: v for k, v in tensors.items()}
    others = [str(k) for k in checkpoint if k != path[0]] if path else []
    return tensors, {"entry": ".".join(path) or None, "other_entries": others}


def _is_wrapped_state(value):
    return isinstance(value, dict) and not isinstance(value, Record)


def unwrap_state_dict(checkpoint, *, prefer_ema=False, source="checkpoint"):
    """Returns the flat ``{key: array}`` state dict inside a checkpoint (see :func:`unwrap_checkpoint`).

    Unwraps ``{"model": …}``, ``{"state_dict": …}``, ``{"model_ema": …}`` (preferred when
    ``prefer_ema``) and strips a DistributedDataParallel ``module.`` prefix.
    """
    return unwrap_checkpoint(checkpoint, prefer_ema=prefer_ema, source=source)[0]


def detect_layout(keys, *, source="checkpoint"):
    """Names the upstream layout of a ConvNeXt state dict from its keys."""
    keys = list(keys)
    joined = "\n".join(keys)
    if re.search(r"^(convnext(v2)?\.)?embeddings\.patch_embeddings", joined, re.M):
        return "hf"
    if "downsample_layers.0.0.weight" in keys:
        return "official"
    if "backbone.downsample_layers.0.0.weight" in keys and "head.fc.weight" in keys:
        return "mmpretrain"
    if "features.0.0.weight" in keys and re.search(r"^features\.1\.0\.block\.0\.weight$", joined, re.M):
        return "torchvision"
    if "stem.0.weight" in keys and re.search(r"^stages\.\d+\.blocks\.", joined, re.M):
        return "timm"
    if "stem.weight" in keys and re.search(r"^blocks\.\d+\.", joined, re.M):
        return "official_isotropic"
    raise ValueError(
        f"{source}: cannot tell which ConvNeXt layout these keys follow (first keys: {keys[:6]}); "
        f"known layouts: {LAYOUTS}."
    )


def convert_state_dict(state, layout=None, *, source="checkpoint"):
    """Maps an upstream state dict to ``{layer suffix: {slot: Keras-layout array}}``.

    Returns:
        ``(converted, unmapped)``: converted weights and the upstream keys no rule matched.
    """
    layout = layout or detect_layout(state, source=source)
    converted, unmapped = {}, []
    for key, value in state.items():
        target = map_key(key, layout)
        if target is None:
            unmapped.append(key)
            continue
        suffix, slot, kind = target
        converted.setdefault(suffix, {})[slot] = (np.asarray(_KINDS[kind](value), dtype=np.float32), key)
    return converted, unmapped


_HEAD_SUFFIXES = ("head_layernorm", "head_dense")


def _layers_with_weights(model):
    import keras

    def walk(layer):
        for sub in layer.layers:
            if isinstance(sub, keras.Model):
                yield from walk(sub)
            elif sub.weights:
                yield sub

    return list(walk(model))


def _fit(value, variable_shape):
    """Reshapes a Dense-layout kernel for a 1×1 Conv2D variable (export form); else unchanged."""
    shape = tuple(variable_shape)
    if value.shape != shape and value.size == int(np.prod(shape)) and shape[:-2] == (1,) * (len(shape) - 2):
        return value.reshape(shape)
    return value


def assign_state_dict(model, converted, *, include_top, prefix=None, source="checkpoint", unmapped=()):
    """Assigns converted weights to ``model``'s layers by name; every problem in one error.

    Args:
        model: keras.Model. A keras_visrec ConvNeXt (layer names ``{prefix}_…``).
        converted: dict. The first result of :func:`convert_state_dict`.
        include_top: bool. When False, head keys the model has no layer for are ignored.
        prefix: str. Layer-name prefix. Defaults to `model.name`.
        source: str. File name used in error messages.
        unmapped: upstream keys no rule matched (reported as unexpected).

    Returns:
        A summary dict: ``assigned`` (layer names), ``ignored`` (upstream keys skipped).
    """
    prefix = prefix or model.name
    layers = {layer.name: layer for layer in _layers_with_weights(model)}
    missing, unexpected, mismatched, ignored, plan = [], list(unmapped), [], [], []
    for suffix, slots in converted.items():
        name = f"{prefix}_{suffix}"
        layer = layers.get(name)
        if layer is None:
            if suffix in _HEAD_SUFFIXES and not include_top:
                ignored.extend(key for _, key in slots.values())
                continue
            unexpected.extend(key for _, key in slots.values())
            continue
        values = []
        for variable in layer.weights:
            slot = variable.name.split("/")[-1]
            if slot not in slots:
                missing.append(f"{name}/{slot}")
                continue
            value, key = slots[slot]
            value = _fit(value, variable.shape)
            if tuple(value.shape) != tuple(variable.shape):
                hint = ""
                if suffix == "head_dense" and value.shape[0] == tuple(variable.shape)[0]:
                    hint = f" (the checkpoint's head has {value.shape[-1]} classes: pass classes={value.shape[-1]})"
                mismatched.append(f"{key} → {name}/{slot}: checkpoint {tuple(value.shape)}, model "
                                  f"{tuple(variable.shape)}{hint}")
            values.append((variable, value))
        extra = set(slots) - {v.name.split("/")[-1] for v in layer.weights}
        unexpected.extend(slots[s][1] for s in sorted(extra))
        plan.append((name, values))
    covered = {f"{prefix}_{s}" for s in converted}
    missing.extend(f"{name} (all weights)" for name in layers if name not in covered)
    if missing or unexpected or mismatched:
        parts = [f"Checkpoint {source} does not fit model {model.name!r}:"]
        for title, items in (("missing in checkpoint", missing), ("unexpected in checkpoint", unexpected),
                             ("shape mismatch", mismatched)):
            if items:
                parts.append(f"  {title} ({len(items)}):")
                parts.extend(f"    {item}" for item in items)
        raise KeyMismatchError("\n".join(parts))
    for _, values in plan:
        for variable, value in values:
            variable.assign(value.astype(variable.dtype, copy=False))
    return {"assigned": [name for name, _ in plan], "ignored": ignored}


def load_convnext_checkpoint(model, state, *, include_top, source="checkpoint", strict=True, layout=None,
                             prefer_ema=False):
    """The ConvNeXt classification loader: unwraps a checkpoint, maps its layout's keys, fills ``model``."""
    state, found = unwrap_checkpoint(state, prefer_ema=prefer_ema, source=source)
    layout = layout or detect_layout(state, source=source)
    converted, unmapped = convert_state_dict(state, layout, source=source)
    summary = assign_state_dict(model, converted, include_top=include_top, source=source, unmapped=unmapped)
    summary.update(layout=layout, **found)
    return summary

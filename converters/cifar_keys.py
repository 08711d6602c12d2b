"""Official CIFAR checkpoints of "Rethinking the Value of Network Pruning" → ``keras_visrec.cifar`` models.

The official networks (github.com/Eric-mingjie/rethinking-network-pruning, ``cifar/*/models/``)
save PyTorch module paths; each maps onto one of our flat layer names (``keras_visrec.cifar``):

* ``vgg`` — ``feature.{k}`` (an ``nn.Sequential``: conv, BN, ReLU per width, one max-pool per
  ``"M"``) → ``conv_{i}`` / ``bn_{i}`` with ``i`` the ``cfg`` index, recovered from the gaps between
  conv positions; ``classifier.{0, 1, 3}`` (L1-norm head) → ``fc_1``, ``fc_1_bn``, ``classifier``, or
  ``classifier`` (slimming head);
* ``resnet`` — ``conv1``, ``bn1``, ``layer{s}.{b}.{conv1, bn1, conv2, bn2}``,
  ``layer{s}.{b}.downsample.{0, 1}`` (option B only; option A has no weights), ``fc``;
* ``preresnet`` — ``conv1``, ``layer{s}.{b}.{bn1, select, conv1, bn2, conv2, bn3, conv3,
  downsample.0}``, ``bn``, ``select``, ``fc``;
* ``densenet`` — ``conv1``, ``dense{d}.{l}.{bn1, select, conv1}``, ``trans{t}.{bn1, select,
  conv1}``, ``bn``, ``select``, ``fc``.

``select.indexes`` (``channel_selection``'s 0/1 vector) is a choice of channels, not a weight: the
model's :class:`~keras_visrec.cifar.ChannelSelection` of the same width takes the checkpoint's
choice, so an official pruned network loads into a builder given the checkpoint's ``cfg``.
``num_batches_tracked`` is dropped. The official scripts' wrappers (``{"cfg", "state_dict"}``,
``{"epoch", "state_dict", "best_prec1", "optimizer"}``, DataParallel's ``module.``) are unwrapped.
Every mismatch is reported by name in one error. This module never imports a model builder.
"""

import re

import numpy as np

from keras_visrec.converters.convnext_keys import assign_state_dict, conv_kernel, linear_kernel, unwrap_state_dict

__all__ = ["CIFAR_LAYOUTS", "convert_cifar_state_dict", "detect_cifar_layout", "load_cifar_state_dict"]

CIFAR_LAYOUTS = ("vgg", "resnet", "preresnet", "densenet")
_BN = {"weight": "gamma", "bias": "beta", "running_mean": "moving_mean", "running_var": "moving_variance"}
_HEAD = {"vgg": ("fc_1", "fc_1_bn", "classifier")}


def detect_cifar_layout(keys, *, source="checkpoint"):
    """Names the official network a state dict comes from (one of ``CIFAR_LAYOUTS``)."""
    keys = set(keys)
    if "feature.0.weight" in keys or any(k.startswith("feature.") for k in keys):
        return "vgg"
    if "dense1.0.conv1.weight" in keys:
        return "densenet"
    if "layer1.0.conv3.weight" in keys:
        return "preresnet"
    if "layer1.0.conv1.weight" in keys:
        return "resnet"
    raise ValueError(f"{source}: not an official CIFAR VGG / ResNet / PreResNet / DenseNet state dict "
                     f"(first keys: {sorted(keys)[:6]}); known layouts: {CIFAR_LAYOUTS}.")


def _vgg_modules(state):
    """``{feature index: (our conv suffix, our bn suffix)}`` and the cfg the positions imply."""
    positions = sorted({int(m[1]) for k in state if (m := re.fullmatch(r"feature\.(\d+)\.weight", k))
                        and np.ndim(state[k]) == 4})
    modules, cfg, index, previous = {}, [], 0, None
    for position in positions:
        pools = position if previous is None else position - previous - 3  # conv, BN, ReLU per width
        cfg += ["M"] * pools
        index += pools
        modules[position] = (f"conv_{index}", f"bn_{index}")
        cfg.append(int(state[f"feature.{position}.weight"].shape[0]))
        index, previous = index + 1, position
    return modules, cfg


def _module_suffix(module, layout, vgg):
    """``(our layer suffix, kind)`` for an official module path; kind is conv / bn / linear / select."""
    if layout == "vgg":
        if m := re.fullmatch(r"feature\.(\d+)", module):
            k = int(m[1])
            if k in vgg:
                return vgg[k][0], "conv"
            if k - 1 in vgg:
                return vgg[k - 1][1], "bn"
            return None
        return {"classifier.0": ("fc_1", "linear"), "classifier.1": ("fc_1_bn", "bn"),
                "classifier.3": ("classifier", "linear"), "classifier": ("classifier", "linear")}.get(module)
    if module == "conv1":
        return "conv_1", "conv"
    if module == "fc":
        return "classifier", "linear"
    if layout == "resnet":
        if module == "bn1":
            return "bn_1", "bn"
        if m := re.fullmatch(r"layer([123])\.(\d+)\.(conv1|bn1|conv2|bn2|downsample\.0|downsample\.1)", module):
            part = {"conv1": ("conv_1", "conv"), "bn1": ("bn_1", "bn"), "conv2": ("conv_2", "conv"),
                    "bn2": ("bn_2", "bn"), "downsample.0": ("shortcut", "conv"),
                    "downsample.1": ("shortcut_bn", "bn")}[m[3]]
            return f"stage_{int(m[1]) - 1}_block_{m[2]}_{part[0]}", part[1]
        return None
    if module in ("bn", "select"):
        return module, "bn" if module == "bn" else "select"
    if layout == "preresnet":
        if m := re.fullmatch(r"layer([123])\.(\d+)\.(bn[123]|conv[123]|select|downsample\.0)", module):
            part = m[3]
            suffix = "downsample" if part == "downsample.0" else "select" if part == "select" else \
                f"{part[:-1]}_{part[-1]}"
            kind = "select" if part == "select" else "bn" if part.startswith("bn") else "conv"
            return f"stage_{int(m[1]) - 1}_block_{m[2]}_{suffix}", kind
        return None
    if m := re.fullmatch(r"(dense|trans)([123])\.(?:(\d+)\.)?(bn1|select|conv1)", module):
        if m[1] == "dense" and m[3] is not None:
            prefix = f"dense_{int(m[2]) - 1}_layer_{m[3]}"
        elif m[1] == "trans" and m[3] is None:
            prefix = f"transition_{int(m[2]) - 1}"
        else:
            return None
        return {"bn1": (f"{prefix}_bn", "bn"), "select": (f"{prefix}_select", "select"),
                "conv1": (f"{prefix}_conv", "conv")}[m[4]]
    return None


def convert_cifar_state_dict(state, layout=None, *, source="checkpoint"):
    """Maps an official CIFAR state dict to our layer suffixes.

    Returns:
        ``(converted, selections, unmapped, layout, cfg)``: ``converted`` is ``{suffix: {slot:
        (Keras-layout array, upstream key)}}`` (the form ``assign_state_dict`` takes),
        ``selections`` ``{suffix: channel indices}``, ``unmapped`` the upstream keys no rule matched,
        ``cfg`` the VGG layer list the feature positions imply (None for the other layouts).
    """
    layout = layout or detect_cifar_layout(state, source=source)
    if layout not in CIFAR_LAYOUTS:
        raise ValueError(f"`layout` must be one of {CIFAR_LAYOUTS}; received layout={layout!r}.")
    vgg, cfg = _vgg_modules(state) if layout == "vgg" else ({}, None)
    converted, selections, unmapped = {}, {}, []
    for key, value in state.items():
        module, _, param = key.rpartition(".")
        if param == "num_batches_tracked":
            continue
        target = _module_suffix(module, layout, vgg)
        if target is None:
            unmapped.append(key)
            continue
        suffix, kind = target
        value = np.asarray(value, dtype=np.float32)
        if kind == "select" and param == "indexes":
            selections[suffix] = np.flatnonzero(value).tolist() if value.ndim == 1 else None
            continue
        if kind == "bn" and param in _BN:
            slot, value = _BN[param], value
        elif kind in ("conv", "linear") and param in ("weight", "bias"):
            slot = "kernel" if param == "weight" else "bias"
            if param == "weight":
                value = conv_kernel(value) if kind == "conv" else linear_kernel(value)
        else:
            unmapped.append(key)
            continue
        converted.setdefault(suffix, {})[slot] = (value, key)
    return converted, selections, unmapped, layout, cfg


def _selection_plan(model, prefix, selections, source):
    """``[(ChannelSelection, indices or None)]`` taking the checkpoint's channels; mismatches in one error."""
    from keras_visrec.converters.convnext_keys import KeyMismatchError

    layers = {layer.name: layer for layer in model.layers}
    problems, plan = [], []
    for suffix, indices in selections.items():
        layer = layers.get(f"{prefix}_{suffix}")
        if layer is None or not hasattr(layer, "indices"):
            problems.append(f"{suffix}.indexes: the model has no ChannelSelection {prefix}_{suffix}")
            continue
        channels = int(layer.input.shape[-1])
        chosen = None if indices is None or indices == list(range(channels)) else indices
        width = channels if layer.indices is None else len(layer.indices)
        wanted = channels if chosen is None else len(chosen)
        if wanted != width or (chosen is not None and max(chosen) >= channels):
            problems.append(f"{suffix}.indexes: the checkpoint keeps {wanted} of {channels} channels, the model's "
                            f"{layer.name!r} {width}")
            continue
        plan.append((layer, chosen))
    if problems:
        raise KeyMismatchError(f"Checkpoint {source} does not fit model {model.name!r} (channel selection):\n"
                               + "\n".join(f"    {p}" for p in problems))
    return plan


def load_cifar_state_dict(model, state, *, include_top, source, strict=True, layout=None, prefer_ema=False):
    """The ``"cifar"`` family loader: fills a ``keras_visrec.cifar`` model from an official checkpoint.

    Args:
        model: keras.Model. A model built by ``keras_visrec.cifar`` (its name prefixes the layers),
            with the checkpoint's ``cfg`` when the checkpoint is pruned.
        state: dict. What ``load_pytorch_checkpoint`` read (wrappers are unwrapped).
        include_top: bool. Whether the model has its head; without, head keys are ignored.
        source: str. File name for messages.
        strict: bool. Must be True: the CIFAR nets load whole (use ``include_top=False`` for a
            headless model).
        layout: str or None. One of ``CIFAR_LAYOUTS``; detected from the keys when None.
        prefer_ema: bool. Take ``model_ema`` over the model weights when a checkpoint has both.

    Returns:
        A summary dict: ``layout``, ``assigned`` layer names, ``ignored`` upstream keys, ``selected``
        ChannelSelection layers given the checkpoint's channels, ``cfg`` stored in the file (or None).
    """
    if not strict:
        raise ValueError("CIFAR checkpoints load whole (strict=True); use include_top=False to leave out the "
                         f"head. Received strict={strict!r} for {source}.")
    stored_cfg = state.get("cfg") if isinstance(state, dict) else None
    tensors = unwrap_state_dict(state, prefer_ema=prefer_ema, source=source)
    converted, selections, unmapped, layout, implied = convert_cifar_state_dict(tensors, layout, source=source)
    head = _HEAD.get(layout, ("classifier",))
    ignored = []
    if not include_top:
        for suffix in head:
            ignored.extend(key for _, key in converted.pop(suffix, {}).values())
    elif "classifier" in converted:
        classes = converted["classifier"]["kernel"][0].shape[-1]
        output = int(model.outputs[0].shape[-1])
        if classes != output:
            raise ValueError(f"Checkpoint {source} has a {classes}-class head; the model {model.name!r} has "
                             f"{output} classes: pass classes={classes} (or include_top=False).")
    hint = f" (the checkpoint's cfg: {stored_cfg or implied})" if (stored_cfg or implied) else ""
    try:
        plan = _selection_plan(model, model.name, selections, source)
        summary = assign_state_dict(model, converted, include_top=True, source=source, unmapped=unmapped)
    except ValueError as error:
        raise type(error)(f"{error}{hint}") from None
    for layer, chosen in plan:  # only once every weight fitted: a failed load changes nothing
        layer.indices = chosen
    selected = [layer.name for layer, _ in plan]
    summary.update(layout=layout, ignored=summary["ignored"] + ignored, selected=selected, cfg=stored_cfg)
    return summary

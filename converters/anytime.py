"""Official HRNet-family checkpoints → ``AnytimeHRNet`` / ``HRNetV2`` (filled by layer name).

Layouts (detected from the keys, :func:`detect_layout`):

* ``"anytime"`` — ADP-C (github.com/liuzhuang13/anytime): backbone, ``exit1``–``exit3`` and
  ``last_layer``. The official training script saves ``FullEEModel(model, loss).state_dict()``,
  so every released ``final_state.pth`` has ``model.`` in front of its keys and the loss's
  ``loss.criterion.weight`` (Cityscapes class weights) beside them; ``checkpoint.pth.tar`` wraps
  that in ``{"epoch", "best_mIoU", "state_dict", "optimizer"}``. Loss keys and training state
  are ignored (listed in the report); masked convolutions carry ``Lambda`` (→ ``rbf_lambda``)
  and the constant ``square_dis`` (dropped).
* ``"anytime_pose"`` — the same with the pose head ``final_layer`` instead of ``last_layer``.
* ``"hrnet_seg"`` — HRNet-Semantic-Segmentation: backbone and ``last_layer``, no exits.
* ``"hrnet_pose"`` — deep-high-resolution-net.pytorch (``pose_hrnet``): backbone whose last
  module fuses into branch 0 only, and ``final_layer`` (1×1 conv, one map per joint).
* ``"hrnet_imagenet"`` — HRNet-Image-Classification (``hrnetv2_w48_imagenet_pretrained.pth``,
  ``hrnet_w18_small_model_v2.pth``): backbone by key match, as the paper initialises HRNet; the
  classification head (``incre_modules``, ``downsamp_modules``, ``final_layer``, ``classifier``)
  is reported as skipped and the model's exits and dense head keep their initialisation.

Keys are PyTorch module paths (``stage3.0.branches.1.2.conv1.weight``, ``exit1.5.weight``),
possibly behind ``model.`` or ``module.``; our layer names are those paths with ``_`` for ``.``
behind the model name, so the key map is mechanical and the per-kind helpers state the
transposes. Before anything is assigned, a checkpoint of another task, exit type, exit width,
width or class count is refused with the keys and shapes that disagree. This module never
imports a model builder: it fills the model it is given.
"""

import re

import numpy as np

__all__ = ["AnytimeLoadReport", "LAYOUTS", "convert_anytime_state_dict", "detect_layout", "family_loader",
           "infer_anytime_config", "load_anytime_checkpoint", "unwrap_anytime_state"]

LAYOUTS = ("anytime", "anytime_pose", "hrnet_seg", "hrnet_pose", "hrnet_imagenet")
_PREFIXES = ("model.", "module.")
_DROPPED = ("square_dis", "num_batches_tracked")  # a constant of the masked conv; BN's step counter
_IMAGENET_HEAD = ("incre_modules", "downsamp_modules", "final_layer", "classifier")
_RH_EXIT1_CLASSIFIER = "exit1.21"  # 3 pool units + 2 up units of 4 layers, one upsample, then the classifier
_EE_EXIT1_CLASSIFIER = "exit1.3"
_TASK_OF_LAYOUT = {"anytime": "segmentation", "hrnet_seg": "segmentation", "anytime_pose": "pose",
                   "hrnet_pose": "pose", "hrnet_imagenet": None}


class AnytimeLoadReport(dict):
    """What a load did, keys by name.

    ``layout``; ``loaded`` (tensors assigned); ``ignored`` (training state: ``loss.*``, the wrapper's
    epoch / optimizer / best_mIoU); ``skipped`` (tensors with no place in this model by design: an
    ImageNet head, fuse rows the pose network does not have, the head under ``include_top=False``,
    RBF λ of an unmasked model); ``unused`` (anything else left over: an error in strict mode);
    ``missing`` (model weights the checkpoint should have filled: an error in strict mode);
    ``not_in_checkpoint`` (model weights this layout does not cover, e.g. exits from an ImageNet
    file: left at their initialisation).
    """


def _strip(key):
    changed = True
    while changed:
        changed = False
        for prefix in _PREFIXES:
            if key.startswith(prefix):
                key, changed = key[len(prefix):], True
    return key


def unwrap_anytime_state(state):
    """``(tensors {key: array}, ignored [names])``: unwraps ``{"state_dict": …}`` / ``{"model": …}``
    training checkpoints, strips ``model.`` / ``module.`` and sets aside the loss's keys."""
    ignored = []
    for wrapper in ("state_dict", "model"):
        if isinstance(state.get(wrapper), dict):
            ignored += sorted(str(k) for k in state if k != wrapper)
            state = state[wrapper]
            break
    tensors = {}
    for key, value in state.items():
        if not hasattr(value, "shape"):
            ignored.append(str(key))
            continue
        key = _strip(str(key))
        if key.startswith("loss."):
            ignored.append(key)
            continue
        if key.rpartition(".")[2] in _DROPPED:
            continue
        tensors[key] = np.asarray(value)
    return tensors, ignored


def _modules(tensors):
    modules = {}
    for key, value in tensors.items():
        module, _, param = key.rpartition(".")
        modules.setdefault(module, {})[param] = value  # a key without a module lands under "" (unused)
    return modules


def detect_layout(tensors):
    """One of :data:`LAYOUTS` from the (unwrapped) keys."""
    keys = set(tensors)
    has = lambda prefix: any(k.startswith(prefix) for k in keys)  # noqa: E731
    if has("classifier.") or has("incre_modules.") or has("downsamp_modules."):
        return "hrnet_imagenet"
    exits = has("exit1.")
    if "final_layer.weight" in keys:
        return "anytime_pose" if exits else "hrnet_pose"
    return "anytime" if exits else "hrnet_seg"


def _count(keys, pattern):
    found = [int(m.group(1)) for m in map(re.compile(pattern).match, keys) if m]
    return max(found) + 1 if found else 0


def infer_anytime_config(state):
    """What a checkpoint holds, from its keys and shapes (``state`` raw or unwrapped).

    Returns ``{"layout", "task", "classes", "exit_type", "exit_width", "masked", "config"}``;
    ``config`` is ``{"stem", "layer1": (blocks, planes), "stages": ((modules, blocks, widths), …)}``
    as in ``keras_visrec.hrnet.HRNET_CONFIGS``. ``classes`` / ``exit_type`` are `None` where the
    layout has no head / exits.
    """
    tensors = state if all(hasattr(v, "shape") for v in state.values()) else unwrap_anytime_state(state)[0]
    tensors = {_strip(k): v for k, v in tensors.items()}
    layout = detect_layout(tensors)
    keys = list(tensors)
    try:
        stem = int(tensors["conv1.weight"].shape[0])
        layer1 = (_count(keys, r"layer1\.(\d+)\."), int(tensors["layer1.0.conv1.weight"].shape[0]))
        stages = []
        for s in (2, 3, 4):
            modules = _count(keys, rf"stage{s}\.(\d+)\.")
            branches = _count(keys, rf"stage{s}\.0\.branches\.(\d+)\.")
            blocks = tuple(_count(keys, rf"stage{s}\.0\.branches\.{b}\.(\d+)\.") for b in range(branches))
            widths = tuple(int(tensors[f"stage{s}.0.branches.{b}.0.conv1.weight"].shape[0]) for b in range(branches))
            stages.append((modules, blocks, widths))
    except KeyError as error:
        raise ValueError(f"Not an HRNet checkpoint: key {error.args[0]!r} is missing.") from None
    task = _TASK_OF_LAYOUT[layout]
    classes = None
    if task == "pose":
        classes = int(tensors["final_layer.weight"].shape[0])
    elif "last_layer.3.weight" in tensors:
        classes = int(tensors["last_layer.3.weight"].shape[0])
    exit_type = exit_width = None
    if layout.startswith("anytime"):
        exit_type = "rh" if f"{_RH_EXIT1_CLASSIFIER}.weight" in tensors else "ee"
        exit_width = int(tensors["exit1.1.weight"].shape[0]) if exit_type == "rh" else None
    return {"layout": layout, "task": task, "classes": classes, "exit_type": exit_type, "exit_width": exit_width,
            "masked": any(k.endswith(".Lambda") for k in keys),
            "config": {"stem": stem, "layer1": layer1, "stages": tuple(stages)}}


def _conv_values(params):
    kernel = np.transpose(params.pop("weight"), (2, 3, 1, 0))  # (O, I, kh, kw) -> (kh, kw, I, O)
    values = {"kernel": kernel}
    if "bias" in params:
        values["bias"] = params.pop("bias")
    if "Lambda" in params:
        values["rbf_lambda"] = np.asarray(params.pop("Lambda"), "float32").reshape(())
    return values


def _bn_values(params):
    names = {"weight": "gamma", "bias": "beta", "running_mean": "moving_mean", "running_var": "moving_variance"}
    return {ours: params.pop(theirs) for theirs, ours in names.items() if theirs in params}


_THEIRS = {"kernel": "weight", "bias": "bias", "rbf_lambda": "Lambda", "gamma": "weight", "beta": "bias",
           "moving_mean": "running_mean", "moving_variance": "running_var"}


def _torch_shape(attribute, shape):
    """A Keras weight's shape in the checkpoint's (PyTorch) layout, for messages."""
    shape = tuple(int(v) for v in shape)
    return (shape[3], shape[2], shape[0], shape[1]) if attribute == "kernel" else shape


def _segment(path):
    """``exit``, ``head`` or ``backbone``: the part of the network a module path (``exit1.5``) or a
    layer name behind the model prefix (``last_layer_3``) belongs to."""
    if path.startswith("exit"):
        return "exit"
    if path.startswith(("last_layer", "final_layer")):
        return "head"
    return "backbone"


def _model_facts(network, layers):
    prefix = network.name + "_"
    task = "pose" if prefix + "final_layer" in layers else "segmentation" if prefix + "last_layer_3" in layers else None
    exit_type = "rh" if prefix + "exit1_21" in layers else "ee" if prefix + "exit1_3" in layers else None
    return task, exit_type


def _filters(layers, name):
    layer = layers.get(name)
    return None if layer is None or not hasattr(layer, "filters") else int(layer.filters)


def _check_compatible(tensors, layout, network, layers, source):
    """Refuses a checkpoint of another task, exit type, exit width or class count, naming the keys."""
    prefix = network.name + "_"
    task, exit_type = _model_facts(network, layers)
    theirs = _TASK_OF_LAYOUT[layout]
    if theirs is not None and task is not None and theirs != task:
        key = "final_layer.weight" if theirs == "pose" else "last_layer.3.weight"
        raise ValueError(
            f"{source}: this is a {theirs} checkpoint ({key} of shape {tensors[key].shape}) but "
            f"{network.name!r} is a {task} model; build it with task={theirs!r}.")
    head = {"pose": ("final_layer.weight", prefix + "final_layer"),
            "segmentation": ("last_layer.3.weight", prefix + "last_layer_3")}.get(theirs)
    if head is not None and head[0] in tensors and _filters(layers, head[1]) is not None:
        want, have = int(tensors[head[0]].shape[0]), _filters(layers, head[1])
        if want != have:
            raise ValueError(f"{source}: the checkpoint has {want} classes ({head[0]} of shape "
                             f"{tensors[head[0]].shape}) but the model was built with classes={have}; build it with "
                             f"classes={want}.")
    if layout.startswith("anytime") and exit_type is not None:
        theirs_exit = "rh" if f"{_RH_EXIT1_CLASSIFIER}.weight" in tensors else "ee"
        if theirs_exit != exit_type:
            key = _RH_EXIT1_CLASSIFIER if theirs_exit == "rh" else _EE_EXIT1_CLASSIFIER
            raise ValueError(f"{source}: the checkpoint has {theirs_exit.upper()} exits ({key}.weight present) but "
                             f"the model was built with exit_type={exit_type!r}; build it with "
                             f"exit_type={theirs_exit!r}.")
        if exit_type == "rh":
            want, have = int(tensors["exit1.1.weight"].shape[0]), _filters(layers, prefix + "exit1_1")
            if have is not None and want != have:
                raise ValueError(f"{source}: the checkpoint's redesigned exits are {want} wide (exit1.1.weight of "
                                 f"shape {tensors['exit1.1.weight'].shape}) but the model was built with "
                                 f"exit_width={have}; build it with exit_width={want}.")


def _widths_hint(tensors):
    try:
        config = infer_anytime_config(tensors)["config"]
    except ValueError:
        return ""
    stages = config["stages"]
    return (f" The checkpoint is an HRNet with branch widths {'/'.join(map(str, stages[-1][2]))}, "
            f"modules per stage {tuple(s[0] for s in stages)} and blocks per branch {stages[0][1][0]}.")


def convert_anytime_state_dict(state, model, strict=True, include_top=True, source="checkpoint"):
    """Copies an official HRNet-family state dict into ``model`` (an ``AnytimeHRNet`` or ``HRNetV2``).

    Args:
        state: ``{key: array}`` as read by ``load_pytorch_checkpoint`` (training wrappers
            ``{"state_dict": …}`` / ``{"model": …}`` are unwrapped).
        model: the Keras model to fill.
        strict: bool. Raise when a weight the layout covers stays unfilled or a tensor is left
            over (``loss.*``, training state and the skipped keys of :class:`AnytimeLoadReport`
            never count). Defaults to `True`.
        include_top: bool. `False`: the checkpoint's head is skipped (a headless HRNetV2).
            Defaults to `True`.
        source: str. File name used in error messages.

    Returns:
        :class:`AnytimeLoadReport`.

    Raises:
        ValueError: the checkpoint is of another task, exit type, exit width or class count, its
            tensors have other shapes than the model's (all listed), or, in strict mode, keys
            are left over or missing.
    """
    import keras

    tensors, ignored = unwrap_anytime_state(state)
    layout = detect_layout(tensors)
    network = getattr(model, "network", model)
    layers = {layer.name: layer for layer in network.layers}
    _check_compatible(tensors, layout, network, layers, source)
    task, _ = _model_facts(network, layers)
    report = AnytimeLoadReport(layout=layout, loaded=[], ignored=ignored, skipped=[], unused=[], missing=[],
                               not_in_checkpoint=[])
    assignments, mismatched = [], []
    for module, params in _modules(tensors).items():
        keys = [f"{module}.{p}" for p in params]
        if layout == "hrnet_imagenet" and module.split(".")[0] in _IMAGENET_HEAD:
            report["skipped"] += keys  # the ImageNet classification head
            continue
        if not include_top and _segment(module) == "head":
            report["skipped"] += keys
            continue
        name = f"{network.name}_{module.replace('.', '_')}"
        layer = layers.get(name)
        if layer is None:
            last_fuse = re.match(r"stage4\.(\d+)\.fuse_layers\.([1-9])\.", module + ".")
            if task == "pose" and last_fuse and f"{network.name}_stage4_{last_fuse.group(1)}_fuse_0_add" in layers \
                    and f"{network.name}_stage4_{last_fuse.group(1)}_fuse_1_add" not in layers:
                report["skipped"] += keys  # fuse rows 1-3 of the last module: the pose network keeps branch 0
            else:
                report["unused"] += keys
            continue
        params = dict(params)
        if isinstance(layer, keras.layers.Conv2D):
            values = _conv_values(params)
        elif isinstance(layer, keras.layers.BatchNormalization):
            values = _bn_values(params)
        else:
            report["unused"] += keys
            continue
        report["unused"] += [f"{module}.{p}" for p in params]
        for attribute, value in values.items():
            variable = getattr(layer, attribute, None)
            if variable is None:
                (report["skipped"] if attribute == "rbf_lambda" else report["unused"]).append(f"{module}.{attribute}")
                continue
            if tuple(variable.shape) != tuple(value.shape):
                mismatched.append(f"{module}.{_THEIRS[attribute]}: checkpoint {_torch_shape(attribute, value.shape)}, "
                                  f"model {_torch_shape(attribute, variable.shape)}")
                continue
            assignments.append((variable, value, f"{module}.{attribute}"))
    if mismatched:
        raise ValueError(f"{source} does not fit {network.name!r}: {len(mismatched)} tensors have other shapes, e.g. "
                         + "; ".join(mismatched[:8]) + "." + _widths_hint(tensors))
    filled = set()
    for variable, value, key in assignments:
        variable.assign(value.astype(variable.dtype))
        filled.add(id(variable))
        report["loaded"].append(key)
    covered = {"anytime": ("backbone", "exit", "head"), "anytime_pose": ("backbone", "exit", "head"),
               "hrnet_seg": ("backbone", "head"), "hrnet_pose": ("backbone", "head"),
               "hrnet_imagenet": ("backbone",)}[layout]
    for layer in network.layers:
        part = _segment(layer.name[len(network.name) + 1:])
        for weight in layer.weights:
            if id(weight) in filled or weight.path.endswith("rbf_lambda"):
                continue
            (report["missing"] if part in covered else report["not_in_checkpoint"]).append(weight.path)
    if strict and (report["missing"] or report["unused"]):
        raise ValueError(
            f"{source} and model {network.name!r} disagree ({layout} layout): missing {report['missing'][:8]} "
            f"({len(report['missing'])} in all), unused {report['unused'][:8]} ({len(report['unused'])} in all)."
            + _widths_hint(tensors))
    return report


def load_anytime_checkpoint(model, path, strict=True, include_top=True):
    """Reads an official ``.pth`` / ``.pth.tar`` without torch and fills ``model``; returns the report."""
    from keras_visrec.converters.pytorch_reader import load_pytorch_checkpoint

    return convert_anytime_state_dict(load_pytorch_checkpoint(path), model, strict=strict, include_top=include_top,
                                      source=str(path))


def family_loader(model, state, *, include_top, source, strict=True, **_):
    """The ``converters.loading`` loader of the ``hrnet`` and ``adpc`` families."""
    report = convert_anytime_state_dict(state, model, strict=strict, include_top=include_top, source=source)
    return {"layout": report["layout"], "assigned": report["loaded"],
            "ignored": report["ignored"] + report["skipped"] + report["unused"], "report": report}

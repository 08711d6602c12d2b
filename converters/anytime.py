"""Official ADP-C ("anytime", github.com/liuzhuang13/anytime) checkpoints → ``AnytimeHRNet``.

The official state-dict keys are PyTorch module paths (``stage3.0.branches.1.2.conv1.weight``,
``exit1.5.weight``, ``last_layer.3.bias``), possibly behind ``model.`` (the training wrapper) or
``module.`` (DataParallel). Our layer names are those paths with ``_`` for ``.`` behind the model
name, so the key map is mechanical; the per-kind helpers below state the transposes. ``Lambda``
(the RBF λ of a masked conv) maps to ``rbf_lambda``; ``square_dis`` is a constant and is dropped.
This module never imports a model builder: it fills a model it is given.
"""

import numpy as np

__all__ = ["AnytimeLoadReport", "convert_anytime_state_dict", "load_anytime_checkpoint"]

_PREFIXES = ("model.", "module.")
_DROPPED = ("square_dis", "num_batches_tracked")


class AnytimeLoadReport(dict):
    """``{"loaded": [...], "unused": [...], "missing": [...]}`` — keys by name."""


def _strip(key):
    changed = True
    while changed:
        changed = False
        for prefix in _PREFIXES:
            if key.startswith(prefix):
                key, changed = key[len(prefix):], True
    return key


def _conv_values(layer, params, key):
    kernel = np.transpose(params.pop("weight"), (2, 3, 1, 0))  # (O, I, kh, kw) -> (kh, kw, I, O)
    values = {"kernel": kernel}
    if "bias" in params:
        values["bias"] = params.pop("bias")
    if "Lambda" in params:
        values["rbf_lambda"] = np.asarray(params.pop("Lambda"), "float32").reshape(())
    return values


def _bn_values(layer, params, key):
    return {"gamma": params.pop("weight"), "beta": params.pop("bias"),
            "moving_mean": params.pop("running_mean"), "moving_variance": params.pop("running_var")}


def _group(state):
    modules = {}
    for key, value in state.items():
        if not hasattr(value, "shape"):
            continue
        key = _strip(key)
        module, _, param = key.rpartition(".")
        if param in _DROPPED or not module:
            continue
        modules.setdefault(module, {})[param] = np.asarray(value)
    return modules


def convert_anytime_state_dict(state, model, strict=True):
    """Copies an official anytime / HRNet-seg state dict into ``model`` (an ``AnytimeHRNet`` or HRNetV2).

    Args:
        state: ``{key: array}`` (e.g. from ``load_pytorch_checkpoint``; a ``{"state_dict": …}`` wrapper
            is unwrapped).
        model: the Keras model to fill.
        strict: bool. Raise when a Keras weight stays unfilled or a checkpoint tensor is unused.
            Defaults to `True`.

    Returns:
        :class:`AnytimeLoadReport`.
    """
    import keras

    for wrapper in ("state_dict", "model"):
        if isinstance(state.get(wrapper), dict):
            state = state[wrapper]
    network = getattr(model, "network", model)
    layers = {layer.name: layer for layer in network.layers}
    modules = _group(state)
    classes = getattr(model, "classes", None) or int(network.outputs[-1].shape[-1])
    head = modules.get("last_layer.3", {}).get("weight")
    if head is not None and head.shape[0] != classes:
        raise ValueError(f"The checkpoint has {head.shape[0]} classes but the model was built with "
                         f"num_classes={classes}; build it with classes={head.shape[0]}.")
    report = AnytimeLoadReport(loaded=[], unused=[], missing=[])
    filled = set()
    for module, params in modules.items():
        name = f"{network.name}_{module.replace('.', '_')}"
        layer = layers.get(name)
        if layer is None:
            report["unused"] += [f"{module}.{p}" for p in params]
            continue
        params = dict(params)
        if isinstance(layer, keras.layers.Conv2D):
            values = _conv_values(layer, params, module)
        elif isinstance(layer, keras.layers.BatchNormalization):
            values = _bn_values(layer, params, module)
        else:
            report["unused"] += [f"{module}.{p}" for p in params]
            continue
        report["unused"] += [f"{module}.{p}" for p in params]
        for attribute, value in values.items():
            variable = getattr(layer, attribute, None)
            if variable is None:
                report["unused"].append(f"{module}.{attribute}")
                continue
            if tuple(variable.shape) != tuple(value.shape):
                raise ValueError(f"Checkpoint tensor {module} ({attribute}) has shape {value.shape}; "
                                 f"layer {name!r} expects {tuple(variable.shape)}.")
            variable.assign(value.astype(variable.dtype))
            filled.add(id(variable))
            report["loaded"].append(f"{module}.{attribute}")
    report["missing"] = [w.path for w in network.weights if id(w) not in filled and not w.path.endswith("rbf_lambda")]
    if strict and (report["missing"] or report["unused"]):
        raise ValueError(f"Checkpoint and model disagree: missing {report['missing'][:10]} "
                         f"({len(report['missing'])}), unused {report['unused'][:10]} ({len(report['unused'])}).")
    return report


def load_anytime_checkpoint(model, path, strict=True):
    """Reads an official ``.pth`` without torch and fills ``model``; returns the load report."""
    from keras_visrec.converters.pytorch_reader import load_pytorch_checkpoint

    return convert_anytime_state_dict(load_pytorch_checkpoint(path), model, strict=strict)

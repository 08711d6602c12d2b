"""The ``weights=`` argument shared by every builder: what it accepts and how it is loaded.

Accepted forms:

* ``None`` — random initialisation;
* a local Keras file: ``.keras`` (weights copied by layer name, so a file saved with a head
  also loads into ``include_top=False``) or ``.weights.h5`` (same architecture required).
"""

import os

import keras

__all__ = ["ACCEPTED_WEIGHTS", "load_weights", "validate_weights_argument"]

KERAS_SUFFIXES = (".keras", ".weights.h5")
ACCEPTED_WEIGHTS = "None or a local .keras / .weights.h5 file"


def _suffix(path):
    lower = str(path).lower()
    for suffix in KERAS_SUFFIXES:
        if lower.endswith(suffix):
            return suffix
    return None


def validate_weights_argument(weights, *, arch, include_top, classes):
    """Raises a clear error for a ``weights`` value no loader accepts (before building)."""
    if weights is None:
        return
    if not isinstance(weights, (str, os.PathLike)):
        raise TypeError(f"`weights` must be {ACCEPTED_WEIGHTS}; received {type(weights).__name__}: {weights!r}.")
    if _suffix(weights) is not None:
        if not os.path.isfile(weights):
            raise FileNotFoundError(f"`weights` file not found: {os.fspath(weights)!r}.")
        return
    raise ValueError(f"`weights` must be {ACCEPTED_WEIGHTS}; received weights={weights!r} (arch {arch}).")


def load_weights(model, weights, *, arch, include_top, classes):
    """Loads ``weights`` (already validated) into a freshly built ``model``."""
    suffix = _suffix(weights)
    path = os.fspath(weights)
    if suffix == ".weights.h5":
        try:
            model.load_weights(path)
        except Exception as error:  # keras raises several types for a mismatching file
            raise ValueError(f"Could not load weights file {path!r} into {model.name}: {error}") from error
        return model
    if suffix == ".keras":
        try:
            source = keras.saving.load_model(path, compile=False)
        except Exception as error:
            raise ValueError(f"Could not read Keras file {path!r}: {error}") from error
        copy_weights_by_name(source, model, source_name=path)
        return model
    raise ValueError(f"`weights` must be {ACCEPTED_WEIGHTS}; received weights={weights!r}.")


def copy_weights_by_name(source, target, *, source_name="source model", allow_missing=()):
    """Copies layer weights from ``source`` to ``target`` matching layers by name and shape.

    Every target layer holding weights must find its counterpart (except names listed in
    ``allow_missing``); mismatching shapes are reported together in one error.
    """
    source_layers = {layer.name: layer for layer in _walk_layers(source)}
    problems = []
    assignments = []
    for layer in _walk_layers(target):
        if not layer.weights:
            continue
        other = source_layers.get(layer.name)
        if other is None:
            if layer.name not in allow_missing:
                problems.append(f"missing layer {layer.name!r}")
            continue
        values = other.get_weights()
        expected = [tuple(w.shape) for w in layer.weights]
        got = [tuple(v.shape) for v in values]
        if expected != got:
            problems.append(f"layer {layer.name!r}: shapes {got} in file, model expects {expected}")
            continue
        assignments.append((layer, values))
    if problems:
        raise ValueError(f"Weights in {source_name} do not fit model {target.name!r}: " + "; ".join(problems))
    for layer, values in assignments:
        layer.set_weights(values)
    return target


def _walk_layers(model):
    for layer in model.layers:
        if isinstance(layer, keras.Model):
            yield from _walk_layers(layer)
        else:
            yield layer

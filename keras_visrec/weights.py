"""The ``weights=`` argument shared by every builder: what it accepts and how it is loaded.

Accepted forms:

* ``None`` — random initialisation;
* ``"imagenet"`` — the default verified set: keras.applications' converted ConvNeXt files,
  whose sha256 are published in keras' source (ConvNeXt T / S / B / L / XL);
* a zoo id, ``{arch}.{source}_{pretraining}[_{resolution}]`` (see ``keras_visrec.zoo``), e.g.
  ``"convnext_tiny.fb_in22k_ft_in1k_384"``; entries without a published hash need
  ``KERAS_VISREC_ALLOW_UNVERIFIED=1`` (or ``zoo.fetch_weights(id, allow_unverified=True)`` and
  the returned path);
* a local file: ``.pth`` / ``.pt`` / ``.bin`` / ``.safetensors`` / ``.pth.tar`` (official, timm,
  HF, torchvision or mmpretrain layout, read without torch), ``.keras`` (weights copied by layer
  name, so a file saved with a head also loads into ``include_top=False``) or ``.weights.h5`` (same
  architecture required);
* a keras-hub-style preset directory (``keras_visrec.presets.save_preset``), copied by layer name.
"""

import os

import keras

__all__ = ["ACCEPTED_WEIGHTS", "copy_weights_by_name", "is_weights_file", "load_weights", "resolve_weights", "validate_weights_argument"]

KERAS_SUFFIXES = (".keras", ".weights.h5")
TORCH_SUFFIXES = (".pth", ".pt", ".bin", ".safetensors", ".pth.tar")
ACCEPTED_WEIGHTS = (
    'None, "imagenet", a zoo id (keras_visrec.zoo.list_weights()), or a local '
    ".pth / .pt / .bin / .safetensors / .pth.tar / .keras / .weights.h5 file, or a preset directory"
)


def is_weights_file(weights):
    """Whether ``weights`` names a file by its extension (it need not exist yet)."""
    return isinstance(weights, (str, os.PathLike)) and _suffix(weights) is not None


def _suffix(path):
    lower = str(path).lower()
    for suffix in KERAS_SUFFIXES + TORCH_SUFFIXES:
        if lower.endswith(suffix):
            return suffix
    return None


def resolve_weights(weights, *, arch):
    """Classifies a ``weights`` value: ``("none" | "file" | "preset" | "zoo", detail)``.

    ``detail`` is the path for files and preset directories, the :class:`keras_visrec.zoo.ZooEntry` for
    ``"imagenet"`` and zoo ids. Raises a clear error for anything no loader accepts.
    """
    if weights is None:
        return "none", None
    if not isinstance(weights, (str, os.PathLike)):
        raise TypeError(f"`weights` must be {ACCEPTED_WEIGHTS}; received {type(weights).__name__}: {weights!r}.")
    text = os.fspath(weights)
    from keras_visrec import zoo

    if text == "imagenet":
        entry = zoo.default_weights(arch)
        if entry is None:
            available = zoo.list_weights(arch=arch)
            raise ValueError(
                f'weights="imagenet" is the keras.applications set with published hashes, available for '
                f"{sorted({e.arch for e in zoo.load_catalogue().values() if e.default})}; received it for "
                f"{arch!r}. Zoo ids for {arch!r}: {available or 'none (is `name=` a custom name?)'}."
            )
        return "zoo", entry
    from keras_visrec.presets import is_preset_dir

    if is_preset_dir(text):
        return "preset", text
    if _suffix(text) is not None:
        if not os.path.isfile(text):
            raise FileNotFoundError(f"`weights` file not found: {text!r}.")
        return "file", text
    if os.path.sep in text or os.path.isfile(text):
        raise ValueError(
            f"`weights` file {text!r} has an unsupported extension; use one of "
            f"{KERAS_SUFFIXES + TORCH_SUFFIXES}."
        )
    return "zoo", zoo.get_weights(text)  # unknown ids raise with close matches


def validate_weights_argument(weights, *, arch, include_top, classes):
    """Raises a clear error for a ``weights`` value no loader accepts (before building)."""
    kind, detail = resolve_weights(weights, arch=arch)
    if kind != "zoo":
        return
    from keras_visrec.registry import is_registered

    if detail.arch != arch and is_registered(arch):
        raise ValueError(
            f"Zoo weights {detail.id!r} are for {detail.arch!r}, not {arch!r}. "
            f"Use keras_visrec.get_model({detail.arch!r}, weights={detail.id!r})."
        )
    from keras_visrec.zoo.download import UNVERIFIED_ENV, _unverified_allowed

    if not detail.verified and not _unverified_allowed(False):
        raise ValueError(
            f"Zoo weights {detail.id!r} have no published sha256 ({detail.sha256_source}) and load only with an "
            f"explicit opt-in: set {UNVERIFIED_ENV}=1, or pass the path returned by "
            f"keras_visrec.fetch_weights({detail.id!r}, allow_unverified=True) as `weights=`."
        )
    if include_top and classes != detail.classes:
        raise ValueError(
            f"Zoo weights {detail.id!r} have a {detail.classes}-class head; pass classes={detail.classes} "
            f"or include_top=False; received classes={classes}."
        )


def load_weights(model, weights, *, arch, include_top, classes, family=None):
    """Loads ``weights`` (already validated) into a freshly built ``model``; returns it.

    ``family`` picks the checkpoint key map for PyTorch files (``keras_visrec.model_family``);
    None looks ``arch`` up in the registry and falls back to ConvNeXt.
    """
    kind, detail = resolve_weights(weights, arch=arch)
    if kind == "none":
        return model
    from keras_visrec.converters.loading import load_checkpoint_into_model
    from keras_visrec.registry import is_registered, registered_family

    if family is None:
        family = registered_family(arch) if is_registered(arch) else "convnext"

    if kind == "zoo":
        from keras_visrec import zoo

        path = zoo.fetch_weights(detail.id, include_top=include_top)
        prefix = detail.arch if detail.format == "keras_h5" else None
        load_checkpoint_into_model(model, path, include_top=include_top, family=family,
                                   layout=detail.layout if detail.format == "keras_h5" else None,
                                   source_prefix=prefix)
        return model
    if kind == "preset":
        from keras_visrec.presets import load_preset

        copy_weights_by_name(load_preset(detail), model, source_name=detail)
        return model
    path = detail
    suffix = _suffix(path)
    if suffix in TORCH_SUFFIXES:
        load_checkpoint_into_model(model, path, include_top=include_top, family=family)
        return model
    if suffix == ".weights.h5":
        try:
            model.load_weights(path)
        except Exception as error:  # keras raises several types for a mismatching file
            raise ValueError(f"Could not load weights file {path!r} into {model.name}: {error}") from error
        return model
    try:
        source = keras.saving.load_model(path, compile=False)
    except Exception as error:
        raise ValueError(f"Could not read Keras file {path!r}: {error}") from error
    copy_weights_by_name(source, model, source_name=path)
    return model


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

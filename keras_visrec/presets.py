"""keras-hub-style preset directories: a model as ``config.json`` + ``model.weights.h5`` + ``metadata.json``.

The layout is keras-hub's (``keras_hub.models.Backbone.save_to_preset``): ``config.json`` holds the
Keras-serialized model (every keras_visrec layer is registered, so it rebuilds without
``custom_objects``), ``model.weights.h5`` the weights, ``metadata.json`` the versions, the parameter
count and the save date — plus, under ``keras_visrec``, the registry name the model was built as.
:func:`load_preset` reads one back; a preset directory is also a valid ``weights=`` for a builder
(weights copied by layer name, as from a ``.keras`` file).
"""

import datetime
import json
import os
import shutil
import tempfile

import keras

__all__ = ["CONFIG_FILE", "METADATA_FILE", "WEIGHTS_FILE", "is_preset_dir", "load_preset", "read_metadata", "save_preset"]

CONFIG_FILE = "config.json"
METADATA_FILE = "metadata.json"
WEIGHTS_FILE = "model.weights.h5"


def is_preset_dir(path):
    """Whether ``path`` is a directory holding a preset's config and weights files."""
    path = os.fspath(path)
    return os.path.isdir(path) and all(os.path.isfile(os.path.join(path, f)) for f in (CONFIG_FILE, WEIGHTS_FILE))


def _without_build_state(config):
    if isinstance(config, dict):
        return {k: _without_build_state(v) for k, v in config.items() if k not in ("compile_config", "build_config")}
    if isinstance(config, list):
        return [_without_build_state(v) for v in config]
    return config


def save_preset(model, preset_dir, *, arch=None, overwrite=False):
    """Writes ``model`` as a preset directory; returns its path.

    Args:
        model: keras.Model. Any keras_visrec (or Keras-serializable) model.
        preset_dir: str. The directory to create. Written to a temporary sibling and renamed, so a
            failure leaves nothing behind.
        arch: str or None. Registry name to record (e.g. `"convnext_tiny"`); defaults to the model's
            name when that is a registered model.
        overwrite: bool. Replace an existing directory. Defaults to `False`.
    """
    from keras_visrec import __version__
    from keras_visrec.registry import is_registered

    preset_dir = os.path.abspath(os.fspath(preset_dir))
    if not isinstance(model, keras.Model):
        raise TypeError(f"`model` must be a keras.Model; received {type(model).__name__}.")
    if os.path.exists(preset_dir) and not overwrite:
        raise FileExistsError(f"Preset directory {preset_dir!r} exists; pass overwrite=True to replace it.")
    parent = os.path.dirname(preset_dir)
    if not os.path.isdir(parent):
        raise FileNotFoundError(f"Output directory does not exist: {parent!r} (for {preset_dir!r}).")
    arch = arch or (model.name if is_registered(model.name) else None)
    metadata = {
        "keras_version": keras.version(),
        "keras_visrec_version": __version__,
        "parameter_count": int(model.count_params()),
        "date_saved": datetime.datetime.now().strftime("%Y-%m-%d@%H:%M:%S"),
        "keras_visrec": {"arch": arch, "name": model.name},
    }
    staging = tempfile.mkdtemp(dir=parent, prefix=".tmp-preset-")
    try:
        config = _without_build_state(keras.saving.serialize_keras_object(model))
        with open(os.path.join(staging, CONFIG_FILE), "w", encoding="utf-8") as handle:
            json.dump(config, handle, indent=2)
        model.save_weights(os.path.join(staging, WEIGHTS_FILE))
        with open(os.path.join(staging, METADATA_FILE), "w", encoding="utf-8") as handle:
            json.dump(metadata, handle, indent=2)
        if os.path.exists(preset_dir):
            shutil.rmtree(preset_dir)
        os.replace(staging, preset_dir)
    finally:
        if os.path.exists(staging):
            shutil.rmtree(staging)
    return preset_dir


def load_preset(preset_dir, *, compile=False):
    """Rebuilds the model a preset directory holds, with its weights.

    Raises a ValueError naming the directory and the file when it is not a complete preset.
    """
    preset_dir = os.fspath(preset_dir)
    if not os.path.isdir(preset_dir):
        raise FileNotFoundError(f"Preset directory not found: {preset_dir!r}.")
    missing = [f for f in (CONFIG_FILE, WEIGHTS_FILE) if not os.path.isfile(os.path.join(preset_dir, f))]
    if missing:
        raise ValueError(f"{preset_dir!r} is not a preset directory: {', '.join(missing)} missing "
                         f"(a preset holds {CONFIG_FILE}, {WEIGHTS_FILE} and {METADATA_FILE}).")
    try:
        with open(os.path.join(preset_dir, CONFIG_FILE), encoding="utf-8") as handle:
            config = json.load(handle)
        model = keras.saving.deserialize_keras_object(config)
    except (ValueError, TypeError, KeyError) as error:
        raise ValueError(f"{os.path.join(preset_dir, CONFIG_FILE)}: not a Keras model config ({error}).") from error
    if not isinstance(model, keras.Model):
        raise ValueError(f"{os.path.join(preset_dir, CONFIG_FILE)} describes a {type(model).__name__}, not a model.")
    model.load_weights(os.path.join(preset_dir, WEIGHTS_FILE))
    return model


def read_metadata(preset_dir):
    """The preset's ``metadata.json`` as a dict ({} when absent)."""
    path = os.path.join(os.fspath(preset_dir), METADATA_FILE)
    if not os.path.isfile(path):
        return {}
    with open(path, encoding="utf-8") as handle:
        return json.load(handle)

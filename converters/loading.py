"""Load an upstream checkpoint file into a given keras_visrec model.

The one entry point that the ``weights=`` argument of every builder and the ``convert`` command
share. It never builds a model: callers pass one, with the name of its family, and the family's
key map (one module per upstream layout in this folder) fills it.

A family loader is ``loader(model, state, *, include_top, source, strict) -> summary`` where
``state`` is the ``{key: array}`` (or wrapper dict) read from the file and ``summary`` a dict
with at least ``layout``, ``assigned`` (Keras layers filled) and ``ignored`` (upstream keys left
out, by name). Key-map modules register theirs with :func:`register_family_loader`.
"""

import os

from keras_visrec.converters import anytime
from keras_visrec.converters.convnext_keys import (
    assign_state_dict, convert_state_dict, detect_layout, unwrap_state_dict,
)
from keras_visrec.converters.keras_applications import convert_keras_applications_h5
from keras_visrec.converters.pytorch_reader import load_pytorch_checkpoint

__all__ = ["TORCH_SUFFIXES", "family_loaders", "load_checkpoint_into_model", "register_family_loader"]

TORCH_SUFFIXES = (".pth", ".pt", ".bin", ".safetensors", ".pth.tar")

_FAMILY_LOADERS = {}


def register_family_loader(families, loader):
    """Records ``loader`` for each model family in ``families`` (e.g. ``("hrnet", "adpc")``)."""
    for family in (families,) if isinstance(families, str) else families:
        _FAMILY_LOADERS[family] = loader
    return loader


def family_loaders():
    """The families a checkpoint file can be loaded into, sorted."""
    return sorted(_FAMILY_LOADERS)


def _load_convnext(model, state, *, include_top, source, strict=True, layout=None, prefer_ema=False):
    state = unwrap_state_dict(state, prefer_ema=prefer_ema, source=source)
    layout = layout or detect_layout(state, source=source)
    converted, unmapped = convert_state_dict(state, layout, source=source)
    summary = assign_state_dict(model, converted, include_top=include_top, source=source, unmapped=unmapped)
    summary["layout"] = layout
    return summary


register_family_loader(("convnext", "convnext_v2", "convnext_isotropic"), _load_convnext)
register_family_loader(("hrnet", "adpc"), anytime.family_loader)


def load_checkpoint_into_model(model, path, *, include_top, family="convnext", layout=None, source_prefix=None,
                               prefer_ema=False, strict=True):
    """Reads ``path`` and assigns its weights to ``model`` by layer name.

    Args:
        model: keras.Model. A keras_visrec model of ``family``.
        path: str. A ``.pth`` / ``.pt`` / ``.bin`` / ``.safetensors`` checkpoint (any upstream layout
            the family's key map knows) or a keras.applications ``.h5`` file
            (``layout="keras_applications"``, ConvNeXt only).
        include_top: bool. Whether the model has its classification head.
        family: str. The model's family (``keras_visrec.model_family(name)``). Defaults to
            `"convnext"`.
        layout: str or None. Upstream layout; detected from the keys when None.
        source_prefix: str. Model name inside a keras.applications h5 file.
        prefer_ema: bool. Take ``model_ema`` over ``model`` in training checkpoints.
        strict: bool. Raise when the checkpoint and the model disagree (families that allow a
            partial load, such as a backbone from a classification file, report instead).

    Returns:
        A summary dict: ``layout``, ``assigned`` layer names, ``ignored`` upstream keys.
    """
    path = os.fspath(path)
    if family not in _FAMILY_LOADERS:
        raise ValueError(f"No checkpoint key map for model family {family!r}; families with one: "
                         f"{family_loaders()}.")
    if layout == "keras_applications":
        converted, unmapped = convert_keras_applications_h5(path, source_prefix)
        summary = assign_state_dict(model, converted, include_top=include_top, source=path, unmapped=unmapped)
        summary["layout"] = layout
        return summary
    state = load_pytorch_checkpoint(path)
    return _FAMILY_LOADERS[family](model, state, include_top=include_top, source=path, strict=strict,
                                   layout=layout, prefer_ema=prefer_ema)

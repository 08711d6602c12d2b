"""Load an upstream checkpoint file into a given keras_visrec model.

The one entry point that the ``weights=`` argument of every builder and the ``convert`` command
share. It never builds a model: callers pass one, with the name of its family, and the family's
key map (one module per upstream layout in this folder) fills it.

A family loader is ``loader(model, state, *, include_top, source, strict) -> summary`` where
``state`` is the ``{key: array}`` (or wrapper dict) read from the file and ``summary`` a dict
with at least ``layout``, ``assigned`` (Keras layers filled) and ``ignored`` (upstream keys left
out, by name). Key-map modules register theirs with :func:`register_family_loader`.
"""

import logging
import os

from keras_visrec.converters import anytime
from keras_visrec.converters import upernet_keys
from keras_visrec.converters.cifar_keys import load_cifar_state_dict
from keras_visrec.converters.convnext_keys import assign_state_dict
from keras_visrec.converters.keras_applications import convert_keras_applications_h5
from keras_visrec.converters.pytorch_reader import load_pytorch_checkpoint

__all__ = ["TORCH_SUFFIXES", "family_loaders", "load_checkpoint_into_model", "register_family_loader"]

TORCH_SUFFIXES = (".pth", ".pt", ".bin", ".safetensors", ".pth.tar")

_FAMILY_LOADERS = {}
_LOG = logging.getLogger("keras_visrec")


def register_family_loader(families, loader):
    """Records ``loader`` for each model family in ``families`` (e.g. ``("hrnet", "adpc")``)."""
    for family in (families,) if isinstance(families, str) else families:
        _FAMILY_LOADERS[family] = loader
    return loader


def family_loaders():
    """The families a checkpoint file can be loaded into, sorted."""
    return sorted(_FAMILY_LOADERS)


# The ConvNeXt families go through the dense-prediction loader, which hands classification files
# on to load_convnext_checkpoint and reads mmseg / mmdet backbones and output norms itself.
register_family_loader(upernet_keys.CONVNEXT_FAMILIES, upernet_keys.load_dense_convnext)
register_family_loader("upernet", upernet_keys.load_upernet)
register_family_loader("fpn", upernet_keys.load_fpn)
register_family_loader(("hrnet", "adpc"), anytime.family_loader)
register_family_loader("cifar", load_cifar_state_dict)


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
        A summary dict: ``layout``, ``assigned`` layer names, ``ignored`` upstream keys; for a
        training checkpoint also ``entry`` (the entry loaded, e.g. ``"model"``) and
        ``other_entries`` (``optimizer``, ``epoch``, ``args`` … by name), which are also logged
        at INFO level on the ``keras_visrec`` logger.
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
    summary = _FAMILY_LOADERS[family](model, state, include_top=include_top, source=path, strict=strict,
                                      layout=layout, prefer_ema=prefer_ema)
    if summary.get("other_entries"):
        _LOG.info("%s: loaded entry %r into %s; not loaded: %s", path, summary.get("entry"), model.name,
                  ", ".join(summary["other_entries"]))
    return summary

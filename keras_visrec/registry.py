"""The model registry: a table of builders that each family fills when it is imported.

This module sits at the bottom of the package and imports no family (timm's ``_registry``):
``@register_model("convnext_tiny", family="convnext")`` records a builder; the public discovery
functions (``list_models``, ``get_model``) live in :mod:`keras_visrec.models`, which imports
every family first. Registry names are snake_case (``convnext_tiny``) and map to the public
CamelCase builders (``ConvNeXtTiny``), as in timm and torchvision.
"""

import difflib
import fnmatch

__all__ = ["is_registered", "lookup", "register_model", "registered_family", "registered_names"]

_BUILDERS = {}


def register_model(name, family):
    """Decorator: records a builder under a snake_case ``name`` in a ``family``."""
    if not isinstance(name, str) or not name or name != name.lower():
        raise ValueError(f"A registry name must be a non-empty snake_case string; received {name!r}.")

    def wrap(builder):
        if name in _BUILDERS and _BUILDERS[name][1] is not builder:
            raise ValueError(f"Model name {name!r} is registered twice.")
        _BUILDERS[name] = (family, builder)
        return builder

    return wrap


def is_registered(name):
    """Whether a builder is registered as ``name`` (among the families imported so far)."""
    return name in _BUILDERS


def registered_names(pattern="*", family=None):
    """Names registered so far matching a glob ``pattern`` (and ``family``), sorted."""
    return sorted(
        name for name, (fam, _) in _BUILDERS.items()
        if fnmatch.fnmatch(name, pattern) and (family is None or fam == family)
    )


def lookup(name):
    """The builder registered as ``name``; an unknown name raises with close matches."""
    if name not in _BUILDERS:
        close = difflib.get_close_matches(str(name), list(_BUILDERS), n=5)
        hint = f" Close matches: {close}." if close else ""
        raise ValueError(f"Unknown model name {name!r}.{hint} See keras_visrec.list_models().")
    return _BUILDERS[name][1]


def registered_family(name):
    """The family of the builder registered as ``name`` (e.g. ``"convnext"``)."""
    lookup(name)
    return _BUILDERS[name][0]

"""Uniform model discovery: ``list_models``, ``get_model`` and the ``register_model`` decorator.

Registry names are snake_case (``convnext_tiny``) and map to the public CamelCase builders
(``ConvNeXtTiny``), as timm and torchvision do.
"""

import fnmatch

__all__ = ["get_model", "get_model_builder", "list_models", "register_model"]

_BUILDERS = {}


def register_model(name, family):
    """Decorator: records a builder under a snake_case ``name`` in a ``family``."""

    def wrap(builder):
        if name in _BUILDERS:
            raise ValueError(f"Model name {name!r} is registered twice.")
        _BUILDERS[name] = (family, builder)
        return builder

    return wrap


def list_models(pattern="*", family=None):
    """Registered model names matching a glob ``pattern`` (and a ``family``, when given), sorted."""
    _import_families()
    return sorted(
        name for name, (fam, _) in _BUILDERS.items()
        if fnmatch.fnmatch(name, pattern) and (family is None or fam == family)
    )


def get_model_builder(name):
    """The public builder registered as ``name``; unknown names list close matches."""
    _import_families()
    if name not in _BUILDERS:
        import difflib

        close = difflib.get_close_matches(name, list(_BUILDERS), n=5)
        hint = f" Close matches: {close}." if close else ""
        raise ValueError(f"Unknown model name {name!r}.{hint} See keras_visrec.list_models().")
    return _BUILDERS[name][1]


def get_model(name, **kwargs):
    """Builds the registered model ``name`` with the builder's keyword arguments."""
    return get_model_builder(name)(**kwargs)


def model_family(name):
    """The family a registered model belongs to (e.g. ``"convnext"``)."""
    get_model_builder(name)
    return _BUILDERS[name][0]


def _import_families():
    # Registration happens at import of each family module.
    import keras_visrec.convnext  # noqa: F401
    for optional in ("keras_visrec.hrnet", "keras_visrec.cifar"):
        try:
            __import__(optional)
        except ModuleNotFoundError as error:
            if error.name != optional:
                raise

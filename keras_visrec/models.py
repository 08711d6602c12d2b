"""Every model by name: ``list_models``, ``get_model`` and ``model_family``.

The face of the model families. It imports each family module, and each registers its builders
with :func:`keras_visrec.registry.register_model` as it is imported; the registry itself never
imports a family. A family added to the package is added to ``FAMILY_MODULES``.
"""

import importlib

from keras_visrec import registry

__all__ = ["FAMILY_MODULES", "get_model", "get_model_builder", "list_models", "model_family"]

FAMILY_MODULES = (
    "keras_visrec.convnext",
    "keras_visrec.hrnet",
    "keras_visrec.adpc.model",
    "keras_visrec.cifar",
    "keras_visrec.upernet",
)

_imported = False


def _import_families():
    global _imported
    if not _imported:
        for module in FAMILY_MODULES:
            importlib.import_module(module)
        _imported = True


def list_models(pattern="*", family=None):
    """Registered model names matching a glob ``pattern`` (and a ``family``, when given), sorted.

    Examples:

    >>> keras_visrec.list_models("convnext_v2_*")[:2]
    ['convnext_v2_atto', 'convnext_v2_base']
    """
    _import_families()
    return registry.registered_names(pattern, family)


def get_model_builder(name):
    """The public builder registered as ``name``; unknown names list close matches."""
    _import_families()
    return registry.lookup(name)


def get_model(name, **kwargs):
    """Builds the registered model ``name`` with the builder's keyword arguments.

    Examples:

    >>> model = keras_visrec.get_model("convnext_atto", input_shape=(32, 32, 3), classes=10)
    """
    return get_model_builder(name)(**kwargs)


def model_family(name):
    """The family a registered model belongs to (e.g. ``"convnext"``)."""
    _import_families()
    return registry.registered_family(name)

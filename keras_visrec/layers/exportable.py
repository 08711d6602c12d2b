"""One switch for export-friendly layer choices, read by the layer factories.

Builders never write ``if export:``; they call :func:`make_gelu` and :func:`make_pointwise`,
which return the training form by default and the export form inside ``exportable()``:

* GELU becomes the ``tanh_cubic`` form by default (no fused GELU op, which the Edge TPU
  rejects; ``exportable(gelu_form="exact")`` keeps the exact form for targets that run it);
* a per-pixel linear layer becomes a 1×1 ``Conv2D`` (a TFLite ``CONV_2D`` with no reshape or
  shape-computing ops around it) instead of a :class:`PointwiseDense`.

Outside ``exportable()`` a pointwise layer with ``activation="gelu"`` is a ``PointwiseDense``
carrying the exact GELU, so TensorFlow can fuse matmul, bias and GELU on CPU.

The two forms hold the same weights up to a reshape, so an exporter rebuilds a model inside
``exportable()`` and copies the weights across by layer name.
"""

import contextlib
import threading

import keras

from keras_visrec.layers.activation import GELU, GELU_FORMS, gelu_tanh, gelu_tanh_cubic
from keras_visrec.layers.pointwise import PointwiseDense

__all__ = ["exportable", "is_exportable", "make_gelu", "make_pointwise", "set_exportable"]

_STATE = threading.local()


def is_exportable():
    """Whether layer factories currently build the export-friendly forms."""
    return getattr(_STATE, "exportable", False)


def gelu_form():
    """The GELU form factories build now: ``"exact"``, or the exporter's choice when exportable."""
    return getattr(_STATE, "gelu_form", "tanh_cubic") if is_exportable() else "exact"


def set_exportable(value, gelu_form="tanh_cubic"):
    """Turns export-friendly layer forms on or off for this thread; returns the previous state."""
    if gelu_form not in GELU_FORMS:
        raise ValueError(f"`gelu_form` must be one of {GELU_FORMS}; received gelu_form={gelu_form!r}.")
    previous = (is_exportable(), getattr(_STATE, "gelu_form", "tanh_cubic"))
    _STATE.exportable = bool(value)
    _STATE.gelu_form = gelu_form
    return previous


@contextlib.contextmanager
def exportable(value=True, gelu_form="tanh_cubic"):
    """Context manager: builders called inside it make export-friendly layers.

    Args:
        value: bool. Whether to build the export forms. Defaults to `True`.
        gelu_form: str. GELU form of exported models, one of `"exact"`, `"tanh"`,
            `"tanh_cubic"` (the only one the Edge TPU compiler takes). Defaults to `"tanh_cubic"`.
    """
    previous = set_exportable(value, gelu_form)
    try:
        yield
    finally:
        set_exportable(*previous)


def make_gelu(name=None):
    """A GELU layer in the form of the current mode (exact normally)."""
    return GELU(form=gelu_form(), name=name)


_GELU_ACTIVATIONS = {"exact": "gelu", "tanh": gelu_tanh, "tanh_cubic": gelu_tanh_cubic}


def make_pointwise(units, name=None, activation=None, **kwargs):
    """A per-pixel linear layer on channels-last input, optionally with GELU fused in.

    Normally a :class:`PointwiseDense`; a 1×1 ``Conv2D`` when exportable. ``activation`` is
    `None` or `"gelu"` (in the current mode's form). ``kwargs`` are arguments both layers share
    (initializers, regularizers, ``use_bias``, ``dtype``).
    """
    if activation not in (None, "gelu"):
        raise ValueError(f"`activation` must be None or 'gelu'; received activation={activation!r}.")
    if activation == "gelu":
        activation = keras.activations.get(_GELU_ACTIVATIONS[gelu_form()])
    if is_exportable():
        return keras.layers.Conv2D(units, 1, name=name, activation=activation, **kwargs)
    return PointwiseDense(units, name=name, activation=activation, **kwargs)

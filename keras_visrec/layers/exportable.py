"""One switch for export-friendly layer choices, read by the layer factories.

Builders never write ``if export:``; they call :func:`make_gelu` and :func:`make_pointwise`,
which return the training form by default and the export form inside ``exportable()``:

* GELU becomes the ``tanh_cubic`` form (no fused GELU op, which the Edge TPU rejects);
* a per-pixel linear layer becomes a 1×1 ``Conv2D`` (a TFLite ``CONV_2D`` with no reshape or
  shape-computing ops around it) instead of a ``Dense`` on a 4-D tensor.

The two forms hold the same weights up to a reshape, so an exporter rebuilds a model inside
``exportable()`` and copies the weights across by layer name.
"""

import contextlib
import threading

import keras

from keras_visrec.layers.activation import GELU

__all__ = ["exportable", "is_exportable", "make_gelu", "make_pointwise", "set_exportable"]

_STATE = threading.local()


def is_exportable():
    """Whether layer factories currently build the export-friendly forms."""
    return getattr(_STATE, "exportable", False)


def set_exportable(value):
    """Turns export-friendly layer forms on or off for this thread; returns the previous value."""
    previous = is_exportable()
    _STATE.exportable = bool(value)
    return previous


@contextlib.contextmanager
def exportable(value=True):
    """Context manager: builders called inside it make export-friendly layers."""
    previous = set_exportable(value)
    try:
        yield
    finally:
        set_exportable(previous)


def make_gelu(name=None):
    """GELU layer: exact erf form normally, ``tanh_cubic`` when exportable."""
    return GELU(form="tanh_cubic" if is_exportable() else "exact", name=name)


def make_pointwise(units, name=None, **kwargs):
    """A per-pixel linear layer on channels-last input: ``Dense``, or a 1×1 ``Conv2D`` when exportable.

    ``kwargs`` are the arguments both layers share (initializers, regularizers, ``use_bias``,
    ``activation``, ``dtype``).
    """
    if is_exportable():
        return keras.layers.Conv2D(units, 1, name=name, **kwargs)
    return keras.layers.Dense(units, name=name, **kwargs)

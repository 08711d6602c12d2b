"""Load an upstream checkpoint file into a given keras_visrec ConvNeXt model.

The one entry point the ``weights=`` argument and the ``convert`` command share. It never
builds a model: callers pass one.
"""

import os

from keras_visrec.converters.convnext_keys import (
    assign_state_dict, convert_state_dict, detect_layout, unwrap_state_dict,
)
from keras_visrec.converters.keras_applications import convert_keras_applications_h5
from keras_visrec.converters.pytorch_reader import load_pytorch_checkpoint

__all__ = ["TORCH_SUFFIXES", "load_checkpoint_into_model"]

TORCH_SUFFIXES = (".pth", ".pt", ".bin", ".safetensors")


def load_checkpoint_into_model(model, path, *, include_top, layout=None, source_prefix=None,
                               prefer_ema=False):
    """Reads ``path`` and assigns its weights to ``model`` by layer name.

    Args:
        model: keras.Model. A keras_visrec ConvNeXt.
        path: str. A ``.pth`` / ``.pt`` / ``.bin`` / ``.safetensors`` checkpoint (official, timm
            or HF layout) or a keras.applications ``.h5`` file (``layout="keras_applications"``).
        include_top: bool. Whether the model has its classification head.
        layout: str or None. Upstream layout; detected from the keys when None.
        source_prefix: str. Model name inside a keras.applications h5 file.
        prefer_ema: bool. Take ``model_ema`` over ``model`` in training checkpoints.

    Returns:
        A summary dict: ``layout``, ``assigned`` layer names, ``ignored`` upstream keys.
    """
    path = os.fspath(path)
    if layout == "keras_applications":
        converted, unmapped = convert_keras_applications_h5(path, source_prefix)
    else:
        state = unwrap_state_dict(load_pytorch_checkpoint(path), prefer_ema=prefer_ema, source=path)
        layout = layout or detect_layout(state, source=path)
        converted, unmapped = convert_state_dict(state, layout, source=path)
    summary = assign_state_dict(model, converted, include_top=include_top, source=path, unmapped=unmapped)
    summary["layout"] = layout
    return summary

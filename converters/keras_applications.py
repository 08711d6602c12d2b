"""keras.applications' converted ConvNeXt ``.h5`` files → keras_visrec layer names.

Those files (``convnext_tiny.h5`` … listed with their sha256 in keras'
``applications/convnext.py``) use the legacy Keras HDF5 weights layout: the root attribute
``layer_names`` lists one group per top-level layer, each group's ``weight_names`` attribute
lists its datasets (``<layer>/<variable>:0``) in the layer's weight order. The stem and the
downsampling blocks are nested ``Sequential`` models whose groups hold their sub-layers'
weights. Layer names are keras.applications' ``{name}_stage_{s}_block_{b}_…``, which ours
mirror; the differences handled here:

* the 7×7 depthwise conv is a grouped ``Conv2D`` there: kernel (7, 7, 1, C) → ours
  ``DepthwiseConv2D`` (7, 7, C, 1);
* the ``_notop`` files end with an auto-named ``layer_normalization``: it is our
  ``{name}_head_layernorm``;
* the ``{name}_prestem_normalization`` layer (ImageNet mean / variance) is skipped: our
  ``ImageNetNormalization`` computes the same thing without weights.
"""

import os

import numpy as np

__all__ = ["convert_keras_applications_h5", "read_legacy_h5"]


def _decode(value):
    return value.decode("utf-8") if isinstance(value, bytes) else str(value)


def read_legacy_h5(path):
    """``{layer name: [array, …]}`` (weight order) from a legacy Keras HDF5 weights file."""
    import h5py

    path = os.fspath(path)
    try:
        handle = h5py.File(path, "r")
    except OSError as error:
        raise ValueError(f"{path}: not a readable HDF5 file ({error}).") from None
    with handle:
        root = handle["model_weights"] if "model_weights" in handle else handle
        if "layer_names" not in root.attrs:
            raise ValueError(f"{path}: not a legacy Keras weights file (no 'layer_names' attribute).")
        layers = {}
        for group_name in map(_decode, root.attrs["layer_names"]):
            group = root[group_name]
            for weight_name in map(_decode, group.attrs.get("weight_names", [])):
                layer = weight_name.split("/")[-2] if "/" in weight_name else group_name
                layers.setdefault(layer, []).append(np.asarray(group[weight_name]))
    return layers


def convert_keras_applications_h5(path, source_prefix):
    """Reads a keras.applications ConvNeXt h5 file into ``{our layer suffix: {slot: array}}``.

    Args:
        path: str. The ``.h5`` file.
        source_prefix: str. keras.applications' model name used in the file (e.g. ``convnext_tiny``).

    Returns:
        ``(converted, unmapped)`` in the form of ``convnext_keys.convert_state_dict``, so
        ``convnext_keys.assign_state_dict`` loads it.
    """
    layers = read_legacy_h5(path)
    converted, unmapped = {}, []
    start = f"{source_prefix}_"
    for name, arrays in layers.items():
        key = f"{os.path.basename(os.fspath(path))}:{name}"
        if name.endswith("_prestem_normalization"):
            continue
        if name.startswith(start):
            suffix = name[len(start):]
        elif name.startswith("layer_normalization"):
            suffix = "head_layernorm"  # the headless ("_notop") files' final, unprefixed LayerNorm
        else:
            unmapped.append(key)
            continue
        if suffix.endswith("_layer_scale"):
            slots = {"gamma": arrays[0]}
        elif suffix.endswith("layernorm") or "_layernorm_" in suffix:
            slots = {"gamma": arrays[0], "beta": arrays[1]}
        elif suffix.endswith("_depthwise_conv"):
            slots = {"kernel": _grouped_to_depthwise(arrays[0]), "bias": arrays[1]}
        else:  # Conv2D and Dense kernels are already in Keras layout
            slots = {"kernel": arrays[0], "bias": arrays[1]}
        converted[suffix] = {slot: (np.asarray(v, np.float32), f"{key}/{slot}") for slot, v in slots.items()}
    return converted, unmapped


def _grouped_to_depthwise(kernel):
    """Grouped Conv2D (kh, kw, 1, C) → DepthwiseConv2D (kh, kw, C, 1)."""
    return np.transpose(kernel, (0, 1, 3, 2))

"""ConvNeXt V1, isotropic ConvNeXt and ConvNeXt V2 with keras.applications semantics.

Papers: Liu et al., "A ConvNet for the 2020s", CVPR 2022 (https://arxiv.org/abs/2201.03545);
Woo et al., "ConvNeXt V2: Co-designing and Scaling ConvNets with Masked Autoencoders", CVPR 2023
(https://arxiv.org/abs/2301.00808). Official weights: V1 MIT, V2 CC-BY-NC 4.0.

The network is built from flat, deterministically named layers — names are API: converters,
pruning, exits and exporters find weights by them:

    {name}_preprocessing                      (include_preprocessing=True)
    {name}_stem_conv, {name}_stem_layernorm   (isotropic: no stem norm)
    {name}_downsampling_layernorm_{i}, {name}_downsampling_conv_{i}      i = 0, 1, 2
    {name}_stage_{s}_block_{b}_{depthwise_conv, layernorm, pointwise_conv_1, grn,
                                 pointwise_conv_2, layer_scale, drop_path, add}

With ``features_only=True, output_norms=True`` each stage output passes a LayerNorm first, as in
the official dense-prediction backbones (``norm0`` … ``norm3`` of facebookresearch/ConvNeXt
``semantic_segmentation/`` and ``object_detection/``, ``hidden_states_norms`` in transformers):

    {name}_output_norm_{s}                    s = 0 … 3

``pointwise_conv_1`` carries the GELU (a :class:`~keras_visrec.layers.PointwiseDense` with
``activation="gelu"``) so TensorFlow fuses matmul, bias and GELU on CPU; inside
``keras_visrec.layers.exportable()`` both pointwise layers are 1×1 ``Conv2D`` layers instead.
    {name}_head_gap, {name}_head_layernorm, {name}_head_dense, predictions

Isotropic models have one stage (``s = 0``). The depthwise conv is a ``DepthwiseConv2D``
(:class:`keras_visrec.layers.DepthwiseConv2D`, Keras' layer that trains in float32 under mixed
precision on the CPU and, on oneDNN, computes its kernel gradient as swapped forward convolutions): the
grouped ``Conv2D`` that keras.applications uses runs about 5× slower on TensorFlow's CPU kernels.
The norms are :class:`~keras_visrec.layers.LayerNorm`: Keras' ``LayerNormalization`` with the same
weights, computed in fewer full-size passes.
"""

import keras
import numpy as np

from keras_visrec.arguments import (model_inputs, validate_classes, validate_classifier_activation, validate_input_shape,
                                    validate_name, validate_pooling, validate_rate)
from keras_visrec.layers import GRN, DepthwiseConv2D, ImageNetNormalization, LayerNorm, LayerScale, StochasticDepth
from keras_visrec.layers.convnext_block import conv_init
from keras_visrec.layers.exportable import make_pointwise
from keras_visrec.registry import register_model
from keras_visrec.weights import load_weights, validate_weights_argument

__all__ = [
    "CONVNEXT_CONFIGS",
    "ConvNeXt",
    "pyramid_outputs",
    "ConvNeXtAtto", "ConvNeXtFemto", "ConvNeXtPico", "ConvNeXtNano", "ConvNeXtTiny",
    "ConvNeXtSmall", "ConvNeXtBase", "ConvNeXtLarge", "ConvNeXtXLarge",
    "ConvNeXtIsotropicSmall", "ConvNeXtIsotropicBase", "ConvNeXtIsotropicLarge",
    "ConvNeXtV2Atto", "ConvNeXtV2Femto", "ConvNeXtV2Pico", "ConvNeXtV2Nano", "ConvNeXtV2Tiny",
    "ConvNeXtV2Base", "ConvNeXtV2Large", "ConvNeXtV2Huge",
]

_SMALL = (2, 2, 6, 2)
_DEEP = (3, 3, 27, 3)

# One row per variant. layer_scale: default layer-scale init (None = off); V2 uses GRN instead.
CONVNEXT_CONFIGS = {
    "convnext_atto": dict(depths=_SMALL, dims=(40, 80, 160, 320)),
    "convnext_femto": dict(depths=_SMALL, dims=(48, 96, 192, 384)),
    "convnext_pico": dict(depths=_SMALL, dims=(64, 128, 256, 512)),
    "convnext_nano": dict(depths=(2, 2, 8, 2), dims=(80, 160, 320, 640)),
    "convnext_tiny": dict(depths=(3, 3, 9, 3), dims=(96, 192, 384, 768)),
    "convnext_small": dict(depths=_DEEP, dims=(96, 192, 384, 768)),
    "convnext_base": dict(depths=_DEEP, dims=(128, 256, 512, 1024)),
    "convnext_large": dict(depths=_DEEP, dims=(192, 384, 768, 1536)),
    "convnext_xlarge": dict(depths=_DEEP, dims=(256, 512, 1024, 2048)),
    "convnext_isotropic_small": dict(depths=(18,), dims=(384,), isotropic=True, layer_scale=None),
    "convnext_isotropic_base": dict(depths=(18,), dims=(768,), isotropic=True, layer_scale=None),
    "convnext_isotropic_large": dict(depths=(36,), dims=(1024,), isotropic=True),
    "convnext_v2_atto": dict(depths=_SMALL, dims=(40, 80, 160, 320), grn=True, layer_scale=None),
    "convnext_v2_femto": dict(depths=_SMALL, dims=(48, 96, 192, 384), grn=True, layer_scale=None),
    "convnext_v2_pico": dict(depths=_SMALL, dims=(64, 128, 256, 512), grn=True, layer_scale=None),
    "convnext_v2_nano": dict(depths=(2, 2, 8, 2), dims=(80, 160, 320, 640), grn=True, layer_scale=None),
    "convnext_v2_tiny": dict(depths=(3, 3, 9, 3), dims=(96, 192, 384, 768), grn=True, layer_scale=None),
    "convnext_v2_base": dict(depths=_DEEP, dims=(128, 256, 512, 1024), grn=True, layer_scale=None),
    "convnext_v2_large": dict(depths=_DEEP, dims=(192, 384, 768, 1536), grn=True, layer_scale=None),
    "convnext_v2_huge": dict(depths=_DEEP, dims=(352, 704, 1408, 2816), grn=True, layer_scale=None),
}

def _validate(arch, include_top, weights, input_tensor, input_shape, pooling, classes, classifier_activation,
              drop_path_rate, layer_scale_init_value, head_init_scale, features_only, isotropic, name,
              output_norms=False):
    """Checks every user argument before anything is built; returns ``(input shape, classes)``."""
    validate_name(name)
    classes = validate_classes(classes)
    validate_weights_argument(weights, arch=arch, include_top=include_top, classes=classes)
    validate_pooling(pooling)
    validate_classifier_activation(classifier_activation)
    validate_rate(drop_path_rate, "drop_path_rate")
    if layer_scale_init_value is not None and (
        not isinstance(layer_scale_init_value, (int, float)) or layer_scale_init_value < 0
    ):
        raise ValueError(
            "`layer_scale_init_value` must be a non-negative float or None (off); "
            f"received layer_scale_init_value={layer_scale_init_value!r}."
        )
    if not isinstance(head_init_scale, (int, float)) or head_init_scale <= 0:
        raise ValueError(f"`head_init_scale` must be a positive float; received head_init_scale={head_init_scale!r}.")
    if features_only and include_top:
        raise ValueError("`features_only=True` returns the stage outputs and needs `include_top=False`.")
    if output_norms and not features_only:
        raise ValueError("`output_norms=True` normalises the stage outputs of `features_only=True` models; "
                         f"received output_norms={output_norms!r} with features_only={features_only!r}.")
    input_shape = validate_input_shape(
        input_shape, input_tensor=input_tensor, default=(224, 224, 3) if include_top else (None, None, 3),
        multiple=16 if isotropic else 32, arch=arch,
    )
    return input_shape, classes


def _registered_arch(depths, dims, isotropic, use_grn):
    """The registry name of the variant with this architecture (so weights resolve under any `name=`)."""
    for arch, config in CONVNEXT_CONFIGS.items():
        if (config["depths"], config["dims"], config.get("isotropic", False), config.get("grn", False)) == (
            depths, dims, isotropic, use_grn
        ):
            return arch
    return None


def _block(x, dim, *, prefix, drop_path, layer_scale, use_grn):
    """One ConvNeXt block as flat named layers (the same computation as layers.ConvNeXtBlock)."""
    shortcut = x
    x = DepthwiseConv2D(
        7, padding="same", depthwise_initializer=conv_init()["kernel_initializer"],
        name=f"{prefix}_depthwise_conv",
    )(x)
    x = LayerNorm(epsilon=1e-6, name=f"{prefix}_layernorm")(x)
    x = make_pointwise(4 * dim, name=f"{prefix}_pointwise_conv_1", activation="gelu", **conv_init())(x)
    if use_grn:
        x = GRN(name=f"{prefix}_grn")(x)
    x = make_pointwise(dim, name=f"{prefix}_pointwise_conv_2", **conv_init())(x)
    if layer_scale:
        x = LayerScale(layer_scale, name=f"{prefix}_layer_scale")(x)
    if drop_path > 0:
        x = StochasticDepth(drop_path, name=f"{prefix}_drop_path")(x)
    return keras.layers.Add(name=f"{prefix}_add")([shortcut, x])


def ConvNeXt(
    depths,
    dims,
    *,
    isotropic=False,
    use_grn=False,
    include_top=True,
    weights=None,
    input_tensor=None,
    input_shape=None,
    pooling=None,
    classes=1000,
    classifier_activation="softmax",
    include_preprocessing=True,
    drop_path_rate=0.0,
    layer_scale_init_value=1e-6,
    head_init_scale=1.0,
    features_only=False,
    output_norms=False,
    name="convnext",
):
    """Builds a ConvNeXt from its stage ``depths`` and ``dims`` (the generic builder).

    The public variants (``ConvNeXtTiny`` …) forward here with a row of ``CONVNEXT_CONFIGS``.
    Arguments are those of the variant builders, plus ``depths``, ``dims``, ``isotropic`` and
    ``use_grn`` describing the architecture.
    """
    depths, dims = tuple(int(d) for d in depths), tuple(int(d) for d in dims)
    if len(depths) != len(dims) or not depths or (not isotropic and len(depths) != 4):
        raise ValueError(
            "`depths` and `dims` must have 4 entries each (1 each for isotropic models); "
            f"received depths={depths}, dims={dims}."
        )
    arch = _registered_arch(depths, dims, isotropic, use_grn) or name
    input_shape, classes = _validate(arch, include_top, weights, input_tensor, input_shape, pooling, classes,
                                     classifier_activation, drop_path_rate, layer_scale_init_value,
                                     head_init_scale, features_only, isotropic, name, output_norms)
    inputs, source_inputs = model_inputs(input_tensor, input_shape)

    x = inputs
    if include_preprocessing:
        x = ImageNetNormalization(name=f"{name}_preprocessing")(x)
    patch = 16 if isotropic else 4
    x = keras.layers.Conv2D(dims[0], patch, strides=patch, name=f"{name}_stem_conv", **conv_init())(x)
    if not isotropic:
        x = LayerNorm(epsilon=1e-6, name=f"{name}_stem_layernorm")(x)

    rates = np.linspace(0.0, drop_path_rate, sum(depths)).tolist()
    features = []
    block_index = 0
    for stage, (depth, dim) in enumerate(zip(depths, dims)):
        if stage > 0:
            x = LayerNorm(epsilon=1e-6, name=f"{name}_downsampling_layernorm_{stage - 1}")(x)
            x = keras.layers.Conv2D(dim, 2, strides=2, name=f"{name}_downsampling_conv_{stage - 1}", **conv_init())(x)
        for block in range(depth):
            x = _block(x, dim, prefix=f"{name}_stage_{stage}_block_{block}",
                       drop_path=rates[block_index], layer_scale=layer_scale_init_value, use_grn=use_grn)
            block_index += 1
        features.append(LayerNorm(epsilon=1e-6, name=f"{name}_output_norm_{stage}")(x) if output_norms else x)

    if features_only:
        outputs = features
    elif include_top:
        x = keras.layers.GlobalAveragePooling2D(name=f"{name}_head_gap")(x)
        x = LayerNorm(epsilon=1e-6, name=f"{name}_head_layernorm")(x)
        x = keras.layers.Dense(
            classes, name=f"{name}_head_dense",
            # trunc-normal(0.02) × head_init_scale == trunc-normal(0.02 × head_init_scale)
            kernel_initializer=keras.initializers.TruncatedNormal(stddev=0.02 * head_init_scale),
            bias_initializer="zeros",
        )(x)
        outputs = keras.layers.Activation(classifier_activation, dtype="float32", name="predictions")(x)
    else:
        if pooling == "avg":
            x = keras.layers.GlobalAveragePooling2D(name=f"{name}_head_gap")(x)
        elif pooling == "max":
            x = keras.layers.GlobalMaxPooling2D(name=f"{name}_head_gmp")(x)
        outputs = LayerNorm(epsilon=1e-6, name=f"{name}_head_layernorm")(x)

    model = keras.Model(source_inputs, outputs, name=name)
    if features_only:
        model.pyramid_outputs = pyramid_outputs(model)
    if weights is not None:
        load_weights(_weights_target(model, weights, arch, output_norms), weights, arch=arch,
                     include_top=include_top and not features_only, classes=classes)
    return model


def _weights_target(model, weights, arch, output_norms):
    """The model ``weights`` load into: with output norms and keras.applications' classification
    files (which have none), the same layers without the norms, so the norms keep their initial
    values as the official dense-prediction code starts (PyTorch files are handled by the key map)."""
    if not output_norms:
        return model
    from keras_visrec.weights import resolve_weights

    kind, entry = resolve_weights(weights, arch=arch)
    if kind != "zoo" or entry.format != "keras_h5":
        return model
    stages = [layer.input for layer in model.layers if layer.name.startswith(f"{model.name}_output_norm_")]
    return keras.Model(model.inputs, stages, name=model.name)


def pyramid_outputs(model):
    """keras-hub's ``pyramid_outputs`` of a ``features_only`` ConvNeXt: ``{"P2": …, "P5": …}``.

    ``P{k}`` is the stage output at stride ``2**k`` (stages 0–3 → P2–P5; an isotropic model's
    one stride-16 output → P4), the same Keras tensors as ``model.outputs``. Works on a model
    reloaded from a ``.keras`` file too (the mapping is rebuilt from its outputs).

    Examples:

    >>> backbone = keras_visrec.ConvNeXtAtto(include_top=False, features_only=True)
    >>> sorted(keras_visrec.convnext.pyramid_outputs(backbone))
    ['P2', 'P3', 'P4', 'P5']
    """
    outputs = list(model.outputs)
    if len(outputs) == 4:
        return {f"P{level + 2}": tensor for level, tensor in enumerate(outputs)}
    if len(outputs) == 1 and len(outputs[0].shape) == 4:
        return {"P4": outputs[0]}
    raise ValueError(f"`model` {model.name!r} is not a features_only ConvNeXt (it has {len(outputs)} outputs of "
                     f"shapes {[tuple(t.shape) for t in outputs]}); build it with include_top=False, "
                     "features_only=True.")


def _build(arch, **kwargs):
    config = dict(CONVNEXT_CONFIGS[arch])
    layer_scale = config.pop("layer_scale", 1e-6)
    use_grn = config.pop("grn", False)
    kwargs.setdefault("name", arch)
    if "layer_scale_init_value" not in kwargs or kwargs["layer_scale_init_value"] is _DEFAULT:
        kwargs["layer_scale_init_value"] = layer_scale
    return ConvNeXt(use_grn=use_grn, **config, **kwargs)


_DEFAULT = object()

_DOC = """Instantiates the {title} architecture.

    {paper}

    Args:
        include_top: bool. Whether to include the classification head (global average pool →
            LayerNorm → Dense). Defaults to `True`.
        weights: `None` (random init), `"imagenet"`, a zoo id (see `keras_visrec.zoo`), or the
            path of a local `.keras` / `.weights.h5` / `.pth` / `.safetensors` / `.bin` file.
            Defaults to `None`.
        input_tensor: optional Keras tensor to use as the image input.
        input_shape: optional `(height, width, 3)`; height and width `None` or multiples of
            {multiple}. Defaults to `(224, 224, 3)` with the head, `(None, None, 3)` without.
        pooling: `None`, `"avg"` or `"max"`: pooling of the last stage when `include_top=False`
            (followed by the head's LayerNorm, as in timm and keras.applications).
        classes: int. Number of classes of the head. Defaults to `1000`.
        classifier_activation: str or callable applied to the logits (`None` for logits).
            Defaults to `"softmax"`.
        include_preprocessing: bool. Whether the model normalises 0–255 RGB input with ImageNet
            mean/std itself. Defaults to `True`.
        drop_path_rate: float in [0, 1). Stochastic depth rate, rising linearly over the
            blocks. Defaults to `0.0`.
        layer_scale_init_value: float or None. Initial layer scale (None: off).
            Defaults to `{layer_scale}`.
        head_init_scale: float. Multiplies the head's initial weights (0.001 when fine-tuning
            from scratch heads, as the paper does). Defaults to `1.0`.
        features_only: bool. Return the stage outputs (strides 4/8/16/32, or one stride-16
            output for isotropic models) as a list instead of a classifier, for dense
            prediction; `model.pyramid_outputs` maps them as `{{"P2": …, "P5": …}}` (keras-hub).
            Needs `include_top=False`. Defaults to `False`.
        output_norms: bool. With `features_only`, pass each stage output through a LayerNorm,
            as the official segmentation and detection backbones do (their `norm0`…`norm3`).
            Defaults to `False`.
        name: str. Model name and prefix of every layer name. Defaults to `"{arch}"`.

    Returns:
        A `keras.Model`.

    Examples:

    >>> model = keras_visrec.{builder}(weights=None, input_shape=({example}, {example}, 3), classes=10)
    >>> model.output_shape
    (None, 10)
    """


def _make_builder(builder_name, arch, title):
    config = CONVNEXT_CONFIGS[arch]

    def builder(
        include_top=True,
        weights=None,
        input_tensor=None,
        input_shape=None,
        pooling=None,
        classes=1000,
        classifier_activation="softmax",
        include_preprocessing=True,
        *,
        drop_path_rate=0.0,
        layer_scale_init_value=_DEFAULT,
        head_init_scale=1.0,
        features_only=False,
        output_norms=False,
        name=arch,
    ):
        return _build(
            arch, include_top=include_top, weights=weights, input_tensor=input_tensor,
            input_shape=input_shape, pooling=pooling, classes=classes,
            classifier_activation=classifier_activation, include_preprocessing=include_preprocessing,
            drop_path_rate=drop_path_rate, layer_scale_init_value=layer_scale_init_value,
            head_init_scale=head_init_scale, features_only=features_only, output_norms=output_norms, name=name,
        )

    version2 = config.get("grn", False)
    paper = ("ConvNeXt V2 (Woo et al., 2023), weights CC-BY-NC 4.0." if version2
             else "A ConvNet for the 2020s (Liu et al., 2022), weights MIT.")
    isotropic = config.get("isotropic", False)
    builder.__name__ = builder.__qualname__ = builder_name
    builder.__doc__ = _DOC.format(
        title=title, paper=paper, multiple=16 if isotropic else 32, arch=arch, builder=builder_name,
        layer_scale=config.get("layer_scale", 1e-6), example=64 if isotropic else 32,
    )
    family = "convnext_v2" if version2 else "convnext_isotropic" if isotropic else "convnext"
    return register_model(arch, family)(builder)


ConvNeXtAtto = _make_builder("ConvNeXtAtto", "convnext_atto", "ConvNeXt-Atto")
ConvNeXtFemto = _make_builder("ConvNeXtFemto", "convnext_femto", "ConvNeXt-Femto")
ConvNeXtPico = _make_builder("ConvNeXtPico", "convnext_pico", "ConvNeXt-Pico")
ConvNeXtNano = _make_builder("ConvNeXtNano", "convnext_nano", "ConvNeXt-Nano")
ConvNeXtTiny = _make_builder("ConvNeXtTiny", "convnext_tiny", "ConvNeXt-T")
ConvNeXtSmall = _make_builder("ConvNeXtSmall", "convnext_small", "ConvNeXt-S")
ConvNeXtBase = _make_builder("ConvNeXtBase", "convnext_base", "ConvNeXt-B")
ConvNeXtLarge = _make_builder("ConvNeXtLarge", "convnext_large", "ConvNeXt-L")
ConvNeXtXLarge = _make_builder("ConvNeXtXLarge", "convnext_xlarge", "ConvNeXt-XL")
ConvNeXtIsotropicSmall = _make_builder("ConvNeXtIsotropicSmall", "convnext_isotropic_small", "isotropic ConvNeXt-S")
ConvNeXtIsotropicBase = _make_builder("ConvNeXtIsotropicBase", "convnext_isotropic_base", "isotropic ConvNeXt-B")
ConvNeXtIsotropicLarge = _make_builder("ConvNeXtIsotropicLarge", "convnext_isotropic_large", "isotropic ConvNeXt-L")
ConvNeXtV2Atto = _make_builder("ConvNeXtV2Atto", "convnext_v2_atto", "ConvNeXt V2-Atto")
ConvNeXtV2Femto = _make_builder("ConvNeXtV2Femto", "convnext_v2_femto", "ConvNeXt V2-Femto")
ConvNeXtV2Pico = _make_builder("ConvNeXtV2Pico", "convnext_v2_pico", "ConvNeXt V2-Pico")
ConvNeXtV2Nano = _make_builder("ConvNeXtV2Nano", "convnext_v2_nano", "ConvNeXt V2-Nano")
ConvNeXtV2Tiny = _make_builder("ConvNeXtV2Tiny", "convnext_v2_tiny", "ConvNeXt V2-T")
ConvNeXtV2Base = _make_builder("ConvNeXtV2Base", "convnext_v2_base", "ConvNeXt V2-B")
ConvNeXtV2Large = _make_builder("ConvNeXtV2Large", "convnext_v2_large", "ConvNeXt V2-L")
ConvNeXtV2Huge = _make_builder("ConvNeXtV2Huge", "convnext_v2_huge", "ConvNeXt V2-H")

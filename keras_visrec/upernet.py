"""UperNet semantic segmentation and mmdet's FPN neck on ConvNeXt backbones.

Papers: Xiao et al., "Unified Perceptual Parsing for Scene Understanding", ECCV 2018
(https://arxiv.org/abs/1807.10221); Liu et al., "A ConvNet for the 2020s", CVPR 2022
(https://arxiv.org/abs/2201.03545), whose ``semantic_segmentation/`` (mmseg) and
``object_detection/`` (mmdet) code in facebookresearch/ConvNeXt defines the models built here;
Lin et al., "Feature Pyramid Networks for Object Detection", CVPR 2017 (FPN). Official ADE20K
UperNet weights: MIT (see ``keras_visrec.zoo``, task ``segmentation``).

``UperNet`` is the mmseg ``EncoderDecoder`` of the official configs: the ConvNeXt backbone with a
LayerNorm on each stage output (the segmentation backbone's ``norm0`` … ``norm3``), the UPerHead
(pyramid pooling with bins 1, 2, 3, 6 on the last stage; 1×1 lateral and 3×3 FPN convs; all levels
upsampled to 1/4 and fused by a 3×3 conv; Dropout2d 0.1; 1×1 classifier; 512 channels; every conv
followed by BatchNorm and ReLU) and the auxiliary FCNHead on stage 3 (one 3×3 conv of 256
channels, Dropout2d 0.1, classifier; loss weight 0.4 in the recipe). Logits come out at 1/4 of
the input (decode head) and 1/16 (auxiliary head), as mmseg computes them; the loss and the metric
upsample them bilinearly (``keras_visrec.segmentation.losses.upsample_logits``). Upsampling inside
the head is bilinear with ``align_corners=False`` and the adaptive pooling uses PyTorch's bins
(``keras_visrec.layers.Resize``, ``AdaptiveAveragePooling2D``).

Layer names (API: the checkpoint key maps in ``keras_visrec.converters.upernet_keys``, layer
decay and exporters find layers by them); ``{name}`` is the model name:

    {name}_backbone_*                            the ConvNeXt (names of keras_visrec.convnext,
                                                 prefix "{name}_backbone"), incl.
    {name}_backbone_output_norm_{s}              s = 0 … 3   (official ``backbone.norm{s}``)
    {name}_decode_psp_{j}_pool, _conv, _bn, _relu, _resize   j = 0 … 3 (bins 1, 2, 3, 6)
    {name}_decode_psp_concat
    {name}_decode_bottleneck_{conv, bn, relu}
    {name}_decode_lateral_{i}_{conv, bn, relu}   i = 0 … 2   (stages 0 … 2)
    {name}_decode_top_down_{i}_resize, _add      i = 2, 1, 0
    {name}_decode_fpn_{i}_{conv, bn, relu}       i = 0 … 2
    {name}_decode_fpn_{i}_resize                 i = 1 … 3   (to 1/4)
    {name}_decode_fpn_concat
    {name}_decode_fpn_bottleneck_{conv, bn, relu}
    {name}_decode_dropout, {name}_decode_classifier, {name}_logits
    {name}_auxiliary_0_{conv, bn, relu}, {name}_auxiliary_dropout, {name}_auxiliary_classifier,
    {name}_aux_logits

mmseg's layer-decay constructor (stage-wise) groups them as: ``backbone_stem_*`` and
``backbone_downsampling_*`` → 0, ``backbone_stage_{s}_*`` → s + 1, everything else → the last group.

``FPN`` (names ``{name}_backbone_*``, ``{name}_lateral_{i}``, ``{name}_top_down_{i}_resize`` /
``_add``, ``{name}_fpn_{i}``, ``{name}_extra_{k}_pool``) returns ``{"P2": …, "P6": …}`` as mmdet's
FPN neck of the official Mask R-CNN / Cascade Mask R-CNN configs: 256 channels, 1×1 laterals and
3×3 output convs with bias, nearest top-down upsampling, P6 by a stride-2 max-pool of P5.
"""

import re

import keras
import numpy as np

from keras_visrec.arguments import check_choice, validate_classes, validate_input_shape, validate_name, validate_rate
from keras_visrec.convnext import CONVNEXT_CONFIGS, ConvNeXt
from keras_visrec.layers import AdaptiveAveragePooling2D, BatchNorm, Conv2D, Resize
from keras_visrec.registry import register_model
from keras_visrec.weights import load_weights, resolve_weights, validate_weights_argument

__all__ = [
    "FPN",
    "UPERNET_CONFIGS",
    "UperNet",
    "UperNetConvNeXtBase",
    "UperNetConvNeXtLarge",
    "UperNetConvNeXtSmall",
    "UperNetConvNeXtTiny",
    "UperNetConvNeXtXLarge",
    "backbone_spec",
    "convert_checkpoint",
    "drop_auxiliary",
]

# The official ADE20K configs (facebookresearch/ConvNeXt semantic_segmentation/configs/convnext):
# backbone, stochastic depth of the backbone, training crop.
UPERNET_CONFIGS = {
    "upernet_convnext_tiny": dict(backbone="convnext_tiny", drop_path_rate=0.4, crop=512),
    "upernet_convnext_small": dict(backbone="convnext_small", drop_path_rate=0.3, crop=512),
    "upernet_convnext_base": dict(backbone="convnext_base", drop_path_rate=0.4, crop=512),
    "upernet_convnext_large": dict(backbone="convnext_large", drop_path_rate=0.4, crop=640),
    "upernet_convnext_xlarge": dict(backbone="convnext_xlarge", drop_path_rate=0.4, crop=640),
}
POOL_SCALES = (1, 2, 3, 6)
BN_EPSILON = 1e-5   # PyTorch's BatchNorm2d / SyncBatchNorm
BN_MOMENTUM = 0.9   # PyTorch momentum 0.1
_BACKBONE_KEYS = {"depths", "dims", "use_grn"}
_ACCEPTED_BACKBONES = ("a ConvNeXt V1 / V2 registry name with four stages (e.g. 'convnext_tiny'), "
                       "dict(depths=(…4…), dims=(…4…)[, use_grn=bool]), or a keras_visrec ConvNeXt built with "
                       "include_top=False, features_only=True")


# ---- the backbone ------------------------------------------------------------------------------

def backbone_spec(backbone):
    """Describes a ``backbone`` argument: ``{"depths", "dims", "use_grn", "arch", "model", "prefix"}``.

    ``arch`` is the ConvNeXt registry name when the architecture is a registered one (else None);
    ``model`` and ``prefix`` are set when a built ConvNeXt was passed (its weights are copied).
    A backbone that cannot give four stage outputs raises a ValueError naming ``backbone``.
    """
    spec = {"model": None, "prefix": None}
    if isinstance(backbone, str):
        config = CONVNEXT_CONFIGS.get(backbone)
        if config is None or config.get("isotropic"):
            why = "an isotropic ConvNeXt has one stride-16 output" if config else "not a ConvNeXt registry name"
            raise ValueError(f"`backbone` must be {_ACCEPTED_BACKBONES}; received backbone={backbone!r} ({why}).")
        spec.update(depths=config["depths"], dims=config["dims"], use_grn=config.get("grn", False))
    elif isinstance(backbone, dict):
        unknown = set(backbone) - _BACKBONE_KEYS
        if unknown or not {"depths", "dims"} <= set(backbone):
            raise ValueError(f"`backbone` as a dict takes the keys {sorted(_BACKBONE_KEYS)} (depths and dims "
                             f"required); received backbone={backbone!r}.")
        try:
            depths, dims = tuple(int(d) for d in backbone["depths"]), tuple(int(d) for d in backbone["dims"])
        except (TypeError, ValueError):
            raise ValueError(f"`backbone` depths and dims must be sequences of ints; received backbone={backbone!r}.")
        if len(depths) != 4 or len(dims) != 4 or min(depths + dims) < 1:
            raise ValueError(f"`backbone` needs four stages (4 positive depths and dims) to give four stage "
                             f"outputs; received backbone={backbone!r}.")
        spec.update(depths=depths, dims=dims, use_grn=bool(backbone.get("use_grn", False)))
    elif isinstance(backbone, keras.Model):
        spec.update(_spec_of_model(backbone))
    else:
        raise TypeError(f"`backbone` must be {_ACCEPTED_BACKBONES}; received {type(backbone).__name__}.")
    spec["arch"] = next((arch for arch, config in CONVNEXT_CONFIGS.items()
                         if (config["depths"], config["dims"], config.get("grn", False))
                         == (spec["depths"], spec["dims"], spec["use_grn"]) and not config.get("isotropic")), None)
    return spec


def _spec_of_model(model):
    """The architecture of a built features_only ConvNeXt, read from its layer names."""
    layers = {layer.name: layer for layer in model.layers}
    stems = [name[: -len("_stem_conv")] for name in layers if name.endswith("_stem_conv")]
    if len(stems) != 1 or len(model.outputs) != 4:
        raise ValueError(
            f"`backbone` must be {_ACCEPTED_BACKBONES}; received the model {model.name!r} with "
            f"{len(model.outputs)} output(s) of shapes {[tuple(t.shape) for t in model.outputs]} "
            f"({'a ConvNeXt' if stems else 'not a keras_visrec ConvNeXt'}): four stage outputs are needed."
        )
    prefix = stems[0]
    block = re.compile(re.escape(prefix) + r"_stage_(\d)_block_(\d+)_depthwise_conv")
    depths, dims = [0] * 4, [0] * 4
    for name, layer in layers.items():
        if match := block.fullmatch(name):
            stage = int(match[1])
            depths[stage] = max(depths[stage], int(match[2]) + 1)
            dims[stage] = int(layer.kernel.shape[2])
    rates = [layer.rate for layer in model.layers if type(layer).__name__ == "StochasticDepth"]
    return dict(depths=tuple(depths), dims=tuple(dims), use_grn=any(n.endswith("_grn") for n in layers),
                model=model, prefix=prefix, preprocessing=f"{prefix}_preprocessing" in layers,
                drop_path_rate=max(rates, default=0.0))


def _build_backbone(inputs, spec, *, name, include_preprocessing, drop_path_rate, weights):
    """The ConvNeXt with output norms on ``inputs``; returns the four normalised stage outputs."""
    source = spec["model"]
    if source is not None and spec["preprocessing"] != include_preprocessing:
        raise ValueError(
            f"`include_preprocessing={include_preprocessing}` disagrees with the backbone model {source.name!r}, "
            f"which {'normalises' if spec['preprocessing'] else 'does not normalise'} its input itself; pass "
            f"include_preprocessing={spec['preprocessing']}."
        )
    backbone = ConvNeXt(
        spec["depths"], spec["dims"], use_grn=spec["use_grn"], include_top=False, features_only=True,
        output_norms=True, input_tensor=inputs, include_preprocessing=include_preprocessing,
        drop_path_rate=drop_path_rate,
        # the official dense-prediction configs initialise layer scale at 1.0 (V2 has none)
        layer_scale_init_value=None if spec["use_grn"] else 1.0,
        weights=weights, name=f"{name}_backbone",
    )
    if source is not None:
        _copy_backbone(source, spec["prefix"], backbone, f"{name}_backbone")
    return list(backbone.outputs)


def _copy_backbone(source, source_prefix, target, target_prefix):
    """Copies a built ConvNeXt's weights into the rebuilt backbone, layer by layer (suffix by suffix)."""
    targets = {layer.name: layer for layer in target.layers}
    for layer in source.layers:
        if not layer.weights or not layer.name.startswith(source_prefix + "_"):
            continue
        counterpart = targets.get(target_prefix + layer.name[len(source_prefix):])
        if counterpart is None:
            raise ValueError(f"`backbone` layer {layer.name!r} has no counterpart in the UperNet backbone.")
        counterpart.set_weights([np.reshape(value, tuple(variable.shape))
                                 for value, variable in zip(layer.get_weights(), counterpart.weights)])


# ---- heads -------------------------------------------------------------------------------------

def _conv_bn_relu(x, filters, kernel_size, name, sync_batchnorm):
    """mmcv's ``ConvModule`` with a norm: bias-free conv → BatchNorm → ReLU."""
    x = Conv2D(
        filters, kernel_size, padding="same", use_bias=False, name=f"{name}_conv",
        kernel_initializer=keras.initializers.VarianceScaling(2.0, "fan_out", "untruncated_normal"),
    )(x)
    x = BatchNorm(momentum=BN_MOMENTUM, epsilon=BN_EPSILON, synchronized=sync_batchnorm,
                  name=f"{name}_bn")(x)
    return keras.layers.ReLU(name=f"{name}_relu")(x)


def _classifier(x, classes, dropout, name):
    """mmseg's ``cls_seg``: Dropout2d → 1×1 conv; logits in float32 under mixed precision."""
    if dropout > 0:
        x = keras.layers.SpatialDropout2D(dropout, name=f"{name}_dropout")(x)
    return Conv2D(classes, 1, name=f"{name}_classifier",
                               kernel_initializer=keras.initializers.RandomNormal(stddev=0.01))(x)


def _uper_head(features, *, classes, channels, pool_scales, dropout, name, sync_batchnorm):
    prefix = f"{name}_decode"
    top = features[-1]
    pooled = [top]
    for j, scale in enumerate(pool_scales):
        x = AdaptiveAveragePooling2D(scale, name=f"{prefix}_psp_{j}_pool")(top)
        x = _conv_bn_relu(x, channels, 1, f"{prefix}_psp_{j}", sync_batchnorm)
        pooled.append(Resize(name=f"{prefix}_psp_{j}_resize")([x, top]))
    x = keras.layers.Concatenate(name=f"{prefix}_psp_concat")(pooled)
    laterals = [_conv_bn_relu(f, channels, 1, f"{prefix}_lateral_{i}", sync_batchnorm)
                for i, f in enumerate(features[:-1])]
    laterals.append(_conv_bn_relu(x, channels, 3, f"{prefix}_bottleneck", sync_batchnorm))
    for i in range(len(laterals) - 1, 0, -1):
        up = Resize(name=f"{prefix}_top_down_{i - 1}_resize")([laterals[i], laterals[i - 1]])
        laterals[i - 1] = keras.layers.Add(name=f"{prefix}_top_down_{i - 1}_add")([laterals[i - 1], up])
    outs = [_conv_bn_relu(laterals[i], channels, 3, f"{prefix}_fpn_{i}", sync_batchnorm)
            for i in range(len(laterals) - 1)]
    outs.append(laterals[-1])
    outs = [outs[0]] + [Resize(name=f"{prefix}_fpn_{i}_resize")([out, outs[0]]) for i, out in enumerate(outs) if i]
    x = keras.layers.Concatenate(name=f"{prefix}_fpn_concat")(outs)
    x = _conv_bn_relu(x, channels, 3, f"{prefix}_fpn_bottleneck", sync_batchnorm)
    x = _classifier(x, classes, dropout, prefix)
    return keras.layers.Activation("linear", dtype="float32", name=f"{name}_logits")(x)


def _fcn_head(feature, *, classes, channels, dropout, name, sync_batchnorm):
    x = _conv_bn_relu(feature, channels, 3, f"{name}_auxiliary_0", sync_batchnorm)
    x = _classifier(x, classes, dropout, f"{name}_auxiliary")
    return keras.layers.Activation("linear", dtype="float32", name=f"{name}_aux_logits")(x)


# ---- the models --------------------------------------------------------------------------------

def _registered_upernet(spec):
    return next((arch for arch, config in UPERNET_CONFIGS.items() if config["backbone"] == spec["arch"]), None)


def _validate_channels(value, argument):
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"`{argument}` must be a positive int; received {argument}={value!r}.")
    return int(value)


def UperNet(
    backbone="convnext_tiny",
    classes=150,
    *,
    input_shape=(512, 512, 3),
    auxiliary=True,
    weights=None,
    backbone_weights=None,
    drop_path_rate=None,
    include_preprocessing=True,
    channels=512,
    aux_channels=256,
    pool_scales=POOL_SCALES,
    dropout=0.1,
    sync_batchnorm=False,
    name=None,
):
    """Builds UperNet on a ConvNeXt backbone, as the official ADE20K configs do.

    Args:
        backbone: str, dict or keras.Model. A ConvNeXt V1 / V2 registry name with four stages
            (`"convnext_tiny"`, `"convnext_v2_base"`, …), `dict(depths=…, dims=…, use_grn=False)`
            for a custom one (tests: `dict(depths=(1, 1, 1, 1), dims=(8, 16, 32, 64))`), or a
            keras_visrec ConvNeXt built with `include_top=False, features_only=True` (its weights
            are copied into the new backbone; its output norms too when it has them).
            Defaults to `"convnext_tiny"`.
        classes: int. Number of classes. Defaults to `150` (ADE20K).
        input_shape: `(height, width, 3)`, sides multiples of 32 or None. Defaults to
            `(512, 512, 3)`, the training crop.
        auxiliary: bool. Whether to add the auxiliary FCN head on stage 3 (training; drop it
            for inference with :func:`drop_auxiliary`). Defaults to `True`.
        weights: `None`, a zoo id of a segmentation entry (`keras_visrec.zoo.list_weights(
            task="segmentation")`) or the path of an official mmseg `.pth` checkpoint, a Hugging
            Face `openmmlab/upernet-convnext-*` file (`.bin` / `.safetensors`), or a `.keras` /
            `.weights.h5` file. Defaults to `None`.
        backbone_weights: weights for the backbone only (any `weights=` value of the ConvNeXt
            builders, e.g. `"convnext_tiny.fb_in1k"`), the heads and output norms stay at their
            initialisation, as the official recipe starts. Defaults to `None`.
        drop_path_rate: float or None. Stochastic depth of the backbone; None takes the official
            config's rate for T/S/B/L/XL (0.4 / 0.3 / 0.4 / 0.4 / 0.4), a backbone model's own
            rate, else 0.0. Defaults to `None`.
        include_preprocessing: bool. Whether the model normalises 0–255 RGB input with ImageNet
            mean/std itself. Defaults to `True`.
        channels: int. Width of the decode head. Defaults to `512`.
        aux_channels: int. Width of the auxiliary head. Defaults to `256`.
        pool_scales: tuple of ints. Bins of the pyramid pooling module. Defaults to `(1, 2, 3, 6)`.
        dropout: float. Dropout2d rate before each classifier. Defaults to `0.1`.
        sync_batchnorm: bool. Synchronise BatchNorm statistics across replicas of a
            `tf.distribute` strategy (SyncBN, as the official recipe trains; TensorFlow backend
            only). Defaults to `False`.
        name: str. Model name and prefix of every layer name. Defaults to the registry name
            (`"upernet_convnext_tiny"`, …) or `"upernet"`.

    Returns:
        A functional `keras.Model` taking 0–255 RGB images: outputs `[logits, aux_logits]` at 1/4
        and 1/16 of the input with `auxiliary=True`, else `logits`. Not upsampled.

    Examples:

    >>> model = keras_visrec.UperNet(dict(depths=(1, 1, 1, 1), dims=(8, 16, 32, 64)), classes=5,
    ...                              input_shape=(64, 64, 3), channels=32, aux_channels=16)
    >>> [tuple(t.shape) for t in model.outputs]
    [(None, 16, 16, 5), (None, 4, 4, 5)]
    """
    spec = backbone_spec(backbone)
    arch = _registered_upernet(spec)
    name = validate_name(name if name is not None else arch or "upernet")
    classes = validate_classes(classes)
    channels = _validate_channels(channels, "channels")
    aux_channels = _validate_channels(aux_channels, "aux_channels")
    pool_scales = tuple(_validate_channels(s, "pool_scales") for s in pool_scales)
    dropout = validate_rate(dropout, "dropout")
    check_choice(auxiliary, "auxiliary", (True, False))
    check_choice(sync_batchnorm, "sync_batchnorm", (True, False))
    if drop_path_rate is None:
        official = UPERNET_CONFIGS.get(arch, {}).get("drop_path_rate", 0.0)
        drop_path_rate = spec.get("drop_path_rate", official) if spec["model"] is not None else official
    validate_rate(drop_path_rate, "drop_path_rate")
    input_shape = validate_input_shape(input_shape, default=(512, 512, 3), multiple=32, arch=name)
    if backbone_weights is not None and weights is not None:
        raise ValueError("Pass `weights` (the whole model) or `backbone_weights` (the backbone only), not both.")
    _validate_upernet_weights(weights, arch=arch or name, classes=classes)

    inputs = keras.Input(shape=input_shape, name="image")
    features = _build_backbone(inputs, spec, name=name, include_preprocessing=include_preprocessing,
                               drop_path_rate=drop_path_rate, weights=backbone_weights)
    head = dict(classes=classes, dropout=dropout, name=name, sync_batchnorm=sync_batchnorm)
    logits = _uper_head(features, channels=channels, pool_scales=pool_scales, **head)
    outputs = [logits, _fcn_head(features[2], channels=aux_channels, **head)] if auxiliary else logits
    model = keras.Model(inputs, outputs, name=name)
    if weights is not None:
        load_weights(model, weights, arch=arch or name, include_top=True, classes=classes, family="upernet")
    return model


def _validate_upernet_weights(weights, *, arch, classes):
    """Checks ``weights`` before building; zoo entries must be segmentation entries with ``classes`` classes."""
    kind, entry = resolve_weights(weights, arch=arch)
    if kind != "zoo":
        return
    if entry.task != "segmentation":
        raise ValueError(f"Zoo weights {entry.id!r} are {entry.task} weights; UperNet takes segmentation entries "
                         "(keras_visrec.zoo.list_weights(task='segmentation')), or use `backbone_weights=`.")
    if classes != entry.classes:
        raise ValueError(f"Zoo weights {entry.id!r} have a {entry.classes}-class head ({entry.dataset}); pass "
                         f"classes={entry.classes}; received classes={classes}.")
    validate_weights_argument(weights, arch=arch, include_top=False, classes=classes)


def drop_auxiliary(model):
    """The inference model of an UperNet: the same layers, the decode head's ``logits`` only.

    The result keeps the model's name, so checkpoints still load into it by layer name (the
    auxiliary head's keys are then reported as ignored).
    """
    if len(model.outputs) == 1:
        return model
    aux = f"{model.name}_aux_logits"
    if len(model.outputs) != 2 or model.outputs[1]._keras_history.operation.name != aux:
        raise ValueError(f"`model` {model.name!r} is not an UperNet with an auxiliary head (its outputs are "
                         f"{[t._keras_history.operation.name for t in model.outputs]}; expected a second output "
                         f"from layer {aux!r}).")
    inputs = model.inputs[0] if len(model.inputs) == 1 else model.inputs
    return keras.Model(inputs, model.outputs[0], name=model.name)


def convert_checkpoint(checkpoint, output, backbone="convnext_tiny", classes=150, **kwargs):
    """Converts an official UperNet checkpoint (mmseg or transformers layout) to a Keras file.

    The model is built, filled and checked before anything is written; the file appears at
    ``output`` only once complete (temporary file + rename), so a failed conversion leaves
    nothing behind.

    Args:
        checkpoint: str. The `.pth` / `.bin` / `.safetensors` file.
        output: str. A `.weights.h5` (weights only, any input size) or `.keras` (the whole model) path.
        backbone: as for :func:`UperNet`. Defaults to `"convnext_tiny"`.
        classes: int. Classes of the checkpoint's head. Defaults to `150`.
        **kwargs: the other arguments of :func:`UperNet` (`input_shape`, `auxiliary`, `name`, …).

    Returns:
        The loading summary (``layout``, ``assigned``, ``ignored``, ``metadata``) with ``output``.
    """
    from keras_visrec.converters.loading import load_checkpoint_into_model
    from keras_visrec.files import atomic_path

    output = str(output)
    if not output.endswith((".weights.h5", ".keras")):
        raise ValueError(f"`output` must end with .weights.h5 or .keras; received output={output!r}.")
    if "weights" in kwargs or "backbone_weights" in kwargs:
        raise ValueError("convert_checkpoint loads `checkpoint` itself; do not pass `weights` / `backbone_weights`.")
    model = UperNet(backbone, classes, **kwargs)
    summary = load_checkpoint_into_model(model, str(checkpoint), include_top=True, family="upernet")
    with atomic_path(output) as partial:
        if output.endswith(".weights.h5"):
            model.save_weights(partial)
        else:
            model.save(partial)
    return {**summary, "output": output}


def FPN(
    backbone="convnext_tiny",
    *,
    out_channels=256,
    num_outs=5,
    input_shape=(None, None, 3),
    weights=None,
    backbone_weights=None,
    drop_path_rate=0.0,
    include_preprocessing=True,
    name=None,
):
    """A ConvNeXt with mmdet's FPN neck: ``{"P2": …, "P6": …}`` for a detection head to take.

    The official Mask R-CNN / Cascade Mask R-CNN configs (facebookresearch/ConvNeXt
    ``object_detection/``): ConvNeXt with output norms, ``FPN(in_channels, 256, num_outs=5)``
    with 1×1 lateral convs, nearest-neighbour top-down sums, 3×3 output convs (all with bias, no
    norm) and the levels beyond P5 as stride-2 max-pools (``add_extra_convs=False``).

    Args:
        backbone: as for :func:`UperNet`. Defaults to `"convnext_tiny"`.
        out_channels: int. Channels of every pyramid level. Defaults to `256`.
        num_outs: int. Levels, from P2: 4 (P2–P5) or more (P6, P7 … by max-pooling). Defaults to `5`.
        input_shape: `(height, width, 3)`, sides multiples of 32 or None (mmdet pads images to
            32). Defaults to `(None, None, 3)`.
        weights: `None`, a zoo id of a detection entry, or an official mmdet `.pth` checkpoint:
            `backbone.*` and `neck.*` are loaded, the detection heads (`rpn_head.*`,
            `roi_head.*`) reported as left out. Defaults to `None`.
        backbone_weights: weights for the backbone only (e.g. `"convnext_tiny.fb_in1k"`).
        drop_path_rate: float. Stochastic depth of the backbone. Defaults to `0.0`.
        include_preprocessing: bool. Whether the model normalises 0–255 RGB input itself.
            Defaults to `True`.
        name: str. Defaults to `"fpn_{backbone}"` or `"fpn"`.

    Returns:
        A functional `keras.Model` whose output is the dict `{"P2": …, "P{num_outs + 1}": …}`.
    """
    spec = backbone_spec(backbone)
    name = validate_name(name if name is not None else f"fpn_{spec['arch']}" if spec["arch"] else "fpn")
    out_channels = _validate_channels(out_channels, "out_channels")
    num_outs = _validate_channels(num_outs, "num_outs")
    if num_outs < 4:
        raise ValueError(f"`num_outs` must be at least 4 (P2–P5, one per stage); received num_outs={num_outs}.")
    validate_rate(drop_path_rate, "drop_path_rate")
    input_shape = validate_input_shape(input_shape, multiple=32, arch=name)
    if backbone_weights is not None and weights is not None:
        raise ValueError("Pass `weights` (backbone and neck) or `backbone_weights` (the backbone only), not both.")
    kind, entry = resolve_weights(weights, arch=name)
    if kind == "zoo":
        if entry.task != "detection":
            raise ValueError(f"Zoo weights {entry.id!r} are {entry.task} weights; FPN takes detection entries "
                             "(keras_visrec.zoo.list_weights(task='detection')), or use `backbone_weights=`.")
        if spec["arch"] is not None and spec["arch"] != entry.arch:
            raise ValueError(f"Zoo weights {entry.id!r} are for a {entry.arch} backbone; received "
                             f"backbone={backbone!r}. Use keras_visrec.FPN({entry.arch!r}, weights={entry.id!r}).")
        validate_weights_argument(weights, arch=entry.arch, include_top=False, classes=entry.classes)

    inputs = keras.Input(shape=input_shape, name="image")
    features = _build_backbone(inputs, spec, name=name, include_preprocessing=include_preprocessing,
                               drop_path_rate=drop_path_rate, weights=backbone_weights)
    laterals = [Conv2D(out_channels, 1, name=f"{name}_lateral_{i}")(f) for i, f in enumerate(features)]
    for i in range(len(laterals) - 1, 0, -1):
        up = Resize(interpolation="nearest", name=f"{name}_top_down_{i - 1}_resize")([laterals[i], laterals[i - 1]])
        laterals[i - 1] = keras.layers.Add(name=f"{name}_top_down_{i - 1}_add")([laterals[i - 1], up])
    outs = [Conv2D(out_channels, 3, padding="same", name=f"{name}_fpn_{i}")(x)
            for i, x in enumerate(laterals)]
    for k in range(num_outs - len(outs)):
        outs.append(keras.layers.MaxPooling2D(1, strides=2, name=f"{name}_extra_{k}_pool")(outs[-1]))
    model = keras.Model(inputs, {f"P{level + 2}": x for level, x in enumerate(outs)}, name=name)
    if weights is not None:
        load_weights(model, weights, arch=entry.arch if kind == "zoo" else name, include_top=True, classes=1,
                     family="fpn")
    return model


# ---- registered variants -----------------------------------------------------------------------

_DOC = """Instantiates UperNet on {title}, as the official ADE20K config does.

    Official config: drop path {drop_path_rate}, training crop {crop}×{crop}, UPerHead 512
    channels, auxiliary FCN head 256 channels. Arguments as :func:`keras_visrec.UperNet`, with
    the backbone fixed; `weights` takes the official checkpoint (`{arch}.fb_*` zoo ids) or a file.

    Examples:

    >>> model = keras_visrec.{builder}(input_shape=({crop}, {crop}, 3))
    >>> inference = keras_visrec.upernet.drop_auxiliary(model)
    """


def _make_builder(builder_name, arch, title):
    config = UPERNET_CONFIGS[arch]

    def builder(classes=150, *, input_shape=(config["crop"], config["crop"], 3), auxiliary=True, weights=None,
                backbone_weights=None, drop_path_rate=config["drop_path_rate"], include_preprocessing=True,
                channels=512, aux_channels=256, pool_scales=POOL_SCALES, dropout=0.1, sync_batchnorm=False,
                name=arch):
        return UperNet(config["backbone"], classes, input_shape=input_shape, auxiliary=auxiliary, weights=weights,
                       backbone_weights=backbone_weights, drop_path_rate=drop_path_rate,
                       include_preprocessing=include_preprocessing, channels=channels, aux_channels=aux_channels,
                       pool_scales=pool_scales, dropout=dropout, sync_batchnorm=sync_batchnorm, name=name)

    builder.__name__ = builder.__qualname__ = builder_name
    builder.__doc__ = _DOC.format(title=title, arch=arch, builder=builder_name, **config)
    return register_model(arch, "upernet")(builder)


UperNetConvNeXtTiny = _make_builder("UperNetConvNeXtTiny", "upernet_convnext_tiny", "ConvNeXt-T")
UperNetConvNeXtSmall = _make_builder("UperNetConvNeXtSmall", "upernet_convnext_small", "ConvNeXt-S")
UperNetConvNeXtBase = _make_builder("UperNetConvNeXtBase", "upernet_convnext_base", "ConvNeXt-B")
UperNetConvNeXtLarge = _make_builder("UperNetConvNeXtLarge", "upernet_convnext_large", "ConvNeXt-L")
UperNetConvNeXtXLarge = _make_builder("UperNetConvNeXtXLarge", "upernet_convnext_xlarge", "ConvNeXt-XL")

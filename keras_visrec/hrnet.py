"""HRNetV2 for semantic segmentation and its pose form (Wang et al., "Deep High-Resolution
Representation Learning for Visual Recognition", TPAMI 2020, https://arxiv.org/abs/1908.07919).

A stem (two stride-2 3×3 convs) → ``layer1`` (bottleneck blocks at 1/4 resolution) → stages 2–4,
each a transition that opens one lower-resolution branch and a stack of multi-resolution modules
(parallel basic-block branches, then a fuse that sums every branch into every other) → the
segmentation head (all branches upsampled to 1/4 and concatenated, 1×1 conv, BN, ReLU, 1×1
classifier). Logits come out at 1/4 of the input resolution, as in the official code.

Layer names are the official PyTorch module paths with ``.`` turned into ``_`` behind the model
name (``stage3.0.branches.1.2.conv1`` → ``hrnetv2_w48_stage3_0_branches_1_2_conv1``), so the
converter and the ADP-C code (``keras_visrec.adpc``) find every layer by name; the first token
after the model name is the *segment* (``conv1``/``bn1``/``conv2``/``bn2`` = stem, ``layer1``,
``transition1``, ``stage2``, …, ``last_layer`` = head) that ADP-C masks and counts FLOPs by.

The network is written once, against :class:`HRNetOps`, which creates a layer on its first use
and applies it; ADP-C re-runs the same functions with a hook that masks every convolution. A
hook may also take over a conv with what follows it (``conv_bn``) and the whole head
(``pointwise_head``, see :func:`branches_head`); without one the same layers run in the same order.
"""

import keras

from keras_visrec.arguments import (model_inputs, validate_classes, validate_classifier_activation, validate_input_shape,
                                    validate_name)
from keras_visrec.layers.batch_norm import BatchNorm
from keras_visrec.layers.conv import Conv2D
from keras_visrec.layers.preprocessing import ImageNetNormalization
from keras_visrec.registry import register_model
from keras_visrec.weights import load_weights, resolve_weights, validate_weights_argument

__all__ = [
    "HRNET_CONFIGS",
    "HRNetOps",
    "HRNetV2",
    "HRNetV2W18",
    "HRNetV2W18SmallV2",
    "HRNetV2W32",
    "HRNetV2W48",
    "check_weights",
    "hrnet_backbone",
    "exit_input",
    "pose_head",
    "seg_head",
    "validate_config",
]

BN_EPSILON = 1e-5
BN_MOMENTUM = 0.99  # PyTorch momentum 0.01

# The official configurations (HRNet-Semantic-Segmentation experiments/*.yaml). Per stage:
# (modules, blocks per branch, channels per branch); stage 1 is bottlenecks of width 64.
HRNET_CONFIGS = {
    "w18_small_v2": dict(stem=64, layer1=(2, 64), stages=((1, (2, 2), (18, 36)),
                                                           (3, (2, 2, 2), (18, 36, 72)),
                                                           (2, (2, 2, 2, 2), (18, 36, 72, 144)))),
    "w18": dict(stem=64, layer1=(4, 64), stages=((1, (4, 4), (18, 36)),
                                                 (4, (4, 4, 4), (18, 36, 72)),
                                                 (3, (4, 4, 4, 4), (18, 36, 72, 144)))),
    "w32": dict(stem=64, layer1=(4, 64), stages=((1, (4, 4), (32, 64)),
                                                 (4, (4, 4, 4), (32, 64, 128)),
                                                 (3, (4, 4, 4, 4), (32, 64, 128, 256)))),
    "w48": dict(stem=64, layer1=(4, 64), stages=((1, (4, 4), (48, 96)),
                                                 (4, (4, 4, 4), (48, 96, 192)),
                                                 (3, (4, 4, 4, 4), (48, 96, 192, 384)))),
}


def validate_config(config):
    """A config by name (``HRNET_CONFIGS``) or as a dict with ``stem``, ``layer1`` and ``stages``."""
    if isinstance(config, str):
        if config not in HRNET_CONFIGS:
            raise ValueError(f"`backbone` must be one of {sorted(HRNET_CONFIGS)} or a config dict; "
                             f"received backbone={config!r}.")
        return HRNET_CONFIGS[config]
    if not isinstance(config, dict) or set(config) != {"stem", "layer1", "stages"} or len(config["stages"]) != 3:
        raise ValueError("A custom `backbone` config must be a dict with keys 'stem', 'layer1' and three "
                         f"'stages'; received {config!r}.")
    return config


class HRNetOps:
    """Creates each named layer on first use, then applies it.

    Args:
        prefix: str. Model name put in front of every layer name.
        layers: dict or `None`. Existing ``{full name: layer}`` to apply (run mode); `None`
            builds new layers.
        conv_hook: callable or `None`. ``hook(layer, x, stride, pad) -> y`` replaces the plain
            application of a convolution (ADP-C masking); `None` applies it densely.
        conv_class: the Conv2D class created for new convolutions (ADP-C passes its
            ``MaskedConv2D`` for masked segments).
        bn_momentum: float. Keras BatchNormalization momentum. Defaults to `0.99` (PyTorch's 0.01).
        fuse_interpolation: str. How the fuse upsamples lower branches: `"bilinear"` (segmentation)
            or `"nearest"` (the pose network). Defaults to `"bilinear"`.
        include_preprocessing: bool. Build mode: create the ``<prefix>_preprocessing`` layer
            (:meth:`preprocess`). Run mode applies it whenever the model has it. Defaults to `False`.
    """

    def __init__(self, prefix, layers=None, conv_hook=None, conv_class=None, bn_momentum=BN_MOMENTUM,
                 fuse_interpolation="bilinear", include_preprocessing=False):
        self.prefix = prefix
        self.bn_momentum = bn_momentum
        self.building = layers is None
        self.layers = {} if layers is None else layers
        self.conv_hook = conv_hook
        self.conv_class = conv_class or Conv2D
        self.fuse_interpolation = fuse_interpolation
        self.include_preprocessing = include_preprocessing

    def preprocess(self, x):
        """0–255 RGB → ImageNet mean/std when the model has a ``preprocessing`` layer (else ``x``)."""
        full = f"{self.prefix}_preprocessing"
        if (self.include_preprocessing if self.building else full in self.layers):
            return self.get("preprocessing", lambda n: ImageNetNormalization(name=n))(x)
        return x

    def get(self, name, factory):
        full = f"{self.prefix}_{name}"
        layer = self.layers.get(full)
        if layer is None:
            if not self.building:
                raise KeyError(f"Layer {full!r} is missing from the model.")
            layer = self.layers[full] = factory(full)
        return layer

    def _conv_layer(self, name, filters, kernel, stride, bias):
        cls = self.conv_class
        padding = "same" if stride == 1 else "valid"
        return self.get(name, lambda n: cls(filters, kernel, strides=stride, padding=padding, use_bias=bias, name=n))

    def _bn_layer(self, name):
        return self.get(name, lambda n: BatchNorm(
            epsilon=BN_EPSILON, momentum=self.bn_momentum, name=n))

    def conv(self, x, name, filters, kernel=1, stride=1, bias=False):
        pad = kernel // 2
        layer = self._conv_layer(name, filters, kernel, stride, bias)
        if self.conv_hook is not None:
            return self.conv_hook(layer, x, stride, pad)
        if stride != 1 and pad:
            x = self.get(name + "_pad", lambda n: keras.layers.ZeroPadding2D(pad, name=n))(x)
        return layer(x)

    def bn(self, x, name):
        return self._bn_layer(name)(x)

    def conv_bn(self, x, conv_name, bn_name, filters, kernel=1, stride=1, bias=False, relu=None, residual=None,
                add=None):
        """``relu(bn(conv(x)) + residual)``: no ReLU when ``relu`` (its layer name) is `None`, no sum
        when ``residual`` is `None` (``add`` names the sum's layer).

        A ``conv_hook`` with a ``conv_bn`` method (ADP-C's sparse mode) runs it all in one pass.
        """
        fused = getattr(self.conv_hook, "conv_bn", None)
        if fused is None:
            y = self.bn(self.conv(x, conv_name, filters, kernel, stride, bias), bn_name)
            if residual is not None:
                y = self.add([y, residual], add)
            return y if relu is None else self.relu(y, relu)
        conv = self._conv_layer(conv_name, filters, kernel, stride, bias)
        return fused(conv, self._bn_layer(bn_name), x, stride, kernel // 2, relu is not None, residual)

    def relu(self, x, name):
        return self.get(name, lambda n: keras.layers.ReLU(name=n))(x)

    def add(self, tensors, name):
        return self.get(name, lambda n: keras.layers.Add(name=n))(list(tensors))

    def concat(self, tensors, name):
        return self.get(name, lambda n: keras.layers.Concatenate(name=n))(list(tensors))

    def upsample(self, x, factor, name, interpolation="bilinear"):
        if factor == 1:
            return x
        return self.get(name, lambda n: keras.layers.UpSampling2D(factor, interpolation=interpolation, name=n))(x)

    def avg_pool(self, x, name):
        return self.get(name, lambda n: keras.layers.AveragePooling2D(2, name=n))(x)


def _bottleneck(ops, x, name, planes, downsample):
    residual = x
    y = ops.conv_bn(x, f"{name}_conv1", f"{name}_bn1", planes, relu=f"{name}_relu1")
    y = ops.conv_bn(y, f"{name}_conv2", f"{name}_bn2", planes, 3, relu=f"{name}_relu2")
    y = ops.conv_bn(y, f"{name}_conv3", f"{name}_bn3", planes * 4)
    if downsample:
        residual = ops.conv_bn(x, f"{name}_downsample_0", f"{name}_downsample_1", planes * 4)
    return ops.relu(ops.add([y, residual], f"{name}_add"), f"{name}_relu_out")


def _basic(ops, x, name, planes):
    y = ops.conv_bn(x, f"{name}_conv1", f"{name}_bn1", planes, 3, relu=f"{name}_relu1")
    return ops.conv_bn(y, f"{name}_conv2", f"{name}_bn2", planes, 3, relu=f"{name}_relu_out", residual=x,
                       add=f"{name}_add")


def stem_and_layer1(ops, x, config):
    """Preprocessing (when the model has it), stem and ``layer1``: the one-branch list ``[x]`` at 1/4."""
    x = ops.preprocess(x)
    stem = config["stem"]
    x = ops.conv_bn(x, "conv1", "bn1", stem, 3, 2, relu="relu1")
    x = ops.conv_bn(x, "conv2", "bn2", stem, 3, 2, relu="relu2")
    blocks, planes = config["layer1"]
    for i in range(blocks):
        x = _bottleneck(ops, x, f"layer1_{i}", planes, downsample=(i == 0 and stem != planes * 4))
    return [x]


def _channels(xs):
    return [int(x.shape[-1]) for x in xs]


def transition(ops, xs, channels, index):
    """``transition{index}``: matches the channels of old branches and opens the new one."""
    pre = _channels(xs)
    out = []
    for i, width in enumerate(channels):
        name = f"transition{index}_{i}"
        if i < len(pre):
            if pre[i] == width:
                out.append(xs[i])
            else:
                out.append(ops.conv_bn(xs[i], f"{name}_0", f"{name}_1", width, 3, relu=f"{name}_2"))
            continue
        y = xs[-1]
        steps = i + 1 - len(pre)
        for j in range(steps):
            width_j = width if j == steps - 1 else pre[-1]
            y = ops.conv_bn(y, f"{name}_{j}_0", f"{name}_{j}_1", width_j, 3, 2, relu=f"{name}_{j}_2")
        out.append(y)
    return out


def _fuse(ops, xs, name, rows=None):
    """The fuse of a module: output ``i`` sums every branch resized to branch ``i`` (``rows`` outputs)."""
    widths = _channels(xs)
    n = len(xs)
    out = []
    for i in range(n if rows is None else rows):
        terms = []
        for j in range(n):
            key = f"{name}_fuse_layers_{i}_{j}"
            if j == i:
                terms.append(xs[j])
            elif j > i:
                y = ops.conv_bn(xs[j], f"{key}_0", f"{key}_1", widths[i])
                terms.append(ops.upsample(y, 2 ** (j - i), f"{key}_up", ops.fuse_interpolation))
            else:
                y = xs[j]
                for k in range(i - j):
                    last = k == i - j - 1
                    y = ops.conv_bn(y, f"{key}_{k}_0", f"{key}_{k}_1", widths[i] if last else widths[j], 3, 2,
                                    relu=None if last else f"{key}_{k}_2")
                terms.append(y)
        out.append(ops.relu(ops.add(terms, f"{name}_fuse_{i}_add"), f"{name}_fuse_{i}_relu"))
    return out


def stage(ops, xs, stage_config, index, multi_scale_output=True):
    """``stage{index}``: multi-resolution modules (parallel basic-block branches, then the fuse).

    ``multi_scale_output=False`` (the pose network's stage 4) fuses the last module into the
    highest-resolution branch only and returns that one branch.
    """
    modules, blocks, widths = stage_config
    for m in range(modules):
        name = f"stage{index}_{m}"
        ys = []
        for b, x in enumerate(xs):
            for k in range(blocks[b]):
                x = _basic(ops, x, f"{name}_branches_{b}_{k}", widths[b])
            ys.append(x)
        xs = _fuse(ops, ys, name, rows=1 if not multi_scale_output and m == modules - 1 else None)
    return xs


def hrnet_backbone(ops, x, config, multi_scale_output=True):
    """Generator over the backbone: yields the branch list after layer1, stage2, stage3, stage4.

    ``multi_scale_output=False``: stage 4 yields its highest-resolution branch only (pose).
    """
    xs = stem_and_layer1(ops, x, config)
    yield xs
    for k, stage_config in enumerate(config["stages"]):
        xs = transition(ops, xs, stage_config[2], k + 1)
        xs = stage(ops, xs, stage_config, k + 2, multi_scale_output=multi_scale_output or k < 2)
        yield xs


def exit_input(ops, xs, name):
    """Every branch bilinearly upsampled to the first branch's size and concatenated."""
    if len(xs) == 1:
        return xs[0]
    ups = [xs[0]] + [ops.upsample(x, 2 ** i, f"{name}_input_up_{i}") for i, x in enumerate(xs) if i]
    return ops.concat(ups, f"{name}_input")


def branches_head(ops, xs, classes, name):
    """``seg_head(exit_input(xs))``, every layer per pixel: a ``conv_hook`` with a ``pointwise_head``
    method (ADP-C's sparse mode) evaluates it only at the pixels it needs."""
    fused = getattr(ops.conv_hook, "pointwise_head", None)
    if fused is None:
        return seg_head(ops, exit_input(ops, xs, name), classes, name)
    width = sum(int(x.shape[-1]) for x in xs)
    conv, bn = ops._conv_layer(f"{name}_0", width, 1, 1, True), ops._bn_layer(f"{name}_1")
    classifier = ops._conv_layer(f"{name}_3", classes, 1, 1, True)
    return fused(xs, conv, bn, classifier, lambda: seg_head(ops, exit_input(ops, xs, name), classes, name))


def seg_head(ops, x, classes, name):
    """The HRNetV2 head (``last_layer`` in the official code): 1×1 conv, BN, ReLU, 1×1 classifier."""
    width = int(x.shape[-1])
    y = ops.conv_bn(x, f"{name}_0", f"{name}_1", width, bias=True, relu=f"{name}_2")
    return ops.conv(y, f"{name}_3", classes, bias=True)


def pose_head(ops, xs, joints, name="final_layer"):
    """The pose HRNet head (``final_layer``): a 1×1 conv with bias on the highest-resolution branch."""
    return ops.conv(xs[0], name, joints, bias=True)


def check_weights(weights, *, arch, include_top, classes, backbone_arch=None):
    """Validates ``weights=`` before building, as :func:`keras_visrec.weights.validate_weights_argument`
    does, with two rules of this family.

    * An ImageNet *classification* file (``task == "classification"``, HRNet-Image-Classification)
      initialises the backbone only: its 1000-class head is never loaded, so ``classes`` is free.
      ``backbone_arch`` names the HRNet whose ImageNet entries also fit ``arch`` (ADP-C models).
    * A catalogue entry whose file is not a direct download (``fetch`` is set: Google Drive,
      OneDrive) raises its fetch steps; the user then passes the downloaded file as ``weights=``.
    """
    kind, entry = resolve_weights(weights, arch=arch)
    if kind != "zoo" or entry.arch not in (arch, backbone_arch):
        return validate_weights_argument(weights, arch=arch, include_top=include_top, classes=classes)
    if entry.fetch:
        raise ValueError(f"Zoo weights {entry.id!r} are not a direct download: {entry.fetch}")
    backbone_only = entry.task == "classification"
    return validate_weights_argument(weights, arch=entry.arch, include_top=include_top and not backbone_only,
                                     classes=classes)


def _arch(backbone, name):
    """The registry name of a named config (so ``weights=`` resolves under any ``name=``), else ``name``."""
    return f"hrnetv2_{backbone}" if isinstance(backbone, str) else name


def HRNetV2(backbone="w48", *, include_top=True, weights=None, input_tensor=None, input_shape=None, classes=19,
            classifier_activation=None, include_preprocessing=True, name=None):
    """HRNetV2 segmentation network; logits at 1/4 of the input resolution.

    Args:
        backbone: str or dict. A key of ``HRNET_CONFIGS`` (`"w18_small_v2"`, `"w18"`, `"w32"`,
            `"w48"`) or a custom config dict of the same form. Defaults to `"w48"`.
        include_top: bool. With the segmentation head (``last_layer``); `False` returns the four
            branch features (strides 4, 8, 16, 32) as a list, also as ``model.pyramid_outputs``
            ``{"P2": …, "P5": …}`` (keras-hub's convention). Defaults to `True`.
        weights: `None` (random init), a zoo id (``keras_visrec.zoo.list_weights("hrnetv2_*")``) or
            a local file: an official HRNet-Semantic-Segmentation / ADP-C ``.pth`` (read without
            torch), an HRNet-Image-Classification ImageNet ``.pth`` (backbone by key match, its
            classification head reported as skipped), ``.keras`` or ``.weights.h5``.
        input_tensor: optional Keras tensor to build on.
        input_shape: optional ``(height, width, 3)``, sides `None` or multiples of 32.
        classes: int. Number of classes of the head. Defaults to `19` (Cityscapes).
        classifier_activation: `None` (logits, what the losses take), a Keras activation name or a
            callable applied to the logits. Defaults to `None`.
        include_preprocessing: bool. The model maps 0–255 RGB to ImageNet mean/std itself, as the
            official pipelines normalise their input. Defaults to `True`.
        name: str. Model name and layer-name prefix. Defaults to ``hrnetv2_<backbone>``.

    Examples:

    >>> tiny = dict(stem=16, layer1=(1, 8), stages=((1, (1, 1), (8, 16)), (1, (1, 1, 1), (8, 16, 32)),
    ...             (1, (1, 1, 1, 1), (8, 16, 32, 64))))
    >>> model = HRNetV2(tiny, classes=11, input_shape=(64, 64, 3), name="tiny")
    >>> model.output.shape
    (None, 16, 16, 11)
    """
    config = validate_config(backbone)
    name = validate_name(f"hrnetv2_{backbone if isinstance(backbone, str) else 'custom'}" if name is None else name)
    classes = validate_classes(classes)
    classifier_activation = validate_classifier_activation(classifier_activation)
    arch = _arch(backbone, name)
    check_weights(weights, arch=arch, include_top=include_top, classes=classes)
    shape = validate_input_shape(input_shape, input_tensor=input_tensor, multiple=32, arch=arch)
    inputs, sources = model_inputs(input_tensor, shape)
    ops = HRNetOps(name, include_preprocessing=bool(include_preprocessing))
    xs = None
    for xs in hrnet_backbone(ops, inputs, config):
        pass
    if include_top:
        outputs = branches_head(ops, xs, classes, "last_layer")
        if classifier_activation is not None:
            outputs = keras.layers.Activation(classifier_activation, dtype="float32", name="predictions")(outputs)
    else:
        outputs = list(xs)
    model = keras.Model(sources, outputs, name=name)
    if not include_top:
        model.pyramid_outputs = {f"P{i + 2}": x for i, x in enumerate(xs)}
    if weights is not None:
        load_weights(model, weights, arch=arch, include_top=include_top, classes=classes, family="hrnet")
    return model


def _variant(key, doc_name):
    def builder(include_top=True, weights=None, *, input_tensor=None, input_shape=None, classes=19,
                classifier_activation=None, include_preprocessing=True, name=None):
        return HRNetV2(key, include_top=include_top, weights=weights, input_tensor=input_tensor,
                       input_shape=input_shape, classes=classes, classifier_activation=classifier_activation,
                       include_preprocessing=include_preprocessing, name=f"hrnetv2_{key}" if name is None else name)

    builder.__name__ = builder.__qualname__ = doc_name
    builder.__doc__ = (f"HRNetV2-{key.upper()} segmentation network; arguments as :func:`HRNetV2` "
                       f"(registry name ``hrnetv2_{key}``).")
    return builder


HRNetV2W18SmallV2 = register_model("hrnetv2_w18_small_v2", family="hrnet")(_variant("w18_small_v2", "HRNetV2W18SmallV2"))
HRNetV2W18 = register_model("hrnetv2_w18", family="hrnet")(_variant("w18", "HRNetV2W18"))
HRNetV2W32 = register_model("hrnetv2_w32", family="hrnet")(_variant("w32", "HRNetV2W32"))
HRNetV2W48 = register_model("hrnetv2_w48", family="hrnet")(_variant("w48", "HRNetV2W48"))

"""The CIFAR networks of "Rethinking the Value of Network Pruning" (Liu et al., ICLR 2019).

Paper: https://arxiv.org/abs/1810.05270; official code: github.com/Eric-mingjie/rethinking-network-pruning
(MIT). Each builder computes the function of the official PyTorch network it names — with that
network's state dict copied in (``weights="x.pth"``, through ``keras_visrec.converters.cifar_keys``)
the logits agree to float32 round-off (``tests/test_cifar_official.py``):

* :func:`VGGCIFAR` — ``cifar/l1-norm-pruning/models/vgg.py`` (``vgg``, ``head="l1"``: Linear 512 →
  BN → ReLU → Linear) and ``cifar/network-slimming/models/vgg.py`` (``vgg``, ``head="slimming"``: one
  Linear): 3×3 conv (no bias) + BN + ReLU per ``cfg`` entry, ``"M"`` = 2×2 max-pool, no fifth pool,
  then a 2×2 average pool and the head.
* :func:`ResNetCIFAR` — ``cifar/l1-norm-pruning/models/resnet.py`` (``ResNet``): basic blocks of
  16/32/64 channels, a block's first conv width from ``cfg`` (what L1-norm pruning changes). The
  option-A shortcut is that file's ``downsample_basic_block``: a 2×2 *average* pool, then zero
  channels appended (``{p}_shortcut_pool`` → :class:`ShortcutA`); ``shortcut="B"`` is a 1×1 conv + BN
  projection (``cifar/weight-level/models/cifar/resnet.py``'s ``downsample``).
* :func:`PreResNetCIFAR` — ``cifar/network-slimming/models/preresnet.py`` (``resnet``):
  pre-activation bottlenecks with a :class:`ChannelSelection` after each block's first BN and after
  the final BN (the official ``channel_selection``).
* :func:`DenseNetCIFAR` — ``cifar/network-slimming/models/densenet.py`` (``densenet``): growth 12,
  no bottleneck, no compression, BN → select → ReLU → conv per layer.

Padding as PyTorch pads: every 3×3 conv pads one pixel on *every* side. For stride 1 that is
Keras' ``"same"``; for stride 2 ``"same"`` would pad bottom/right only and shift the sampling grid,
so a strided conv is ``{conv}_pad`` (``ZeroPadding2D(1)``) followed by the conv with ``"valid"``.

Layer names are flat and deterministic (names are API — pruning finds layers by them):

    {name}_preprocessing
    VGG:        {name}_conv_{i}, {name}_bn_{i}, {name}_relu_{i}, {name}_pool_{i}   (i = cfg index)
                {name}_avgpool, {name}_flatten, [{name}_fc_1, {name}_fc_1_bn, {name}_fc_1_relu],
                {name}_classifier
    ResNet:     {name}_conv_1, {name}_bn_1, {name}_relu_1,
                {name}_stage_{s}_block_{b}_{conv_1_pad, conv_1, bn_1, relu_1, conv_2, bn_2,
                                            shortcut_pool, shortcut, shortcut_bn, add, relu_out}
    PreResNet:  {name}_conv_1, {name}_stage_{s}_block_{b}_{bn_1, select, relu_1, conv_1, bn_2,
                relu_2, conv_2_pad, conv_2, bn_3, relu_3, conv_3, downsample, add}, {name}_bn,
                {name}_select, {name}_relu
    DenseNet:   {name}_conv_1, {name}_dense_{d}_layer_{l}_{bn, select, relu, conv, concat},
                {name}_transition_{t}_{bn, select, relu, conv, pool}, {name}_bn, {name}_select,
                {name}_relu
    all:        {name}_avgpool (global; ``{name}_maxpool`` with ``pooling="max"``),
                {name}_classifier, predictions

Every builder takes keras.applications' arguments (``include_top, weights, input_tensor,
input_shape, pooling, classes, classifier_activation, include_preprocessing``, ``name``); models
take 0–255 RGB input and normalise it with CIFAR's mean and std (``include_preprocessing=True``), so
tensorflow-datasets images feed in unchanged. The old names ``CIFARVGG``, ``CIFARResNet``,
``CIFARPreResNet`` and ``CIFARDenseNet`` still work for one release and warn.
"""

import inspect
import numbers
import warnings

import keras
import numpy as np

from keras_visrec.arguments import (check_choice, model_inputs, validate_classes, validate_classifier_activation,
                                    validate_input_shape, validate_name, validate_pooling)
from keras_visrec.layers import BatchNorm, ImageNetNormalization
from keras_visrec.registry import register_model
from keras_visrec.weights import load_weights, validate_weights_argument

__all__ = [
    "CIFAR_MEAN", "CIFAR_STD", "VGG_CONFIGS",
    "ChannelSelection", "ShortcutA",
    "VGGCIFAR", "ResNetCIFAR", "PreResNetCIFAR", "DenseNetCIFAR",
    "VGG16CIFAR", "VGG19CIFAR", "ResNet56CIFAR", "ResNet110CIFAR", "PreResNet164CIFAR", "DenseNet40CIFAR",
    "CIFARVGG", "CIFARResNet", "CIFARPreResNet", "CIFARDenseNet",
    "resnet_block_widths", "preresnet_default_cfg", "densenet_default_cfg",
]

# The normalisation of the official code (transforms.Normalize).
CIFAR_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR_STD = (0.2023, 0.1994, 0.2010)

VGG_CONFIGS = {
    "vgg16": (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512),
    "vgg19": (64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512, 512, 512, 512, "M", 512, 512, 512, 512),
}

_HEADS = ("l1", "slimming")
_SHORTCUTS = ("A", "B")


@keras.saving.register_keras_serializable(package="keras_visrec")
class ShortcutA(keras.layers.Layer):
    """The parameter-free part of the option-A shortcut: subsampling, then zero channels appended.

    ``filters - input channels`` zero channels follow the input's. The CIFAR ResNet calls it with
    ``strides=1`` behind a 2×2 average pool, which is the official ``downsample_basic_block``;
    ``strides > 1`` subsamples (``x[:, ::s, ::s]``, the ``AvgPool2d(kernel_size=1, stride)`` form
    of other CIFAR ResNet code) and is kept for models saved with it.

    Args:
        filters: int. Output channels (at least the input's).
        strides: int. Subsampling step. Defaults to `2`.
    """

    def __init__(self, filters, strides=2, **kwargs):
        super().__init__(**kwargs)
        self.filters = int(filters)
        self.strides = int(strides)

    def build(self, input_shape):
        if input_shape[-1] is not None and input_shape[-1] > self.filters:
            raise ValueError(f"ShortcutA {self.name!r}: `filters`={self.filters} is below the input's "
                             f"{input_shape[-1]} channels.")

    def call(self, inputs):
        x = inputs if self.strides == 1 else inputs[:, :: self.strides, :: self.strides, :]
        extra = self.filters - inputs.shape[-1]
        if extra == 0:
            return x
        return keras.ops.pad(x, [[0, 0], [0, 0], [0, 0], [0, extra]])

    def compute_output_shape(self, input_shape):
        def sub(d):
            return None if d is None else -(-d // self.strides)

        return (input_shape[0], sub(input_shape[1]), sub(input_shape[2]), self.filters)

    def get_config(self):
        return {**super().get_config(), "filters": self.filters, "strides": self.strides}


@keras.saving.register_keras_serializable(package="keras_visrec")
class ChannelSelection(keras.layers.Layer):
    """Passes on a fixed subset of the last axis (identity when ``indices`` is `None`).

    Network slimming's ``channel_selection``: a BN on a shared tensor (a residual stream, a dense
    concatenation) is pruned by choosing which of its channels reach the next convolution.

    Args:
        indices: list of int or `None`. Channels to keep, in order. Defaults to `None` (all).
    """

    def __init__(self, indices=None, **kwargs):
        super().__init__(**kwargs)
        self.indices = None if indices is None else [int(i) for i in indices]

    def build(self, input_shape):
        if self.indices is not None:
            channels = input_shape[-1]
            if not self.indices or (channels is not None and not all(0 <= i < channels for i in self.indices)):
                raise ValueError(f"ChannelSelection {self.name!r}: `indices` must be non-empty and within "
                                 f"[0, {channels}); received {self.indices}.")

    def call(self, inputs):
        if self.indices is None:
            return inputs
        return keras.ops.take(inputs, np.asarray(self.indices, "int32"), axis=-1)

    def compute_output_shape(self, input_shape):
        if self.indices is None:
            return tuple(input_shape)
        return tuple(input_shape[:-1]) + (len(self.indices),)

    def get_config(self):
        return {**super().get_config(), "indices": self.indices}


# ----------------------------------------------------------------------------------------------
# shared pieces


def _validate(arch, *, include_top, weights, input_tensor, input_shape, pooling, classes, classifier_activation,
              name, multiple=1, minimum=1, fixed_size=False):
    """Checks the keras.applications arguments before anything is built; returns ``(shape, classes)``."""
    validate_name(name)
    classes = validate_classes(classes)
    validate_pooling(pooling)
    validate_classifier_activation(classifier_activation)
    validate_weights_argument(weights, arch=arch, include_top=include_top, classes=classes)
    shape = validate_input_shape(input_shape, input_tensor=input_tensor,
                                 default=(32, 32, 3) if include_top else (None, None, 3),
                                 multiple=multiple, minimum=minimum, arch=arch)
    if fixed_size and None in shape[:2]:
        raise ValueError(f"`input_shape` of {arch} with include_top=True needs a fixed height and width (the head "
                         f"flattens the last feature map); received input_shape={shape}.")
    return shape, classes


def _is_int(value):
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _stem(inputs, name, include_preprocessing):
    if include_preprocessing:
        return ImageNetNormalization(CIFAR_MEAN, CIFAR_STD, name=f"{name}_preprocessing")(inputs)
    return inputs


def _kaiming():
    """He-normal over fan-out, as the official code initialises convs. One instance per layer: an
    initializer created without a seed draws its seed once, so a shared one would give every conv of
    the same shape the same kernel."""
    return keras.initializers.VarianceScaling(2.0, mode="fan_out", distribution="untruncated_normal")


def _conv(x, filters, kernel, name, strides=1):
    """A bias-free conv padded as PyTorch pads it: ``kernel // 2`` pixels on every side."""
    pad = kernel // 2
    if strides > 1 and pad:  # "same" would pad bottom/right only
        x = keras.layers.ZeroPadding2D(pad, name=f"{name}_pad")(x)
    return keras.layers.Conv2D(filters, kernel, strides=strides, padding="same" if strides == 1 else "valid",
                               use_bias=False, kernel_initializer=_kaiming(), name=name)(x)


def _bn(name, gamma=1.0):
    return BatchNorm(epsilon=1e-5, momentum=0.9, name=name, gamma_initializer=keras.initializers.Constant(gamma))


def _pool(x, pooling, name):
    if pooling == "avg":
        return keras.layers.GlobalAveragePooling2D(name=f"{name}_avgpool")(x)
    if pooling == "max":
        return keras.layers.GlobalMaxPooling2D(name=f"{name}_maxpool")(x)
    return x


def _global_head(x, *, name, include_top, pooling, classes, classifier_activation):
    """Global average pool → Dense → ``predictions`` with the head; else the optional pooling."""
    if not include_top:
        return _pool(x, pooling, name)
    x = keras.layers.GlobalAveragePooling2D(name=f"{name}_avgpool")(x)
    return _classifier(x, name=name, classes=classes, classifier_activation=classifier_activation)


def _classifier(x, *, name, classes, classifier_activation):
    x = keras.layers.Dense(classes, name=f"{name}_classifier")(x)
    return keras.layers.Activation(classifier_activation, dtype="float32", name="predictions")(x)


def _finish(source_inputs, outputs, *, name, arch, include_top, classes, weights):
    model = keras.Model(source_inputs, outputs, name=name)
    if weights is not None:
        load_weights(model, weights, arch=arch, include_top=include_top, classes=classes, family="cifar")
    return model


def _widths(cfg, expected, what):
    if not all(_is_int(c) for c in cfg):
        raise ValueError(f"`cfg` for {what} must list integer widths; received cfg={list(cfg)}.")
    cfg = [int(c) for c in cfg]
    if len(cfg) != expected:
        raise ValueError(f"`cfg` for {what} must have {expected} entries; received {len(cfg)}: {cfg}.")
    if any(c < 1 for c in cfg):
        raise ValueError(f"`cfg` widths must be positive integers; received {cfg}.")
    return cfg


def _blocks_per_stage(depth, per_block, offset, what):
    if not _is_int(depth) or depth < per_block + offset or (depth - offset) % per_block:
        raise ValueError(f"`depth` of {what} must be {per_block}n + {offset} with n >= 1; received depth={depth!r}.")
    return (int(depth) - offset) // per_block


# ----------------------------------------------------------------------------------------------
# VGG


def VGGCIFAR(cfg, *, head="l1", include_top=True, weights=None, input_tensor=None, input_shape=None, pooling=None,
             classes=10, classifier_activation="softmax", include_preprocessing=True, bn_gamma_init=1.0, name="vgg"):
    """A CIFAR VGG from its layer list ``cfg`` (ints = conv widths, ``"M"`` = max-pool).

    Args:
        cfg: sequence of int / `"M"`. E.g. ``VGG_CONFIGS["vgg16"]`` or a pruned width list.
        head: str. `"l1"` (Dense 512 – BN – ReLU – Dense, the L1-norm code's) or `"slimming"` (one
            Dense, the network-slimming code's). Defaults to `"l1"`.
        include_top: bool. Include the 2×2 average pool, flatten and ``head``; without it the model
            ends at the last conv block (or its global ``pooling``). Defaults to `True`.
        weights: `None`, an official PyTorch state dict of this VGG (``.pth``) or a ``.keras`` /
            ``.weights.h5`` file. Defaults to `None`.
        input_tensor: optional Keras tensor to build on.
        input_shape: optional ``(height, width, 3)``, sides multiples of ``2 ** max-pools`` (with the
            head: ``2 ** (max-pools + 1)``, and fixed). Defaults to `(32, 32, 3)` with the head,
            `(None, None, 3)` without.
        pooling: `None`, `"avg"` or `"max"`: global pooling when ``include_top=False``.
        classes: int (numpy integers accepted). Number of classes. Defaults to `10`.
        classifier_activation: str, callable or `None` (logits). Defaults to `"softmax"`.
        include_preprocessing: bool. Normalise 0–255 input with CIFAR mean/std. Defaults to `True`.
        bn_gamma_init: float. Initial BN scale (network slimming uses 0.5). Defaults to `1.0`.
        name: str. Model name and layer-name prefix. Defaults to `"vgg"`.
    """
    items = list(cfg)
    if not items or any(not (c == "M" or (_is_int(c) and c > 0)) for c in items):
        raise ValueError(f"`cfg` must list positive widths and 'M'; received cfg={cfg!r}.")
    check_choice(head, "head", _HEADS)
    pools = items.count("M")
    arch = next((f"{key}_cifar" for key, value in VGG_CONFIGS.items() if tuple(items) == value), name)
    shape, classes = _validate(arch, include_top=include_top, weights=weights, input_tensor=input_tensor,
                               input_shape=input_shape, pooling=pooling, classes=classes,
                               classifier_activation=classifier_activation, name=name,
                               multiple=2 ** (pools + (1 if include_top else 0)), fixed_size=include_top)
    inputs, source_inputs = model_inputs(input_tensor, shape)
    x = _stem(inputs, name, include_preprocessing)
    for i, item in enumerate(items):
        if item == "M":
            x = keras.layers.MaxPooling2D(2, name=f"{name}_pool_{i}")(x)
            continue
        x = _conv(x, int(item), 3, f"{name}_conv_{i}")
        x = _bn(f"{name}_bn_{i}", bn_gamma_init)(x)
        x = keras.layers.ReLU(name=f"{name}_relu_{i}")(x)
    if include_top:
        x = keras.layers.AveragePooling2D(2, name=f"{name}_avgpool")(x)
        x = keras.layers.Flatten(name=f"{name}_flatten")(x)
        if head == "l1":
            x = keras.layers.Dense(512, name=f"{name}_fc_1")(x)
            x = _bn(f"{name}_fc_1_bn", bn_gamma_init)(x)
            x = keras.layers.ReLU(name=f"{name}_fc_1_relu")(x)
        outputs = _classifier(x, name=name, classes=classes, classifier_activation=classifier_activation)
    else:
        outputs = _pool(x, pooling, name)
    return _finish(source_inputs, outputs, name=name, arch=arch, include_top=include_top, classes=classes,
                   weights=weights)


# ----------------------------------------------------------------------------------------------
# ResNet (basic blocks, option-A shortcut)


def resnet_block_widths(depth):
    """Default first-conv widths of a CIFAR ResNet's ``3n`` blocks (``depth = 6n + 2``)."""
    n = _blocks_per_stage(depth, 6, 2, "ResNetCIFAR")
    return [16] * n + [32] * n + [64] * n


def _shortcut(x, planes, stride, prefix, kind):
    """The official shortcut where a block changes shape: option A or a 1×1 projection (B)."""
    if kind == "B":
        x = _conv(x, planes, 1, f"{prefix}_shortcut", strides=stride)
        return _bn(f"{prefix}_shortcut_bn")(x)
    if stride > 1:  # downsample_basic_block: nn.AvgPool2d(2, 2), then zero channels
        x = keras.layers.AveragePooling2D(stride, name=f"{prefix}_shortcut_pool")(x)
    return ShortcutA(planes, strides=1, name=f"{prefix}_shortcut")(x)


def ResNetCIFAR(depth=56, cfg=None, *, shortcut="A", include_top=True, weights=None, input_tensor=None,
                input_shape=None, pooling=None, classes=10, classifier_activation="softmax",
                include_preprocessing=True, name=None):
    """A CIFAR ResNet of basic blocks (``depth = 6n + 2``: 16/32/64 channels, ``n`` blocks each).

    Args:
        depth: int. 20, 32, 44, 56, 110, … Defaults to `56`.
        cfg: list of int or `None`. Width of every block's first conv (``3n`` entries), what L1-norm
            pruning shrinks (the official ``cfg``). Defaults to the unpruned widths.
        shortcut: str. `"A"` (2×2 average pool + zero channels, the official l1-norm code's) or `"B"`
            (1×1 conv + BN projection) where shapes change. Defaults to `"A"`.
        include_top, weights, input_tensor, pooling, classes, classifier_activation,
            include_preprocessing: as :func:`VGGCIFAR` (the head is global average pool → Dense).
        input_shape: optional ``(height, width, 3)``; with ``shortcut="A"`` sides are multiples of 4
            (the shortcut's average pool and the strided conv then agree). Defaults to `(32, 32, 3)`
            with the head, `(None, None, 3)` without.
        name: str. Defaults to ``resnet{depth}``.
    """
    name = f"resnet{depth}" if name is None else name
    n = _blocks_per_stage(depth, 6, 2, "ResNetCIFAR")
    widths = resnet_block_widths(depth) if cfg is None else _widths(cfg, 3 * n, f"ResNet-{depth}")
    check_choice(shortcut, "shortcut", _SHORTCUTS)
    unpruned = widths == resnet_block_widths(depth) and shortcut == "A"
    arch = f"resnet{depth}_cifar" if unpruned and depth in (56, 110) else name
    shape, classes = _validate(arch, include_top=include_top, weights=weights, input_tensor=input_tensor,
                               input_shape=input_shape, pooling=pooling, classes=classes,
                               classifier_activation=classifier_activation, name=name,
                               multiple=4 if shortcut == "A" else 1)
    inputs, source_inputs = model_inputs(input_tensor, shape)
    x = _stem(inputs, name, include_preprocessing)
    x = _conv(x, 16, 3, f"{name}_conv_1")
    x = keras.layers.ReLU(name=f"{name}_relu_1")(_bn(f"{name}_bn_1")(x))
    channels = 16
    for stage, planes in enumerate((16, 32, 64)):
        for block in range(n):
            p = f"{name}_stage_{stage}_block_{block}"
            stride = 2 if stage > 0 and block == 0 else 1
            y = _conv(x, widths[stage * n + block], 3, f"{p}_conv_1", strides=stride)
            y = keras.layers.ReLU(name=f"{p}_relu_1")(_bn(f"{p}_bn_1")(y))
            y = _bn(f"{p}_bn_2")(_conv(y, planes, 3, f"{p}_conv_2"))
            residual = x
            if stride != 1 or channels != planes:
                residual = _shortcut(x, planes, stride, p, shortcut)
            x = keras.layers.Add(name=f"{p}_add")([y, residual])
            x = keras.layers.ReLU(name=f"{p}_relu_out")(x)
            channels = planes
    outputs = _global_head(x, name=name, include_top=include_top, pooling=pooling, classes=classes,
                           classifier_activation=classifier_activation)
    return _finish(source_inputs, outputs, name=name, arch=arch, include_top=include_top, classes=classes,
                   weights=weights)


# ----------------------------------------------------------------------------------------------
# PreResNet (bottleneck, channel selection)


def preresnet_default_cfg(depth=164):
    """The unpruned ``cfg`` of the slimming PreResNet: per block (conv_1 input, conv_1 out,
    conv_2 out), then the final BN's width — ``9n + 1`` entries for ``depth = 9n + 2``."""
    n = _blocks_per_stage(depth, 9, 2, "PreResNetCIFAR")
    cfg, channels = [], 16  # the first block reads the 16-channel stem
    for planes in (16, 32, 64):
        cfg += [channels, planes, planes] + [planes * 4, planes, planes] * (n - 1)
        channels = planes * 4
    return cfg + [channels]


def _select(x, width, channels, name):
    if width > channels:
        raise ValueError(f"`cfg` selects {width} channels at {name!r}, which reads only {channels}.")
    return ChannelSelection(None if width == channels else list(range(width)), name=name)(x)


def PreResNetCIFAR(depth=164, cfg=None, *, include_top=True, weights=None, input_tensor=None, input_shape=None,
                   pooling=None, classes=10, classifier_activation="softmax", include_preprocessing=True,
                   bn_gamma_init=1.0, name=None):
    """A pre-activation bottleneck ResNet for CIFAR (``depth = 9n + 2``) with channel selection.

    A :class:`ChannelSelection` follows every BN that reads the residual stream (each block's
    ``bn_1`` and the final ``bn``); with ``cfg`` it keeps the first ``cfg`` channels, and after
    network slimming (or loading an official pruned checkpoint) the channels whose BN scale survived.

    Args:
        depth: int. Defaults to `164`.
        cfg: list of int or `None`. ``preresnet_default_cfg(depth)`` layout (the official ``cfg``):
            per block the selected input of ``conv_1``, the widths of ``conv_1`` and ``conv_2``;
            last, the selected width before the classifier. Defaults to the unpruned network.
        bn_gamma_init: float. Initial BN scale (slimming: 0.5). Defaults to `1.0`.
        include_top, weights, input_tensor, input_shape, pooling, classes, classifier_activation,
            include_preprocessing: as :func:`ResNetCIFAR` (any side length).
        name: str. Defaults to ``preresnet{depth}``.
    """
    name = f"preresnet{depth}" if name is None else name
    n = _blocks_per_stage(depth, 9, 2, "PreResNetCIFAR")
    full = preresnet_default_cfg(depth)
    widths = full if cfg is None else _widths(cfg, len(full), f"PreResNet-{depth}")
    arch = "preresnet164_cifar" if depth == 164 and widths == full else name
    shape, classes = _validate(arch, include_top=include_top, weights=weights, input_tensor=input_tensor,
                               input_shape=input_shape, pooling=pooling, classes=classes,
                               classifier_activation=classifier_activation, name=name)
    inputs, source_inputs = model_inputs(input_tensor, shape)
    x = _stem(inputs, name, include_preprocessing)
    x = _conv(x, 16, 3, f"{name}_conv_1")
    channels = 16
    for stage, planes in enumerate((16, 32, 64)):
        for block in range(n):
            p = f"{name}_stage_{stage}_block_{block}"
            i = 3 * (stage * n + block)
            stride = 2 if stage > 0 and block == 0 else 1
            y = _bn(f"{p}_bn_1", bn_gamma_init)(x)
            y = _select(y, widths[i], channels, f"{p}_select")
            y = keras.layers.ReLU(name=f"{p}_relu_1")(y)
            y = _conv(y, widths[i + 1], 1, f"{p}_conv_1")
            y = keras.layers.ReLU(name=f"{p}_relu_2")(_bn(f"{p}_bn_2", bn_gamma_init)(y))
            y = _conv(y, widths[i + 2], 3, f"{p}_conv_2", strides=stride)
            y = keras.layers.ReLU(name=f"{p}_relu_3")(_bn(f"{p}_bn_3", bn_gamma_init)(y))
            y = _conv(y, planes * 4, 1, f"{p}_conv_3")
            residual = x
            if block == 0:
                residual = _conv(x, planes * 4, 1, f"{p}_downsample", strides=stride)
            x = keras.layers.Add(name=f"{p}_add")([y, residual])
            channels = planes * 4
    x = _bn(f"{name}_bn", bn_gamma_init)(x)
    x = _select(x, widths[-1], channels, f"{name}_select")
    x = keras.layers.ReLU(name=f"{name}_relu")(x)
    outputs = _global_head(x, name=name, include_top=include_top, pooling=pooling, classes=classes,
                           classifier_activation=classifier_activation)
    return _finish(source_inputs, outputs, name=name, arch=arch, include_top=include_top, classes=classes,
                   weights=weights)


# ----------------------------------------------------------------------------------------------
# DenseNet


def densenet_default_cfg(depth=40, growth_rate=12):
    """The unpruned ``cfg`` of the slimming DenseNet: the input width of every conv (dense layers
    and transitions, in order), then the final BN's width (``3n + 3`` entries, the official layout)."""
    n = _blocks_per_stage(depth, 3, 4, "DenseNetCIFAR")
    cfg, channels = [], 2 * growth_rate
    for dense in range(3):
        for _ in range(n):
            cfg.append(channels)
            channels += growth_rate
        if dense < 2:
            cfg.append(channels)
    return cfg + [channels]


def DenseNetCIFAR(depth=40, cfg=None, *, growth_rate=12, include_top=True, weights=None, input_tensor=None,
                  input_shape=None, pooling=None, classes=10, classifier_activation="softmax",
                  include_preprocessing=True, bn_gamma_init=1.0, name=None):
    """A CIFAR DenseNet without bottlenecks or compression (``depth = 3n + 4``), as slimmed.

    Args:
        depth: int. Defaults to `40`.
        cfg: list of int or `None`. ``densenet_default_cfg(depth, growth_rate)`` layout: the
            selected input width of each conv, then of the classifier. Defaults to all channels.
        growth_rate: int. Channels each dense layer adds. Defaults to `12`.
        bn_gamma_init: float. Initial BN scale (slimming: 0.5). Defaults to `1.0`.
        include_top, weights, input_tensor, input_shape, pooling, classes, classifier_activation,
            include_preprocessing: as :func:`ResNetCIFAR` (sides at least 4).
        name: str. Defaults to ``densenet{depth}``.
    """
    name = f"densenet{depth}" if name is None else name
    if not _is_int(growth_rate) or growth_rate < 1:
        raise ValueError(f"`growth_rate` must be a positive integer; received growth_rate={growth_rate!r}.")
    full = densenet_default_cfg(depth, growth_rate)
    widths = full if cfg is None else _widths(cfg, len(full), f"DenseNet-{depth}")
    arch = "densenet40_cifar" if depth == 40 and growth_rate == 12 and widths == full else name
    shape, classes = _validate(arch, include_top=include_top, weights=weights, input_tensor=input_tensor,
                               input_shape=input_shape, pooling=pooling, classes=classes,
                               classifier_activation=classifier_activation, name=name, minimum=4)
    n = (int(depth) - 4) // 3
    inputs, source_inputs = model_inputs(input_tensor, shape)
    x = _stem(inputs, name, include_preprocessing)
    x = _conv(x, 2 * growth_rate, 3, f"{name}_conv_1")
    channels, k = 2 * growth_rate, 0
    for dense in range(3):
        for layer in range(n):
            p = f"{name}_dense_{dense}_layer_{layer}"
            y = _select(_bn(f"{p}_bn", bn_gamma_init)(x), widths[k], channels, f"{p}_select")
            y = _conv(keras.layers.ReLU(name=f"{p}_relu")(y), growth_rate, 3, f"{p}_conv")
            x = keras.layers.Concatenate(name=f"{p}_concat")([x, y])
            channels, k = channels + growth_rate, k + 1
        if dense < 2:
            p = f"{name}_transition_{dense}"
            y = _select(_bn(f"{p}_bn", bn_gamma_init)(x), widths[k], channels, f"{p}_select")
            y = _conv(keras.layers.ReLU(name=f"{p}_relu")(y), channels, 1, f"{p}_conv")
            x = keras.layers.AveragePooling2D(2, name=f"{p}_pool")(y)
            k += 1
    x = _select(_bn(f"{name}_bn", bn_gamma_init)(x), widths[-1], channels, f"{name}_select")
    x = keras.layers.ReLU(name=f"{name}_relu")(x)
    outputs = _global_head(x, name=name, include_top=include_top, pooling=pooling, classes=classes,
                           classifier_activation=classifier_activation)
    return _finish(source_inputs, outputs, name=name, arch=arch, include_top=include_top, classes=classes,
                   weights=weights)


# ----------------------------------------------------------------------------------------------
# registered variants: keras.applications arguments, then the family's keyword-only options

_DOC = """Instantiates {title} for CIFAR ({source}).

    Args:
        include_top: bool. Whether to include the classifier ({head}). Defaults to `True`.
        weights: `None` (random init), the official PyTorch checkpoint of this network (a ``.pth``
            state dict — ``{{"cfg", "state_dict"}}`` as the official scripts save it is unwrapped —
            read without torch), or a ``.keras`` / ``.weights.h5`` file. Defaults to `None`.
        input_tensor: optional Keras tensor to use as the image input.
        input_shape: optional `(height, width, 3)`{sides}. Defaults to `(32, 32, 3)` with the head,
            `(None, None, 3)` without.
        pooling: `None`, `"avg"` or `"max"`: global pooling of the last feature map when
            `include_top=False`.
        classes: int (numpy integers accepted). Number of classes. Defaults to `10`.
        classifier_activation: str or callable applied to the logits (`None` for logits).
            Defaults to `"softmax"`.
        include_preprocessing: bool. Whether the model normalises 0–255 RGB input with CIFAR's
            mean/std (the official ``transforms.Normalize``) itself. Defaults to `True`.
{options}
        name: str. Model name and prefix of every layer name. Defaults to `"{name}"`.

    Returns:
        A `keras.Model`.

    Examples:

    >>> model = keras_visrec.{builder}(classes=100)
    >>> model.output_shape
    (None, 100)
    """

_OPTION_DOCS = {
    "head": "head: str. `\"l1\"` (Dense 512 – BN – ReLU – Dense, the L1-norm code's) or `\"slimming\"` (one "
            "Dense, the network-slimming code's). Both VGG variants default to `\"l1\"`. Defaults to `\"l1\"`.",
    "cfg": "cfg: list of int or `None`. The official pruned-width list (see the generic builder). "
           "Defaults to the unpruned network.",
    "shortcut": "shortcut: str. `\"A\"` (official: 2×2 average pool + zero channels) or `\"B\"` (1×1 "
                "conv + BN). Defaults to `\"A\"`.",
    "bn_gamma_init": "bn_gamma_init: float. Initial BN scale (network slimming: 0.5). Defaults to `1.0`.",
}


def _variant(builder_name, arch, generic, *, title, source, head, sides, fixed, options):
    """A thin public builder forwarding to ``generic`` with the architecture ``fixed``.

    ``options`` are the keyword-only family arguments it accepts, with their defaults.
    """
    default_name = fixed.pop("name")

    def builder(include_top=True, weights=None, input_tensor=None, input_shape=None, pooling=None, classes=10,
                classifier_activation="softmax", include_preprocessing=True, *, name=default_name, **kwargs):
        unknown = sorted(set(kwargs) - set(options))
        if unknown:
            raise TypeError(f"{builder_name}() got unexpected keyword argument(s) {unknown}; beside the "
                            f"keras.applications arguments it accepts {sorted(options) + ['name']}.")
        return generic(**fixed, include_top=include_top, weights=weights, input_tensor=input_tensor,
                       input_shape=input_shape, pooling=pooling, classes=classes,
                       classifier_activation=classifier_activation, include_preprocessing=include_preprocessing,
                       name=name, **{**options, **kwargs})

    parameters = list(inspect.signature(builder).parameters.values())[:-2]
    parameters += [inspect.Parameter(key, inspect.Parameter.KEYWORD_ONLY, default=value)
                   for key, value in options.items()]
    parameters.append(inspect.Parameter("name", inspect.Parameter.KEYWORD_ONLY, default=default_name))
    builder.__signature__ = inspect.Signature(parameters)
    builder.__name__ = builder.__qualname__ = builder_name
    builder.__doc__ = _DOC.format(
        title=title, source=source, head=head, sides=sides, name=default_name, builder=builder_name,
        options="\n".join(f"        {_OPTION_DOCS[key]}" for key in options),
    )
    return register_model(arch, family="cifar")(builder)


VGG16CIFAR = _variant(
    "VGG16CIFAR", "vgg16_cifar", VGGCIFAR, title="VGG-16", source="cifar/l1-norm-pruning/models/vgg.py",
    head="2×2 average pool, flatten, then `head`", sides=", sides multiples of 32 (with the head, fixed)",
    fixed=dict(cfg=VGG_CONFIGS["vgg16"], name="vgg16"), options=dict(head="l1", bn_gamma_init=1.0))
VGG19CIFAR = _variant(
    "VGG19CIFAR", "vgg19_cifar", VGGCIFAR, title="VGG-19",
    source="cifar/l1-norm-pruning/models/vgg.py with depth 19; `head=\"slimming\"` is network slimming's",
    head="2×2 average pool, flatten, then `head`", sides=", sides multiples of 32 (with the head, fixed)",
    fixed=dict(cfg=VGG_CONFIGS["vgg19"], name="vgg19"), options=dict(head="l1", bn_gamma_init=1.0))
ResNet56CIFAR = _variant(
    "ResNet56CIFAR", "resnet56_cifar", ResNetCIFAR, title="ResNet-56",
    source="cifar/l1-norm-pruning/models/resnet.py", head="global average pool, Dense",
    sides=", sides multiples of 4", fixed=dict(depth=56, name="resnet56"), options=dict(cfg=None, shortcut="A"))
ResNet110CIFAR = _variant(
    "ResNet110CIFAR", "resnet110_cifar", ResNetCIFAR, title="ResNet-110",
    source="cifar/l1-norm-pruning/models/resnet.py", head="global average pool, Dense",
    sides=", sides multiples of 4", fixed=dict(depth=110, name="resnet110"), options=dict(cfg=None, shortcut="A"))
PreResNet164CIFAR = _variant(
    "PreResNet164CIFAR", "preresnet164_cifar", PreResNetCIFAR, title="PreResNet-164 (bottleneck)",
    source="cifar/network-slimming/models/preresnet.py", head="global average pool, Dense", sides="",
    fixed=dict(depth=164, name="preresnet164"), options=dict(cfg=None, bn_gamma_init=1.0))
DenseNet40CIFAR = _variant(
    "DenseNet40CIFAR", "densenet40_cifar", DenseNetCIFAR, title="DenseNet-40 (growth 12)",
    source="cifar/network-slimming/models/densenet.py", head="global average pool, Dense",
    sides=", sides at least 4", fixed=dict(depth=40, growth_rate=12, name="densenet40"),
    options=dict(cfg=None, bn_gamma_init=1.0))


# ----------------------------------------------------------------------------------------------
# deprecated names (one release)


def _deprecated(old, new):
    def alias(*args, **kwargs):
        warnings.warn(f"keras_visrec.{old} is deprecated and will be removed in the next release; use "
                      f"keras_visrec.{new.__name__} (same arguments).", DeprecationWarning, stacklevel=2)
        return new(*args, **kwargs)

    alias.__name__ = alias.__qualname__ = old
    alias.__doc__ = f"Deprecated alias of :func:`{new.__name__}`, kept for one release."
    return alias


CIFARVGG = _deprecated("CIFARVGG", VGGCIFAR)
CIFARResNet = _deprecated("CIFARResNet", ResNetCIFAR)
CIFARPreResNet = _deprecated("CIFARPreResNet", PreResNetCIFAR)
CIFARDenseNet = _deprecated("CIFARDenseNet", DenseNetCIFAR)

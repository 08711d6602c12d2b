"""The CIFAR networks of "Rethinking the Value of Network Pruning" (Liu et al., ICLR 2019).

Paper: https://arxiv.org/abs/1810.05270; official code: github.com/Eric-mingjie/rethinking-network-pruning
(MIT). The configurations are those of the pruning methods it re-evaluates:

* **VGG** (Simonyan & Zisserman, CIFAR form): 3×3 conv (no bias) + BN + ReLU per ``cfg`` entry,
  ``"M"`` = 2×2 max-pool, no fifth pool, then a 2×2 average pool and a head: ``head="l1"``
  (Li et al.: Dense 512 → BN → ReLU → Dense) or ``head="slimming"`` (Liu et al.: one Dense).
* **ResNet-56/110** (He et al., CIFAR form): basic blocks of 16/32/64 channels; a block's first
  conv width comes from ``cfg`` (what L1-norm pruning changes); the shortcut is the paper's
  parameter-free option A (:class:`ShortcutA`: subsample, then append zero channels), or a 1×1
  projection (``shortcut="B"``).
* **PreResNet-164** (He et al., identity mappings): pre-activation bottleneck blocks with a
  :class:`ChannelSelection` after each block's first BN and after the final BN — network
  slimming prunes the residual stream's BN by selecting which channels feed the next conv.
* **DenseNet-40** (Huang et al.): growth 12, no bottleneck, no compression, BN → select → ReLU →
  conv per layer, as in the slimming code.

Layer names are flat and deterministic (names are API — pruning finds layers by them):

    {name}_preprocessing
    VGG:        {name}_conv_{i}, {name}_bn_{i}, {name}_relu_{i}, {name}_pool_{i}   (i = cfg index)
                {name}_avgpool, {name}_flatten, [{name}_fc_1, {name}_fc_1_bn, {name}_fc_1_relu],
                {name}_classifier
    ResNet:     {name}_conv_1, {name}_bn_1, {name}_relu_1,
                {name}_stage_{s}_block_{b}_{conv_1, bn_1, relu_1, conv_2, bn_2, shortcut,
                                            shortcut_bn, add, relu_out}
    PreResNet:  {name}_conv_1, {name}_stage_{s}_block_{b}_{bn_1, select, relu_1, conv_1, bn_2,
                relu_2, conv_2, bn_3, relu_3, conv_3, downsample, add}, {name}_bn, {name}_select,
                {name}_relu
    DenseNet:   {name}_conv_1, {name}_dense_{d}_layer_{l}_{bn, select, relu, conv, concat},
                {name}_transition_{t}_{bn, select, relu, conv, pool}, {name}_bn, {name}_select,
                {name}_relu
    all:        {name}_avgpool (global), {name}_classifier, predictions

Every model takes 0–255 RGB input and normalises it with CIFAR's mean and std
(``include_preprocessing=True``), so tensorflow-datasets images feed in unchanged.
"""

import keras
import numpy as np

from keras_visrec.layers import ImageNetNormalization
from keras_visrec.registry import register_model
from keras_visrec.weights import load_weights, validate_weights_argument

__all__ = [
    "CIFAR_MEAN", "CIFAR_STD", "VGG_CONFIGS",
    "ChannelSelection", "ShortcutA",
    "CIFARVGG", "CIFARResNet", "CIFARPreResNet", "CIFARDenseNet",
    "VGG16CIFAR", "VGG19CIFAR", "ResNet56CIFAR", "ResNet110CIFAR", "PreResNet164CIFAR", "DenseNet40CIFAR",
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
_KAIMING = keras.initializers.VarianceScaling(2.0, mode="fan_out", distribution="untruncated_normal")


@keras.saving.register_keras_serializable(package="keras_visrec")
class ShortcutA(keras.layers.Layer):
    """The parameter-free option-A shortcut: spatial subsampling, then zero channels appended.

    Matches the official ``DownsampleA`` (``AvgPool2d(kernel_size=1, stride)`` and concatenation
    with zeros), so ``filters - input channels`` zero channels follow the input's.

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
        x = inputs[:, :: self.strides, :: self.strides, :]
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


def _validate_common(arch, classes, input_shape, weights, head=None):
    validate_weights_argument(weights, arch=arch, include_top=True, classes=classes)
    if not isinstance(classes, (int, np.integer)) or isinstance(classes, bool) or classes < 1:
        raise ValueError(f"`classes` must be a positive integer; received classes={classes!r}.")
    if head is not None and head not in _HEADS:
        raise ValueError(f"`head` must be one of {_HEADS}; received head={head!r}.")
    shape = tuple(input_shape)
    if len(shape) != 3 or shape[-1] != 3:
        raise ValueError(f"`input_shape` must be (height, width, 3); received input_shape={input_shape!r}.")
    return shape


def _stem(inputs, name, include_preprocessing):
    if include_preprocessing:
        return ImageNetNormalization(CIFAR_MEAN, CIFAR_STD, name=f"{name}_preprocessing")(inputs)
    return inputs


def _conv(filters, kernel, name, strides=1):
    return keras.layers.Conv2D(filters, kernel, strides=strides, padding="same", use_bias=False,
                               kernel_initializer=_KAIMING, name=name)


def _bn(name, gamma):
    return keras.layers.BatchNormalization(epsilon=1e-5, momentum=0.9, name=name,
                                           gamma_initializer=keras.initializers.Constant(gamma))


def _finish(inputs, x, *, name, classes, classifier_activation, weights):
    outputs = keras.layers.Activation(classifier_activation, dtype="float32", name="predictions")(x)
    model = keras.Model(inputs, outputs, name=name)
    if weights is not None:
        load_weights(model, weights, arch=name, include_top=True, classes=classes)
    return model


def _widths(cfg, expected, what):
    cfg = [int(c) for c in cfg]
    if len(cfg) != expected:
        raise ValueError(f"`cfg` for {what} must have {expected} entries; received {len(cfg)}: {cfg}.")
    if any(c < 1 for c in cfg):
        raise ValueError(f"`cfg` widths must be positive integers; received {cfg}.")
    return cfg


# ----------------------------------------------------------------------------------------------
# VGG


def CIFARVGG(cfg, *, head="l1", classes=10, input_shape=(32, 32, 3), include_preprocessing=True,
             classifier_activation="softmax", bn_gamma_init=1.0, weights=None, name="vgg"):
    """A CIFAR VGG from its layer list ``cfg`` (ints = conv widths, ``"M"`` = max-pool).

    Args:
        cfg: sequence of int / `"M"`. E.g. ``VGG_CONFIGS["vgg16"]`` or a pruned width list.
        head: str. `"l1"` (Dense 512 – BN – ReLU – Dense, Li et al.) or `"slimming"` (one Dense,
            Liu et al.). Defaults to `"l1"`.
        classes: int. Number of classes. Defaults to `10`.
        input_shape: tuple. ``(height, width, 3)``. Defaults to `(32, 32, 3)`.
        include_preprocessing: bool. Normalise 0–255 input with CIFAR mean/std. Defaults to `True`.
        classifier_activation: str or `None`. Activation of the output. Defaults to `"softmax"`.
        bn_gamma_init: float. Initial BN scale (network slimming uses 0.5). Defaults to `1.0`.
        weights: `None` or a local `.keras` / `.weights.h5` file.
        name: str. Model name and layer-name prefix. Defaults to `"vgg"`.
    """
    shape = _validate_common(name, classes, input_shape, weights, head)
    items = list(cfg)
    if not items or any(not (c == "M" or (isinstance(c, (int, np.integer)) and c > 0)) for c in items):
        raise ValueError(f"`cfg` must list positive widths and 'M'; received cfg={cfg!r}.")
    pools = items.count("M")
    for side in shape[:2]:
        if side % (2 ** (pools + 1)):
            raise ValueError(f"`input_shape` sides must be multiples of {2 ** (pools + 1)} for a cfg with {pools} "
                             f"max-pools and the final 2×2 average pool; received input_shape={input_shape!r}.")
    inputs = keras.Input(shape)
    x = _stem(inputs, name, include_preprocessing)
    for i, item in enumerate(items):
        if item == "M":
            x = keras.layers.MaxPooling2D(2, name=f"{name}_pool_{i}")(x)
            continue
        x = _conv(int(item), 3, f"{name}_conv_{i}")(x)
        x = _bn(f"{name}_bn_{i}", bn_gamma_init)(x)
        x = keras.layers.ReLU(name=f"{name}_relu_{i}")(x)
    x = keras.layers.AveragePooling2D(2, name=f"{name}_avgpool")(x)
    x = keras.layers.Flatten(name=f"{name}_flatten")(x)
    if head == "l1":
        x = keras.layers.Dense(512, name=f"{name}_fc_1")(x)
        x = _bn(f"{name}_fc_1_bn", bn_gamma_init)(x)
        x = keras.layers.ReLU(name=f"{name}_fc_1_relu")(x)
    x = keras.layers.Dense(classes, name=f"{name}_classifier")(x)
    return _finish(inputs, x, name=name, classes=classes, classifier_activation=classifier_activation,
                   weights=weights)


# ----------------------------------------------------------------------------------------------
# ResNet (basic blocks, option-A shortcut)


def resnet_block_widths(depth):
    """Default first-conv widths of a CIFAR ResNet's ``3n`` blocks (``depth = 6n + 2``)."""
    n = _blocks_per_stage(depth, 6, "CIFARResNet")
    return [16] * n + [32] * n + [64] * n


def _blocks_per_stage(depth, per_block, what):
    if not isinstance(depth, (int, np.integer)) or depth < per_block + 2 or (depth - 2) % per_block:
        raise ValueError(f"`depth` of {what} must be {per_block}n + 2 with n >= 1; received depth={depth!r}.")
    return (int(depth) - 2) // per_block


def CIFARResNet(depth=56, cfg=None, *, shortcut="A", classes=10, input_shape=(32, 32, 3),
                include_preprocessing=True, classifier_activation="softmax", weights=None, name=None):
    """A CIFAR ResNet of basic blocks (``depth = 6n + 2``: 16/32/64 channels, ``n`` blocks each).

    Args:
        depth: int. 20, 32, 44, 56, 110, … Defaults to `56`.
        cfg: list of int or `None`. Width of every block's first conv (``3n`` entries), what L1-norm
            pruning shrinks. Defaults to the unpruned widths.
        shortcut: str. `"A"` (parameter-free: subsample + zero channels, the paper's) or `"B"`
            (1×1 conv + BN projection) where shapes change. Defaults to `"A"`.
        classes, input_shape, include_preprocessing, classifier_activation, weights: as
            :func:`CIFARVGG`.
        name: str. Defaults to ``resnet{depth}``.
    """
    name = name or f"resnet{depth}"
    shape = _validate_common(name, classes, input_shape, weights)
    n = _blocks_per_stage(depth, 6, "CIFARResNet")
    widths = resnet_block_widths(depth) if cfg is None else _widths(cfg, 3 * n, f"ResNet-{depth}")
    if shortcut not in _SHORTCUTS:
        raise ValueError(f"`shortcut` must be one of {_SHORTCUTS}; received shortcut={shortcut!r}.")
    inputs = keras.Input(shape)
    x = _stem(inputs, name, include_preprocessing)
    x = _conv(16, 3, f"{name}_conv_1")(x)
    x = keras.layers.ReLU(name=f"{name}_relu_1")(_bn(f"{name}_bn_1", 1.0)(x))
    channels = 16
    for stage, planes in enumerate((16, 32, 64)):
        for block in range(n):
            p = f"{name}_stage_{stage}_block_{block}"
            stride = 2 if stage > 0 and block == 0 else 1
            y = _conv(widths[stage * n + block], 3, f"{p}_conv_1", strides=stride)(x)
            y = keras.layers.ReLU(name=f"{p}_relu_1")(_bn(f"{p}_bn_1", 1.0)(y))
            y = _bn(f"{p}_bn_2", 1.0)(_conv(planes, 3, f"{p}_conv_2")(y))
            residual = x
            if stride != 1 or channels != planes:
                if shortcut == "A":
                    residual = ShortcutA(planes, stride, name=f"{p}_shortcut")(x)
                else:
                    residual = _conv(planes, 1, f"{p}_shortcut", strides=stride)(x)
                    residual = _bn(f"{p}_shortcut_bn", 1.0)(residual)
            x = keras.layers.Add(name=f"{p}_add")([y, residual])
            x = keras.layers.ReLU(name=f"{p}_relu_out")(x)
            channels = planes
    x = keras.layers.GlobalAveragePooling2D(name=f"{name}_avgpool")(x)
    x = keras.layers.Dense(classes, name=f"{name}_classifier")(x)
    return _finish(inputs, x, name=name, classes=classes, classifier_activation=classifier_activation,
                   weights=weights)


# ----------------------------------------------------------------------------------------------
# PreResNet (bottleneck, channel selection)


def preresnet_default_cfg(depth=164):
    """The unpruned ``cfg`` of the slimming PreResNet: per block (conv_1 input, conv_1 out,
    conv_2 out), then the final BN's width — ``9n + 1`` entries for ``depth = 9n + 2``."""
    n = _blocks_per_stage(depth, 9, "CIFARPreResNet")
    cfg, channels = [], 16  # the first block reads the 16-channel stem
    for planes in (16, 32, 64):
        cfg += [channels, planes, planes] + [planes * 4, planes, planes] * (n - 1)
        channels = planes * 4
    return cfg + [channels]


def CIFARPreResNet(depth=164, cfg=None, *, classes=10, input_shape=(32, 32, 3), include_preprocessing=True,
                   classifier_activation="softmax", bn_gamma_init=1.0, weights=None, name=None):
    """A pre-activation bottleneck ResNet for CIFAR (``depth = 9n + 2``) with channel selection.

    A :class:`ChannelSelection` follows every BN that reads the residual stream (each block's
    ``bn_1`` and the final ``bn``); with ``cfg`` it keeps the first ``cfg`` channels, and after
    network slimming it keeps the channels whose BN scale survived.

    Args:
        depth: int. Defaults to `164`.
        cfg: list of int or `None`. ``preresnet_default_cfg(depth)`` layout: per block the
            selected input of ``conv_1``, the widths of ``conv_1`` and ``conv_2``; last, the
            selected width before the classifier. Defaults to the unpruned network.
        bn_gamma_init: float. Initial BN scale (slimming: 0.5). Defaults to `1.0`.
        classes, input_shape, include_preprocessing, classifier_activation, weights: as
            :func:`CIFARVGG`.
        name: str. Defaults to ``preresnet{depth}``.
    """
    name = name or f"preresnet{depth}"
    shape = _validate_common(name, classes, input_shape, weights)
    n = _blocks_per_stage(depth, 9, "CIFARPreResNet")
    full = preresnet_default_cfg(depth)
    widths = full if cfg is None else _widths(cfg, len(full), f"PreResNet-{depth}")
    inputs = keras.Input(shape)
    x = _stem(inputs, name, include_preprocessing)
    x = _conv(16, 3, f"{name}_conv_1")(x)
    channels = 16
    for stage, planes in enumerate((16, 32, 64)):
        for block in range(n):
            p = f"{name}_stage_{stage}_block_{block}"
            i = 3 * (stage * n + block)
            stride = 2 if stage > 0 and block == 0 else 1
            y = _bn(f"{p}_bn_1", bn_gamma_init)(x)
            y = _select(y, widths[i], channels, f"{p}_select")
            y = keras.layers.ReLU(name=f"{p}_relu_1")(y)
            y = _conv(widths[i + 1], 1, f"{p}_conv_1")(y)
            y = keras.layers.ReLU(name=f"{p}_relu_2")(_bn(f"{p}_bn_2", bn_gamma_init)(y))
            y = _conv(widths[i + 2], 3, f"{p}_conv_2", strides=stride)(y)
            y = keras.layers.ReLU(name=f"{p}_relu_3")(_bn(f"{p}_bn_3", bn_gamma_init)(y))
            y = _conv(planes * 4, 1, f"{p}_conv_3")(y)
            residual = x
            if block == 0:
                residual = _conv(planes * 4, 1, f"{p}_downsample", strides=stride)(x)
            x = keras.layers.Add(name=f"{p}_add")([y, residual])
            channels = planes * 4
    x = _bn(f"{name}_bn", bn_gamma_init)(x)
    x = _select(x, widths[-1], channels, f"{name}_select")
    x = keras.layers.ReLU(name=f"{name}_relu")(x)
    x = keras.layers.GlobalAveragePooling2D(name=f"{name}_avgpool")(x)
    x = keras.layers.Dense(classes, name=f"{name}_classifier")(x)
    return _finish(inputs, x, name=name, classes=classes, classifier_activation=classifier_activation,
                   weights=weights)


def _select(x, width, channels, name):
    if width > channels:
        raise ValueError(f"`cfg` selects {width} channels at {name!r}, which reads only {channels}.")
    return ChannelSelection(None if width == channels else list(range(width)), name=name)(x)


# ----------------------------------------------------------------------------------------------
# DenseNet


def densenet_default_cfg(depth=40, growth_rate=12):
    """The unpruned ``cfg`` of the slimming DenseNet: the input width of every conv (dense layers
    and transitions, in order), then the final BN's width."""
    if not isinstance(depth, (int, np.integer)) or depth < 7 or (depth - 4) % 3:
        raise ValueError(f"`depth` of CIFARDenseNet must be 3n + 4 with n >= 1; received depth={depth!r}.")
    n = (int(depth) - 4) // 3
    cfg, channels = [], 2 * growth_rate
    for dense in range(3):
        for _ in range(n):
            cfg.append(channels)
            channels += growth_rate
        if dense < 2:
            cfg.append(channels)
    return cfg + [channels]


def CIFARDenseNet(depth=40, cfg=None, *, growth_rate=12, classes=10, input_shape=(32, 32, 3),
                  include_preprocessing=True, classifier_activation="softmax", bn_gamma_init=1.0,
                  weights=None, name=None):
    """A CIFAR DenseNet without bottlenecks or compression (``depth = 3n + 4``), as slimmed.

    Args:
        depth: int. Defaults to `40`.
        cfg: list of int or `None`. ``densenet_default_cfg(depth, growth_rate)`` layout: the
            selected input width of each conv, then of the classifier. Defaults to all channels.
        growth_rate: int. Channels each dense layer adds. Defaults to `12`.
        bn_gamma_init: float. Initial BN scale (slimming: 0.5). Defaults to `1.0`.
        classes, input_shape, include_preprocessing, classifier_activation, weights: as
            :func:`CIFARVGG`.
        name: str. Defaults to ``densenet{depth}``.
    """
    name = name or f"densenet{depth}"
    shape = _validate_common(name, classes, input_shape, weights)
    full = densenet_default_cfg(depth, growth_rate)
    widths = full if cfg is None else _widths(cfg, len(full), f"DenseNet-{depth}")
    n = (depth - 4) // 3
    inputs = keras.Input(shape)
    x = _stem(inputs, name, include_preprocessing)
    x = _conv(2 * growth_rate, 3, f"{name}_conv_1")(x)
    channels, k = 2 * growth_rate, 0
    for dense in range(3):
        for layer in range(n):
            p = f"{name}_dense_{dense}_layer_{layer}"
            y = _select(_bn(f"{p}_bn", bn_gamma_init)(x), widths[k], channels, f"{p}_select")
            y = _conv(growth_rate, 3, f"{p}_conv")(keras.layers.ReLU(name=f"{p}_relu")(y))
            x = keras.layers.Concatenate(name=f"{p}_concat")([x, y])
            channels, k = channels + growth_rate, k + 1
        if dense < 2:
            p = f"{name}_transition_{dense}"
            y = _select(_bn(f"{p}_bn", bn_gamma_init)(x), widths[k], channels, f"{p}_select")
            y = _conv(channels, 1, f"{p}_conv")(keras.layers.ReLU(name=f"{p}_relu")(y))
            x = keras.layers.AveragePooling2D(2, name=f"{p}_pool")(y)
            k += 1
    x = _select(_bn(f"{name}_bn", bn_gamma_init)(x), widths[-1], channels, f"{name}_select")
    x = keras.layers.ReLU(name=f"{name}_relu")(x)
    x = keras.layers.GlobalAveragePooling2D(name=f"{name}_avgpool")(x)
    x = keras.layers.Dense(classes, name=f"{name}_classifier")(x)
    return _finish(inputs, x, name=name, classes=classes, classifier_activation=classifier_activation,
                   weights=weights)


# ----------------------------------------------------------------------------------------------
# registered variants


@register_model("vgg16_cifar", family="cifar")
def VGG16CIFAR(*, head="l1", classes=10, input_shape=(32, 32, 3), **kwargs):
    """VGG-16 for CIFAR (L1-norm head by default; ``head="slimming"`` for one Dense)."""
    return CIFARVGG(VGG_CONFIGS["vgg16"], head=head, classes=classes, input_shape=input_shape,
                    name=kwargs.pop("name", "vgg16"), **kwargs)


@register_model("vgg19_cifar", family="cifar")
def VGG19CIFAR(*, head="slimming", classes=10, input_shape=(32, 32, 3), **kwargs):
    """VGG-19 for CIFAR (network-slimming head by default)."""
    return CIFARVGG(VGG_CONFIGS["vgg19"], head=head, classes=classes, input_shape=input_shape,
                    name=kwargs.pop("name", "vgg19"), **kwargs)


@register_model("resnet56_cifar", family="cifar")
def ResNet56CIFAR(cfg=None, **kwargs):
    """ResNet-56 for CIFAR with the option-A shortcut."""
    return CIFARResNet(56, cfg, **kwargs)


@register_model("resnet110_cifar", family="cifar")
def ResNet110CIFAR(cfg=None, **kwargs):
    """ResNet-110 for CIFAR with the option-A shortcut."""
    return CIFARResNet(110, cfg, **kwargs)


@register_model("preresnet164_cifar", family="cifar")
def PreResNet164CIFAR(cfg=None, **kwargs):
    """PreResNet-164 (bottleneck) for CIFAR with channel selection."""
    return CIFARPreResNet(164, cfg, **kwargs)


@register_model("densenet40_cifar", family="cifar")
def DenseNet40CIFAR(cfg=None, **kwargs):
    """DenseNet-40 (growth 12) for CIFAR with channel selection."""
    return CIFARDenseNet(40, cfg, **kwargs)

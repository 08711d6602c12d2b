"""``AnytimeHRNet``: HRNetV2 with an exit after every stage and confidence-adaptive masking.

One network, three ways to run it (``mode``): ``"none"`` (every exit sees the full network),
``"dense"`` (the paper's masked computation, simulated densely; the training mode) and
``"sparse"`` (the same result with the skipped pixels actually skipped). Exit ``k``'s prediction
keeps exit ``k − 1``'s logits on the pixels it was confident about
(``out_k = out_{k−1}·(1 − m) + out_k·m``), and its mask drives transition ``k``, stage ``k + 1``
and exit ``k + 1``. The stem, layer1 and exit 1 are never masked.

``model(x)`` returns every exit stacked as ``(batch, 4, h/4, w/4, classes)`` (what ``fit``
trains); ``model.anytime(x)`` returns the list; ``model.iter_exits(x)`` yields exit after exit and
computes nothing for exits that are never asked for.
"""

import keras
from keras import ops as kops

from keras_visrec.adpc.exits import EXIT_TYPES, make_exit
from keras_visrec.adpc.layers import MaskedConv2D
from keras_visrec.adpc.masking import MaskHook, confidence_mask, validate_mode, validate_threshold
from keras_visrec.hrnet import (BN_MOMENTUM, HRNetOps, _validate_input_shape, branches_head, exit_input, hrnet_backbone,
                                validate_config)

__all__ = ["AnytimeHRNet", "NUM_EXITS", "default_exit_width"]

NUM_EXITS = 4


def default_exit_width(backbone):
    """RH exit width: 128 for W48 (and W32), 64 for the W18 family and custom configs."""
    return 128 if backbone in ("w48", "w32") else 64


def _exit_name(k):
    return "last_layer" if k == NUM_EXITS else f"exit{k}"


def build_anytime_network(config, classes, exit_type, exit_width, name, input_shape=None, input_tensor=None,
                          bn_momentum=BN_MOMENTUM):
    """The functional, unmasked network with the four exits as outputs (layers named for ADP-C)."""
    inputs = input_tensor if input_tensor is not None else keras.Input(input_shape or (None, None, 3))
    ops = HRNetOps(name, bn_momentum=bn_momentum)
    outputs = list(_exit_stream(ops, inputs, config, classes, exit_type, exit_width))
    return keras.Model(inputs, outputs, name=name)


def _exit_stream(ops, inputs, config, classes, exit_type, exit_width):
    """Yields the raw logits of exits 1–4; masked convolutions start after exit 1."""
    for k, xs in enumerate(hrnet_backbone(ops, inputs, config), start=1):
        if k == NUM_EXITS:
            yield branches_head(ops, xs, classes, "last_layer")
        else:
            yield make_exit(ops, exit_input(ops, xs, _exit_name(k)), exit_type, classes, exit_width, k)
        ops.conv_class = MaskedConv2D


@keras.saving.register_keras_serializable(package="keras_visrec")
class AnytimeHRNet(keras.Model):
    """ADP-C: anytime dense prediction with confidence adaptivity on HRNetV2.

    Args:
        backbone: str or dict. A key of ``keras_visrec.hrnet.HRNET_CONFIGS`` or a config dict.
            Defaults to `"w48"`.
        classes: int. Number of classes. Defaults to `19`.
        exit_type: str. `"rh"` (redesigned exits) or `"ee"` (simple exits). Defaults to `"rh"`.
        exit_width: int or `None`. RH exit width; `None` picks 128 (W48/W32) or 64 (W18, custom).
        threshold: float in (0, 1]. A pixel is computed again while its max softmax probability
            is ``<= threshold``. Defaults to `0.998`.
        mode: str. `"none"`, `"dense"` or `"sparse"` (see :mod:`keras_visrec.adpc.masking`).
            Defaults to `"dense"`.
        tile: int. Tile side of the sparse mode: `1` gathers single pixels with their halo (the
            fastest on confidence masks, which follow object edges), larger tiles gather blocks.
            Defaults to `1`.
        dense_above: float. Sparse mode runs a conv densely when more than this share of its tiles
            is active. Defaults to `0.5`.
        input_shape: optional ``(height, width, 3)``, sides divisible by 32.
        bn_momentum: float. Keras BatchNormalization momentum. Defaults to `0.99` (the paper's
            PyTorch 0.01); short runs want less (e.g. 0.9) for usable moving statistics.
        name: str. Model name and layer prefix. Defaults to ``adpc_hrnetv2_<backbone>``.

    Examples:

    >>> tiny = dict(stem=16, layer1=(1, 8), stages=((1, (1, 1), (8, 16)), (1, (1, 1, 1), (8, 16, 32)),
    ...             (1, (1, 1, 1, 1), (8, 16, 32, 64))))
    >>> model = AnytimeHRNet(tiny, classes=11, exit_width=16, threshold=0.9)
    >>> [tuple(p.shape) for p in model.anytime(np.zeros((1, 64, 64, 3), "float32"))][-1]
    (1, 16, 16, 11)
    """

    def __init__(self, backbone="w48", classes=19, exit_type="rh", exit_width=None, threshold=0.998,
                 mode="dense", tile=1, dense_above=0.5, input_shape=None, bn_momentum=BN_MOMENTUM, name=None, **kwargs):
        config = validate_config(backbone)
        if exit_type not in EXIT_TYPES:
            raise ValueError(f"`exit_type` must be one of {EXIT_TYPES}; received exit_type={exit_type!r}.")
        if not isinstance(classes, int) or classes < 2:
            raise ValueError(f"`classes` must be an integer >= 2; received classes={classes!r}.")
        exit_width = exit_width or default_exit_width(backbone)
        if not isinstance(exit_width, int) or exit_width < 1:
            raise ValueError(f"`exit_width` must be a positive integer; received exit_width={exit_width!r}.")
        shape = _validate_input_shape(input_shape)
        name = name or f"adpc_hrnetv2_{backbone if isinstance(backbone, str) else 'custom'}"
        super().__init__(name=name, **kwargs)
        self.backbone = backbone
        self.config_dict = config
        self.classes = classes
        self.exit_type = exit_type
        self.exit_width = exit_width
        self.threshold = validate_threshold(threshold)
        self.mode = validate_mode(mode)
        if isinstance(tile, bool) or not isinstance(tile, int) or tile < 1:
            raise ValueError(f"`tile` must be a positive integer; received tile={tile!r}.")
        if isinstance(dense_above, bool) or not isinstance(dense_above, (int, float)) or not 0 <= dense_above <= 1:
            raise ValueError(f"`dense_above` must be a number in [0, 1]; received dense_above={dense_above!r}.")
        self.tile = tile
        self.dense_above = float(dense_above)
        self.input_shape_arg = None if input_shape is None else tuple(input_shape)
        self.bn_momentum = float(bn_momentum)
        self.network = build_anytime_network(config, classes, exit_type, exit_width, name, shape,
                                             bn_momentum=self.bn_momentum)
        self._compiled = {}
        self._layer_map = {layer.name: layer for layer in self.network.layers}
        self.last_hooks = []

    # --- running -------------------------------------------------------------------------------
    def iter_exits(self, inputs, mode=None, threshold=None):
        """Yields exit 1, 2, 3, 4's logits (1/4 resolution) one by one; stop whenever you like.

        Args:
            inputs: images ``(batch, height, width, 3)``.
            mode: overrides ``self.mode`` for this call.
            threshold: overrides ``self.threshold`` for this call.
        """
        mode = validate_mode(mode or self.mode)
        threshold = self.threshold if threshold is None else validate_threshold(threshold)
        inputs = kops.convert_to_tensor(inputs)
        self.last_hooks = []
        ops = HRNetOps(self.name, layers=self._layer_map)
        previous = hook = None
        stream = _exit_stream(ops, inputs, self.config_dict, self.classes, self.exit_type, self.exit_width)
        for k, logits in enumerate(stream, start=1):
            if hook is not None:
                keep = hook.mask_at(int(logits.shape[1]), int(logits.shape[2]))[..., None]
                logits = previous * (1.0 - keep) + logits * keep
            yield logits
            if mode != "none" and k < NUM_EXITS:
                hook = MaskHook(confidence_mask(logits, threshold), mode, self.tile, self.dense_above)
                ops.conv_hook = hook
                self.last_hooks.append(hook)
            previous = logits

    def anytime(self, inputs, mode=None, threshold=None):
        """Every exit's logits as a list of four ``(batch, h/4, w/4, classes)`` tensors."""
        if (mode or self.mode) == "none":
            return list(self.network(inputs))
        return list(self.iter_exits(inputs, mode=mode, threshold=threshold))

    def call(self, inputs, training=None):
        return kops.stack(self.anytime(inputs), axis=1)

    def compute_output_shape(self, input_shape):
        b, h, w = input_shape[0], input_shape[1], input_shape[2]
        q = lambda s: None if s is None else s // 4  # noqa: E731
        return (b, NUM_EXITS, q(h), q(w), self.classes)

    def computed_fractions(self):
        """Per masked segment (2, 3, 4): ``{(h, w): share of pixels computed}`` of the last masked call."""
        return [{size: float(kops.convert_to_numpy(kops.mean(mask))) for size, mask in hook._cache.items()}
                for hook in self.last_hooks]

    def compiled_anytime(self, mode=None, threshold=None):
        """A cached ``tf.function``: ``fn(images) -> (exit logits list, computed shares)``.

        ``computed shares`` is a list (segments 2–4) of ``{"HxW": share}``; empty when
        ``mode == "none"``. This is the fast inference path (graph mode).
        """
        import tensorflow as tf

        mode = validate_mode(mode or self.mode)
        threshold = self.threshold if threshold is None else validate_threshold(threshold)
        key = (mode, threshold)
        if key not in self._compiled:
            def run(images):
                outputs = self.anytime(images, mode=mode, threshold=threshold)
                shares = [] if mode == "none" else [
                    {f"{h}x{w}": kops.mean(mask) for (h, w), mask in hook._cache.items()} for hook in self.last_hooks]
                return outputs, shares

            self._compiled[key] = tf.function(run, reduce_retracing=True)
        return self._compiled[key]

    def get_config(self):
        return {
            "backbone": self.backbone, "classes": self.classes, "exit_type": self.exit_type,
            "exit_width": self.exit_width, "threshold": self.threshold, "mode": self.mode, "tile": self.tile,
            "dense_above": self.dense_above, "input_shape": self.input_shape_arg, "name": self.name,
            "bn_momentum": self.bn_momentum,
            "trainable": self.trainable,
        }

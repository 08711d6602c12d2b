"""``AnytimeHRNet``: HRNetV2 with an exit after every stage and confidence-adaptive masking.

One network, three ways to run it (``mode``): ``"none"`` (every exit sees the full network),
``"dense"`` (the paper's masked computation, simulated densely; the training mode) and
``"sparse"`` (the same result with the skipped pixels actually skipped). Exit ``k``'s prediction
keeps exit ``k − 1``'s output on the pixels it was confident about
(``out_k = out_{k−1}·(1 − m) + out_k·m``), and its mask drives transition ``k``, stage ``k + 1``
and exit ``k + 1``. The stem, layer1 and exit 1 are never masked.

Two tasks (``task``): ``"segmentation"`` (Cityscapes; logits, the final exit is HRNetV2's
``last_layer`` head, the mask comes from the softmax confidence) and ``"pose"`` (MPII; one
heatmap per joint, the pose HRNet — nearest-upsampling fuse, a last module that keeps the
highest-resolution branch, the 1×1 ``final_layer`` head on it — the mask from
:func:`keras_visrec.data.mpii.heatmap_compute_mask`). ``mask_fn=`` replaces the rule.

``model(x)`` returns every exit stacked as ``(batch, 4, h/4, w/4, channels)`` (what ``fit``
trains); ``model.anytime(x)`` returns the list; ``model.iter_exits(x)`` yields exit after exit and
computes nothing for exits that are never asked for.

Registered builders (family ``"adpc"``): ``adpc_hrnetv2_{w18_small_v2, w18, w32, w48}`` and
``adpc_pose_hrnetv2_{w18_small_v2, w32}``, each taking ``weights=`` (a released ADP-C file, an
ImageNet HRNet backbone, a zoo id, ``.keras`` / ``.weights.h5``).
"""

import keras
from keras import ops as kops

from keras_visrec.adpc.exits import EXIT_TYPES, make_exit
from keras_visrec.adpc.layers import MaskedConv2D
from keras_visrec.adpc.masking import MaskHook, confidence_mask, validate_dense_fill, validate_mode, validate_threshold
from keras_visrec.arguments import (check_choice, model_inputs, validate_classes, validate_classifier_activation,
                                    validate_input_shape, validate_name, validate_rate)
from keras_visrec.data.mpii import heatmap_compute_mask
from keras_visrec.hrnet import (BN_MOMENTUM, HRNetOps, branches_head, check_weights, exit_input, hrnet_backbone,
                                pose_head, validate_config)
from keras_visrec.registry import register_model
from keras_visrec.weights import load_weights, resolve_weights

__all__ = [
    "AnytimeHRNet", "AnytimeHRNetV2W18", "AnytimeHRNetV2W18SmallV2", "AnytimeHRNetV2W32", "AnytimeHRNetV2W48",
    "AnytimePoseHRNetV2W18SmallV2", "AnytimePoseHRNetV2W32", "MASK_RULES", "NUM_EXITS", "TASKS",
    "default_exit_width", "exit_head",
]

NUM_EXITS = 4
TASKS = ("segmentation", "pose")
# a pixel is computed again while its rule says so; `threshold` is the rule's own threshold
MASK_RULES = {"softmax": confidence_mask, "heatmap": heatmap_compute_mask}
_TASK_DEFAULTS = {
    "segmentation": dict(classes=19, threshold=0.998, mask_rule="softmax"),  # Cityscapes, the paper's 0.998
    "pose": dict(classes=16, threshold=0.1, mask_rule="heatmap"),  # MPII's 16 joints
}
# what a released file of each kind was trained and evaluated as (the tag's last part)
_RELEASE_SETTINGS = {"ee": dict(exit_type="ee", mode="none"), "rh": dict(exit_type="rh", mode="none"),
                     "adpc": dict(exit_type="rh", mode="dense")}


def default_exit_width(backbone):
    """RH exit width: 128 for W48 (and W32), 64 for the W18 family and custom configs."""
    return 128 if backbone in ("w48", "w32") else 64


def exit_head(ops, xs, k, *, task, classes, exit_type, exit_width):
    """Raw output of exit ``k`` (1–4) from the branch list ``xs`` after its stage.

    Exits 1–3 are EE/RH heads on every branch upsampled to 1/4 and concatenated; exit 4 is the
    task's own head (HRNetV2's ``last_layer``, or the pose ``final_layer`` on branch 0).
    """
    if k == NUM_EXITS:
        return pose_head(ops, xs, classes) if task == "pose" else branches_head(ops, xs, classes, "last_layer")
    return make_exit(ops, exit_input(ops, xs, f"exit{k}"), exit_type, classes, exit_width, k)


def _exit_stream(ops, inputs, config, task, classes, exit_type, exit_width):
    """Yields the raw outputs of exits 1–4; masked convolutions start after exit 1."""
    backbone = hrnet_backbone(ops, inputs, config, multi_scale_output=task != "pose")
    for k, xs in enumerate(backbone, start=1):
        yield exit_head(ops, xs, k, task=task, classes=classes, exit_type=exit_type, exit_width=exit_width)
        ops.conv_class = MaskedConv2D


def build_anytime_network(config, classes, exit_type, exit_width, name, input_shape=None, input_tensor=None,
                          bn_momentum=BN_MOMENTUM, task="segmentation", include_preprocessing=False):
    """The functional, unmasked network with the four exits as outputs (layers named for ADP-C)."""
    inputs, sources = model_inputs(input_tensor, input_shape or (None, None, 3))
    ops = HRNetOps(name, bn_momentum=bn_momentum, fuse_interpolation="nearest" if task == "pose" else "bilinear",
                   include_preprocessing=include_preprocessing)
    outputs = list(_exit_stream(ops, inputs, config, task, classes, exit_type, exit_width))
    return keras.Model(sources, outputs, name=name)


def _validate_tile(tile):
    if isinstance(tile, bool) or not isinstance(tile, int) or tile < 1:
        raise ValueError(f"`tile` must be a positive integer; received tile={tile!r}.")
    return tile


def _resolve_callable(value, argument, names):
    """``value`` as a callable: a name of ``names``, a serialized Keras object, or a callable."""
    if isinstance(value, str):
        if value not in names:
            raise ValueError(f"`{argument}` must be one of {tuple(names)}, a callable or None; "
                             f"received {argument}={value!r}.")
        return names[value]
    if isinstance(value, dict):
        value = keras.saving.deserialize_keras_object(value)
    if not callable(value):
        raise TypeError(f"`{argument}` must be one of {tuple(names)}, a callable or None; "
                        f"received {type(value).__name__}: {value!r}.")
    return value


def _serialize_callable(value, names):
    if value is None or isinstance(value, str):
        return value
    for key, fn in names.items():
        if fn is value:
            return key
    return keras.saving.serialize_keras_object(value)


@keras.saving.register_keras_serializable(package="keras_visrec")
class AnytimeHRNet(keras.Model):
    """ADP-C: anytime dense prediction with confidence adaptivity on HRNetV2.

    Args:
        backbone: str or dict. A key of ``keras_visrec.hrnet.HRNET_CONFIGS`` or a config dict.
            Defaults to `"w48"`.
        classes: int or `None`. Output channels: classes (segmentation, >= 2) or joints (pose).
            `None`: 19 (Cityscapes) / 16 (MPII).
        exit_type: str. `"rh"` (redesigned exits) or `"ee"` (simple exits). Defaults to `"rh"`.
        exit_width: int or `None`. RH exit width; `None` picks 128 (W48/W32) or 64 (W18, custom).
        threshold: float in (0, 1] or `None`. The mask rule's threshold; `None`: 0.998
            (segmentation: computed while the max softmax probability is ``<= 0.998``) or 0.1
            (pose: computed where some joint's heatmap is ``>= 0.1``).
        mode: str. `"none"`, `"dense"` or `"sparse"` (see :mod:`keras_visrec.adpc.masking`).
            Defaults to `"dense"`.
        tile: int. Tile side of the sparse mode (`1`: single pixels with their halo, the fastest
            on confidence masks, which follow object edges). Defaults to `1`.
        dense_above: float in [0, 1] or `None`. Sparse mode runs a conv densely when more than this
            share of its tiles is active; `None` decides per convolution kind from the measured
            crossover (:mod:`keras_visrec.adpc.crossover`, probed once per machine and cached).
            Defaults to `0.5`.
        dense_fill: `"rbf"` or `"computed"`. Sparse mode: a conv run densely blends the skipped pixels
            by the RBF fill (`"rbf"`, the dense simulation's result) or keeps the values it computed
            there (`"computed"`: no blend pass, so a busy segment costs what the unmasked one does;
            the outputs then differ from ``mode="dense"``). Defaults to `"rbf"`.
        input_shape: optional ``(height, width, 3)``, sides `None` or multiples of 32.
        bn_momentum: float. Keras BatchNormalization momentum. Defaults to `0.99` (the paper's
            PyTorch 0.01); short runs want less (e.g. 0.9) for usable moving statistics.
        name: str. Model name and layer prefix. Defaults to the registry name
            (``adpc_hrnetv2_<backbone>``, ``adpc_pose_hrnetv2_<backbone>``).
        task: str. `"segmentation"` or `"pose"`. Defaults to `"segmentation"`.
        mask_fn: `None` (the task's rule), `"softmax"` (:func:`~keras_visrec.adpc.confidence_mask`),
            `"heatmap"` (:func:`~keras_visrec.data.mpii.heatmap_compute_mask`) or a callable
            ``mask_fn(outputs, threshold) -> (batch, h, w)`` with 1 where a pixel is computed again
            (register it with ``keras.saving.register_keras_serializable`` to save the model).
        weights: `None`, a zoo id, or a local file: a released ADP-C ``final_state.pth`` /
            ``checkpoint.pth.tar`` (its ``loss.*`` keys and training state ignored), an
            HRNet-Image-Classification ImageNet ``.pth`` (backbone by key match; head skipped, exits
            and segmentation head left at their initialisation), an official pose HRNet ``.pth``
            (``task="pose"``), ``.keras`` or ``.weights.h5``.
        input_tensor: optional Keras tensor whose shape the network is built for.
        include_preprocessing: bool. The model maps 0–255 RGB to ImageNet mean/std itself.
            Defaults to `True`.
        classifier_activation: `None` (raw logits / heatmaps, what the losses take), an activation
            name or a callable applied to every exit's output (the masks use the raw outputs).

    Examples:

    >>> tiny = dict(stem=16, layer1=(1, 8), stages=((1, (1, 1), (8, 16)), (1, (1, 1, 1), (8, 16, 32)),
    ...             (1, (1, 1, 1, 1), (8, 16, 32, 64))))
    >>> model = AnytimeHRNet(tiny, classes=11, exit_width=16, threshold=0.9)
    >>> [tuple(p.shape) for p in model.anytime(np.zeros((1, 64, 64, 3), "float32"))][-1]
    (1, 16, 16, 11)
    """

    def __init__(self, backbone="w48", classes=None, exit_type="rh", exit_width=None, threshold=None, mode="dense",
                 tile=1, dense_above=0.5, input_shape=None, bn_momentum=BN_MOMENTUM, name=None, *,
                 dense_fill="rbf", task="segmentation", mask_fn=None, weights=None, input_tensor=None, include_preprocessing=True,
                 classifier_activation=None, **kwargs):
        task = check_choice(task, "task", TASKS)
        defaults = _TASK_DEFAULTS[task]
        config = validate_config(backbone)
        exit_type = check_choice(exit_type, "exit_type", EXIT_TYPES)
        classes = validate_classes(defaults["classes"] if classes is None else classes,
                                   minimum=2 if task == "segmentation" else 1)
        exit_width = exit_width or default_exit_width(backbone)
        if isinstance(exit_width, bool) or not isinstance(exit_width, int) or exit_width < 1:
            raise ValueError(f"`exit_width` must be a positive integer; received exit_width={exit_width!r}.")
        key = backbone if isinstance(backbone, str) else "custom"
        arch_name = f"adpc_{'pose_' if task == 'pose' else ''}hrnetv2_{key}"
        name = validate_name(arch_name if name is None else name)
        arch = arch_name if isinstance(backbone, str) else name
        classifier_activation = validate_classifier_activation(classifier_activation)
        if mask_fn is not None:
            _resolve_callable(mask_fn, "mask_fn", MASK_RULES)
        check_weights(weights, arch=arch, include_top=True, classes=classes,
                      backbone_arch=f"hrnetv2_{backbone}" if isinstance(backbone, str) else None)
        shape = validate_input_shape(input_shape, input_tensor=input_tensor, multiple=32, arch=arch)
        super().__init__(name=name, **kwargs)
        self.backbone = backbone
        self.config_dict = config
        self.task = task
        self.arch = arch
        self.classes = classes
        self.exit_type = exit_type
        self.exit_width = exit_width
        self.threshold = defaults["threshold"] if threshold is None else threshold
        self.mode = mode
        self.tile = tile
        self.dense_above = dense_above
        self.dense_fill = dense_fill
        self.mask_fn = mask_fn
        self.classifier_activation = classifier_activation
        self.include_preprocessing = bool(include_preprocessing)
        self.input_shape_arg = None if input_shape is None else tuple(input_shape)
        self.bn_momentum = float(bn_momentum)
        self.network = build_anytime_network(config, classes, exit_type, exit_width, name, shape, input_tensor,
                                             bn_momentum=self.bn_momentum, task=task,
                                             include_preprocessing=self.include_preprocessing)
        self._compiled = {}
        self._layer_map = {layer.name: layer for layer in self.network.layers}
        self.last_hooks = []
        self._check_mask_fn()
        if weights is not None:
            load_weights(self, weights, arch=arch, include_top=True, classes=classes, family="adpc")

    def load_pretrained(self, weights):
        """Loads what ``weights=`` accepts (an ADP-C or ImageNet HRNet file, a zoo id, ``.keras``)
        into this model, after the same checks as the constructor; returns the model."""
        check_weights(weights, arch=self.arch, include_top=True, classes=self.classes,
                      backbone_arch=f"hrnetv2_{self.backbone}" if isinstance(self.backbone, str) else None)
        return load_weights(self, weights, arch=self.arch, include_top=True, classes=self.classes, family="adpc")

    # --- settings: validated whenever they are set, and part of the compiled-function cache key ---
    @property
    def threshold(self):
        return self._threshold

    @threshold.setter
    def threshold(self, value):
        self._threshold = validate_threshold(value)

    @property
    def mode(self):
        return self._mode

    @mode.setter
    def mode(self, value):
        self._mode = validate_mode(value)

    @property
    def tile(self):
        return self._tile

    @tile.setter
    def tile(self, value):
        self._tile = _validate_tile(value)

    @property
    def dense_above(self):
        return self._dense_above

    @dense_above.setter
    def dense_above(self, value):
        self._dense_above = None if value is None else validate_rate(value, "dense_above", high_inclusive=True)

    @property
    def dense_fill(self):
        return self._dense_fill

    @dense_fill.setter
    def dense_fill(self, value):
        self._dense_fill = validate_dense_fill(value)

    @property
    def mask_fn(self):
        """The confidence rule in use: ``fn(outputs, threshold) -> (batch, h, w)`` mask, 1 = compute."""
        return self._mask_fn

    @mask_fn.setter
    def mask_fn(self, value):
        self._mask_rule = value  # as given (None, a rule name or a callable): what get_config saves
        rule = _TASK_DEFAULTS[self.task]["mask_rule"] if value is None else value
        self._mask_fn = _resolve_callable(rule, "mask_fn", MASK_RULES)

    # --- running -------------------------------------------------------------------------------
    def _check_mask_fn(self):
        """Calls the rule once on a small probe so a wrong ``mask_fn`` fails at construction."""
        self._compute_mask(kops.zeros((1, 4, 4, self.classes)), self.threshold)

    def _compute_mask(self, outputs, threshold):
        mask = self.mask_fn(outputs, threshold)
        expected = tuple(outputs.shape[:3])
        got = tuple(getattr(mask, "shape", ()))
        if len(got) != 3 or any(e is not None and g is not None and e != g for e, g in zip(expected, got)):
            raise ValueError(f"`mask_fn` must return a (batch, height, width) mask matching the exit output "
                             f"{tuple(outputs.shape)}, i.e. of shape {expected}; {self.mask_fn!r} returned shape {got}.")
        return kops.stop_gradient(kops.cast(mask, outputs.dtype))

    def _activate(self, outputs):
        if self.classifier_activation is None:
            return outputs
        return keras.activations.get(self.classifier_activation)(outputs)

    def iter_exits(self, inputs, mode=None, threshold=None):
        """Yields exit 1, 2, 3, 4's outputs (1/4 resolution) one by one; stop whenever you like.

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
        stream = _exit_stream(ops, inputs, self.config_dict, self.task, self.classes, self.exit_type, self.exit_width)
        for k, outputs in enumerate(stream, start=1):
            if hook is not None:
                keep = hook.mask_at(int(outputs.shape[1]), int(outputs.shape[2]))[..., None]
                outputs = self._copy_confident(previous, outputs, keep)
            yield self._activate(outputs)
            if mode != "none" and k < NUM_EXITS:
                hook = self._mask_hook(self._compute_mask(outputs, threshold), mode)
                ops.conv_hook = hook
                self.last_hooks.append(hook)
            previous = outputs

    def _mask_hook(self, mask, mode):
        """The ``conv_hook`` of the next masked segment, from the previous exit's ``mask``."""
        return MaskHook(mask, mode, self.tile, self.dense_above, dense_fill=self.dense_fill)

    def _copy_confident(self, previous, outputs, keep):
        """Exit ``k``'s output: its own ``outputs`` where ``keep`` (the mask) is 1, exit ``k − 1``'s elsewhere."""
        return previous * (1.0 - keep) + outputs * keep

    def anytime(self, inputs, mode=None, threshold=None):
        """Every exit's output as a list of four ``(batch, h/4, w/4, channels)`` tensors."""
        if (mode or self.mode) == "none":
            self.last_hooks = []
            return [self._activate(o) for o in self.network(inputs)]
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
        """A cached ``tf.function``: ``fn(images) -> (exit outputs list, computed shares)``.

        ``computed shares`` is a list (segments 2–4) of ``{"HxW": share}``; empty when
        ``mode == "none"``. This is the fast inference path (graph mode). The cache is keyed on
        everything the traced function reads (mode, threshold, tile, dense_above, dense_fill, the mask rule,
        the output activation), so changing any of them traces a new function.
        """
        import tensorflow as tf

        mode = validate_mode(mode or self.mode)
        threshold = self.threshold if threshold is None else validate_threshold(threshold)
        key = (mode, threshold, self.tile, self.dense_above, self.dense_fill, self.mask_fn, self.classifier_activation)
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
            "dense_above": self.dense_above, "dense_fill": self.dense_fill, "input_shape": self.input_shape_arg, "name": self.name,
            "bn_momentum": self.bn_momentum, "task": self.task,
            "mask_fn": _serialize_callable(self._mask_rule, MASK_RULES),
            "include_preprocessing": self.include_preprocessing,
            "classifier_activation": _serialize_callable(self.classifier_activation, {}),
            "trainable": self.trainable,
        }

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        # files saved before the argument existed were built without the preprocessing layer
        config.setdefault("include_preprocessing", False)
        if isinstance(config.get("classifier_activation"), dict):
            config["classifier_activation"] = keras.saving.deserialize_keras_object(config["classifier_activation"])
        return cls(**config)


def _release_settings(weights, arch):
    """``exit_type`` / ``mode`` a catalogue entry of ``arch`` was released as (tag ``…_ee|_rh|_adpc``), else ``{}``."""
    if not isinstance(weights, str):
        return {}
    try:
        kind, entry = resolve_weights(weights, arch=arch)
    except (ValueError, FileNotFoundError, TypeError):
        return {}  # the builder's own validation reports it
    if kind != "zoo" or entry.arch != arch:
        return {}
    return _RELEASE_SETTINGS.get(entry.pretraining.rsplit("_", 1)[-1], {})


_BUILDER_DOC = """ADP-C {title} (registry name ``{arch}``); arguments as :class:`AnytimeHRNet`.

    ``exit_type`` and ``mode`` default to how a catalogue entry passed as ``weights=`` was released
    (EE / RH: unmasked, ADP-C: masked RH), else to `"rh"` and `"dense"`.

    Examples:

    >>> model = keras_visrec.get_model("{arch}", input_shape=(64, 64, 3))
    """


def _make_builder(builder_name, key, task, title):
    arch = f"adpc_{'pose_' if task == 'pose' else ''}hrnetv2_{key}"

    def builder(weights=None, *, classes=None, exit_type=None, exit_width=None, threshold=None, mode=None, tile=1,
                dense_above=0.5, dense_fill="rbf", input_shape=None, input_tensor=None, include_preprocessing=True,
                classifier_activation=None, mask_fn=None, bn_momentum=BN_MOMENTUM, name=None):
        release = _release_settings(weights, arch)
        return AnytimeHRNet(key, classes=classes, exit_type=exit_type or release.get("exit_type", "rh"),
                            exit_width=exit_width, threshold=threshold, mode=mode or release.get("mode", "dense"),
                            tile=tile, dense_above=dense_above, dense_fill=dense_fill, input_shape=input_shape, bn_momentum=bn_momentum,
                            name=arch if name is None else name, task=task, mask_fn=mask_fn, weights=weights, input_tensor=input_tensor,
                            include_preprocessing=include_preprocessing, classifier_activation=classifier_activation)

    builder.__name__ = builder.__qualname__ = builder_name
    builder.__doc__ = _BUILDER_DOC.format(title=title, arch=arch)
    return register_model(arch, family="adpc")(builder)


AnytimeHRNetV2W18SmallV2 = _make_builder("AnytimeHRNetV2W18SmallV2", "w18_small_v2", "segmentation",
                                         "segmentation, HRNetV2-W18-Small-v2")
AnytimeHRNetV2W18 = _make_builder("AnytimeHRNetV2W18", "w18", "segmentation", "segmentation, HRNetV2-W18")
AnytimeHRNetV2W32 = _make_builder("AnytimeHRNetV2W32", "w32", "segmentation", "segmentation, HRNetV2-W32")
AnytimeHRNetV2W48 = _make_builder("AnytimeHRNetV2W48", "w48", "segmentation",
                                  "segmentation, HRNetV2-W48 (the paper's Cityscapes model)")
AnytimePoseHRNetV2W32 = _make_builder("AnytimePoseHRNetV2W32", "w32", "pose",
                                      "pose, HRNet-W32 (the paper's MPII model, 256×256)")
AnytimePoseHRNetV2W18SmallV2 = _make_builder("AnytimePoseHRNetV2W18SmallV2", "w18_small_v2", "pose",
                                             "pose, HRNetV2-W18-Small-v2")

"""Training a segmenter as the official ConvNeXt UperNet configs do, through ``model.fit``.

The recipe (facebookresearch/ConvNeXt ``semantic_segmentation/configs/convnext/*``, ADE20K,
160k iterations, batch 16):

* pixel cross-entropy with ignore label 255 on the decode head's logits, plus the auxiliary FCN
  head's at weight 0.4 (``loss_weights``), logits upsampled to the labels
  (:class:`~keras_visrec.segmentation.losses.SegmentationLoss`);
* AdamW, lr 1e-4, betas (0.9, 0.999), weight decay 0.05 (none on rank ≤ 1 variables: norms,
  biases, layer scale, GRN), with *stage-wise* learning-rate decay 0.9 — the official
  ``LearningRateDecayOptimizerConstructor(decay_type="stage_wise")``: the stem and every
  downsampling layer get id 0, the blocks of stage ``s`` id ``s + 1``, everything else (the
  backbone's output norms, the heads) id ``num_layers + 1``, and a variable's rate is scaled by
  ``decay ** (num_layers + 1 - id)``. ``num_layers`` is 6 in the ConvNeXt-T config and 12 in the
  S/B/L/XL ones. The scale is applied by the recipe's
  :class:`~keras_visrec.recipe.optim.LayerDecayAdamW` (a true per-variable learning rate);
* mmcv's ``poly`` schedule with linear warmup (:class:`PolyWarmup`): 1500 warmup iterations from
  ratio 1e-6, power 1.0, ``min_lr`` 0, per optimizer step;
* drop path 0.4 for T (0.3 for S, 0.4 for B/L/XL): an argument of the model builder.

Any ``tf.distribute`` strategy works: :func:`train_segmenter` builds and compiles inside its
scope; the dataset is the global batch.
"""

import re

import keras
from keras import ops

from keras_visrec.recipe.optim import LayerDecayAdamW, no_weight_decay_variables
from keras_visrec.segmentation.losses import SegmentationLoss
from keras_visrec.segmentation.metrics import IGNORE_LABEL, MeanIoU
from keras_visrec.training import build_optimizer, strategy_scope

__all__ = [
    "AUX_LOSS_WEIGHT",
    "OFFICIAL_DROP_PATH",
    "PolyWarmup",
    "compile_segmenter",
    "official_num_layers",
    "segmentation_adamw",
    "segmentation_targets",
    "stage_wise_layer_id",
    "stage_wise_lr_scales",
    "train_segmenter",
]

AUX_LOSS_WEIGHT = 0.4
# drop_path_rate of the official UperNet configs, by backbone
OFFICIAL_DROP_PATH = {"convnext_tiny": 0.4, "convnext_small": 0.3, "convnext_base": 0.4, "convnext_large": 0.4,
                      "convnext_xlarge": 0.4}

_STEM = re.compile(r"_stem_(?:conv|layernorm)$")
_DOWNSAMPLING = re.compile(r"_downsampling_(?:layernorm|conv)_\d+$")
_BLOCK = re.compile(r"_stage_(\d+)_block_(\d+)_")


@keras.saving.register_keras_serializable(package="keras_visrec")
class PolyWarmup(keras.optimizers.schedules.LearningRateSchedule):
    """mmcv's ``poly`` learning rate with ``linear`` warmup, per optimizer step (``by_epoch=False``).

    ``regular = (base_lr - min_lr) · (1 − step / total_steps) ** power + min_lr``; during the
    first ``warmup_steps`` steps the rate is ``regular · (1 − (1 − step / warmup_steps) · (1 −
    warmup_ratio))`` — the warmup multiplies the already decaying rate, as mmcv's
    ``LrUpdaterHook.get_warmup_lr`` does. Step 0 trains at ``base_lr · warmup_ratio``.

    Args:
        base_lr: float. The configured learning rate (official: 1e-4).
        total_steps: int. Optimizer steps of the whole run (official: 160000).
        warmup_steps: int. Linear warmup steps. Defaults to `1500`.
        warmup_ratio: float. Warmup starts at this share of the rate. Defaults to `1e-6`.
        power: float. Defaults to `1.0`.
        min_lr: float. Floor of the decay. Defaults to `0.0`.

    Examples:

    >>> schedule = PolyWarmup(1e-4, total_steps=160000, warmup_steps=1500)
    >>> round(float(schedule(80000)), 12)
    5e-05
    """

    def __init__(self, base_lr, total_steps, warmup_steps=1500, warmup_ratio=1e-6, power=1.0, min_lr=0.0):
        for name, value in (("total_steps", total_steps), ("warmup_steps", warmup_steps)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(f"`{name}` must be a non-negative integer; received {name}={value!r}.")
        if total_steps < 1:
            raise ValueError(f"`total_steps` must be >= 1; received total_steps={total_steps!r}.")
        for name, value in (("base_lr", base_lr), ("power", power), ("min_lr", min_lr)):
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
                raise ValueError(f"`{name}` must be a non-negative float; received {name}={value!r}.")
        if isinstance(warmup_ratio, bool) or not isinstance(warmup_ratio, (int, float)) or not 0 < warmup_ratio <= 1:
            raise ValueError(f"`warmup_ratio` must be in (0, 1]; received warmup_ratio={warmup_ratio!r}.")
        if min_lr > base_lr:
            raise ValueError(f"`min_lr` ({min_lr}) must not exceed `base_lr` ({base_lr}).")
        self.base_lr, self.min_lr = float(base_lr), float(min_lr)
        self.total_steps, self.warmup_steps = int(total_steps), int(warmup_steps)
        self.warmup_ratio, self.power = float(warmup_ratio), float(power)

    def __call__(self, step):
        step = ops.cast(step, "float32")
        remaining = ops.maximum(self.total_steps - step, 0.0) / self.total_steps  # exact near the end, unlike 1 − s/T
        regular = (self.base_lr - self.min_lr) * ops.power(remaining, self.power) + self.min_lr
        if not self.warmup_steps:
            return regular
        # mmcv's 1 − (1 − step / warmup) · (1 − ratio), rearranged to stay exact in float32 near step 0
        factor = self.warmup_ratio + step / self.warmup_steps * (1.0 - self.warmup_ratio)
        return ops.where(step < self.warmup_steps, regular * factor, regular)

    def get_config(self):
        return {"base_lr": self.base_lr, "total_steps": self.total_steps, "warmup_steps": self.warmup_steps,
                "warmup_ratio": self.warmup_ratio, "power": self.power, "min_lr": self.min_lr}


def stage_wise_layer_id(layer_name, num_layers):
    """Stage-wise decay id of a layer from its keras_visrec ConvNeXt name (see the module docstring).

    Args:
        layer_name: str. E.g. ``"convnext_tiny_stage_2_block_4_depthwise_conv"``.
        num_layers: int. The config's ``num_layers`` (6 for T, 12 for S/B/L/XL).

    Returns:
        int: 0 for the stem and downsampling layers, ``s + 1`` for the blocks of stage ``s``,
        ``num_layers + 1`` for the rest.
    """
    layer_id = _backbone_id(layer_name)
    return num_layers + 1 if layer_id is None else layer_id


def _backbone_id(layer_name):
    if _STEM.search(layer_name) or _DOWNSAMPLING.search(layer_name):
        return 0
    block = _BLOCK.search(layer_name)
    return int(block.group(1)) + 1 if block else None


def _backbone_depths(model):
    """Blocks per stage of the ConvNeXt inside ``model``, read from its layer names."""
    depths = {}
    for layer in model._flatten_layers(include_self=False, recursive=True):
        match = _BLOCK.search(layer.name)
        if match:
            stage, block = int(match.group(1)), int(match.group(2))
            depths[stage] = max(depths.get(stage, 0), block + 1)
    if not depths:
        raise ValueError(
            f"Model {model.name!r} has no layers named '{{name}}_stage_{{s}}_block_{{b}}_*': stage-wise decay needs "
            "a keras_visrec ConvNeXt backbone (keras_visrec.UperNet builds one); pass layer_decay=1.0 to turn it off."
        )
    return tuple(depths[s] for s in sorted(depths))


def official_num_layers(model):
    """The ``num_layers`` the official configs use for this backbone: 6 for stage-3 depth ≤ 9 (T), else 12."""
    depths = _backbone_depths(model)
    return 6 if len(depths) < 3 or depths[2] <= 9 else 12


def stage_wise_lr_scales(model, layer_decay=0.9, num_layers=None):
    """Learning-rate scale of every trainable variable, keyed by ``variable.path``.

    Layers are walked recursively (a backbone nested as a sub-model, or blocks packaged as one
    layer, get their ids from the enclosing name).

    Args:
        model: a segmenter on a keras_visrec ConvNeXt backbone.
        layer_decay: float in (0, 1]. Defaults to `0.9`.
        num_layers: int or None. `None`: :func:`official_num_layers`.
    """
    if isinstance(layer_decay, bool) or not isinstance(layer_decay, (int, float)) or not 0 < layer_decay <= 1:
        raise ValueError(f"`layer_decay` must be in (0, 1]; received layer_decay={layer_decay!r}.")
    if num_layers is None:
        num_layers = official_num_layers(model)
    elif isinstance(num_layers, bool) or not isinstance(num_layers, int) or num_layers < 4:
        raise ValueError(f"`num_layers` must be an integer >= 4 (one id per stage); received num_layers={num_layers!r}.")
    else:
        _backbone_depths(model)
    scales = {}

    def walk(layer, inherited):
        # parents first, children override: a sub-layer named by the scheme wins, one that is
        # not (the parts of a packaged block) keeps its parent's id
        for child in layer._flatten_layers(include_self=False, recursive=False):
            own = _backbone_id(child.name)
            own = inherited if own is None else own
            layer_id = num_layers + 1 if own is None else own
            for variable in child.trainable_weights:
                scales[variable.path] = float(layer_decay ** (num_layers + 1 - layer_id))
            walk(child, own)

    walk(model, None)
    return scales


def segmentation_adamw(model, learning_rate=1e-4, weight_decay=0.05, layer_decay=0.9, *, num_layers=None,
                       beta_1=0.9, beta_2=0.999, epsilon=1e-8, **kwargs):
    """The official UperNet optimizer: AdamW with stage-wise decay and no decay on rank ≤ 1 variables.

    Args:
        model: the (built) segmenter whose variables are scaled.
        learning_rate: float or a ``LearningRateSchedule`` (e.g. :class:`PolyWarmup`).
            Defaults to `1e-4`.
        weight_decay: float. Decoupled weight decay (scaled with the rate, as PyTorch's AdamW).
            Defaults to `0.05`.
        layer_decay: float in (0, 1]; `1.0` turns the decay off. Defaults to `0.9`.
        num_layers: int or None. The config's ``num_layers``; `None`: 6 for T, 12 for larger.
        beta_1, beta_2, epsilon: Adam's constants (PyTorch's defaults).
        **kwargs: further ``keras.optimizers.AdamW`` arguments.

    Returns:
        A :class:`~keras_visrec.recipe.optim.LayerDecayAdamW`.
    """
    scales = stage_wise_lr_scales(model, layer_decay, num_layers) if layer_decay != 1.0 else {}
    optimizer = LayerDecayAdamW(lr_scales=scales, learning_rate=learning_rate, weight_decay=weight_decay,
                                beta_1=beta_1, beta_2=beta_2, epsilon=epsilon, **kwargs)
    optimizer.exclude_from_weight_decay(var_list=no_weight_decay_variables(model))
    return optimizer


def _outputs(model):
    outputs = model.outputs if isinstance(model.outputs, (list, tuple)) else [model.outputs]
    if len(outputs) not in (1, 2):
        raise ValueError(f"Model {model.name!r} has {len(outputs)} outputs; a segmenter has `logits` and, when "
                         "trained with the auxiliary head, `aux_logits`.")
    return outputs


def compile_segmenter(model, *, total_steps, learning_rate=1e-4, warmup_steps=1500, warmup_ratio=1e-6, power=1.0,
                      min_lr=0.0, weight_decay=0.05, layer_decay=0.9, num_layers=None, aux_weight=AUX_LOSS_WEIGHT,
                      class_weights=None, ignore_label=IGNORE_LABEL, optimizer=None, **kwargs):
    """Compiles a segmenter with the official loss, optimizer and schedule and a mIoU metric.

    A model with two outputs ``[logits, aux_logits]`` gets one :class:`SegmentationLoss` per
    output with ``loss_weights=[1, aux_weight]``; feed it ``(images, (labels, labels))``
    (:func:`segmentation_targets` maps a dataset). mIoU is measured on ``logits``.

    Args:
        model: a ``keras.Model`` with one or two logits outputs.
        total_steps: int. Optimizer steps of the run (for the poly decay).
        learning_rate, warmup_steps, warmup_ratio, power, min_lr: :class:`PolyWarmup`.
        weight_decay, layer_decay, num_layers: :func:`segmentation_adamw`.
        aux_weight: float. Weight of the auxiliary loss. Defaults to `0.4`.
        class_weights: sequence of floats or `None`. Per-class loss weights.
        ignore_label: int. Defaults to `255`.
        optimizer: a Keras optimizer used instead (the schedule and decay are then its own).
        **kwargs: passed to ``model.compile`` (``jit_compile`` defaults to `False`: XLA on CPU
            compiles for minutes).
    """
    outputs = _outputs(model)
    classes = int(outputs[0].shape[-1])
    if isinstance(aux_weight, bool) or not isinstance(aux_weight, (int, float)) or aux_weight < 0:
        raise ValueError(f"`aux_weight` must be a non-negative float; received aux_weight={aux_weight!r}.")
    if optimizer is None:
        schedule = PolyWarmup(learning_rate, total_steps, warmup_steps=min(warmup_steps, total_steps),
                              warmup_ratio=warmup_ratio, power=power, min_lr=min_lr)
        optimizer = segmentation_adamw(model, schedule, weight_decay, layer_decay, num_layers=num_layers)
    losses = [SegmentationLoss(class_weights, ignore_label, name=f"{name}_loss") for name in ("logits", "aux")]
    kwargs.setdefault("jit_compile", False)
    if len(outputs) == 2:
        model.compile(optimizer=optimizer, loss=losses, loss_weights=[1.0, float(aux_weight)],
                      metrics=[[MeanIoU(classes, ignore_label)], []], **kwargs)
    else:
        model.compile(optimizer=optimizer, loss=losses[0], metrics=[MeanIoU(classes, ignore_label)], **kwargs)
    return build_optimizer(model)


def segmentation_targets(dataset, model):
    """Maps ``(images, labels)`` batches to the targets ``model`` trains on (labels once per output)."""
    if len(_outputs(model)) == 1:
        return dataset
    return dataset.map(lambda images, labels: (images, (labels, labels)))


def train_segmenter(build_model, dataset, *, epochs=1, steps_per_epoch=None, strategy=None, validation_data=None,
                    callbacks=None, verbose="auto", **compile_kwargs):
    """Builds, compiles (:func:`compile_segmenter`) and fits a segmenter under a ``tf.distribute`` strategy.

    Args:
        build_model: callable returning the uncompiled model; called inside the strategy scope.
        dataset: ``tf.data.Dataset`` of ``(images, labels)`` global batches (e.g. from
            :func:`keras_visrec.segmentation.pipeline.train_dataset`).
        epochs: int. Defaults to `1`.
        steps_per_epoch: int or `None`. Needed when the dataset's length is unknown (repeated).
        strategy: `None`, ``"mirrored"``, ``"multiworker"`` or a ``tf.distribute.Strategy``.
        validation_data: ``(images, labels)`` dataset evaluated after each epoch, or `None`.
        callbacks: list of Keras callbacks.
        verbose: ``fit`` verbosity.
        **compile_kwargs: :func:`compile_segmenter` arguments (``total_steps`` defaults to
            ``epochs × steps_per_epoch``).

    Returns:
        ``(model, history)``.
    """
    if isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 1:
        raise ValueError(f"`epochs` must be a positive integer; received epochs={epochs!r}.")
    steps = steps_per_epoch or int(dataset.cardinality())
    if steps < 1:
        raise ValueError("`steps_per_epoch` is needed for a dataset of unknown or infinite length.")
    compile_kwargs.setdefault("total_steps", steps * epochs)
    with strategy_scope(strategy):
        model = build_model()
        compile_segmenter(model, **compile_kwargs)
    train = segmentation_targets(dataset, model)
    validation = None if validation_data is None else segmentation_targets(validation_data, model)
    history = model.fit(train, epochs=epochs, steps_per_epoch=steps_per_epoch, validation_data=validation,
                        callbacks=callbacks, verbose=verbose)
    return model, history

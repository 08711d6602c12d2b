"""Training ADP-C through ``model.fit``: the multi-exit losses, the poly schedule, per-exit mIoU.

Segmentation, the recipe of the paper (Cityscapes): SGD, momentum 0.9, weight decay 5e-4, lr
0.01 with the poly schedule (power 0.9), class-weighted cross-entropy with ignore label 255 on
logits bilinearly upsampled to the label size
(:func:`keras_visrec.segmentation.losses.pixel_cross_entropy`), summed over the four exits with
equal weights. Pose (MPII): each exit's heatmaps against Gaussian targets with the MSE of
deep-high-resolution-net's ``JointsMSELoss(use_target_weight=True)``: ``0.5 · mean((p − t)²)``
per joint, averaged over joints; a joint's target weight (0 when it is not visible or falls
outside the crop) comes in as ``sample_weight`` of shape ``(batch, joints)`` — a dataset of
``(images, heatmaps, target_weights)``. Any ``tf.distribute`` strategy works: build and compile
inside its scope (``train_anytime`` does).
"""

import keras
from keras import ops

from keras_visrec.recipe.optim import PyTorchSGD
from keras_visrec.segmentation.losses import pixel_cross_entropy
from keras_visrec.segmentation.metrics import IGNORE_LABEL, MeanIoU
from keras_visrec.training import build_optimizer, strategy_scope

__all__ = ["ExitMeanIoU", "IGNORE_LABEL", "MultiExitHeatmapLoss", "MultiExitLoss", "PolyLR", "compile_anytime",
           "train_anytime"]

NUM_EXITS = 4
_SGD_DEFAULTS = dict(base_lr=0.01, power=0.9, momentum=0.9, weight_decay=5e-4)


def _exit_weights(exit_weights):
    if not exit_weights or any(isinstance(w, bool) or float(w) < 0 for w in exit_weights):
        raise ValueError(f"`exit_weights` must be non-negative numbers; received exit_weights={exit_weights!r}.")
    return tuple(float(w) for w in exit_weights)


def _check_exits(y_pred, exit_weights):
    if int(y_pred.shape[1]) != len(exit_weights):
        raise ValueError(f"`exit_weights` has {len(exit_weights)} entries but the model has {y_pred.shape[1]} exits.")


@keras.saving.register_keras_serializable(package="keras_visrec")
class MultiExitLoss(keras.losses.Loss):
    """Weighted sum over exits of the class-weighted pixel cross-entropy, ignoring ``ignore_label``.

    Args:
        exit_weights: sequence of floats, one per exit. Defaults to equal weights `(1, 1, 1, 1)`.
        class_weights: sequence of floats (one per class) or `None`. Each exit's loss is the
            class-weighted mean over non-ignored pixels (PyTorch ``CrossEntropyLoss(weight=…)``).
        ignore_label: int. Label excluded from the loss. Defaults to `255`.
    """

    def __init__(self, exit_weights=(1.0, 1.0, 1.0, 1.0), class_weights=None, ignore_label=IGNORE_LABEL,
                 name="multi_exit_loss", **kwargs):
        super().__init__(name=name, **kwargs)
        self.exit_weights = _exit_weights(exit_weights)
        self.class_weights = None if class_weights is None else tuple(float(w) for w in class_weights)
        self.ignore_label = int(ignore_label)

    def call(self, y_true, y_pred):
        _check_exits(y_pred, self.exit_weights)
        total = 0.0
        for k, exit_weight in enumerate(self.exit_weights):
            if exit_weight:
                total = total + exit_weight * pixel_cross_entropy(
                    y_true, y_pred[:, k], class_weights=self.class_weights, ignore_label=self.ignore_label)
        return total

    def get_config(self):
        return {**super().get_config(), "exit_weights": self.exit_weights, "class_weights": self.class_weights,
                "ignore_label": self.ignore_label}


@keras.saving.register_keras_serializable(package="keras_visrec")
class MultiExitHeatmapLoss(keras.losses.Loss):
    """Weighted sum over exits of the joints' heatmap MSE (``JointsMSELoss`` with target weights).

    ``y_true``: target heatmaps ``(batch, h, w, joints)`` at the exits' resolution; ``y_pred``: the
    stacked exits ``(batch, exits, h, w, joints)``. Per sample the loss is one value per joint,
    ``Σ_k w_k · 0.5 · mean_pixels((p_k − t)²)``, so ``sample_weight`` of shape ``(batch, joints)``
    (the target weights) multiplies each joint and the mean runs over batch and joints, as
    the official loss averages ``0.5 · MSE(p·w, t·w)`` over joints.

    Args:
        exit_weights: sequence of floats, one per exit. Defaults to `(1, 1, 1, 1)`.
    """

    def __init__(self, exit_weights=(1.0, 1.0, 1.0, 1.0), name="multi_exit_heatmap_loss", **kwargs):
        super().__init__(name=name, **kwargs)
        self.exit_weights = _exit_weights(exit_weights)

    def call(self, y_true, y_pred):
        _check_exits(y_pred, self.exit_weights)
        y_true = ops.cast(y_true, "float32")
        if tuple(y_true.shape[1:]) != tuple(y_pred.shape[2:]):
            raise ValueError(f"Target heatmaps of shape {tuple(y_true.shape)} do not match the exits' outputs "
                             f"{tuple(y_pred.shape)} (batch, exits, h, w, joints).")
        total = 0.0
        for k, exit_weight in enumerate(self.exit_weights):
            if exit_weight:
                error = ops.square(ops.cast(y_pred[:, k], "float32") - y_true)
                total = total + exit_weight * 0.5 * ops.mean(error, axis=(1, 2))
        return total

    def get_config(self):
        return {**super().get_config(), "exit_weights": self.exit_weights}


@keras.saving.register_keras_serializable(package="keras_visrec")
class PolyLR(keras.optimizers.schedules.LearningRateSchedule):
    """``lr = base_lr · (1 − step / total_steps) ** power`` (floored at 0).

    Args:
        base_lr: float. Initial learning rate (paper: 0.01).
        total_steps: int. Steps of the whole run.
        power: float. Defaults to `0.9`.
    """

    def __init__(self, base_lr, total_steps, power=0.9):
        if total_steps < 1:
            raise ValueError(f"`total_steps` must be >= 1; received total_steps={total_steps!r}.")
        self.base_lr = float(base_lr)
        self.total_steps = int(total_steps)
        self.power = float(power)

    def __call__(self, step):
        progress = ops.minimum(ops.cast(step, "float32") / self.total_steps, 1.0)
        return self.base_lr * ops.power(1.0 - progress, self.power)

    def get_config(self):
        return {"base_lr": self.base_lr, "total_steps": self.total_steps, "power": self.power}


@keras.saving.register_keras_serializable(package="keras_visrec")
class ExitMeanIoU(MeanIoU):
    """mIoU of one exit: :class:`keras_visrec.segmentation.metrics.MeanIoU` on ``y_pred[:, exit_index]``.

    A label outside ``[0, num_classes)`` that is not ``ignore_label`` fails the step (never folded
    into the matrix).

    Args:
        exit_index: int. 0-based exit.
        num_classes: int.
        ignore_label: int. Defaults to `255`.
    """

    def __init__(self, exit_index, num_classes, ignore_label=IGNORE_LABEL, name=None, **kwargs):
        kwargs.pop("classes", None)
        kwargs.pop("output_index", None)
        super().__init__(num_classes, ignore_label=ignore_label, output_index=exit_index, name=name, **kwargs)

    @property
    def exit_index(self):
        return self.output_index

    @property
    def num_classes(self):
        return self.classes

    def get_config(self):
        config = super().get_config()
        config.pop("classes")
        config.pop("output_index")
        return {**config, "exit_index": self.exit_index, "num_classes": self.num_classes}


def compile_anytime(model, *, base_lr=None, total_steps=1000, power=None, momentum=None, weight_decay=None,
                    exit_weights=None, class_weights=None, ignore_label=IGNORE_LABEL, optimizer=None, **kwargs):
    """Compiles ``model`` with the paper's SGD (PyTorch's formula, :class:`~keras_visrec.recipe.optim.PyTorchSGD`:
    the weight decay is L2 through the momentum) + :class:`PolyLR`, the task's multi-exit loss and, for
    segmentation, per-exit mIoU.

    Args:
        model: an ``AnytimeHRNet`` (``model.task`` picks :class:`MultiExitLoss` or
            :class:`MultiExitHeatmapLoss`).
        base_lr, power, momentum, weight_decay: the SGD and poly schedule. Default to the paper's
            `0.01`, `0.9`, `0.9`, `5e-4`.
        total_steps: int. Steps of the poly schedule. Defaults to `1000`.
        exit_weights: one weight per exit. Defaults to equal weights.
        class_weights: segmentation only: per-class loss weights.
        ignore_label: int. Segmentation label left out. Defaults to `255`.
        optimizer: a Keras optimizer replacing the SGD; then ``base_lr``, ``power``, ``momentum``
            and ``weight_decay`` configure nothing, and passing any of them raises.
        **kwargs: passed to ``model.compile`` (``jit_compile`` defaults to `False`: XLA on CPU
            compiles for minutes and runs slower).
    """
    sgd = dict(base_lr=base_lr, power=power, momentum=momentum, weight_decay=weight_decay)
    given = sorted(k for k, v in sgd.items() if v is not None)
    if optimizer is not None and given:
        raise ValueError(f"`optimizer` replaces the SGD and its poly schedule, so {given} would be ignored; "
                         f"configure them on the optimizer you pass, or leave `optimizer=None`.")
    if optimizer is None:
        sgd = {k: _SGD_DEFAULTS[k] if v is None else v for k, v in sgd.items()}
        optimizer = PyTorchSGD(PolyLR(sgd["base_lr"], total_steps, sgd["power"]), momentum=sgd["momentum"],
                               weight_decay=sgd["weight_decay"])
    weights = exit_weights or (1.0,) * NUM_EXITS
    kwargs.setdefault("jit_compile", False)
    if getattr(model, "task", "segmentation") == "pose":
        if class_weights is not None:
            raise ValueError("`class_weights` applies to segmentation; a pose model weights joints through the "
                             "dataset's target weights (sample_weight).")
        loss, metrics = MultiExitHeatmapLoss(weights), []
    else:
        loss = MultiExitLoss(weights, class_weights, ignore_label)
        metrics = [ExitMeanIoU(k, model.classes, ignore_label) for k in range(NUM_EXITS)]
    model.compile(optimizer=optimizer, loss=loss, metrics=metrics, **kwargs)
    return build_optimizer(model)


def train_anytime(build_model, dataset, *, epochs=1, steps_per_epoch=None, strategy=None, validation_data=None,
                  weights=None, verbose="auto", callbacks=None, **compile_kwargs):
    """Builds, compiles and fits an anytime model under a ``tf.distribute`` strategy.

    Args:
        build_model: a registry name (``"adpc_hrnetv2_w48"``) or a callable returning the
            (uncompiled) model; built inside the strategy scope.
        dataset: a ``tf.data.Dataset`` of ``(images, labels)`` batches (segmentation) or
            ``(images, heatmaps, target_weights)`` (pose), global batch size.
        epochs: int. Defaults to `1`.
        steps_per_epoch: int or `None`. Needed for the poly schedule when the dataset has no length.
        strategy: `None`, a strategy name or a ``tf.distribute.Strategy``
            (see ``keras_visrec.training.resolve_strategy``).
        validation_data: passed to ``fit``.
        weights: `None` or what ``weights=`` of the builders accepts, loaded into the built model
            before training — e.g. the ImageNet HRNet the paper starts from
            (``"hrnetv2_w48_imagenet_pretrained.pth"``: backbone only, exits and head stay
            initialised) or a released ADP-C file to fine-tune.
        verbose: passed to ``fit``.
        callbacks: passed to ``fit``.
        **compile_kwargs: passed to :func:`compile_anytime`.

    Returns:
        ``(model, history)``.
    """
    steps = steps_per_epoch or int(dataset.cardinality())
    if steps < 1:
        raise ValueError("`steps_per_epoch` is needed for a dataset of unknown length.")
    if not callable(build_model) and not isinstance(build_model, str):
        raise TypeError(f"`build_model` must be a registry name or a callable returning a model; "
                        f"received {type(build_model).__name__}.")
    compile_kwargs.setdefault("total_steps", steps * epochs)
    with strategy_scope(strategy):
        if isinstance(build_model, str):
            from keras_visrec.models import get_model

            model = get_model(build_model, weights=weights)
        else:
            model = build_model()
            if weights is not None:
                if not hasattr(model, "load_pretrained"):
                    raise TypeError(f"`weights=` needs an AnytimeHRNet from `build_model`; it returned "
                                    f"{type(model).__name__}.")
                model.load_pretrained(weights)
        compile_anytime(model, **compile_kwargs)
    history = model.fit(dataset, epochs=epochs, steps_per_epoch=steps_per_epoch, validation_data=validation_data,
                        verbose=verbose, callbacks=callbacks)
    return model, history

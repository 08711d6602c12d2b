"""Training ADP-C through ``model.fit``: the multi-exit loss, the poly schedule, per-exit mIoU.

The recipe of the paper (Cityscapes): SGD, momentum 0.9, weight decay 5e-4, lr 0.01 with the
poly schedule (power 0.9), class-weighted cross-entropy with ignore label 255 on logits
bilinearly upsampled to the label size, summed over the four exits with equal weights. Any
``tf.distribute`` strategy works: build and compile inside its scope (``train_anytime`` does).
"""

import keras
from keras import ops

from keras_visrec.training import strategy_scope

__all__ = ["ExitMeanIoU", "MultiExitLoss", "PolyLR", "compile_anytime", "train_anytime"]

IGNORE_LABEL = 255


def _labels(y_true):
    y_true = ops.convert_to_tensor(y_true)
    if len(y_true.shape) == 4:
        y_true = y_true[..., 0]
    return ops.cast(y_true, "int32")


def upsample_logits(logits, height, width):
    """Bilinear (half-pixel, PyTorch ``align_corners=False``) resize of logits to the label size."""
    if int(logits.shape[1]) == height and int(logits.shape[2]) == width:
        return logits
    return ops.image.resize(logits, (height, width), interpolation="bilinear")


@keras.saving.register_keras_serializable(package="keras_visrec")
class MultiExitLoss(keras.losses.Loss):
    """Weighted sum over exits of class-weighted cross-entropy, ignoring ``ignore_label``.

    Args:
        exit_weights: sequence of floats, one per exit. Defaults to equal weights `(1, 1, 1, 1)`.
        class_weights: sequence of floats (one per class) or `None`. Each exit's loss is the
            class-weighted mean over non-ignored pixels (PyTorch ``CrossEntropyLoss(weight=…)``).
        ignore_label: int. Label excluded from the loss. Defaults to `255`.
    """

    def __init__(self, exit_weights=(1.0, 1.0, 1.0, 1.0), class_weights=None, ignore_label=IGNORE_LABEL,
                 name="multi_exit_loss", **kwargs):
        super().__init__(name=name, **kwargs)
        if not exit_weights or any(float(w) < 0 for w in exit_weights):
            raise ValueError(f"`exit_weights` must be non-negative numbers; received exit_weights={exit_weights!r}.")
        self.exit_weights = tuple(float(w) for w in exit_weights)
        self.class_weights = None if class_weights is None else tuple(float(w) for w in class_weights)
        self.ignore_label = int(ignore_label)

    def call(self, y_true, y_pred):
        labels = _labels(y_true)
        if int(y_pred.shape[1]) != len(self.exit_weights):
            raise ValueError(f"`exit_weights` has {len(self.exit_weights)} entries but the model has "
                             f"{y_pred.shape[1]} exits.")
        classes = int(y_pred.shape[-1])
        if self.class_weights is not None and len(self.class_weights) != classes:
            raise ValueError(f"`class_weights` has {len(self.class_weights)} entries; the model has {classes} classes.")
        valid = ops.not_equal(labels, self.ignore_label)
        safe = ops.where(valid, labels, 0)
        weight = ops.cast(valid, "float32")
        if self.class_weights is not None:
            weight = weight * ops.take(ops.convert_to_tensor(self.class_weights, "float32"), safe)
        denominator = ops.maximum(ops.sum(weight), 1e-8)
        height, width = int(labels.shape[1]), int(labels.shape[2])
        total = 0.0
        for k, exit_weight in enumerate(self.exit_weights):
            if not exit_weight:
                continue
            logits = ops.cast(upsample_logits(y_pred[:, k], height, width), "float32")
            ce = keras.losses.sparse_categorical_crossentropy(safe, logits, from_logits=True)
            total = total + exit_weight * ops.sum(ce * weight) / denominator
        return total

    def get_config(self):
        return {**super().get_config(), "exit_weights": self.exit_weights, "class_weights": self.class_weights,
                "ignore_label": self.ignore_label}


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
class ExitMeanIoU(keras.metrics.Metric):
    """mIoU of one exit (confusion matrix over non-ignored pixels, classes with a non-empty union).

    Args:
        exit_index: int. 0-based exit.
        num_classes: int.
        ignore_label: int. Defaults to `255`.
    """

    def __init__(self, exit_index, num_classes, ignore_label=IGNORE_LABEL, name=None, **kwargs):
        super().__init__(name=name or f"exit{exit_index + 1}_miou", **kwargs)
        self.exit_index = int(exit_index)
        self.num_classes = int(num_classes)
        self.ignore_label = int(ignore_label)
        self.confusion = self.add_variable(shape=(num_classes, num_classes), initializer="zeros",
                                           name="confusion", dtype="float32")

    def update_state(self, y_true, y_pred, sample_weight=None):
        labels = _labels(y_true)
        logits = upsample_logits(y_pred[:, self.exit_index], int(labels.shape[1]), int(labels.shape[2]))
        predicted = ops.cast(ops.argmax(logits, axis=-1), "int32")
        valid = ops.not_equal(labels, self.ignore_label)
        index = ops.where(valid, labels, 0) * self.num_classes + predicted
        counts = ops.bincount(ops.reshape(index, (-1,)), weights=ops.reshape(ops.cast(valid, "float32"), (-1,)),
                              minlength=self.num_classes * self.num_classes)
        counts = ops.reshape(counts[: self.num_classes * self.num_classes], (self.num_classes, self.num_classes))
        self.confusion.assign_add(ops.cast(counts, "float32"))

    def result(self):
        return mean_iou(self.confusion)

    def reset_state(self):
        self.confusion.assign(ops.zeros_like(self.confusion))

    def get_config(self):
        return {**super().get_config(), "exit_index": self.exit_index, "num_classes": self.num_classes,
                "ignore_label": self.ignore_label}


def mean_iou(confusion):
    """mIoU from a confusion matrix (rows: labels, columns: predictions); empty classes are skipped."""
    confusion = ops.convert_to_tensor(confusion, "float32")
    hits = ops.diagonal(confusion)
    union = ops.sum(confusion, axis=0) + ops.sum(confusion, axis=1) - hits
    present = ops.cast(union > 0, "float32")
    iou = hits / ops.maximum(union, 1.0)
    return ops.sum(iou * present) / ops.maximum(ops.sum(present), 1.0)


def compile_anytime(model, *, base_lr=0.01, total_steps=1000, power=0.9, momentum=0.9, weight_decay=5e-4,
                    exit_weights=None, class_weights=None, ignore_label=IGNORE_LABEL, optimizer=None, **kwargs):
    """Compiles ``model`` with SGD + :class:`PolyLR`, :class:`MultiExitLoss` and per-exit mIoU.

    ``optimizer`` replaces the SGD (the schedule is not applied then). Extra ``kwargs`` go to
    ``model.compile``.
    """
    if optimizer is None:
        optimizer = keras.optimizers.SGD(PolyLR(base_lr, total_steps, power), momentum=momentum,
                                         weight_decay=weight_decay)
    exits = 4
    kwargs.setdefault("jit_compile", False)  # XLA on CPU compiles for minutes and runs slower
    model.compile(
        optimizer=optimizer,
        loss=MultiExitLoss(exit_weights or (1.0,) * exits, class_weights, ignore_label),
        metrics=[ExitMeanIoU(k, model.classes, ignore_label) for k in range(exits)],
        **kwargs,
    )
    return model


def train_anytime(build_model, dataset, *, epochs=1, steps_per_epoch=None, strategy=None, validation_data=None,
                  verbose="auto", **compile_kwargs):
    """Builds, compiles and fits an anytime model under a ``tf.distribute`` strategy.

    Args:
        build_model: callable returning the (uncompiled) model; called inside the strategy scope.
        dataset: a ``tf.data.Dataset`` of ``(images, labels)`` batches (global batch size).
        epochs: int. Defaults to `1`.
        steps_per_epoch: int or `None`. Needed for the poly schedule when the dataset has no length.
        strategy: `None`, a strategy name or a ``tf.distribute.Strategy``
            (see ``keras_visrec.training.resolve_strategy``).
        **compile_kwargs: passed to :func:`compile_anytime`.

    Returns:
        ``(model, history)``.
    """
    steps = steps_per_epoch or int(dataset.cardinality())
    if steps < 1:
        raise ValueError("`steps_per_epoch` is needed for a dataset of unknown length.")
    compile_kwargs.setdefault("total_steps", steps * epochs)
    with strategy_scope(strategy):
        model = build_model()
        compile_anytime(model, **compile_kwargs)
    history = model.fit(dataset, epochs=epochs, steps_per_epoch=steps_per_epoch,
                        validation_data=validation_data, verbose=verbose)
    return model, history

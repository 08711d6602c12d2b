"""The training arms of "Rethinking the Value of Network Pruning", as functions over tf.data.

* **baseline** — train the large model (optionally with network slimming's BN sparsity term);
* **fine-tune** (:func:`fine_tune_pruned`) — the pruned model with its inherited weights, 40
  epochs at lr 0.001;
* **Scratch-E** — the pruned *architecture*, freshly initialised, trained as long as the baseline;
* **Scratch-B** — the same with the baseline's compute budget: ``epochs × FLOPs(full) /
  FLOPs(pruned)``, learning-rate steps stretched likewise (ImageNet: at most 2× the epochs).

Defaults are the paper's CIFAR recipe (:meth:`TrainConfig.paper`: 160 epochs, batch 64, SGD
momentum 0.9, lr 0.1 divided by 10 at 50 % and 75 %, weight decay 1e-4, pad-4 crop + flip);
:meth:`TrainConfig.cpu` is a scaled-down setting for CPU runs. Weight decay is applied as in
PyTorch's SGD (an L2 term ``wd/2·Σw²`` on every trainable variable, not Keras' decoupled form).

Every arm takes ``strategy`` (a ``tf.distribute.Strategy`` or a name for
:func:`keras_visrec.training.resolve_strategy`): the model is re-created inside its scope, so
the same code runs on one CPU, on several GPUs or across workers.
"""

import dataclasses

import keras
import numpy as np

from keras_visrec.flops import count_flops
from keras_visrec.pruning.base import iter_layers
from keras_visrec.training import build_optimizer, resolve_strategy

__all__ = ["ArmResult", "TrainConfig", "cifar_datasets", "fine_tune", "fine_tune_pruned", "make_dataset",
           "scratch_b_epochs", "scratch_model", "source_datasets", "train_baseline", "train_scratch"]


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """Training hyperparameters of every arm.

    Attributes:
        epochs: int. Baseline and Scratch-E epochs (160).
        batch_size: int. Global batch size (64).
        learning_rate: float. Initial SGD learning rate (0.1).
        momentum: float. SGD momentum (0.9).
        weight_decay: float. PyTorch-style coupled weight decay (1e-4).
        milestones: tuple of float. Fractions of training where the lr is divided (0.5, 0.75).
        lr_factor: float. Multiplier at each milestone (0.1).
        finetune_epochs: int. Fine-tuning epochs (40).
        finetune_learning_rate: float. Constant fine-tuning lr (0.001).
        scratch_b_cap: float or `None`. Cap on Scratch-B's epoch multiplier (ImageNet: 2.0;
            CIFAR: none).
        augment: bool. Pad-4 random crop (and flips when ``flip``) on training batches.
        flip: bool. Random horizontal flips (off for digits, which flips do not preserve).
    """

    epochs: int = 160
    batch_size: int = 64
    learning_rate: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 1e-4
    milestones: tuple = (0.5, 0.75)
    lr_factor: float = 0.1
    finetune_epochs: int = 40
    finetune_learning_rate: float = 1e-3
    scratch_b_cap: float = None
    augment: bool = True
    flip: bool = True

    def __post_init__(self):
        for field in ("epochs", "batch_size", "finetune_epochs"):
            value = getattr(self, field)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"TrainConfig.{field} must be a positive integer; received {value!r}.")
        if not all(0.0 < m < 1.0 for m in self.milestones):
            raise ValueError(f"TrainConfig.milestones must be fractions in (0, 1); received {self.milestones!r}.")

    @classmethod
    def paper(cls, **overrides):
        """The paper's CIFAR recipe."""
        return cls(**overrides)

    @classmethod
    def cpu(cls, **overrides):
        """A scaled-down recipe for CPU runs (3 epochs, fine-tune 1 epoch)."""
        settings = dict(epochs=3, batch_size=64, learning_rate=0.05, finetune_epochs=1, finetune_learning_rate=0.01)
        settings.update(overrides)
        return cls(**settings)


@dataclasses.dataclass(frozen=True)
class ArmResult:
    """One trained arm: final test accuracy and loss, epochs run, cost of the architecture."""

    arm: str
    accuracy: float
    loss: float
    epochs: int
    macs: int
    params: int
    history: dict


def make_dataset(images, labels, *, batch_size=64, training=False, augment=True, flip=True, seed=0):
    """A ``tf.data.Dataset`` of (image, label) batches with the paper's augmentation.

    Args:
        images: array (N, H, W, 3), 0–255.
        labels: int array (N,).
        batch_size: int. Defaults to `64`.
        training: bool. Shuffle and augment (pad 4 → random crop, random flip). Defaults to `False`.
        augment: bool. Augment training batches. Defaults to `True`.
        flip: bool. Random horizontal flips when augmenting. Defaults to `True`.
        seed: int. Shuffle / augmentation seed. Defaults to `0`.
    """
    import tensorflow as tf

    data = tf.data.Dataset.from_tensor_slices((np.asarray(images, "float32"), np.asarray(labels, "int32")))
    return _pipeline(data, len(labels), tuple(images.shape[1:]), batch_size=batch_size, training=training,
                     augment=augment, flip=flip, seed=seed)


def _pipeline(data, count, shape, *, batch_size, training, augment, flip, seed):
    """Shuffles, augments (pad 4 → random crop, flip) and batches (image, label) examples."""
    import tensorflow as tf

    data = data.map(lambda image, label: (tf.cast(image, tf.float32), tf.cast(label, tf.int32)))
    if training:
        data = data.shuffle(count, seed=seed, reshuffle_each_iteration=True)
        if augment:
            tf.random.set_seed(seed)

            def crop_flip(image, label):
                padded = tf.pad(image, [[4, 4], [4, 4], [0, 0]])
                crop = tf.image.stateless_random_crop(padded, shape,
                                                      seed=tf.random.uniform((2,), 0, 2 ** 31 - 1, tf.int32))
                if flip:
                    crop = tf.image.random_flip_left_right(crop)
                return crop, label

            data = data.map(crop_flip, num_parallel_calls=tf.data.AUTOTUNE)
    return data.batch(batch_size).prefetch(tf.data.AUTOTUNE)


def source_datasets(train_source, test_source, *, image_size=None, batch_size=64, flip=True, seed=0,
                    max_examples=None):
    """``(train, test)`` batched datasets from two :class:`~keras_visrec.recipe.datasets.ImageSource`\ s.

    Images become float32 0–255 at ``image_size`` (bilinear resize when they differ); the train
    split is shuffled and augmented as :func:`make_dataset` does.

    Args:
        train_source, test_source: ``ImageSource`` (from ``load_image_source``: a folder, a
            tfds name or digits).
        image_size: int or None. Side of the square images; None keeps them as they are
            (they must then share one size). Defaults to `None`.
        batch_size, flip, seed: as :func:`make_dataset`.
        max_examples: int or None. Use at most this many training examples. Defaults to `None`.
    """
    import tensorflow as tf

    if train_source.num_classes != test_source.num_classes:
        raise ValueError(f"{train_source.description} has {train_source.num_classes} classes but "
                         f"{test_source.description} has {test_source.num_classes}.")

    def prepare(source, limit):
        data = source.dataset
        count = source.num_examples
        if count is None and int(data.cardinality()) >= 0:  # e.g. tfds' own count when its info has none
            count = int(data.cardinality())
        if limit is not None:
            data = data.take(limit)
            count = limit if count is None else min(count, limit)
        if image_size is not None:
            size = (int(image_size), int(image_size))
            data = data.map(lambda image, label: (tf.image.resize(tf.cast(image, tf.float32), size), label))
        if count is not None:
            data = data.apply(tf.data.experimental.assert_cardinality(count))
        return data, count

    train, count = prepare(train_source, max_examples)
    test, test_count = prepare(test_source, None)
    if count is None:
        raise ValueError(f"{train_source.description}: the number of examples is unknown; prepare the dataset first.")
    shape = (int(image_size), int(image_size), 3) if image_size is not None else tuple(train.element_spec[0].shape)
    if any(d is None for d in shape):
        raise ValueError(f"{train_source.description} holds images of different sizes; give `image_size`.")
    common = dict(batch_size=batch_size, augment=True, flip=flip, seed=seed)
    return (_pipeline(train, count, shape, training=True, **common),
            _pipeline(test, test_count or 1, shape, training=False, **common))


def cifar_datasets(name="cifar10", *, batch_size=64, data_dir=None, download=False, flip=True, seed=0):
    """CIFAR-10/100 from tensorflow-datasets as ``(train, test)`` batched datasets.

    Args:
        name: str. `"cifar10"` or `"cifar100"`. Defaults to `"cifar10"`.
        batch_size: int. Defaults to `64`.
        data_dir: str or `None`. tensorflow-datasets data directory.
        download: bool. Let tensorflow-datasets download when the data is missing. Defaults to
            `False`.
        flip, seed: as :func:`make_dataset`.
    """
    from keras_visrec.recipe.datasets import load_image_source

    if name not in ("cifar10", "cifar100"):
        raise ValueError(f"`name` must be 'cifar10' or 'cifar100'; received name={name!r}.")
    train, test = (load_image_source(name, split, data_dir, download=download) for split in ("train", "test"))
    return source_datasets(train, test, image_size=32, batch_size=batch_size, flip=flip, seed=seed)


def scratch_b_epochs(epochs, macs_full, macs_pruned, cap=None):
    """Scratch-B's epochs: ``epochs × FLOPs(full) / FLOPs(pruned)``, at most ``cap × epochs``."""
    if macs_pruned <= 0 or macs_full <= 0:
        raise ValueError(f"FLOP counts must be positive; received {macs_full} and {macs_pruned}.")
    ratio = macs_full / macs_pruned
    if cap is not None:
        ratio = min(ratio, float(cap))
    return max(1, int(round(epochs * ratio)))


def scratch_model(pruned, seed=0):
    """The pruned architecture with fresh initial weights (same layer configs and names)."""
    keras.utils.set_random_seed(seed)
    return keras.models.clone_model(pruned)


def _outputs_logits(model):
    activation = getattr(model.layers[-1], "activation", None)
    return not (activation is not None and getattr(activation, "__name__", "") == "softmax")


class _Penalty(keras.regularizers.Regularizer):
    """``l2·Σw² + l1·Σ|w|``: PyTorch's coupled weight decay (l2 = wd/2), plus slimming's term."""

    def __init__(self, l2=0.0, l1=0.0):
        self.l2, self.l1 = float(l2), float(l1)

    def __call__(self, x):
        total = 0.0
        if self.l2:
            total += self.l2 * keras.ops.sum(keras.ops.square(x))
        if self.l1:
            total += self.l1 * keras.ops.sum(keras.ops.abs(x))
        return total

    def get_config(self):
        return {"l2": self.l2, "l1": self.l1}


def _prepare(model, strategy, *, fresh, seed, weight_decay, bn_sparsity):
    """A copy of ``model`` made inside the strategy's scope, with the training penalties set."""
    with strategy.scope():
        keras.utils.set_random_seed(seed)
        copy = keras.models.clone_model(model)
        if not fresh:
            copy.set_weights(model.get_weights())
        for layer in iter_layers(copy):
            gamma = getattr(layer, "gamma", None) if isinstance(layer, keras.layers.BatchNormalization) else None
            for variable in layer.trainable_weights:
                l1 = bn_sparsity if (bn_sparsity and variable is gamma) else 0.0
                if weight_decay or l1:
                    variable.regularizer = _Penalty(weight_decay / 2.0, l1)
    return copy


def _fit(model, train, test, *, strategy, epochs, schedule, momentum, arm, verbose):
    with strategy.scope():
        optimizer = keras.optimizers.SGD(learning_rate=schedule, momentum=momentum)
        model.compile(optimizer=optimizer,
                      loss=keras.losses.SparseCategoricalCrossentropy(from_logits=_outputs_logits(model)),
                      metrics=["accuracy"])
        build_optimizer(model)
    history = model.fit(train, epochs=epochs, validation_data=test, verbose=verbose)
    loss, accuracy = model.evaluate(test, verbose=0)
    params = int(sum(np.prod(w.shape) for w in model.trainable_weights))
    return model, ArmResult(arm, float(accuracy), float(loss), int(epochs), count_flops(model).total, params,
                            {k: [float(v) for v in vs] for k, vs in history.history.items()})


def _step_schedule(config, epochs, steps_per_epoch):
    total = epochs * steps_per_epoch
    boundaries = [max(1, int(total * m)) for m in config.milestones]
    values = [config.learning_rate * config.lr_factor ** i for i in range(len(boundaries) + 1)]
    return keras.optimizers.schedules.PiecewiseConstantDecay(boundaries, values)


def _steps(dataset):
    steps = int(dataset.cardinality())
    if steps < 1:
        raise ValueError("The training dataset needs a known length (use dataset.apply(tf.data.experimental."
                         "assert_cardinality(n))).")
    return steps


def train_baseline(model, train, test, config=None, *, strategy=None, bn_sparsity=0.0, seed=0, verbose=0):
    """Trains the large model from scratch; returns ``(trained model, ArmResult)``.

    Args:
        model: keras.Model. Its architecture (weights are re-initialised).
        train, test: tf.data.Dataset of (image, label) batches; ``train`` of known length.
        config: :class:`TrainConfig`. Defaults to the paper's recipe.
        strategy: tf.distribute.Strategy, a name or `None`. Defaults to the default strategy.
        bn_sparsity: float. Network slimming's ``s`` (0: plain training). Defaults to `0.0`.
        seed: int. Initialisation seed. Defaults to `0`.
        verbose: int. Keras fit verbosity (1: progress bar). Defaults to `0`.
    """
    config = config or TrainConfig.paper()
    strategy = resolve_strategy(strategy)
    net = _prepare(model, strategy, fresh=True, seed=seed, weight_decay=config.weight_decay, bn_sparsity=bn_sparsity)
    schedule = _step_schedule(config, config.epochs, _steps(train))
    return _fit(net, train, test, strategy=strategy, epochs=config.epochs, schedule=schedule,
                momentum=config.momentum, arm="baseline", verbose=verbose)


def fine_tune_pruned(pruned, train, test, config=None, *, strategy=None, seed=0, verbose=0):
    """The fine-tune arm: trains a pruned model from its inherited weights; returns ``(model, ArmResult)``.

    40 epochs at a constant lr 0.001 by default (``config.finetune_epochs``,
    ``config.finetune_learning_rate``). Not to be confused with :func:`keras_visrec.recipe.finetune`,
    the ConvNeXt transfer-learning recipe.

    Args:
        pruned: keras.Model. The pruned model (its weights are the starting point).
        train, test, config, strategy, seed, verbose: as :func:`train_baseline`.
    """
    config = config or TrainConfig.paper()
    strategy = resolve_strategy(strategy)
    net = _prepare(pruned, strategy, fresh=False, seed=seed, weight_decay=config.weight_decay, bn_sparsity=0.0)
    return _fit(net, train, test, strategy=strategy, epochs=config.finetune_epochs,
                schedule=config.finetune_learning_rate, momentum=config.momentum, arm="fine-tune", verbose=verbose)


def fine_tune(pruned, train, test, config=None, *, strategy=None, seed=0, verbose=0):
    """Deprecated name of :func:`fine_tune_pruned` (kept one release; too close to ``recipe.finetune``)."""
    import warnings

    warnings.warn("`keras_visrec.pruning.fine_tune` is deprecated and will be removed in the next release; use "
                  "`fine_tune_pruned` (the pruning study's fine-tune arm).", DeprecationWarning, stacklevel=2)
    return fine_tune_pruned(pruned, train, test, config, strategy=strategy, seed=seed, verbose=verbose)


def train_scratch(pruned, train, test, config=None, *, budget="E", full_macs=None, strategy=None, seed=0,
                  verbose=0):
    """Trains the pruned architecture from a fresh initialisation (Scratch-E or Scratch-B).

    Args:
        pruned: keras.Model. The pruned architecture (its weights are not used).
        train, test, config, strategy, seed, verbose: as :func:`train_baseline`.
        budget: str. `"E"` (the baseline's epochs) or `"B"` (the baseline's FLOPs budget:
            epochs × FLOPs(full)/FLOPs(pruned), lr steps stretched). Defaults to `"E"`.
        full_macs: int. MACs of the unpruned model; required for `"B"`.
    """
    if budget not in ("E", "B"):
        raise ValueError(f"`budget` must be 'E' or 'B'; received budget={budget!r}.")
    config = config or TrainConfig.paper()
    epochs = config.epochs
    if budget == "B":
        if full_macs is None:
            raise ValueError("`full_macs` (MACs of the unpruned model) is needed for Scratch-B.")
        epochs = scratch_b_epochs(config.epochs, full_macs, count_flops(pruned).total, config.scratch_b_cap)
    strategy = resolve_strategy(strategy)
    net = _prepare(pruned, strategy, fresh=True, seed=seed, weight_decay=config.weight_decay, bn_sparsity=0.0)
    schedule = _step_schedule(config, epochs, _steps(train))
    return _fit(net, train, test, strategy=strategy, epochs=epochs, schedule=schedule, momentum=config.momentum,
                arm=f"scratch-{budget}", verbose=verbose)

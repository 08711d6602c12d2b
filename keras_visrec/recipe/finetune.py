"""Transfer a ConvNeXt to a new dataset with the paper's recipe, resumably.

``finetune`` builds (or takes) the model, replaces the head when the class count changes
(``head_init_scale``), compiles AdamW with layer-wise decay, warmup + cosine, label smoothing,
optional EMA, and runs ``model.fit`` with RandAugment / random erasing / Mixup / CutMix in
``tf.data``, under a ``tf.distribute`` strategy and an optional mixed-precision policy.

Checkpoints: after every epoch the weights *and* the optimizer state (step counter, Adam
moments, EMA) go to ``ckpt-EEEE.weights.h5`` through a temporary file and ``os.replace``; then
``state.json`` (also replaced atomically) points at it. A run started again on the same
``output_dir`` loads the newest checkpoint and continues at the next epoch and the saved
optimizer step; a directory written for another model is refused. An interruption inside an
epoch repeats that epoch from the last checkpoint.
"""

import dataclasses
import glob
import hashlib
import json
import math
import os
import shutil
import tempfile

import keras
import tensorflow as tf

from keras_visrec.files import atomic_path, write_atomic
from keras_visrec.recipe.augment import MixupOrCutMix, recipe_loss, train_image_augmenter
from keras_visrec.recipe.datasets import load_image_source
from keras_visrec.recipe.head import replace_head
from keras_visrec.recipe.optim import _check_layer_decay, convnext_adamw
from keras_visrec.recipe.schedule import WarmupCosine
from keras_visrec.recipe.transforms import eval_transform
from keras_visrec.training import resolve_strategy

__all__ = ["FinetuneResult", "MIXED_PRECISION_CHOICES", "build_model", "finetune", "model_fingerprint"]

MIXED_PRECISION_CHOICES = (None, "mixed_bfloat16", "mixed_float16")
_STATE = "state.json"


@dataclasses.dataclass
class FinetuneResult:
    """What `finetune` did.

    Attributes:
        model: the trained `keras.Model` (EMA weights when EMA was on).
        history: dict metric -> list over *all* epochs, resumed ones included.
        initial_epoch: int. Epoch this call started at (0 unless resumed).
        start_step: int. Optimizer step this call started at.
        final_step: int. Optimizer step at the end.
        output_dir: str.
    """

    model: keras.Model
    history: dict
    initial_epoch: int
    start_step: int
    final_step: int
    output_dir: str


def build_model(model="convnext_tiny", *, classes, image_size=224, weights=None, drop_path_rate=0.1,
                head_init_scale=0.001, depths=None, dims=None, weights_classes=1000):
    """The model to fine-tune, with a `classes`-way head that outputs logits.

    Args:
        model: a registry name (``keras_visrec.list_models()``), `"convnext"` with `depths`
            and `dims` for a custom ConvNeXt, or a built `keras.Model` (returned with its
            head replaced when its class count differs).
        classes: int. Classes of the target dataset.
        image_size: int. Training resolution.
        weights: None or a weights file accepted by the builders.
        drop_path_rate: float. Stochastic depth for the builder. Defaults to `0.1`.
        head_init_scale: float. Scale of the new head's initial weights. Defaults to `0.001`.
        depths, dims: stage depths / widths for `model="convnext"`.
        weights_classes: int. Classes of the head stored in `weights` (1000 for ImageNet-1k
            checkpoints). Defaults to `1000`.
    """
    if isinstance(model, keras.Model):
        built = model
    else:
        from keras_visrec.convnext import ConvNeXt
        from keras_visrec.models import get_model

        common = dict(input_shape=(image_size, image_size, 3), weights=weights, drop_path_rate=drop_path_rate,
                      classifier_activation=None)
        if weights is None:  # a fresh head of the right size, initialised at head_init_scale
            common.update(classes=classes, head_init_scale=head_init_scale)
        else:
            common.update(classes=weights_classes)
        if model == "convnext":
            if depths is None or dims is None:
                raise ValueError("`model='convnext'` needs `depths` and `dims` (e.g. depths=(1, 1, 1, 1), dims=(16, 32, 64, 128)).")
            built = ConvNeXt(depths, dims, **common)
        else:
            built = get_model(model, **common)
    if built.output_shape[-1] != classes:
        built = replace_head(built, classes, head_init_scale=head_init_scale)
    return built


def model_fingerprint(model):
    """A short hash of a model's variables (paths and shapes): equal for the same architecture."""
    items = sorted((v.path, tuple(v.shape)) for v in model.weights)
    return hashlib.sha256(repr(items).encode()).hexdigest()[:16]


def _is_chief(strategy):
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or not getattr(resolver, "task_type", None):
        return True
    task_type, task_id = resolver.task_type, resolver.task_id
    has_chief = "chief" in (resolver.cluster_spec().as_dict() or {})
    return task_type == "chief" or (not has_chief and task_type == "worker" and task_id == 0)


class _AtomicCheckpoint(keras.callbacks.Callback):
    """Saves weights + optimizer state per epoch (temp file + os.replace), then ``state.json``."""

    def __init__(self, output_dir, meta, history, chief):
        super().__init__()
        self.output_dir, self.meta, self.history, self.chief = output_dir, meta, history, chief

    def on_epoch_end(self, epoch, logs=None):
        for key, value in (logs or {}).items():
            self.history.setdefault(key, []).append(float(value))
        name = f"ckpt-{epoch + 1:04d}.weights.h5"
        if not self.chief:  # every worker takes part in reading distributed variables
            scratch = tempfile.mkdtemp(prefix="worker-ckpt-")
            self.model.save_weights(os.path.join(scratch, name))
            shutil.rmtree(scratch, ignore_errors=True)
            return
        directory = self.output_dir
        with atomic_path(os.path.join(directory, name)) as temporary:
            self.model.save_weights(temporary)
        step = int(keras.ops.convert_to_numpy(self.model.optimizer.iterations))
        state = {**self.meta, "epoch": epoch + 1, "step": step, "checkpoint": name, "history": self.history}
        write_atomic(os.path.join(directory, _STATE), json.dumps(state, indent=1))
        for old in glob.glob(os.path.join(directory, "ckpt-*.weights.h5")):
            if os.path.basename(old) != name:
                os.remove(old)


def _read_state(output_dir, meta):
    path = os.path.join(output_dir, _STATE)
    if not os.path.exists(path):
        return None
    try:
        with open(path) as handle:
            state = json.load(handle)
    except (OSError, json.JSONDecodeError) as error:
        raise ValueError(f"Resume state {path!r} is unreadable: {error}") from error
    if state.get("fingerprint") != meta["fingerprint"] or state.get("classes") != meta["classes"]:
        raise ValueError(
            f"Resume directory {output_dir!r} holds a run of model {state.get('model_name')!r} "
            f"({state.get('classes')} classes, fingerprint {state.get('fingerprint')}), but this run builds "
            f"{meta['model_name']!r} ({meta['classes']} classes, fingerprint {meta['fingerprint']}). "
            "Use another output directory, or the same model and dataset."
        )
    if not os.path.exists(os.path.join(output_dir, state["checkpoint"])):
        raise ValueError(f"Resume state {path!r} names {state['checkpoint']!r}, which is missing.")
    return state


def _wants_normalization(model):
    return not any(layer.name.endswith("_preprocessing") for layer in model.layers)


def _outputs_logits(model):
    activation = getattr(model.get_layer("predictions"), "activation", None) if any(
        layer.name == "predictions" for layer in model.layers) else None
    return activation is None or getattr(activation, "__name__", "") == "linear"


def _train_pipeline(source, num_classes, image_size, batch_size, augment, mixing, normalize, seed):
    dataset = source.dataset.shuffle(min(source.num_examples, 10_000), seed=seed, reshuffle_each_iteration=True)

    def prepare(image, label):
        x = augment(image)
        if normalize:
            x = _normalize(x)
        return x, tf.one_hot(label, num_classes)

    dataset = dataset.map(prepare, num_parallel_calls=tf.data.AUTOTUNE).batch(batch_size)
    if mixing is not None:
        dataset = dataset.map(mixing, num_parallel_calls=tf.data.AUTOTUNE)
    return dataset.prefetch(tf.data.AUTOTUNE)


def _normalize(x):
    """ImageNet mean/std on 0–255 float pixels (for models without in-model preprocessing)."""
    from keras_visrec.layers.preprocessing import IMAGENET_MEAN, IMAGENET_STD

    return (x / 255.0 - tf.constant(IMAGENET_MEAN)) / tf.constant(IMAGENET_STD)


def _val_pipeline(source, num_classes, image_size, batch_size, normalize):
    def prepare(image, label):
        return eval_transform(image, image_size, normalize=normalize), tf.one_hot(label, num_classes)

    return source.dataset.map(prepare, num_parallel_calls=tf.data.AUTOTUNE).batch(batch_size).prefetch(tf.data.AUTOTUNE)


def finetune(model, data, *, output_dir, val_data=None, weights=None, classes=None, image_size=224,
             epochs=30, batch_size=32, learning_rate=5e-5, min_learning_rate=1e-6, warmup_epochs=0,
             weight_decay=1e-8, layer_decay=0.8, drop_path_rate=0.1, head_init_scale=0.001,
             label_smoothing=0.1, mixup=0.8, cutmix=1.0, mix_prob=1.0, rand_augment=True,
             random_erasing=0.25, crop_scale=(0.08, 1.0), ema=None, strategy=None, mixed_precision=None,
             train_split="train", val_split="validation", data_dir=None, manual_dir=None, depths=None,
             dims=None, weights_classes=1000, seed=0, verbose=1, callbacks=()):
    """Fine-tunes a ConvNeXt on an image folder or a tfds dataset with the paper's recipe.

    Defaults follow the official 22k → 1k fine-tuning (AdamW lr 5e-5, weight decay 1e-8, layer
    decay 0.8, head init scale 0.001, label smoothing 0.1, Mixup 0.8 / CutMix 1.0, RandAugment
    m9 n2, random erasing 0.25, cosine to 1e-6); scale `learning_rate` with your batch size.

    Args:
        model: registry name, `"convnext"` (with `depths`, `dims`) or a `keras.Model`.
        data: image folder path or tfds name of the training data.
        output_dir: str. Checkpoints and ``state.json``; an existing run there is resumed.
        val_data: image folder or tfds name for validation (tfds: `data` with `val_split`
            when `None` and `data` is a tfds name; no validation for folders when `None`).
        weights: weights file for the registry builder.
        classes: int or None. Must equal the dataset's class count when given.
        image_size: int. Training and evaluation side. Defaults to `224`.
        epochs, batch_size: training length and global batch size.
        learning_rate, min_learning_rate, warmup_epochs: `WarmupCosine` schedule.
        weight_decay, layer_decay: AdamW settings (`layer_decay` in (0, 1]; 1 turns LLRD off).
        drop_path_rate, head_init_scale: model settings for built models.
        label_smoothing, mixup, cutmix, mix_prob, rand_augment, random_erasing, crop_scale:
            augmentation (`mixup=0`, `cutmix=0` turn those off; `crop_scale=None` skips the
            random crop).
        ema: float or None. EMA momentum of the weights (e.g. 0.9999); `None` turns EMA off.
        strategy: `None`, `"default"`, `"mirrored"`, `"multiworker"` (from ``TF_CONFIG``) or a
            ``tf.distribute.Strategy``.
        mixed_precision: `None`, `"mixed_bfloat16"` or `"mixed_float16"`.
        train_split, val_split, data_dir, manual_dir: tfds options.
        weights_classes: head size stored in `weights`. Defaults to `1000`.
        seed: int. Seeds shuffling, augmentation and the new head.
        verbose: int. Keras progress output (1: progress bar).
        callbacks: extra Keras callbacks.

    Returns:
        A `FinetuneResult`.

    Examples:

    >>> result = finetune("convnext_tiny", "flowers/", weights="convnext_tiny.keras",
    ...                   output_dir="runs/flowers", epochs=30, batch_size=64, learning_rate=1e-4)
    """
    _check_layer_decay(layer_decay)
    if mixed_precision not in MIXED_PRECISION_CHOICES:
        raise ValueError(f"`mixed_precision` must be one of {MIXED_PRECISION_CHOICES}; received {mixed_precision!r}.")
    for name, value in (("epochs", epochs), ("batch_size", batch_size)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"`{name}` must be a positive integer; received {name}={value!r}.")
    train_source = load_image_source(data, train_split, data_dir, manual_dir)
    if train_source.num_examples is None:
        raise ValueError(f"{train_source.description}: tensorflow-datasets does not report its size; prepare it first.")
    num_classes = train_source.num_classes
    if classes is not None and classes != num_classes:
        raise ValueError(
            f"`classes`={classes} disagrees with the dataset: {train_source.description} has {num_classes} classes."
        )
    if isinstance(model, keras.Model) and model.output_shape[-1] != num_classes and not any(
            layer.name.endswith("_head_dense") for layer in model.layers):
        raise ValueError(
            f"The model's output has {model.output_shape[-1]} classes but {train_source.description} has "
            f"{num_classes}, and the model has no '{{name}}_head_dense' layer to replace."
        )
    if val_data is None and not os.path.isdir(os.fspath(data)):
        val_source = load_image_source(data, val_split, data_dir, manual_dir)
    elif val_data is not None:
        val_source = load_image_source(val_data, val_split, data_dir, manual_dir)
    else:
        val_source = None
    if val_source is not None and val_source.num_classes != num_classes:
        raise ValueError(
            f"Validation data {val_source.description} has {val_source.num_classes} classes; "
            f"training data {train_source.description} has {num_classes}."
        )

    strategy = resolve_strategy(strategy)
    previous_policy = keras.config.dtype_policy()
    if mixed_precision:
        keras.mixed_precision.set_dtype_policy(mixed_precision)
    try:
        with strategy.scope():
            net = build_model(model, classes=num_classes, image_size=image_size, weights=weights,
                              drop_path_rate=drop_path_rate, head_init_scale=head_init_scale,
                              depths=depths, dims=dims, weights_classes=weights_classes)
            steps_per_epoch = math.ceil(train_source.num_examples / batch_size)
            total = steps_per_epoch * epochs
            warmup = min(int(warmup_epochs * steps_per_epoch), total - 1)
            schedule = WarmupCosine(learning_rate, total, warmup_steps=warmup, end=min_learning_rate)
            optimizer = convnext_adamw(net, learning_rate=schedule, weight_decay=weight_decay,
                                       layer_decay=layer_decay, use_ema=ema is not None,
                                       ema_momentum=ema if ema is not None else 0.99)
            net.compile(optimizer=optimizer, loss=recipe_loss(label_smoothing, from_logits=_outputs_logits(net)),
                        metrics=[keras.metrics.CategoricalAccuracy(name="accuracy"),
                                 keras.metrics.TopKCategoricalAccuracy(k=min(5, num_classes), name="top5")])
            net.optimizer.build(net.trainable_variables)

            meta = {"model_name": net.name, "fingerprint": model_fingerprint(net), "classes": num_classes,
                    "image_size": image_size}
            os.makedirs(output_dir, exist_ok=True)
            state = _read_state(output_dir, meta)
            history, initial_epoch = {}, 0
            if state is not None:
                net.load_weights(os.path.join(output_dir, state["checkpoint"]))
                history, initial_epoch = state.get("history", {}), int(state["epoch"])
            start_step = int(keras.ops.convert_to_numpy(net.optimizer.iterations))

        normalize = _wants_normalization(net)
        augment = train_image_augmenter(image_size, crop_scale=crop_scale, rand_augment=rand_augment,
                                        random_erasing=random_erasing, seed=seed)
        mixing = MixupOrCutMix(mixup, cutmix, prob=mix_prob, seed=seed) if (mixup or cutmix) and mix_prob else None
        train = _train_pipeline(train_source, num_classes, image_size, batch_size, augment, mixing, normalize, seed)
        val = None if val_source is None else _val_pipeline(val_source, num_classes, image_size, batch_size, normalize)

        checkpoint = _AtomicCheckpoint(output_dir, meta, history, _is_chief(strategy))
        all_callbacks = [checkpoint, *callbacks]
        if ema is not None and val is not None:
            all_callbacks.insert(0, keras.callbacks.SwapEMAWeights(swap_on_epoch=False))
        if initial_epoch < epochs:
            net.fit(train, validation_data=val, epochs=epochs, initial_epoch=initial_epoch,
                    callbacks=all_callbacks, verbose=verbose)
        final_step = int(keras.ops.convert_to_numpy(net.optimizer.iterations))
    finally:
        keras.mixed_precision.set_dtype_policy(previous_policy)
    return FinetuneResult(net, checkpoint.history, initial_epoch, start_step, final_step, os.fspath(output_dir))

"""Transfer a ConvNeXt to a new dataset with the paper's recipe, resumably — even after SIGKILL.

``finetune`` builds (or takes) the model, replaces the head when the class count changes
(``head_init_scale``), compiles AdamW with layer-wise decay, warmup + cosine, label smoothing,
optional EMA, and runs ``model.fit`` with RandAugment / random erasing / Mixup / CutMix in
``tf.data``, under a ``tf.distribute`` strategy and an optional mixed-precision policy.

A run directory (``output_dir``) holds::

    state.json                   the manifest, written last: what the run is (model fingerprint,
                                 recipe, data), where it is (epoch, step) and its checkpoint's files
                                 with their sizes and sha256
    ckpt-{step:08d}.weights.h5   weights and optimizer state (step counter, AdamW moments, EMA)
    ckpt-{step:08d}.state.npz    the rest: the model's random-generator states (drop path) and the
                                 epoch's running metrics
    .lock                        held while a process trains here (a second one is refused)

A checkpoint is written after every epoch and, with ``checkpoint_steps``, every that many steps.
Each file goes to a temporary name, is flushed to disk and renamed; the manifest follows, then the
previous checkpoint is deleted. A process killed at any instant thus leaves the old manifest with
its complete files or the new one with its complete files. Started again with the same arguments,
``finetune`` reads the manifest, checks its files' sizes and hashes, removes leftovers (temporary
files, a checkpoint no manifest names) and continues at the saved step — in the middle of an epoch
if that is where it stopped. A directory written for another model or another recipe is refused
with one error naming what differs.

Resuming mid-epoch reproduces the uninterrupted run because everything random is a function of
(seed, epoch, position): an epoch's order is a shuffle seeded by (seed, epoch); each image's crop,
flip, RandAugment and erasing, and each batch's Mixup/CutMix, draw stateless seeds from their
position (:mod:`keras_visrec.recipe.augment`); the finished part of an epoch is skipped before
augmentation; the drop-path generators, the optimizer and the running metrics come back from the
checkpoint. With ``deterministic=True`` (TensorFlow's op determinism) on CPU a run killed and
resumed ends with the uninterrupted run's weights bit for bit.
"""

import contextlib
import dataclasses
import glob
import hashlib
import json
import math
import os
import shutil
import tempfile

import keras
import numpy as np
import tensorflow as tf

from keras_visrec.files import LockTimeout, atomic_path, exclusive_lock, fsync_path, write_atomic
from keras_visrec.recipe.augment import MixupOrCutMix, recipe_loss, train_image_augmenter
from keras_visrec.recipe.datasets import load_image_source
from keras_visrec.recipe.head import replace_head
from keras_visrec.recipe.optim import _check_layer_decay, convnext_adamw
from keras_visrec.recipe.schedule import WarmupCosine
from keras_visrec.recipe.transforms import eval_transform
from keras_visrec.training import build_optimizer, resolve_strategy
from keras_visrec.zoo.download import sha256_file

__all__ = ["FinetuneResult", "MIXED_PRECISION_CHOICES", "build_model", "finetune", "model_fingerprint"]

MIXED_PRECISION_CHOICES = (None, "mixed_bfloat16", "mixed_float16")
_STATE = "state.json"
_LOCK = ".lock"
_FORMAT = 2
_GRAPH_SEED = 0x5EED


@dataclasses.dataclass
class FinetuneResult:
    """What `finetune` did.

    Attributes:
        model: the trained `keras.Model` (EMA weights when EMA was on).
        history: dict metric -> list over *all* epochs, resumed ones included.
        initial_epoch: int. Epoch this call started in (0 unless resumed).
        start_step: int. Optimizer step this call started at.
        final_step: int. Optimizer step at the end.
        output_dir: str.
        resumed_step: int. Training steps (batches) already done when this call started: a
            multiple of the steps per epoch unless it resumed in the middle of an epoch.
    """

    model: keras.Model
    history: dict
    initial_epoch: int
    start_step: int
    final_step: int
    output_dir: str
    resumed_step: int = 0


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


# ---- the run directory: checkpoints, manifest, lock -------------------------------------------


def _generator_variables(model):
    """The model's random-generator states (drop path, dropout): in ``variables``, not ``weights``."""
    weights = {id(v) for v in model.weights}
    return [v for v in model.variables if id(v) not in weights]


def _differences(stored, current, prefix=""):
    keys = sorted(set(stored) | set(current))
    return [f"{prefix}{key} {stored.get(key)!r} → {current.get(key)!r}" for key in keys
            if stored.get(key) != current.get(key)]


class _RunDirectory:
    """The checkpoints of one run in ``path``: reading, checking, cleaning and writing them."""

    def __init__(self, path, identity, chief):
        self.path, self.identity, self.chief = os.fspath(path), identity, chief

    def _file(self, name):
        return os.path.join(self.path, name)

    def read(self):
        """The manifest of the run to resume (checked), or None for a fresh run; cleans leftovers."""
        path = self._file(_STATE)
        state = None
        if os.path.exists(path):
            try:
                with open(path, encoding="utf-8") as handle:
                    state = json.load(handle)
            except (OSError, ValueError) as error:
                raise ValueError(f"Resume state {path!r} is unreadable: {error}") from error
            if not isinstance(state, dict):
                raise ValueError(f"Resume state {path!r} is not a finetune manifest (a JSON object).")
            self._check_identity(state)
            self._check_files(state)
        if self.chief:
            self._remove_leftovers(state)
        return state

    def _check_identity(self, state):
        mine = self.identity
        if (state.get("fingerprint"), state.get("classes")) != (mine["fingerprint"], mine["classes"]):
            raise ValueError(
                f"Resume directory {self.path!r} holds a run of model {state.get('model_name')!r} "
                f"({state.get('classes')} classes, fingerprint {state.get('fingerprint')}), but this run builds "
                f"{mine['model_name']!r} ({mine['classes']} classes, fingerprint {mine['fingerprint']}). "
                "Use another output directory, or the same model and dataset."
            )
        if "format" not in state:  # written before the recipe was recorded: only the model is known
            return
        if state.get("format") != _FORMAT:
            raise ValueError(f"Resume state {self._file(_STATE)!r} has format {state.get('format')!r}; this "
                             f"version reads format {_FORMAT}.")
        differences = (_differences(state.get("recipe", {}), mine["recipe"])
                       + _differences(state.get("data", {}), mine["data"], prefix="data ")
                       + _differences({"image_size": state.get("image_size")}, {"image_size": mine["image_size"]}))
        if differences:
            raise ValueError(
                f"Resume directory {self.path!r} holds a run of {mine['model_name']!r} with another recipe or data: "
                f"{'; '.join(differences)}. Restart with the run's arguments, or use another output directory."
            )

    def _files(self, state):
        if "files" in state:
            return state["files"]
        return {"weights": {"name": state.get("checkpoint")}}  # a manifest written before format 2

    def _check_files(self, state):
        for role, entry in self._files(state).items():
            name = entry.get("name") if isinstance(entry, dict) else None
            path = self._file(name) if isinstance(name, str) else None
            if path is None or not os.path.isfile(path):
                raise ValueError(f"Resume state {self._file(_STATE)!r} names {name!r} ({role}), which is missing.")
            if "size" in entry and os.path.getsize(path) != entry["size"]:
                raise ValueError(f"Checkpoint {path!r} has {os.path.getsize(path)} bytes, the manifest says "
                                 f"{entry['size']}: it is damaged. Remove the directory to start over.")
            if "sha256" in entry and sha256_file(path) != entry["sha256"]:
                raise ValueError(f"Checkpoint {path!r} does not match the sha256 in its manifest: it is damaged. "
                                 "Remove the directory to start over.")

    def _remove_leftovers(self, state):
        """Temporary files of an interrupted write and checkpoints no manifest names."""
        named = set() if state is None else {entry["name"] for entry in self._files(state).values()}
        patterns = ("ckpt-*.weights.h5", "ckpt-*.state.npz", ".tmp-*.weights.h5", ".tmp-*.npz", ".tmp-*.json")
        for pattern in patterns:
            for path in glob.glob(os.path.join(glob.escape(self.path), pattern)):
                if os.path.basename(path) not in named:
                    os.remove(path)

    def restore(self, model, state):
        """Loads the manifest's checkpoint into ``model``; returns the saved running metrics (or None)."""
        files = self._files(state)
        model.load_weights(self._file(files["weights"]["name"]))
        if "state" not in files:
            return None
        with np.load(self._file(files["state"]["name"])) as saved:
            generators = [saved[f"generator_{i}"] for i in range(int(saved["generators"]))]
            metrics = [saved[f"metric_{i}"] for i in range(int(saved["metrics"]))]
        variables = _generator_variables(model)
        if [tuple(v.shape) for v in variables] != [g.shape for g in generators]:
            raise ValueError(f"Checkpoint {files['state']['name']!r} holds {len(generators)} generator states that do "
                             f"not fit the model's {len(variables)}.")
        for variable, value in zip(variables, generators):
            variable.assign(value)
        if not state.get("step_in_epoch"):
            return None
        if len(model.metrics_variables) != len(metrics):  # compiled metrics are built on first use: now
            outputs = model.outputs[0]
            zeros = keras.ops.zeros((1,) + tuple(outputs.shape[1:]), outputs.dtype)
            model.compute_metrics(None, zeros, zeros, None)
            model.reset_metrics()
        if [tuple(v.shape) for v in model.metrics_variables] != [m.shape for m in metrics]:
            raise ValueError(f"Checkpoint {files['state']['name']!r} holds metric states that do not fit the "
                             "compiled metrics.")
        return metrics

    def save(self, model, *, step, steps_per_epoch, history):
        """Writes a checkpoint after ``step`` batches: the files, then the manifest, then cleans up."""
        tag = f"{step:08d}"
        weights, extra = f"ckpt-{tag}.weights.h5", f"ckpt-{tag}.state.npz"
        if not self.chief:  # every worker takes part in reading distributed variables
            scratch = tempfile.mkdtemp(prefix="worker-ckpt-")
            model.save_weights(os.path.join(scratch, weights))
            shutil.rmtree(scratch, ignore_errors=True)
            return
        with atomic_path(self._file(weights)) as temporary:
            model.save_weights(temporary)
            fsync_path(temporary)
        generators, metrics = _generator_variables(model), model.metrics_variables
        arrays = {f"generator_{i}": keras.ops.convert_to_numpy(v) for i, v in enumerate(generators)}
        arrays.update({f"metric_{i}": keras.ops.convert_to_numpy(v) for i, v in enumerate(metrics)})
        with atomic_path(self._file(extra)) as temporary:
            np.savez(temporary, generators=len(generators), metrics=len(metrics), **arrays)
            fsync_path(temporary)
        files = {role: {"name": name, "size": os.path.getsize(self._file(name)),
                        "sha256": sha256_file(self._file(name))}
                 for role, name in (("weights", weights), ("state", extra))}
        manifest = {"format": _FORMAT, **self.identity, "epoch": step // steps_per_epoch,
                    "step_in_epoch": step % steps_per_epoch, "step": step,
                    "optimizer_step": int(keras.ops.convert_to_numpy(model.optimizer.iterations)),
                    "files": files, "history": history}
        write_atomic(self._file(_STATE), json.dumps(manifest, indent=1))
        fsync_path(self.path)
        self._remove_leftovers(manifest)


class _Checkpointer(keras.callbacks.Callback):
    """Checkpoints after every epoch and every ``every`` steps; restores the running metrics of a
    run resumed mid-epoch at the start of that epoch (``fit`` resets them just before)."""

    def __init__(self, run, steps_per_epoch, every, history, metrics=None):
        super().__init__()
        self.run, self.steps_per_epoch, self.every, self.history = run, steps_per_epoch, every, history
        self.metrics_to_restore = metrics
        self.offset = 0  # batches of the current epoch done before this fit started
        self.epoch = 0

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch
        if self.metrics_to_restore is not None:
            for variable, value in zip(self.model.metrics_variables, self.metrics_to_restore):
                variable.assign(value)
            self.metrics_to_restore = None

    def on_train_batch_end(self, batch, logs=None):
        step = self.epoch * self.steps_per_epoch + self.offset + batch + 1
        if self.every and step % self.every == 0 and step % self.steps_per_epoch:
            self.run.save(self.model, step=step, steps_per_epoch=self.steps_per_epoch, history=self.history)

    def on_epoch_end(self, epoch, logs=None):
        for key, value in (logs or {}).items():
            self.history.setdefault(key, []).append(float(value))
        self.offset = 0
        self.run.save(self.model, step=(epoch + 1) * self.steps_per_epoch, steps_per_epoch=self.steps_per_epoch,
                      history=self.history)


@contextlib.contextmanager
def _training_lock(output_dir, chief):
    """Holds ``output_dir/.lock`` (chief only): a second process training into the directory is refused."""
    with contextlib.ExitStack() as stack:
        if chief:
            try:
                stack.enter_context(exclusive_lock(os.path.join(output_dir, _LOCK), timeout=0))
            except LockTimeout as error:
                raise RuntimeError(f"Another finetune process ({error.holder or 'pid unknown'}) is training in "
                                   f"{output_dir!r}; wait for it to finish, or use another output directory.") from None
        yield


def _wants_normalization(model):
    return not any(layer.name.endswith("_preprocessing") for layer in model.layers)


def _outputs_logits(model):
    activation = getattr(model.get_layer("predictions"), "activation", None) if any(
        layer.name == "predictions" for layer in model.layers) else None
    return activation is None or getattr(activation, "__name__", "") == "linear"


def _stream(seed, epoch, which):
    """A stateless seed for ``which`` (0: order, 1: images, 2: batches) of an epoch."""
    base = tf.random.experimental.stateless_fold_in(tf.constant([seed, 0x5EED], tf.int64), epoch)
    return tf.random.experimental.stateless_fold_in(base, which)


def _train_pipeline(source, num_classes, batch_size, augment, mixing, normalize, seed, *, first_epoch, last_epoch,
                    skip=0):
    """Batches of epochs ``[first_epoch, last_epoch)``, the first ``skip`` batches of the first left out.

    Everything random is a function of (seed, epoch, position): the epoch's shuffle is seeded by
    (seed, epoch), each image's augmentation by its position and each batch's mixing by its index, so
    leaving batches out before augmenting them changes nothing about the ones after.
    """
    buffer = min(source.num_examples, 10_000)

    def epoch_batches(epoch):
        # The shuffle's two seeds are (graph seed, op seed). Fixing this function's graph seed makes the
        # order a function of (seed, epoch) alone, whatever the process's global seed (and avoids TF
        # comparing a tensor op seed with 0 when the global seed is 0).
        tf.compat.v1.set_random_seed(_GRAPH_SEED)
        order = tf.cast(_stream(seed, epoch, 0)[0], tf.int64)
        images, batches = _stream(seed, epoch, 1), _stream(seed, epoch, 2)
        data = source.dataset.shuffle(buffer, seed=order, reshuffle_each_iteration=False).enumerate()
        data = data.skip(tf.where(epoch == first_epoch, tf.constant(skip * batch_size, tf.int64), 0))

        def prepare(position, item):
            image, label = item
            x = augment(image, seed=tf.random.experimental.stateless_fold_in(images, position))
            if normalize:
                x = _normalize(x)
            return position, x, tf.one_hot(label, num_classes)

        data = data.map(prepare, num_parallel_calls=tf.data.AUTOTUNE).batch(batch_size)

        def finish(positions, x, y):
            if mixing is None:
                return x, y
            return mixing(x, y, seed=tf.random.experimental.stateless_fold_in(batches, positions[0] // batch_size))

        return data.map(finish, num_parallel_calls=tf.data.AUTOTUNE)

    epochs = tf.data.Dataset.range(first_epoch, last_epoch)
    return epochs.flat_map(epoch_batches).prefetch(tf.data.AUTOTUNE)


def _normalize(x):
    """ImageNet mean/std on 0–255 float pixels (for models without in-model preprocessing)."""
    from keras_visrec.layers.preprocessing import IMAGENET_MEAN, IMAGENET_STD

    return (x / 255.0 - tf.constant(IMAGENET_MEAN)) / tf.constant(IMAGENET_STD)


def _val_pipeline(source, num_classes, image_size, batch_size, normalize):
    def prepare(image, label):
        return eval_transform(image, image_size, normalize=normalize), tf.one_hot(label, num_classes)

    return source.dataset.map(prepare, num_parallel_calls=tf.data.AUTOTUNE).batch(batch_size).prefetch(tf.data.AUTOTUNE)


def _digest(names):
    return hashlib.sha256("\n".join(map(str, names)).encode("utf-8")).hexdigest()[:16]


def finetune(model, data, *, output_dir, val_data=None, weights=None, classes=None, image_size=224,
             epochs=30, batch_size=32, learning_rate=5e-5, min_learning_rate=1e-6, warmup_epochs=0,
             weight_decay=1e-8, layer_decay=0.8, drop_path_rate=0.1, head_init_scale=0.001,
             label_smoothing=0.1, mixup=0.8, cutmix=1.0, mix_prob=1.0, rand_augment=True,
             random_erasing=0.25, crop_scale=(0.08, 1.0), ema=None, strategy=None, mixed_precision=None,
             train_split="train", val_split="validation", data_dir=None, manual_dir=None, depths=None,
             dims=None, weights_classes=1000, seed=0, checkpoint_steps=None, deterministic=False, verbose=1,
             callbacks=()):
    """Fine-tunes a ConvNeXt on an image folder or a tfds dataset with the paper's recipe.

    Defaults follow the official 22k → 1k fine-tuning (AdamW lr 5e-5, weight decay 1e-8, layer
    decay 0.8, head init scale 0.001, label smoothing 0.1, Mixup 0.8 / CutMix 1.0, RandAugment
    m9 n2, random erasing 0.25, cosine to 1e-6); scale `learning_rate` with your batch size.
    An existing run in `output_dir` is resumed where it stopped (see the module docstring).

    Args:
        model: registry name, `"convnext"` (with `depths`, `dims`) or a `keras.Model`.
        data: image folder path or tfds name of the training data.
        output_dir: str. Checkpoints and ``state.json``; an existing run there is resumed.
        val_data: image folder or tfds name for validation (tfds: `data` with `val_split`
            when `None` and `data` is a tfds name; no validation for folders when `None`).
        weights: weights file for the registry builder (used by a fresh run; a resumed run
            continues from its checkpoint).
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
        seed: int. Seeds the initial weights (``keras.utils.set_random_seed``), the epochs' order,
            the augmentation and the drop-path generators. Defaults to `0`.
        checkpoint_steps: int or None. Also checkpoint every this many training steps inside
            epochs (a kill then loses at most that many steps); None checkpoints at epoch ends
            only. Defaults to `None`.
        deterministic: bool. Turn on TensorFlow's op determinism
            (``tf.config.experimental.enable_op_determinism``; it stays on in this process), so a
            resumed run ends bit-equal to an uninterrupted one on the same machine. Defaults to
            `False` (resumed runs continue exactly where they stopped; kernels may round differently).
        verbose: int. Keras progress output (1: progress bar).
        callbacks: extra Keras callbacks (a run resumed mid-epoch calls ``fit`` twice: the rest of
            that epoch, then the remaining epochs).

    Returns:
        A `FinetuneResult`.

    Examples:

    >>> result = finetune("convnext_tiny", "flowers/", weights="convnext_tiny.keras",
    ...                   output_dir="runs/flowers", epochs=30, batch_size=64, learning_rate=1e-4)
    """
    _check_layer_decay(layer_decay)
    if mixed_precision not in MIXED_PRECISION_CHOICES:
        raise ValueError(f"`mixed_precision` must be one of {MIXED_PRECISION_CHOICES}; received {mixed_precision!r}.")
    for name, value, low in (("epochs", epochs, 1), ("batch_size", batch_size, 1), ("seed", seed, 0),
                             ("checkpoint_steps", 1 if checkpoint_steps is None else checkpoint_steps, 1)):
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            kind = "a positive integer" if low else "a non-negative integer"
            kind += " or None" if name == "checkpoint_steps" else ""
            raise ValueError(f"`{name}` must be {kind}; received {name}={value!r}.")
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
    recipe = json.loads(json.dumps(dict(
        epochs=epochs, batch_size=batch_size, learning_rate=learning_rate, min_learning_rate=min_learning_rate,
        warmup_epochs=warmup_epochs, weight_decay=weight_decay, layer_decay=layer_decay,
        drop_path_rate=drop_path_rate, head_init_scale=head_init_scale, label_smoothing=label_smoothing,
        mixup=mixup, cutmix=cutmix, mix_prob=mix_prob, rand_augment=rand_augment, random_erasing=random_erasing,
        crop_scale=crop_scale, ema=ema, mixed_precision=mixed_precision, seed=seed,
    )))
    data_identity = {"examples": train_source.num_examples, "classes": num_classes,
                     "class_names": _digest(train_source.class_names)}

    if deterministic:
        tf.config.experimental.enable_op_determinism()
    keras.utils.set_random_seed(seed)
    strategy = resolve_strategy(strategy)
    chief = _is_chief(strategy)
    os.makedirs(output_dir, exist_ok=True)
    previous_policy = keras.config.dtype_policy()
    if mixed_precision:
        keras.mixed_precision.set_dtype_policy(mixed_precision)
    try:
        with _training_lock(output_dir, chief), strategy.scope():
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
            build_optimizer(net)

            identity = {"model_name": net.name, "fingerprint": model_fingerprint(net), "classes": num_classes,
                        "image_size": image_size, "recipe": recipe, "data": data_identity}
            run = _RunDirectory(output_dir, identity, chief)
            state = run.read()
            history, done, metrics = {}, 0, None
            if state is not None:
                metrics = run.restore(net, state)
                history = state.get("history", {})
                done = int(state.get("step", int(state["epoch"]) * steps_per_epoch))
            start_step = int(keras.ops.convert_to_numpy(net.optimizer.iterations))

            normalize = _wants_normalization(net)
            augment = train_image_augmenter(image_size, crop_scale=crop_scale, rand_augment=rand_augment,
                                            random_erasing=random_erasing, seed=seed)
            mixing = MixupOrCutMix(mixup, cutmix, prob=mix_prob, seed=seed) if (mixup or cutmix) and mix_prob else None
            val = None if val_source is None else _val_pipeline(val_source, num_classes, image_size, batch_size,
                                                                normalize)
            checkpointer = _Checkpointer(run, steps_per_epoch, checkpoint_steps, history, metrics)
            all_callbacks = [checkpointer, *callbacks]
            if ema is not None and val is not None:
                all_callbacks.insert(0, keras.callbacks.SwapEMAWeights(swap_on_epoch=False))
            initial_epoch, skip = divmod(done, steps_per_epoch)
            phases = [(initial_epoch, initial_epoch + 1, skip)] if skip else []
            first_full = initial_epoch + 1 if skip else initial_epoch
            if first_full < epochs:
                phases.append((first_full, epochs, 0))
            for first, last, left_out in phases:
                if getattr(net, "stop_training", False):  # a callback stopped the first phase
                    break
                train = _train_pipeline(train_source, num_classes, batch_size, augment, mixing, normalize, seed,
                                        first_epoch=first, last_epoch=last, skip=left_out)
                checkpointer.offset = left_out
                net.fit(train, validation_data=val, epochs=last, initial_epoch=first, shuffle=False,
                        steps_per_epoch=steps_per_epoch - left_out, callbacks=all_callbacks, verbose=verbose)
            final_step = int(keras.ops.convert_to_numpy(net.optimizer.iterations))
    finally:
        keras.mixed_precision.set_dtype_policy(previous_policy)
    return FinetuneResult(net, checkpointer.history, initial_epoch, start_step, final_step, os.fspath(output_dir),
                          resumed_step=done)

"""Unstructured magnitude pruning, native to Keras 3 (TensorFlow, JAX and PyTorch backends).

Han et al., "Learning both Weights and Connections for Efficient Neural Networks", NeurIPS 2015
(one global magnitude threshold); Zhu & Gupta, "To prune, or not to prune", 2017 (the gradual
polynomial schedule). The pieces, each usable alone:

* :class:`MagnitudeMask` wraps a Conv / Dense layer: a non-trainable 0/1 ``mask`` variable of
  the kernel's shape multiplies the kernel in the forward pass, so pruned weights neither act
  nor receive gradient;
* :class:`PolynomialSparsity` and :class:`ConstantSparsity` (:mod:`keras_visrec.pruning.schedules`)
  say, step by step, whether to update the masks and to what sparsity — the same values as
  tfmot's ``PolynomialDecay`` and ``ConstantSparsity`` (tested step for step);
* :class:`UpdatePruningMasks`, a Keras callback, counts training steps and recomputes the masks
  when the schedule says so: per layer (each keeps its largest weights) or with one global
  threshold over all masked kernels (the paper's);
* :func:`strip_pruning` bakes ``kernel * mask`` into a plain copy of the original layers.

:func:`prune_low_magnitude` wraps a model's layers; :func:`magnitude_prune` runs the whole
prune-while-fine-tuning loop and returns ``(model, PruneReport)``. ``backend="tfmot"`` runs the
same schedule through tensorflow-model-optimization instead (:mod:`keras_visrec.pruning.tfmot_bridge`,
TensorFlow only). Either result exports sparsely with ``export_tflite(..., sparse=True)``.

Where this differs from tfmot: tfmot re-masks the stored weights before each step but lets the
gradient reach pruned positions, which may grow back at the next mask update; here the mask is
applied inside the forward pass, so a pruned weight stays pruned (Zhu & Gupta's description).
The sparsity reached at every step is the same: ``max(round(n (1 - s)), 1)`` weights kept.
"""

import math

import keras
import numpy as np

from keras_visrec.layers import DepthwiseConv2D, PointwiseDense
from keras_visrec.pruning.base import check_ratio, iter_layers, make_report, per_layer_ratio, renamed_arguments
from keras_visrec.pruning.schedules import ConstantSparsity, PolynomialSparsity, SparsitySchedule
from keras_visrec.training import build_optimizer

__all__ = ["BACKENDS", "ConstantSparsity", "MagnitudeMask", "PolynomialSparsity", "SparsitySchedule",
           "UpdatePruningMasks", "export_sparse_tflite", "global_magnitude_sparsities", "magnitude_prune",
           "masked_layers", "prunable_layers", "prune_low_magnitude", "strip_pruning", "to_tf_keras", "update_masks",
           "weight_sparsity"]

BACKENDS = ("keras", "tfmot")
_SCHEDULES = ("polynomial", "constant")
# the layer classes a mask can wrap: their call is exactly "op(inputs, kernel) + bias, activation"
# (keras_visrec's DepthwiseConv2D: Keras' call, in float32 for half-precision training)
_MASKABLE = (keras.layers.Dense, PointwiseDense, keras.layers.Conv2D, keras.layers.Conv3D, keras.layers.Conv1D,
             keras.layers.DepthwiseConv2D, DepthwiseConv2D)


# ---------------------------------------------------------------- the mask


def _maskable(layer):
    """Whether ``layer`` computes exactly what :class:`MagnitudeMask` re-computes with a masked kernel."""
    return any(type(layer).call is cls.call for cls in _MASKABLE) and getattr(layer, "groups", 1) == 1 \
        and getattr(layer, "lora_enabled", False) is False and getattr(layer, "quantization_mode", None) is None


@keras.saving.register_keras_serializable(package="keras_visrec")
class MagnitudeMask(keras.layers.Wrapper):
    """A Conv / Dense layer whose kernel is multiplied by a non-trainable 0/1 mask in the forward pass.

    The wrapper takes the wrapped layer's name, so a masked model's layers are named as the
    original's. Masks change only when :class:`UpdatePruningMasks` says so; between updates,
    pruned weights get no gradient.

    Args:
        layer: keras layer. A Dense, Conv1D/2D/3D or DepthwiseConv2D (or a subclass keeping its
            call, e.g. ``PointwiseDense``).
        schedule: a :class:`SparsitySchedule`. When and how far to prune this layer.
        global_threshold: bool. Whether this layer's mask comes from one threshold shared with
            the other ``global_threshold`` layers of the model. Defaults to `False`.
    """

    def __init__(self, layer, schedule, global_threshold=False, **kwargs):
        if not _maskable(layer):
            raise TypeError(f"Layer {layer.name!r} ({type(layer).__name__}) cannot be magnitude-masked: the mask "
                            "re-computes Dense, Conv1D/2D/3D and DepthwiseConv2D calls (not grouped, LoRA or "
                            "quantized layers, nor subclasses that override call).")
        if isinstance(schedule, dict):
            schedule = keras.saving.deserialize_keras_object(schedule)
        if not isinstance(schedule, SparsitySchedule):
            raise TypeError(f"`schedule` must be a PolynomialSparsity or ConstantSparsity; received {schedule!r}.")
        kwargs.setdefault("name", layer.name)
        super().__init__(layer, **kwargs)
        self.schedule = schedule
        self.global_threshold = bool(global_threshold)

    def build(self, input_shape=None):
        if not self.layer.built:
            self.layer.build(input_shape)
        self.mask = self.add_weight(name="mask", shape=tuple(self.layer.kernel.shape), initializer="ones",
                                    trainable=False)
        self.pruning_step = self.add_weight(name="pruning_step", shape=(), initializer="zeros", dtype="int32",
                                            trainable=False)
        self.built = True

    def masked_kernel(self):
        """``kernel * mask`` (a tensor)."""
        return self.layer.kernel * keras.ops.cast(self.mask, self.layer.kernel.dtype)

    def call(self, inputs):
        ops, layer = keras.ops, self.layer
        kernel = self.masked_kernel()
        if isinstance(layer, keras.layers.Dense):
            if len(inputs.shape) > 2:  # one 2-D matmul, as PointwiseDense computes it
                leading = ops.shape(inputs)[:-1]
                flat = ops.matmul(ops.reshape(inputs, (-1, inputs.shape[-1])), kernel)
                outputs = ops.reshape(flat, tuple(leading) + (layer.units,))
            else:
                outputs = ops.matmul(inputs, kernel)
            if layer.bias is not None:
                outputs = ops.add(outputs, layer.bias)
        else:
            if isinstance(layer, keras.layers.DepthwiseConv2D):
                outputs = ops.depthwise_conv(inputs, kernel, strides=layer.strides, padding=layer.padding,
                                             dilation_rate=layer.dilation_rate, data_format=layer.data_format)
            else:
                padding = layer.padding
                if padding == "causal":
                    inputs, padding = ops.pad(inputs, layer._compute_causal_padding()), "valid"
                outputs = ops.conv(inputs, kernel, strides=list(layer.strides), padding=padding,
                                   dilation_rate=layer.dilation_rate, data_format=layer.data_format)
            if layer.use_bias:
                rank = len(outputs.shape) - 2
                shape = ((1,) * (rank + 1) + (-1,) if layer.data_format == "channels_last"
                         else (1, -1) + (1,) * rank)
                outputs = ops.add(outputs, ops.reshape(layer.bias, shape))
        return outputs if layer.activation is None else layer.activation(outputs)

    def compute_output_shape(self, input_shape):
        return self.layer.compute_output_shape(input_shape)

    def get_config(self):
        return {**super().get_config(), "schedule": keras.saving.serialize_keras_object(self.schedule),
                "global_threshold": self.global_threshold}


def masked_layers(model):
    """The :class:`MagnitudeMask` layers of ``model`` (nested models included), in graph order."""
    return [layer for layer in iter_layers(model) if isinstance(layer, MagnitudeMask)]


def prunable_layers(model):
    """Names of the layers :func:`magnitude_prune` prunes by default: Conv and Dense, not depthwise."""
    return [layer.name for layer in model.layers
            if _maskable(layer) and not isinstance(layer, keras.layers.DepthwiseConv2D)]


def prune_low_magnitude(model, schedule, *, layers=None, global_threshold=False):
    """A copy of ``model`` whose Conv / Dense layers are wrapped in :class:`MagnitudeMask`.

    Train it with :class:`UpdatePruningMasks` among the callbacks, then :func:`strip_pruning`.

    Args:
        model: keras.Model. A functional or Sequential model (unchanged by this call).
        schedule: a :class:`SparsitySchedule` for every pruned layer, or a dict ``{layer name:
            schedule}`` (the layers to prune).
        layers: list of str or None. Layers to prune with the one `schedule`; defaults to every
            Conv and Dense (depthwise convs only when listed).
        global_threshold: bool. One magnitude threshold over all pruned kernels at each update
            (needs one schedule for all). Defaults to `False`.

    Returns:
        A `keras.Model` with the same layer names, inheriting ``model``'s weights, masks all ones.
    """
    if isinstance(schedule, dict):
        if layers is not None:
            raise ValueError("Give the layers either as `layers` or as the keys of a `schedule` dict, not both.")
        if global_threshold:
            raise ValueError("`global_threshold=True` needs one schedule for every layer, not a dict.")
        schedules = dict(schedule)
    else:
        names = prunable_layers(model) if layers is None else list(layers)
        schedules = {name: schedule for name in names}
    by_name = {layer.name: layer for layer in model.layers}
    for name, value in schedules.items():
        if name not in by_name:
            raise ValueError(f"Layer {name!r} is not a layer of model {model.name!r}.")
        if not isinstance(value, SparsitySchedule):
            raise TypeError(f"The schedule of {name!r} must be a PolynomialSparsity or ConstantSparsity; "
                            f"received {value!r}.")
        if not _maskable(by_name[name]):
            raise TypeError(f"Layer {name!r} ({type(by_name[name]).__name__}) is not a Conv / Dense layer a "
                            "magnitude mask can wrap.")
    if not schedules:
        raise ValueError(f"Model {model.name!r} has no Conv or Dense layer to prune.")

    def wrap(layer):
        copy = layer.__class__.from_config(layer.get_config())
        if layer.name in schedules:
            return MagnitudeMask(copy, schedules[layer.name], global_threshold=global_threshold)
        return copy

    masked = keras.models.clone_model(model, clone_function=wrap)
    for layer in masked.layers:
        source = by_name.get(layer.name)  # (the cloned input layer is renamed)
        target = layer.layer if isinstance(layer, MagnitudeMask) else layer
        if source is not None and source.weights:
            target.set_weights(source.get_weights())
    return masked


def strip_pruning(model, *, name=None):
    """A copy of a masked model with its original layers and ``kernel * mask`` baked in.

    Args:
        model: keras.Model. A model from :func:`prune_low_magnitude` (others are copied as they are).
        name: str or None. Name of the copy. Defaults to the model's.
    """
    by_name = {layer.name: layer for layer in model.layers}

    def unwrap(layer):
        inner = layer.layer if isinstance(layer, MagnitudeMask) else layer
        return inner.__class__.from_config(inner.get_config())

    stripped = keras.models.clone_model(model, clone_function=unwrap)
    for layer in stripped.layers:
        source = by_name.get(layer.name)  # (the cloned input layer is renamed)
        if source is None:
            continue
        if isinstance(source, MagnitudeMask):
            values = source.layer.get_weights()
            values[0] = keras.ops.convert_to_numpy(source.masked_kernel())
            layer.set_weights(values)
        elif source.weights:
            layer.set_weights(source.get_weights())
    if name:
        stripped.name = name
    return stripped


# ---------------------------------------------------------------- mask updates


def _keep_count(size, sparsity):
    """tfmot's count of weights kept: ``max(round(size · (1 - sparsity)), 1)``."""
    return max(int(np.round(np.float32(size) * np.float32(1.0 - sparsity))), 1)


def _threshold(magnitudes, keep):
    """The ``keep``-th largest value of a flat array (weights at or above it stay)."""
    return np.partition(magnitudes, magnitudes.size - keep)[magnitudes.size - keep]


def update_masks(wrappers, sparsity):
    """Sets the masks of ``wrappers`` to keep their largest weights at ``sparsity``.

    ``sparsity`` is a float (with one threshold over all the wrappers' kernels when they are
    ``global_threshold`` layers, else one per layer) or ``{layer name: float}``. Magnitudes are
    those of the effective (already masked) kernels, and the masked kernels are written back so
    stored and effective weights agree.
    """
    kernels = {w.name: np.abs(keras.ops.convert_to_numpy(w.masked_kernel())) for w in wrappers}
    shared = [w for w in wrappers if w.global_threshold and not isinstance(sparsity, dict)]
    thresholds = {}
    if shared:
        everything = np.concatenate([kernels[w.name].ravel() for w in shared])
        value = _threshold(everything, _keep_count(everything.size, sparsity))
        thresholds.update({w.name: value for w in shared})
    for wrapper in wrappers:
        if wrapper.name not in thresholds:
            share = sparsity[wrapper.name] if isinstance(sparsity, dict) else sparsity
            flat = kernels[wrapper.name].ravel()
            thresholds[wrapper.name] = _threshold(flat, _keep_count(flat.size, share))
    for wrapper in wrappers:
        mask = (kernels[wrapper.name] >= thresholds[wrapper.name]).astype(wrapper.mask.dtype)
        wrapper.mask.assign(mask)
        wrapper.layer.kernel.assign(keras.ops.convert_to_numpy(wrapper.layer.kernel) * mask)


class UpdatePruningMasks(keras.callbacks.Callback):
    """Counts training steps and updates the :class:`MagnitudeMask` masks when their schedules say so.

    The first batch is step 1, as in tfmot's ``UpdatePruningStep``; the step is stored in the
    masks (``pruning_step``), so a resumed ``fit`` continues the schedule.

    Args:
        on_update: callable or None. ``on_update(step, {layer: sparsity})`` after each update
            (for logging). Defaults to `None`.
    """

    def __init__(self, on_update=None):
        super().__init__()
        self.on_update = on_update
        self.step = 0
        self._wrappers = []

    def on_train_begin(self, logs=None):
        self._wrappers = masked_layers(self.model)
        if not self._wrappers:
            raise ValueError("UpdatePruningMasks found no MagnitudeMask layer in the model; build it with "
                             "keras_visrec.pruning.prune_low_magnitude.")
        self.step = int(keras.ops.convert_to_numpy(self._wrappers[0].pruning_step))

    def on_train_batch_begin(self, batch, logs=None):
        self.step += 1
        due = {}
        for wrapper in self._wrappers:
            update, sparsity = wrapper.schedule(self.step)
            if update:
                due[wrapper.name] = (wrapper, sparsity)
        if not due:
            return
        self.model  # noqa: B018 -- on JAX, reading the property syncs the training state into the variables
        wrappers = [wrapper for wrapper, _ in due.values()]
        shares = {name: sparsity for name, (_, sparsity) in due.items()}
        global_share = {shares[w.name] for w in wrappers if w.global_threshold}
        if len(global_share) > 1:
            raise ValueError("global_threshold layers must share one schedule.")
        if global_share:
            update_masks([w for w in wrappers if w.global_threshold], global_share.pop())
        local = [w for w in wrappers if not w.global_threshold]
        if local:
            update_masks(local, {w.name: shares[w.name] for w in local})
        if self.on_update is not None:
            self.on_update(self.step, shares)

    def on_epoch_end(self, epoch, logs=None):
        self._store_step()

    def on_train_end(self, logs=None):
        self._store_step()

    def _store_step(self):
        self.model  # noqa: B018 -- sync first on JAX
        for wrapper in self._wrappers:
            wrapper.pruning_step.assign(self.step)


# ---------------------------------------------------------------- the one-call pruner


def weight_sparsity(model, layers=None):
    """``{layer name: fraction of zero kernel weights}`` for conv / dense layers (nested ones too)."""
    result = {}
    for layer in iter_layers(model):
        wanted = isinstance(layer, _MASKABLE) if layers is None else layer.name in layers
        if wanted and hasattr(layer, "kernel"):
            kernel = keras.ops.convert_to_numpy(layer.kernel)
            result[layer.name] = float(np.mean(kernel == 0))
    return result


def global_magnitude_sparsities(model, ratio=None, layers=None, **deprecated):
    """Per-layer sparsities equal to one global magnitude threshold over the kernels of ``layers``.

    Args:
        model: keras.Model.
        ratio: float in [0, 1). Share of all selected kernel weights to zero (``sparsity=`` is
            its deprecated spelling).
        layers: list of str or `None`. Layers to prune; defaults to every Conv and Dense.

    Returns:
        ``{layer name: sparsity}`` whose weighted mean is ``ratio``.
    """
    ratio = renamed_arguments("global_magnitude_sparsities", deprecated, {"sparsity": "ratio"},
                              current={"ratio": ratio})["ratio"]
    ratio = check_ratio(ratio)
    names = _selected(model, layers)
    kernels = {n: np.abs(keras.ops.convert_to_numpy(model.get_layer(n).kernel)).ravel() for n in names}
    everything = np.sort(np.concatenate(list(kernels.values())))
    count = int(everything.size * ratio)
    if count == 0:
        return {n: 0.0 for n in names}
    threshold = everything[count - 1]
    return {n: float(np.mean(k <= threshold)) for n, k in kernels.items()}


def _selected(model, layers):
    if layers is None:
        return prunable_layers(model)
    names = list(layers)
    for name in names:
        if not _maskable(model.get_layer(name)):
            raise ValueError(f"Layer {name!r} is not a conv / dense layer magnitude pruning can prune.")
    return names


def magnitude_prune(model, train_data=None, *, ratio=0.5, schedule="polynomial", epochs=1, steps_per_epoch=None,
                    batch_size=32, begin_step=0, end_step=None, frequency=None, power=3, global_threshold=False,
                    layers=None, learning_rate=1e-3, momentum=0.9, from_logits=None, backend="keras", name=None,
                    verbose=0, **deprecated):
    """Prunes the smallest weights of ``model`` while fine-tuning it; returns ``(model, PruneReport)``.

    Args:
        model: keras.Model. A functional Keras 3 model (unchanged by this call).
        train_data: what ``fit`` takes: a ``tf.data.Dataset`` of ``(images, integer labels)``
            batches, a ``keras.utils.PyDataset``, or an ``(x, y)`` tuple of arrays (batched by
            `batch_size`). `None` prunes at once to `ratio` without training (one-shot).
        ratio: float in [0, 1) (every pruned layer, or overall with `global_threshold`) or a
            dict ``{layer name: float}`` (the layers to prune). ``sparsity=`` is its deprecated
            spelling. Defaults to `0.5`.
        schedule: str. `"polynomial"` (from 0 to `ratio` between ``begin_step`` and ``end_step``,
            cubic) or `"constant"` (`ratio` from ``begin_step`` on). Defaults to `"polynomial"`.
        epochs: int >= 1. Fine-tuning epochs. Defaults to `1`.
        steps_per_epoch: int or `None`. Defaults to the data's length.
        batch_size: int. Batch size of an ``(x, y)`` tuple. Defaults to `32`.
        begin_step, end_step, frequency, power: the schedule. ``end_step`` defaults to 80 % of
            all training steps, so the last steps fine-tune at the final sparsity; ``frequency``
            (steps between mask updates) defaults to a tenth of the pruning span, and
            ``end_step`` is moved onto a mask update so the final sparsity is reached.
        global_threshold: bool. One magnitude threshold over all pruned kernels (the paper's)
            instead of the same sparsity in every layer. Defaults to `False`.
        layers: list of str or `None`. Layers to prune with a float `ratio`. Defaults to every
            Conv and Dense.
        learning_rate, momentum: float. SGD settings of the fine-tuning. Defaults to `1e-3`, `0.9`.
        from_logits: bool or `None`. Whether the model outputs logits; `None` reads the output
            layer's activation.
        backend: str. `"keras"` (masks in the forward pass, every Keras backend) or `"tfmot"`
            (tensorflow-model-optimization on a tf_keras twin; TensorFlow only). Defaults to
            `"keras"`.
        name: str or None. Name of the pruned model. Defaults to the model's.
        verbose: int. Keras fit verbosity. Defaults to `0`.

    Returns:
        ``(pruned keras.Model, PruneReport)``; ``report.sparsity`` is ``{layer: share zeroed}``.

    Examples:

    >>> pruned, report = magnitude_prune(model, train, ratio=0.8, epochs=2, global_threshold=True)
    >>> print(report)
    """
    ratio = renamed_arguments("magnitude_prune", deprecated, {"sparsity": "ratio"}, current={"ratio": ratio},
                              defaults={"ratio": 0.5})["ratio"]
    if backend not in BACKENDS:
        raise ValueError(f"`backend` must be one of {BACKENDS}; received backend={backend!r}.")
    if schedule not in _SCHEDULES:
        raise ValueError(f"`schedule` must be one of {_SCHEDULES}; received schedule={schedule!r}.")
    if not isinstance(epochs, int) or isinstance(epochs, bool) or epochs < 1:
        raise ValueError(f"`epochs` must be a positive integer; received epochs={epochs!r}.")
    if isinstance(ratio, dict):
        if layers is not None or global_threshold:
            raise ValueError("A per-layer `ratio` dict names its layers; do not combine it with `layers` or "
                             "`global_threshold`.")
        targets = per_layer_ratio(ratio, prunable_layers(model) + [
            layer.name for layer in model.layers if isinstance(layer, keras.layers.DepthwiseConv2D)])
    else:
        check_ratio(ratio)
        targets = {n: float(ratio) for n in _selected(model, layers)}
    logits = _outputs_logits(model) if from_logits is None else from_logits
    details = {"backend": backend, "global_threshold": bool(global_threshold)}

    if train_data is None:  # one-shot
        if backend == "tfmot":
            raise ValueError("backend='tfmot' prunes while training: pass `train_data` (or use backend='keras').")
        masked = prune_low_magnitude(model, {n: ConstantSparsity(r) for n, r in targets.items()}) \
            if not global_threshold else prune_low_magnitude(model, ConstantSparsity(ratio), layers=list(targets),
                                                             global_threshold=True)
        update_masks(masked_layers(masked), ratio if global_threshold else targets)
        pruned = strip_pruning(masked, name=name)
        details["schedule"] = "one-shot"
        return pruned, make_report("magnitude", model, pruned, ratio, unit="weights", layers=list(targets),
                                   details=details)

    steps_per_epoch = _steps_per_epoch(train_data, steps_per_epoch, batch_size)
    total = epochs * steps_per_epoch
    end_step = max(begin_step + 1, int(total * 0.8)) if end_step is None else int(end_step)
    if end_step <= begin_step:
        raise ValueError(f"`end_step` ({end_step}) must come after `begin_step` ({begin_step}).")
    frequency = max(1, (end_step - begin_step) // 10) if frequency is None else int(frequency)
    end_step = begin_step + frequency * -(-(end_step - begin_step) // frequency)

    def make_schedule(target):
        if schedule == "constant":
            return ConstantSparsity(target, begin_step=begin_step, frequency=frequency)
        return PolynomialSparsity(0.0, target, begin_step=begin_step, end_step=end_step, power=power,
                                  frequency=frequency)

    if global_threshold and backend == "tfmot":  # tfmot prunes per layer: hold the global split per layer
        targets = global_magnitude_sparsities(model, ratio, list(targets))
    schedules = {n: make_schedule(r) for n, r in targets.items()}
    details["schedule"] = schedules[next(iter(schedules))] if len(set(schedules.values())) == 1 else "per layer"
    details["steps"] = total
    fit_data = train_data if not isinstance(train_data, tuple) else train_data[0]
    fit_kwargs = dict(epochs=epochs, verbose=verbose)
    if isinstance(train_data, tuple):
        fit_kwargs.update(y=train_data[1], batch_size=batch_size)
    else:
        fit_kwargs["steps_per_epoch"] = steps_per_epoch

    if backend == "tfmot":
        from keras_visrec.pruning.tfmot_bridge import tfmot_prune

        from keras_visrec.tflite.export import require_tensorflow_backend

        require_tensorflow_backend("backend='tfmot' (tensorflow-model-optimization)")
        pruned = tfmot_prune(model, schedules, fit_data, fit_kwargs, learning_rate=learning_rate, momentum=momentum,
                             from_logits=logits)
        if name:
            pruned.name = name
    else:
        if global_threshold:
            masked = prune_low_magnitude(model, make_schedule(ratio), layers=list(targets), global_threshold=True)
        else:
            masked = prune_low_magnitude(model, schedules)
        masked.compile(optimizer=keras.optimizers.SGD(learning_rate, momentum=momentum),
                       loss=keras.losses.SparseCategoricalCrossentropy(from_logits=logits), metrics=["accuracy"])
        build_optimizer(masked)
        masked.fit(fit_data, callbacks=[UpdatePruningMasks()], **fit_kwargs)
        pruned = strip_pruning(masked, name=name)
    return pruned, make_report("magnitude", model, pruned, ratio, unit="weights", layers=list(targets),
                               details=details)


def _steps_per_epoch(train_data, steps_per_epoch, batch_size):
    if steps_per_epoch is not None:
        if isinstance(steps_per_epoch, bool) or not isinstance(steps_per_epoch, int) or steps_per_epoch < 1:
            raise ValueError(f"`steps_per_epoch` must be a positive integer; received {steps_per_epoch!r}.")
        return steps_per_epoch
    if isinstance(train_data, tuple):
        if len(train_data) != 2:
            raise ValueError("`train_data` as a tuple must be (x, y).")
        return math.ceil(len(train_data[0]) / batch_size)
    if hasattr(train_data, "cardinality"):
        steps = int(train_data.cardinality())
    else:
        try:
            steps = len(train_data)
        except TypeError:
            steps = -1
    if steps < 1:
        raise ValueError("`steps_per_epoch` is needed: the length of `train_data` is unknown.")
    return steps


def _outputs_logits(model):
    activation = getattr(model.layers[-1], "activation", None)
    return activation is not keras.activations.softmax


def to_tf_keras(model):
    """The tf_keras twin of a Keras 3 functional model (see :mod:`keras_visrec.pruning.tfmot_bridge`)."""
    from keras_visrec.pruning.tfmot_bridge import to_tf_keras as convert

    return convert(model)


def export_sparse_tflite(model, path, **kwargs):
    """``export_tflite(model, path, sparse=True, **kwargs)``: pruned tensors stored sparsely; returns its report.

    Kept one release for its callers (it returned the flatbuffer bytes): call
    ``keras_visrec.export_tflite(model, path, sparse=True)``.
    """
    import warnings

    from keras_visrec.tflite.export import export_tflite

    warnings.warn("`export_sparse_tflite` is deprecated and will be removed in the next release; use "
                  "`keras_visrec.export_tflite(model, path, sparse=True)` (it returns an ExportReport).",
                  DeprecationWarning, stacklevel=2)
    return export_tflite(model, path, sparse=kwargs.pop("sparse", True), **kwargs)

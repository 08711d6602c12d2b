"""Unstructured magnitude pruning of Keras 3 models through tensorflow-model-optimization.

tfmot 0.8 prunes only tf_keras (Keras 2) models, and importing it sets ``TF_USE_LEGACY_KERAS=1``
for the whole process. This bridge keeps the Keras 3 process intact:

1. :func:`to_tf_keras` rebuilds the model as a tf_keras *twin* (same graph, same layer names,
   same weights; keras_visrec's custom layers have small tf_keras counterparts here);
2. :func:`magnitude_prune` wraps its conv / dense layers with ``prune_low_magnitude``
   (``PolynomialDecay`` or ``ConstantSparsity``), fine-tunes with ``UpdatePruningStep``, calls
   ``strip_pruning`` and copies the sparse weights into a Keras 3 copy of the input model;
3. :func:`export_sparse_tflite` converts with ``Optimize.EXPERIMENTAL_SPARSITY`` so the flatbuffer
   stores the pruned tensors sparsely.

tfmot is imported inside :func:`_import_tfmot` only. ``tf.keras`` is resolved first and the
environment variable restored after the import, so Keras 3 code (and ``tf.keras``) keep working
in the same process — tested in ``tests/pruning/test_magnitude.py``.

tfmot prunes per layer; the paper (after Han et al.) uses one global threshold over all conv
weights. ``global_threshold=True`` turns the global threshold into per-layer targets
(:func:`global_magnitude_sparsities`) that tfmot then holds during fine-tuning.
"""

import inspect
import os

import keras
import numpy as np

from keras_visrec.cifar import ChannelSelection, ShortcutA
from keras_visrec.files import write_atomic
from keras_visrec.layers import GRN, GELU, ImageNetNormalization, LayerScale, StochasticDepth

__all__ = ["export_sparse_tflite", "global_magnitude_sparsities", "magnitude_prune", "to_tf_keras",
           "weight_sparsity"]

_SCHEDULES = ("polynomial", "constant")
_PRUNABLE = (keras.layers.Conv1D, keras.layers.Conv2D, keras.layers.Conv3D, keras.layers.Dense,
             keras.layers.DepthwiseConv2D)
_TWIN_CACHE = {}


def _import_tfmot():
    """Imports tf_keras and tfmot without switching this process to legacy Keras."""
    import tensorflow as tf

    getattr(tf.keras, "Model", None)  # resolve tf.keras under the current setting first
    previous = os.environ.get("TF_USE_LEGACY_KERAS")
    try:
        import tensorflow_model_optimization as tfmot
        import tf_keras
    except ImportError as error:
        raise ImportError("Magnitude pruning needs tensorflow-model-optimization and tf_keras: "
                          "pip install 'keras_visrec[tfmot]'.") from error
    finally:
        if previous is None:
            os.environ.pop("TF_USE_LEGACY_KERAS", None)
        else:
            os.environ["TF_USE_LEGACY_KERAS"] = previous
    return tf_keras, tfmot


def _twin_classes(tf_keras):
    """tf_keras counterparts of keras_visrec's custom layers (built once per process)."""
    if _TWIN_CACHE:
        return _TWIN_CACHE
    import tensorflow as tf

    class TwinNormalization(tf_keras.layers.Layer):
        def __init__(self, scale, offset, **kwargs):
            super().__init__(**kwargs)
            self.scale, self.offset = np.asarray(scale, "float32"), np.asarray(offset, "float32")

        def call(self, x):
            return tf.cast(x, self.compute_dtype) * self.scale + self.offset

    class TwinLayerScale(tf_keras.layers.Layer):
        def build(self, shape):
            self.gamma = self.add_weight(name="gamma", shape=(shape[-1],), initializer="ones")

        def call(self, x):
            return x * self.gamma

    class TwinGRN(tf_keras.layers.Layer):
        def __init__(self, epsilon, **kwargs):
            super().__init__(**kwargs)
            self.epsilon = epsilon

        def build(self, shape):
            self.gamma = self.add_weight(name="gamma", shape=(shape[-1],), initializer="zeros")
            self.beta = self.add_weight(name="beta", shape=(shape[-1],), initializer="zeros")

        def call(self, x):
            gx = tf.sqrt(tf.reduce_sum(tf.square(x), axis=list(range(1, len(x.shape) - 1)), keepdims=True))
            nx = gx / (tf.reduce_mean(gx, axis=-1, keepdims=True) + self.epsilon)
            return self.gamma * (x * nx) + self.beta + x

    class TwinSelection(tf_keras.layers.Layer):
        def __init__(self, indices, **kwargs):
            super().__init__(**kwargs)
            self.indices = indices

        def call(self, x):
            return x if self.indices is None else tf.gather(x, self.indices, axis=-1)

    class TwinShortcutA(tf_keras.layers.Layer):
        def __init__(self, filters, strides, **kwargs):
            super().__init__(**kwargs)
            self.filters, self.strides = filters, strides

        def call(self, x):
            y = x[:, :: self.strides, :: self.strides, :]
            return tf.pad(y, [[0, 0], [0, 0], [0, 0], [0, self.filters - x.shape[-1]]])

    class TwinDropPath(tf_keras.layers.Layer):
        def __init__(self, rate, **kwargs):
            super().__init__(**kwargs)
            self.rate = rate

        def call(self, x, training=None):
            if not training or not self.rate:
                return x
            keep = 1.0 - self.rate
            shape = [tf.shape(x)[0]] + [1] * (len(x.shape) - 1)
            return x * tf.floor(keep + tf.random.uniform(shape, dtype=x.dtype)) / keep

    _TWIN_CACHE.update(
        {ImageNetNormalization: lambda l: TwinNormalization(*l.scale_and_offset, name=l.name),
         LayerScale: lambda l: TwinLayerScale(name=l.name),
         GRN: lambda l: TwinGRN(l.epsilon, name=l.name),
         ChannelSelection: lambda l: TwinSelection(l.indices, name=l.name),
         ShortcutA: lambda l: TwinShortcutA(l.filters, l.strides, name=l.name),
         StochasticDepth: lambda l: TwinDropPath(float(getattr(l, "rate", 0.0)), name=l.name),
         GELU: lambda l: tf_keras.layers.Activation(_gelu_fn(l), name=l.name)}
    )
    return _TWIN_CACHE


def _gelu_fn(layer):
    import tensorflow as tf

    from keras_visrec.layers import gelu_tanh_cubic

    form = getattr(layer, "form", "exact")
    if form == "tanh_cubic":
        return gelu_tanh_cubic  # keras.ops on TensorFlow tensors: plain TF ops
    return lambda x: tf.nn.gelu(x, approximate=form == "tanh")


def _twin_layer(layer, tf_keras):
    for cls, make in _twin_classes(tf_keras).items():
        if type(layer) is cls:
            return make(layer)
    name = type(layer).__name__
    # PointwiseDense and LayerNorm compute their Keras base's function with its weights and config
    for base in (keras.layers.Dense, keras.layers.LayerNormalization):
        if isinstance(layer, base):
            name = base.__name__
    target = getattr(tf_keras.layers, name, None)
    if target is None or not type(layer).__module__.startswith(("keras.", "keras_visrec.")):
        raise TypeError(f"Layer {layer.name!r} ({name}) has no tf_keras twin; the tfmot bridge supports Keras' "
                        f"built-in layers and keras_visrec's.")
    config = layer.get_config()
    accepted = set(inspect.signature(target.__init__).parameters) | {"name", "trainable", "dtype"}
    clean = {}
    for key, value in config.items():
        if key not in accepted or key.endswith(("_initializer", "_regularizer", "_constraint")):
            continue
        if key == "dtype" and isinstance(value, dict):
            value = value.get("config", {}).get("name", "float32")
        if key == "activation" and not isinstance(value, str):
            raise TypeError(f"Layer {layer.name!r} uses a custom activation {value!r} the tfmot bridge cannot map.")
        clean[key] = value
    return target(**clean)


def to_tf_keras(model):
    """The tf_keras twin of a Keras 3 functional model: same graph, layer names and weights.

    Args:
        model: keras.Model. A functional model of Keras' built-in and keras_visrec's layers.

    Returns:
        A `tf_keras.Model`.
    """
    tf_keras, _ = _import_tfmot()
    functional = model._functional if isinstance(model, keras.Sequential) else model
    if functional is None or not hasattr(functional, "_nodes_by_depth"):
        raise TypeError(f"to_tf_keras needs a functional or Sequential model; received {type(model).__name__}.")
    tensors, twins = {}, {}
    for x in keras.tree.flatten(functional.inputs):
        tensors[id(x)] = tf_keras.Input(batch_shape=tuple(x.shape), dtype=x.dtype, name=x.name)
    for depth in sorted(functional._nodes_by_depth, reverse=True):
        for node in functional._nodes_by_depth[depth]:
            layer = node.operation
            if node.is_input or isinstance(layer, keras.layers.InputLayer):
                continue
            if layer.name not in twins:
                twins[layer.name] = _twin_layer(layer, tf_keras)
            args, kwargs = node.arguments.fill_in(tensors)
            outputs = twins[layer.name](*args, **kwargs)
            for x, y in zip(node.outputs, keras.tree.flatten(outputs)):
                tensors[id(x)] = y
    inputs = [tensors[id(x)] for x in keras.tree.flatten(functional.inputs)]
    outputs = [tensors[id(x)] for x in keras.tree.flatten(functional.outputs)]
    twin = tf_keras.Model(inputs if len(inputs) > 1 else inputs[0], outputs if len(outputs) > 1 else outputs[0],
                          name=model.name)
    for name, layer in twins.items():
        values = model.get_layer(name).get_weights()
        if values:
            layer.set_weights(values)
    return twin


def weight_sparsity(model, layers=None):
    """``{layer name: fraction of zero kernel weights}`` for conv / dense layers of a Keras model."""
    result = {}
    for layer in model.layers:
        if (layers is None and isinstance(layer, _PRUNABLE)) or (layers is not None and layer.name in layers):
            kernel = keras.ops.convert_to_numpy(layer.kernel)
            result[layer.name] = float(np.mean(kernel == 0))
    return result


def _prunable_names(model, layers):
    if layers is None:
        return [layer.name for layer in model.layers
                if isinstance(layer, _PRUNABLE) and not isinstance(layer, keras.layers.DepthwiseConv2D)]
    names = list(layers)
    for name in names:
        if not isinstance(model.get_layer(name), _PRUNABLE):
            raise ValueError(f"Layer {name!r} is not a conv / dense layer tfmot can prune.")
    return names


def global_magnitude_sparsities(model, sparsity, layers=None):
    """Per-layer sparsities equal to one global magnitude threshold over the kernels of ``layers``.

    Args:
        model: keras.Model.
        sparsity: float in [0, 1). Share of all selected kernel weights to zero.
        layers: list of str or `None`. Layers to prune; defaults to every Conv and Dense.

    Returns:
        ``{layer name: sparsity}`` whose weighted mean is ``sparsity``.
    """
    _check_sparsity(sparsity)
    names = _prunable_names(model, layers)
    kernels = {n: np.abs(keras.ops.convert_to_numpy(model.get_layer(n).kernel)).ravel() for n in names}
    everything = np.sort(np.concatenate(list(kernels.values())))
    count = int(everything.size * sparsity)
    if count == 0:
        return {n: 0.0 for n in names}
    threshold = everything[count - 1]
    return {n: float(np.mean(k <= threshold)) for n, k in kernels.items()}


def _check_sparsity(sparsity):
    if isinstance(sparsity, bool) or not isinstance(sparsity, (int, float)) or not 0.0 <= sparsity < 1.0:
        raise ValueError(f"`sparsity` must be in [0, 1); received sparsity={sparsity!r}.")


def magnitude_prune(model, train_data, *, sparsity=0.5, schedule="polynomial", epochs=1, steps_per_epoch=None,
                    begin_step=0, end_step=None, frequency=None, global_threshold=False, layers=None,
                    learning_rate=1e-3, momentum=0.9, from_logits=None, verbose=0):
    """Prunes and fine-tunes ``model`` with tfmot; returns ``(Keras 3 model, per-layer sparsity)``.

    Args:
        model: keras.Model. A functional Keras 3 model (unchanged by this call).
        train_data: tf.data.Dataset of ``(images, integer labels)`` batches.
        sparsity: float in [0, 1). Final share of zero weights. Defaults to `0.5`.
        schedule: str. `"polynomial"` (``PolynomialDecay`` from 0 to ``sparsity`` between
            ``begin_step`` and ``end_step``) or `"constant"` (``ConstantSparsity``). Defaults to
            `"polynomial"`.
        epochs: int >= 1. Fine-tuning epochs. Defaults to `1`.
        steps_per_epoch: int or `None`. Defaults to the dataset's cardinality.
        begin_step, end_step, frequency: int. Schedule steps; ``end_step`` defaults to 80 % of
            all training steps, so the last steps fine-tune at the final sparsity; ``frequency``
            (steps between mask updates) defaults to a tenth of the pruning span, and
            ``end_step`` is moved onto a mask update so the final sparsity is reached.
        global_threshold: bool. One global magnitude threshold (the paper's) instead of the same
            sparsity in every layer. Defaults to `False`.
        layers: list of str or `None`. Layers to prune. Defaults to every Conv and Dense.
        learning_rate, momentum: float. SGD settings of the fine-tuning. Defaults to `1e-3`, `0.9`.
        from_logits: bool or `None`. Whether the model outputs logits; `None` reads the output
            layer's activation.
        verbose: int. Keras fit verbosity. Defaults to `0`.

    Returns:
        ``(pruned keras.Model, {layer name: sparsity})``.
    """
    _check_sparsity(sparsity)
    if schedule not in _SCHEDULES:
        raise ValueError(f"`schedule` must be one of {_SCHEDULES}; received schedule={schedule!r}.")
    if not isinstance(epochs, int) or epochs < 1:
        raise ValueError(f"`epochs` must be a positive integer; received epochs={epochs!r}.")
    names = _prunable_names(model, layers)
    targets = (global_magnitude_sparsities(model, sparsity, names) if global_threshold
               else {n: float(sparsity) for n in names})
    if steps_per_epoch is None:
        steps_per_epoch = int(train_data.cardinality())
        if steps_per_epoch < 1:
            raise ValueError("`steps_per_epoch` is needed: the dataset's length is unknown.")
    total = epochs * steps_per_epoch
    end_step = max(begin_step + 1, int(total * 0.8)) if end_step is None else int(end_step)
    if end_step <= begin_step:
        raise ValueError(f"`end_step` ({end_step}) must come after `begin_step` ({begin_step}).")
    frequency = max(1, (end_step - begin_step) // 10) if frequency is None else int(frequency)
    end_step = begin_step + frequency * -(-(end_step - begin_step) // frequency)

    tf_keras, tfmot = _import_tfmot()
    sparsity_api = tfmot.sparsity.keras
    twin = to_tf_keras(model)

    def make_schedule(target):
        if schedule == "constant":
            return sparsity_api.ConstantSparsity(target, begin_step=begin_step, frequency=frequency)
        return sparsity_api.PolynomialDecay(0.0, target, begin_step=begin_step, end_step=end_step, frequency=frequency)

    def wrap(layer):
        if layer.name in targets and targets[layer.name] > 0:
            return sparsity_api.prune_low_magnitude(layer, pruning_schedule=make_schedule(targets[layer.name]))
        return layer

    pruned = tf_keras.models.clone_model(twin, clone_function=wrap)
    logits = _outputs_logits(model) if from_logits is None else from_logits
    pruned.compile(optimizer=tf_keras.optimizers.SGD(learning_rate, momentum=momentum),
                   loss=tf_keras.losses.SparseCategoricalCrossentropy(from_logits=logits), metrics=["accuracy"])
    pruned.fit(train_data, epochs=epochs, steps_per_epoch=steps_per_epoch, verbose=verbose,
               callbacks=[sparsity_api.UpdatePruningStep()])
    stripped = sparsity_api.strip_pruning(pruned)
    result = keras.models.clone_model(model)
    for layer in result.layers:
        if layer.weights:
            layer.set_weights(stripped.get_layer(layer.name).get_weights())
    return result, weight_sparsity(result, names)


def _outputs_logits(model):
    last = model.layers[-1]
    activation = getattr(last, "activation", None)
    return not (activation is not None and getattr(activation, "__name__", "") == "softmax")


def export_sparse_tflite(model, path=None, *, sparse=True):
    """Converts a Keras 3 model to TFLite, storing pruned tensors sparsely when ``sparse``.

    Args:
        model: keras.Model.
        path: str or `None`. Where to write the flatbuffer (atomically); `None` only returns it.
        sparse: bool. Add ``tf.lite.Optimize.EXPERIMENTAL_SPARSITY``. Defaults to `True`.

    Returns:
        The flatbuffer as bytes.
    """
    import tensorflow as tf

    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    if sparse:
        converter.optimizations = [tf.lite.Optimize.EXPERIMENTAL_SPARSITY]
    flatbuffer = converter.convert()
    if path is not None:
        write_atomic(path, flatbuffer)
    return flatbuffer

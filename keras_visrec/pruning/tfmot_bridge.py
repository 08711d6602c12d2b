"""The tfmot bridge of magnitude pruning: a tf_keras twin pruned by tensorflow-model-optimization.

tfmot 0.8 prunes only tf_keras (Keras 2) models, and importing it sets ``TF_USE_LEGACY_KERAS=1``
for the whole process. This bridge keeps the Keras 3 process intact:

1. :func:`to_tf_keras` rebuilds the model as a tf_keras *twin* (same graph, same layer names,
   same weights; keras_visrec's custom layers have small tf_keras counterparts here);
2. :func:`tfmot_prune` wraps its conv / dense layers with ``prune_low_magnitude``
   (``PolynomialDecay`` or ``ConstantSparsity``), fine-tunes with ``UpdatePruningStep``, calls
   ``strip_pruning`` and copies the sparse weights into a Keras 3 copy of the input model.

tfmot is imported inside :func:`_import_tfmot` only. ``tf.keras`` is resolved first and the
environment variable restored after the import, so Keras 3 code (and ``tf.keras``) keep working
in the same process — tested in ``tests/pruning/test_magnitude.py``. TensorFlow backend only.
Users reach it as ``keras_visrec.pruning.magnitude_prune(..., backend="tfmot")``; the native
Keras 3 implementation (every backend) is :mod:`keras_visrec.pruning.magnitude`.
"""

import inspect
import os

import keras
import numpy as np

from keras_visrec.cifar import ChannelSelection, ShortcutA
from keras_visrec.layers import GRN, GELU, ImageNetNormalization, LayerScale, StochasticDepth
from keras_visrec.pruning.schedules import ConstantSparsity

__all__ = ["tfmot_prune", "to_tf_keras"]

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
    # PointwiseDense, LayerNorm and BatchNorm compute their Keras base's function with its weights and config
    for base in (keras.layers.Dense, keras.layers.LayerNormalization, keras.layers.BatchNormalization):
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



def tfmot_prune(model, schedules, fit_data, fit_kwargs, *, learning_rate, momentum, from_logits):
    """Prunes ``model``'s layers with tfmot while fine-tuning; returns the Keras 3 copy with sparse weights.

    Args:
        model: keras.Model (unchanged).
        schedules: dict ``{layer name: keras_visrec schedule}`` (``PolynomialSparsity`` or
            ``ConstantSparsity``), translated into tfmot's equivalents.
        fit_data, fit_kwargs: the first argument and the keywords of the fine-tuning ``fit``.
        learning_rate, momentum: SGD settings. from_logits: the loss's.
    """
    tf_keras, tfmot = _import_tfmot()
    sparsity_api = tfmot.sparsity.keras
    twin = to_tf_keras(model)

    def tfmot_schedule(schedule):
        if isinstance(schedule, ConstantSparsity):
            return sparsity_api.ConstantSparsity(schedule.target_sparsity, begin_step=schedule.begin_step,
                                                 end_step=schedule.end_step, frequency=schedule.frequency)
        return sparsity_api.PolynomialDecay(schedule.initial_sparsity, schedule.final_sparsity,
                                            begin_step=schedule.begin_step, end_step=schedule.end_step,
                                            power=schedule.power, frequency=schedule.frequency)

    def wrap(layer):
        schedule = schedules.get(layer.name)
        if schedule is not None and schedule.final > 0:
            return sparsity_api.prune_low_magnitude(layer, pruning_schedule=tfmot_schedule(schedule))
        return layer

    pruned = tf_keras.models.clone_model(twin, clone_function=wrap)
    pruned.compile(optimizer=tf_keras.optimizers.SGD(learning_rate, momentum=momentum),
                   loss=tf_keras.losses.SparseCategoricalCrossentropy(from_logits=from_logits), metrics=["accuracy"])
    pruned.fit(fit_data, callbacks=[sparsity_api.UpdatePruningStep()], **fit_kwargs)
    stripped = sparsity_api.strip_pruning(pruned)
    result = keras.models.clone_model(model)
    for layer in result.layers:
        if layer.weights:
            layer.set_weights(stripped.get_layer(layer.name).get_weights())
    return result

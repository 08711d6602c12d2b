"""Graph preparation dispatches on rules registered per layer class, found along the MRO."""

import keras
import numpy as np
import pytest

import keras_visrec
from keras_visrec.tflite import prepare
from keras_visrec.tflite.prepare import export_rule, prepare_graph, register_export_rule

X = np.random.default_rng(0).uniform(0, 255, (2, 8, 8, 3)).astype("float32")


@keras.saving.register_keras_serializable(package="keras_visrec_tests")
class RenamedConv(keras.layers.Conv2D):
    """A subclass that only renames Conv2D: it keeps Conv2D's call, so it keeps Conv2D's rule."""


@keras.saving.register_keras_serializable(package="keras_visrec_tests")
class RenamedScale(keras_visrec.layers.LayerScale):
    pass


@keras.saving.register_keras_serializable(package="keras_visrec_tests")
class Doubled(keras.layers.Dense):
    """Overrides call: the Dense rule would compute something else, so it has no rule."""

    def call(self, inputs):
        return super().call(inputs) * 2.0


class NumpyInside(keras.layers.Layer):
    """Cannot be traced: it calls numpy on its (symbolic) input."""

    def call(self, inputs):
        return inputs + np.asarray(inputs).mean()

    def compute_output_shape(self, input_shape):  # lets the functional model build without calling it
        return input_shape


def _run(prepared, x):
    import tensorflow as tf

    out = prepared.function(tf.constant(x))
    return (out[0] if isinstance(out, (list, tuple)) else out).numpy()


def _model(middle, name="m"):
    keras.utils.set_random_seed(0)
    inputs = keras.Input((8, 8, 3))
    x = keras.layers.Rescaling(1 / 127.5, offset=-1.0, name="rescale")(inputs)
    x = RenamedConv(6, 1, name="conv")(x)
    x = RenamedScale(0.5, name="scale")(x)
    x = middle(x)
    x = keras.layers.GlobalAveragePooling2D(name="pool")(x)
    return keras.Model(inputs, keras.layers.Dense(4, name="head")(x), name=name)


def test_subclasses_keeping_call_find_their_base_rule_through_the_mro():
    model = _model(keras.layers.ReLU(name="relu"))
    assert export_rule(model.get_layer("conv")).layer_class is keras.layers.Conv2D
    assert export_rule(model.get_layer("scale")).layer_class is keras_visrec.layers.LayerScale
    prepared = prepare_graph(model)
    # the renamed classes take part in the exact folds, as their bases do
    assert prepared.folds == ["rescale -> conv (input normalisation)", "scale -> conv (layer scale)"]
    assert prepared.lowered["RenamedConv"] == "CONV_2D" and prepared.unruled == {}
    np.testing.assert_allclose(_run(prepared, X[:1]), model.predict(X[:1], verbose=0), atol=1e-4)


def test_a_layer_without_rule_is_reported_and_called_as_is(tmp_path):
    model = _model(Doubled(6, name="doubled"))
    assert export_rule(model.get_layer("doubled")) is None  # Dense's rule would drop the * 2
    prepared = prepare_graph(model)
    assert prepared.unruled == {"doubled": "Doubled"}
    assert prepared.lowered["Doubled"] == "no export rule: called as is"
    np.testing.assert_allclose(_run(prepared, X[:1]), model.predict(X[:1], verbose=0), atol=1e-4)
    pytest.importorskip("ai_edge_litert")
    report = keras_visrec.export_tflite(model, tmp_path / "m.tflite", validation_data=X)
    assert any("no export rule for 1 layer(s) (Doubled: doubled)" in problem for problem in report.problems)
    assert report.agreement["max_abs_diff"] < 1e-4


def test_a_layer_without_rule_that_cannot_be_traced_fails_naming_it():
    model = _model(NumpyInside(name="numpy_inside"))
    with pytest.raises(TypeError, match=r"'numpy_inside' \(NumpyInside\) has no export rule"):
        prepare_graph(model)


def test_a_registered_rule_is_used_and_inherited():
    class Scaled(keras.layers.Layer):
        def call(self, inputs):
            return inputs * 3.0

    class Scaled2(Scaled):
        pass

    def emit(layer, inputs, context):
        context.note(layer, "MUL by 3")
        return inputs[0] * 3.0

    register_export_rule(Scaled)(emit)
    try:
        assert export_rule(Scaled2()).layer_class is Scaled
        model = _model(Scaled2(name="scaled"))
        prepared = prepare_graph(model)
        assert prepared.lowered["Scaled2"] == "MUL by 3" and not prepared.unruled
        np.testing.assert_allclose(_run(prepared, X[:1]), model.predict(X[:1], verbose=0), atol=1e-4)
    finally:
        prepare._RULES.pop(Scaled)
    with pytest.raises(ValueError, match="fold"):
        register_export_rule(Scaled, fold="sideways")
    with pytest.raises(TypeError, match="Layer subclasses"):
        register_export_rule(int)


def test_nested_functional_models_and_the_packaged_convnext_block_are_walked_by_the_rules():
    keras.utils.set_random_seed(0)
    inner_in = keras.Input((4, 4, 8))
    y = keras_visrec.layers.LayerNorm(epsilon=1e-6, name="inner_norm")(inner_in)
    y = keras_visrec.layers.PointwiseDense(8, activation="gelu", name="inner_dense")(y)
    inner = keras.Model(inner_in, y, name="inner")
    inputs = keras.Input((8, 8, 3))
    x = keras.layers.Conv2D(8, 2, strides=2, name="stem")(inputs)
    x = keras_visrec.layers.ConvNeXtBlock(layer_scale_init_value=0.5, name="block")(x)
    x = inner(x)
    model = keras.Model(inputs, keras.layers.GlobalAveragePooling2D()(x))
    prepared = prepare_graph(model, layernorm="reduce")
    assert prepared.lowered["Functional"] == "nested model: walked layer by layer"
    assert prepared.lowered["ConvNeXtBlock"] == "its sublayers, each by its rule"
    assert prepared.lowered["PointwiseDense"] == "CONV_2D" and prepared.lowered["LayerNorm"] == "layernorm=reduce"
    assert "inner_norm scale/shift -> inner_dense" in prepared.folds and not prepared.unruled
    np.testing.assert_allclose(_run(prepared, X[:1]), model.predict(X[:1], verbose=0), atol=1e-4)


def test_export_needs_the_tensorflow_backend(monkeypatch, tmp_path):
    monkeypatch.setattr(keras.backend, "backend", lambda: "jax")
    with pytest.raises(RuntimeError, match="TensorFlow Keras backend.*'jax'"):
        keras_visrec.export_tflite(_model(keras.layers.ReLU()), tmp_path / "m.tflite")


@pytest.mark.parametrize("build", [
    lambda: keras_visrec.cifar.CIFARResNet(8, name="r"),
    lambda: keras_visrec.cifar.CIFARPreResNet(11, name="p"),
    lambda: keras_visrec.cifar.CIFARDenseNet(10, growth_rate=4, name="d"),
])
def test_cifar_graphs_have_a_rule_for_every_layer(build):
    model = build()
    prepared = prepare_graph(model)
    assert prepared.unruled == {}, prepared.lowered
    x = np.random.default_rng(1).uniform(0, 255, (1, 32, 32, 3)).astype("float32")
    np.testing.assert_allclose(_run(prepared, x), model.predict(x, verbose=0), atol=1e-4)

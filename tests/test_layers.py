"""Layers: numerics against numpy, training/inference behaviour, serialization round trips."""

import math

import keras
import numpy as np
import pytest

from keras_visrec import layers as kl


def _roundtrip(layer, x):
    """Wraps ``layer`` in a model, saves and reloads it without custom_objects."""
    import os
    import tempfile

    inputs = keras.Input(x.shape[1:])
    model = keras.Model(inputs, layer(inputs))
    path = os.path.join(tempfile.mkdtemp(), "m.keras")
    model.save(path)
    return model, keras.models.load_model(path)


def test_layer_scale_multiplies_channels_and_reloads():
    layer = kl.LayerScale(0.5)
    x = np.random.rand(2, 4, 4, 3).astype("float32")
    model, reloaded = _roundtrip(layer, x)
    np.testing.assert_allclose(model(x), 0.5 * x, rtol=1e-6)
    np.testing.assert_allclose(reloaded(x), model(x))
    assert layer.gamma.shape == (3,)


def test_stochastic_depth_is_identity_at_inference_and_drops_whole_samples_in_training():
    layer = kl.StochasticDepth(0.5, seed=1)
    x = np.ones((256, 3, 3, 4), "float32")
    np.testing.assert_array_equal(layer(x, training=False), x)
    y = keras.ops.convert_to_numpy(layer(x, training=True))
    per_sample = y.reshape(256, -1)
    # every sample is either dropped entirely or scaled by 1 / keep
    assert set(np.unique(per_sample.round(5))) <= {0.0, 2.0}
    assert np.all(per_sample.min(1) == per_sample.max(1))
    assert 0.3 < (per_sample[:, 0] == 0).mean() < 0.7
    assert abs(y.mean() - 1.0) < 0.2  # expectation preserved


@pytest.mark.parametrize("rate", [-0.1, 1.0, 1.5])
def test_stochastic_depth_rejects_rates_outside_unit_interval(rate):
    with pytest.raises(ValueError, match="rate"):
        kl.StochasticDepth(rate)


def test_grn_matches_numpy_formula():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(2, 5, 6, 8)).astype("float32")
    layer = kl.GRN()
    layer.build(x.shape)
    gamma, beta = rng.normal(size=8).astype("float32"), rng.normal(size=8).astype("float32")
    layer.set_weights([gamma, beta])
    gx = np.sqrt((x ** 2).sum(axis=(1, 2), keepdims=True))
    nx = gx / (gx.mean(axis=-1, keepdims=True) + 1e-6)
    expected = gamma * (x * nx) + beta + x
    np.testing.assert_allclose(keras.ops.convert_to_numpy(layer(x)), expected, rtol=1e-5, atol=1e-5)


def test_grn_starts_as_identity_and_reloads():
    x = np.random.rand(2, 4, 4, 6).astype("float32")
    model, reloaded = _roundtrip(kl.GRN(), x)
    np.testing.assert_allclose(model(x), x, rtol=1e-6)
    np.testing.assert_allclose(reloaded(x), x, rtol=1e-6)


def test_gelu_forms():
    x = np.linspace(-6, 6, 2001).astype("float32")
    exact = 0.5 * x * (1 + np.vectorize(math.erf)(x / math.sqrt(2)))
    np.testing.assert_allclose(kl.GELU("exact")(x), exact, atol=1e-6)
    tanh = keras.ops.convert_to_numpy(kl.GELU("tanh")(x))
    cubic = keras.ops.convert_to_numpy(kl.GELU("tanh_cubic")(x))
    np.testing.assert_allclose(cubic, tanh, atol=1e-6)
    assert np.abs(cubic - exact).max() < 1e-3  # the known ~5e-4 approximation error
    with pytest.raises(ValueError, match="form"):
        kl.GELU("fast")


def test_imagenet_normalization_maps_0_255_to_standard_scores():
    layer = kl.ImageNetNormalization()
    x = np.full((1, 2, 2, 3), 255.0 * np.array([0.485, 0.456, 0.406]), "float32")
    np.testing.assert_allclose(layer(x), 0.0, atol=1e-5)
    x = np.full((1, 1, 1, 3), 255.0, "float32")
    expected = (1 - np.array([0.485, 0.456, 0.406])) / np.array([0.229, 0.224, 0.225])
    np.testing.assert_allclose(keras.ops.convert_to_numpy(layer(x))[0, 0, 0], expected, rtol=1e-5)


@pytest.mark.parametrize("dtype", ["float32", "mixed_bfloat16"])
def test_layer_norm_equals_keras_layer_normalization_and_reloads(dtype):
    rng = np.random.default_rng(0)
    x = (3 * rng.standard_normal((2, 5, 5, 8)) + 2).astype("float32")
    ours = kl.LayerNorm(epsilon=1e-6, dtype=dtype)
    ours.build(x.shape)
    ours.set_weights([rng.standard_normal(8).astype("float32"), rng.standard_normal(8).astype("float32")])
    reference = keras.layers.LayerNormalization(epsilon=1e-6, dtype=dtype)
    reference.build(x.shape)
    reference.set_weights(ours.get_weights())
    got, want = (keras.ops.convert_to_numpy(keras.ops.cast(layer(x), "float32")) for layer in (ours, reference))
    np.testing.assert_allclose(got, want, atol=2e-6 if dtype == "float32" else 2e-2)
    assert isinstance(ours, keras.layers.LayerNormalization)
    model, reloaded = _roundtrip(kl.LayerNorm(epsilon=1e-6), x)
    assert type(reloaded.layers[-1]) is kl.LayerNorm
    np.testing.assert_allclose(reloaded(x), model(x))


def test_layer_norm_falls_back_to_keras_for_other_axes():
    x = np.random.default_rng(1).standard_normal((2, 3, 4)).astype("float32")
    ours, reference = kl.LayerNorm(axis=1), keras.layers.LayerNormalization(axis=1)
    np.testing.assert_allclose(ours(x), reference(x), atol=1e-6)


def test_pointwise_dense_equals_dense_on_4d_input():
    x = np.random.rand(2, 3, 5, 4).astype("float32")
    pointwise = kl.PointwiseDense(6, activation="gelu")
    dense = keras.layers.Dense(6, activation="gelu")
    pointwise.build(x.shape)
    dense.build(x.shape)
    dense.set_weights(pointwise.get_weights())
    np.testing.assert_allclose(pointwise(x), dense(x), rtol=1e-5, atol=1e-6)


def test_exportable_switch_builds_export_forms_and_restores_state():
    assert not kl.is_exportable()
    assert isinstance(kl.make_pointwise(4), kl.PointwiseDense)
    with kl.exportable():
        assert kl.is_exportable()
        conv = kl.make_pointwise(4, activation="gelu")
        assert isinstance(conv, keras.layers.Conv2D) and conv.kernel_size == (1, 1)
        assert kl.make_gelu().form == "tanh_cubic"
        with kl.exportable(gelu_form="exact"):
            assert kl.make_gelu().form == "exact"
        assert kl.make_gelu().form == "tanh_cubic"
    assert not kl.is_exportable() and kl.make_gelu().form == "exact"
    with pytest.raises(ValueError, match="gelu_form"):
        kl.set_exportable(True, gelu_form="sigmoid")
    with pytest.raises(ValueError, match="activation"):
        kl.make_pointwise(4, activation="relu")


@pytest.mark.parametrize("use_grn,layer_scale", [(False, 0.3), (True, None)])
def test_convnext_block_layer_matches_the_builders_flat_block(use_grn, layer_scale):
    from keras_visrec.convnext import _block

    x = np.random.rand(2, 8, 8, 16).astype("float32")
    inputs = keras.Input((8, 8, 16))
    flat = keras.Model(inputs, _block(inputs, 16, prefix="b", drop_path=0.0, layer_scale=layer_scale, use_grn=use_grn))
    block = kl.ConvNeXtBlock(layer_scale_init_value=layer_scale, use_grn=use_grn)
    block.build(x.shape)
    parts = ["depthwise_conv", "layernorm", "pointwise_conv_1", "pointwise_conv_2"]
    parts += ["grn"] if use_grn else ["layer_scale"]
    rng = np.random.default_rng(0)
    for part in parts:
        flat_layer = flat.get_layer(f"b_{part}")
        values = [v + 0.1 * rng.normal(size=v.shape).astype("float32") for v in flat_layer.get_weights()]
        flat_layer.set_weights(values)
        getattr(block, part).set_weights(values)
    np.testing.assert_allclose(block(x), flat(x), rtol=1e-5, atol=1e-5)
    model, reloaded = _roundtrip(block, x)
    np.testing.assert_allclose(reloaded(x), model(x), rtol=1e-6)


def _bn_training_step(layer, x, fused):
    import tensorflow as tf

    with kl.fused_training(fused):
        @tf.function
        def step(x):
            with tf.GradientTape() as tape:
                tape.watch(x)
                y = layer(x, training=True)
                loss = tf.reduce_sum(y * tf.cos(y))
            return y, tape.gradient(loss, [x] + layer.trainable_weights)

        y, grads = step(x)
    return [y.numpy()] + [g.numpy() for g in grads] + [layer.moving_mean.numpy(), layer.moving_variance.numpy()]


@pytest.mark.parametrize("options", [dict(momentum=0.9, epsilon=1e-5), dict(scale=False, center=False)])
def test_batch_norm_fused_training_step_equals_keras(options):
    import tensorflow as tf

    rng = np.random.default_rng(0)
    x = tf.constant(rng.normal(2.0, 3.0, (4, 7, 5, 6)).astype("float32"))
    fused, plain = kl.BatchNorm(**options), kl.BatchNorm(**options)
    fused.build(x.shape)
    plain.build(x.shape)
    for a, b in zip(fused.weights, plain.weights):
        value = rng.uniform(0.5, 1.5, a.shape).astype("float32")
        a.assign(value)
        b.assign(value)
    ours, reference = _bn_training_step(fused, x, True), _bn_training_step(plain, x, False)
    for a, b in zip(ours, reference):  # outputs, input and parameter gradients, both moving statistics
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5 * max(1.0, float(np.abs(b).max())))
    assert not np.allclose(reference[-1], 1.0)  # the moving variance did move
    graph = tf.function(lambda t: fused(t, training=True)).get_concrete_function(x).graph
    assert "FusedBatchNormV3" in {op.type for op in graph.get_operations()}
    reloaded = keras.layers.deserialize(keras.layers.serialize(fused))
    assert isinstance(reloaded, kl.BatchNorm) and isinstance(reloaded, keras.layers.BatchNormalization)


def test_batch_norm_keeps_keras_path_where_fusing_does_not_apply():
    import tensorflow as tf

    x = tf.ones((2, 3, 4))
    layer = kl.BatchNorm(axis=1)  # not channels-last rank 4: Keras's own code
    graph = tf.function(lambda t: layer(t, training=True)).get_concrete_function(x).graph
    assert "FusedBatchNormV3" not in {op.type for op in graph.get_operations()}
    image = tf.ones((1, 2, 2, 3))
    layer = kl.BatchNorm()
    inference = tf.function(lambda t: layer(t, training=False)).get_concrete_function(image).graph
    assert "FusedBatchNormV3" not in {op.type for op in inference.get_operations()}


@pytest.mark.parametrize("options", [dict(kernel_size=3, padding="same"), dict(kernel_size=3, strides=2),
                                     dict(kernel_size=1, use_bias=False), dict(kernel_size=3, padding="same",
                                                                               dilation_rate=2)])
def test_conv2d_off_onednn_equals_keras_conv2d_forward_and_backward(onednn_rewrites, options):
    import tensorflow as tf

    from keras_visrec.layers.conv import tf_conv2d

    rng = np.random.default_rng(0)
    x = tf.constant(rng.normal(size=(2, 9, 11, 5)).astype("float32"))
    ours, plain = kl.Conv2D(7, **options), keras.layers.Conv2D(7, **options)
    ours.build(x.shape)
    plain.build(x.shape)
    for a, b in zip(ours.weights, plain.weights):
        value = rng.normal(size=a.shape).astype("float32")
        a.assign(value)
        b.assign(value)

    def step(layer):
        with tf.GradientTape() as tape:
            tape.watch(x)
            y = layer(x)
            loss = tf.reduce_sum(y * tf.cos(y))
        return [y.numpy()] + [g.numpy() for g in tape.gradient(loss, [x] + layer.trainable_weights)]

    for a, b in zip(step(ours), step(plain)):  # output, input gradient, kernel (and bias) gradients
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5 * max(1.0, float(np.abs(b).max())))
    graph = tf.function(lambda t: ours(t)).get_concrete_function(x).graph
    generic = "dilation_rate" not in options  # dilated: Keras's Conv2D (no dilated CPU gradient kernels)
    assert ("Conv" in {op.type for op in graph.get_operations()}) == generic  # the op oneDNN does not rewrite
    assert ("Conv2D" in {op.type for op in graph.get_operations()}) != generic
    with kl.fused_training(False):  # the switch: Keras's own graph
        graph = tf.function(lambda t: ours(t)).get_concrete_function(x).graph
    assert "Conv2D" in {op.type for op in graph.get_operations()}
    y = tf_conv2d(x, ours.kernel, (2, 2), "valid") if options.get("strides") == 2 else None
    if y is not None:
        np.testing.assert_allclose(y.numpy(), tf.nn.conv2d(x, ours.kernel, 2, "VALID").numpy(), rtol=1e-5, atol=1e-5)
    reloaded = keras.layers.deserialize(keras.layers.serialize(ours))
    assert isinstance(reloaded, kl.Conv2D) and reloaded.get_config() == ours.get_config()


def test_on_avx512_cpus_narrow_convs_stay_on_onednn_and_wide_ones_take_the_generic_op(onednn_rewrites, monkeypatch):
    import tensorflow as tf

    from keras_visrec.layers import conv

    x = tf.zeros((1, 8, 8, 5))
    layer = kl.Conv2D(4, 3, padding="same")
    layer.build(x.shape)

    def op_types():
        return {op.type for op in tf.function(lambda t: layer(t)).get_concrete_function(x).graph.get_operations()}

    assert conv.conv_routing() == "generic" and "Conv" in op_types()  # AVX2 (the fixture): the generic op
    monkeypatch.setattr(conv, "_cpu_has_avx512", lambda: True)
    assert conv.conv_routing() == "onednn-narrow"
    assert "Conv2D" in op_types() and "Conv" not in op_types()  # 5 < ONEDNN_MAX_CHANNELS input channels
    monkeypatch.setattr(conv, "ONEDNN_MAX_CHANNELS", 5)
    assert "Conv" in op_types() and "Conv2D" not in op_types()  # as wide as the threshold: the generic op
    with kl.fused_training(False):
        assert conv.conv_routing() == "tf"


@pytest.mark.parametrize("shape, filters, chunk_bytes", [((2, 67, 63, 24), 16, None), ((1, 8, 8, 24), 8, 4096),
                                                         ((1, 5, 3, 24), 8, None)])
def test_wide_3x3_convs_take_winograd_equal_to_the_direct_conv_with_its_gradients(onednn_rewrites, monkeypatch,
                                                                                   shape, filters, chunk_bytes):
    """Winograd F(2x2, 3x3) (thresholds lowered to these small shapes): odd and even sides, several chunks of
    tile rows; the forward and the input gradient (Winograd too: 16 upstream channels) equal the direct conv's
    to float32 rounding, the kernel gradient is the direct conv's op."""
    import tensorflow as tf

    from keras_visrec.layers import conv

    monkeypatch.setattr(conv, "WINOGRAD_MIN_CHANNELS", 16)
    monkeypatch.setattr(conv, "WINOGRAD_MIN_PIXELS", 1)
    if chunk_bytes:
        monkeypatch.setattr(conv, "WINOGRAD_CHUNK_BYTES", chunk_bytes)  # 8x8: one tile row per chunk
    rng = np.random.default_rng(1)
    x = tf.constant(rng.normal(size=shape).astype("float32"))
    layer = kl.Conv2D(filters, 3, padding="same")
    layer.build(x.shape)
    layer.kernel.assign(rng.normal(size=layer.kernel.shape).astype("float32"))
    layer.bias.assign(rng.normal(size=layer.bias.shape).astype("float32"))
    upstream = tf.constant(rng.normal(size=shape[:3] + (filters,)).astype("float32"))

    def step(function):
        with tf.GradientTape() as tape:
            tape.watch(x)
            y = function(x)
        return [y, *tape.gradient(y, [x, layer.kernel], upstream)]

    graph = tf.function(lambda t: layer(t)).get_concrete_function(x).graph
    calls = [op for op in graph.get_operations() if "_XlaMustCompile" in op.node_def.attr]
    tiles = -(-shape[1] // 2)
    assert "Conv" not in {op.type for op in graph.get_operations()}
    assert len(calls) == 2 * (tiles if chunk_bytes else 1)  # tile transform + untile per chunk
    ours = step(layer)
    direct = step(lambda t: tf.nn.conv2d(t, layer.kernel, 1, "SAME") + layer.bias)
    errors = [float(tf.reduce_max(tf.abs(a - b)) / tf.reduce_max(tf.abs(b))) for a, b in zip(ours, direct)]
    print(f"Winograd {shape}->{filters}: output, input gradient, kernel gradient relative errors {errors}")
    assert max(errors) <= 1e-5
    assert not conv.winograd_applies((1, 64, 64, 8), (3, 3, 8, 8))  # under the channel threshold
    assert not conv.winograd_applies(shape, (3, 3, 24, 8), strides=(2, 2))
    assert not conv.winograd_applies((1, None, None, 24), (3, 3, 24, 8))  # the map size must be static

"""The fused training paths compute the same step as straightforward autodiff.

``keras_visrec.layers.fused`` replaces autodiff of GELU and LayerNorm with hand-written XLA
forward/backward kernels, and ``LayerDecayAdamW`` applies Adam with TensorFlow's one-kernel
``ResourceApplyAdam``. Each is checked against a plain implementation: Keras' own layers and
autodiff, and Keras' generic Adam step, to <= 1e-4 relative (the max absolute difference over
the max magnitude of the reference, per tensor).
"""

import os
import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf

import keras_visrec as kv
from keras_visrec.layers import LayerNorm, PointwiseDense
from keras_visrec.layers import conv as conv_module
from keras_visrec.layers import fused
from keras_visrec.layers.conv import _onednn_on_cpu_only
from keras_visrec.layers.fused import fused_training
from keras_visrec.recipe.optim import convnext_adamw
from keras_visrec.training import PHASES, profile_train_step

_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TOLERANCE = 1e-4


def _relative(actual, reference):
    actual, reference = np.asarray(actual, "float64"), np.asarray(reference, "float64")
    return float(np.abs(actual - reference).max() / max(np.abs(reference).max(), 1e-30))


def _tiny(**kwargs):
    return kv.ConvNeXt((1, 1, 1, 1), (8, 16, 32, 64), input_shape=(32, 32, 3), classes=10,
                       classifier_activation=None, name="tiny", **kwargs)


def _randomise(model, seed=0):
    """Every weight random (LayerNorm γ/β and layer scale far from their identity init)."""
    rng = np.random.default_rng(seed)
    for variable in model.weights:
        scale = 0.5 if len(variable.shape) <= 1 else 0.1
        variable.assign(rng.normal(0.0, scale, variable.shape).astype(variable.dtype))


def _xla_calls(graph):
    return [op for op in graph.get_operations() if op.type in ("PartitionedCall", "StatefulPartitionedCall")
            and op.get_attr("_XlaMustCompile") if "_XlaMustCompile" in op.node_def.attr]


def test_fused_layer_norm_forward_and_gradients_equal_keras_layer_normalization():
    rng = np.random.default_rng(1)
    x = tf.constant(rng.normal(2.0, 3.0, (2, 6, 6, 24)).astype("float32"))
    upstream = tf.constant(rng.normal(size=(2, 6, 6, 24)).astype("float32"))
    ours, reference = LayerNorm(epsilon=1e-6), keras.layers.LayerNormalization(epsilon=1e-6)
    ours.build(x.shape), reference.build(x.shape)
    gamma, beta = rng.normal(size=24).astype("float32"), rng.normal(size=24).astype("float32")
    for layer in (ours, reference):
        layer.gamma.assign(gamma)
        layer.beta.assign(beta)

    def run(layer, **kwargs):
        with tf.GradientTape() as tape:
            tape.watch(x)
            y = layer(x, **kwargs)
        return [y, *tape.gradient(y, [x, layer.gamma, layer.beta], upstream)]

    fused_result = tf.function(lambda: run(ours, training=True))()
    reference_result = run(reference)
    errors = [_relative(a, b) for a, b in zip(fused_result, reference_result)]
    print("fused LayerNorm vs keras.layers.LayerNormalization (y, dx, dgamma, dbeta):", errors)
    assert max(errors) <= TOLERANCE


def test_fused_gelu_forward_and_gradient_equal_exact_gelu_autodiff():
    rng = np.random.default_rng(2)
    z = tf.constant(rng.normal(0.0, 3.0, (64, 40)).astype("float32"))
    upstream = tf.constant(rng.normal(size=(64, 40)).astype("float32"))

    def run(function):
        with tf.GradientTape() as tape:
            tape.watch(z)
            y = function(z)
        return [y, tape.gradient(y, z, upstream)]

    errors = [_relative(a, b) for a, b in zip(tf.function(lambda: run(fused.gelu))(),
                                              run(lambda t: keras.activations.gelu(t, approximate=False)))]
    print("fused GELU vs keras.activations.gelu autodiff (y, dz):", errors)
    assert max(errors) <= TOLERANCE


def test_fused_gelu_in_bfloat16_is_float32_gelu_rounded():
    rng = np.random.default_rng(5)
    z = tf.cast(tf.constant(rng.normal(0.0, 3.0, (64, 40)).astype("float32")), tf.bfloat16)
    upstream = tf.cast(tf.constant(rng.normal(size=(64, 40)).astype("float32")), tf.bfloat16)

    def run(function, t, u):
        with tf.GradientTape() as tape:
            tape.watch(t)
            y = function(t)
        return [y, tape.gradient(y, t, u)]

    ours = tf.function(lambda: run(fused.gelu, z, upstream))()
    assert [t.dtype for t in ours] == [tf.bfloat16, tf.bfloat16]
    wide = run(lambda t: keras.activations.gelu(t, approximate=False), tf.cast(z, tf.float32),
               tf.cast(upstream, tf.float32))
    errors = [_relative(a, b) for a, b in zip(ours, wide)]
    print("fused GELU in bfloat16 vs float32 GELU autodiff on the same values (y, dz):", errors)
    assert max(errors) <= 2.0 ** -8  # one bfloat16 rounding of the float32 result


def test_mixed_bfloat16_step_takes_the_fused_gelu_and_float32_depthwise_convs():
    """Under ``mixed_bfloat16`` the training step runs GELU as XLA kernels and, on TensorFlow's oneDNN
    CPU path, the depthwise convs in float32 (oneDNN's bfloat16 depthwise gradients are slow); its gradients are at least as close to a
    float32 step's as the plain bfloat16 step's are."""
    x = np.random.default_rng(6).uniform(0, 255, (4, 32, 32, 3)).astype("float32")
    y = np.arange(4)
    loss_fn = keras.losses.SparseCategoricalCrossentropy(from_logits=True)

    def step(model):
        with tf.GradientTape() as tape:
            loss = loss_fn(y, tf.cast(model(x, training=True), tf.float32))
        return tape.gradient(loss, model.trainable_variables)

    reference_model = _tiny(drop_path_rate=0.0)
    _randomise(reference_model)
    reference = tf.function(lambda: step(reference_model))()
    previous = keras.mixed_precision.global_policy()
    keras.mixed_precision.set_global_policy("mixed_bfloat16")
    try:
        model = _tiny(drop_path_rate=0.0)
        model.set_weights(reference_model.get_weights())
        fast = tf.function(lambda: step(model))
        with fused_training(False):
            plain = tf.function(lambda: step(model))
            plain_graph = plain.get_concrete_function().graph
            plain_gradients = plain()
        fast_graph = fast.get_concrete_function().graph
        fast_gradients = fast()
    finally:
        keras.mixed_precision.set_global_policy(previous)

    def depthwise_dtypes(graph):
        return {op.get_attr("T").name for op in graph.get_operations() if op.type.startswith("DepthwiseConv2dNative")}

    # float32 only where oneDNN runs the convs (TensorFlow turns it off by default on CPUs without
    # AVX-512 VNNI / AMX): Eigen's bfloat16 depthwise gradients are not the slow ones
    widened = "float32" if _onednn_on_cpu_only() else "bfloat16"
    assert depthwise_dtypes(fast_graph) == {widened} and depthwise_dtypes(plain_graph) == {"bfloat16"}
    assert _xla_calls(fast_graph) and not _xla_calls(plain_graph)

    def worst(gradients):
        return max(_relative(a, b) for a, b in zip(gradients, reference))

    fast_error, plain_error = worst(fast_gradients), worst(plain_gradients)
    print(f"mixed_bfloat16 step vs float32 step, worst relative gradient difference: fused {fast_error:.2e}, "
          f"plain {plain_error:.2e}")
    assert fast_error <= 1.5 * plain_error and fast_error <= 0.1


def test_one_training_step_has_the_gradients_of_plain_autodiff():
    model = _tiny(drop_path_rate=0.0)
    _randomise(model)
    x = np.random.default_rng(3).uniform(0, 255, (4, 32, 32, 3)).astype("float32")
    y = np.arange(4)
    loss_fn = keras.losses.SparseCategoricalCrossentropy(from_logits=True)

    def step():
        with tf.GradientTape() as tape:
            loss = loss_fn(y, model(x, training=True))
        return tape.gradient(loss, model.trainable_variables)

    fast = tf.function(step)
    assert _xla_calls(fast.get_concrete_function().graph), "the fused path was not taken"
    with fused_training(False):
        plain = tf.function(step)
        assert not _xla_calls(plain.get_concrete_function().graph)
        reference = plain()
    errors = {v.path: _relative(a, b) for v, a, b in zip(model.trainable_variables, fast(), reference)}
    worst = max(errors, key=errors.get)
    print(f"one step, {len(errors)} gradients: worst relative difference {errors[worst]:.2e} ({worst}); "
          f"median {np.median(list(errors.values())):.2e}")
    assert errors[worst] <= TOLERANCE


@pytest.mark.parametrize("shape, kernel", [((6, 9, 11, 5), (7, 7)), ((1, 4, 4, 3), (3, 5)), ((8, 7, 7, 16), (7, 7))])
@pytest.mark.parametrize("min_elements", [1, conv_module.DEPTHWISE_GRAD_MIN_ELEMENTS])
def test_swapped_depthwise_kernel_gradient_equals_tensorflows(shape, kernel, min_elements, monkeypatch):
    """Groups of 4 images with a remainder (``min_elements=1``: 6 = 4 + 2), one group of the whole batch (the
    default on these small maps), a single image, a non-square kernel."""
    monkeypatch.setattr(conv_module, "DEPTHWISE_GRAD_MIN_ELEMENTS", min_elements)
    rng = np.random.default_rng(7)
    x, upstream = (tf.constant(rng.normal(size=shape).astype("float32")) for _ in range(2))
    reference = tf.compat.v1.nn.depthwise_conv2d_native_backprop_filter(x, (*kernel, shape[-1], 1), upstream,
                                                                         [1, 1, 1, 1], "SAME")
    swapped = conv_module.swapped_depthwise_kernel_gradient(x, upstream, kernel)
    assert swapped.shape == reference.shape
    assert _relative(swapped, reference) <= 1e-5


def test_convnext_step_with_the_swapped_depthwise_gradient_has_the_gradients_of_plain_autodiff(monkeypatch):
    """Forced on (CI's CPU runs TensorFlow without oneDNN, where the layer keeps TensorFlow's own kernel
    gradient): the training graph has no depthwise kernel-gradient op, and the step's gradients are plain autodiff's."""
    monkeypatch.setattr(conv_module, "_onednn_on_cpu_only", lambda: True)
    model = _tiny(drop_path_rate=0.0)
    _randomise(model, seed=1)
    x = np.random.default_rng(8).uniform(0, 255, (5, 32, 32, 3)).astype("float32")
    y = np.arange(5) % 10
    loss_fn = keras.losses.SparseCategoricalCrossentropy(from_logits=True)

    def step():
        with tf.GradientTape() as tape:
            loss = loss_fn(y, model(x, training=True))
        return tape.gradient(loss, model.trainable_variables)

    def op_types(fn):
        return {op.type for op in fn.get_concrete_function().graph.get_operations()}

    fast = tf.function(step)
    assert "DepthwiseConv2dNativeBackpropFilter" not in op_types(fast)
    with fused_training(False):
        plain = tf.function(step)
        assert "DepthwiseConv2dNativeBackpropFilter" in op_types(plain)
        reference = plain()
    errors = {v.path: _relative(a, b) for v, a, b in zip(model.trainable_variables, fast(), reference)}
    print(f"swapped depthwise kernel gradient, one step: worst relative difference {max(errors.values()):.2e}")
    assert max(errors.values()) <= TOLERANCE
    # eagerly too (a custom gradient that read the kernel variable itself would fail here)
    assert max(_relative(a, b) for a, b in zip(step(), reference)) <= TOLERANCE
    # inference, strided, dilated, even-kernel, "valid" and unknown-batch convs keep Keras' own path
    x = tf.zeros((2, 8, 8, 4))
    same = kv.layers.DepthwiseConv2D(7, padding="same")
    assert same._swaps_kernel_gradient(x, True) and not same._swaps_kernel_gradient(x, False)
    assert not same._swaps_kernel_gradient(keras.KerasTensor((None, 8, 8, 4)), True)
    assert not same._swaps_kernel_gradient(tf.zeros((0, 8, 8, 4)), True)  # an empty batch: nothing to group
    for kwargs in (dict(strides=2, padding="same"), dict(dilation_rate=2, padding="same"), dict(padding="valid")):
        assert not kv.layers.DepthwiseConv2D(3, **kwargs)._swaps_kernel_gradient(x, True)
    assert not kv.layers.DepthwiseConv2D(4, padding="same")._swaps_kernel_gradient(x, True)


def test_inference_graph_and_other_dtypes_keep_the_generic_path():
    model = _tiny()
    x = np.zeros((1, 32, 32, 3), "float32")
    assert not _xla_calls(tf.function(lambda: model(x, training=False)).get_concrete_function().graph)
    assert fused.fused_enabled(True, "float32") and not fused.fused_enabled(False, "float32")
    assert not fused.fused_enabled(True, "bfloat16") and fused.fused_enabled(True, "bfloat16", half=True)
    dense = PointwiseDense(6, activation="gelu", dtype="mixed_bfloat16")
    dense.build((None, 4))
    assert dense._fuses_gelu(True, "bfloat16") and not dense._fuses_gelu(False, "bfloat16")
    assert not dense._fuses_gelu(True, "int8")
    with fused_training(False):
        assert not fused.fused_enabled(True, "float32")
    assert fused.fused_enabled(True, "float32")


def test_fused_adamw_step_equals_keras_generic_adam_step():
    rng = np.random.default_rng(4)
    shapes = [(3, 3, 1, 8), (8, 32), (32,), (5,)]
    initial = [rng.normal(size=s).astype("float32") for s in shapes]
    grads = [[rng.normal(size=s).astype("float32") * 10.0 ** -k for k, s in enumerate(shapes)] for _ in range(3)]

    def run(enabled):
        variables = [keras.Variable(value, name=f"w{i}") for i, value in enumerate(initial)]
        optimizer = kv.LayerDecayAdamW(lr_scales={variables[0].path: 0.25}, learning_rate=1e-2, weight_decay=0.05)
        optimizer.exclude_from_weight_decay(var_list=variables[2:])
        apply = tf.function(lambda g: optimizer.apply(g, variables))
        with fused_training(enabled):
            for step in grads:
                apply([tf.constant(g) for g in step])
        states = [optimizer._momentums[optimizer._get_variable_index(v)] for v in variables]
        states += [optimizer._velocities[optimizer._get_variable_index(v)] for v in variables]
        return [v.numpy() for v in variables + states]

    errors = [_relative(a, b) for a, b in zip(run(True), run(False))]
    print("ResourceApplyAdam vs Keras' Adam step, 3 steps (weights, m, v):", ["%.1e" % e for e in errors])
    # The kernel forms 1 - β₂ in float32 (Keras in float64): v differs by ~1.3e-5 relative.
    assert max(errors) <= TOLERANCE


def test_profile_splits_a_fused_training_step_and_the_trained_model_reloads(tmp_path):
    model = _tiny(drop_path_rate=0.1)
    model.compile(convnext_adamw(model), loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    x, y = np.random.default_rng(5).uniform(0, 255, (2, 32, 32, 3)).astype("float32"), np.arange(2)
    profile = profile_train_step(model, x, y, steps=1, warmup=1)
    phases = profile.by_phase()
    assert {"forward", "backward", "optimizer"} <= set(phases) <= set(PHASES)
    assert sum(entry["ms"] for entry in profile.entries) == pytest.approx(profile.busy_ms, rel=1e-6)
    assert 0 < profile.busy_ms <= profile.step_ms
    assert "ResourceApplyAdam" in profile.by_type()
    assert "backward" in profile.table() and "ResourceApplyAdam" in profile.table()
    with pytest.raises(ValueError, match="steps"):
        profile_train_step(model, x, y, steps=0)
    with pytest.raises(ValueError, match="compiled"):
        profile_train_step(_tiny(), x, y)
    # the fused paths change no weight, name or config: the trained model saves and reloads
    path = str(tmp_path / "tiny.keras")
    model.save(path)
    reloaded = keras.models.load_model(path)
    np.testing.assert_array_equal(model.predict(x, verbose=0), reloaded.predict(x, verbose=0))
    assert [w.path for w in reloaded.weights] == [w.path for w in model.weights]


@pytest.mark.parametrize("flags, message", [
    (["--batch", "0"], "--batch"),
    (["--rounds", "0"], "--rounds"),
    (["--repeats", "-1"], "--repeats"),
    (["--torch-python", "/nonexistent/python"], "--torch-python"),
    (["--torch-python", "/bin/true"], "--torch-python"),
])
def test_throughput_bench_rejects_bad_flags_before_timing(flags, message):
    result = subprocess.run([sys.executable, os.path.join(_ROOT, "bench", "convnext_throughput.py"), *flags],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 2, result.stdout + result.stderr
    assert message in result.stderr and "img/s" not in result.stdout


def test_throughput_bench_pipeline_part_runs_the_finetune_pipeline():
    """``--part pipeline`` drives the fine-tune command's own tf.data pipeline (it broke silently once when
    the pipeline's signature changed)."""
    result = subprocess.run([sys.executable, os.path.join(_ROOT, "bench", "convnext_throughput.py"), "--part", "pipeline",
                             "--batch", "2", "--image-size", "32", "--rounds", "1", "--repeats", "1"],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    assert "finetune tf.data pipeline img/s (32x32, batch 2" in result.stdout


def test_throughput_bench_gemm_floor_counts_and_computes_the_step_gemms():
    """``--gemm-floor``: the shapes are ConvNeXt-T's MLP layers (~93 % of its 4.47 GMACs, REFERENCES.md) and
    the TensorFlow step computes the three products of every layer of every block."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("convnext_throughput", os.path.join(_ROOT, "bench",
                                                                                       "convnext_throughput.py"))
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    args = bench._parse(["--batch", "1"])
    shapes = bench._pointwise_gemms(args, 1)
    mlp_macs = bench._gemm_flops(shapes) / 6  # three GEMMs of 2·MACs per layer
    assert 0.9 < mlp_macs / 4.47e9 < 0.95
    assert sum(count for *_, count in shapes) == 2 * 18  # two pointwise layers in each of 3+3+9+3 blocks

    # all-ones operands: X·W[0, 0] = inner, dY·Wᵀ[0, 0] = cols, Xᵀ·dY[0, 0] = rows, summed over every layer
    tiny = [(6, 4, 5, 2), (3, 5, 4, 1)]
    total = bench._tf_gemms(tiny, normal=lambda shape: np.ones(shape, "float32"))()
    assert total == 2 * (4 + 5 + 6) + (5 + 4 + 3)

"""Layer-wise LR decay as a true per-variable learning-rate scale, no-decay groups, schedule."""

import keras
import numpy as np
import pytest

import keras_visrec
from keras_visrec.recipe.optim import (
    LayerDecayAdamW,
    convnext_adamw,
    convnext_layer_id,
    layer_decay_scales,
    no_weight_decay_variables,
)
from keras_visrec.recipe.schedule import WarmupCosine


def _official_layer_id(var_name):
    """The official ConvNeXt fine-tuning grouping, restated on the official state-dict keys."""
    parts = var_name.split(".")
    if parts[0] == "downsample_layers":
        return {0: 0, 1: 2, 2: 3, 3: 12}[int(parts[1])]
    if parts[0] == "stages":
        stage, block = int(parts[1]), int(parts[2])
        return {0: 1, 1: 2, 2: 3 + block // 3, 3: 12}[stage]
    return 13


def test_layer_ids_follow_the_official_grouping_for_27_block_stage():
    depths = (3, 3, 27, 3)
    name = "convnext_base"
    pairs = [(f"{name}_stem_conv", "downsample_layers.0.0.weight"),
             (f"{name}_stem_layernorm", "downsample_layers.0.1.weight"),
             (f"{name}_head_layernorm", "norm.weight"), (f"{name}_head_dense", "head.weight")]
    for i in range(3):
        pairs += [(f"{name}_downsampling_layernorm_{i}", f"downsample_layers.{i + 1}.0.weight"),
                  (f"{name}_downsampling_conv_{i}", f"downsample_layers.{i + 1}.1.weight")]
    for stage, depth in enumerate(depths):
        for block in range(depth):
            pairs.append((f"{name}_stage_{stage}_block_{block}_depthwise_conv", f"stages.{stage}.{block}.dwconv.weight"))
            pairs.append((f"{name}_stage_{stage}_block_{block}_layer_scale", f"stages.{stage}.{block}.gamma"))
    for ours, official in pairs:
        assert convnext_layer_id(ours, depths) == _official_layer_id(official), ours


def test_scales_on_a_tiny_model():
    model = keras_visrec.ConvNeXt((1, 1, 2, 1), (8, 16, 32, 64), input_shape=(32, 32, 3), classes=5, name="tiny")
    scales = layer_decay_scales(model, 0.5)
    by_layer = {path.split("/")[0]: scale for path, scale in scales.items()}
    assert by_layer["tiny_head_dense"] == 1.0 and by_layer["tiny_head_layernorm"] == 1.0
    assert by_layer["tiny_stage_3_block_0_depthwise_conv"] == 0.5  # id 12
    assert by_layer["tiny_stage_2_block_0_pointwise_conv_1"] == 0.5 ** 10  # id 3
    assert by_layer["tiny_stage_2_block_1_pointwise_conv_1"] == 0.5 ** 6  # 9 ids over 2 blocks: 3, 7
    assert by_layer["tiny_stem_conv"] == 0.5 ** 13
    assert len(scales) == len(model.trainable_weights)


def test_no_weight_decay_on_norms_biases_layer_scale_and_grn():
    model = keras_visrec.ConvNeXt((1, 1, 1, 1), (8, 16, 32, 64), use_grn=True, layer_scale_init_value=1e-6,
                                  input_shape=(32, 32, 3), classes=5, name="v2")
    skipped = {v.path for v in no_weight_decay_variables(model)}
    for path in skipped:
        assert path.endswith(("bias", "gamma", "beta")), path
    assert any("_grn/gamma" in p for p in skipped) and any("_layer_scale/gamma" in p for p in skipped)
    assert any("layernorm/gamma" in p for p in skipped)
    assert not any(p.endswith("kernel") for p in skipped)


def test_scale_multiplies_the_learning_rate_not_the_gradient():
    """Adam's first step moves every weight by ~lr·sign(g): a gradient scale would cancel, an LR scale shows."""
    a = keras.Variable(np.ones((4, 4), "float32"), name="a")
    b = keras.Variable(np.ones((4, 4), "float32"), name="b")
    optimizer = LayerDecayAdamW(lr_scales={a.path: 1.0, b.path: 0.01}, learning_rate=0.1, weight_decay=0.0)
    gradient = np.full((4, 4), 3.0, "float32")
    optimizer.apply([gradient, gradient * 1e-3], [a, b])
    step_a = 1.0 - keras.ops.convert_to_numpy(a)
    step_b = 1.0 - keras.ops.convert_to_numpy(b)
    np.testing.assert_allclose(step_a, 0.1, rtol=1e-4)
    np.testing.assert_allclose(step_b, 0.001, rtol=3e-3)  # float32 of 1 - 0.999


def test_weight_decay_uses_the_scaled_rate_and_skips_excluded():
    a = keras.Variable(np.ones((3, 3), "float32"), name="a")
    b = keras.Variable(np.ones((3,), "float32"), name="b")
    optimizer = LayerDecayAdamW(lr_scales={a.path: 0.5, b.path: 0.5}, learning_rate=0.1, weight_decay=0.2)
    optimizer.exclude_from_weight_decay(var_list=[b])
    zero = np.zeros((3, 3), "float32")
    optimizer.apply([zero, np.zeros(3, "float32")], [a, b])
    np.testing.assert_allclose(keras.ops.convert_to_numpy(a), 1.0 - 0.2 * 0.1 * 0.5, rtol=1e-6)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(b), 1.0)


def test_convnext_adamw_steps_with_ema_and_serializes():
    import tensorflow as tf

    model = keras_visrec.ConvNeXt((1, 1, 1, 1), (8, 16, 32, 64), input_shape=(32, 32, 3), classes=3)
    optimizer = convnext_adamw(model, learning_rate=WarmupCosine(1e-3, 10, warmup_steps=2), use_ema=True)
    x = np.random.default_rng(0).uniform(0, 255, (4, 32, 32, 3)).astype("float32")
    with tf.GradientTape() as tape:
        loss = keras.losses.sparse_categorical_crossentropy(np.array([0, 1, 2, 0]), model(x))
    grads = tape.gradient(loss, model.trainable_variables)
    optimizer.apply(grads, model.trainable_variables)
    assert int(optimizer.iterations) == 1
    stem = model.get_layer("convnext_stem_conv").kernel
    assert optimizer.lr_scale(stem) == pytest.approx(0.8 ** 13)
    assert len(optimizer.variables) > 3 * len(model.trainable_variables)  # m, v and the EMA copies
    clone = LayerDecayAdamW.from_config(optimizer.get_config())
    assert clone.lr_scales == optimizer.lr_scales and min(clone.lr_scales.values()) < 0.1


@pytest.mark.parametrize("decay", [0.0, 1.5, -0.1, True])
def test_layer_decay_out_of_range(decay):
    model = keras_visrec.ConvNeXt((1, 1, 1, 1), (8, 16, 32, 64), input_shape=(32, 32, 3), classes=3)
    with pytest.raises(ValueError, match="layer_decay"):
        convnext_adamw(model, layer_decay=decay)


def test_not_a_convnext():
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
    with pytest.raises(ValueError, match="stage_"):
        layer_decay_scales(model, 0.8)


def test_warmup_cosine_values():
    schedule = WarmupCosine(1.0, total_steps=110, warmup_steps=10, end=0.0)
    values = [float(schedule(s)) for s in (0, 5, 10, 60, 110, 200)]
    np.testing.assert_allclose(values, [0.0, 0.5, 1.0, 0.5, 0.0, 0.0], atol=1e-6)
    with pytest.raises(ValueError, match="warmup_steps"):
        WarmupCosine(1.0, total_steps=10, warmup_steps=10)


@pytest.mark.parametrize("nesterov", [False, True])
def test_pytorch_sgd_steps_as_torch_optim_sgd_does(nesterov):
    """Coupled weight decay through the momentum and the rate applied to the buffer, under a decaying rate."""
    import torch

    from keras_visrec.adpc import PolyLR
    from keras_visrec.recipe.optim import PyTorchSGD

    rng = np.random.default_rng(0)
    start = [rng.normal(size=(3, 4)).astype("float32"), rng.normal(size=(4,)).astype("float32")]
    grads = [[rng.normal(size=w.shape).astype("float32") for w in start] for _ in range(5)]
    schedule = PolyLR(0.1, 5, 0.9)
    variables = [keras.Variable(w) for w in start]
    optimizer = PyTorchSGD(schedule, momentum=0.9, nesterov=nesterov, weight_decay=5e-2)
    optimizer.exclude_from_weight_decay(var_list=[variables[1]])
    params = [torch.nn.Parameter(torch.tensor(w)) for w in start]
    reference = torch.optim.SGD([{"params": params[:1], "weight_decay": 5e-2}, {"params": params[1:], "weight_decay": 0.0}],
                                lr=0.1, momentum=0.9, nesterov=nesterov)
    for step, g in enumerate(grads):
        optimizer.apply([keras.ops.convert_to_tensor(v) for v in g], variables)
        for group in reference.param_groups:
            group["lr"] = float(schedule(step))
        for p, v in zip(params, g):
            p.grad = torch.tensor(v)
        reference.step()
    for ours, theirs in zip(variables, params):
        np.testing.assert_allclose(keras.ops.convert_to_numpy(ours), theirs.detach().numpy(), rtol=1e-5, atol=1e-6)
    plain = keras.optimizers.SGD(schedule, momentum=0.9, weight_decay=5e-2)  # Keras's decoupled decay differs
    other = [keras.Variable(w) for w in start]
    for g in grads:
        plain.apply([keras.ops.convert_to_tensor(v) for v in g], other)
    assert np.abs(keras.ops.convert_to_numpy(other[0]) - params[0].detach().numpy()).max() > 1e-3
    restored = PyTorchSGD.from_config(optimizer.get_config())
    assert isinstance(restored, PyTorchSGD) and restored.weight_decay == pytest.approx(5e-2)

"""The official UperNet recipe through model.fit: schedule, stage-wise decay, losses, strategies, the digit task."""

import re

import keras
import numpy as np
import pytest

from keras_visrec.segmentation.losses import pixel_cross_entropy
from keras_visrec.segmentation.training import (PolyWarmup, compile_segmenter, official_num_layers,
                                                segmentation_adamw, stage_wise_lr_scales, train_segmenter)
from keras_visrec.upernet import UperNet

TINY = dict(depths=(1, 1, 1, 1), dims=(8, 16, 32, 64))


def _tiny_upernet(classes=5, input_shape=(64, 64, 3), **kwargs):
    return UperNet(dict(TINY), classes, input_shape=input_shape, channels=16, aux_channels=8, **kwargs)


def _mmcv_lr(step, base, total, warmup, ratio, power, min_lr):
    # mmcv PolyLrUpdaterHook.get_lr + LrUpdaterHook.get_warmup_lr('linear'), by_epoch=False
    regular = (base - min_lr) * (1 - step / total) ** power + min_lr
    if step < warmup:
        k = (1 - step / warmup) * (1 - ratio)
        return regular * (1 - k)
    return regular


@pytest.mark.parametrize("power, min_lr", [(1.0, 0.0), (0.9, 1e-6)])
def test_poly_warmup_is_mmcv_poly_with_linear_warmup(power, min_lr):
    schedule = PolyWarmup(1e-4, 160000, warmup_steps=1500, warmup_ratio=1e-6, power=power, min_lr=min_lr)
    for step in (0, 1, 750, 1499, 1500, 80000, 159999, 160000):
        expected = _mmcv_lr(step, 1e-4, 160000, 1500, 1e-6, power, min_lr)
        assert abs(float(schedule(step)) - expected) <= 1e-5 * expected + 1e-13, step
    assert float(schedule(200000)) == pytest.approx(min_lr, abs=1e-12)
    assert keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(schedule)).get_config() \
        == schedule.get_config()
    with pytest.raises(ValueError, match="warmup_ratio"):
        PolyWarmup(1e-4, 10, warmup_ratio=0.0)
    with pytest.raises(ValueError, match="total_steps"):
        PolyWarmup(1e-4, 0)


# The official names of our layers (facebookresearch/ConvNeXt semantic_segmentation/backbone/convnext.py and
# mmseg's UPerHead / FCNHead), written from the official modules, and the official stage-wise rule.
_OFFICIAL = [
    (r"_backbone_stem_(conv|layernorm)$", lambda m: "backbone.downsample_layers.0"),
    (r"_backbone_downsampling_(layernorm|conv)_(\d)$", lambda m: f"backbone.downsample_layers.{int(m[2]) + 1}"),
    (r"_backbone_stage_(\d)_block_(\d+)_", lambda m: f"backbone.stages.{m[1]}.{m[2]}"),
    (r"_backbone_output_norm_(\d)$", lambda m: f"backbone.norm{m[1]}"),
    (r"_decode_", lambda m: "decode_head"),
    (r"_auxiliary_", lambda m: "auxiliary_head"),
]


def _official_name(layer_name):
    for pattern, name in _OFFICIAL:
        match = re.search(pattern, layer_name)
        if match:
            return name(match)
    raise AssertionError(f"no official counterpart for {layer_name}")


def _official_scale(var_name, num_layers, decay):
    # LearningRateDecayOptimizerConstructor, decay_type="stage_wise"
    num_layers = num_layers + 2
    if var_name.startswith("backbone.downsample_layers"):
        layer_id = 0
    elif var_name.startswith("backbone.stages"):
        layer_id = int(var_name.split(".")[2]) + 1
    else:
        layer_id = num_layers - 1
    return decay ** (num_layers - layer_id - 1)


@pytest.mark.parametrize("num_layers", [6, 12])
def test_stage_wise_scales_are_the_official_constructor(num_layers):
    model = _tiny_upernet()
    scales = stage_wise_lr_scales(model, 0.9, num_layers)
    assert len(scales) == len(model.trainable_weights)
    for layer in model.layers:
        for variable in layer.trainable_weights:
            expected = _official_scale(_official_name(layer.name), num_layers, 0.9)
            assert scales[variable.path] == pytest.approx(expected), (layer.name, variable.path)
    assert official_num_layers(model) == 6  # stage-2 depth <= 9, as ConvNeXt-T's config


def test_stage_wise_scales_follow_nested_backbones(standin):
    model = standin()  # the ConvNeXt nested as a sub-model named "convnext"
    scales = stage_wise_lr_scales(model, 0.5, 6)
    backbone = model.get_layer("convnext")
    stem = backbone.get_layer("convnext_stem_conv").kernel
    stage3 = backbone.get_layer("convnext_stage_3_block_0_depthwise_conv").kernel
    head = model.get_layer("standin_classifier").kernel
    assert scales[stem.path] == pytest.approx(0.5 ** 7)
    assert scales[stage3.path] == pytest.approx(0.5 ** 3)
    assert scales[head.path] == 1.0
    with pytest.raises(ValueError, match="stage-wise decay needs a keras_visrec ConvNeXt"):
        stage_wise_lr_scales(keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)]))


def test_no_weight_decay_on_norms_biases_and_layer_scale():
    model = _tiny_upernet()
    optimizer = segmentation_adamw(model)
    optimizer.build(model.trainable_weights)
    for variable in model.trainable_weights:
        assert optimizer._use_weight_decay(variable) == (len(variable.shape) > 1), variable.path
    kernel = model.get_layer("upernet_backbone_stem_conv").kernel
    assert optimizer.lr_scale(kernel) == pytest.approx(0.9 ** 7)
    assert optimizer.weight_decay == 0.05 and optimizer.beta_2 == 0.999 and optimizer.epsilon == 1e-8


def test_auxiliary_loss_weighs_0_4_and_class_weights_apply():
    model = _tiny_upernet(input_shape=(32, 32, 3))
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 255, (2, 32, 32, 3)).astype("float32")
    y = rng.integers(0, 5, (2, 32, 32)).astype("int32")
    y[:, :8] = 255
    weights = [0.5, 1.0, 2.0, 1.0, 1.5]
    compile_segmenter(model, total_steps=10, class_weights=weights)
    logits, aux = model(x, training=False)
    loss = model.compute_loss(x, (y, y), [logits, aux], training=False)
    main = float(pixel_cross_entropy(y, logits, class_weights=weights))
    auxiliary = float(pixel_cross_entropy(y, aux, class_weights=weights))
    assert float(loss) == pytest.approx(main + 0.4 * auxiliary, rel=1e-4)
    with pytest.raises(ValueError, match="aux_weight"):
        compile_segmenter(model, total_steps=10, aux_weight=-1)
    with pytest.raises(ValueError, match="3 outputs"):
        compile_segmenter(keras.Model(model.inputs, [*model.outputs, model.outputs[0]]), total_steps=10)


@pytest.mark.slow
def test_fit_under_mirrored_strategy(two_cpu_strategy):
    from keras_visrec.segmentation.pipeline import TrainAugment, train_dataset

    rng = np.random.default_rng(1)
    x = rng.uniform(0, 255, (4, 32, 32, 3)).astype("float32")
    y = rng.integers(0, 5, (4, 32, 32)).astype("int32")
    data = train_dataset((x, y), 2, augment=TrainAugment(crop_size=32, scale=None))
    model, history = train_segmenter(lambda: _tiny_upernet(input_shape=(32, 32, 3)), data, epochs=1,
                                     strategy=two_cpu_strategy, warmup_steps=1, verbose=0)
    assert model.distribute_strategy is two_cpu_strategy
    assert np.isfinite(history.history["loss"][-1])
    assert {"upernet_logits_loss", "upernet_aux_logits_loss", "upernet_logits_miou"} <= set(history.history)
    assert int(model.optimizer.iterations.numpy()) == 2


def test_train_segmenter_arguments():
    import tensorflow as tf

    data = tf.data.Dataset.from_tensors((np.zeros((1, 64, 64, 3), "float32"), np.zeros((1, 64, 64), "int32")))
    with pytest.raises(ValueError, match="epochs"):
        train_segmenter(_tiny_upernet, data, epochs=0)
    with pytest.raises(ValueError, match="steps_per_epoch"):
        train_segmenter(_tiny_upernet, data.repeat(), epochs=1)

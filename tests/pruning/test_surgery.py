"""Channel surgery: exactness when removed channels are zero, residual groups, selections, errors."""

import keras
import numpy as np
import pytest

from keras_visrec import cifar
from keras_visrec.pruning import surgery

X = np.random.default_rng(0).uniform(0, 255, (2, 32, 32, 3)).astype("float32")


def _zero_bn_channels(model, bn_name, channels):
    bn = model.get_layer(bn_name)
    values = bn.get_weights()
    values[0][channels] = 0.0  # gamma
    values[1][channels] = 0.0  # beta
    bn.set_weights(values)


def _close(a, b, x=X):
    np.testing.assert_allclose(a.predict(x, verbose=0), b.predict(x, verbose=0), atol=1e-5, rtol=1e-5)


def test_vgg_remove_zero_channels_is_exact_through_flatten_and_dense():
    model = cifar.CIFARVGG([8, "M", 16, "M", 16], head="l1", name="v", classifier_activation=None)
    _zero_bn_channels(model, "v_bn_2", [0, 3])
    _zero_bn_channels(model, "v_bn_4", [1, 5])
    pruned = surgery.prune_channels(model, remove={"v_conv_2": [0, 3], "v_bn_4": [1, 5]})
    assert pruned.get_layer("v_conv_2").filters == 14
    assert pruned.get_layer("v_conv_4").kernel.shape == (3, 3, 14, 14)
    assert pruned.get_layer("v_fc_1").kernel.shape == (14 * 4 * 4, 512)
    assert pruned.count_params() < model.count_params()
    _close(model, pruned)


def test_resnet_option_a_keeps_the_residual_stream():
    model = cifar.CIFARResNet(8, name="r", classifier_activation=None)
    groups = {g.members[0]: g for g in surgery.channel_groups(model)}
    stream = surgery.find_channel_group(model, "r_stage_1_block_0_add")
    assert not stream.prunable and "ShortcutA" in stream.reason
    assert groups["r_stage_1_block_0_conv_1"].prunable
    with pytest.raises(surgery.SurgeryError, match="r_stage_2_block_0_add"):
        surgery.prune_channels(model, keep={"r_stage_2_block_0_add": [0, 1]})
    with pytest.raises(surgery.SurgeryError, match="r_stage_1_block_0_shortcut"):
        surgery.prune_channels(model, keep={"r_conv_1": [0, 1]})
    _zero_bn_channels(model, "r_stage_1_block_0_bn_1", [2, 7, 9])
    pruned = surgery.prune_channels(model, remove={"r_stage_1_block_0_conv_1": [2, 7, 9]})
    assert pruned.get_layer("r_stage_1_block_0_conv_2").kernel.shape[2] == 29
    _close(model, pruned)


def test_projection_residual_group_is_pruned_as_a_whole():
    model = cifar.CIFARResNet(8, shortcut="B", name="r", classifier_activation=None)
    group = surgery.find_channel_group(model, "r_stage_1_block_0_add")
    assert group.prunable
    assert set(group.producers) == {"r_stage_1_block_0_conv_2", "r_stage_1_block_0_shortcut"}
    for bn in ("r_stage_1_block_0_bn_2", "r_stage_1_block_0_shortcut_bn"):
        _zero_bn_channels(model, bn, [4, 5])
    pruned = surgery.prune_channels(model, remove={"r_stage_1_block_0_add": [4, 5]})
    assert pruned.get_layer("r_stage_1_block_0_shortcut").filters == 30
    assert pruned.get_layer("r_stage_2_block_0_conv_1").kernel.shape[2] == 30
    _close(model, pruned)


def test_depthwise_concat_and_sequential():
    inputs = keras.Input((8, 8, 3))
    a = keras.layers.Conv2D(6, 1, name="a")(inputs)
    d = keras.layers.DepthwiseConv2D(3, padding="same", name="dw")(a)
    b = keras.layers.Conv2D(4, 1, name="b")(inputs)
    c = keras.layers.Concatenate(name="cat")([d, b])
    out = keras.layers.Conv2D(2, 1, name="out")(keras.layers.ReLU(name="relu")(c))
    model = keras.Model(inputs, out)
    rng = np.random.default_rng(1)
    dw = model.get_layer("dw")
    kernel, bias = dw.get_weights()
    kernel[:, :, [1, 4], :] = 0.0  # depthwise channels 1 and 4 output zeros
    bias[[1, 4]] = 0.0
    dw.set_weights([kernel, bias])
    pruned = surgery.prune_channels(model, keep={"a": [0, 2, 3, 5]})
    assert pruned.get_layer("out").kernel.shape == (1, 1, 8, 2)
    x = rng.normal(size=(2, 8, 8, 3)).astype("float32")
    _close(model, pruned, x)

    seq = keras.Sequential([keras.Input((6,)), keras.layers.Dense(5, name="h"), keras.layers.Dense(2, name="o")])
    smaller = surgery.prune_channels(seq, keep={"h": [0, 1, 2]})
    assert smaller.get_layer("o").kernel.shape == (3, 2)


def test_selection_narrowing_and_unknown_layer_error():
    model = cifar.CIFARPreResNet(11, name="p", classifier_activation=None)
    pruned = surgery.prune_channels(model, keep={"p_stage_1_block_0_select": [0, 5, 9]})
    assert pruned.get_layer("p_stage_1_block_0_select").indices == [0, 5, 9]
    assert pruned.get_layer("p_stage_1_block_0_conv_1").kernel.shape[2] == 3

    inputs = keras.Input((8, 8, 3))
    x = keras.layers.Conv2D(4, 3, name="conv")(inputs)
    x = keras.layers.Reshape((-1,), name="reshape")(x)
    odd = keras.Model(inputs, keras.layers.Dense(2, name="dense")(x))
    with pytest.raises(surgery.SurgeryError, match="'reshape' \\(Reshape\\)"):
        surgery.prune_channels(odd, keep={"conv": [0, 1]})


def test_bad_requests():
    model = cifar.CIFARVGG([4, "M", 4], head="slimming", name="v")
    with pytest.raises(ValueError, match="not in model"):
        surgery.prune_channels(model, keep={"nope": [0]})
    with pytest.raises(ValueError, match=r"\[0, 4\)"):
        surgery.prune_channels(model, keep={"v_conv_0": [0, 7]})
    with pytest.raises(ValueError, match="every channel"):
        surgery.prune_channels(model, remove={"v_conv_0": [0, 1, 2, 3]})
    with pytest.raises(ValueError, match="exactly one"):
        surgery.prune_channels(model)
    with pytest.raises(surgery.SurgeryError, match="Conflicting"):
        surgery.prune_channels(model, keep={"v_conv_0": [0, 1], "v_bn_0": [1, 2]})
    with pytest.raises(surgery.SurgeryError, match="output"):
        surgery.prune_channels(model, keep={"v_classifier": [0, 1]})


def test_symmetric_padding_before_a_valid_stride_2_conv_passes_pruned_channels_through():
    # the official CIFAR nets' stride-2 convs pad 1 on every side: ZeroPadding2D + a "valid" conv
    inputs = keras.Input((8, 8, 3))
    x = keras.layers.Conv2D(6, 3, padding="same", use_bias=False, name="c1")(inputs)
    x = keras.layers.BatchNormalization(name="bn1")(x)
    x = keras.layers.ReLU(name="relu1")(x)
    x = keras.layers.ZeroPadding2D(1, name="pad")(x)
    x = keras.layers.Conv2D(4, 3, strides=2, padding="valid", name="c2")(x)
    model = keras.Model(inputs, keras.layers.Dense(3, name="head")(keras.layers.GlobalAveragePooling2D()(x)))
    _zero_bn_channels(model, "bn1", [1, 4])
    pruned = surgery.prune_channels(model, remove={"c1": [1, 4]})
    assert pruned.get_layer("c2").kernel.shape == (3, 3, 4, 4)
    _close(model, pruned, X[:, :8, :8])

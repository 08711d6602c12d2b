"""MAC counting: per-layer rules against hand counts, ConvNeXt-T against the paper."""

import keras
import numpy as np
import pytest

import keras_visrec as kv
from keras_visrec.flops import register_flops_rule


def test_convnext_tiny_at_224_is_4_47_gmacs_within_one_percent():
    report = kv.count_flops(kv.ConvNeXtTiny())
    assert abs(report.gmacs - 4.47) / 4.47 < 0.01
    assert report.total == sum(report.by_layer().values()) == sum(report.by_type().values())
    # the MLPs dominate; norms, activations and pooling count nothing
    assert report.by_type()["PointwiseDense"] > 0.8 * report.total
    assert report.by_layer()["convnext_tiny_head_layernorm"] == 0


def test_hand_counted_layers():
    inputs = keras.Input((16, 16, 3))
    x = keras.layers.Conv2D(8, 3, padding="same", name="conv")(inputs)  # 3*3*3*8 * 16*16
    x = keras.layers.DepthwiseConv2D(5, strides=2, padding="same", name="dw")(x)  # 5*5*8 * 8*8
    x = keras.layers.SeparableConv2D(4, 3, padding="same", name="sep")(x)  # (3*3*8 + 8*4) * 8*8
    x = keras.layers.BatchNormalization(name="bn")(x)
    x = keras.layers.Conv2DTranspose(2, 2, strides=2, name="up")(x)  # 2*2*2*4 * 8*8 input positions
    x = keras.layers.Dense(6, name="pixel_dense")(x)  # 2*6 * 16*16
    x = keras.layers.GlobalAveragePooling2D()(x)
    outputs = keras.layers.Dense(10, name="fc")(x)  # 6*10
    report = kv.count_flops(keras.Model(inputs, outputs))
    expected = {
        "conv": 216 * 256, "dw": 200 * 64, "sep": (72 + 32) * 64, "bn": 0,
        "up": 32 * 64, "pixel_dense": 12 * 256, "fc": 60,
    }
    by_layer = report.by_layer()
    for name, macs in expected.items():
        assert by_layer[name] == macs, name
    assert report.total == sum(expected.values())


def test_grouped_conv_counts_per_group():
    inputs = keras.Input((8, 8, 16))
    outputs = keras.layers.Conv2D(32, 3, padding="same", groups=4, name="g")(inputs)
    assert kv.count_flops(keras.Model(inputs, outputs)).total == 3 * 3 * 4 * 32 * 64


def test_dynamic_inputs_need_an_input_shape_and_nested_models_are_walked():
    inner = kv.ConvNeXt((1, 1, 1, 1), (8, 16, 32, 64), include_top=False, input_shape=(None, None, 3), name="inner")
    inputs = keras.Input((None, None, 3))
    outer = keras.Model(inputs, keras.layers.Dense(3, name="fc")(inner(inputs)))
    with pytest.raises(ValueError, match="input_shape"):
        kv.count_flops(outer)
    at_64 = kv.count_flops(outer, input_shape=(64, 64, 3))
    at_128 = kv.count_flops(outer, input_shape=(128, 128, 3))
    assert at_128.total == 4 * at_64.total  # every counted layer scales with the pixel count
    assert any(name.startswith("inner/inner_stage_0_block_0") for name in at_64.by_layer())
    with pytest.raises(ValueError, match="input_shape"):
        kv.count_flops(outer, input_shape=(64, 64, 1))


def test_block_layer_rule_and_custom_layer_rules():
    block = kv.layers.ConvNeXtBlock()
    inputs = keras.Input((8, 8, 16))
    report = kv.count_flops(keras.Model(inputs, block(inputs)))
    assert report.total == (49 * 16 + 16 * 64 + 64 * 16) * 64

    class Opaque(keras.layers.Layer):
        def __init__(self, **kwargs):
            super().__init__(**kwargs)
            self.inner = keras.layers.Dense(4)

        def call(self, x):
            return self.inner(x)

    inputs = keras.Input((5,))
    model = keras.Model(inputs, Opaque(name="opaque")(inputs))
    with pytest.raises(ValueError, match="opaque"):
        kv.count_flops(model)

    class Counted(Opaque):
        pass

    register_flops_rule(Counted)(lambda layer, shapes, out: 123)
    inputs = keras.Input((5,))
    assert kv.count_flops(keras.Model(inputs, Counted()(inputs))).total == 123


def test_report_table_lists_layers_largest_first():
    report = kv.count_flops(kv.ConvNeXtAtto(input_shape=(64, 64, 3)))
    lines = report.table(top=3).splitlines()
    assert len(lines) == 5 and lines[-1].startswith("total")
    values = [float(line.split()[2]) for line in lines[1:4]]
    assert values == sorted(values, reverse=True)
    assert report.select(lambda name: "stage_2" in name) > 0
    assert int(report) == report.total and np.isclose(report.gmacs, report.total / 1e9)


# ---- mmcv's convention (get_model_complexity_info), as the ConvNeXt paper's UperNet FLOPs ----------

def test_mmcv_convention_counts_what_mmcv_1x_counts():
    inputs = keras.Input((8, 8, 3))
    x = kv.layers.ImageNetNormalization(name="norm_in")(inputs)  # data preprocessing: 0
    x = keras.layers.Conv2D(4, 3, padding="same", name="conv")(x)  # 3*3*3*4*64 + bias 4*64
    x = keras.layers.BatchNormalization(name="bn")(x)  # affine: 2 * 4*64
    x = keras.layers.ReLU(name="relu")(x)  # 4*64
    y = keras.layers.Conv2D(4, 1, use_bias=False, activation="relu", name="conv_relu")(x)  # 4*4*64 + relu 4*64
    y = keras.layers.DepthwiseConv2D(3, padding="same", name="dw")(y)  # 3*3*4*64 + bias 4*64
    y = kv.layers.LayerNorm(name="convnext_ln")(y)  # ConvNeXt's own LayerNorm module: 0
    y = keras.layers.LayerNormalization(name="nn_ln")(y)  # nn.LayerNorm, affine: 2 * 4*64
    y = keras.layers.Dense(6, activation="gelu", name="linear")(y)  # nn.Linear: 4*64*6, no bias, GELU 0
    p = kv.layers.AdaptiveAveragePooling2D(3, name="adaptive")(y)  # input elements 6*64
    p = kv.layers.Resize(name="resize")([p, y])  # F.interpolate: 0
    z = keras.layers.Concatenate(name="cat")([y, p])  # 0
    z = keras.layers.MaxPooling2D(2, name="maxpool")(z)  # input elements 12*64
    z = keras.layers.UpSampling2D(2, name="upsample")(z)  # nn.Upsample: output elements 12*64
    model = keras.Model(inputs, z)
    expected = {
        "norm_in": 0, "conv": 108 * 64 + 4 * 64, "bn": 2 * 256, "relu": 256, "conv_relu": 16 * 64 + 256,
        "dw": 36 * 64 + 256, "convnext_ln": 0, "nn_ln": 2 * 256, "linear": 24 * 64, "adaptive": 6 * 64,
        "resize": 0, "cat": 0, "maxpool": 12 * 64, "upsample": 12 * 64,
    }
    report = kv.count_flops(model, convention="mmcv")
    assert {name: report.by_layer()[name] for name in expected} == expected
    assert report.total == sum(expected.values()) and report.convention == "mmcv"
    assert "MFLOPs" in report.table() and "FLOPs (mmcv)" in str(report)
    # the MAC convention on the same model: conv weights only
    assert kv.count_flops(model).total == 108 * 64 + 16 * 64 + 36 * 64 + 24 * 64
    with pytest.raises(ValueError, match="convention"):
        kv.count_flops(model, convention="ptflops")


def test_mmcv_convention_on_the_convnext_block_layer_adds_the_depthwise_bias():
    inputs = keras.Input((8, 8, 16))
    model = keras.Model(inputs, kv.layers.ConvNeXtBlock()(inputs))
    assert kv.count_flops(model, convention="mmcv").total == kv.count_flops(model).total + 16 * 64


@pytest.mark.slow
@pytest.mark.parametrize("size, paper", [("tiny", 939), ("small", 1027), ("base", 1170)])
def test_upernet_at_512x2048_has_the_papers_gflops(size, paper):
    """mmseg's get_flops: forward_dummy = backbone + decode head (no auxiliary head), mmcv's counter."""
    from keras_visrec.upernet import drop_auxiliary

    model = kv.get_model(f"upernet_convnext_{size}", input_shape=(512, 2048, 3))
    report = kv.count_flops(drop_auxiliary(model), convention="mmcv")
    print(f"UperNet-ConvNeXt-{size} at 512x2048: {report.gflops:.2f} GFLOPs (mmcv), paper {paper}; "
          f"{kv.count_flops(drop_auxiliary(model)).gmacs:.2f} GMACs")
    assert abs(report.gflops - paper) / paper < 0.01
    with_aux = kv.count_flops(model, convention="mmcv")
    assert with_aux.total - report.total == with_aux.select(lambda name: "auxiliary" in name) > 0

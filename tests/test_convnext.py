"""ConvNeXt builders: exact architectures, keras.applications semantics, bad input, names."""

import keras
import numpy as np
import pytest

import keras_visrec as kv
from keras_visrec.convnext import CONVNEXT_CONFIGS

# timm's parameter counts with the 1000-class head (timm results tables / issue text).
TIMM_PARAMS = {
    "convnext_atto": 3_695_520,
    "convnext_femto": 5_217_784,   # timm: 5.22 M
    "convnext_pico": 9_045_672,    # timm: 9.05 M
    "convnext_nano": 15_593_560,   # timm: 15.59 M
    "convnext_tiny": 28_589_128,
    "convnext_small": 50_223_688,
    "convnext_base": 88_591_464,
    "convnext_large": 197_767_336,
    "convnext_xlarge": 350_196_968,
    "convnext_isotropic_small": 22_308_712,   # paper: 22 M
    "convnext_isotropic_base": 87_083_752,    # paper: 87 M
    "convnext_isotropic_large": 305_942_504,  # paper: 306 M
    "convnext_v2_atto": 3_708_400,
    "convnext_v2_femto": 5_233_240,   # timm: 5.23 M
    "convnext_v2_pico": 9_066_280,    # timm: 9.07 M
    "convnext_v2_nano": 15_623_800,   # timm: 15.62 M
    "convnext_v2_tiny": 28_635_496,
    "convnext_v2_base": 88_717_800,   # timm: 88.72 M
    "convnext_v2_large": 197_956_840, # timm: 197.96 M
    "convnext_v2_huge": 660_289_640,  # timm: 660.29 M
}
SMALL = [name for name, count in TIMM_PARAMS.items() if count < 30_000_000]
LARGE = [name for name in TIMM_PARAMS if name not in SMALL]


def _expected_params(depths, dims, isotropic=False, grn=False, layer_scale=1e-6, classes=1000):
    """Parameter count derived from the official architecture description, independently of Keras."""
    def norm(c):
        return 2 * c

    total = 3 * 16 * 16 * dims[0] + dims[0] if isotropic else 3 * 4 * 4 * dims[0] + dims[0] + norm(dims[0])
    for stage, (depth, dim) in enumerate(zip(depths, dims)):
        if stage > 0:
            total += norm(dims[stage - 1]) + 4 * dims[stage - 1] * dim + dim
        block = 49 * dim + dim + norm(dim) + dim * 4 * dim + 4 * dim + 4 * dim * dim + dim
        block += 8 * dim if grn else 0
        block += dim if layer_scale else 0
        total += depth * block
    return total + norm(dims[-1]) + dims[-1] * classes + classes


def test_every_variant_is_registered_with_a_public_builder():
    assert kv.list_models("convnext*") == sorted(CONVNEXT_CONFIGS)
    assert set(TIMM_PARAMS) == set(CONVNEXT_CONFIGS)
    for name in CONVNEXT_CONFIGS:
        assert kv.models.get_model_builder(name).__doc__


@pytest.mark.parametrize("arch", sorted(CONVNEXT_CONFIGS))
def test_analytic_count_equals_timm(arch):
    assert _expected_params(**CONVNEXT_CONFIGS[arch]) == TIMM_PARAMS[arch]


@pytest.mark.parametrize("arch", SMALL)
def test_built_parameter_count_equals_timm(arch):
    model = kv.get_model(arch, input_shape=(64, 64, 3))
    assert model.count_params() == TIMM_PARAMS[arch]


@pytest.mark.slow
@pytest.mark.parametrize("arch", LARGE)
def test_built_parameter_count_equals_timm_large(arch):
    with keras.StatelessScope(initialize_variables=False):  # the shapes are built, the weights never initialised (660 M draws saved)
        model = kv.get_model(arch, input_shape=(64, 64, 3))
    assert model.count_params() == TIMM_PARAMS[arch]
    del model
    keras.backend.clear_session()


def test_layer_names_are_pinned():
    model = kv.ConvNeXtAtto(input_shape=(32, 32, 3))
    names = {layer.name for layer in model.layers}
    for expected in [
        "convnext_atto_preprocessing", "convnext_atto_stem_conv", "convnext_atto_stem_layernorm",
        "convnext_atto_downsampling_layernorm_0", "convnext_atto_downsampling_conv_2",
        "convnext_atto_stage_0_block_0_depthwise_conv", "convnext_atto_stage_2_block_5_layernorm",
        "convnext_atto_stage_3_block_1_pointwise_conv_1", "convnext_atto_stage_3_block_1_pointwise_conv_2",
        "convnext_atto_stage_3_block_1_layer_scale", "convnext_atto_stage_3_block_1_add",
        "convnext_atto_head_gap", "convnext_atto_head_layernorm", "convnext_atto_head_dense", "predictions",
    ]:
        assert expected in names, expected
    assert isinstance(model.get_layer("convnext_atto_stage_0_block_0_depthwise_conv"), keras.layers.DepthwiseConv2D)
    v2 = kv.ConvNeXtV2Atto(input_shape=(32, 32, 3), name="v2")
    assert "v2_stage_1_block_1_grn" in {layer.name for layer in v2.layers}
    assert not any("layer_scale" in layer.name for layer in v2.layers)
    iso = kv.ConvNeXtIsotropicSmall(input_shape=(32, 32, 3))
    assert iso.get_layer("convnext_isotropic_small_stem_conv").strides == (16, 16)
    assert not any("stem_layernorm" in layer.name or "layer_scale" in layer.name for layer in iso.layers)


def test_drop_path_rises_linearly_over_blocks():
    model = kv.ConvNeXtAtto(input_shape=(32, 32, 3), drop_path_rate=0.3)
    rates = [layer.rate for layer in model.layers if isinstance(layer, kv.layers.StochasticDepth)]
    # the very first block has rate 0 and so no drop-path layer
    np.testing.assert_allclose(rates, np.linspace(0, 0.3, 12)[1:], rtol=1e-6)


def test_head_init_scale_shrinks_the_initial_head():
    big = kv.ConvNeXtAtto(input_shape=(32, 32, 3), classes=50).get_layer("convnext_atto_head_dense")
    small = kv.ConvNeXtAtto(input_shape=(32, 32, 3), classes=50, head_init_scale=0.001).get_layer("convnext_atto_head_dense")
    ratio = np.std(small.kernel.numpy()) / np.std(big.kernel.numpy())
    assert 0.0008 < ratio < 0.0012


@pytest.mark.parametrize("shape", [(32, 32, 3), (64, 96, 3), (None, None, 3)])
def test_input_sizes_and_dynamic_spatial_dims(shape):
    model = kv.ConvNeXt((1, 1, 1, 1), (8, 16, 32, 64), input_shape=shape, classes=7, name="t")
    for size in [(32, 32), (64, 96)] if shape[0] is None else [shape[:2]]:
        out = model(np.random.rand(2, *size, 3).astype("float32") * 255)
        assert out.shape == (2, 7)
        np.testing.assert_allclose(np.sum(out, axis=-1), 1.0, rtol=1e-5)


def test_features_only_returns_four_stage_outputs_at_strides_4_to_32():
    model = kv.ConvNeXtAtto(include_top=False, features_only=True, input_shape=(None, None, 3))
    features = model(np.random.rand(1, 64, 128, 3).astype("float32"))
    assert [tuple(f.shape) for f in features] == [
        (1, 16, 32, 40), (1, 8, 16, 80), (1, 4, 8, 160), (1, 2, 4, 320)
    ]
    iso = kv.ConvNeXtIsotropicSmall(include_top=False, features_only=True, input_shape=(64, 64, 3))
    assert [tuple(t.shape) for t in iso.outputs] == [(None, 4, 4, 384)]


@pytest.mark.parametrize("pooling,shape", [(None, (None, 2, 2, 64)), ("avg", (None, 64)), ("max", (None, 64))])
def test_include_top_false_pooling(pooling, shape):
    model = kv.ConvNeXt((1, 1, 1, 1), (8, 16, 32, 64), include_top=False, pooling=pooling, input_shape=(64, 64, 3), name="t")
    assert model.output_shape == shape


def test_include_preprocessing_equals_normalising_by_hand():
    with_pre = kv.ConvNeXt((1, 1, 1, 1), (8, 16, 32, 64), input_shape=(32, 32, 3), name="t")
    without = kv.ConvNeXt((1, 1, 1, 1), (8, 16, 32, 64), input_shape=(32, 32, 3), include_preprocessing=False, name="t")
    without.set_weights(with_pre.get_weights())
    x = np.random.rand(2, 32, 32, 3).astype("float32") * 255
    normalised = (x / 255 - np.array([0.485, 0.456, 0.406])) / np.array([0.229, 0.224, 0.225])
    np.testing.assert_allclose(with_pre(x), without(normalised.astype("float32")), rtol=1e-4, atol=1e-6)


def test_input_tensor_is_used_as_the_model_input():
    tensor = keras.Input((32, 32, 3), name="image")
    model = kv.ConvNeXtAtto(input_tensor=tensor, classes=3)
    assert model.inputs[0] is tensor
    assert model.output_shape == (None, 3)


def test_exportable_build_holds_the_same_weights_and_function():
    x = np.random.rand(2, 32, 32, 3).astype("float32") * 255
    model = kv.ConvNeXtAtto(input_shape=(32, 32, 3), classes=5)
    with kv.layers.exportable(gelu_form="exact"):
        export = kv.ConvNeXtAtto(input_shape=(32, 32, 3), classes=5)
    for layer in export.layers:
        if not layer.weights:
            continue
        values = model.get_layer(layer.name).get_weights()
        layer.set_weights([v.reshape(w.shape) for v, w in zip(values, layer.get_weights())])
    assert isinstance(export.get_layer("convnext_atto_stage_0_block_0_pointwise_conv_1"), keras.layers.Conv2D)
    np.testing.assert_allclose(export(x), model(x), rtol=1e-4, atol=1e-6)


def test_save_and_load_give_identical_outputs_without_custom_objects(tmp_path):
    model = kv.ConvNeXtV2Atto(input_shape=(32, 32, 3), classes=4, drop_path_rate=0.2)
    x = np.random.rand(2, 32, 32, 3).astype("float32") * 255
    path = tmp_path / "convnext.keras"
    model.save(path)
    reloaded = keras.models.load_model(path)
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(model(x)), keras.ops.convert_to_numpy(reloaded(x)))


def test_weights_from_local_keras_files(tmp_path):
    source = kv.ConvNeXt((1, 1, 1, 1), (8, 16, 32, 64), input_shape=(32, 32, 3), classes=3, name="t")
    x = np.random.rand(1, 32, 32, 3).astype("float32") * 255
    source.save(tmp_path / "t.keras")
    source.save_weights(tmp_path / "t.weights.h5")
    for path in [tmp_path / "t.keras", str(tmp_path / "t.weights.h5")]:
        loaded = kv.ConvNeXt((1, 1, 1, 1), (8, 16, 32, 64), input_shape=(32, 32, 3), classes=3, name="t", weights=path)
        np.testing.assert_allclose(loaded(x), source(x), rtol=1e-6)
    # a file saved with a head also gives the backbone
    headless = kv.ConvNeXt((1, 1, 1, 1), (8, 16, 32, 64), include_top=False, input_shape=(32, 32, 3), name="t",
                           weights=tmp_path / "t.keras")
    np.testing.assert_allclose(headless.get_layer("t_stem_conv").kernel, source.get_layer("t_stem_conv").kernel)


@pytest.mark.parametrize(
    "kwargs,match",
    [
        (dict(input_shape=(32, 32, 1)), "input_shape"),
        (dict(input_shape=(16, 16, 3)), "input_shape"),
        (dict(input_shape=(48, 64, 3)), "input_shape"),
        (dict(input_shape=(32, 32)), "input_shape"),
        (dict(pooling="mean", include_top=False), "pooling"),
        (dict(drop_path_rate=1.0), "drop_path_rate"),
        (dict(drop_path_rate=-0.1), "drop_path_rate"),
        (dict(classes=0), "classes"),
        (dict(head_init_scale=0), "head_init_scale"),
        (dict(layer_scale_init_value=-1.0), "layer_scale_init_value"),
        (dict(features_only=True), "features_only"),
        (dict(weights="model.onnx"), "weights"),
        (dict(weights=123), "weights"),
    ],
)
def test_bad_arguments_raise_clear_errors(kwargs, match):
    with pytest.raises((ValueError, TypeError), match=match):
        kv.ConvNeXtAtto(**kwargs)


def test_imagenet_weights_need_the_1000_class_head():
    # validated before anything is built or downloaded
    with pytest.raises(ValueError, match="classes"):
        kv.ConvNeXtTiny(weights="imagenet", classes=10)


def test_missing_weights_file_names_the_file(tmp_path):
    missing = tmp_path / "nothere.weights.h5"
    with pytest.raises((FileNotFoundError, ValueError), match="nothere"):
        kv.ConvNeXtAtto(weights=missing)


def test_isotropic_sizes_are_multiples_of_16():
    kv.ConvNeXtIsotropicSmall(input_shape=(48, 48, 3), include_top=False)
    with pytest.raises(ValueError, match="16"):
        kv.ConvNeXtIsotropicSmall(input_shape=(40, 40, 3))


def test_layers_of_the_same_shape_start_with_different_weights():
    model = kv.ConvNeXtAtto(input_shape=(32, 32, 3))
    first = model.get_layer("convnext_atto_stage_3_block_0_pointwise_conv_1").kernel.numpy()
    second = model.get_layer("convnext_atto_stage_3_block_1_pointwise_conv_1").kernel.numpy()
    assert not np.allclose(first, second)
    assert 0.015 < first.std() < 0.02  # truncated normal, std 0.02 before truncation at 2σ

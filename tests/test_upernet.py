"""UperNet, FPN and the dense-prediction layers: contract, names, parameter counts, errors, zoo, export.

Parity of the loaded weights against transformers / mmdet is in tests/converters/test_upernet_keys.py;
the paper's FLOPs in tests/test_flops.py.
"""

import keras
import numpy as np
import pytest

import keras_visrec as kv
from keras_visrec import zoo
from keras_visrec.convnext import CONVNEXT_CONFIGS, pyramid_outputs
from keras_visrec.layers import AdaptiveAveragePooling2D, Resize
from keras_visrec.layers.adaptive_pooling import adaptive_pool_bins
from keras_visrec.upernet import UPERNET_CONFIGS, drop_auxiliary

TINY = dict(depths=(1, 1, 1, 1), dims=(8, 16, 32, 64))
HEADS = dict(channels=16, aux_channels=8)


def _tiny(classes=5, size=64, **kwargs):
    return kv.UperNet(TINY, classes, input_shape=(size, size, 3), **{**HEADS, **kwargs})


def _images(n=2, size=64, seed=0):
    return np.random.default_rng(seed).uniform(0, 255, (n, size, size, 3)).astype("float32")


# ---- layers ---------------------------------------------------------------------------------------

def test_adaptive_pool_bins_are_pytorchs_overlapping_bins():
    assert adaptive_pool_bins(16, 3) == [(0, 6), (5, 11), (10, 16)]
    assert adaptive_pool_bins(16, 6) == [(0, 3), (2, 6), (5, 8), (8, 11), (10, 14), (13, 16)]
    assert adaptive_pool_bins(2, 3) == [(0, 1), (0, 2), (1, 2)]  # more bins than pixels
    x = np.random.default_rng(1).normal(size=(2, 16, 10, 3)).astype("float32")
    expected = np.stack([np.stack([x[:, a:b, c:d].mean(axis=(1, 2)) for c, d in adaptive_pool_bins(10, 3)], 1)
                         for a, b in adaptive_pool_bins(16, 6)], 1)
    np.testing.assert_allclose(AdaptiveAveragePooling2D((6, 3))(x), expected, atol=1e-6)
    # unknown height and width: the same matrices built from the runtime shape
    inputs = keras.Input((None, None, 3))
    dynamic = keras.Model(inputs, AdaptiveAveragePooling2D((6, 3))(inputs))
    np.testing.assert_allclose(dynamic.predict(x, verbose=0), expected, atol=1e-6)
    np.testing.assert_allclose(AdaptiveAveragePooling2D(1)(x), x.mean(axis=(1, 2), keepdims=True), atol=1e-6)
    with pytest.raises(ValueError, match="output_size"):
        AdaptiveAveragePooling2D(0)


@pytest.mark.torch
def test_pooling_and_resize_equal_pytorch():
    torch = pytest.importorskip("torch")
    functional = torch.nn.functional
    rng = np.random.default_rng(2)
    for height, width in ((16, 16), (7, 9), (2, 3)):
        x = rng.normal(size=(1, height, width, 4)).astype("float32")
        xt = torch.from_numpy(x.transpose(0, 3, 1, 2).copy())
        for bins in (1, 2, 3, 6):
            ref = functional.adaptive_avg_pool2d(xt, bins).numpy().transpose(0, 2, 3, 1)
            assert np.abs(np.asarray(AdaptiveAveragePooling2D(bins)(x)) - ref).max() < 1e-5
        for size in ((32, 32), (3, 7), (11, 5), (height * 2, width * 4), (max(1, height // 2), max(1, width // 3))):
            for mode in ("bilinear", "nearest"):
                extra = {} if mode == "nearest" else {"align_corners": False}
                ref = functional.interpolate(xt, size=size, mode=mode, **extra).numpy().transpose(0, 2, 3, 1)
                assert np.abs(np.asarray(Resize(size, mode)(x)) - ref).max() < 1e-5, (height, width, size, mode)


def test_resize_to_another_tensor_and_bad_arguments():
    x, like = np.ones((1, 4, 4, 2), "float32"), np.zeros((1, 8, 12, 5), "float32")
    assert tuple(Resize()([x, like]).shape) == (1, 8, 12, 2)
    with pytest.raises(ValueError, match="interpolation"):
        Resize(interpolation="bicubic")
    with pytest.raises(ValueError, match=r"\[x, like\]"):
        Resize()(x)


# ---- the model ------------------------------------------------------------------------------------

def test_contract_outputs_names_inference_model_and_reload(tmp_path):
    model = _tiny()
    assert [tuple(t.shape) for t in model.outputs] == [(None, 16, 16, 5), (None, 4, 4, 5)]
    assert all(t.dtype == "float32" for t in model.outputs)
    names = {layer.name for layer in model.layers}
    pinned = ["upernet_backbone_stem_conv", "upernet_backbone_stage_3_block_0_depthwise_conv",
              "upernet_backbone_output_norm_2", "upernet_decode_psp_3_pool", "upernet_decode_psp_0_conv",
              "upernet_decode_bottleneck_bn", "upernet_decode_lateral_0_relu", "upernet_decode_top_down_0_add",
              "upernet_decode_fpn_2_conv", "upernet_decode_fpn_bottleneck_conv", "upernet_decode_dropout",
              "upernet_decode_classifier", "upernet_logits", "upernet_auxiliary_0_conv", "upernet_auxiliary_classifier",
              "upernet_aux_logits"]
    assert not set(pinned) - names
    x = _images()
    logits, aux = [np.asarray(t) for t in model(x, training=False)]
    inference = drop_auxiliary(model)
    assert inference.name == model.name and len(inference.outputs) == 1
    np.testing.assert_allclose(inference.predict(x, verbose=0), logits, atol=1e-5)
    assert drop_auxiliary(inference) is inference
    path = tmp_path / "upernet.keras"
    model.save(path)
    reloaded = keras.models.load_model(path)  # no custom_objects
    np.testing.assert_allclose(reloaded(x, training=False)[0], logits, atol=1e-5)
    np.testing.assert_allclose(drop_auxiliary(reloaded)(x), logits, atol=1e-5)
    single = _tiny(auxiliary=False)
    assert len(single.outputs) == 1 and "upernet_auxiliary_0_conv" not in {layer.name for layer in single.layers}


def test_unknown_input_size_computes_what_a_static_model_computes():
    dynamic = kv.UperNet(TINY, 5, input_shape=(None, None, 3), auxiliary=False, **HEADS)
    static = kv.UperNet(TINY, 5, input_shape=(96, 160, 3), auxiliary=False, **HEADS)
    static.set_weights(dynamic.get_weights())
    x = np.random.default_rng(5).uniform(0, 255, (1, 96, 160, 3)).astype("float32")
    np.testing.assert_allclose(dynamic.predict(x, verbose=0), static.predict(x, verbose=0), atol=1e-5)


def test_training_mode_uses_dropout_and_batch_statistics():
    model = _tiny(dropout=0.5, drop_path_rate=0.2)
    x = _images(4)
    inference = np.asarray(model(x, training=False)[0])
    np.testing.assert_allclose(model(x, training=False)[0], inference, atol=1e-6)  # inference is deterministic
    training = np.asarray(model(x, training=True)[0])
    assert np.abs(training - inference).max() > 1e-3


def _backbone_params(depths, dims, grn):
    total = 3 * dims[0] * 16 + dims[0] + 2 * dims[0]
    for stage, (depth, dim) in enumerate(zip(depths, dims)):
        if stage:
            total += 2 * dims[stage - 1] + 4 * dims[stage - 1] * dim + dim
        total += depth * (49 * dim + dim + 2 * dim + 8 * dim * dim + 5 * dim + (8 * dim if grn else dim))
    return total + 2 * sum(dims)  # the output norms


def upernet_params(depths, dims, classes=150, channels=512, aux_channels=256, grn=False, scales=4):
    """Trainable parameters of the official UperNet from its config (PyTorch counts; BN statistics excluded)."""
    head = scales * (dims[3] * channels + 2 * channels)
    head += 9 * (dims[3] + scales * channels) * channels + 2 * channels
    head += sum(d * channels + 2 * channels for d in dims[:3]) + 3 * (9 * channels * channels + 2 * channels)
    head += 9 * 4 * channels * channels + 2 * channels + channels * classes + classes
    aux = 9 * dims[2] * aux_channels + 2 * aux_channels + aux_channels * classes + classes
    return _backbone_params(depths, dims, grn) + head + aux


def _trainable(model):
    return sum(int(np.prod(w.shape)) for w in model.trainable_weights)


README_PARAMS_M = {"tiny": 60, "small": 82, "base": 122, "large": 235, "xlarge": 391}


def test_param_counts_from_the_config_equal_the_built_model_and_the_readme():
    model = _tiny()
    assert _trainable(model) == upernet_params(TINY["depths"], TINY["dims"], 5, 16, 8)
    bn_channels = sum(int(w.shape[0]) for w in model.non_trainable_weights)
    assert model.count_params() - _trainable(model) == bn_channels  # BN moving mean / variance only
    v2 = kv.UperNet(dict(TINY, use_grn=True), 5, input_shape=(64, 64, 3), **HEADS)
    assert _trainable(v2) == upernet_params(TINY["depths"], TINY["dims"], 5, 16, 8, grn=True)
    for size, millions in README_PARAMS_M.items():
        config = CONVNEXT_CONFIGS[f"convnext_{size}"]
        assert round(upernet_params(config["depths"], config["dims"]) / 1e6) == millions, size
    assert sorted(kv.list_models(family="upernet")) == sorted(UPERNET_CONFIGS)


@pytest.mark.torch
def test_param_counts_equal_transformers_upernet_built_from_the_official_configs():
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    for size in README_PARAMS_M:
        config = CONVNEXT_CONFIGS[f"convnext_{size}"]
        hf_config = transformers.UperNetConfig(
            backbone_config=transformers.ConvNextConfig(depths=list(config["depths"]), hidden_sizes=list(config["dims"]),
                                                        out_features=["stage1", "stage2", "stage3", "stage4"]),
            hidden_size=512, auxiliary_in_channels=config["dims"][2], auxiliary_channels=256, num_labels=150)
        with torch.device("meta"):  # shapes only, no memory
            hf = transformers.UperNetForSemanticSegmentation(hf_config)
        official = sum(p.numel() for p in hf.parameters())
        print(f"UperNet-ConvNeXt-{size}: {official:,} parameters (transformers, official config), "
              f"README {README_PARAMS_M[size]} M")
        assert upernet_params(config["depths"], config["dims"]) == official, size


@pytest.mark.slow
def test_upernet_convnext_tiny_has_the_official_parameter_count():
    model = kv.UperNetConvNeXtTiny()
    assert _trainable(model) == upernet_params((3, 3, 9, 3), (96, 192, 384, 768)) == 60_242_636
    assert [tuple(t.shape) for t in model.outputs] == [(None, 128, 128, 150), (None, 32, 32, 150)]


def test_a_built_backbone_model_is_copied_into_the_segmenter():
    backbone = kv.ConvNeXt(TINY["depths"], TINY["dims"], include_top=False, features_only=True, name="mine",
                           input_shape=(64, 64, 3), drop_path_rate=0.1)
    model = kv.UperNet(backbone, 3, input_shape=(64, 64, 3), **HEADS)
    for suffix in ("stem_conv", "stage_2_block_0_pointwise_conv_1", "downsampling_conv_1"):
        for ours, theirs in zip(model.get_layer(f"upernet_backbone_{suffix}").weights,
                                backbone.get_layer(f"mine_{suffix}").weights):
            np.testing.assert_array_equal(ours, theirs)
    assert model.get_layer("upernet_backbone_stage_3_block_0_drop_path").rate == pytest.approx(0.1)


@pytest.mark.parametrize("backbone, match", [
    ("convnext_isotropic_small", "isotropic ConvNeXt has one stride-16 output"),
    ("hrnetv2_w48", "not a ConvNeXt registry name"),
    (dict(depths=(1, 1, 1), dims=(8, 16, 32)), "four stages"),
    (dict(depths=(1, 1, 1, 1), dims=(8, 16, 32, 64), layers=3), "takes the keys"),
    (3, "must be a ConvNeXt V1 / V2 registry name"),
])
def test_a_backbone_without_four_stage_outputs_is_one_error_naming_backbone(backbone, match):
    with pytest.raises((ValueError, TypeError), match="`backbone`") as error:
        kv.UperNet(backbone, 5, input_shape=(64, 64, 3))
    assert match in str(error.value)


def test_other_bad_arguments_name_the_argument():
    classifier = kv.ConvNeXt(TINY["depths"], TINY["dims"], input_shape=(64, 64, 3), classes=3)
    with pytest.raises(ValueError, match="`backbone`.*four stage outputs"):
        kv.UperNet(classifier, 5)
    plain = kv.ConvNeXt(TINY["depths"], TINY["dims"], include_top=False, features_only=True,
                        include_preprocessing=False, input_shape=(64, 64, 3))
    with pytest.raises(ValueError, match="include_preprocessing=False"):
        kv.UperNet(plain, 5, input_shape=(64, 64, 3))
    with pytest.raises(ValueError, match="input_shape"):
        kv.UperNet(TINY, 5, input_shape=(100, 100, 3))
    with pytest.raises(ValueError, match="classes"):
        kv.UperNet(TINY, 0)
    with pytest.raises(ValueError, match="channels"):
        kv.UperNet(TINY, 5, channels=0)
    with pytest.raises(ValueError, match="segmentation entries"):
        kv.UperNet(TINY, 5, weights="convnext_tiny.fb_in1k")
    with pytest.raises(ValueError, match="150-class head.*classes=150"):
        kv.UperNetConvNeXtTiny(19, weights="upernet_convnext_tiny.fb_in1k_ade20k_512")
    with pytest.raises(ValueError, match="not both"):
        kv.UperNet(TINY, 5, weights="a.pth", backbone_weights="b.pth")
    with pytest.raises(ValueError, match="not an UperNet"):
        drop_auxiliary(kv.FPN(TINY))


def test_zoo_ids_need_the_unverified_opt_in(monkeypatch):
    monkeypatch.delenv(zoo.UNVERIFIED_ENV, raising=False)
    with pytest.raises(ValueError, match="no published sha256"):
        kv.UperNetConvNeXtTiny(weights="upernet_convnext_tiny.fb_in1k_ade20k_512")


# ---- ConvNeXt's pyramid_outputs, the FPN neck -----------------------------------------------------

def test_pyramid_outputs_of_a_features_only_convnext_and_after_reload(tmp_path):
    backbone = kv.ConvNeXt(TINY["depths"], TINY["dims"], include_top=False, features_only=True, output_norms=True,
                           input_shape=(64, 64, 3))
    assert {k: tuple(v.shape) for k, v in backbone.pyramid_outputs.items()} == {
        "P2": (None, 16, 16, 8), "P3": (None, 8, 8, 16), "P4": (None, 4, 4, 32), "P5": (None, 2, 2, 64)}
    extractor = keras.Model(backbone.input, backbone.pyramid_outputs)  # keras-hub's pattern
    x = _images(1)
    features = extractor(x)
    np.testing.assert_allclose(features["P4"], backbone(x)[2], atol=1e-6)
    path = tmp_path / "backbone.keras"
    backbone.save(path)
    assert sorted(pyramid_outputs(keras.models.load_model(path))) == ["P2", "P3", "P4", "P5"]
    iso = kv.ConvNeXtIsotropicSmall(include_top=False, features_only=True, input_shape=(64, 64, 3))
    assert list(iso.pyramid_outputs) == ["P4"]
    with pytest.raises(ValueError, match="features_only"):
        pyramid_outputs(kv.ConvNeXt(TINY["depths"], TINY["dims"], input_shape=(32, 32, 3)))
    with pytest.raises(ValueError, match="output_norms"):
        kv.ConvNeXt(TINY["depths"], TINY["dims"], output_norms=True)


def test_fpn_levels_and_arguments():
    neck = kv.FPN(TINY, out_channels=8, num_outs=6, input_shape=(64, 96, 3))
    outputs = neck(np.zeros((1, 64, 96, 3), "float32"))
    assert {k: tuple(v.shape) for k, v in outputs.items()} == {
        "P2": (1, 16, 24, 8), "P3": (1, 8, 12, 8), "P4": (1, 4, 6, 8), "P5": (1, 2, 3, 8), "P6": (1, 1, 2, 8),
        "P7": (1, 1, 1, 8)}
    assert {"fpn_lateral_0", "fpn_fpn_3", "fpn_top_down_2_add", "fpn_extra_0_pool"} <= {l.name for l in neck.layers}
    with pytest.raises(ValueError, match="num_outs"):
        kv.FPN(TINY, num_outs=3)
    with pytest.raises(ValueError, match="detection entries"):
        kv.FPN("convnext_tiny", weights="upernet_convnext_tiny.fb_in1k_ade20k_512")


# ---- the catalogue's dense-prediction entries -----------------------------------------------------

SEGMENTATION_IDS = ["upernet_convnext_tiny.fb_in1k_ade20k_512", "upernet_convnext_small.fb_in1k_ade20k_512",
                    "upernet_convnext_base.fb_in1k_ade20k_512", "upernet_convnext_base.fb_in22k_ade20k_640",
                    "upernet_convnext_large.fb_in22k_ade20k_640", "upernet_convnext_xlarge.fb_in22k_ade20k_640"]


def test_the_six_official_upernet_checkpoints_are_listed_with_their_figures():
    assert [i for i in zoo.list_weights(task="segmentation") if i.startswith("upernet_")] == sorted(SEGMENTATION_IDS)
    published = {"tiny": (46.0, 46.7, 939), "small": (48.7, 49.6, 1027), "base": (49.1, 49.9, 1170)}
    for zoo_id in SEGMENTATION_IDS:
        entry = zoo.get_weights(zoo_id)
        size = entry.arch.split("_")[-1]
        config = CONVNEXT_CONFIGS[UPERNET_CONFIGS[entry.arch]["backbone"]]
        assert entry.num_params == upernet_params(config["depths"], config["dims"]), zoo_id
        assert entry.classes == 150 and entry.dataset == "ade20k" and entry.layout == "mmseg"
        assert entry.resolution == entry.preprocessing["crop"] == (640 if "22k" in zoo_id else 512)
        assert entry.url == f"https://dl.fbaipublicfiles.com/convnext/ade20k/upernet_convnext_{size}_" \
                            f"{'22k' if '22k' in zoo_id else '1k'}_{entry.resolution}x{entry.resolution}.pth"
        assert entry.sha256 is None and "no checksums" in entry.sha256_source and entry.license == "MIT"
        assert entry.metrics["miou"] < entry.metrics["miou_ms"] and round(entry.num_params / 1e6) == \
            entry.metrics["params_m"]
        if "22k" not in zoo_id:
            assert (entry.metrics["miou"], entry.metrics["miou_ms"], entry.metrics["gflops"]) == published[size]


def test_detection_entries_load_into_a_features_only_backbone():
    ids = zoo.list_weights(task="detection")
    assert "convnext_tiny.fb_in1k_coco_mask_rcnn_3x" in ids and len(ids) == 7
    for zoo_id in ids:
        entry = zoo.get_weights(zoo_id)
        config = CONVNEXT_CONFIGS[entry.arch]
        assert entry.num_params == _backbone_params(config["depths"], config["dims"], False), zoo_id
        assert entry.dataset == "coco" and entry.metrics["box_ap"] > entry.metrics["mask_ap"] > 40
    assert zoo.get_weights("convnext_tiny.fb_in1k_coco_mask_rcnn_3x").metrics["box_ap"] == 46.2


# ---- export -----------------------------------------------------------------------------------------

@pytest.mark.slow
def test_export_tflite_fp32_and_int8_with_the_head_ops_on_xnnpack_and_the_edge_tpu_table(tmp_path):
    model = drop_auxiliary(_tiny(size=96))
    rng = np.random.default_rng(3)
    for variable in model.weights:  # trained-looking statistics instead of BN's identity init
        if "moving_variance" in variable.path:
            variable.assign(rng.uniform(0.5, 1.5, variable.shape).astype("float32"))
        elif "moving_mean" in variable.path:
            variable.assign(rng.normal(0, 0.2, variable.shape).astype("float32"))
    images = _images(8, 96, seed=4)
    head_ops = {"RESIZE_BILINEAR", "FULLY_CONNECTED", "TRANSPOSE", "MEAN", "CONCATENATION"}
    fp32 = kv.export_tflite(model, tmp_path / "upernet.tflite", validation_data=images)
    print(fp32)
    assert fp32.agreement["max_abs_diff"] <= 1e-4 and fp32.xnnpack_fraction == 1.0
    assert head_ops <= set(fp32.kernels) and "AVERAGE_POOL_2D" not in fp32.kernels
    int8 = kv.export_tflite(model, tmp_path / "upernet_int8.tflite", quantization="int8", representative_data=images)
    print(int8)
    scale = float(np.abs(model.predict(images, verbose=0)).max())
    assert int8.agreement["max_abs_diff"] <= 0.05 * scale
    for op in head_ops:
        row = int8.kernels[op]
        assert row["xnnpack"] == row["count"] and "int8" in row["dtypes"], op
    edgetpu = kv.export_tflite(model, tmp_path / "upernet_edgetpu.tflite", quantization="int8",
                               representative_data=images, target="edgetpu")
    print(edgetpu)
    mapped = {entry["op"] for entry in edgetpu.edgetpu.entries if entry["mapped"]}
    assert head_ops <= mapped and edgetpu.edgetpu.all_mapped

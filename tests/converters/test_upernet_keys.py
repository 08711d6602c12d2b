"""UperNet / FPN / dense-backbone checkpoints: parity with transformers' UperNet and mmdet's FPN.

transformers' ``UperNetForSemanticSegmentation`` (ConvNext and ConvNextV2 backbones, tiny) gets
EVERY parameter and BatchNorm statistic randomised, is saved in its own layout and — renamed by an
independent map written here from the mmseg config and the official backbone code — in the mmseg
layout with a ``meta`` entry (config text, CLASSES, PALETTE) that the torch-free reader must read as
inert data. Both load through ``weights=`` without torch and must agree to ≤ 1e-4 max abs: the
decode-head logits at 1/4, the auxiliary logits, and the upsampled logits transformers returns.
The detection backbone (the official ``norm{s}`` output norms) and mmdet's FPN neck are checked
against a small PyTorch FPN written here from mmdet's code.
"""

import collections
import importlib.util
import os
import re

import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

import keras_visrec  # noqa: E402
from keras_visrec.converters.loading import load_checkpoint_into_model  # noqa: E402
from keras_visrec.segmentation.losses import upsample_logits  # noqa: E402

pytestmark = [pytest.mark.torch]
TOLERANCE = 1e-4
DEPTHS, DIMS = (1, 2, 1, 1), (8, 16, 24, 32)
CLASSES = 5
_HERE = os.path.dirname(os.path.abspath(__file__))
_spec = importlib.util.spec_from_file_location(
    "torch_convnext", os.path.join(_HERE, os.pardir, "fixtures", "torch_convnext.py"))
tc = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(tc)
MEAN, STD = np.array([0.485, 0.456, 0.406], "float32"), np.array([0.229, 0.224, 0.225], "float32")
MMSEG_CONFIG = """norm_cfg = dict(type='SyncBN', requires_grad=True)
model = dict(type='EncoderDecoder', backbone=dict(type='ConvNeXt', depths=[1, 2, 1, 1], dims=[8, 16, 24, 32]),
             decode_head=dict(type='UPerHead', in_channels=[8, 16, 24, 32], pool_scales=(1, 2, 3, 6), channels=16),
             auxiliary_head=dict(type='FCNHead', in_channels=24, in_index=2, channels=8, num_convs=1))
"""


def _randomise(module, seed):
    """Every parameter random (tests/fixtures' rule), BatchNorm scales and running statistics too."""
    tc.randomise(module, seed=seed)
    generator = torch.Generator().manual_seed(seed + 100)
    with torch.no_grad():
        for layer in module.modules():
            if isinstance(layer, torch.nn.BatchNorm2d):
                layer.weight.copy_(1.0 + 0.2 * torch.randn(layer.weight.shape, generator=generator))
                layer.running_mean.copy_(0.2 * torch.randn(layer.running_mean.shape, generator=generator))
                layer.running_var.copy_(0.5 + torch.rand(layer.running_var.shape, generator=generator))
    return module.eval()


def _hf_upernet(version, seed=0):
    backbone = (transformers.ConvNextV2Config if version == 2 else transformers.ConvNextConfig)(
        depths=list(DEPTHS), hidden_sizes=list(DIMS), out_features=["stage1", "stage2", "stage3", "stage4"])
    config = transformers.UperNetConfig(backbone_config=backbone, hidden_size=16, auxiliary_in_channels=DIMS[2],
                                        auxiliary_channels=8, num_labels=CLASSES)
    return _randomise(transformers.UperNetForSemanticSegmentation(config), seed)


def _hf_to_mmseg(key):
    """transformers' UperNet key → the mmseg key of facebookresearch/ConvNeXt semantic_segmentation/."""
    rules = [
        (r"backbone\.embeddings\.patch_embeddings\.", "backbone.downsample_layers.0.0."),
        (r"backbone\.embeddings\.layernorm\.", "backbone.downsample_layers.0.1."),
        (r"backbone\.encoder\.stages\.(\d)\.downsampling_layer\.(\d)\.", r"backbone.downsample_layers.\1.\2."),
        (r"backbone\.encoder\.stages\.(\d)\.layers\.(\d+)\.layernorm\.", r"backbone.stages.\1.\2.norm."),
        (r"backbone\.encoder\.stages\.(\d)\.layers\.(\d+)\.layer_scale_parameter$", r"backbone.stages.\1.\2.gamma"),
        (r"backbone\.encoder\.stages\.(\d)\.layers\.(\d+)\.grn\.weight$", r"backbone.stages.\1.\2.grn.gamma"),
        (r"backbone\.encoder\.stages\.(\d)\.layers\.(\d+)\.grn\.bias$", r"backbone.stages.\1.\2.grn.beta"),
        (r"backbone\.encoder\.stages\.(\d)\.layers\.(\d+)\.", r"backbone.stages.\1.\2."),
        (r"backbone\.hidden_states_norms\.stage(\d)\.", lambda m: f"backbone.norm{int(m[1]) - 1}."),
        (r"\.batch_norm\.", ".bn."),
        (r"^(decode_head|auxiliary_head)\.classifier\.", r"\1.conv_seg."),
    ]
    for pattern, replacement in rules:
        key = re.sub(pattern, replacement, key)
    return key


def _save_mmseg(hf, path):
    state = collections.OrderedDict((_hf_to_mmseg(k), v) for k, v in hf.state_dict().items())
    assert not any(k.startswith(("backbone.encoder", "backbone.embeddings")) or ".batch_norm." in k for k in state)
    meta = {"mmseg_version": "0.20.2", "config": MMSEG_CONFIG, "iter": 160000,
            "CLASSES": tuple(f"class{i}" for i in range(CLASSES)),
            "PALETTE": [[i * 40, 255 - i * 40, 7 * i] for i in range(CLASSES)]}
    torch.save({"meta": meta, "state_dict": state}, path)
    return state


def _images(shape=(2, 96, 128, 3), seed=0):
    return np.random.default_rng(seed).uniform(0, 255, shape).astype("float32")


def _pixel_values(x):
    return torch.from_numpy(((x / 255.0 - MEAN) / STD).transpose(0, 3, 1, 2).copy())


def _hf_outputs(hf, x):
    with torch.no_grad():
        pixels = _pixel_values(x)
        features = hf.backbone(pixels).feature_maps
        head, aux = hf.decode_head(features), hf.auxiliary_head(features)
        full = hf(pixel_values=pixels).logits
    return [t.permute(0, 2, 3, 1).numpy() for t in (head, aux, full)]


def _compare(model, x, reference, label):
    logits, aux = [np.asarray(t) for t in model(x, training=False)]
    upsampled = np.asarray(upsample_logits(logits, x.shape[1], x.shape[2]))
    diffs = [float(np.abs(a - b).max()) for a, b in zip((logits, aux, upsampled), reference)]
    print(f"parity {label}: logits {diffs[0]:.2e}, aux logits {diffs[1]:.2e}, upsampled {diffs[2]:.2e} "
          f"(max |logit| {np.abs(reference[0]).max():.2f})")
    assert logits.shape == reference[0].shape and aux.shape == reference[1].shape
    assert max(diffs) <= TOLERANCE
    assert np.abs(reference[0]).max() > 0.1  # the randomised network computes something


def _ours(path, version, **kwargs):
    return keras_visrec.UperNet(dict(depths=DEPTHS, dims=DIMS, use_grn=version == 2), CLASSES, weights=str(path),
                                input_shape=(96, 128, 3), channels=16, aux_channels=8, **kwargs)


@pytest.mark.parametrize("version", [1, 2])
def test_upernet_parity_with_transformers_in_both_layouts(tmp_path, version):
    hf = _hf_upernet(version, seed=version)
    x = _images(seed=version)
    reference = _hf_outputs(hf, x)
    hf_path = tmp_path / ("pytorch_model.bin" if version == 1 else "model.safetensors")
    if version == 1:
        torch.save(hf.state_dict(), hf_path)
    else:
        from safetensors.torch import save_file

        save_file({k: v.contiguous() for k, v in hf.state_dict().items()}, str(hf_path))
    model = _ours(hf_path, version)
    _compare(model, x, reference, f"UperNet V{version} (transformers layout)")

    mmseg_path = tmp_path / "upernet_mmseg.pth"
    _save_mmseg(hf, mmseg_path)
    for variable in model.weights:  # forget the first file, then load the second one
        variable.assign(np.zeros(variable.shape, variable.dtype))
    summary = load_checkpoint_into_model(model, mmseg_path, include_top=True, family="upernet")
    _compare(model, x, reference, f"UperNet V{version} (mmseg layout, meta)")
    assert summary["layout"] == "mmseg" and summary["backbone_layout"] == "official"
    assert summary["metadata"]["entries"] == ["meta"] and summary["metadata"]["classes"] == CLASSES
    assert summary["metadata"]["config_chars"] == len(MMSEG_CONFIG)
    assert all(key.endswith("num_batches_tracked") for key in summary["ignored"])


def test_upernet_parity_with_transformers_through_the_winograd_convs(tmp_path, monkeypatch):
    """At full size UperNet's FPN and fusion convs (512+ channels, maps of 64x64 and more) take Winograd
    F(2x2, 3x3) on the TensorFlow CPU path; forced here (thresholds lowered) on the small model."""
    import tensorflow as tf

    from keras_visrec.layers import conv

    if not conv.generic_conv_active():
        pytest.skip("the Winograd path is the TensorFlow oneDNN CPU path's")
    monkeypatch.setattr(conv, "WINOGRAD_MIN_CHANNELS", 16)
    monkeypatch.setattr(conv, "WINOGRAD_MIN_PIXELS", 1)
    monkeypatch.setattr(conv, "_cpu_has_avx512", lambda: False)  # on AVX-512 CPUs the narrow convs stay on oneDNN
    hf = _hf_upernet(1, seed=3)
    x = _images(seed=3)
    path = tmp_path / "pytorch_model.bin"
    torch.save(hf.state_dict(), path)
    model = _ours(path, 1)
    graph = tf.function(lambda t: model(t, training=False)).get_concrete_function(tf.constant(x)).graph
    assert sum("_XlaMustCompile" in op.node_def.attr for op in graph.get_operations()) >= 2 * 5  # FPN 3 + fusion + PPM
    _compare(model, x, _hf_outputs(hf, x), "UperNet V1 (Winograd convs)")


def test_inference_model_loads_and_reports_the_auxiliary_head(tmp_path):
    hf = _hf_upernet(1, seed=3)
    path = tmp_path / "upernet.pth"
    _save_mmseg(hf, path)
    model = keras_visrec.upernet.drop_auxiliary(_ours(path, 1))
    x = _images((1, 96, 128, 3), seed=4)
    reference = _hf_outputs(hf, x)
    assert np.abs(np.asarray(model(x)) - reference[0]).max() <= TOLERANCE
    no_aux = keras_visrec.UperNet(dict(depths=DEPTHS, dims=DIMS), CLASSES, auxiliary=False, input_shape=(96, 128, 3),
                                  channels=16, aux_channels=8)
    summary = load_checkpoint_into_model(no_aux, path, include_top=True, family="upernet")
    assert "auxiliary_head.conv_seg.weight" in summary["ignored"]
    assert np.abs(np.asarray(no_aux(x)) - reference[0]).max() <= TOLERANCE
    with pytest.raises(ValueError, match="load strictly"):
        load_checkpoint_into_model(no_aux, path, include_top=True, family="upernet", strict=False)


def test_classes_disagreeing_with_the_head_is_one_error_naming_classes_and_the_file(tmp_path):
    path = tmp_path / "upernet.pth"
    _save_mmseg(_hf_upernet(1), path)
    with pytest.raises(ValueError, match=rf"upernet\.pth has a {CLASSES}-class head .* classes=7; pass classes={CLASSES}"):
        keras_visrec.UperNet(dict(depths=DEPTHS, dims=DIMS), 7, weights=str(path), input_shape=(64, 64, 3),
                             channels=16, aux_channels=8)


def test_a_head_of_the_wrong_width_or_backbone_lists_every_mismatch(tmp_path):
    path = tmp_path / "upernet.pth"
    _save_mmseg(_hf_upernet(1), path)
    with pytest.raises(ValueError, match="does not fit model") as error:
        keras_visrec.UperNet(dict(depths=(1, 3, 1, 1), dims=DIMS), CLASSES, weights=str(path), input_shape=(64, 64, 3),
                             channels=24, aux_channels=8)
    message = str(error.value)
    assert "missing in checkpoint" in message and "upernet_backbone_stage_1_block_2_depthwise_conv" in message
    assert "shape mismatch" in message and "decode_head.fpn_bottleneck.conv.weight" in message


# ---- detection: the official backbone with output norms, mmdet's FPN -----------------------------

class _MMDetFPN(torch.nn.Module):
    """mmdet's FPN as the official Mask R-CNN config builds it (no norm, add_extra_convs=False)."""

    def __init__(self, in_channels, out_channels, num_outs):
        super().__init__()
        self.lateral_convs = torch.nn.ModuleList()
        self.fpn_convs = torch.nn.ModuleList()
        for channels in in_channels:
            lateral, output = torch.nn.Module(), torch.nn.Module()
            lateral.conv = torch.nn.Conv2d(channels, out_channels, 1)
            output.conv = torch.nn.Conv2d(out_channels, out_channels, 3, padding=1)
            self.lateral_convs.append(lateral)
            self.fpn_convs.append(output)
        self.num_outs = num_outs

    def forward(self, inputs):
        laterals = [lateral.conv(x) for lateral, x in zip(self.lateral_convs, inputs)]
        for i in range(len(laterals) - 1, 0, -1):
            laterals[i - 1] = laterals[i - 1] + torch.nn.functional.interpolate(
                laterals[i], size=laterals[i - 1].shape[2:], mode="nearest")
        outs = [conv.conv(x) for conv, x in zip(self.fpn_convs, laterals)]
        while len(outs) < self.num_outs:
            outs.append(torch.nn.functional.max_pool2d(outs[-1], 1, stride=2))
        return outs


def _mmdet_checkpoint(path, seed=5):
    """An official-layout Mask R-CNN file: the HF backbone renamed, the FPN, and stand-in detection heads."""
    hf = _hf_upernet(1, seed=seed)
    fpn = _randomise(_MMDetFPN(DIMS, 16, 5), seed + 1)
    state = collections.OrderedDict(
        (_hf_to_mmseg(k), v) for k, v in hf.state_dict().items() if k.startswith("backbone."))
    state.update((f"neck.{k}", v) for k, v in fpn.state_dict().items())
    generator = torch.Generator().manual_seed(seed)
    for key, shape in (("rpn_head.rpn_conv.weight", (16, 16, 3, 3)), ("rpn_head.rpn_cls.weight", (3, 16, 1, 1)),
                       ("roi_head.bbox_head.fc_cls.weight", (81, 32)), ("roi_head.mask_head.conv_logits.bias", (80,))):
        state[key] = torch.randn(shape, generator=generator)
    torch.save({"meta": {"mmdet_version": "2.11.0", "CLASSES": ("person", "bicycle"), "epoch": 36},
                "state_dict": state, "optimizer": {"state": {}, "param_groups": [{"lr": 1e-4, "params": [0, 1]}]}},
               path)
    return hf.backbone, fpn


def test_detection_backbone_and_fpn_match_the_official_layout(tmp_path):
    path = tmp_path / "mask_rcnn_convnext_tiny_1k_3x.pth"
    backbone, fpn = _mmdet_checkpoint(path)
    x = _images((1, 96, 64, 3), seed=6)
    with torch.no_grad():
        features = backbone(_pixel_values(x)).feature_maps
        levels = [t.permute(0, 2, 3, 1).numpy() for t in fpn(features)]
    features = [t.permute(0, 2, 3, 1).numpy() for t in features]

    ours = keras_visrec.ConvNeXt(DEPTHS, DIMS, include_top=False, features_only=True, output_norms=True,
                                 weights=str(path), input_shape=(96, 64, 3))
    diffs = [float(np.abs(np.asarray(a) - b).max()) for a, b in zip(ours(x), features)]
    summary = load_checkpoint_into_model(ours, path, include_top=False, family="convnext")
    assert summary["left_out"] == {"neck": 16, "roi_head": 2, "rpn_head": 2}
    assert summary["metadata"]["entries"] == ["meta", "optimizer"] and summary["metadata"]["epoch"] == 36
    assert sorted(ours.pyramid_outputs) == ["P2", "P3", "P4", "P5"]

    neck = keras_visrec.FPN(dict(depths=DEPTHS, dims=DIMS), out_channels=16, weights=str(path))
    outputs = neck(x)
    assert sorted(outputs) == ["P2", "P3", "P4", "P5", "P6"]
    level_diffs = [float(np.abs(np.asarray(outputs[f"P{i + 2}"]) - ref).max()) for i, ref in enumerate(levels)]
    print(f"parity detection backbone (official norm0..3 keys): stages {[f'{d:.2e}' for d in diffs]}; "
          f"FPN P2..P6 {[f'{d:.2e}' for d in level_diffs]}")
    assert max(diffs + level_diffs) <= TOLERANCE
    assert tuple(outputs["P6"].shape) == (1, 2, 1, 16)


def test_a_backbone_without_output_norms_warns_and_names_the_norms(tmp_path):
    path = tmp_path / "mask_rcnn.pth"
    _mmdet_checkpoint(path)
    with pytest.warns(UserWarning, match="output_norms=True"):
        model = keras_visrec.ConvNeXt(DEPTHS, DIMS, include_top=False, features_only=True, weights=str(path),
                                      input_shape=(64, 64, 3))
    with pytest.warns(UserWarning, match="norm0"):
        summary = load_checkpoint_into_model(model, path, include_top=False, family="convnext")
    assert "backbone.norm0.weight" in summary["ignored"] and "neck.fpn_convs.0.conv.weight" in summary["ignored"]
    with pytest.raises(ValueError, match="include_top=False, features_only=True"):
        keras_visrec.ConvNeXt(DEPTHS, DIMS, weights=str(path), input_shape=(64, 64, 3), classes=3)


def test_classification_weights_leave_the_output_norms_at_their_start(tmp_path):
    reference = tc.randomise(tc.ConvNeXtRef(DEPTHS, DIMS, 10), seed=9).eval()
    path = tmp_path / "convnext_1k.pth"
    torch.save({"model": reference.state_dict()}, path)
    model = keras_visrec.ConvNeXt(DEPTHS, DIMS, include_top=False, features_only=True, output_norms=True,
                                  weights=str(path), input_shape=(64, 64, 3))
    summary = load_checkpoint_into_model(model, path, include_top=False, family="convnext")
    assert summary["initialised"] == [f"convnext_output_norm_{s}" for s in range(4)]
    norm = model.get_layer("convnext_output_norm_2")
    np.testing.assert_array_equal(norm.gamma, np.ones(DIMS[2]))
    stem = model.get_layer("convnext_stem_conv").kernel
    np.testing.assert_allclose(stem, reference.state_dict()["downsample_layers.0.0.weight"].numpy().transpose(2, 3, 1, 0))
    # the UperNet builder takes the same file as backbone_weights
    seg = keras_visrec.UperNet(dict(depths=DEPTHS, dims=DIMS), 3, backbone_weights=str(path), input_shape=(64, 64, 3),
                               channels=16, aux_channels=8)
    np.testing.assert_allclose(seg.get_layer("upernet_backbone_stem_conv").kernel, stem)


def test_a_zoo_id_loads_the_cached_official_file_with_the_opt_in(tmp_path, monkeypatch):
    """The zoo path end to end, minus the network (downloads are tested against a loopback server in tests/zoo)."""
    from keras_visrec import zoo

    entry = zoo.get_weights("upernet_convnext_tiny.fb_in1k_ade20k_512")
    transformers_config = transformers.UperNetConfig(
        backbone_config=transformers.ConvNextConfig(depths=list(DEPTHS), hidden_sizes=list(DIMS),
                                                    out_features=["stage1", "stage2", "stage3", "stage4"]),
        hidden_size=16, auxiliary_in_channels=DIMS[2], auxiliary_channels=8, num_labels=entry.classes)
    hf = _randomise(transformers.UperNetForSemanticSegmentation(transformers_config), 11)
    _save_mmseg(hf, tmp_path / entry.filename)  # a tiny file where the download would have put the real one
    monkeypatch.setenv(zoo.CACHE_ENV, str(tmp_path))
    monkeypatch.setenv(zoo.UNVERIFIED_ENV, "1")
    model = keras_visrec.UperNet(dict(depths=DEPTHS, dims=DIMS), entry.classes, weights=entry.id,
                                 input_shape=(64, 64, 3), channels=16, aux_channels=8)
    x = _images((1, 64, 64, 3), seed=12)
    assert np.abs(np.asarray(model(x)[0]) - _hf_outputs(hf, x)[0]).max() <= TOLERANCE


def test_conversion_writes_the_file_only_when_it_succeeded(tmp_path):
    from keras_visrec.upernet import convert_checkpoint

    path = tmp_path / "upernet.pth"
    hf = _hf_upernet(1, seed=13)
    _save_mmseg(hf, path)
    common = dict(channels=16, aux_channels=8, input_shape=(64, 64, 3))
    with pytest.raises(ValueError, match="classes=5"):
        convert_checkpoint(path, tmp_path / "bad.weights.h5", dict(depths=DEPTHS, dims=DIMS), 7, **common)
    assert sorted(os.listdir(tmp_path)) == ["upernet.pth"]  # nothing half-written, no temporary left
    summary = convert_checkpoint(path, tmp_path / "upernet.keras", dict(depths=DEPTHS, dims=DIMS), CLASSES, **common)
    assert summary["layout"] == "mmseg" and sorted(os.listdir(tmp_path)) == ["upernet.keras", "upernet.pth"]
    import keras

    x = _images((1, 64, 64, 3), seed=14)
    reloaded = keras.models.load_model(tmp_path / "upernet.keras")
    assert np.abs(np.asarray(reloaded(x)[0]) - _hf_outputs(hf, x)[0]).max() <= TOLERANCE

"""HRNetV2: parameter counts derived from the official config structure, names, bad input."""

import numpy as np
import pytest

from keras_visrec.hrnet import HRNET_CONFIGS, HRNetV2, HRNetV2W18SmallV2, HRNetV2W48


def _conv(cin, cout, k, bias=False):
    return cin * cout * k * k + (cout if bias else 0)


def _bn(c):
    return 2 * c  # trainable gamma, beta


def expected_params(config, classes):
    """Trainable parameters of HRNetV2-seg, counted from the config as the official code builds it."""
    stem = config["stem"]
    total = _conv(3, stem, 3) + _bn(stem) + _conv(stem, stem, 3) + _bn(stem)
    blocks, planes = config["layer1"]
    inplanes = stem
    for i in range(blocks):
        total += _conv(inplanes, planes, 1) + _bn(planes) + _conv(planes, planes, 3) + _bn(planes)
        total += _conv(planes, planes * 4, 1) + _bn(planes * 4)
        if i == 0 and inplanes != planes * 4:
            total += _conv(inplanes, planes * 4, 1) + _bn(planes * 4)
        inplanes = planes * 4
    pre = [inplanes]
    for modules, nblocks, widths in config["stages"]:
        for i, w in enumerate(widths):  # transition
            if i < len(pre):
                if pre[i] != w:
                    total += _conv(pre[i], w, 3) + _bn(w)
            else:
                for j in range(i + 1 - len(pre)):
                    out = w if j == i - len(pre) else pre[-1]
                    total += _conv(pre[-1], out, 3) + _bn(out)
        for _ in range(modules):
            for b, w in enumerate(widths):
                total += nblocks[b] * 2 * (_conv(w, w, 3) + _bn(w))
            for i in range(len(widths)):
                for j in range(len(widths)):
                    if j > i:
                        total += _conv(widths[j], widths[i], 1) + _bn(widths[i])
                    elif j < i:
                        for k in range(i - j):
                            out = widths[i] if k == i - j - 1 else widths[j]
                            total += _conv(widths[j], out, 3) + _bn(out)
        pre = list(widths)
    last = sum(pre)
    total += _conv(last, last, 1, bias=True) + _bn(last) + _conv(last, classes, 1, bias=True)
    return total


def _trainable(model):
    return int(sum(np.prod(w.shape) for w in model.trainable_weights))


def test_param_count_matches_config_structure(tiny_config):
    model = HRNetV2(tiny_config, classes=11, input_shape=(64, 64, 3), name="tiny")
    assert _trainable(model) == expected_params(tiny_config, 11)
    assert model.output.shape == (None, 16, 16, 11)


def test_w18_small_v2_param_count():
    model = HRNetV2W18SmallV2(input_shape=(64, 128, 3))
    assert _trainable(model) == expected_params(HRNET_CONFIGS["w18_small_v2"], 19)
    assert 3.8e6 < _trainable(model) < 4.1e6  # "about 4.0 M"


@pytest.mark.slow
def test_w48_param_count():
    model = HRNetV2W48(input_shape=(64, 64, 3))
    # 65.85 M: the official HRNetV2-W48 Cityscapes model (no exits)
    assert _trainable(model) == expected_params(HRNET_CONFIGS["w48"], 19)
    assert abs(_trainable(model) / 1e6 - 65.85) < 0.05


def test_layer_names_follow_official_module_paths(tiny_config):
    names = {layer.name for layer in HRNetV2(tiny_config, classes=11, name="tiny").layers}
    for expected in ("tiny_conv1", "tiny_layer1_0_downsample_0", "tiny_transition1_1_0_0",
                     "tiny_stage3_0_branches_2_0_conv2", "tiny_stage4_0_fuse_layers_3_0_2_0", "tiny_last_layer_3"):
        assert expected in names


@pytest.mark.parametrize("kwargs, match", [
    (dict(backbone="w99"), "backbone"),
    (dict(input_shape=(100, 64, 3)), "multiples of 32"),
    (dict(input_shape=(64, 64, 1)), "3 channels"),
    (dict(classes=0), "classes"),
    (dict(classes=2.0), "classes"),
    (dict(classifier_activation="no_such_activation"), "classifier_activation"),
    (dict(name=""), "name"),
    (dict(weights="hrnet.onnx"), "weights"),
])
def test_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        HRNetV2(**{"backbone": "w18_small_v2", **kwargs})


def test_shared_arguments(tiny_config):
    """The builder vocabulary of keras.applications: numpy classes, input_tensor, preprocessing, activation."""
    import keras

    x = np.random.default_rng(0).uniform(0, 255, (1, 64, 64, 3)).astype("float32")
    model = HRNetV2(tiny_config, classes=np.int64(4), input_shape=(64, 64, 3), classifier_activation="softmax",
                    name="tiny")
    assert model.get_layer("tiny_preprocessing") is not None and model.output.shape == (None, 16, 16, 4)
    np.testing.assert_allclose(np.asarray(model(x)).sum(-1), 1.0, rtol=1e-5)
    raw = HRNetV2(tiny_config, classes=4, include_preprocessing=False, name="tiny")
    raw.set_weights(model.get_weights())
    mean, std = np.array([0.485, 0.456, 0.406]), np.array([0.229, 0.224, 0.225])
    logits = np.asarray(raw((x / 255.0 - mean) / std))
    np.testing.assert_allclose(np.exp(logits) / np.exp(logits).sum(-1, keepdims=True), np.asarray(model(x)), atol=1e-5)
    tensor = keras.Input((64, 96, 3))
    assert HRNetV2(tiny_config, input_tensor=tensor, name="t").output.shape == (None, 16, 24, 19)


def test_headless_model_gives_the_branch_pyramid(tiny_config):
    model = HRNetV2(tiny_config, include_top=False, input_shape=(64, 64, 3), name="tiny")
    assert [tuple(o.shape) for o in model.outputs] == [(None, 16, 16, 8), (None, 8, 8, 16), (None, 4, 4, 32),
                                                        (None, 2, 2, 64)]
    assert {k: tuple(v.shape) for k, v in model.pyramid_outputs.items()} == {
        "P2": (None, 16, 16, 8), "P3": (None, 8, 8, 16), "P4": (None, 4, 4, 32), "P5": (None, 2, 2, 64)}
    assert not any("last_layer" in layer.name for layer in model.layers)


def test_registered_and_reachable_by_name():
    import keras_visrec

    assert {"hrnetv2_w18_small_v2", "hrnetv2_w48"} <= set(keras_visrec.list_models(family="hrnet"))
    assert set(keras_visrec.list_models(family="adpc")) == {
        "adpc_hrnetv2_w18_small_v2", "adpc_hrnetv2_w18", "adpc_hrnetv2_w32", "adpc_hrnetv2_w48",
        "adpc_pose_hrnetv2_w18_small_v2", "adpc_pose_hrnetv2_w32"}
    model = keras_visrec.get_model("hrnetv2_w18_small_v2", classes=np.int32(3), input_shape=(64, 64, 3))
    assert model.output.shape == (None, 16, 16, 3) and model.name == "hrnetv2_w18_small_v2"
    pose = keras_visrec.get_model("adpc_pose_hrnetv2_w18_small_v2", input_shape=(64, 64, 3))
    assert pose.task == "pose" and pose.classes == 16 and pose.name == "adpc_pose_hrnetv2_w18_small_v2"
    assert [layer.name for layer in pose.network.layers if "final_layer" in layer.name] == [
        "adpc_pose_hrnetv2_w18_small_v2_final_layer"]
    assert keras_visrec.models.model_family("adpc_hrnetv2_w48") == "adpc"

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
    (dict(input_shape=(100, 64, 3)), "divisible by 32"),
    (dict(classes=0), "classes"),
])
def test_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        HRNetV2(**{"backbone": "w18_small_v2", **kwargs})


def test_registered():
    from keras_visrec.models import list_models

    assert {"hrnetv2_w18_small_v2", "hrnetv2_w48"} <= set(list_models(family="hrnet"))

"""The ADP-C and ImageNet HRNet catalogue entries: ids, parameter counts of the models they build,
published figures, fetch steps and the hash policy (no published sha256 → explicit steps, no silent load)."""

import re

import numpy as np
import pytest

from keras_visrec import zoo
from keras_visrec.hrnet import HRNET_CONFIGS

ID = re.compile(r"^(?P<arch>(adpc_(pose_)?)?hrnetv2_[a-z0-9_]+)\.(?P<source>anytime|ms)_"
                r"(?P<tag>cityscapes_(ee|rh|adpc)|mpii_(ee|rh|adpc)|in1k)$")


def _conv(cin, cout, k=1, bias=False):
    return cin * cout * k * k + (cout if bias else 0)


def _bn(c):
    return 2 * c


def backbone_params(config, pose=False):
    """Stem, layer1, transitions and stages as the official code builds them (conv count, BN γ/β),
    and the number of convolutions after layer 1 (each a masked conv with an RBF λ in ADP-C)."""
    stem = config["stem"]
    total = _conv(3, stem, 3) + _bn(stem) + _conv(stem, stem, 3) + _bn(stem)
    blocks, planes = config["layer1"]
    inplanes = stem
    for i in range(blocks):
        total += _conv(inplanes, planes) + _bn(planes) + _conv(planes, planes, 3) + _bn(planes)
        total += _conv(planes, 4 * planes) + _bn(4 * planes)
        if i == 0 and inplanes != 4 * planes:
            total += _conv(inplanes, 4 * planes) + _bn(4 * planes)
        inplanes = 4 * planes
    pre, masked = [inplanes], 0
    for s, (modules, nblocks, widths) in enumerate(config["stages"]):
        for i, w in enumerate(widths):
            if i < len(pre):
                if pre[i] != w:
                    total, masked = total + _conv(pre[i], w, 3) + _bn(w), masked + 1
            else:
                for j in range(i + 1 - len(pre)):
                    out = w if j == i - len(pre) else pre[-1]
                    total, masked = total + _conv(pre[-1], out, 3) + _bn(out), masked + 1
        for m in range(modules):
            for b, w in enumerate(widths):
                total += nblocks[b] * 2 * (_conv(w, w, 3) + _bn(w))
                masked += nblocks[b] * 2
            rows = 1 if pose and s == 2 and m == modules - 1 else len(widths)
            for i in range(rows):
                for j in range(len(widths)):
                    if j > i:
                        total, masked = total + _conv(widths[j], widths[i]) + _bn(widths[i]), masked + 1
                    elif j < i:
                        for k in range(i - j):
                            out = widths[i] if k == i - j - 1 else widths[j]
                            total, masked = total + _conv(widths[j], out, 3) + _bn(out), masked + 1
        pre = list(widths)
    return total, masked


def exit_params(c, classes, exit_type, width, depth):
    """``(parameters, convolutions)`` of one EE / RH exit on ``c`` input channels."""
    if exit_type == "ee":
        return _conv(c, c, bias=True) + _bn(c) + _conv(c, classes, bias=True), 2
    units = 2 * depth - 1
    total = _conv(c, width, bias=True) + _bn(width) + (units - 1) * (_conv(width, width, bias=True) + _bn(width))
    return total + _conv(width, classes, bias=True), units + 1


def anytime_params(config, classes, exit_type="rh", width=64, task="segmentation"):
    """Trainable parameters of ``AnytimeHRNet``: backbone, exits, head and one RBF λ per masked conv."""
    total, masked = backbone_params(config, pose=task == "pose")
    inputs = [4 * config["layer1"][1], sum(config["stages"][0][2]), sum(config["stages"][1][2])]
    for k, c in enumerate(inputs):
        params, convs = exit_params(c, classes, exit_type, width, 3 - k)
        total += params
        masked += convs if k else 0  # exit 1 is never masked
    if task == "pose":
        total, masked = total + _conv(config["stages"][2][2][0], classes, bias=True), masked + 1
    else:
        c = sum(config["stages"][2][2])
        total, masked = total + _conv(c, c, bias=True) + _bn(c) + _conv(c, classes, bias=True), masked + 2
    return total + masked


def imagenet_params(config):
    """The HRNet-Image-Classification network: backbone and its classification head (incre_modules,
    downsamp_modules, final_layer, classifier)."""
    total, _ = backbone_params(config)
    head = (32, 64, 128, 256)
    for c, planes in zip(config["stages"][2][2], head):
        total += _conv(c, planes) + _bn(planes) + _conv(planes, planes, 3) + _bn(planes)
        total += _conv(planes, 4 * planes) + _bn(4 * planes) + _conv(c, 4 * planes) + _bn(4 * planes)
    for a, b in zip(head[:-1], head[1:]):
        total += _conv(4 * a, 4 * b, 3, bias=True) + _bn(4 * b)
    return total + _conv(1024, 2048, bias=True) + _bn(2048) + 2048 * 1000 + 1000


def _trainable(model):
    return int(sum(np.prod(w.shape) for w in model.trainable_weights))


def _entries():
    return {k: e for k, e in zoo.load_catalogue().items() if e.arch.startswith(("hrnetv2_", "adpc_"))}


def test_entries_are_listed_with_ids_and_fetch_steps():
    entries = _entries()
    assert {"adpc_hrnetv2_w48.anytime_cityscapes_ee", "adpc_hrnetv2_w48.anytime_cityscapes_rh",
            "adpc_hrnetv2_w48.anytime_cityscapes_adpc", "adpc_hrnetv2_w18_small_v2.anytime_cityscapes_adpc",
            "hrnetv2_w48.ms_in1k", "hrnetv2_w18_small_v2.ms_in1k"} <= set(entries)
    for zoo_id, entry in entries.items():
        match = ID.match(zoo_id)
        assert match and match["arch"] == entry.arch and match["source"] == entry.source, zoo_id
        assert entry.sha256 is None and "no" in entry.sha256_source.lower(), zoo_id  # upstream published none
        assert entry.fetch and "weights=" in entry.fetch and entry.url in entry.fetch, zoo_id
        if entry.task == "classification":
            assert entry.pretraining == "in1k" and entry.classes == 1000 and entry.layout == "hrnet_imagenet"
        else:
            assert entry.dataset == "cityscapes" and entry.classes == 19 and entry.layout == "anytime", zoo_id
            assert len([k for k in entry.metrics if k.startswith("miou_exit")]) == 4, zoo_id


def test_published_figures():
    entries = _entries()
    adpc = entries["adpc_hrnetv2_w48.anytime_cityscapes_adpc"].metrics
    rh = entries["adpc_hrnetv2_w48.anytime_cityscapes_rh"].metrics
    assert [adpc[f"miou_exit{k}"] for k in range(1, 5)] == [44.3, 60.1, 76.8, 81.3]
    assert [rh[f"gflops_exit{k}"] for k in range(1, 5)] == [41.9, 105.6, 368.0, 701.3]
    assert 1 - adpc["gflops_exit4"] / 696.2 == pytest.approx(0.444, abs=1e-3)  # "44.4 % fewer FLOPs"
    assert entries["adpc_hrnetv2_w18_small_v2.anytime_cityscapes_adpc"].metrics["miou_exit4"] == 77.02
    assert entries["hrnetv2_w48.ms_in1k"].top1 == pytest.approx(100 - 20.7)
    assert entries["hrnetv2_w18_small_v2.ms_in1k"].top1 == pytest.approx(100 - 24.9)


def test_parameter_counts_are_those_of_the_models_the_entries_build():
    for entry in _entries().values():
        config = HRNET_CONFIGS[entry.arch.split("hrnetv2_")[1]]
        if entry.task == "classification":
            assert entry.num_params == imagenet_params(config), entry.id
        else:
            exit_type = entry.pretraining.rsplit("_", 1)[-1].replace("adpc", "rh")
            width = 128 if "w48" in entry.arch else 64
            assert entry.num_params == anytime_params(config, entry.classes, exit_type, width), entry.id
    published = {"hrnetv2_w48.ms_in1k": 77.5, "hrnetv2_w18_small_v2.ms_in1k": 15.6, "hrnetv2_w32.ms_in1k": 41.2}
    for zoo_id, millions in published.items():  # HRNet-Image-Classification's table
        assert abs(_entries()[zoo_id].num_params / 1e6 - millions) < 0.05, zoo_id


def test_parameter_formulas_match_built_models(tiny_config):
    from keras_visrec.adpc import AnytimeHRNet

    for exit_type, task in (("rh", "segmentation"), ("ee", "pose")):
        model = AnytimeHRNet(tiny_config, classes=5, exit_type=exit_type, exit_width=8, task=task, name="tiny")
        assert _trainable(model) == anytime_params(tiny_config, 5, exit_type, 8, task), (exit_type, task)
    model = AnytimeHRNet("w18_small_v2", classes=19, name="small")
    assert _trainable(model) == anytime_params(HRNET_CONFIGS["w18_small_v2"], 19, "rh", 64)


def test_zoo_ids_give_the_fetch_steps_not_a_silent_download(tiny_config):
    import keras_visrec

    with pytest.raises(ValueError, match=r"not a direct download.*drive\.google\.com.*weights="):
        keras_visrec.get_model("adpc_hrnetv2_w48", weights="adpc_hrnetv2_w48.anytime_cityscapes_adpc")
    with pytest.raises(ValueError, match=r"not a direct download.*1drv\.ms.*hrnetv2_w48_imagenet_pretrained\.pth"):
        keras_visrec.HRNetV2W48(weights="hrnetv2_w48.ms_in1k")
    # the ImageNet backbone fits the ADP-C model of its width, not another one
    with pytest.raises(ValueError, match="not a direct download"):
        keras_visrec.get_model("adpc_hrnetv2_w48", weights="hrnetv2_w48.ms_in1k")
    with pytest.raises(ValueError, match="are for 'hrnetv2_w18_small_v2', not 'adpc_hrnetv2_w48'"):
        keras_visrec.get_model("adpc_hrnetv2_w48", weights="hrnetv2_w18_small_v2.ms_in1k")

"""L1-norm filter pruning: the paper's pruned architectures exactly, ranking, bad input."""

import numpy as np
import pytest

import keras_visrec
from keras_visrec import cifar
from keras_visrec.pruning import l1_norm


def _macs(model):
    return keras_visrec.count_flops(model).total


def test_vgg16_a_architecture_exactly():
    model = cifar.VGG16CIFAR()
    pruned, report = l1_norm.l1_prune_config(model, "vgg16_a")
    widths = [pruned.get_layer(f"vgg16_conv_{i}").filters for i, c in enumerate(l1_norm.VGG16_A) if c != "M"]
    assert widths == [c for c in l1_norm.VGG16_A if c != "M"]
    reference = cifar.CIFARVGG(l1_norm.VGG16_A, name="ref")
    assert _macs(pruned) == _macs(reference) == 206_279_680
    assert pruned.count_params() == reference.count_params()
    assert 1 - _macs(pruned) / _macs(model) == pytest.approx(0.342, abs=1e-3)  # Li et al.: 34.2 %
    assert report.ratio == "vgg16_a" and report.macs == (_macs(model), 206_279_680)


def test_resnet56_a_architecture_exactly():
    model = cifar.ResNet56CIFAR()
    pruned, _ = l1_norm.l1_prune_config(model, "resnet56_a")
    spec = l1_norm.L1_CONFIGS["resnet56_a"]
    widths = l1_norm.resnet_l1_widths(56, spec["skip"], spec["ratio"])
    assert widths[:9] == [14] * 7 + [16, 14]
    got = [pruned.get_layer(f"resnet56_stage_{j // 9}_block_{j % 9}_conv_1").filters for j in range(27)]
    assert got == widths
    assert _macs(pruned) == _macs(cifar.CIFARResNet(56, widths))
    assert 1 - _macs(pruned) / _macs(model) == pytest.approx(0.104, abs=1e-3)  # Li et al.: 10.4 %


def test_resnet56_b_widths():
    spec = l1_norm.L1_CONFIGS["resnet56_b"]
    widths = l1_norm.resnet_l1_widths(56, spec["skip"], spec["ratio"])
    assert widths == [6] * 7 + [16, 16] + [32] + [22] * 6 + [32, 22] + [64] + [57] * 7 + [64]
    full = l1_norm.resnet_l1_widths(56, (), (0.0, 0.0, 0.0))
    assert 1 - _resnet_macs(widths) / _resnet_macs(full) == pytest.approx(0.276, abs=1e-3)  # Li et al.: 27.6 %


def _resnet_macs(widths):
    n = len(widths) // 3
    macs, cin, side = 27 * 16 * 1024, 16, 32
    for j, w in enumerate(widths):
        planes = (16, 32, 64)[j // n]
        side = side // 2 if (j % n == 0 and j >= n) else side
        macs += (9 * cin * w + 9 * w * planes) * side * side
        cin = planes
    return macs + 640


@pytest.mark.slow
@pytest.mark.parametrize("config, reduction", [("resnet110_a", 0.159), ("resnet110_b", 0.386)])
def test_resnet110_config_architectures(config, reduction):
    spec = l1_norm.L1_CONFIGS[config]
    widths = l1_norm.resnet_l1_widths(110, spec["skip"], spec["ratio"])
    full, pruned = _macs(cifar.ResNet110CIFAR()), _macs(cifar.CIFARResNet(110, widths))
    assert 1 - pruned / full == pytest.approx(reduction, abs=2e-3)


def test_keeps_filters_with_largest_l1_norm():
    model = cifar.CIFARVGG([6, "M", 4], head="slimming", name="v", classifier_activation=None)
    layer = model.get_layer("v_conv_0")
    kernel = layer.get_weights()[0]
    kernel[..., :] = 0.01
    kernel[..., 4] = 1.0
    kernel[..., 1] = 0.5
    layer.set_weights([kernel])
    pruned, report = l1_norm.l1_prune(model, widths={"v_conv_0": 2})
    assert [(c.name, c.before, c.after) for c in report.layers] == [("v_conv_0", 6, 2)]
    np.testing.assert_allclose(pruned.get_layer("v_conv_0").get_weights()[0], kernel[..., [1, 4]])
    np.testing.assert_allclose(pruned.get_layer("v_bn_0").get_weights()[0], model.get_layer("v_bn_0").get_weights()[0][[1, 4]])


def test_bad_input():
    model = cifar.CIFARVGG([6, "M", 4], head="slimming", name="v")
    with pytest.raises(ValueError, match=r"\[0, 1\)"):
        l1_norm.l1_prune(model, {"v_conv_0": 1.0})
    with pytest.raises(ValueError, match=r"\[0, 1\)"):
        l1_norm.l1_prune(model, {"v_conv_0": -0.1})
    with pytest.raises(ValueError, match="not a prunable convolution"):
        l1_norm.l1_prune(model, {"v_bn_0": 0.5})
    with pytest.raises(ValueError, match="cfg"):
        l1_norm.l1_prune_vgg(model, [4, "M", 4, 4])
    with pytest.raises(ValueError, match="config"):
        l1_norm.l1_prune_config(model, "resnet56_c")
    with pytest.raises(ValueError, match="skip"):
        l1_norm.resnet_l1_widths(56, (17,), (0.1, 0.1, 0.1))
    with pytest.raises(ValueError, match="one ratio per stage"):
        l1_norm.resnet_l1_widths(56, (), (0.1, 0.1))
    with pytest.raises(ValueError, match=r"widths\['v_conv_0'\]"):
        l1_norm.l1_prune(model, widths={"v_conv_0": 7})
    with pytest.raises(ValueError, match="neither"):
        l1_norm.l1_prune(model)
    with pytest.raises(ValueError, match="ResNet-56"):
        l1_norm.l1_prune_config(cifar.CIFARResNet(20), "resnet56_a")


def test_a_float_ratio_prunes_every_conv_that_can_lose_filters_alone():
    model = cifar.CIFARResNet(8, name="r")  # one block per stage
    assert l1_norm.l1_candidates(model) == [f"r_stage_{s}_block_0_conv_1" for s in range(3)]
    pruned, report = l1_norm.l1_prune(model, 0.5, name="r_half")
    assert pruned.name == "r_half"
    assert [(c.name, c.before, c.after) for c in report.layers] == [
        ("r_stage_0_block_0_conv_1", 16, 8), ("r_stage_1_block_0_conv_1", 32, 16), ("r_stage_2_block_0_conv_1", 64, 32)]
    assert report.macs[1] < report.macs[0] and report.params[1] < report.params[0]
    # the paper's ResNet arithmetic through the same call: l1_prune_resnet with one ratio per stage
    staged, staged_report = l1_norm.l1_prune_resnet(model, (), (0.5, 0.5, 0.5))
    assert staged_report.layers == report.layers and staged_report.ratio == (0.5, 0.5, 0.5)

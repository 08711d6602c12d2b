"""Structured pruning of the zoo's ConvNeXt MLPs and HRNet branches, and TFLite export of the result."""

import numpy as np
import pytest

import keras_visrec
from keras_visrec.pruning import convnext as prune_zoo

X = np.random.default_rng(0).uniform(0, 255, (2, 32, 32, 3)).astype("float32")


def _tiny(**kwargs):
    return keras_visrec.ConvNeXt((1, 1, 1, 1), (8, 16, 32, 64), input_shape=(32, 32, 3), classes=10, name="cx",
                                 **kwargs)


def test_convnext_mlp_pruning_is_exact_for_dead_units_and_exports(tmp_path):
    model = _tiny()
    layer = model.get_layer("cx_stage_1_block_0_pointwise_conv_1")
    kernel, bias = layer.get_weights()
    kernel[:, :16] = 0.0
    bias[:16] = -30.0  # GELU(-30) == 0: these hidden units are dead
    layer.set_weights([kernel, bias])
    pruned, report = prune_zoo.prune_convnext_mlp(model, {"cx_stage_1_block_0": 0.25}, name="cx_pruned")
    assert pruned.name == "cx_pruned"
    assert [(c.name, c.before, c.after) for c in report.layers] == [("cx_stage_1_block_0_pointwise_conv_1", 64, 48)]
    assert pruned.get_layer("cx_stage_1_block_0_pointwise_conv_1").units == 48
    assert pruned.get_layer("cx_stage_1_block_0_pointwise_conv_2").kernel.shape == (48, 16)
    np.testing.assert_allclose(pruned.predict(X, verbose=0), model.predict(X, verbose=0), atol=1e-6)

    half, _ = prune_zoo.prune_convnext_mlp(model, 0.5)
    full_report, half_report = keras_visrec.count_flops(model), keras_visrec.count_flops(half)
    mlp = lambda r: r.select(lambda n: "pointwise" in n)  # noqa: E731
    assert mlp(half_report) * 2 == mlp(full_report)
    pytest.importorskip("ai_edge_litert")
    report = keras_visrec.export_tflite(half, tmp_path / "half.tflite")
    assert report.agreement["max_abs_diff"] < 1e-4


def test_convnext_v2_grn_is_sliced():
    model = keras_visrec.ConvNeXt((1, 1, 1, 1), (8, 16, 32, 64), use_grn=True, layer_scale_init_value=None,
                                  input_shape=(32, 32, 3), classes=10, name="cx")
    pruned, _ = prune_zoo.prune_convnext_mlp(model, 0.5)
    assert pruned.get_layer("cx_stage_0_block_0_grn").gamma.shape == (16,)
    assert pruned.predict(X, verbose=0).shape == (2, 10)
    with pytest.raises(ValueError, match=r"\[0, 1\)"):
        prune_zoo.prune_convnext_mlp(model, 1.0)
    with pytest.raises(ValueError, match="not a prunable ConvNeXt block MLP"):
        prune_zoo.prune_convnext_mlp(model, {"cx_stage_9_block_0": 0.5})


def test_hrnet_branch_widths_and_export(tmp_path):
    from keras_visrec.hrnet import HRNetV2

    tiny = dict(stem=16, layer1=(1, 8), stages=((1, (1, 1), (8, 16)), (1, (1, 1, 1), (8, 16, 32)),
                                                (1, (1, 1, 1, 1), (8, 16, 32, 64))))
    model = HRNetV2(tiny, classes=5, input_shape=(64, 64, 3), name="tiny")
    pruned, report = prune_zoo.prune_hrnet_branches(model, [0.5, 0.5, 0.25, 0.25])
    assert report.method == "hrnet_branches" and report.macs[1] < report.macs[0]
    assert pruned.get_layer("tiny_stage4_0_branches_3_0_conv2").filters == 48
    assert pruned.get_layer("tiny_stage2_0_branches_0_0_conv1").kernel.shape[2] == 4
    assert pruned.get_layer("tiny_last_layer_0").kernel.shape[2] == 4 + 8 + 24 + 48
    assert keras_visrec.count_flops(pruned).total < 0.8 * keras_visrec.count_flops(model).total
    with pytest.raises(ValueError, match="one entry per branch"):
        prune_zoo.prune_hrnet_branches(model, [0.5])
    same, _ = prune_zoo.prune_hrnet_branches(model, {0: 0.5, 1: 0.5, "tiny_stage3_0_branches_2_0_add": 0.25,
                                                     3: 0.25})
    assert [w.shape for w in same.weights] == [w.shape for w in pruned.weights]
    pytest.importorskip("ai_edge_litert")
    # HRNet's graph (BN, ReLU, resampling, concatenation) through the one export surface
    exported = keras_visrec.export_tflite(pruned, tmp_path / "h.tflite", validation_data=np.random.default_rng(0)
                                          .uniform(0, 255, (1, 64, 64, 3)).astype("float32"))
    assert exported.agreement["max_abs_diff"] < 1e-3 and not any("no export rule" in p for p in exported.problems)

"""Key maps and wrappers (pure numpy, no model): one rule per layout and layer kind."""

import numpy as np
import pytest

from keras_visrec.converters import convnext_keys as keys


@pytest.mark.parametrize("layout,key,expected", [
    ("official", "downsample_layers.0.0.weight", ("stem_conv", "kernel", "conv")),
    ("official", "downsample_layers.2.0.bias", ("downsampling_layernorm_1", "beta", "vector")),
    ("official", "stages.2.5.pwconv1.weight", ("stage_2_block_5_pointwise_conv_1", "kernel", "linear")),
    ("official", "stages.0.0.grn.gamma", ("stage_0_block_0_grn", "gamma", "grn")),
    ("official", "stages.3.1.gamma", ("stage_3_block_1_layer_scale", "gamma", "layer_scale")),
    ("official", "head.weight", ("head_dense", "kernel", "linear")),
    ("official_isotropic", "blocks.17.dwconv.weight", ("stage_0_block_17_depthwise_conv", "kernel", "depthwise")),
    ("timm", "stages.1.downsample.1.weight", ("downsampling_conv_0", "kernel", "conv")),
    ("timm", "stages.1.blocks.0.mlp.grn.bias", ("stage_1_block_0_grn", "beta", "grn")),
    ("timm", "head.norm.weight", ("head_layernorm", "gamma", "vector")),
    ("hf", "convnextv2.encoder.stages.3.layers.2.layer_scale_parameter", ("stage_3_block_2_layer_scale", "gamma", "layer_scale")),
    ("hf", "convnext.embeddings.layernorm.bias", ("stem_layernorm", "beta", "vector")),
    ("hf", "classifier.bias", ("head_dense", "bias", "vector")),
    ("official", "pos_embed", None),
])
def test_map_key(layout, key, expected):
    assert keys.map_key(key, layout) == expected


def test_layer_kind_transposes():
    conv = np.arange(2 * 3 * 4 * 5).reshape(2, 3, 4, 5)           # (out, in, kh, kw)
    assert keys.conv_kernel(conv).shape == (4, 5, 3, 2)
    assert keys.conv_kernel(conv)[1, 2, 0, 1] == conv[1, 0, 1, 2]
    dw = np.arange(6 * 49).reshape(6, 1, 7, 7)
    assert keys.depthwise_kernel(dw).shape == (7, 7, 6, 1)
    assert keys.depthwise_kernel(dw)[3, 4, 5, 0] == dw[5, 0, 3, 4]
    linear = np.arange(12).reshape(4, 3)                             # (out, in)
    np.testing.assert_array_equal(keys.linear_kernel(linear), linear.T)
    np.testing.assert_array_equal(keys.linear_kernel(linear[:, :, None, None]), linear.T)
    assert keys.grn_vector(np.zeros((1, 1, 1, 8))).shape == (8,)


def test_unwrap_wrappers_and_module_prefix():
    w = np.zeros(2)
    assert keys.unwrap_state_dict({"model": {"a": w}, "epoch": 3}) == {"a": w}
    assert keys.unwrap_state_dict({"state_dict": {"module.a": w}}) == {"a": w}
    both = {"model": {"a": w}, "model_ema": {"b": w}}
    assert list(keys.unwrap_state_dict(both)) == ["a"]
    assert list(keys.unwrap_state_dict(both, prefer_ema=True)) == ["b"]
    with pytest.raises(ValueError, match="no tensors"):
        keys.unwrap_state_dict({"epoch": 3}, source="x.pth")


def test_detect_layout():
    assert keys.detect_layout(["downsample_layers.0.0.weight", "stages.0.0.dwconv.weight"]) == "official"
    assert keys.detect_layout(["stem.0.weight", "stages.0.blocks.0.conv_dw.weight"]) == "timm"
    assert keys.detect_layout(["stem.weight", "blocks.0.dwconv.weight"]) == "official_isotropic"
    assert keys.detect_layout(["convnext.embeddings.patch_embeddings.weight"]) == "hf"
    with pytest.raises(ValueError, match="cannot tell"):
        keys.detect_layout(["encoder.layer.0.weight"], source="bert.bin")

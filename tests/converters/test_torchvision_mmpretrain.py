"""torchvision and mmpretrain ConvNeXt files load through ``weights=`` and compute what PyTorch computes.

Independent PyTorch ConvNeXts in each library's own module layout (tests/fixtures/
torch_convnext_layouts.py), every parameter random (layer scale and GRN included), saved the way
each library saves them (torchvision: a bare state dict; mmpretrain: ``{"meta", "state_dict"}``
with inert metadata), read without torch and compared on logits (≤ 1e-4 max abs, fp32).
"""

import importlib.util
import os
import re

import numpy as np
import pytest

from keras_visrec import zoo

TOLERANCE = 1e-4
_HERE = os.path.dirname(os.path.abspath(__file__))
# torch.hub's check_hash reads the hash prefix from the file name with this pattern
_HASH_IN_NAME = re.compile(r"-([a-f0-9]*)\.")


def _layouts():
    pytest.importorskip("torch")
    spec = importlib.util.spec_from_file_location(
        "torch_convnext_layouts", os.path.join(_HERE, os.pardir, "fixtures", "torch_convnext_layouts.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _logits(module, x):
    import torch

    with torch.no_grad():
        return module(torch.from_numpy(x).permute(0, 3, 1, 2)).numpy()


def _ours(builder, path, x, classes, **kwargs):
    model = builder(weights=str(path), include_preprocessing=False, classifier_activation=None, classes=classes,
                    input_shape=x.shape[1:], **kwargs)
    return np.asarray(model(x, training=False))


def _check(name, ours, theirs):
    diff = float(np.abs(ours - theirs).max())
    print(f"parity {name}: logits max abs {diff:.2e} (logit scale {float(np.abs(theirs).max()):.2f})")
    assert diff <= TOLERANCE
    assert float(np.abs(theirs).max()) > 0.1  # a random network far from identity


@pytest.mark.torch
@pytest.mark.slow
def test_torchvision_convnext_tiny_file_gives_torchvisions_logits(tmp_path):
    import torch

    import keras_visrec

    layouts = _layouts()
    torch.manual_seed(0)
    reference = layouts.randomise(layouts.TorchvisionConvNeXt((3, 3, 9, 3), (96, 192, 384, 768), 10), seed=1)
    keys = list(reference.state_dict())
    assert "features.1.0.layer_scale" in keys and "features.1.0.block.0.weight" in keys
    assert reference.state_dict()["features.1.0.layer_scale"].shape == (96, 1, 1)
    path = tmp_path / "convnext_tiny-0123abcd.pth"
    torch.save(reference.state_dict(), path)
    x = np.random.default_rng(0).standard_normal((2, 32, 32, 3)).astype("float32")
    _check("torchvision tiny", _ours(keras_visrec.ConvNeXtTiny, path, x, 10), _logits(reference, x))

    # the wrong size names what disagrees
    with pytest.raises(ValueError, match=r"stage_2_block_9|missing|shape"):
        keras_visrec.ConvNeXtSmall(weights=str(path), classes=10, input_shape=(32, 32, 3))


@pytest.mark.torch
@pytest.mark.slow
@pytest.mark.parametrize("variant", ["tiny", "v2_atto"])
def test_mmpretrain_convnext_file_gives_mmpretrains_logits(tmp_path, variant):
    import torch

    import keras_visrec

    layouts = _layouts()
    if variant == "tiny":
        builder, net = keras_visrec.ConvNeXtTiny, layouts.MMPretrainConvNeXt((3, 3, 9, 3), (96, 192, 384, 768), 10)
    else:
        builder = keras_visrec.ConvNeXtV2Atto
        net = layouts.MMPretrainConvNeXt((2, 2, 6, 2), (40, 80, 160, 320), 10, grn=True)
    reference = layouts.randomise(net, seed=2)
    meta = {"mmcls_version": "0.23.1", "CLASSES": tuple(f"class {i}" for i in range(10)),
            "config": "model = dict(type='ImageClassifier', backbone=dict(type='ConvNeXt', arch='tiny'))\n",
            "epoch": 300, "iter": 375000}
    path = tmp_path / "convnext-tiny_3rdparty_32xb128_in1k_20220124-18abde00.pth"
    torch.save({"meta": meta, "state_dict": reference.state_dict()}, path)
    x = np.random.default_rng(1).standard_normal((2, 32, 32, 3)).astype("float32")
    _check(f"mmpretrain {variant}", _ours(builder, path, x, 10), _logits(reference, x))

    # the backbone alone, for a features_only model: the head (norm3 after pooling, head.fc) left out
    features = builder(weights=str(path), include_top=False, features_only=True, include_preprocessing=False,
                       input_shape=(32, 32, 3))
    assert len(features.outputs) == 4


def test_layout_detection_and_key_maps():
    from keras_visrec.converters.convnext_keys import detect_layout, map_key

    tv = ["features.0.0.weight", "features.1.0.block.0.weight", "classifier.2.weight"]
    mm = ["backbone.downsample_layers.0.0.weight", "backbone.stages.0.0.depthwise_conv.weight", "head.fc.weight"]
    assert detect_layout(tv) == "torchvision" and detect_layout(mm) == "mmpretrain"
    assert map_key("features.5.8.layer_scale", "torchvision") == ("stage_2_block_8_layer_scale", "gamma", "layer_scale")
    assert map_key("features.4.1.weight", "torchvision") == ("downsampling_conv_1", "kernel", "conv")
    assert map_key("classifier.0.bias", "torchvision") == ("head_layernorm", "beta", "vector")
    assert map_key("backbone.stages.3.2.pointwise_conv2.weight", "mmpretrain") == (
        "stage_3_block_2_pointwise_conv_2", "kernel", "linear")
    assert map_key("backbone.stages.1.0.grn.beta", "mmpretrain") == ("stage_1_block_0_grn", "beta", "grn")
    assert map_key("backbone.norm3.weight", "mmpretrain") == ("head_layernorm", "gamma", "vector")
    assert map_key("head.fc.weight", "mmpretrain") == ("head_dense", "kernel", "linear")
    assert map_key("features.1.0.stochastic_depth.p", "torchvision") is None


def test_catalogue_entries_carry_the_hash_prefix_of_their_file_names(monkeypatch):
    monkeypatch.delenv(zoo.UNVERIFIED_ENV, raising=False)
    catalogue = zoo.load_catalogue()
    entries = {k: e for k, e in catalogue.items() if e.source in ("tv", "mmpretrain")}
    assert sorted(entries) == sorted(f"convnext_{size}.{source}_in1k" for size in ("tiny", "small", "base", "large")
                                     for source in ("tv", "mmpretrain"))
    for zoo_id, entry in entries.items():
        assert entry.layout == {"tv": "torchvision", "mmpretrain": "mmpretrain"}[entry.source]
        assert entry.sha256 is None and not entry.verified  # a prefix is weaker: the opt-in stays needed
        assert _HASH_IN_NAME.search(entry.filename).group(1) == entry.sha256_prefix, zoo_id
        fb = catalogue[f"{entry.arch}.fb_in1k"]
        assert entry.num_params == fb.num_params and entry.classes == 1000, zoo_id
        assert 81 < entry.top1 < 85 and entry.preprocessing["crop"] == 224, zoo_id
    with pytest.raises(ValueError, match="sha256 prefix"):
        zoo.fetch_weights("convnext_tiny.tv_in1k", progress=False)

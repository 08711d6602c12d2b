"""Logit- and stage-level parity with PyTorch (the core proof of the converters).

An independent PyTorch ConvNeXt (tests/fixtures/torch_convnext.py) and Hugging Face
transformers' ConvNext / ConvNextV2 get EVERY parameter randomised (layer scale and GRN
included), are saved with torch.save / safetensors in the official, timm and HF layouts, loaded
through ``weights=`` without torch, and must agree to ≤ 1e-4 max abs in fp32 on the same input:
the logits and each stage's features (``features_only=True``).
"""

import importlib.util
import os

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import keras_visrec  # noqa: E402
from keras_visrec.convnext import ConvNeXt  # noqa: E402

pytestmark = [pytest.mark.torch, pytest.mark.slow]
TOLERANCE = 1e-4
_HERE = os.path.dirname(os.path.abspath(__file__))
_spec = importlib.util.spec_from_file_location(
    "torch_convnext", os.path.join(_HERE, os.pardir, "fixtures", "torch_convnext.py"))
tc = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(tc)


def _input(size, batch=1, seed=0):
    return np.random.RandomState(seed).randn(batch, size, size, 3).astype("float32")


def _torch_forward(module, x):
    with torch.no_grad():
        logits, features = module(torch.from_numpy(x).permute(0, 3, 1, 2))
    return logits.numpy(), [f.permute(0, 2, 3, 1).numpy() for f in features]


def _keras_forward(builder, path, x, classes, **kwargs):
    """Logits and every stage's output (the last block's ``add`` of each stage) in one model."""
    import keras

    model = builder(weights=str(path), include_preprocessing=False, classifier_activation=None,
                    classes=classes, input_shape=x.shape[1:], **kwargs)
    stage_ends = [layer.output for layer in model.layers
                  if layer.name.endswith("_add") and _is_last_block(model, layer.name)]
    probe = keras.Model(model.input, [model.output] + stage_ends)
    outputs = [np.asarray(o) for o in probe(x, training=False)]
    return outputs[0], outputs[1:]


def _is_last_block(model, name):
    stage, block = name.rsplit("_stage_", 1)[1].split("_block_")
    block = int(block.split("_")[0])
    return not any(layer.name.endswith(f"_stage_{stage}_block_{block + 1}_add") for layer in model.layers)


def _report(name, logits, ref_logits, features, ref_features):
    diffs = [float(np.abs(a - b).max()) for a, b in zip(features, ref_features)]
    logit_diff = float(np.abs(logits - ref_logits).max())
    print(f"parity {name}: logits max abs {logit_diff:.2e}, stages {[f'{d:.2e}' for d in diffs]}")
    assert len(features) == len(ref_features)
    for a, b in zip(features, ref_features):
        assert a.shape == b.shape
    assert logit_diff <= TOLERANCE
    assert max(diffs) <= TOLERANCE
    # the randomised network is far from an identity: features really moved
    assert float(np.abs(ref_logits).max()) > 0.1


CASES = {
    # name: (builder, torch reference factory, input size)
    "atto": (keras_visrec.ConvNeXtAtto, lambda c: tc.ConvNeXtRef((2, 2, 6, 2), (40, 80, 160, 320), c), 32),
    "tiny": (keras_visrec.ConvNeXtTiny, lambda c: tc.ConvNeXtRef((3, 3, 9, 3), (96, 192, 384, 768), c), 32),
    "isotropic_small": (keras_visrec.ConvNeXtIsotropicSmall, lambda c: tc.IsotropicRef(18, 384, c), 32),
    "v2_atto": (keras_visrec.ConvNeXtV2Atto,
                lambda c: tc.ConvNeXtRef((2, 2, 6, 2), (40, 80, 160, 320), c, layer_scale=False, grn=True), 32),
}


@pytest.mark.parametrize("name", list(CASES))
def test_parity_official_layout(tmp_path, name):
    builder, factory, size = CASES[name]
    classes = 10
    reference = tc.randomise(factory(classes), seed=1).eval()
    path = tmp_path / f"{name}.pth"
    torch.save({"model": reference.state_dict()}, path)
    x = _input(size)
    ref_logits, ref_features = _torch_forward(reference, x)
    logits, features = _keras_forward(builder, path, x, classes)
    _report(f"{name} (official keys, .pth)", logits, ref_logits, features, ref_features)


@pytest.mark.parametrize("name", ["atto", "v2_atto"])
def test_parity_timm_layout_with_conv_mlp_and_safetensors(tmp_path, name):
    """timm's keys; atto-sized timm models store MLP weights as 1×1 convs (rank 4)."""
    from safetensors.torch import save_file

    builder, factory, size = CASES[name]
    reference = tc.randomise(factory(7), seed=2).eval()
    state = tc.official_to_timm(reference.state_dict())
    state = {k: (v[:, :, None, None] if ".mlp.fc" in k and k.endswith("weight") else v).contiguous()
             for k, v in state.items()}
    path = tmp_path / f"{name}.safetensors"
    save_file(state, str(path))
    x = _input(size, seed=3)
    ref_logits, ref_features = _torch_forward(reference, x)
    logits, features = _keras_forward(builder, path, x, 7)
    _report(f"{name} (timm keys, conv MLP, .safetensors)", logits, ref_logits, features, ref_features)


def test_legacy_torch_format_and_bfloat16(tmp_path):
    reference = tc.randomise(tc.ConvNeXtRef((1, 1, 1, 1), (8, 16, 24, 32), 5), seed=4).eval()
    legacy = tmp_path / "legacy.pth"
    torch.save({"state_dict": reference.state_dict()}, legacy, _use_new_zipfile_serialization=False)
    x = _input(32, seed=5)
    ref_logits, _ = _torch_forward(reference, x)
    model = ConvNeXt((1, 1, 1, 1), (8, 16, 24, 32), classes=5, weights=str(legacy), include_preprocessing=False,
                     classifier_activation=None, input_shape=(32, 32, 3))
    assert np.abs(model.predict(x, verbose=0) - ref_logits).max() <= TOLERANCE
    # bfloat16 storage: values read exactly as torch widens them
    bf16 = tmp_path / "bf16.pth"
    state = {k: v.to(torch.bfloat16) for k, v in reference.state_dict().items()}
    torch.save(state, bf16)
    read = keras_visrec.load_pytorch_checkpoint(bf16)
    for key, value in state.items():
        np.testing.assert_array_equal(read[key], value.float().numpy())


# ---- Hugging Face transformers (live, small) --------------------------------------------------

def _hf_case(version):
    transformers = pytest.importorskip("transformers")
    kwargs = dict(depths=[1, 2, 1, 1], hidden_sizes=[8, 16, 24, 32], num_labels=6, layer_norm_eps=1e-6)
    if version == 2:
        model = transformers.ConvNextV2ForImageClassification(transformers.ConvNextV2Config(**kwargs))
    else:
        model = transformers.ConvNextForImageClassification(transformers.ConvNextConfig(**kwargs))
    return tc.randomise(model, seed=6 + version).eval()


@pytest.mark.parametrize("version", [1, 2])
def test_parity_hugging_face(tmp_path, version):
    from safetensors.torch import save_file

    hf = _hf_case(version)
    x = _input(32, seed=8)
    with torch.no_grad():
        out = hf(pixel_values=torch.from_numpy(x).permute(0, 3, 1, 2), output_hidden_states=True)
    ref_logits = out.logits.numpy()
    ref_features = [h.permute(0, 2, 3, 1).numpy() for h in out.hidden_states[1:]]
    bin_path = tmp_path / "pytorch_model.bin"
    torch.save(hf.state_dict(), bin_path)
    st_path = tmp_path / "model.safetensors"
    save_file({k: v.contiguous() for k, v in hf.state_dict().items()}, str(st_path))
    common = dict(use_grn=version == 2, layer_scale_init_value=None if version == 2 else 1e-6)
    model = ConvNeXt((1, 2, 1, 1), (8, 16, 24, 32), classes=6, weights=str(bin_path), include_preprocessing=False,
                     classifier_activation=None, input_shape=(32, 32, 3), **common)
    # the backbone form (features_only, no head) loads the other file format
    backbone = ConvNeXt((1, 2, 1, 1), (8, 16, 24, 32), weights=str(st_path), include_top=False,
                        features_only=True, include_preprocessing=False, input_shape=(32, 32, 3), **common)
    features = [np.asarray(f) for f in backbone(x, training=False)]
    _report(f"HF ConvNext{'V2' if version == 2 else ''} (.bin logits, .safetensors features_only)",
            np.asarray(model(x, training=False)), ref_logits, features, ref_features)

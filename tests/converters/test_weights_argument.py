"""``weights=`` with the committed fixtures (no torch): official, timm, V2, isotropic, keras h5."""

import os

import numpy as np
import pytest

import keras_visrec
from keras_visrec.converters.convnext_keys import KeyMismatchError
from keras_visrec.convnext import ConvNeXt

FIXTURES = os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir, "fixtures")
DEPTHS, DIMS = (1, 1, 1, 1), (8, 16, 24, 32)
TOLERANCE = 1e-4


def _fixture(name):
    return os.path.join(FIXTURES, name)


@pytest.fixture(scope="module")
def expected():
    return dict(np.load(_fixture("expected.npz")))


def _logits(model, x):
    return np.asarray(model(x, training=False))


@pytest.mark.parametrize("filename,key,kwargs", [
    ("official_v1.pth", "v1_logits", {}),
    ("timm_v1.pth", "v1_logits", {}),
    ("official_v2.pth", "v2_logits", {"use_grn": True, "layer_scale_init_value": None}),
])
def test_fixture_logits_match_pytorch(expected, filename, key, kwargs):
    model = ConvNeXt(DEPTHS, DIMS, classes=5, weights=_fixture(filename), include_preprocessing=False,
                     classifier_activation=None, input_shape=(32, 32, 3), **kwargs)
    assert np.abs(_logits(model, expected["input"]) - expected[key]).max() <= TOLERANCE


def test_isotropic_fixture(expected):
    model = ConvNeXt((2,), (16,), isotropic=True, classes=5, weights=_fixture("official_iso.pth"),
                     include_preprocessing=False, classifier_activation=None, input_shape=(32, 32, 3))
    assert np.abs(_logits(model, expected["input"]) - expected["iso_logits"]).max() <= TOLERANCE


def test_features_only_ignores_head(expected):
    model = ConvNeXt(DEPTHS, DIMS, include_top=False, features_only=True, weights=_fixture("official_v1.pth"),
                     include_preprocessing=False)
    for i, feature in enumerate(model(expected["input"], training=False)):
        assert np.abs(np.asarray(feature) - expected[f"v1_stage_{i}"]).max() <= TOLERANCE


def test_keras_applications_h5_through_imagenet(expected, monkeypatch):
    """weights="imagenet" resolves to keras.applications' file; a reduced file in the same layout."""
    from keras_visrec import zoo

    fetched = []

    def fake_fetch(zoo_id, *, include_top=True, **kwargs):
        fetched.append((zoo_id, include_top))
        return _fixture("keras_applications_v1.h5")

    monkeypatch.setattr(zoo, "fetch_weights", fake_fetch)
    model = ConvNeXt(DEPTHS, DIMS, include_top=False, features_only=True, weights="imagenet",
                     include_preprocessing=False, name="convnext_tiny")
    assert fetched == [("convnext_tiny.keras_in1k", False)]
    for i, feature in enumerate(model(expected["input"], training=False)):
        assert np.abs(np.asarray(feature) - expected[f"v1_stage_{i}"]).max() <= TOLERANCE


def test_keras_applications_h5_head_and_keras_own_loader_agree(expected):
    """The fixture really is keras.applications' layout: keras' own ConvNeXt loads it too."""
    from keras_visrec.converters.loading import load_checkpoint_into_model

    x = expected["input"]
    ours = ConvNeXt(DEPTHS, DIMS, classes=5, include_preprocessing=False, classifier_activation=None,
                    input_shape=(32, 32, 3), name="mine")
    load_checkpoint_into_model(ours, _fixture("keras_applications_v1.h5"), include_top=True,
                               layout="keras_applications", source_prefix="convnext_tiny")
    assert np.abs(_logits(ours, x) - expected["v1_logits"]).max() <= TOLERANCE
    from keras.src.applications.convnext import ConvNeXt as KerasConvNeXt

    theirs = KerasConvNeXt(
        depths=list(DEPTHS), projection_dims=list(DIMS), name="convnext_tiny", include_top=True, classes=5,
        classifier_activation=None, input_shape=(32, 32, 3), weights=_fixture("keras_applications_v1.h5"))
    mean = np.array([0.485, 0.456, 0.406], "f4") * 255
    std = np.array([0.229, 0.224, 0.225], "f4") * 255
    assert np.abs(np.asarray(theirs(x * std + mean, training=False)) - expected["v1_logits"]).max() <= 1e-3


def test_wrong_architecture_lists_every_problem():
    with pytest.raises(KeyMismatchError) as info:
        ConvNeXt(DEPTHS, (8, 16, 24, 40), classes=5, weights=_fixture("official_v1.pth"))
    message = str(info.value)
    assert "official_v1.pth" in message and "shape mismatch" in message
    assert "stages.3.0.pwconv1.weight" in message and "downsample_layers.3.1.weight" in message
    with pytest.raises(KeyMismatchError, match="missing in checkpoint"):
        ConvNeXt((1, 1, 2, 1), DIMS, classes=5, weights=_fixture("official_v1.pth"))
    with pytest.raises(KeyMismatchError, match="unexpected in checkpoint"):
        ConvNeXt(DEPTHS, DIMS, classes=5, use_grn=True, layer_scale_init_value=None,
                 weights=_fixture("official_v1.pth"))


def test_classes_hint_for_head_size():
    with pytest.raises(KeyMismatchError, match="pass classes=5"):
        ConvNeXt(DEPTHS, DIMS, classes=1000, weights=_fixture("official_v1.pth"))


@pytest.mark.parametrize("weights,error,match", [
    ("convnext_tiny.fb_in1", ValueError, "Close matches"),
    ("/nowhere/model.pth", FileNotFoundError, "nowhere"),
    ("/nowhere/model.onnx", ValueError, "unsupported extension"),
    (42, TypeError, "weights"),
])
def test_bad_weights_values(weights, error, match):
    with pytest.raises(error, match=match):
        keras_visrec.ConvNeXtAtto(weights=weights)


def test_unverified_zoo_id_needs_opt_in_before_building(monkeypatch):
    monkeypatch.delenv("KERAS_VISREC_ALLOW_UNVERIFIED", raising=False)
    with pytest.raises(ValueError, match="no published sha256"):
        keras_visrec.ConvNeXtV2Atto(weights="convnext_v2_atto.fb_fcmae_ft_in1k")


def test_zoo_id_for_another_arch_and_class_count(monkeypatch):
    monkeypatch.setenv("KERAS_VISREC_ALLOW_UNVERIFIED", "1")
    with pytest.raises(ValueError, match="are for 'convnext_tiny'"):
        keras_visrec.ConvNeXtSmall(weights="convnext_tiny.fb_in1k")
    with pytest.raises(ValueError, match="classes=21841"):
        keras_visrec.ConvNeXtTiny(weights="convnext_tiny.fb_in22k")
    with pytest.raises(ValueError, match="imagenet"):
        keras_visrec.ConvNeXtAtto(weights="imagenet")

"""The catalogue cannot rot silently: every entry is walked and checked."""

import re

import pytest

from keras_visrec import zoo
from keras_visrec.convnext import CONVNEXT_CONFIGS

ID = re.compile(r"^(?P<arch>[a-z0-9_]+)\.(?P<source>fb|keras)_(?P<pre>in1k|in22k|in22k_ft_in1k|fcmae_ft_in1k|"
                r"fcmae_ft_in22k_ft_in1k)(?:_(?P<res>384|512))?$")


def _param_count(arch, classes):
    """Parameters of a ConvNeXt from its config row (checked against a built model below)."""
    config = CONVNEXT_CONFIGS[arch]
    depths, dims = config["depths"], config["dims"]
    isotropic, grn = config.get("isotropic", False), config.get("grn", False)
    layer_scale = config.get("layer_scale", 1e-6) is not None
    patch = 16 if isotropic else 4
    total = 3 * dims[0] * patch * patch + dims[0] + (0 if isotropic else 2 * dims[0])
    for stage, (depth, dim) in enumerate(zip(depths, dims)):
        if stage:
            total += 2 * dims[stage - 1] + 4 * dims[stage - 1] * dim + dim
        block = 49 * dim + dim + 2 * dim + 8 * dim * dim + 4 * dim + dim + layer_scale * dim + grn * 8 * dim
        total += depth * block
    return total + 2 * dims[-1] + dims[-1] * classes + classes


GENERAL_ID = re.compile(r"^(?P<arch>[a-z0-9_]+)\.(?P<source>[a-z0-9]+)_(?P<tag>[a-z0-9_]+)$")


def test_every_entry_has_the_common_fields():
    import keras_visrec

    registered = set(keras_visrec.list_models())
    for zoo_id, entry in zoo.load_catalogue().items():
        match = GENERAL_ID.match(zoo_id)
        assert match and match["arch"] == entry.arch and match["source"] == entry.source, zoo_id
        assert entry.arch in registered, zoo_id
        assert entry.task in zoo.catalogue.TASKS, zoo_id
        assert entry.url.startswith("https://"), zoo_id
        assert entry.license and entry.sha256_source and entry.num_params > 0, zoo_id
        assert set(entry.preprocessing) >= {"mean", "std"}, zoo_id
        if entry.sha256 is not None:
            assert re.fullmatch(r"[0-9a-f]{64}", entry.sha256), zoo_id
        if entry.task == "classification":
            assert entry.top1 is None or 50 < entry.top1 < 95, zoo_id
        else:
            assert entry.top1 is None and entry.metrics and entry.metrics_source, zoo_id


def test_every_convnext_classifier_entry_is_complete_and_consistent():
    entries = {k: e for k, e in zoo.load_catalogue().items()
               if e.arch in CONVNEXT_CONFIGS and e.task == "classification" and e.source in ("fb", "keras")}
    assert len(entries) >= 40
    for zoo_id, entry in entries.items():
        match = ID.match(zoo_id)
        assert match, zoo_id
        assert match["arch"] == entry.arch and entry.arch in CONVNEXT_CONFIGS, zoo_id
        assert match["source"] == entry.source
        assert int(match["res"] or 224) == entry.resolution
        assert entry.url.startswith("https://") and entry.url.endswith((".pth", ".pt", ".h5")), zoo_id
        assert entry.classes == (21841 if entry.pretraining == "in22k" else 1000), zoo_id
        assert entry.num_params == _param_count(entry.arch, entry.classes), zoo_id
        assert entry.license == ("CC-BY-NC-4.0" if entry.arch.startswith("convnext_v2") else "MIT"), zoo_id
        assert set(entry.preprocessing) >= {"mean", "std", "crop", "interpolation"}
        assert entry.preprocessing["crop"] == entry.resolution
        if entry.sha256 is not None:
            assert re.fullmatch(r"[0-9a-f]{64}", entry.sha256)
        assert entry.sha256_source
        assert entry.top1 is None if entry.pretraining == "in22k" else 70 < entry.top1 < 90


def test_param_formula_matches_a_built_model():
    import keras_visrec

    model = keras_visrec.ConvNeXtV2Atto(input_shape=(32, 32, 3))
    assert model.count_params() == _param_count("convnext_v2_atto", 1000)
    assert _param_count("convnext_tiny", 1000) == 28_589_128  # REFERENCES.md: 28.59 M


def test_reference_checkpoints_are_all_listed():
    ids = set(zoo.list_weights())
    for size in ("tiny", "small", "base", "large"):
        assert f"convnext_{size}.fb_in1k" in ids
        assert f"convnext_{size}.fb_in22k" in ids
        assert f"convnext_{size}.fb_in22k_ft_in1k" in ids
        assert f"convnext_{size}.fb_in22k_ft_in1k_384" in ids
    assert {"convnext_base.fb_in1k_384", "convnext_large.fb_in1k_384", "convnext_xlarge.fb_in22k"} <= ids
    assert {f"convnext_isotropic_{s}.fb_in1k" for s in ("small", "base", "large")} <= ids
    assert {f"convnext_v2_{s}.fb_fcmae_ft_in1k" for s in ("atto", "femto", "pico", "nano", "tiny", "base",
                                                          "large", "huge")} <= ids


def test_imagenet_defaults_all_have_published_hashes():
    for arch in ("convnext_tiny", "convnext_small", "convnext_base", "convnext_large", "convnext_xlarge"):
        entry = zoo.default_weights(arch)
        assert entry is not None and entry.verified and entry.notop_sha256, arch
        assert "WEIGHTS_HASHES" in entry.sha256_source
    assert zoo.default_weights("convnext_atto") is None


def test_unknown_id_lists_close_matches():
    with pytest.raises(ValueError, match="convnext_tiny.fb_in1k"):
        zoo.get_weights("convnext_tiny.fb_in1")

"""One pruning vocabulary: every pruner takes `ratio`, honours `name=`, returns (model, PruneReport),
copies when there is nothing to prune; old spellings warn for one release."""

import warnings

import keras
import numpy as np
import pytest

import keras_visrec
from keras_visrec import cifar
from keras_visrec.pruning import arms, base, convnext, l1_norm, magnitude, slimming

X = np.random.default_rng(0).uniform(0, 255, (2, 16, 16, 3)).astype("float32")


def _vgg():
    keras.utils.set_random_seed(0)
    return cifar.CIFARVGG([8, "M", 16, "M", 16], head="slimming", name="v", input_shape=(16, 16, 3),
                          classifier_activation=None)


def _convnext():
    keras.utils.set_random_seed(0)
    return keras_visrec.ConvNeXt((1, 1, 1, 1), (8, 16, 32, 64), input_shape=(32, 32, 3), classes=10, name="cx")


PRUNERS = {
    "l1": (_vgg, lambda m, r, **k: l1_norm.l1_prune(m, r, **k)),
    "slimming": (_vgg, lambda m, r, **k: slimming.network_slimming(m, r, **k)),
    "magnitude": (_vgg, lambda m, r, **k: magnitude.magnitude_prune(m, None, ratio=r, **k)),
    "convnext_mlp": (_convnext, lambda m, r, **k: convnext.prune_convnext_mlp(m, r, **k)),
}


@pytest.mark.parametrize("method", sorted(PRUNERS))
def test_every_pruner_takes_ratio_and_name_and_returns_a_printable_report(method):
    build, prune = PRUNERS[method]
    model = build()
    pruned, report = prune(model, 0.5, name="pruned")
    assert isinstance(pruned, keras.Model) and pruned.name == "pruned"
    assert isinstance(report, base.PruneReport) and report.method == method and report.model == "pruned"
    assert report.layers and all(0 < change.removed < 1 for change in report.layers)
    assert report.nonzero[1] < report.nonzero[0]
    text = str(report)
    assert text.splitlines()[0].startswith(f"{method} pruning -> 'pruned' (ratio 0.5)")
    assert all(change.name in text for change in report.layers) and "non-zero" in text
    assert pruned.predict(X if method != "convnext_mlp" else np.zeros((1, 32, 32, 3)), verbose=0).shape[-1] == 10
    for bad in (1.0, -0.1, "half"):
        with pytest.raises(ValueError, match="ratio"):
            prune(model, bad)


@pytest.mark.parametrize("method", sorted(PRUNERS))
def test_nothing_to_prune_returns_a_named_copy(method):
    build, prune = PRUNERS[method]
    model = build()
    copy, report = prune(model, 0.0, name="same")
    assert copy is not model and copy.name == "same"
    assert not [change for change in report.layers if change.removed]
    x = X if method != "convnext_mlp" else np.zeros((1, 32, 32, 3), "float32")
    np.testing.assert_allclose(copy.predict(x, verbose=0), model.predict(x, verbose=0), atol=1e-6)


def test_per_layer_dicts_and_their_errors():
    model = _vgg()
    _, report = l1_norm.l1_prune(model, {"v_conv_2": 0.5})
    assert [(c.name, c.before, c.after) for c in report.layers] == [("v_conv_2", 16, 8)]
    _, report = slimming.network_slimming(model, {"v_bn_0": 0.5})
    assert report.layers[0].name == "v_conv_0" and report.layers[0].after == 4
    with pytest.raises(ValueError, match="'v_conv_9'.*not a prunable convolution.*Close matches"):
        l1_norm.l1_prune(model, {"v_conv_9": 0.5})
    with pytest.raises(ValueError, match=r"ratio\['v_conv_2'\]"):
        l1_norm.l1_prune(model, {"v_conv_2": 1.5})


def test_report_details_read_as_attributes():
    _, report = slimming.network_slimming(_vgg(), 0.3)
    assert report.threshold == report.details["threshold"] and report.total == 16 + 16 + 8
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        report.nope


def test_old_spellings_warn_and_keep_their_meaning(monkeypatch):
    model = _vgg()
    with pytest.warns(DeprecationWarning, match=r"`l1_prune\(targets=...\)` is deprecated.*`ratio=`"):
        old, _ = l1_norm.l1_prune(model, targets={"v_conv_0": 2, "v_conv_2": 0.5})
    new, _ = l1_norm.l1_prune(model, {"v_conv_2": 0.5}, widths={"v_conv_0": 2})
    assert [w.shape for w in old.weights] == [w.shape for w in new.weights]
    assert old.get_layer("v_conv_0").filters == 2  # an int in targets kept its meaning: filters kept
    with pytest.warns(DeprecationWarning, match="widths="):
        positional, _ = l1_norm.l1_prune(model, {"v_conv_0": 2})
    assert positional.get_layer("v_conv_0").filters == 2
    with pytest.warns(DeprecationWarning, match=r"`add_bn_sparsity\(s=...\)`.*`strength=`"):
        slimming.add_bn_sparsity(model, s=1e-4)
    assert float(model.get_layer("v_bn_0").gamma.regularizer.l1) == pytest.approx(1e-4)
    with pytest.warns(DeprecationWarning, match=r"`l1_prune_resnet\(ratios=...\)`"):
        l1_norm.l1_prune_resnet(cifar.CIFARResNet(8, name="r"), (), ratios=(0.5, 0.5, 0.5))
    with pytest.warns(DeprecationWarning, match="SlimmingPlan"):
        assert keras_visrec.pruning.SlimmingReport is slimming.SlimmingPlan
    calls = []
    monkeypatch.setattr(arms, "fine_tune_pruned", lambda *args, **kwargs: calls.append((args, kwargs)) or "arm")
    with pytest.warns(DeprecationWarning, match="use `fine_tune_pruned`"):
        assert arms.fine_tune("pruned", "train", "test", seed=3) == "arm"
    assert calls == [(("pruned", "train", "test", None), dict(strategy=None, seed=3, verbose=0))]
    with pytest.raises(TypeError, match="unexpected keyword argument 'ratioo'"):
        l1_norm.l1_prune(model, ratioo=0.5)
    with pytest.raises(TypeError, match="not the deprecated `targets=` as well"):
        l1_norm.l1_prune(model, 0.5, targets={"v_conv_0": 0.5})
    with warnings.catch_warnings():
        warnings.filterwarnings("error", message=".*deprecated and will be removed")  # new spellings: no warning
        l1_norm.l1_prune(model, 0.5)
        slimming.add_bn_sparsity(model, strength=1e-4)


def test_the_layer_walk_reaches_nested_models():
    inner = _vgg()
    inputs = keras.Input((16, 16, 3))
    outer = keras.Model(inputs, inner(inputs), name="outer")
    names = [layer.name for layer in base.iter_layers(outer)]
    assert "v" in names and "v_conv_0" in names and names.count("v_conv_0") == 1
    assert set(magnitude.weight_sparsity(outer)) >= {"v_conv_0", "v_classifier"}
    assert set(slimming.add_bn_sparsity(outer, strength=1e-5)) == {"v_bn_0", "v_bn_2", "v_bn_4"}

"""Network slimming: the s·sign(γ) term, one global threshold, emptied layers, channel selection."""

import keras
import numpy as np
import pytest

from keras_visrec import cifar
from keras_visrec.pruning import slimming

X = np.random.default_rng(0).uniform(0, 255, (2, 32, 32, 3)).astype("float32")


def _set_gammas(model, rng, zero_share=0.4):
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            gamma, beta, mean, var = layer.get_weights()
            gamma = rng.uniform(0.1, 1.0, gamma.shape).astype("float32")
            zero = rng.random(gamma.shape) < zero_share
            gamma[zero] = 0.0
            beta[zero] = 0.0
            layer.set_weights([gamma, beta, mean, var])


def test_sparsity_term_adds_s_sign_gamma_to_the_gradient():
    def one_step(s):
        keras.utils.set_random_seed(0)
        model = cifar.CIFARVGG([4, "M", 4], head="slimming", name="v", bn_gamma_init=0.5, input_shape=(8, 8, 3))
        bn = model.get_layer("v_bn_0")
        gamma = bn.get_weights()
        gamma[0] = np.array([0.5, -0.3, 0.2, 0.0], "float32")
        bn.set_weights(gamma)
        if s:
            assert slimming.add_bn_sparsity(model, strength=s) == ["v_bn_0", "v_bn_2"]
        model.compile(keras.optimizers.SGD(1.0), "sparse_categorical_crossentropy")
        model.fit(np.ones((4, 8, 8, 3), "float32"), np.zeros(4, "int32"), batch_size=4, verbose=0)
        return bn.get_weights()[0]

    difference = one_step(0.0) - one_step(0.01)
    np.testing.assert_allclose(difference, 0.01 * np.sign([0.5, -0.3, 0.2, 0.0]), atol=1e-6)


def test_global_threshold_ranks_all_layers_together():
    model = cifar.CIFARVGG([4, "M", 4], head="slimming", name="v", classifier_activation=None)
    for name, gamma in (("v_bn_0", [0.9, 0.8, 0.7, 0.6]), ("v_bn_2", [0.1, 0.2, 0.95, 0.3])):
        bn = model.get_layer(name)
        values = bn.get_weights()
        values[0] = np.array(gamma, "float32")
        bn.set_weights(values)
    report = slimming.slimming_plan(model, 0.5)
    assert isinstance(report, slimming.SlimmingPlan)
    assert report.total == 8 and report.removed == 4
    assert report.kept["v_bn_0"].tolist() == [0, 1, 2]
    assert report.kept["v_bn_2"].tolist() == [2]
    assert report.threshold == pytest.approx(0.6)
    # a per-layer dict: each listed BN by its own threshold, the others untouched
    local = slimming.slimming_plan(model, {"v_bn_2": 0.5})
    assert local.kept["v_bn_2"].tolist() == [2, 3] and local.kept["v_bn_0"].tolist() == [0, 1, 2, 3]
    assert local.removed == 2 and local.total == 8


def test_layer_losing_every_channel_keeps_its_largest():
    model = cifar.CIFARVGG([4, "M", 4], head="slimming", name="v", classifier_activation=None)
    bn = model.get_layer("v_bn_2")
    values = bn.get_weights()
    values[0] = np.array([0.01, 0.03, 0.02, 0.0], "float32")
    bn.set_weights(values)
    pruned, report = slimming.network_slimming(model, 0.5, name="v_slim")
    assert pruned.name == "v_slim" and report.method == "slimming"
    assert report.emptied == ("v_bn_2",)
    assert report.kept["v_bn_2"].tolist() == [1]
    assert pruned.get_layer("v_conv_2").filters == 1
    assert pruned.predict(X, verbose=0).shape == (2, 10)


@pytest.mark.parametrize("build", [
    lambda: cifar.CIFARPreResNet(20, name="p", classifier_activation=None),
    lambda: cifar.CIFARDenseNet(10, growth_rate=4, name="d", classifier_activation=None),
    lambda: cifar.CIFARVGG([8, "M", 16, "M", 16], head="slimming", name="v", classifier_activation=None),
])
def test_slimming_removes_zero_scale_channels_exactly(build):
    model = build()
    _set_gammas(model, np.random.default_rng(3))
    zeros = sum(int((l.get_weights()[0] == 0).sum()) for l in model.layers
                if isinstance(l, keras.layers.BatchNormalization))
    total = sum(int(l.gamma.shape[0]) for l in model.layers if isinstance(l, keras.layers.BatchNormalization))
    pruned, report = slimming.network_slimming(model, zeros / total * 0.9)
    assert report.skipped == ()
    assert report.removed > 0
    assert pruned.count_params() < model.count_params()
    np.testing.assert_allclose(pruned.predict(X, verbose=0), model.predict(X, verbose=0), atol=1e-4, rtol=1e-4)
    if model.name != "v":
        assert any(isinstance(l, cifar.ChannelSelection) and l.indices is not None for l in pruned.layers)


def test_bad_ratio_and_no_batchnorm():
    model = cifar.CIFARVGG([4], head="slimming", name="v", input_shape=(2, 2, 3))
    for ratio in (1.0, -0.5, "0.5"):
        with pytest.raises(ValueError, match="ratio"):
            slimming.slimming_plan(model, ratio)
    plain = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3)])
    with pytest.raises(ValueError, match="no BatchNorm"):
        slimming.slimming_plan(plain, 0.5)
    with pytest.raises(ValueError, match="`strength`"):
        slimming.add_bn_sparsity(model, -1)

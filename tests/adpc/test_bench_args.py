"""``bench/adpc_masked.py`` refuses bad flags before building or timing anything."""

import importlib.util
import pathlib
import sys

import pytest

_BENCH = pathlib.Path(__file__).resolve().parents[2] / "bench" / "adpc_masked.py"


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("adpc_masked_bench", _BENCH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _parse(bench, monkeypatch, *argv):
    monkeypatch.setattr(sys, "argv", ["adpc_masked.py", *argv])
    return bench._parse()


@pytest.mark.parametrize("argv,message", [
    (("--scale", "paper", "--shares", "0,0.5"), "strictly between 0 and 1"),
    (("--scale", "paper", "--shares", "0.5,1.0"), "strictly between 0 and 1"),
    (("--scale", "paper", "--shares", "half"), "comma-separated numbers"),
    (("--scale", "paper", "--operating-point", "0.3,0.6,0.2"), "non-increasing"),
    (("--scale", "paper", "--operating-point", "0.8,0.6"), "three non-increasing"),
    (("--scale", "paper", "--backbones", "w99"), "--backbones"),
    (("--scale", "paper", "--image-size", "1000x2000"), "multiples of 32"),
    (("--scale", "paper", "--image-size", "big"), "HEIGHTxWIDTH"),
    (("--scale", "paper", "--epochs", "3"), "digit-task flags with --scale paper: --epochs"),
    (("--scale", "paper", "--accuracy-only"), "--accuracy-only"),
    (("--repeats", "0",), "--repeats"),
    (("--dense-above", "1.5"), "--dense-above"),
    (("--mask-shares", "0.8,0,0.3"), "strictly between 0 and 1"),
    (("--schedule", "poly", "--adpc-from", "base"), "needs --schedule step"),
])
def test_bad_flags_stop_before_any_work(bench, monkeypatch, capsys, argv, message):
    with pytest.raises(SystemExit) as stop:
        _parse(bench, monkeypatch, *argv)
    assert stop.value.code == 2
    assert message in capsys.readouterr().err


def test_paper_defaults(bench, monkeypatch):
    args = _parse(bench, monkeypatch, "--scale", "paper")
    assert args.backbones == ("w48", "w18_small_v2") and args.image_size == (1024, 2048)
    assert args.shares == (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)
    assert args.operating_point == (0.82, 0.63, 0.38) and args.dense_above is None
    digits = _parse(bench, monkeypatch, "--seed", "2")
    assert digits.scale == "digits" and digits.seed == 2 and digits.size == 1024 and digits.epochs == 24


def test_crossover_table_prints_every_kind_and_way(bench, capsys):
    from keras_visrec.adpc.crossover import CrossoverTable, KindCosts

    kinds = {"conv k3 s1 16->16 64x128 t1": KindCosts(0.004, {"pixels": (0.001, 0.006), "strips": (0.0005, 0.004)}),
             "head 16+32->19 64x128 t1": KindCosts(0.002, {})}
    bench._print_crossover_table(CrossoverTable(probe=False), kinds)
    out = capsys.readouterr().out
    assert "2 kinds" in out and "conv k3 s1 16->16 64x128 t1: dense 4.00 ms" in out
    assert "pixels 0.50" in out and "strips 0.88" in out and "no sparse way" in out


def test_mask_shares_model_computes_the_given_shares(bench):
    """``--mask-shares``: segments 2-4 compute the given shares at 1/4 resolution, whatever the confidence rule says
    (an earlier version patched a module-level rule the model no longer reads, so the flag changed nothing)."""
    import numpy as np

    model = bench._fixed_share_model((0.8, 0.6, 0.4))(bench.SMALL, classes=11, exit_width=32, mode="dense", name="fs")
    list(model.iter_exits(np.random.default_rng(0).uniform(0, 255, (2, 64, 64, 3)).astype("float32")))
    quarter = [fractions[(16, 16)] for fractions in model.computed_fractions()]
    np.testing.assert_allclose(quarter, (0.8, 0.6, 0.4), atol=0.01)
    assert model.mask_fn.__name__ == "confidence_mask"  # the model's own rule is back after the pass


def test_batch_norm_reestimation_sets_the_mean_of_each_batchs_statistics(bench, tiny_config):
    """The exits-2/3 experiment's re-estimation: the stem BatchNorm's moving statistics become the mean of
    its per-batch mean / variance over the canvases; weights, momenta and the mode are left as they were."""
    import keras
    import numpy as np

    from keras_visrec.adpc import AnytimeHRNet

    model = AnytimeHRNet(tiny_config, classes=5, exit_width=8, mode="dense", include_preprocessing=False, name="bn")
    x = np.random.default_rng(3).normal(2.0, 3.0, (16, 64, 64, 3)).astype("float32")
    model(x[:1])
    bn = model.network.get_layer("bn_bn1")
    stem_conv = keras.Model(model.network.inputs, model.network.get_layer("bn_conv1").output)
    kernels = [v.numpy() for v in model.trainable_weights]
    momentum = bn.momentum
    assert bench._reestimate_batch_norm(model, x, "none", batch_size=8) > 1
    features = [np.asarray(stem_conv(x[i:i + 8])) for i in (0, 8)]
    mean = np.mean([f.mean(axis=(0, 1, 2)) for f in features], axis=0)
    variance = np.mean([f.var(axis=(0, 1, 2)) for f in features], axis=0)
    np.testing.assert_allclose(bn.moving_mean.numpy(), mean, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(bn.moving_variance.numpy(), variance, rtol=1e-4, atol=1e-5)
    assert bn.momentum == momentum and model.mode == "dense"
    assert all(np.array_equal(a, v.numpy()) for a, v in zip(kernels, model.trainable_weights))

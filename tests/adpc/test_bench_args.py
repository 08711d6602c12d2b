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
    (("--own-logits-loss", "--detach-copied"), "drop --detach-copied"),
    (("--scale", "paper", "--own-logits-loss"), "--own-logits-loss"),
    (("--scale", "paper", "--masked-features", "real"), "--masked-features"),
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


def _with_plain_twin(bench, experiment):
    """Test images, the fixed-share model wrapped by ``experiment`` and the plain fixed-share model, same weights."""
    import numpy as np

    images = np.random.default_rng(0).uniform(0, 255, (2, 64, 64, 3)).astype("float32")
    fixed = bench._fixed_share_model((0.8, 0.6, 0.4))
    model = experiment(fixed)(bench.SMALL, classes=11, exit_width=32, mode="dense", name="twin")
    plain = fixed(bench.SMALL, classes=11, exit_width=32, mode="dense", name="twin")
    plain(images[:1])
    plain.set_weights(model.get_weights())
    return images, model, plain


def test_detached_copy_model_keeps_the_values_and_cuts_the_copied_pixels_gradient(bench):
    """``--detach-copied``: the same outputs as ADP-C, but the loss at the pixels exit 2 copies trains nothing."""
    import numpy as np
    import tensorflow as tf

    images, model, plain = _with_plain_twin(bench, bench._detached_copy_model)
    with tf.GradientTape() as tape:
        outs = model(images)
        copied = 1.0 - model.last_hooks[0].mask_at(16, 16)[..., None]
        loss = tf.reduce_sum(outs[:, 1] * copied)
    np.testing.assert_allclose(np.asarray(outs), np.asarray(plain(images)), atol=1e-5)
    grads = [g for g in tape.gradient(loss, model.trainable_variables) if g is not None]
    assert all(float(tf.reduce_max(tf.abs(g))) == 0.0 for g in grads)


def test_own_logits_model_trains_on_each_exits_own_logits_and_copies_at_inference(bench):
    """``--own-logits-loss``: in training, exits 2-4 give their own logits on every pixel (the unmasked model's
    values where computed, the segment's RBF-fed computation where skipped); at inference they copy as ADP-C does."""
    import numpy as np

    images, model, plain = _with_plain_twin(bench, bench._own_logits_model)
    trained = np.asarray(model(images, training=True))  # batch statistics in both: compare like with like
    copied = np.asarray(plain(images, training=True))
    np.testing.assert_allclose(np.asarray(model(images, training=False)), np.asarray(plain(images, training=False)),
                               atol=1e-5)
    assert trained.shape == copied.shape == (2, 4, 16, 16, 11)
    np.testing.assert_array_equal(trained[:, 0], copied[:, 0])
    model(images, training=True)  # the hooks of a training pass again (the call above was an inference one)
    for k, hook in enumerate(model.last_hooks, start=2):
        keep = np.asarray(hook.mask_at(16, 16))[..., None]
        assert 0.3 < keep.mean() < 0.9
        np.testing.assert_allclose(trained[:, k - 1] * keep, copied[:, k - 1] * keep, atol=1e-5)
        np.testing.assert_allclose(copied[:, k - 1] * (1 - keep), copied[:, k - 2] * (1 - keep), atol=1e-5)
        assert np.abs((trained[:, k - 1] - copied[:, k - 1]) * (1 - keep)).max() > 1e-3


def test_segment_variants_compute_real_features_and_max_pooled_masks(bench):
    """``--masked-features real``: the segments compute every position, so exit k is the unmasked exit k where
    computed and exit k - 1 elsewhere; ``--low-res-masks max``: a lower-resolution position is computed when any
    1/4-resolution pixel under it is."""
    import numpy as np

    images = np.random.default_rng(0).uniform(0, 255, (2, 64, 64, 3)).astype("float32")
    fixed = bench._fixed_share_model((0.8, 0.6, 0.4))
    real = bench._segment_variant_model(fixed, "real")(bench.SMALL, classes=11, exit_width=32, mode="dense", name="v")
    plain = np.asarray(real.anytime(images, mode="none"))
    outs = np.asarray(real.anytime(images))
    for k, hook in enumerate(real.last_hooks, start=2):
        keep = np.asarray(hook.mask_at(16, 16))[..., None]
        np.testing.assert_allclose(outs[k - 1], plain[k - 1] * keep + outs[k - 2] * (1 - keep), atol=1e-4)

    pooled = bench._segment_variant_model(fixed, low_res_masks="max")(bench.SMALL, classes=11, exit_width=32,
                                                                      mode="dense", name="m")
    pooled.anytime(images)
    for hook in pooled.last_hooks:
        quarter = np.asarray(hook.mask_at(16, 16))
        assert 0.3 < quarter.mean() < 0.9  # the 1/4-resolution mask is the shares' own
        np.testing.assert_array_equal(np.asarray(hook.mask_at(4, 4)), quarter.reshape(2, 4, 4, 4, 4).max(axis=(2, 4)))


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

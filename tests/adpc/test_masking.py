"""Confidence masks, the RBF fill, and dense-simulated vs block-sparse masked computation."""

import keras
import numpy as np
import pytest

from keras_visrec.adpc import AnytimeHRNet, confidence_mask, rbf_interpolate, resize_mask
from keras_visrec.hrnet import HRNetOps


def _rbf_reference(values, mask, lam):
    """The official formula, written directly: 7×7 kernel exp(-λ²d²), zero centre, normalised."""
    d2 = np.add.outer(np.arange(-3, 4) ** 2, np.arange(-3, 4) ** 2).astype("float64")
    kernel = np.exp(-(lam ** 2) * d2)
    kernel[3, 3] = 0.0
    kernel /= kernel.sum() + 1e-5
    kept = values * mask[..., None]
    padded = np.pad(kept, ((0, 0), (3, 3), (3, 3), (0, 0)))
    smoothed = np.zeros_like(kept)
    for i in range(7):
        for j in range(7):
            smoothed += kernel[i, j] * padded[:, i:i + kept.shape[1], j:j + kept.shape[2]]
    return kept + smoothed * (1 - mask[..., None])


@pytest.mark.parametrize("lam", [3.0, 0.7])
def test_rbf_matches_official_formula(lam):
    rng = np.random.default_rng(0)
    values = rng.normal(size=(2, 12, 10, 3)).astype("float32")
    mask = (rng.random((2, 12, 10)) < 0.4).astype("float32")
    ours = keras.ops.convert_to_numpy(rbf_interpolate(values, mask, keras.ops.convert_to_tensor(lam)))
    np.testing.assert_allclose(ours, _rbf_reference(values, mask, lam), rtol=1e-4, atol=1e-5)


def test_confidence_mask_and_threshold():
    logits = np.zeros((1, 2, 2, 3), "float32")
    logits[0, 0, 0] = [20.0, 0.0, 0.0]  # confident
    mask = keras.ops.convert_to_numpy(confidence_mask(logits, 0.998))
    np.testing.assert_array_equal(mask, [[[0, 1], [1, 1]]])
    for bad in (0.0, 1.5, -1, "0.9"):
        with pytest.raises(ValueError, match="threshold"):
            AnytimeHRNet("w18_small_v2", classes=3, threshold=bad)


def test_resize_mask_is_pytorch_nearest():
    mask = np.arange(2 * 8 * 12, dtype="float32").reshape(2, 8, 12)
    out = keras.ops.convert_to_numpy(resize_mask(mask, 2, 3))
    np.testing.assert_array_equal(out, mask[:, ::4, ::4])
    out = keras.ops.convert_to_numpy(resize_mask(mask, 3, 5))  # floor(i * in / out)
    np.testing.assert_array_equal(out, mask[:, [0, 2, 5]][:, :, [0, 2, 4, 7, 9]])


@pytest.fixture
def tiny_model(tiny_config):
    return AnytimeHRNet(tiny_config, classes=11, exit_width=16, tile=4)


def _median_threshold(model, x):
    first = keras.ops.convert_to_numpy(model.anytime(x, mode="none")[0])
    probs = np.exp(first - first.max(-1, keepdims=True))
    confidence = (probs / probs.sum(-1, keepdims=True)).max(-1)
    return float(np.quantile(confidence, 0.6))


@pytest.mark.parametrize("tile", [1, 4])
def test_sparse_equals_dense_simulation(tiny_model, tile):
    tiny_model.tile = tile
    x = np.random.default_rng(0).uniform(-1, 1, (2, 64, 64, 3)).astype("float32")
    threshold = _median_threshold(tiny_model, x)
    dense = [keras.ops.convert_to_numpy(o) for o in tiny_model.anytime(x, mode="dense", threshold=threshold)]
    shares = tiny_model.computed_fractions()
    assert 0.2 < shares[0][(16, 16)] < 0.9  # a real mask
    for dense_above in (1.0, 0.6):  # all sparse; sparse with dense fallback for busy convs
        tiny_model.dense_above = dense_above
        sparse = tiny_model.anytime(x, mode="sparse", threshold=threshold)
        for d, s in zip(dense, sparse):
            scale = max(1.0, float(np.abs(d).max()))
            np.testing.assert_allclose(keras.ops.convert_to_numpy(s), d, atol=1e-4 * scale)
    none = tiny_model.anytime(x, mode="none")
    assert not np.allclose(keras.ops.convert_to_numpy(none[3]), dense[3])


def test_computed_dense_fill_is_the_unmasked_network_where_convs_run_densely(tiny_model):
    """``dense_fill="computed"``: a conv run densely keeps its values at the skipped pixels, so with every conv
    dense each exit is the unmasked network's on the computed pixels and the previous exit's elsewhere."""
    x = np.random.default_rng(4).uniform(-1, 1, (2, 64, 64, 3)).astype("float32")
    threshold = _median_threshold(tiny_model, x)
    none = [keras.ops.convert_to_numpy(o) for o in tiny_model.anytime(x, mode="none")]
    dense = [keras.ops.convert_to_numpy(o) for o in tiny_model.anytime(x, mode="dense", threshold=threshold)]
    tiny_model.dense_fill = "computed"
    tiny_model.dense_above = 0.0  # every conv dense
    outs = [keras.ops.convert_to_numpy(o) for o in tiny_model.anytime(x, mode="sparse", threshold=threshold)]
    keeps = [keras.ops.convert_to_numpy(hook.mask)[..., None] for hook in tiny_model.last_hooks]
    assert all(0.2 < keep.mean() < 0.95 for keep in keeps[:1])  # a real mask
    np.testing.assert_allclose(outs[0], none[0], atol=1e-5)
    for k in (1, 2, 3):
        expected = none[k] * keeps[k - 1] + outs[k - 1] * (1.0 - keeps[k - 1])
        np.testing.assert_allclose(outs[k], expected, atol=1e-4 * max(1.0, float(np.abs(expected).max())))
    assert not np.allclose(outs[3], dense[3], atol=1e-3)  # the RBF fill is gone: another result
    tiny_model.dense_above, tiny_model.tile = 1.0, 1  # every conv sparse (no single-tile map): the blend stays
    for d, s in zip(dense, tiny_model.anytime(x, mode="sparse", threshold=threshold)):
        np.testing.assert_allclose(keras.ops.convert_to_numpy(s), d, atol=1e-4 * max(1.0, float(np.abs(d).max())))
    restored = AnytimeHRNet.from_config(tiny_model.get_config())
    assert restored.dense_fill == "computed"
    with pytest.raises(ValueError, match="dense_fill"):
        tiny_model.dense_fill = "zeros"


def test_threshold_one_computes_everything(tiny_model):
    x = np.random.default_rng(1).uniform(-1, 1, (1, 64, 64, 3)).astype("float32")
    none = tiny_model.anytime(x, mode="none")
    full = tiny_model.anytime(x, mode="dense", threshold=1.0)
    for a, b in zip(none, full):
        np.testing.assert_allclose(keras.ops.convert_to_numpy(a), keras.ops.convert_to_numpy(b), atol=1e-4)


def test_confident_pixels_copy_previous_exit(tiny_model):
    x = np.random.default_rng(2).uniform(-1, 1, (1, 64, 64, 3)).astype("float32")
    threshold = _median_threshold(tiny_model, x)
    outs = [keras.ops.convert_to_numpy(o) for o in tiny_model.anytime(x, mode="dense", threshold=threshold)]
    skipped = keras.ops.convert_to_numpy(tiny_model.last_hooks[0].mask)[0] == 0
    assert skipped.any()
    np.testing.assert_array_equal(outs[1][0][skipped], outs[0][0][skipped])


def test_iter_exits_stops_without_later_work(tiny_model, monkeypatch):
    called = []
    original = HRNetOps.conv

    def spy(self, x, name, *args, **kwargs):
        called.append(name)
        return original(self, x, name, *args, **kwargs)

    monkeypatch.setattr(HRNetOps, "conv", spy)
    stream = tiny_model.iter_exits(np.zeros((1, 64, 64, 3), "float32"), mode="sparse")
    first = next(stream)
    assert tuple(first.shape) == (1, 16, 16, 11)
    assert called and not any(n.startswith(("transition", "stage", "exit2", "last_layer")) for n in called)
    stream.close()


def test_rbf_lambda_trains_end_to_end(tiny_model):
    import tensorflow as tf

    x = np.random.default_rng(3).uniform(-1, 1, (1, 64, 64, 3)).astype("float32")
    threshold = _median_threshold(tiny_model, x)
    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(tf.square(tiny_model.anytime(x, mode="dense", threshold=threshold)[3]))
    lambdas = [w for w in tiny_model.trainable_weights if "rbf_lambda" in w.path]
    grads = tape.gradient(loss, lambdas)
    assert sum(float(tf.reduce_sum(tf.abs(g))) for g in grads if g is not None) > 0


def test_bad_mode_and_exit_type(tiny_config):
    with pytest.raises(ValueError, match="exit_type"):
        AnytimeHRNet(tiny_config, classes=11, exit_type="xx")
    with pytest.raises(ValueError, match="mode"):
        AnytimeHRNet(tiny_config, classes=11, mode="fast")
    with pytest.raises(ValueError, match="tile"):
        AnytimeHRNet(tiny_config, classes=11, tile=0)
    with pytest.raises(ValueError, match="dense_above"):
        AnytimeHRNet(tiny_config, classes=11, dense_above=1.5)


def test_share_mask_computes_the_least_confident_share():
    from keras_visrec.adpc.masking import share_mask

    rng = np.random.default_rng(4)
    logits = rng.normal(size=(2, 6, 10, 4)).astype("float32") * 3
    logits[0, :2] = [30.0, 0, 0, 0]  # saturated confidence 1.0: ties
    mask = keras.ops.convert_to_numpy(share_mask(logits, 0.25))
    assert mask.shape == (2, 6, 10) and set(np.unique(mask)) <= {0.0, 1.0}
    assert mask.reshape(2, -1).sum(1).tolist() == [15, 15]  # exactly the share, ties and all
    probs = np.exp(logits - logits.max(-1, keepdims=True))
    confidence = (probs / probs.sum(-1, keepdims=True)).max(-1)
    for b in range(2):
        assert confidence[b][mask[b] > 0].max() <= confidence[b][mask[b] == 0].min()
    assert not mask[0, :2].any()  # the confident rows are kept
    for bad in (0.0, 1.5, True):
        with pytest.raises(ValueError, match="share"):
            share_mask(logits, bad)

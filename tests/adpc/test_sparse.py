"""The block-sparse masked convolution against the dense simulation, one convolution at a time."""

import keras
import numpy as np
import pytest

from keras_visrec.adpc import MaskedConv2D, rbf_interpolate
from keras_visrec.adpc.layers import fused_rbf_interpolate
from keras_visrec.adpc import layers as adpc_layers
from keras_visrec.adpc.sparse import dense_conv
from keras_visrec.adpc.sparse import TilePlan, _upsampled_rows, sparse_masked_conv, tile_side


def _blobs(batch, height, width, seed):
    """A 0/1 mask of a few rectangles: some tiles busy, some empty, edges at odd offsets."""
    rng = np.random.default_rng(seed)
    mask = np.zeros((batch, height, width), "float32")
    for b in range(batch):
        for _ in range(3):
            top, left = rng.integers(0, height - 2), rng.integers(0, width - 2)
            mask[b, top:top + rng.integers(1, 5), left:left + rng.integers(1, 7)] = 1.0
    return mask


@pytest.mark.parametrize("kernel,stride,bias", [(3, 1, False), (1, 1, True), (3, 2, False)])
@pytest.mark.parametrize("tile", [1, 4, 8])
def test_sparse_conv_equals_dense_blend(kernel, stride, bias, tile):
    rng = np.random.default_rng(kernel * 10 + stride + tile)
    x = rng.normal(size=(2, 32, 24, 5)).astype("float32")
    pad = kernel // 2
    layer = MaskedConv2D(6, kernel, strides=stride, padding="same" if stride == 1 else "valid", use_bias=bias,
                         bias_initializer="random_normal", initial_lambda=0.8)
    dense_y = dense_conv(layer, x, stride, pad)
    mask = _blobs(2, int(dense_y.shape[1]), int(dense_y.shape[2]), seed=tile)
    expected = keras.ops.convert_to_numpy(layer.blend(dense_y, mask))
    plan = TilePlan(keras.ops.convert_to_tensor(mask), tile)
    got = sparse_masked_conv(layer, x, plan, stride, pad)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(got), expected, atol=1e-5)
    assert 0.0 < float(plan.tile_share) < 1.0


def test_empty_mask_gives_zeros_without_work():
    x = np.ones((1, 16, 16, 3), "float32")
    layer = MaskedConv2D(4, 3, padding="same", use_bias=True, bias_initializer="ones")
    layer.build(x.shape)
    plan = TilePlan(keras.ops.zeros((1, 16, 16)), 4)
    out = sparse_masked_conv(layer, x, plan, 1, 1)
    assert int(plan.count) == 0
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(out), np.zeros((1, 16, 16, 4)))


def test_tile_side_divides_both_sides():
    assert tile_side(64, 128, 8) == 8
    assert tile_side(12, 20, 8) == 4
    assert tile_side(6, 10, 8) == 2


def test_rbf_depthwise_and_matmul_forms_agree(monkeypatch):
    rng = np.random.default_rng(4)
    values = rng.normal(size=(2, 20, 12, 4)).astype("float32")
    mask = (rng.random((2, 20, 12)) < 0.3).astype("float32")
    lam = keras.ops.convert_to_tensor(1.3)
    matmul = keras.ops.convert_to_numpy(rbf_interpolate(values, mask, lam))
    monkeypatch.setattr(adpc_layers, "MATMUL_SIDE", 0)
    depthwise = keras.ops.convert_to_numpy(rbf_interpolate(values, mask, lam))
    np.testing.assert_allclose(matmul, depthwise, atol=1e-5)


@pytest.mark.parametrize("shape", [(2, 20, 12, 4), (1, 136, 8, 3)])
@pytest.mark.parametrize("lam", [0.9, -1.7, adpc_layers.NEAR_LAMBDA, 3.0, -4.0])  # 7×7 and 3×3 sums
def test_fused_rbf_equals_rbf_interpolate(shape, lam):
    rng = np.random.default_rng(5)
    values = rng.normal(size=shape).astype("float32")
    mask = (rng.random(shape[:3] + (1,)) < 0.3).astype("float32")
    lam = keras.ops.convert_to_tensor(lam)
    expected = keras.ops.convert_to_numpy(rbf_interpolate(values, mask, lam))
    got = keras.ops.convert_to_numpy(fused_rbf_interpolate(values, mask, lam))
    np.testing.assert_allclose(got, expected, atol=1e-5)


@pytest.mark.parametrize("factor", [2, 4, 8])
def test_upsampled_rows_match_keras_bilinear(factor):
    rng = np.random.default_rng(factor)
    x = rng.normal(size=(2, 5, 7, 3)).astype("float32")
    mask = (rng.random((2, 5 * factor, 7 * factor)) < 0.3).astype("float32")
    plan = TilePlan(keras.ops.convert_to_tensor(mask), 1)
    expected = keras.ops.convert_to_numpy(keras.layers.UpSampling2D(factor, interpolation="bilinear")(x))
    got = keras.ops.convert_to_numpy(_upsampled_rows(keras.ops.convert_to_tensor(x), factor, plan))
    np.testing.assert_allclose(got, expected[mask > 0], atol=1e-5)


@pytest.mark.parametrize("stride", [1, 2])
@pytest.mark.parametrize("fill", ["blobs", "empty", "full"])
def test_strip_conv_is_exact_on_the_computed_pixels(stride, fill):
    rng = np.random.default_rng(stride)
    x = rng.normal(size=(2, 20, 18, 5)).astype("float32")
    layer = MaskedConv2D(4, 3, strides=stride, padding="same" if stride == 1 else "valid", use_bias=True,
                         bias_initializer="random_normal")
    dense_y = keras.ops.convert_to_numpy(dense_conv(layer, x, stride, 1))
    shape = dense_y.shape[:3]
    mask = {"blobs": _blobs(*shape, seed=7), "empty": np.zeros(shape, "float32"), "full": np.ones(shape, "float32")}[fill]
    if fill == "blobs":
        mask[0, :, 0] = mask[0, :, -1] = 1.0  # runs touching both borders
    plan = TilePlan(keras.ops.convert_to_tensor(mask), 1)
    y = keras.ops.convert_to_numpy(plan.conv(layer, x, stride, 1, "strips"))
    assert np.isfinite(y).all()
    np.testing.assert_allclose(y[mask > 0], dense_y[mask > 0], atol=1e-5)
    share = float(plan.share("strips", stride))
    assert share == 0.0 if fill == "empty" else share >= mask.mean()  # runs plus their halo

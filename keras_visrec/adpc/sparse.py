"""Block-sparse masked convolution: compute only the active tiles, blend them on the tile batch.

A :class:`TilePlan` is built once per masked segment and output resolution. It holds the
active tiles of the mask (a tile is active when any of its pixels is), the mask cut into those
tiles, the flat pixel indices every convolution needs to gather its input patches (tile plus the
kernel's halo), and the indices of each tile's RBF footprint (tile plus ``RBF_RADIUS`` on every
side). A masked convolution then costs one gather, one small ``VALID`` convolution on the batch
of tiles, one small matmul for the RBF fill and one ``scatter_nd`` that sums the footprints
into the output map:

    out = y·m + RBF(y·m)·(1 − m)

``y·m`` is zero outside the active tiles, and the RBF is linear, so the fill of the whole map is
the sum of every tile's own fill, which is what the summing scatter computes. Nothing runs on the
full map except the scatter's zero fill. A busy resolution (share of active tiles above
``dense_above``) runs the convolution and the blend densely instead: same result, less overhead.
"""

from keras_visrec.adpc.layers import RBF_RADIUS, rbf_tile_matrix

__all__ = ["TilePlan", "sparse_masked_conv", "tile_side"]


def tile_side(height, width, tile):
    """The largest power-of-two fraction of ``tile`` that divides both sides."""
    t = int(tile)
    while t > 1 and (height % t or width % t):
        t //= 2
    return t


def _grid(origins, count):
    """``(n, count)`` int32 offsets ``origins[:, None] + arange(count)``."""
    import tensorflow as tf

    return origins[:, None] + tf.range(count, dtype=tf.int32)[None, :]


def _flat_patch(batch, rows, cols, height, width):
    """Flat pixel indices of ``(n, len(rows), len(cols))`` patches, clipped, and their in-map flags."""
    import tensorflow as tf

    valid = tf.logical_and(tf.logical_and(rows >= 0, rows < height)[:, :, None],
                           tf.logical_and(cols >= 0, cols < width)[:, None, :])
    rows = tf.clip_by_value(rows, 0, height - 1)
    cols = tf.clip_by_value(cols, 0, width - 1)
    flat = batch[:, None, None] * (height * width) + rows[:, :, None] * width + cols[:, None, :]
    return flat, valid


class TilePlan:
    """The active tiles of one ``(batch, height, width)`` 0/1 mask and the indices reused by every conv.

    Args:
        mask: float tensor ``(batch, height, width)`` at the output resolution of the convolutions.
        tile: int. Wanted tile side; reduced to a power-of-two fraction dividing both sides.
    """

    def __init__(self, mask, tile=8):
        import tensorflow as tf

        self.height, self.width = int(mask.shape[1]), int(mask.shape[2])
        t = self.tile = tile_side(self.height, self.width, tile)
        rows, cols = self.height // t, self.width // t
        self.batch_size = tf.shape(mask)[0]
        grid = tf.transpose(tf.reshape(mask, (-1, rows, t, cols, t)), (0, 1, 3, 2, 4))
        tiles = tf.reduce_max(grid, axis=(3, 4))
        self.tile_share = tf.reduce_mean(tiles)
        index = tf.cast(tf.where(tiles > 0), tf.int32)  # (n, 3): batch, tile row, tile column
        self.count = tf.shape(index)[0]
        self.mask_tiles = tf.gather_nd(grid, index)[..., None]  # (n, t, t, 1)
        self._batch, self._top, self._left = index[:, 0], index[:, 1] * t, index[:, 2] * t
        r = RBF_RADIUS
        flat, valid = _flat_patch(self._batch, _grid(self._top - r, t + 2 * r), _grid(self._left - r, t + 2 * r),
                                  self.height, self.width)
        self.mask = mask
        # footprint-major order ((t + 2r)², n): the RBF matmul below produces that order without a transpose
        flat_t = tf.transpose(tf.reshape(flat, (-1, (t + 2 * r) ** 2)))
        outside = tf.gather(tf.reshape(1.0 - mask, (-1,)), flat_t) * tf.cast(
            tf.transpose(tf.reshape(valid, (-1, (t + 2 * r) ** 2))), mask.dtype)
        self.fill = outside[..., None]  # (1 − m)·in-map on each footprint, ((t + 2r)², n, 1)
        self.centre = flat[:, r:r + t, r:r + t]  # (n, t, t) flat output pixels of each tile
        self.scatter_index = tf.concat([tf.reshape(flat_t, (-1, 1)), tf.reshape(self.centre, (-1, 1))], axis=0)
        self._patches = {}

    def input_index(self, in_height, in_width, kernel, stride, pad):
        """Flat input indices ``(n, span, span)`` (and in-map flags, or `None`) of a conv's input patches."""
        key = (in_height, in_width, kernel, stride, pad)
        if key not in self._patches:
            span = (self.tile - 1) * stride + kernel
            flat, valid = _flat_patch(self._batch, _grid(self._top * stride - pad, span),
                                      _grid(self._left * stride - pad, span), in_height, in_width)
            self._patches[key] = (flat, valid[..., None] if pad else None)
        return self._patches[key]

    def gather_input(self, x, kernel, stride, pad):
        """The input patches ``(n, span, span, channels)`` of every active tile, zero outside the map."""
        import tensorflow as tf

        flat, valid = self.input_index(int(x.shape[1]), int(x.shape[2]), kernel, stride, pad)
        patches = tf.gather(tf.reshape(x, (-1, int(x.shape[-1]))), flat)
        return patches if valid is None else patches * tf.cast(valid, x.dtype)

    def blend(self, y_tiles, lam):
        """``y·m + RBF(y·m)·(1 − m)`` from the active tiles ``y_tiles``, as a full ``(batch, h, w, c)`` map.

        One matmul gives every tile's RBF footprint, one summing scatter writes footprints and
        tiles into the map.
        """
        import tensorflow as tf

        t = self.tile
        channels = int(y_tiles.shape[-1])
        kept = y_tiles * self.mask_tiles
        smooth = tf.einsum("st,ntc->snc", rbf_tile_matrix(lam, t), tf.reshape(kept, (-1, t * t, channels)))
        updates = tf.concat([tf.reshape(smooth * self.fill, (-1, channels)), tf.reshape(kept, (-1, channels))], 0)
        shape = tf.stack([self.batch_size * (self.height * self.width), channels])
        out = tf.scatter_nd(self.scatter_index, updates, shape)
        return tf.reshape(out, tf.stack([self.batch_size, self.height, self.width, channels]))


def _tile_conv(layer, patches, stride):
    import tensorflow as tf

    y = tf.nn.conv2d(patches, layer.kernel, strides=stride, padding="VALID")
    return y + layer.bias if layer.use_bias else y


def sparse_masked_conv(layer, x, plan, stride, pad, dense_conv, dense_above=0.6):
    """A ``MaskedConv2D`` applied to the active tiles of ``plan`` and blended; exact on the whole map.

    Args:
        layer: the ``MaskedConv2D`` (its kernel, bias and ``rbf_lambda`` are used).
        x: input map ``(batch, H, W, channels)``.
        plan: :class:`TilePlan` at the conv's output resolution.
        stride, pad: the conv's stride and symmetric padding.
        dense_conv: callable ``() -> y`` computing the conv densely (the busy-resolution path).
        dense_above: float. Above this share of active tiles the conv runs densely.
    """
    import tensorflow as tf

    kernel = int(layer.kernel_size[0])
    plan.input_index(int(x.shape[1]), int(x.shape[2]), kernel, stride, pad)  # built outside any tf.cond branch

    def sparse():
        return plan.blend(_tile_conv(layer, plan.gather_input(x, kernel, stride, pad), stride), layer.rbf_lambda)

    def dense():
        return layer.blend(dense_conv(), plan.mask)

    if dense_above >= 1.0:
        return sparse()
    return tf.cond(plan.tile_share > dense_above, dense, sparse)

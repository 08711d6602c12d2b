"""Block-sparse masked convolution: compute the active tiles only, then blend as the paper does.

A :class:`TilePlan` is built once per masked segment and output resolution: the active tiles of
the mask (a tile is active when any of its pixels is), the flat pixel indices every convolution
needs to gather its input patches (tile plus the kernel's halo), and the flat output pixels of
the tiles. A masked convolution then costs one gather, one convolution on the batch of tiles
(for 1×1 tiles, single pixels, one matmul of the gathered ``k×k`` patches) and one
``scatter_nd`` into a zero map; the blend

    out = y·m + RBF(y·m)·(1 − m)

reads ``y`` only where ``m = 1``, all inside active tiles, so it gives exactly the dense result.
It runs as one XLA-fused pass over the map
(:func:`keras_visrec.adpc.layers.fused_rbf_interpolate`). A busy resolution (share of active
tiles above ``dense_above``) runs the convolution densely instead: same result, less overhead.

Tile side: confidence masks follow object edges, thin and spread out, so 8×8 tiles at 8 %
computed pixels are 40–90 % active, and with the halo do as much work as the dense conv.
Single pixels (``tile=1``) do only the computed pixels' work; it is the default.
"""


from keras_visrec.adpc.layers import batch_norm_affine, fused_rbf_interpolate

__all__ = ["TilePlan", "dense_pointwise_head", "sparse_masked_conv", "tile_side"]


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
    """The active tiles of one ``(batch, height, width)`` 0/1 mask, the indices every conv reuses, and the
    sparse computations on them.

    ``tile_share`` (the share of active tiles) is cheap and always there; the tile and patch indices
    are built on first use, once, so a resolution whose convolutions all run densely pays nothing
    for them.

    Args:
        mask: float tensor ``(batch, height, width)`` at the output resolution of the convolutions.
        tile: int. Wanted tile side; reduced to a power-of-two fraction dividing both sides.
    """

    def __init__(self, mask, tile=1):
        import tensorflow as tf

        self.height, self.width = int(mask.shape[1]), int(mask.shape[2])
        t = self.tile = tile_side(self.height, self.width, tile)
        self.batch_size = tf.shape(mask)[0]
        self.mask = mask[..., None]
        if t == 1:
            self._tiles = mask
        else:
            grid = tf.transpose(tf.reshape(mask, (-1, self.height // t, t, self.width // t, t)), (0, 1, 3, 2, 4))
            self._tiles = tf.reduce_max(grid, axis=(3, 4))
        self.tile_share = tf.reduce_mean(self._tiles)
        self._index = None
        self._patches = {}
        self._shapes = {}

    def _build_index(self):
        import tensorflow as tf

        if self._index is None:
            t = self.tile
            index = tf.cast(tf.where(self._tiles > 0), tf.int32)  # (n, 3): batch, tile row, tile column
            batch, top, left = index[:, 0], index[:, 1] * t, index[:, 2] * t
            centre, _ = _flat_patch(batch, _grid(top, t), _grid(left, t), self.height, self.width)
            self._index = dict(count=tf.shape(index)[0], batch=batch, top=top, left=left,
                               centre=tf.reshape(centre, (-1, 1)))  # flat output pixels of every active tile
        return self._index

    @property
    def count(self):
        """Number of active tiles."""
        return self._build_index()["count"]

    @property
    def centre_index(self):
        """``(n·t·t, 1)`` flat output pixels of the active tiles."""
        return self._build_index()["centre"]

    def input_index(self, in_height, in_width, kernel, stride, pad):
        """Flat input indices ``(n, span, span)``, clipped to the map, of a conv's input patches, and the
        patches that reach over the border: ``(rows, in-map flags (e, span, span, 1))``, or `None`."""
        import tensorflow as tf

        key = (in_height, in_width, kernel, stride, pad)
        if key not in self._patches:
            index = self._build_index()
            span = (self.tile - 1) * stride + kernel
            flat, valid = _flat_patch(index["batch"], _grid(index["top"] * stride - pad, span),
                                      _grid(index["left"] * stride - pad, span), in_height, in_width)
            edge = None
            if pad:
                rows = tf.cast(tf.where(tf.logical_not(tf.reduce_all(valid, axis=(1, 2))))[:, 0], tf.int32)
                edge = rows, tf.gather(valid, rows)[..., None]
            self._patches[key] = (flat, edge)
        return self._patches[key]

    def gather_input(self, x, kernel, stride, pad):
        """The input patches ``(n, span, span, channels)`` of every active tile, clipped to the map (see
        :meth:`input_index` for the ones that reach over the border)."""
        import tensorflow as tf

        flat, _ = self.input_index(int(x.shape[1]), int(x.shape[2]), kernel, stride, pad)
        return tf.gather(tf.reshape(x, (-1, int(x.shape[-1]))), flat)

    def scatter_shapes(self, channels):
        """The flat output shape for ``channels`` (built once)."""
        import tensorflow as tf

        if channels not in self._shapes:
            self._shapes[channels] = tf.stack([self.batch_size * (self.height * self.width), channels])
        return self._shapes[channels]

    def scatter(self, y_tiles):
        """The active tiles ``(n, t, t, c)`` written into a zero ``(batch, h, w, c)`` map."""
        import tensorflow as tf

        channels = int(y_tiles.shape[-1])
        flat = tf.scatter_nd(self.centre_index, tf.reshape(y_tiles, (-1, channels)), self.scatter_shapes(channels))
        return tf.reshape(flat, (-1, self.height, self.width, channels))

    def prepare(self, x, layer, stride, pad):
        """Builds the indices a conv of ``layer`` on ``x`` needs (call it outside any ``tf.cond`` branch)."""
        self.input_index(int(x.shape[1]), int(x.shape[2]), int(layer.kernel_size[0]), stride, pad)
        self.scatter_shapes(int(layer.filters))

    def conv(self, layer, x, stride, pad):
        """The ``MaskedConv2D`` ``layer`` on the active tiles only: exact there, zero elsewhere.

        Args:
            layer: the ``MaskedConv2D``.
            x: input map ``(batch, H, W, channels)``.
            stride, pad: the conv's stride and symmetric padding.
        """
        import tensorflow as tf

        kernel = int(layer.kernel_size[0])
        self.prepare(x, layer, stride, pad)
        patches = self.gather_input(x, kernel, stride, pad)
        y = _tile_conv(layer, patches, stride)
        _, edge = self.input_index(int(x.shape[1]), int(x.shape[2]), kernel, stride, pad)
        if edge is not None:  # the few patches over the border, again with zeros outside the map
            rows, inside = edge
            border = _tile_conv(layer, tf.gather(patches, rows) * tf.cast(inside, patches.dtype), stride)
            y = tf.tensor_scatter_nd_update(y, rows[:, None], border)
        return self.scatter(y)

    def pointwise_head(self, xs, conv, bn, classifier):
        """HRNetV2's head ``classifier(relu(bn(conv(concat(x0, up(x1), …)))))`` at the plan's pixels only.

        Every layer of the head works per pixel and the blend is the identity where ``m = 1``, so on
        the computed pixels this is the dense simulation's result without concatenating and
        upsampling whole maps (at 1/4 resolution the widest tensors of the network). Off the plan's
        pixels the output is zero, and off the mask it is not the dense simulation's: the exit copies
        the previous exit's prediction wherever the mask is 0.

        Args:
            xs: the branches, branch ``i`` at ``1 / 2**i`` of the first's resolution (the plan's).
            conv, bn, classifier: the head's 1×1 ``MaskedConv2D``, its BatchNorm, the 1×1 classifier.
        """
        import tensorflow as tf

        rows = [tf.gather(tf.reshape(xs[0], (-1, int(xs[0].shape[-1]))), self.centre_index[:, 0])]
        rows += [_upsampled_rows(x, 2 ** i, self) for i, x in enumerate(xs) if i]
        scale, offset = batch_norm_affine(bn)
        features = tf.nn.relu(_pointwise(conv, tf.concat(rows, -1)) * scale + offset)
        return self.scatter(_pointwise(classifier, features))


def _tile_conv(layer, patches, stride):
    """The ``VALID`` convolution of a batch of tile patches; 1×1 tiles (single pixels) as one matmul."""
    import tensorflow as tf

    if int(patches.shape[1]) == int(layer.kernel_size[0]):  # each patch gives one output pixel
        flat = tf.reshape(patches, (-1, int(patches.shape[1]) * int(patches.shape[2]) * int(patches.shape[3])))
        y = tf.reshape(tf.matmul(flat, tf.reshape(layer.kernel, (flat.shape[-1], -1))), (-1, 1, 1, layer.filters))
    else:
        y = tf.nn.conv2d(patches, layer.kernel, strides=stride, padding="VALID")
    return y + layer.bias if layer.use_bias else y


def sparse_masked_conv(layer, x, plan, stride, pad):
    """:meth:`TilePlan.conv`, then the blend ``y·m + RBF(y·m)·(1 − m)``: the dense simulation's result."""
    return fused_rbf_interpolate(plan.conv(layer, x, stride, pad), plan.mask, layer.rbf_lambda)


def _upsampled_rows(x, factor, plan):
    """``x`` upsampled ×``factor`` (bilinear, half-pixel centres, as keras' ``UpSampling2D``) at the
    plan's output pixels only: ``(n, channels)``."""
    import tensorflow as tf

    height, width = int(x.shape[1]), int(x.shape[2])
    pixels = plan.centre_index[:, 0]
    batch, at = pixels // (plan.height * plan.width), pixels % (plan.height * plan.width)

    def axis(out, size):
        source = tf.maximum((tf.cast(out, x.dtype) + 0.5) / factor - 0.5, 0.0)
        low = tf.minimum(tf.cast(source, tf.int32), size - 1)  # floor: source >= 0
        return low, tf.minimum(low + 1, size - 1), (source - tf.cast(low, x.dtype))[:, None]

    top, bottom, down = axis(at // plan.width, height)
    left, right, across = axis(at % plan.width, width)
    flat = tf.reshape(x, (-1, int(x.shape[-1])))
    first = batch * (height * width)

    def row(r, left_value, right_value):
        return tf.gather(flat, first + r * width + left_value) * (1.0 - across) + tf.gather(
            flat, first + r * width + right_value) * across

    return row(top, left, right) * (1.0 - down) + row(bottom, left, right) * down


def dense_pointwise_head(xs, conv, bn, classifier):
    """The same head on every pixel (unmasked): the sparse mode's dense choice for a busy final segment.

    On the pixels the final exit computes it equals the dense simulation's head (every layer works
    per pixel); elsewhere the exit copies the previous prediction.
    """
    import tensorflow as tf

    height, width = int(xs[0].shape[1]), int(xs[0].shape[2])
    maps = [xs[0]] + [tf.image.resize(x, (height, width), method="bilinear") for x in xs[1:]]
    features = tf.concat(maps, -1)
    scale, offset = batch_norm_affine(bn)
    return classifier(tf.nn.relu(conv(features) * scale + offset))


def _pointwise(layer, rows):
    """A 1×1 conv applied to ``(n, channels)`` rows (single-pixel patches of :func:`_tile_conv`)."""
    import tensorflow as tf

    return tf.reshape(_tile_conv(layer, rows[:, None, None, :], 1), (-1, layer.filters))

"""The sparse mode's computations: a convolution (or the final head) at the computed pixels only, then
the blend as the paper does it.

A :class:`TilePlan` is built once per masked segment and output resolution from the mask. It
offers three ways to compute a masked convolution, each exact on the computed pixels:

* ``"pixels"`` (tile 1): gather the ``k×k`` input patch of every computed pixel (clipped to the
  map; the few patches over the border are redone with zeros), one matmul, the rows placed into a
  zero map (:meth:`TilePlan.place`). Least waste on thin, scattered masks; moves ``k²`` input rows
  per pixel.
* ``"strips"`` (3×3 convs, tile 1): each row's runs of computed pixels with a one-pixel halo
  (:meth:`TilePlan.strips`), laid end to end into one ``(3, M)`` strip and convolved once. Three
  input rows per element instead of nine: the cheaper way once runs are longer than a few
  pixels, as confidence masks at the paper's shares are (bands a few pixels wide and blobs).
* ``"tiles"`` (tile > 1): the same gather as ``"pixels"`` on ``t×t`` tiles with their halo.

The blend

    out = y·m + RBF(y·m)·(1 − m)

reads ``y`` only where ``m = 1``, so every way gives the dense simulation's result everywhere. It
runs as one XLA-fused pass over the map (:func:`keras_visrec.adpc.layers.fused_rbf_interpolate`).
Which way (or dense) a convolution takes is decided by its executor
(:class:`keras_visrec.adpc.masking.SparseExecutor`) from measured costs
(:mod:`keras_visrec.adpc.crossover`).

Tile side: confidence masks follow object edges, thin and spread out, so 8×8 tiles at 8 %
computed pixels are 40–90 % active, and with the halo do as much work as the dense conv.
Single pixels (``tile=1``, the default) do only the computed pixels' work.

The plan's indices are built lazily, once, inside the graph that uses them: a plan belongs to one
trace (build another for another ``tf.function``), or to eager mode.
"""

from keras import ops

from keras_visrec.adpc.layers import batch_norm_affine, fused_rbf_interpolate
from keras_visrec.layers.conv import tf_conv2d

__all__ = ["KERNELS", "TilePlan", "dense_conv", "dense_pointwise_head", "sparse_masked_conv", "tile_side"]

# Version of the sparse computations below, part of the crossover table's machine signature: raise it when a
# change moves their cost, so that tables measured on the old ones are measured again.
# 2: outputs placed by a gather over the map instead of scatter_nd.
# 3: the probe also measures the blend after a conv (KindCosts.blend, for dense_fill="computed").
KERNELS = 3


def dense_conv(layer, x, stride, pad):
    """The layer applied to every pixel (explicit symmetric padding for strided convs)."""
    if stride != 1 and pad:
        x = ops.pad(x, ((0, 0), (pad, pad), (pad, pad), (0, 0)))
    return layer(x)


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
        self._outputs = {}
        self._strips = {}

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

    def output_index(self, key, centre):
        """``(batch·h·w,)`` int32, built once per ``key``: for every output pixel, 1 + the row of ``centre``
        (``(rows, 1)`` flat pixels; the index ``batch·h·w`` is a trash slot) written there, 0 where none is."""
        import tensorflow as tf

        if key not in self._outputs:
            total = self.batch_size * (self.height * self.width)
            rows = tf.range(1, tf.shape(centre)[0] + 1, dtype=tf.int32)
            self._outputs[key] = tf.scatter_nd(centre, rows, tf.reshape(total + 1, (1,)))[:total]
        return self._outputs[key]

    def place(self, rows, index):
        """``rows`` ``(n, c)`` laid into a zero ``(batch, h, w, c)`` map by an :meth:`output_index`.

        A gather over the map, not ``scatter_nd``: TensorFlow's CPU scatter runs on one thread, and the
        gather over two cores is 1.5-3x faster at the sizes of HRNet's 1/4-resolution branch.
        """
        import tensorflow as tf

        channels = int(rows.shape[-1])
        padded = tf.concat([tf.zeros((1, channels), rows.dtype), rows], 0)
        return tf.reshape(tf.gather(padded, index), (-1, self.height, self.width, channels))

    def scatter(self, y_tiles):
        """The active tiles ``(n, t, t, c)`` written into a zero ``(batch, h, w, c)`` map."""
        import tensorflow as tf

        channels = int(y_tiles.shape[-1])
        return self.place(tf.reshape(y_tiles, (-1, channels)), self.tile_output_index())

    def tile_output_index(self):
        """The :meth:`output_index` of the active tiles' pixels (``"pixels"``, ``"tiles"``, the pointwise head)."""
        return self.output_index("tiles", self.centre_index)

    def share(self, way, stride=1):
        """The share ``way`` works on: of active tiles (``"pixels"``, ``"tiles"``), or of strip elements
        per output pixel (``"strips"``, see :meth:`strips`)."""
        return self.strips(stride)["share"] if way == "strips" else self.tile_share

    def prepare(self, x, layer, stride, pad, way="pixels"):
        """Builds the indices a conv of ``layer`` on ``x`` needs ``way`` (call it outside any ``tf.cond`` branch)."""
        if way == "strips":
            self._strip_input(self.strips(stride), int(x.shape[1]), int(x.shape[2]), stride, pad)
            self._strip_output_index(stride)
        else:
            self.input_index(int(x.shape[1]), int(x.shape[2]), int(layer.kernel_size[0]), stride, pad)
            self.tile_output_index()

    def conv(self, layer, x, stride, pad, way="pixels"):
        """The ``MaskedConv2D`` ``layer`` on the computed pixels only: exact there, finite elsewhere.

        Args:
            layer: the ``MaskedConv2D``.
            x: input map ``(batch, H, W, channels)``.
            stride, pad: the conv's stride and symmetric padding.
            way: `"pixels"` / `"tiles"` (the ``k×k`` patches of every active tile, clipped to the map,
                one matmul or convolution; zero off the tiles) or `"strips"` (3×3 convs with pad 1:
                :meth:`strip_conv`). Defaults to `"pixels"`.
        """
        import tensorflow as tf

        if way == "strips":
            return self.strip_conv(layer, x, stride, pad)
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

    # --- strips: each row's runs of computed pixels, with the kernel's halo -----------------------

    def strips(self, stride):
        """The strip sequence of a 3×3 conv of ``stride`` (built once per stride).

        Every computed pixel with its right neighbour (and, for stride 1, its left one), in raster
        order, columns ``-1`` and ``width`` included: a run of ``L`` computed pixels is ``L + 2``
        consecutive elements (``L + 1`` for stride 2), so one ``VALID`` convolution over the
        elements' input columns, laid end to end, gives every computed pixel its exact output.
        Outputs centred on halo elements mix two runs: they land on pixels that are not computed
        (the blend ignores them) or, off the map, on a trash row. Three trailing dummy elements
        keep the convolution defined when nothing is computed.

        Returns:
            dict: ``batch``, ``row``, ``col`` ``(M,)`` of the elements, ``centre`` ``(M, 1)`` flat
            output index (trash: ``batch · h · w``), ``share`` (``M / (batch · h · w)``).
        """
        import tensorflow as tf

        if stride not in self._strips:
            active = tf.pad(self.mask[..., 0] > 0, [[0, 0], [0, 0], [1, 1]])  # column c at c + 1
            after = tf.pad(active[:, :, :-1], [[0, 0], [0, 0], [1, 0]])  # the element after a computed pixel
            elements = tf.logical_or(active, after)
            if stride == 1:
                elements = tf.logical_or(elements, tf.pad(active[:, :, 1:], [[0, 0], [0, 0], [0, 1]]))
            index = tf.cast(tf.where(elements), tf.int32)
            dummy = tf.constant([[0, -8, -8]] * 3, tf.int32)  # off the map on every side
            index = tf.concat([index, dummy], 0)
            batch, row, col = index[:, 0], index[:, 1], index[:, 2] - 1
            area = self.height * self.width
            total = self.batch_size * area
            inside = (row >= 0) & (col >= 0) & (col < self.width)
            centre = tf.where(inside, batch * area + row * self.width + col, total)
            count = tf.shape(index)[0] - 3
            self._strips[stride] = dict(batch=batch, row=row, col=col, centre=centre[:, None], inputs={},
                                        share=tf.cast(count, tf.float32) / tf.cast(total, tf.float32))
        return self._strips[stride]

    def _strip_input(self, strips, in_height, in_width, stride, pad):
        """Flat input indices ``(3, M·s)`` (``s``: stride) of the strip elements, clipped, and the in-map flags."""
        import tensorflow as tf

        key = (in_height, in_width, pad)
        if key not in strips["inputs"]:
            rows = strips["row"][None, :] * stride - pad + tf.range(3, dtype=tf.int32)[:, None]  # (3, M)
            # stride 1: an element is its own column (output j is centred on element j + 1); stride 2: an
            # element is the two columns left of and under its output pixel (output j is element j's)
            first = strips["col"] * stride - (pad if stride > 1 else 0)
            cols = first[:, None] + tf.range(stride, dtype=tf.int32)[None, :]  # (M, s)
            rows, cols = rows[:, :, None], cols[None]
            valid = (rows >= 0) & (rows < in_height) & (cols >= 0) & (cols < in_width)
            flat = (strips["batch"][None, :, None] * (in_height * in_width) + tf.clip_by_value(rows, 0, in_height - 1)
                    * in_width + tf.clip_by_value(cols, 0, in_width - 1))
            strips["inputs"][key] = (tf.reshape(flat, (3, -1)), tf.cast(tf.reshape(valid, (3, -1, 1)), tf.float32))
        return strips["inputs"][key]

    def strip_conv(self, layer, x, stride, pad):
        """A 3×3 ``layer`` (pad 1, stride 1 or 2) on the strips (:meth:`strips`): gathers three input rows of
        every element (two columns each for stride 2), convolves the ``(3, M·stride)`` strip once, and
        places the outputs. Exact on the computed pixels; elsewhere finite and unused."""
        import tensorflow as tf

        strips = self.strips(stride)
        flat, valid = self._strip_input(strips, int(x.shape[1]), int(x.shape[2]), stride, pad)
        rows = tf.gather(tf.reshape(x, (-1, int(x.shape[-1]))), flat) * tf.cast(valid, x.dtype)
        y = tf_conv2d(rows[None], layer.kernel, (1, stride), "VALID")[0, 0]
        if layer.use_bias:
            y = y + layer.bias
        return self.place(y, self._strip_output_index(stride))

    def _strip_output_index(self, stride):
        """The :meth:`output_index` of a strip conv's outputs: output ``j`` is centred on element ``j + 1``
        (stride 1) or ``j`` (stride 2); halo outputs land on uncomputed pixels or the trash slot."""
        centre = self.strips(stride)["centre"]
        return self.output_index(("strips", stride), centre[1:-1] if stride == 1 else centre[:-1])

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
        y = tf_conv2d(patches, layer.kernel, (stride, stride), "VALID")
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

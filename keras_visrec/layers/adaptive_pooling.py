"""Adaptive average pooling with PyTorch's bins (``nn.AdaptiveAvgPool2d``), on any input size.

Bin ``i`` of ``n`` over a side of ``L`` pixels covers ``[floor(i·L/n), ceil((i+1)·L/n))``: when
``n`` does not divide ``L`` the bins differ in size and overlap (16 pixels into 3 bins: 0–5, 5–10,
10–15), which no fixed-window pooling reproduces. PSPNet's pyramid pooling and UperNet's PPM
(bins 1, 2, 3, 6) pool this way; at a 512² input, ConvNeXt's last stage is 16², where 3 and 6
do not divide.

The layer emits what exports well (see ``keras_visrec.tflite``): one bin is a spatial ``MEAN``;
more bins are a product with a constant averaging matrix per spatial axis (``TRANSPOSE`` +
``FULLY_CONNECTED`` in TFLite), exact whether or not the bins divide the input. XNNPACK runs
these in fp32 and int8 — it has no int8 ``AVERAGE_POOL_2D`` — and the Edge TPU maps them. Inputs
with unknown height or width build the same matrix from the runtime shape with ``keras.ops``.
"""

import keras
import numpy as np
from keras import ops

__all__ = ["AdaptiveAveragePooling2D", "adaptive_pool_matrix", "adaptive_pool_bins"]


def adaptive_pool_bins(length, bins):
    """``[(start, stop), …]`` of PyTorch's adaptive pooling of ``length`` pixels into ``bins`` bins."""
    length, bins = int(length), int(bins)
    if length < 1 or bins < 1:
        raise ValueError(f"Adaptive pooling needs a positive length and bin count; received {length} and {bins}.")
    return [((i * length) // bins, -((-(i + 1) * length) // bins)) for i in range(bins)]


def adaptive_pool_matrix(length, bins, dtype="float32"):
    """The ``(bins, length)`` matrix whose row ``i`` averages the pixels of bin ``i``."""
    matrix = np.zeros((int(bins), int(length)), dtype)
    for row, (start, stop) in enumerate(adaptive_pool_bins(length, bins)):
        matrix[row, start:stop] = 1.0 / (stop - start)
    return matrix


def _dynamic_matrix(length, bins, dtype):
    """:func:`adaptive_pool_matrix` from a runtime (tensor) ``length``."""
    index = ops.arange(bins, dtype="int32")
    start = (index * length) // bins
    stop = -((-(index + 1) * length) // bins)
    pixel = ops.arange(length, dtype="int32")
    inside = ops.logical_and(pixel[None, :] >= start[:, None], pixel[None, :] < stop[:, None])
    counts = ops.cast(stop - start, dtype)
    return ops.cast(inside, dtype) / counts[:, None]


@keras.saving.register_keras_serializable(package="keras_visrec")
class AdaptiveAveragePooling2D(keras.layers.Layer):
    """Channels-last ``nn.AdaptiveAvgPool2d(output_size)``: exact for every input size.

    Args:
        output_size: int or (int, int). Bins along height and width.

    Examples:

    >>> pool = keras_visrec.layers.AdaptiveAveragePooling2D(3)
    >>> pool(np.ones((1, 16, 16, 8), "float32")).shape
    TensorShape([1, 3, 3, 8])
    """

    def __init__(self, output_size, **kwargs):
        super().__init__(**kwargs)
        size = (output_size, output_size) if isinstance(output_size, (int, np.integer)) else tuple(output_size)
        if len(size) != 2 or not all(isinstance(s, (int, np.integer)) and not isinstance(s, bool) and s >= 1
                                     for s in size):
            raise ValueError(f"`output_size` must be a positive int or a pair of them; received "
                             f"output_size={output_size!r}.")
        self.output_size = tuple(int(s) for s in size)

    def call(self, inputs):
        bins_h, bins_w = self.output_size
        height, width = inputs.shape[1], inputs.shape[2]
        if self.output_size == (1, 1):
            return ops.mean(inputs, axis=(1, 2), keepdims=True)
        dtype = inputs.dtype
        if height is not None:
            rows = ops.convert_to_tensor(adaptive_pool_matrix(height, bins_h), dtype)
        else:
            rows = _dynamic_matrix(ops.shape(inputs)[1], bins_h, dtype)
        if width is not None:
            cols = ops.convert_to_tensor(adaptive_pool_matrix(width, bins_w), dtype)
        else:
            cols = _dynamic_matrix(ops.shape(inputs)[2], bins_w, dtype)
        # (B, H, W, C) -> (B, W, C, H) @ rows^T -> (B, W, C, bins_h): a matmul with a constant right side
        x = ops.matmul(ops.transpose(inputs, (0, 2, 3, 1)), ops.transpose(rows))
        # (B, W, C, bh) -> (B, bh, C, W) @ cols^T -> (B, bh, C, bins_w) -> (B, bh, bw, C)
        x = ops.matmul(ops.transpose(x, (0, 3, 2, 1)), ops.transpose(cols))
        return ops.transpose(x, (0, 1, 3, 2))

    def compute_output_shape(self, input_shape):
        return (input_shape[0],) + self.output_size + (input_shape[-1],)

    def get_config(self):
        return {**super().get_config(), "output_size": list(self.output_size)}

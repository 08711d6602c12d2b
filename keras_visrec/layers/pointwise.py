"""A per-pixel linear layer that lets TensorFlow fuse matmul, bias and activation on CPU.

Keras' ``Dense`` on a 4-D tensor lowers to a batched matmul followed by separate bias and
activation ops. Flattening the pixels to a 2-D matmul lets TensorFlow's oneDNN graph rewrite
fuse MatMul + BiasAdd + GELU into one kernel (about 2× faster for ConvNeXt's MLP on CPU). The
weights are exactly a ``Dense`` layer's (``kernel`` of shape (C_in, C_out), ``bias``).

That fusion only exists for inference: a training step must keep the pre-activation for the
gradient. While training on TensorFlow (float32, or bfloat16 / float16 under a mixed policy), an
exact-GELU activation therefore runs as ``keras_visrec.layers.fused.gelu`` (forward and backward
one XLA kernel each, in float32) after the MatMul + BiasAdd.
"""

import keras

from keras_visrec.layers import fused

__all__ = ["PointwiseDense"]


@keras.saving.register_keras_serializable(package="keras_visrec")
class PointwiseDense(keras.layers.Dense):
    """``Dense`` over the last axis of a tensor of any rank, computed as one 2-D matmul."""

    def call(self, inputs, training=None):
        if len(inputs.shape) <= 2:
            return super().call(inputs, training=training)
        ops = keras.ops
        leading = ops.shape(inputs)[:-1]
        flat = ops.reshape(inputs, (-1, inputs.shape[-1]))
        if self._fuses_gelu(training, flat.dtype):
            outputs = ops.matmul(flat, self.kernel)
            if self.bias is not None:
                outputs = ops.add(outputs, self.bias)
            outputs = fused.gelu(outputs)
        else:
            outputs = super().call(flat, training=training)
        return ops.reshape(outputs, tuple(leading) + (self.units,))

    def _fuses_gelu(self, training, dtype):
        """Whether this call takes the fused training GELU (a plain exact-GELU layer)."""
        return (self.activation is keras.activations.gelu and self.quantization_mode is None
                and not self.lora_enabled and fused.fused_enabled(training, dtype, half=True))

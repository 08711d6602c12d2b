"""BatchNormalization whose training step is one fused kernel on TensorFlow.

Keras 3's ``BatchNormalization`` computes the batch moments, the normalisation and their
gradients as separate ops (about 36 forward ops and as many backward per layer on TensorFlow);
in HRNet, ADP-C, UperNet's head and the CIFAR nets those small ops, not the arithmetic, dominate
a CPU training step and the time to trace it. On TensorFlow, in training, for channels-last
float32 inputs, this layer runs TensorFlow's ``FusedBatchNormV3`` (and its fused gradient)
instead and updates the moving statistics exactly as Keras does (the biased batch variance,
Keras's momentum). Everything else — inference, other backends, masks, renorm, synchronized
BN, mixed precision, ``KERAS_VISREC_FUSED_TRAINING=0`` — is Keras's own code. Weights, names
and config are Keras's: a model saved with it reloads, and checkpoints map, as before.
"""

import keras

from keras_visrec.layers import fused

__all__ = ["BatchNorm"]


@keras.saving.register_keras_serializable(package="keras_visrec")
class BatchNorm(keras.layers.BatchNormalization):
    """``keras.layers.BatchNormalization`` with a fused TensorFlow training path (same arguments)."""

    def _fuses(self, inputs, training, mask):
        rank = len(inputs.shape)
        return (mask is None and rank == 4 and self.axis in (-1, rank - 1) and not self.renorm
                and not getattr(self, "synchronized", False)
                and fused.fused_enabled(training and self.trainable, inputs.dtype))

    def call(self, inputs, training=None, mask=None):
        if not self._fuses(inputs, training, mask):
            return super().call(inputs, training=training, mask=mask)
        import tensorflow as tf

        channels = int(inputs.shape[-1])
        gamma = tf.convert_to_tensor(self.gamma) if self.scale else tf.ones((channels,), inputs.dtype)
        beta = tf.convert_to_tensor(self.beta) if self.center else tf.zeros((channels,), inputs.dtype)
        empty = tf.constant([], inputs.dtype)
        outputs, mean, corrected, *_ = tf.raw_ops.FusedBatchNormV3(
            x=inputs, scale=gamma, offset=beta, mean=empty, variance=empty, epsilon=self.epsilon,
            exponential_avg_factor=1.0, data_format="NHWC", is_training=True)
        # the kernel returns the Bessel-corrected variance; Keras averages the biased one
        count = tf.cast(tf.size(inputs) // channels, inputs.dtype)
        variance = corrected * tf.maximum(count - 1.0, 1.0) / tf.maximum(count, 1.0)
        self.moving_mean.assign(self.moving_mean * self.momentum + mean * (1.0 - self.momentum))
        self.moving_variance.assign(self.moving_variance * self.momentum + variance * (1.0 - self.momentum))
        return outputs

"""Global Response Normalization (GRN), the block addition of ConvNeXt V2.

Woo et al., "ConvNeXt V2: Co-designing and Scaling ConvNets with Masked Autoencoders", 2023.
"""

import keras

__all__ = ["GRN"]


@keras.saving.register_keras_serializable(package="keras_visrec")
class GRN(keras.layers.Layer):
    """Channels-last GRN: ``y = gamma * (x * Nx) + beta + x``.

    ``Gx`` is the L2 norm of each channel over the spatial axes and ``Nx = Gx / (mean_C(Gx) +
    epsilon)``; ``gamma`` and ``beta`` start at zero so the layer starts as an identity.

    Args:
        epsilon: float. Added to the channel mean of ``Gx``. Defaults to `1e-6`.
    """

    def __init__(self, epsilon=1e-6, **kwargs):
        super().__init__(**kwargs)
        self.epsilon = float(epsilon)

    def build(self, input_shape):
        channels = input_shape[-1]
        self.gamma = self.add_weight(name="gamma", shape=(channels,), initializer="zeros")
        self.beta = self.add_weight(name="beta", shape=(channels,), initializer="zeros")

    def call(self, inputs):
        ops = keras.ops
        x32 = ops.cast(inputs, "float32")
        spatial_axes = tuple(range(1, len(inputs.shape) - 1))
        gx = ops.sqrt(ops.sum(ops.square(x32), axis=spatial_axes, keepdims=True))
        nx = gx / (ops.mean(gx, axis=-1, keepdims=True) + self.epsilon)
        nx = ops.cast(nx, inputs.dtype)
        gamma = ops.cast(self.gamma, inputs.dtype)
        beta = ops.cast(self.beta, inputs.dtype)
        return gamma * (inputs * nx) + beta + inputs

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "epsilon": self.epsilon}

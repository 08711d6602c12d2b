"""Layer scale: a learnable per-channel multiplier on a residual branch.

Touvron et al., "Going deeper with Image Transformers" (CaiT), 2021; used by ConvNeXt with an
initial value of 1e-6 so that every block starts close to an identity.
"""

import keras

__all__ = ["LayerScale"]


@keras.saving.register_keras_serializable(package="keras_visrec")
class LayerScale(keras.layers.Layer):
    """Multiplies the last axis by a learnable vector ``gamma``.

    Args:
        init_value: float. Initial value of every entry of ``gamma``. Defaults to `1e-6`.
    """

    def __init__(self, init_value=1e-6, **kwargs):
        super().__init__(**kwargs)
        self.init_value = float(init_value)

    def build(self, input_shape):
        self.gamma = self.add_weight(
            name="gamma",
            shape=(input_shape[-1],),
            initializer=keras.initializers.Constant(self.init_value),
            trainable=True,
        )

    def call(self, inputs):
        return inputs * keras.ops.cast(self.gamma, inputs.dtype)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "init_value": self.init_value}

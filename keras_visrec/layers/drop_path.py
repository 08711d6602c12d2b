"""Stochastic depth ("drop path"): drop a whole residual branch per sample while training.

Huang et al., "Deep Networks with Stochastic Depth", ECCV 2016. Identity at inference.
"""

import keras

__all__ = ["StochasticDepth"]


@keras.saving.register_keras_serializable(package="keras_visrec")
class StochasticDepth(keras.layers.Layer):
    """Zeroes a residual branch for a random subset of samples, rescaling the rest.

    Applied to the branch *before* the residual addition: with probability ``rate`` a sample's
    branch output becomes zero, otherwise it is divided by ``1 - rate`` so its expectation holds.

    Args:
        rate: float in [0, 1). Probability of dropping the branch. Defaults to `0.0`.
        seed: int or None. Seed of the layer's random generator. Defaults to `None`.
    """

    def __init__(self, rate=0.0, seed=None, **kwargs):
        super().__init__(**kwargs)
        rate = float(rate)
        if not 0.0 <= rate < 1.0:
            raise ValueError(f"StochasticDepth `rate` must be in [0, 1); received rate={rate}.")
        self.rate = rate
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed) if rate > 0 else None

    def call(self, inputs, training=None):
        if not training or self.rate == 0.0:
            return inputs
        keep = 1.0 - self.rate
        batch = keras.ops.shape(inputs)[0]
        noise_shape = (batch,) + (1,) * (len(inputs.shape) - 1)
        draw = keras.random.uniform(noise_shape, seed=self.seed_generator, dtype="float32")
        mask = keras.ops.cast(keras.ops.floor(keep + draw) / keep, inputs.dtype)
        return inputs * mask

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "rate": self.rate, "seed": self.seed}

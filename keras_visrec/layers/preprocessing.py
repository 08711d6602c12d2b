"""In-model ImageNet normalisation of 0–255 RGB input (keras.applications' `include_preprocessing`)."""

import keras
import numpy as np

__all__ = ["IMAGENET_MEAN", "IMAGENET_STD", "ImageNetNormalization"]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@keras.saving.register_keras_serializable(package="keras_visrec")
class ImageNetNormalization(keras.layers.Layer):
    """Maps 0–255 RGB pixels to ``(x / 255 - mean) / std`` per channel.

    Args:
        mean: 3 floats. Channel means on the 0–1 scale. Defaults to ImageNet's.
        std: 3 floats. Channel standard deviations on the 0–1 scale. Defaults to ImageNet's.
    """

    def __init__(self, mean=IMAGENET_MEAN, std=IMAGENET_STD, **kwargs):
        super().__init__(**kwargs)
        self.mean = tuple(float(m) for m in mean)
        self.std = tuple(float(s) for s in std)
        if len(self.mean) != len(self.std):
            raise ValueError(f"`mean` and `std` need the same length; received {self.mean} and {self.std}.")

    @property
    def scale_and_offset(self):
        """Per-channel ``(scale, offset)`` with ``y = x * scale + offset`` (used by export folds)."""
        std = np.asarray(self.std, "float32")
        mean = np.asarray(self.mean, "float32")
        return 1.0 / (255.0 * std), -mean / std

    def call(self, inputs):
        scale, offset = self.scale_and_offset
        x = keras.ops.cast(inputs, self.compute_dtype)
        return x * keras.ops.cast(scale, x.dtype) + keras.ops.cast(offset, x.dtype)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "mean": list(self.mean), "std": list(self.std)}

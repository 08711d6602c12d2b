"""GELU in the three forms the project needs: exact (erf), tanh, and an export-safe tanh.

Hendrycks & Gimpel, "Gaussian Error Linear Units", 2016. The TFLite converter fuses both the
exact and the ``pow``-based tanh form into its builtin GELU op, which the Edge TPU compiler
rejects; the ``tanh_cubic`` form writes ``x**3`` as ``x*x*x`` so it stays as MUL/ADD/TANH ops
(max error against the exact form about 5e-4).
"""

import math

import keras

__all__ = ["GELU", "GELU_FORMS", "gelu_tanh", "gelu_tanh_cubic"]

GELU_FORMS = ("exact", "tanh", "tanh_cubic")
_SQRT_2_OVER_PI = math.sqrt(2.0 / math.pi)


@keras.saving.register_keras_serializable(package="keras_visrec")
def gelu_tanh(x):
    """GELU, tanh approximation (may be fused by the TFLite converter)."""
    return keras.activations.gelu(x, approximate=True)


@keras.saving.register_keras_serializable(package="keras_visrec")
def gelu_tanh_cubic(x):
    """GELU, tanh approximation written with ``x*x*x`` so TFLite keeps it as MUL/ADD/TANH."""
    inner = _SQRT_2_OVER_PI * (x + 0.044715 * (x * x * x))
    return 0.5 * x * (1.0 + keras.ops.tanh(inner))


@keras.saving.register_keras_serializable(package="keras_visrec")
class GELU(keras.layers.Layer):
    """Gaussian error linear unit.

    Args:
        form: str. One of `"exact"` (erf, as PyTorch's default), `"tanh"` (the tanh
            approximation), `"tanh_cubic"` (the tanh approximation written without ``pow`` so
            TFLite keeps it off the fused GELU op). Defaults to `"exact"`.
    """

    def __init__(self, form="exact", **kwargs):
        super().__init__(**kwargs)
        if form not in GELU_FORMS:
            raise ValueError(f"GELU `form` must be one of {GELU_FORMS}; received form={form!r}.")
        self.form = form

    def call(self, inputs):
        if self.form == "exact":
            return keras.activations.gelu(inputs, approximate=False)
        if self.form == "tanh":
            return keras.activations.gelu(inputs, approximate=True)
        return gelu_tanh_cubic(inputs)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "form": self.form}

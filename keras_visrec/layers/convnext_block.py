"""The ConvNeXt block (V1 with layer scale, V2 with GRN) as one reusable layer.

Liu et al., "A ConvNet for the 2020s", CVPR 2022; Woo et al., "ConvNeXt V2", CVPR 2023.
``keras_visrec.convnext`` builds the same sequence as flat, individually named layers (so
converters, pruning and exporters can address every weight); this layer packages it for users
who compose their own networks.
"""

import keras

from keras_visrec.layers.conv import DepthwiseConv2D
from keras_visrec.layers.drop_path import StochasticDepth
from keras_visrec.layers.exportable import make_pointwise
from keras_visrec.layers.grn import GRN
from keras_visrec.layers.layer_norm import LayerNorm
from keras_visrec.layers.layer_scale import LayerScale

__all__ = ["ConvNeXtBlock", "conv_init"]

def conv_init():
    """Official ConvNeXt init: truncated normal (std 0.02) weights, zero biases.

    A fresh initializer per layer: one shared unseeded Keras initializer instance gives every
    layer of the same shape the same initial weights.
    """
    return {"kernel_initializer": keras.initializers.TruncatedNormal(stddev=0.02), "bias_initializer": "zeros"}


@keras.saving.register_keras_serializable(package="keras_visrec")
class ConvNeXtBlock(keras.layers.Layer):
    """7×7 depthwise conv → LayerNorm → Linear(4C) → GELU [→ GRN] → Linear(C) [→ ×gamma] → drop path → + x.

    Args:
        mlp_ratio: float. Hidden width of the MLP as a multiple of the input channels.
            Defaults to `4.0`.
        kernel_size: int. Depthwise kernel size. Defaults to `7`.
        layer_scale_init_value: float or None. Initial layer scale; `None` or `0` disables it.
            Defaults to `1e-6`.
        use_grn: bool. Add ConvNeXt V2's GRN after GELU. Defaults to `False`.
        drop_path_rate: float in [0, 1). Stochastic depth rate. Defaults to `0.0`.
        hidden_dim: int or None. Explicit MLP hidden width (overrides `mlp_ratio`; used by
            pruned models). Defaults to `None`.

    Examples:

    >>> block = ConvNeXtBlock()
    >>> block(keras.ops.zeros((1, 8, 8, 16))).shape
    (1, 8, 8, 16)
    """

    def __init__(
        self,
        mlp_ratio=4.0,
        kernel_size=7,
        layer_scale_init_value=1e-6,
        use_grn=False,
        drop_path_rate=0.0,
        hidden_dim=None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.mlp_ratio = float(mlp_ratio)
        self.kernel_size = int(kernel_size)
        self.layer_scale_init_value = layer_scale_init_value
        self.use_grn = bool(use_grn)
        self.drop_path_rate = float(drop_path_rate)
        self.hidden_dim = hidden_dim
        self.depthwise_conv = DepthwiseConv2D(
            self.kernel_size, padding="same", name="depthwise_conv",
            depthwise_initializer=conv_init()["kernel_initializer"], bias_initializer="zeros",
        )
        self.layernorm = LayerNorm(epsilon=1e-6, name="layernorm")
        self.grn = GRN(name="grn") if self.use_grn else None
        self.layer_scale = LayerScale(layer_scale_init_value, name="layer_scale") if layer_scale_init_value else None
        self.drop_path = StochasticDepth(self.drop_path_rate, name="drop_path")

    def build(self, input_shape):
        channels = input_shape[-1]
        hidden = self.hidden_dim or int(round(self.mlp_ratio * channels))
        self.pointwise_conv_1 = make_pointwise(hidden, name="pointwise_conv_1", activation="gelu", **conv_init())
        self.pointwise_conv_2 = make_pointwise(channels, name="pointwise_conv_2", **conv_init())
        shape = tuple(input_shape)
        self.depthwise_conv.build(shape)
        self.layernorm.build(shape)
        self.pointwise_conv_1.build(shape)
        hidden_shape = shape[:-1] + (hidden,)
        if self.grn is not None:
            self.grn.build(hidden_shape)
        self.pointwise_conv_2.build(hidden_shape)
        if self.layer_scale is not None:
            self.layer_scale.build(shape)

    def call(self, inputs, training=None):
        x = self.depthwise_conv(inputs)
        x = self.layernorm(x)
        x = self.pointwise_conv_1(x)  # GELU fused in
        if self.grn is not None:
            x = self.grn(x)
        x = self.pointwise_conv_2(x)
        if self.layer_scale is not None:
            x = self.layer_scale(x)
        return inputs + self.drop_path(x, training=training)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {
            **super().get_config(),
            "mlp_ratio": self.mlp_ratio,
            "kernel_size": self.kernel_size,
            "layer_scale_init_value": self.layer_scale_init_value,
            "use_grn": self.use_grn,
            "drop_path_rate": self.drop_path_rate,
            "hidden_dim": self.hidden_dim,
        }

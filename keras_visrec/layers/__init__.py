"""Building blocks shared by the model families, one idea per file.

Every layer here is registered for Keras serialization under the ``keras_visrec``
package name, so models that use them reload with ``keras.models.load_model``
without ``custom_objects``.
"""

from keras_visrec.layers.activation import GELU, gelu_tanh, gelu_tanh_cubic
from keras_visrec.layers.batch_norm import BatchNorm
from keras_visrec.layers.conv import Conv2D, DepthwiseConv2D
from keras_visrec.layers.adaptive_pooling import AdaptiveAveragePooling2D
from keras_visrec.layers.convnext_block import ConvNeXtBlock
from keras_visrec.layers.drop_path import StochasticDepth
from keras_visrec.layers.exportable import exportable, gelu_form, is_exportable, make_gelu, make_pointwise, set_exportable
from keras_visrec.layers.fused import fused_training
from keras_visrec.layers.grn import GRN
from keras_visrec.layers.layer_norm import LayerNorm
from keras_visrec.layers.layer_scale import LayerScale
from keras_visrec.layers.pointwise import PointwiseDense
from keras_visrec.layers.preprocessing import ImageNetNormalization
from keras_visrec.layers.resize import Resize

__all__ = [
    "AdaptiveAveragePooling2D",
    "BatchNorm",
    "Conv2D",
    "ConvNeXtBlock",
    "DepthwiseConv2D",
    "GELU",
    "GRN",
    "ImageNetNormalization",
    "LayerNorm",
    "LayerScale",
    "PointwiseDense",
    "Resize",
    "StochasticDepth",
    "exportable",
    "fused_training",
    "gelu_form",
    "gelu_tanh",
    "gelu_tanh_cubic",
    "is_exportable",
    "make_gelu",
    "make_pointwise",
    "set_exportable",
]

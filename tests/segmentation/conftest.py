"""Shared pieces of the segmentation tests: a small stand-in segmenter with UperNet's output contract."""

import keras
import pytest

from keras_visrec.convnext import ConvNeXt

TINY_BACKBONE = dict(depths=(1, 1, 1, 1), dims=(8, 16, 32, 64))


def standin_segmenter(classes=11, input_shape=(64, 64, 3), auxiliary=True, drop_path_rate=0.0, channels=16,
                      name="standin"):
    """A small FPN head on a nested tiny ConvNeXt: ``[logits (1/4), aux_logits (1/16)]`` like UperNet.

    Stands in for ``keras_visrec.UperNet`` in pipeline / inference unit tests (same inputs, outputs
    and backbone layer names); the training task of the CI uses the real UperNet.
    """
    backbone = ConvNeXt(**TINY_BACKBONE, include_top=False, features_only=True, input_shape=input_shape,
                        drop_path_rate=drop_path_rate, name="convnext")
    inputs = keras.Input(input_shape)
    features = backbone(inputs)
    lateral = [keras.layers.Conv2D(channels, 1, name=f"{name}_lateral_{i}")(f) for i, f in enumerate(features)]
    x = lateral[3]
    for i in (2, 1, 0):
        x = keras.layers.UpSampling2D(2, interpolation="bilinear", name=f"{name}_up_{i}")(x)
        x = keras.layers.Add(name=f"{name}_add_{i}")([x, lateral[i]])
    x = keras.layers.Conv2D(channels, 3, padding="same", activation="relu", name=f"{name}_fuse")(x)
    logits = keras.layers.Conv2D(classes, 1, name=f"{name}_classifier")(x)
    if not auxiliary:
        return keras.Model(inputs, logits, name=name)
    aux = keras.layers.Conv2D(channels, 3, padding="same", activation="relu", name=f"{name}_aux_conv")(features[2])
    aux = keras.layers.Conv2D(classes, 1, name=f"{name}_aux_classifier")(aux)
    return keras.Model(inputs, [logits, aux], name=name)


@pytest.fixture
def standin():
    return standin_segmenter

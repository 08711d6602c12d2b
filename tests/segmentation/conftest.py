"""Shared pieces of the segmentation tests: a small segmenter with a *nested* backbone, ADE20K-format folders."""

import os

import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_visrec.convnext import ConvNeXt

TINY_BACKBONE = dict(depths=(1, 1, 1, 1), dims=(8, 16, 32, 64))


def standin_segmenter(classes=11, input_shape=(64, 64, 3), auxiliary=True, drop_path_rate=0.0, channels=16,
                      name="standin"):
    """A small FPN head on a tiny ConvNeXt nested as a sub-model: ``[logits (1/4), aux_logits]`` like UperNet.

    UperNet builds its backbone flat; this model checks that the stage-wise decay and inference also
    handle a backbone nested as one layer. Every other test uses ``keras_visrec.UperNet``.
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


def write_image(path, array, kind):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    data = tf.io.encode_jpeg(array, quality=95) if kind == "jpg" else tf.io.encode_png(array)
    tf.io.write_file(path, data)


def make_ade20k(root, sizes=((24, 40), (32, 28), (20, 20)), split="validation", bad=None):
    """ADEChallengeData2016 in miniature: JPEG images, 8-bit PNG label maps with 0 = other and 1..150."""
    rng = np.random.default_rng(len(sizes))
    labels = []
    for i, (h, w) in enumerate(sizes):
        stem = f"ADE_{'val' if split == 'validation' else 'train'}_{i + 1:08d}"
        write_image(os.path.join(root, "images", split, stem + ".jpg"),
                    rng.integers(0, 255, (h, w, 3), dtype=np.uint8), "jpg")
        label = rng.integers(0, 151, (h, w), dtype=np.uint8)
        if bad is not None and i == len(sizes) - 1:
            label[0, 0] = bad
        write_image(os.path.join(root, "annotations", split, stem + ".png"), label[..., None], "png")
        labels.append(label)
    return labels


@pytest.fixture(name="make_ade20k")
def _make_ade20k_fixture():
    return make_ade20k


@pytest.fixture(name="write_image")
def _write_image_fixture():
    return write_image

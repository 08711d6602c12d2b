"""Whole / slide / flip / multi-scale inference against mmseg's rules, on models whose outputs are known."""

import keras
import numpy as np
import pytest

from keras_visrec.segmentation.inference import (MULTI_SCALE_RATIOS, InferenceSettings, inference_model,
                                                 predict_labels, segment, slide_windows)


def _pointwise(input_shape=(32, 32, 3), classes=4):
    """Logits a fixed linear function of each pixel: any window placement gives the same per-pixel logits."""
    inputs = keras.Input(input_shape)
    conv = keras.layers.Conv2D(classes, 1, name="pointwise")
    outputs = conv(inputs)
    conv.set_weights([np.random.default_rng(0).normal(0, 0.02, (1, 1, 3, classes)).astype("float32"),
                      np.zeros(classes, "float32")])
    return keras.Model(inputs, outputs)


def _window_mean(input_shape=(32, 32, 3)):
    """Logits = the window's mean colour everywhere: windows differ, so averaging shows."""
    inputs = keras.Input(input_shape)
    mean = keras.layers.GlobalAveragePooling2D(keepdims=True)(inputs)
    outputs = keras.layers.UpSampling2D(input_shape[:2])(mean)
    return keras.Model(inputs, outputs)


def _softmax(z):
    z = z - z.max(-1, keepdims=True)
    return np.exp(z) / np.exp(z).sum(-1, keepdims=True)


def test_slide_windows_follow_mmseg():
    # ADE20K's 512 crop, 341 stride on a 512 × 683 image: two columns, the last pulled back to the border
    assert slide_windows(512, 683, (512, 512), (341, 341)) == [(0, 512, 0, 512), (0, 512, 171, 683)]
    # 2048 wide: ceil((2048 − 512) / 341) + 1 = 6 columns, starts 0, 341, 682, 1023, 1364 and 1536
    starts = [w[2] for w in slide_windows(512, 2048, (512, 512), (341, 341))]
    assert starts == [0, 341, 682, 1023, 1364, 1536]
    # smaller than the crop: one window, the whole image
    assert slide_windows(300, 200, (512, 512), (341, 341)) == [(0, 300, 0, 200)]


def test_slide_equals_whole_for_a_pointwise_model_with_padding():
    image = np.random.default_rng(1).uniform(0, 255, (45, 70, 3)).astype("float32")
    big = _pointwise((None, None, 3))
    whole = segment(big, image, mode="whole")
    expected = _softmax(image @ big.get_layer("pointwise").get_weights()[0][0, 0])
    np.testing.assert_allclose(whole, expected, atol=1e-5)
    # a static 32×32 model: 45×70 in windows of 32 every 21, bottom windows pulled back
    static = _pointwise((32, 32, 3))
    static.set_weights(big.get_weights())
    np.testing.assert_allclose(segment(static, image, mode="slide", stride=21), expected, atol=1e-5)
    # an image smaller than the static input: padded, the padding cut off again
    np.testing.assert_allclose(segment(static, image[:20, :25], mode="whole"), expected[:20, :25], atol=1e-5)
    np.testing.assert_allclose(segment(static, image[:20], mode="slide"), expected[:20], atol=1e-5)


def test_overlapping_window_logits_are_averaged():
    image = np.random.default_rng(2).uniform(0, 255, (40, 50, 3)).astype("float32")
    model = _window_mean((32, 32, 3))
    summed = np.zeros((40, 50, 3))
    count = np.zeros((40, 50, 1))
    for y1 in (0, 8):  # rows: starts 0, then min(20 + 32, 40) − 32 = 8
        for x1 in (0, 18):  # columns: 0, then 50 − 32 = 18
            summed[y1:y1 + 32, x1:x1 + 32] += image[y1:y1 + 32, x1:x1 + 32].mean((0, 1))
            count[y1:y1 + 32, x1:x1 + 32] += 1
    expected = _softmax(summed / count)
    np.testing.assert_allclose(segment(model, image, mode="slide", stride=20), expected, atol=1e-5)


def test_flip_and_multi_scale_average_probabilities():
    rng = np.random.default_rng(3)
    image = rng.uniform(0, 255, (24, 36, 3)).astype("float32")
    inputs = keras.Input((None, None, 3))
    conv = keras.layers.Conv2D(3, 3, padding="same", use_bias=False)  # not flip-equivariant
    model = keras.Model(inputs, conv(inputs))
    conv.set_weights([rng.normal(0, 0.01, (3, 3, 3, 3)).astype("float32")])

    def logits(x):
        return np.asarray(model.predict_on_batch(x[None]))[0]

    plain = _softmax(logits(image))
    flipped = _softmax(logits(image[:, ::-1]))[:, ::-1]
    np.testing.assert_allclose(segment(model, image, flip=True), (plain + flipped) / 2, atol=1e-5)
    # ratio 0.5 without a scale: 12×18, logits resized back bilinearly (half-pixel)
    half = keras.ops.image.resize(image, (12, 18), interpolation="bilinear", antialias=False)
    half_logits = keras.ops.image.resize(logits(np.asarray(half)), (24, 36), interpolation="bilinear",
                                         antialias=False)
    expected = (plain + _softmax(np.asarray(half_logits))) / 2
    np.testing.assert_allclose(segment(model, image, ratios=(1.0, 0.5)), expected, atol=1e-5)
    labels = predict_labels(model, image, ratios=(1.0, 0.5))
    np.testing.assert_array_equal(labels, expected.argmax(-1))
    assert MULTI_SCALE_RATIOS == (0.5, 0.75, 1.0, 1.25, 1.5, 1.75)


def test_training_model_uses_its_first_output(standin):
    model = standin(classes=5, input_shape=(32, 32, 3))
    net = inference_model(model)
    assert len(net.outputs) == 1 and net.count_params() < model.count_params()
    image = np.random.default_rng(4).uniform(0, 255, (32, 32, 3)).astype("float32")
    np.testing.assert_allclose(segment(model, image), segment(net, image), atol=1e-6)
    assert segment(net, image).shape == (32, 32, 5)  # 1/4-resolution logits upsampled to the image


def test_bad_settings_name_the_argument():
    static = _pointwise((32, 32, 3))
    image = np.zeros((40, 40, 3), "float32")
    with pytest.raises(ValueError, match=r"`mode` must be one of \('whole', 'slide'\); received mode='sliding'"):
        segment(static, image, mode="sliding")
    with pytest.raises(ValueError, match=r"`crop_size` \(48, 48\) does not fit the input"):
        segment(static, image, mode="slide", crop_size=48)
    with pytest.raises(ValueError, match=r"`stride` \(40, 40\) must not exceed `crop_size` \(32, 32\)"):
        segment(static, image, mode="slide", stride=40)
    with pytest.raises(ValueError, match="does not fit the static 32×32 input"):
        segment(static, image, mode="whole")
    with pytest.raises(ValueError, match="`crop_size` is needed"):
        segment(_pointwise((None, None, 3)), image, mode="slide")
    with pytest.raises(ValueError, match="settings of mode='slide'"):
        InferenceSettings.for_model(static, mode="whole", stride=8)
    with pytest.raises(ValueError, match="`ratios`"):
        segment(static, image[:32, :32], ratios=(1.0, 0.0))
    with pytest.raises(ValueError, match="`image` must be one RGB image"):
        segment(static, image[None])

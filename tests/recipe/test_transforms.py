"""The evaluation transform against a PIL/torchvision-style reference written here, and PIL itself."""

import io

import numpy as np
import pytest
import tensorflow as tf

from keras_visrec.recipe.transforms import (
    EvalTransform,
    center_crop,
    decode_image,
    eval_resize_size,
    eval_transform,
    resize_bicubic_pil,
)

MEAN = np.array([0.485, 0.456, 0.406], np.float32)
STD = np.array([0.229, 0.224, 0.225], np.float32)


# --- reference: PIL's 8-bit convolution resampling, written plainly ---------------------------

def _keys_cubic(x, a=-0.5):
    x = abs(x)
    if x < 1.0:
        return ((a + 2.0) * x - (a + 3.0)) * x * x + 1
    if x < 2.0:
        return (((x - 5) * x + 8) * x - 4) * a
    return 0.0


def _reference_weights(in_size, out_size):
    """Per output index: (first source index, list of 22-bit fixed-point integer weights)."""
    scale = in_size / out_size
    filter_scale = max(scale, 1.0)
    support = 2.0 * filter_scale
    rows = []
    for out in range(out_size):
        centre = (out + 0.5) * scale
        first = max(int(centre - support + 0.5), 0)
        stop = min(int(centre + support + 0.5), in_size)
        weights = [_keys_cubic((x + first - centre + 0.5) * (1.0 / filter_scale)) for x in range(stop - first)]
        total = 0.0
        for w in weights:
            total += w
        weights = [w / total for w in weights] if total != 0.0 else weights
        fixed = [int(w * (1 << 22) + 0.5) if w >= 0 else int(w * (1 << 22) - 0.5) for w in weights]
        rows.append((first, fixed))
    return rows


def _reference_pass(image, out_size, axis):
    """One pass over ``axis`` (0: rows/vertical, 1: columns/horizontal) of an int (h, w, c) array."""
    moved = np.moveaxis(image.astype(np.int64), axis, 0)
    out = np.empty((out_size,) + moved.shape[1:], np.int64)
    for index, (first, fixed) in enumerate(_reference_weights(moved.shape[0], out_size)):
        acc = np.full(moved.shape[1:], 1 << 21, np.int64)
        for k, w in enumerate(fixed):
            acc += moved[first + k] * w
        out[index] = np.clip(acc >> 22, 0, 255)
    return np.moveaxis(out, 0, axis).astype(np.uint8)


def reference_resize(image, size, vertical_first=False):
    height, width = size
    if vertical_first:
        return _reference_pass(_reference_pass(image, height, 0), width, 1)
    return _reference_pass(_reference_pass(image, width, 1), height, 0)


def reference_eval(image, image_size=224, crop_pct=0.875):
    """torchvision's Resize(int(size / crop_pct)) + CenterCrop + ToTensor + Normalize (or squash at 384)."""
    h, w = image.shape[:2]
    if image_size >= 384:
        out = reference_resize(image, (image_size, image_size))
    else:
        short_target = int(image_size / crop_pct)
        if w <= h:
            size = (int(short_target * h / w), short_target)
        else:
            size = (short_target, int(short_target * w / h))
        out = reference_resize(image, size)
        top = int(round((out.shape[0] - image_size) / 2.0))
        left = int(round((out.shape[1] - image_size) / 2.0))
        out = out[top:top + image_size, left:left + image_size]
    return (out.astype(np.float32) / 255.0 - MEAN) / STD


def _natural_image(h, w, seed=0):
    """A smooth image with edges (closer to photos than white noise)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    base = 128 + 90 * np.sin(xx / (3 + 7 * rng.random())) * np.cos(yy / (4 + 9 * rng.random()))
    image = np.stack([base, np.roll(base, 5, 0), 255 - base], -1) + rng.normal(0, 12, (h, w, 3))
    image[h // 3: h // 2, w // 4: w // 2] = [250, 20, 40]
    return np.clip(image, 0, 255).astype(np.uint8)


SIZES = [((300, 400), (256, 341)), ((500, 375), (341, 256)), ((37, 53), (256, 366)), ((64, 64), (7, 9)),
         ((97, 1203), (384, 384)), ((400, 300), (384, 384)), ((1000, 300), (853, 256))]


@pytest.mark.parametrize("shape,size", SIZES)
def test_resize_matches_reference_exactly(shape, size):
    image = np.random.default_rng(1).integers(0, 256, shape + (3,), dtype=np.uint8)  # noise: worst case
    got = resize_bicubic_pil(tf.constant(image), size).numpy()
    np.testing.assert_array_equal(got, reference_resize(image, size))
    got13 = resize_bicubic_pil(tf.constant(image), size, pass_order="pillow13").numpy()
    shrink_h, shrink_w = shape[0] - size[0], shape[1] - size[1]
    vertical_first = shrink_h > 0 and shrink_h > 2 * shrink_w
    np.testing.assert_array_equal(got13, reference_resize(image, size, vertical_first))


def test_resize_matches_installed_pillow():
    Image = pytest.importorskip("PIL.Image")
    import PIL

    order = "pillow13" if int(PIL.__version__.split(".")[0]) >= 13 else "horizontal_first"
    for shape, size in SIZES:
        image = np.random.default_rng(2).integers(0, 256, shape + (3,), dtype=np.uint8)
        expected = np.asarray(Image.fromarray(image).resize(size[::-1], Image.BICUBIC))
        np.testing.assert_array_equal(resize_bicubic_pil(image, size, pass_order=order).numpy(), expected)


@pytest.mark.parametrize("shape,image_size", [((375, 500), 224), ((500, 333), 224), ((257, 300), 224),
                                              ((480, 640), 384), ((200, 150), 384)])
def test_eval_transform_matches_torchvision_style_reference(shape, image_size):
    image = _natural_image(*shape)
    expected = reference_eval(image, image_size)
    got = eval_transform(tf.constant(image), image_size).numpy()
    assert got.shape == (image_size, image_size, 3)
    np.testing.assert_array_equal(got, expected)  # same uint8 pixels, same float32 arithmetic
    raw = eval_transform(tf.constant(image), image_size, normalize=False).numpy()
    np.testing.assert_array_equal(((raw / 255.0 - MEAN) / STD).astype(np.float32), expected)


def test_official_sizes_and_crop_offsets():
    assert eval_resize_size(224) == (256, 224)
    assert eval_resize_size(384) == ((384, 384), 384)
    assert eval_resize_size(288, crop_pct=1.0) == ((288, 288), 288)
    image = tf.reshape(tf.range(7 * 5 * 1), (7, 5, 1))
    crop = center_crop(image, 4).numpy()  # torchvision: round(1.5) = 2, round(0.5) = 0 (half to even)
    np.testing.assert_array_equal(crop, image.numpy()[2:6, 0:4])


def test_tf_image_resize_differs_from_the_official_pixels():
    """Why this module exists: TF's bicubic (a = -0.75, no intermediate rounding) is not PIL's."""
    image = _natural_image(375, 500)
    official = reference_resize(image, (256, 341)).astype(np.float32)
    for antialias, worst, share in ((True, 1, 0.05), (False, 20, 0.5)):
        tf_bicubic = tf.image.resize(image, (256, 341), "bicubic", antialias=antialias).numpy()
        difference = np.abs(np.clip(np.round(tf_bicubic), 0, 255) - official)
        assert difference.max() >= worst  # grey levels (measured: 3 and 43)
        assert np.mean(difference > 0) > share  # pixels (measured: 17 % and 87 %)


def test_decode_jpeg_matches_pil():
    Image = pytest.importorskip("PIL.Image")
    image = _natural_image(120, 160)
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="JPEG", quality=90)
    data = buffer.getvalue()
    expected = np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))
    np.testing.assert_array_equal(decode_image(tf.constant(data)).numpy(), expected)
    fast = tf.io.decode_jpeg(data, channels=3).numpy()  # TF's default IDCT: what we avoid
    assert fast.shape == expected.shape


def test_layer_in_tf_data_and_on_batches():
    images = [_natural_image(300, 400, seed=s) for s in range(2)]
    layer = EvalTransform(224, normalize=False)
    dataset = tf.data.Dataset.from_generator(lambda: iter(images), output_signature=tf.TensorSpec((None, None, 3), tf.uint8))
    outputs = list(dataset.map(layer).batch(2))[0].numpy()
    assert outputs.shape == (2, 224, 224, 3)
    batch = layer(tf.constant(np.stack(images))).numpy()
    np.testing.assert_array_equal(batch, outputs)
    restored = EvalTransform.from_config(layer.get_config())
    assert restored.image_size == 224 and restored.normalize is False


@pytest.mark.parametrize("kwargs,match", [
    (dict(image_size=0), "image_size"),
    (dict(image_size=224, crop_pct=1.5), "crop_pct"),
    (dict(image_size=224, pass_order="vertical"), "pass_order"),
])
def test_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        EvalTransform(**kwargs)

"""The official ConvNeXt evaluation transform, pixel-exact with the PIL path the paper used.

The official code evaluates with torchvision on PIL images: ``Resize(int(size / crop_pct),
BICUBIC)`` (shorter side, so 256 for 224 at crop ratio 0.875), ``CenterCrop(size)``,
``ToTensor()``, ``Normalize(mean, std)``; from 384 up it resizes straight to ``size × size``
with no crop. PIL's bicubic is not TensorFlow's: it is a separable convolution with the Keys
kernel at ``a = -0.5``, widened by the scale factor when shrinking (antialiasing), computed
horizontally then vertically in 22-bit fixed point with a rounded ``uint8`` image between the
two passes. :func:`resize_bicubic_pil` computes exactly that with TensorFlow ops (the
coefficients in float64 in the same order, the fixed-point sums exactly in float64), so it runs
inside ``tf.data`` and gives the same bytes as ``PIL.Image.resize(..., Image.BICUBIC)``.

``tf.image.resize(method="bicubic", antialias=True)`` differs from it by up to tens of grey
levels on strong downscales (another kernel, ``a = -0.75``, and no intermediate rounding); that
is how keras.applications loses 0.2–0.8 top-1 points against the published numbers.

JPEG decoding matters too: TensorFlow's default IDCT is the fast integer one, PIL's is the
accurate one. :func:`decode_image` asks libjpeg for the accurate IDCT, as PIL does.
"""

import keras
import tensorflow as tf

from keras_visrec.layers.preprocessing import IMAGENET_MEAN, IMAGENET_STD

__all__ = [
    "DEFAULT_CROP_PCT",
    "PASS_ORDERS",
    "EvalTransform",
    "center_crop",
    "decode_image",
    "eval_resize_size",
    "eval_transform",
    "resize_bicubic_pil",
    "resize_shorter_side",
]

DEFAULT_CROP_PCT = 0.875  # 224 / 256, the official crop ratio below 384
PASS_ORDERS = ("horizontal_first", "pillow13")
_PRECISION_BITS = 22  # PIL's fixed point for 8-bit images: 32 - 8 - 2
_KERNEL_SUPPORT = 2.0  # bicubic


def eval_resize_size(image_size, crop_pct=None):
    """The resize the official evaluation uses before cropping to ``image_size``.

    Args:
        image_size: int. Side of the square the model sees.
        crop_pct: float in (0, 1] or None. `None` means the official choice: 0.875 below 384,
            no crop (1.0) from 384 up.

    Returns:
        ``(resize, crop)``: ``resize`` is an int (shorter side) when there is a crop, or the
        tuple ``(image_size, image_size)`` when the image is resized straight to the square.
    """
    if not isinstance(image_size, int) or isinstance(image_size, bool) or image_size < 1:
        raise ValueError(f"`image_size` must be a positive integer; received image_size={image_size!r}.")
    if crop_pct is None:
        crop_pct = 1.0 if image_size >= 384 else DEFAULT_CROP_PCT
    if not isinstance(crop_pct, (int, float)) or not 0.0 < crop_pct <= 1.0:
        raise ValueError(f"`crop_pct` must be in (0, 1] or None; received crop_pct={crop_pct!r}.")
    if crop_pct == 1.0:
        return (image_size, image_size), image_size
    return int(image_size / crop_pct), image_size


def _bicubic_kernel(x):
    """PIL's bicubic filter (Keys, a = -0.5), evaluated in the same operation order as PIL."""
    a = -0.5
    x = tf.abs(x)
    near = ((a + 2.0) * x - (a + 3.0)) * x * x + 1.0
    far = (((x - 5.0) * x + 8.0) * x - 4.0) * a
    return tf.where(x < 1.0, near, tf.where(x < 2.0, far, tf.zeros_like(x)))


def _coefficients(in_size, out_size):
    """Per output pixel: first source index and fixed-point weights of PIL's resampling pass."""
    in_f = tf.cast(in_size, tf.float64)
    scale = in_f / tf.cast(out_size, tf.float64)
    filter_scale = tf.maximum(scale, 1.0)
    support = _KERNEL_SUPPORT * filter_scale
    ksize = tf.cast(tf.math.ceil(support), tf.int32) * 2 + 1
    centre = (tf.range(out_size, dtype=tf.float64) + 0.5) * scale
    first = tf.maximum(tf.floor(centre - support + 0.5), 0.0)
    stop = tf.minimum(tf.floor(centre + support + 0.5), in_f)
    source = first[:, None] + tf.range(ksize, dtype=tf.float64)[None, :]
    inside = source < stop[:, None]
    weights = _bicubic_kernel((source - centre[:, None] + 0.5) * (1.0 / filter_scale))
    weights = tf.where(inside, weights, tf.zeros_like(weights))
    # PIL sums the weights left to right; a fold keeps that order (and so every rounding).
    total = tf.foldl(lambda acc, column: acc + column, tf.transpose(weights),
                     initializer=tf.zeros_like(centre))
    weights = tf.where(total[:, None] != 0.0, weights / total[:, None], weights)
    fixed = weights * float(1 << _PRECISION_BITS)
    fixed = tf.where(fixed < 0.0, tf.math.ceil(fixed - 0.5), tf.floor(fixed + 0.5))
    index = tf.cast(tf.minimum(source, in_f - 1.0), tf.int32)
    return index, fixed


def _resample_axis(image, out_size, axis):
    """One PIL resampling pass of a float64 image holding uint8 values along ``axis``."""
    index, fixed = _coefficients(tf.shape(image)[axis], out_size)
    gathered = tf.gather(image, index, axis=axis)  # axis -> (out, ksize)
    rank = len(image.shape)
    axis = axis % rank
    shape = [1] * (rank + 1)
    shape[axis], shape[axis + 1] = -1, tf.shape(fixed)[1]
    weights = tf.reshape(fixed, shape)
    # Integer products and sums stay below 2**53, so float64 gives PIL's int32 sums exactly.
    total = tf.reduce_sum(gathered * weights, axis=axis + 1) + float(1 << (_PRECISION_BITS - 1))
    return tf.clip_by_value(tf.floor(total / float(1 << _PRECISION_BITS)), 0.0, 255.0)


def resize_bicubic_pil(images, size, pass_order="horizontal_first"):
    """Bicubic resize that returns the same ``uint8`` pixels as PIL's ``Image.BICUBIC``.

    Args:
        images: `uint8` tensor `(height, width, channels)` or a batch `(n, height, width,
            channels)` of equally sized images. Float input is rounded and clipped to 0–255
            first (PIL works on 8-bit images).
        size: `(height, width)` of the output (ints or scalar int tensors).
        pass_order: str. `"horizontal_first"`: always the horizontal pass first, as Pillow
            up to 12 (the Pillow the published ConvNeXt numbers were measured with).
            `"pillow13"`: Pillow 13's rule — vertical pass first when the height shrinks by
            more than twice as many pixels as the width. The two differ only through the
            rounding of the intermediate image. Defaults to `"horizontal_first"`.

    Returns:
        A `uint8` tensor of the same rank.
    """
    if pass_order not in PASS_ORDERS:
        raise ValueError(f"`pass_order` must be one of {PASS_ORDERS}; received pass_order={pass_order!r}.")
    images = tf.convert_to_tensor(images)
    if images.shape.rank not in (3, 4):
        raise ValueError(
            f"`images` must be (height, width, channels) or (batch, height, width, channels); "
            f"received shape {images.shape}."
        )
    if images.dtype != tf.uint8:
        images = tf.cast(tf.clip_by_value(tf.round(tf.cast(images, tf.float64)), 0.0, 255.0), tf.uint8)
    height, width = size
    x = tf.cast(images, tf.float64)

    def horizontal_first():  # each pass rounds to uint8, as PIL's intermediate image does
        return _resample_axis(_resample_axis(x, width, axis=-2), height, axis=-3)

    def vertical_first():
        return _resample_axis(_resample_axis(x, height, axis=-3), width, axis=-2)

    if pass_order == "horizontal_first":
        out = horizontal_first()
    else:
        shape = tf.shape(x)
        shrink_h = shape[-3] - height
        shrink_w = shape[-2] - width
        out = tf.cond(tf.logical_and(shrink_h > 0, shrink_h > 2 * shrink_w), vertical_first, horizontal_first)
    return tf.cast(out, tf.uint8)


def resize_shorter_side(images, size, pass_order="horizontal_first"):
    """Resizes so the shorter side is ``size`` (torchvision's ``Resize(int)`` on a PIL image).

    The longer side becomes ``int(size * long / short)``, truncated, as torchvision computes it.
    """
    shape = tf.shape(images)
    height, width = shape[-3], shape[-2]
    short = tf.minimum(height, width)
    long = tf.maximum(height, width)
    new_long = tf.cast(tf.floor(tf.cast(size * long, tf.float64) / tf.cast(short, tf.float64)), tf.int32)
    new_height = tf.where(height <= width, size, new_long)
    new_width = tf.where(height <= width, new_long, size)
    return resize_bicubic_pil(images, (new_height, new_width), pass_order)


def center_crop(images, size):
    """Central ``size × size`` crop with torchvision's offsets (``round`` half to even)."""
    shape = tf.shape(images)
    height, width = shape[-3], shape[-2]
    top = tf.cast(tf.round(tf.cast(height - size, tf.float64) / 2.0), tf.int32)
    left = tf.cast(tf.round(tf.cast(width - size, tf.float64) / 2.0), tf.int32)
    tf.debugging.assert_greater_equal(tf.minimum(height, width), size,
                                      message="center_crop: image smaller than the crop")
    return images[..., top:top + size, left:left + size, :]


def decode_image(contents, channels=3):
    """Decodes JPEG/PNG/BMP/GIF bytes to ``uint8`` RGB as PIL does (accurate JPEG IDCT)."""
    def jpeg():
        return tf.io.decode_jpeg(contents, channels=channels, dct_method="INTEGER_ACCURATE")

    def other():
        return tf.io.decode_image(contents, channels=channels, expand_animations=False)

    image = tf.cond(tf.io.is_jpeg(contents), jpeg, other)
    image.set_shape([None, None, channels])
    return image


def eval_transform(image, image_size=224, crop_pct=None, normalize=True, pass_order="horizontal_first"):
    """The official evaluation transform of one image (or a batch of equally sized images).

    Below 384: resize the shorter side to ``int(image_size / crop_pct)`` (256 for 224) with
    PIL's bicubic, centre-crop ``image_size``. From 384 up: resize to ``image_size ×
    image_size``, no crop. Usable in ``tf.data.Dataset.map``.

    Args:
        image: `uint8` RGB tensor `(height, width, 3)` (or a batch with a leading axis).
        image_size: int. Output side. Defaults to `224`.
        crop_pct: float in (0, 1] or None (official: 0.875 below 384, no crop from 384 up).
        normalize: bool. `True`: float32 ``(x / 255 - mean) / std`` with ImageNet's mean/std,
            as torchvision's ``ToTensor`` + ``Normalize``. `False`: float32 pixels in 0–255, for
            models built with ``include_preprocessing=True`` (which normalise themselves).
            Defaults to `True`.
        pass_order: str. See `resize_bicubic_pil`. Defaults to `"horizontal_first"`.

    Returns:
        A float32 tensor `(image_size, image_size, 3)` (batch axis kept).

    Examples:

    >>> ds = ds.map(lambda x, y: (eval_transform(x, 224, normalize=False), y))
    """
    resize, crop = eval_resize_size(image_size, crop_pct)
    if isinstance(resize, tuple):
        out = resize_bicubic_pil(image, resize, pass_order)
    else:
        out = center_crop(resize_shorter_side(image, resize, pass_order), crop)
    out = tf.cast(out, tf.float32)
    if normalize:
        mean = tf.constant(IMAGENET_MEAN, tf.float32)
        std = tf.constant(IMAGENET_STD, tf.float32)
        out = (out / 255.0 - mean) / std
    static = [image_size, image_size, 3] if out.shape.rank == 3 else [None, image_size, image_size, 3]
    out.set_shape(static)
    return out


@keras.saving.register_keras_serializable(package="keras_visrec")
class EvalTransform(keras.layers.Layer):
    """The official evaluation transform as a Keras preprocessing layer (see `eval_transform`).

    Works on one image `(height, width, 3)` inside ``tf.data`` or on a batch of equally sized
    images; its output has a static `image_size × image_size` shape. TensorFlow backend.

    Args:
        image_size: int. Output side. Defaults to `224`.
        crop_pct: float in (0, 1] or None (official choice by size). Defaults to `None`.
        normalize: bool. Apply ImageNet mean/std (`False` keeps 0–255 pixels). Defaults to `True`.
        pass_order: str. See `resize_bicubic_pil`. Defaults to `"horizontal_first"`.

    Examples:

    >>> layer = EvalTransform(224, normalize=False)
    >>> layer(tf.zeros((300, 400, 3), tf.uint8)).shape
    TensorShape([224, 224, 3])
    """

    def __init__(self, image_size=224, crop_pct=None, normalize=True, pass_order="horizontal_first", **kwargs):
        kwargs.setdefault("autocast", False)
        super().__init__(**kwargs)
        eval_resize_size(image_size, crop_pct)  # validates
        if pass_order not in PASS_ORDERS:
            raise ValueError(f"`pass_order` must be one of {PASS_ORDERS}; received pass_order={pass_order!r}.")
        self.pass_order = pass_order
        self.image_size = image_size
        self.crop_pct = crop_pct
        self.normalize = bool(normalize)

    def call(self, inputs):
        return eval_transform(inputs, self.image_size, self.crop_pct, self.normalize, self.pass_order)

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[:-3]) + (self.image_size, self.image_size, 3)

    def get_config(self):
        return {**super().get_config(), "image_size": self.image_size, "crop_pct": self.crop_pct,
                "normalize": self.normalize, "pass_order": self.pass_order}

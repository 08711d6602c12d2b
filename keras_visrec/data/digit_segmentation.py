"""A real, offline segmentation task: scikit-learn's handwritten digits composited onto canvases.

Each canvas holds one to three digits (real 8×8 scans, upscaled) at random places, sizes and
colours on a dim noisy background. Labels are exact per pixel: 0 for background, ``1 + digit``
where a digit's stroke covers the pixel (later digits on top). The background is easy (one look
at the pixel), the strokes are hard (which digit needs the shape around it) — the contrast
anytime dense prediction exploits. Train and test canvases use disjoint digit scans.
"""

import numpy as np

from keras_visrec.data.digits import load_digits_images

__all__ = ["DIGIT_SEGMENTATION_CLASSES", "load_digit_segmentation"]

DIGIT_SEGMENTATION_CLASSES = 11  # background + ten digits
_STROKE = 0.4  # share of full intensity above which a pixel is stroke


def load_digit_segmentation(size=64, num_train=512, num_test=128, digits_per_canvas=(1, 3),
                            digit_sizes=(20, 24, 28), seed=0):
    """Returns ``(x_train, y_train), (x_test, y_test)``.

    Args:
        size: int. Canvas side (>= the largest digit size). Defaults to `64`.
        num_train: int. Training canvases. Defaults to `512`.
        num_test: int. Test canvases. Defaults to `128`.
        digits_per_canvas: ``(min, max)`` digits per canvas. Defaults to `(1, 3)`.
        digit_sizes: sizes a digit is drawn at. Defaults to `(20, 24, 28)`.
        seed: int. Defaults to `0`.

    Returns:
        float32 images ``(n, size, size, 3)`` in [0, 255] and int32 labels ``(n, size, size)``.
    """
    if not isinstance(size, int) or size < max(digit_sizes):
        raise ValueError(f"`size` must be an integer >= {max(digit_sizes)}; received size={size!r}.")
    low, high = digits_per_canvas
    if not 1 <= low <= high:
        raise ValueError(f"`digits_per_canvas` must be (min, max) with 1 <= min <= max; "
                         f"received {digits_per_canvas!r}.")
    rng = np.random.default_rng(seed)
    glyphs = {s: load_digits_images(size=s, channels=1, seed=seed) for s in digit_sizes}
    train = _canvases(rng, glyphs, 0, num_train, size, low, high)
    test = _canvases(rng, glyphs, 1, num_test, size, low, high)
    return train, test


def _canvases(rng, glyphs, split, count, size, low, high):
    images = np.empty((count, size, size, 3), "float32")
    labels = np.zeros((count, size, size), "int32")
    for n in range(count):
        canvas = rng.uniform(10, 40, 3).astype("float32") + rng.normal(0, 6, (size, size, 3)).astype("float32")
        label = labels[n]
        for _ in range(rng.integers(low, high + 1)):
            side = int(rng.choice(list(glyphs)))
            pool_x, pool_y = glyphs[side][split]
            pick = rng.integers(len(pool_y))
            alpha = pool_x[pick, ..., 0] / 255.0
            top, left = rng.integers(0, size - side + 1, 2)
            colour = rng.uniform(120, 255, 3).astype("float32")
            window = canvas[top:top + side, left:left + side]
            window[:] = window * (1 - alpha[..., None]) + colour * alpha[..., None]
            stroke = alpha > _STROKE
            label[top:top + side, left:left + side][stroke] = pool_y[pick] + 1
        images[n] = np.clip(canvas, 0, 255)
    return images, labels

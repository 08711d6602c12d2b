"""A real, offline keypoint task: one handwritten digit per canvas, its box corners and centre as joints.

Each canvas holds one of scikit-learn's digit scans (real 8×8 scans, upscaled to a random width
and height, so boxes change shape) at a random place and colour on a dim noisy background, with a
dimmer second scan as a distractor that has no joints. The five joints are the centre and the four
corners (top-left, top-right, bottom-right, bottom-left) of the bounding box of the digit's stroke
pixels — exact by construction. Finding a corner needs the digit's extent around it, which the
early exits see only coarsely: the accuracy rises exit to exit, while most of the canvas is
background that a heatmap exit settles at once (ADP-C skips it).

Targets follow the MPII pipeline (:func:`keras_visrec.data.mpii.joint_targets`: rounded centre,
6σ + 1 window) at 1/4 of the canvas; the PCKh normaliser ("head size") is a quarter of the box
diagonal. Train and test canvases use disjoint digit scans.
"""

import numpy as np

from keras_visrec.data.digits import _resize_bilinear, load_digits_images
from keras_visrec.data.mpii import PoseSet, joint_targets

__all__ = ["DIGIT_KEYPOINT_FLIP_PAIRS", "DIGIT_KEYPOINT_JOINTS", "DIGIT_KEYPOINT_NAMES", "load_digit_keypoints"]

DIGIT_KEYPOINT_NAMES = ("centre", "top_left", "top_right", "bottom_right", "bottom_left")
DIGIT_KEYPOINT_JOINTS = len(DIGIT_KEYPOINT_NAMES)
DIGIT_KEYPOINT_FLIP_PAIRS = ((1, 2), (3, 4))  # a horizontal flip swaps left and right corners
_STROKE = 0.4  # share of full intensity above which a pixel is stroke
_STRIDE = 4  # heatmaps at 1/4 of the canvas, as the exits predict them


def load_digit_keypoints(size=64, num_train=512, num_test=128, digit_sizes=(16, 36), sigma=1.0, seed=0):
    """Returns ``(train, test)`` :class:`~keras_visrec.data.mpii.PoseSet` s.

    Args:
        size: int. Canvas side, a multiple of 32 and > the largest digit size. Defaults to `64`.
        num_train: int. Training canvases. Defaults to `512`.
        num_test: int. Test canvases. Defaults to `128`.
        digit_sizes: ``(min, max)`` side of a drawn digit in pixels (width and height drawn
            independently). Defaults to `(16, 36)`.
        sigma: float. Gaussian σ in heatmap pixels (MPII's 2 at 64×64 heatmaps; the 16×16 maps of
            a 64-pixel canvas want less). Defaults to `1.0`.
        seed: int. Defaults to `0`.
    """
    low, high = digit_sizes
    if not 8 <= low <= high:
        raise ValueError(f"`digit_sizes` must be (min, max) with 8 <= min <= max; received {digit_sizes!r}.")
    if not isinstance(size, int) or size % 32 or size <= high:
        raise ValueError(f"`size` must be a multiple of 32 larger than the largest digit ({high}); "
                         f"received size={size!r}.")
    rng = np.random.default_rng(seed)
    (train_x, _), (test_x, _) = load_digits_images(size=8, channels=1, seed=seed)
    return (_canvases(rng, train_x[..., 0], num_train, size, low, high, sigma),
            _canvases(rng, test_x[..., 0], num_test, size, low, high, sigma))


def _scan(rng, pool, low, high):
    """A random scan of ``pool`` resized bilinearly to a random ``(height, width)``, in [0, 1]."""
    height, width = (int(v) for v in rng.integers(low, high + 1, 2))
    return _resize_bilinear(pool[rng.integers(len(pool))][None] / 255.0, (height, width))[0]


def _canvases(rng, pool, count, size, low, high, sigma):
    heat = size // _STRIDE
    images = np.empty((count, size, size, 3), "float32")
    maps = np.empty((count, heat, heat, DIGIT_KEYPOINT_JOINTS), "float32")
    weights = np.empty((count, DIGIT_KEYPOINT_JOINTS), "float32")
    joints = np.empty((count, DIGIT_KEYPOINT_JOINTS, 2), "float32")
    heads = np.empty((count,), "float32")
    for n in range(count):
        canvas = rng.uniform(10, 40, 3).astype("float32") + rng.normal(0, 6, (size, size, 3)).astype("float32")
        for brightness, target in ((rng.uniform(50, 90), False), (rng.uniform(150, 255), True)):
            alpha = _scan(rng, pool, low, high)
            stroke = alpha > _STROKE
            while target and not stroke.any():  # a blank scan has no box: draw another
                alpha = _scan(rng, pool, low, high)
                stroke = alpha > _STROKE
            top = rng.integers(0, size - alpha.shape[0] + 1)
            left = rng.integers(0, size - alpha.shape[1] + 1)
            colour = brightness * rng.uniform(0.6, 1.0, 3).astype("float32")
            window = canvas[top:top + alpha.shape[0], left:left + alpha.shape[1]]
            window[:] = window * (1 - alpha[..., None]) + colour * alpha[..., None]
            if target:
                ys, xs = np.nonzero(stroke)
                x0, x1, y0, y1 = left + xs.min(), left + xs.max(), top + ys.min(), top + ys.max()
        box = np.array([[(x0 + x1) / 2, (y0 + y1) / 2], [x0, y0], [x1, y0], [x1, y1], [x0, y1]], "float32")
        joints[n] = box / _STRIDE
        maps[n], weights[n] = joint_targets(joints[n], np.ones(DIGIT_KEYPOINT_JOINTS), (heat, heat), sigma)
        heads[n] = 0.25 * np.hypot(x1 - x0, y1 - y0) / _STRIDE
        images[n] = np.clip(canvas, 0, 255)
    visible = np.ones((count, DIGIT_KEYPOINT_JOINTS), "float32")
    return PoseSet(images, maps, weights, joints, visible, heads, DIGIT_KEYPOINT_FLIP_PAIRS, ())

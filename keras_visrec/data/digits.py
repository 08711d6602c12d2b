"""scikit-learn's handwritten digits (1,797 real 8×8 scans) as RGB images of any size.

Real data that installs with scikit-learn, so demos, tests and CI studies train on something
real without a download. Images are upscaled bilinearly and mapped to 0–255, the range of
``include_preprocessing=True`` models.
"""

import numpy as np

__all__ = ["load_digits_images"]


def load_digits_images(size=32, channels=3, test_fraction=0.25, seed=0):
    """Returns ``(x_train, y_train), (x_test, y_test)``: float32 images in [0, 255], int labels.

    Args:
        size: int. Output height and width (>= 8). Defaults to `32`.
        channels: int. 1 or 3 (the grey image repeated). Defaults to `3`.
        test_fraction: float in (0, 1). Share of samples held out, stratified by class.
            Defaults to `0.25`.
        seed: int. Seed of the split. Defaults to `0`.
    """
    try:
        from sklearn.datasets import load_digits
    except ImportError as error:  # pragma: no cover - exercised only without the extra
        raise ImportError("load_digits_images needs scikit-learn: pip install 'keras_visrec[datasets]'.") from error
    if not isinstance(size, int) or size < 8:
        raise ValueError(f"`size` must be an integer >= 8; received size={size!r}.")
    if channels not in (1, 3):
        raise ValueError(f"`channels` must be 1 or 3; received channels={channels!r}.")
    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"`test_fraction` must be in (0, 1); received test_fraction={test_fraction!r}.")
    digits = load_digits()
    images = digits.images.astype("float32") * (255.0 / 16.0)  # sklearn's pixels are 0..16
    images = _resize_bilinear(images, size)
    if channels == 3:
        images = np.repeat(images[..., None], 3, axis=-1)
    else:
        images = images[..., None]
    labels = digits.target.astype("int32")
    rng = np.random.default_rng(seed)
    test_mask = np.zeros(len(labels), bool)
    for cls in np.unique(labels):
        idx = np.flatnonzero(labels == cls)
        rng.shuffle(idx)
        test_mask[idx[: int(round(len(idx) * test_fraction))]] = True
    train_idx = rng.permutation(np.flatnonzero(~test_mask))
    test_idx = np.flatnonzero(test_mask)
    return (images[train_idx], labels[train_idx]), (images[test_idx], labels[test_idx])


def _resize_bilinear(images, size):
    """Bilinear resize of a (N, h, w) stack to ``size`` (a side or ``(height, width)``), half-pixel centres."""
    n, h, w = images.shape
    height, width = (size, size) if isinstance(size, (int, np.integer)) else size
    if (h, w) == (height, width):
        return images.copy()

    def axis_weights(src, dst):
        centres = (np.arange(dst) + 0.5) * src / dst - 0.5
        centres = np.clip(centres, 0, src - 1)
        lo = np.floor(centres).astype(int)
        hi = np.minimum(lo + 1, src - 1)
        frac = centres - lo
        matrix = np.zeros((dst, src), "float32")
        matrix[np.arange(dst), lo] += 1 - frac
        matrix[np.arange(dst), hi] += frac
        return matrix

    rows, cols = axis_weights(h, height), axis_weights(w, width)
    return np.einsum("yh,nhw,xw->nyx", rows, images, cols).astype("float32")

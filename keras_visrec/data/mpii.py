"""MPII Human Pose for ADP-C's second task: heatmap exits, PCKh@0.5 and a heatmap confidence rule.

On-disk format: the JSON annotations used by HRNet / ADP-C pose code (``annot/train.json``,
``annot/valid.json``: a list of ``{"image", "center": [x, y], "scale", "joints": [[x, y] × 16],
"joints_vis": [0/1 × 16]}``, optionally ``"head_size"``) next to an ``images/`` folder of JPEGs.
A person is cropped around ``center`` with a box of ``scale × 200`` pixels (the MPII convention),
resized to ``input_size``; targets are one Gaussian heatmap per joint (σ = 2 at heatmap
resolution).

Confidence rule for heatmaps (documented choice): a heatmap exit has no softmax, so a pixel's
"confidence" is how surely it is background — a pixel is *computed* again where the largest
joint heatmap value there is ``>= threshold`` (near some joint), and skipped where every joint's
heatmap is below it. :func:`heatmap_compute_mask` gives that mask, a drop-in for
``confidence_mask``.
"""

import json
import os

import numpy as np

__all__ = ["MPII_JOINTS", "gaussian_heatmaps", "heatmap_compute_mask", "heatmap_peaks", "load_mpii", "pckh"]

MPII_JOINTS = 16
_HEAD = (8, 9)  # upper neck, head top: the PCKh head segment when no head box is given


def gaussian_heatmaps(joints, visible, size, sigma=2.0):
    """``(h, w, joints)`` Gaussian targets for joints given in heatmap pixel coordinates."""
    h, w = size
    ys, xs = np.mgrid[0:h, 0:w].astype("float32")
    maps = np.zeros((h, w, len(joints)), "float32")
    for j, ((x, y), v) in enumerate(zip(joints, visible)):
        if v:
            maps[..., j] = np.exp(-((xs - x) ** 2 + (ys - y) ** 2) / (2 * sigma ** 2))
    return maps


def heatmap_peaks(heatmaps):
    """``(n, joints, 2)`` (x, y) argmax positions of ``(n, h, w, joints)`` heatmaps."""
    heatmaps = np.asarray(heatmaps)
    n, h, w, j = heatmaps.shape
    flat = heatmaps.reshape(n, h * w, j).argmax(1)
    return np.stack([flat % w, flat // w], -1).astype("float32")


def pckh(predicted, truth, visible, head_sizes, alpha=0.5):
    """PCKh@alpha in %: share of visible joints within ``alpha × head size`` of the truth.

    Args:
        predicted, truth: ``(n, joints, 2)`` positions (same units as ``head_sizes``).
        visible: ``(n, joints)`` 0/1.
        head_sizes: ``(n,)`` head segment lengths.
    """
    distance = np.linalg.norm(np.asarray(predicted) - np.asarray(truth), axis=-1)
    ok = distance <= alpha * np.asarray(head_sizes, "float64")[:, None]
    visible = np.asarray(visible).astype(bool)
    return 100.0 * float(ok[visible].mean()) if visible.any() else 0.0


def heatmap_compute_mask(heatmaps, threshold=0.1):
    """1.0 where ``max_j heatmap_j >= threshold`` (computed again), else 0.0 (background: skipped)."""
    from keras import ops

    return ops.stop_gradient(ops.cast(ops.max(heatmaps, axis=-1) >= threshold, heatmaps.dtype))


def _crop(image, center, scale, size):
    """Affine crop of a ``scale × 200`` px box around ``center`` to ``size`` (nearest, numpy)."""
    box = scale * 200.0
    h, w = size
    xs = center[0] - box / 2 + (np.arange(w) + 0.5) * box / w
    ys = center[1] - box / 2 + (np.arange(h) + 0.5) * box / h
    xi = np.clip(np.floor(xs).astype(int), 0, image.shape[1] - 1)
    yi = np.clip(np.floor(ys).astype(int), 0, image.shape[0] - 1)
    out = image[yi][:, xi].astype("float32")
    outside = (xs < 0) | (xs >= image.shape[1])
    out[:, outside] = 0
    out[(ys < 0) | (ys >= image.shape[0])] = 0
    return out


def load_mpii(root, split="train", input_size=(256, 256), heatmap_size=(64, 64), sigma=2.0):
    """Returns ``images (n, H, W, 3) float32 0–255, heatmaps (n, h, w, 16), joints (n, 16, 2) in
    heatmap pixels, visible (n, 16), head sizes (n,) in heatmap pixels``.

    Args:
        root: folder with ``annot/<split>.json`` and ``images/``.
        split: `"train"` or `"valid"`. Defaults to `"train"`.
        input_size, heatmap_size: ``(height, width)``.
        sigma: Gaussian σ at heatmap resolution. Defaults to `2.0`.
    """
    from PIL import Image

    if split not in ("train", "valid"):
        raise ValueError(f"`split` must be 'train' or 'valid'; received split={split!r}.")
    path = os.path.join(root, "annot", f"{split}.json")
    try:
        with open(path) as handle:
            records = json.load(handle)
    except (OSError, json.JSONDecodeError) as error:
        raise ValueError(f"Cannot read MPII annotations {path!r}: {error}") from error
    images, maps, joints_all, visible_all, heads = [], [], [], [], []
    ratio = np.array([heatmap_size[1] / input_size[1], heatmap_size[0] / input_size[0]], "float32")
    for record in records:
        joints = np.asarray(record["joints"], "float32")
        if joints.shape != (MPII_JOINTS, 2):
            raise ValueError(f"{path!r}: record {record.get('image')!r} has joints of shape {joints.shape}, "
                             f"expected ({MPII_JOINTS}, 2).")
        visible = np.asarray(record["joints_vis"], "float32")
        image = np.asarray(Image.open(os.path.join(root, "images", record["image"])).convert("RGB"))
        center, scale = np.asarray(record["center"], "float32"), float(record["scale"])
        box = scale * 200.0
        crop_joints = (joints - (center - box / 2)) / box * np.array([input_size[1], input_size[0]], "float32")
        heat_joints = crop_joints * ratio
        images.append(_crop(image, center, scale, input_size))
        maps.append(gaussian_heatmaps(heat_joints, visible, heatmap_size, sigma))
        joints_all.append(heat_joints)
        visible_all.append(visible)
        head = record.get("head_size")
        if head is None:
            head = np.linalg.norm(joints[_HEAD[0]] - joints[_HEAD[1]])
        heads.append(float(head) / box * input_size[1] * ratio[0])
    return (np.stack(images), np.stack(maps), np.stack(joints_all), np.stack(visible_all), np.asarray(heads))

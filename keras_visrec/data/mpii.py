"""MPII Human Pose for ADP-C's second task: heatmap targets, PCKh@0.5 and the heatmap confidence rule.

Follows deep-high-resolution-net.pytorch (the HRNet pose code ADP-C builds on):

* On disk: its JSON annotations (``annot/train.json``, ``annot/valid.json``: a list of
  ``{"image", "center": [x, y], "scale", "joints": [[x, y] × 16], "joints_vis": [0/1 × 16]}`` in
  MPII's 1-based Matlab pixels; optional ``"headbox": [[x1, y1], [x2, y2]]`` or ``"head_size"``)
  beside an ``images/`` folder of JPEGs.
* The crop: ``center`` moved 15·scale px down and the box enlarged 1.25× (as ``mpii.py`` does),
  a ``1.25·scale·200`` px square around it resized to ``input_size`` (nearest; ``warpAffine``'s
  pixel convention, so joints and pixels agree).
* Targets (``JointsDataset.generate_target``): an unnormalised Gaussian (σ = 2 at 64×64) on the
  joint's rounded heatmap position, cut to a 6σ + 1 window; target weight 0 for an invisible
  joint or one whose window misses the heatmap.
* PCKh@0.5 (``mpii.py: evaluate``): a joint is correct within ``0.5 × head size``, the head size
  being ``0.6 ×`` the head box diagonal; the reported mean leaves out pelvis and thorax (joints
  6 and 7) — :data:`MPII_PCKH_EXCLUDED`. Without a head box in the annotations the head size is
  the upper-neck–head-top distance (joints 8 and 9).

Confidence rule for heatmaps (:func:`heatmap_compute_mask`, the default rule of
``AnytimeHRNet(task="pose")``): a heatmap exit has no softmax, so a pixel counts as settled when
every joint's heatmap there is below ``threshold`` (background); it is computed again where some
joint's heatmap reaches ``threshold``.
"""

import json
import os
from typing import NamedTuple

import numpy as np

__all__ = ["MPII_FLIP_PAIRS", "MPII_JOINTS", "MPII_PCKH_EXCLUDED", "PoseSet", "gaussian_heatmaps",
           "heatmap_compute_mask", "heatmap_peaks", "joint_targets", "load_mpii", "pckh"]

MPII_JOINTS = 16
MPII_FLIP_PAIRS = ((0, 5), (1, 4), (2, 3), (10, 15), (11, 14), (12, 13))  # r/l ankle, knee, hip, wrist, elbow, shoulder
MPII_PCKH_EXCLUDED = (6, 7)  # pelvis, thorax: not in the official mean
_HEAD = (8, 9)  # upper neck, head top: the head segment when no head box is given
_PIXEL_STD = 200.0
_SC_BIAS = 0.6


class PoseSet(NamedTuple):
    """A keypoint dataset as arrays.

    Attributes:
        images: float32 ``(n, H, W, 3)`` in 0–255.
        heatmaps: float32 ``(n, h, w, joints)`` Gaussian targets at heatmap resolution.
        target_weights: float32 ``(n, joints)``: 1 for a joint the loss sees, else 0.
        joints: float32 ``(n, joints, 2)`` ``(x, y)`` in heatmap pixels.
        visible: float32 ``(n, joints)`` 0/1: joints scored by PCKh.
        head_sizes: float32 ``(n,)`` the PCKh normaliser in heatmap pixels.
        flip_pairs: tuple of joint pairs a horizontal flip swaps.
        excluded: joints PCKh leaves out of its mean.
    """

    images: np.ndarray
    heatmaps: np.ndarray
    target_weights: np.ndarray
    joints: np.ndarray
    visible: np.ndarray
    head_sizes: np.ndarray
    flip_pairs: tuple = MPII_FLIP_PAIRS
    excluded: tuple = MPII_PCKH_EXCLUDED


def joint_targets(joints, visible, size, sigma=2.0):
    """``(heatmaps (h, w, joints), target_weights (joints,))`` as the official pose code makes them.

    Args:
        joints: ``(joints, 2)`` ``(x, y)`` in heatmap pixels.
        visible: ``(joints,)`` 0/1.
        size: ``(height, width)`` of the heatmaps.
        sigma: float. Gaussian σ in heatmap pixels. Defaults to `2.0`.
    """
    h, w = size
    joints = np.asarray(joints, "float64")
    if not np.all(np.isfinite(joints)):
        raise ValueError(f"`joints` must be finite (x, y) positions; received {joints.tolist()}.")
    radius = int(sigma * 3)
    window = np.arange(2 * radius + 1, dtype="float32")
    gaussian = np.exp(-((window[None] - radius) ** 2 + (window[:, None] - radius) ** 2) / (2 * sigma ** 2))
    maps = np.zeros((h, w, len(joints)), "float32")
    weights = np.asarray(visible, "float32").copy()
    for j, (x, y) in enumerate(joints):
        cx, cy = int(x + 0.5), int(y + 0.5)
        left, top = cx - radius, cy - radius
        if left >= w or top >= h or cx + radius + 1 <= 0 or cy + radius + 1 <= 0:
            weights[j] = 0.0  # the window misses the map
            continue
        if weights[j] > 0.5:
            x0, x1 = max(0, left), min(w, cx + radius + 1)
            y0, y1 = max(0, top), min(h, cy + radius + 1)
            maps[y0:y1, x0:x1, j] = gaussian[y0 - top:y1 - top, x0 - left:x1 - left]
    return maps, weights


def gaussian_heatmaps(joints, visible, size, sigma=2.0):
    """``(h, w, joints)`` Gaussian targets (the heatmaps of :func:`joint_targets`)."""
    return joint_targets(joints, visible, size, sigma)[0]


def heatmap_peaks(heatmaps, refine=True):
    """``(n, joints, 2)`` ``(x, y)`` peak positions of ``(n, h, w, joints)`` heatmaps.

    ``refine=True``: the official post-processing, a quarter pixel towards the higher neighbour
    on each axis (``get_final_preds``).
    """
    heatmaps = np.asarray(heatmaps, "float32")
    n, h, w, j = heatmaps.shape
    flat = heatmaps.reshape(n, h * w, j).argmax(1)
    xs, ys = flat % w, flat // w
    peaks = np.stack([xs, ys], -1).astype("float32")
    if refine:
        b, k = np.meshgrid(np.arange(n), np.arange(j), indexing="ij")
        inner = (xs > 0) & (xs < w - 1) & (ys > 0) & (ys < h - 1)
        xi, yi = np.clip(xs, 1, w - 2), np.clip(ys, 1, h - 2)
        dx = heatmaps[b, yi, xi + 1, k] - heatmaps[b, yi, xi - 1, k]
        dy = heatmaps[b, yi + 1, xi, k] - heatmaps[b, yi - 1, xi, k]
        peaks += 0.25 * np.stack([np.sign(dx), np.sign(dy)], -1) * inner[..., None]
    return peaks


def pckh(predicted, truth, visible, head_sizes, alpha=0.5, excluded=()):
    """PCKh@alpha in %: the share of visible joints within ``alpha × head size`` of the truth.

    Args:
        predicted, truth: ``(n, joints, 2)`` positions (the units of ``head_sizes``).
        visible: ``(n, joints)`` 0/1.
        head_sizes: ``(n,)`` PCKh normalisers.
        alpha: float. Defaults to `0.5`.
        excluded: joints left out of the mean (MPII: :data:`MPII_PCKH_EXCLUDED`). Defaults to none.
    """
    predicted, truth = np.asarray(predicted, "float64"), np.asarray(truth, "float64")
    if predicted.shape != truth.shape or predicted.ndim != 3 or predicted.shape[-1] != 2:
        raise ValueError(f"`predicted` and `truth` must both be (n, joints, 2); received {predicted.shape} and "
                         f"{truth.shape}.")
    distance = np.linalg.norm(predicted - truth, axis=-1)
    ok = distance <= alpha * np.asarray(head_sizes, "float64")[:, None]
    visible = np.asarray(visible).astype(bool).copy()
    visible[:, list(excluded)] = False
    return 100.0 * float(ok[visible].mean()) if visible.any() else 0.0


def heatmap_compute_mask(heatmaps, threshold=0.1):
    """1.0 where ``max_j heatmap_j >= threshold`` (computed again), else 0.0 (background: skipped).

    Args:
        heatmaps: tensor ``(batch, h, w, joints)``.
        threshold: float. Defaults to `0.1`.

    Returns:
        A ``(batch, h, w)`` tensor; gradients do not flow through it.
    """
    from keras import ops

    return ops.stop_gradient(ops.cast(ops.max(heatmaps, axis=-1) >= threshold, heatmaps.dtype))


def _crop(image, center, box, size):
    """The ``box``-pixel square around ``center`` resized to ``size`` (nearest), zero outside the image.

    Output pixel ``u`` samples ``center + (u − W/2)·box/W``: ``cv2.warpAffine``'s convention with the
    official ``get_affine_transform``, under which a joint at ``x`` lands at ``(x − c)·W/box + W/2``.
    """
    h, w = size
    xs = center[0] + (np.arange(w) - w / 2) * box / w
    ys = center[1] + (np.arange(h) - h / 2) * box / h
    xi, yi = np.floor(xs + 0.5).astype(int), np.floor(ys + 0.5).astype(int)
    out = image[np.clip(yi, 0, image.shape[0] - 1)][:, np.clip(xi, 0, image.shape[1] - 1)].astype("float32")
    out[:, (xi < 0) | (xi >= image.shape[1])] = 0
    out[(yi < 0) | (yi >= image.shape[0])] = 0
    return out


def _head_size(record, joints):
    if record.get("head_size") is not None:
        return float(record["head_size"])
    if record.get("headbox") is not None:
        box = np.asarray(record["headbox"], "float64")
        return _SC_BIAS * float(np.linalg.norm(box[1] - box[0]))
    return float(np.linalg.norm(joints[_HEAD[0]] - joints[_HEAD[1]]))


def load_mpii(root, split="train", input_size=(256, 256), heatmap_size=(64, 64), sigma=2.0):
    """MPII person crops and their targets as a :class:`PoseSet`.

    Args:
        root: folder with ``annot/<split>.json`` and ``images/``.
        split: `"train"` or `"valid"`. Defaults to `"train"`.
        input_size, heatmap_size: ``(height, width)``. Default to `(256, 256)` and `(64, 64)`.
        sigma: Gaussian σ at heatmap resolution. Defaults to `2.0`.

    Raises:
        ValueError: unreadable annotations, a record without 16 joints, or a joint marked visible
            outside its image (naming the file, the record and the joint).
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
    columns = {name: [] for name in ("images", "heatmaps", "target_weights", "joints", "visible", "head_sizes")}
    ratio = np.array([heatmap_size[1] / input_size[1], heatmap_size[0] / input_size[0]], "float32")
    for index, record in enumerate(records):
        joints = np.asarray(record["joints"], "float32") - 1.0  # Matlab's 1-based pixels
        if joints.shape != (MPII_JOINTS, 2):
            raise ValueError(f"{path!r}: record {index} ({record.get('image')!r}) has joints of shape {joints.shape}, "
                             f"expected ({MPII_JOINTS}, 2).")
        visible = np.asarray(record["joints_vis"], "float32")
        image_path = os.path.join(root, "images", record["image"])
        image = np.asarray(Image.open(image_path).convert("RGB"))
        height, width = image.shape[:2]
        outside = (visible > 0) & ((joints[:, 0] < -1) | (joints[:, 0] > width) | (joints[:, 1] < -1) |
                                   (joints[:, 1] > height))
        if outside.any():
            j = int(np.flatnonzero(outside)[0])
            raise ValueError(f"{path!r}: record {index} ({record['image']!r}, {width}×{height} px) marks joint {j} "
                             f"visible at {tuple(float(v) + 1 for v in joints[j])}, outside the image; set its "
                             f"joints_vis to 0 or fix the position.")
        scale = float(record["scale"])
        center = np.asarray(record["center"], "float32")
        center = np.array([center[0], center[1] + 15 * scale], "float32") - 1.0
        box = 1.25 * scale * _PIXEL_STD
        crop_joints = (joints - center) * (np.array([input_size[1], input_size[0]], "float32") / box) + \
            np.array([input_size[1] / 2, input_size[0] / 2], "float32")
        heat_joints = crop_joints * ratio
        maps, weights = joint_targets(heat_joints, visible, heatmap_size, sigma)
        columns["images"].append(_crop(image, center, box, input_size))
        columns["heatmaps"].append(maps)
        columns["target_weights"].append(weights)
        columns["joints"].append(heat_joints)
        columns["visible"].append(visible)
        columns["head_sizes"].append(_head_size(record, joints) / box * input_size[1] * ratio[0])
    if not records:
        raise ValueError(f"{path!r} holds no records.")
    return PoseSet(**{k: np.asarray(np.stack(v) if k != "head_sizes" else v, "float32") for k, v in columns.items()})

"""ADP-C for human pose (MPII, the paper's second task): flip testing and per-exit PCKh@0.5.

The model is ``AnytimeHRNet(task="pose")`` (:mod:`keras_visrec.adpc.model`): heatmap exits after
every stage, the pose HRNet's ``final_layer`` last, the heatmap confidence rule deciding what the
next stage computes. Training uses :class:`keras_visrec.adpc.training.MultiExitHeatmapLoss`
(through ``compile_anytime``) on ``(images, heatmaps, target_weights)``.

Flip testing as deep-high-resolution-net.pytorch runs it (``TEST.FLIP_TEST``,
``SHIFT_HEATMAP``): the mirrored image's heatmaps are flipped back, left and right joints
swapped (``flip_pairs``), shifted one pixel right ("the flipped features are not aligned"), and
averaged with the plain pass — exit by exit here, each pass with its own masks. Scores:
heatmap peaks with the official quarter-pixel refinement against the truth, PCKh@0.5 with the
dataset's head sizes (:func:`keras_visrec.data.mpii.pckh`).
"""

import dataclasses

import numpy as np

from keras_visrec.adpc.evaluate import exit_gflops, run_exits
from keras_visrec.data.mpii import MPII_FLIP_PAIRS, heatmap_peaks, pckh

__all__ = ["PoseEvaluation", "evaluate_pose_exits", "flip_back", "predict_pose_exits"]


def flip_back(heatmaps, flip_pairs=MPII_FLIP_PAIRS, shift=True):
    """Heatmaps of a horizontally mirrored image mapped back onto the original.

    Args:
        heatmaps: ``(n, h, w, joints)``.
        flip_pairs: joint pairs a mirror swaps (left/right). Defaults to MPII's.
        shift: bool. Move the maps one pixel right (the official ``SHIFT_HEATMAP``). Defaults to `True`.
    """
    heatmaps = np.asarray(heatmaps)[:, :, ::-1].copy()
    joints = heatmaps.shape[-1]
    for a, b in flip_pairs:
        if not (0 <= a < joints and 0 <= b < joints):
            raise ValueError(f"`flip_pairs` names joint {max(a, b)} but the heatmaps have {joints} joints.")
        heatmaps[..., [a, b]] = heatmaps[..., [b, a]]
    if shift:
        heatmaps[:, :, 1:] = heatmaps[:, :, :-1].copy()
    return heatmaps


def predict_pose_exits(model, images, *, mode=None, threshold=None, flip=True, flip_pairs=MPII_FLIP_PAIRS,
                       batch_size=16, progress=True):
    """Every exit's heatmaps ``[(n, h/4, w/4, joints)] × 4`` and the measured computed shares.

    Args:
        model: ``AnytimeHRNet`` with ``task="pose"``.
        images: ``(n, h, w, 3)``.
        mode, threshold: override the model's.
        flip: bool. Average with the flipped-back heatmaps of the mirrored images. Defaults to `True`.
        flip_pairs: the dataset's left/right joint pairs. Defaults to MPII's.
        batch_size: int. Defaults to `16`.
        progress: bool. Defaults to `True`.

    Returns:
        ``(heatmaps list, computed)``: ``computed`` per masked segment ``{(h, w): share}``, the mean
        over both passes when flipping (`None` for ``mode="none"``).
    """
    if getattr(model, "task", None) != "pose":
        raise ValueError(f"`model` must be a pose AnytimeHRNet (task='pose'); {model.name!r} is "
                         f"{getattr(model, 'task', type(model).__name__)!r}.")
    mode = mode or model.mode
    threshold = model.threshold if threshold is None else threshold
    images = np.asarray(images, "float32")
    passes = [(images, False)] + ([(images[:, :, ::-1], True)] if flip else [])
    total, computed = None, []
    for pass_images, mirrored in passes:
        run = run_exits(model, pass_images, mode=mode, threshold=threshold, batch_size=batch_size,
                        progress=progress, desc="adpc-pose" + (" (flipped)" if mirrored else ""))
        outputs = [np.concatenate(parts) for parts in zip(*(o for _, o in run))]
        if mirrored:
            outputs = [flip_back(o, flip_pairs) for o in outputs]
        total = outputs if total is None else [(a + b) * 0.5 for a, b in zip(total, outputs)]
        computed.append(run.computed)
    if computed[0] is None:
        return total, None
    mean = [{size: float(np.mean([c[s][size] for c in computed])) for size in computed[0][s]} for s in range(3)]
    return total, mean


@dataclasses.dataclass
class PoseEvaluation:
    """Per exit: ``pckh`` (PCKh@0.5, %), ``gflops`` (cumulative, paper's ÷1024³, per forward pass —
    flip testing runs two), ``computed`` (share of pixels computed per masked segment)."""

    pckh: list
    gflops: list
    computed: list
    mode: str
    threshold: float
    flip: bool

    metric = "PCKh@0.5"

    @property
    def score(self):
        """The per-exit accuracy the plot draws (PCKh@0.5)."""
        return self.pckh

    def table(self):
        lines = [f"mode={self.mode} threshold={self.threshold} flip={self.flip}",
                 "exit  PCKh@0.5  GFLOPs    computed"]
        for k in range(len(self.pckh)):
            share = "1.000" if k == 0 else f"{self.computed[k - 1]:.3f}"
            lines.append(f"{k + 1:>4}  {self.pckh[k]:8.2f}  {self.gflops[k]:8.4f}  {share}")
        return "\n".join(lines)


def evaluate_pose_exits(model, data, *, mode=None, threshold=None, flip=True, alpha=0.5, batch_size=16,
                        progress=True):
    """Per-exit PCKh@``alpha``, computed shares and masked FLOPs of a pose ``AnytimeHRNet``.

    Args:
        model: ``AnytimeHRNet`` with ``task="pose"``.
        data: a :class:`keras_visrec.data.mpii.PoseSet` (``load_mpii``, ``load_digit_keypoints``);
            its ``flip_pairs`` and ``excluded`` joints are used.
        mode, threshold: override the model's.
        flip: bool. Flip testing. Defaults to `True`.
        alpha: float. PCKh threshold in head sizes. Defaults to `0.5`.
        batch_size: int. Defaults to `16`.
        progress: bool. Defaults to `True`.

    Returns:
        :class:`PoseEvaluation`.
    """
    mode = mode or model.mode
    threshold = model.threshold if threshold is None else threshold
    if data.heatmaps.shape[-1] != model.classes:
        raise ValueError(f"The data has {data.heatmaps.shape[-1]} joints but {model.name!r} predicts {model.classes}.")
    heatmaps, computed = predict_pose_exits(model, data.images, mode=mode, threshold=threshold, flip=flip,
                                            flip_pairs=data.flip_pairs, batch_size=batch_size, progress=progress)
    scores = [pckh(heatmap_peaks(h), data.joints, data.visible, data.head_sizes, alpha, data.excluded)
              for h in heatmaps]
    gflops, shares = exit_gflops(model, data.images.shape[1:], computed)
    return PoseEvaluation(scores, gflops, shares, mode, float(threshold), bool(flip))

"""Per-exit evaluation (mIoU or PCKh, computed share, FLOPs) and the accuracy–compute plot.

Segmentation scores with the package's one confusion matrix
(:func:`keras_visrec.segmentation.metrics.confusion_matrix`: labels outside ``[0, classes)`` that
are not the ignore label raise); pose lives in :mod:`keras_visrec.adpc.pose` and shares the loop
here (:func:`run_exits`).
"""

import dataclasses

import numpy as np

from keras_visrec.adpc.flops import GIGA, exit_flops
from keras_visrec.files import atomic_path
from keras_visrec.segmentation.losses import upsample_logits
from keras_visrec.segmentation.metrics import IGNORE_LABEL, confusion_matrix, mean_iou

__all__ = ["ExitEvaluation", "confusion_matrix", "evaluate_exits", "exit_gflops", "plot_accuracy_compute",
           "run_exits"]


@dataclasses.dataclass
class ExitEvaluation:
    """Per exit: ``miou`` (0–100), ``pixel_accuracy`` (0–100), ``gflops`` (paper's ÷1024³, per image),
    ``computed`` (share of pixels computed per masked segment, mean over resolutions)."""

    miou: list
    pixel_accuracy: list
    gflops: list
    computed: list
    mode: str
    threshold: float

    metric = "mIoU"

    @property
    def score(self):
        """The per-exit accuracy the plot draws (mIoU)."""
        return self.miou

    def table(self):
        lines = [f"mode={self.mode} threshold={self.threshold}",
                 "exit  mIoU   pixel acc  GFLOPs    computed"]
        for k in range(len(self.miou)):
            share = "1.000" if k == 0 else f"{self.computed[k - 1]:.3f}"
            lines.append(f"{k + 1:>4}  {self.miou[k]:5.2f}  {self.pixel_accuracy[k]:9.2f}  {self.gflops[k]:8.4f}  {share}")
        return "\n".join(lines)


def run_exits(model, images, *, mode, threshold, batch_size=8, progress=True, desc="adpc-eval"):
    """Runs ``model.compiled_anytime(mode, threshold)`` over ``images`` in batches.

    Yields ``(start, outputs)`` per batch (``outputs``: four NumPy arrays); when the generator is
    exhausted, ``computed`` on it holds the mean computed share per masked segment and
    resolution (`None` for ``mode="none"``). Use it as ``for start, outputs in (run := run_exits(…))``.
    """
    return _ExitRun(model, np.asarray(images, "float32"), mode, threshold, batch_size, progress, desc)


class _ExitRun:
    def __init__(self, model, images, mode, threshold, batch_size, progress, desc):
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"`batch_size` must be a positive integer; received batch_size={batch_size!r}.")
        self.model, self.images, self.mode, self.threshold = model, images, mode, threshold
        self.batch_size, self.progress, self.desc = batch_size, progress, desc
        self.computed = None

    def __iter__(self):
        from keras import ops
        from tqdm.auto import tqdm

        starts = range(0, len(self.images), self.batch_size)
        fractions, batches = [{}, {}, {}], 0
        run = self.model.compiled_anytime(self.mode, self.threshold)
        for start in tqdm(starts, desc=self.desc, disable=not self.progress or len(starts) < 4):
            outputs, measured = run(self.images[start:start + self.batch_size])
            yield start, [ops.convert_to_numpy(o) for o in outputs]
            for segment, shares in enumerate(measured):
                for key, share in shares.items():
                    size = tuple(int(v) for v in key.split("x"))
                    fractions[segment][size] = fractions[segment].get(size, 0.0) + float(share)
            batches += 1
        if self.mode != "none" and batches:
            self.computed = [{size: value / batches for size, value in shares.items()} for shares in fractions]


def exit_gflops(model, input_shape, computed):
    """``(cumulative GFLOPs per exit, mean computed share per masked segment)`` for measured shares."""
    flops = exit_flops(model, input_shape, computed_fractions=computed)
    shares = [float(np.mean(list(c.values()))) if c else 1.0 for c in (computed or [{}, {}, {}])]
    return [c / GIGA for c in flops.cumulative], shares


def evaluate_exits(model, images, labels, *, mode=None, threshold=None, batch_size=8, ignore_label=IGNORE_LABEL,
                   progress=True):
    """Per-exit mIoU, pixel accuracy and masked FLOPs of a segmentation ``AnytimeHRNet`` on labelled images.

    Args:
        model: ``AnytimeHRNet`` with ``task="segmentation"``.
        images: array ``(n, h, w, 3)`` (0–255 RGB for models with ``include_preprocessing``).
        labels: int array ``(n, h, w)``; values in ``[0, classes)`` or ``ignore_label``.
        mode, threshold: override the model's.
        batch_size: int. Defaults to `8`.
        ignore_label: int. Defaults to `255`.
        progress: bool. A progress bar over batches. Defaults to `True`.

    Returns:
        :class:`ExitEvaluation`. FLOPs use the measured computed share per resolution, averaged
        over batches.
    """
    if getattr(model, "task", "segmentation") != "segmentation":
        raise ValueError(f"`evaluate_exits` scores segmentation; {model.name!r} is a {model.task} model: use "
                         "keras_visrec.adpc.pose.evaluate_pose_exits.")
    mode = mode or model.mode
    threshold = model.threshold if threshold is None else threshold
    images = np.asarray(images, "float32")
    labels = np.asarray(labels)
    if len(labels) != len(images):
        raise ValueError(f"`labels` has {len(labels)} maps for {len(images)} images.")
    classes = model.classes
    confusions = [np.zeros((classes, classes), np.int64) for _ in range(4)]
    run = run_exits(model, images, mode=mode, threshold=threshold, batch_size=batch_size, progress=progress)
    for start, outputs in run:
        target = labels[start:start + batch_size]
        for k, logits in enumerate(outputs):
            up = np.asarray(upsample_logits(logits, target.shape[1], target.shape[2]))
            confusions[k] += confusion_matrix(target, up.argmax(-1), classes, ignore_label)
    gflops, shares = exit_gflops(model, images.shape[1:], run.computed)
    miou = [100.0 * mean_iou(c) for c in confusions]
    accuracy = [100.0 * np.trace(c) / max(c.sum(), 1) for c in confusions]
    return ExitEvaluation(miou, accuracy, gflops, shares, mode, float(threshold))


def plot_accuracy_compute(curves, path, title="Anytime accuracy vs compute", base=None, ylabel=None):
    """Writes a PNG of per-exit accuracy against cumulative GFLOPs, one line per curve (matplotlib, Agg).

    Args:
        curves: ``{label: evaluation}`` (:class:`ExitEvaluation` or
            :class:`~keras_visrec.adpc.pose.PoseEvaluation`) or ``{label: (gflops list, scores list)}``.
        path: output ``.png`` path; written to a temporary file then moved into place.
        title: str.
        base: optional ``(gflops, score)`` of the base model, drawn as a star.
        ylabel: str or `None`: the evaluations' metric (mIoU, PCKh@0.5) in %.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(5, 3.6), dpi=120)
    metric = None
    for label, curve in curves.items():
        if isinstance(curve, tuple):
            gflops, score = curve
        else:
            gflops, score, metric = curve.gflops, curve.score, metric or curve.metric
        axis.plot(gflops, score, marker="o", label=label)
    if base is not None:
        axis.plot([base[0]], [base[1]], marker="*", markersize=12, linestyle="none", label="base")
    axis.set_xlabel("GFLOPs (cumulative, ÷1024³)")
    axis.set_ylabel(ylabel or f"{metric or 'mIoU'} (%)")
    axis.set_title(title)
    axis.grid(alpha=0.3)
    axis.legend()
    figure.tight_layout()
    try:
        with atomic_path(path) as temporary:
            figure.savefig(temporary, format="png")
    finally:
        plt.close(figure)
    return path

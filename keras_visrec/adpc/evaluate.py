"""Per-exit evaluation (mIoU, computed share, FLOPs) and the accuracy–compute plot."""

import dataclasses

import numpy as np

from keras_visrec.adpc.flops import GIGA, exit_flops
from keras_visrec.files import atomic_path
from keras_visrec.adpc.training import IGNORE_LABEL, upsample_logits

__all__ = ["ExitEvaluation", "confusion_matrix", "evaluate_exits", "plot_accuracy_compute"]


def confusion_matrix(labels, predictions, num_classes, ignore_label=IGNORE_LABEL):
    """``(num_classes, num_classes)`` counts, rows = labels, ignoring ``ignore_label``."""
    labels = np.asarray(labels).reshape(-1)
    predictions = np.asarray(predictions).reshape(-1)
    keep = labels != ignore_label
    index = labels[keep].astype(np.int64) * num_classes + predictions[keep]
    return np.bincount(index, minlength=num_classes * num_classes).reshape(num_classes, num_classes)


def _miou(confusion):
    hits = np.diag(confusion).astype(np.float64)
    union = confusion.sum(0) + confusion.sum(1) - hits
    present = union > 0
    return float(np.mean(hits[present] / union[present])) if present.any() else 0.0


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

    def table(self):
        lines = [f"mode={self.mode} threshold={self.threshold}",
                 "exit  mIoU   pixel acc  GFLOPs    computed"]
        for k in range(len(self.miou)):
            share = "1.000" if k == 0 else f"{self.computed[k - 1]:.3f}"
            lines.append(f"{k + 1:>4}  {self.miou[k]:5.2f}  {self.pixel_accuracy[k]:9.2f}  {self.gflops[k]:8.4f}  {share}")
        return "\n".join(lines)


def evaluate_exits(model, images, labels, *, mode=None, threshold=None, batch_size=8, ignore_label=IGNORE_LABEL,
                   progress=True):
    """Per-exit mIoU, pixel accuracy and masked FLOPs of an ``AnytimeHRNet`` on labelled images.

    Args:
        model: ``AnytimeHRNet``.
        images: array ``(n, h, w, 3)``.
        labels: int array ``(n, h, w)``.
        mode, threshold: override the model's.
        batch_size: int. Defaults to `8`.

    Returns:
        :class:`ExitEvaluation`. FLOPs use the measured computed share per resolution, averaged
        over batches.
    """
    from keras import ops
    from tqdm.auto import tqdm

    mode = mode or model.mode
    threshold = model.threshold if threshold is None else threshold
    images = np.asarray(images, "float32")
    labels = np.asarray(labels)
    classes = model.classes
    confusions = [np.zeros((classes, classes), np.int64) for _ in range(4)]
    fractions, batches = [{}, {}, {}], 0
    starts = range(0, len(images), batch_size)
    for start in tqdm(starts, desc="adpc-eval", disable=not progress or len(starts) < 4):
        batch = images[start:start + batch_size]
        target = labels[start:start + batch_size]
        outputs, measured = model.compiled_anytime(mode, threshold)(batch)
        for k, logits in enumerate(outputs):
            up = upsample_logits(logits, target.shape[1], target.shape[2])
            confusions[k] += confusion_matrix(target, ops.convert_to_numpy(ops.argmax(up, axis=-1)), classes,
                                              ignore_label)
        if mode != "none":
            for segment, shares in enumerate(measured):
                for key, share in shares.items():
                    size = tuple(int(v) for v in key.split("x"))
                    fractions[segment][size] = fractions[segment].get(size, 0.0) + float(share)
        batches += 1
    computed = None
    if mode != "none":
        computed = [{size: value / batches for size, value in shares.items()} for shares in fractions]
    flops = exit_flops(model, images.shape[1:], computed_fractions=computed)
    miou = [100.0 * _miou(c) for c in confusions]
    accuracy = [100.0 * np.trace(c) / max(c.sum(), 1) for c in confusions]
    shares = [float(np.mean(list(c.values()))) if c else 1.0 for c in (computed or [{}, {}, {}])]
    return ExitEvaluation(miou, accuracy, [c / GIGA for c in flops.cumulative], shares, mode, float(threshold))


def plot_accuracy_compute(curves, path, title="Anytime accuracy vs compute", base=None):
    """Writes a PNG of mIoU against cumulative GFLOPs, one line per curve (matplotlib, Agg).

    Args:
        curves: ``{label: ExitEvaluation}`` or ``{label: (gflops list, miou list)}``.
        path: output ``.png`` path; written to a temporary file then moved into place.
        title: str.
        base: optional ``(gflops, miou)`` of the base model, drawn as a star.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(5, 3.6), dpi=120)
    for label, curve in curves.items():
        gflops, miou = (curve.gflops, curve.miou) if isinstance(curve, ExitEvaluation) else curve
        axis.plot(gflops, miou, marker="o", label=label)
    if base is not None:
        axis.plot([base[0]], [base[1]], marker="*", markersize=12, linestyle="none", label="base")
    axis.set_xlabel("GFLOPs (cumulative, ÷1024³)")
    axis.set_ylabel("mIoU (%)")
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

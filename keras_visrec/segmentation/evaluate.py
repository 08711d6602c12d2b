"""mIoU / per-class IoU / pixel accuracy of a segmenter over a dataset, as mmseg evaluates.

Each image is predicted at its own size (:func:`~keras_visrec.segmentation.inference.segment`:
whole or slide, flip, multi-scale) and compared with its full-size label map; intersections and
unions accumulate over the dataset in one confusion matrix
(:class:`~keras_visrec.segmentation.metrics.ConfusionMatrix`, ignore label 255), and mIoU is the
mean over the classes present (mmseg's ``nanmean``). The result sits beside the mIoU the zoo
catalogue publishes for the weights (``ZooEntry.metrics["miou"]``, ``"miou_ms"`` multi-scale).

mmseg's ADE20K test, single scale: ``scale=(2048, 512)`` (``(2560, 640)`` for the 640 models),
``mode="slide"``, crop 512 stride 341 (640 / 426); multi-scale: ``ratios=MULTI_SCALE_RATIOS``,
``flip=True`` (the ``--aug-test`` of mmseg's ``tools/test.py``).
"""

import dataclasses

import tensorflow as tf

from keras_visrec.segmentation.datasets import SegmentationSource, load_segmentation_data
from keras_visrec.segmentation.inference import InferenceSettings, predict_labels
from keras_visrec.segmentation.metrics import IGNORE_LABEL, ConfusionMatrix, SegmentationScores

__all__ = ["SegmentationEvaluation", "evaluate_segmentation", "published_miou"]


@dataclasses.dataclass
class SegmentationEvaluation:
    """The scores of one evaluation and what they compare with.

    Attributes:
        scores: :class:`SegmentationScores` (percent).
        count: int. Images evaluated.
        description: str. The data.
        settings: :class:`InferenceSettings` used.
        published_miou: float or None. The reference mIoU (percent).
        published_source: str. Where the reference comes from.
        comparable: bool. Whether the data is the benchmark the reference was measured on.
    """

    scores: SegmentationScores
    count: int
    description: str
    settings: InferenceSettings
    published_miou: float | None = None
    published_source: str = ""
    comparable: bool = True

    @property
    def delta(self):
        """``miou - published_miou`` in points (None without a comparable reference)."""
        if self.published_miou is None or not self.comparable:
            return None
        return self.scores.miou - self.published_miou

    def summary(self):
        """The per-class table, the settings and the comparison with the published mIoU."""
        s = self.settings
        how = f"mode={s.mode}"
        if s.mode == "slide":
            how += f" crop={s.crop_size[0]}x{s.crop_size[1]} stride={s.stride[0]}x{s.stride[1]}"
        if s.scale is not None:
            how += f" scale={s.scale[0]}x{s.scale[1]}"
        how += f" ratios={','.join(f'{r:g}' for r in s.ratios)} flip={s.flip}"
        lines = [self.scores.table(), f"{self.description}: {self.count} images, {how}"]
        if self.published_miou is not None:
            if self.comparable:
                lines.append(f"published mIoU {self.published_miou:.2f} ({self.published_source}); "
                             f"measured {self.scores.miou:.2f}, delta {self.delta:+.2f} points")
            else:
                lines.append(f"published mIoU {self.published_miou:.2f} ({self.published_source}) is not comparable: "
                             f"{self.description} does not hold the benchmark's labels")
        return "\n".join(lines)


def published_miou(zoo_id, multi_scale=False):
    """``(miou, source)`` the catalogue publishes for a zoo id, or ``(None, reason)``.

    Args:
        zoo_id: str. A catalogue id.
        multi_scale: bool. The multi-scale + flip figure (``metrics["miou_ms"]``). Defaults to `False`.
    """
    from keras_visrec.zoo.catalogue import get_weights

    entry = get_weights(zoo_id)
    key = "miou_ms" if multi_scale else "miou"
    value = (entry.metrics or {}).get(key)
    if value is None:
        return None, f"zoo entry {zoo_id!r} publishes no {key!r}"
    return float(value), f"{zoo_id} metrics[{key!r}], {entry.metrics_source or 'catalogue'}"


def _model_classes(model):
    outputs = model.outputs if isinstance(model.outputs, (list, tuple)) else [model.outputs]
    return int(outputs[0].shape[-1])


def evaluate_segmentation(model, data, *, split="validation", settings=None, published=None, zoo_id=None,
                          max_examples=None, data_dir=None, ignore_label=IGNORE_LABEL, progress=True, **options):
    """Scores ``model`` on every image of ``data`` (or the first ``max_examples``).

    Args:
        model: a segmenter (``keras.Model``; the first output is the logits).
        data: a :class:`SegmentationSource` or a name for
            :func:`~keras_visrec.segmentation.datasets.load_segmentation_data`.
        split: str. Split of a named source. Defaults to `"validation"`.
        settings: :class:`InferenceSettings`, or `None` to build them from ``options``
            (``mode``, ``crop_size``, ``stride``, ``flip``, ``ratios``, ``scale``, ``batch_size``).
        published: float or None. Reference mIoU in percent (overrides the catalogue's).
        zoo_id: str or None. Catalogue id whose published mIoU is the reference (multi-scale
            when ``ratios`` has several entries).
        max_examples: int or None.
        data_dir: str or None. tfds data directory.
        ignore_label: int. Defaults to `255`.
        progress: bool. A progress bar. Defaults to `True`.

    Returns:
        :class:`SegmentationEvaluation`.
    """
    from tqdm.auto import tqdm

    source = data if isinstance(data, SegmentationSource) else load_segmentation_data(data, split, data_dir=data_dir)
    classes = _model_classes(model)
    if classes != source.classes:
        raise ValueError(f"Model {model.name!r} predicts {classes} classes but {source.description} has "
                         f"{source.classes}.")
    if settings is None:
        settings = InferenceSettings.for_model(model, **options)
    elif options:
        raise ValueError(f"Pass either `settings` or inference options, not both; received {sorted(options)}.")
    if max_examples is not None and (isinstance(max_examples, bool) or not isinstance(max_examples, int)
                                     or max_examples < 1):
        raise ValueError(f"`max_examples` must be a positive integer or None; received max_examples={max_examples!r}.")
    source_name = "catalogue"
    if published is None and zoo_id is not None:
        published, source_name = published_miou(zoo_id, multi_scale=len(settings.ratios) > 1)
    elif published is not None:
        published, source_name = float(published), "given"
    dataset = source.dataset if max_examples is None else source.dataset.take(max_examples)
    total = source.num_examples if max_examples is None else min(max_examples, source.num_examples or max_examples)
    confusion = ConfusionMatrix(classes, ignore_label, source.class_names)
    count = 0
    iterator = dataset.as_numpy_iterator()
    with tqdm(total=total, desc="seg-eval", disable=not progress) as bar:
        while True:
            try:
                image, label, name = next(iterator)
            except StopIteration:
                break
            except tf.errors.InvalidArgumentError as error:  # a label-range check of the loader
                raise ValueError(error.message) from None
            try:
                confusion.update(label, predict_labels(model, image, settings))
            except ValueError as error:
                raise ValueError(f"{name.decode() if isinstance(name, bytes) else name}: {error}") from None
            count += 1
            bar.update(1)
    if count == 0:
        raise ValueError(f"{source.description} yielded no images.")
    return SegmentationEvaluation(confusion.scores(), count, source.description, settings, published, source_name,
                                  source.benchmark)

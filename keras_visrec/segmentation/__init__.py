"""Semantic segmentation shared by every dense-prediction family (UperNet, HRNet, ADP-C).

* ``metrics`` — the one confusion matrix (NumPy and a Keras metric), mIoU / per-class IoU / pixel
  accuracy with an ignore label, label-range errors on both paths;
* ``losses`` — the pixel cross-entropy with ignore label and class weights, on logits upsampled
  to the label size;
* ``training`` — the official UperNet recipe through ``model.fit``: auxiliary loss at 0.4,
  AdamW with stage-wise decay, warmup + poly schedule, any ``tf.distribute`` strategy;
* ``pipeline`` — mmseg's training augmentation as ``tf.data`` (rescale, crop with
  ``cat_max_ratio``, flip, photometric distortion, pad);
* ``inference`` / ``evaluate`` — whole / slide, flip and multi-scale test as mmseg, mIoU over a
  dataset beside the published figure;
* ``datasets`` — ADE20K (folder or tfds ``scene_parse150``), image+mask folders, digit canvases;
* ``visualize`` — colour overlays; ``cli`` — ``seg-eval``, ``seg-predict``, ``seg-demo``;
  ``demo`` — the offline end-to-end demo.

Only ``metrics`` and ``losses`` load with the package (dense-prediction families import them);
the rest loads on first use of one of its names. ``keras_visrec`` imports ``training`` at start so
its schedule deserialises.
"""

import importlib

from keras_visrec.segmentation.losses import SegmentationLoss, pixel_cross_entropy, upsample_logits
from keras_visrec.segmentation.metrics import (IGNORE_LABEL, ConfusionMatrix, MeanIoU, SegmentationScores,
                                               confusion_matrix, mean_iou)

_LAZY = {
    **{name: "keras_visrec.segmentation.training" for name in (
        "PolyWarmup", "compile_segmenter", "segmentation_adamw", "stage_wise_lr_scales", "train_segmenter")},
    **{name: "keras_visrec.segmentation.pipeline" for name in ("TrainAugment", "augment_example", "train_dataset")},
    **{name: "keras_visrec.segmentation.inference" for name in (
        "MULTI_SCALE_RATIOS", "InferenceSettings", "inference_model", "predict_labels", "segment")},
    **{name: "keras_visrec.segmentation.evaluate" for name in ("SegmentationEvaluation", "evaluate_segmentation")},
    **{name: "keras_visrec.segmentation.datasets" for name in (
        "ADE20K_CLASSES", "ADE20K_CLASS_NAMES", "SegmentationSource", "load_ade20k", "load_scene_parse150",
        "load_segmentation_data", "load_segmentation_folder")},
    **{name: "keras_visrec.segmentation.visualize" for name in ("colorize", "overlay")},
}

__all__ = sorted([
    "IGNORE_LABEL", "ConfusionMatrix", "MeanIoU", "SegmentationLoss", "SegmentationScores", "confusion_matrix",
    "mean_iou", "pixel_cross_entropy", "upsample_logits", *_LAZY,
])


def __getattr__(name):
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'keras_visrec.segmentation' has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(__all__))

"""Semantic segmentation shared by every dense-prediction family (UperNet, HRNet, ADP-C).

``metrics`` — the one confusion matrix (NumPy and a Keras metric), mIoU / per-class IoU / pixel
accuracy with an ignore label, label-range errors on both paths. ``losses`` — the pixel
cross-entropy with ignore label and class weights, on logits upsampled to the label size.
"""

from keras_visrec.segmentation.losses import SegmentationLoss, pixel_cross_entropy, upsample_logits
from keras_visrec.segmentation.metrics import (IGNORE_LABEL, ConfusionMatrix, MeanIoU, SegmentationScores,
                                               confusion_matrix, mean_iou)

__all__ = [
    "IGNORE_LABEL", "ConfusionMatrix", "MeanIoU", "SegmentationLoss", "SegmentationScores", "confusion_matrix",
    "mean_iou", "pixel_cross_entropy", "upsample_logits",
]

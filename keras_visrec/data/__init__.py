"""Datasets: small real ones that ship with installed packages (for demos, tests and CI-sized
studies) and loaders for the papers' datasets from their real on-disk formats."""

from keras_visrec.data.cityscapes import CITYSCAPES_CLASSES, IGNORE_LABEL, load_cityscapes, to_train_ids
from keras_visrec.data.digit_keypoints import DIGIT_KEYPOINT_JOINTS, load_digit_keypoints
from keras_visrec.data.digit_segmentation import DIGIT_SEGMENTATION_CLASSES, load_digit_segmentation
from keras_visrec.data.digits import load_digits_images
from keras_visrec.data.mpii import PoseSet, load_mpii, pckh

__all__ = [
    "CITYSCAPES_CLASSES",
    "DIGIT_KEYPOINT_JOINTS",
    "DIGIT_SEGMENTATION_CLASSES",
    "IGNORE_LABEL",
    "PoseSet",
    "load_cityscapes",
    "load_digit_keypoints",
    "load_digit_segmentation",
    "load_digits_images",
    "load_mpii",
    "pckh",
    "to_train_ids",
]

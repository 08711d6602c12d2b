"""Cityscapes semantic segmentation through tensorflow-datasets (manual download).

Cityscapes needs a login, so tfds reads the two zips you downloaded yourself from a *manual
dir*: ``leftImg8bit_trainvaltest.zip`` and ``gtFine_trainvaltest.zip``. tfds yields the label-id
maps (``*_gtFine_labelIds.png``, 34 ids); :func:`to_train_ids` maps them onto the 19 evaluation
classes (train ids 0–18) and everything else onto the ignore label 255, as the official
``cityscapesScripts`` table and the ADP-C / HRNet code do.
"""

import numpy as np

__all__ = ["CITYSCAPES_CLASSES", "CITYSCAPES_CLASS_NAMES", "IGNORE_LABEL", "LABEL_ID_TO_TRAIN_ID",
           "load_cityscapes", "to_train_ids"]

IGNORE_LABEL = 255
CITYSCAPES_CLASS_NAMES = ("road", "sidewalk", "building", "wall", "fence", "pole", "traffic light",
                          "traffic sign", "vegetation", "terrain", "sky", "person", "rider", "car", "truck",
                          "bus", "train", "motorcycle", "bicycle")
CITYSCAPES_CLASSES = len(CITYSCAPES_CLASS_NAMES)
# label id -> train id (cityscapesScripts labels.py); ids not listed are ignored
LABEL_ID_TO_TRAIN_ID = {7: 0, 8: 1, 11: 2, 12: 3, 13: 4, 17: 5, 19: 6, 20: 7, 21: 8, 22: 9, 23: 10, 24: 11,
                        25: 12, 26: 13, 27: 14, 28: 15, 31: 16, 32: 17, 33: 18}
_LOOKUP = np.full(256, IGNORE_LABEL, np.int32)
for _label, _train in LABEL_ID_TO_TRAIN_ID.items():
    _LOOKUP[_label] = _train


def to_train_ids(label_ids):
    """Maps a label-id map (numpy or tensor, any shape, values 0–255) to train ids / 255."""
    if isinstance(label_ids, np.ndarray):
        return _LOOKUP[label_ids.astype(np.int64)]
    import tensorflow as tf

    return tf.gather(tf.constant(_LOOKUP), tf.cast(label_ids, tf.int32))


def load_cityscapes(split="validation", *, data_dir=None, manual_dir=None, download_and_prepare=True):
    """A ``tf.data.Dataset`` of ``(image float32 0–255 (H, W, 3), train-id label int32 (H, W))``.

    Args:
        split: str. `"train"`, `"validation"` or `"test"`. Defaults to `"validation"`.
        data_dir: str or `None`. tfds data directory (where the prepared records go).
        manual_dir: str or `None`. Folder holding ``leftImg8bit_trainvaltest.zip`` and
            ``gtFine_trainvaltest.zip``. Defaults to tfds' ``<data_dir>/downloads/manual``.
        download_and_prepare: bool. Prepare the records first (nothing is downloaded: the
            builder only reads the manual zips). Defaults to `True`.
    """
    import tensorflow as tf
    import tensorflow_datasets as tfds

    if split not in ("train", "validation", "test"):
        raise ValueError(f"`split` must be 'train', 'validation' or 'test'; received split={split!r}.")
    builder = tfds.builder("cityscapes/semantic_segmentation", data_dir=data_dir)
    if download_and_prepare:
        config = tfds.download.DownloadConfig(manual_dir=manual_dir)
        builder.download_and_prepare(download_config=config)
    dataset = builder.as_dataset(split=split, shuffle_files=False)

    def convert(example):
        image = tf.cast(example["image_left"], tf.float32)
        label = to_train_ids(example["segmentation_label"][..., 0])
        return image, label

    return dataset.map(convert, num_parallel_calls=tf.data.AUTOTUNE)

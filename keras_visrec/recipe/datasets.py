"""Image sources for fine-tuning and evaluation: an image folder or a tensorflow-datasets name.

Both give a ``tf.data.Dataset`` of ``(uint8 image (h, w, 3), int32 label)`` with the images
decoded as PIL decodes them (accurate JPEG IDCT), so the evaluation transform sees the pixels the
official PyTorch pipeline sees.

An image folder has the ``keras.utils.image_dataset_from_directory`` layout: one subfolder per
class, class index = position of the subfolder name in sorted order (for ImageNet's
``n01440764`` … synset folders that is the standard 1k order).
"""

import dataclasses
import difflib
import os

import tensorflow as tf

from keras_visrec.recipe.transforms import decode_image

__all__ = ["IMAGE_EXTENSIONS", "ImageSource", "list_image_folder", "load_image_source"]

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif")


@dataclasses.dataclass
class ImageSource:
    """A decoded image dataset and what is known about it.

    Attributes:
        dataset: ``tf.data.Dataset`` of ``(uint8 image, int32 label)``.
        num_classes: int. Classes of the label space.
        num_examples: int or None. Examples in the split (None when tfds does not say).
        class_names: list of str (may be empty when the source has no names).
        description: str. Where it came from, for messages.
    """

    dataset: tf.data.Dataset
    num_classes: int
    num_examples: int
    class_names: list
    description: str


def list_image_folder(directory):
    """Files and labels of an image folder: ``(paths, labels, class_names)``.

    Raises:
        FileNotFoundError: `directory` does not exist.
        ValueError: it has no class subfolders, or they hold no image files.
    """
    directory = os.fspath(directory)
    if not os.path.isdir(directory):
        raise FileNotFoundError(f"Image folder not found: {directory!r}.")
    class_names = sorted(d for d in os.listdir(directory)
                         if os.path.isdir(os.path.join(directory, d)) and not d.startswith("."))
    if not class_names:
        raise ValueError(
            f"Image folder {directory!r} has no class subfolders: expected one subfolder per class "
            "(the keras.utils.image_dataset_from_directory layout, e.g. DIR/cat/1.jpg, DIR/dog/2.jpg)."
        )
    paths, labels = [], []
    for index, name in enumerate(class_names):
        for root, _, files in sorted(os.walk(os.path.join(directory, name))):
            for file in sorted(files):
                if file.lower().endswith(IMAGE_EXTENSIONS):
                    paths.append(os.path.join(root, file))
                    labels.append(index)
    if not paths:
        raise ValueError(
            f"Image folder {directory!r} has class subfolders {class_names[:5]} but no images with "
            f"extensions {IMAGE_EXTENSIONS}."
        )
    return paths, labels, class_names


def _folder_source(directory):
    paths, labels, class_names = list_image_folder(directory)
    dataset = tf.data.Dataset.from_tensor_slices((paths, tf.constant(labels, tf.int32)))
    dataset = dataset.map(lambda path, label: (decode_image(tf.io.read_file(path)), label),
                          num_parallel_calls=tf.data.AUTOTUNE)
    return ImageSource(dataset, len(class_names), len(paths), class_names, f"image folder {directory}")


def _tfds_builder(name, data_dir):
    try:
        import tensorflow_datasets as tfds
    except ImportError as error:  # pragma: no cover - the datasets extra is missing
        raise ImportError("tensorflow-datasets names need: pip install 'keras_visrec[datasets]'.") from error
    try:
        return tfds.builder(name, data_dir=data_dir)
    except tfds.core.registered.DatasetNotFoundError as error:
        known = tfds.list_builders()
        close = difflib.get_close_matches(name.split(":")[0].split("/")[0], known, n=5)
        hint = f" Close matches: {close}." if close else ""
        raise ValueError(
            f"Unknown dataset {name!r}: not an existing image folder and not a tensorflow-datasets name.{hint}"
        ) from error


def _tfds_source(name, split, data_dir, manual_dir):
    import tensorflow_datasets as tfds

    builder = _tfds_builder(name, data_dir)
    if manual_dir is not None:
        builder.download_and_prepare(download_config=tfds.download.DownloadConfig(manual_dir=manual_dir))
    info = builder.info
    if info.splits and split not in info.splits:  # empty before preparation (or under tfds mocks)
        raise ValueError(f"Dataset {name!r} has no split {split!r}; splits: {sorted(info.splits)}.")
    features = info.features
    if "image" not in features or "label" not in features:
        raise ValueError(f"Dataset {name!r} needs 'image' and 'label' features; it has {sorted(features)}.")
    try:
        dataset = builder.as_dataset(split=split, decoders={"image": tfds.decode.SkipDecoding()},
                                     shuffle_files=False)
    except AssertionError as error:  # tfds' way of saying "not prepared"
        raise FileNotFoundError(
            f"tensorflow-datasets {name!r} is not prepared in {builder.data_dir!r}: download/prepare it, or "
            "pass its manual download directory (manual_dir / --manual-dir; imagenet2012 needs "
            f"ILSVRC2012_img_val.tar there). ({error})"
        ) from error

    def decode(example):
        image = example["image"]
        if image.dtype == tf.string:
            image = decode_image(image)
        else:  # already decoded (e.g. by tfds' mock data)
            image = tf.image.grayscale_to_rgb(image) if image.shape[-1] == 1 else image
        return image, tf.cast(example["label"], tf.int32)

    dataset = dataset.map(decode, num_parallel_calls=tf.data.AUTOTUNE)
    label = features["label"]
    names = list(label.names) if hasattr(label, "names") else []
    count = int(info.splits[split].num_examples) if info.splits else None
    return ImageSource(dataset, int(label.num_classes), count, names, f"tfds {name}[{split}]")


def load_image_source(source, split="train", data_dir=None, manual_dir=None):
    """An `ImageSource` from an image folder path or a tensorflow-datasets name.

    Args:
        source: str. An existing directory (image folder) or a tfds name such as
            `"imagenet2012"`, `"imagenet_v2"`, `"tf_flowers"`.
        split: str. tfds split (ignored for folders). Defaults to `"train"`.
        data_dir: str or None. tfds data directory.
        manual_dir: str or None. tfds manual download directory (``imagenet2012`` needs its
            tar files there; preparation runs on first use).
    """
    if not isinstance(source, (str, os.PathLike)) or not os.fspath(source):
        raise ValueError(f"`source` must be an image folder path or a tensorflow-datasets name; received {source!r}.")
    source = os.fspath(source)
    if os.path.isdir(source):
        return _folder_source(source)
    if os.sep in source or source.startswith("."):
        raise FileNotFoundError(f"Image folder not found: {source!r}.")
    return _tfds_source(source, split, data_dir, manual_dir)

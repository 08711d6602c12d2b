"""The one resolver of ``--data``: a tensorflow-datasets name, an image folder, or ``digits``.

Every command that trains or evaluates (``finetune``, ``eval``, ``prune-study``) reads its data
through :func:`load_image_source`, so each accepts the same three kinds of source:

* an **image folder** in the ``keras.utils.image_dataset_from_directory`` layout: one subfolder
  per class, class index = position of the subfolder name in sorted order (for ImageNet's
  ``n01440764`` … synset folders that is the standard 1k order); ``holdout=`` splits off a
  stratified share as the evaluation split;
* a **tensorflow-datasets name** (``cifar10``, ``imagenet2012``, ``tf_flowers`` …);
* ``digits`` — scikit-learn's 1,797 real handwritten digits (installed with scikit-learn, no
  download), as :func:`keras_visrec.data.load_digits_images` gives them, upscaled to
  ``digits_size`` (splits ``train`` and ``test``; ``validation`` is the same held-out quarter).

Each gives a ``tf.data.Dataset`` of ``(uint8 image (h, w, 3), int32 label)`` with the images
decoded as PIL decodes them (accurate JPEG IDCT), so the evaluation transform sees the pixels the
official PyTorch pipeline sees. TensorFlow is the point here (``tf.data``).
"""

import dataclasses
import difflib
import os

import numpy as np
import tensorflow as tf

from keras_visrec.recipe.transforms import decode_image

__all__ = ["DIGITS", "IMAGE_EXTENSIONS", "ImageSource", "list_image_folder", "load_image_source",
           "source_from_args"]

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif")
DIGITS = "digits"
_DIGITS_SPLITS = ("train", "test", "validation")


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


def _folder_source(directory, split, holdout, seed):
    paths, labels, class_names = list_image_folder(directory)
    description = f"image folder {directory}"
    if holdout is not None:
        if isinstance(holdout, bool) or not isinstance(holdout, float) or not 0.0 < holdout < 1.0:
            raise ValueError(f"`holdout` must be a float in (0, 1) (the share of each class held out); received "
                             f"holdout={holdout!r}.")
        held = _stratified_holdout(np.asarray(labels), holdout, seed)
        keep = ~held if split == "train" else held
        paths = [p for p, k in zip(paths, keep) if k]
        labels = [label for label, k in zip(labels, keep) if k]
        part, share = ("train", 1 - holdout) if split == "train" else ("held-out", holdout)
        description += f" [{part} {share:.0%}]"
        if not paths:
            raise ValueError(f"{description}: no images left for split {split!r} (holdout={holdout}).")
    dataset = tf.data.Dataset.from_tensor_slices((paths, tf.constant(labels, tf.int32)))
    dataset = dataset.map(lambda path, label: (decode_image(tf.io.read_file(path)), label),
                          num_parallel_calls=tf.data.AUTOTUNE)
    return ImageSource(dataset, len(class_names), len(paths), class_names, description)


def _stratified_holdout(labels, share, seed):
    """A boolean mask holding out ``round(share · n_c)`` of each class (at least one when n_c > 1)."""
    rng = np.random.default_rng(seed)
    held = np.zeros(labels.size, bool)
    for label in np.unique(labels):
        index = np.flatnonzero(labels == label)
        rng.shuffle(index)
        count = min(max(1, int(round(share * index.size))), index.size - 1) if index.size > 1 else 0
        held[index[:count]] = True
    return held


def _digits_source(split, size, seed):
    from keras_visrec.data import load_digits_images

    if split not in _DIGITS_SPLITS:
        raise ValueError(f"`split` of 'digits' must be one of {_DIGITS_SPLITS}; received split={split!r}.")
    (x_train, y_train), (x_test, y_test) = load_digits_images(size=size, seed=seed)
    images, labels = (x_train, y_train) if split == "train" else (x_test, y_test)
    dataset = tf.data.Dataset.from_tensor_slices((np.round(images).astype("uint8"), labels.astype("int32")))
    return ImageSource(dataset, 10, len(labels), [str(d) for d in range(10)],
                       f"digits [{split}, {size}x{size}] (scikit-learn)")


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


def _tfds_source(name, split, data_dir, manual_dir, download):
    import tensorflow_datasets as tfds

    builder = _tfds_builder(name, data_dir)
    if manual_dir is not None:
        builder.download_and_prepare(download_config=tfds.download.DownloadConfig(manual_dir=manual_dir))
    elif download:
        builder.download_and_prepare()
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


def load_image_source(source, split="train", data_dir=None, manual_dir=None, *, download=False, holdout=None,
                      digits_size=32, seed=0):
    """An `ImageSource` from an image folder, a tensorflow-datasets name or ``"digits"``.

    Args:
        source: str. An existing directory (image folder), ``"digits"``, or a tfds name such as
            `"imagenet2012"`, `"imagenet_v2"`, `"tf_flowers"`, `"cifar10"`.
        split: str. tfds split; for digits `"train"` or `"test"` (`"validation"`: the same
            held-out quarter); for a folder, `"train"` or any other name for the held-out share
            when `holdout` is given (else the whole folder). Defaults to `"train"`.
        data_dir: str or None. tfds data directory.
        manual_dir: str or None. tfds manual download directory (``imagenet2012`` needs its
            tar files there; preparation runs on first use).
        download: bool. Let tensorflow-datasets download and prepare the dataset when it is
            missing. Defaults to `False`.
        holdout: float in (0, 1) or None. Image folders: the share of each class (chosen with
            `seed`) that forms the held-out split. Defaults to `None` (no split).
        digits_size: int. Height and width of the digits images (>= 8). Defaults to `32`.
        seed: int. Seed of the folder holdout and of the digits split. Defaults to `0`.
    """
    if not isinstance(source, (str, os.PathLike)) or not os.fspath(source):
        raise ValueError(f"`source` must be an image folder path, 'digits' or a tensorflow-datasets name; "
                         f"received {source!r}.")
    source = os.fspath(source)
    if os.path.isdir(source):
        return _folder_source(source, split, holdout, seed)
    if source == DIGITS:
        return _digits_source(split, digits_size, seed)
    if os.sep in source or source.startswith("."):
        raise FileNotFoundError(f"Image folder not found: {source!r}.")
    return _tfds_source(source, split, data_dir, manual_dir, download)


def source_from_args(args, split="train", **kwargs):
    """:func:`load_image_source` for a command line parsed with ``cli_args.add_data``.

    Reads ``args.data``, ``args.data_dir`` and ``args.manual_dir``; ``kwargs`` are passed on.
    """
    return load_image_source(args.data, split, getattr(args, "data_dir", None), getattr(args, "manual_dir", None),
                             **kwargs)

"""Segmentation data: ADE20K from its own folder or tensorflow-datasets, any image+mask folder, the digit canvases.

Every loader returns a :class:`SegmentationSource` whose ``dataset`` yields ``(image, label,
name)``: a uint8 RGB image ``(h, w, 3)``, an int32 class map ``(h, w)`` (255 = ignore) and the
example's file or id, so an error can say which file is wrong. ``source.pairs()`` drops the name
for ``model.fit``.

* **ADE20K folder** (``ADEChallengeData2016`` as released by MIT): ``images/{training,validation}/
  ADE_*.jpg`` with ``annotations/{training,validation}/ADE_*.png`` (8-bit, 0 = "other", 1–150 the
  classes). As mmseg's ``reduce_zero_label=True``: 0 becomes the ignore label 255 and every other
  label ``l`` becomes ``l − 1`` (150 classes, 0–149).
* **Any image+mask folder** in the same layout (``images/<split>/*`` + ``annotations/<split>/*.png``
  matched by file stem, or the two folders without a split level), with or without the zero
  reduction.
* **tensorflow-datasets** ``scene_parse150`` (4.9): read from a prepared ``data_dir``. Its builder
  downloads the Places Challenge 2017 ``images.tar`` with ``annotations_instance.tar`` — the
  *instance* annotations, whose red channel is one of 100 object categories
  (``instanceInfo100``), not the 150-class semantic maps — and it offers no manual-download path.
  Its labels are mapped by name onto the ADE20K-150 ids; every pixel outside those objects (walls,
  floors, sky … and unlabelled) is ignored, so mIoU on it is *not* the benchmark's figure
  (``source.benchmark`` is False). tfds calls the validation images ``test``.
* ``digits``: the digit canvases of :mod:`keras_visrec.data.digit_segmentation` (11 classes), as
  the demo trains on them (:data:`DIGIT_TASK`).

Labels ≥ ``classes`` other than 255 stop the pipeline with an error naming the file.
"""

import dataclasses
import os

import numpy as np
import tensorflow as tf

from keras_visrec.recipe.transforms import decode_image
from keras_visrec.segmentation.metrics import IGNORE_LABEL

__all__ = [
    "ADE20K_CLASSES", "ADE20K_CLASS_NAMES", "DIGIT_CLASS_NAMES", "DIGIT_TASK", "SCENE_PARSE150_INSTANCE_NAMES", "SegmentationSource",
    "list_segmentation_folder", "load_ade20k", "load_digit_canvases", "load_scene_parse150",
    "load_segmentation_data", "load_segmentation_folder", "palette", "reduce_zero_label", "source_from_arrays",
]

ADE20K_CLASS_NAMES = (
    "wall", "building", "sky", "floor", "tree", "ceiling", "road", "bed", "windowpane", "grass", "cabinet",
    "sidewalk", "person", "earth", "door", "table", "mountain", "plant", "curtain", "chair", "car", "water",
    "painting", "sofa", "shelf", "house", "sea", "mirror", "rug", "field", "armchair", "seat", "fence", "desk",
    "rock", "wardrobe", "lamp", "bathtub", "railing", "cushion", "base", "box", "column", "signboard",
    "chest of drawers", "counter", "sand", "sink", "skyscraper", "fireplace", "refrigerator", "grandstand", "path",
    "stairs", "runway", "case", "pool table", "pillow", "screen door", "stairway", "river", "bridge", "bookcase",
    "blind", "coffee table", "toilet", "flower", "book", "hill", "bench", "countertop", "stove", "palm",
    "kitchen island", "computer", "swivel chair", "boat", "bar", "arcade machine", "hovel", "bus", "towel",
    "light", "truck", "tower", "chandelier", "awning", "streetlight", "booth", "television receiver", "airplane",
    "dirt track", "apparel", "pole", "land", "bannister", "escalator", "ottoman", "bottle", "buffet", "poster",
    "stage", "van", "ship", "fountain", "conveyer belt", "canopy", "washer", "plaything", "swimming pool",
    "stool", "barrel", "basket", "waterfall", "tent", "bag", "minibike", "cradle", "oven", "ball", "food", "step",
    "tank", "trade name", "microwave", "pot", "animal", "bicycle", "lake", "dishwasher", "screen", "blanket",
    "sculpture", "hood", "sconce", "vase", "traffic light", "tray", "ashcan", "fan", "pier", "crt screen",
    "plate", "monitor", "bulletin board", "shower", "radiator", "glass", "clock", "flag",
)
ADE20K_CLASSES = len(ADE20K_CLASS_NAMES)
# Places Challenge 2017 instance categories 1..100 (placeschallenge instanceInfo100_train.txt order)
SCENE_PARSE150_INSTANCE_NAMES = (
    "bed", "windowpane", "cabinet", "person", "door", "table", "curtain", "chair", "car", "painting", "sofa",
    "shelf", "mirror", "armchair", "seat", "fence", "desk", "wardrobe", "lamp", "bathtub", "railing", "cushion",
    "box", "column", "signboard", "chest of drawers", "counter", "sink", "fireplace", "refrigerator", "stairs",
    "case", "pool table", "pillow", "screen door", "bookcase", "coffee table", "toilet", "flower", "book",
    "bench", "countertop", "stove", "palm", "kitchen island", "computer", "swivel chair", "boat",
    "arcade machine", "bus", "towel", "light", "truck", "chandelier", "awning", "streetlight", "booth",
    "television receiver", "airplane", "apparel", "pole", "bannister", "ottoman", "bottle", "van", "ship",
    "fountain", "washer", "plaything", "stool", "barrel", "basket", "bag", "minibike", "oven", "ball", "food",
    "step", "trade name", "microwave", "pot", "animal", "bicycle", "dishwasher", "screen", "sculpture", "hood",
    "sconce", "vase", "traffic light", "tray", "ashcan", "fan", "plate", "monitor", "bulletin board", "radiator",
    "glass", "clock", "flag",
)
DIGIT_CLASS_NAMES = ("background",) + tuple(str(d) for d in range(10))
# the digit canvases of the segmentation demo and its CI task: 32×32, one digit of 20–28 px each
DIGIT_TASK = dict(size=32, digits_per_canvas=(1, 1), digit_sizes=(20, 24, 28))
_IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp")
_ADE_SPLITS = {"train": "training", "training": "training", "validation": "validation", "val": "validation"}


@dataclasses.dataclass
class SegmentationSource:
    """A decoded segmentation dataset and what is known about it.

    Attributes:
        dataset: ``tf.data.Dataset`` of ``(uint8 image (h, w, 3), int32 label (h, w), name)``.
        classes: int. Classes of the label space (255 is ignored).
        class_names: tuple of str.
        num_examples: int or None.
        description: str. Where it came from, for messages.
        benchmark: bool. Whether the labels are the benchmark's own (so a published mIoU applies).
    """

    dataset: tf.data.Dataset
    classes: int
    class_names: tuple
    num_examples: int | None
    description: str
    benchmark: bool = True

    def pairs(self):
        """The ``(image, label)`` dataset, for training pipelines."""
        return self.dataset.map(lambda image, label, name: (image, label), num_parallel_calls=tf.data.AUTOTUNE)


def reduce_zero_label(label):
    """mmseg's ``reduce_zero_label``: 0 (ADE20K's "other") → 255, ``l`` → ``l − 1`` (NumPy or TensorFlow)."""
    if isinstance(label, np.ndarray):
        label = label.astype(np.int32)
        return np.where(label == 0, IGNORE_LABEL, np.where(label == IGNORE_LABEL, IGNORE_LABEL, label - 1))
    label = tf.cast(label, tf.int32)
    return tf.where(tf.logical_or(label == 0, label == IGNORE_LABEL), IGNORE_LABEL, label - 1)


def _checked(label, classes, ignore_label, name):
    """Stops the pipeline, naming the file, when a label is outside ``[0, classes)`` and not ignored."""
    bad = tf.logical_and(tf.not_equal(label, ignore_label), tf.logical_or(label < 0, label >= classes))
    values = tf.unique(tf.boolean_mask(label, bad))[0][:10]
    check = tf.debugging.Assert(tf.logical_not(tf.reduce_any(bad)), [
        f"label values outside [0, {classes}) that are not the ignore label {ignore_label} in", name, values,
        "(pass the right `classes` or `reduce_zero_label`)"])
    with tf.control_dependencies([check]):
        return tf.identity(label)


def _stem(path):
    return os.path.splitext(os.path.basename(path))[0]


def _files(directory, extensions):
    return sorted(os.path.join(directory, f) for f in os.listdir(directory)
                  if f.lower().endswith(extensions) and not f.startswith("."))


def list_segmentation_folder(root, split=None, image_dir="images", mask_dir="annotations"):
    """Matched ``(image paths, mask paths)`` of an image+mask folder.

    Args:
        root: str. The folder holding ``image_dir`` and ``mask_dir``.
        split: str or None. Sub-folder of both (ADE20K: ``training`` / ``validation``; ``train``
            and ``val`` are accepted for those). `None`: no split level.
        image_dir, mask_dir: str. Defaults to ADE20K's `"images"` and `"annotations"`.

    Raises:
        FileNotFoundError: a folder is missing. ValueError: no pairs, or an image without a mask.
    """
    root = os.fspath(root)
    sub = [] if split is None else [_ADE_SPLITS.get(split, split)]
    images_path = os.path.join(root, image_dir, *sub)
    masks_path = os.path.join(root, mask_dir, *sub)
    for path in (images_path, masks_path):
        if not os.path.isdir(path):
            raise FileNotFoundError(
                f"Segmentation folder {root!r} has no {path!r}: expected {image_dir}/{'<split>/' if sub else ''}*.jpg "
                f"and {mask_dir}/{'<split>/' if sub else ''}*.png (ADE20K's ADEChallengeData2016 layout).")
    images = _files(images_path, _IMAGE_EXTENSIONS)
    masks = {_stem(p): p for p in _files(masks_path, (".png",))}
    if not images:
        raise ValueError(f"No images ({', '.join(_IMAGE_EXTENSIONS)}) in {images_path!r}.")
    missing = [p for p in images if _stem(p) not in masks]
    if missing:
        raise ValueError(f"{len(missing)} image(s) in {images_path!r} have no mask <stem>.png in {masks_path!r}, "
                         f"e.g. {os.path.basename(missing[0])!r}.")
    return images, [masks[_stem(p)] for p in images]


def load_segmentation_folder(root, split=None, *, classes, class_names=(), reduce_zero=False, image_dir="images",
                             mask_dir="annotations", ignore_label=IGNORE_LABEL, benchmark=True):
    """A :class:`SegmentationSource` from an image+mask folder (see :func:`list_segmentation_folder`).

    Args:
        root, split, image_dir, mask_dir: as :func:`list_segmentation_folder`.
        classes: int. Classes after the zero reduction.
        class_names: sequence of str. Defaults to `()`.
        reduce_zero: bool. mmseg's ``reduce_zero_label`` (0 → 255, ``l`` → ``l − 1``). Defaults to `False`.
        ignore_label: int. Defaults to `255`.
        benchmark: bool. Recorded on the source. Defaults to `True`.
    """
    images, masks = list_segmentation_folder(root, split, image_dir, mask_dir)

    def read(image_path, mask_path):
        image = decode_image(tf.io.read_file(image_path))
        label = tf.cast(tf.io.decode_png(tf.io.read_file(mask_path), channels=1)[..., 0], tf.int32)
        if reduce_zero:
            label = reduce_zero_label(label)
        return image, _checked(label, classes, ignore_label, mask_path), mask_path

    dataset = tf.data.Dataset.from_tensor_slices((images, masks)).map(read, num_parallel_calls=tf.data.AUTOTUNE)
    where = os.path.join(root, image_dir, _ADE_SPLITS.get(split, split)) if split else root
    return SegmentationSource(dataset, int(classes), tuple(class_names), len(images), f"folder {where}", benchmark)


def load_ade20k(root, split="validation"):
    """ADE20K (SceneParsing 150) from the released ``ADEChallengeData2016`` folder, reduce_zero_label as mmseg.

    Args:
        root: str. The ``ADEChallengeData2016`` folder (or one with the same layout).
        split: str. ``"validation"`` (2000 images) or ``"training"`` (20210). Defaults to `"validation"`.
    """
    if split not in _ADE_SPLITS:
        raise ValueError(f"`split` must be one of {sorted(_ADE_SPLITS)}; received split={split!r}.")
    return load_segmentation_folder(root, split, classes=ADE20K_CLASSES, class_names=ADE20K_CLASS_NAMES,
                                    reduce_zero=True)


def _instance_to_ade150():
    table = np.full(256, IGNORE_LABEL, np.int32)
    for index, name in enumerate(SCENE_PARSE150_INSTANCE_NAMES, start=1):
        table[index] = ADE20K_CLASS_NAMES.index(name)
    return table


def load_scene_parse150(split="validation", *, data_dir=None):
    """tensorflow-datasets' ``scene_parse150`` (prepared in ``data_dir``), labels on the ADE20K-150 ids.

    Only the 100 object categories of its instance annotations are labelled; everything else is
    ignored (see the module docstring): ``benchmark`` is False.

    Args:
        split: str. ``"validation"`` (tfds' ``test``) or ``"train"``. Defaults to `"validation"`.
        data_dir: str or None. tfds data directory holding ``scene_parse150/1.0.0``.
    """
    import tensorflow_datasets as tfds

    splits = {"validation": "test", "val": "test", "test": "test", "train": "train", "training": "train"}
    if split not in splits:
        raise ValueError(f"`split` must be one of {sorted(splits)}; received split={split!r}.")
    builder = tfds.builder("scene_parse150", data_dir=data_dir)
    try:
        dataset = builder.as_dataset(split=splits[split], shuffle_files=False,
                                     read_config=tfds.ReadConfig(add_tfds_id=True))
    except AssertionError as error:  # tfds' way of saying "not prepared"
        raise FileNotFoundError(
            f"tensorflow-datasets 'scene_parse150' is not prepared in {builder.data_dir!r}. Its builder downloads "
            "the Places Challenge 2017 tars itself (no manual directory); prepare it where there is a network, or "
            "use the ADEChallengeData2016 folder (--data PATH) for the 150-class benchmark.") from error
    table = tf.constant(_instance_to_ade150())

    def convert(example):
        label = tf.gather(table, tf.cast(example["annotation"][..., 0], tf.int32))
        return example["image"], label, example["tfds_id"]

    count = int(builder.info.splits[splits[split]].num_examples) if builder.info.splits else None
    return SegmentationSource(dataset.map(convert, num_parallel_calls=tf.data.AUTOTUNE), ADE20K_CLASSES,
                              ADE20K_CLASS_NAMES, count, f"tfds scene_parse150[{splits[split]}]", benchmark=False)


def load_digit_canvases(split="validation", *, num_train=512, num_test=128, seed=0, **task):
    """The digit canvases (:func:`keras_visrec.data.load_digit_segmentation`) as a source (11 classes).

    ``task`` overrides :data:`DIGIT_TASK` (the demo's 32×32 canvases with one digit each), e.g.
    ``size=64, digits_per_canvas=(1, 3)`` for the ADP-C canvases.
    """
    from keras_visrec.data.digit_segmentation import DIGIT_SEGMENTATION_CLASSES, load_digit_segmentation

    task = {**DIGIT_TASK, **task}
    train, test = load_digit_segmentation(num_train=num_train, num_test=num_test, seed=seed, **task)
    images, labels = train if split in ("train", "training") else test
    return source_from_arrays(images, labels, DIGIT_SEGMENTATION_CLASSES, DIGIT_CLASS_NAMES,
                              f"digit canvases {task['size']}×{task['size']} [{split}]")


def source_from_arrays(images, labels, classes, class_names=(), description="arrays"):
    """A :class:`SegmentationSource` over in-memory ``images (n, h, w, 3)`` and ``labels (n, h, w)``."""
    if len(images) != len(labels):
        raise ValueError(f"{len(images)} images but {len(labels)} label maps.")
    names = [f"{description}[{i}]" for i in range(len(images))]
    images = np.clip(np.rint(np.asarray(images, np.float32)), 0, 255).astype(np.uint8)
    dataset = tf.data.Dataset.from_tensor_slices((images, np.asarray(labels, np.int32), names))
    return SegmentationSource(dataset, int(classes), tuple(class_names), len(images), description)


def load_segmentation_data(data, split="validation", *, data_dir=None, classes=None, reduce_zero=None):
    """A source from a name: ``"digits"``, ``"scene_parse150"`` (tfds), or a folder.

    A folder with ``images/`` and ``annotations/`` is read as ADE20K (150 classes, zero reduced)
    unless ``classes`` says otherwise; ``split`` names the sub-folder (`None` for none).

    Args:
        data: str. ``"digits"``, ``"scene_parse150"`` or a folder path.
        split: str or None. Defaults to `"validation"`.
        data_dir: str or None. tfds data directory.
        classes: int or None. Classes of a folder's labels. `None`: ADE20K's 150.
        reduce_zero: bool or None. `None`: on for ADE20K (``classes`` None), off otherwise.
    """
    if not isinstance(data, (str, os.PathLike)) or not os.fspath(data):
        raise ValueError(f"`data` must be 'digits', 'scene_parse150' or a folder; received data={data!r}.")
    data = os.fspath(data)
    if data == "digits":
        return load_digit_canvases(split)
    if data.split(":")[0] == "scene_parse150":
        return load_scene_parse150(split, data_dir=data_dir)
    if os.path.isdir(data):
        if split is not None and not os.path.isdir(os.path.join(data, "images", _ADE_SPLITS.get(split, split))) \
                and _has_images(data):
            split = None  # images/ holds the files themselves: no split level
        if classes is None:
            return load_segmentation_folder(data, split, classes=ADE20K_CLASSES, class_names=ADE20K_CLASS_NAMES,
                                            reduce_zero=True if reduce_zero is None else reduce_zero)
        return load_segmentation_folder(data, split, classes=classes, reduce_zero=bool(reduce_zero))
    raise FileNotFoundError(f"`data` {data!r} is not 'digits', not 'scene_parse150' and not an existing folder.")


def _has_images(root):
    folder = os.path.join(root, "images")
    return os.path.isdir(folder) and any(f.lower().endswith(_IMAGE_EXTENSIONS) for f in os.listdir(folder))


def palette(classes):
    """A fixed colour per class (uint8 ``(classes, 3)``), PASCAL VOC's bit-spreading colour map."""
    colours = np.zeros((classes, 3), np.uint8)
    for index in range(classes):
        value, red, green, blue = index + 1, 0, 0, 0
        for bit in range(8):
            red |= ((value >> 0) & 1) << (7 - bit)
            green |= ((value >> 1) & 1) << (7 - bit)
            blue |= ((value >> 2) & 1) << (7 - bit)
            value >>= 3
        colours[index] = (red, green, blue)
    return colours

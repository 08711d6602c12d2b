"""ADE20K's folder layout, tfds scene_parse150 (a real prepared directory), evaluation over a dataset."""

import os
from unittest import mock

import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_visrec.segmentation.datasets import (ADE20K_CLASSES, ADE20K_CLASS_NAMES, SCENE_PARSE150_INSTANCE_NAMES,
                                                list_segmentation_folder, load_ade20k, load_scene_parse150,
                                                load_segmentation_data, reduce_zero_label)
from keras_visrec.segmentation.evaluate import evaluate_segmentation, published_miou
from keras_visrec.segmentation.metrics import ConfusionMatrix


def test_ade20k_folder_reduces_zero_label(tmp_path, make_ade20k):
    raw = make_ade20k(str(tmp_path))
    source = load_ade20k(str(tmp_path), "validation")
    assert source.classes == ADE20K_CLASSES == 150 and source.num_examples == 3 and source.benchmark
    examples = list(source.dataset.as_numpy_iterator())
    for (image, label, name), expected in zip(examples, raw):
        assert image.dtype == np.uint8 and image.shape == expected.shape + (3,)
        np.testing.assert_array_equal(label, np.where(expected == 0, 255, expected.astype(np.int32) - 1))
        assert name.decode().endswith(".png")
    np.testing.assert_array_equal(reduce_zero_label(np.array([0, 1, 150, 255])), [255, 0, 149, 255])
    np.testing.assert_array_equal(reduce_zero_label(tf.constant([0, 1, 150, 255])).numpy(), [255, 0, 149, 255])
    assert ADE20K_CLASS_NAMES[:3] == ("wall", "building", "sky") and ADE20K_CLASS_NAMES[-1] == "flag"
    pairs = next(iter(source.pairs()))
    assert len(pairs) == 2


def test_folder_errors_name_the_file(tmp_path, make_ade20k):
    make_ade20k(str(tmp_path), bad=200)  # 200 → 199 after the reduction, ≥ 150
    source = load_ade20k(str(tmp_path))
    with pytest.raises(tf.errors.InvalidArgumentError, match=r"ADE_val_00000003\.png"):
        list(source.dataset)
    os.remove(os.path.join(tmp_path, "annotations", "validation", "ADE_val_00000001.png"))
    with pytest.raises(ValueError, match=r"have no mask.*ADE_val_00000001\.jpg"):
        load_ade20k(str(tmp_path))
    with pytest.raises(FileNotFoundError, match="ADEChallengeData2016 layout"):
        list_segmentation_folder(str(tmp_path), "training")
    with pytest.raises(ValueError, match="split"):
        load_ade20k(str(tmp_path), "testing")


def test_plain_image_mask_folder_without_split(tmp_path, write_image):
    write_image(os.path.join(tmp_path, "images", "a.png"), np.zeros((8, 8, 3), np.uint8), "png")
    write_image(os.path.join(tmp_path, "annotations", "a.png"), np.full((8, 8, 1), 2, np.uint8), "png")
    source = load_segmentation_data(str(tmp_path), "validation", classes=3)
    _, label, _ = next(source.dataset.as_numpy_iterator())
    assert source.classes == 3 and (label == 2).all()


def test_tfds_scene_parse150_prepared_dir(tmp_path, write_image):
    """The real tfds 4.9 builder prepares a directory from local files in the Places Challenge layout."""
    tfds = pytest.importorskip("tensorflow_datasets")
    rng = np.random.default_rng(5)
    for split in ("training", "validation"):
        for i in range(2):
            stem = f"ADE_{split}_{i}"
            write_image(os.path.join(tmp_path, "img", "images", split, stem + ".jpg"),
                   rng.integers(0, 255, (12, 16, 3), dtype=np.uint8), "jpg")
            annotation = np.zeros((12, 16, 3), np.uint8)  # R: instance category 1..100, G: instance id
            annotation[2:6, 3:9, 0], annotation[2:6, 3:9, 1] = 4, 1  # 4 = "person"
            annotation[8:, :4, 0], annotation[8:, :4, 1] = 100, 2  # 100 = "flag"
            write_image(os.path.join(tmp_path, "ann", "annotations_instance", split, stem + ".png"), annotation, "png")
    paths = {"images": str(tmp_path / "img"), "annotations": str(tmp_path / "ann")}
    with mock.patch.object(tfds.download.DownloadManager, "download_and_extract", return_value=paths):
        tfds.builder("scene_parse150", data_dir=str(tmp_path / "tfds")).download_and_prepare()
    source = load_scene_parse150("validation", data_dir=str(tmp_path / "tfds"))
    assert not source.benchmark and source.num_examples == 2
    image, label, name = next(source.dataset.as_numpy_iterator())
    assert image.shape == (12, 16, 3)
    person, flag = ADE20K_CLASS_NAMES.index("person"), ADE20K_CLASS_NAMES.index("flag")
    assert (label[2:6, 3:9] == person).all() and (label[8:, :4] == flag).all()
    assert set(np.unique(label)) == {person, flag, 255}
    assert b"test" in name  # tfds names the validation images "test"
    assert len(SCENE_PARSE150_INSTANCE_NAMES) == 100
    with pytest.raises(FileNotFoundError, match="not prepared"):
        load_scene_parse150(data_dir=str(tmp_path / "empty"))


def _constant_model(classes, label):
    """A dynamic-size model predicting ``label`` everywhere."""
    inputs = keras.Input((None, None, 3))
    conv = keras.layers.Conv2D(classes, 1)
    model = keras.Model(inputs, conv(inputs))
    bias = np.zeros(classes, "float32")
    bias[label] = 5.0
    conv.set_weights([np.zeros((1, 1, 3, classes), "float32"), bias])
    return model


def test_evaluate_accumulates_over_the_dataset_and_compares(tmp_path, make_ade20k):
    raw = make_ade20k(str(tmp_path))
    model = _constant_model(150, 7)
    result = evaluate_segmentation(model, str(tmp_path), mode="whole", published=46.0, progress=False)
    expected = ConfusionMatrix(150)
    for label in raw:
        reduced = reduce_zero_label(label)
        expected.update(reduced, np.full(label.shape, 7))
    assert result.count == 3
    assert result.scores.miou == pytest.approx(expected.scores().miou)
    assert result.delta == pytest.approx(result.scores.miou - 46.0)
    assert "published mIoU 46.00" in result.summary() and "3 images" in result.summary()
    assert evaluate_segmentation(model, str(tmp_path), mode="whole", max_examples=1, progress=False).count == 1
    with pytest.raises(ValueError, match="predicts 11 classes but"):
        evaluate_segmentation(_constant_model(11, 0), str(tmp_path), progress=False)


def test_evaluate_names_a_bad_mask(tmp_path, make_ade20k):
    make_ade20k(str(tmp_path), bad=230)
    with pytest.raises(ValueError, match=r"ADE_val_00000003\.png"):
        evaluate_segmentation(_constant_model(150, 0), str(tmp_path), mode="whole", progress=False)


def test_published_miou_from_the_catalogue(tmp_path, make_ade20k):
    zoo_id = "upernet_convnext_tiny.fb_in1k_ade20k_512"
    value, where = published_miou(zoo_id)
    assert value == 46.0 and zoo_id in where  # the official README's single-scale mIoU
    assert published_miou(zoo_id, multi_scale=True)[0] == 46.7
    value, why = published_miou("convnext_tiny.fb_in1k")
    assert value is None and "publishes no 'miou'" in why
    make_ade20k(str(tmp_path))
    result = evaluate_segmentation(_constant_model(150, 0), str(tmp_path), zoo_id=zoo_id, mode="whole",
                                   ratios=(0.5, 1.0), progress=False)
    assert result.published_miou == 46.7  # two ratios: the multi-scale figure
    assert "delta" in result.summary()

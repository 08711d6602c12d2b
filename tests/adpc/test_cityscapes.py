"""Cityscapes through tfds' manual-dir builder, on a tiny fixture in the real zip layout."""

import io
import zipfile

import numpy as np
import pytest

from keras_visrec.data.cityscapes import CITYSCAPES_CLASSES, load_cityscapes, to_train_ids


def test_train_id_mapping():
    ids = np.array([0, 7, 8, 26, 33, 34, 255, 6])
    np.testing.assert_array_equal(to_train_ids(ids), [255, 0, 1, 13, 18, 255, 255, 255])
    assert CITYSCAPES_CLASSES == 19


def _png(array):
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.mark.slow
def test_load_cityscapes_from_manual_zips(tmp_path):
    pytest.importorskip("tensorflow_datasets")
    manual = tmp_path / "manual"
    manual.mkdir()
    rng = np.random.default_rng(0)
    labels = {}
    with zipfile.ZipFile(manual / "leftImg8bit_trainvaltest.zip", "w") as images, \
            zipfile.ZipFile(manual / "gtFine_trainvaltest.zip", "w") as gt:
        for split in ("train", "val", "test"):
            image_id = f"aachen_000000_00001{len(split)}"
            image = np.zeros((1024, 2048, 3), np.uint8)  # tfds fixes Cityscapes' size
            image[:8, :16] = rng.integers(0, 255, (8, 16, 3), dtype=np.uint8)
            label = np.full((1024, 2048), 7, np.uint8)
            label[:8, :16] = rng.choice([0, 7, 8, 26, 33], (8, 16)).astype(np.uint8)
            labels[split] = label
            images.writestr(f"leftImg8bit/{split}/aachen/{image_id}_leftImg8bit.png", _png(image))
            gt.writestr(f"gtFine/{split}/aachen/{image_id}_gtFine_labelIds.png", _png(label))
    dataset = load_cityscapes("validation", data_dir=str(tmp_path / "tfds"), manual_dir=str(manual))
    (image, label), = list(dataset.as_numpy_iterator())
    assert image.shape == (1024, 2048, 3) and image.dtype == np.float32
    np.testing.assert_array_equal(label, to_train_ids(labels["val"]))
    with pytest.raises(ValueError, match="split"):
        load_cityscapes("val", data_dir=str(tmp_path / "tfds"), manual_dir=str(manual))

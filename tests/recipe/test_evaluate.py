"""keras-visrec eval on small fixtures in the real on-disk formats (image folder, tfds)."""

import numpy as np
import pytest
import tensorflow as tf

import keras_visrec
from keras_visrec.recipe.cli import main
from keras_visrec.recipe.evaluate import evaluate
from keras_visrec.recipe.transforms import eval_transform


@pytest.fixture(scope="module")
def jpeg_folder(tmp_path_factory):
    """Three synset-named class folders of JPEGs of assorted sizes (ImageNet val's layout)."""
    Image = pytest.importorskip("PIL.Image")
    root = tmp_path_factory.mktemp("val")
    rng = np.random.default_rng(0)
    for label, synset in enumerate(("n01440764", "n01443537", "n01484850")):
        (root / synset).mkdir()
        for index in range(4):
            h, w = rng.integers(40, 90, 2)
            image = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
            Image.fromarray(image).save(root / synset / f"ILSVRC2012_val_{label}{index}.JPEG", quality=90)
    return root


def _tiny(classes=3):
    return keras_visrec.ConvNeXt((1, 1, 1, 1), (8, 16, 32, 64), input_shape=(64, 64, 3), classes=classes)


def test_folder_eval_equals_a_direct_computation(jpeg_folder):
    Image = pytest.importorskip("PIL.Image")
    model = _tiny()
    result = evaluate(model, str(jpeg_folder), image_size=64, batch_size=5, published=81.0, verbose=0)
    images, labels = [], []
    for label, synset in enumerate(sorted(p.name for p in jpeg_folder.iterdir())):
        for path in sorted((jpeg_folder / synset).iterdir()):
            images.append(np.asarray(Image.open(path).convert("RGB")))
            labels.append(label)
    x = np.stack([eval_transform(tf.constant(i), 64, normalize=False).numpy() for i in images])
    predictions = np.asarray(model(x)).argmax(-1)
    assert result.count == 12
    assert result.top1 == pytest.approx(100.0 * np.mean(predictions == np.array(labels)))
    assert result.top5 == 100.0  # 3 classes
    assert result.delta == pytest.approx(result.top1 - 81.0)
    assert "published top-1 81.00%" in result.summary()


def test_cli_eval_on_tfds_mock_imagenet_v2(tmp_path, capsys):
    tfds = pytest.importorskip("tensorflow_datasets")
    model = _tiny(classes=1000)
    path = tmp_path / "tiny.keras"
    model.save(path)
    with tfds.testing.mock_data(num_examples=6):
        code = main(["eval", str(path), "--data", "imagenet_v2", "--image-size", "64", "--batch-size", "3",
                     "--published-top1", "82.1"])
    out = capsys.readouterr().out
    assert code == 0
    assert "tfds imagenet_v2[test] at 64px: top-1" in out and "(6 images)" in out and "published top-1 82.10%" in out


def test_eval_errors(jpeg_folder, tmp_path):
    with pytest.raises(ValueError, match="has 3 classes but the model's head has 2"):
        evaluate(_tiny(classes=2), str(jpeg_folder), image_size=64, verbose=0)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no class subfolders"):
        evaluate(_tiny(), str(tmp_path / "empty"), image_size=64, verbose=0)
    with pytest.raises(ValueError, match="Unknown dataset 'imagenet2013'"):
        evaluate(_tiny(), "imagenet2013", image_size=64, verbose=0)


def test_published_top1_and_resolution_come_from_the_catalogue(jpeg_folder):
    from keras_visrec.recipe.evaluate import published_top1

    assert published_top1("convnext_tiny.fb_in1k") == 82.1
    assert published_top1("convnext_base.fb_in22k") is None  # 21841-class head: no 1k top-1
    assert published_top1("weights.keras") is None
    assert published_top1("imagenet", arch="convnext_tiny") == 82.1
    with pytest.raises(ValueError, match="Close matches.*convnext_tiny.fb_in1k"):
        published_top1("convnext_tiny.fb_in1")  # a misspelled id is an error, not "no reference"
    model = keras_visrec.ConvNeXt((1, 1, 1, 1), (8, 16, 32, 64), input_shape=(None, None, 3), classes=3)
    result = evaluate(model, str(jpeg_folder), weights="convnext_base.fb_in1k_384", batch_size=4, verbose=0)
    assert result.published_top1 == 85.1 and result.count == 12 and result.image_size == 384

"""``keras-visrec seg-eval`` and ``seg-predict``: tables, published comparison, atomic overlay PNGs, bad input."""

import json
import os

import numpy as np
import pytest
import tensorflow as tf

from keras_visrec.cli import main
from keras_visrec.segmentation.datasets import palette
from keras_visrec.upernet import UperNet


@pytest.fixture(scope="module")
def model_file(tmp_path_factory):
    path = str(tmp_path_factory.mktemp("models") / "tiny150.keras")
    UperNet(dict(depths=(1, 1, 1, 1), dims=(8, 16, 32, 64)), 150, input_shape=(32, 32, 3), channels=16,
            aux_channels=8).save(path)
    return path


def _image(tmp_path, name="photo.png", size=(32, 48)):
    path = str(tmp_path / name)
    tf.io.write_file(path, tf.io.encode_png(np.random.default_rng(0).integers(0, 255, (*size, 3), dtype=np.uint8)))
    return path


def test_seg_predict_writes_a_colour_overlay(tmp_path, model_file, capsys):
    image = _image(tmp_path)
    out = str(tmp_path / "overlay.png")
    assert main(["seg-predict", model_file, image, "--output", out, "--mode", "slide", "--alpha", "1.0"]) == 0
    written = tf.io.decode_png(tf.io.read_file(out)).numpy()
    assert written.shape == (32, 48, 3)
    colours = {tuple(c) for c in palette(150)}
    assert all(tuple(p) in colours for p in written.reshape(-1, 3)[::97])  # alpha 1: class colours only
    assert "wrote" in capsys.readouterr().out
    assert sorted(os.listdir(tmp_path)) == ["overlay.png", "photo.png"]


def test_failed_seg_predict_leaves_nothing_behind(tmp_path, model_file, monkeypatch):
    image = _image(tmp_path)
    out = tmp_path / "overlay.png"
    out.write_bytes(b"previous")

    def broken(*args, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr(tf.io, "write_file", broken)
    with pytest.raises(RuntimeError, match="disk full"):
        main(["seg-predict", model_file, image, "--output", str(out), "--mode", "slide"])
    assert out.read_bytes() == b"previous"
    assert sorted(os.listdir(tmp_path)) == ["overlay.png", "photo.png"]  # no temporary file left
    monkeypatch.undo()
    with pytest.raises(ValueError, match=r"`mode` must be one of \('whole', 'slide'\); received mode='tiles'"):
        main(["seg-predict", model_file, image, "--output", str(tmp_path / "o.png"), "--mode", "tiles"])
    with pytest.raises(ValueError, match="does not fit the input"):
        main(["seg-predict", model_file, image, "--output", str(tmp_path / "o.png"), "--mode", "slide",
              "--crop-size", "64"])
    with pytest.raises(SystemExit, match="image file not found"):
        main(["seg-predict", model_file, str(tmp_path / "missing.jpg"), "--output", str(tmp_path / "o.png")])
    assert not (tmp_path / "o.png").exists()


def test_seg_eval_prints_the_table_and_the_comparison(tmp_path, model_file, make_ade20k, capsys):
    make_ade20k(str(tmp_path / "ade"))
    out = str(tmp_path / "scores.json")
    assert main(["seg-eval", model_file, "--data", str(tmp_path / "ade"), "--published-miou", "46.0",
                 "--quiet", "--output", out]) == 0
    text = capsys.readouterr().out
    assert "wall" in text and "mIoU" in text and "aAcc" in text
    assert "mode=slide crop=32x32 stride=21x21 scale=128x32" in text  # mmseg's 2048×512 rule at crop 32
    assert "published mIoU 46.00 (given)" in text
    scores = json.loads(open(out).read())
    assert scores["images"] == 3 and len(scores["per_class_iou"]) == 150 and scores["published_miou"] == 46.0
    with pytest.raises(SystemExit, match="--manual-dir does not apply"):
        main(["seg-eval", model_file, "--data", "scene_parse150", "--manual-dir", str(tmp_path)])

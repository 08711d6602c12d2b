"""The CI's real training task and the demo end to end: a small UperNet trained on the digit canvases."""

import os

import pytest

from keras_visrec.cli import main

# Held-out mIoU (percent) the demo's UperNet passes reliably at seed 0. Chance — every pixel
# background — scores 8.3 (background IoU ≈ 91 % over 11 classes).
MIOU_THRESHOLD = 25.0


@pytest.mark.slow
def test_seg_demo_trains_evaluates_saves_predicts_and_exports(tmp_path, capsys):
    from keras_visrec.segmentation.demo import run_seg_demo

    results = run_seg_demo(output_dir=str(tmp_path), verbose=0)
    assert results["miou"] > MIOU_THRESHOLD, capsys.readouterr().out
    assert results["reload_identical"]
    assert os.path.getsize(results["overlay"]) > 0
    assert results["tflite_same_class"] > 0.999 and results["tflite_max_abs"] < 1e-3
    text = capsys.readouterr().out
    assert "mIoU" in text and "published" not in text


def test_seg_demo_command_is_registered(capsys):
    with pytest.raises(SystemExit):
        main(["seg-demo", "--help"])
    assert "--no-export" in capsys.readouterr().out

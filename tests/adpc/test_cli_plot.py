"""The accuracy–compute plot and the ``adpc-eval`` command."""

import pytest

from keras_visrec.adpc import plot_accuracy_compute
from keras_visrec.adpc.evaluate import ExitEvaluation


def test_plot_writes_png(tmp_path):
    curve = ExitEvaluation([40.8, 48.2, 68.3, 77.0], [90, 92, 95, 97], [10, 20, 30, 40], [0.5, 0.4, 0.3], "dense", 0.998)
    path = plot_accuracy_compute({"ADP-C": curve, "paper W48 RH": ([41.9, 105.6, 368.0, 701.3], [44.6, 60.2, 76.6, 79.9])},
                                 str(tmp_path / "plot.png"), base=(696.2, 80.7))
    data = open(path, "rb").read()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5000
    assert [p.name for p in tmp_path.iterdir()] == ["plot.png"]  # no temporary left behind
    assert "exit" in curve.table()


@pytest.mark.slow
def test_adpc_eval_command(tmp_path, capsys):
    from keras_visrec.cli import main

    plot = tmp_path / "curve.png"
    # dense-simulated masking: the sparse executor is traced by the digit-task test (tests/adpc/test_training.py)
    code = main(["adpc-eval", "--epochs", "1", "--max-examples", "8", "--modes", "none,dense", "--threshold", "0.9",
                 "--plot", str(plot)])
    out = capsys.readouterr().out
    assert code == 0 and plot.exists()
    assert "mode=none" in out and "mode=dense" in out


def test_adpc_eval_pose_from_a_saved_model(tmp_path, capsys, tiny_config):
    from keras_visrec.adpc import AnytimeHRNet
    from keras_visrec.cli import main

    path = str(tmp_path / "pose.keras")
    AnytimeHRNet(tiny_config, classes=5, exit_width=8, task="pose", name="tp", threshold=0.05).save(path)
    plot = tmp_path / "pckh.png"
    code = main(["adpc-eval", path, "--task", "pose", "--data", "digits", "--max-examples", "4", "--modes", "none,dense",
                 "--no-flip", "--output", str(plot), "--quiet"])
    captured = capsys.readouterr()
    assert code == 0 and plot.read_bytes()[:4] == b"\x89PNG"
    assert "PCKh@0.5" in captured.out and "mode=dense" in captured.out and "flip=False" in captured.out
    with pytest.raises(SystemExit, match="is a pose model"):  # a pose model evaluated as segmentation
        main(["adpc-eval", path, "--task", "segmentation", "--max-examples", "2", "--modes", "none", "--quiet"])
    main(["adpc-eval", "--backbone", path, "--limit", "2", "--modes", "none", "--no-flip", "--quiet"])
    err = capsys.readouterr().err
    assert "--backbone is deprecated" in err and "--limit is deprecated" in err and "--max-examples" in err

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
    code = main(["adpc-eval", "--epochs", "1", "--limit", "8", "--modes", "none,sparse", "--threshold", "0.9",
                 "--plot", str(plot)])
    out = capsys.readouterr().out
    assert code == 0 and plot.exists()
    assert "mode=none" in out and "mode=sparse" in out

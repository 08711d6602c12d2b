"""What ``import keras_visrec`` alone makes possible in a fresh process."""

import subprocess
import sys

import numpy as np

import keras_visrec as kv

TINY_HRNET = dict(stem=16, layer1=(1, 8), stages=((1, (1, 1), (8, 16)), (1, (1, 1, 1), (8, 16, 32)),
                                                  (1, (1, 1, 1, 1), (8, 16, 32, 64))))


def test_saved_models_reload_in_a_fresh_process_after_import_only(tmp_path):
    convnext = kv.ConvNeXtAtto(input_shape=(32, 32, 3), classes=3, drop_path_rate=0.1)
    anytime = kv.AnytimeHRNet(TINY_HRNET, classes=5, exit_width=8, threshold=0.9, name="tiny")
    anytime(np.zeros((1, 64, 64, 3), "float32"))
    paths = [str(tmp_path / "convnext.keras"), str(tmp_path / "anytime.keras")]
    convnext.save(paths[0])
    anytime.save(paths[1])
    code = (
        "import sys, keras, keras_visrec\n"
        f"print(*(keras.models.load_model(p).count_params() for p in {paths!r}))\n"
        "assert 'tensorflow_model_optimization' not in sys.modules\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.split()[-2:] == [str(convnext.count_params()), str(anytime.count_params())]

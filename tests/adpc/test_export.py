"""TFLite export with one signature per exit, resumable from saved features."""

import time

import numpy as np
import pytest

from keras_visrec.adpc import AnytimeHRNet
from keras_visrec.adpc.export import export_anytime_tflite


def _interpreter(path):
    try:
        from ai_edge_litert.interpreter import Interpreter
    except ImportError:
        import tensorflow as tf

        Interpreter = tf.lite.Interpreter
    return Interpreter(model_path=str(path))


@pytest.mark.slow
def test_per_exit_signatures_match_keras(tiny_config, tmp_path):
    model = AnytimeHRNet(tiny_config, classes=5, exit_width=8, name="tiny")
    path = export_anytime_tflite(model, tmp_path / "anytime.tflite", (64, 64, 3))
    interpreter = _interpreter(path)
    assert sorted(interpreter.get_signature_list()) == ["exit1", "exit2", "exit3", "exit4"]
    x = np.random.default_rng(0).uniform(-1, 1, (1, 64, 64, 3)).astype("float32")
    expected = [np.asarray(o) for o in model.anytime(x, mode="none")]
    state = {"image": x}
    latencies = []
    for k in range(1, 5):
        runner = interpreter.get_signature_runner(f"exit{k}")
        start = time.perf_counter()
        out = runner(**state)
        latencies.append(time.perf_counter() - start)
        np.testing.assert_allclose(out["logits"], expected[k - 1], atol=1e-4, rtol=1e-4)
        state = {key: value for key, value in out.items() if key.startswith("feature_")}
        state["logits"] = out["logits"]
    print("tflite per-exit latency ms:", [round(1000 * t, 2) for t in latencies])
    with pytest.raises(ValueError, match="input_shape"):
        export_anytime_tflite(model, tmp_path / "x.tflite", (60, 64, 3))

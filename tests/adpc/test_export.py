"""TFLite export with one signature per exit, resumable from saved features, through export_tflite."""

import time

import numpy as np
import pytest

import keras_visrec
from keras_visrec.adpc import AnytimeHRNet
from keras_visrec.adpc.export import export_anytime_tflite

pytest.importorskip("ai_edge_litert")


@pytest.mark.slow
def test_per_exit_signatures_match_keras(tiny_config, tmp_path, onednn_rewrites):
    # with oneDNN rewrites on (layers.Conv2D's generic Conv op, which TFLite cannot convert, in the Keras model)
    model = AnytimeHRNet(tiny_config, classes=5, exit_width=8, name="tiny")
    report = export_anytime_tflite(model, tmp_path / "anytime.tflite", (64, 64, 3))
    # the one export surface: an ExportReport whose agreement covers every signature
    assert sorted(report.agreement["signatures"]) == ["exit1", "exit2", "exit3", "exit4"]
    assert report.agreement["max_abs_diff"] < 1e-4, report.agreement
    runner = keras_visrec.load_tflite(report.path)
    assert runner.signatures == ["exit1", "exit2", "exit3", "exit4"]
    x = np.random.default_rng(0).uniform(-1, 1, (1, 64, 64, 3)).astype("float32")
    expected = [np.asarray(o) for o in model.anytime(x, mode="none")]
    state = {"image": x}
    latencies = []
    for k in range(1, 5):
        start = time.perf_counter()
        out = runner.predict(state, signature=f"exit{k}")
        latencies.append(time.perf_counter() - start)
        np.testing.assert_allclose(out["logits"], expected[k - 1], atol=1e-4, rtol=1e-4)
        state = {key: value for key, value in out.items() if key.startswith("feature_")}
        state["logits"] = out["logits"]
    print("tflite per-exit latency ms:", [round(1000 * t, 2) for t in latencies])
    with pytest.raises(ValueError, match="input_shape"):
        export_anytime_tflite(model, tmp_path / "x.tflite", (60, 64, 3))
    with pytest.raises(ValueError, match="multi-signature"):
        export_anytime_tflite(model, tmp_path / "x.tflite", (64, 64, 3), quantization="int8")

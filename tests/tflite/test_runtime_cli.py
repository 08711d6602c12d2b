"""load_tflite runner (quantized I/O, chunked batches, signatures, benchmark, errors) and the CLI."""

import os

import numpy as np
import pytest

import keras_visrec
from keras_visrec.tflite import runtime
from keras_visrec.tflite.export import export_tflite

pytest.importorskip("ai_edge_litert")


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    folder = tmp_path_factory.mktemp("runtime")
    model = keras_visrec.ConvNeXt(depths=(1, 1, 1, 1), dims=(8, 16, 32, 64), input_shape=(32, 32, 3), classes=10,
                                  layer_scale_init_value=0.5)
    images = np.random.default_rng(0).uniform(0, 255, (6, 32, 32, 3)).astype("float32")
    fp32 = export_tflite(model, folder / "fp32.tflite").path
    uint8 = export_tflite(model, folder / "uint8.tflite", quantization="int8", representative_data=images,
                          io_dtype="uint8").path
    return model, images, fp32, uint8


def test_predict_runs_any_batch_on_a_batch_one_model(exported):
    model, images, fp32, _ = exported
    runner = keras_visrec.load_tflite(fp32, num_threads=2)
    assert runner.backend == "ai_edge_litert" and runner.xnnpack
    batch = runner.predict(images[:3])
    assert batch.shape == (3, 10)
    np.testing.assert_allclose(batch[1], runner.predict(images[1])[0], atol=1e-6)
    np.testing.assert_allclose(batch, model.predict(images[:3], verbose=0), atol=1e-4)


def test_quantized_io_is_scaled_and_dequantized(exported):
    model, images, _, uint8 = exported
    runner = keras_visrec.load_tflite(uint8)
    assert runner.input_details[0]["dtype"] == np.uint8
    probabilities = runner.predict(images)
    assert probabilities.dtype == np.float32
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, atol=0.05)
    assert np.abs(probabilities - model.predict(images, verbose=0)).max() < 0.1


def test_named_signature_matches_default_path(exported):
    _, images, fp32, _ = exported
    runner = keras_visrec.load_tflite(fp32)
    assert runner.signatures == ["serving_default"]
    np.testing.assert_allclose(runner.predict(images[:1], signature="serving_default"),
                               runner.predict(images[:1]), atol=1e-6)
    with pytest.raises(ValueError, match="serving_default"):
        runner.predict(images[:1], signature="nope")


def test_benchmark_reports_ordered_percentiles(exported):
    runner = keras_visrec.load_tflite(exported[2], num_threads=1)
    stats = runner.benchmark(runs=8, warmup=1)
    assert stats["min_ms"] <= stats["p50_ms"] <= stats["p90_ms"] <= stats["p99_ms"]
    assert stats["runs"] == 8 and stats["num_threads"] == 1
    with pytest.raises(ValueError, match="runs"):
        runner.benchmark(runs=0)


def test_runtime_errors_are_clear(exported, tmp_path, monkeypatch):
    _, images, fp32, _ = exported
    with pytest.raises(FileNotFoundError, match="not found"):
        keras_visrec.load_tflite(tmp_path / "missing.tflite")
    with pytest.raises(ValueError, match="backend"):
        keras_visrec.load_tflite(fp32, backend="onnx")
    with pytest.raises(ValueError, match="num_threads"):
        keras_visrec.load_tflite(fp32, num_threads=0)
    with pytest.raises(RuntimeError, match="libedgetpu"):
        keras_visrec.load_tflite(fp32, edgetpu=True)
    runner = keras_visrec.load_tflite(fp32)
    with pytest.raises(ValueError, match=r"\(N, 32, 32, 3\)"):
        runner.predict(images[:, :16])
    broken = tmp_path / "broken.tflite"
    broken.write_bytes(b"not a flatbuffer")
    with pytest.raises(ValueError, match="broken.tflite"):
        keras_visrec.load_tflite(broken)
    monkeypatch.setattr(runtime, "_MODULES", {name: f"no_such_module_{name}" for name in runtime.BACKENDS})
    with pytest.raises(ImportError, match="pip install ai-edge-litert"):
        keras_visrec.load_tflite(fp32)


def test_tf_lite_backend_gives_the_same_answer(exported):
    _, images, fp32, _ = exported
    litert = keras_visrec.load_tflite(fp32).predict(images[:2])
    tf_lite = keras_visrec.load_tflite(fp32, backend="tensorflow")
    assert tf_lite.backend == "tensorflow"
    np.testing.assert_allclose(tf_lite.predict(images[:2]), litert, atol=1e-5)


@pytest.mark.slow
def test_cli_export_and_bench(tmp_path, capsys):
    from keras_visrec.cli import main

    path = tmp_path / "atto.tflite"
    code = main(["export", "convnext_atto", "--output", str(path), "--image-size", "32", "--classes", "10",
                 "--json", str(tmp_path / "atto.json")])
    assert code == 0 and path.exists() and (tmp_path / "atto.json").exists()
    assert "TFLite export" in capsys.readouterr().out
    assert main(["bench-tflite", str(path), "--runs", "3", "--threads", "1", "--profile"]) == 0
    out = capsys.readouterr().out
    assert "p50_ms:" in out and "backend: ai_edge_litert" in out
    assert "op profile: atto.tflite" in out and "CONV_2D" in out and "SPACE_TO_DEPTH" in out
    # the old spellings still work for one release, and say what replaces them
    code = main(["export", "convnext_atto", str(tmp_path / "edge.tflite"), "--input-size", "32", "--classes", "10",
                 "--quantization", "int8", "--target", "edgetpu", "--representative", "digits", "--samples", "4"])
    assert code == 0
    captured = capsys.readouterr()
    assert "every op mappable" in captured.out
    for old, new in (("--input-size", "--image-size"), ("--representative", "--data"), ("--samples", "--max-examples"),
                     ("positional OUTPUT", "--output")):
        assert old in captured.err and new in captured.err
    assert sorted(os.listdir(tmp_path)) == ["atto.json", "atto.tflite", "edge.tflite"]

"""The ``convert`` command: single file (summary, parity, atomic output), batch + manifest, errors."""

import json
import os

import numpy as np
import pytest

from keras_visrec.converters.cli import main

FIXTURES = os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir, "fixtures")


def test_errors_exit_non_zero_and_name_the_problem(tmp_path, capsys):
    out = tmp_path / "x.weights.h5"
    assert main([os.path.join(FIXTURES, "official_v1.pth"), "--arch", "convnext_atto", "-o", str(out)]) == 1
    err = capsys.readouterr().err
    assert "official_v1.pth" in err and "shape mismatch" in err
    assert not out.exists() and os.listdir(tmp_path) == []
    assert main([os.path.join(FIXTURES, "official_v1.pth"), "--arch", "convnext_atto", "-o", str(tmp_path / "x.onnx")]) == 2
    assert main([str(tmp_path / "missing.pth"), "--arch", "convnext_atto", "-o", str(out)]) == 1
    assert "missing.pth" in capsys.readouterr().err


def test_umbrella_cli_registers_convert(capsys):
    from keras_visrec.cli import build_parser

    args = build_parser().parse_args(["convert", "convnext_atto", "a.pth", "--output", "a.weights.h5"])
    assert args.func.__module__ == "keras_visrec.converters.cli"
    assert (args.model, args.checkpoint, args.output) == ("convnext_atto", "a.pth", "a.weights.h5")
    old = build_parser().parse_args(["convert", "a.pth", "--arch", "convnext_atto", "-o", "a.weights.h5"])
    assert (old.arch, old.model) == ("convnext_atto", "a.pth")
    assert "--arch is deprecated" in capsys.readouterr().err


def _reference(torch, tmp_path):
    import importlib.util

    spec = importlib.util.spec_from_file_location("torch_convnext", os.path.join(FIXTURES, "torch_convnext.py"))
    tc = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tc)
    reference = tc.randomise(tc.ConvNeXtRef((1, 1, 1, 1), (8, 16, 32, 64), 10, layer_scale=True, grn=False), 5)
    source = tmp_path / "tiny.pth"
    torch.save({"model": reference.state_dict()}, source)
    return source


@pytest.mark.torch
def test_check_fails_above_the_tolerance_and_writes_nothing(tmp_path, capsys, monkeypatch):
    torch = pytest.importorskip("torch")
    import sys

    from keras_visrec.convnext import CONVNEXT_CONFIGS

    monkeypatch.setitem(CONVNEXT_CONFIGS, "convnext_atto", dict(depths=(1, 1, 1, 1), dims=(8, 16, 32, 64)))
    source = _reference(torch, tmp_path)
    out = tmp_path / "out" / "tiny.weights.h5"
    assert main(["convnext_atto", str(source), "--output", str(out), "--tolerance", "0"]) == 1
    err = capsys.readouterr().err
    assert "above --tolerance 0" in err and "nothing was written" in err
    assert not out.exists()
    assert main(["convnext_atto", str(source), "--output", str(out)]) == 0
    assert "(tolerance 0.0001)" in capsys.readouterr().out and out.exists()

    monkeypatch.setitem(sys.modules, "torch", None)  # torch unavailable: the check records why, as null
    from keras_visrec.converters.cli import convert_file

    summary = convert_file(source, "convnext_atto", str(tmp_path / "again.weights.h5"))
    assert summary["parity_max_abs"] is None and "torch is not installed" in summary["parity_reason"]
    summary = convert_file(source, "convnext_atto", str(tmp_path / "notop.weights.h5"), include_top=False)
    assert summary["parity_max_abs"] is None and "needs the head" in summary["parity_reason"]


@pytest.mark.slow
def test_convert_and_batch_with_parity(tmp_path, capsys, monkeypatch):
    torch = pytest.importorskip("torch")
    import importlib.util

    spec = importlib.util.spec_from_file_location("torch_convnext", os.path.join(FIXTURES, "torch_convnext.py"))
    tc = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tc)
    reference = tc.randomise(tc.ConvNeXtRef((2, 2, 6, 2), (40, 80, 160, 320), 1000, layer_scale=False, grn=True), 3)
    downloads = tmp_path / "downloads"
    downloads.mkdir()
    source = downloads / "convnextv2_atto_1k_224_ema.pt"  # the catalogue entry's file name
    torch.save({"model": reference.state_dict()}, source)

    out = tmp_path / "atto.weights.h5"
    assert main([str(source), "--arch", "convnext_v2_atto", "-o", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "layout: official" in printed and "parity vs PyTorch" in printed
    parity = float(printed.split("(max abs logits): ")[1].split()[0])
    assert parity <= 1e-4
    import keras_visrec

    model = keras_visrec.ConvNeXtV2Atto(weights=str(out), include_preprocessing=False, classifier_activation=None)
    x = np.random.RandomState(0).randn(1, 224, 224, 3).astype("float32")
    with torch.no_grad():
        ref, _ = reference.eval()(torch.from_numpy(x).permute(0, 3, 1, 2))
    assert np.abs(np.asarray(model(x, training=False)) - ref.numpy()).max() <= 1e-4

    saved = tmp_path / "atto.keras"  # a full Keras model: preprocessing in, softmax out
    assert main([str(source), "--arch", "convnext_v2_atto", "-o", str(saved), "--no-check"]) == 0
    reloaded = keras_visrec.ConvNeXtV2Atto(weights=str(saved), include_preprocessing=False,
                                           classifier_activation=None)
    assert np.abs(np.asarray(reloaded(x, training=False)) - ref.numpy()).max() <= 1e-4

    monkeypatch.delenv("KERAS_VISREC_ALLOW_UNVERIFIED", raising=False)
    batch = ["--batch", "convnext_v2_atto.fb_fcmae_ft_in1k", "--from-dir", str(downloads), "--output-dir",
             str(tmp_path / "artefacts"), "--no-check"]
    assert main(batch) == 1  # no published hash: needs the explicit opt-in
    assert main(batch + ["--allow-unverified"]) == 0
    lines = (tmp_path / "artefacts" / "manifest.jsonl").read_text().splitlines()
    record = json.loads(lines[-1])
    assert record["id"] == "convnext_v2_atto.fb_fcmae_ft_in1k" and len(record["sha256"]) == 64
    assert record["source_sha256_published"] is False and record["params"] == 3_708_400
    assert record["parity_max_abs"] is None and record["parity_reason"] == "skipped (--no-check)"
    assert (tmp_path / "artefacts" / record["file"]).exists()

"""The families run, train, save and reload on every Keras backend, with equal outputs for equal weights.

Covered per backend: ConvNeXt V1 / V2 / isotropic, HRNet, the CIFAR nets, UperNet and ADP-C (unmasked
and dense-simulated masking) outputs, the
L1-norm surgery (the pruned outputs), fit with drop path under the recipe optimizer and schedules
(ConvNeXt: layer-decay AdamW + warmup-cosine; UperNet: the segmentation recipe with its mIoU
metric), `.keras` reload, and `weights=` from `.pth` and `.keras` files.

The TensorFlow run (this process) writes each family's weights and the reference outputs
(``backend_check.main`` without its training runs); ``backend_check.py`` then runs in a
subprocess per backend with ``KERAS_BACKEND`` set (torch always — it is in the test environment;
JAX when it is installed) and the outputs are compared to ≤ 1e-4.
"""

import importlib.util
import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
BACKENDS = ["torch"] + (["jax"] if importlib.util.find_spec("jax") else [])


def _load_check():
    spec = importlib.util.spec_from_file_location("backend_check", os.path.join(HERE, "backend_check.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    import keras

    folder = tmp_path_factory.mktemp("backends")
    rng = np.random.default_rng(0)
    np.savez(folder / "inputs.npz", image=rng.uniform(0, 255, (2, 32, 32, 3)).astype("float32"),
             hrnet=rng.uniform(0, 255, (1, 64, 64, 3)).astype("float32"))
    check = _load_check()
    for name, build in check.families().items():
        model = build()
        if name == "adpc":
            model(np.zeros((1, 64, 64, 3), "float32"))  # a subclassed model: built by a call
        for variable in model.weights:  # every weight and BN statistic random, so nothing hides
            value = rng.normal(0, 0.2, variable.shape)
            if "moving_variance" in variable.path or "variance" in variable.name:
                value = rng.uniform(0.5, 1.5, variable.shape)
            variable.assign(value.astype("float32"))
        model.save_weights(folder / f"{name}.weights.h5")
    model = check.families()["convnext"]()
    model.load_weights(folder / "convnext.weights.h5")
    model.save(folder / "tensorflow.keras")  # weights= from a .keras file written by TensorFlow
    shutil.copy(os.path.join(HERE, os.pardir, "fixtures", "official_v1.pth"), folder / "official.pth")
    check.main(str(folder), fit=False)  # the TensorFlow reference, in this (TensorFlow) process
    keras.backend.clear_session()
    return folder


@pytest.mark.slow
@pytest.mark.parametrize("backend", BACKENDS)
def test_every_family_matches_tensorflow_trains_and_reloads(workdir, backend):
    result = subprocess.run([sys.executable, os.path.join(HERE, "backend_check.py"), str(workdir)],
                            env={**os.environ, "KERAS_BACKEND": backend}, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-3000:]
    reference = np.load(workdir / "tensorflow.npz")
    other = np.load(workdir / f"{backend}.npz")
    assert set(other.files) == set(reference.files)
    for name in reference.files:
        scale = max(1.0, float(np.abs(reference[name]).max()))
        difference = float(np.abs(other[name] - reference[name]).max())
        print(f"{backend} vs tensorflow {name}: max abs {difference:.2e} (scale {scale:.2f})")  # the note's figures
        assert difference <= 1e-4 * scale, (backend, name)
    report = json.loads((workdir / f"{backend}.json").read_text())
    assert report["backend"] == backend
    for family in ("", "upernet_"):
        assert all(np.isfinite(report[f"{family}fit_loss"])) and report[f"{family}reload_max_abs"] <= 1e-5, family
    assert not report["torch_imported_by_reader"]
    # the masked exits computed part of the pixels on this backend as on TensorFlow
    reference_report = json.loads((workdir / "tensorflow.json").read_text())
    assert report["adpc_computed"] == pytest.approx(reference_report["adpc_computed"])
    assert all(0.0 < share < 1.0 for share in report["adpc_computed"])
    assert np.abs(reference["adpc_dense_exit_3"] - reference["adpc_none_exit_3"]).max() > 1e-3  # masking acted


def test_import_keras_visrec_does_not_import_tensorflow_on_other_backends():
    code = "import sys, keras_visrec; keras_visrec.ConvNeXtAtto; print('tensorflow' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], env={**os.environ, "KERAS_BACKEND": "torch"},
                            capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "False"

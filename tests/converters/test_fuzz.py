"""CI's short seeded fuzzing pass over every reader of untrusted files (bench/fuzz.py, builtin engine).

Deterministic (seed 0, a fixed number of executions, coverage-guided by line arcs), no atheris
needed; the long coverage-guided runs with atheris and their figures are in bench/README.md.
A finding prints the exception, where it was raised and the saved input.
"""

import importlib.util
import os

import pytest

_FUZZ = os.path.join(os.path.dirname(__file__), os.pardir, os.pardir, "bench", "fuzz.py")


@pytest.fixture(scope="module")
def fuzz():
    spec = importlib.util.spec_from_file_location("keras_visrec_bench_fuzz", _FUZZ)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# executions per target: a few seconds each on CI's two cores (the pickle targets trace slowest)
_RUNS = {"zip": 150, "pickle": 150, "legacy": 150, "safetensors": 300, "catalogue": 300, "tflite": 200}


@pytest.mark.parametrize("target", sorted(_RUNS))
def test_short_seeded_pass_finds_no_exception_outside_the_readers_own(fuzz, target, tmp_path):
    figures = fuzz.run_builtin(target, runs=_RUNS[target], seed=0, timeout=30, artifacts=str(tmp_path))
    assert figures["executions"] == _RUNS[target]
    assert figures["hangs"] == 0
    assert figures["non_library_exceptions"] == 0, figures["findings"]
    assert figures["coverage_edges"] > 30 and figures["corpus"] >= len(fuzz.seeds(target))


def test_seeds_are_valid_files_the_readers_accept(fuzz, tmp_path):
    for target in fuzz.TARGETS:
        runner = fuzz._Runner(target, str(tmp_path))
        for data in fuzz.seeds(target):
            assert runner(data) is None, target
    from keras_visrec.converters.pytorch_reader import load_pytorch_checkpoint

    path = tmp_path / "seed.pth"
    path.write_bytes(fuzz.seeds("zip")[1])
    checkpoint = load_pytorch_checkpoint(path)
    assert checkpoint["args"].model == "convnext_tiny" and checkpoint["meta"]["CLASSES"] == ("road", "sky")
    assert checkpoint["model"]["stages.0.0.dwconv.bias"].tolist() == [[1, 5], [2, 6], [3, 7]]


def test_the_pass_is_deterministic(fuzz, tmp_path):
    first = fuzz.run_builtin("safetensors", runs=120, seed=3, artifacts=str(tmp_path))
    second = fuzz.run_builtin("safetensors", runs=120, seed=3, artifacts=str(tmp_path))
    assert (first["coverage_edges"], first["corpus"]) == (second["coverage_edges"], second["corpus"])


def test_a_finding_is_reported_with_its_input(fuzz, tmp_path, monkeypatch):
    # a reader bug (here: a TypeError injected for every JSON object) must surface as a finding, input saved
    runner_class = fuzz._Runner

    class Buggy(runner_class):
        def __call__(self, data):
            if data.startswith(b"{"):
                try:
                    raise TypeError("injected")
                except TypeError as error:
                    return error
            return super().__call__(data)

    monkeypatch.setattr(fuzz, "_Runner", Buggy)
    figures = fuzz.run_builtin("catalogue", runs=5, seed=0, artifacts=str(tmp_path))
    assert figures["non_library_exceptions"] >= 1
    (finding,) = figures["findings"]
    assert finding["type"] == "TypeError" and os.path.isfile(finding["input"])

"""The README's Python examples run as written.

Every ```python block of README.md runs, in order, in one namespace (later blocks may use names
earlier ones defined), except blocks preceded by a ``<!-- readme-test: skip (reason) -->`` line —
those that download weights or stand for a user's own data — and the skip must say why.
"""

import pathlib
import re

import pytest

README = pathlib.Path(__file__).resolve().parents[1] / "README.md"
_BLOCK = re.compile(r"(?P<marker><!-- readme-test: skip \((?P<reason>.+?)\) -->\n)?```python\n(?P<code>.*?)```",
                    re.S)


def _blocks():
    return [(m["code"], m["reason"]) for m in _BLOCK.finditer(README.read_text(encoding="utf-8"))]


def test_every_skipped_block_says_why():
    blocks = _blocks()
    assert blocks, "README.md has no Python examples"
    assert sum(reason is None for _, reason in blocks) >= 2, "most README examples must run"
    for _, reason in blocks:
        assert reason is None or len(reason.split()) >= 2


@pytest.mark.slow
def test_readme_python_blocks_run_as_written(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("KERAS_VISREC_CACHE", str(tmp_path / "cache"))  # nothing may be downloaded
    namespace = {"__name__": "readme"}
    for index, (code, reason) in enumerate(_blocks()):
        if reason is None:
            exec(compile(code, f"README.md python block {index + 1}", "exec"), namespace)

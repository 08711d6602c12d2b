"""Atomic writes: the destination holds the old file or the new one, never a partial one."""

import os

import pytest

from keras_visrec.files import atomic_path, write_atomic


def test_write_atomic_writes_bytes_and_text(tmp_path):
    write_atomic(tmp_path / "a.bin", b"\x00\x01")
    write_atomic(tmp_path / "b.txt", "héllo")
    assert (tmp_path / "a.bin").read_bytes() == b"\x00\x01"
    assert (tmp_path / "b.txt").read_text(encoding="utf-8") == "héllo"
    assert sorted(os.listdir(tmp_path)) == ["a.bin", "b.txt"]


def test_atomic_path_keeps_every_extension_for_format_sniffing_savers(tmp_path):
    with atomic_path(str(tmp_path / "model.weights.h5")) as temporary:
        assert temporary.endswith(".weights.h5")
        assert os.path.dirname(temporary) == str(tmp_path)
        open(temporary, "wb").close()
    assert os.listdir(tmp_path) == ["model.weights.h5"]


def test_failure_leaves_the_old_file_and_no_temporary(tmp_path):
    target = tmp_path / "report.json"
    target.write_text("old")
    with pytest.raises(RuntimeError, match="saver failed"):
        with atomic_path(str(target)) as temporary:
            with open(temporary, "w") as handle:
                handle.write("half")
            raise RuntimeError("saver failed")
    assert target.read_text() == "old"
    assert os.listdir(tmp_path) == ["report.json"]


def test_missing_directory_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        write_atomic(tmp_path / "no" / "such" / "file.txt", "x")

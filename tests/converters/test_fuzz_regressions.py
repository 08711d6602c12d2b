"""Inputs that made a reader raise something other than its own error (found by fuzzing and review).

Each used to escape as a UnicodeDecodeError, RecursionError, TypeError, NotImplementedError,
an int64 overflow or a multi-gigabyte allocation; each is now the reader's own error
(``CheckpointError`` / ``CatalogueError``) naming the file, with nothing allocated first.
"""

import json
import struct
import tracemalloc
import zipfile

import pytest

from keras_visrec.converters.pytorch_reader import CheckpointError, load_pytorch_checkpoint
from keras_visrec.zoo.catalogue import CatalogueError, load_catalogue


def _zip(path, data_pkl, members=()):
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("archive/data.pkl", data_pkl)
        for name, data, method in members:
            archive.writestr(zipfile.ZipInfo(name), data, compress_type=method)
    return path


@pytest.mark.parametrize("name, data_pkl, match", [
    ("invalid utf-8 string", b"\x80\x02X\x02\x00\x00\x00\xff\xfe.", "malformed text"),
    ("invalid utf-8 global", b"\x80\x02c\xff\n\xfe\n.", "malformed text"),
    ("unhashable tuple key", b"\x80\x02}(]\x85K\x01u.", "unsupported dict key"),
    ("key nested too deep", b"\x80\x02}(" + b")" + b"\x85" * 50 + b"K\x01u.", "unsupported dict key"),
    ("no STOP", b"\x80\x02K\x01", "truncated"),
    ("STOP on empty stack", b"\x80\x02.", "stack empty"),
    ("NEWOBJ_EX keywords", b"\x80\x02cargparse\nNamespace\n)}(K\x01K\x02u\x92.", "keyword arguments"),
    ("int literal with junk", b"\x80\x02I1_0x\n.", "malformed integer"),
    ("set of lists", b"\x80\x02c__builtin__\nset\n]]a\x85R.", "unsupported dict key or set item"),
    ("dtype with fields", b"\x80\x02cnumpy\ndtype\nX\x02\x00\x00\x00f8\x85R(K\x03X\x01\x00\x00\x00<N)}J\xff\xff\xff\xff"
     b"J\xff\xff\xff\xffK\x00tb.", "not a plain dtype"),
    ("array bytes do not fit the shape", b"\x80\x02cnumpy._core.multiarray\n_reconstruct\ncnumpy\nndarray\nK\x00\x85C"
     b"\x01b\x87R(K\x01J\x00\x00\x00@\x85cnumpy\ndtype\nX\x02\x00\x00\x00f8\x85R\x89C\x08\x00\x00\x00\x00\x00\x00\x00"
     b"\x00tb.", "needs"),
])
def test_malformed_pickles_raise_checkpoint_error(tmp_path, name, data_pkl, match):
    path = _zip(tmp_path / "bad.pth", data_pkl)
    with pytest.raises(CheckpointError, match=match) as info:
        load_pytorch_checkpoint(path)
    assert "bad.pth" in str(info.value)


def test_unsupported_zip_compression_method(tmp_path):
    path = _zip(tmp_path / "method.pth", b"\x80\x02}.")
    raw = bytearray(path.read_bytes())
    for signature, offset in ((b"PK\x03\x04", 8), (b"PK\x01\x02", 10)):  # local header, central directory
        at = raw.find(signature)
        raw[at + offset:at + offset + 2] = struct.pack("<H", 99)
    path.write_bytes(bytes(raw))
    with pytest.raises(CheckpointError, match="method.pth"):
        load_pytorch_checkpoint(path)


def test_deflated_storage_claiming_gigabytes_allocates_nothing(tmp_path):
    # the pickle claims a 1 G-element storage; its deflated member says (in the central directory)
    # it unpacks to 4 GB from 1 KB: no real zlib stream expands that much, so it is refused first
    data_pkl = (b"\x80\x02}X\x01\x00\x00\x00wctorch._utils\n_rebuild_tensor_v2\n((X\x07\x00\x00\x00storagectorch\n"
           b"FloatStorage\nX\x01\x00\x00\x000X\x03\x00\x00\x00cpuJ\xf0\xff\xff?tQK\x00J\xf0\xff\xff?\x85K\x01\x85\x89NtRs.")
    path = _zip(tmp_path / "bomb.pth", data_pkl, [("archive/data/0", b"\0" * 4096, zipfile.ZIP_DEFLATED)])
    raw = bytearray(path.read_bytes())
    central = raw.find(b"PK\x01\x02", raw.find(b"PK\x01\x02") + 4)  # the storage's central-directory entry
    assert raw[central + 46:central + 60] == b"archive/data/0"
    raw[central + 24:central + 28] = struct.pack("<I", 0xFFFFFFF0)  # uncompressed size
    path.write_bytes(bytes(raw))
    tracemalloc.start()
    with pytest.raises(CheckpointError, match="claims"):
        load_pytorch_checkpoint(path)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak < 16 * 2 ** 20


def _safetensors(path, header):
    blob = header if isinstance(header, bytes) else json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(blob)) + blob + b"\0" * 8)
    return path


@pytest.mark.parametrize("header, match", [
    ({"w": {"dtype": "F32", "shape": [2 ** 32, 2 ** 32], "data_offsets": [0, 0]}}, "declares bytes"),  # int64 overflow
    ({"w": {"dtype": "F32", "shape": "12", "data_offsets": [0, 8]}}, "malformed"),
    ({"w": {"dtype": "F32", "shape": [2.0], "data_offsets": [0, 8]}}, "malformed"),
    ({"w": {"dtype": "F32", "shape": [True, 2], "data_offsets": [0, 8]}}, "malformed"),
    ({"w": {"dtype": ["F32"], "shape": [2], "data_offsets": [0, 8]}}, "malformed"),
    ({"w": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8, 9]}}, "malformed"),
    ({"w": [1, 2]}, "malformed"),
    (b"[" * 100_000, "not valid JSON"),  # RecursionError in json
    (b"{\"w\": \xff}", "not valid JSON"),
])
def test_malformed_safetensors_headers(tmp_path, header, match):
    with pytest.raises(CheckpointError, match=match):
        load_pytorch_checkpoint(_safetensors(tmp_path / "bad.safetensors", header))


_ENTRY = {"arch": "convnext_tiny", "source": "fb", "pretraining": "in1k", "resolution": 224, "classes": 1000,
          "url": "https://example.invalid/x.pth", "format": "pth", "layout": "official", "sha256": None,
          "sha256_source": "none published", "top1": 82, "license": "MIT", "preprocessing": {}, "num_params": 1}


@pytest.mark.parametrize("document, match", [
    (b"{not json", "not a valid JSON catalogue"),
    (b"\xff\xfe", "not a valid JSON catalogue"),
    (b"[" * 100_000, "not a valid JSON catalogue"),
    ({"entries": []}, "'entries' object"),
    ([], "'entries' object"),
    ({"entries": {"a.b": "text"}}, "not an object"),
    ({"entries": {"a.b": dict(_ENTRY, id="other")}}, "unknown fields \\['id'\\]"),
    ({"entries": {"a.b": {k: v for k, v in _ENTRY.items() if k != "url"}}}, "lacks the fields \\['url'\\]"),
    ({"entries": {"a.b": dict(_ENTRY, resolution="224")}}, "field 'resolution' is str"),
    ({"entries": {"a.b": dict(_ENTRY, classes=True)}}, "field 'classes' is bool"),
    ({"entries": {"a.b": dict(_ENTRY, top1="high")}}, "field 'top1' is str"),
    ({"entries": {"a.b": dict(_ENTRY, default=1)}}, "field 'default' is int"),
    ({"entries": {"a.b": dict(_ENTRY, task="art")}}, "task 'art'"),
])
def test_malformed_catalogues_raise_catalogue_error(tmp_path, document, match):
    path = tmp_path / "catalogue.json"
    path.write_bytes(document if isinstance(document, bytes) else json.dumps(document).encode())
    with pytest.raises(CatalogueError, match=match) as info:
        load_catalogue.__wrapped__(str(path))
    assert "catalogue.json" in str(info.value)


def test_a_valid_small_catalogue_still_loads(tmp_path):
    path = tmp_path / "catalogue.json"
    path.write_text(json.dumps({"entries": {"convnext_tiny.fb_in1k": _ENTRY}}))
    entry = load_catalogue.__wrapped__(str(path))["convnext_tiny.fb_in1k"]
    assert entry.top1 == 82 and entry.sha256 is None and entry.task == "classification"

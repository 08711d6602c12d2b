"""Hostile and broken checkpoints: each gives a clear error and nothing from the file executes.

Every payload would create ``SIDE_EFFECT`` if any of its code ran; the test asserts the file
never appears. Payloads are built with the standard ``pickle`` module (no torch needed).
"""

import json
import os
import pickle
import struct
import subprocess
import zipfile

import numpy as np
import pytest

from keras_visrec.converters.pytorch_reader import CheckpointError, load_pytorch_checkpoint


class _Reduce:
    """Pickles as ``func(*args)``: the classic code-execution payload."""

    def __init__(self, func, *args):
        self.func, self.args = func, args

    def __reduce__(self):
        return self.func, self.args


def _zip_checkpoint(path, payload_bytes, storages=()):
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("archive/data.pkl", payload_bytes)
        archive.writestr("archive/version", "3\n")
        for key, data in storages:
            archive.writestr(f"archive/data/{key}", data)
    return path


@pytest.fixture
def side_effect(tmp_path):
    marker = tmp_path / "SIDE_EFFECT"
    yield marker
    assert not marker.exists(), "a payload executed code while loading a checkpoint"


def _payloads(marker):
    command = f"touch {marker}"
    return {
        "os.system": _Reduce(os.system, command),
        "subprocess": _Reduce(subprocess.call, ["touch", str(marker)]),
        "eval": _Reduce(eval, f"open({str(marker)!r}, 'w').close()"),
        "exec": _Reduce(exec, f"open({str(marker)!r}, 'w').close()"),
        "nested_reduce": {"model": {"w": _Reduce(os.system, _Reduce(str, command))}},
    }


def _getattr_chain(marker):
    # builtins.getattr(builtins.__import__("os"), "system")("touch marker"), written by hand
    imported = _Reduce(_FakeGlobal("builtins", "__import__"), "os")
    system = _Reduce(_FakeGlobal("builtins", "getattr"), imported, "system")
    return _pickle_with_fakes({"model": _Reduce(system, f"touch {marker}")})


@pytest.mark.parametrize("name", ["os.system", "subprocess", "eval", "exec", "getattr_chain", "nested_reduce"])
def test_code_execution_payloads_are_refused(tmp_path, side_effect, name):
    if name == "getattr_chain":
        data = _getattr_chain(side_effect)
    else:
        data = pickle.dumps(_payloads(side_effect)[name], protocol=2)
    path = _zip_checkpoint(tmp_path / "evil.pth", data)
    with pytest.raises(CheckpointError, match="not allowed") as info:
        load_pytorch_checkpoint(path)
    assert str(path) in str(info.value)
    # the error names the offending global
    assert any(word in str(info.value) for word in ("posix", "os", "subprocess", "builtins", "nt"))


@pytest.mark.parametrize("protocol", [0, 2, 4, 5])
def test_payload_refused_in_every_pickle_protocol_and_legacy_format(tmp_path, side_effect, protocol):
    payload = pickle.dumps({"x": _Reduce(os.system, f"touch {side_effect}")}, protocol=protocol)
    path = tmp_path / "legacy.pth"
    # legacy format: magic number pickle first, then the payload
    path.write_bytes(pickle.dumps(0x1950A86A20F9469CFC6C, protocol=2) + payload)
    with pytest.raises(CheckpointError):
        load_pytorch_checkpoint(path)
    zipped = _zip_checkpoint(tmp_path / "z.pth", payload)
    with pytest.raises(CheckpointError):
        load_pytorch_checkpoint(zipped)


def test_reduce_on_allowed_ordered_dict_with_arguments_is_refused(tmp_path, side_effect):
    import collections

    payload = pickle.dumps(_Reduce(collections.OrderedDict, [("a", 1)]), protocol=2)
    with pytest.raises(CheckpointError, match="OrderedDict"):
        load_pytorch_checkpoint(_zip_checkpoint(tmp_path / "od.pth", payload))


def test_truncated_zip(tmp_path):
    good = _zip_checkpoint(tmp_path / "good.pth", pickle.dumps({"a": 1}, protocol=2))
    data = good.read_bytes()
    cut = tmp_path / "cut.pth"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="cut.pth"):
        load_pytorch_checkpoint(cut)


def test_truncated_pickle_inside_zip(tmp_path):
    data = pickle.dumps({"a": [1, 2, 3]}, protocol=2)
    with pytest.raises(CheckpointError, match="truncated"):
        load_pytorch_checkpoint(_zip_checkpoint(tmp_path / "t.pth", data[:-4]))


def test_random_bytes_and_empty_file(tmp_path):
    noise = tmp_path / "noise.pth"
    noise.write_bytes(np.random.RandomState(0).bytes(4096))
    with pytest.raises(CheckpointError, match="noise.pth"):
        load_pytorch_checkpoint(noise)
    empty = tmp_path / "empty.bin"
    empty.write_bytes(b"")
    with pytest.raises(CheckpointError, match="empty"):
        load_pytorch_checkpoint(empty)
    with pytest.raises(FileNotFoundError, match="nowhere.pth"):
        load_pytorch_checkpoint(tmp_path / "nowhere.pth")


def test_random_bytes_after_pickle_header_do_not_crash(tmp_path):
    # a PROTO opcode followed by noise: must end in CheckpointError, never another exception type
    rng = np.random.RandomState(1)
    for trial in range(30):
        path = tmp_path / f"fuzz{trial}.pth"
        path.write_bytes(b"\x80\x02" + rng.bytes(256))
        with pytest.raises(CheckpointError):
            load_pytorch_checkpoint(path)


def test_storage_smaller_than_tensor_claims(tmp_path):
    # a tensor that claims 1000 floats over a storage file holding 8 bytes
    tensor = _Reduce(_FakeGlobal("torch._utils", "_rebuild_tensor_v2"), _Pid(("storage", _FakeGlobal("torch", "FloatStorage"), "0", "cpu", 1000)), 0, (1000,), (1,), False, None)
    data = _pickle_with_fakes({"w": tensor})
    path = _zip_checkpoint(tmp_path / "short.pth", data, storages=[("0", b"\0" * 8)])
    with pytest.raises(CheckpointError, match="holds 8 bytes"):
        load_pytorch_checkpoint(path)


def test_strides_reaching_past_storage_are_refused(tmp_path):
    tensor = _Reduce(_FakeGlobal("torch._utils", "_rebuild_tensor_v2"), _Pid(("storage", _FakeGlobal("torch", "FloatStorage"), "0", "cpu", 4)), 0, (2, 2), (4, 1), False, None)
    path = _zip_checkpoint(tmp_path / "stride.pth", _pickle_with_fakes({"w": tensor}), storages=[("0", b"\0" * 16)])
    with pytest.raises(CheckpointError, match="reaches element"):
        load_pytorch_checkpoint(path)


def test_hand_made_checkpoint_with_shared_storage_offsets_and_strides(tmp_path):
    """Without torch: two tensors viewing one storage (offset, transposed stride), plus bfloat16 and float16."""
    values = np.arange(12, dtype="<f4")
    rebuild = _FakeGlobal("torch._utils", "_rebuild_tensor_v2")
    float_storage = _Pid(("storage", _FakeGlobal("torch", "FloatStorage"), "0", "cpu", 12))
    bf16 = np.array([1.5, -2.0, 3.25], dtype="<f4").view("<u4") >> 16
    half = np.array([0.5, 4.0], dtype="<f2")
    state = {
        "a": _Reduce(rebuild, float_storage, 0, (3, 4), (4, 1), False, _Reduce(_FakeGlobal("collections", "OrderedDict"))),
        "a_t": _Reduce(rebuild, float_storage, 1, (3, 2), (1, 4), False, None),
        "b": _Reduce(rebuild, _Pid(("storage", _FakeGlobal("torch", "BFloat16Storage"), "1", "cpu", 3)), 0, (3,), (1,), False, None),
        "h": _Reduce(_FakeGlobal("torch._utils", "_rebuild_parameter"),
                     _Reduce(rebuild, _Pid(("storage", _FakeGlobal("torch", "HalfStorage"), "2", "cpu", 2)), 0, (2,), (1,), False, None), True, None),
    }
    path = _zip_checkpoint(tmp_path / "hand.pth", _pickle_with_fakes({"model": state}), storages=[
        ("0", values.tobytes()), ("1", bf16.astype("<u2").tobytes()), ("2", half.tobytes())])
    out = load_pytorch_checkpoint(path)["model"]
    np.testing.assert_array_equal(out["a"], values.reshape(3, 4))
    np.testing.assert_array_equal(out["a_t"], np.array([[1, 5], [2, 6], [3, 7]], "f4"))
    np.testing.assert_array_equal(out["b"], np.array([1.5, -2.0, 3.25], "f4"))
    assert out["b"].dtype == np.float32
    np.testing.assert_array_equal(out["h"], half)
    assert out["h"].dtype == np.float16


# ---- safetensors ---------------------------------------------------------------------------------

def _safetensors_bytes(header, data):
    blob = json.dumps(header).encode()
    return struct.pack("<Q", len(blob)) + blob + data


def test_safetensors_header_declaring_more_data_than_file(tmp_path):
    header = {"w": {"dtype": "F32", "shape": [1_000_000_000], "data_offsets": [0, 4_000_000_000]}}
    path = tmp_path / "big.safetensors"
    path.write_bytes(_safetensors_bytes(header, b"\0" * 16))
    with pytest.raises(CheckpointError, match="data section holds 16 bytes"):
        load_pytorch_checkpoint(path)


def test_safetensors_header_length_beyond_file(tmp_path):
    path = tmp_path / "len.safetensors"
    path.write_bytes(struct.pack("<Q", 1 << 40) + b"{}")
    with pytest.raises(CheckpointError, match="header declares"):
        load_pytorch_checkpoint(path)


def test_safetensors_round_trip_including_bfloat16(tmp_path):
    from safetensors.numpy import save_file

    weights = {"a": np.arange(6, dtype="float32").reshape(2, 3), "b": np.ones(3, "float16")}
    path = tmp_path / "ok.safetensors"
    save_file(weights, str(path))
    out = load_pytorch_checkpoint(path)
    np.testing.assert_array_equal(out["a"], weights["a"])
    np.testing.assert_array_equal(out["b"], weights["b"])
    bf = np.array([1.0, -0.5], "f4").view("<u4") >> 16
    header = {"c": {"dtype": "BF16", "shape": [2], "data_offsets": [0, 4]}}
    path2 = tmp_path / "bf.safetensors"
    path2.write_bytes(_safetensors_bytes(header, bf.astype("<u2").tobytes()))
    np.testing.assert_array_equal(load_pytorch_checkpoint(path2)["c"], np.array([1.0, -0.5], "f4"))


# ---- a tiny pickle writer for torch-shaped checkpoints, without torch -------------------------------

class _FakeGlobal:
    """Written as a GLOBAL opcode naming ``module.name`` (nothing is imported)."""

    def __init__(self, module, name):
        self.module, self.name = module, name


class _Pid:
    """Written as a persistent id (BINPERSID) for the tuple it holds."""

    def __init__(self, pid):
        self.pid = pid


def _emit(obj, out):
    if isinstance(obj, _FakeGlobal):
        out += b"c" + f"{obj.module}\n{obj.name}\n".encode()
    elif isinstance(obj, _Reduce):
        _emit(obj.func, out)
        _emit(tuple(obj.args), out)
        out += b"R"
    elif isinstance(obj, _Pid):
        _emit(obj.pid, out)
        out += b"Q"
    elif isinstance(obj, dict):
        out += b"}("
        for key, value in obj.items():
            _emit(key, out)
            _emit(value, out)
        out += b"u"
    elif isinstance(obj, tuple):
        out += b"("
        for item in obj:
            _emit(item, out)
        out += b"t"
    elif isinstance(obj, bool):
        out += b"\x88" if obj else b"\x89"
    elif obj is None:
        out += b"N"
    elif isinstance(obj, int) and -(2**31) <= obj < 2**31:
        out += b"J" + struct.pack("<i", obj)
    elif isinstance(obj, int):
        data = obj.to_bytes((obj.bit_length() + 8) // 8, "little", signed=True)
        out += b"\x8a" + bytes([len(data)]) + data
    elif isinstance(obj, str):
        data = obj.encode()
        out += b"X" + struct.pack("<I", len(data)) + data
    else:
        raise TypeError(type(obj))


def _pickle_with_fakes(obj):
    out = bytearray(b"\x80\x02")
    _emit(obj, out)
    return bytes(out + b".")


def test_declared_huge_lengths_allocate_nothing(tmp_path):
    """A string or storage that claims gigabytes is refused before any allocation."""
    import tracemalloc

    huge_string = b"\x80\x02X" + struct.pack("<I", 0xFFFFFFF0) + b"abc"
    huge_storage = _pickle_with_fakes({"w": _Reduce(
        _FakeGlobal("torch._utils", "_rebuild_tensor_v2"),
        _Pid(("storage", _FakeGlobal("torch", "FloatStorage"), "0", "cpu", 1 << 40)), 0, (1 << 40,), (1,), False, None)})
    paths = [_zip_checkpoint(tmp_path / "s.pth", huge_string),
             _zip_checkpoint(tmp_path / "t.pth", huge_storage, storages=[("0", b"\0" * 64)])]
    for path in paths:
        tracemalloc.start()
        with pytest.raises(CheckpointError):
            load_pytorch_checkpoint(path)
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        assert peak < 8 * 2**20, f"{path.name}: {peak} bytes allocated"

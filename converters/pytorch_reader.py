"""Read PyTorch checkpoints into numpy arrays without torch and without a general unpickler.

``torch.save`` writes a pickle that describes tensors (via ``torch._utils._rebuild_tensor_v2``)
and refers to their raw bytes by "persistent id". A general unpickler (``pickle.load``,
``torch.load`` without ``weights_only``) calls whatever the file names, which is how hostile
checkpoints run code. This module instead interprets the small set of pickle opcodes that
``torch.save`` emits with its own stack machine: the only callables it ever invokes are the
few rebuild functions defined *here* (tensor, parameter, ``OrderedDict``), looked up in an
allow-list. Any other global, any unknown opcode, any out-of-range length is an error naming
the file and the offending item; nothing from the file is executed.

Formats:

* the zip format of ``torch.save`` (``<prefix>/data.pkl`` + ``<prefix>/data/<key>``), also used
  by Hugging Face ``pytorch_model.bin`` files;
* the legacy non-zip format (``_use_new_zipfile_serialization=False``, PyTorch < 1.6);
* ``.safetensors`` (header checked against the file size before anything is read).

Storages of float32 / float16 / bfloat16 (returned as float32) / float64 and the integer and
bool types are supported; strides, storage offsets and storages shared by several tensors are
honoured.
"""

import collections
import json
import os
import struct
import zipfile

import numpy as np

__all__ = ["CheckpointError", "ALLOWED_GLOBALS", "load_pytorch_checkpoint", "read_safetensors"]


class CheckpointError(ValueError):
    """A checkpoint file that cannot be read safely (malformed, truncated or not allowed)."""


# storage class name -> (numpy dtype, bytes per element); bfloat16 is widened to float32 on read.
_STORAGE_DTYPES = {
    "FloatStorage": ("float32", 4),
    "HalfStorage": ("float16", 2),
    "BFloat16Storage": ("bfloat16", 2),
    "DoubleStorage": ("float64", 8),
    "LongStorage": ("int64", 8),
    "IntStorage": ("int32", 4),
    "ShortStorage": ("int16", 2),
    "CharStorage": ("int8", 1),
    "ByteStorage": ("uint8", 1),
    "BoolStorage": ("bool", 1),
}
_TORCH_DTYPES = {
    "float32": "float32", "float": "float32", "float16": "float16", "half": "float16",
    "bfloat16": "bfloat16", "float64": "float64", "double": "float64", "int64": "int64",
    "long": "int64", "int32": "int32", "int": "int32", "int16": "int16", "int8": "int8",
    "uint8": "uint8", "bool": "bool",
}
_MAX_NDIM = 16
_MAX_PICKLE_BYTES = 64 * 1024 * 1024  # a state-dict pickle is kilobytes; this bounds memory
_MAX_CONTAINER = 10_000_000
_LEGACY_MAGIC = 0x1950A86A20F9469CFC6C


class _StorageType:
    """Marker for ``torch.<X>Storage`` / a dtype named in a pickle (never called)."""

    def __init__(self, name, dtype):
        self.name, self.dtype = name, dtype

    def __repr__(self):
        return f"torch.{self.name}"


class _StorageRef:
    """A persistent id resolved to (key, dtype, element count); bytes are read on demand."""

    def __init__(self, key, dtype, numel):
        self.key, self.dtype, self.numel = key, dtype, numel


class _Tensor:
    """A tensor description from the pickle: storage reference + offset, size and stride."""

    def __init__(self, storage, offset, size, stride):
        self.storage, self.offset, self.size, self.stride = storage, offset, size, stride


def _int_tuple(value, what, path):
    if not isinstance(value, tuple) or len(value) > _MAX_NDIM or not all(
        isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in value
    ):
        raise CheckpointError(f"{path}: malformed tensor {what} {value!r}.")
    return value


def _rebuild_tensor(path):
    def rebuild(storage, offset, size, stride, *_ignored):
        if not isinstance(storage, _StorageRef):
            raise CheckpointError(f"{path}: tensor rebuilt from {type(storage).__name__}, not a storage.")
        if not isinstance(offset, int) or offset < 0:
            raise CheckpointError(f"{path}: malformed storage offset {offset!r}.")
        size = _int_tuple(size, "size", path)
        stride = _int_tuple(stride, "stride", path)
        if len(size) != len(stride):
            raise CheckpointError(f"{path}: tensor size {size} and stride {stride} differ in rank.")
        if all(size):
            last = offset + sum((s - 1) * st for s, st in zip(size, stride))
            if last >= storage.numel:
                raise CheckpointError(
                    f"{path}: tensor (offset {offset}, size {size}, stride {stride}) reaches element "
                    f"{last} of a storage holding {storage.numel}."
                )
        return _Tensor(storage, offset, size, stride)

    return rebuild


def _rebuild_parameter(data, *_ignored):
    return data


def _ordered_dict(*args):
    if args:
        raise CheckpointError("OrderedDict is only allowed with no arguments in a checkpoint.")
    return collections.OrderedDict()


def _allowed_globals(path):
    """(module, name) -> object for the REDUCE / GLOBAL opcodes: all a checkpoint may name."""
    table = {
        ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor(path),
        ("torch._utils", "_rebuild_tensor"): _rebuild_tensor(path),
        ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
        ("torch._utils", "_rebuild_parameter_with_state"): _rebuild_parameter,
        ("collections", "OrderedDict"): _ordered_dict,
    }
    for name, (dtype, _) in _STORAGE_DTYPES.items():
        table[("torch", name)] = _StorageType(name, dtype)
    for name, dtype in _TORCH_DTYPES.items():
        table[("torch", name)] = _StorageType(name, dtype)
    return table


#: The globals a checkpoint pickle may name, as "module.name" strings (for documentation / errors).
ALLOWED_GLOBALS = tuple(sorted(f"{m}.{n}" for m, n in _allowed_globals("<doc>")))


class _Machine:
    """A pickle interpreter for the opcodes ``torch.save`` emits (protocols 2–5), nothing more."""

    def __init__(self, data, path, persistent_load):
        self.data, self.path, self.pos = data, path, 0
        self.persistent_load = persistent_load
        self.globals = _allowed_globals(path)
        self.stack, self.marks, self.memo = [], [], {}
        self.callables = {id(v) for v in self.globals.values() if callable(v)}

    # -- reading primitives -------------------------------------------------------------
    def _read(self, n):
        if n < 0 or self.pos + n > len(self.data):
            raise CheckpointError(
                f"{self.path}: pickle truncated (needs {n} bytes at offset {self.pos} of {len(self.data)})."
            )
        chunk = self.data[self.pos:self.pos + n]
        self.pos += n
        return chunk

    def _uint(self, n):
        return int.from_bytes(self._read(n), "little")

    def _line(self):
        end = self.data.find(b"\n", self.pos)
        if end < 0:
            raise CheckpointError(f"{self.path}: pickle truncated (unterminated line at offset {self.pos}).")
        line = self.data[self.pos:end]
        self.pos = end + 1
        return line.decode("utf-8", "strict")

    def _pop_mark(self):
        if not self.marks:
            raise CheckpointError(f"{self.path}: malformed pickle (MARK missing at offset {self.pos}).")
        start = self.marks.pop()
        items = self.stack[start:]
        del self.stack[start:]
        return items

    def _pop(self):
        if not self.stack:
            raise CheckpointError(f"{self.path}: malformed pickle (stack empty at offset {self.pos}).")
        return self.stack.pop()

    def _global(self, module, name):
        try:
            return self.globals[(module, name)]
        except KeyError:
            raise CheckpointError(
                f"{self.path}: the checkpoint names the global '{module}.{name}', which is not allowed "
                f"(allowed: tensor and storage rebuilders, OrderedDict, dtypes). Nothing was executed."
            ) from None

    def _call(self, func, args):
        if id(func) not in self.callables:
            raise CheckpointError(
                f"{self.path}: pickle tries to call {func!r}, which is not an allowed rebuild function."
            )
        if not isinstance(args, tuple):
            raise CheckpointError(f"{self.path}: malformed pickle (REDUCE arguments are not a tuple).")
        return func(*args)

    def _set_items(self, target, items):
        if not isinstance(target, dict) or len(items) % 2:
            raise CheckpointError(f"{self.path}: malformed pickle (SETITEMS on {type(target).__name__}).")
        for key, value in zip(items[::2], items[1::2]):
            if not isinstance(key, (str, int, tuple, bytes)):
                raise CheckpointError(f"{self.path}: unsupported dict key type {type(key).__name__}.")
            target[key] = value

    # -- the interpreter -------------------------------------------------------------------
    def run(self):
        ops = _OPCODES
        while True:
            code = self._read(1)
            handler = ops.get(code)
            if handler is None:
                raise CheckpointError(
                    f"{self.path}: unsupported pickle opcode {code!r} at offset {self.pos - 1} "
                    "(not one torch.save writes)."
                )
            if handler is _stop:
                return self._pop()
            handler(self)
            if len(self.stack) > _MAX_CONTAINER or len(self.memo) > _MAX_CONTAINER:
                raise CheckpointError(f"{self.path}: pickle too large (more than {_MAX_CONTAINER} objects).")


def _stop(machine):
    """Sentinel handler for STOP (handled in the loop)."""
    raise AssertionError("unreachable")


def _op_proto(m):
    m._read(1)


def _op_frame(m):
    m._read(8)


def _op_put(m, n):
    if not m.stack:
        raise CheckpointError(f"{m.path}: malformed pickle (PUT with empty stack).")
    m.memo[m._uint(n)] = m.stack[-1]


def _op_get(m, n):
    key = m._uint(n)
    if key not in m.memo:
        raise CheckpointError(f"{m.path}: malformed pickle (memo key {key} undefined).")
    m.stack.append(m.memo[key])


def _op_memoize(m):
    if not m.stack:
        raise CheckpointError(f"{m.path}: malformed pickle (MEMOIZE with empty stack).")
    m.memo[len(m.memo)] = m.stack[-1]


def _op_unicode(m, n):
    m.stack.append(m._read(m._uint(n)).decode("utf-8", "surrogatepass"))


def _op_bytes(m, n):
    m.stack.append(bytes(m._read(m._uint(n))))


def _op_binstring(m, n):
    m.stack.append(m._read(m._uint(n)).decode("latin-1"))


def _op_int_signed(m, n):
    m.stack.append(int.from_bytes(m._read(n), "little", signed=True))


def _op_int_unsigned(m, n):
    m.stack.append(m._uint(n))


def _op_long1(m):
    m.stack.append(int.from_bytes(m._read(m._uint(1)), "little", signed=True))


def _op_long4(m):
    size = m._uint(4)
    if size > 64:
        raise CheckpointError(f"{m.path}: integer of {size} bytes in the pickle is not plausible.")
    m.stack.append(int.from_bytes(m._read(size), "little", signed=True))


def _op_text_int(m):
    text = m._line().rstrip("L")
    if text in ("00", "01"):
        m.stack.append(text == "01")
    elif len(text) > 40:
        raise CheckpointError(f"{m.path}: integer literal too long in the pickle.")
    else:
        try:
            m.stack.append(int(text))
        except ValueError:
            raise CheckpointError(f"{m.path}: malformed integer literal {text[:40]!r}.") from None


def _op_binfloat(m):
    m.stack.append(struct.unpack(">d", m._read(8))[0])


def _op_global(m):
    module = m._line()
    name = m._line()
    m.stack.append(m._global(module, name))


def _op_stack_global(m):
    name, module = m._pop(), m._pop()
    if not isinstance(name, str) or not isinstance(module, str):
        raise CheckpointError(f"{m.path}: malformed STACK_GLOBAL operands.")
    m.stack.append(m._global(module, name))


def _op_reduce(m):
    args = m._pop()
    func = m._pop()
    m.stack.append(m._call(func, args))


def _op_newobj(m):
    args = m._pop()
    cls = m._pop()
    m.stack.append(m._call(cls, args))


def _op_build(m):
    state = m._pop()
    target = m.stack[-1] if m.stack else None
    # Only an OrderedDict (a state dict carrying ``_metadata``) may receive state; it is dropped.
    if not isinstance(target, collections.OrderedDict) or not isinstance(state, (dict, tuple, type(None))):
        raise CheckpointError(
            f"{m.path}: pickle BUILD on {type(target).__name__} is not allowed (only state-dict metadata)."
        )


def _op_persid(m):
    m.stack.append(m.persistent_load(m._pop()))


def _op_tuple_n(m, n):
    if len(m.stack) < n:
        raise CheckpointError(f"{m.path}: malformed pickle (TUPLE{n} with short stack).")
    items = tuple(m.stack[len(m.stack) - n:])
    del m.stack[len(m.stack) - n:]
    m.stack.append(items)


def _op_setitem(m):
    value, key = m._pop(), m._pop()
    m._set_items(m.stack[-1] if m.stack else None, [key, value])


def _op_setitems(m):
    items = m._pop_mark()
    m._set_items(m.stack[-1] if m.stack else None, items)


def _op_append(m):
    value = m._pop()
    if not m.stack or not isinstance(m.stack[-1], list):
        raise CheckpointError(f"{m.path}: malformed pickle (APPEND to a non-list).")
    m.stack[-1].append(value)


def _op_appends(m):
    items = m._pop_mark()
    if not m.stack or not isinstance(m.stack[-1], list):
        raise CheckpointError(f"{m.path}: malformed pickle (APPENDS to a non-list).")
    m.stack[-1].extend(items)


def _op_dict(m):
    items = m._pop_mark()
    target = {}
    m._set_items(target, items)
    m.stack.append(target)


def _op_pop(m):
    m._pop()


def _op_dup(m):
    if not m.stack:
        raise CheckpointError(f"{m.path}: malformed pickle (DUP with empty stack).")
    m.stack.append(m.stack[-1])


_OPCODES = {
    b"\x80": _op_proto,
    b"\x95": _op_frame,
    b".": _stop,
    b"(": lambda m: m.marks.append(len(m.stack)),
    b"0": _op_pop,
    b"1": lambda m: m._pop_mark(),
    b"2": _op_dup,
    b"q": lambda m: _op_put(m, 1),
    b"r": lambda m: _op_put(m, 4),
    b"\x94": _op_memoize,
    b"h": lambda m: _op_get(m, 1),
    b"j": lambda m: _op_get(m, 4),
    b"X": lambda m: _op_unicode(m, 4),
    b"\x8c": lambda m: _op_unicode(m, 1),
    b"\x8d": lambda m: _op_unicode(m, 8),
    b"C": lambda m: _op_bytes(m, 1),
    b"B": lambda m: _op_bytes(m, 4),
    b"\x8e": lambda m: _op_bytes(m, 8),
    b"U": lambda m: _op_binstring(m, 1),
    b"T": lambda m: _op_binstring(m, 4),
    b"J": lambda m: _op_int_signed(m, 4),
    b"K": lambda m: _op_int_unsigned(m, 1),
    b"M": lambda m: _op_int_unsigned(m, 2),
    b"I": _op_text_int,
    b"L": _op_text_int,
    b"\x8a": _op_long1,
    b"\x8b": _op_long4,
    b"G": _op_binfloat,
    b"N": lambda m: m.stack.append(None),
    b"\x88": lambda m: m.stack.append(True),
    b"\x89": lambda m: m.stack.append(False),
    b"}": lambda m: m.stack.append({}),
    b"]": lambda m: m.stack.append([]),
    b")": lambda m: m.stack.append(()),
    b"t": lambda m: m.stack.append(tuple(m._pop_mark())),
    b"\x85": lambda m: _op_tuple_n(m, 1),
    b"\x86": lambda m: _op_tuple_n(m, 2),
    b"\x87": lambda m: _op_tuple_n(m, 3),
    b"l": lambda m: m.stack.append(list(m._pop_mark())),
    b"d": _op_dict,
    b"c": _op_global,
    b"\x93": _op_stack_global,
    b"R": _op_reduce,
    b"\x81": _op_newobj,
    b"b": _op_build,
    b"Q": _op_persid,
    b"s": _op_setitem,
    b"u": _op_setitems,
    b"a": _op_append,
    b"e": _op_appends,
}


def _unpickle(data, path, persistent_load):
    if len(data) > _MAX_PICKLE_BYTES:
        raise CheckpointError(f"{path}: pickle of {len(data)} bytes is larger than any state dict plausibly is.")
    return _Machine(memoryview(data).tobytes() if isinstance(data, memoryview) else data, path,
                    persistent_load).run()


def _storage_persistent_load(path, records):
    """Returns the persistent_load used for both formats; records every storage it meets."""

    def load(pid):
        if not isinstance(pid, tuple) or len(pid) < 5 or pid[0] != "storage":
            raise CheckpointError(f"{path}: unsupported persistent id {str(pid)[:80]!r} (expected a storage).")
        storage_type, key, _location, numel = pid[1:5]
        if not isinstance(storage_type, _StorageType):
            raise CheckpointError(f"{path}: storage type {storage_type!r} is not a known storage class.")
        if not isinstance(numel, int) or numel < 0 or not isinstance(key, str):
            raise CheckpointError(f"{path}: malformed storage record {str(pid)[:80]!r}.")
        known = records.get(key)
        if known is not None:
            if known.dtype != storage_type.dtype:
                raise CheckpointError(f"{path}: storage {key!r} is used with two dtypes.")
            return known
        ref = _StorageRef(key, storage_type.dtype, numel)
        records[key] = ref
        return ref

    return load


def _itemsize(dtype):
    return 2 if dtype == "bfloat16" else np.dtype(dtype).itemsize


def _decode_storage(raw, ref, path):
    """Raw little-endian bytes -> 1-D numpy array (bfloat16 widened to float32)."""
    nbytes = ref.numel * _itemsize(ref.dtype)
    if len(raw) < nbytes:
        raise CheckpointError(
            f"{path}: storage {ref.key!r} holds {len(raw)} bytes, its tensors need {nbytes} (file truncated?)."
        )
    if ref.dtype == "bfloat16":
        halves = np.frombuffer(raw, dtype="<u2", count=ref.numel)
        return (halves.astype(np.uint32) << 16).view(np.float32)
    return np.frombuffer(raw, dtype=np.dtype(ref.dtype).newbyteorder("<"), count=ref.numel)


def _materialise(tensor, storages):
    """A `_Tensor` -> an owned numpy array, honouring offset, size and stride."""
    flat = storages[tensor.storage.key]
    if not all(tensor.size):
        return np.zeros(tensor.size, dtype=flat.dtype)
    numel = int(np.prod(tensor.size))
    if tensor.offset == 0 and numel == flat.size and tensor.stride == _contiguous_strides(tensor.size):
        return flat.reshape(tensor.size)  # the common case: the tensor owns its storage, no copy
    itemsize = flat.dtype.itemsize
    view = np.lib.stride_tricks.as_strided(
        flat[tensor.offset:], shape=tensor.size, strides=[s * itemsize for s in tensor.stride], writeable=False
    )
    return np.array(view, dtype=flat.dtype.newbyteorder("="), copy=True)


def _contiguous_strides(size):
    strides, step = [], 1
    for dim in reversed(size):
        strides.append(step)
        step *= max(dim, 1)
    return tuple(reversed(strides))


def _to_numpy(obj, storages, path):
    """Walks the unpickled object, turning tensor descriptions into arrays (dicts / lists kept)."""
    if isinstance(obj, _Tensor):
        return _materialise(obj, storages)
    if isinstance(obj, dict):
        return {key: _to_numpy(value, storages, path) for key, value in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(_to_numpy(value, storages, path) for value in obj)
    return obj


def _read_zip(path):
    try:
        archive = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError) as error:
        raise CheckpointError(f"{path}: not a readable PyTorch zip checkpoint ({error}).") from None
    with archive:
        names = archive.namelist()
        pickles = [n for n in names if n.endswith("data.pkl") and n.count("/") == 1]
        if len(pickles) != 1:
            raise CheckpointError(f"{path}: zip holds no single '<prefix>/data.pkl' (found {pickles[:5]}).")
        prefix = pickles[0][: -len("data.pkl")]
        try:
            pickle_bytes = archive.read(pickles[0])
        except (zipfile.BadZipFile, OSError, EOFError) as error:
            raise CheckpointError(f"{path}: cannot read {pickles[0]} ({error}).") from None
        records = {}
        obj = _unpickle(pickle_bytes, path, _storage_persistent_load(path, records))
        storages = {}
        for key, ref in records.items():
            member = f"{prefix}data/{key}"
            try:
                info = archive.getinfo(member)
            except KeyError:
                raise CheckpointError(f"{path}: storage file {member!r} is missing from the archive.") from None
            nbytes = ref.numel * _itemsize(ref.dtype)
            if info.file_size < nbytes:
                raise CheckpointError(
                    f"{path}: storage {member!r} holds {info.file_size} bytes, its tensors need {nbytes}."
                )
            buffer = bytearray(nbytes)
            try:
                got = _read_member_into(archive, info, path, buffer)
            except (zipfile.BadZipFile, OSError, EOFError) as error:
                raise CheckpointError(f"{path}: cannot read storage {member!r} ({error}).") from None
            if got != nbytes:
                raise CheckpointError(f"{path}: storage {member!r} is truncated ({got} of {nbytes} bytes).")
            storages[key] = _decode_storage(buffer, ref, path)
    return _to_numpy(obj, storages, path)


def _read_member_into(archive, info, path, buffer):
    """Reads a zip member into ``buffer``; stored (uncompressed) members go straight from the file.

    ``torch.save`` stores storages uncompressed; reading them with one ``readinto`` at their
    offset avoids the intermediate ``bytes`` objects of ``ZipFile.open``, keeping peak memory
    close to the tensors' own size.
    """
    if info.compress_type != zipfile.ZIP_STORED:
        with archive.open(info) as stream:
            return stream.readinto(memoryview(buffer))
    with open(path, "rb") as handle:
        handle.seek(info.header_offset)
        header = handle.read(30)
        if len(header) != 30 or header[:4] != b"PK\x03\x04":
            raise CheckpointError(f"{path}: bad local header for {info.filename!r}.")
        name_length, extra_length = struct.unpack("<HH", header[26:30])
        handle.seek(info.header_offset + 30 + name_length + extra_length)
        return handle.readinto(memoryview(buffer))


def _read_legacy(path):
    """The pre-1.6 format: magic, protocol, sys-info and object pickles, key list, raw storages."""
    with open(path, "rb") as handle:
        data = handle.read()
    view = memoryview(data)
    offsets = [0]

    def next_pickle(persistent_load=None):
        machine = _Machine(data, path, persistent_load or _no_persistent(path))
        machine.pos = offsets[0]
        result = machine.run()
        offsets[0] = machine.pos
        return result

    if next_pickle() != _LEGACY_MAGIC:
        raise CheckpointError(f"{path}: not a PyTorch checkpoint (bad magic number).")
    next_pickle()  # protocol version
    next_pickle()  # sys info
    records = {}
    obj = next_pickle(_storage_persistent_load(path, records))
    keys = next_pickle()
    if not isinstance(keys, list) or not all(isinstance(k, str) for k in keys):
        raise CheckpointError(f"{path}: malformed storage key list.")
    storages = {}
    pos = offsets[0]
    for key in keys:
        if pos + 8 > len(data):
            raise CheckpointError(f"{path}: truncated before storage {key!r}.")
        numel = int.from_bytes(view[pos:pos + 8], "little")
        pos += 8
        ref = records.get(key)
        if ref is None:
            raise CheckpointError(f"{path}: storage {key!r} is listed but no tensor uses it.")
        nbytes = numel * _itemsize(ref.dtype)
        if numel < ref.numel or pos + nbytes > len(data):
            raise CheckpointError(f"{path}: storage {key!r} is truncated or smaller than its tensors need.")
        storages[key] = _decode_storage(view[pos:pos + nbytes], ref, path).copy()
        pos += nbytes
    missing = set(records) - set(storages)
    if missing:
        raise CheckpointError(f"{path}: storages {sorted(missing)[:5]} are used but not stored.")
    return _to_numpy(obj, storages, path)


def _no_persistent(path):
    def load(pid):
        raise CheckpointError(f"{path}: unexpected persistent id in a header pickle.")

    return load


_SAFETENSORS_DTYPES = {
    "F32": "float32", "F16": "float16", "BF16": "bfloat16", "F64": "float64", "I64": "int64",
    "I32": "int32", "I16": "int16", "I8": "int8", "U8": "uint8", "BOOL": "bool",
}
_MAX_HEADER = 100 * 1024 * 1024


def read_safetensors(path):
    """Reads a ``.safetensors`` file into ``{name: np.ndarray}`` after validating its header.

    The header (JSON) must fit the file, and every tensor's byte range must lie inside the data
    section and match its dtype and shape — a header that declares more data than the file
    holds is rejected before any tensor is read. bfloat16 tensors are widened to float32.
    """
    path = os.fspath(path)
    size = os.path.getsize(path)
    with open(path, "rb") as handle:
        head = handle.read(8)
        if len(head) < 8:
            raise CheckpointError(f"{path}: too short to be a safetensors file ({size} bytes).")
        header_len = int.from_bytes(head, "little")
        if header_len > min(_MAX_HEADER, size - 8):
            raise CheckpointError(
                f"{path}: safetensors header declares {header_len} bytes but the file holds {size - 8}."
            )
        try:
            header = json.loads(handle.read(header_len))
        except (UnicodeDecodeError, json.JSONDecodeError) as error:
            raise CheckpointError(f"{path}: safetensors header is not valid JSON ({error}).") from None
        if not isinstance(header, dict):
            raise CheckpointError(f"{path}: safetensors header is not a JSON object.")
        data_size = size - 8 - header_len
        plan = []
        for name, entry in header.items():
            if name == "__metadata__":
                continue
            try:
                dtype = _SAFETENSORS_DTYPES[entry["dtype"]]
                shape = tuple(int(s) for s in entry["shape"])
                begin, end = (int(v) for v in entry["data_offsets"])
            except (KeyError, TypeError, ValueError):
                raise CheckpointError(f"{path}: malformed or unsupported safetensors entry {name!r}: {entry!r}.") from None
            expected = int(np.prod(shape, dtype=np.int64)) * _itemsize(dtype)
            if min(shape, default=0) < 0 or not 0 <= begin <= end <= data_size or end - begin != expected:
                raise CheckpointError(
                    f"{path}: tensor {name!r} declares bytes {begin}..{end} (shape {shape}, {dtype}) but the "
                    f"data section holds {data_size} bytes."
                )
            plan.append((name, dtype, shape, begin, end))
        base = 8 + header_len
        result = {}
        for name, dtype, shape, begin, end in plan:
            handle.seek(base + begin)
            raw = handle.read(end - begin)
            ref = _StorageRef(name, dtype, int(np.prod(shape, dtype=np.int64)))
            result[name] = _decode_storage(raw, ref, path).reshape(shape).copy()
    return result


def load_pytorch_checkpoint(path):
    """Reads a PyTorch checkpoint into ``{key: numpy.ndarray}`` without torch or ``pickle.load``.

    Args:
        path: str or path-like. A ``.pth`` / ``.pt`` / ``.bin`` file written by ``torch.save``
            (zip or legacy format) or a ``.safetensors`` file.

    Returns:
        The checkpoint's top-level dict with every tensor as a numpy array (nested dicts such as
        ``{"model": state_dict}`` are kept; see ``converters.convnext_keys.unwrap_state_dict``).
        bfloat16 tensors come back as float32.

    Raises:
        FileNotFoundError: when ``path`` does not exist.
        CheckpointError (a ValueError): when the file is malformed, truncated, or its pickle names
            anything beyond tensor rebuild functions, storages, ``OrderedDict`` and dtypes.

    Example:

    >>> state = load_pytorch_checkpoint("convnext_tiny_1k_224_ema.pth")  # doctest: +SKIP
    >>> state["model"]["head.weight"].shape  # doctest: +SKIP
    (1000, 768)
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"Checkpoint file not found: {path!r}.")
    if os.path.getsize(path) == 0:
        raise CheckpointError(f"{path}: the file is empty.")
    if path.lower().endswith(".safetensors"):
        return read_safetensors(path)
    with open(path, "rb") as handle:
        magic = handle.read(4)
    if magic[:2] == b"PK":
        return _read_zip(path)
    if magic[:1] == b"\x80":
        return _read_legacy(path)
    raise CheckpointError(
        f"{path}: not a PyTorch checkpoint (neither a torch.save zip nor a legacy pickle; first bytes {magic!r})."
    )

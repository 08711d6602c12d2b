"""Read PyTorch checkpoints into numpy arrays without torch and without a general unpickler.

``torch.save`` writes a pickle that describes tensors (via ``torch._utils._rebuild_tensor_v2``)
and refers to their raw bytes by "persistent id". A general unpickler (``pickle.load``,
``torch.load`` without ``weights_only``) calls whatever the file names, which is how hostile
checkpoints run code. This module instead interprets the pickle opcodes with its own stack
machine. A global the file names is looked up in an allow-list (:data:`ALLOWED_GLOBALS`) that
maps it to a rebuild function written *here*; nothing is imported from the name, no class
named by the file is ever instantiated and no foreign ``__reduce__`` / ``__setstate__`` runs.
Any other global, any unknown opcode, any out-of-range length is an error naming the file and
the offending item.

What the official tools write around the tensors is rebuilt as inert data (see
``converters/README.md`` for the list and where each comes from): ``argparse.Namespace`` (the
``args`` of a training checkpoint) as a :class:`Record`, ``OrderedDict`` / ``defaultdict``,
numpy arrays, scalars and dtypes (``numpy.core`` and numpy 2's ``numpy._core`` spellings),
``torch.Size`` as a tuple, ``torch.device`` as its string, ``_codecs.encode`` as bytes, and
protocol-2 sets / frozensets / complex numbers.

Formats:

* the zip format of ``torch.save`` (``<prefix>/data.pkl`` + ``<prefix>/data/<key>``), also used
  by Hugging Face ``pytorch_model.bin`` files;
* the legacy non-zip format (``_use_new_zipfile_serialization=False``, PyTorch < 1.6);
* ``.safetensors`` (header checked against the file size before anything is read).

Storages of float32 / float16 / bfloat16 (returned as float32) / float64 and the integer and
bool types are supported; strides, storage offsets and storages shared by several tensors are
honoured. Memory stays bounded by the file: every length is checked before it is allocated
and what the pickle builds is charged to a budget proportional to the file's size.
"""

import collections
import json
import math
import os
import re
import reprlib
import struct
import zipfile
import zlib

import numpy as np

__all__ = ["ALLOWED_GLOBALS", "CheckpointError", "Record", "load_pytorch_checkpoint", "read_safetensors"]


class CheckpointError(ValueError):
    """A checkpoint file that cannot be read safely (malformed, truncated or not allowed)."""


class Record(dict):
    """An object of an allowed class (``argparse.Namespace``) rebuilt as plain data.

    A ``dict`` of the object's attributes that also reads them as attributes
    (``record.lr == record["lr"]``); ``type_name`` says which class the file named. The class
    itself is never imported or called.
    """

    def __init__(self, type_name, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.type_name = type_name

    def __getattr__(self, name):
        try:
            return self[name]
        except KeyError:
            raise AttributeError(f"{self.type_name} record has no attribute {name!r}") from None

    def __repr__(self):
        return f"Record({self.type_name!r}, {dict.__repr__(self)})"

    def __reduce__(self):
        return Record, (self.type_name, dict(self))


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
_MAX_PICKLE_BYTES = 64 * 1024 * 1024  # a state-dict pickle is kilobytes to megabytes; this bounds memory
_MAX_STACK = 1_000_000                # objects on the stack / in the memo at once
_MAX_ITEMS = 5_000_000                # container items built in total
_MAX_DEPTH = 100                      # nesting of the unpickled data (a training checkpoint: ~6)
_MAX_KEY_DEPTH = 8                    # nesting of a tuple used as a dict key or set item
_MAX_DEFLATE_RATIO = 1100             # zlib's best ratio is about 1032:1; more is not a real file
_LEGACY_MAGIC = 0x1950A86A20F9469CFC6C

_brief_repr = reprlib.Repr()
_brief_repr.maxlevel, _brief_repr.maxstring, _brief_repr.maxother = 3, 60, 60


def _brief(value):
    """A bounded repr for error messages (never the whole of a large or deep value)."""
    try:
        return _brief_repr.repr(value)
    except Exception:  # a repr must never turn one error into another
        return f"<{type(value).__name__}>"


# ---- what a pickle may name: markers (never called) and rebuilders (this module's own code) -------

class _Marker:
    """A global the pickle may name but not call (a storage class, a torch dtype, ``numpy.ndarray``)."""

    def __init__(self, qualname):
        self.qualname = qualname

    def __repr__(self):
        return self.qualname


class _StorageType(_Marker):
    """``torch.<X>Storage`` or a torch dtype: names the element type of a storage."""

    def __init__(self, qualname, dtype):
        super().__init__(qualname)
        self.dtype = dtype


class _BuiltinType(_Marker):
    """A builtin type (``list``, ``set``, ``complex`` …): a ``defaultdict`` factory, or rebuilt from plain data."""

    def __init__(self, qualname, builtin):
        super().__init__(qualname)
        self.builtin = builtin


class _Rebuilder:
    """An allowed global the pickle may call (REDUCE / NEWOBJ): ``function(machine, args)`` defined here."""

    def __init__(self, qualname, function, *, newobj=False):
        self.qualname, self.function, self.newobj = qualname, function, newobj

    def __repr__(self):
        return self.qualname


class _StorageRef:
    """A persistent id resolved to (key, dtype, element count); bytes are read on demand."""

    def __init__(self, key, dtype, numel):
        self.key, self.dtype, self.numel = key, dtype, numel


class _Tensor:
    """A tensor description from the pickle: storage reference + offset, size and stride."""

    def __init__(self, storage, offset, size, stride):
        self.storage, self.offset, self.size, self.stride = storage, offset, size, stride


class _Dtype:
    """``numpy.dtype(code, …)`` from a pickle; its byte order arrives later by BUILD."""

    def __init__(self, code):
        self.code, self.byteorder, self.built = code, "=", False

    def resolve(self):
        dtype = np.dtype(self.code)
        if self.byteorder in "<>" and dtype.itemsize > 1 and dtype.kind != "S":
            dtype = dtype.newbyteorder(self.byteorder)
        return dtype


class _PendingArray:
    """``numpy.core.multiarray._reconstruct(ndarray, …)``: an array whose shape, dtype and bytes arrive by BUILD."""

    def __init__(self):
        self.value = None


def _arity(m, what, args, low, high=None):
    high = low if high is None else high
    if not low <= len(args) <= high:
        raise CheckpointError(f"{m.path}: {what} called with {len(args)} arguments in the pickle "
                              f"(expected {low}{'' if high == low else f'–{high}'}).")


def _int_tuple(value, what, path, *, limit=2 ** 40):
    if not isinstance(value, tuple) or len(value) > _MAX_NDIM or not all(
        type(v) is int and 0 <= v <= limit for v in value
    ):
        raise CheckpointError(f"{path}: malformed tensor {what} {_brief(value)}.")
    return value


def _rb_tensor(m, args):
    _arity(m, "torch._utils._rebuild_tensor_v2", args, 4, 7)
    storage, offset, size, stride = args[:4]
    path = m.path
    if not isinstance(storage, _StorageRef):
        raise CheckpointError(f"{path}: tensor rebuilt from {type(storage).__name__}, not a storage.")
    if type(offset) is not int or not 0 <= offset <= 2 ** 62:
        raise CheckpointError(f"{path}: malformed storage offset {_brief(offset)}.")
    size = _int_tuple(size, "size", path)
    stride = _int_tuple(stride, "stride", path, limit=2 ** 62)
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


def _rb_parameter(m, args):
    _arity(m, "torch._utils._rebuild_parameter", args, 1, 4)
    return args[0]


def _rb_ordered_dict(m, args):
    if args:
        raise CheckpointError(f"{m.path}: OrderedDict is only allowed with no arguments in a checkpoint.")
    return collections.OrderedDict()


_FACTORIES = ("list", "dict", "set", "frozenset", "tuple", "int", "float", "complex", "str", "bytes", "bool")


def _rb_defaultdict(m, args):
    _arity(m, "collections.defaultdict", args, 0, 1)
    factory = args[0] if args else None
    if factory is None:
        return collections.defaultdict()
    if isinstance(factory, _BuiltinType) and factory.builtin.__name__ in _FACTORIES:
        return collections.defaultdict(factory.builtin)
    if isinstance(factory, _Rebuilder) and factory.function is _rb_ordered_dict:
        return collections.defaultdict(collections.OrderedDict)
    raise CheckpointError(f"{m.path}: defaultdict with factory {_brief(factory)} is not allowed "
                          f"(allowed: None, {', '.join(_FACTORIES)}, OrderedDict).")


def _rb_namespace(m, args):
    if args:
        raise CheckpointError(f"{m.path}: argparse.Namespace is only rebuilt from its attributes (BUILD), "
                              f"not from arguments {_brief(args)}.")
    return Record("argparse.Namespace")


def _rb_codecs_encode(m, args):
    _arity(m, "_codecs.encode", args, 1, 2)
    text, encoding = (args + ("utf-8",))[:2]
    if not isinstance(text, str) or encoding not in ("latin1", "latin-1"):
        raise CheckpointError(f"{m.path}: _codecs.encode is only allowed on a str with 'latin1' (how pickle "
                              f"writes bytes); received {_brief(text)}, {_brief(encoding)}.")
    m.charge(len(text))
    try:
        return text.encode("latin-1")
    except UnicodeEncodeError:
        raise CheckpointError(f"{m.path}: _codecs.encode of text that is not latin-1.") from None


def _rb_builtin(builtin):
    name = builtin.__name__

    def rebuild(m, args):
        if name in ("set", "frozenset"):
            _arity(m, name, args, 0, 1)
            items = args[0] if args else []
            if type(items) not in (list, tuple):
                raise CheckpointError(f"{m.path}: {name} rebuilt from {type(items).__name__}, not a list.")
            for item in items:
                m.check_key(item)
            m.count(len(items))
            return builtin(items)
        if name == "bytes":
            _arity(m, name, args, 0, 1)
            if args and not isinstance(args[0], bytes):
                raise CheckpointError(f"{m.path}: bytes rebuilt from {type(args[0]).__name__}.")
            return args[0] if args else b""
        if name == "bytearray":
            _arity(m, name, args, 0, 2)
            if not args:
                return bytearray()
            if len(args) == 1 and isinstance(args[0], bytes):  # protocols 3+
                return bytearray(args[0])
            return bytearray(_rb_codecs_encode(m, args))  # protocol 2: (latin-1 text, "latin-1")
        if name == "complex":
            _arity(m, name, args, 0, 2)
            if not all(type(v) in (int, float) for v in args):
                raise CheckpointError(f"{m.path}: complex rebuilt from {_brief(args)}.")
            return complex(*args)
        raise CheckpointError(f"{m.path}: {name} may only be named as a defaultdict factory, not called.")

    return rebuild


_TORCH_DEVICE = re.compile(r"[a-z_]{1,32}(?::\d{1,6})?")


def _rb_torch_size(m, args):
    _arity(m, "torch.Size", args, 0, 1)
    dims = args[0] if args else ()
    if type(dims) not in (tuple, list) or len(dims) > 64 or not all(type(d) is int and d >= 0 for d in dims):
        raise CheckpointError(f"{m.path}: torch.Size rebuilt from {_brief(dims)}, not a tuple of sizes.")
    return tuple(dims)


def _rb_torch_device(m, args):
    _arity(m, "torch.device", args, 1, 2)
    kind, index = (args + (None,))[:2]
    if not isinstance(kind, str) or not _TORCH_DEVICE.fullmatch(kind) or not (
            index is None or (type(index) is int and 0 <= index < 2 ** 16)):
        raise CheckpointError(f"{m.path}: torch.device rebuilt from {_brief(args)}.")
    return kind if index is None else f"{kind}:{index}"


# numpy: the dtype codes numpy pickles for plain numeric / bool / string types (no objects, records, subarrays)
_NUMPY_CODE = re.compile(r"b1|[iu][1248]|f(?:2|4|8|16)|c(?:8|16|32)|[SU]\d{1,9}")


def _rb_numpy_dtype(m, args):
    _arity(m, "numpy.dtype", args, 1, 3)
    code = args[0]
    if not isinstance(code, str) or not _NUMPY_CODE.fullmatch(code):
        raise CheckpointError(f"{m.path}: numpy dtype {_brief(code)} is not allowed (plain numeric, bool and "
                              f"string dtypes only; object and record arrays can hold anything).")
    return _Dtype(code)


def _numpy_dtype_arg(m, dtype):
    if not isinstance(dtype, _Dtype):
        raise CheckpointError(f"{m.path}: numpy data with dtype {_brief(dtype)}, not a numpy.dtype.")
    return dtype.resolve()


def _numpy_shape(m, shape):
    if type(shape) is not tuple or len(shape) > 32 or not all(type(d) is int and 0 <= d <= 2 ** 40 for d in shape):
        raise CheckpointError(f"{m.path}: malformed numpy array shape {_brief(shape)}.")
    return shape


def _numpy_array(m, raw, dtype, shape, fortran):
    """An owned numpy array from raw bytes, its length checked against shape × item size first."""
    if not isinstance(raw, (bytes, bytearray)):
        raise CheckpointError(f"{m.path}: numpy array data is {type(raw).__name__}, not bytes "
                              f"(object arrays are not allowed).")
    count = math.prod(shape)
    if len(raw) != count * dtype.itemsize:
        raise CheckpointError(f"{m.path}: numpy array of shape {shape} and dtype {dtype} needs "
                              f"{count * dtype.itemsize} bytes; the pickle holds {len(raw)}.")
    m.charge(len(raw))
    if count == 0:
        return np.zeros(shape, dtype)
    flat = np.frombuffer(raw, dtype=dtype, count=count).copy()
    return flat.reshape(shape, order="F" if fortran else "C")


def _rb_numpy_reconstruct(m, args):
    _arity(m, "numpy.core.multiarray._reconstruct", args, 3)
    if args[0] is not _NDARRAY:
        raise CheckpointError(f"{m.path}: numpy _reconstruct of {_brief(args[0])}; only numpy.ndarray is allowed.")
    return _PendingArray()


def _rb_numpy_scalar(m, args):
    _arity(m, "numpy.core.multiarray.scalar", args, 2)
    dtype = _numpy_dtype_arg(m, args[0])
    raw = args[1]
    if not isinstance(raw, bytes) or len(raw) != dtype.itemsize:
        raise CheckpointError(f"{m.path}: numpy scalar of dtype {dtype} from {_brief(raw)}.")
    return np.frombuffer(raw, dtype=dtype, count=1)[0]


def _rb_numpy_frombuffer(m, args):
    _arity(m, "numpy.core.numeric._frombuffer", args, 4)
    raw, dtype, shape, order = args
    if order not in ("C", "F"):
        raise CheckpointError(f"{m.path}: numpy _frombuffer with order {_brief(order)}.")
    return _numpy_array(m, raw, _numpy_dtype_arg(m, dtype), _numpy_shape(m, shape), order == "F")


_NDARRAY = _Marker("numpy.ndarray")


def _build_table():
    """(module, name) -> marker or rebuilder: every global a checkpoint pickle may name."""
    table = {
        ("torch._utils", "_rebuild_tensor_v2"): _Rebuilder("torch._utils._rebuild_tensor_v2", _rb_tensor),
        ("torch._utils", "_rebuild_tensor"): _Rebuilder("torch._utils._rebuild_tensor", _rb_tensor),
        ("torch._utils", "_rebuild_parameter"): _Rebuilder("torch._utils._rebuild_parameter", _rb_parameter),
        ("torch._utils", "_rebuild_parameter_with_state"):
            _Rebuilder("torch._utils._rebuild_parameter_with_state", _rb_parameter),
        ("torch", "Size"): _Rebuilder("torch.Size", _rb_torch_size),
        ("torch", "device"): _Rebuilder("torch.device", _rb_torch_device),
        ("collections", "OrderedDict"): _Rebuilder("collections.OrderedDict", _rb_ordered_dict),
        ("collections", "defaultdict"): _Rebuilder("collections.defaultdict", _rb_defaultdict),
        ("argparse", "Namespace"): _Rebuilder("argparse.Namespace", _rb_namespace, newobj=True),
        ("_codecs", "encode"): _Rebuilder("_codecs.encode", _rb_codecs_encode),
        ("numpy", "dtype"): _Rebuilder("numpy.dtype", _rb_numpy_dtype),
        ("numpy", "ndarray"): _NDARRAY,
    }
    for core in ("numpy.core", "numpy._core"):
        table[(f"{core}.multiarray", "_reconstruct")] = _Rebuilder(f"{core}.multiarray._reconstruct",
                                                                   _rb_numpy_reconstruct)
        table[(f"{core}.multiarray", "scalar")] = _Rebuilder(f"{core}.multiarray.scalar", _rb_numpy_scalar)
        table[(f"{core}.numeric", "_frombuffer")] = _Rebuilder(f"{core}.numeric._frombuffer", _rb_numpy_frombuffer)
    for module in ("builtins", "__builtin__"):  # protocol 2 writes Python 2's module name
        for builtin in (set, frozenset, bytes, bytearray, complex):
            table[(module, builtin.__name__)] = _BuiltinType(f"builtins.{builtin.__name__}", builtin)
        for builtin in (list, dict, tuple, int, float, str, bool):
            table[(module, builtin.__name__)] = _BuiltinType(f"builtins.{builtin.__name__}", builtin)
    table[("__builtin__", "long")] = table[("builtins", "int")]      # protocol 2's names for int and str
    table[("__builtin__", "unicode")] = table[("builtins", "str")]
    for name, (dtype, _) in _STORAGE_DTYPES.items():
        table[("torch", name)] = _StorageType(f"torch.{name}", dtype)
    for name, dtype in _TORCH_DTYPES.items():
        table[("torch", name)] = _StorageType(f"torch.{name}", dtype)
    return table


_GLOBALS = _build_table()
_BUILTIN_REBUILDERS = {name: _rb_builtin(builtin) for name, builtin in
                       (("set", set), ("frozenset", frozenset), ("bytes", bytes), ("bytearray", bytearray),
                        ("complex", complex))}

#: The globals a checkpoint pickle may name, as "module.name" strings (for documentation / errors).
ALLOWED_GLOBALS = tuple(sorted(f"{m}.{n}" for m, n in _GLOBALS))


# ---- the interpreter --------------------------------------------------------------------------------

_KEY_SCALARS = (str, bytes, int, float, type(None), np.generic)


class _Machine:
    """A pickle interpreter for the opcodes of protocols 2–5 that build data, nothing more."""

    def __init__(self, data, path, persistent_load):
        self.data, self.path, self.pos = data, path, 0
        self.persistent_load = persistent_load
        self.stack, self.marks, self.memo = [], [], {}
        self.items = 0
        self.budget = 4 * len(data) + (16 << 20)  # bytes the rebuilders may allocate

    # -- accounting ------------------------------------------------------------------------
    def charge(self, nbytes):
        self.budget -= nbytes
        if self.budget < 0:
            raise CheckpointError(f"{self.path}: the pickle builds far more data than it holds (a memory bomb?).")

    def count(self, items):
        self.items += items
        if self.items > _MAX_ITEMS:
            raise CheckpointError(f"{self.path}: pickle too large (more than {_MAX_ITEMS} container items).")

    def check_key(self, key, depth=0):
        """Dict keys and set items: scalars or (shallow) tuples of them, so hashing is cheap and bounded."""
        if isinstance(key, _KEY_SCALARS):
            if isinstance(key, np.generic) and key.dtype.kind not in "biufcSU":
                raise CheckpointError(f"{self.path}: unsupported key {_brief(key)}.")
            return
        if type(key) in (tuple, frozenset) and depth < _MAX_KEY_DEPTH:
            for item in key:
                self.check_key(item, depth + 1)
            return
        raise CheckpointError(f"{self.path}: unsupported dict key or set item of type {type(key).__name__} "
                              f"({_brief(key)}).")

    # -- reading primitives ------------------------------------------------------------------
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
        end = self.data.find(b"\n", self.pos, self.pos + 4096)
        if end < 0:
            raise CheckpointError(f"{self.path}: pickle truncated or malformed (no end of line within 4096 bytes "
                                  f"at offset {self.pos}).")
        line = self.data[self.pos:end]
        self.pos = end + 1
        return _decode_utf8(line, self)

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

    def _top(self, what):
        if not self.stack:
            raise CheckpointError(f"{self.path}: malformed pickle ({what} with an empty stack).")
        return self.stack[-1]

    def _global(self, module, name):
        try:
            return _GLOBALS[(module, name)]
        except KeyError:
            raise CheckpointError(
                f"{self.path}: the checkpoint names the global '{_brief(module)[1:-1]}.{_brief(name)[1:-1]}', which "
                f"is not allowed (allowed: tensor and storage rebuilders, OrderedDict / defaultdict, "
                f"argparse.Namespace, numpy arrays / scalars / dtypes, torch.Size / device, dtypes; see "
                f"ALLOWED_GLOBALS). Nothing was executed."
            ) from None

    def _call(self, func, args, opcode):
        if not isinstance(args, tuple):
            raise CheckpointError(f"{self.path}: malformed pickle ({opcode} arguments are not a tuple).")
        if isinstance(func, _Rebuilder) and (opcode == "REDUCE" or func.newobj):
            return func.function(self, args)
        if isinstance(func, _BuiltinType) and func.builtin.__name__ in _BUILTIN_REBUILDERS:
            return _BUILTIN_REBUILDERS[func.builtin.__name__](self, args)
        raise CheckpointError(
            f"{self.path}: pickle tries to call {_brief(func)} ({opcode}), which is not an allowed rebuild function."
        )

    def _set_items(self, target, items):
        if type(target) not in (dict, collections.OrderedDict, collections.defaultdict) or len(items) % 2:
            raise CheckpointError(f"{self.path}: malformed pickle (SETITEMS on {type(target).__name__}).")
        self.count(len(items) // 2)
        for key, value in zip(items[::2], items[1::2]):
            self.check_key(key)
            target[key] = value

    def run(self):
        ops, data, end, steps = _OPCODES, self.data, len(self.data), 0
        while True:
            pos = self.pos
            if pos >= end:
                raise CheckpointError(f"{self.path}: pickle truncated (no STOP before offset {end}).")
            code = data[pos]
            self.pos = pos + 1
            handler = ops.get(code)
            if handler is None:
                raise CheckpointError(
                    f"{self.path}: unsupported pickle opcode {bytes([code])!r} at offset {pos} "
                    "(not one that builds plain data)."
                )
            if handler is _stop:
                return self._pop()
            handler(self)
            steps += 1
            # one opcode adds at most one object: checking every 1024 bounds the overshoot
            if not steps & 1023 and max(len(self.stack), len(self.memo), len(self.marks)) > _MAX_STACK:
                raise CheckpointError(f"{self.path}: pickle too large (more than {_MAX_STACK} objects on its stack).")


def _decode_utf8(raw, m):
    try:
        return raw.decode("utf-8", "surrogatepass")
    except UnicodeDecodeError as error:
        raise CheckpointError(f"{m.path}: malformed text in the pickle at offset {m.pos} ({error.reason}).") from None


def _stop(machine):
    """Sentinel handler for STOP (handled in the loop)."""
    raise AssertionError("unreachable")


def _op_proto(m):
    m._read(1)


def _op_frame(m):
    m._read(8)


def _op_put(m, n):
    m.memo[m._uint(n)] = m._top("PUT")


def _op_get(m, n):
    key = m._uint(n)
    if key not in m.memo:
        raise CheckpointError(f"{m.path}: malformed pickle (memo key {key} undefined).")
    m.stack.append(m.memo[key])


def _op_memoize(m):
    m.memo[len(m.memo)] = m._top("MEMOIZE")


def _op_unicode(m, n):
    m.stack.append(_decode_utf8(m._read(m._uint(n)), m))


def _op_bytes(m, n):
    m.stack.append(bytes(m._read(m._uint(n))))


def _op_bytearray(m):
    m.stack.append(bytearray(m._read(m._uint(8))))


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
    elif len(text) > 40 or not re.fullmatch(r"[+-]?\d+", text):
        raise CheckpointError(f"{m.path}: malformed integer literal {text[:40]!r}.")
    else:
        m.stack.append(int(text))


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
    m.stack.append(m._call(func, args, "REDUCE"))


def _op_newobj(m):
    args = m._pop()
    cls = m._pop()
    m.stack.append(m._call(cls, args, "NEWOBJ"))


def _op_newobj_ex(m):
    kwargs, args, cls = m._pop(), m._pop(), m._pop()
    if type(kwargs) is not dict or kwargs:
        raise CheckpointError(f"{m.path}: NEWOBJ_EX with keyword arguments is not allowed.")
    m.stack.append(m._call(cls, args, "NEWOBJ"))


def _op_build(m):
    state = m._pop()
    target = m._top("BUILD")
    if type(target) is collections.OrderedDict and isinstance(state, (dict, tuple, type(None))):
        return  # a state dict's ``_metadata`` (per-module versions): not needed, dropped
    if type(target) is Record and not target and type(state) is dict:
        if not all(isinstance(key, str) for key in state):
            raise CheckpointError(f"{m.path}: {target.type_name} attributes must be named by strings.")
        dict.update(target, state)
        return
    if isinstance(target, _Dtype) and not target.built:
        _build_dtype(m, target, state)
        return
    if isinstance(target, _PendingArray) and target.value is None:
        _build_array(m, target, state)
        return
    raise CheckpointError(
        f"{m.path}: pickle BUILD on {type(target).__name__} is not allowed (only state-dict metadata, "
        f"Namespace attributes and numpy dtypes / arrays)."
    )


def _build_dtype(m, target, state):
    # numpy writes (version 3|4, byteorder, subarray, names, fields, elsize, alignment, flags[, metadata])
    if type(state) is not tuple or len(state) not in (8, 9) or state[0] not in (3, 4) or \
            state[1] not in ("<", ">", "|", "=") or any(s is not None for s in state[2:5]) or \
            not all(type(s) is int for s in state[5:8]) or (len(state) == 9 and state[8] is not None):
        raise CheckpointError(f"{m.path}: numpy dtype state {_brief(state)} is not a plain dtype's.")
    target.byteorder, target.built = state[1], True
    if state[5] not in (-1, target.resolve().itemsize):
        raise CheckpointError(f"{m.path}: numpy dtype {target.code} with item size {state[5]}.")


def _build_array(m, target, state):
    # numpy writes (version, shape, dtype, is_fortran, raw bytes); older numpy omits the version
    if type(state) is not tuple or len(state) not in (4, 5):
        raise CheckpointError(f"{m.path}: numpy array state {_brief(state)} is malformed.")
    shape, dtype, fortran, raw = state[-4:]
    if type(fortran) is not bool:
        raise CheckpointError(f"{m.path}: numpy array state {_brief(state)} is malformed.")
    target.value = _numpy_array(m, raw, _numpy_dtype_arg(m, dtype), _numpy_shape(m, shape), fortran)


def _op_persid(m):
    m.stack.append(m.persistent_load(m._pop()))


def _op_tuple_n(m, n):
    if len(m.stack) < n:
        raise CheckpointError(f"{m.path}: malformed pickle (TUPLE{n} with short stack).")
    items = tuple(m.stack[len(m.stack) - n:])
    del m.stack[len(m.stack) - n:]
    m.count(n)
    m.stack.append(items)


def _op_tuple(m):
    items = tuple(m._pop_mark())
    m.count(len(items))
    m.stack.append(items)


def _op_list(m):
    items = m._pop_mark()
    m.count(len(items))
    m.stack.append(items)


def _op_setitem(m):
    value, key = m._pop(), m._pop()
    m._set_items(m._top("SETITEM"), [key, value])


def _op_setitems(m):
    items = m._pop_mark()
    m._set_items(m._top("SETITEMS"), items)


def _add_to(m, opcode, kind, items):
    """APPEND / APPENDS to a list, ADDITEMS to a set (whose items must be plain keys)."""
    target = m._top(opcode)
    if type(target) is not kind:
        raise CheckpointError(f"{m.path}: malformed pickle ({opcode} to a {type(target).__name__}).")
    if kind is set:
        for item in items:
            m.check_key(item)
    m.count(len(items))
    (target.update if kind is set else target.extend)(items)


def _op_append(m):
    _add_to(m, "APPEND", list, [m._pop()])


def _op_appends(m):
    _add_to(m, "APPENDS", list, m._pop_mark())


def _op_additems(m):
    _add_to(m, "ADDITEMS", set, m._pop_mark())


def _op_frozenset(m):
    items = m._pop_mark()
    for item in items:
        m.check_key(item)
    m.count(len(items))
    m.stack.append(frozenset(items))


def _op_dict(m):
    items = m._pop_mark()
    target = {}
    m._set_items(target, items)
    m.stack.append(target)


def _op_pop(m):
    m._pop()


def _op_dup(m):
    m.stack.append(m._top("DUP"))


def _op_mark(m):
    m.marks.append(len(m.stack))


_OPCODE_BYTES = {
    b"\x80": _op_proto,
    b"\x95": _op_frame,
    b".": _stop,
    b"(": _op_mark,
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
    b"\x96": _op_bytearray,
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
    b"\x8f": lambda m: m.stack.append(set()),
    b"t": _op_tuple,
    b"\x85": lambda m: _op_tuple_n(m, 1),
    b"\x86": lambda m: _op_tuple_n(m, 2),
    b"\x87": lambda m: _op_tuple_n(m, 3),
    b"l": _op_list,
    b"d": _op_dict,
    b"c": _op_global,
    b"\x93": _op_stack_global,
    b"R": _op_reduce,
    b"\x81": _op_newobj,
    b"\x92": _op_newobj_ex,
    b"b": _op_build,
    b"Q": _op_persid,
    b"s": _op_setitem,
    b"u": _op_setitems,
    b"a": _op_append,
    b"e": _op_appends,
    b"\x90": _op_additems,
    b"\x91": _op_frozenset,
}
_OPCODES = {code[0]: handler for code, handler in _OPCODE_BYTES.items()}  # keyed by the byte's value


def _unpickle(data, path, persistent_load):
    if len(data) > _MAX_PICKLE_BYTES:
        raise CheckpointError(f"{path}: pickle of {len(data)} bytes is larger than any state dict plausibly is.")
    return _Machine(bytes(data), path, persistent_load).run()


def _storage_persistent_load(path, records):
    """Returns the persistent_load used for both formats; records every storage it meets."""

    def load(pid):
        if type(pid) is not tuple or len(pid) < 5 or not isinstance(pid[0], str) or pid[0] != "storage":
            raise CheckpointError(f"{path}: unsupported persistent id {_brief(pid)} (expected a storage).")
        storage_type, key, _location, numel = pid[1:5]
        if not isinstance(storage_type, _StorageType):
            raise CheckpointError(f"{path}: storage type {_brief(storage_type)} is not a known storage class.")
        if type(numel) is not int or numel < 0 or not isinstance(key, str):
            raise CheckpointError(f"{path}: malformed storage record {_brief(pid)}.")
        known = records.get(key)
        if known is not None:
            if known.dtype != storage_type.dtype or known.numel != numel:
                raise CheckpointError(f"{path}: storage {key!r} is used with two dtypes or sizes.")
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


def _contiguous_strides(size):
    strides, step = [], 1
    for dim in reversed(size):
        strides.append(step)
        step *= max(dim, 1)
    return tuple(reversed(strides))


class _Walker:
    """Turns the unpickled graph into the result: tensors to arrays, placeholders to data.

    Shared objects are converted once (and stay shared), a structure that contains itself or
    nests deeper than ``_MAX_DEPTH`` is an error, and copies of strided tensors are charged to
    a budget proportional to the storages' size.
    """

    def __init__(self, storages, path):
        self.storages, self.path = storages, path
        self.budget = 2 * sum(flat.nbytes for flat in storages.values()) + (64 << 20)
        self.done, self.active = {}, set()

    def walk(self, obj, depth=0):
        if isinstance(obj, (str, bytes, bytearray, int, float, complex, type(None), np.generic, np.ndarray)):
            return obj  # plain values, and numpy arrays already built by the reader
        key = id(obj)
        if key in self.done:
            return self.done[key]
        if key in self.active:
            raise CheckpointError(f"{self.path}: the checkpoint's data refers to itself (a cycle).")
        if depth > _MAX_DEPTH:
            raise CheckpointError(f"{self.path}: the checkpoint's data nests deeper than {_MAX_DEPTH} levels.")
        self.active.add(key)
        result = self._convert(obj, depth + 1)
        self.active.discard(key)
        self.done[key] = result
        return result

    def _convert(self, obj, depth):
        kind = type(obj)
        if kind is _Tensor:
            return self._materialise(obj)
        if kind is _StorageRef:
            return self.storages[obj.key]
        if kind is _PendingArray:
            if obj.value is None:
                raise CheckpointError(f"{self.path}: a numpy array in the pickle was never given its data.")
            return obj.value
        if kind is _Dtype:
            return obj.resolve()
        if isinstance(obj, (_Marker, _Rebuilder)):
            return obj.qualname  # a class or dtype named as a value (e.g. a torch dtype in `args`)
        if kind is Record:
            return Record(obj.type_name, {k: self.walk(v, depth) for k, v in obj.items()})
        if kind is collections.defaultdict:
            return collections.defaultdict(obj.default_factory, {k: self.walk(v, depth) for k, v in obj.items()})
        if kind in (dict, collections.OrderedDict):
            return kind((k, self.walk(v, depth)) for k, v in obj.items())
        if kind in (list, tuple):
            return kind(self.walk(v, depth) for v in obj)
        if kind in (set, frozenset):
            return obj  # items are checked scalars / tuples of scalars
        raise CheckpointError(f"{self.path}: unexpected {kind.__name__} in the pickle.")

    def _materialise(self, tensor):
        """A `_Tensor` -> a numpy array, honouring offset, size and stride."""
        flat = self.storages[tensor.storage.key]
        if not all(tensor.size):
            return np.zeros(tensor.size, dtype=flat.dtype)
        numel = math.prod(tensor.size)
        if tensor.offset == 0 and numel == flat.size and tensor.stride == _contiguous_strides(tensor.size):
            return flat.reshape(tensor.size)  # the common case: the tensor owns its storage, no copy
        self.budget -= numel * flat.dtype.itemsize
        if self.budget < 0:
            raise CheckpointError(f"{self.path}: its tensors view their storages many times over (a memory bomb?).")
        itemsize = flat.dtype.itemsize
        view = np.lib.stride_tricks.as_strided(
            flat[tensor.offset:], shape=tensor.size, strides=[s * itemsize for s in tensor.stride], writeable=False
        )
        return np.array(view, dtype=flat.dtype.newbyteorder("="), copy=True)


# zipfile and its decompressors raise many types on damaged archives; all mean "cannot read this file"
_ZIP_ERRORS = (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, EOFError, ValueError, NotImplementedError,
               RuntimeError, zlib.error, struct.error, OverflowError, KeyError)


def _check_member_size(info, nbytes, file_size, path):
    """A member may not claim more bytes than the file (stored) or deflate could plausibly expand to."""
    if info.compress_type == zipfile.ZIP_STORED:
        plausible = info.compress_size == info.file_size and info.header_offset + info.file_size <= file_size
    else:
        plausible = info.compress_size <= file_size and info.file_size <= _MAX_DEFLATE_RATIO * info.compress_size + 1024
    if not plausible or nbytes > info.file_size:
        raise CheckpointError(
            f"{path}: member {info.filename!r} claims {info.file_size} bytes ({info.compress_size} stored, "
            f"{nbytes} needed) in a file of {file_size} bytes."
        )


def _read_zip(path):
    file_size = os.path.getsize(path)
    try:
        archive = zipfile.ZipFile(path)
    except _ZIP_ERRORS as error:
        raise CheckpointError(f"{path}: not a readable PyTorch zip checkpoint ({_brief(error)}).") from None
    with archive:
        names = archive.namelist()
        pickles = [n for n in names if n.endswith("data.pkl") and n.count("/") == 1]
        if len(pickles) != 1:
            raise CheckpointError(f"{path}: zip holds no single '<prefix>/data.pkl' (found {_brief(pickles)}).")
        prefix = pickles[0][: -len("data.pkl")]
        info = archive.getinfo(pickles[0])
        if info.file_size > _MAX_PICKLE_BYTES:
            raise CheckpointError(f"{path}: pickle of {info.file_size} bytes is larger than any state dict plausibly is.")
        _check_member_size(info, 0, file_size, path)
        try:
            pickle_bytes = archive.read(pickles[0])
        except _ZIP_ERRORS as error:
            raise CheckpointError(f"{path}: cannot read {pickles[0]} ({_brief(error)}).") from None
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
            _check_member_size(info, nbytes, file_size, path)
            buffer = bytearray(nbytes)
            try:
                got = _read_member_into(archive, info, path, buffer)
            except CheckpointError:
                raise
            except _ZIP_ERRORS as error:
                raise CheckpointError(f"{path}: cannot read storage {member!r} ({_brief(error)}).") from None
            if got != nbytes:
                raise CheckpointError(f"{path}: storage {member!r} is truncated ({got} of {nbytes} bytes).")
            storages[key] = _decode_storage(buffer, ref, path)
    return _Walker(storages, path).walk(obj)


def _read_member_into(archive, info, path, buffer):
    """Reads a zip member into ``buffer``; stored (uncompressed) members go straight from the file.

    ``torch.save`` stores storages uncompressed; reading them with one ``readinto`` at their
    offset avoids the intermediate ``bytes`` objects of ``ZipFile.open``, keeping peak memory
    close to the tensors' own size.
    """
    if info.compress_type != zipfile.ZIP_STORED:
        with archive.open(info) as stream:
            view, got = memoryview(buffer), 0
            while got < len(buffer):
                chunk = stream.readinto(view[got:])
                if not chunk:
                    break
                got += chunk
            return got
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
    if type(keys) is not list or not all(isinstance(k, str) for k in keys):
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
    return _Walker(storages, path).walk(obj)


def _no_persistent(path):
    def load(pid):
        raise CheckpointError(f"{path}: unexpected persistent id in a header pickle.")

    return load


_SAFETENSORS_DTYPES = {
    "F32": "float32", "F16": "float16", "BF16": "bfloat16", "F64": "float64", "I64": "int64",
    "I32": "int32", "I16": "int16", "I8": "int8", "U8": "uint8", "BOOL": "bool",
}
_MAX_HEADER = 100 * 1024 * 1024


def _safetensors_entry(path, name, entry):
    """(dtype, shape, begin, end) of one header entry, every field type-checked."""
    def bad():
        return CheckpointError(f"{path}: malformed or unsupported safetensors entry {_brief(name)}: {_brief(entry)}.")

    if type(entry) is not dict:
        raise bad()
    dtype = _SAFETENSORS_DTYPES.get(entry.get("dtype")) if isinstance(entry.get("dtype"), str) else None
    shape, offsets = entry.get("shape"), entry.get("data_offsets")
    if dtype is None or type(shape) is not list or len(shape) > _MAX_NDIM or type(offsets) is not list \
            or len(offsets) != 2:
        raise bad()
    if not all(type(v) is int and v >= 0 for v in shape + offsets):
        raise bad()
    return dtype, tuple(shape), offsets[0], offsets[1]


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
        except (UnicodeDecodeError, ValueError, RecursionError) as error:
            raise CheckpointError(f"{path}: safetensors header is not valid JSON ({_brief(error)}).") from None
        if not isinstance(header, dict):
            raise CheckpointError(f"{path}: safetensors header is not a JSON object.")
        data_size = size - 8 - header_len
        plan = []
        for name, entry in header.items():
            if name == "__metadata__":
                continue
            dtype, shape, begin, end = _safetensors_entry(path, name, entry)
            expected = math.prod(shape) * _itemsize(dtype)
            if not begin <= end <= data_size or end - begin != expected:
                raise CheckpointError(
                    f"{path}: tensor {_brief(name)} declares bytes {begin}..{end} (shape {shape}, {dtype}) but the "
                    f"data section holds {data_size} bytes."
                )
            plan.append((name, dtype, shape, begin, end))
        base = 8 + header_len
        result = {}
        for name, dtype, shape, begin, end in plan:
            handle.seek(base + begin)
            raw = handle.read(end - begin)
            ref = _StorageRef(name, dtype, math.prod(shape))
            result[name] = _decode_storage(raw, ref, path).reshape(shape).copy()
    return result


def load_pytorch_checkpoint(path):
    """Reads a PyTorch checkpoint into ``{key: numpy.ndarray}`` without torch or ``pickle.load``.

    Args:
        path: str or path-like. A ``.pth`` / ``.pt`` / ``.bin`` file written by ``torch.save``
            (zip or legacy format) or a ``.safetensors`` file.

    Returns:
        The checkpoint's top-level object with every tensor as a numpy array. Nested dicts
        such as ``{"model": state_dict, "optimizer": …, "args": Namespace}`` are kept (see
        ``converters.convnext_keys.unwrap_state_dict``); an ``argparse.Namespace`` comes back as
        a :class:`Record`, numpy data as numpy data, ``torch.Size`` as a tuple and
        ``torch.device`` as its string. bfloat16 tensors come back as float32.

    Raises:
        FileNotFoundError: when ``path`` does not exist.
        CheckpointError (a ValueError): when the file is malformed, truncated, or its pickle names
            a global outside :data:`ALLOWED_GLOBALS` (the error names it; nothing is executed).

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

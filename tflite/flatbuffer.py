"""The ``.tflite`` flatbuffer, read with every offset and length checked against the file first.

:func:`read_tflite` gives operator codes (custom ops by name), every subgraph with its tensors
(dtypes, shapes and dynamic dimensions, quantization, constant buffers), signatures and metadata,
without loading the file into a runtime; a malformed file is a :class:`TFLiteFileError` naming
what is wrong. The runner and the export report both read files through it.
"""

import dataclasses
import functools
import struct

__all__ = ["TFLiteFileError", "TFLiteModel", "read_tflite"]

class TFLiteFileError(ValueError):
    """A ``.tflite`` file that is not a well-formed TFLite flatbuffer (names the file and the problem)."""


# ---- the flatbuffer, read with bounds checks -----------------------------------------------------

@functools.lru_cache(maxsize=1)
def _enums():
    """(BuiltinOperator code -> name, TensorType code -> dtype name) from the TFLite schema module."""
    try:
        from ai_edge_litert import schema_py_generated as schema
    except ImportError:
        from tensorflow.lite.python import schema_py_generated as schema
    ops = {value: name for name, value in vars(schema.BuiltinOperator).items() if not name.startswith("_")}
    types = {value: name.lower() for name, value in vars(schema.TensorType).items() if not name.startswith("_")}
    return ops, types


_CUSTOM = 32  # BuiltinOperator.CUSTOM


class _Flatbuffer:
    """Reads tables, vectors and strings of a flatbuffer; every position is checked before use.

    ``work`` bounds the elements decoded in total (vectors may share tables, so a small file
    could otherwise ask for unbounded work).
    """

    def __init__(self, data, path):
        self.data, self.path, self.size = data, path, len(data)
        self.work = 4 * len(data) + 100_000

    def fail(self, what):
        raise TFLiteFileError(f"{self.path}: not a well-formed TFLite flatbuffer ({what}).")

    def unpack(self, fmt, pos):
        width = struct.calcsize(fmt)
        if pos < 0 or pos + width > self.size:
            self.fail(f"read of {width} bytes at offset {pos} past the end of {self.size}")
        return struct.unpack_from(fmt, self.data, pos)[0]

    def table(self, pos):
        vtable = pos - self.unpack("<i", pos)
        vt_size = self.unpack("<H", vtable)
        if vt_size < 4 or vt_size % 2 or vtable + vt_size > self.size:
            self.fail(f"vtable of {vt_size} bytes at offset {vtable}")
        return _Table(self, pos, vtable, (vt_size - 4) // 2)

    def spend(self, n):
        self.work -= n
        if self.work < 0:
            self.fail("its tables are shared or repeated far more often than their size allows")


class _Table:
    def __init__(self, fb, pos, vtable, slots):
        self.fb, self.pos, self.vtable, self.slots = fb, pos, vtable, slots

    def _field(self, slot):
        if slot >= self.slots:
            return None
        offset = self.fb.unpack("<H", self.vtable + 4 + 2 * slot)
        return self.pos + offset if offset else None

    def scalar(self, slot, fmt, default=0):
        pos = self._field(slot)
        return default if pos is None else self.fb.unpack(fmt, pos)

    def _target(self, slot):
        pos = self._field(slot)
        return None if pos is None else pos + self.fb.unpack("<I", pos)

    def table(self, slot):
        pos = self._target(slot)
        return None if pos is None else self.fb.table(pos)

    def _vector(self, slot, width):
        pos = self._target(slot)
        if pos is None:
            return None, 0
        length = self.fb.unpack("<I", pos)
        if pos + 4 + length * width > self.fb.size:
            self.fb.fail(f"vector of {length} × {width} bytes at offset {pos} past the end")
        self.fb.spend(length)
        return pos + 4, length

    def numbers(self, slot, fmt):
        width = struct.calcsize(fmt)
        start, length = self._vector(slot, width)
        if not length:
            return []
        return list(struct.unpack_from(f"<{length}{fmt.lstrip('<')}", self.fb.data, start))

    def tables(self, slot):
        start, length = self._vector(slot, 4)
        return [self.fb.table(start + 4 * i + self.fb.unpack("<I", start + 4 * i)) for i in range(length)]

    def byte_range(self, slot):
        start, length = self._vector(slot, 1)
        return (start, length) if start is not None else (0, 0)

    def string(self, slot, default=""):
        start, length = self._vector(slot, 1)
        if start is None:
            return default
        return bytes(self.fb.data[start:start + length]).decode("utf-8", "replace")


@dataclasses.dataclass
class TFLiteModel:
    """The structure of a ``.tflite`` file (see :func:`read_tflite`).

    Attributes:
        path: the file (or ``"<bytes>"``). size_bytes: its size. version: schema version.
        description: the converter's description string.
        opcodes: one dict per operator code: ``name`` (builtin name, or the custom op's name),
            ``custom`` (bool), ``version``.
        subgraphs: one dict per subgraph: ``index``, ``name``, ``tensors`` (dicts with ``index``,
            ``name``, ``dtype``, ``shape``, ``shape_signature`` (-1 = dynamic), ``buffer``,
            ``constant``, ``quantization`` (``scales``, ``zero_points`` counts, first ``scale`` /
            ``zero_point``, ``dimension``), ``variable``), ``inputs``, ``outputs`` (tensor
            indices) and ``operators`` (dicts with ``opcode``, ``inputs``, ``outputs``,
            ``options_type``, ``custom_options_bytes``).
        buffers: ``(offset, length)`` of each buffer's bytes in the file (``(0, 0)``: none).
        signatures: one dict per signature: ``key``, ``subgraph``, ``inputs`` / ``outputs``
            (name -> tensor index).
        metadata: metadata names -> buffer index (e.g. ``min_runtime_version``).
    """

    path: str
    size_bytes: int
    version: int
    description: str
    opcodes: list
    subgraphs: list
    buffers: list
    signatures: list
    metadata: dict

    def buffer_bytes(self, content, index):
        """The bytes of buffer ``index`` (empty for non-constant tensors)."""
        if not 0 <= index < len(self.buffers):
            return b""
        start, length = self.buffers[index]
        return bytes(content[start:start + length])

    @property
    def custom_ops(self):
        """Names of the custom ops the graph uses, sorted."""
        return sorted({code["name"] for code in self.opcodes if code["custom"]})


def read_tflite(content, *, path="<bytes>"):
    """Reads the structure of a ``.tflite`` file from its flatbuffer, without a runtime.

    Args:
        content: bytes of a ``.tflite`` file.
        path: str. Name used in error messages. Defaults to `"<bytes>"`.

    Returns:
        A :class:`TFLiteModel`.

    Raises:
        TFLiteFileError: when the bytes are not a well-formed TFLite flatbuffer (a position or
            length outside the file, an index to a tensor / buffer / operator code that does
            not exist, a vector too long for the file).
    """
    if not isinstance(content, (bytes, bytearray, memoryview)):
        raise TypeError(f"`content` must be the bytes of a .tflite file; received {type(content).__name__}.")
    content = bytes(content)
    fb = _Flatbuffer(content, path)
    if len(content) < 8:
        fb.fail(f"{len(content)} bytes")
    if content[4:8] != b"TFL3":
        fb.fail(f"file identifier {content[4:8]!r}, expected b'TFL3'")
    root = fb.table(fb.unpack("<I", 0))
    op_names, type_names = _enums()
    opcodes = []
    for code in root.tables(1):
        deprecated = code.scalar(0, "<b")
        builtin = max(deprecated, code.scalar(3, "<i"))
        custom = builtin == _CUSTOM
        name = code.string(1, "CUSTOM") if custom else op_names.get(builtin, f"BUILTIN_{builtin}")
        opcodes.append({"name": name, "custom": custom, "version": code.scalar(2, "<i", 1)})
    buffers = []
    for buffer in root.tables(4):
        start, length = buffer.byte_range(0)
        offset, size = buffer.scalar(1, "<Q"), buffer.scalar(2, "<Q")
        if not length and size:  # models over 2 GB: the data follows the flatbuffer, at `offset`
            if offset + size > len(content):
                fb.fail(f"buffer data at {offset}..{offset + size} past the end")
            start, length = offset, size
        buffers.append((start, length))
    subgraphs = [_read_subgraph(fb, index, graph, opcodes, buffers, type_names)
                 for index, graph in enumerate(root.tables(2))]
    signatures = []
    for signature in root.tables(7):
        sub = signature.scalar(4, "<I")
        if sub >= len(subgraphs):
            fb.fail(f"signature refers to subgraph {sub} of {len(subgraphs)}")
        entry = {"key": signature.string(2), "subgraph": sub}
        for slot, side in ((0, "inputs"), (1, "outputs")):
            names = {}
            for item in signature.tables(slot):
                tensor = item.scalar(1, "<I")
                if tensor >= len(subgraphs[sub]["tensors"]):
                    fb.fail(f"signature {entry['key']!r} names tensor {tensor} of subgraph {sub}")
                names[item.string(0)] = tensor
            entry[side] = names
        signatures.append(entry)
    metadata = {item.string(0): item.scalar(1, "<I") for item in root.tables(6)}
    return TFLiteModel(path=path, size_bytes=len(content), version=root.scalar(0, "<I"),
                       description=root.string(3), opcodes=opcodes, subgraphs=subgraphs, buffers=buffers,
                       signatures=signatures, metadata=metadata)


def _read_subgraph(fb, index, graph, opcodes, buffers, type_names):
    tensors = []
    for number, tensor in enumerate(graph.tables(0)):
        buffer = tensor.scalar(2, "<I")
        if buffer >= max(len(buffers), 1):
            fb.fail(f"tensor {number} of subgraph {index} uses buffer {buffer} of {len(buffers)}")
        code = tensor.scalar(1, "<b")
        shape = tensor.numbers(0, "i")
        signature = tensor.numbers(7, "i") or list(shape)
        quant = tensor.table(4)
        quantization = {"scales": 0, "zero_points": 0, "scale": None, "zero_point": None, "dimension": 0}
        if quant is not None:
            scales, zeros = quant.numbers(2, "f"), quant.numbers(3, "q")
            quantization = {"scales": len(scales), "zero_points": len(zeros),
                            "scale": scales[0] if scales else None, "zero_point": zeros[0] if zeros else None,
                            "dimension": quant.scalar(6, "<i")}
        tensors.append({
            "index": number, "name": tensor.string(3), "dtype": type_names.get(code, f"type_{code}"),
            "shape": shape, "shape_signature": signature, "buffer": buffer,
            "constant": buffer < len(buffers) and buffers[buffer][1] > 0, "quantization": quantization,
            "variable": bool(tensor.scalar(5, "<B")), "sparse": tensor.table(6) is not None,
        })
    count = len(tensors)

    def indices(values, what, allow_missing=False):
        for value in values:
            if not (-1 if allow_missing else 0) <= value < count:
                fb.fail(f"{what} of subgraph {index} refers to tensor {value} of {count}")
        return values

    operators = []
    for number, op in enumerate(graph.tables(3)):
        opcode = op.scalar(0, "<I")
        if opcode >= len(opcodes):
            fb.fail(f"operator {number} of subgraph {index} uses operator code {opcode} of {len(opcodes)}")
        operators.append({
            "opcode": opcode, "inputs": indices(op.numbers(1, "i"), f"operator {number}", True),
            "outputs": indices(op.numbers(2, "i"), f"operator {number}", True),
            "options_type": op.scalar(3, "<B"), "custom_options_bytes": op.byte_range(5)[1],
        })
    return {"index": index, "name": graph.string(4), "tensors": tensors,
            "inputs": indices(graph.numbers(1, "i"), "inputs"), "outputs": indices(graph.numbers(2, "i"), "outputs"),
            "operators": operators}

"""Fuzz the readers of files a user hands us: executions, coverage and every exception that is not the reader's own.

    .venv/bin/python bench/fuzz.py --seconds 600                  # every target, atheris when installed
    .venv/bin/python bench/fuzz.py --seconds 60 --target pickle
    .venv/bin/python bench/fuzz.py --engine builtin --runs 500 --seed 0   # deterministic, no atheris

Targets (each seeded with valid files the harness writes itself, no torch / TensorFlow needed):

* ``zip`` — ``load_pytorch_checkpoint`` on whole ``torch.save`` zip files, then ``unwrap_checkpoint``;
* ``pickle`` — the same, with the fuzzed bytes as the zip's ``data.pkl`` beside valid storages
  (reaches deep into the pickle interpreter, which whole-file mutations mostly stop at the zip layer);
* ``legacy`` — the pre-1.6 format (magic, header pickles, raw storages);
* ``safetensors`` — ``load_pytorch_checkpoint`` on ``.safetensors`` files;
* ``catalogue`` — the zoo catalogue parser (``zoo.catalogue.load_catalogue``) on JSON files;
* ``tflite`` — ``analyze_tflite(..., runtime=False)`` (the flatbuffer reader, op list, quantization and
  custom-op findings), ``check_edgetpu``, the printed and JSON report.

"Its own" errors per target — the documented ones, which are the correct answer to a bad file:
``CheckpointError`` (checkpoint targets, plus the plain ``ValueError`` ``unwrap_checkpoint`` raises for
a file holding no tensors), ``CatalogueError`` (catalogue), ``TFLiteFileError`` (tflite). Anything else
is counted as a non-library exception and saved with the input that raised it; a crash of the
process, a hang (one input running past ``--timeout``) or memory past ``--rss-limit-mb`` is reported by
the engine.

Engines: ``atheris`` (libFuzzer, coverage-guided on edges of the instrumented library modules; needs
``pip install atheris``, the ``fuzz`` extra) runs each target in a child process for ``--seconds``;
``builtin`` is a small deterministic coverage-guided mutator (line-to-line arcs of the library modules
via ``sys.settrace``, seeded ``random.Random``) for ``--runs`` executions — what CI's short pass uses.
Output: ``name: value`` lines per target (executions, exec_per_s, coverage_edges, corpus, peak_rss_mb,
crashes, hangs, non_library_exceptions).
"""

import argparse
import collections
import hashlib
import io
import json
import os
import pickle
import random
import re
import resource
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import time
import traceback
import zipfile

TARGETS = ("zip", "pickle", "legacy", "safetensors", "catalogue", "tflite")
_LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
_HERE = os.path.dirname(os.path.abspath(__file__))


# ---- seeds: valid files in the real upstream layouts, written without torch --------------------------

class _G:
    """A global (GLOBAL opcode) named by module and name; nothing is imported."""

    def __init__(self, module, name):
        self.module, self.name = module, name


class _Call:
    """``func(*args)`` as GLOBAL + args tuple + REDUCE."""

    def __init__(self, func, *args):
        self.func, self.args = func, args


class _Tensor:
    """What torch.save writes for a tensor: _rebuild_tensor_v2(persistent storage id, offset, size, stride, …)."""

    def __init__(self, key, storage, numel, offset, size, stride):
        self.key, self.storage, self.numel, self.offset, self.size, self.stride = key, storage, numel, offset, size, stride


class _Embedded:
    """A value written by the standard pickler (protocol 2, as torch.save does) spliced in as is."""

    def __init__(self, value):
        self.data = pickle.dumps(value, protocol=2)[2:-1]  # without PROTO and STOP


_ORDERED_DICT = _Call(_G("collections", "OrderedDict"))


def _emit(obj, out):
    if isinstance(obj, _G):
        out += f"c{obj.module}\n{obj.name}\n".encode()
    elif isinstance(obj, _Call):
        _emit(obj.func, out)
        _emit(tuple(obj.args), out)
        out += b"R"
    elif isinstance(obj, _Tensor):
        pid = ("storage", _G("torch", obj.storage), obj.key, "cpu", obj.numel)
        _emit(_Call(_G("torch._utils", "_rebuild_tensor_v2"), _Pid(pid), obj.offset, tuple(obj.size),
                    tuple(obj.stride), False, _ORDERED_DICT), out)
    elif isinstance(obj, _Pid):
        _emit(obj.pid, out)
        out += b"Q"
    elif isinstance(obj, _Embedded):
        out += obj.data
    elif isinstance(obj, collections.OrderedDict):
        _emit(_ORDERED_DICT, out)
        _emit_items(obj, out)
    elif isinstance(obj, dict):
        out += b"}"
        _emit_items(obj, out)
    elif isinstance(obj, tuple):
        out += b"("
        for item in obj:
            _emit(item, out)
        out += b"t"
    elif isinstance(obj, list):
        out += b"]("
        for item in obj:
            _emit(item, out)
        out += b"e"
    else:
        out += pickle.dumps(obj, protocol=2)[2:-1]  # str, int, float, bool, None


class _Pid:
    def __init__(self, pid):
        self.pid = pid


def _emit_items(obj, out):
    if obj:
        out += b"("
        for key, value in obj.items():
            _emit(key, out)
            _emit(value, out)
        out += b"u"


def _pickled(obj):
    out = bytearray(b"\x80\x02")
    _emit(obj, out)
    return bytes(out + b".")


def _state_and_storages():
    """A small state dict (float32 with a strided view, float16, bfloat16, an int64 step) and its storages."""
    import numpy as np

    storages = {
        "0": np.arange(12, dtype="<f4").tobytes(),
        "1": np.array([0.5, -4.0, 2.0, 1.0], "<f2").tobytes(),
        "2": (np.array([1.5, -2.0], "<f4").view("<u4") >> 16).astype("<u2").tobytes(),
        "3": np.array([7], "<i8").tobytes(),
    }
    state = collections.OrderedDict([
        ("stages.0.0.dwconv.weight", _Tensor("0", "FloatStorage", 12, 0, (3, 4), (4, 1))),
        ("stages.0.0.dwconv.bias", _Tensor("0", "FloatStorage", 12, 1, (3, 2), (1, 4))),
        ("norm.weight", _Tensor("1", "HalfStorage", 4, 0, (4,), (1,))),
        ("head.bias", _Call(_G("torch._utils", "_rebuild_parameter"),
                            _Tensor("2", "BFloat16Storage", 2, 0, (2,), (1,)), True, _ORDERED_DICT)),
        ("num_batches_tracked", _Tensor("3", "LongStorage", 1, 0, (), ())),
    ])
    return state, storages


def _training_checkpoint():
    import argparse as _argparse

    import numpy as np

    state, storages = _state_and_storages()
    args = _argparse.Namespace(model="convnext_tiny", lr=4e-3, opt_betas=None, layer_decay=[0.9, 0.8],
                               auto_resume=True, seed=0)
    meta = {"mmcv_version": "1.3.0", "CLASSES": ("road", "sky"), "PALETTE": [[128, 64, 128], [70, 130, 180]],
            "config": "model = dict(type='EncoderDecoder')\n", "palette": np.arange(6, dtype="uint8").reshape(2, 3),
            "best": np.float64(46.0), "groups": collections.defaultdict(list, {"decay": [0]}), "tags": {"a", "b"},
            "raw": b"\x00\xff"}
    checkpoint = {"model": state, "epoch": 3, "args": _Embedded(args), "meta": _Embedded(meta),
                  "optimizer": {"state": {0: {"step": _Tensor("3", "LongStorage", 1, 0, (), ())}},
                                "param_groups": [{"lr": 4e-3, "betas": (0.9, 0.999), "params": [0]}]},
                  "model_ema": state}
    return checkpoint, storages, meta


def _zip_bytes(pickle_bytes, storages):
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_STORED) as archive:
        for name, data in [("archive/data.pkl", pickle_bytes), ("archive/version", b"3\n")] + \
                [(f"archive/data/{key}", raw) for key, raw in storages.items()]:
            archive.writestr(zipfile.ZipInfo(name, date_time=(2022, 1, 1, 0, 0, 0)), data)
    return buffer.getvalue()


def _legacy_bytes(obj, storages):
    sys_info = {"protocol_version": 1001, "little_endian": True, "type_sizes": {"short": 2, "int": 4, "long": 4}}
    parts = [pickle.dumps(x, protocol=2) for x in (_LEGACY_MAGIC, 1001, sys_info)]
    parts.append(_pickled(obj))
    parts.append(pickle.dumps(list(storages), protocol=2))
    sizes = {"0": 4, "1": 2, "2": 2, "3": 8}
    for key, raw in storages.items():
        parts.append(struct.pack("<q", len(raw) // sizes[key]) + raw)
    return b"".join(parts)


def _safetensors_bytes():
    import numpy as np

    tensors = {"a": ("F32", [2, 3], np.arange(6, dtype="<f4").tobytes()), "b": ("F16", [2], np.ones(2, "<f2").tobytes()),
               "c": ("BF16", [2], b"\x80\x3f\x00\xc0"), "d": ("I64", [], np.array([3], "<i8").tobytes())}
    header, data = {"__metadata__": {"format": "pt"}}, b""
    for name, (dtype, shape, raw) in tensors.items():
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [len(data), len(data) + len(raw)]}
        data += raw
    blob = json.dumps(header).encode()
    return struct.pack("<Q", len(blob)) + blob + data


def _catalogue_bytes():
    with open(os.path.join(_HERE, os.pardir, "zoo", "catalogue.json"), encoding="utf-8") as handle:
        data = json.load(handle)
    ids = list(data["entries"])
    picked = {"convnext_tiny.keras_in1k", ids[-1]} & set(ids) or set(ids[:2])
    small = dict(data, entries={key: data["entries"][key] for key in sorted(picked)})
    return [json.dumps(small, indent=1).encode(), json.dumps({"schema": 1, "entries": {}}).encode()]


def _tflite_bytes():
    """Two hand-built models covering the schema the analyser reads: several subgraphs and signatures,
    a custom op, int8 / int16 / float16 tensors, per-channel quantization, dynamic shapes, metadata."""
    import flatbuffers
    import numpy as np

    try:
        from ai_edge_litert import schema_py_generated as s
    except ImportError:
        from tensorflow.lite.python import schema_py_generated as s

    def tensor(name, dtype, shape, buffer=0, signature=None, scales=None):
        t = s.TensorT()
        t.name, t.type, t.shape, t.buffer = name.encode(), dtype, list(shape), buffer
        t.shapeSignature = list(signature) if signature else None
        if scales is not None:
            q = s.QuantizationParametersT()
            q.scale, q.zeroPoint, q.quantizedDimension = list(scales), [0] * len(scales), 0
            t.quantization = q
        return t

    def op(code, inputs, outputs):
        o = s.OperatorT()
        o.opcodeIndex, o.inputs, o.outputs = code, list(inputs), list(outputs)
        return o

    def opcode(builtin, custom=None):
        c = s.OperatorCodeT()
        c.builtinCode, c.deprecatedBuiltinCode, c.version = builtin, min(builtin, 127), 1
        c.customCode = custom.encode() if custom else None
        return c

    def buffer(data=b""):
        b = s.BufferT()
        b.data = list(data) if data else None
        return b

    T = s.TensorType
    main = s.SubGraphT()
    main.name = b"main"
    main.tensors = [tensor("x", T.INT16, [1, 4, 4, 3], signature=[-1, 4, 4, 3], scales=[0.01]),
                    tensor("w", T.INT8, [2, 1, 1, 3], 1, scales=[0.1, 0.2]),
                    tensor("y", T.INT16, [1, 4, 4, 2], scales=[0.02]),
                    tensor("axes", T.INT32, [2], 2), tensor("m", T.INT16, [1, 2], scales=[0.02]),
                    tensor("out", T.FLOAT32, [1, 2])]
    main.inputs, main.outputs = [0], [5]
    main.operators = [op(0, [0, 1, -1], [2]), op(1, [2, 3], [4]), op(2, [4], [5])]
    side = s.SubGraphT()
    side.name = b"side"
    side.tensors = [tensor("a", T.FLOAT32, [1, 3], signature=[-1, 3]), tensor("k", T.FLOAT16, [2, 3], 3),
                    tensor("b", T.FLOAT32, [1, 2])]
    side.inputs, side.outputs, side.operators = [0], [2], [op(3, [0, 1], [2])]
    model = s.ModelT()
    model.version, model.description = 3, b"fuzz seed"
    model.operatorCodes = [opcode(s.BuiltinOperator.CONV_2D), opcode(s.BuiltinOperator.MEAN),
                           opcode(s.BuiltinOperator.CUSTOM, "Convolution2DTransposeBias"),
                           opcode(s.BuiltinOperator.FULLY_CONNECTED)]
    model.subgraphs = [main, side]
    model.buffers = [buffer(), buffer(np.arange(6, dtype="int8").tobytes()),
                     buffer(np.array([1, 2], "<i4").tobytes()), buffer(np.ones(6, "<f2").tobytes()),
                     buffer(b"1.14.0\0")]
    meta = s.MetadataT()
    meta.name, meta.buffer = b"min_runtime_version", 4
    model.metadata = [meta]
    signatures = []
    for key, index, ins, outs in (("serving_default", 0, {"x": 0}, {"out": 5}), ("side", 1, {"a": 0}, {"b": 2})):
        signature = s.SignatureDefT()
        signature.signatureKey, signature.subgraphIndex = key.encode(), index
        signature.inputs, signature.outputs = [], []
        for names, side_list in ((ins, signature.inputs), (outs, signature.outputs)):
            for name, number in names.items():
                entry = s.TensorMapT()
                entry.name, entry.tensorIndex = name.encode(), number
                side_list.append(entry)
        signatures.append(signature)
    model.signatureDefs = signatures
    builder = flatbuffers.Builder(1024)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    full = bytes(builder.Output())
    model.subgraphs, model.signatureDefs = [main], [signatures[0]]
    builder = flatbuffers.Builder(1024)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    return [full, bytes(builder.Output())]


def seeds(target):
    """Valid inputs for ``target`` (bytes), deterministic."""
    if target in ("zip", "pickle", "legacy"):
        state, storages = _state_and_storages()
        training, _, meta = _training_checkpoint()
        if target == "pickle":
            return [_pickled(state), _pickled(training), pickle.dumps(meta, protocol=4)]
        if target == "zip":
            return [_zip_bytes(_pickled(state), storages), _zip_bytes(_pickled(training), storages)]
        return [_legacy_bytes(state, storages), _legacy_bytes(training, storages)]
    if target == "safetensors":
        return [_safetensors_bytes()]
    if target == "catalogue":
        return _catalogue_bytes()
    return _tflite_bytes()


# ---- the targets -------------------------------------------------------------------------------------

class _Runner:
    """Runs one input of a target; ``own`` are the error classes that are its documented answer."""

    def __init__(self, target, folder):
        self.target, self.folder = target, folder
        if target in ("zip", "pickle", "legacy", "safetensors"):
            from keras_visrec.converters import pytorch_reader
            from keras_visrec.converters.convnext_keys import unwrap_checkpoint

            self.own = (pytorch_reader.CheckpointError,)
            self.load, self.unwrap = pytorch_reader.load_pytorch_checkpoint, unwrap_checkpoint
            self.path = os.path.join(folder, "input.safetensors" if target == "safetensors" else "input.pth")
            self.storages = _state_and_storages()[1]
            self.modules = [pytorch_reader.__file__, sys.modules[unwrap_checkpoint.__module__].__file__]
        elif target == "catalogue":
            from keras_visrec.zoo import catalogue

            self.own = (catalogue.CatalogueError,)
            self.load = catalogue.load_catalogue.__wrapped__  # not the cached one: every input is read
            self.path = os.path.join(folder, "catalogue.json")
            self.modules = [catalogue.__file__]
        else:
            from keras_visrec.tflite import edgetpu, flatbuffer, report

            self.own = (report.TFLiteFileError,)
            self.analyze, self.check = report.analyze_tflite, edgetpu.check_edgetpu
            self.path = os.path.join(folder, "input.tflite")
            self.modules = [report.__file__, flatbuffer.__file__, edgetpu.__file__]

    def __call__(self, data):
        """Runs the input; returns None, or the exception that is not the target's own."""
        payload = _zip_bytes(data, self.storages) if self.target == "pickle" else data
        with open(self.path, "wb") as handle:
            handle.write(payload)
        try:
            if self.target == "catalogue":
                self.load(self.path)
            elif self.target == "tflite":
                result = self.analyze(self.path, runtime=False)
                self.check(result.ops)
                str(result)
                result.to_json()
            else:
                state = self.load(self.path)
                try:
                    self.unwrap(state, source=self.path)
                except ValueError as error:
                    if type(error) is not ValueError:  # unwrap's own error is a plain ValueError
                        raise
        except self.own:
            return None
        except (Exception, RecursionError) as error:  # noqa: B014 - every other type is a finding
            return error
        return None


# ---- the builtin engine: deterministic, coverage-guided by line arcs -----------------------------------

class _Hang(BaseException):
    pass


class _Arcs:
    """Line-to-line arcs executed in the target's modules (sys.settrace)."""

    def __init__(self, files):
        self.files = {os.path.realpath(f) for f in files}
        self.seen, self.current = set(), set()
        self._cache = {}

    def _wanted(self, code):
        hit = self._cache.get(code.co_filename)
        if hit is None:
            hit = self._cache[code.co_filename] = os.path.realpath(code.co_filename) in self.files
        return hit

    def _global(self, frame, event, arg):
        if event != "call" or not self._wanted(frame.f_code):
            return None
        last = [frame.f_lineno]
        current = self.current

        def local(frame, event, arg):
            if event == "line":
                current.add((frame.f_code, last[0], frame.f_lineno))
                last[0] = frame.f_lineno
            return local

        return local

    def run(self, func, data):
        self.current = set()
        sys.settrace(self._global)
        try:
            return func(data)
        finally:
            sys.settrace(None)

    def new(self):
        fresh = self.current - self.seen
        self.seen |= fresh
        return bool(fresh)


_TOKENS = {
    "pickle": [b"\x80\x02", b"q\x00", b"h\x00", b"(", b"t", b"R", b"\x81", b"b", b"Q", b"u", b"s", b"a", b"e",
               b"\x85", b"\x86", b"\x87", b"]", b"}", b")", b"\x8f", b"\x90", b"\x91", b"\x94", b"\x93", b"\x96",
               b"cargparse\nNamespace\n", b"ccollections\ndefaultdict\n", b"cnumpy\ndtype\n", b"c_codecs\nencode\n",
               b"ctorch\nSize\n", b"ctorch\ndevice\n", b"cnumpy._core.multiarray\n_reconstruct\n",
               b"cnumpy._core.multiarray\nscalar\n", b"c__builtin__\nset\n", b"cos\nsystem\n", b"X\x07\x00\x00\x00storage",
               b"J\xff\xff\xff\x7f", b"\x8a\x08" + b"\xff" * 8, b"K\x00", b"N", b"\x88"],
    "zip": [b"PK\x03\x04", b"PK\x01\x02", b"PK\x05\x06", b"data.pkl", b"archive/data/0", b"\x08\x00"],
    "safetensors": [b'"dtype"', b'"shape"', b'"data_offsets"', b'"F32"', b'"BF16"', b"[", b"]", b"{", b"}", b"-1",
                    b"18446744073709551615", b"1e400", b"null", b'"__metadata__"'],
    "catalogue": [b'"entries"', b'"arch"', b'"resolution"', b'"top1"', b"null", b"true", b"1.5", b'"id"', b"{}", b"[]",
                  b'"task"', b'"segmentation"'],
    "tflite": [b"TFL3", b"\xff\xff\xff\x7f", b"\x00\x00\x00\x80", b"\x04\x00", b"\x00\x00", b"\x01\x00\x00\x00"],
}
_TOKENS["legacy"] = _TOKENS["pickle"]


def _mutate(rng, data, corpus, tokens):
    data = bytearray(data)
    for _ in range(rng.randint(1, 4)):
        choice = rng.randrange(9)
        if not data:
            data += rng.randbytes(rng.randint(1, 8))
            continue
        pos = rng.randrange(len(data))
        if choice == 0:
            data[pos] ^= 1 << rng.randrange(8)
        elif choice == 1:
            data[pos] = rng.choice((0, 1, 0x7F, 0x80, 0xFF, rng.randrange(256)))
        elif choice == 2:
            width = rng.choice((2, 4, 8))
            value = rng.choice((0, 1, 2 ** (8 * width - 1) - 1, 2 ** (8 * width) - 1, rng.randrange(2 ** (8 * width))))
            data[pos:pos + width] = value.to_bytes(width, "little")
        elif choice == 3:
            del data[pos:pos + rng.randint(1, 16)]
        elif choice == 4:
            data[pos:pos] = rng.randbytes(rng.randint(1, 8))
        elif choice == 5:
            end = min(len(data), pos + rng.randint(1, 32))
            data[rng.randrange(len(data)):0] = data[pos:end]
        elif choice == 6 and tokens:
            data[pos:pos] = rng.choice(tokens)
        elif choice == 7 and tokens:
            token = rng.choice(tokens)
            data[pos:pos + len(token)] = token
        else:
            other = rng.choice(corpus)
            cut = rng.randrange(len(other) + 1)
            data = data[:pos] + other[cut:]
    return bytes(data[: 1 << 20])


def _rss_mb():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def run_builtin(target, *, runs=None, seconds=None, seed=0, timeout=10.0, extra_seeds=(), artifacts=None):
    """Fuzzes ``target`` in this process; returns a dict of figures and the findings (deterministic for ``runs``)."""
    folder = tempfile.mkdtemp(prefix=f"fuzz_{target}_", dir="/dev/shm" if os.path.isdir("/dev/shm") else None)
    try:
        runner = _Runner(target, folder)
        arcs = _Arcs(runner.modules)
        rng = random.Random(seed)
        corpus = list(seeds(target)) + list(extra_seeds)
        tokens = _TOKENS.get(target, [])
        findings, hangs, executions = {}, 0, 0
        start = time.perf_counter()

        def alarm(signum, frame):
            raise _Hang()

        previous = signal.signal(signal.SIGALRM, alarm)
        try:
            queue = list(corpus)
            while True:
                if runs is not None and executions >= runs:
                    break
                if seconds is not None and time.perf_counter() - start >= seconds:
                    break
                data = queue.pop(0) if queue else _mutate(rng, rng.choice(corpus), corpus, tokens)
                signal.setitimer(signal.ITIMER_REAL, timeout)
                try:
                    error = arcs.run(runner, data)
                except _Hang:
                    hangs += 1
                    error = None
                    _save(artifacts, target, "hang", data)
                finally:
                    signal.setitimer(signal.ITIMER_REAL, 0)
                executions += 1
                if error is not None:
                    key = (type(error).__name__, _where(error))
                    if key not in findings:
                        findings[key] = {"type": type(error).__name__, "message": str(error)[:300], "where": key[1],
                                         "input": _save(artifacts, target, "exception", data), "count": 0}
                    findings[key]["count"] += 1
                if arcs.new():
                    corpus.append(data)
        finally:
            signal.signal(signal.SIGALRM, previous)
        elapsed = time.perf_counter() - start
        return {"target": target, "engine": "builtin", "seed": seed, "executions": executions,
                "seconds": round(elapsed, 1), "exec_per_s": round(executions / max(elapsed, 1e-9), 1),
                "coverage_edges": len(arcs.seen), "corpus": len(corpus), "peak_rss_mb": round(_rss_mb(), 1),
                "crashes": 0, "hangs": hangs, "non_library_exceptions": sum(f["count"] for f in findings.values()),
                "findings": list(findings.values())}
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _where(error):
    frames = traceback.extract_tb(error.__traceback__)
    frame = frames[-1] if frames else None
    return f"{os.path.basename(frame.filename)}:{frame.lineno}" if frame else "?"


def _save(folder, target, kind, data):
    if folder is None:
        return None
    os.makedirs(folder, exist_ok=True)
    path = os.path.join(folder, f"{target}-{kind}-{hashlib.sha1(data).hexdigest()[:12]}")
    with open(path, "wb") as handle:
        handle.write(data)
    return path


# ---- the atheris engine: one child process per target ----------------------------------------------------

def _atheris_worker(args):
    """In the child: libFuzzer drives the target; Python exceptions are logged, not fatal, so all are counted."""
    import atheris

    import keras_visrec  # noqa: F401 - the package (and Keras) load uninstrumented; the readers below are instrumented

    with atheris.instrument_imports(include=["keras_visrec.converters", "keras_visrec.zoo", "keras_visrec.tflite"]):
        import keras_visrec.converters.convnext_keys  # noqa: F401
        import keras_visrec.converters.pytorch_reader  # noqa: F401
        import keras_visrec.tflite.edgetpu  # noqa: F401
        import keras_visrec.tflite.report  # noqa: F401
        import keras_visrec.zoo.catalogue  # noqa: F401
    folder = tempfile.mkdtemp(prefix=f"fuzz_{args.target}_", dir="/dev/shm" if os.path.isdir("/dev/shm") else None)
    runner = _Runner(args.target, folder)
    log = open(args.log, "a", encoding="utf-8")
    seen = set()

    def one(data):
        error = runner(bytes(data))
        if error is not None:
            key = f"{type(error).__name__} {_where(error)}"
            entry = {"key": key, "type": type(error).__name__, "message": str(error)[:300]}
            if key not in seen:
                seen.add(key)
                entry["input"] = _save(args.artifacts, args.target, "exception", bytes(data))
            log.write(json.dumps(entry) + "\n")
            log.flush()

    corpus = os.path.join(folder, "corpus")
    os.makedirs(corpus)
    for number, data in enumerate(seeds(args.target)):
        with open(os.path.join(corpus, f"seed{number}"), "wb") as handle:
            handle.write(data)
    flags = [sys.argv[0], corpus, f"-max_total_time={args.seconds}", f"-seed={args.seed + 1}",
             f"-rss_limit_mb={args.rss_limit_mb}", f"-timeout={int(args.timeout)}", "-print_final_stats=1",
             f"-max_len={args.max_len}", f"-artifact_prefix={args.artifacts}/{args.target}-"]
    if args.runs:
        flags.append(f"-runs={args.runs}")
    atheris.Setup(flags, one)
    atheris.Fuzz()


_STAT = re.compile(r"^stat::(\w+):\s+(\d+)", re.M)
_STATUS = re.compile(r"#(\d+)\s+(?:DONE|pulse|NEW|REDUCE|INITED)\s+cov: (\d+) ft: (\d+) corp: (\d+)")


def run_atheris(target, *, seconds, seed=0, rss_limit_mb=2048, timeout=10, artifacts, runs=None, max_len=65536):
    """Runs the atheris worker for ``target`` in a child process; parses libFuzzer's figures."""
    os.makedirs(artifacts, exist_ok=True)
    log = os.path.join(artifacts, f"{target}-exceptions.jsonl")
    if os.path.exists(log):
        os.remove(log)
    command = [sys.executable, os.path.abspath(__file__), "--worker", "--target", target, "--seconds", str(seconds),
               "--seed", str(seed), "--rss-limit-mb", str(rss_limit_mb), "--timeout", str(timeout),
               "--artifacts", artifacts, "--log", log, "--max-len", str(max_len)]
    if runs:
        command += ["--runs", str(runs)]
    started = time.perf_counter()
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    elapsed = time.perf_counter() - started
    text = result.stderr
    stats = {key: int(value) for key, value in _STAT.findall(text)}
    status = _STATUS.findall(text)
    last = status[-1] if status else ("0", "0", "0", "0")
    findings = collections.Counter()
    examples = {}
    if os.path.exists(log):
        with open(log, encoding="utf-8") as handle:
            for line in handle:
                entry = json.loads(line)
                findings[entry["key"]] += 1
                examples.setdefault(entry["key"], entry)
    crashed = "==ERROR" in text or "deadly signal" in text or "Fatal Python error" in text
    return {"target": target, "engine": "atheris", "seed": seed, "seconds": round(elapsed, 1),
            "executions": stats.get("number_of_executed_units", int(last[0])),
            "exec_per_s": stats.get("average_exec_per_sec", 0),
            "coverage_edges": int(last[1]), "features": int(last[2]), "corpus": int(last[3]),
            "peak_rss_mb": stats.get("peak_rss_mb", 0), "crashes": int(crashed and "timeout" not in text.lower()),
            "hangs": int("ALARM: working on the last Unit" in text or "-timeout" in text and "Timeout" in text),
            "out_of_memory": int("out-of-memory" in text), "exit_status": result.returncode,
            "non_library_exceptions": sum(findings.values()),
            "findings": [dict(examples[key], count=count) for key, count in findings.items()],
            "log_tail": text[-1500:] if result.returncode not in (0,) else ""}


def _print(figures):
    for key in ("target", "engine", "seed", "seconds", "executions", "exec_per_s", "coverage_edges", "features",
                "corpus", "peak_rss_mb", "crashes", "hangs", "out_of_memory", "non_library_exceptions"):
        if key in figures:
            print(f"{figures['target']}.{key}: {figures[key]}" if key != "target" else f"fuzz target: {figures[key]}")
    for finding in figures["findings"]:
        print(f"{figures['target']}.finding: {finding['type']} at {finding.get('where', finding.get('key'))} "
              f"x{finding['count']}: {finding['message'][:160]!r} (input: {finding.get('input')})")
    if figures.get("log_tail"):
        print(f"{figures['target']}.engine_log_tail: {figures['log_tail']!r}")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--target", choices=TARGETS + ("all",), default="all")
    parser.add_argument("--engine", choices=("auto", "atheris", "builtin"), default="auto")
    parser.add_argument("--seconds", type=float, default=None, help="time per target")
    parser.add_argument("--runs", type=int, default=None, help="executions per target (builtin: deterministic)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--timeout", type=float, default=10.0, help="seconds one input may run (a hang past it)")
    parser.add_argument("--rss-limit-mb", type=int, default=2048, help="memory cap of the fuzzing process")
    parser.add_argument("--max-len", type=int, default=65536, help="largest input libFuzzer builds (atheris)")
    parser.add_argument("--artifacts", default=os.path.join(tempfile.gettempdir(), "keras_visrec_fuzz"),
                        help="where inputs that raised, crashed or hung are saved")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--log", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        return _atheris_worker(args)
    if args.seconds is None and args.runs is None:
        args.seconds = 60.0
    engine = args.engine
    if engine == "auto":
        try:
            import atheris  # noqa: F401
            engine = "atheris"
        except ImportError:
            engine = "builtin"
    targets = TARGETS if args.target == "all" else (args.target,)
    worst = 0
    for target in targets:
        if engine == "atheris":
            figures = run_atheris(target, seconds=int(args.seconds or 10 ** 6), seed=args.seed, runs=args.runs,
                                  rss_limit_mb=args.rss_limit_mb, timeout=args.timeout, artifacts=args.artifacts,
                                  max_len=args.max_len)
        else:
            _limit_memory(args.rss_limit_mb)
            figures = run_builtin(target, runs=args.runs, seconds=args.seconds, seed=args.seed, timeout=args.timeout,
                                  artifacts=args.artifacts)
        _print(figures)
        worst = max(worst, figures["crashes"] + figures["hangs"] + figures["non_library_exceptions"]
                    + figures.get("out_of_memory", 0))
    return 1 if worst else 0


def _limit_memory(megabytes):
    """Caps this process's address space at its current size plus ``megabytes`` (MemoryError past it)."""
    with open("/proc/self/statm") as handle:
        pages = int(handle.read().split()[0])
    cap = pages * resource.getpagesize() + megabytes * 2 ** 20
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    if soft == resource.RLIM_INFINITY or soft > cap:
        resource.setrlimit(resource.RLIMIT_AS, (cap, hard))


if __name__ == "__main__":
    sys.exit(main())

"""What a ``.tflite`` file holds and how LiteRT runs it: the export report.

:func:`read_tflite` reads the file's flatbuffer itself, with every offset and length checked
against the file before use: operator codes (custom ops by name), every subgraph with its
tensors (dtypes, shapes and dynamic dimensions, quantization, constant buffers), signatures
and metadata. Nothing in this step loads the file into a runtime, so models with custom ops,
several signatures, int16 activations, fp16 / int8 weights or dynamic shapes are all analysed,
and a malformed file is a :class:`TFLiteFileError` naming what is wrong.

:func:`analyze_tflite` adds how LiteRT runs the graph, found in a child process (a runtime
that aborts on a graph takes the child, not the caller): whether the builtin kernels alone
prepare it, and which nodes the default XNNPACK delegate takes, by walking back from every
delegate node's outputs to its inputs. Every node XNNPACK leaves runs on a builtin kernel; for
integer tensors those are often slow reference kernels, the cause of int8 models that run
slower than float. LiteRT reports delegation for the primary subgraph only.
"""

import dataclasses
import json
import os

import numpy as np

from keras_visrec.files import write_atomic
from keras_visrec.tflite.flatbuffer import TFLiteFileError, TFLiteModel, read_tflite

__all__ = [
    "ExportReport", "OpInfo", "TFLiteFileError", "TFLiteModel", "analyze_tflite", "kernel_table", "read_ops",
    "read_tflite",
]

_DELEGATE_NODE = "DELEGATE"

# ---- the graph's nodes ---------------------------------------------------------------------------

@dataclasses.dataclass
class OpInfo:
    """One node of the graph as written: index, op type, tensor dtypes and shapes, delegation.

    ``custom`` marks a custom op (``op`` is then its name); ``subgraph`` is the subgraph the node
    belongs to (``index`` counts within it); ``dynamic`` marks a node touching a tensor with a
    dynamic dimension (-1 in its shape signature; ``*_shapes`` hold the shapes as allocated).
    """

    index: int
    op: str
    input_dtypes: list
    output_dtypes: list
    input_shapes: list
    output_shapes: list
    inputs: list
    outputs: list
    xnnpack: bool = False
    constants: dict = dataclasses.field(default_factory=dict)
    custom: bool = False
    subgraph: int = 0
    dynamic: bool = False

    @property
    def dtype(self):
        """The dtype the kernel computes in (its first non-constant-int input, else its output)."""
        for dtype in self.input_dtypes + self.output_dtypes:
            if dtype != "int32":
                return dtype
        return self.output_dtypes[0] if self.output_dtypes else "?"


_CONSTANT_ARGUMENTS = {"MEAN": "axes", "SUM": "axes", "REDUCE_MAX": "axes", "REDUCE_MIN": "axes",
                       "REDUCE_PROD": "axes", "PAD": "paddings", "PADV2": "paddings"}


def _op_constants(model, content, graph, name, inputs):
    """The constant argument the Edge TPU limits depend on (reduction axes, paddings), from its buffer."""
    key = _CONSTANT_ARGUMENTS.get(name)
    if key is None or len(inputs) < 2 or inputs[1] < 0:
        return {}
    tensor = graph["tensors"][inputs[1]]
    dtype = {"int32": "<i4", "int64": "<i8"}.get(tensor["dtype"])
    data = model.buffer_bytes(content, tensor["buffer"]) if tensor["constant"] else b""
    if dtype is None or not data or len(data) % np.dtype(dtype).itemsize or len(data) > 4096:
        return {}
    return {key: [int(v) for v in np.frombuffer(data, dtype)]}


def _graph_ops(model, content):
    """Every node of every subgraph as :class:`OpInfo` (no delegation yet)."""
    ops = []
    for graph in model.subgraphs:
        tensors = graph["tensors"]
        for number, node in enumerate(graph["operators"]):
            code = model.opcodes[node["opcode"]]
            ins = [t for t in node["inputs"] if t >= 0]
            outs = [t for t in node["outputs"] if t >= 0]
            touched = [tensors[t] for t in ins + outs]
            ops.append(OpInfo(
                index=number, op=code["name"],
                input_dtypes=[tensors[t]["dtype"] for t in ins], output_dtypes=[tensors[t]["dtype"] for t in outs],
                input_shapes=[list(tensors[t]["shape"]) for t in ins],
                output_shapes=[list(tensors[t]["shape"]) for t in outs],
                inputs=ins, outputs=outs, constants=_op_constants(model, content, graph, code["name"], ins),
                custom=code["custom"], subgraph=graph["index"],
                dynamic=any(-1 in t["shape_signature"] for t in touched if not t["constant"]),
            ))
    return ops


def read_ops(model_content, *, with_xnnpack=True):
    """Lists the graph's nodes (every subgraph) as :class:`OpInfo`, marking those XNNPACK takes.

    Args:
        model_content: bytes of a ``.tflite`` file.
        with_xnnpack: bool. Also load with the default delegate (in a child process) to find
            the delegated nodes of the primary subgraph. Defaults to `True`.
    """
    model = read_tflite(model_content)
    ops = _graph_ops(model, model_content)
    if with_xnnpack:
        _mark_delegated(ops, _probe_runtime(model_content))
    return ops


def _mark_delegated(ops, probe):
    runs = (probe or {}).get("xnnpack") or {}
    if not runs.get("ok"):
        return
    primary = [op for op in ops if op.subgraph == 0]
    delegated = _delegated_nodes(runs["ops"], len(primary))
    for op in primary:
        op.xnnpack = op.index in delegated


# ---- how LiteRT runs it: a child process ---------------------------------------------------------

def _interpreter_class():
    from keras_visrec.tflite.runtime import interpreter_backend

    return interpreter_backend()[1]


def _resolver_types():
    try:
        from ai_edge_litert.interpreter import OpResolverType
    except ImportError:
        try:
            from tensorflow.lite.python.interpreter import OpResolverType
        except ImportError:  # tflite_runtime: no resolver choice, XNNPACK coverage unknown
            return {}
    return {
        "plain": {"experimental_op_resolver_type": OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES},
        "default": {"experimental_op_resolver_type": OpResolverType.AUTO},
    }


# Loads the file twice — builtin kernels only, then with the default delegates — and prints one
# JSON line after each, so a runtime that aborts on the second still leaves the first.
_PROBE = """
import json, sys
from {module} import Interpreter, OpResolverType
for stage, resolver in (("builtin", OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES),
                        ("xnnpack", OpResolverType.AUTO)):
    try:
        interpreter = Interpreter(model_path=sys.argv[1], num_threads=1, experimental_op_resolver_type=resolver)
        interpreter.allocate_tensors()
        ops = [[d["op_name"], [int(t) for t in d["inputs"]], [int(t) for t in d["outputs"]]]
               for d in interpreter._get_ops_details()]
        print(json.dumps({{"stage": stage, "ok": True, "ops": ops}}), flush=True)
    except Exception as error:
        print(json.dumps({{"stage": stage, "ok": False, "error": str(error).strip()[:2000]}}), flush=True)
"""


def _probe_runtime(model_content, timeout=600):
    """``{"builtin": {...}, "xnnpack": {...}}`` from loading the file in a child process, or None.

    Each stage holds ``ok`` and either ``ops`` (the interpreter's nodes, delegate nodes last) or
    ``error``. XNNPACK runs in a child because on some graphs it aborts the process while
    preparing (seen with uint8 graphs holding 1e-6 layer scales), which no ``try`` can catch; a
    stage missing from the output is reported as such. None without a runtime that can choose
    its op resolver (``tflite_runtime``).
    """
    import subprocess
    import sys
    import tempfile

    if not _resolver_types():
        return None
    module = _interpreter_class().__module__
    with tempfile.NamedTemporaryFile(suffix=".tflite", delete=False) as handle:
        handle.write(model_content)
    try:
        result = subprocess.run([sys.executable, "-c", _PROBE.format(module=module), handle.name],
                                capture_output=True, text=True, timeout=timeout, check=False)
        output, code = result.stdout, result.returncode
    except subprocess.TimeoutExpired:
        output, code = "", "timeout"
    finally:
        os.remove(handle.name)
    stages = {}
    for line in output.splitlines():
        if line.startswith("{"):
            try:
                entry = json.loads(line)
            except ValueError:
                continue
            stages[entry.pop("stage", "?")] = entry
    for stage in ("builtin", "xnnpack"):
        stages.setdefault(stage, {"ok": False, "error": f"the runtime ended the process while preparing the graph "
                                                          f"(exit status {code})"})
    return stages


def _delegated_nodes(details, count):
    """Indices of original nodes replaced by delegate nodes (walk back from each delegate's outputs)."""
    details = [{"index": i, "op_name": name, "inputs": ins, "outputs": outs}
               for i, (name, ins, outs) in enumerate(details)]
    producer = {}
    for node in details[:count]:
        for tensor in node["outputs"]:
            producer[int(tensor)] = node
    delegated = set()
    for node in details[count:]:
        if node["op_name"] != _DELEGATE_NODE:
            continue
        boundary = {int(t) for t in node["inputs"]}
        stack = [int(t) for t in node["outputs"]]
        seen = set()
        while stack:
            tensor = stack.pop()
            if tensor in seen or tensor in boundary:
                continue
            seen.add(tensor)
            source = producer.get(tensor)
            if source is None or int(source["index"]) in delegated:
                continue
            delegated.add(int(source["index"]))
            stack.extend(int(t) for t in source["inputs"] if t >= 0)
    return delegated


def kernel_table(ops):
    """op type -> {"count", "xnnpack", "builtin", "dtypes"}."""
    table = {}
    for op in ops:
        row = table.setdefault(op.op, {"count": 0, "xnnpack": 0, "builtin": 0, "dtypes": []})
        row["count"] += 1
        row["xnnpack" if op.xnnpack else "builtin"] += 1
        if op.dtype not in row["dtypes"]:
            row["dtypes"].append(op.dtype)
    return table


# ---- the report ----------------------------------------------------------------------------------

@dataclasses.dataclass
class ExportReport:
    """What :func:`keras_visrec.export_tflite` produced or :func:`analyze_tflite` found; printable and JSON.

    Attributes:
        path: the ``.tflite`` file. size_bytes: its size.
        quantization, target: as requested (``analyze_tflite`` fills ``quantization`` with the
            scheme it detects when not told: ``fp32``, ``fp16``, ``dynamic``, ``int8`` or ``16x8``).
        input_dtype, output_dtype: the primary subgraph's first input / output types.
        ops: list of :class:`OpInfo` (every subgraph). op_histogram: op type -> count.
        kernels: op type -> {"count", "xnnpack", "builtin", "dtypes"} (how each op type ran).
        xnnpack_fraction: share of the primary subgraph's nodes XNNPACK took.
        agreement: comparison with the Keras model (max_abs_diff, top1_agreement, samples …).
        folds: exact folds applied. lowered: how each Keras layer type was emitted.
        edgetpu: the Edge TPU compatibility report (target="edgetpu"), else None.
        compiler: the parsed ``edgetpu_compiler`` log when it ran, else None.
        problems: things worth a look (e.g. float ops left in an int8 model, a custom op no
            kernel here provides). notes: facts about the file worth knowing.
        precision: where the graph was kept in higher precision and why.
        xnnpack_refused: the builtin kernels run the graph but XNNPACK takes none of it.
        inputs, outputs: the primary subgraph's tensors (``name``, ``dtype``, ``shape``,
            ``shape_signature`` with -1 for dynamic dimensions, ``scale``, ``zero_point``).
        signatures: ``key``, ``subgraph``, ``inputs`` / ``outputs`` (name -> dtype and shape).
        subgraphs: ``index``, ``name``, ``nodes`` of every subgraph.
        custom_ops: one dict per custom op: ``op``, ``count``, ``xnnpack`` / ``builtin`` /
            ``edgetpu`` (which runtime has its kernel, from ``edgetpu_ops.json``), ``delegated``
            (nodes XNNPACK took here, None when not measured), ``origin``.
        tensor_dtypes: ``{"activations": {dtype: count}, "constants": {dtype: count}}``.
        dynamic: some input has a dynamic dimension.
        runtime: how LiteRT prepared the file here: ``{"builtin": ok or error, "xnnpack": …}``.
    """

    path: str
    size_bytes: int
    quantization: str
    target: str
    input_dtype: str
    output_dtype: str
    ops: list
    op_histogram: dict
    kernels: dict
    xnnpack_fraction: float
    agreement: dict = dataclasses.field(default_factory=dict)
    folds: list = dataclasses.field(default_factory=list)
    lowered: dict = dataclasses.field(default_factory=dict)
    edgetpu: object = None
    compiler: object = None
    problems: list = dataclasses.field(default_factory=list)
    precision: list = dataclasses.field(default_factory=list)
    xnnpack_refused: bool = False
    inputs: list = dataclasses.field(default_factory=list)
    outputs: list = dataclasses.field(default_factory=list)
    signatures: list = dataclasses.field(default_factory=list)
    subgraphs: list = dataclasses.field(default_factory=list)
    custom_ops: list = dataclasses.field(default_factory=list)
    tensor_dtypes: dict = dataclasses.field(default_factory=dict)
    dynamic: bool = False
    runtime: dict = dataclasses.field(default_factory=dict)
    notes: list = dataclasses.field(default_factory=list)

    def to_dict(self):
        data = dataclasses.asdict(self)
        data["ops"] = [dataclasses.asdict(op) for op in self.ops]
        if self.edgetpu is not None and hasattr(self.edgetpu, "to_dict"):
            data["edgetpu"] = self.edgetpu.to_dict()
        return data

    def to_json(self, path=None, indent=2):
        """JSON text of the report; also written atomically to ``path`` when given."""
        text = json.dumps(self.to_dict(), indent=indent, default=_json_default)
        if path is not None:
            write_atomic(path, text)
        return text

    def __str__(self):
        lines = [
            f"TFLite export: {self.path}",
            f"  quantization={self.quantization} target={self.target} size={self.size_bytes / 1e6:.3f} MB "
            f"io={self.input_dtype}->{self.output_dtype}",
            f"  nodes={len(self.ops)} on XNNPACK={self.xnnpack_fraction:.0%}",
        ]
        if len(self.subgraphs) > 1 or self.signatures:
            lines.append("  subgraphs: " + ", ".join(f"#{g['index']} {g['name'] or '?'} ({g['nodes']} nodes)"
                                                     for g in self.subgraphs))
            for signature in self.signatures:
                ins = ", ".join(f"{name} {v['dtype']}{v['shape']}" for name, v in signature["inputs"].items())
                outs = ", ".join(f"{name} {v['dtype']}{v['shape']}" for name, v in signature["outputs"].items())
                lines.append(f"  signature {signature['key']!r} (subgraph {signature['subgraph']}): {ins} -> {outs}")
        for tensor in self.inputs:
            if -1 in tensor["shape_signature"]:
                lines.append(f"  dynamic input {tensor['name']}: {tensor['shape_signature']} (-1 = any size)")
        if self.agreement:
            lines.append("  agreement with Keras: " + ", ".join(f"{k}={_fmt(v)}" for k, v in self.agreement.items()))
        lines.append("  op type                    count  xnnpack  builtin  dtypes")
        for op, row in sorted(self.kernels.items(), key=lambda item: -item[1]["count"]):
            lines.append(f"  {op:<26} {row['count']:>5}  {row['xnnpack']:>7}  {row['builtin']:>7}  "
                         f"{','.join(row['dtypes'])}")
        for custom in self.custom_ops:
            where = [name for name in ("xnnpack", "builtin", "edgetpu") if custom[name]] or ["no runtime listed"]
            lines.append(f"  custom op {custom['op']} x{custom['count']}: kernel in {', '.join(where)} "
                         f"({custom['origin']})")
        if self.folds:
            kinds = {}
            for fold in self.folds:
                kind = fold.split("(")[-1].rstrip(")") if "(" in fold else "layernorm scale/shift"
                kinds[kind] = kinds.get(kind, 0) + 1
            lines.append("  exact folds: " + ", ".join(f"{count}x {kind}" for kind, count in kinds.items()))
        for note in self.precision:
            lines.append(f"  precision: {note}")
        for note in self.notes:
            lines.append(f"  note: {note}")
        for problem in self.problems:
            lines.append(f"  problem: {problem}")
        if self.edgetpu is not None:
            lines.append(str(self.edgetpu))
        if self.compiler is not None:
            lines.append(str(self.compiler))
        return "\n".join(lines)


def _fmt(value):
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def _json_default(value):
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (np.floating,)):
        return float(value)
    if isinstance(value, np.ndarray):
        return value.tolist()
    if dataclasses.is_dataclass(value):
        return dataclasses.asdict(value)
    return str(value)


def _tensor_summary(tensor):
    quant = tensor["quantization"]
    return {"name": tensor["name"], "dtype": tensor["dtype"], "shape": list(tensor["shape"]),
            "shape_signature": list(tensor["shape_signature"]), "scale": quant["scale"],
            "zero_point": quant["zero_point"]}


_INDEX_DTYPES = ("int32", "int64", "bool", "string", "resource", "variant")


def _detect_quantization(activations, constants):
    """The export scheme a graph's tensor dtypes imply (the names ``export_tflite`` takes, plus ``16x8``)."""
    if "int16" in activations and ("int8" in constants or not constants):
        return "16x8"
    if set(activations) & {"int8", "uint8"}:
        return "int8"
    if "float16" in constants:
        return "fp16"
    if set(constants) & {"int8", "uint8"}:
        return "dynamic"
    return "fp32"


def _unresolved(stage):
    error = (stage or {}).get("error", "")
    marker = "unresolved custom op: "
    if marker not in error:
        return None
    return error.split(marker, 1)[1].split(".")[0].split("\n")[0].strip()


def analyze_tflite(path, *, quantization="?", target="?", model_content=None, runtime=True):
    """Builds an :class:`ExportReport` (without the Keras agreement) for any ``.tflite`` file.

    Args:
        path: str or path-like. The file (also the name used in the report).
        quantization: str. The scheme it was exported with; ``"?"`` reports the detected one.
        target: str. The target it was exported for. Defaults to `"?"`.
        model_content: bytes or None. The file's bytes, when already read.
        runtime: bool. Also load it with LiteRT (in a child process) to find which nodes the
            builtin kernels and XNNPACK take. Defaults to `True`; False analyses the file alone.

    Raises:
        FileNotFoundError: no such file. TFLiteFileError: not a well-formed TFLite flatbuffer.
    """
    from keras_visrec.tflite.edgetpu import custom_op_support

    if model_content is None:
        if not os.path.isfile(os.fspath(path)):
            raise FileNotFoundError(f"TFLite model file not found: {os.fspath(path)!r}.")
        with open(path, "rb") as handle:
            model_content = handle.read()
    model = read_tflite(model_content, path=os.fspath(path))
    ops = _graph_ops(model, model_content)
    probe = _probe_runtime(model_content) if runtime else None
    _mark_delegated(ops, probe)
    primary = [op for op in ops if op.subgraph == 0]
    histogram = {}
    for op in ops:
        histogram[op.op] = histogram.get(op.op, 0) + 1
    main = model.subgraphs[0] if model.subgraphs else {"tensors": [], "inputs": [], "outputs": []}
    inputs = [_tensor_summary(main["tensors"][t]) for t in main["inputs"]]
    outputs = [_tensor_summary(main["tensors"][t]) for t in main["outputs"]]
    activations, constants = {}, {}
    for graph in model.subgraphs:
        for tensor in graph["tensors"]:
            if tensor["dtype"] in _INDEX_DTYPES:
                continue
            side = constants if tensor["constant"] else activations
            side[tensor["dtype"]] = side.get(tensor["dtype"], 0) + 1
    detected = _detect_quantization(activations, constants)
    report = ExportReport(
        path=os.fspath(path), size_bytes=len(model_content),
        quantization=detected if quantization == "?" else quantization, target=target,
        input_dtype=inputs[0]["dtype"] if inputs else "none", output_dtype=outputs[0]["dtype"] if outputs else "none",
        ops=ops, op_histogram=dict(sorted(histogram.items(), key=lambda item: -item[1])),
        kernels=kernel_table(ops),
        xnnpack_fraction=float(np.mean([op.xnnpack for op in primary])) if primary else 0.0,
        inputs=inputs, outputs=outputs,
        subgraphs=[{"index": g["index"], "name": g["name"], "nodes": len(g["operators"])} for g in model.subgraphs],
        signatures=[_signature_summary(model, s) for s in model.signatures],
        tensor_dtypes={"activations": activations, "constants": constants},
        dynamic=any(-1 in t["shape_signature"] for t in inputs),
        runtime={stage: ("ok" if entry["ok"] else entry["error"]) for stage, entry in (probe or {}).items()},
    )
    for name in model.custom_ops:
        support = custom_op_support(name)
        nodes = [op for op in ops if op.custom and op.op == name]
        measured = sum(op.xnnpack for op in nodes) if probe and probe["xnnpack"]["ok"] else None
        report.custom_ops.append({"op": name, "count": len(nodes), "xnnpack": support["xnnpack"],
                                  "builtin": support["builtin"], "edgetpu": support["edgetpu"],
                                  "delegated": measured, "origin": support["origin"], "known": support["known"]})
    _add_findings(report, probe, quantization, primary, model)
    return report


def _signature_summary(model, signature):
    tensors = model.subgraphs[signature["subgraph"]]["tensors"]

    def side(names):
        return {name: {"dtype": tensors[t]["dtype"], "shape": list(tensors[t]["shape_signature"])}
                for name, t in names.items()}

    return {"key": signature["key"], "subgraph": signature["subgraph"], "inputs": side(signature["inputs"]),
            "outputs": side(signature["outputs"])}


def _add_findings(report, probe, quantization, primary, model):
    """Problems and notes: what cannot run here, what runs slowly, what the report cannot see."""
    if probe is not None:
        builtin, xnnpack = probe["builtin"], probe["xnnpack"]
        missing = {_unresolved(builtin), _unresolved(xnnpack)} - {None}
        for name in sorted(missing):
            only_xnnpack = xnnpack["ok"] and _unresolved(builtin) == name
            report.problems.append(
                f"custom op {name}: no builtin kernel here"
                + ("; it runs only through XNNPACK, so load_tflite(..., xnnpack=False) cannot run this file"
                   if only_xnnpack else "; register its kernel with the interpreter to run this file"))
        for stage, entry in (("builtin kernels", builtin), ("XNNPACK", xnnpack)):
            if not entry["ok"] and _unresolved(entry) is None:
                report.problems.append(f"LiteRT could not prepare the graph with {stage}: "
                                       f"{entry['error'].splitlines()[0][:300] if entry['error'] else '?'}")
        if primary and builtin["ok"] and not any(op.xnnpack for op in primary):
            report.xnnpack_refused = True
            report.problems.append("XNNPACK takes no node of this graph (it refused or aborted while preparing it); "
                                   "load it with load_tflite(..., xnnpack=False) to run on builtin kernels")
    if len([g for g in model.subgraphs if g["operators"]]) > 1:
        report.notes.append(f"{len(model.subgraphs)} subgraphs: LiteRT reports XNNPACK delegation for the primary "
                            f"subgraph only (the others are listed with builtin=all)")
    if report.dynamic:
        report.notes.append("dynamic input dimensions: resize the input before allocating to fix them "
                            "(XNNPACK plans for the allocated shape; the Edge TPU needs static shapes)")
    if quantization == "int8":
        floats = sorted({op.op for op in report.ops if op.dtype == "float32" and op.op not in ("QUANTIZE", "DEQUANTIZE")})
        if floats:
            report.problems.append(f"float32 ops left in an int8 model: {', '.join(floats)}")
    slow = sorted({op.op for op in primary if not op.xnnpack and op.dtype in ("int8", "uint8", "int16")})
    if slow and probe is not None and probe["xnnpack"]["ok"]:
        report.problems.append(
            "integer ops not taken by XNNPACK (run on builtin kernels): " + ", ".join(slow))

"""What a ``.tflite`` file holds and how LiteRT runs it: the export report.

:func:`analyze_tflite` reads a model twice with LiteRT — once with no delegate (the graph as
written) and once with the default XNNPACK delegate — and finds which nodes XNNPACK took by
walking back from every delegate node's outputs to its inputs. Every node it leaves runs on a
builtin kernel; for integer tensors those are often slow reference kernels, the cause of int8
models that run slower than float.
"""

import dataclasses
import json
import os

import numpy as np

from keras_visrec.files import write_atomic

__all__ = ["ExportReport", "OpInfo", "analyze_tflite", "kernel_table", "read_ops"]

_DELEGATE_NODE = "DELEGATE"


@dataclasses.dataclass
class OpInfo:
    """One node of the graph as written: index, op type, tensor dtypes and shapes, delegation."""

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

    @property
    def dtype(self):
        """The dtype the kernel computes in (its first non-constant-int input, else its output)."""
        for dtype in self.input_dtypes + self.output_dtypes:
            if dtype != "int32":
                return dtype
        return self.output_dtypes[0] if self.output_dtypes else "?"


@dataclasses.dataclass
class ExportReport:
    """What :func:`keras_visrec.export_tflite` produced; printable (``str``) and JSON (``to_json``).

    Attributes:
        path: the written ``.tflite`` file. size_bytes: its size.
        quantization, target: as requested. input_dtype, output_dtype: the model's I/O types.
        ops: list of :class:`OpInfo`. op_histogram: op type -> count.
        kernels: op type -> {"count", "xnnpack", "builtin", "dtypes"} (how each op type ran).
        xnnpack_fraction: share of nodes XNNPACK took.
        agreement: comparison with the Keras model (max_abs_diff, top1_agreement, samples …).
        folds: exact folds applied. lowered: how each Keras layer type was emitted.
        edgetpu: the Edge TPU compatibility report (target="edgetpu"), else None.
        compiler: the parsed ``edgetpu_compiler`` log when it ran, else None.
        problems: things worth a look (e.g. float ops left in an int8 model).
        precision: where the graph was kept in higher precision and why.
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
        if self.agreement:
            lines.append("  agreement with Keras: " + ", ".join(f"{k}={_fmt(v)}" for k, v in self.agreement.items()))
        lines.append("  op type                    count  xnnpack  builtin  dtypes")
        for op, row in sorted(self.kernels.items(), key=lambda item: -item[1]["count"]):
            lines.append(f"  {op:<26} {row['count']:>5}  {row['xnnpack']:>7}  {row['builtin']:>7}  "
                         f"{','.join(row['dtypes'])}")
        if self.folds:
            kinds = {}
            for fold in self.folds:
                kind = fold.split("(")[-1].rstrip(")") if "(" in fold else "layernorm scale/shift"
                kinds[kind] = kinds.get(kind, 0) + 1
            lines.append("  exact folds: " + ", ".join(f"{count}x {kind}" for kind, count in kinds.items()))
        for note in self.precision:
            lines.append(f"  precision: {note}")
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


def _interpreter_class():
    from keras_visrec.tflite.runtime import interpreter_backend

    return interpreter_backend()[1]


def read_ops(model_content, *, with_xnnpack=True):
    """Lists the graph's nodes as :class:`OpInfo`, marking those the XNNPACK delegate takes.

    Args:
        model_content: bytes of a ``.tflite`` file.
        with_xnnpack: bool. Also load with the default delegate to find delegated nodes.
            Defaults to `True`.
    """
    interpreter_cls, resolver = _interpreter_class(), _resolver_types()
    plain = interpreter_cls(model_content=model_content, **resolver.get("plain", {}))
    plain.allocate_tensors()
    ops = []
    tensors = {t["index"]: t for t in plain.get_tensor_details()}
    for details in plain._get_ops_details():
        ins = [int(i) for i in details["inputs"] if i >= 0]
        outs = [int(i) for i in details["outputs"] if i >= 0]
        ops.append(OpInfo(
            index=int(details["index"]), op=details["op_name"],
            input_dtypes=[_dtype_name(tensors[i]["dtype"]) for i in ins if i in tensors],
            output_dtypes=[_dtype_name(tensors[i]["dtype"]) for i in outs if i in tensors],
            input_shapes=[[int(d) for d in tensors[i]["shape"]] for i in ins if i in tensors],
            output_shapes=[[int(d) for d in tensors[i]["shape"]] for i in outs if i in tensors],
            inputs=ins, outputs=outs, constants=_op_constants(plain, details["op_name"], ins),
        ))
    if with_xnnpack and resolver:
        delegated = _xnnpack_nodes(model_content, interpreter_cls, resolver["default"], len(ops))
        for op in ops:
            op.xnnpack = delegated is not None and op.index in delegated
    return ops


_CONSTANT_ARGUMENTS = {"MEAN": "axes", "SUM": "axes", "REDUCE_MAX": "axes", "REDUCE_MIN": "axes",
                       "REDUCE_PROD": "axes", "PAD": "paddings", "PADV2": "paddings"}


def _op_constants(interpreter, op_name, inputs):
    """Reads the constant argument the Edge TPU limits depend on (reduction axes, paddings)."""
    key = _CONSTANT_ARGUMENTS.get(op_name)
    if key is None or len(inputs) < 2:
        return {}
    try:
        value = interpreter.get_tensor(inputs[1])
    except ValueError:
        return {}
    return {key: [int(v) for v in np.asarray(value).reshape(-1)]}


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


_PROBE = """
import json, sys
from {module} import Interpreter, OpResolverType
interpreter = Interpreter(model_path=sys.argv[1], num_threads=1,
                          experimental_op_resolver_type=OpResolverType.AUTO)
interpreter.allocate_tensors()
print(json.dumps([[d["op_name"], [int(t) for t in d["inputs"]], [int(t) for t in d["outputs"]]]
                  for d in interpreter._get_ops_details()]))
"""


def _xnnpack_nodes(model_content, interpreter_cls, kwargs, count):
    """Indices of original nodes replaced by delegate nodes (walk back from each delegate's outputs).

    XNNPACK is applied in a child process: on some graphs it aborts the process while preparing
    (seen with uint8 graphs holding 1e-6 layer scales), which no ``try`` can catch. Returns
    None when it could not take the graph.
    """
    import subprocess
    import sys
    import tempfile

    module = interpreter_cls.__module__
    with tempfile.NamedTemporaryFile(suffix=".tflite", delete=False) as handle:
        handle.write(model_content)
    try:
        result = subprocess.run([sys.executable, "-c", _PROBE.format(module=module), handle.name],
                                capture_output=True, text=True, timeout=600, check=False)
    finally:
        os.remove(handle.name)
    lines = [line for line in result.stdout.splitlines() if line.startswith("[")]
    if result.returncode != 0 or not lines:
        return None
    details = [{"index": i, "op_name": name, "inputs": ins, "outputs": outs}
               for i, (name, ins, outs) in enumerate(json.loads(lines[-1]))]
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


def _dtype_name(dtype):
    return np.dtype(dtype).name


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


def analyze_tflite(path, *, quantization="?", target="?", model_content=None):
    """Builds an :class:`ExportReport` (without the Keras agreement) for a ``.tflite`` file."""
    if model_content is None:
        with open(path, "rb") as handle:
            model_content = handle.read()
    ops = read_ops(model_content)
    histogram = {}
    for op in ops:
        histogram[op.op] = histogram.get(op.op, 0) + 1
    interpreter = _interpreter_class()(model_content=model_content)
    input_dtype = _dtype_name(interpreter.get_input_details()[0]["dtype"])
    output_dtype = _dtype_name(interpreter.get_output_details()[0]["dtype"])
    report = ExportReport(
        path=os.fspath(path), size_bytes=len(model_content), quantization=quantization, target=target,
        input_dtype=input_dtype, output_dtype=output_dtype, ops=ops,
        op_histogram=dict(sorted(histogram.items(), key=lambda item: -item[1])),
        kernels=kernel_table(ops),
        xnnpack_fraction=float(np.mean([op.xnnpack for op in ops])) if ops else 0.0,
    )
    if ops and not any(op.xnnpack for op in ops) and _resolver_types():
        report.xnnpack_refused = True
        report.problems.append("XNNPACK takes no node of this graph (it refused or aborted while preparing it); "
                               "load it with load_tflite(..., xnnpack=False) to run on builtin kernels")
    if quantization == "int8":
        floats = sorted({op.op for op in ops if op.dtype == "float32" and op.op not in ("QUANTIZE", "DEQUANTIZE")})
        if floats:
            report.problems.append(f"float32 ops left in an int8 model: {', '.join(floats)}")
    slow = sorted({op.op for op in ops if not op.xnnpack and op.dtype in ("int8", "uint8")})
    if slow and _resolver_types():
        report.problems.append(
            "integer ops not taken by XNNPACK (run on builtin kernels): " + ", ".join(slow))
    return report

"""Edge TPU compatibility: check a ``.tflite`` graph against Coral's op table; run and parse the compiler.

Coral publishes which TFLite ops the Edge TPU compiler maps and their limits; the table lives in
``edgetpu_ops.json`` beside this file (source cited there). :func:`check_edgetpu` walks the graph
in execution order and lists every op that would stay on the CPU and why, plus the first one,
where the compiler stops mapping. When ``edgetpu_compiler`` is on PATH, :func:`run_edgetpu_compiler`
compiles the model and :func:`parse_compiler_log` turns its log into the same kind of report.
"""

import dataclasses
import functools
import json
import os
import re
import shutil
import subprocess

__all__ = [
    "CompilerReport", "EdgeTPUReport", "check_edgetpu", "custom_op_support", "edgetpu_op_table", "parse_compiler_log",
    "run_edgetpu_compiler",
]

_TABLE_PATH = os.path.join(os.path.dirname(__file__), "edgetpu_ops.json")
_INTEGER = ("int8", "uint8")
_INDEX_TYPES = ("int32", "int64")


@functools.lru_cache(maxsize=1)
def edgetpu_op_table():
    """Coral's supported-op table as a dict (see ``edgetpu_ops.json``)."""
    with open(_TABLE_PATH) as handle:
        return json.load(handle)


def custom_op_support(name):
    """Which runtimes have a kernel for the custom op ``name`` (``custom_ops`` in ``edgetpu_ops.json``).

    Returns:
        dict: ``xnnpack`` (the XNNPACK delegate takes it), ``builtin`` (LiteRT's builtin op
        resolver registers it), ``edgetpu`` (it runs on the Edge TPU), ``origin`` (what writes
        it) and ``known`` (False for an op none of the sources lists: it needs its own kernel).
    """
    table = edgetpu_op_table()["custom_ops"]
    spec = table["ops"].get(name)
    if spec is None:
        spec = next((value for prefix, value in table["prefixes"].items() if str(name).startswith(prefix)), None)
    if spec is None:
        return {"xnnpack": False, "builtin": False, "edgetpu": False, "known": False,
                "origin": "not a custom op LiteRT, XNNPACK or the Edge TPU provides: its kernel must be registered "
                          "with the interpreter"}
    return dict(spec, known=True)


@dataclasses.dataclass
class EdgeTPUReport:
    """Op-by-op Edge TPU compatibility of a graph.

    Attributes:
        entries: list of dicts ``{index, op, mapped, reasons}`` in execution order.
        fallback: entries that would run on the CPU. first_unmapped: the first of them (or None):
            the compiler maps ops only up to it.
        all_mapped: every op is on the table within its limits.
        min_runtime: the Edge TPU runtime version the used ops need; compiler: that compiler.
        source: where the op table comes from.
    """

    entries: list
    fallback: list
    first_unmapped: object
    all_mapped: bool
    min_runtime: int
    compiler: str
    source: str

    def to_dict(self):
        return dataclasses.asdict(self)

    def __str__(self):
        lines = [f"  Edge TPU op table check: {'every op mappable' if self.all_mapped else 'some ops stay on the CPU'}"
                 f" (needs runtime {self.min_runtime}: {self.compiler})"]
        counts = {}
        for entry in self.entries:
            key = (entry["op"], entry["mapped"], "; ".join(entry["reasons"]))
            counts[key] = counts.get(key, 0) + 1
        for (op, mapped, reasons), count in sorted(counts.items()):
            lines.append(f"    {op:<24} {count:>4}  {'Edge TPU' if mapped else 'CPU: ' + reasons}")
        if self.first_unmapped is not None:
            first = self.first_unmapped
            lines.append(f"    mapping stops at op #{first['index']} {first['op']}: {'; '.join(first['reasons'])}")
        return "\n".join(lines)


def check_edgetpu(ops):
    """Checks graph nodes (``report.read_ops`` output, with ``constants``) against Coral's table."""
    table = edgetpu_op_table()
    entries = []
    runtime = 10
    for op in ops:
        reasons = []
        spec = None if op.custom else table["ops"].get(op.op)
        if op.custom:
            if custom_op_support(op.op)["edgetpu"]:  # the compiler's own op: already on the Edge TPU
                entries.append({"index": op.index, "op": op.op, "mapped": True, "reasons": []})
                continue
            reasons.append(f"custom op {op.op}: the Edge TPU compiler maps builtin ops only")
        elif spec is None:
            reasons.append(f"{op.op} is not on the Edge TPU op table")
        else:
            runtime = max(runtime, int(spec["runtime"]))
            reasons.extend(_limit_violations(op, spec["limits"]))
        data_types = [d for d in op.input_dtypes + op.output_dtypes if d not in _INDEX_TYPES]
        floats = sorted({d for d in data_types if d not in _INTEGER})
        if floats:
            reasons.append(f"not 8-bit quantized ({', '.join(floats)} tensors)")
        if op.dynamic:
            reasons.append("dynamic tensor shape: the Edge TPU needs shapes fixed at compile time")
        for shape in op.input_shapes[:1] + op.output_shapes:  # activations (not weight tensors)
            if len(shape) > 3 and any(d > 1 for d in shape[:-3]):
                reasons.append(f"tensor shape {shape}: only the 3 innermost dimensions may exceed 1")
                break
        entries.append({"index": op.index, "op": op.op, "mapped": not reasons, "reasons": reasons})
    fallback = [e for e in entries if not e["mapped"]]
    versions = table["runtime_versions"]
    return EdgeTPUReport(
        entries=entries, fallback=fallback, first_unmapped=fallback[0] if fallback else None,
        all_mapped=not fallback, min_runtime=runtime, compiler=versions.get(str(runtime), "?"),
        source=table["source"],
    )


def _limit_violations(op, limits):
    reasons = []
    shape = op.input_shapes[0] if op.input_shapes else []
    for limit in limits:
        if limit in ("reduce_spatial_axes_only", "not_batch_axis"):
            axes = op.constants.get("axes")
            if axes is None:
                continue
            rank = len(shape)
            axes = sorted({a % rank for a in axes}) if rank else axes
            if 0 in axes and rank > 1:
                reasons.append(f"{op.op} over the batch axis (axes {axes})")
            if limit == "reduce_spatial_axes_only" and rank >= 3 and (rank - 1) in axes:
                reasons.append(f"{op.op} over the channel axis (axes {axes}); only x/y reductions map")
        elif limit == "one_dimensional_max_16000":
            size = 1
            for d in shape:
                size *= d
            if sum(d > 1 for d in shape) > 1 or size > 16000:
                reasons.append(f"{op.op} input {shape}: only 1-D inputs of at most 16,000 elements map")
        elif limit == "pad_spatial_axes_only":
            paddings = op.constants.get("paddings")
            if paddings is not None and len(paddings) >= 2 and (any(paddings[:2]) or any(paddings[-2:])):
                reasons.append(f"{op.op} pads the batch or channel axis ({paddings})")
    return reasons


# ---------------------------------------------------------------- edgetpu_compiler


@dataclasses.dataclass
class CompilerReport:
    """What ``edgetpu_compiler`` said: version, op counts per status, output model."""

    version: str
    success: bool
    total_ops: int
    on_edgetpu: int
    on_cpu: int
    subgraphs: int
    operators: list
    output_model: str
    log: str = ""

    def __str__(self):
        lines = [f"  edgetpu_compiler {self.version}: {'compiled' if self.success else 'FAILED'}; "
                 f"{self.on_edgetpu}/{self.total_ops} ops on the Edge TPU, {self.on_cpu} on the CPU, "
                 f"{self.subgraphs} Edge TPU subgraph(s)"]
        for row in self.operators:
            lines.append(f"    {row['op']:<24} {row['count']:>4}  {row['status']}")
        return "\n".join(lines)


_PATTERNS = {
    "version": r"Edge TPU Compiler version\s+(\S+)",
    "total_ops": r"Total number of operations:\s*(\d+)",
    "on_edgetpu": r"Number of operations that will run on Edge TPU:\s*(\d+)",
    "on_cpu": r"Number of operations that will run on CPU:\s*(\d+)",
    "subgraphs": r"Number of Edge TPU subgraphs:\s*(\d+)",
    "output_model": r"Output model:\s*(\S+)",
}


def parse_compiler_log(text):
    """Parses ``edgetpu_compiler`` console output (or its ``.log``) into a :class:`CompilerReport`."""
    if not isinstance(text, str):
        raise TypeError(f"`text` must be the compiler's output as str; received {type(text).__name__}.")
    found = {key: (re.search(pattern, text) or [None, None])[1] for key, pattern in _PATTERNS.items()}
    operators = []
    in_table = False
    for line in text.splitlines():
        if re.match(r"\s*Operator\s+Count\s+Status", line):
            in_table = True
            continue
        if in_table:
            match = re.match(r"\s*([A-Z][A-Z0-9_]*)\s+(\d+)\s+(\S.*?)\s*$", line)
            if match:
                operators.append({"op": match[1], "count": int(match[2]), "status": match[3],
                                  "mapped": match[3].startswith("Mapped to Edge TPU")})
            elif line.strip() and operators:
                in_table = False
    total = int(found["total_ops"] or sum(row["count"] for row in operators))
    on_tpu = found["on_edgetpu"]
    if on_tpu is None:  # fully mapped models do not print the split
        on_tpu = sum(row["count"] for row in operators if row["mapped"]) if operators else total
    on_cpu = int(found["on_cpu"] or (total - int(on_tpu)))
    success = "compiled successfully" in text or "Model successfully compiled" in text
    return CompilerReport(
        version=found["version"] or "?", success=success, total_ops=total, on_edgetpu=int(on_tpu),
        on_cpu=on_cpu, subgraphs=int(found["subgraphs"] or 0), operators=operators,
        output_model=found["output_model"] or "", log=text,
    )


def run_edgetpu_compiler(path, *, output_dir=None, timeout=600):
    """Compiles ``path`` with ``edgetpu_compiler`` when it is on PATH; returns a report or None."""
    compiler = shutil.which("edgetpu_compiler")
    if compiler is None:
        return None
    output_dir = output_dir or os.path.dirname(os.path.abspath(path))
    result = subprocess.run([compiler, "-s", "-o", output_dir, os.fspath(path)], capture_output=True, text=True,
                            timeout=timeout, check=False)
    report = parse_compiler_log(result.stdout + result.stderr)
    report.success = report.success and result.returncode == 0
    return report

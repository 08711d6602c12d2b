"""Per-op latency of a ``.tflite`` graph on LiteRT: which op types cost time, on which kernels.

LiteRT's Python interpreter has no op profiler, so :func:`profile_tflite` cuts the graph into
one-op models (each node with its own constants and quantization parameters, its other inputs
made model inputs) and times each one with the same runtime and thread count as the whole
model. Nodes of identical configuration (op, shapes, dtypes, options, delegation in the full
graph) are timed once and counted as many times as they occur. Several files are timed
interleaved, one invocation each per round, so load from other processes hits all alike.

The sum over nodes leaves out what only the whole graph has (XNNPACK partition boundaries, a
builtin node between two delegated ones, cache reuse between neighbours);
``OpProfile.whole_model_ms`` is measured in the same rounds to show that gap.

Only the primary subgraph (the one ``invoke`` runs) is cut. A node whose one-op model cannot
run here — a control-flow op that calls other subgraphs, a custom op no kernel here provides,
an input that cannot be made up (strings, resources) — is listed in ``OpProfile.skipped`` with
the reason instead of stopping the profile.
"""

import dataclasses
import os
import time

import numpy as np

__all__ = ["OpProfile", "profile_tflite", "single_op_models"]


@dataclasses.dataclass
class OpProfile:
    """Timed nodes of one ``.tflite`` file.

    Attributes:
        path: the file. num_threads: interpreter threads. xnnpack: default delegate applied.
        entries: one dict per distinct node configuration: ``op``, ``dtype``, ``count``,
            ``ms`` (median of one node), ``min_ms`` (its fastest run: the best case, least
            disturbed by other processes), ``total_ms`` (``ms * count``), ``xnnpack`` (the
            one-op model was delegated), ``shapes`` (first input, first output).
        whole_model_ms: median latency of the whole file, timed in the same rounds.
        whole_model_min_ms: its fastest run.
        skipped: nodes not timed, one dict per configuration: ``op``, ``count``, ``reason``.
    """

    path: str
    num_threads: int
    xnnpack: bool
    entries: list
    whole_model_ms: float
    whole_model_min_ms: float = float("nan")
    skipped: list = dataclasses.field(default_factory=list)

    @property
    def total_ms(self):
        """Sum of the per-node medians over the whole graph."""
        return float(sum(entry["total_ms"] for entry in self.entries))

    @property
    def total_min_ms(self):
        """Sum of the per-node best cases over the whole graph."""
        return float(sum(entry["min_ms"] * entry["count"] for entry in self.entries))

    def by_type(self):
        """op type -> {"ms", "min_ms", "count", "xnnpack", "builtin", "share"} summed over nodes, slowest first."""
        table = {}
        for entry in self.entries:
            row = table.setdefault(entry["op"], {"ms": 0.0, "min_ms": 0.0, "count": 0, "xnnpack": 0, "builtin": 0})
            row["ms"] += entry["total_ms"]
            row["min_ms"] += entry["min_ms"] * entry["count"]
            row["count"] += entry["count"]
            row["xnnpack" if entry["xnnpack"] else "builtin"] += entry["count"]
        total = self.total_ms or 1.0
        for row in table.values():
            row["share"] = row["ms"] / total
        return dict(sorted(table.items(), key=lambda item: -item[1]["ms"]))

    def table(self):
        """The per-op-type table as text."""
        lines = [f"op profile: {os.path.basename(self.path)} threads={self.num_threads} "
                 f"xnnpack={self.xnnpack} sum_of_ops={self.total_ms:.1f} ms (best {self.total_min_ms:.1f}) "
                 f"whole_model={self.whole_model_ms:.1f} ms (best {self.whole_model_min_ms:.1f})",
                 "  op type                       ms  best_ms   share  count  xnnpack  builtin"]
        for op, row in self.by_type().items():
            lines.append(f"  {op:<26} {row['ms']:>7.2f}  {row['min_ms']:>7.2f}  {row['share']:>5.1%}  "
                         f"{row['count']:>5}  {row['xnnpack']:>7}  {row['builtin']:>7}")
        for skip in self.skipped:
            lines.append(f"  not timed: {skip['op']} x{skip['count']}: {skip['reason']}")
        return "\n".join(lines)

    def __str__(self):
        return self.table()


def _schema():
    try:
        from ai_edge_litert import schema_py_generated as schema
    except ImportError:
        from tensorflow.lite.python import schema_py_generated as schema
    return schema


def _pack(schema, model):
    import flatbuffers

    builder = flatbuffers.Builder(1024)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    return bytes(builder.Output())


def _options_key(options):
    if options is None:
        return None
    return tuple(sorted((key, value if np.isscalar(value) or value is None else repr(value))
                        for key, value in vars(options).items()))


def single_op_models(model_content):
    """Cuts a model into one-op models: yields ``(node index, key, bytes)``.

    Each one-op model holds the node, its constant inputs (weights, biases, axes) and the
    quantization of every tensor it touches; its non-constant inputs become model inputs.
    ``key`` identifies the node's configuration (op, tensor shapes and dtypes, options), for
    timing identical nodes once. Only the main subgraph is cut; a control-flow node (one that
    calls other subgraphs) yields ``None`` for its bytes.

    Args:
        model_content: bytes of a ``.tflite`` file.

    Raises:
        TFLiteFileError: when the bytes are not a well-formed TFLite flatbuffer.
    """
    import copy

    from keras_visrec.tflite.report import read_tflite

    structure = read_tflite(model_content)  # bounds-checked first: the generated reader trusts the file
    if not structure.subgraphs:
        return
    schema = _schema()
    model = schema.ModelT.InitFromObj(schema.Model.GetRootAs(bytearray(model_content), 0))
    graph = model.subgraphs[0]
    for index, op in enumerate(graph.operators):
        code = model.operatorCodes[op.opcodeIndex]
        opcode = max(int(code.builtinCode), int(code.deprecatedBuiltinCode))
        if structure.opcodes[op.opcodeIndex]["name"] in _CALLS_SUBGRAPHS:
            yield index, ("subgraph call", index), None
            continue
        used = []
        intermediates = list(op.intermediates) if op.intermediates is not None else []
        for tensor in list(op.inputs) + list(op.outputs) + intermediates:
            if tensor >= 0 and tensor not in used:
                used.append(tensor)
        remap = {old: new for new, old in enumerate(used)}
        buffers = [schema.BufferT()]
        tensors, inputs, key_tensors = [], [], []
        for old in used:
            tensor = copy.copy(graph.tensors[old])
            data = model.buffers[tensor.buffer].data if tensor.buffer < len(model.buffers) else None
            constant = data is not None and len(data) > 0
            if constant:
                buffers.append(schema.BufferT(data=data))
                tensor.buffer = len(buffers) - 1
            else:
                tensor.buffer = 0
                if old in op.inputs:
                    inputs.append(remap[old])
            tensors.append(tensor)
            shape = tuple(int(d) for d in (tensor.shape if tensor.shape is not None else []))
            key_tensors.append((shape, int(tensor.type), constant))
        node = copy.copy(op)
        node.inputs = [remap[t] if t >= 0 else -1 for t in op.inputs]
        node.outputs = [remap[t] for t in op.outputs]
        if op.intermediates is not None:
            node.intermediates = [remap[t] for t in op.intermediates]
        sub = schema.SubGraphT(tensors=tensors, inputs=inputs, outputs=list(node.outputs), operators=[node],
                               name="single_op")
        single = schema.ModelT(version=model.version or 3, operatorCodes=model.operatorCodes, subgraphs=[sub],
                               description="single op", buffers=buffers)
        custom = bytes(code.customCode or b"") if opcode == 32 else b""
        options = bytes(op.customOptions) if op.customOptions is not None else b""
        key = (opcode, custom, options, tuple(key_tensors), int(op.builtinOptionsType), _options_key(op.builtinOptions))
        yield index, key, _pack(schema, single)


# ops that run other subgraphs: a one-op cut without them cannot run
_CALLS_SUBGRAPHS = {"WHILE", "IF", "CALL", "CALL_ONCE", "STABLEHLO_WHILE", "STABLEHLO_CASE", "STABLEHLO_REDUCE",
                    "STABLEHLO_REDUCE_WINDOW", "STABLEHLO_SCATTER", "STABLEHLO_SORT", "STABLEHLO_COMPOSITE"}


def _random_inputs(interpreter, rng):
    from keras_visrec.tflite.runtime import random_input

    for detail in interpreter.get_input_details():
        dtype = np.dtype(detail["dtype"])
        shape = detail["shape"]
        if np.issubdtype(dtype, np.floating):
            value = rng.standard_normal(shape).astype(dtype)
        else:
            value = random_input(dtype, shape, rng)
        interpreter.set_tensor(detail["index"], value)


def _is_delegated(interpreter):
    return any(d["op_name"] == "DELEGATE" for d in interpreter._get_ops_details())


def _load(content, num_threads, xnnpack):
    from keras_visrec.tflite.report import _interpreter_class, _resolver_types

    kwargs = {"model_content": content, "num_threads": num_threads}
    if not xnnpack:
        kwargs.update(_resolver_types().get("plain", {}))
    interpreter = _interpreter_class()(**kwargs)
    interpreter.allocate_tensors()
    return interpreter


def _plan(path, num_threads, xnnpack, rng):
    """Loads one file: its whole-model interpreter and one interpreter per distinct node configuration."""
    from keras_visrec.tflite.report import read_ops, read_tflite

    if not os.path.isfile(os.fspath(path)):
        raise FileNotFoundError(f"TFLite model file not found: {os.fspath(path)!r}.")
    with open(path, "rb") as handle:
        content = handle.read()
    read_tflite(content, path=os.fspath(path))  # a malformed file: TFLiteFileError before any runtime sees it
    try:
        whole = _load(content, num_threads, xnnpack)
        _random_inputs(whole, rng)
    except (RuntimeError, ValueError, TypeError) as error:
        raise RuntimeError(f"Could not prepare {os.fspath(path)!r} for profiling: {error}") from error
    names = {op.index: op for op in read_ops(content, with_xnnpack=xnnpack) if op.subgraph == 0}
    configs, skipped = {}, {}
    for index, key, single in single_op_models(content):
        op = names[index]
        key = key + (op.xnnpack,)
        if key in configs:
            configs[key]["count"] += 1
            continue
        if key in skipped:
            skipped[key]["count"] += 1
            continue
        reason = "calls other subgraphs (control flow)" if single is None else None
        if reason is None:
            try:
                interpreter = _load(single, num_threads, xnnpack)
                _random_inputs(interpreter, rng)
            except (RuntimeError, ValueError, TypeError) as error:
                reason = str(error).strip().splitlines()[0][:200]
        if reason is not None:
            skipped[key] = {"op": op.op, "count": 1, "reason": reason}
            continue
        configs[key] = {"op": op.op, "dtype": op.dtype, "count": 1, "interpreter": interpreter,
                        "xnnpack": _is_delegated(interpreter), "shapes": op.input_shapes[:1] + op.output_shapes[:1],
                        "times": []}
    return {"configs": list(configs.values()), "whole": whole, "whole_times": [], "skipped": list(skipped.values())}


def profile_tflite(paths, *, num_threads=2, rounds=10, warmup=2, xnnpack=True, progress=False):
    """Times every node of one or several ``.tflite`` files (see the module docstring).

    Args:
        paths: str / path-like, or a dict ``name -> path`` to time several files interleaved.
        num_threads: int. Interpreter threads. Defaults to `2`.
        rounds: int. Timed invocations per node. Defaults to `10`.
        warmup: int. Untimed invocations first. Defaults to `2`.
        xnnpack: bool. Apply the default XNNPACK delegate. Defaults to `True`.
        progress: bool. Show a progress bar over rounds. Defaults to `False`.

    Returns:
        An :class:`OpProfile`, or a dict ``name -> OpProfile`` when `paths` is a dict.

    Examples:

    >>> profile = keras_visrec.tflite.profile_tflite("model_int8.tflite", num_threads=2)
    >>> print(profile.table())
    """
    if not isinstance(num_threads, int) or num_threads < 1:
        raise ValueError(f"`num_threads` must be a positive int; received num_threads={num_threads!r}.")
    if not isinstance(rounds, int) or rounds < 1 or not isinstance(warmup, int) or warmup < 0:
        raise ValueError(f"`rounds` must be an int >= 1 and `warmup` an int >= 0; received rounds={rounds!r}, "
                         f"warmup={warmup!r}.")
    single = not isinstance(paths, dict)
    if single and not isinstance(paths, (str, os.PathLike)):
        raise TypeError(f"`paths` must be a path or a dict name -> path; received {type(paths).__name__}.")
    files = {"model": paths} if single else dict(paths)
    rng = np.random.default_rng(0)
    plans = {name: _plan(path, num_threads, xnnpack, rng) for name, path in files.items()}
    steps = range(warmup + rounds)
    if progress:
        from tqdm.auto import tqdm

        steps = tqdm(steps, desc="profiling ops", unit="round")
    for step in steps:
        for plan in plans.values():
            for config in plan["configs"]:
                config["times"].append(_timed(config["interpreter"]))
            plan["whole_times"].append(_timed(plan["whole"]))
    profiles = {}
    for name, plan in plans.items():
        entries = []
        for config in plan["configs"]:
            times = config["times"][warmup:]
            ms = float(np.median(times))
            entries.append({"op": config["op"], "dtype": config["dtype"], "count": config["count"], "ms": ms,
                            "min_ms": float(np.min(times)), "total_ms": ms * config["count"],
                            "xnnpack": config["xnnpack"], "shapes": config["shapes"]})
        whole = plan["whole_times"][warmup:]
        profiles[name] = OpProfile(os.fspath(files[name]), num_threads, bool(xnnpack), entries,
                                   float(np.median(whole)), float(np.min(whole)), skipped=plan["skipped"])
    return profiles["model"] if single else profiles


def _timed(interpreter):
    start = time.perf_counter()
    interpreter.invoke()
    return (time.perf_counter() - start) * 1000.0

"""Run ``.tflite`` models: one runner over LiteRT, ``tflite_runtime`` or ``tf.lite``, Edge TPU included.

Backends are tried in order: ``ai_edge_litert`` (LiteRT, the maintained runtime), then
``tflite_runtime`` (what Coral boards ship), then TensorFlow's ``tf.lite``. The runner hides
quantization: ``predict`` takes float images and returns float outputs, applying the input and
output scales and zero points of int8 / uint8 models.
"""

import importlib
import os
import platform
import time
import warnings

import numpy as np

__all__ = ["BACKENDS", "TFLiteRunner", "edgetpu_library_name", "interpreter_backend", "load_tflite", "random_input"]

BACKENDS = ("ai_edge_litert", "tflite_runtime", "tensorflow")
_MODULES = {
    "ai_edge_litert": "ai_edge_litert.interpreter",
    "tflite_runtime": "tflite_runtime.interpreter",
    "tensorflow": "tensorflow.lite.python.interpreter",
}


def interpreter_backend(preferred=None):
    """Returns ``(backend_name, Interpreter class, load_delegate function)`` of the first usable backend.

    Args:
        preferred: str or None. One of `BACKENDS` to use only that backend. Defaults to `None`.
    """
    if preferred is not None and preferred not in BACKENDS:
        raise ValueError(f"`backend` must be one of {BACKENDS} or None; received backend={preferred!r}.")
    errors = []
    for name in (preferred,) if preferred else BACKENDS:
        try:
            module = importlib.import_module(_MODULES[name])
        except Exception as error:  # tflite_runtime 2.14 raises AttributeError/ImportError under numpy 2
            errors.append(f"{name}: {type(error).__name__}: {error}")
            continue
        return name, module.Interpreter, module.load_delegate
    raise ImportError(
        "No TFLite interpreter is usable. Install one of: `pip install ai-edge-litert` (recommended), "
        "`pip install tflite-runtime` (Coral boards), or `pip install tensorflow`. Tried: " + "; ".join(errors)
    )


def edgetpu_library_name():
    """The Edge TPU runtime library for this OS (``libedgetpu.so.1`` on Linux)."""
    return {"Darwin": "libedgetpu.1.dylib", "Windows": "edgetpu.dll"}.get(platform.system(), "libedgetpu.so.1")


class TFLiteRunner:
    """A loaded ``.tflite`` model. Build it with :func:`load_tflite`.

    Attributes:
        path: the model file. backend: the interpreter package used. edgetpu: delegate loaded.
        xnnpack: whether the default XNNPACK delegate is in use (False after a fallback).
        input_details, output_details: LiteRT's tensor details (default signature).
        signatures: names of the model's signatures (may be empty for signature-less files).
    """

    def __init__(self, path, interpreter, backend, *, edgetpu=False, num_threads=None, xnnpack=True):
        self.path = path
        self.interpreter = interpreter
        self.backend = backend
        self.edgetpu = edgetpu
        self.num_threads = num_threads
        self.xnnpack = xnnpack
        try:
            self.signatures = sorted(interpreter.get_signature_list())
        except (AttributeError, ValueError):
            self.signatures = []

    @property
    def input_details(self):
        """LiteRT's input details, read fresh (a signature call or a dynamic input may have resized them)."""
        return self.interpreter.get_input_details()

    @property
    def output_details(self):
        return self.interpreter.get_output_details()

    @property
    def input_shape(self):
        return tuple(int(d) for d in self.input_details[0]["shape"])

    def __repr__(self):
        return (f"TFLiteRunner({self.path!r}, backend={self.backend}, input={self.input_shape} "
                f"{np.dtype(self.input_details[0]['dtype']).name}, edgetpu={self.edgetpu})")

    def predict(self, x, *, signature=None):
        """Runs the model on float inputs; returns float outputs (dequantized when needed).

        Args:
            x: array-like of shape `(N, *input_shape[1:])` or one unbatched sample; 0–255 images
                for zoo models. Batches larger than the model's static batch run in chunks.
            signature: str or None. A signature name from `signatures` to run instead of the
                default input/output tensors. Defaults to `None`.

        Returns:
            A float32 numpy array (or a dict of arrays for a signature with several outputs).
        """
        if signature is not None:
            return self._predict_signature(x, signature)
        detail = self.input_details[0]
        x = self._as_batch(x, detail, "x")
        detail = self._fit_dynamic(detail, x)
        batch = int(detail["shape"][0])
        outputs = self.output_details
        chunks = []
        for start in range(0, len(x), batch):
            part = x[start:start + batch]
            real = len(part)
            if real < batch:
                part = np.concatenate([part, np.repeat(part[-1:], batch - real, axis=0)])
            self.interpreter.set_tensor(detail["index"], _quantize(part, detail))
            self.interpreter.invoke()
            outs = [_dequantize(self.interpreter.get_tensor(d["index"]), d) for d in outputs]
            chunks.append([o[:real] for o in outs])
        results = [np.concatenate([c[i] for c in chunks]) for i in range(len(outputs))]
        return results[0] if len(results) == 1 else results

    def _as_batch(self, x, detail, name):
        """``x`` as a float32 batch whose dimensions fit the input (dynamic ones, -1, fit any size)."""
        shape = tuple(int(d) for d in detail["shape"])
        signature = tuple(int(d) for d in detail.get("shape_signature", shape)) or shape
        x = np.asarray(x)
        if x.ndim == len(shape) - 1:
            x = x[None]
        if x.ndim != len(shape) or any(want not in (-1, got) for want, got in zip(signature[1:], x.shape[1:])):
            wanted = ", ".join("?" if d == -1 else str(d) for d in signature[1:])
            raise ValueError(f"`{name}` must have shape (N, {wanted}) for "
                             f"{os.path.basename(self.path)}; received shape {x.shape}.")
        if not np.issubdtype(x.dtype, np.number):
            raise TypeError(f"`{name}` must be numeric; received dtype {x.dtype}.")
        return x.astype("float32")

    def _fit_dynamic(self, detail, x):
        """Resizes a dynamic input (-1 in its shape signature) to ``x``'s shape; returns the fresh detail."""
        signature = [int(d) for d in detail.get("shape_signature", [])]
        if -1 not in signature or tuple(detail["shape"]) == tuple(x.shape):
            return detail
        self.interpreter.resize_tensor_input(detail["index"], list(x.shape))
        self.interpreter.allocate_tensors()
        return next(d for d in self.input_details if d["index"] == detail["index"])

    def _predict_signature(self, x, signature):
        if signature not in self.signatures:
            raise ValueError(f"`signature` must be one of {self.signatures}; received signature={signature!r}.")
        runner = self.interpreter.get_signature_runner(signature)
        inputs = runner.get_input_details()
        outputs = runner.get_output_details()
        if not isinstance(x, dict):
            if len(inputs) != 1:
                raise ValueError(f"Signature {signature!r} takes inputs {sorted(inputs)}; pass a dict.")
            x = {next(iter(inputs)): x}
        feeds = {}
        for name, detail in inputs.items():
            if name not in x:
                raise ValueError(f"Signature {signature!r} needs input {name!r}; received {sorted(x)}.")
            feeds[name] = _quantize(self._as_batch(x[name], detail, name), detail)
        result = runner(**feeds)
        result = {name: _dequantize(value, outputs[name]) for name, value in result.items()}
        return next(iter(result.values())) if len(result) == 1 else result

    def benchmark(self, x=None, *, warmup=3, runs=30):
        """Times single invocations; returns latency statistics in milliseconds.

        Args:
            x: optional input batch for a single-input model; `None` fills every input with
                random values of its shape and dtype (0–255 for float and 8-bit inputs).
            warmup: int. Untimed runs first. Defaults to `3`.
            runs: int. Timed runs. Defaults to `30`.

        Returns:
            dict with `mean_ms`, `p50_ms`, `p90_ms`, `p99_ms`, `min_ms`, `runs`, `backend`, `num_threads`.
        """
        if not isinstance(runs, int) or runs < 1 or not isinstance(warmup, int) or warmup < 0:
            raise ValueError(f"`runs` must be an int >= 1 and `warmup` an int >= 0; received runs={runs!r}, "
                             f"warmup={warmup!r}.")
        if x is None:
            rng = np.random.default_rng(0)
            for detail in self.input_details:
                self.interpreter.set_tensor(detail["index"], random_input(detail["dtype"], detail["shape"], rng))
        else:
            if len(self.input_details) != 1:
                raise ValueError(f"{os.path.basename(self.path)} has {len(self.input_details)} inputs; pass x=None "
                                 "to benchmark it on random inputs.")
            detail = self.input_details[0]
            x = self._as_batch(x, detail, "x")
            if -1 in [int(d) for d in detail.get("shape_signature", [])]:
                detail = self._fit_dynamic(detail, x)
            else:
                x = x[: int(detail["shape"][0])]
            self.interpreter.set_tensor(detail["index"], _quantize(x, detail))
        for _ in range(warmup):
            self.interpreter.invoke()
        times = []
        for _ in range(runs):
            start = time.perf_counter()
            self.interpreter.invoke()
            times.append((time.perf_counter() - start) * 1000.0)
        times = np.asarray(times)
        return {
            "mean_ms": float(times.mean()), "p50_ms": float(np.percentile(times, 50)),
            "p90_ms": float(np.percentile(times, 90)), "p99_ms": float(np.percentile(times, 99)),
            "min_ms": float(times.min()), "runs": runs, "backend": self.backend,
            "num_threads": self.num_threads,
        }


def random_input(dtype, shape, rng):
    """Random values of ``dtype`` and ``shape`` for timing: 0–255 for floats and 8-bit types, bools, ints."""
    dtype = np.dtype(dtype)
    shape = [int(d) for d in shape]
    if np.issubdtype(dtype, np.floating) or np.issubdtype(dtype, np.complexfloating):
        return rng.uniform(0, 255, shape).astype(dtype)
    if dtype == np.bool_:
        return rng.integers(0, 2, shape).astype(bool)
    if np.issubdtype(dtype, np.integer):
        info = np.iinfo(dtype)
        return rng.integers(max(info.min, -128), min(info.max, 255) + 1, shape).astype(dtype)
    raise TypeError(f"cannot make random input of dtype {dtype} (string / resource inputs need real data).")


def _quantize(x, detail):
    dtype = np.dtype(detail["dtype"])
    if dtype == np.float32:
        return x.astype("float32")
    scale, zero = detail["quantization"]
    if not scale:
        return x.astype(dtype)
    info = np.iinfo(dtype)
    return np.clip(np.round(x / scale + zero), info.min, info.max).astype(dtype)


def _dequantize(y, detail):
    dtype = np.dtype(detail["dtype"])
    if dtype == np.float32:
        return np.array(y, "float32")
    scale, zero = detail["quantization"]
    if not scale:
        return np.array(y)
    return ((np.asarray(y, "float32") - zero) * scale).astype("float32")


def load_tflite(path, *, num_threads=None, edgetpu=False, backend=None, xnnpack=True):
    """Loads a ``.tflite`` file into a :class:`TFLiteRunner`.

    Args:
        path: str or path-like. The model file (for the Edge TPU, the ``*_edgetpu.tflite`` the
            compiler wrote).
        num_threads: int or None. CPU threads for the interpreter (None: the backend's default).
        edgetpu: bool. Load the Edge TPU delegate (``libedgetpu.so.1``). Defaults to `False`.
        backend: str or None. Force one of `BACKENDS`. Defaults to the first installed.
        xnnpack: bool. Apply LiteRT's default XNNPACK delegate (False: builtin kernels only).
            Defaults to `True`.

    Returns:
        A :class:`TFLiteRunner` with `predict(x)` and `benchmark()`.

    Raises:
        FileNotFoundError: no such file. TFLiteFileError (a ValueError): not a well-formed
            TFLite flatbuffer. RuntimeError: the runtime cannot prepare the graph (the message
            names custom ops no kernel here provides).

    Examples:

    >>> runner = keras_visrec.load_tflite("model_int8.tflite", num_threads=2)
    >>> probabilities = runner.predict(images)
    >>> runner.benchmark()["p50_ms"]
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"TFLite model file not found: {path!r}.")
    if num_threads is not None and (not isinstance(num_threads, int) or num_threads < 1):
        raise ValueError(f"`num_threads` must be a positive int or None; received num_threads={num_threads!r}.")
    name, interpreter_cls, load_delegate = interpreter_backend(backend)
    _check_structure(path)
    delegates = []
    if edgetpu:
        library = edgetpu_library_name()
        try:
            delegates.append(load_delegate(library))
        except (ValueError, OSError, RuntimeError) as error:
            raise RuntimeError(
                f"Could not load the Edge TPU delegate {library!r} ({error}). Install the Edge TPU runtime "
                "(Debian: `apt-get install libedgetpu1-std` from Coral's package repository) and plug in the "
                "device; the model must be compiled with `edgetpu_compiler`."
            ) from error
    kwargs = {"model_path": path, "num_threads": num_threads}
    if delegates:
        kwargs["experimental_delegates"] = delegates
    if not xnnpack:
        plain = _without_default_delegates(name)
        if plain is not None:
            kwargs["experimental_op_resolver_type"] = plain
    try:
        interpreter = interpreter_cls(**kwargs)
        interpreter.allocate_tensors()
        xnnpack = True
    except ValueError as error:
        raise ValueError(f"Could not load TFLite model {path!r}: {error}") from error
    except RuntimeError as error:
        # XNNPACK refuses some graphs at prepare time (e.g. extreme requantization scales):
        # run on the builtin kernels instead of failing.
        plain = _without_default_delegates(name)
        if delegates or not xnnpack or "XNNPACK" not in str(error) or plain is None:
            raise RuntimeError(f"Could not prepare TFLite model {path!r}: {error}{_custom_op_hint(path, xnnpack)}") \
                from error
        warnings.warn(f"XNNPACK could not take {os.path.basename(path)} ({error}); running on builtin kernels.",
                      RuntimeWarning, stacklevel=2)
        interpreter = interpreter_cls(**kwargs, experimental_op_resolver_type=plain)
        interpreter.allocate_tensors()
        xnnpack = False
    return TFLiteRunner(path, interpreter, name, edgetpu=bool(edgetpu), num_threads=num_threads,
                        xnnpack=bool(xnnpack) and not delegates and "experimental_op_resolver_type" not in kwargs)


def _check_structure(path):
    """Reads the file's flatbuffer with bounds checks first: a malformed file is a clear error, not a runtime crash."""
    from keras_visrec.tflite.flatbuffer import read_tflite

    with open(path, "rb") as handle:
        read_tflite(handle.read(), path=path)


def _custom_op_hint(path, xnnpack):
    """What the file's custom ops need, read from the file itself (empty when it has none)."""
    from keras_visrec.tflite.edgetpu import custom_op_support
    from keras_visrec.tflite.flatbuffer import TFLiteFileError, read_tflite

    try:
        with open(path, "rb") as handle:
            names = read_tflite(handle.read(), path=path).custom_ops
    except (OSError, TFLiteFileError):
        return ""
    if not names:
        return ""
    parts = []
    for name in names:
        support = custom_op_support(name)
        if support["xnnpack"] and not xnnpack:
            parts.append(f"{name} runs only through XNNPACK: load with xnnpack=True")
        elif support["edgetpu"]:
            parts.append(f"{name} runs only on the Edge TPU: load with edgetpu=True")
        elif not (support["builtin"] or support["xnnpack"]):
            parts.append(f"{name} ({support['origin']})")
    return (" Custom ops in the file: " + "; ".join(parts) + ".") if parts else ""


def _without_default_delegates(backend):
    module = importlib.import_module(_MODULES[backend])
    resolver = getattr(module, "OpResolverType", None)
    return None if resolver is None else resolver.BUILTIN_WITHOUT_DEFAULT_DELEGATES

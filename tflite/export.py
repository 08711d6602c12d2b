"""``export_tflite``: one call from a Keras model to a ``.tflite`` file phones and Coral run well.

The one TFLite conversion path of keras_visrec: every family's graph (ConvNeXt, the CIFAR nets,
HRNet, UperNet), a pruned model's sparse tensors (``sparse=True``) and ADP-C's one signature
per exit (``signatures=``) are converted here and return an :class:`ExportReport`. A functional
model is rewritten by :mod:`keras_visrec.tflite.prepare` (static batch 1, 1×1 ``CONV_2D``
pointwise layers, exact folds, target-specific LayerNorm / GELU / depthwise forms), converted,
checked (XNNPACK coverage, Edge TPU op table, agreement with Keras through
:func:`~keras_visrec.tflite.runtime.load_tflite`) and written atomically.

TensorFlow-only: the TFLite converter traces TensorFlow graphs, so on the JAX or PyTorch Keras
backend :func:`export_tflite` raises one error saying so (train there, export under
``KERAS_BACKEND=tensorflow`` from the saved ``.keras`` file).
"""

import os
import tempfile
import warnings

import numpy as np

from keras_visrec.files import write_atomic
from keras_visrec.tflite.report import analyze_tflite

__all__ = ["IO_DTYPES", "QUANTIZATIONS", "TARGETS", "export_tflite", "require_tensorflow_backend"]

QUANTIZATIONS = ("fp32", "fp16", "dynamic", "int8")
TARGETS = ("cpu", "gpu", "edgetpu")
IO_DTYPES = (None, "float32", "int8", "uint8")


def require_tensorflow_backend(what="TFLite export"):
    """Raises a RuntimeError naming the backend unless Keras runs on TensorFlow."""
    import keras

    backend = keras.backend.backend()
    if backend != "tensorflow":
        raise RuntimeError(
            f"{what} needs the TensorFlow Keras backend (the TFLite converter traces TensorFlow graphs); this "
            f"process runs Keras on {backend!r}. Save the model (model.save('m.keras')) and export it in a process "
            "started with KERAS_BACKEND=tensorflow."
        )


def export_tflite(
    model,
    path,
    *,
    signatures=None,
    quantization="fp32",
    representative_data=None,
    target="cpu",
    io_dtype=None,
    calibration_samples=200,
    validation_data=None,
    sparse=False,
    layernorm="auto",
    gelu="auto",
    depthwise="auto",
    float_islands="auto",
    patchify="auto",
    compile_edgetpu=True,
    verbose=False,
):
    """Exports a Keras image model (or several signatures over its weights) to TFLite.

    Args:
        model: a functional `keras.Model` with one image input of static height and width (zoo
            models take 0–255 RGB and normalise inside; that normalisation is folded into the stem).
            With `signatures`: the model (or any trackable) owning the variables they use.
        path: str or path-like. The `.tflite` file to write (its folder must exist).
        signatures: dict or None. ``{name: tf.function with an input_signature}`` to export as
            they are, one TFLite signature each over one set of weights (ADP-C's ``exit1`` …
            ``exit4``); no graph preparation. Defaults to `None` (the model's own graph, prepared).
        quantization: str. `"fp32"`, `"fp16"` (float16 weights), `"dynamic"` (int8 weights,
            float activations) or `"int8"` (full integer, needs `representative_data`; one
            signature only). Defaults to `"fp32"`.
        representative_data: real input images for int8 calibration: a numpy array
            `(N, H, W, C)`, a `tf.data.Dataset` or an iterable / generator yielding images, image
            batches or `(images, labels)` tuples. Also used to measure agreement with Keras.
        target: str. `"cpu"` (LiteRT + XNNPACK), `"gpu"` (LiteRT GPU delegate) or `"edgetpu"`
            (Coral; needs `quantization="int8"`). Defaults to `"cpu"`.
        io_dtype: str or None. Input/output type of int8 models: `"float32"`, `"int8"` or
            `"uint8"`. Defaults to float32 on CPU/GPU and uint8 on the Edge TPU.
        calibration_samples: int. How many representative images calibrate int8. Defaults to `200`.
        validation_data: optional images `(N, H, W, C)` to compare TFLite with Keras on
            (defaults to up to 32 representative images, else 4 random images). With
            `signatures`: ``{signature: {input name: array}}`` (defaults to 2 standard-normal
            samples per input).
        sparse: bool. Store weight tensors with zeros sparsely (the converter's
            ``Optimize.EXPERIMENTAL_SPARSITY``), for magnitude-pruned models. Defaults to `False`.
        layernorm, gelu, depthwise: str. Graph forms (see `keras_visrec.tflite.prepare`);
            `"auto"` picks per target and quantization. Default `"auto"`.
        float_islands: bool or `"auto"`. For int8 on CPU, keep LayerNorm's per-pixel
            `variance + eps` and `RSQRT` in float (an island XNNPACK runs; neither has an
            XNNPACK int8 kernel). `"auto"`: on for `quantization="int8"` with `target="cpu"`,
            off otherwise; the Edge TPU needs every op in 8 bits. Defaults to `"auto"`.
        patchify: bool or `"auto"`. Emit k×k stride-k convs (ConvNeXt's stem and downsampling)
            as `SPACE_TO_DEPTH` + 1×1 conv: the same math, and XNNPACK's int8 conv over
            3-channel pixels is 2× slower than fp32 while the 1×1 form beats it. `"auto"`: on
            for `target="cpu"`. Defaults to `"auto"`.
        compile_edgetpu: bool. Run `edgetpu_compiler` when it is on PATH (target edgetpu).
            Defaults to `True`.
        verbose: bool. Print the report. Defaults to `False`.

    Returns:
        An `ExportReport` (`print(report)`, `report.to_json()`): size, op histogram, XNNPACK
        coverage per op type, agreement with Keras, folds, Edge TPU compatibility. With
        `signatures`, ``report.agreement["signatures"]`` holds the agreement of each one.

    Raises:
        RuntimeError: Keras runs on another backend than TensorFlow.

    Examples:

    >>> model = keras_visrec.ConvNeXtAtto(input_shape=(224, 224, 3))
    >>> report = keras_visrec.export_tflite(model, "atto_int8.tflite", quantization="int8",
    ...                                     representative_data=images)
    >>> print(report)
    """
    require_tensorflow_backend()
    quantization, target, io_dtype, path = _validate(quantization, target, io_dtype, path, calibration_samples)
    if not isinstance(sparse, bool):
        raise ValueError(f"`sparse` must be True or False; received sparse={sparse!r}.")
    if signatures is not None:
        forms = dict(layernorm=layernorm, gelu=gelu, depthwise=depthwise, float_islands=float_islands,
                     patchify=patchify)
        return _export_signatures(model, path, signatures, quantization=quantization, target=target,
                                  representative_data=representative_data, validation_data=validation_data,
                                  sparse=sparse, forms=forms, verbose=verbose)
    from keras_visrec.tflite.prepare import prepare_graph, resolve_forms

    layernorm, gelu, depthwise = resolve_forms(target, quantization, layernorm, gelu, depthwise)
    islands = _resolve_islands(float_islands, quantization, target)
    if patchify not in ("auto", True, False):
        raise ValueError(f"`patchify` must be True, False or 'auto'; received patchify={patchify!r}.")
    patchify = target == "cpu" if patchify == "auto" else patchify
    prepared = prepare_graph(model, layernorm=layernorm, gelu=gelu, depthwise=depthwise, float_islands=islands,
                             patchify=patchify)
    sample_shape = prepared.input_shape[1:]
    integer = quantization == "int8"
    calibration = None
    if representative_data is not None:
        calibration = _collect_samples(representative_data, sample_shape, calibration_samples)
    if integer and calibration is None:
        raise ValueError(
            "`quantization='int8'` needs `representative_data`: real input images (numpy array, tf.data.Dataset "
            "or generator) to calibrate activation ranges; received representative_data=None."
        )
    if validation_data is not None:
        validation = _collect_samples(validation_data, sample_shape, None, name="validation_data")
    elif calibration is not None:
        validation = calibration[:32]
    else:
        validation = np.random.default_rng(0).uniform(0, 255, (4,) + sample_shape).astype("float32")

    converter = _converter_from_function(prepared.function)
    content = _convert(converter, quantization, target, io_dtype, calibration, verbose,
                       float_nodes=prepared.float_nodes, sparse=sparse, unruled=prepared.unruled)
    report = analyze_tflite(path, quantization=quantization, target=target, model_content=content)
    report.folds = list(prepared.folds)
    report.lowered = dict(prepared.lowered)
    report.lowered["forms"] = (f"layernorm={layernorm}, gelu={gelu}, depthwise={depthwise}, "
                               f"float_islands={islands}, patchify={patchify}, sparse={sparse}")
    report.precision = _precision_notes(report, quantization)
    if sparse:
        report.precision.append(_sparsity_note(model))
    if prepared.unruled:
        report.problems.append(_unruled_note(prepared.unruled))
    islands_kept = [op for op in report.ops if op.op == "RSQRT" and op.dtype == "float32"]
    if prepared.float_nodes and islands_kept:
        _note_float_islands(report, len(islands_kept))
    if target == "edgetpu":
        from keras_visrec.tflite.edgetpu import check_edgetpu

        floating = sorted({op.op for op in report.ops
                           if any(d.startswith("float") for d in op.input_dtypes + op.output_dtypes)})
        if floating:
            raise ValueError(
                "The model cannot be fully integer-quantized for the Edge TPU: these ops kept float tensors "
                f"(no int8 kernel): {', '.join(floating)}. Replace the layers that produce them, or export for "
                "target='cpu'."
            )
        report.edgetpu = check_edgetpu(report.ops)
    write_atomic(path, content)
    report.agreement = _agreement(model, path, validation, xnnpack=not report.xnnpack_refused)
    if target == "edgetpu" and compile_edgetpu:
        from keras_visrec.tflite.edgetpu import run_edgetpu_compiler

        report.compiler = run_edgetpu_compiler(path)
    if verbose:
        print(report)
    return report


def _export_signatures(trackable, path, signatures, *, quantization, target, representative_data, validation_data,
                       sparse, forms, verbose):
    """Several ``tf.function``s over one set of weights, one TFLite signature each (no preparation)."""
    if not isinstance(signatures, dict) or not signatures:
        raise TypeError(f"`signatures` must be a non-empty dict {{name: tf.function}}; received {signatures!r}.")
    for name, function in signatures.items():
        if not isinstance(name, str) or not name.isidentifier():
            raise ValueError(f"Signature names must be identifiers; received {name!r}.")
        if getattr(function, "input_signature", None) is None or not hasattr(function, "python_function"):
            raise TypeError(f"Signature {name!r} must be a tf.function with an input_signature; received "
                            f"{type(function).__name__}.")
    chosen = {key: value for key, value in forms.items() if value != "auto"}
    if chosen:
        raise ValueError(f"Graph forms {sorted(chosen)} apply to a prepared model graph; `signatures` are exported "
                         "as written. Leave them at 'auto'.")
    if quantization == "int8" or target == "edgetpu":
        raise ValueError("A multi-signature export supports quantization 'fp32', 'fp16' and 'dynamic' on CPU/GPU: "
                         "int8 calibration would need samples for every signature's inputs (e.g. features saved "
                         f"by the previous one); received quantization={quantization!r}, target={target!r}.")
    if representative_data is not None:
        raise ValueError("`representative_data` calibrates int8, which a multi-signature export does not support.")
    validation = _signature_feeds(signatures, validation_data)
    import keras

    with tempfile.TemporaryDirectory(prefix="keras_visrec_tflite_") as workdir:
        archive = keras.export.ExportArchive()
        archive.track(trackable)
        for name, function in signatures.items():
            archive.add_endpoint(name, function.python_function, input_signature=function.input_signature)
        archive.write_out(workdir, verbose=False)
        converter = _converter_from_saved_model(workdir, list(signatures))
        content = _convert(converter, quantization, target, "float32", None, verbose, sparse=sparse)
    report = analyze_tflite(path, quantization=quantization, target=target, model_content=content)
    report.lowered = {"forms": f"signatures={', '.join(signatures)} (exported as written), sparse={sparse}"}
    report.precision = _precision_notes(report, quantization)
    if sparse:
        report.precision.append(_sparsity_note(trackable))
    write_atomic(path, content)
    report.agreement = _signature_agreement(signatures, path, validation)
    if verbose:
        print(report)
    return report


def _signature_feeds(signatures, validation_data):
    """``{signature: {input name: float32 array}}``: the given samples, else 2 standard-normal ones."""
    if validation_data is not None and not isinstance(validation_data, dict):
        raise TypeError("With `signatures`, `validation_data` must be {signature: {input name: array}}; received "
                        f"{type(validation_data).__name__}.")
    rng = np.random.default_rng(0)
    feeds = {}
    for name, function in signatures.items():
        given = None if validation_data is None else validation_data.get(name)
        inputs = {}
        for spec in function.input_signature:
            shape = tuple(int(d) for d in spec.shape)
            if given is not None:
                if spec.name not in given:
                    raise ValueError(f"`validation_data[{name!r}]` needs input {spec.name!r}; received {sorted(given)}.")
                inputs[spec.name] = np.asarray(given[spec.name], "float32")
            else:
                inputs[spec.name] = rng.standard_normal((2,) + shape[1:]).astype("float32")
        feeds[name] = inputs
    return feeds


def _signature_agreement(signatures, path, feeds):
    """Runs every signature in TensorFlow and in the written file on the same inputs."""
    from keras_visrec.tflite.runtime import load_tflite

    runner = load_tflite(path, num_threads=2)
    result, worst = {}, 0.0
    for name, function in signatures.items():
        inputs = feeds[name]
        count = len(next(iter(inputs.values())))
        diffs = []
        for index in range(count):
            sample = {key: value[index:index + 1] for key, value in inputs.items()}
            args = [sample[spec.name] for spec in function.input_signature]
            expected = _named_outputs(function(*args))
            got = runner.predict(sample, signature=name)
            got = got if isinstance(got, dict) else {next(iter(expected)): got}
            diffs += [float(np.abs(np.asarray(expected[key], "float64") - np.asarray(got[key], "float64")).max())
                      for key in expected]
        result[name] = {"samples": count, "max_abs_diff": max(diffs)}
        worst = max(worst, result[name]["max_abs_diff"])
    return {"max_abs_diff": worst, "signatures": result, "xnnpack": bool(runner.xnnpack)}


def _named_outputs(outputs):
    if isinstance(outputs, dict):
        return {key: np.asarray(value) for key, value in outputs.items()}
    values = outputs if isinstance(outputs, (list, tuple)) else [outputs]
    return {f"output_{i}": np.asarray(value) for i, value in enumerate(values)}


def _sparsity_note(trackable):
    kernels = [np.asarray(v) for v in getattr(trackable, "weights", []) if v.path.endswith("kernel")]
    total = sum(k.size for k in kernels)
    share = sum(int((k == 0).sum()) for k in kernels) / total if total else 0.0
    return (f"sparse: weight tensors with zeros stored sparsely (EXPERIMENTAL_SPARSITY); {share:.1%} of the "
            "model's kernel weights are zero")


def _unruled_note(unruled):
    by_class = {}
    for layer, cls in unruled.items():
        by_class.setdefault(cls, []).append(layer)
    listed = "; ".join(f"{cls}: {', '.join(names[:4])}{' …' if len(names) > 4 else ''}"
                       for cls, names in sorted(by_class.items()))
    return (f"no export rule for {len(unruled)} layer(s) ({listed}): called as they are; check the ops they "
            "became above, or register a rule with keras_visrec.tflite.prepare.register_export_rule")


def _resolve_islands(float_islands, quantization, target):
    if float_islands == "auto":
        return quantization == "int8" and target == "cpu"
    if not isinstance(float_islands, bool):
        raise ValueError(f"`float_islands` must be True, False or 'auto'; received float_islands={float_islands!r}.")
    if float_islands and target == "edgetpu":
        raise ValueError("`float_islands=True` keeps ops in float, which the Edge TPU cannot run; use "
                         "float_islands=False (or 'auto') with target='edgetpu'.")
    return float_islands and quantization == "int8"


def _validate(quantization, target, io_dtype, path, calibration_samples):
    if quantization not in QUANTIZATIONS:
        raise ValueError(f"`quantization` must be one of {QUANTIZATIONS}; received quantization={quantization!r}.")
    if target not in TARGETS:
        raise ValueError(f"`target` must be one of {TARGETS}; received target={target!r}.")
    if target == "edgetpu" and quantization != "int8":
        raise ValueError(
            "`target='edgetpu'` runs only fully 8-bit models: pass quantization='int8' with representative_data; "
            f"received quantization={quantization!r}."
        )
    if io_dtype not in IO_DTYPES:
        raise ValueError(f"`io_dtype` must be one of {IO_DTYPES}; received io_dtype={io_dtype!r}.")
    if io_dtype in ("int8", "uint8") and quantization != "int8":
        raise ValueError(f"`io_dtype={io_dtype!r}` needs quantization='int8'; received quantization={quantization!r}.")
    if io_dtype is None:
        io_dtype = "uint8" if target == "edgetpu" else "float32"
    if target == "edgetpu" and io_dtype == "float32":
        raise ValueError("`target='edgetpu'` needs integer I/O: io_dtype must be 'int8' or 'uint8'; received 'float32'.")
    if not isinstance(calibration_samples, int) or calibration_samples < 1:
        raise ValueError(f"`calibration_samples` must be a positive int; received {calibration_samples!r}.")
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"`path` must be a str or path-like; received {type(path).__name__}: {path!r}.")
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        raise FileNotFoundError(f"Output directory of `path` does not exist: {folder!r} (path={path!r}).")
    return quantization, target, io_dtype, path


def _collect_samples(data, sample_shape, limit, *, name="representative_data"):
    """Materialises up to ``limit`` float32 samples of ``sample_shape`` from an array, Dataset or iterable."""
    if isinstance(data, np.ndarray) or _is_tensor(data):
        source = [np.asarray(data)]
    elif isinstance(data, (str, bytes, dict)) or not hasattr(data, "__iter__"):
        raise TypeError(
            f"`{name}` must be a numpy array, a tf.data.Dataset or an iterable of images; received "
            f"{type(data).__name__}."
        )
    else:
        source = data
    samples = []
    for item in source:
        if isinstance(item, (tuple, list)) and item and not isinstance(item[0], (int, float)):
            item = item[0]  # (images, labels)
        array = np.asarray(item)
        if not np.issubdtype(array.dtype, np.number) or np.issubdtype(array.dtype, np.complexfloating):
            raise TypeError(f"`{name}` must hold real-valued images; received dtype {array.dtype}.")
        if array.shape == tuple(sample_shape):
            array = array[None]
        if array.ndim != len(sample_shape) + 1 or tuple(array.shape[1:]) != tuple(sample_shape):
            raise ValueError(
                f"`{name}` images must have shape {tuple(sample_shape)} (or batches (N, {', '.join(map(str, sample_shape))})) "
                f"to match the model input; received an element of shape {array.shape}."
            )
        for sample in array:
            samples.append(sample.astype("float32"))
            if limit is not None and len(samples) >= limit:
                return np.stack(samples)
    if not samples:
        raise ValueError(f"`{name}` yielded no images.")
    result = np.stack(samples)
    if not np.all(np.isfinite(result)):
        raise ValueError(f"`{name}` contains NaN or infinite values.")
    return result


def _is_tensor(value):
    return type(value).__name__ in ("EagerTensor", "Tensor", "ResourceVariable") and hasattr(value, "numpy")


def _converter_from_function(function):
    import tensorflow as tf

    # trackable_obj: the non-deprecated path, which also writes the "serving_default" signature
    return tf.lite.TFLiteConverter.from_concrete_functions([function], trackable_obj=tf.Module())


def _converter_from_saved_model(directory, signature_keys):
    import tensorflow as tf

    return tf.lite.TFLiteConverter.from_saved_model(directory, signature_keys=signature_keys)


def _convert(converter, quantization, target, io_dtype, calibration, verbose, *, float_nodes=(), sparse=False,
             unruled=None):
    """Sets quantization (and sparsity) on a ``TFLiteConverter`` and runs it: the package's one conversion."""
    import tensorflow as tf

    optimizations = [] if quantization == "fp32" else [tf.lite.Optimize.DEFAULT]
    if sparse:
        optimizations.append(tf.lite.Optimize.EXPERIMENTAL_SPARSITY)
    converter.optimizations = optimizations
    if quantization == "fp16":
        converter.target_spec.supported_types = [tf.float16]
    elif quantization == "int8":
        converter.representative_dataset = _calibration_generator(calibration, verbose)
        if target == "edgetpu":
            converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        else:
            converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8, tf.lite.OpsSet.TFLITE_BUILTINS]
        if io_dtype != "float32":
            converter.inference_input_type = getattr(tf, io_dtype)
            converter.inference_output_type = getattr(tf, io_dtype)
        if float_nodes and _has_node_denylist():
            return _convert_with_float_nodes(converter, float_nodes, io_dtype)
        if float_nodes:
            warnings.warn("This TensorFlow has no quantizer node denylist (tensorflow.lite.python.convert."
                          "mlir_quantize); exporting without float islands.", RuntimeWarning, stacklevel=3)
    try:
        return converter.convert()
    except Exception as error:  # the converter raises ConverterError / RuntimeError with MLIR text
        message = str(error).strip().splitlines()
        detail = next((line for line in message if "error" in line.lower()), message[0] if message else "")
        if unruled:
            detail += f" ({_unruled_note(unruled)})"
        if quantization == "int8" and target == "edgetpu":
            raise ValueError(
                "The model cannot be fully integer-quantized for the Edge TPU (every op needs an int8 kernel): "
                f"{detail.strip()}"
            ) from error
        raise RuntimeError(f"TFLite conversion failed ({quantization}, target={target}): {detail.strip()}") from error


def _has_node_denylist():
    try:
        from tensorflow.lite.python import convert as tf_convert
    except ImportError:
        return False
    import inspect

    function = getattr(tf_convert, "mlir_quantize", None)
    return function is not None and "denylisted_nodes" in inspect.signature(function).parameters


def _convert_with_float_nodes(converter, float_nodes, io_dtype):
    """int8 conversion that keeps the named nodes in float (calibrate, then quantize with a denylist).

    TensorFlow's converter exposes this only through its quantization debugger
    (``tf.lite.experimental.QuantizationDebugger`` with ``denylisted_nodes``), which builds a
    debug model on the way; the two steps it runs are called here directly.
    """
    import tensorflow as tf
    from tensorflow.lite.python import convert as tf_convert

    converter._experimental_calibrate_only = True  # noqa: SLF001 (as QuantizationDebugger does)
    try:
        calibrated = converter.convert()
    except Exception as error:
        raise RuntimeError(f"TFLite int8 calibration failed: {str(error).strip().splitlines()[0]}") from error
    io_type = getattr(tf, io_dtype)
    return tf_convert.mlir_quantize(
        calibrated, disable_per_channel=False, input_data_type=io_type,
        output_data_type=io_type, denylisted_nodes=list(float_nodes))


def _calibration_generator(samples, verbose):
    def generate():
        iterator = samples
        if verbose:
            from tqdm.auto import tqdm

            iterator = tqdm(samples, desc="calibrating int8", unit="img")
        for sample in iterator:
            yield [sample[None]]

    return generate


def _precision_notes(report, quantization):
    notes = []
    if quantization == "int8":
        notes.append("weights int8 per output channel (CONV_2D, DEPTHWISE_CONV_2D, FULLY_CONNECTED); "
                     "biases int32; activations int8 per tensor")
        if report.input_dtype == "float32":
            notes.append("float32 I/O: a QUANTIZE at the input and a DEQUANTIZE at the output "
                         "(0-255 pixels quantize without loss)")
        floats = sorted({op.op for op in report.ops if op.dtype == "float32" and op.op not in ("QUANTIZE", "DEQUANTIZE")})
        if floats:
            notes.append(f"kept in float32 (no int8 kernel): {', '.join(floats)}")
    elif quantization == "dynamic":
        notes.append("weights int8, activations float32 (dynamic-range quantization)")
    elif quantization == "fp16":
        notes.append("weights float16, dequantized to float32 at load (or run in fp16 by the GPU delegate)")
    return notes


def _note_float_islands(report, count):
    """Moves the intended float ops of the LayerNorm islands from `problems` to `precision`."""
    island_ops = {"ADD", "RSQRT"}
    floats = {op.op for op in report.ops if op.dtype == "float32" and op.op not in ("QUANTIZE", "DEQUANTIZE")}
    report.problems = [p for p in report.problems
                       if not (p.startswith("float32 ops left") and floats <= island_ops)]
    report.precision = [n for n in report.precision if not n.startswith("kept in float32")]
    report.precision.append(
        f"float islands: {count} LayerNorm statistics (variance + eps, RSQRT on H×W×1) kept in float32 between "
        "DEQUANTIZE and QUANTIZE, which XNNPACK runs; it has no int8 kernel for either"
    )


def _agreement(model, path, images, *, xnnpack=True):
    """Compares the written file with the Keras model on ``images`` (every output)."""
    from keras_visrec.tflite.runtime import load_tflite

    expected = model.predict(images, batch_size=16, verbose=0)
    runner = load_tflite(path, num_threads=2, xnnpack=xnnpack)
    got = runner.predict(images)
    expected = [np.asarray(e) for e in expected] if isinstance(expected, (list, tuple)) else [np.asarray(expected)]
    got = list(got) if isinstance(got, list) else [got]
    if len(expected) != len(got) or any(e.shape != g.shape for e, g in zip(expected, got)):
        return {"samples": int(len(images)), "note": "outputs not comparable (the output shapes differ)"}
    diffs = [np.abs(e.astype("float64") - g.astype("float64")) for e, g in zip(expected, got)]
    result = {"samples": int(len(images)), "max_abs_diff": float(max(d.max() for d in diffs)),
              "mean_abs_diff": float(np.mean([d.mean() for d in diffs]))}
    if len(expected) == 1 and expected[0].ndim == 2 and expected[0].shape[1] > 1:
        result["top1_agreement"] = float(np.mean(expected[0].argmax(1) == got[0].argmax(1)))
    result["xnnpack"] = bool(runner.xnnpack)
    return result

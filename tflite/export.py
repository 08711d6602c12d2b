"""``export_tflite``: one call from a Keras model to a ``.tflite`` file phones and Coral run well.

The model is rewritten by :mod:`keras_visrec.tflite.prepare` (static batch 1, 1×1 ``CONV_2D``
pointwise layers, exact folds, target-specific LayerNorm / GELU / depthwise forms), converted,
checked (XNNPACK coverage, Edge TPU op table, agreement with Keras) and written atomically.
"""

import os
import warnings

import numpy as np

from keras_visrec.files import write_atomic
from keras_visrec.tflite.report import analyze_tflite

__all__ = ["IO_DTYPES", "QUANTIZATIONS", "TARGETS", "export_tflite"]

QUANTIZATIONS = ("fp32", "fp16", "dynamic", "int8")
TARGETS = ("cpu", "gpu", "edgetpu")
IO_DTYPES = (None, "float32", "int8", "uint8")


def export_tflite(
    model,
    path,
    *,
    quantization="fp32",
    representative_data=None,
    target="cpu",
    io_dtype=None,
    calibration_samples=200,
    validation_data=None,
    layernorm="auto",
    gelu="auto",
    depthwise="auto",
    float_islands="auto",
    patchify="auto",
    compile_edgetpu=True,
    verbose=False,
):
    """Exports a Keras image model to TFLite and reports what was produced.

    Args:
        model: a functional `keras.Model` with one image input of static height and width (zoo
            models take 0–255 RGB and normalise inside; that normalisation is folded into the stem).
        path: str or path-like. The `.tflite` file to write (its folder must exist).
        quantization: str. `"fp32"`, `"fp16"` (float16 weights), `"dynamic"` (int8 weights,
            float activations) or `"int8"` (full integer, needs `representative_data`).
            Defaults to `"fp32"`.
        representative_data: real input images for int8 calibration: a numpy array
            `(N, H, W, C)`, a `tf.data.Dataset` or an iterable / generator yielding images, image
            batches or `(images, labels)` tuples. Also used to measure agreement with Keras.
        target: str. `"cpu"` (LiteRT + XNNPACK), `"gpu"` (LiteRT GPU delegate) or `"edgetpu"`
            (Coral; needs `quantization="int8"`). Defaults to `"cpu"`.
        io_dtype: str or None. Input/output type of int8 models: `"float32"`, `"int8"` or
            `"uint8"`. Defaults to float32 on CPU/GPU and uint8 on the Edge TPU.
        calibration_samples: int. How many representative images calibrate int8. Defaults to `200`.
        validation_data: optional images `(N, H, W, C)` to compare TFLite with Keras on
            (defaults to up to 32 representative images, else 4 random images).
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
        coverage per op type, agreement with Keras, folds, Edge TPU compatibility.

    Examples:

    >>> model = keras_visrec.ConvNeXtAtto(input_shape=(224, 224, 3))
    >>> report = keras_visrec.export_tflite(model, "atto_int8.tflite", quantization="int8",
    ...                                     representative_data=images)
    >>> print(report)
    """
    from keras_visrec.tflite.prepare import prepare_graph, resolve_forms

    quantization, target, io_dtype, path = _validate(quantization, target, io_dtype, path, calibration_samples)
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

    content = _convert(prepared.function, quantization, target, io_dtype, calibration, verbose,
                       float_nodes=prepared.float_nodes)
    report = analyze_tflite(path, quantization=quantization, target=target, model_content=content)
    report.folds = list(prepared.folds)
    report.lowered = dict(prepared.lowered)
    report.lowered["forms"] = (f"layernorm={layernorm}, gelu={gelu}, depthwise={depthwise}, "
                               f"float_islands={islands}, patchify={patchify}")
    report.precision = _precision_notes(report, quantization)
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


def _convert(function, quantization, target, io_dtype, calibration, verbose, float_nodes=()):
    import tensorflow as tf

    # trackable_obj: the non-deprecated path, which also writes the "serving_default" signature
    converter = tf.lite.TFLiteConverter.from_concrete_functions([function], trackable_obj=tf.Module())
    if quantization == "fp16":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.target_spec.supported_types = [tf.float16]
    elif quantization == "dynamic":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
    elif quantization == "int8":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
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
    """Compares the written file with the Keras model on ``images``."""
    from keras_visrec.tflite.runtime import load_tflite

    expected = np.asarray(model.predict(images, batch_size=16, verbose=0))
    runner = load_tflite(path, num_threads=2, xnnpack=xnnpack)
    got = runner.predict(images)
    if isinstance(got, list) or expected.shape != got.shape:
        return {"samples": int(len(images)), "note": "outputs not comparable (several outputs or shapes differ)"}
    diff = np.abs(expected.astype("float64") - got.astype("float64"))
    result = {"samples": int(len(images)), "max_abs_diff": float(diff.max()), "mean_abs_diff": float(diff.mean())}
    if expected.ndim == 2 and expected.shape[1] > 1:
        result["top1_agreement"] = float(np.mean(expected.argmax(1) == got.argmax(1)))
    result["xnnpack"] = bool(runner.xnnpack)
    return result

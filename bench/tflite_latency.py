"""ConvNeXt-T on LiteRT CPU: keras.applications exported naively vs keras_visrec.export_tflite.

Prints `name: value` lines: size and latency (batch 1, 2 threads, XNNPACK) of four files —
naive fp32, naive int8, ours fp32, ours int8 — and the ratios that matter (int8 / fp32 for each
route; ours / naive). The four interpreters are timed interleaved, one invocation each per round,
so load from other processes hits all four alike: the machine's 2 cores are shared, figures are
taken under contention and only the ratios are meaningful.

Layer-scale gammas are set to 0.5 in both models (trained ConvNeXts have gammas of order 0.1–1;
the 1e-6 init makes residual branches vanish at int8 scale and is not what a user deploys).
Calibration uses real images: scikit-learn's digits upscaled to 224×224.

Usage: python bench/tflite_latency.py [--rounds 30] [--threads 2] [--size 224]
"""

import argparse
import os
import tempfile
import time

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


def _keras_applications_convnext(size):
    import keras

    model = keras.applications.ConvNeXtTiny(weights=None, input_shape=(size, size, 3), include_preprocessing=True)
    for layer in model.layers:
        if "layer_scale" in layer.name and layer.weights:
            layer.set_weights([np.full(w.shape, 0.5, "float32") for w in layer.get_weights()])
    return model


def _distinct_weights(model, seed=0):
    """Gives every kernel its own random values (std 0.02).

    keras_visrec's builders share one unseeded initializer instance, so same-shaped layers start
    identical and the converter stores their weights once; that would shrink our file and flatter
    its cache behaviour against keras.applications.
    """
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        if "layernorm" in layer.name or "layer_scale" in layer.name:
            continue
        values = layer.get_weights()
        if values:
            layer.set_weights([rng.normal(0, 0.02, v.shape).astype("float32") if v.ndim >= 2 else v for v in values])


def _naive_convert(model, quantization, calibration):
    """What a user does first: TFLiteConverter.from_keras_model, defaults, optional int8 calibration."""
    import tensorflow as tf

    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    if quantization == "int8":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.representative_dataset = lambda: ([image[None]] for image in calibration)
    return converter.convert()


def _interleaved_latency(paths, threads, rounds, image):
    from keras_visrec.tflite.runtime import load_tflite

    runners = {name: load_tflite(path, num_threads=threads) for name, path in paths.items()}
    for runner in runners.values():
        runner.predict(image)
    times = {name: [] for name in runners}
    for _ in range(rounds):
        for name, runner in runners.items():
            start = time.perf_counter()
            runner.interpreter.invoke()
            times[name].append((time.perf_counter() - start) * 1000.0)
    return {name: np.asarray(values) for name, values in times.items()}, runners


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--calibration", type=int, default=16)
    args = parser.parse_args()

    import keras_visrec
    from keras_visrec.data import load_digits_images

    (train, _), _ = load_digits_images(size=args.size)
    calibration = train[: args.calibration]
    folder = tempfile.mkdtemp(prefix="tflite_bench_")
    paths = {}
    naive = _keras_applications_convnext(args.size)
    for quantization in ("fp32", "int8"):
        start = time.time()
        content = _naive_convert(naive, quantization, calibration)
        paths[f"naive_{quantization}"] = os.path.join(folder, f"naive_{quantization}.tflite")
        with open(paths[f"naive_{quantization}"], "wb") as handle:
            handle.write(content)
        print(f"naive_{quantization}_convert_s: {time.time() - start:.1f}")
    ours = keras_visrec.ConvNeXtTiny(input_shape=(args.size, args.size, 3), layer_scale_init_value=0.5)
    _distinct_weights(ours)
    reports = {}
    for quantization in ("fp32", "int8"):
        start = time.time()
        path = os.path.join(folder, f"ours_{quantization}.tflite")
        reports[quantization] = keras_visrec.export_tflite(
            ours, path, quantization=quantization, representative_data=calibration, validation_data=calibration[:4])
        paths[f"ours_{quantization}"] = path
        print(f"ours_{quantization}_convert_s: {time.time() - start:.1f}")

    from keras_visrec.tflite.report import analyze_tflite

    for name, path in paths.items():
        report = analyze_tflite(path, quantization=name.split("_")[1])
        dynamic = sum(report.op_histogram.get(op, 0) for op in ("SHAPE", "GATHER", "REDUCE_PROD", "PACK", "RESHAPE"))
        print(f"{name}_size_mb: {report.size_bytes / 1e6:.2f}")
        print(f"{name}_nodes: {len(report.ops)}")
        print(f"{name}_shape_ops: {dynamic}")
        print(f"{name}_xnnpack_fraction: {report.xnnpack_fraction:.3f}")
        builtin = {op: row["builtin"] for op, row in report.kernels.items() if row["builtin"]}
        print(f"{name}_builtin_kernels: {builtin}")

    image = calibration[:1]
    times, _ = _interleaved_latency(paths, args.threads, args.rounds, image)
    median = {name: float(np.median(values)) for name, values in times.items()}
    for name, values in times.items():
        print(f"{name}_latency_ms_p50: {np.median(values):.1f}")
        print(f"{name}_latency_ms_p90: {np.percentile(values, 90):.1f}")
        print(f"{name}_latency_ms_min: {values.min():.1f}")
    print(f"naive_int8_over_fp32: {median['naive_int8'] / median['naive_fp32']:.2f}")
    print(f"ours_int8_over_fp32: {median['ours_int8'] / median['ours_fp32']:.2f}")
    print(f"ours_fp32_over_naive_fp32: {median['ours_fp32'] / median['naive_fp32']:.2f}")
    print(f"ours_int8_over_naive_int8: {median['ours_int8'] / median['naive_int8']:.2f}")
    print(f"ours_int8_over_naive_fp32: {median['ours_int8'] / median['naive_fp32']:.2f}")
    print(f"ours_int8_agreement_top1: {reports['int8'].agreement.get('top1_agreement')}")
    print(f"threads: {args.threads}")
    print("note: 2 CPU cores shared with other processes (contention); compare ratios, not absolute times")
    print(reports["int8"])


if __name__ == "__main__":
    main()

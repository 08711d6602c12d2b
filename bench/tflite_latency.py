"""ConvNeXt-T on LiteRT CPU: keras.applications exported naively vs keras_visrec.export_tflite.

Part `model` (default) prints `name: value` lines: size and latency (batch 1, 2 threads, XNNPACK)
of five files — naive fp32, naive int8, ours fp32, ours int8 (float islands, the default) and
ours int8 without float islands — the ratios that matter (int8 / fp32 for each route; ours /
naive), then a per-op-type profile of ours fp32 and int8 (`keras_visrec.tflite.profile`): time
per op type, which kernels ran on XNNPACK, and the int8 floor — int8's CONV_2D time alone
against the whole fp32 graph, the best int8 / fp32 ratio reachable if every other int8 op were free.

Part `kernels` times the op the floor hinges on, a stack of 1×1 convolutions (ConvNeXt's inverted
bottleneck, C → 4C → C) and a 3×7 depthwise band at each ConvNeXt-T stage shape, in every
precision LiteRT offers (fp32, int8 per channel / per tensor, dynamic-range int8, fp16 weights),
with and without XNNPACK, on 1 and 2 threads. It shows where a large int8 gain comes from:
int8 on XNNPACK against fp32 on LiteRT's builtin kernels.

All interpreters of a part are timed interleaved, one invocation each per round, so load from
other processes hits all alike: the machine's 2 cores are shared, figures are taken under
contention and only the ratios are meaningful.

Layer-scale gammas are set to 0.5 in both models (trained ConvNeXts have gammas of order 0.1–1;
the 1e-6 init makes residual branches vanish at int8 scale and is not what a user deploys).
Calibration uses real images: scikit-learn's digits upscaled to 224×224.

Usage: python bench/tflite_latency.py [--part model|kernels|all] [--rounds 30] [--threads 2] [--size 224]
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
    return _interleaved({name: runner.interpreter for name, runner in runners.items()}, rounds), runners


def _interleaved(interpreters, rounds, warmup=2):
    """Median-ready latencies (ms) of several interpreters, one invocation each per round."""
    times = {name: [] for name in interpreters}
    for step in range(warmup + rounds):
        for name, interpreter in interpreters.items():
            start = time.perf_counter()
            interpreter.invoke()
            if step >= warmup:
                times[name].append((time.perf_counter() - start) * 1000.0)
    return {name: np.asarray(values) for name, values in times.items()}


# ---------------------------------------------------------------- part "kernels"

# ConvNeXt-T at 224: (feature map side, channels) per stage
_STAGES = ((56, 96), (28, 192), (14, 384), (7, 768))
_VARIANTS = ("fp32", "int8", "int8_per_tensor", "dynamic", "fp16")


def _pointwise_stack(side, channels, blocks=2, seed=0):
    """``blocks`` × (1×1 conv C→4C, ReLU, 1×1 conv 4C→C): ConvNeXt's MLP as pure convolutions."""
    import tensorflow as tf

    rng = np.random.default_rng(seed)
    weights = []
    for _ in range(blocks):
        for cin, cout in ((channels, 4 * channels), (4 * channels, channels)):
            weights.append((rng.normal(0, cin ** -0.5, (1, 1, cin, cout)).astype("float32"),
                            rng.normal(0, 0.1, cout).astype("float32")))

    def forward(x):
        for index, (kernel, bias) in enumerate(weights):
            x = tf.nn.bias_add(tf.nn.conv2d(x, kernel, 1, "VALID"), bias)
            x = tf.nn.relu(x) if index % 2 == 0 else x
        return x

    spec = tf.TensorSpec((1, side, side, channels), tf.float32)
    macs = blocks * 2 * side * side * channels * 4 * channels
    return tf.function(forward, autograph=False).get_concrete_function(spec), macs


def _depthwise_stack(side, channels, layers=4, seed=0):
    """``layers`` × a 3×7 depthwise conv (one row band of the exporter's split 7×7), valid padding."""
    import tensorflow as tf

    rng = np.random.default_rng(seed)
    kernels = [rng.normal(0, 0.2, (3, 7, channels, 1)).astype("float32") for _ in range(layers)]

    def forward(x):
        for kernel in kernels:
            x = tf.nn.depthwise_conv2d(tf.pad(x, [[0, 0], [1, 1], [3, 3], [0, 0]]), kernel, (1, 1, 1, 1), "VALID")
        return x

    spec = tf.TensorSpec((1, side, side, channels), tf.float32)
    return tf.function(forward, autograph=False).get_concrete_function(spec), layers * side * side * channels * 21


def _convert_variant(function, variant, shape):
    import tensorflow as tf

    converter = tf.lite.TFLiteConverter.from_concrete_functions([function], trackable_obj=tf.Module())
    if variant != "fp32":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
    if variant.startswith("int8"):
        rng = np.random.default_rng(1)
        converter.representative_dataset = lambda: ([rng.normal(0, 1, shape).astype("float32")] for _ in range(8))
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        converter.inference_input_type = converter.inference_output_type = tf.int8
        converter._experimental_disable_per_channel = variant == "int8_per_tensor"  # noqa: SLF001
    if variant == "fp16":
        converter.target_spec.supported_types = [tf.float16]
    return converter.convert()


def _interpreter(content, threads, xnnpack):
    from keras_visrec.tflite.report import _interpreter_class, _resolver_types

    kwargs = {} if xnnpack else _resolver_types().get("plain", {})
    interpreter = _interpreter_class()(model_content=content, num_threads=threads, **kwargs)
    interpreter.allocate_tensors()
    detail = interpreter.get_input_details()[0]
    interpreter.set_tensor(detail["index"], np.random.default_rng(0).integers(-100, 100, detail["shape"]).astype(
        detail["dtype"]))
    return interpreter


class _CompiledRunner:
    """LiteRT's CompiledModel API with explicit CPU options, behind an ``invoke()`` like the interpreter's."""

    def __init__(self, content, threads, **cpu):
        from ai_edge_litert.compiled_model import CompiledModel
        from ai_edge_litert.options import CpuOptions, Options

        self.model = CompiledModel.from_buffer(content, options=Options(cpu_options=CpuOptions(num_threads=threads,
                                                                                                **cpu)))
        self.key = next(iter(self.model.get_signature_list()))
        details = self.model.get_input_tensor_details(self.key)
        self.inputs = {name: self.model.create_input_buffer_by_name(self.key, name) for name in details}
        self.outputs = {name: self.model.create_output_buffer_by_name(self.key, name)
                        for name in self.model.get_output_tensor_details(self.key)}
        for name, buffer in self.inputs.items():
            buffer.write(np.zeros(details[name]["shape"], np.dtype(details[name]["dtype"])))

    def invoke(self):
        self.model.run_by_name(self.key, self.inputs, self.outputs)


# XNNPACK delegate flags (tflite/delegates/xnnpack/xnnpack_delegate.h): QS8 | QU8 | ENABLE_LATEST_OPERATORS
_XNNPACK_QS8_QU8_LATEST = 0x1 | 0x2 | 0x40


def _runtime_options(content, threads):
    """Other ways LiteRT can run the same file on CPU: ``{kernel name: runner}`` (failures reported, not raised)."""
    from keras_visrec.tflite.report import _interpreter_class

    makers = {
        "xnnpack_latest_features": lambda: _interpreter_class()(
            model_content=content, num_threads=threads, experimental_default_delegate_latest_features=True),
        "compiled_qs8_qu8_latest": lambda: _CompiledRunner(content, threads, xnnpack_flags=_XNNPACK_QS8_QU8_LATEST),
        "compiled_ynnpack": lambda: _CompiledRunner(content, threads, enable_ynnpack=True),
    }
    runners = {}
    for name, make in makers.items():
        try:
            runner = make()
            if hasattr(runner, "allocate_tensors"):
                runner.allocate_tensors()
            runners[name] = runner
        except Exception as error:  # an option this LiteRT build lacks: say so and go on
            print(f"runtime_option_{name}_unavailable: {type(error).__name__}: {str(error).strip().splitlines()[0]}")
    return runners


def kernels(args):
    """Part `kernels`: 1×1-conv and depthwise stacks at ConvNeXt-T shapes, every precision, 1 and 2 threads."""
    from tqdm.auto import tqdm

    cases = [(f"pointwise_{side}x{side}x{c}", _pointwise_stack(side, c)) for side, c in _STAGES]
    cases += [(f"depthwise3x7_{side}x{side}x{c}", _depthwise_stack(side, c)) for side, c in _STAGES]
    summary = {}
    for label, (function, macs) in tqdm(cases, desc="kernel cases"):
        shape = tuple(function.inputs[0].shape)
        contents = {variant: _convert_variant(function, variant, shape) for variant in _VARIANTS}
        interpreters = {}
        for threads in (1, 2):
            for variant in _VARIANTS:
                interpreters[(variant, "xnnpack", threads)] = _interpreter(contents[variant], threads, True)
            for variant in ("fp32", "int8"):
                interpreters[(variant, "builtin", threads)] = _interpreter(contents[variant], threads, False)
        if label.startswith("pointwise"):
            for variant in ("fp32", "int8"):
                for kernel, runner in _runtime_options(contents[variant], args.threads).items():
                    interpreters[(variant, kernel, args.threads)] = runner
        times = _interleaved(interpreters, args.kernel_rounds)
        median = {key: float(np.median(values)) for key, values in times.items()}
        best = {key: float(values.min()) for key, values in times.items()}
        print(f"{label}_mmacs: {macs / 1e6:.0f}")
        for threads in (1, 2):
            anchor, anchor_best = median[("fp32", "xnnpack", threads)], best[("fp32", "xnnpack", threads)]
            for (variant, kernel, t), ms in median.items():
                if t == threads:
                    fastest = best[(variant, kernel, t)]
                    print(f"{label}_t{threads}_{variant}_{kernel}_ms: {ms:.2f} (best {fastest:.2f}, over fp32_xnnpack "
                          f"{ms / anchor:.2f}, best over best {fastest / anchor_best:.2f})")
            ratio = median[("int8", "xnnpack", threads)] / anchor
            gain = median[("fp32", "builtin", threads)] / median[("int8", "xnnpack", threads)]
            print(f"{label}_t{threads}_int8_over_fp32_xnnpack: {ratio:.2f}")
            for kernel in sorted({k for (_, k, t) in median if t == threads} - {"xnnpack", "builtin"}):
                if ("int8", kernel, threads) in median and ("fp32", kernel, threads) in median:
                    option = median[("int8", kernel, threads)] / median[("fp32", kernel, threads)]
                    print(f"{label}_t{threads}_{kernel}_int8_over_fp32: {option:.2f}")
            print(f"{label}_t{threads}_fp32_builtin_over_int8_xnnpack: {gain:.2f}")
            summary.setdefault(threads, []).append((label, ratio, gain))
    for threads, rows in summary.items():
        ratios = [ratio for _, ratio, _ in rows]
        gains = [gain for _, _, gain in rows]
        print(f"kernels_t{threads}_int8_over_fp32_xnnpack_range: {min(ratios):.2f}-{max(ratios):.2f}")
        print(f"kernels_t{threads}_int8_xnnpack_speedup_over_fp32_builtin_range: {min(gains):.1f}x-{max(gains):.1f}x")


# ---------------------------------------------------------------- part "model"


def model(args):
    """Part `model`: naive vs ours, fp32 vs int8, whole-model latency and the per-op profile."""
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
    for name, quantization, islands in (("fp32", "fp32", "auto"), ("int8", "int8", "auto"),
                                        ("int8_no_islands", "int8", False)):
        start = time.time()
        path = os.path.join(folder, f"ours_{name}.tflite")
        reports[name] = keras_visrec.export_tflite(
            ours, path, quantization=quantization, representative_data=calibration, validation_data=calibration[:4],
            float_islands=islands)
        paths[f"ours_{name}"] = path
        print(f"ours_{name}_convert_s: {time.time() - start:.1f}")

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
    print(f"ours_int8_no_islands_over_fp32: {median['ours_int8_no_islands'] / median['ours_fp32']:.2f}")
    print(f"ours_int8_over_int8_no_islands: {median['ours_int8'] / median['ours_int8_no_islands']:.3f}")
    print(f"ours_fp32_over_naive_fp32: {median['ours_fp32'] / median['naive_fp32']:.2f}")
    print(f"ours_int8_over_naive_int8: {median['ours_int8'] / median['naive_int8']:.2f}")
    print(f"ours_int8_over_naive_fp32: {median['ours_int8'] / median['naive_fp32']:.2f}")
    print(f"ours_int8_agreement_top1: {reports['int8'].agreement.get('top1_agreement')}")
    print(f"threads: {args.threads}")
    print(reports["int8"])
    _profile({name: paths[f"ours_{name}"] for name in ("fp32", "int8")}, args)


def _profile(paths, args):
    """Per-op-type time of ours fp32 and int8, interleaved, and the int8 floor set by CONV_2D."""
    from keras_visrec.tflite.profile import profile_tflite

    profiles = profile_tflite(paths, num_threads=args.threads, rounds=args.profile_rounds, progress=True)
    for profile in profiles.values():
        print(profile.table())
    fp32, int8 = profiles["fp32"].by_type(), profiles["int8"].by_type()
    for op in sorted(set(fp32) & set(int8), key=lambda op: -fp32[op]["ms"]):
        print(f"profile_{op}_int8_over_fp32: {int8[op]['ms'] / fp32[op]['ms']:.2f} "
              f"(best over best {int8[op]['min_ms'] / max(fp32[op]['min_ms'], 1e-9):.2f})")
    for statistic, key, total in (("median", "ms", "total_ms"), ("best", "min_ms", "total_min_ms")):
        fp32_total, int8_total = getattr(profiles["fp32"], total), getattr(profiles["int8"], total)
        print(f"profile_{statistic}_sum_of_ops_int8_over_fp32: {int8_total / fp32_total:.2f}")
        print(f"profile_{statistic}_fp32_conv_share: {fp32['CONV_2D'][key] / fp32_total:.2f}")
        print(f"profile_{statistic}_int8_floor_conv_only_over_fp32: {int8['CONV_2D'][key] / fp32_total:.2f}")
        builtin = sum(entry[key] * entry["count"] for entry in profiles["int8"].entries if not entry["xnnpack"])
        print(f"profile_{statistic}_int8_builtin_kernel_ms: {builtin:.2f} ({builtin / int8_total:.1%} of int8)")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--part", choices=("model", "kernels", "all"), default="model")
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--profile-rounds", type=int, default=25)
    parser.add_argument("--kernel-rounds", type=int, default=15)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--calibration", type=int, default=16)
    args = parser.parse_args()
    if args.part in ("kernels", "all"):
        kernels(args)
    if args.part in ("model", "all"):
        model(args)
    print("note: 2 CPU cores shared with other processes (contention); compare ratios, not absolute times")


if __name__ == "__main__":
    main()

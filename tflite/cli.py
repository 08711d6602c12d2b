"""``keras-visrec export`` and ``keras-visrec bench-tflite``.

    keras-visrec export convnext_atto out/atto_int8.tflite --quantization int8 \\
        --representative digits --input-size 224 --classes 10 --weights model.keras
    keras-visrec bench-tflite out/atto_int8.tflite --threads 2 --runs 50 --profile
"""

__all__ = ["register"]


def register(subparsers):
    """Adds the ``export`` and ``bench-tflite`` sub-commands."""
    export = subparsers.add_parser("export", help="export a zoo model or a .keras file to TFLite / Edge TPU")
    export.add_argument("model", help="a registered model name (see `keras-visrec models`) or a .keras file")
    export.add_argument("output", help="the .tflite file to write")
    export.add_argument("--quantization", default="fp32", choices=("fp32", "fp16", "dynamic", "int8"))
    export.add_argument("--target", default="cpu", choices=("cpu", "gpu", "edgetpu"))
    export.add_argument("--io-dtype", default=None, choices=("float32", "int8", "uint8"))
    export.add_argument("--representative", default=None,
                        help="calibration images: a .npy file of (N, H, W, C) images, or 'digits' for the "
                             "bundled real handwritten digits")
    export.add_argument("--samples", type=int, default=200, help="calibration images to use")
    export.add_argument("--input-size", type=int, default=224, help="static input height and width")
    export.add_argument("--classes", type=int, default=1000, help="head size for a registered model name")
    export.add_argument("--weights", default=None, help="weights for a registered model name (.keras / .weights.h5)")
    export.add_argument("--json", default=None, help="also write the report as JSON here")
    export.set_defaults(func=_export)

    bench = subparsers.add_parser("bench-tflite", help="latency of a .tflite file on LiteRT (percentiles)")
    bench.add_argument("model", help="the .tflite file")
    bench.add_argument("--threads", type=int, default=2)
    bench.add_argument("--runs", type=int, default=30)
    bench.add_argument("--warmup", type=int, default=3)
    bench.add_argument("--edgetpu", action="store_true", help="load the Edge TPU delegate (libedgetpu.so.1)")
    bench.add_argument("--profile", action="store_true",
                       help="also time every op type (one-op cuts of the graph, same threads) and show which ran "
                            "on XNNPACK")
    bench.set_defaults(func=_bench)


def _load_model(args):
    import os

    import keras

    if args.model.endswith(".keras"):
        if not os.path.isfile(args.model):
            raise FileNotFoundError(f"Model file not found: {args.model!r}.")
        return keras.saving.load_model(args.model, compile=False)
    from keras_visrec.models import get_model

    size = args.input_size
    return get_model(args.model, input_shape=(size, size, 3), classes=args.classes, weights=args.weights)


def _representative(args, shape):
    import numpy as np

    if args.representative is None:
        return None
    if args.representative == "digits":
        from keras_visrec.data import load_digits_images

        (images, _), _ = load_digits_images(size=shape[0], channels=shape[2])
        return images
    return np.load(args.representative)


def _export(args):
    from keras_visrec.tflite.export import export_tflite

    model = _load_model(args)
    data = _representative(args, tuple(model.inputs[0].shape[1:]))
    report = export_tflite(model, args.output, quantization=args.quantization, target=args.target,
                           io_dtype=args.io_dtype, representative_data=data, calibration_samples=args.samples)
    print(report)
    if args.json:
        report.to_json(args.json)
    if report.edgetpu is not None and not report.edgetpu.all_mapped:
        return 3
    return 0


def _bench(args):
    from keras_visrec.tflite.runtime import load_tflite

    runner = load_tflite(args.model, num_threads=args.threads, edgetpu=args.edgetpu)
    stats = runner.benchmark(warmup=args.warmup, runs=args.runs)
    print(f"model: {args.model}")
    for key, value in stats.items():
        print(f"{key}: {value:.3f}" if isinstance(value, float) else f"{key}: {value}")
    if args.profile:
        from keras_visrec.tflite.profile import profile_tflite

        print(profile_tflite(args.model, num_threads=args.threads, rounds=args.runs, warmup=args.warmup).table())
    return 0

"""``keras-visrec export`` and ``keras-visrec bench-tflite``.

    keras-visrec export convnext_atto --output out/atto_int8.tflite --quantization int8 \\
        --data digits --image-size 224 --classes 10 --weights model.keras
    keras-visrec bench-tflite out/atto_int8.tflite --threads 2 --runs 50 --profile
"""

import argparse
import sys

from keras_visrec.cli_args import (add_data, add_image_size, add_max_examples, add_model, add_output,
                                   add_verbosity, add_weights, positive_int)

__all__ = ["register"]


def register(subparsers):
    """Adds the ``export`` and ``bench-tflite`` sub-commands."""
    export = subparsers.add_parser("export", help="export a zoo model or a .keras file to TFLite / Edge TPU")
    add_model(export)
    export.add_argument("legacy_output", nargs="?", default=None, help=argparse.SUPPRESS)
    add_output(export, help="the .tflite file to write")
    export.add_argument("--quantization", default="fp32", choices=("fp32", "fp16", "dynamic", "int8"))
    export.add_argument("--target", default="cpu", choices=("cpu", "gpu", "edgetpu"))
    export.add_argument("--io-dtype", default=None, choices=("float32", "int8", "uint8"))
    add_data(export, help="calibration images for int8: 'digits' (the bundled real handwritten digits), a .npy "
                          "file of (N, H, W, C) images, an image folder or a tensorflow-datasets name",
             deprecated=("--representative",))
    add_max_examples(export, default=200, help="calibration images to use", deprecated=("--samples",))
    add_image_size(export, default=224, help="static input height and width", deprecated=("--input-size",))
    export.add_argument("--classes", type=positive_int, default=1000, help="head size for a registered model name")
    add_weights(export, help="weights for a registered model name (zoo id, .keras, .weights.h5, .pth, .safetensors)")
    export.add_argument("--json", default=None, help="also write the report as JSON here")
    add_verbosity(export)
    export.set_defaults(func=_export)

    bench = subparsers.add_parser("bench-tflite", help="latency of a .tflite file on LiteRT (percentiles)")
    add_model(bench, help="the .tflite file")
    bench.add_argument("--threads", type=positive_int, default=2)
    bench.add_argument("--runs", type=positive_int, default=30)
    bench.add_argument("--warmup", type=int, default=3)
    bench.add_argument("--edgetpu", action="store_true", help="load the Edge TPU delegate (libedgetpu.so.1)")
    bench.add_argument("--profile", action="store_true",
                       help="also time every op type (one-op cuts of the graph, same threads) and show which ran "
                            "on XNNPACK")
    add_verbosity(bench)
    bench.set_defaults(func=_bench)


def _load_model(args):
    import os

    import keras

    if args.model.endswith(".keras"):
        if not os.path.isfile(args.model):
            raise FileNotFoundError(f"Model file not found: {args.model!r}.")
        return keras.saving.load_model(args.model, compile=False)
    from keras_visrec.models import get_model

    size = args.image_size
    return get_model(args.model, input_shape=(size, size, 3), classes=args.classes, weights=args.weights)


def _representative(args, shape):
    import numpy as np

    if args.data is None:
        return None
    if args.data == "digits":
        from keras_visrec.data import load_digits_images

        (images, _), _ = load_digits_images(size=shape[0], channels=shape[2])
        return images
    if args.data.endswith(".npy"):
        return np.load(args.data)
    import tensorflow as tf

    from keras_visrec.recipe.datasets import load_image_source

    source = load_image_source(args.data, data_dir=args.data_dir, manual_dir=args.manual_dir)
    images = [tf.image.resize(tf.cast(image, "float32"), shape[:2]).numpy()
              for image, _ in source.dataset.take(args.max_examples)]
    return np.stack(images)


def _export(args):
    from keras_visrec.tflite.export import export_tflite

    if args.legacy_output is not None:
        if args.output is not None:
            print("export: give the output file once, as --output.", file=sys.stderr)
            return 2
        print("export: the positional OUTPUT is deprecated and will be removed in the next release; use --output.",
              file=sys.stderr)
        args.output = args.legacy_output
    if args.output is None:
        print("export: --output FILE.tflite is needed.", file=sys.stderr)
        return 2

    model = _load_model(args)
    data = _representative(args, tuple(model.inputs[0].shape[1:]))
    report = export_tflite(model, args.output, quantization=args.quantization, target=args.target,
                           io_dtype=args.io_dtype, representative_data=data, calibration_samples=args.max_examples)
    if args.verbosity:
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

"""``keras-visrec seg-eval``, ``seg-predict`` and ``seg-demo``.

``seg-eval MODEL --data ADE20K_DIR`` prints the per-class IoU table, mIoU, pixel accuracy and the
catalogue's published mIoU for a zoo id; ``seg-predict MODEL IMAGE --output overlay.png`` writes
a colour overlay of the prediction (atomically); ``seg-demo`` trains a small UperNet on the digit
canvases offline and runs both. MODEL is a ``.keras`` file, a zoo id or a registry name (with
``--weights``).
"""

import json

from keras_visrec import cli_args

__all__ = ["register"]


def _pair_or_none(text):
    if text is None or text.lower() in ("none", "auto"):
        return text.lower() if text else None
    values = tuple(int(v) for v in text.replace("x", ",").split(",") if v)
    if len(values) == 1:
        values = values * 2
    if len(values) != 2 or min(values) < 1:
        raise ValueError(f"expected N or H,W (positive integers); received {text!r}")
    return values


def _pair_argument(text):
    import argparse

    try:
        return _pair_or_none(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error))


def _ratios_argument(text):
    import argparse

    try:
        ratios = tuple(float(v) for v in text.split(",") if v)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated positive numbers; received {text!r}")
    if not ratios or min(ratios) <= 0:
        raise argparse.ArgumentTypeError(f"expected comma-separated positive numbers; received {text!r}")
    return ratios


def _add_inference(parser, default_mode):
    parser.add_argument("--mode", default=default_mode, help=f"whole or slide (default: {default_mode}); any other "
                                                             "value is refused with the accepted ones")
    parser.add_argument("--crop-size", type=_pair_argument, default=None,
                        help="slide window, N or H,W (default: the model's input size)")
    parser.add_argument("--stride", type=_pair_argument, default=None,
                        help="slide stride, N or H,W (default: 2/3 of the crop, mmseg's 341 for 512)")
    parser.add_argument("--flip", action="store_true", help="add horizontally flipped passes")
    parser.add_argument("--ratios", type=_ratios_argument, default=(1.0,),
                        help="rescale ratios, e.g. 0.5,0.75,1,1.25,1.5,1.75 (default: 1)")
    parser.add_argument("--multi-scale", action="store_true",
                        help="mmseg's aug-test: ratios 0.5–1.75 and flip (compares with the multi-scale mIoU)")
    parser.add_argument("--scale", type=_pair_argument, default="auto",
                        help="mmseg img_scale LONG,SHORT the ratios apply to, or 'none' to rescale the image itself "
                             "(default: auto = 4×crop,crop for ADE20K as mmseg's 2048,512; none otherwise)")
    parser.add_argument("--batch-size", type=cli_args.positive_int, default=4, help="windows per forward pass")


def register(subparsers):
    """Adds ``seg-eval``, ``seg-predict`` and ``seg-demo``."""
    ev = subparsers.add_parser("seg-eval", help="mIoU / per-class IoU of a segmenter on a dataset, vs the published "
                                                "figure", description=__doc__.splitlines()[0])
    cli_args.add_model(ev)
    cli_args.add_weights(ev)
    cli_args.add_data(ev, default="digits", help="an ADE20K folder (ADEChallengeData2016 layout: images/ + "
                                                 "annotations/), 'scene_parse150' (tfds, prepared) or 'digits'")
    ev.add_argument("--split", default="validation", help="split (default: validation)")
    _add_inference(ev, "slide")
    cli_args.add_image_size(ev, help="input side the model is built at (default: the zoo entry's, else 512)")
    cli_args.add_max_examples(ev)
    ev.add_argument("--published-miou", type=float, default=None, help="reference mIoU in percent "
                                                                       "(default: the catalogue's for a zoo id)")
    cli_args.add_output(ev, help="also write the scores as JSON here")
    cli_args.add_verbosity(ev)
    ev.set_defaults(func=_seg_eval)

    pr = subparsers.add_parser("seg-predict", help="write a colour overlay PNG of a segmenter's prediction")
    cli_args.add_model(pr)
    pr.add_argument("image", help="the image file (JPEG / PNG)")
    cli_args.add_weights(pr)
    cli_args.add_output(pr, required=True, help="the overlay PNG to write")
    _add_inference(pr, "whole")
    cli_args.add_image_size(pr, help="input side the model is built at (default: the zoo entry's, else 512)")
    pr.add_argument("--alpha", type=float, default=0.5, help="overlay opacity in [0, 1] (default: 0.5)")
    cli_args.add_verbosity(pr)
    pr.set_defaults(func=_seg_predict)

    demo = subparsers.add_parser("seg-demo", help="train a small UperNet on digit canvases, evaluate, save, predict, "
                                                  "export (offline)")
    cli_args.add_output_dir(demo, default="out/seg-demo")
    demo.add_argument("--epochs", type=cli_args.positive_int, default=None, help="training epochs (default: the "
                                                                                  "demo's tuned schedule)")
    demo.add_argument("--no-export", action="store_true", help="skip the TFLite step")
    cli_args.add_strategy(demo)
    cli_args.add_seed(demo)
    cli_args.add_verbosity(demo)
    demo.set_defaults(func=_seg_demo)


def _load_segmenter(model, weights, image_size):
    """``(inference model, zoo id or None)`` from a .keras file, a zoo id or a registry name."""
    import os

    import keras

    from keras_visrec.segmentation.inference import inference_model

    zoo_id = weights if weights and not os.path.exists(weights) else None
    if model.endswith(".keras"):
        if weights:
            raise SystemExit("--weights does not apply to a .keras model file (it holds its weights)")
        return inference_model(keras.saving.load_model(model, compile=False)), None
    from keras_visrec.models import get_model
    from keras_visrec.registry import is_registered

    if "." in model and not is_registered(model):
        from keras_visrec.zoo.catalogue import get_weights

        entry = get_weights(model)
        zoo_id, weights, model = model, model, entry.arch
        image_size = image_size or entry.resolution
    elif zoo_id is not None:
        from keras_visrec.zoo.catalogue import get_weights

        image_size = image_size or get_weights(zoo_id).resolution
    size = image_size or 512
    return inference_model(get_model(model, weights=weights, input_shape=(size, size, 3))), zoo_id


def _settings(args, model, benchmark_ade20k):
    from keras_visrec.segmentation.inference import MULTI_SCALE_RATIOS, InferenceSettings, model_input_size

    ratios, flip = (MULTI_SCALE_RATIOS, True) if args.multi_scale else (args.ratios, args.flip)
    scale = args.scale
    if scale == "auto":
        side = (args.crop_size or model_input_size(model))[0] if benchmark_ade20k else None
        scale = None if side is None else (4 * side, side)
    elif scale == "none":
        scale = None
    return InferenceSettings.for_model(model, mode=args.mode, crop_size=args.crop_size if args.mode == "slide" else None,
                                       stride=args.stride if args.mode == "slide" else None, flip=flip, ratios=ratios,
                                       scale=scale, batch_size=args.batch_size)


def _seg_eval(args):
    from keras_visrec.files import write_atomic
    from keras_visrec.segmentation.datasets import ADE20K_CLASSES, load_segmentation_data
    from keras_visrec.segmentation.evaluate import evaluate_segmentation

    _verbosity(args)
    if args.manual_dir:
        raise SystemExit("seg-eval: --manual-dir does not apply: tensorflow-datasets' scene_parse150 has no manual "
                         "download (its builder fetches the Places Challenge tars itself); pass --data-dir with a "
                         "prepared copy, or --data ADEChallengeData2016 for the folder")
    source = load_segmentation_data(args.data, args.split, data_dir=args.data_dir)
    model, zoo_id = _load_segmenter(args.model, args.weights, args.image_size)
    settings = _settings(args, model, source.classes == ADE20K_CLASSES and args.data != "digits")
    result = evaluate_segmentation(model, source, settings=settings, published=args.published_miou, zoo_id=zoo_id,
                                   max_examples=args.max_examples, progress=args.verbosity > 0)
    print(result.summary())
    if result.published_miou is None:
        print("no published mIoU to compare with: pass a zoo id (as MODEL or --weights) or --published-miou")
    if args.output:
        scores = result.scores
        write_atomic(args.output, json.dumps({
            "miou": scores.miou, "pixel_accuracy": scores.pixel_accuracy, "mean_accuracy": scores.mean_accuracy,
            "per_class_iou": dict(zip(scores.class_names or map(str, range(len(scores.per_class_iou))),
                                      scores.per_class_iou)),
            "images": result.count, "data": result.description, "published_miou": result.published_miou,
            "comparable": result.comparable}, indent=2))
    return 0


def _seg_predict(args):
    import os

    import numpy as np
    import tensorflow as tf

    from keras_visrec.recipe.transforms import decode_image
    from keras_visrec.segmentation.inference import predict_labels
    from keras_visrec.segmentation.visualize import overlay, write_png

    _verbosity(args)
    if not os.path.isfile(args.image):
        raise SystemExit(f"seg-predict: image file not found: {args.image!r}")
    if not args.output.lower().endswith(".png"):
        raise SystemExit(f"seg-predict: --output must be a .png file; received {args.output!r}")
    image = decode_image(tf.io.read_file(args.image)).numpy()
    model, _ = _load_segmenter(args.model, args.weights, args.image_size)
    settings = _settings(args, model, False)
    labels = predict_labels(model, image.astype(np.float32), settings)
    classes = int(model.output_shape[-1])
    write_png(args.output, overlay(image, labels, classes, alpha=args.alpha))
    present = np.unique(labels).tolist()
    if args.verbosity > 0:
        print(f"wrote {args.output} ({image.shape[0]}×{image.shape[1]}, classes present: {present})")
    return 0


def _verbosity(args):
    """``--verbose``: TensorFlow's Python logs at INFO; default and ``--quiet``: warnings only."""
    import tensorflow as tf

    tf.get_logger().setLevel("INFO" if args.verbosity >= 2 else "WARNING")


def _seg_demo(args):
    from keras_visrec.segmentation.demo import run_seg_demo

    _verbosity(args)
    run_seg_demo(output_dir=args.output_dir, epochs=args.epochs, export=not args.no_export,
                 strategy=None if args.strategy == "none" else args.strategy, seed=args.seed,
                 verbose=args.verbosity)
    return 0

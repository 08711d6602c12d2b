"""``keras-visrec adpc-eval``: per-exit mIoU or PCKh, cumulative GFLOPs and the accuracy–compute plot.

The model is positional: ``tiny`` (a 16–64-channel configuration for the digit tasks), a registry
name (``adpc_hrnetv2_w48``, ``adpc_pose_hrnetv2_w32``; ``keras-visrec models``), a config name
(``w48``), a zoo id, a ``.keras`` file, or an official ADP-C / HRNet ``.pth`` / ``.pth.tar``
(its width, exit type and task are read from the file). ``--data``: ``digits`` (offline: the
digit segmentation or keypoint task, trained first when no weights are given), ``cityscapes``
(tensorflow-datasets' manual-download builder), or a folder — for segmentation ``images/`` plus
``labels/`` PNG maps of the same names (train ids, 255 ignored), for pose an MPII root
(``annot/valid.json`` + ``images/``).
"""

import os

from keras_visrec.cli_args import (add_data, add_deprecated, add_image_size, add_max_examples, add_model, add_output,
                                   add_seed, add_verbosity, add_weights, positive_int)

__all__ = ["register"]

_TINY = dict(stem=16, layer1=(1, 8), stages=((1, (1, 1), (8, 16)), (1, (1, 1, 1), (8, 16, 32)),
                                           (1, (1, 1, 1, 1), (8, 16, 32, 64))))
_IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")


def register(subparsers):
    parser = subparsers.add_parser(
        "adpc-eval", help="evaluate an ADP-C anytime model exit by exit (mIoU / PCKh, GFLOPs, plot)",
        description="Per-exit accuracy (mIoU for segmentation, PCKh@0.5 for pose) and cumulative GFLOPs of an "
                    "ADP-C model in each masking mode. Without --weights on --data digits, the model is first "
                    "trained for --epochs.")
    add_model(parser, default="tiny",
              help="tiny, a registry name (adpc_hrnetv2_w48, adpc_pose_hrnetv2_w32), a config name (w48), a zoo id, "
                   "a .keras file or an official ADP-C / HRNet .pth")
    # its own dest: argparse writes an absent optional positional's default after the options
    add_deprecated(parser, "--backbone", dest="deprecated_model", replacement="the positional MODEL")
    add_weights(parser)
    parser.add_argument("--task", choices=("segmentation", "pose"), default=None,
                        help="segmentation (Cityscapes, mIoU) or pose (MPII, PCKh@0.5); default: the model's, else "
                             "segmentation")
    add_data(parser, default="digits", deprecated=("--dataset",),
             help="digits (offline), cityscapes, or a folder (images/ + labels/ for segmentation, an MPII root for pose)")
    add_image_size(parser, deprecated=("--size",),
                   help="digit canvas side (default 64); resize other images to this height (MPII: the crop, "
                        "default 256)")
    add_max_examples(parser, default=64, deprecated=("--limit",), help="evaluation images")
    add_output(parser, deprecated=("--plot",), help="write the accuracy–compute PNG here")
    add_seed(parser)
    add_verbosity(parser)
    parser.add_argument("--exit-type", default=None, choices=("rh", "ee"), help="exits of a model built here "
                        "(default: rh, or the released kind of a zoo id)")
    parser.add_argument("--threshold", type=float, default=None,
                        help="confidence threshold (default: the model's; 0.998 segmentation, 0.1 pose)")
    parser.add_argument("--modes", default="none,dense,sparse", help="masking modes to evaluate, comma-separated")
    parser.add_argument("--epochs", type=positive_int, default=3, help="training epochs on digits without --weights")
    parser.add_argument("--no-flip", dest="flip", action="store_false", help="pose: no flip testing")
    parser.set_defaults(func=_run)


def _is_file(text):
    return text.lower().endswith((".keras", ".pth", ".pth.tar", ".pt")) or os.path.isfile(text)


def _checkpoint_config(path):
    """``AnytimeHRNet`` keyword arguments for an official ``.pth``, read from its keys and shapes."""
    from keras_visrec.converters.anytime import infer_anytime_config
    from keras_visrec.converters.pytorch_reader import load_pytorch_checkpoint
    from keras_visrec.hrnet import HRNET_CONFIGS

    found = infer_anytime_config(load_pytorch_checkpoint(path))
    config = found["config"]
    named = [k for k, v in HRNET_CONFIGS.items()
             if v["stem"] == config["stem"] and tuple(v["layer1"]) == config["layer1"]
             and tuple((m, tuple(b), tuple(w)) for m, b, w in v["stages"]) == config["stages"]]
    kwargs = dict(backbone=named[0] if named else config, task=found["task"] or "segmentation")
    if found["classes"]:
        kwargs["classes"] = found["classes"]
    if found["exit_type"]:
        kwargs["exit_type"] = found["exit_type"]
    if found["exit_width"]:
        kwargs["exit_width"] = found["exit_width"]
    return kwargs


def _build(args, classes):
    """``(model, trained)``: the model the positional argument names, weights loaded when given."""
    from keras_visrec.adpc import AnytimeHRNet
    from keras_visrec.hrnet import HRNET_CONFIGS

    name, weights = args.model, args.weights
    common = dict(threshold=args.threshold, mode="none")
    if args.exit_type:
        common["exit_type"] = args.exit_type
    if name == "tiny" or name in HRNET_CONFIGS:
        backbone = _TINY if name == "tiny" else name
        model = AnytimeHRNet(backbone, classes=classes, task=args.task or "segmentation", weights=weights,
                             exit_width=16 if name == "tiny" else None,
                             bn_momentum=0.9 if weights is None else 0.99, **common)
        return model, weights is not None
    if name.lower().endswith(".keras"):
        return _load_keras(args), True
    if _is_file(name):
        kwargs = {**_checkpoint_config(name), **common}
        return AnytimeHRNet(weights=name, **kwargs), True
    from keras_visrec import models, zoo

    if name not in models.list_models():
        entry = zoo.get_weights(name)  # unknown ids raise with close matches
        name, weights = entry.arch, weights or entry.id
    if models.model_family(name) != "adpc":
        raise SystemExit(f"adpc-eval: {name!r} is a {models.model_family(name)} model, not an ADP-C one; "
                         f"ADP-C models: {models.list_models(family='adpc')}.")
    kwargs = {k: v for k, v in common.items() if v is not None}
    if classes is not None and weights is None:
        kwargs["classes"] = classes
    return models.get_model(name, weights=weights, **kwargs), weights is not None


def _load_keras(args):
    """The saved ``AnytimeHRNet`` the positional argument names, ``--weights`` loaded into it when given."""
    import keras

    model = keras.saving.load_model(args.model, compile=False)
    if not hasattr(model, "anytime"):
        raise SystemExit(f"adpc-eval: {args.model!r} holds a {type(model).__name__}, not an AnytimeHRNet.")
    if args.weights:
        model.load_pretrained(args.weights)
    return model


def _resize(images, labels, height):
    """Images (bilinear) and label maps (nearest) to ``height`` rows, the width a multiple of 32."""
    import numpy as np
    from keras import ops

    width = max(32, int(round(images.shape[2] * height / images.shape[1] / 32)) * 32)
    images = np.asarray(ops.image.resize(images, (height, width), interpolation="bilinear"))
    labels = np.asarray(ops.image.resize(labels[..., None].astype("float32"), (height, width),
                                         interpolation="nearest"))[..., 0].astype("int32")
    return images, labels


def _segmentation_data(args):
    """``(train or None, (images, labels), classes)`` with 0–255 images."""
    import numpy as np

    if args.data == "digits":
        from keras_visrec.data.digit_segmentation import DIGIT_SEGMENTATION_CLASSES, load_digit_segmentation

        train, test = load_digit_segmentation(size=args.image_size or 64, num_train=256, num_test=args.max_examples,
                                              seed=args.seed)
        return train, test, DIGIT_SEGMENTATION_CLASSES
    if args.data == "cityscapes":
        from keras_visrec.data.cityscapes import CITYSCAPES_CLASSES, load_cityscapes

        dataset = load_cityscapes("validation", data_dir=args.data_dir, manual_dir=args.manual_dir)
        pairs = [(np.asarray(i), np.asarray(l)) for i, l in dataset.take(args.max_examples).as_numpy_iterator()]
        images, labels = (np.stack(v) for v in zip(*pairs))
        classes = CITYSCAPES_CLASSES
    elif os.path.isdir(args.data):
        images, labels = _label_folder(args.data, args.max_examples)
        classes = int(labels[labels != 255].max()) + 1 if (labels != 255).any() else None  # for a model built here
    else:
        raise SystemExit(f"adpc-eval: --data must be digits, cityscapes or a folder; received {args.data!r}.")
    if args.image_size:
        images, labels = _resize(images, labels, args.image_size)
    return None, (images, labels), classes


def _label_folder(folder, limit):
    import numpy as np
    from PIL import Image

    image_dir, label_dir = os.path.join(folder, "images"), os.path.join(folder, "labels")
    if not (os.path.isdir(image_dir) and os.path.isdir(label_dir)):
        raise SystemExit(f"adpc-eval: folder {folder!r} needs images/ and labels/ (PNG label maps of the same names).")
    names = sorted(n for n in os.listdir(image_dir) if n.lower().endswith(_IMAGE_SUFFIXES))[:limit]
    if not names:
        raise SystemExit(f"adpc-eval: no images in {image_dir!r}.")
    images, labels = [], []
    for name in names:
        label_path = os.path.join(label_dir, os.path.splitext(name)[0] + ".png")
        if not os.path.isfile(label_path):
            raise SystemExit(f"adpc-eval: {name!r} has no label map {label_path!r}.")
        images.append(np.asarray(Image.open(os.path.join(image_dir, name)).convert("RGB"), "float32"))
        labels.append(np.asarray(Image.open(label_path), "int32"))
    shapes = {i.shape for i in images}
    if len(shapes) > 1:
        raise SystemExit(f"adpc-eval: the images in {image_dir!r} have several sizes {sorted(shapes)}; pass "
                         "--image-size to resize them.")
    return np.stack(images), np.stack(labels)


def _pose_data(args, with_train=True):
    """``(train or None, test PoseSet)``; the digit training canvases only ``with_train``."""
    if args.data == "digits":
        from keras_visrec.data.digit_keypoints import load_digit_keypoints

        train, test = load_digit_keypoints(size=args.image_size or 64, num_train=512 if with_train else 0,
                                           num_test=args.max_examples, seed=args.seed)
        return (train if with_train else None), test
    if os.path.isdir(args.data):
        from keras_visrec.data.mpii import PoseSet, load_mpii

        side = args.image_size or 256
        data = load_mpii(args.data, "valid", input_size=(side, side), heatmap_size=(side // 4, side // 4))
        return None, PoseSet(*(a[:args.max_examples] if hasattr(a, "shape") else a for a in data))
    raise SystemExit(f"adpc-eval --task pose: --data must be digits or an MPII folder; received {args.data!r}.")


def _task(args):
    """``--task``, else what the model argument says: a checkpoint's head, a zoo entry's task, the
    ``adpc_pose_`` registry prefix; segmentation otherwise. `None` for a ``.keras`` file (its model's)."""
    if args.task:
        return args.task
    name = args.model
    if name.lower().endswith(".keras"):
        return None
    if _is_file(name) and not name.lower().endswith(".keras"):
        return _checkpoint_config(name)["task"]
    if "." in name and not _is_file(name):
        from keras_visrec import zoo

        if name in zoo.list_weights():
            entry = zoo.get_weights(name)
            return entry.task if entry.task in ("pose", "segmentation") else "segmentation"
    return "pose" if name.startswith("adpc_pose_") else "segmentation"


def _run(args):
    import keras
    import tensorflow as tf

    from keras_visrec.adpc import evaluate_exits, evaluate_pose_exits, plot_accuracy_compute, train_anytime

    keras.utils.set_random_seed(args.seed)
    if getattr(args, "deprecated_model", None):
        args.model = args.deprecated_model
    verbose = args.verbosity >= 1
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    task, loaded = _task(args), None
    if task is None:
        loaded = _load_keras(args)
        task = loaded.task
    args.task = task
    if task == "pose":
        train, test = _pose_data(args, with_train=loaded is None and not args.weights and not _is_file(args.model))
        classes = test.heatmaps.shape[-1]
    else:
        train, (images, labels), classes = _segmentation_data(args)
    try:
        model, trained = (loaded, True) if loaded is not None else _build(args, classes)
    except (ValueError, FileNotFoundError) as error:
        raise SystemExit(f"adpc-eval: {error}") from None
    if getattr(model, "task", task) != task:
        raise SystemExit(f"adpc-eval: {args.model!r} is a {model.task} model; pass --task {model.task}.")
    if not trained:
        if train is None:
            raise SystemExit(f"adpc-eval: --weights is required for --data {args.data}")
        columns = (train.images, train.heatmaps, train.target_weights) if task == "pose" else train
        data = tf.data.Dataset.from_tensor_slices(columns).shuffle(len(columns[0]), seed=args.seed).batch(
            16, drop_remainder=True)
        model, _ = train_anytime(lambda: model, data, epochs=args.epochs, optimizer=keras.optimizers.Adam(5e-3),
                                 verbose=2 if verbose else 0)
    curves = {}
    for mode in modes:
        if task == "pose":
            result = evaluate_pose_exits(model, test, mode=mode, threshold=args.threshold, flip=args.flip,
                                         progress=verbose)
        else:
            result = evaluate_exits(model, images, labels, mode=mode, threshold=args.threshold, progress=verbose)
        print(result.table())
        curves[mode] = result
    if args.output:
        plot_accuracy_compute(curves, args.output, title=f"ADP-C {args.model} on {args.data}")
        print(f"plot: {args.output}")
    return 0

"""``keras-visrec adpc-eval``: per-exit mIoU / GFLOPs table and the accuracy–compute plot."""

__all__ = ["register"]

_TINY = dict(stem=16, layer1=(1, 8), stages=((1, (1, 1), (8, 16)), (1, (1, 1, 1), (8, 16, 32)),
                                           (1, (1, 1, 1, 1), (8, 16, 32, 64))))


def register(subparsers):
    parser = subparsers.add_parser(
        "adpc-eval", help="evaluate an ADP-C anytime model exit by exit (mIoU, GFLOPs, plot)",
        description="Per-exit mIoU and cumulative GFLOPs of an ADP-C model in each masking mode. Without "
                    "--weights on the digit task, a model is first trained for --epochs.")
    parser.add_argument("--backbone", default="tiny", help="tiny, w18_small_v2, w18, w32 or w48")
    parser.add_argument("--exit-type", default="rh", choices=("rh", "ee"))
    parser.add_argument("--dataset", default="digits", choices=("digits", "cityscapes"))
    parser.add_argument("--data-dir", default=None, help="tfds manual dir holding the Cityscapes zips")
    parser.add_argument("--weights", default=None, help="Keras .weights.h5 or an official anytime .pth")
    parser.add_argument("--threshold", type=float, default=0.998)
    parser.add_argument("--modes", default="none,dense,sparse")
    parser.add_argument("--size", type=int, default=64, help="digit canvas side")
    parser.add_argument("--epochs", type=int, default=3, help="training epochs on digits without --weights")
    parser.add_argument("--limit", type=int, default=64, help="evaluation images")
    parser.add_argument("--plot", default=None, help="write the accuracy–compute PNG here")
    parser.set_defaults(func=_run)


def _load_data(args):
    import numpy as np

    if args.dataset == "digits":
        from keras_visrec.data.digit_segmentation import DIGIT_SEGMENTATION_CLASSES, load_digit_segmentation

        (x, y), (xt, yt) = load_digit_segmentation(size=args.size, num_train=256, num_test=args.limit)
        return (x / 127.5 - 1.0, y), (xt / 127.5 - 1.0, yt), DIGIT_SEGMENTATION_CLASSES
    from keras_visrec.data.cityscapes import CITYSCAPES_CLASSES, load_cityscapes

    dataset = load_cityscapes("validation", data_dir=args.data_dir).take(args.limit)
    images, labels = zip(*[(np.asarray(i), np.asarray(l)) for i, l in dataset.as_numpy_iterator()])
    return None, (np.stack(images), np.stack(labels)), CITYSCAPES_CLASSES


def _run(args):
    import keras
    import tensorflow as tf

    from keras_visrec.adpc import AnytimeHRNet, evaluate_exits, plot_accuracy_compute, train_anytime

    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    train, (images, labels), classes = _load_data(args)
    backbone = _TINY if args.backbone == "tiny" else args.backbone

    def build():
        return AnytimeHRNet(backbone, classes=classes, exit_type=args.exit_type, threshold=args.threshold,
                            mode="none", bn_momentum=0.9 if args.weights is None else 0.99)

    if args.weights:
        model = build()
        if args.weights.endswith(".pth"):
            from keras_visrec.converters.anytime import load_anytime_checkpoint

            load_anytime_checkpoint(model, args.weights)
        else:
            model.load_weights(args.weights)
    elif train is not None:
        data = tf.data.Dataset.from_tensor_slices(train).shuffle(len(train[0]), seed=0).batch(16, drop_remainder=True)
        model, _ = train_anytime(build, data, epochs=args.epochs, optimizer=keras.optimizers.Adam(5e-3), verbose=2)
    else:
        raise SystemExit("adpc-eval: --weights is required for --dataset cityscapes")
    curves = {}
    for mode in modes:
        result = evaluate_exits(model, images, labels, mode=mode, threshold=args.threshold)
        print(result.table())
        curves[mode] = result
    if args.plot:
        plot_accuracy_compute(curves, args.plot, title=f"ADP-C {args.backbone} on {args.dataset}")
        print(f"plot: {args.plot}")
    return 0

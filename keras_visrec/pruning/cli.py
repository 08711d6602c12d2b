"""``keras-visrec prune-study``: the four arms of a pruning method over seeds, table and plot.

Examples:

    keras-visrec prune-study --method l1 --config vgg16_a --dataset cifar10 --seeds 0 1 2 --out runs/vgg16a
    keras-visrec prune-study --method l1 --config vgg16_a --dataset digits --width 0.125 --epochs 3 --out /tmp/s
"""

__all__ = ["register"]


def register(subparsers):
    """Adds the ``prune-study`` sub-command."""
    parser = subparsers.add_parser(
        "prune-study", help="baseline / fine-tune / Scratch-E / Scratch-B for a pruning method",
        description="Runs the arms of 'Rethinking the Value of Network Pruning' for one method and "
                    "configuration over several seeds; writes study.md/.csv/.json/.png.")
    parser.add_argument("--method", required=True, choices=("l1", "slimming"))
    parser.add_argument("--config", required=True,
                        help="l1: vgg16_a, resnet56_a, resnet56_b, resnet110_a, resnet110_b; "
                             "slimming: vgg19, preresnet164, densenet40; both: vgg_custom (with --vgg-cfg)")
    parser.add_argument("--vgg-cfg", default=None, help="vgg_custom: layer list, e.g. 16,M,32,M,64")
    parser.add_argument("--pruned-cfg", default=None, help="vgg_custom with l1: the pruned layer list")
    parser.add_argument("--ratio", type=float, default=None, help="vgg_custom with slimming: share removed")
    parser.add_argument("--image-size", type=int, default=32, help="digits: image side (VGG: a multiple of "
                        "2^(pools+1))")
    parser.add_argument("--dataset", default="cifar10", choices=("cifar10", "cifar100", "digits"),
                        help="cifar10/cifar100 via tensorflow-datasets; digits: scikit-learn's, offline")
    parser.add_argument("--data-dir", default=None, help="tensorflow-datasets data directory")
    parser.add_argument("--download", action="store_true", help="let tensorflow-datasets download CIFAR")
    parser.add_argument("--width", type=float, default=1.0, help="width multiplier (VGG configurations)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--recipe", choices=("paper", "cpu"), default=None,
                        help="paper: 160 epochs etc. (default for CIFAR); cpu: scaled down (default for digits)")
    parser.add_argument("--epochs", type=int, default=None)
    parser.add_argument("--finetune-epochs", type=int, default=None)
    parser.add_argument("--batch-size", type=int, default=None)
    parser.add_argument("--lr", type=float, default=None)
    parser.add_argument("--strategy", default=None, help="default | mirrored | multiworker")
    parser.add_argument("--out", required=True, help="output directory")
    parser.add_argument("--verbose", type=int, default=1)
    parser.set_defaults(func=_run)


def _run(args):
    from keras_visrec.pruning import arms
    from keras_visrec.pruning.study import run_study

    recipe = args.recipe or ("cpu" if args.dataset == "digits" else "paper")
    overrides = {k: v for k, v in dict(epochs=args.epochs, finetune_epochs=args.finetune_epochs,
                                       batch_size=args.batch_size, learning_rate=args.lr).items() if v is not None}
    if args.dataset == "digits":
        overrides.setdefault("flip", False)
    config = arms.TrainConfig.cpu(**overrides) if recipe == "cpu" else arms.TrainConfig.paper(**overrides)
    if args.dataset == "digits":
        from keras_visrec.data import load_digits_images

        (x_train, y_train), (x_test, y_test) = load_digits_images(size=args.image_size)
        train = arms.make_dataset(x_train, y_train, batch_size=config.batch_size, training=True, flip=False)
        test = arms.make_dataset(x_test, y_test, batch_size=config.batch_size)
        classes = 10
    else:
        train, test = arms.cifar_datasets(args.dataset, batch_size=config.batch_size, data_dir=args.data_dir,
                                          download=args.download)
        classes = 100 if args.dataset == "cifar100" else 10
    result = run_study(args.method, args.config, train, test, seeds=tuple(args.seeds), train_config=config,
                       strategy=args.strategy, width=args.width, classes=classes,
                       input_shape=(args.image_size, args.image_size, 3) if args.dataset == "digits" else (32, 32, 3),
                       vgg_cfg=_layer_list(args.vgg_cfg), pruned_cfg=_layer_list(args.pruned_cfg), ratio=args.ratio,
                       out_dir=args.out, verbose=args.verbose)
    print(result.table())
    for kind, path in sorted(result.files.items()):
        print(f"{kind}: {path}")
    return 0


def _layer_list(text):
    if text is None:
        return None
    items = []
    for token in text.split(","):
        token = token.strip()
        if token.upper() == "M":
            items.append("M")
        elif token.isdigit():
            items.append(int(token))
        else:
            raise ValueError(f"A layer list holds widths and 'M', separated by commas; received {text!r}.")
    return items

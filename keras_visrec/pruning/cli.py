"""``keras-visrec prune-study``: the four arms of a pruning method over seeds, table and plot.

``--data`` takes what every training command takes (``keras_visrec.recipe.datasets``): a
tensorflow-datasets name (CIFAR-10 by default), an image folder (a stratified share held out for
testing unless ``--val-data`` names another folder) or ``digits`` (offline).

Examples:

    keras-visrec prune-study --method l1 --config vgg16_a --data cifar10 --seeds 0 1 2 --output-dir runs/vgg16a
    keras-visrec prune-study --method l1 --config vgg16_a --data digits --width 0.125 --epochs 3 --output-dir /tmp/s
    keras-visrec prune-study --method slimming --config vgg_custom --vgg-cfg 16,M,32,M,64 --data flowers/ \\
        --image-size 64 --output-dir runs/flowers
"""

import argparse

from keras_visrec.cli_args import add_data, add_image_size, add_max_examples, add_output_dir, add_strategy, add_verbosity

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
    add_data(parser, default="cifar10", deprecated=("--dataset",))
    parser.add_argument("--val-data", default=None,
                        help="test data (same kinds as --data); default: the 'test' split of a tfds name or of "
                             "digits, or a held-out share of an image folder (--holdout)")
    parser.add_argument("--val-split", default="test", help="split of --val-data (or --data) to test on "
                        "(default: test)")
    parser.add_argument("--holdout", type=float, default=0.2,
                        help="image folders without --val-data: share of each class held out for testing "
                             "(default: 0.2)")
    parser.add_argument("--download", action="store_true", help="let tensorflow-datasets download the data")
    add_image_size(parser, default=32, help="input height and width (images are resized; VGG: a multiple of "
                                            "2^(pools+1))")
    add_max_examples(parser, help="train on at most this many examples")
    parser.add_argument("--width", type=float, default=1.0, help="width multiplier (VGG configurations)")
    seeds = parser.add_mutually_exclusive_group()
    seeds.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="one full run per seed (default: 0 1 2)")
    seeds.add_argument("--seed", type=int, dest="seeds", action=_OneSeed, default=argparse.SUPPRESS,
                       help="a single run with this seed")
    parser.add_argument("--recipe", choices=("paper", "cpu"), default=None,
                        help="paper: 160 epochs etc. (default for tfds names); cpu: scaled down (default for "
                             "digits and image folders)")
    parser.add_argument("--epochs", type=int, default=None)
    parser.add_argument("--finetune-epochs", type=int, default=None)
    parser.add_argument("--batch-size", type=int, default=None)
    parser.add_argument("--lr", type=float, default=None)
    add_strategy(parser)
    # required, but checked in _run: argparse would not count the deprecated --out towards it
    add_output_dir(parser, help="where study.md/.csv/.json/.png go (required)", deprecated=("--out",))
    add_verbosity(parser)
    parser.set_defaults(func=lambda args: _run(args, parser))
    return parser


class _OneSeed(argparse.Action):
    """``--seed N``: the same as ``--seeds N``."""

    def __call__(self, parser, namespace, values, option_string=None):
        setattr(namespace, self.dest, [values])


def _run(args, parser=None):
    import os

    if args.output_dir is None:
        message = "the following arguments are required: --output-dir"
        if parser is not None:
            parser.error(message)
        raise ValueError(message)

    from keras_visrec.pruning import arms
    from keras_visrec.pruning.study import run_study
    from keras_visrec.recipe.datasets import DIGITS, load_image_source, source_from_args

    folder = os.path.isdir(args.data)
    offline = folder or args.data == DIGITS
    recipe = args.recipe or ("cpu" if offline else "paper")
    overrides = {k: v for k, v in dict(epochs=args.epochs, finetune_epochs=args.finetune_epochs,
                                       batch_size=args.batch_size, learning_rate=args.lr).items() if v is not None}
    if args.data == DIGITS:
        overrides.setdefault("flip", False)  # flips do not preserve digits
    config = arms.TrainConfig.cpu(**overrides) if recipe == "cpu" else arms.TrainConfig.paper(**overrides)
    common = dict(download=args.download, digits_size=args.image_size)
    if folder and args.val_data is None:
        train_source = source_from_args(args, "train", holdout=args.holdout, **common)
        test_source = source_from_args(args, "test", holdout=args.holdout, **common)
    else:
        train_source = source_from_args(args, "train", **common)
        test_source = (load_image_source(args.val_data, args.val_split, args.data_dir, args.manual_dir, **common)
                       if args.val_data is not None else source_from_args(args, args.val_split, **common))
    train, test = arms.source_datasets(train_source, test_source, image_size=args.image_size,
                                       batch_size=config.batch_size, flip=config.flip,
                                       max_examples=args.max_examples)
    if args.verbosity:
        print(f"data: {train_source.description} ({train_source.num_examples} examples, {train_source.num_classes} "
              f"classes); test: {test_source.description}", flush=True)
    result = run_study(args.method, args.config, train, test, seeds=tuple(args.seeds), train_config=config,
                       strategy=None if args.strategy == "none" else args.strategy, width=args.width,
                       classes=train_source.num_classes, input_shape=(args.image_size, args.image_size, 3),
                       vgg_cfg=_layer_list(args.vgg_cfg), pruned_cfg=_layer_list(args.pruned_cfg), ratio=args.ratio,
                       output_dir=args.output_dir, verbose=args.verbosity)
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


"""``keras-visrec finetune …`` and ``keras-visrec eval …``.

    keras-visrec finetune convnext_tiny --data flowers/ --weights imagenet --output-dir runs/x
    keras-visrec eval convnext_tiny --weights convnext_tiny.keras_in1k --data imagenet2012 --max-examples 500
"""

import argparse
import sys

from keras_visrec.cli_args import (add_data, add_deprecated, add_image_size, add_max_examples, add_model,
                                   add_output_dir, add_seed, add_strategy, add_verbosity, add_weights,
                                   positive_int)

__all__ = ["main", "register"]


def _ints(text):
    return tuple(int(t) for t in text.split(",") if t)


def register(subparsers):
    """Adds the ``finetune`` and ``eval`` sub-commands."""
    ft = subparsers.add_parser("finetune", help="fine-tune a ConvNeXt with the paper's recipe (resumable)")
    ft.add_argument("model", nargs="?", default=None,
                    help="registry name (default: convnext_tiny), or 'convnext' with --depths/--dims")
    add_deprecated(ft, "--model", dest="legacy_model", replacement="the positional MODEL (finetune MODEL --data DATA)")
    add_data(ft)
    add_output_dir(ft, required=True, help="checkpoints + state.json; an existing run is resumed")
    ft.add_argument("--depths", type=_ints, help="for model convnext, e.g. 1,1,1,1")
    ft.add_argument("--dims", type=_ints, help="for model convnext, e.g. 16,32,64,128")
    add_weights(ft, help="zoo id or weights file to start from")
    ft.add_argument("--weights-classes", type=int, default=1000, help="head size stored in --weights")
    ft.add_argument("--val-data", help="validation data: image folder or tfds name")
    ft.add_argument("--classes", type=int, help="expected class count (checked against the data)")
    add_image_size(ft, default=224)
    ft.add_argument("--epochs", type=int, default=30)
    ft.add_argument("--batch-size", type=int, default=32)
    ft.add_argument("--lr", type=float, default=5e-5, help="peak learning rate")
    ft.add_argument("--min-lr", type=float, default=1e-6)
    ft.add_argument("--warmup-epochs", type=float, default=0.0)
    ft.add_argument("--weight-decay", type=float, default=1e-8)
    ft.add_argument("--layer-decay", type=float, default=0.8, help="in (0, 1]; 1 turns layer-wise decay off")
    ft.add_argument("--drop-path", type=float, default=0.1)
    ft.add_argument("--head-init-scale", type=float, default=0.001)
    ft.add_argument("--smoothing", type=float, default=0.1)
    ft.add_argument("--mixup", type=float, default=0.8)
    ft.add_argument("--cutmix", type=float, default=1.0)
    ft.add_argument("--no-randaugment", action="store_true")
    ft.add_argument("--reprob", type=float, default=0.25, help="random erasing probability")
    ft.add_argument("--no-random-crop", action="store_true", help="resize whole images instead of random crops")
    ft.add_argument("--ema", type=float, help="EMA momentum of the weights, e.g. 0.9999")
    add_strategy(ft)
    ft.add_argument("--mixed-precision", choices=("mixed_bfloat16", "mixed_float16"))
    ft.add_argument("--train-split", default="train")
    ft.add_argument("--val-split", default="validation")
    ft.add_argument("--checkpoint-steps", type=positive_int, help="also checkpoint every N steps inside epochs "
                    "(a killed run then resumes mid-epoch, losing at most N steps)")
    ft.add_argument("--deterministic", action="store_true", help="TensorFlow op determinism: a resumed run ends "
                    "with the uninterrupted run's weights, bit for bit")
    add_seed(ft)
    add_verbosity(ft)
    ft.set_defaults(func=_finetune)

    ev = subparsers.add_parser("eval", help="top-1/top-5 with the official evaluation transform")
    add_model(ev, help="registry name (e.g. convnext_tiny) or a .keras model file")
    add_weights(ev, help="zoo id (its published top-1 is compared) or weights file")
    add_data(ev, default="imagenet2012")
    ev.add_argument("--split", default="validation")
    add_image_size(ev)
    ev.add_argument("--crop-pct", type=float)
    ev.add_argument("--batch-size", type=int, default=50)
    ev.add_argument("--published-top1", type=float, help="reference top-1 in percent (default: the catalogue's)")
    add_max_examples(ev)
    ev.add_argument("--pass-order", default="horizontal_first", choices=("horizontal_first", "pillow13"))
    add_verbosity(ev)
    ev.set_defaults(func=_eval)


def _is_model_name(text):
    from keras_visrec.models import list_models

    return text == "convnext" or text.endswith(".keras") or text in list_models()


def _model_and_data(args):
    """``(model, data)`` from ``MODEL --data DATA``, or the old ``DATA --model MODEL`` / ``DATA``."""
    model, data = args.model, args.data
    legacy = getattr(args, "legacy_model", None)
    if legacy is not None:
        if data is not None and model is not None:
            raise ValueError("pass `finetune MODEL --data DATA` (or the old `finetune DATA --model MODEL`), not both.")
        return legacy, data if data is not None else model
    if data is None and model is not None and not _is_model_name(model):
        print("finetune: the positional DATA is deprecated and will be removed in the next release; use "
              "`finetune MODEL --data DATA`.", file=sys.stderr)
        return "convnext_tiny", model
    if data is None:
        raise ValueError("--data is needed (a tensorflow-datasets name, an image folder or 'digits').")
    return model or "convnext_tiny", data


def main(argv=None):
    """Runs ``finetune`` / ``eval`` alone (the same parsers ``keras-visrec`` registers)."""
    parser = argparse.ArgumentParser(prog="keras-visrec")
    register(parser.add_subparsers(dest="command", metavar="COMMAND", required=True))
    args = parser.parse_args(argv)
    return int(args.func(args) or 0)


def _finetune(args):
    from keras_visrec.recipe.finetune import finetune

    try:
        model, data = _model_and_data(args)
    except ValueError as error:
        print(f"finetune: {error}", file=sys.stderr)
        return 2
    result = finetune(
        model, data, output_dir=args.output_dir, val_data=args.val_data, weights=args.weights,
        classes=args.classes, image_size=args.image_size, epochs=args.epochs, batch_size=args.batch_size,
        learning_rate=args.lr, min_learning_rate=args.min_lr, warmup_epochs=args.warmup_epochs,
        weight_decay=args.weight_decay, layer_decay=args.layer_decay, drop_path_rate=args.drop_path,
        head_init_scale=args.head_init_scale, label_smoothing=args.smoothing, mixup=args.mixup,
        cutmix=args.cutmix, rand_augment=not args.no_randaugment, random_erasing=args.reprob,
        crop_scale=None if args.no_random_crop else (0.08, 1.0), ema=args.ema, strategy=args.strategy,
        mixed_precision=args.mixed_precision, train_split=args.train_split, val_split=args.val_split,
        data_dir=args.data_dir, manual_dir=args.manual_dir, depths=args.depths, dims=args.dims,
        weights_classes=args.weights_classes, seed=args.seed, checkpoint_steps=args.checkpoint_steps,
        deterministic=args.deterministic, verbose=min(args.verbosity, 1),
    )
    if result.resumed_step:
        print(f"resumed at epoch {result.initial_epoch}, step {result.start_step}")
    for key in ("accuracy", "val_accuracy"):
        if result.history.get(key):
            curve = " ".join(f"{v:.3f}" for v in result.history[key])
            print(f"{key} per epoch: {curve}")
    print(f"checkpoints in {result.output_dir} (step {result.final_step})")
    return 0


def _eval(args):
    import keras

    from keras_visrec.recipe.evaluate import evaluate

    model = args.model
    if model.endswith(".keras"):
        model = keras.saving.load_model(model, compile=False)
    result = evaluate(
        model, args.data, weights=args.weights, split=args.split, image_size=args.image_size,
        crop_pct=args.crop_pct, batch_size=args.batch_size, published=args.published_top1,
        max_examples=args.max_examples, data_dir=args.data_dir, manual_dir=args.manual_dir,
        pass_order=args.pass_order,
    )
    print(result.summary())
    if result.published_top1 is None:
        print("no published top-1 to compare with: pass --published-top1 or a zoo id as --weights")
    return 0

"""The ``keras-visrec`` command (also ``python -m keras_visrec``).

Each sub-command lives beside the code it drives, in a module with a
``register(subparsers)`` function that adds its parsers and sets ``func`` on them. Command
modules import heavy dependencies inside their functions, so ``--help`` stays fast.
"""

import argparse
import importlib
import sys

__all__ = ["main"]

# module -> the sub-commands it registers (for the record; each module adds its own parsers)
COMMAND_MODULES = {
    "keras_visrec.demo": ("demo",),
    "keras_visrec.model_table": ("models",),
    "keras_visrec.converters.cli": ("convert",),
    "keras_visrec.tflite.cli": ("export", "bench-tflite"),
    "keras_visrec.adpc.cli": ("adpc-eval",),
    "keras_visrec.pruning.cli": ("prune-study",),
    "keras_visrec.recipe.cli": ("finetune", "eval"),
    "keras_visrec.segmentation.cli": ("seg-eval", "seg-predict", "seg-demo"),
}


def build_parser():
    parser = argparse.ArgumentParser(prog="keras-visrec", description=__doc__.splitlines()[0])
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for module_name in COMMAND_MODULES:
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as error:
            if error.name is None or not module_name.startswith(error.name):
                raise
            continue  # a part of the package not present in this checkout
        module.register(subparsers)
    return parser


def main(argv=None):
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    result = args.func(args)
    return int(result or 0)


if __name__ == "__main__":
    sys.exit(main())

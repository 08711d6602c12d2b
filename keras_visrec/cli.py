"""The ``keras-visrec`` command (also ``python -m keras_visrec``).

Each sub-command lives beside the code it drives, in a module with a
``register(subparsers)`` function that adds its parsers and sets ``func`` on them. Command
modules import heavy dependencies inside their functions, so ``--help`` stays fast. A command
module that cannot be imported (a missing optional dependency) is still listed, with the
reason, and fails loudly when it is called. Flags follow one vocabulary
(:mod:`keras_visrec.cli_args`).
"""

import argparse
import importlib
import os
import sys

__all__ = ["COMMAND_MODULES", "build_parser", "main"]

# module -> the sub-commands it registers
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


def _unavailable(module_name, error):
    def run(args):
        print(f"keras-visrec {args.command}: unavailable, {module_name} could not be imported: "
              f"{type(error).__name__}: {error}", file=sys.stderr)
        return 2

    return run


def build_parser():
    parser = argparse.ArgumentParser(prog="keras-visrec", description=__doc__.splitlines()[0])
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for module_name, commands in COMMAND_MODULES.items():
        try:
            module = importlib.import_module(module_name)
        except ImportError as error:
            for command in commands:
                broken = subparsers.add_parser(command, help=f"(unavailable: {error})", add_help=False,
                                               prefix_chars="\0")
                broken.add_argument("rest", nargs=argparse.REMAINDER)
                broken.set_defaults(func=_unavailable(module_name, error))
            continue
        module.register(subparsers)
    return parser


def _quiet_tensorflow(argv):
    """TensorFlow's C++ start-up logs (oneDNN banner, CUDA probing) stay hidden unless --verbose."""
    if "--verbose" not in argv and "tensorflow" not in sys.modules:
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
        os.environ.setdefault("GRPC_VERBOSITY", "ERROR")


def main(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    _quiet_tensorflow(argv)
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    result = args.func(args)
    return int(result or 0)


if __name__ == "__main__":
    sys.exit(main())

"""The command line's one vocabulary: the same flag for the same idea in every sub-command.

Every ``keras-visrec`` command builds its parser from these helpers:

* positional ``model`` — a registry name, a zoo id or a model file (``.keras``);
* ``--weights`` — a zoo id or a weights file;
* ``--output`` (one file) / ``--output-dir`` (a folder);
* ``--data`` — a tensorflow-datasets name, an image folder or ``digits`` (offline);
* ``--image-size``, ``--max-examples``, ``--seed``;
* ``--strategy {none,mirrored,multiworker}``;
* ``--verbose`` / ``--quiet``.

Old spellings keep working for one release: they print what replaces them (on stderr) and set
the same destination.
"""

import argparse
import sys

__all__ = [
    "DATA_HELP",
    "STRATEGIES",
    "add_data",
    "add_deprecated",
    "add_image_size",
    "add_max_examples",
    "add_model",
    "add_output",
    "add_output_dir",
    "add_seed",
    "add_strategy",
    "add_verbosity",
    "add_weights",
    "positive_int",
    "strategy_argument",
]

STRATEGIES = ("none", "mirrored", "multiworker")
DATA_HELP = "a tensorflow-datasets name, an image folder (one subfolder per class) or 'digits' (offline)"


def positive_int(text):
    """argparse type: an integer >= 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, received {text!r}")
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, received {text!r}")
    return value


class _Deprecated(argparse.Action):
    """Stores like the flag that replaces it, after saying so on stderr."""

    def __init__(self, option_strings, dest, replacement=None, store_const=None, **kwargs):
        self.replacement = replacement
        self.store_const = store_const
        if store_const is not None:
            kwargs["nargs"] = 0
        super().__init__(option_strings, dest, **kwargs)

    def __call__(self, parser, namespace, values, option_string=None):
        print(f"{parser.prog}: {option_string} is deprecated and will be removed in the next release; "
              f"use {self.replacement}.", file=sys.stderr)
        setattr(namespace, self.dest, self.store_const if self.store_const is not None else values)


def add_deprecated(parser, *old, dest, replacement, store_const=None, type=None):
    """Accepts ``old`` spellings of an option for one release (hidden from ``--help``)."""
    kwargs = {"type": type} if type is not None and store_const is None else {}
    parser.add_argument(*old, dest=dest, action=_Deprecated, replacement=replacement, store_const=store_const,
                        help=argparse.SUPPRESS, default=argparse.SUPPRESS, **kwargs)


def add_model(parser, *, help="a registry name (keras-visrec models), a zoo id or a .keras file", default=None,
              deprecated=()):
    """Positional ``model`` (optional when ``default`` is given); ``deprecated`` old flags for it."""
    if default is None:
        parser.add_argument("model", help=help)
    else:
        # An absent optional positional would be written (as its default) after the options were
        # read, overwriting a deprecated flag's value: the default comes from set_defaults instead.
        parser.set_defaults(model=default)
        parser.add_argument("model", nargs="?", default=argparse.SUPPRESS, help=f"{help} (default: {default})")
    if deprecated:
        add_deprecated(parser, *deprecated, dest="model", replacement="the positional MODEL")


def add_weights(parser, *, help="a zoo id (keras-visrec models) or a weights file (.keras/.weights.h5/.pth/.safetensors)"):
    parser.add_argument("--weights", default=None, help=help)


def add_output(parser, *, help="the file to write", required=False, default=None, deprecated=()):
    """``--output`` (one file; ``-o`` for short)."""
    parser.add_argument("-o", "--output", default=default, required=required, help=help)
    if deprecated:
        add_deprecated(parser, *deprecated, dest="output", replacement="--output")


def add_output_dir(parser, *, help="the folder to write into", required=False, default=None, deprecated=()):
    """``--output-dir`` (a folder)."""
    parser.add_argument("--output-dir", default=default, required=required, help=help)
    if deprecated:
        add_deprecated(parser, *deprecated, dest="output_dir", replacement="--output-dir")


def add_data(parser, *, default=None, required=False, help=DATA_HELP, deprecated=()):
    """``--data``: the same sources in every command that trains or evaluates."""
    parser.add_argument("--data", default=default, required=required,
                        help=help if default is None else f"{help} (default: {default})")
    parser.add_argument("--data-dir", default=None, help="tensorflow-datasets data directory")
    parser.add_argument("--manual-dir", default=None, help="tensorflow-datasets manual download directory")
    if deprecated:
        add_deprecated(parser, *deprecated, dest="data", replacement="--data")


def add_image_size(parser, *, default=None, help="input height and width in pixels", deprecated=()):
    parser.add_argument("--image-size", type=positive_int, default=default,
                        help=help if default is None else f"{help} (default: {default})")
    if deprecated:
        add_deprecated(parser, *deprecated, dest="image_size", replacement="--image-size", type=positive_int)


def add_max_examples(parser, *, default=None, help="use at most this many examples", deprecated=()):
    parser.add_argument("--max-examples", type=positive_int, default=default,
                        help=help if default is None else f"{help} (default: {default})")
    if deprecated:
        add_deprecated(parser, *deprecated, dest="max_examples", replacement="--max-examples", type=positive_int)


def add_seed(parser, *, default=0):
    parser.add_argument("--seed", type=int, default=default, help=f"random seed (default: {default})")


def strategy_argument(text):
    """argparse type for ``--strategy``: the choices, plus ``default`` (the old spelling of ``none``)."""
    if text == "default":
        print("--strategy default is deprecated and will be removed in the next release; use --strategy none.",
              file=sys.stderr)
        return "none"
    if text not in STRATEGIES:
        raise argparse.ArgumentTypeError(f"expected one of {', '.join(STRATEGIES)}; received {text!r}")
    return text


def add_strategy(parser, *, default="none"):
    """``--strategy {none,mirrored,multiworker}`` (a ``tf.distribute`` strategy for training)."""
    parser.add_argument("--strategy", type=strategy_argument, default=default, metavar="{" + ",".join(STRATEGIES) + "}",
                        help=f"tf.distribute strategy (default: {default})")


def add_verbosity(parser):
    """``--verbose`` (progress, TensorFlow's own logs) / ``--quiet`` (results only); default: progress bars."""
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--verbose", dest="verbosity", action="store_const", const=2, default=1,
                       help="more output, TensorFlow's C++ logs included")
    group.add_argument("--quiet", dest="verbosity", action="store_const", const=0, help="print the results only")

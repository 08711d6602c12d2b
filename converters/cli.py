"""``keras-visrec convert``: checkpoint → ``.weights.h5`` / ``.keras``, with a mapping summary and a parity check.

Single file:

    keras-visrec convert convnext_tiny convnext_tiny_1k_224_ema.pth --output tiny.weights.h5

prints which upstream layout was detected, how many tensors / parameters were mapped, what was
ignored, and the max abs logit difference against a PyTorch forward pass of the same checkpoint.
The check fails the command (exit 1, no output file) when that difference exceeds
``--tolerance`` (default 1e-4); where it cannot run (torch not installed, no head, no PyTorch
reference for the family) the summary records ``null`` and the reason. ``--no-check`` skips it.

Batch (zoo artefacts):

    keras-visrec convert --batch convnext_tiny.fb_in1k convnext_v2_atto.fb_fcmae_ft_in1k \\
        --output-dir artefacts/ [--from-dir downloads/] [--allow-unverified]

converts each catalogue entry (from ``--from-dir`` when its file is there, else downloaded and
verified) to ``<id>.weights.h5`` and appends one JSON manifest line per artefact to
``<output-dir>/manifest.jsonl`` (id, file, sha256, bytes, source url, source sha256, params,
parity and the reason when it is null). Also available as ``python -m keras_visrec.converters``.
"""

import argparse
import json
import math
import os
import sys

from keras_visrec.cli_args import add_deprecated, add_output, add_output_dir, add_verbosity

__all__ = ["ParityError", "build_parser", "convert_file", "main", "register"]

DEFAULT_TOLERANCE = 1e-4


class ParityError(ValueError):
    """The converted model's logits differ from PyTorch's by more than the tolerance."""


def register(subparsers):
    """Adds the ``convert`` sub-command to the ``keras-visrec`` parser."""
    parser = subparsers.add_parser("convert", help="convert a PyTorch / keras.applications checkpoint",
                                   description=__doc__.split("\n\n")[0])
    _add_arguments(parser)
    parser.set_defaults(func=run)
    return parser


def _tolerance(text):
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a non-negative number, received {text!r}")
    if not math.isfinite(value) or value < 0:
        raise argparse.ArgumentTypeError(f"expected a non-negative number, received {text!r}")
    return value


def _add_arguments(parser):
    parser.add_argument("model", nargs="?", help="registry name of the architecture, e.g. convnext_tiny "
                                                 "(see keras-visrec models)")
    parser.add_argument("checkpoint", nargs="?", help=".pth / .pt / .bin / .safetensors file")
    add_deprecated(parser, "--arch", dest="arch", replacement="the positional MODEL (convert MODEL CHECKPOINT)")
    add_output(parser, help="output .weights.h5 or .keras file")
    parser.add_argument("--classes", type=int, default=None, help="head size (default: from the checkpoint)")
    parser.add_argument("--no-top", action="store_true", help="convert without the classification head")
    parser.add_argument("--layout", choices=("official", "official_isotropic", "timm", "hf"), default=None)
    parser.add_argument("--ema", action="store_true",
                        help="take the EMA weights (model_ema) of a training checkpoint instead of model")
    parser.add_argument("--no-check", action="store_true", help="skip the PyTorch parity check")
    parser.add_argument("--tolerance", type=_tolerance, default=DEFAULT_TOLERANCE,
                        help=f"largest max-abs logit difference the check accepts (default: {DEFAULT_TOLERANCE:g})")
    parser.add_argument("--batch", nargs="+", metavar="ZOO_ID", help="convert these catalogue entries")
    add_output_dir(parser, default="zoo_artefacts", help="batch output directory (default: zoo_artefacts)")
    parser.add_argument("--from-dir", default=None, help="batch: look for upstream files here first")
    parser.add_argument("--allow-unverified", action="store_true",
                        help="batch: accept catalogue entries without a published sha256")
    add_verbosity(parser)


def _model_and_checkpoint(args):
    """(arch, checkpoint) from ``MODEL CHECKPOINT`` or the old ``CHECKPOINT --arch MODEL``."""
    model = args.model
    arch = getattr(args, "arch", None)
    if arch is not None:
        if args.checkpoint is not None:
            raise ValueError("pass either `convert MODEL CHECKPOINT` or the old `convert CHECKPOINT --arch MODEL`, "
                             "not both.")
        return arch, model
    return model, args.checkpoint


def build_parser():
    parser = argparse.ArgumentParser(prog="python -m keras_visrec.converters", description=__doc__.split("\n\n")[0])
    _add_arguments(parser)
    parser.set_defaults(func=run)
    return parser


def main(argv=None):
    args = build_parser().parse_args(argv)
    return int(args.func(args) or 0)


def run(args):
    """Entry point of the sub-command; returns the exit code."""
    if args.batch:
        return _run_batch(args)
    try:
        arch, checkpoint = _model_and_checkpoint(args)
    except ValueError as error:
        print(f"convert: {error}", file=sys.stderr)
        return 2
    if not checkpoint or not arch or not args.output:
        print("convert: MODEL, CHECKPOINT and --output are needed (or --batch ZOO_ID ...).", file=sys.stderr)
        return 2
    if not args.output.endswith((".weights.h5", ".keras")):
        print(f"convert: --output must end with .weights.h5 or .keras; received {args.output!r}.", file=sys.stderr)
        return 2
    try:
        summary = convert_file(checkpoint, arch, args.output, classes=args.classes, include_top=not args.no_top,
                               layout=args.layout, check=not args.no_check, tolerance=args.tolerance,
                               prefer_ema=args.ema)
    except ParityError as error:
        print(f"convert: {error}", file=sys.stderr)
        return 1
    except (OSError, ValueError) as error:  # bad file, wrong architecture, unknown arch
        print(f"convert: {error}", file=sys.stderr)
        return 1
    if args.verbosity:
        _print_summary(summary)
    return 0


def convert_file(checkpoint, arch, output, *, classes=None, include_top=True, layout=None, check=True,
                 tolerance=DEFAULT_TOLERANCE, resolution=224, prefer_ema=False):
    """Converts one checkpoint to ``output``; returns a summary dict (also used by the batch mode).

    ``resolution`` is the input size of a ``.keras`` output (a ``.weights.h5`` fits any size);
    ``prefer_ema`` takes a training checkpoint's ``model_ema`` over its ``model``. With
    ``check``, a parity above ``tolerance`` raises :class:`ParityError` before anything is written;
    a check that cannot run leaves ``parity_max_abs`` None with ``parity_reason``.
    """
    from keras_visrec.converters.convnext_keys import (
        assign_state_dict, convert_state_dict, detect_layout, unwrap_state_dict,
    )
    from keras_visrec.converters.pytorch_reader import load_pytorch_checkpoint
    from keras_visrec.models import get_model, model_family

    family = model_family(arch)
    if not family.startswith("convnext"):
        raise ValueError(f"`convert` maps ConvNeXt checkpoints; {arch!r} is a {family!r} model — load its "
                         f"checkpoint with weights=PATH instead.")
    state = unwrap_state_dict(load_pytorch_checkpoint(checkpoint), prefer_ema=prefer_ema, source=checkpoint)
    layout = layout or detect_layout(state, source=checkpoint)
    converted, unmapped = convert_state_dict(state, layout, source=checkpoint)
    if classes is None:
        head = converted.get("head_dense", {}).get("bias")
        classes = int(head[0].shape[0]) if head is not None else 1000
    model = get_model(arch, include_top=include_top, classes=classes, include_preprocessing=False,
                      classifier_activation=None, input_shape=(None, None, 3))
    result = assign_state_dict(model, converted, include_top=include_top, source=checkpoint, unmapped=unmapped)
    summary = {
        "checkpoint": os.fspath(checkpoint), "arch": arch, "layout": layout, "classes": classes,
        "tensors": len(state), "layers_assigned": len(result["assigned"]), "ignored": result["ignored"],
        "params": int(model.count_params()), "output": output, "parity_max_abs": None,
        "parity_reason": "skipped (--no-check)", "tolerance": tolerance,
    }
    if check:
        summary["parity_max_abs"], summary["parity_reason"] = _parity(model, state, layout, include_top)
        if summary["parity_max_abs"] is not None and not summary["parity_max_abs"] <= tolerance:
            raise ParityError(
                f"{checkpoint}: converted logits differ from PyTorch's by {summary['parity_max_abs']:.3e} (max abs), "
                f"above --tolerance {tolerance:g}; nothing was written."
            )
    _save(model, output, include_top=include_top, arch=arch, classes=classes, resolution=resolution)
    return summary


def _parity(model, state, layout, include_top):
    """``(max abs logit difference, None)``, or ``(None, why it could not run)``."""
    if not include_top:
        return None, "not run: the check compares logits and needs the head (--no-top given)"
    try:
        import torch  # noqa: F401
    except ImportError:
        return None, "not run: torch is not installed (pip install keras_visrec[torch])"
    from keras_visrec.converters.parity import max_abs_difference

    return max_abs_difference(model, state, layout, size=64), None


def _save(model, output, *, include_top, arch, classes, resolution):
    """Saves atomically (temp file in the same directory, then os.replace)."""
    from keras_visrec.files import atomic_path
    from keras_visrec.models import get_model

    os.makedirs(os.path.dirname(os.path.abspath(output)), exist_ok=True)
    with atomic_path(output) as partial:
        if not output.endswith(".weights.h5"):
            # the saved model is the usual builder output: preprocessing in, softmax out
            shape = (resolution, resolution, 3) if include_top else None
            full = get_model(arch, include_top=include_top, classes=classes, input_shape=shape)
            from keras_visrec.weights import copy_weights_by_name

            copy_weights_by_name(model, full)
            full.save(partial)
        else:
            model.save_weights(partial)


def _print_summary(summary):
    print(f"checkpoint: {summary['checkpoint']}")
    print(f"layout: {summary['layout']}")
    print(f"arch: {summary['arch']} ({summary['classes']} classes, {summary['params']:,} parameters)")
    print(f"mapped: {summary['tensors'] - len(summary['ignored'])} tensors → {summary['layers_assigned']} layers")
    if summary["ignored"]:
        print(f"ignored (head not built): {', '.join(summary['ignored'])}")
    parity = summary["parity_max_abs"]
    if parity is not None:
        print(f"parity vs PyTorch (max abs logits): {parity:.3e} (tolerance {summary['tolerance']:g})")
    else:
        print(f"parity: {summary['parity_reason']}")
    print(f"written: {summary['output']}")


def _run_batch(args):
    from keras_visrec import zoo

    os.makedirs(args.output_dir, exist_ok=True)
    manifest = os.path.join(args.output_dir, "manifest.jsonl")
    for zoo_id in args.batch:
        entry = zoo.get_weights(zoo_id)
        if entry.format != "pth":
            print(f"{zoo_id}: already a Keras file ({entry.format}); nothing to convert.")
            continue
        local = os.path.join(args.from_dir, entry.filename) if args.from_dir else None
        if local and os.path.isfile(local):
            source = local
            if entry.sha256 and zoo.sha256_file(source) != entry.sha256:
                print(f"{zoo_id}: {source} does not match the published sha256.", file=sys.stderr)
                return 1
            if not entry.sha256 and not args.allow_unverified:
                print(f"{zoo_id}: no published sha256; pass --allow-unverified.", file=sys.stderr)
                return 1
        else:
            source = zoo.fetch_weights(zoo_id, allow_unverified=args.allow_unverified)
        output = os.path.join(args.output_dir, f"{zoo_id}.weights.h5")
        try:
            summary = convert_file(source, entry.arch, output, classes=entry.classes, check=not args.no_check,
                                   tolerance=args.tolerance, resolution=entry.resolution)
        except (OSError, ValueError) as error:
            print(f"{zoo_id}: {error}", file=sys.stderr)
            return 1
        if args.verbosity:
            _print_summary(summary)
        line = {
            "id": zoo_id, "file": os.path.basename(output), "sha256": zoo.sha256_file(output),
            "bytes": os.path.getsize(output), "source_url": entry.url, "source_sha256": zoo.sha256_file(source),
            "source_sha256_published": entry.sha256 is not None, "params": summary["params"],
            "parity_max_abs": summary["parity_max_abs"], "parity_reason": summary["parity_reason"],
        }
        with open(manifest, "a", encoding="utf-8") as handle:
            handle.write(json.dumps(line) + "\n")
        print(f"manifest: {json.dumps(line)}")
    return 0

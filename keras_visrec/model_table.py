"""The table of every registered model with its parameters and MACs, computed from the code.

``keras-visrec models --markdown`` prints the README's model table; a test checks that the README
holds exactly this output, so the table cannot drift from the builders.
"""

import fnmatch

__all__ = ["FAMILY_INPUT_SHAPES", "MODEL_INPUT_SHAPES", "model_rows", "markdown_table", "register"]

# Input resolution at which each family's MACs are reported (the papers' conventions).
FAMILY_INPUT_SHAPES = {
    "convnext": (224, 224, 3),
    "convnext_isotropic": (224, 224, 3),
    "convnext_v2": (224, 224, 3),
    "cifar": (32, 32, 3),
    "hrnet": (1024, 2048, 3),
    "adpc": (1024, 2048, 3),  # Cityscapes
    "upernet": (512, 2048, 3),  # ADE20K, as the ConvNeXt paper reports FLOPs
}
# Models reported at another resolution than their family's.
MODEL_INPUT_SHAPES = {"adpc_pose_*": (256, 256, 3)}  # MPII
_DEFAULT_SHAPE = (224, 224, 3)


def _input_shape(name, family):
    for pattern, shape in MODEL_INPUT_SHAPES.items():
        if fnmatch.fnmatchcase(name, pattern):
            return shape
    return FAMILY_INPUT_SHAPES.get(family, _DEFAULT_SHAPE)


def model_rows(pattern="*"):
    """``(name, family, params, GMACs, input shape)`` for every registered model matching ``pattern``."""
    import keras

    from keras_visrec.flops import count_flops
    from keras_visrec.models import get_model, list_models, model_family

    rows = []
    for name in list_models(pattern):
        family = model_family(name)
        shape = _input_shape(name, family)
        # parameters and MACs need shapes only: inside a StatelessScope the weights are never
        # initialised (a 350 M-parameter build takes 1 s, not 12)
        with keras.StatelessScope(initialize_variables=False):
            model = get_model(name, input_shape=(None, None, shape[-1]) if family == "hrnet" else shape)
        graph = getattr(model, "network", model)  # AnytimeHRNet's functional network (all exits, unmasked)
        params = graph.count_params()
        gmacs = count_flops(graph, input_shape=shape).total / 1e9
        rows.append((name, family, params, gmacs, shape))
        del model
        keras.backend.clear_session()  # collects garbage too (free_memory=True)
    return rows


def markdown_table(rows):
    """Renders :func:`model_rows` output as a Markdown table."""
    lines = ["| model | family | params (M) | GMACs | input |", "|---|---|---:|---:|---|"]
    for name, family, params, gmacs, shape in rows:
        lines.append(f"| `{name}` | {family} | {params / 1e6:.2f} | {gmacs:.2f} | {shape[0]}×{shape[1]} |")
    return "\n".join(lines)


def register(subparsers):
    parser = subparsers.add_parser("models", help="list registered models with params and MACs")
    parser.add_argument("pattern", nargs="?", default="*", help="glob over model names (default: all)")
    parser.add_argument("--markdown", action="store_true", help="print the README's Markdown table")
    parser.set_defaults(func=_main)


def _main(args):
    rows = model_rows(args.pattern)
    if args.markdown:
        print(markdown_table(rows))
    else:
        for name, family, params, gmacs, shape in rows:
            print(f"{name:36s} {family:20s} {params:>14,d} params {gmacs:10.2f} GMACs @ {shape[0]}x{shape[1]}")
    return 0

"""TFLite export of an anytime model: one signature per exit, one set of weights.

``exit1(image)`` returns exit 1's logits and the branch features; ``exit2(features…, logits)``
continues from them, and so on — an app runs exit 1, shows it, and resumes from the saved
features only if it needs better. Masking (``mode="dense"``) recomputes the confidence mask from
the previous logits inside each signature. The four functions are written here; the conversion,
the report and the agreement check are :func:`keras_visrec.tflite.export_tflite`'s
(``signatures=``), like every other export of the package.
"""

from keras_visrec.adpc.exits import make_exit
from keras_visrec.adpc.masking import MaskHook, confidence_mask, validate_mode
from keras_visrec.hrnet import HRNetOps, exit_input, seg_head, stage, stem_and_layer1, transition
from keras_visrec.layers import fused_training

__all__ = ["export_anytime_tflite", "exit_signatures"]


def exit_signatures(model, input_shape, mode="none"):
    """Four ``tf.function``s ``exit1 … exit4`` with static shapes for ``input_shape`` (H, W, 3)."""
    import tensorflow as tf

    mode = validate_mode(mode)
    if mode == "sparse":
        raise ValueError("`mode` 'sparse' cannot be exported (dynamic gather sizes); use 'none' or 'dense'.")
    config, layers = model.config_dict, model._layer_map
    h, w = input_shape[0], input_shape[1]
    widths = [[config["layer1"][1] * 4]] + [list(s[2]) for s in config["stages"]]
    logits_spec = tf.TensorSpec((1, h // 4, w // 4, model.classes), tf.float32, name="logits")

    def ops_for(previous):
        hook = None
        if mode == "dense" and previous is not None:
            hook = MaskHook(confidence_mask(previous, model.threshold), "dense")
        return HRNetOps(model.name, layers=layers, conv_hook=hook), hook

    def finish(ops, hook, xs, k, previous):
        feature = exit_input(ops, xs, "last_layer" if k == 4 else f"exit{k}")
        if k == 4:
            logits = seg_head(ops, feature, model.classes, "last_layer")
        else:
            logits = make_exit(ops, feature, model.exit_type, model.classes, model.exit_width, k)
        if hook is not None:
            keep = hook.mask_at(h // 4, w // 4)[..., None]
            logits = previous * (1.0 - keep) + logits * keep
        out = {"logits": logits}
        out.update({f"feature_{i}": x for i, x in enumerate(xs)})
        return out

    # traced with the fused TensorFlow paths off: layers.Conv2D then emits Conv2D, which TFLite converts (its
    # generic Conv op, taken where oneDNN rewrites are on, has no TFLite kernel)
    @tf.function(input_signature=[tf.TensorSpec((1, h, w, 3), tf.float32, name="image")])
    def exit1(image):
        with fused_training(False):
            ops, hook = ops_for(None)
            return finish(ops, hook, stem_and_layer1(ops, image, config), 1, None)

    def make(k):
        specs = [tf.TensorSpec((1, h // 2 ** (i + 2), w // 2 ** (i + 2), c), tf.float32, name=f"feature_{i}")
                 for i, c in enumerate(widths[k - 2])]

        @tf.function(input_signature=specs + [logits_spec])
        def resume(*args):
            with fused_training(False):
                xs, previous = list(args[:-1]), args[-1]
                ops, hook = ops_for(previous)
                xs = transition(ops, xs, config["stages"][k - 2][2], k - 1)
                xs = stage(ops, xs, config["stages"][k - 2], k)
                return finish(ops, hook, xs, k, previous)

        return resume

    return {"exit1": exit1, "exit2": make(2), "exit3": make(3), "exit4": make(4)}


def export_anytime_tflite(model, path, input_shape, mode="none", *, quantization="fp32", validation_data=None,
                         verbose=False):
    """Writes ``path`` (.tflite) with signatures ``exit1`` … ``exit4``; returns its ``ExportReport``.

    Args:
        model: ``AnytimeHRNet``.
        path: output file; written to a temporary file, then moved into place.
        input_shape: ``(height, width, 3)``, sides divisible by 32.
        mode: `"none"` or `"dense"`. Defaults to `"none"`.
        quantization: str. `"fp32"`, `"fp16"` or `"dynamic"` (see ``export_tflite``).
            Defaults to `"fp32"`.
        validation_data: ``{signature: {input name: array}}`` to check each exit on; defaults
            to random inputs (``report.agreement["signatures"]``).
        verbose: bool. Print the report. Defaults to `False`.
    """
    from keras_visrec.tflite.export import export_tflite

    if len(input_shape) != 3 or input_shape[0] % 32 or input_shape[1] % 32:
        raise ValueError(f"`input_shape` must be (height, width, 3) with sides divisible by 32; "
                         f"received input_shape={input_shape!r}.")
    return export_tflite(model.network, path, signatures=exit_signatures(model, input_shape, mode),
                         quantization=quantization, validation_data=validation_data, verbose=verbose)

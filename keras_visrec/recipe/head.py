"""A fresh classification head for a new class count, initialised small (``head_init_scale``).

The paper fine-tunes with the head re-initialised and its initial weights multiplied by a small
``head_init_scale`` (0.001 for 22k → 1k), so that the new head starts near zero and does not
disturb the pretrained features in the first steps.
"""

import keras
import numpy as np

__all__ = ["replace_head"]


def _head_dense(model):
    denses = [layer for layer in model.layers if layer.name.endswith("_head_dense")]
    if len(denses) != 1:
        raise ValueError(
            f"Model {model.name!r} needs exactly one '{{name}}_head_dense' layer (a keras_visrec "
            f"classifier built with include_top=True); found {[d.name for d in denses]}."
        )
    return denses[0]


def replace_head(model, classes, head_init_scale=0.001, classifier_activation=None, seed=None):
    """A model sharing `model`'s backbone with a new `classes`-way head.

    The new ``{name}_head_dense`` takes the pooled, normalised features (the head LayerNorm is
    kept), its kernel drawn from a truncated normal (std 0.02) times `head_init_scale`, its bias
    zero; ``predictions`` applies `classifier_activation` in float32. Layer names stay the
    same, so layer-wise decay, checkpoints and converters keep working.

    Args:
        model: a keras_visrec ConvNeXt with its head (``include_top=True``).
        classes: int. New number of classes.
        head_init_scale: float > 0. Multiplies the new kernel. Defaults to `0.001`.
        classifier_activation: activation of ``predictions`` (`None`: logits). Defaults to `None`.
        seed: int or None. Seed of the new kernel. Defaults to `None`.

    Returns:
        A new `keras.Model` (the backbone layers are shared with `model`, not copied).
    """
    if isinstance(classes, bool) or not isinstance(classes, (int, np.integer)) or classes < 1:
        raise ValueError(f"`classes` must be a positive integer; received classes={classes!r}.")
    if isinstance(head_init_scale, bool) or not isinstance(head_init_scale, (int, float)) or head_init_scale <= 0:
        raise ValueError(f"`head_init_scale` must be a positive float; received head_init_scale={head_init_scale!r}.")
    old = _head_dense(model)
    features = old.input
    initializer = keras.initializers.TruncatedNormal(stddev=0.02, seed=seed)
    dense = keras.layers.Dense(int(classes), name=old.name, bias_initializer="zeros",
                               kernel_initializer=initializer, dtype=old.dtype_policy)
    logits = dense(features)
    dense.kernel.assign(dense.kernel * float(head_init_scale))
    outputs = keras.layers.Activation(classifier_activation, dtype="float32", name="predictions")(logits)
    return keras.Model(model.inputs, outputs, name=model.name)

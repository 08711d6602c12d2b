"""AdamW with layer-wise learning-rate decay (LLRD) for ConvNeXt, as the paper fine-tunes.

Layer-wise decay gives every variable a learning-rate *scale* ``decay ** (num_layers + 1 -
layer_id)``: the head learns at the full rate, the stem at the smallest. The scale multiplies the
learning rate inside the optimizer's update (and the decoupled weight decay, which PyTorch's AdamW
also scales by the group's learning rate) — not the gradient, which Adam would normalise away.

Layer ids follow the official ConvNeXt fine-tuning code (12 layers for the 4-stage models): the
stem is 0; stage 0 is 1; the first downsampling and stage 1 are 2; the second downsampling is 3;
stage 2 is split into 9 consecutive groups 3…11 (its 27 blocks three at a time, as upstream; a
stage 2 of another depth is spread evenly over the same 9 ids); the last downsampling and stage 3
are 12; the head (and anything else) is 13. Isotropic models (one stage of N blocks) use
stem 0, block ``b`` → ``b + 1``, head ``N + 1``.

No weight decay on rank ≤ 1 variables — LayerNorm scales and offsets, biases, layer scale
(LayerScale gamma) and GRN gamma/beta — as the official parameter groups do.

On TensorFlow the per-variable update is fused: Keras' generic Adam step is about a dozen
separate full-size ops per variable (the optimizer took ~6 % of a ConvNeXt-T step); TensorFlow's
``ResourceApplyAdam`` kernel computes the same formula (``m += (g − m)(1 − β₁)``, ``v += (g² −
v)(1 − β₂)``, ``θ −= lr·√(1 − β₂ᵗ)/(1 − β₁ᵗ) · m / (√v + ε)``) in one pass, and the decoupled
decay is one scaled subtraction before it. (The kernel forms ``1 − β`` in float32 where Keras
uses float64: the second moment differs by ~1e-5 relative.) The generic path runs on other backends, under a
``tf.distribute`` strategy, for AMSGrad and sparse gradients, and with
``keras_visrec.layers.fused.fused_training(False)``.
"""

import re

import keras

from keras_visrec.layers import fused

__all__ = [
    "LayerDecayAdamW",
    "PyTorchSGD",
    "convnext_adamw",
    "convnext_layer_id",
    "convnext_num_layers",
    "layer_decay_scales",
    "no_weight_decay_variables",
]

_STAGE_BLOCK = re.compile(r"_stage_(\d+)_block_(\d+)_")
_DOWNSAMPLE = re.compile(r"_downsampling_(?:layernorm|conv)_(\d+)$")
_STAGE2_GROUPS = 9  # official: 27 blocks of stage 2 in groups of 3 -> ids 3..11
_NUM_LAYERS_4_STAGE = 12


def _model_structure(model):
    """``(prefix, depths)`` of a ConvNeXt built by ``keras_visrec.convnext`` (from layer names)."""
    depths = {}
    prefix = None
    for layer in model.layers:
        match = _STAGE_BLOCK.search(layer.name)
        if match:
            stage, block = int(match.group(1)), int(match.group(2))
            depths[stage] = max(depths.get(stage, 0), block + 1)
            prefix = layer.name[: match.start()]
    if not depths:
        raise ValueError(
            f"Model {model.name!r} has no layers named '{{name}}_stage_{{s}}_block_{{b}}_*': layer-wise decay "
            "needs a ConvNeXt built by keras_visrec (see keras_visrec/convnext.py for the layer names)."
        )
    return prefix, tuple(depths[s] for s in sorted(depths))


def convnext_num_layers(depths):
    """Number of LLRD layers (the head's id is this plus one) for stage ``depths``."""
    return _NUM_LAYERS_4_STAGE if len(depths) == 4 else int(depths[0])


def convnext_layer_id(layer_name, depths):
    """LLRD layer id of a ConvNeXt layer from its name (see the module docstring).

    Args:
        layer_name: str. A layer name of a keras_visrec ConvNeXt (e.g.
            ``"convnext_tiny_stage_2_block_4_depthwise_conv"``).
        depths: tuple of ints. Blocks per stage (4 entries, or 1 for isotropic models).
    """
    num_layers = convnext_num_layers(depths)
    if layer_name.endswith("_stem_conv") or layer_name.endswith("_stem_layernorm"):
        return 0
    block = _STAGE_BLOCK.search(layer_name)
    if block:
        stage, index = int(block.group(1)), int(block.group(2))
        if len(depths) == 1:
            return index + 1
        if stage < 2:
            return stage + 1
        if stage == 2:
            return 3 + index * _STAGE2_GROUPS // depths[2]
        return num_layers
    down = _DOWNSAMPLE.search(layer_name)
    if down:
        return (2, 3, num_layers)[int(down.group(1))]
    return num_layers + 1


def layer_decay_scales(model, layer_decay):
    """Learning-rate scale of every trainable variable of a ConvNeXt, keyed by ``variable.path``.

    Args:
        model: a ConvNeXt built by keras_visrec (names are read, not the class).
        layer_decay: float in (0, 1]. Ratio between the rates of neighbouring layer ids.

    Returns:
        dict ``{variable.path: scale}``.
    """
    _check_layer_decay(layer_decay)
    _, depths = _model_structure(model)
    num_layers = convnext_num_layers(depths)
    scales = {}
    for layer in model.layers:
        layer_id = convnext_layer_id(layer.name, depths)
        for variable in layer.trainable_weights:
            scales[variable.path] = float(layer_decay ** (num_layers + 1 - layer_id))
    return scales


def no_weight_decay_variables(model):
    """Trainable variables that take no weight decay: every rank ≤ 1 variable.

    That is LayerNorm gamma/beta, biases, layer scale and GRN gamma/beta.
    """
    return [v for v in model.trainable_weights if len(v.shape) <= 1]


def _check_layer_decay(layer_decay):
    if isinstance(layer_decay, bool) or not isinstance(layer_decay, (int, float)) or not 0.0 < layer_decay <= 1.0:
        raise ValueError(f"`layer_decay` must be in (0, 1]; received layer_decay={layer_decay!r}.")


@keras.saving.register_keras_serializable(package="keras_visrec")
class LayerDecayAdamW(keras.optimizers.AdamW):
    """AdamW whose learning rate is multiplied by a per-variable scale (layer-wise decay).

    The scale applies to both the Adam step and the decoupled weight decay, like PyTorch's AdamW
    with one parameter group per ``lr_scale``. Variables are matched by ``variable.path``;
    variables absent from ``lr_scales`` use scale 1.

    Args:
        lr_scales: dict ``{variable.path: float}``, e.g. from `layer_decay_scales`.
        **kwargs: the arguments of ``keras.optimizers.AdamW`` (``learning_rate``,
            ``weight_decay``, ``beta_1``, ``beta_2``, ``epsilon``, ``use_ema``,
            ``ema_momentum``, ``global_clipnorm`` …).
    """

    def __init__(self, lr_scales=None, **kwargs):
        super().__init__(**kwargs)
        self.lr_scales = {str(k): float(v) for k, v in (lr_scales or {}).items()}
        self._scale_by_key = {}

    def build(self, var_list):
        super().build(var_list)
        self._scale_by_key = {self._var_key(v): self.lr_scales.get(v.path, 1.0) for v in var_list}

    def lr_scale(self, variable):
        """The learning-rate scale the optimizer uses for ``variable``."""
        return self._scale_by_key.get(self._var_key(variable), 1.0)

    def update_step(self, gradient, variable, learning_rate):
        scale = self.lr_scale(variable)
        learning_rate = keras.ops.cast(learning_rate, variable.dtype) * scale
        # Decoupled weight decay with the scaled rate, before the Adam step (PyTorch's order and form,
        # p·(1 − lr·wd): one pass over the variable, where p − p·(lr·wd) takes two)
        if self.weight_decay is not None and self._use_weight_decay(variable):
            wd = keras.ops.cast(self.weight_decay, variable.dtype)
            self.assign(variable, variable * (1.0 - wd * learning_rate))
        if self._fuses_update(gradient, variable):
            self._fused_adam_step(gradient, variable, learning_rate)
        else:
            keras.optimizers.Adam.update_step(self, gradient, variable, learning_rate)

    def _fuses_update(self, gradient, variable):
        """TensorFlow's one-kernel Adam applies: dense gradient, no AMSGrad, no strategy."""
        if self.amsgrad or not fused.fused_enabled(True, variable.dtype):
            return False
        import tensorflow as tf

        return not tf.distribute.has_strategy() and not isinstance(gradient, tf.IndexedSlices)

    def _fused_adam_step(self, gradient, variable, learning_rate):
        """Keras' Adam step (same formula, same ε placement) as one ``ResourceApplyAdam`` kernel."""
        import tensorflow as tf

        dtype = variable.dtype
        index = self._get_variable_index(variable)
        local_step = tf.cast(self.iterations + 1, dtype)
        beta_1, beta_2 = tf.cast(self.beta_1, dtype), tf.cast(self.beta_2, dtype)
        tf.raw_ops.ResourceApplyAdam(
            var=variable.handle, m=self._momentums[index].handle, v=self._velocities[index].handle,
            beta1_power=tf.pow(beta_1, local_step), beta2_power=tf.pow(beta_2, local_step), lr=learning_rate,
            beta1=beta_1, beta2=beta_2, epsilon=tf.cast(self.epsilon, dtype), grad=tf.cast(gradient, dtype),
        )

    def _apply_weight_decay(self, variables):
        return  # applied per variable in update_step, with the variable's scale

    def get_config(self):
        return {**super().get_config(), "lr_scales": dict(self.lr_scales)}


@keras.saving.register_keras_serializable(package="keras_visrec")
class PyTorchSGD(keras.optimizers.SGD):
    """SGD as ``torch.optim.SGD`` computes it, for the recipes written in PyTorch (ADP-C's poly SGD).

    Two differences from ``keras.optimizers.SGD``: ``weight_decay`` is L2 added to the gradient
    (``g + wd·θ``, so it runs through the momentum buffer, as PyTorch's ``weight_decay`` does;
    Keras's is decoupled, ``θ −= lr·wd·θ``, about ten times weaker at momentum 0.9), and the buffer
    holds gradients, ``b = μ·b + g``, with the current learning rate applied to it, ``θ −= lr·b``
    (Keras scales each gradient by the rate of its step before adding it), which differs while the
    rate decays. Nesterov: ``θ −= lr·(g + μ·b)``. Variables excluded with
    ``exclude_from_weight_decay`` get no decay. The learning rate is evaluated once per step
    (Keras's own decay evaluates the schedule once per variable).

    Args: those of ``keras.optimizers.SGD`` (``learning_rate``, ``momentum``, ``nesterov``,
        ``weight_decay`` …); dampening is PyTorch's default, 0.
    """

    def _apply_weight_decay(self, variables):
        return  # coupled: added to the gradient in update_step

    def update_step(self, gradient, variable, learning_rate):
        ops = keras.ops
        learning_rate = ops.cast(learning_rate, variable.dtype)
        gradient = ops.cast(gradient, variable.dtype)
        if self.weight_decay is not None and self._use_weight_decay(variable):
            gradient = gradient + ops.cast(self.weight_decay, variable.dtype) * variable
        if self.momentum == 0:
            self.assign_sub(variable, gradient * learning_rate)
            return
        buffer = self.momentums[self._get_variable_index(variable)]
        momentum = ops.cast(self.momentum, variable.dtype)
        self.assign(buffer, buffer * momentum + gradient)
        step = gradient + buffer * momentum if self.nesterov else buffer
        self.assign_sub(variable, step * learning_rate)


def convnext_adamw(model, learning_rate=5e-5, weight_decay=1e-8, layer_decay=0.8, *, beta_1=0.9,
                   beta_2=0.999, epsilon=1e-8, use_ema=False, ema_momentum=0.9999, **kwargs):
    """The paper's fine-tuning optimizer for a keras_visrec ConvNeXt: AdamW + LLRD + no-decay groups.

    Defaults are the official ImageNet-22k → 1k fine-tuning settings (lr 5e-5, weight decay
    1e-8, layer decay 0.8, EMA 0.9999 when enabled).

    Args:
        model: the ConvNeXt to train (its variable paths key the scales).
        learning_rate: float or a ``LearningRateSchedule`` (e.g. `WarmupCosine`).
        weight_decay: float. Decoupled weight decay. Defaults to `1e-8`.
        layer_decay: float in (0, 1]. `1.0` turns layer-wise decay off. Defaults to `0.8`.
        beta_1, beta_2, epsilon: Adam's constants (PyTorch's defaults).
        use_ema: bool. Keep an exponential moving average of the weights (Keras' own EMA;
            evaluate it with ``keras.callbacks.SwapEMAWeights``). Defaults to `False`.
        ema_momentum: float. EMA decay. Defaults to `0.9999`.
        **kwargs: further ``keras.optimizers.AdamW`` arguments.

    Returns:
        A `LayerDecayAdamW`, ready for ``model.compile(optimizer=...)``.

    Examples:

    >>> model = keras_visrec.ConvNeXt((1, 1, 1, 1), (8, 16, 32, 64), input_shape=(32, 32, 3), classes=10)
    >>> optimizer = convnext_adamw(model, learning_rate=WarmupCosine(1e-3, 100, warmup_steps=10))
    >>> model.compile(optimizer, loss="sparse_categorical_crossentropy")
    """
    _check_layer_decay(layer_decay)
    scales = layer_decay_scales(model, layer_decay) if layer_decay < 1.0 else {}
    optimizer = LayerDecayAdamW(
        lr_scales=scales, learning_rate=learning_rate, weight_decay=weight_decay, beta_1=beta_1,
        beta_2=beta_2, epsilon=epsilon, use_ema=use_ema, ema_momentum=ema_momentum, **kwargs,
    )
    optimizer.exclude_from_weight_decay(var_list=no_weight_decay_variables(model))
    return optimizer

"""The ConvNeXt fine-tuning recipe and the official evaluation, through Keras' own machinery.

* `optim` — AdamW with layer-wise learning-rate decay (a true per-variable LR scale), no weight
  decay on norms, biases, layer scale and GRN; `schedule` — warmup + cosine;
* `augment` — RandAugment / random erasing / Mixup / CutMix from ``keras.layers``, label
  smoothing; `head` — a new head for a new class count at ``head_init_scale``;
* `transforms` — the official evaluation transform, pixel-exact with PIL's bicubic;
* `finetune` / `evaluate` — transfer and top-1 / top-5, behind ``keras-visrec finetune`` and
  ``keras-visrec eval`` (`cli`).

Submodules import on first use: `optim`, `schedule` and `head` run on every Keras backend; the
input pipelines (`augment`, `datasets`, `transforms`, `finetune`, `evaluate`) are tf.data and import
TensorFlow when they are used.
"""

import importlib

_LAZY = {
    "MixupOrCutMix": "augment", "random_resized_crop": "augment", "recipe_loss": "augment",
    "train_image_augmenter": "augment",
    "ImageSource": "datasets", "list_image_folder": "datasets", "load_image_source": "datasets",
    "EvalResult": "evaluate", "evaluate": "evaluate", "published_top1": "evaluate",
    "FinetuneResult": "finetune", "build_model": "finetune", "finetune": "finetune", "model_fingerprint": "finetune",
    "replace_head": "head",
    "LayerDecayAdamW": "optim", "PyTorchSGD": "optim", "convnext_adamw": "optim", "convnext_layer_id": "optim",
    "convnext_num_layers": "optim", "layer_decay_scales": "optim", "no_weight_decay_variables": "optim",
    "WarmupCosine": "schedule",
    "EvalTransform": "transforms", "center_crop": "transforms", "decode_image": "transforms",
    "eval_transform": "transforms", "resize_bicubic_pil": "transforms", "resize_shorter_side": "transforms",
}
_SUBMODULES = ("augment", "cli", "datasets", "evaluate", "finetune", "head", "optim", "schedule", "transforms")

__all__ = sorted(_LAZY) + list(_SUBMODULES)


def __getattr__(name):
    if name in _LAZY:
        value = getattr(importlib.import_module(f"keras_visrec.recipe.{_LAZY[name]}"), name)
        globals()[name] = value
        return value
    if name in _SUBMODULES:
        module = importlib.import_module(f"keras_visrec.recipe.{name}")
        globals()[name] = module
        return module
    raise AttributeError(f"module 'keras_visrec.recipe' has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(__all__))

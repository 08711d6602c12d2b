"""The ConvNeXt fine-tuning recipe and the official evaluation, through Keras' own machinery.

* `optim` — AdamW with layer-wise learning-rate decay (a true per-variable LR scale), no weight
  decay on norms, biases, layer scale and GRN; `schedule` — warmup + cosine;
* `augment` — RandAugment / random erasing / Mixup / CutMix from ``keras.layers``, label
  smoothing; `head` — a new head for a new class count at ``head_init_scale``;
* `transforms` — the official evaluation transform, pixel-exact with PIL's bicubic;
* `finetune` / `evaluate` — transfer and top-1 / top-5, behind ``keras-visrec finetune`` and
  ``keras-visrec eval`` (`cli`).
"""

from keras_visrec.recipe.augment import MixupOrCutMix, random_resized_crop, recipe_loss, train_image_augmenter
from keras_visrec.recipe.datasets import ImageSource, list_image_folder, load_image_source
from keras_visrec.recipe.evaluate import EvalResult, evaluate, published_top1
from keras_visrec.recipe.finetune import FinetuneResult, build_model, finetune, model_fingerprint
from keras_visrec.recipe.head import replace_head
from keras_visrec.recipe.optim import (
    LayerDecayAdamW,
    convnext_adamw,
    convnext_layer_id,
    convnext_num_layers,
    layer_decay_scales,
    no_weight_decay_variables,
)
from keras_visrec.recipe.schedule import WarmupCosine
from keras_visrec.recipe.transforms import (
    EvalTransform,
    center_crop,
    decode_image,
    eval_transform,
    resize_bicubic_pil,
    resize_shorter_side,
)

__all__ = [
    "EvalResult", "EvalTransform", "FinetuneResult", "ImageSource", "LayerDecayAdamW", "MixupOrCutMix",
    "WarmupCosine", "build_model", "center_crop", "convnext_adamw", "convnext_layer_id", "convnext_num_layers",
    "decode_image", "eval_transform", "evaluate", "finetune", "layer_decay_scales", "list_image_folder",
    "load_image_source", "model_fingerprint", "no_weight_decay_variables", "published_top1",
    "random_resized_crop", "recipe_loss", "replace_head", "resize_bicubic_pil", "resize_shorter_side",
    "train_image_augmenter",
]

"""keras_visrec — efficient and scalable visual recognition in TensorFlow/Keras.

ConvNeXt (V1, isotropic, V2) with keras.applications semantics, ADP-C anytime dense prediction,
the pruning baselines of "Rethinking the Value of Network Pruning", PyTorch checkpoints loaded
without torch, and TFLite / Edge TPU export.

Public names resolve on first use. ``import keras_visrec`` imports Keras and the modules that
register custom layers, losses and schedules, so ``keras.models.load_model`` reloads any saved
keras_visrec model without ``custom_objects``; it never imports tensorflow-model-optimization or
a TFLite runtime.
"""

import importlib
import os
import sys

from keras_visrec._startup import invoked_as_cli, native_stderr_silenced

# TensorFlow enables its oneDNN graph rewrites by default only on some Intel CPUs; elsewhere
# (e.g. AMD EPYC) ConvNeXt runs ~1.4× slower without them (fused MatMul+BiasAdd+GELU). Turn them
# on unless the user chose, and only while TensorFlow is not yet imported (it reads the variable
# once). Set TF_ENABLE_ONEDNN_OPTS=0 to opt out.
_TENSORFLOW_LOADED = "tensorflow" in sys.modules
if not _TENSORFLOW_LOADED:
    os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")

__version__ = "0.1.0"

# public name -> module that defines it (imported on first attribute access)
_LAZY = {
    # ConvNeXt family
    **{name: "keras_visrec.convnext" for name in (
        "ConvNeXt",
        "ConvNeXtAtto", "ConvNeXtFemto", "ConvNeXtPico", "ConvNeXtNano", "ConvNeXtTiny",
        "ConvNeXtSmall", "ConvNeXtBase", "ConvNeXtLarge", "ConvNeXtXLarge",
        "ConvNeXtIsotropicSmall", "ConvNeXtIsotropicBase", "ConvNeXtIsotropicLarge",
        "ConvNeXtV2Atto", "ConvNeXtV2Femto", "ConvNeXtV2Pico", "ConvNeXtV2Nano", "ConvNeXtV2Tiny",
        "ConvNeXtV2Base", "ConvNeXtV2Large", "ConvNeXtV2Huge",
    )},
    "count_flops": "keras_visrec.flops",
    "FlopReport": "keras_visrec.flops",
    "list_models": "keras_visrec.models",
    "get_model": "keras_visrec.models",
    # --- weights: PyTorch checkpoints, converters, zoo ---
    "load_pytorch_checkpoint": "keras_visrec.converters.pytorch_reader",
    "load_checkpoint_into_model": "keras_visrec.converters.loading",
    "list_weights": "keras_visrec.zoo",
    "save_preset": "keras_visrec.presets",
    "load_preset": "keras_visrec.presets",
    "fetch_weights": "keras_visrec.zoo",
    # --- TFLite export and runtime ---
    "export_tflite": "keras_visrec.tflite.export",
    "load_tflite": "keras_visrec.tflite.runtime",
    "analyze_tflite": "keras_visrec.tflite.report",
    "profile_tflite": "keras_visrec.tflite.profile",
    # --- UperNet segmentation, FPN neck (ConvNeXt for dense prediction) ---
    **{name: "keras_visrec.upernet" for name in (
        "UperNet", "FPN", "UperNetConvNeXtTiny", "UperNetConvNeXtSmall", "UperNetConvNeXtBase",
        "UperNetConvNeXtLarge", "UperNetConvNeXtXLarge",
    )},
    # --- ADP-C / HRNet ---
    **{name: "keras_visrec.hrnet" for name in (
        "HRNetV2", "HRNetV2W18SmallV2", "HRNetV2W18", "HRNetV2W32", "HRNetV2W48",
    )},
    "AnytimeHRNet": "keras_visrec.adpc.model",
    "exit_flops": "keras_visrec.adpc.flops",
    # --- pruning / CIFAR nets ---
    **{name: "keras_visrec.cifar" for name in (
        "VGG16CIFAR", "VGG19CIFAR", "ResNet56CIFAR", "ResNet110CIFAR", "PreResNet164CIFAR", "DenseNet40CIFAR",
        "CIFARVGG", "CIFARResNet", "CIFARPreResNet", "CIFARDenseNet",
        "VGGCIFAR", "ResNetCIFAR", "PreResNetCIFAR", "DenseNetCIFAR",
    )},
    **{name: "keras_visrec.pruning" for name in (
        "prune_channels", "channel_groups", "l1_prune", "network_slimming", "add_bn_sparsity",
        "magnitude_prune", "run_study",
    )},
    # --- fine-tuning recipe and evaluation ---
    **{name: "keras_visrec.recipe" for name in (
        "finetune", "evaluate", "convnext_adamw", "LayerDecayAdamW", "WarmupCosine", "replace_head",
        "eval_transform", "EvalTransform", "resize_bicubic_pil", "MixupOrCutMix",
    )},
}

_SUBMODULES = ("layers", "convnext", "flops", "models", "presets", "registry", "weights", "zoo", "converters", "tflite",
               "adpc", "hrnet", "upernet", "segmentation", "pruning", "cifar", "recipe", "training", "data", "cli")

__all__ = sorted(_LAZY) + list(_SUBMODULES)


def __getattr__(name):
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    if name in _SUBMODULES:
        module = importlib.import_module(f"keras_visrec.{name}")
        globals()[name] = module
        return module
    raise AttributeError(f"module 'keras_visrec' has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(__all__))


# Keras finds a custom object by its registered name only once the defining module has run. These
# modules run on every backend; the tf.data evaluation layer (recipe.transforms) registers here on
# the TensorFlow backend and elsewhere when it is imported.
_REGISTERING = ("keras_visrec.layers", "keras_visrec.cifar", "keras_visrec.adpc", "keras_visrec.recipe.optim",
                "keras_visrec.recipe.schedule", "keras_visrec.segmentation", "keras_visrec.segmentation.training",
                "keras_visrec.pruning.magnitude")


def _registering():
    import keras

    return _REGISTERING + (("keras_visrec.recipe.transforms",) if keras.backend.backend() == "tensorflow" else ())


with native_stderr_silenced(not _TENSORFLOW_LOADED and invoked_as_cli()):
    for _module in _registering():
        importlib.import_module(_module)
del _module

"""Pruning baselines of "Rethinking the Value of Network Pruning" as tools and as a study.

One vocabulary: every pruner takes ``ratio`` (a float in [0, 1), the share removed, or a
per-layer dict ``{layer name: float}``), honours ``name=`` and returns ``(pruned model,
PruneReport)``; ``print(report)`` shows what changed.

* :mod:`~keras_visrec.pruning.base` — the ratio argument, :class:`PruneReport`, shared helpers;
* :mod:`~keras_visrec.pruning.surgery` — channel removal on Keras 3 functional models;
* :mod:`~keras_visrec.pruning.l1_norm` — L1-norm filter pruning (Li et al.), VGG-16-A, ResNet-56/110-A/B;
* :mod:`~keras_visrec.pruning.slimming` — network slimming (Liu et al.): BN-γ sparsity, global threshold;
* :mod:`~keras_visrec.pruning.magnitude` — unstructured magnitude pruning, native to Keras 3 (every
  backend), or through tfmot (``backend="tfmot"``, :mod:`~keras_visrec.pruning.tfmot_bridge`);
* :mod:`~keras_visrec.pruning.arms` — baseline / fine-tune / Scratch-E / Scratch-B training arms;
* :mod:`~keras_visrec.pruning.study` — the four arms over seeds, a table and a plot;
* :mod:`~keras_visrec.pruning.convnext` — structured pruning of ConvNeXt MLPs and HRNet branches.

Submodules import on first use; nothing here imports tensorflow-model-optimization.
"""

import importlib

_LAZY = {
    "PruneReport": "base", "LayerChange": "base",
    "ChannelGroup": "surgery", "SurgeryError": "surgery", "channel_groups": "surgery",
    "find_channel_group": "surgery", "keep_largest": "surgery", "prune_channels": "surgery",
    "L1_CONFIGS": "l1_norm", "VGG16_A": "l1_norm", "l1_prune": "l1_norm", "l1_prune_vgg": "l1_norm",
    "l1_prune_resnet": "l1_norm", "l1_prune_config": "l1_norm", "resnet_l1_widths": "l1_norm",
    "l1_candidates": "l1_norm",
    "add_bn_sparsity": "slimming", "remove_bn_sparsity": "slimming", "slimming_plan": "slimming",
    "network_slimming": "slimming", "SlimmingPlan": "slimming", "SlimmingReport": "slimming",
    "magnitude_prune": "magnitude", "global_magnitude_sparsities": "magnitude", "to_tf_keras": "magnitude",
    "export_sparse_tflite": "magnitude", "weight_sparsity": "magnitude", "MagnitudeMask": "magnitude",
    "PolynomialSparsity": "schedules", "ConstantSparsity": "schedules", "SparsitySchedule": "schedules",
    "UpdatePruningMasks": "magnitude",
    "prune_low_magnitude": "magnitude", "strip_pruning": "magnitude",
    "ArmResult": "arms", "TrainConfig": "arms", "train_baseline": "arms", "fine_tune_pruned": "arms",
    "fine_tune": "arms", "train_scratch": "arms", "scratch_b_epochs": "arms", "scratch_model": "arms",
    "run_study": "study", "StudyResult": "study",
    "prune_convnext_mlp": "convnext", "prune_hrnet_branches": "convnext", "export_pruned_tflite": "convnext",
}
_SUBMODULES = ("base", "surgery", "l1_norm", "slimming", "schedules", "magnitude", "tfmot_bridge", "arms", "study",
               "convnext", "cli")
_DEPRECATED = ("SlimmingReport", "export_pruned_tflite", "export_sparse_tflite", "fine_tune")

__all__ = sorted(set(_LAZY) - set(_DEPRECATED)) + list(_SUBMODULES)


def __getattr__(name):
    if name in _LAZY:
        value = getattr(importlib.import_module(f"keras_visrec.pruning.{_LAZY[name]}"), name)
        if name != "SlimmingReport":  # its module warns on every access
            globals()[name] = value
        return value
    if name in _SUBMODULES:
        module = importlib.import_module(f"keras_visrec.pruning.{name}")
        globals()[name] = module
        return module
    raise AttributeError(f"module 'keras_visrec.pruning' has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(__all__))

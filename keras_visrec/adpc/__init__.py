"""ADP-C: anytime dense prediction with confidence adaptivity (Liu et al., ICLR 2022).

HRNetV2 with an exit after every stage; pixels an exit is confident about are not computed
again — simulated densely (the paper) or skipped block-sparsely. Segmentation (Cityscapes) and
pose (MPII). See README.md in this folder.
"""

from keras_visrec.adpc.evaluate import ExitEvaluation, evaluate_exits, plot_accuracy_compute
from keras_visrec.adpc.exits import EXIT_TYPES, ee_exit, rh_exit
from keras_visrec.adpc.flops import ExitFlops, exit_flops
from keras_visrec.adpc.layers import MaskedConv2D, RBFInterpolation, rbf_interpolate
from keras_visrec.adpc.masking import MASK_MODES, MaskHook, confidence_mask, resize_mask
from keras_visrec.adpc.model import (MASK_RULES, AnytimeHRNet, AnytimeHRNetV2W18, AnytimeHRNetV2W18SmallV2,
                                     AnytimeHRNetV2W32, AnytimeHRNetV2W48, AnytimePoseHRNetV2W18SmallV2,
                                     AnytimePoseHRNetV2W32)
from keras_visrec.adpc.pose import PoseEvaluation, evaluate_pose_exits, flip_back, predict_pose_exits
from keras_visrec.adpc.training import (ExitMeanIoU, MultiExitHeatmapLoss, MultiExitLoss, PolyLR, compile_anytime,
                                        train_anytime)
from keras_visrec.data.mpii import heatmap_compute_mask

__all__ = [
    "AnytimeHRNet", "AnytimeHRNetV2W18", "AnytimeHRNetV2W18SmallV2", "AnytimeHRNetV2W32", "AnytimeHRNetV2W48",
    "AnytimePoseHRNetV2W18SmallV2", "AnytimePoseHRNetV2W32", "EXIT_TYPES", "ExitEvaluation", "ExitFlops",
    "ExitMeanIoU", "MASK_MODES", "MASK_RULES", "MaskHook", "MaskedConv2D", "MultiExitHeatmapLoss", "MultiExitLoss",
    "PolyLR", "PoseEvaluation", "RBFInterpolation", "compile_anytime", "confidence_mask", "ee_exit",
    "evaluate_exits", "evaluate_pose_exits", "exit_flops", "flip_back", "heatmap_compute_mask",
    "plot_accuracy_compute", "predict_pose_exits", "rbf_interpolate", "resize_mask", "rh_exit", "train_anytime",
]

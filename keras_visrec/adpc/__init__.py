"""ADP-C: anytime dense prediction with confidence adaptivity (Liu et al., ICLR 2022).

HRNetV2 with an exit after every stage; pixels an exit is confident about are not computed
again — simulated densely (the paper) or skipped block-sparsely. See README.md in this folder.
"""

from keras_visrec.adpc.evaluate import ExitEvaluation, evaluate_exits, plot_accuracy_compute
from keras_visrec.adpc.exits import EXIT_TYPES, ee_exit, rh_exit
from keras_visrec.adpc.flops import ExitFlops, exit_flops
from keras_visrec.adpc.layers import MaskedConv2D, RBFInterpolation, rbf_interpolate
from keras_visrec.adpc.masking import MASK_MODES, MaskHook, confidence_mask, resize_mask
from keras_visrec.adpc.model import AnytimeHRNet
from keras_visrec.adpc.training import ExitMeanIoU, MultiExitLoss, PolyLR, compile_anytime, train_anytime

__all__ = [
    "AnytimeHRNet", "EXIT_TYPES", "ExitEvaluation", "ExitFlops", "ExitMeanIoU", "MASK_MODES", "MaskHook",
    "MaskedConv2D", "MultiExitLoss", "PolyLR", "RBFInterpolation", "compile_anytime", "confidence_mask",
    "ee_exit", "evaluate_exits", "exit_flops", "plot_accuracy_compute", "rbf_interpolate", "resize_mask",
    "rh_exit", "train_anytime",
]

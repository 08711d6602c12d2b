"""The early exits of ADP-C (Liu et al., "Anytime Dense Prediction with Confidence Adaptivity",
ICLR 2022, https://arxiv.org/abs/2104.00749).

* ``"ee"``: the HRNetV2 head reused as an exit — 1×1 conv (C→C), BN, ReLU, 1×1 classifier.
* ``"rh"``: the redesigned exits — 1×1 convs of a fixed width (128 for W48, 64 for W18) that
  pool 2×2 down ``depth`` times and upsample ×2 back, so early exits see a wider context cheaply.
  exit1: depth 3 (1/4 → 1/32), exit2: depth 2, exit3: depth 1.

Layer names follow the official ``nn.Sequential`` indices (``exit2.5`` → ``<model>_exit2_5``).
"""

__all__ = ["EXIT_TYPES", "RH_DEPTHS", "ee_exit", "rh_exit", "make_exit"]

EXIT_TYPES = ("ee", "rh")
RH_DEPTHS = {1: 3, 2: 2, 3: 1}


def ee_exit(ops, x, classes, name):
    """The simple exit (the segmentation head's structure)."""
    width = int(x.shape[-1])
    y = ops.conv_bn(x, f"{name}_0", f"{name}_1", width, bias=True, relu=f"{name}_2")
    return ops.conv(y, f"{name}_3", classes, bias=True)


def rh_exit(ops, x, classes, width, depth, name):
    """The redesigned exit: ``depth`` × [pool, conv, BN, ReLU], ``depth − 1`` × [up, conv, BN, ReLU], up, classifier."""
    index = 0

    def unit(y, pool):
        nonlocal index
        y = ops.avg_pool(y, f"{name}_{index}") if pool else ops.upsample(y, 2, f"{name}_{index}")
        y = ops.conv_bn(y, f"{name}_{index + 1}", f"{name}_{index + 2}", width, bias=True, relu=f"{name}_{index + 3}")
        index += 4
        return y

    for _ in range(depth):
        x = unit(x, pool=True)
    for _ in range(depth - 1):
        x = unit(x, pool=False)
    x = ops.upsample(x, 2, f"{name}_{index}")
    return ops.conv(x, f"{name}_{index + 1}", classes, bias=True)


def make_exit(ops, x, exit_type, classes, width, number):
    """Exit ``number`` (1–3) of ``exit_type``."""
    if exit_type == "ee":
        return ee_exit(ops, x, classes, f"exit{number}")
    return rh_exit(ops, x, classes, width, RH_DEPTHS[number], f"exit{number}")

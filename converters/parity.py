"""A functional PyTorch forward pass over an upstream ConvNeXt state dict (for ``convert --check``).

Runs the checkpoint *as upstream defines it* — channels-first convs, ``F.linear`` MLPs, GRN,
layer scale — straight from its tensors, so the converted Keras model can be compared with it
without timm or the official repository installed. timm and HF keys are renamed to the official
layout first. Needs torch (imported inside the functions).
"""

import re

import numpy as np

__all__ = ["max_abs_difference", "to_official_keys", "torch_logits"]

_TIMM_TO_OFFICIAL = [
    (r"^stem\.(\d)\.", r"downsample_layers.0.\1."),
    (r"^stages\.(\d)\.downsample\.", r"downsample_layers.\1."),
    (r"^stages\.(\d+)\.blocks\.(\d+)\.", r"stages.\1.\2."),
    (r"\.conv_dw\.", ".dwconv."), (r"\.mlp\.fc1\.", ".pwconv1."), (r"\.mlp\.fc2\.", ".pwconv2."),
    (r"\.mlp\.grn\.weight$", ".grn.gamma"), (r"\.mlp\.grn\.bias$", ".grn.beta"),
    (r"^head\.norm\.", "norm."), (r"^head\.fc\.", "head."),
]
_HF_TO_OFFICIAL = [
    (r"^convnext(v2)?\.", ""),
    (r"^embeddings\.patch_embeddings\.", "downsample_layers.0.0."),
    (r"^embeddings\.layernorm\.", "downsample_layers.0.1."),
    (r"^encoder\.stages\.(\d)\.downsampling_layer\.", r"downsample_layers.\1."),
    (r"^encoder\.stages\.(\d+)\.layers\.(\d+)\.", r"stages.\1.\2."),
    (r"\.layernorm\.", ".norm."), (r"\.layer_scale_parameter$", ".gamma"),
    (r"\.grn\.weight$", ".grn.gamma"), (r"\.grn\.bias$", ".grn.beta"),
    (r"^layernorm\.", "norm."), (r"^classifier\.", "head."),
]


def to_official_keys(state, layout):
    """Renames a timm / HF state dict to the official ConvNeXt keys (official ones unchanged)."""
    rules = {"timm": _TIMM_TO_OFFICIAL, "hf": _HF_TO_OFFICIAL}.get(layout, [])
    out = {}
    for key, value in state.items():
        for pattern, replacement in rules:
            key = re.sub(pattern, replacement, key)
        out[key] = value
    return out


def _layer_norm_channels_first(torch, x, weight, bias):
    x = x.permute(0, 2, 3, 1)
    x = torch.nn.functional.layer_norm(x, x.shape[-1:], weight, bias, 1e-6)
    return x.permute(0, 3, 1, 2)


def _block(torch, x, w, prefix):
    F = torch.nn.functional
    channels = x.shape[1]
    y = F.conv2d(x, w[f"{prefix}.dwconv.weight"], w[f"{prefix}.dwconv.bias"], padding=3, groups=channels)
    y = y.permute(0, 2, 3, 1)
    y = F.layer_norm(y, (channels,), w[f"{prefix}.norm.weight"], w[f"{prefix}.norm.bias"], 1e-6)
    y = F.gelu(F.linear(y, w[f"{prefix}.pwconv1.weight"].flatten(1), w[f"{prefix}.pwconv1.bias"]))
    if f"{prefix}.grn.gamma" in w:
        gx = torch.sqrt((y * y).sum(dim=(1, 2), keepdim=True))
        nx = gx / (gx.mean(dim=-1, keepdim=True) + 1e-6)
        y = w[f"{prefix}.grn.gamma"].reshape(-1) * (y * nx) + w[f"{prefix}.grn.beta"].reshape(-1) + y
    y = F.linear(y, w[f"{prefix}.pwconv2.weight"].flatten(1), w[f"{prefix}.pwconv2.bias"])
    if f"{prefix}.gamma" in w:
        y = y * w[f"{prefix}.gamma"]
    return x + y.permute(0, 3, 1, 2)


def torch_logits(state, layout, images):
    """Logits of the upstream network defined by ``state`` on NHWC ``images`` (already normalised)."""
    import torch

    F = torch.nn.functional
    w = {k: torch.from_numpy(np.ascontiguousarray(v, dtype=np.float32))
         for k, v in to_official_keys(state, layout).items()}
    x = torch.from_numpy(np.ascontiguousarray(images, dtype=np.float32)).permute(0, 3, 1, 2)
    with torch.no_grad():
        if layout == "official_isotropic":
            patch = w["stem.weight"].shape[-1]
            x = F.conv2d(x, w["stem.weight"], w["stem.bias"], stride=patch)
            blocks = sorted({int(m[1]) for k in w if (m := re.match(r"blocks\.(\d+)\.", k))})
            for b in blocks:
                x = _block(torch, x, w, f"blocks.{b}")
        else:
            for stage in range(4):
                if stage == 0:
                    x = F.conv2d(x, w["downsample_layers.0.0.weight"], w["downsample_layers.0.0.bias"], stride=4)
                    x = _layer_norm_channels_first(torch, x, w["downsample_layers.0.1.weight"],
                                                   w["downsample_layers.0.1.bias"])
                else:
                    x = _layer_norm_channels_first(torch, x, w[f"downsample_layers.{stage}.0.weight"],
                                                   w[f"downsample_layers.{stage}.0.bias"])
                    x = F.conv2d(x, w[f"downsample_layers.{stage}.1.weight"],
                                 w[f"downsample_layers.{stage}.1.bias"], stride=2)
                blocks = sorted({int(m[1]) for k in w if (m := re.match(rf"stages\.{stage}\.(\d+)\.", k))})
                for b in blocks:
                    x = _block(torch, x, w, f"stages.{stage}.{b}")
        pooled = x.mean(dim=(2, 3))
        pooled = F.layer_norm(pooled, pooled.shape[-1:], w["norm.weight"], w["norm.bias"], 1e-6)
        return F.linear(pooled, w["head.weight"], w["head.bias"]).numpy()


def max_abs_difference(model, state, layout, *, size, seed=0):
    """Max |Keras logits − PyTorch logits| on one random normalised image of ``size``×``size``.

    ``model`` must output logits of already-normalised input (``include_preprocessing=False``,
    ``classifier_activation=None``).
    """
    images = np.random.RandomState(seed).randn(1, size, size, 3).astype("float32")
    keras_logits = np.asarray(model(images, training=False))
    return float(np.abs(keras_logits - torch_logits(state, layout, images)).max())

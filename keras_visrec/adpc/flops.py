"""Per-exit FLOPs as the ADP-C paper counts them.

Multiply-adds of convolutions only (weight count × output positions; BN, ReLU, pooling and
resizing are free), cumulative: "exit k" costs everything computed up to exit k, earlier exit
heads included. A masked convolution that computes a share ``p`` of its output pixels costs
``p ×`` its dense cost, plus the RBF fill ``(1 − p)·p·C_out·49·H·W`` — the official
``modelsummary.py`` formula, kept as is so the numbers compare. The per-layer costs come from
``keras_visrec.count_flops``; this module only groups them by segment and scales them.
"""

import dataclasses

from keras_visrec.flops import count_flops

__all__ = ["ExitFlops", "exit_flops", "segment_of", "GIGA"]

GIGA = 1024 ** 3  # the paper's "GFLOPs" divide by 1024³
_SEGMENTS = {"conv1": 1, "bn1": 1, "conv2": 1, "bn2": 1, "relu1": 1, "relu2": 1, "layer1": 1, "exit1": 1,
             "transition1": 2, "stage2": 2, "exit2": 2, "transition2": 3, "stage3": 3, "exit3": 3,
             "transition3": 4, "stage4": 4, "last": 4, "final": 4}  # last_layer (segmentation), final_layer (pose)
_RBF_TAPS = 49


def segment_of(layer_name, prefix):
    """The exit (1–4) whose segment a layer named ``<prefix>_<segment>_…`` belongs to, or `None`."""
    if not layer_name.startswith(prefix + "_"):
        return None
    token = layer_name[len(prefix) + 1:].split("_")[0]
    return _SEGMENTS.get(token)


@dataclasses.dataclass(frozen=True)
class ExitFlops:
    """Result of :func:`exit_flops`. ``segments[k]``: MACs of segment k alone; ``cumulative[k]``: up to exit k."""

    segments: tuple
    cumulative: tuple
    base: int

    @property
    def gflops(self):
        """Cumulative per-exit cost in the paper's GFLOPs (÷1024³)."""
        return tuple(c / GIGA for c in self.cumulative)

    @property
    def base_gflops(self):
        return self.base / GIGA

    def table(self):
        rows = [f"exit {k + 1}: {g:8.1f} GFLOPs" for k, g in enumerate(self.gflops)]
        return "\n".join(rows + [f"base (no exits): {self.base_gflops:.1f} GFLOPs"])


def _network(model):
    return getattr(model, "network", model)


def _fraction(fractions, segment, output_shape):
    if fractions is None or segment == 1:
        return 1.0
    value = fractions[segment - 2]
    if isinstance(value, dict):
        size = (int(output_shape[1]), int(output_shape[2]))
        if size not in value:
            raise ValueError(f"`computed_fractions[{segment - 2}]` has no entry for resolution {size}; "
                             f"has {sorted(value)}.")
        return float(value[size])
    return float(value)


def exit_flops(model, input_shape, computed_fractions=None, interpolation=True):
    """Cumulative multiply-adds to each exit, masked as the paper counts them.

    Args:
        model: an ``AnytimeHRNet`` or a functional model with ADP-C layer names.
        input_shape: ``(height, width, 3)``, e.g. ``(1024, 2048, 3)``.
        computed_fractions: `None` (no masking) or three entries for segments 2, 3, 4, each a
            float (share of pixels computed) or ``{(h, w): share}`` per resolution, e.g.
            ``model.computed_fractions()`` after a masked call.
        interpolation: bool. Add the RBF fill cost of masked convolutions. Defaults to `True`.

    Returns:
        :class:`ExitFlops`; ``base`` is the cost of the backbone and final head alone.
    """
    if computed_fractions is not None and len(computed_fractions) != 3:
        raise ValueError("`computed_fractions` must have three entries (segments 2, 3, 4); "
                         f"received {computed_fractions!r}.")
    network = _network(model)
    report = count_flops(network, input_shape)
    segments = [0.0] * 4
    base = 0
    for entry in report.per_layer:
        segment = segment_of(entry.name, network.name)
        if segment is None or not entry.macs:
            continue
        is_exit = entry.name[len(network.name) + 1:].startswith("exit")
        base += 0 if is_exit else entry.macs
        p = _fraction(computed_fractions, segment, entry.output_shape)
        cost = entry.macs * p
        if interpolation and computed_fractions is not None and segment > 1:
            h, w, c = entry.output_shape[1:]
            cost += (1.0 - p) * p * c * _RBF_TAPS * h * w
        segments[segment - 1] += cost
    cumulative, total = [], 0.0
    for value in segments:
        total += value
        cumulative.append(int(round(total)))
    return ExitFlops(tuple(int(round(s)) for s in segments), tuple(cumulative), int(base))

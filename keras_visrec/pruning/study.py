"""The rerunnable study: baseline, fine-tune, Scratch-E and Scratch-B for one method, over seeds.

``run_study("l1", "vgg16_a", train, test, seeds=(0, 1, 2))`` trains the large model, prunes it
with the named configuration, runs the three arms on the pruned architecture and writes a table
(mean ± std over seeds; markdown, CSV and JSON) and a bar plot. Methods and configurations:

* ``"l1"``: ``vgg16_a``, ``resnet56_a``, ``resnet56_b``, ``resnet110_a``, ``resnet110_b``;
* ``"slimming"``: ``vgg19`` (70 %, s = 1e-4), ``preresnet164`` (40 %, s = 1e-5),
  ``densenet40`` (40 %, s = 1e-5) — BN γ initialised to 0.5.

``width`` scales every VGG width (e.g. 0.125 for a CPU-sized VGG-16-A study on digits), and the
configuration ``"vgg_custom"`` runs either method on your own VGG layer list (``vgg_cfg``; for
L1-norm also the pruned list ``pruned_cfg``; for slimming the ``ratio``).
"""

import dataclasses
import json
import os

import numpy as np

from keras_visrec import cifar
from keras_visrec.files import write_atomic
from keras_visrec.flops import count_flops
from keras_visrec.pruning import arms
from keras_visrec.pruning.base import renamed_arguments
from keras_visrec.pruning.l1_norm import L1_CONFIGS, VGG16_A, l1_prune_config, l1_prune_vgg
from keras_visrec.pruning.slimming import network_slimming

__all__ = ["ARM_NAMES", "SLIMMING_CONFIGS", "StudyResult", "build_method", "run_study", "study_methods"]

ARM_NAMES = ("baseline", "fine-tune", "scratch-E", "scratch-B")

SLIMMING_CONFIGS = {
    "vgg19": dict(ratio=0.7, strength=1e-4),
    "preresnet164": dict(ratio=0.4, strength=1e-5),
    "densenet40": dict(ratio=0.4, strength=1e-5),
}


def study_methods():
    """``{method: [configuration names]}``."""
    return {"l1": sorted(L1_CONFIGS) + ["vgg_custom"], "slimming": sorted(SLIMMING_CONFIGS) + ["vgg_custom"]}


def _scale(cfg, width):
    return [c if c == "M" else max(1, int(round(c * width))) for c in cfg]


def build_method(method, config, *, width=1.0, classes=10, input_shape=(32, 32, 3), vgg_cfg=None, pruned_cfg=None,
                 ratio=None):
    """``(build(), prune(model) -> (pruned, PruneReport), bn_sparsity)`` for a method and configuration.

    ``vgg_cfg``, ``pruned_cfg`` (L1-norm) and ``ratio`` (slimming, default 0.7) describe the
    ``"vgg_custom"`` configuration.
    """
    methods = study_methods()
    if method not in methods:
        raise ValueError(f"`method` must be one of {sorted(methods)}; received method={method!r}.")
    if config not in methods[method]:
        raise ValueError(f"`config` for {method!r} must be one of {methods[method]}; received config={config!r}.")
    if not isinstance(width, (int, float)) or not 0 < width <= 1:
        raise ValueError(f"`width` must be in (0, 1]; received width={width!r}.")
    common = dict(classes=classes, input_shape=input_shape)
    if config == "vgg_custom":
        return _custom_vgg(method, vgg_cfg, pruned_cfg, ratio, width, common)
    is_vgg = config.startswith("vgg")
    if width != 1 and not is_vgg:
        raise ValueError(f"`width` scaling is available for the VGG configurations only; received config={config!r}.")
    if method == "l1":
        if is_vgg:
            full, pruned = _scale(cifar.VGG_CONFIGS["vgg16"], width), _scale(VGG16_A, width)
            return (lambda: cifar.CIFARVGG(full, head="l1", name="vgg16", **common),
                    lambda m: l1_prune_vgg(m, pruned, name="vgg16_a"), 0.0)
        depth = L1_CONFIGS[config]["depth"]
        return (lambda: cifar.CIFARResNet(depth, **common),
                lambda m: l1_prune_config(m, config, name=config), 0.0)
    spec = SLIMMING_CONFIGS[config]
    if is_vgg:
        full = _scale(cifar.VGG_CONFIGS["vgg19"], width)
        build = lambda: cifar.CIFARVGG(full, head="slimming", bn_gamma_init=0.5, name="vgg19", **common)  # noqa: E731
    elif config == "preresnet164":
        build = lambda: cifar.CIFARPreResNet(164, bn_gamma_init=0.5, **common)  # noqa: E731
    else:
        build = lambda: cifar.CIFARDenseNet(40, bn_gamma_init=0.5, **common)  # noqa: E731
    return build, (lambda m: network_slimming(m, spec["ratio"], name=f"{config}_slim")), spec["strength"]


def _custom_vgg(method, vgg_cfg, pruned_cfg, ratio, width, common):
    if vgg_cfg is None:
        raise ValueError("config='vgg_custom' needs `vgg_cfg` (a VGG layer list such as [16, 'M', 32]).")
    full = _scale(list(vgg_cfg), width)
    if method == "l1":
        if pruned_cfg is None:
            raise ValueError("L1-norm with config='vgg_custom' needs `pruned_cfg`, the pruned layer list.")
        pruned = _scale(list(pruned_cfg), width)
        return (lambda: cifar.CIFARVGG(full, head="l1", name="vgg", **common),
                lambda m: l1_prune_vgg(m, pruned, name="vgg_pruned"), 0.0)
    ratio = 0.7 if ratio is None else ratio
    return (lambda: cifar.CIFARVGG(full, head="slimming", bn_gamma_init=0.5, name="vgg", **common),
            lambda m: network_slimming(m, ratio, name="vgg_slim"), 1e-4)


@dataclasses.dataclass(frozen=True)
class StudyResult:
    """Every arm of every seed, and the summary rows written to the table."""

    method: str
    config: str
    runs: tuple  # ArmResult per (seed, arm)
    summary: tuple  # dicts: arm, accuracy_mean, accuracy_std, epochs, macs, params, runs
    files: dict

    def table(self):
        """The summary as a markdown table."""
        lines = [f"### {self.method} / {self.config}", "",
                 "| arm | test accuracy (mean ± std) | epochs | MMACs | params | runs |",
                 "|---|---|---|---|---|---|"]
        for row in self.summary:
            lines.append(f"| {row['arm']} | {100 * row['accuracy_mean']:.2f} ± {100 * row['accuracy_std']:.2f} | "
                         f"{row['epochs']} | {row['macs'] / 1e6:.3f} | {row['params']:,} | {row['runs']} |")
        return "\n".join(lines)


def _summarise(runs):
    summary = []
    for arm in ARM_NAMES:
        rows = [r for r in runs if r.arm == arm]
        accuracy = np.asarray([r.accuracy for r in rows])
        summary.append(dict(arm=arm, accuracy_mean=float(accuracy.mean()),
                            accuracy_std=float(accuracy.std(ddof=1)) if len(rows) > 1 else 0.0,
                            epochs=rows[0].epochs, macs=rows[0].macs, params=rows[0].params, runs=len(rows)))
    return tuple(summary)


def run_study(method, config, train, test, *, seeds=(0, 1, 2), train_config=None, strategy=None, width=1.0,
              classes=10, input_shape=(32, 32, 3), vgg_cfg=None, pruned_cfg=None, ratio=None, output_dir=None,
              verbose=0, **deprecated):
    """Runs the four arms for ``method``/``config`` over ``seeds``; writes table and plot.

    Args:
        method: str. `"l1"` or `"slimming"`.
        config: str. A configuration of the method (see :func:`study_methods`).
        train, test: tf.data.Dataset of (0–255 image, label) batches; ``train`` of known length.
        seeds: sequence of int. One full run per seed. Defaults to `(0, 1, 2)`.
        train_config: :class:`~keras_visrec.pruning.arms.TrainConfig`. Defaults to the paper's.
        strategy: tf.distribute.Strategy, a name or `None`.
        width: float in (0, 1]. Width multiplier of VGG configurations. Defaults to `1.0`.
        classes: int. Defaults to `10`.
        input_shape: tuple. Defaults to `(32, 32, 3)`.
        vgg_cfg, pruned_cfg, ratio: the ``"vgg_custom"`` configuration (see :func:`build_method`).
        output_dir: str or `None`. Where ``study.md``, ``study.csv``, ``study.json`` and
            ``study.png`` go; `None` writes nothing. (``out_dir=`` is its deprecated spelling.)
        verbose: int. 1 prints each arm as it finishes and Keras progress bars. Defaults to `0`.

    Returns:
        A :class:`StudyResult`.
    """
    output_dir = renamed_arguments("run_study", deprecated, {"out_dir": "output_dir"},
                                   current={"output_dir": output_dir})["output_dir"]
    if not seeds:
        raise ValueError("`seeds` must list at least one seed.")
    build, prune, bn_sparsity = build_method(method, config, width=width, classes=classes, input_shape=input_shape,
                                             vgg_cfg=vgg_cfg, pruned_cfg=pruned_cfg, ratio=ratio)
    config_ = train_config or arms.TrainConfig.paper()
    runs = []
    fit_verbose = 1 if verbose > 1 else 0
    for seed in seeds:
        model = build()
        full_macs = count_flops(model).total
        trained, result = arms.train_baseline(model, train, test, config_, strategy=strategy, bn_sparsity=bn_sparsity,
                                              seed=seed, verbose=fit_verbose)
        runs.append(result)
        pruned, report = prune(trained)
        if verbose:
            print(report, flush=True)
        for step in (lambda: arms.fine_tune_pruned(pruned, train, test, config_, strategy=strategy, seed=seed,
                                            verbose=fit_verbose),
                     lambda: arms.train_scratch(pruned, train, test, config_, budget="E", strategy=strategy,
                                                seed=seed, verbose=fit_verbose),
                     lambda: arms.train_scratch(pruned, train, test, config_, budget="B", full_macs=full_macs,
                                                strategy=strategy, seed=seed, verbose=fit_verbose)):
            runs.append(step()[1])
        if verbose:
            for r in runs[-4:]:
                print(f"seed {seed} {r.arm:<10} accuracy {100 * r.accuracy:.2f} epochs {r.epochs} "
                      f"MMACs {r.macs / 1e6:.3f}", flush=True)
    result = StudyResult(method, config, tuple(runs), _summarise(runs), {})
    if output_dir is not None:
        result = dataclasses.replace(result, files=_write(result, output_dir, seeds))
    return result




def _write(result, output_dir, seeds):
    os.makedirs(output_dir, exist_ok=True)
    files = {name: os.path.join(output_dir, f"study.{name}") for name in ("md", "csv", "json", "png")}
    write_atomic(files["md"], result.table() + "\n")
    header = "arm,accuracy_mean,accuracy_std,epochs,macs,params,runs\n"
    rows = "".join(f"{r['arm']},{r['accuracy_mean']:.6f},{r['accuracy_std']:.6f},{r['epochs']},{r['macs']},"
                   f"{r['params']},{r['runs']}\n" for r in result.summary)
    write_atomic(files["csv"], header + rows)
    payload = dict(method=result.method, config=result.config, seeds=list(seeds), summary=list(result.summary),
                   runs=[dataclasses.asdict(r) for r in result.runs])
    write_atomic(files["json"], json.dumps(payload, indent=1))
    write_atomic(files["png"], _plot(result))
    return files


def _plot(result):
    import io

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(5, 3.2), dpi=100)
    names = [r["arm"] for r in result.summary]
    means = [100 * r["accuracy_mean"] for r in result.summary]
    stds = [100 * r["accuracy_std"] for r in result.summary]
    axis.bar(names, means, yerr=stds, capsize=4, color=["#777777", "#4c72b0", "#dd8452", "#55a868"])
    low = max(0.0, min(means) - max(stds + [1.0]) * 3 - 2)
    axis.set_ylim(low, min(100.0, max(means) + max(stds + [1.0]) * 2 + 1))
    axis.set_ylabel("test accuracy (%)")
    axis.set_title(f"{result.method} / {result.config} (n = {result.summary[0]['runs']})")
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    plt.close(figure)
    return buffer.getvalue()

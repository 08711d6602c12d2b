"""ADP-C masked computation: does skipping confident pixels save wall-clock time on CPU?

Trains a small HRNet-style anytime model on the digit-segmentation task (real sklearn digits on
``--train-size`` canvases) twice on the same schedule (``--epochs`` with Adam, the learning rate
decaying from 3e-3 to 0 by poly 0.9) and from the same initial weights (``--seed``): unmasked
(every exit on every pixel; the accuracy anchor), and as ADP-C with the paper's dense-simulated
masking from the first step, as the paper trains it. ``--schedule step`` instead keeps 3e-3 and
ends with ``--tail-epochs`` at 5e-4, and with it ``--adpc-from base`` fine-tunes ADP-C from the
unmasked model before its tail. The test canvases are ``--size`` with the training canvases' digit
sizes and digits per area, so a larger canvas is a larger scene, not larger objects. Prints each
model's per-exit mIoU, then times one image at a time to each exit with no masking (the anchor;
the same network as the unmasked model), the paper's dense simulation and the block-sparse mode,
with the ratios against the anchor measured in the same run and the computed (not skipped) share.

``--scale paper`` times the paper's networks instead (HRNet-W48 and W18-small-v2 with RH exits,
random weights, 1024×2048 images): every masked segment (transition, stage and exit after exit
``k − 1``) alone, unmasked / dense-simulated / sparse with the measured dense-or-sparse rule /
sparse everywhere, with the computed share of the segment set by a synthetic confidence mask
(:func:`keras_visrec.adpc.crossover.synthetic_mask`: thin bands along the boundaries of a label
map of random regions, plus blobs; nested across shares) at ``--shares``; then the whole
network to the final exit at the paper's operating point (``--operating-point``, the computed
shares of segments 2 / 3 / 4 that ADP-C's published GFLOPs imply). It prints time against share,
each segment's crossover, the measured crossover table, and whether each goal is met.

Figures are taken on a shared CPU: compare ratios, not seconds.

    python bench/adpc_masked.py [--size 1024] [--epochs 24] [--seed 1] [--weights DIR]
    python bench/adpc_masked.py --seed 2 --accuracy-only      # another paired run, no timing
    python bench/adpc_masked.py --scale paper [--backbones w48,w18_small_v2] [--shares 0.1,0.5,0.9]
"""

import argparse
import itertools
import os
import random
import time

SMALL = dict(stem=32, layer1=(1, 16), stages=((1, (2, 2), (16, 32)), (2, (2, 2, 2), (16, 32, 64)),
                                            (2, (2, 2, 2, 2), (16, 32, 64, 128))))

DIGIT_SIZES = (16, 24, 32, 40)  # one object scale for training and test canvases of any size

PAPER_BACKBONES = ("w48", "w18_small_v2")
PAPER_SHARES = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)
PAPER_POINT = (0.82, 0.63, 0.38)  # computed share of segments 2, 3, 4 from ADP-C's GFLOPs (REFERENCES.md)
PAPER_SAVING_GOAL = 30.0  # per cent below the unmasked network's wall-clock at the operating point
DIGITS_SAVING_GOAL, DIGITS_MIOU_GOAL = 40.0, 0.5
# flags of the digit task only: None means "not given", so --scale paper can refuse them
_DIGIT_DEFAULTS = dict(size=1024, train_size=128, train=768, test=32, epochs=24, schedule="poly", tail_epochs=4,
                       adpc_from="scratch", seed=1, threshold=0.998, weights=None)


def _share_list(text, flag):
    try:
        values = tuple(float(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{flag} must be comma-separated numbers; received {text!r}") from None
    bad = [v for v in values if not 0.0 < v < 1.0]
    if not values or bad:
        raise argparse.ArgumentTypeError(f"{flag} takes computed shares strictly between 0 and 1; received {text!r}")
    return values


def _parse():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", choices=("digits", "paper"), default="digits",
                        help="digits: train and time the small model on the digit task; paper: time HRNet-W48 and "
                             "W18-small-v2 at 1024x2048 against the computed share")
    parser.add_argument("--size", type=int, default=None, help="test canvas side (divisible by 32; default 1024)")
    parser.add_argument("--train-size", type=int, default=None, help="training canvas side (divisible by 32; default 128)")
    parser.add_argument("--train", type=int, default=None, help="training canvases (default 768)")
    parser.add_argument("--test", type=int, default=None, help="test canvases (default 32)")
    parser.add_argument("--epochs", type=int, default=None, help="training epochs of each model (default 24)")
    parser.add_argument("--schedule", choices=("poly", "step"), default=None,
                        help="poly: the learning rate decays from 3e-3 to 0 (power 0.9); step: 3e-3, then the "
                             "last --tail-epochs at 5e-4 with a new optimizer")
    parser.add_argument("--tail-epochs", type=int, default=None, help="epochs at 5e-4 ending the step schedule")
    parser.add_argument("--adpc-from", choices=("scratch", "base"), default=None,
                        help="train ADP-C masked from the start (the paper), or (step schedule) fine-tune it from "
                             "the unmasked model before its tail (masked for the tail only)")
    parser.add_argument("--seed", type=int, default=None,
                        help="seeds the initial weights, the same for both models (a paired comparison; default 1)")
    parser.add_argument("--accuracy-only", action="store_true", help="print the mIoU tables, skip the timing")
    parser.add_argument("--mask-shares", type=lambda t: _share_list(t, "--mask-shares"), default=None,
                        help="digit task: ADP-C's segments 2, 3, 4 compute these shares of the pixels (each image's "
                             "least confident) instead of those under --threshold, e.g. the paper's 0.82,0.63,0.38")
    parser.add_argument("--detach-copied", action="store_true",
                        help="digit task: ADP-C's loss at the pixels an exit copies does not train the earlier exit")
    parser.add_argument("--own-logits-loss", action="store_true",
                        help="digit task: ADP-C's training loss at the pixels exit k copies is on exit k's own logits "
                             "(its segment's computation there, from interpolated features) instead of the copied "
                             "ones: every pixel trains every segment, and no exit trains an earlier one")
    parser.add_argument("--masked-features", choices=("rbf", "real"), default="rbf",
                        help="digit task, ADP-C in training and test: rbf (the paper) fills the skipped positions of "
                             "every masked conv from computed neighbours; real computes them (a diagnostic without "
                             "savings: only the exits copy), the best any fill could do")
    parser.add_argument("--low-res-masks", choices=("nearest", "max"), default="nearest",
                        help="digit task, ADP-C in training and test: the mask of a lower-resolution branch is the "
                             "1/4-resolution mask resized nearest (the paper) or max-pooled (a position is computed "
                             "when any pixel under it is)")
    parser.add_argument("--exit-analysis", action="store_true",
                        help="digit task: where ADP-C's exits 2-4 lose against the unmasked model (computed vs "
                             "copied pixels, the ring of copied pixels next to computed ones, nearest upsampling)")
    parser.add_argument("--threshold", type=float, default=None, help="confidence threshold (default 0.998)")
    parser.add_argument("--tile", type=int, default=1)
    parser.add_argument("--dense-above", type=float, default=None,
                        help="one fixed share of active tiles above which every conv runs densely; default: the "
                             "measured crossover of each conv kind")
    parser.add_argument("--dense-fill", choices=("rbf", "computed"), default="rbf",
                        help="what the sparse mode's dense convs leave at skipped pixels: the RBF fill (the dense "
                             "simulation's result) or their computed values (no blend pass); on the digit task "
                             "'computed' also evaluates the sparse mode's mIoU, which then differs from the dense one")
    parser.add_argument("--crossover-table", default=None,
                        help="JSON file of measured crossovers to read and extend (default: adpc_crossover.json in "
                             "the keras_visrec cache)")
    parser.add_argument("--repeats", type=int, default=3, help="timing rounds (best counts; the median is printed too)")
    parser.add_argument("--backbones", default=",".join(PAPER_BACKBONES),
                        help="paper scale: comma-separated HRNet configs")
    parser.add_argument("--shares", type=lambda t: _share_list(t, "--shares"), default=PAPER_SHARES,
                        help="paper scale: computed shares of each masked segment to time, in (0, 1)")
    parser.add_argument("--operating-point", type=lambda t: _share_list(t, "--operating-point"), default=PAPER_POINT,
                        help="paper scale: computed shares of segments 2, 3, 4 for the end-to-end timing")
    parser.add_argument("--image-size", default="1024x2048", help="paper scale: HEIGHTxWIDTH, sides divisible by 32")
    parser.add_argument("--weights", default=None,
                        help="a directory: the models' .weights.h5 files (unmasked_poly and adpc_poly; for the step "
                             "schedule base, base_ft and adpc or adpc_from_base) are loaded when there (no "
                             "training), else written after training")
    args = parser.parse_args()
    if args.repeats < 1:
        parser.error(f"--repeats must be >= 1; received {args.repeats}")
    if args.tile < 1:
        parser.error(f"--tile must be >= 1; received {args.tile}")
    if args.dense_above is not None and not 0.0 <= args.dense_above <= 1.0:
        parser.error(f"--dense-above must be in [0, 1]; received {args.dense_above}")
    if args.scale == "paper":
        return _check_paper_args(parser, args)
    for name, value in _DIGIT_DEFAULTS.items():
        if getattr(args, name) is None:
            setattr(args, name, value)
    if args.own_logits_loss and args.detach_copied:
        parser.error("--own-logits-loss already keeps the copied pixels' loss from the earlier exits; "
                     "drop --detach-copied")
    if args.schedule == "poly" and args.adpc_from == "base":
        parser.error("--adpc-from base fine-tunes before the tail of the step schedule; it needs --schedule step")
    if args.schedule == "step" and not 0 <= args.tail_epochs < args.epochs:
        parser.error(f"--tail-epochs must be in [0, --epochs); received {args.tail_epochs} with --epochs {args.epochs}")
    return args


def _check_paper_args(parser, args):
    from keras_visrec.hrnet import HRNET_CONFIGS

    given = [f"--{name.replace('_', '-')}" for name in _DIGIT_DEFAULTS if getattr(args, name) is not None]
    given += [flag for flag, on in (("--accuracy-only", args.accuracy_only), ("--exit-analysis", args.exit_analysis),
                                    ("--mask-shares", args.mask_shares is not None),
                                    ("--detach-copied", args.detach_copied),
                                    ("--own-logits-loss", args.own_logits_loss),
                                    ("--masked-features", args.masked_features != "rbf"),
                                    ("--low-res-masks", args.low_res_masks != "nearest")) if on]
    if given:
        parser.error(f"digit-task flags with --scale paper: {', '.join(given)} (it times random-weight networks on "
                     "synthetic masks)")
    args.backbones = tuple(b.strip() for b in args.backbones.split(",") if b.strip())
    unknown = [b for b in args.backbones if b not in HRNET_CONFIGS]
    if not args.backbones or unknown:
        parser.error(f"--backbones must name configs among {sorted(HRNET_CONFIGS)}; received {args.backbones}")
    if len(args.operating_point) != 3 or list(args.operating_point) != sorted(args.operating_point, reverse=True):
        parser.error("--operating-point takes three non-increasing shares (segments 2, 3, 4: the computed pixels of "
                     f"a later exit are among the earlier exit's); received {args.operating_point}")
    try:
        height, width = (int(v) for v in args.image_size.lower().split("x"))
    except ValueError:
        parser.error(f"--image-size must be HEIGHTxWIDTH; received {args.image_size!r}")
    if height < 64 or width < 64 or height % 32 or width % 32:
        parser.error(f"--image-size sides must be multiples of 32, at least 64; received {args.image_size!r}")
    args.image_size = (height, width)
    return args


def _data(args):
    from keras_visrec.data.digit_segmentation import load_digit_segmentation

    (x, y), _ = load_digit_segmentation(size=args.train_size, num_train=args.train, num_test=1,
                                        digit_sizes=DIGIT_SIZES, seed=0)
    density = (args.size / args.train_size) ** 2  # the training canvases' digits per area
    per_canvas = (max(1, round(1 * density)), max(1, round(3 * density)))
    _, (xt, yt) = load_digit_segmentation(size=args.size, num_train=1, num_test=args.test, digit_sizes=DIGIT_SIZES,
                                          digits_per_canvas=per_canvas, seed=1)
    return x.astype("float32"), y, xt.astype("float32"), yt  # 0–255: the models normalise themselves


def _models(args, x, y):
    """``{"anchor", "adpc"}``: the unmasked model (the anchor) and ADP-C trained with dense-simulated
    masking on the same schedule; the step schedule adds ``"base"``, the unmasked model before its tail."""
    import keras
    import tensorflow as tf

    from keras_visrec.adpc import AnytimeHRNet, PolyLR, compile_anytime

    def build(mode, adpc=False):
        """The unmasked model, or (``adpc``) ADP-C with the experiment flags' training and masking rules."""
        keras.utils.set_random_seed(args.seed)
        cls = AnytimeHRNet
        if adpc:
            cls = cls if args.mask_shares is None else _fixed_share_model(args.mask_shares)
            cls = _detached_copy_model(cls) if args.detach_copied else cls
            cls = _own_logits_model(cls) if args.own_logits_loss else cls
            if (args.masked_features, args.low_res_masks) != ("rbf", "nearest"):
                cls = _segment_variant_model(cls, args.masked_features, args.low_res_masks)
        model = cls(SMALL, classes=11, exit_width=32, threshold=args.threshold, mode=mode, tile=args.tile,
                    dense_fill=args.dense_fill, bn_momentum=0.9, name="bench_adpc")
        model.dense_above = args.dense_above  # None: the measured rule
        model(x[:1])
        return model

    def dataset():  # one per model: every model sees the same batches in the same order
        return tf.data.Dataset.from_tensor_slices((x, y)).shuffle(len(x), seed=0).batch(8, drop_remainder=True)

    steps = len(x) // 8
    adpc_stem = "adpc_poly" if args.mask_shares is None else "adpc_poly_shares_" + "_".join(
        f"{s:.2f}" for s in args.mask_shares)
    adpc_stem += "_detached" if args.detach_copied else ""
    adpc_stem += "_own_logits" if args.own_logits_loss else ""
    adpc_stem += "_real_features" if args.masked_features == "real" else ""
    adpc_stem += "_max_masks" if args.low_res_masks == "max" else ""
    if args.schedule == "poly":
        whole = [(args.epochs, PolyLR(3e-3, args.epochs * steps))]
        plans = (("adpc", "dense", adpc_stem, None, whole), ("anchor", "none", "unmasked_poly", None, whole))
    else:
        first, tail = (args.epochs - args.tail_epochs, 3e-3), (args.tail_epochs, 5e-4)
        adpc = ("adpc_from_base", "base", [tail]) if args.adpc_from == "base" else ("adpc", None, [first, tail])
        plans = (("base", "none", "base", None, [first]), ("anchor", "none", "base_ft", "base", [tail]),
                 ("adpc", "dense", *adpc))
    models = {}
    for name, mode, stem, start, phases in plans:
        path = args.weights and os.path.join(args.weights, f"{stem}.weights.h5")
        model = build(mode, adpc=name == "adpc")
        if path and os.path.exists(path):
            model.load_weights(path)
        else:
            if start:
                model.set_weights(models[start].get_weights())
            for epochs, rate in phases:  # a new optimizer per phase, the same for both models
                compile_anytime(model, optimizer=keras.optimizers.Adam(rate))
                model.fit(dataset(), epochs=epochs, verbose=2)
            if path:
                os.makedirs(args.weights, exist_ok=True)
                model.save_weights(path)
        models[name] = model
    return models


def _detached_copy_model(base):
    """``base`` (an ``AnytimeHRNet`` class) whose exit ``k`` output keeps the copied logits of exit ``k − 1``
    as values but not as a gradient path: the loss at copied pixels no longer trains the earlier exit
    (the official code, and ``AnytimeHRNet``, let it). The exits-2/3 experiment on the loss at copied pixels."""
    import tensorflow as tf

    class DetachedCopyHRNet(base):
        def _copy_confident(self, previous, outputs, keep):
            return super()._copy_confident(tf.stop_gradient(previous), outputs, keep)

    return DetachedCopyHRNet


def _own_logits_model(base):
    """``base`` (an ``AnytimeHRNet`` class) whose training outputs are every exit's own logits on every pixel:
    exit ``k``'s loss at the pixels it copies trains its own segment (what it computes there from the RBF-filled
    features) instead of exit ``k − 1``. Inference (``training`` false) copies as ``base`` does. The exits-2/3
    experiment on the training signal at copied pixels."""
    from keras import ops

    class OwnLogitsHRNet(base):
        def _copy_confident(self, previous, outputs, keep):
            self._own_logits.append(self._activate(outputs))
            return super()._copy_confident(previous, outputs, keep)

        def call(self, inputs, training=None):
            self._own_logits = []
            merged = self.anytime(inputs)
            if not training or self.mode == "none":
                return ops.stack(merged, axis=1)
            return ops.stack(merged[:1] + self._own_logits, axis=1)

    return OwnLogitsHRNet


def _segment_variant_model(base, features="rbf", low_res_masks="nearest"):
    """``base`` (an ``AnytimeHRNet`` class) whose dense-simulated segments compute the skipped positions too
    (``features="real"``: no savings, the exits still copy; what a perfect fill would give) and/or take a
    lower-resolution branch's mask max-pooled from the 1/4-resolution one (``low_res_masks="max"``) instead of
    resized nearest. The exits-2/3 experiments on what the masked computation loses."""
    import tensorflow as tf

    from keras_visrec.adpc.masking import DenseSimulation, MaskHook
    from keras_visrec.adpc.sparse import dense_conv

    class RealFeatures(DenseSimulation):
        def conv(self, layer, x, stride, pad):
            return dense_conv(layer, x, stride, pad)

    class VariantHook(MaskHook):
        def mask_at(self, height, width):
            full_height, full_width = int(self.mask.shape[1]), int(self.mask.shape[2])
            if low_res_masks == "max" and (height, width) != (full_height, full_width):
                key = (height, width)
                if key not in self._cache:
                    factor = (full_height // height, full_width // width)
                    self._cache[key] = tf.nn.max_pool2d(self.mask[..., None], factor, factor, "VALID")[..., 0]
                return self._cache[key]
            return super().mask_at(height, width)

        def executor(self, height, width):
            if features == "real" and self.mode == "dense":
                return self._executors.setdefault((height, width), RealFeatures(self, height, width))
            return super().executor(height, width)

    class SegmentVariantHRNet(base):
        def _mask_hook(self, mask, mode):
            return VariantHook(mask, mode, self.tile, self.dense_above, dense_fill=self.dense_fill)

    return SegmentVariantHRNet


def _fixed_share_model(shares):
    """``AnytimeHRNet`` whose segments 2, 3, 4 compute ``shares`` of the pixels (each image's least confident
    ones, :func:`keras_visrec.adpc.masking.share_mask`) instead of those under the confidence threshold: the
    exits-2/3 experiment at the paper's computed shares. Same layers and weights as ``AnytimeHRNet``."""
    from keras_visrec.adpc import AnytimeHRNet
    from keras_visrec.adpc.masking import share_mask

    class FixedShareHRNet(AnytimeHRNet):
        def iter_exits(self, inputs, mode=None, threshold=None):
            remaining = iter(shares)  # iter_exits asks for the masks of exits 1, 2, 3 in order, once each
            rule = self._mask_fn  # the model's own rule (its mask_fn), swapped for this pass only
            self._mask_fn = lambda logits, threshold: share_mask(logits, next(remaining))
            try:
                yield from super().iter_exits(inputs, mode=mode, threshold=threshold)
            finally:
                self._mask_fn = rule

    return FixedShareHRNet


def _exit_analysis(anchor, adpc, images, labels, threshold, shares=None, batch_size=8):
    """Where ADP-C's exits 2-4 lose against the unmasked model: mIoU with parts of ADP-C's 1/4-resolution
    logits swapped for the unmasked model's (on the pixels the segment computed, on those it copied, on
    the ring of copied pixels touching a computed one), and with nearest instead of bilinear upsampling
    (no bleeding of the earlier exit's logits across the mask edge); pixel accuracy per group."""
    import numpy as np
    import tensorflow as tf

    from keras_visrec.adpc.masking import confidence_mask, share_mask
    from keras_visrec.segmentation.metrics import confusion_matrix, mean_iou

    classes = adpc.classes
    variants = ("ADP-C", "unmasked", "ADP-C, unmasked on computed", "ADP-C, unmasked on copied",
                "ADP-C, unmasked on the ring", "ADP-C, nearest upsampling", "unmasked, nearest upsampling")
    confusions = {(k, v): np.zeros((classes, classes), np.int64) for k in (2, 3, 4) for v in variants}
    hits = {(k, g, m): [0, 0] for k in (2, 3, 4) for g in ("computed", "copied", "ring") for m in ("ADP-C", "unmasked")}
    computed = {k: [] for k in (2, 3, 4)}
    for start in range(0, len(images), batch_size):
        x, y = images[start:start + batch_size], labels[start:start + batch_size]
        outs, _ = adpc.compiled_anytime("dense", threshold)(x)
        plain, _ = anchor.compiled_anytime("none", threshold)(x)
        size = y.shape[1:3]
        for k in (2, 3, 4):
            previous = outs[k - 2]
            mask = (confidence_mask(previous, threshold) if shares is None else share_mask(previous, shares[k - 2]))[..., None]
            ring = tf.nn.max_pool2d(mask, 3, 1, "SAME") * (1.0 - mask)
            ours, theirs = outs[k - 1], plain[k - 1]
            logits = {"ADP-C": ours, "unmasked": theirs, "ADP-C, unmasked on computed": ours * (1 - mask) + theirs * mask,
                      "ADP-C, unmasked on copied": ours * mask + theirs * (1 - mask),
                      "ADP-C, unmasked on the ring": ours * (1 - ring) + theirs * ring}
            for name, value in logits.items():
                predicted = tf.argmax(tf.image.resize(value, size, "bilinear"), -1).numpy()
                confusions[k, name] += confusion_matrix(y, predicted, classes)
                if name in ("ADP-C", "unmasked"):
                    groups = {"computed": mask, "copied": 1 - mask, "ring": ring}
                    for group, where in groups.items():
                        where = tf.image.resize(where, size, "nearest").numpy()[..., 0] > 0
                        hits[k, group, name][0] += int(np.sum((predicted == y) & where))
                        hits[k, group, name][1] += int(np.sum(where))
            for name, value in (("ADP-C, nearest upsampling", ours), ("unmasked, nearest upsampling", theirs)):
                predicted = tf.argmax(tf.image.resize(value, size, "nearest"), -1).numpy()
                confusions[k, name] += confusion_matrix(y, predicted, classes)
            computed[k].append(float(tf.reduce_mean(mask)))
    print("where ADP-C's exits lose against the unmasked model (mIoU, logits swapped at 1/4 resolution):")
    print("   " + " | ".join(f"exit {k} (computes {np.mean(computed[k]):.3f})" for k in (2, 3, 4)) + " | variant")
    for name in variants:
        print("   " + " | ".join(f"{100 * mean_iou(confusions[k, name]):24.2f}" for k in (2, 3, 4)) + f" | {name}")
    print("pixel accuracy per group (% of the group's full-resolution pixels; ADP-C / unmasked):")
    for group in ("computed", "copied", "ring"):
        cells = []
        for k in (2, 3, 4):
            a, b = (hits[k, group, m] for m in ("ADP-C", "unmasked"))
            cells.append(f"{100 * a[0] / max(a[1], 1):7.3f} / {100 * b[0] / max(b[1], 1):7.3f}")
        print(f"   {group:8s} " + " | ".join(cells))


def _reestimate_batch_norm(model, x, mode, batch_size=8):
    """Replaces every BatchNorm's moving statistics with the mean of its batch statistics over ``x``, the
    network run in ``mode`` (training-mode BatchNorm, no weight update): what the statistics would be
    for the final weights, without the moving average's lag."""
    import keras

    norms = [layer for layer in model._flatten_layers() if isinstance(layer, keras.layers.BatchNormalization)]
    momenta, trained_mode = [bn.momentum for bn in norms], model.mode
    model.mode = mode
    try:
        for i, start in enumerate(range(0, len(x) - batch_size + 1, batch_size)):
            for bn in norms:
                bn.momentum = i / (i + 1)  # the running mean of the batches so far
            model(x[start:start + batch_size], training=True)
    finally:
        model.mode = trained_mode
        for bn, momentum in zip(norms, momenta):
            bn.momentum = momentum
    return len(norms)


def _batch_norm_analysis(anchor, adpc, x, images, labels, threshold):
    """mIoU per exit with the BatchNorm statistics as trained and re-estimated on the training canvases
    (unmasked for the unmasked runs, masked for ADP-C's masked run): whether ADP-C's exits 2-3 lose to
    statistics of interpolated maps rather than to its weights."""
    from keras_visrec.adpc import evaluate_exits

    runs = (("unmasked", anchor, "none"), ("ADP-C, masked", adpc, "dense"), ("ADP-C run unmasked", adpc, "none"))
    print("BatchNorm statistics as trained and re-estimated on the training canvases in the run's own mode "
          "(mIoU per exit):")
    for name, model, mode in runs:
        trained = model.get_weights()
        before = evaluate_exits(model, images, labels, mode=mode, threshold=threshold, progress=False).miou
        count = _reestimate_batch_norm(model, x, mode)
        after = evaluate_exits(model, images, labels, mode=mode, threshold=threshold, progress=False).miou
        model.set_weights(trained)
        for label, miou in (("as trained", before), (f"re-estimated ({count} BN layers)", after)):
            print(f"   {name:20s} {label:28s} " + " / ".join(f"{m:.2f}" for m in miou))


MODES = ("none", "dense", "sparse")


def _time_exits(model, images, threshold, repeats):
    """``{mode: [seconds per image to exit 1..4]}``: best of ``repeats`` rounds, each running every
    (mode, exit) in a new random order."""
    import tensorflow as tf

    def stopping_at(mode, exit_number):
        def run(image):
            return list(itertools.islice(model.iter_exits(image, mode=mode, threshold=threshold), exit_number))[-1]
        return tf.function(run)

    fns = {(mode, k): stopping_at(mode, k) for k in range(1, 5) for mode in MODES}
    for fn in fns.values():
        fn(images[:1])  # trace (and compile the fused fills) outside the timing
    best = {key: float("inf") for key in fns}
    order, shuffle = list(fns), random.Random(0).shuffle
    for _ in range(repeats):
        shuffle(order)  # no mode always runs after the same one (allocator and cache state)
        for key in order:
            fn = fns[key]
            start = time.perf_counter()
            for i in range(len(images)):
                fn(images[i:i + 1]).numpy()
            best[key] = min(best[key], (time.perf_counter() - start) / len(images))
    return {mode: [best[mode, k] for k in range(1, 5)] for mode in MODES}


# --- paper scale ---------------------------------------------------------------------------------

PAPER_MODES = ("none", "dense", "sparse", "sparse_always")  # sparse: the measured rule; _always: gather every conv


def _paper_model(backbone, image_size, tile):
    import keras

    from keras_visrec.adpc import AnytimeHRNet

    keras.utils.set_random_seed(0)
    return AnytimeHRNet(backbone, classes=19, exit_type="rh", mode="sparse", tile=tile, input_shape=(*image_size, 3),
                        name=f"paper_{backbone}")


def _segment_runner(model, k, mode, tile, dense_above, table, dense_fill="rbf"):
    """``fn(xs, previous logits, mask) -> (xs, logits)``: segment ``k`` (2–4) alone, as ``iter_exits`` runs it."""
    import tensorflow as tf

    from keras_visrec.adpc.exits import make_exit
    from keras_visrec.adpc.masking import MaskHook
    from keras_visrec.hrnet import HRNetOps, branches_head, exit_input, stage, transition

    config = model.config_dict["stages"][k - 2]

    def run(xs, previous, mask):
        ops = HRNetOps(model.name, layers=model._layer_map)
        hook = None
        if mode != "none":
            rule = {"sparse": dense_above, "sparse_always": 1.0}.get(mode)
            fill = dense_fill if mode == "sparse" else "rbf"
            hook = ops.conv_hook = MaskHook(mask, "dense" if mode == "dense" else "sparse", tile, rule, table, fill)
        xs = stage(ops, transition(ops, list(xs), config[2], k - 1), config, k)
        if k == 4:
            logits = branches_head(ops, xs, model.classes, "last_layer")
        else:
            logits = make_exit(ops, exit_input(ops, xs, f"exit{k}"), model.exit_type, model.classes, model.exit_width, k)
        if hook is not None:  # the copy of confident predictions, as iter_exits does it
            keep = hook.mask_at(int(logits.shape[1]), int(logits.shape[2]))[..., None]
            logits = previous * (1.0 - keep) + logits * keep
        return xs, logits

    return tf.function(run)


def _first_segment(model):
    import tensorflow as tf

    from keras_visrec.adpc.exits import make_exit
    from keras_visrec.hrnet import HRNetOps, stem_and_layer1

    def run(image):
        ops = HRNetOps(model.name, layers=model._layer_map)
        xs = stem_and_layer1(ops, image, model.config_dict)
        return xs, make_exit(ops, xs[0], model.exit_type, model.classes, model.exit_width, 1)

    return tf.function(run)


def _timed(fn, *args):
    """``((wall seconds, process CPU seconds), outputs)`` of one call, outputs fetched."""
    wall, cpu = time.perf_counter(), time.process_time()
    out = fn(*args)
    _ = [t.numpy() for t in _flatten(out)]
    return (time.perf_counter() - wall, time.process_time() - cpu), out


def _flatten(value):
    if isinstance(value, (list, tuple)):
        return [t for v in value for t in _flatten(v)]
    return [value]


def _rounds(calls, repeats, desc):
    """``{key: [(wall, cpu) per round]}``: every call of ``{key: zero-argument fn}`` once per round, each round in
    a new random order (no call always follows the same one), after one untimed call each (trace, compile)."""
    from tqdm.auto import tqdm

    for fn in tqdm(calls.values(), desc=f"{desc}: trace", leave=False):
        fn()
    samples = {key: [] for key in calls}
    order = list(calls)
    for r in tqdm(range(repeats), desc=f"{desc}: rounds", leave=False):
        random.Random(r).shuffle(order)
        for key in order:
            samples[key].append(calls[key]()[0])
    return samples


def _best(samples, clock):
    """Best and median seconds over rounds on ``clock`` (0: wall, 1: CPU)."""
    import numpy as np

    values = [sample[clock] for sample in samples]
    return float(np.min(values)), float(np.median(values))


def _crossing(shares, ratios):
    """The first share where ``ratios`` (time / unmasked) reaches 1, linearly interpolated."""
    points = list(zip(shares, ratios))
    if points[0][1] >= 1.0:
        return f"<= {points[0][0]:.2f}"
    for (s0, r0), (s1, r1) in zip(points, points[1:]):
        if r1 >= 1.0:
            return f"{s0 + (1.0 - r0) * (s1 - s0) / (r1 - r0):.2f}"
    return f"> {points[-1][0]:.2f}"


CLOCK_NAMES = ("wall", "cpu")


def _print_crossover_table(table, kinds):
    """One line per convolution kind: its dense time and, per sparse way, the share up to which it wins."""
    print(f"crossover table ({len(kinds)} kinds; per sparse way the share of its work up to which it beats "
          f"the dense convolution, from cost lines probed on the {table.clock} clock):")
    for kind, costs in sorted(kinds.items()):
        ways = "; ".join(f"{way} {costs.crossover(way):.2f} (fixed {1000 * costs.ways[way][0]:.2f} ms + "
                         f"{1000 * costs.ways[way][1]:.2f} ms x share)" for way in sorted(costs.ways))
        blend = f"; blend {1000 * costs.blend:.2f} ms" if costs.blend else ""
        print(f"  {kind}: dense {1000 * costs.dense:.2f} ms; {ways or 'no sparse way'}{blend}")


def _paper_backbone(args, backbone, table):
    """Times one backbone; returns the goal lines."""
    import numpy as np
    import tensorflow as tf

    from keras_visrec.adpc.crossover import calibrate, synthetic_mask, synthetic_uncertainty

    height, width = args.image_size
    model = _paper_model(backbone, args.image_size, args.tile)
    print(f"\n== {backbone} (RH exits, random weights), {height}x{width}, tile {args.tile}, batch 1 ==")
    if args.dense_above is None:
        _print_crossover_table(table, calibrate(model, (height, width, 3), table=table))
    image = tf.constant(np.random.default_rng(0).uniform(0, 255, (1, height, width, 3)).astype("float32"))
    first = _first_segment(model)
    _, (xs, logits) = _timed(first, image)
    inputs = {2: (xs, logits)}  # segment inputs: the unmasked features (their values do not change the work)
    runners = {(mode, k): _segment_runner(model, k, mode, args.tile, args.dense_above, table, args.dense_fill)
               for mode in PAPER_MODES for k in (2, 3, 4)}
    quarter = (height // 4, width // 4)
    zero_mask = tf.zeros((1, *quarter))
    for k in (2, 3):
        _, inputs[k + 1] = _timed(runners["none", k], *inputs[k], zero_mask)
    uncertainty = synthetic_uncertainty(*quarter, seed=0)
    masks = {share: tf.constant(synthetic_mask(*quarter, share, uncertainty=uncertainty)[None])
             for share in set(args.shares) | set(args.operating_point)}
    calls = {("none", k, None): (lambda k=k: _timed(runners["none", k], *inputs[k], zero_mask)) for k in (2, 3, 4)}
    calls.update({(mode, k, share): (lambda mode=mode, k=k, share=share: _timed(runners[mode, k], *inputs[k],
                                                                                masks[share]))
                  for mode in PAPER_MODES[1:] for k in (2, 3, 4) for share in args.shares})
    samples = _rounds(calls, args.repeats, f"{backbone} segments")
    worst = {}
    for clock, clock_name in enumerate(CLOCK_NAMES):
        best = {key: _best(v, clock) for key, v in samples.items()}
        print(f"{clock_name} ms per image per segment, best / median of {args.repeats} rounds; "
              f"ratio: best against the unmasked segment's best")
        for k in (2, 3, 4):
            anchor = best["none", k, None][0]
            print(f"segment {k} (transition{k - 1} + stage{k} + {'head' if k == 4 else f'exit{k}'}): unmasked "
                  f"{1000 * anchor:.1f} / {1000 * best['none', k, None][1]:.1f}")
            print("   share | dense-simulated            | sparse (measured rule)     | sparse everywhere")
            for share in args.shares:
                cells = [f"{1000 * best[mode, k, share][0]:8.1f} / {1000 * best[mode, k, share][1]:8.1f} "
                         f"{best[mode, k, share][0] / anchor:5.2f}x" for mode in PAPER_MODES[1:]]
                print(f"   {share:5.2f} | " + " | ".join(cells))
            ratios = {mode: [best[mode, k, share][0] / anchor for share in args.shares] for mode in PAPER_MODES[1:]}
            prefix = f"{backbone}_{clock_name}_segment{k}"
            print(f"{prefix}_crossover_sparse_everywhere_vs_unmasked: {_crossing(args.shares, ratios['sparse_always'])}")
            print(f"{prefix}_max_ratio_sparse_measured_rule: {max(ratios['sparse']):.3f}")
            worst[clock_name] = max(worst.get(clock_name, 0.0), max(ratios["sparse"]))
    goals = [f"{backbone}: sparse (measured rule) never slower than unmasked, any segment and share: "
             f"{'met' if worst['wall'] <= 1.0 else 'NOT met'} on the wall clock (worst ratio {worst['wall']:.3f}; "
             f"CPU time {worst['cpu']:.3f})"]
    goals.append(_operating_point(args, backbone, model, first, image, masks, table))
    return goals


def _operating_point(args, backbone, model, first, image, masks, table):
    """The whole network to the final exit with segments 2–4 at ``args.operating_point``."""
    import tensorflow as tf

    chained = {}
    for mode in ("none", "dense", "sparse"):
        runners = [_segment_runner(model, k, mode, args.tile, args.dense_above, table, args.dense_fill)
                   for k in (2, 3, 4)]

        def run(image, m2, m3, m4, runners=runners):
            xs, logits = first(image)
            exits = [logits]
            for runner, mask in zip(runners, (m2, m3, m4)):
                xs, logits = runner(xs, logits, mask)
                exits.append(logits)
            return exits

        chained[mode] = tf.function(run)
    arguments = (image, *(masks[s] for s in args.operating_point))
    samples = _rounds({mode: (lambda fn=fn: _timed(fn, *arguments)) for mode, fn in chained.items()}, args.repeats,
                      f"{backbone} whole network")
    shares = " / ".join(f"{s:.2f}" for s in args.operating_point)
    print(f"whole network to the final exit, segments 2 / 3 / 4 computing {shares} (best / median ms):")
    saving = {}
    for clock, clock_name in enumerate(CLOCK_NAMES):
        best = {mode: _best(v, clock) for mode, v in samples.items()}
        for mode, (b, m) in best.items():
            print(f"{backbone}_final_exit_{mode}_{clock_name}_ms: {1000 * b:.1f} / {1000 * m:.1f}   "
                  f"ratio {b / best['none'][0]:.3f}")
        saving[clock_name] = 100.0 * (1.0 - best["sparse"][0] / best["none"][0])
        print(f"{backbone}_final_exit_saving_sparse_vs_none_{clock_name}_percent: {saving[clock_name]:.1f}")
    return (f"{backbone}: final exit at the operating point >= {PAPER_SAVING_GOAL:.0f} % below unmasked: "
            f"{'met' if saving['wall'] >= PAPER_SAVING_GOAL else 'NOT met'} on the wall clock ({saving['wall']:.1f} %; "
            f"CPU time {saving['cpu']:.1f} %)")


def paper_main(args):
    from keras_visrec.adpc.crossover import CrossoverTable, default_table

    table = CrossoverTable(path=args.crossover_table) if args.crossover_table else default_table()
    print(f"machine: {table.signature}; load average before: {', '.join(f'{v:.1f}' for v in os.getloadavg())}")
    print("masks: synthetic confidence masks (bands along the boundaries of a random label map, plus blobs; nested); "
          f"shares {', '.join(f'{s:.2f}' for s in args.shares)}")
    goals = []
    for backbone in args.backbones:
        goals += _paper_backbone(args, backbone, table)
    print(f"\nload average after: {', '.join(f'{v:.1f}' for v in os.getloadavg())}")
    print("goals:")
    for line in goals:
        print(f"  {line}")


def main():
    args = _parse()
    if args.scale == "paper":
        return paper_main(args)
    if args.crossover_table:
        from keras_visrec.adpc.crossover import CrossoverTable, set_default_table

        set_default_table(CrossoverTable(path=args.crossover_table))
    from keras_visrec.adpc import evaluate_exits

    x, y, images, labels = _data(args)
    models = _models(args, x, y)
    model = models["adpc"]
    references = {name: evaluate_exits(models[name], images, labels, mode="none", threshold=args.threshold,
                                       progress=False) for name in ("base", "anchor") if name in models}
    if "base" in references:
        print("unmasked model before the tail:")
        print(references["base"].table())
    print("unmasked model after the whole schedule (the equal-budget anchor), unmasked:")
    print(references["anchor"].table())
    # under the RBF fill sparse matches dense (it is timed below); under "computed" its outputs differ
    modes = ("none", "dense") if args.accuracy_only and args.dense_fill == "rbf" else MODES
    results = {mode: evaluate_exits(model, images, labels, mode=mode, threshold=args.threshold, progress=False)
               for mode in modes}
    print(f"ADP-C (masked training from {'the start' if args.adpc_from == 'scratch' else 'the unmasked model before the tail'}):")
    for mode, result in results.items():
        print(result.table())
    if args.exit_analysis:
        _exit_analysis(models["anchor"], model, images, labels, args.threshold, args.mask_shares)
        _batch_norm_analysis(models["anchor"], model, x, images, labels, args.threshold)
    masked = results.get("sparse", results["dense"])
    print("computed_share_per_segment:", ", ".join(f"{s:.3f}" for s in masked.computed))
    print(f"skipped_share_final_segment: {1 - masked.computed[2]:.3f}")
    for name, reference in references.items():
        print(f"{name}_unmasked_final_miou: {reference.miou[3]:.2f}")
    for mode, result in results.items():
        print(f"adpc_{mode}_final_miou: {result.miou[3]:.2f}")
    for name, reference in references.items():
        print(f"miou_loss_masked_vs_{name}_unmasked: {reference.miou[3] - masked.miou[3]:.2f}")
    print(f"gflops_per_exit_none: {', '.join(f'{g:.4f}' for g in results['none'].gflops)}")
    print(f"gflops_per_exit_masked: {', '.join(f'{g:.4f}' for g in masked.gflops)}")
    if args.accuracy_only:
        return
    times = _time_exits(model, images, args.threshold, args.repeats)
    for mode, seconds in times.items():
        for k, value in enumerate(seconds, start=1):
            print(f"{mode}_exit{k}_ms_per_image: {1000 * value:.2f}")
            print(f"{mode}_exit{k}_ratio_vs_none: {value / times['none'][k - 1]:.3f}")
    saving = 100 * (1 - times['sparse'][3] / times['none'][3])
    print(f"final_exit_saving_sparse_vs_none_percent: {saving:.1f}")
    gap = references["anchor"].miou[3] - masked.miou[3]
    met = saving >= DIGITS_SAVING_GOAL and gap <= DIGITS_MIOU_GOAL
    print(f"goal (final exit >= {DIGITS_SAVING_GOAL:.0f} % faster at <= {DIGITS_MIOU_GOAL} mIoU below the unmasked "
          f"model): {'met' if met else 'NOT met'} ({saving:.1f} %, {gap:.2f} mIoU)")

if __name__ == "__main__":
    main()

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

Figures are taken on a shared CPU: compare ratios, not seconds.

    python bench/adpc_masked.py [--size 1024] [--epochs 24] [--seed 1] [--weights DIR]
    python bench/adpc_masked.py --seed 2 --accuracy-only      # another paired run, no timing
"""

import argparse
import itertools
import os
import random
import time

SMALL = dict(stem=32, layer1=(1, 16), stages=((1, (2, 2), (16, 32)), (2, (2, 2, 2), (16, 32, 64)),
                                            (2, (2, 2, 2, 2), (16, 32, 64, 128))))

DIGIT_SIZES = (16, 24, 32, 40)  # one object scale for training and test canvases of any size


def _parse():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=1024, help="test canvas side (divisible by 32)")
    parser.add_argument("--train-size", type=int, default=128, help="training canvas side (divisible by 32)")
    parser.add_argument("--train", type=int, default=768, help="training canvases")
    parser.add_argument("--test", type=int, default=32, help="test canvases")
    parser.add_argument("--epochs", type=int, default=24, help="training epochs of each model")
    parser.add_argument("--schedule", choices=("poly", "step"), default="poly",
                        help="poly: the learning rate decays from 3e-3 to 0 (power 0.9); step: 3e-3, then the "
                             "last --tail-epochs at 5e-4 with a new optimizer")
    parser.add_argument("--tail-epochs", type=int, default=4, help="epochs at 5e-4 ending the step schedule")
    parser.add_argument("--adpc-from", choices=("scratch", "base"), default="scratch",
                        help="train ADP-C masked from the start (the paper), or (step schedule) fine-tune it from "
                             "the unmasked model before its tail (masked for the tail only)")
    parser.add_argument("--seed", type=int, default=1,
                        help="seeds the initial weights, the same for both models (a paired comparison)")
    parser.add_argument("--accuracy-only", action="store_true", help="print the mIoU tables, skip the timing")
    parser.add_argument("--threshold", type=float, default=0.998)
    parser.add_argument("--tile", type=int, default=1)
    parser.add_argument("--dense-above", type=float, default=0.5)
    parser.add_argument("--repeats", type=int, default=3, help="timing passes over the test images (best counts)")
    parser.add_argument("--weights", default=None,
                        help="a directory: the models' .weights.h5 files (unmasked_poly and adpc_poly; for the step "
                             "schedule base, base_ft and adpc or adpc_from_base) are loaded when there (no "
                             "training), else written after training")
    args = parser.parse_args()
    if args.schedule == "poly" and args.adpc_from == "base":
        parser.error("--adpc-from base fine-tunes before the tail of the step schedule; it needs --schedule step")
    if args.schedule == "step" and not 0 <= args.tail_epochs < args.epochs:
        parser.error(f"--tail-epochs must be in [0, --epochs); received {args.tail_epochs} with --epochs {args.epochs}")
    return args


def _data(args):
    from keras_visrec.data.digit_segmentation import load_digit_segmentation

    (x, y), _ = load_digit_segmentation(size=args.train_size, num_train=args.train, num_test=1,
                                        digit_sizes=DIGIT_SIZES, seed=0)
    density = (args.size / args.train_size) ** 2  # the training canvases' digits per area
    per_canvas = (max(1, round(1 * density)), max(1, round(3 * density)))
    _, (xt, yt) = load_digit_segmentation(size=args.size, num_train=1, num_test=args.test, digit_sizes=DIGIT_SIZES,
                                          digits_per_canvas=per_canvas, seed=1)
    return (x / 127.5 - 1.0).astype("float32"), y, (xt / 127.5 - 1.0).astype("float32"), yt


def _models(args, x, y):
    """``{"anchor", "adpc"}``: the unmasked model (the anchor) and ADP-C trained with dense-simulated
    masking on the same schedule; the step schedule adds ``"base"``, the unmasked model before its tail."""
    import keras
    import tensorflow as tf

    from keras_visrec.adpc import AnytimeHRNet, PolyLR, compile_anytime

    def build(mode):
        keras.utils.set_random_seed(args.seed)
        model = AnytimeHRNet(SMALL, classes=11, exit_width=32, threshold=args.threshold, mode=mode, tile=args.tile,
                             dense_above=args.dense_above, bn_momentum=0.9, name="bench_adpc")
        model(x[:1])
        return model

    data = tf.data.Dataset.from_tensor_slices((x, y)).shuffle(len(x), seed=0).batch(8, drop_remainder=True)
    if args.schedule == "poly":
        whole = [(args.epochs, PolyLR(3e-3, args.epochs * int(data.cardinality())))]
        plans = (("anchor", "none", "unmasked_poly", None, whole), ("adpc", "dense", "adpc_poly", None, whole))
    else:
        first, tail = (args.epochs - args.tail_epochs, 3e-3), (args.tail_epochs, 5e-4)
        adpc = ("adpc_from_base", "base", [tail]) if args.adpc_from == "base" else ("adpc", None, [first, tail])
        plans = (("base", "none", "base", None, [first]), ("anchor", "none", "base_ft", "base", [tail]),
                 ("adpc", "dense", *adpc))
    models = {}
    for name, mode, stem, start, phases in plans:
        path = args.weights and os.path.join(args.weights, f"{stem}.weights.h5")
        model = build(mode)
        if path and os.path.exists(path):
            model.load_weights(path)
        else:
            if start:
                model.set_weights(models[start].get_weights())
            for epochs, rate in phases:  # a new optimizer per phase, the same for both models
                compile_anytime(model, optimizer=keras.optimizers.Adam(rate))
                model.fit(data, epochs=epochs, verbose=2)
            if path:
                os.makedirs(args.weights, exist_ok=True)
                model.save_weights(path)
        models[name] = model
    return models


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


def main():
    args = _parse()
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
    modes = ("none", "dense") if args.accuracy_only else MODES  # sparse matches dense; it is timed below
    results = {mode: evaluate_exits(model, images, labels, mode=mode, threshold=args.threshold, progress=False)
               for mode in modes}
    print(f"ADP-C (masked training from {'the start' if args.adpc_from == 'scratch' else 'the unmasked model before the tail'}):")
    for mode, result in results.items():
        print(result.table())
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
    print(f"final_exit_saving_sparse_vs_none_percent: {100 * (1 - times['sparse'][3] / times['none'][3]):.1f}")

if __name__ == "__main__":
    main()

"""ADP-C masked computation: does skipping confident pixels save wall-clock time on CPU?

Trains a small HRNet-style ADP-C model on the digit-segmentation task (real sklearn digits on
``--train-size`` canvases; the test canvases are ``--size`` with digits of the same sizes, so a
larger test canvas is a larger scene, not larger objects), then times one image at a time to
each exit with no masking, the paper's dense simulation and the block-sparse mode, and prints the ratios against the unmasked anchor measured
in the same run, the computed (not skipped) share and the mIoU of each mode.

Figures are taken on a shared CPU: other processes may be running; compare ratios, not seconds.

    python bench/adpc_masked.py [--size 256] [--epochs 12] [--threshold 0.998] [--weights model.weights.h5]
"""

import argparse
import itertools
import os
import time

import numpy as np

SMALL = dict(stem=32, layer1=(1, 16), stages=((1, (2, 2), (16, 32)), (2, (2, 2, 2), (16, 32, 64)),
                                            (2, (2, 2, 2, 2), (16, 32, 64, 128))))

DIGIT_SIZES = (16, 24, 32, 40)  # one object scale for training and test canvases of any size


def _parse():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=256, help="test canvas side (divisible by 32)")
    parser.add_argument("--train-size", type=int, default=128, help="training canvas side (divisible by 32)")
    parser.add_argument("--train", type=int, default=768, help="training canvases")
    parser.add_argument("--test", type=int, default=48, help="test canvases")
    parser.add_argument("--epochs", type=int, default=12)
    parser.add_argument("--threshold", type=float, default=0.998)
    parser.add_argument("--tile", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=3, help="timing passes over the test images")
    parser.add_argument("--weights", default=None,
                        help="a .weights.h5 file: loaded when it exists (no training), else written after training")
    return parser.parse_args()


def _train(args):
    import keras
    import tensorflow as tf

    from keras_visrec.adpc import AnytimeHRNet, train_anytime
    from keras_visrec.data.digit_segmentation import load_digit_segmentation

    (x, y), _ = load_digit_segmentation(size=args.train_size, num_train=args.train, num_test=1,
                                        digit_sizes=DIGIT_SIZES, seed=0)
    _, (xt, yt) = load_digit_segmentation(size=args.size, num_train=1, num_test=args.test, digit_sizes=DIGIT_SIZES,
                                          seed=1)
    x, xt = x / 127.5 - 1.0, xt / 127.5 - 1.0

    def build():
        return AnytimeHRNet(SMALL, classes=11, exit_width=32, threshold=args.threshold, mode="dense",
                            tile=args.tile, bn_momentum=0.9, name="bench_adpc")

    if args.weights and os.path.exists(args.weights):
        model = build()
        model(xt[:1].astype("float32"))
        model.load_weights(args.weights)
        return model, xt.astype("float32"), yt
    data = tf.data.Dataset.from_tensor_slices((x, y)).shuffle(len(x), seed=0).batch(8, drop_remainder=True)
    model, _ = train_anytime(build, data, epochs=args.epochs, optimizer=keras.optimizers.Adam(3e-3), verbose=2)
    if args.weights:
        model.save_weights(args.weights)
    return model, xt.astype("float32"), yt


def _time_to_exit(model, images, mode, threshold, exit_number, repeats):
    import tensorflow as tf

    def run(image):
        return list(itertools.islice(model.iter_exits(image, mode=mode, threshold=threshold), exit_number))[-1]

    fn = tf.function(run)
    fn(images[:1])  # trace
    best = []
    for _ in range(repeats):
        start = time.perf_counter()
        for i in range(len(images)):
            fn(images[i:i + 1]).numpy()
        best.append((time.perf_counter() - start) / len(images))
    return min(best)


def main():
    args = _parse()
    from keras_visrec.adpc import evaluate_exits

    model, images, labels = _train(args)
    results = {mode: evaluate_exits(model, images, labels, mode=mode, threshold=args.threshold, progress=False)
               for mode in ("none", "dense", "sparse")}
    for mode, result in results.items():
        print(result.table())
    anchor = None
    for mode in ("none", "dense", "sparse"):
        times = [_time_to_exit(model, images, mode, args.threshold, k, args.repeats) for k in range(1, 5)]
        anchor = anchor or times
        for k, seconds in enumerate(times, start=1):
            print(f"{mode}_exit{k}_ms_per_image: {1000 * seconds:.2f}")
            print(f"{mode}_exit{k}_ratio_vs_none: {seconds / anchor[k - 1]:.3f}")
    print(f"final_exit_saving_sparse_vs_none_percent: "
          f"{100 * (1 - _time_to_exit(model, images, 'sparse', args.threshold, 4, args.repeats) / anchor[3]):.1f}")
    print("computed_share_per_segment:", ", ".join(f"{s:.3f}" for s in results["sparse"].computed))
    print(f"skipped_share_final_segment: {1 - results['sparse'].computed[2]:.3f}")
    for mode, result in results.items():
        print(f"{mode}_final_miou: {result.miou[3]:.2f}")
    print(f"miou_loss_sparse_vs_none: {results['none'].miou[3] - results['sparse'].miou[3]:.2f}")
    print(f"gflops_per_exit_none: {', '.join(f'{g:.4f}' for g in results['none'].gflops)}")
    print(f"gflops_per_exit_sparse: {', '.join(f'{g:.4f}' for g in results['sparse'].gflops)}")


if __name__ == "__main__":
    main()

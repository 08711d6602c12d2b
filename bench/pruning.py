"""Params, MACs and CPU latency of each pruned architecture against its unpruned parent.

Prints ``name: value`` lines; every latency ratio is against the parent measured in the same run
(the machine is shared, so absolute times are taken under contention). Usage:
``python bench/pruning.py [--batch 16] [--repeats 10] [--quick]``.
"""

import argparse
import time

import numpy as np


def _latency(model, batch, repeats):
    x = np.random.default_rng(0).uniform(0, 255, (batch,) + tuple(model.input.shape[1:])).astype("float32")
    import tensorflow as tf

    call = tf.function(lambda t: model(t, training=False))  # keras' predict adds per-call overhead
    call(x)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        call(x).numpy()
        times.append(time.perf_counter() - start)
    return float(np.median(times))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--quick", action="store_true", help="VGG-16 and ResNet-56 only")
    args = parser.parse_args()

    import keras_visrec
    from keras_visrec import cifar
    from keras_visrec.pruning import convnext as prune_zoo
    from keras_visrec.pruning import l1_norm

    pairs = [("vgg16", cifar.VGG16CIFAR, ["vgg16_a"]), ("resnet56", cifar.ResNet56CIFAR, ["resnet56_a", "resnet56_b"])]
    if not args.quick:
        pairs.append(("resnet110", cifar.ResNet110CIFAR, ["resnet110_a", "resnet110_b"]))
    rows = []
    for parent_name, build, configs in pairs:
        parent = build()
        children = [(c, l1_norm.l1_prune_config(parent, c)) for c in configs]
        rows.append((parent_name, parent, children))
    atto = keras_visrec.ConvNeXtAtto(input_shape=(64, 64, 3), classes=10)
    rows.append(("convnext_atto@64", atto, [("convnext_atto_mlp50", prune_zoo.prune_convnext_mlp(atto, 0.5))]))

    for parent_name, parent, children in rows:
        base_macs = keras_visrec.count_flops(parent).total
        base_params = parent.count_params()
        base_time = _latency(parent, args.batch, args.repeats)
        print(f"{parent_name}_params: {base_params}")
        print(f"{parent_name}_mmacs: {base_macs / 1e6:.2f}")
        print(f"{parent_name}_latency_ms_batch{args.batch}: {1e3 * base_time:.2f}")
        for child_name, child in children:
            macs = keras_visrec.count_flops(child).total
            child_time = _latency(child, args.batch, args.repeats)
            print(f"{child_name}_params: {child.count_params()} (ratio {child.count_params() / base_params:.3f})")
            print(f"{child_name}_mmacs: {macs / 1e6:.2f} (ratio {macs / base_macs:.3f}, "
                  f"{100 * (1 - macs / base_macs):.1f}% fewer)")
            print(f"{child_name}_latency_ms_batch{args.batch}: {1e3 * child_time:.2f} "
                  f"(ratio {child_time / base_time:.3f} vs {parent_name})")


if __name__ == "__main__":
    main()

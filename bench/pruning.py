"""Params, MACs and CPU latency of each pruned architecture against its unpruned parent.

Prints ``name: value`` lines; every latency ratio is against the parent measured in the same run,
in interleaved rounds (parent, child, parent, child, …; best and median of the rounds), because
the machine is shared and absolute times are taken under contention. The last block times one
training step of a model under native magnitude masks (``keras_visrec.pruning.prune_low_magnitude``)
against the same model unmasked: the cost of applying the masks in the forward pass. Usage:
``python bench/pruning.py [--batch 16] [--rounds 10] [--quick]``.
"""

import argparse
import time

import numpy as np


def _timer(model, batch, *, train=False):
    """A function timing one forward (or training) step of ``model`` on a fixed batch."""
    import tensorflow as tf

    x = np.random.default_rng(0).uniform(0, 255, (batch,) + tuple(model.input.shape[1:])).astype("float32")
    if train:
        y = np.zeros(batch, "int32")
        model.compile("sgd", "sparse_categorical_crossentropy")
        model.train_on_batch(x, y)

        def step():
            model.train_on_batch(x, y)
    else:
        call = tf.function(lambda t: model(t, training=False))  # keras' predict adds per-call overhead
        call(x)

        def step():
            call(x).numpy()

    def timed():
        start = time.perf_counter()
        step()
        return time.perf_counter() - start

    return timed


def _interleaved(timers, rounds):
    """``[(best, median)]`` per timer over ``rounds`` interleaved rounds."""
    times = [[] for _ in timers]
    for _ in range(rounds):
        for i, timed in enumerate(timers):
            times[i].append(timed())
    return [(float(np.min(t)), float(np.median(t))) for t in times]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--quick", action="store_true", help="VGG-16 and ResNet-56 only")
    args = parser.parse_args()

    import keras_visrec
    from keras_visrec import cifar
    from keras_visrec.pruning import convnext as prune_zoo
    from keras_visrec.pruning import l1_norm, magnitude

    pairs = [("vgg16", cifar.VGG16CIFAR, ["vgg16_a"]), ("resnet56", cifar.ResNet56CIFAR, ["resnet56_a", "resnet56_b"])]
    if not args.quick:
        pairs.append(("resnet110", cifar.ResNet110CIFAR, ["resnet110_a", "resnet110_b"]))
    rows = []
    for parent_name, build, configs in pairs:
        parent = build()
        children = [(c, l1_norm.l1_prune_config(parent, c)[0]) for c in configs]
        rows.append((parent_name, parent, children))
    atto = keras_visrec.ConvNeXtAtto(input_shape=(64, 64, 3), classes=10)
    rows.append(("convnext_atto@64", atto, [("convnext_atto_mlp50", prune_zoo.prune_convnext_mlp(atto, 0.5)[0])]))

    for parent_name, parent, children in rows:
        base_macs = keras_visrec.count_flops(parent).total
        base_params = parent.count_params()
        timings = _interleaved([_timer(m, args.batch) for m in [parent] + [c for _, c in children]], args.rounds)
        (base_best, base_median), child_timings = timings[0], timings[1:]
        print(f"{parent_name}_params: {base_params}")
        print(f"{parent_name}_mmacs: {base_macs / 1e6:.2f}")
        print(f"{parent_name}_latency_ms_batch{args.batch}: best {1e3 * base_best:.2f} median {1e3 * base_median:.2f}")
        for (child_name, child), (best, median) in zip(children, child_timings):
            macs = keras_visrec.count_flops(child).total
            print(f"{child_name}_params: {child.count_params()} (ratio {child.count_params() / base_params:.3f})")
            print(f"{child_name}_mmacs: {macs / 1e6:.2f} (ratio {macs / base_macs:.3f}, "
                  f"{100 * (1 - macs / base_macs):.1f}% fewer)")
            print(f"{child_name}_latency_ms_batch{args.batch}: best {1e3 * best:.2f} median {1e3 * median:.2f} "
                  f"(ratio best {best / base_best:.3f}, median {median / base_median:.3f} vs {parent_name})")

    plain = cifar.VGG16CIFAR(name="vgg16_plain")
    masked = magnitude.prune_low_magnitude(plain, magnitude.ConstantSparsity(0.8))
    (plain_best, plain_median), (mask_best, mask_median) = _interleaved(
        [_timer(plain, args.batch, train=True), _timer(masked, args.batch, train=True)], args.rounds)
    print(f"vgg16_train_step_ms_batch{args.batch}: best {1e3 * plain_best:.2f} median {1e3 * plain_median:.2f}")
    print(f"vgg16_masked_train_step_ms_batch{args.batch}: best {1e3 * mask_best:.2f} median {1e3 * mask_median:.2f} "
          f"(ratio best {mask_best / plain_best:.3f}, median {mask_median / plain_median:.3f} vs unmasked)")


if __name__ == "__main__":
    main()

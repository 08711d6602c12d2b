"""The README's main job: fine-tune a small ConvNeXt on real handwritten digits, offline.

``python -m keras_visrec demo`` (or ``make demo``) builds ConvNeXt-Atto, trains it with
``model.fit`` on scikit-learn's 8×8 digit scans upscaled to 32×32 RGB, reports held-out
accuracy, saves a ``.keras`` file and reloads it through ``weights=``, then exports fp32 and
int8 TFLite models and reports their accuracy and latency. Nothing is downloaded.
"""

import os
import time

from keras_visrec.files import atomic_path

__all__ = ["register", "run_demo", "train_digits"]


def train_digits(model="convnext_atto", *, epochs=10, image_size=32, batch_size=64, learning_rate=2e-3,
                 drop_path_rate=0.1, strategy=None, verbose="auto", seed=0):
    """Trains a classifier on scikit-learn's digits; returns ``(model, held_out_accuracy, history)``.

    Args:
        model: str or callable. A registered model name (``keras_visrec.list_models()``) or a
            builder called as ``model(input_shape=..., classes=10, drop_path_rate=...)``.
            Defaults to `"convnext_atto"`.
        epochs: int. Training epochs (warm-up 1 epoch, then cosine decay). Defaults to `10`.
        image_size: int. Square input size, a multiple of 32. Defaults to `32`.
        batch_size: int. Global batch size. Defaults to `64`.
        learning_rate: float. Peak AdamW learning rate. Defaults to `2e-3`.
        drop_path_rate: float. Stochastic depth rate. Defaults to `0.1`.
        strategy: `None`, `"mirrored"`, `"multiworker"` or a `tf.distribute.Strategy`
            (see `keras_visrec.training.resolve_strategy`). Defaults to `None`.
        verbose: Keras `fit` verbosity (progress bar by default).
        seed: int. Seed of the data split and initialisation. Defaults to `0`.
    """
    import keras

    from keras_visrec.data import load_digits_images
    from keras_visrec.models import get_model_builder
    from keras_visrec.recipe.optim import convnext_adamw
    from keras_visrec.training import build_optimizer, strategy_scope

    if not isinstance(epochs, int) or epochs < 1:
        raise ValueError(f"`epochs` must be a positive integer; received epochs={epochs!r}.")
    keras.utils.set_random_seed(seed)
    (x_train, y_train), (x_test, y_test) = load_digits_images(size=image_size, seed=seed)
    builder = get_model_builder(model) if isinstance(model, str) else model
    steps_per_epoch = -(-len(x_train) // batch_size)
    with strategy_scope(strategy):
        net = builder(input_shape=(image_size, image_size, 3), classes=10, drop_path_rate=drop_path_rate)
        schedule = keras.optimizers.schedules.CosineDecay(
            0.0, decay_steps=max(1, (epochs - 1) * steps_per_epoch), warmup_target=learning_rate,
            warmup_steps=steps_per_epoch,
        )
        # the recipe's AdamW: no decay on norms and biases; the schedule evaluated once per step
        net.compile(
            optimizer=convnext_adamw(net, schedule, weight_decay=0.05, layer_decay=1.0),
            loss="sparse_categorical_crossentropy",
            metrics=["accuracy"],
        )
        build_optimizer(net)
    history = net.fit(x_train, y_train, batch_size=batch_size, epochs=epochs, verbose=verbose,
                      validation_data=(x_test, y_test))
    _, accuracy = net.evaluate(x_test, y_test, batch_size=256, verbose=0)
    return net, float(accuracy), history


def run_demo(*, model="convnext_atto", epochs=10, output_dir="out/demo", export=True, strategy=None, seed=0,
             verbose="auto"):
    """Runs the whole demo and returns a dict of the figures it printed."""
    import numpy as np

    from keras_visrec.data import load_digits_images
    from keras_visrec.flops import count_flops
    from keras_visrec.models import get_model_builder

    results = {}
    print(f"== 1. Fine-tune {model} on scikit-learn's handwritten digits (32×32 RGB, 10 classes)")
    net, accuracy, _ = train_digits(model, epochs=epochs, strategy=strategy, seed=seed, verbose=verbose)
    flops = count_flops(net)
    print(f"params: {net.count_params():,}   MACs per image: {flops.total / 1e6:.2f} M")
    print(f"held-out accuracy: {accuracy:.4f}")
    results["accuracy"] = accuracy

    print("== 2. Save as .keras and load it back through weights=")
    os.makedirs(output_dir, exist_ok=True)
    path = os.path.join(output_dir, f"{model}_digits.keras")
    _save_atomically(net, path)
    reloaded = get_model_builder(model)(input_shape=(32, 32, 3), classes=10, weights=path)
    (_, _), (x_test, y_test) = load_digits_images(size=32)
    same = np.allclose(net.predict(x_test[:64], verbose=0), reloaded.predict(x_test[:64], verbose=0), atol=1e-6)
    print(f"saved {path} ({os.path.getsize(path) / 2**20:.1f} MiB); reloaded outputs identical: {same}")
    results["reload_identical"] = bool(same)
    if export:
        results.update(_export_step(net, output_dir, model))
    return results


def _export_step(net, output_dir, model):
    """Exports fp32 and int8 TFLite models and prints their accuracy and latency."""
    import numpy as np

    from keras_visrec.data import load_digits_images
    from keras_visrec.tflite.export import export_tflite
    from keras_visrec.tflite.runtime import load_tflite

    (x_train, _), (x_test, y_test) = load_digits_images(size=32)
    results = {}
    print("== 3. Export to TFLite (fp32, int8 calibrated on 200 real training images)")
    for quantization in ("fp32", "int8"):
        path = os.path.join(output_dir, f"{model}_digits_{quantization}.tflite")
        report = export_tflite(net, path, quantization=quantization, representative_data=x_train[:200])
        runner = load_tflite(path, num_threads=2)
        predictions = np.concatenate([runner.predict(x[None]) for x in x_test]).argmax(-1)
        accuracy = float((predictions == y_test).mean())
        latency = runner.benchmark(runs=50)
        print(f"{quantization}: {os.path.getsize(path) / 1024:.0f} KiB, held-out accuracy {accuracy:.4f}, "
              f"latency p50 {latency['p50_ms']:.2f} ms (batch 1, 2 threads)")
        results[f"tflite_{quantization}_accuracy"] = accuracy
        results[f"tflite_{quantization}_p50_ms"] = latency["p50_ms"]
        del report
    return results


def _save_atomically(model, path):
    with atomic_path(path) as temporary:
        model.save(temporary)


def register(subparsers):
    from keras_visrec.cli_args import add_model, add_output_dir, add_seed, add_strategy, add_verbosity, positive_int

    parser = subparsers.add_parser("demo", help="fine-tune a small ConvNeXt on real digits, save, export")
    add_model(parser, default="convnext_atto", help="registered model name", deprecated=("--model",))
    parser.add_argument("--epochs", type=positive_int, default=10, help="training epochs (default: 10)")
    add_output_dir(parser, default="out/demo", help="where to write .keras/.tflite files (default: out/demo)")
    parser.add_argument("--no-export", action="store_true", help="skip the TFLite step")
    add_strategy(parser)
    add_seed(parser)
    add_verbosity(parser)
    parser.set_defaults(func=_main)


def _main(args):
    start = time.time()
    run_demo(model=args.model, epochs=args.epochs, output_dir=args.output_dir, export=not args.no_export,
             strategy=args.strategy, seed=args.seed, verbose=0 if args.verbosity == 0 else "auto")
    print(f"demo finished in {time.time() - start:.0f} s")
    return 0

"""ConvNeXt-T throughput: keras_visrec vs keras.applications (and timm / HF transformers on torch).

Batch 8 at 224×224, fp32, on the CPU: inference images/s and training steps/s, each anchor
measured in the same run. Prints `name: value` lines and the ratios.

    python bench/convnext_throughput.py [--batch 8] [--repeats 5] [--threads N]
"""

import argparse
import os
import statistics
import time

import numpy as np


def _timed(fn, repeats, warmup=2):
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def keras_runner(model, x, y):
    import keras
    import tensorflow as tf

    infer = tf.function(lambda t: model(t, training=False))
    model.compile(optimizer=keras.optimizers.AdamW(1e-4), loss="sparse_categorical_crossentropy")

    def train():
        model.train_on_batch(x, y)

    return (lambda: infer(x).numpy()), train


def torch_runner(module, x, y):
    import torch

    module.eval()
    xt = torch.from_numpy(x.transpose(0, 3, 1, 2).copy())
    yt = torch.from_numpy(y.astype("int64"))
    optimizer = torch.optim.AdamW(module.parameters(), lr=1e-4)

    def infer():
        with torch.inference_mode():
            out = module(xt)
        return out

    def train():
        module.train()
        optimizer.zero_grad()
        out = module(xt)
        logits = out.logits if hasattr(out, "logits") else out
        torch.nn.functional.cross_entropy(logits, yt).backward()
        optimizer.step()
        module.eval()

    return infer, train


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    parser.add_argument("--skip-train", action="store_true")
    args = parser.parse_args()

    import keras_visrec  # first: it enables TensorFlow's oneDNN rewrites before TF starts

    import keras
    import tensorflow as tf

    rng = np.random.default_rng(0)
    x = rng.uniform(0, 255, (args.batch, 224, 224, 3)).astype("float32")
    y = rng.integers(0, 1000, args.batch)
    print(f"batch: {args.batch}  threads: {args.threads}  cpu_count: {os.cpu_count()}  "
          f"TF_ENABLE_ONEDNN_OPTS: {os.environ.get('TF_ENABLE_ONEDNN_OPTS')}  tensorflow: {tf.__version__}")

    candidates = {
        "keras_visrec": lambda: keras_runner(keras_visrec.ConvNeXtTiny(input_shape=(224, 224, 3)), x, y),
        "keras.applications": lambda: keras_runner(keras.applications.ConvNeXtTiny(weights=None), x, y),
    }
    try:
        import torch

        torch.set_num_threads(args.threads)
        try:
            import timm

            candidates["timm (torch)"] = lambda: torch_runner(timm.create_model("convnext_tiny"), x, y)
        except ImportError:
            print("timm: not installed (needs torchvision); skipped")
        try:
            from transformers import ConvNextConfig, ConvNextForImageClassification

            candidates["HF transformers (torch)"] = lambda: torch_runner(
                ConvNextForImageClassification(ConvNextConfig(num_labels=1000)), x, y)
        except ImportError:
            print("transformers: not installed; skipped")
    except ImportError:
        print("torch: not installed; timm / HF anchors skipped")

    inference, training = {}, {}
    for name, make in candidates.items():
        infer, train = make()
        inference[name] = args.batch / _timed(infer, args.repeats)
        print(f"{name} inference img/s: {inference[name]:.2f}", flush=True)
        if not args.skip_train:
            training[name] = 1.0 / _timed(train, max(2, args.repeats // 2), warmup=1)
            print(f"{name} train steps/s: {training[name]:.3f}", flush=True)

    ours = inference["keras_visrec"]
    for name in inference:
        if name != "keras_visrec":
            print(f"ratio inference keras_visrec / {name}: {ours / inference[name]:.2f}")
            if name in training:
                print(f"ratio train keras_visrec / {name}: {training['keras_visrec'] / training[name]:.2f}")
    print("goals: >= 5x keras.applications, >= 1.3x timm (torch CPU) for inference")


if __name__ == "__main__":
    main()

"""ConvNeXt-T throughput: keras_visrec vs keras.applications (and timm / HF transformers on torch).

Batch 8 at 224×224, fp32, on the CPU: inference images/s and training steps/s, each anchor
measured in the same run. Prints `name: value` lines and the ratios.

timm needs torchvision, which cannot share a virtualenv with the CPU build of torch that the
test extra installs; ``--torch-python`` runs the torch anchors (timm, HF transformers) with
another interpreter, in a child process of this run, e.g. a venv holding torch, torchvision and timm.

    python bench/convnext_throughput.py [--batch 8] [--repeats 5] [--threads N] [--torch-python PATH]
"""

import argparse
import os
import re
import statistics
import subprocess
import sys
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


def _torch_candidates(x, y, threads):
    """The torch anchors importable in this interpreter, as name -> maker."""
    try:
        import torch
    except ImportError:
        print("torch: not installed; timm / HF anchors skipped")
        return {}
    torch.set_num_threads(threads)
    version = f"torch {torch.__version__}"
    candidates = {}
    try:
        import timm

        candidates[f"timm ({version})"] = lambda: torch_runner(timm.create_model("convnext_tiny"), x, y)
    except ImportError:
        print("timm: not installed here (needs torchvision); see --torch-python")
    try:
        from transformers import ConvNextConfig, ConvNextForImageClassification

        candidates[f"HF transformers ({version})"] = lambda: torch_runner(
            ConvNextForImageClassification(ConvNextConfig(num_labels=1000)), x, y)
    except ImportError:
        print("transformers: not installed; skipped")
    return candidates


def _inference_round(runners, args, inference):
    """One timed pass over every runner; the best rate over rounds counts (a shared CPU is noisy)."""
    for name, (infer, _) in runners.items():
        inference[name] = max(inference.get(name, 0.0), args.batch / _timed(infer, args.repeats))


def _train_once(runners, args, training):
    for name, (_, train) in runners.items():
        training[name] = 1.0 / _timed(train, max(2, args.repeats // 2), warmup=1)


def _measure_in_child(args, inference, training, *, train):
    """One round of this script's torch anchors under ``args.torch_python``; merges its figures."""
    command = [args.torch_python, os.path.abspath(__file__), "--torch-only", "--rounds", "1",
               "--batch", str(args.batch), "--repeats", str(args.repeats), "--threads", str(args.threads)]
    if not train:
        command.append("--skip-train")
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode:
        print(f"--torch-python {args.torch_python}: failed (exit {result.returncode}):\n{result.stderr[-2000:]}")
        return False
    for line in result.stdout.splitlines():
        match = re.fullmatch(r"(.+) (inference img/s|train steps/s): ([0-9.]+)", line)
        if not match:
            print(line, flush=True)
        elif match[2].startswith("inference"):
            inference[match[1]] = max(inference.get(match[1], 0.0), float(match[3]))
        else:
            training[match[1]] = float(match[3])
    return True


def _print_figures(inference, training):
    for name in inference:
        print(f"{name} inference img/s: {inference[name]:.2f}")
        if name in training:
            print(f"{name} train steps/s: {training[name]:.3f}")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    parser.add_argument("--rounds", type=int, default=3, help="interleaved inference rounds; the best counts")
    parser.add_argument("--skip-train", action="store_true")
    parser.add_argument("--torch-python", help="another Python whose torch anchors (timm, HF) to run too")
    parser.add_argument("--torch-only", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.torch_python and not os.path.exists(args.torch_python):
        parser.error(f"--torch-python: no such interpreter: {args.torch_python}")

    rng = np.random.default_rng(0)
    x = rng.uniform(0, 255, (args.batch, 224, 224, 3)).astype("float32")
    y = rng.integers(0, 1000, args.batch)
    inference, training = {}, {}
    if args.torch_only:
        runners = {name: make() for name, make in _torch_candidates(x, y, args.threads).items()}
        for _ in range(args.rounds):
            _inference_round(runners, args, inference)
        if not args.skip_train:
            _train_once(runners, args, training)
        _print_figures(inference, training)
        return

    import keras_visrec  # first: it enables TensorFlow's oneDNN rewrites before TF starts

    import keras
    import tensorflow as tf

    print(f"batch: {args.batch}  threads: {args.threads}  cpu_count: {os.cpu_count()}  "
          f"TF_ENABLE_ONEDNN_OPTS: {os.environ.get('TF_ENABLE_ONEDNN_OPTS')}  tensorflow: {tf.__version__}  "
          f"python: {sys.executable}")
    candidates = {
        "keras_visrec": lambda: keras_runner(keras_visrec.ConvNeXtTiny(input_shape=(224, 224, 3)), x, y),
        "keras.applications": lambda: keras_runner(keras.applications.ConvNeXtTiny(weights=None), x, y),
    }
    candidates.update(_torch_candidates(x, y, args.threads))
    runners = {name: make() for name, make in candidates.items()}
    for _ in range(args.rounds):  # rounds alternate between this process and the child's torch
        _inference_round(runners, args, inference)
        if args.torch_python and not _measure_in_child(args, inference, training, train=False):
            args.torch_python = None
    if not args.skip_train:
        _train_once(runners, args, training)
        if args.torch_python:
            _measure_in_child(args, inference, training, train=True)
    print(f"rounds: {args.rounds} (inference: best round; training: one measurement)")
    _print_figures(inference, training)

    ours = inference["keras_visrec"]
    for name in inference:
        if name != "keras_visrec":
            print(f"ratio inference keras_visrec / {name}: {ours / inference[name]:.2f}")
            if name in training:
                print(f"ratio train keras_visrec / {name}: {training['keras_visrec'] / training[name]:.2f}")
    print("goals: >= 5x keras.applications, >= 1.3x timm (torch CPU) for inference")


if __name__ == "__main__":
    main()

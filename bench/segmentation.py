"""UperNet-ConvNeXt-T at 512×512 on the CPU: keras_visrec vs transformers' UperNet (torch), same run.

Per batch size (default 1 and 4), fp32:

* inference img/s — full-resolution logits: ours ``drop_auxiliary(model)`` + the bilinear
  upsampling the metric uses; transformers ``UperNetForSemanticSegmentation`` without its
  auxiliary head (its forward upsamples);
* training steps/s — one optimizer step on (images, 512² labels): pixel cross-entropy on the
  upsampled decode logits + 0.4 × the auxiliary head's, AdamW, drop path 0.4, BN in training mode
  (ours ``train_on_batch`` with ``SegmentationLoss``; transformers' own loss with ``labels=``).

The torch anchor runs in a child process started once (``--torch-python``, default this
interpreter), driven round by round so the two frameworks alternate on the same cores (the order
alternates too); each round times every contender ``--repeats`` times, after ``--warmup`` untimed
calls in the first round (tracing, allocator, oneDNN primitive caches). Best and median over all rounds are
printed with the ratios ours / anchor. Then the peak RSS of a fresh process that builds the model
and runs one training step at 512×512, batch 2, for each framework.

    python bench/segmentation.py [--rounds 3] [--repeats 2] [--warmup 1] [--batches 1,4] [--threads N]
                                 [--size 512] [--torch-python PATH] [--skip-train] [--skip-rss]
"""

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time

import numpy as np

GOALS = {"inference": 1.3, "train": 1.2}


def _data(batch, size, classes=150, seed=0):
    rng = np.random.default_rng(seed)
    images = rng.uniform(0, 255, (batch, size, size, 3)).astype("float32")
    labels = rng.integers(0, classes, (batch, size, size)).astype("int32")
    labels[:, :8] = 255  # some ignored pixels, as ADE20K's "other"
    return images, labels


def _kinds(kinds, batch):
    """The measurements a batch size allows: one image cannot train the PPM's BatchNorm."""
    return [kind for kind in kinds if kind != "train" or batch >= 2]


def _times(fn, repeats, warmup):
    for _ in range(warmup):
        fn()
    result = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        result.append(time.perf_counter() - start)
    return result


# ---- keras_visrec -----------------------------------------------------------------------------------

def _keras_runners(batch, size, jit):
    import keras
    import tensorflow as tf

    import keras_visrec
    from keras_visrec.segmentation.losses import SegmentationLoss, upsample_logits

    images, labels = _data(batch, size)
    model = keras_visrec.UperNetConvNeXtTiny(input_shape=(size, size, 3))
    inference = keras_visrec.upernet.drop_auxiliary(model)
    infer_fn = tf.function(lambda x: upsample_logits(inference(x, training=False), size, size), jit_compile=jit == "on")
    model.compile(optimizer=keras.optimizers.AdamW(1e-4, weight_decay=0.05),
                  loss=[SegmentationLoss(), SegmentationLoss()], loss_weights=[1.0, 0.4],
                  jit_compile={"on": True, "off": False}.get(jit, "auto"))
    x = tf.constant(images)

    def infer():
        infer_fn(x).numpy()

    def train():
        model.train_on_batch(images, [labels, labels])

    return infer, train, model


def _keras_rss_step(size, batch):
    _, train, _ = _keras_runners(batch, size, "auto")
    train()


# ---- transformers (torch) -----------------------------------------------------------------------------

def _torch_runners(batch, size, threads):
    import torch
    from transformers import ConvNextConfig, UperNetConfig, UperNetForSemanticSegmentation

    torch.set_num_threads(threads)
    torch.manual_seed(0)

    def build(auxiliary):
        backbone = ConvNextConfig(depths=[3, 3, 9, 3], hidden_sizes=[96, 192, 384, 768], drop_path_rate=0.4,
                                  out_features=["stage1", "stage2", "stage3", "stage4"])
        return UperNetForSemanticSegmentation(UperNetConfig(
            backbone_config=backbone, hidden_size=512, auxiliary_in_channels=384, auxiliary_channels=256,
            num_labels=150, use_auxiliary_head=auxiliary))

    images, labels = _data(batch, size)
    pixels = torch.from_numpy(images.transpose(0, 3, 1, 2).copy())
    targets = torch.from_numpy(labels.astype("int64"))
    inference = build(False).eval()
    trained = build(True).train()
    optimizer = torch.optim.AdamW(trained.parameters(), lr=1e-4, weight_decay=0.05)

    def infer():
        with torch.inference_mode():
            inference(pixel_values=pixels).logits.numpy()

    def train():
        optimizer.zero_grad(set_to_none=True)
        trained(pixel_values=pixels, labels=targets).loss.backward()
        optimizer.step()

    return infer, train


def _torch_child(args):
    """The anchor's side: reads one JSON command per line, answers with the times (JSON)."""
    runners = {}
    for line in sys.stdin:
        command = json.loads(line)
        if command["op"] == "quit":
            return
        batch = command["batch"]
        if batch not in runners:
            runners[batch] = _torch_runners(batch, args.size, args.threads)
        infer, train = runners[batch]
        fn = infer if command["op"] == "infer" else train
        times = _times(fn, command["repeats"], command["warmup"])
        print(json.dumps(times), flush=True)


def _torch_rss_step(size, batch, threads):
    _, train = _torch_runners(batch, size, threads)
    train()


# ---- the run --------------------------------------------------------------------------------------------

class _Child:
    def __init__(self, python, args):
        command = [python, os.path.abspath(__file__), "--torch-child", "--size", str(args.size),
                   "--threads", str(args.threads)]
        self.process = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)

    def times(self, op, batch, repeats, warmup):
        self.process.stdin.write(json.dumps(dict(op=op, batch=batch, repeats=repeats, warmup=warmup)) + "\n")
        self.process.stdin.flush()
        line = self.process.stdout.readline()
        if not line:
            raise RuntimeError(f"the torch child process exited (code {self.process.poll()}); see its stderr")
        return json.loads(line)

    def close(self):
        if self.process.poll() is None:
            self.process.stdin.write(json.dumps({"op": "quit"}) + "\n")
            self.process.stdin.flush()
            self.process.wait(timeout=60)


def _peak_rss_mib():
    """This process image's peak resident set (MiB): Linux's ``VmHWM``, which ``exec`` resets. ``ru_maxrss``
    keeps the high-water mark of the process it was forked from (here the timing parent, ~5 GiB), so it
    is only the fallback where ``/proc`` is missing."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _peak_rss(framework, args):
    """Peak RSS (MiB) of a fresh process building UperNet-T and running one training step, batch 2."""
    command = [args.torch_python if framework == "torch" else sys.executable, os.path.abspath(__file__),
               "--rss-child", framework, "--size", str(args.size), "--threads", str(args.threads)]
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode:
        return f"failed (exit {result.returncode}): {result.stderr.strip().splitlines()[-1:]}"
    return float(result.stdout.strip().splitlines()[-1])


def _summary(seconds, batch):
    rates = [batch / s for s in seconds]
    return max(rates), statistics.median(rates)


def _check(parser, args):
    if args.rounds < 1 or args.repeats < 1 or args.threads < 1 or args.warmup < 0 or args.size < 32 or args.size % 32:
        parser.error("--rounds, --repeats, --threads must be >= 1, --warmup >= 0 and --size a multiple of 32; "
                     f"received rounds={args.rounds} repeats={args.repeats} threads={args.threads} "
                     f"warmup={args.warmup} size={args.size}")
    try:
        batches = [int(b) for b in args.batches.split(",")]
    except ValueError:
        parser.error(f"--batches must be comma-separated ints; received {args.batches!r}")
    if not batches or min(batches) < 1:
        parser.error(f"--batches must be positive; received {args.batches!r}")
    if not os.path.exists(args.torch_python):
        parser.error(f"--torch-python: no such interpreter: {args.torch_python}")
    probe = subprocess.run([args.torch_python, "-c", "import torch, transformers"], capture_output=True, text=True)
    if probe.returncode:
        parser.error(f"--torch-python {args.torch_python} cannot import torch and transformers: "
                     f"{probe.stderr.strip().splitlines()[-1:]}")
    return batches


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds (default 3)")
    parser.add_argument("--repeats", type=int, default=2, help="timed calls per contender per round (default 2)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed calls in the first round (default 1)")
    parser.add_argument("--batches", default="1,4", help="comma-separated batch sizes (default 1,4)")
    parser.add_argument("--size", type=int, default=512, help="input side (default 512)")
    parser.add_argument("--threads", type=int, default=os.cpu_count(), help="threads for both frameworks")
    parser.add_argument("--jit", choices=("auto", "on", "off"), default="auto",
                        help="XLA for our train step (Keras' jit_compile; default auto = Keras decides)")
    parser.add_argument("--torch-python", default=sys.executable, help="Python with torch + transformers")
    parser.add_argument("--skip-train", action="store_true")
    parser.add_argument("--skip-rss", action="store_true")
    parser.add_argument("--torch-child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--rss-child", choices=("keras", "torch"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.torch_child:
        return _torch_child(args)
    if args.rss_child:
        if args.rss_child == "torch":
            _torch_rss_step(args.size, 2, args.threads)
        else:
            import keras_visrec  # noqa: F401  (oneDNN set-up before TensorFlow starts)

            _keras_rss_step(args.size, 2)
        print(_peak_rss_mib())
        return 0
    batches = _check(parser, args)

    import keras_visrec  # noqa: F401  first: it enables TensorFlow's oneDNN rewrites before TF starts

    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(args.threads)
    print(f"model: UperNet-ConvNeXt-T  size: {args.size}  batches: {batches}  threads: {args.threads}  "
          f"cpu_count: {os.cpu_count()}  load average: {os.getloadavg()[0]:.1f}  tensorflow: {tf.__version__}  "
          f"TF_ENABLE_ONEDNN_OPTS: {os.environ.get('TF_ENABLE_ONEDNN_OPTS')}  torch python: {args.torch_python}")
    child = _Child(args.torch_python, args)
    ours = {batch: _keras_runners(batch, args.size, args.jit) for batch in batches}
    print(f"keras jit_compile: {ours[batches[0]][2].jit_compile}")
    times = {}
    kinds = ("infer",) if args.skip_train else ("infer", "train")
    try:
        for round_index in range(args.rounds):
            for batch in batches:
                for kind in _kinds(kinds, batch):
                    warmup = args.warmup if round_index == 0 else 0
                    fn = ours[batch][0 if kind == "infer" else 1]
                    order = [("keras_visrec", lambda: _times(fn, args.repeats, warmup)),
                             ("transformers", lambda: child.times(kind, batch, args.repeats, warmup))]
                    for name, measure in order if round_index % 2 == 0 else order[::-1]:
                        times.setdefault((name, kind, batch), []).extend(measure())
            print(f"round {round_index + 1}/{args.rounds} done", flush=True)
    finally:
        child.close()
    label = {"infer": "inference img/s", "train": "train steps/s"}
    for batch in batches:
        if "train" in kinds and batch < 2:
            print(f"train batch {batch}: not timed (BatchNorm on the PPM's 1x1 pooled map needs >= 2 values per "
                  "channel; torch raises, as mmseg's configs train 2+ images per device)")
        for kind in _kinds(kinds, batch):
            rate = {}
            for name in ("keras_visrec", "transformers"):
                seconds = times[(name, kind, batch)]
                scale = batch if kind == "infer" else 1
                best, median = _summary(seconds, scale)
                rate[name] = (best, median)
                print(f"{name} {label[kind]} batch {batch}: best {best:.3f} median {median:.3f}")
            best = rate["keras_visrec"][0] / rate["transformers"][0]
            median = rate["keras_visrec"][1] / rate["transformers"][1]
            goal = GOALS["inference" if kind == "infer" else "train"]
            print(f"ratio {kind} batch {batch} keras_visrec / transformers: best {best:.2f} median {median:.2f} "
                  f"(goal >= {goal}: {'met' if median >= goal else 'not met'})")
    if not args.skip_rss:
        for framework in ("keras", "torch"):
            print(f"peak RSS one training step batch 2 {framework}: {_peak_rss(framework, args)} MiB", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

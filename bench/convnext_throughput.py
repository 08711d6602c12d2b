"""ConvNeXt on the CPU: keras_visrec vs keras.applications, timm and HF transformers, inference and training.

Every contender runs in its own worker process (so each has its own peak RSS and no framework
shares a thread pool with another), built once, warmed up (tracing, first-step set-up and
allocator growth excluded), then timed in interleaved rounds: each round asks every worker in
turn — the order rotating — for ``--repeats`` timed inference batches, then for ``--repeats``
timed training steps. Best and median over all timed calls are printed per contender, with
ratios against keras_visrec measured in the same rounds.

Training is the fine-tuning recipe in each framework: AdamW (weight decay 0.05) with layer-wise
learning-rate decay 0.8 where the framework has it (keras_visrec: ``convnext_adamw``; timm:
``create_optimizer_v2(layer_decay=0.8)``; keras.applications and HF use plain AdamW — the decay
only changes per-variable scalars), drop path 0.1 and label smoothing 0.1, fp32.

timm needs torchvision, which does not load beside the CPU torch of the test extra:
``--torch-python`` runs the torch contenders (timm, HF transformers) under another interpreter,
e.g. a venv with torch, torchvision, timm and transformers.

    python bench/convnext_throughput.py [--model convnext_tiny] [--batch 8 32] [--image-size 224]
        [--rounds 3] [--repeats 3] [--warmup 2] [--threads N] [--torch-python PATH]
        [--contenders keras_visrec timm ...] [--skip-infer] [--skip-train] [--profile FILE]
        [--part pipeline] [--gemm-floor]

``--contenders`` may add ``keras_visrec-generic``: the same model with the fused training paths
off (``KERAS_VISREC_FUSED_TRAINING=0``), the "before" of this release's training work; and
``keras_visrec-bfloat16``: ours under the ``mixed_bfloat16`` policy.
``--profile FILE`` writes where keras_visrec's training step spends its time (per phase and op
type, from the TensorFlow profiler; see ``keras_visrec.training.profile_train_step``) after the
timed rounds. ``--part pipeline`` times the ``finetune`` command's ``tf.data`` input pipeline
(decode, RandAugment, random erasing, Mixup/CutMix) on a folder of synthetic JPEGs against the
images/s our training step consumes. ``--gemm-floor`` also times, in the keras_visrec and timm
workers, the training step's pointwise GEMMs alone (forward and both gradients of every MLP
layer, the step's own shapes), the floor under any exact fp32 step.
"""

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np

CONTENDERS = ("keras_visrec", "keras_visrec-generic", "keras_visrec-bfloat16", "keras.applications", "timm",
              "HF transformers")
TORCH_CONTENDERS = ("timm", "HF transformers")
GEMM_CONTENDERS = ("keras_visrec", "timm")  # --gemm-floor: one TensorFlow and one torch worker
DEFAULT_CONTENDERS = ("keras_visrec", "keras.applications", "timm", "HF transformers")
# keras_visrec name -> (timm name, (depths, dims)) for the contenders that have the variant
_ARCHS = {
    "convnext_atto": ((2, 2, 6, 2), (40, 80, 160, 320)),
    "convnext_femto": ((2, 2, 6, 2), (48, 96, 192, 384)),
    "convnext_pico": ((2, 2, 6, 2), (64, 128, 256, 512)),
    "convnext_nano": ((2, 2, 8, 2), (80, 160, 320, 640)),
    "convnext_tiny": ((3, 3, 9, 3), (96, 192, 384, 768)),
    "convnext_small": ((3, 3, 27, 3), (96, 192, 384, 768)),
    "convnext_base": ((3, 3, 27, 3), (128, 256, 512, 1024)),
}
_KERAS_APPLICATIONS = ("convnext_tiny", "convnext_small", "convnext_base")
_LR, _WEIGHT_DECAY, _LAYER_DECAY, _DROP_PATH, _SMOOTHING = 1e-4, 0.05, 0.8, 0.1, 0.1


def _peak_rss_mib():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux: KiB


def _pointwise_gemms(args, batch):
    """The MLP GEMMs of one ConvNeXt training step: ``(rows, inner, cols, count)``, rows = pixels.

    Per pointwise layer (C -> 4C and 4C -> C in every block) the forward ``X·W`` and the backward
    ``dY·Wᵀ`` (input gradient) and ``Xᵀ·dY`` (kernel gradient): 2·rows·inner·cols FLOPs each. They
    are ~93 % of ConvNeXt's MACs, so their time alone is a floor under any exact fp32 step.
    """
    depths, dims = _ARCHS[args.model]
    side, shapes = args.image_size // 4, []
    for depth, dim in zip(depths, dims):
        rows = batch * side * side
        for inner, cols in ((dim, 4 * dim), (4 * dim, dim)):
            shapes.append((rows, inner, cols, depth))
        side //= 2
    return shapes


def _gemm_flops(shapes):
    return sum(3 * 2 * rows * inner * cols * count for rows, inner, cols, count in shapes)


def _operands(shapes, normal):
    """Per layer of every block its own ``(X, W, dY)``: repeated products of the same tensors would be
    merged (TensorFlow's common-subexpression pass) or served from cache."""
    return [tuple(normal(shape) for shape in ((rows, inner), (inner, cols), (rows, cols)))
            for rows, inner, cols, count in shapes for _ in range(count)]


def _tf_gemms(shapes, normal=None):
    import tensorflow as tf

    generator = tf.random.Generator.from_seed(1)
    operands = _operands(shapes, normal or generator.normal)

    @tf.function
    def step(operands):  # arguments, not captured constants, which Grappler would fold
        total = tf.zeros(())
        for x, w, dy in operands:  # one element of each product is read, so none is pruned
            total += tf.matmul(x, w)[0, 0] + tf.matmul(dy, w, transpose_b=True)[0, 0]
            total += tf.matmul(x, dy, transpose_a=True)[0, 0]
        return total

    return lambda: step(operands).numpy()


def _torch_gemms(shapes):
    import torch

    generator = torch.Generator().manual_seed(1)
    operands = _operands(shapes, lambda shape: torch.randn(shape, generator=generator))

    def step():
        with torch.no_grad():
            for x, w, dy in operands:  # as autograd runs a Linear: x @ w, dy @ wᵀ, xᵀ @ dy
                x @ w, dy @ w.t(), x.t() @ dy

    return step


def _batch(args):
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 255, (args.batch[0], args.image_size, args.image_size, 3)).astype("float32")
    return x, rng.integers(0, args.classes, args.batch[0])


# --- workers: one contender each, driven over stdin/stdout --------------------------------------


def _keras_worker(args, x, y):
    import keras_visrec  # first: it enables TensorFlow's oneDNN rewrites before TF starts

    import keras
    import tensorflow as tf

    from keras_visrec.recipe.augment import recipe_loss
    from keras_visrec.recipe.optim import convnext_adamw

    if args.threads:
        tf.config.threading.set_intra_op_parallelism_threads(args.threads)
    if args.worker == "keras_visrec-bfloat16":
        keras.mixed_precision.set_global_policy("mixed_bfloat16")
    shape = (args.image_size, args.image_size, 3)
    if args.worker.startswith("keras_visrec"):
        model = keras_visrec.get_model(args.model, input_shape=shape, classes=args.classes,
                                       drop_path_rate=_DROP_PATH, classifier_activation=None)
        optimizer = convnext_adamw(model, learning_rate=_LR, weight_decay=_WEIGHT_DECAY, layer_decay=_LAYER_DECAY)
    else:
        from keras.src.applications.convnext import ConvNeXt  # the public builders hide drop_path_rate

        depths, dims = _ARCHS[args.model]
        model = ConvNeXt(list(depths), list(dims), drop_path_rate=_DROP_PATH, name=args.model, weights=None,
                         input_shape=shape, classes=args.classes, classifier_activation=None)
        optimizer = keras.optimizers.AdamW(_LR, weight_decay=_WEIGHT_DECAY)
    model.compile(optimizer=optimizer, loss=recipe_loss(_SMOOTHING, from_logits=True))
    targets = np.eye(args.classes, dtype="float32")[y]
    infer = tf.function(lambda t: model(t, training=False))
    version = f"tensorflow {tf.__version__}, keras {keras.__version__}"

    def profile():
        from keras_visrec.training import profile_train_step

        report = profile_train_step(model, x, targets, steps=2, warmup=0)
        return report.table(top=40)

    return (lambda: infer(x).numpy()), (lambda: model.train_on_batch(x, targets)), version, profile, _tf_gemms


def _torch_worker(args, x, y):
    import torch

    torch.set_num_threads(args.threads or os.cpu_count())
    depths, dims = _ARCHS[args.model]
    if args.worker == "timm":
        import timm
        from timm.optim import create_optimizer_v2

        module = timm.create_model(args.model, num_classes=args.classes, drop_path_rate=_DROP_PATH)
        optimizer = create_optimizer_v2(module, "adamw", lr=_LR, weight_decay=_WEIGHT_DECAY, layer_decay=_LAYER_DECAY)
        version = f"torch {torch.__version__}, timm {timm.__version__}"
    else:
        import transformers
        from transformers import ConvNextConfig, ConvNextForImageClassification

        config = ConvNextConfig(depths=list(depths), hidden_sizes=list(dims), num_labels=args.classes,
                                drop_path_rate=_DROP_PATH)
        module = ConvNextForImageClassification(config)
        optimizer = torch.optim.AdamW(module.parameters(), lr=_LR, weight_decay=_WEIGHT_DECAY)
        version = f"torch {torch.__version__}, transformers {transformers.__version__}"
    xt = torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2) / 255.0, dtype="float32"))
    yt = torch.from_numpy(y.astype("int64"))
    loss_fn = torch.nn.CrossEntropyLoss(label_smoothing=_SMOOTHING)

    def logits(out):
        return out.logits if hasattr(out, "logits") else out

    def infer():
        module.eval()
        with torch.inference_mode():
            return logits(module(xt))

    def train():
        module.train()
        optimizer.zero_grad(set_to_none=True)
        loss_fn(logits(module(xt)), yt).backward()
        optimizer.step()

    return infer, train, version, None, _torch_gemms


def _worker(args):
    """A contender's process: build, warm up, then answer ``infer N`` / ``train N`` / ``profile`` / ``quit``."""
    if args.worker == "keras_visrec-generic":
        os.environ["KERAS_VISREC_FUSED_TRAINING"] = "0"
    x, y = _batch(args)

    def reply(**message):
        print(json.dumps(message), flush=True)

    try:
        start = time.perf_counter()
        make = _torch_worker if args.worker in TORCH_CONTENDERS else _keras_worker
        infer, train, version, profile, gemms = make(args, x, y)
    except ImportError as error:
        return reply(error=f"not installed in {sys.executable}: {error}")
    warm = {}
    if not args.skip_infer:
        for _ in range(args.warmup):
            infer()
        warm["infer"] = _peak_rss_mib()
    if not args.skip_train:
        for _ in range(max(1, args.warmup)):
            train()
    reply(ready=True, version=version, setup_s=time.perf_counter() - start,
          peak_rss_after_infer_mib=warm.get("infer"), peak_rss_mib=_peak_rss_mib())
    gemm_step = None
    for line in sys.stdin:
        command, *rest = line.split()
        if command == "quit":
            return reply(peak_rss_mib=_peak_rss_mib())
        if command == "profile":
            return reply(profile=profile() if profile else None, peak_rss_mib=_peak_rss_mib())
        if command == "gemm":  # the step's pointwise GEMMs alone (built on first request)
            gemm_step = gemm_step or gemms(_pointwise_gemms(args, args.batch[0]))
            gemm_step()
        function = {"infer": infer, "train": train, "gemm": gemm_step}[command]
        times = []
        for _ in range(int(rest[0])):
            begin = time.perf_counter()
            function()
            times.append(time.perf_counter() - begin)
        reply(times=times)
    return None


# --- the parent: start workers, run the rounds, print ------------------------------------------


class _Contender:
    def __init__(self, name, interpreter, args, batch):
        self.name, self.times, self.info = name, {"infer": [], "train": [], "gemm": []}, {}
        command = [interpreter, os.path.abspath(__file__), "--worker", name, "--model", args.model,
                   "--batch", str(batch), "--image-size", str(args.image_size), "--classes", str(args.classes),
                   "--warmup", str(args.warmup), "--threads", str(args.threads or 0)]
        command += ["--skip-infer"] * args.skip_infer + ["--skip-train"] * args.skip_train
        environment = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", PYTHONUNBUFFERED="1")
        self.process = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                                        stderr=subprocess.DEVNULL if not args.verbose else None, env=environment)

    def ask(self, command):
        self.process.stdin.write(command + "\n")
        self.process.stdin.flush()
        return self.read()

    def read(self):
        for line in self.process.stdout:
            if line.startswith("{"):
                return json.loads(line)
        raise RuntimeError(f"{self.name}: the worker exited (code {self.process.wait()}); rerun with --verbose")

    def close(self, command="quit"):
        if self.process.poll() is None:
            try:
                self.info.update(self.ask(command))
            except (RuntimeError, BrokenPipeError):
                pass
            self.process.stdin.close()
            self.process.wait()


def _rates(times, batch, kind):
    per = batch if kind == "infer" else 1
    return per / min(times), per / statistics.median(times)


def _start(name, interpreter, args, batch):
    contender = _Contender(name, interpreter, args, batch)
    reply = contender.read()
    if "error" in reply:
        print(f"{name}: skipped ({reply['error']})")
        contender.close()
        return None
    contender.info.update(reply)
    print(f"{name}: {reply['version']}; set-up and warm-up {reply['setup_s']:.0f} s", flush=True)
    return contender


def _rounds(contenders, kinds, args):
    for round_index in range(args.rounds):
        shift = round_index % len(contenders)
        for kind in kinds:
            for contender in contenders[shift:] + contenders[:shift]:
                if kind == "gemm" and contender.name not in GEMM_CONTENDERS:
                    continue
                contender.times[kind] += contender.ask(f"{kind} {args.repeats}")["times"]
        print(f"round {round_index + 1}/{args.rounds} done ({', '.join(c.name for c in contenders)})", flush=True)


def _finish(contender, args, batch):
    text = None
    if args.profile and contender.name == "keras_visrec" and batch == args.batch[0]:
        contender.close("profile")
        text = contender.info.get("profile")
    contender.close()
    return text


def _run_batch(args, batch, interpreters):
    mode = "one contender at a time" if args.sequential else "interleaved"
    print(f"== batch {batch}, {args.model} {args.image_size}x{args.image_size} fp32, {args.rounds} {mode} rounds x "
          f"{args.repeats} timed calls per contender and kind", flush=True)
    kinds = [kind for kind, skip in (("infer", args.skip_infer), ("train", args.skip_train),
                                     ("gemm", not args.gemm_floor)) if not skip]
    contenders, profile_text = [], None
    for name in args.contenders:  # started one after another: each warm-up runs alone
        contender = _start(name, interpreters[name], args, batch)
        if contender is None:
            continue
        contenders.append(contender)
        if args.sequential:  # bounded memory: only this worker is alive
            _rounds([contender], kinds, args)
            profile_text = _finish(contender, args, batch) or profile_text
    if not args.sequential and contenders:
        _rounds(contenders, kinds, args)
        for contender in contenders:
            profile_text = _finish(contender, args, batch) or profile_text
    results = {}
    for contender in contenders:
        row = results[contender.name] = {"peak_rss_mib": contender.info.get("peak_rss_mib")}
        for kind in kinds:
            if contender.times[kind]:
                row[kind] = _rates(contender.times[kind], batch, kind)
    _print_batch(batch, results, [kind for kind in kinds if kind != "gemm"])
    if "gemm" in kinds:
        _print_gemm_floor(args, batch, results)
    return results, profile_text


def _print_batch(batch, results, kinds):
    units = {"infer": "inference img/s", "train": "train steps/s"}
    for name, row in results.items():
        for kind in kinds:
            best, median = row[kind]
            extra = f" ({best * batch:.2f} img/s)" if kind == "train" else ""
            print(f"batch{batch} {name} {units[kind]}: best {best:.3f} median {median:.3f}{extra}")
        print(f"batch{batch} {name} peak RSS MiB: {row['peak_rss_mib']:.0f}")
    ours = results.get("keras_visrec")
    if ours is None:
        return
    for name, row in results.items():
        if name == "keras_visrec":
            continue
        for kind in kinds:
            print(f"ratio batch{batch} {kind} keras_visrec / {name}: best {ours[kind][0] / row[kind][0]:.2f} "
                  f"median {ours[kind][1] / row[kind][1]:.2f}")
        print(f"ratio batch{batch} peak RSS keras_visrec / {name}: {ours['peak_rss_mib'] / row['peak_rss_mib']:.2f}")


def _print_gemm_floor(args, batch, results):
    """How much of each training step the pointwise GEMMs alone take, and what 1.5x timm would leave."""
    flops = _gemm_flops(_pointwise_gemms(args, batch))
    print(f"batch{batch} pointwise GEMMs of one training step: {flops / 1e9:.1f} GFLOP "
          f"(forward X·W, backward dY·Wᵀ and Xᵀ·dY of every MLP layer)")
    for name in GEMM_CONTENDERS:
        row = results.get(name, {})
        if "gemm" not in row:
            continue
        best_ms = 1000.0 / row["gemm"][0]
        line = f"batch{batch} {name} GEMMs alone: best {best_ms:.0f} ms ({flops / best_ms / 1e6:.0f} GFLOP/s)"
        if "train" in row:
            line += f", {100 * best_ms * row['train'][0] / 1000.0:.0f} % of its best step"
        print(line)
    ours, timm = results.get("keras_visrec", {}), results.get("timm", {})
    if "gemm" in ours and "train" in timm:
        target_ms = 1000.0 / (1.5 * timm["train"][0])
        floor_ms = 1000.0 / ours["gemm"][0]
        print(f"batch{batch} a step at 1.5x timm takes <= {target_ms:.0f} ms; our GEMMs alone take {floor_ms:.0f} ms, "
              f"leaving {target_ms - floor_ms:.0f} ms for everything else")


def _print_goals(all_results):
    """The issue's goals, read off the figures above (a summary, not a test)."""
    lines = []
    for batch, results in all_results.items():
        ours = results.get("keras_visrec")
        for name, kind, goal in (("timm", "train", 1.5), ("HF transformers", "train", 1.3), ("timm", "infer", 1.3)):
            if ours and name in results and kind in ours:
                ratio = ours[kind][0] / results[name][kind][0]
                lines.append(f"goal batch{batch} {kind} >= {goal}x {name}: {ratio:.2f} "
                             f"({'met' if ratio >= goal else 'not met'})")
        if batch == 32 and ours and "timm" in results:
            ratio = ours["peak_rss_mib"] / results["timm"]["peak_rss_mib"]
            lines.append(f"goal batch32 peak RSS <= timm: {ratio:.2f} ({'met' if ratio <= 1 else 'not met'})")
    print("\n".join(lines))


def _pipeline(args):
    """The finetune command's tf.data pipeline on synthetic JPEGs vs what our training step consumes."""
    import keras_visrec  # noqa: F401  (oneDNN settings before TensorFlow starts)

    from PIL import Image

    from keras_visrec.recipe.augment import MixupOrCutMix, train_image_augmenter
    from keras_visrec.recipe.datasets import load_image_source
    from keras_visrec.recipe.finetune import _train_pipeline

    batch = args.batch[0]
    with tempfile.TemporaryDirectory() as folder:
        rng = np.random.default_rng(0)
        count = max(4 * batch, 64)
        for index in range(count):  # ImageNet-like 500x375 JPEGs, two classes
            os.makedirs(os.path.join(folder, f"class{index % 2}"), exist_ok=True)
            pixels = rng.integers(0, 256, (375, 500, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(os.path.join(folder, f"class{index % 2}", f"{index}.jpg"), quality=90)
        source = load_image_source(folder, "train", None, None)
        augment = train_image_augmenter(args.image_size, seed=0)
        dataset = _train_pipeline(source, source.num_classes, batch, augment, MixupOrCutMix(0.8, 1.0, seed=0),
                                  False, 0, first_epoch=0, last_epoch=10 ** 6)
        iterator = iter(dataset)
        for _ in range(2):
            next(iterator)
        rates = []
        for _ in range(args.rounds):
            start = time.perf_counter()
            for _ in range(args.repeats):
                next(iterator)
            rates.append(batch * args.repeats / (time.perf_counter() - start))
    print(f"finetune tf.data pipeline img/s ({args.image_size}x{args.image_size}, batch {batch}, RandAugment, "
          f"random erasing, Mixup/CutMix, {os.cpu_count()} cores): best {max(rates):.1f} "
          f"median {statistics.median(rates):.1f}")
    return max(rates)


def _check_torch_python(parser, path):
    if not os.path.isfile(path) or not os.access(path, os.X_OK):
        parser.error(f"--torch-python: no executable interpreter at {path!r}")
    try:
        probe = subprocess.run([path, "-c", "import sys, torch; print('torch', torch.__version__, sys.version_info[0])"],
                               capture_output=True, text=True, timeout=300)
    except (OSError, subprocess.TimeoutExpired) as error:
        parser.error(f"--torch-python {path!r}: cannot run it ({error})")
    if probe.returncode or not probe.stdout.startswith("torch "):
        parser.error(f"--torch-python {path!r} is not a Python that imports torch "
                     f"({(probe.stderr or probe.stdout).strip().splitlines()[-1:] or 'no output'})")


def _parse(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="convnext_tiny", choices=sorted(_ARCHS))
    parser.add_argument("--batch", type=int, nargs="+", default=[8, 32])
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--classes", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds")
    parser.add_argument("--repeats", type=int, default=3, help="timed calls per contender, kind and round")
    parser.add_argument("--warmup", type=int, default=2, help="untimed calls first (training: at least 1)")
    parser.add_argument("--threads", type=int, default=0, help="intra-op threads (0: the frameworks' default)")
    parser.add_argument("--contenders", nargs="+", choices=CONTENDERS, default=list(DEFAULT_CONTENDERS))
    parser.add_argument("--torch-python", help="interpreter for the torch contenders (timm, HF)")
    parser.add_argument("--skip-infer", action="store_true")
    parser.add_argument("--skip-train", action="store_true")
    parser.add_argument("--profile", metavar="FILE", help="write keras_visrec's training-step profile here")
    parser.add_argument("--part", choices=("contenders", "pipeline"), default="contenders")
    parser.add_argument("--gemm-floor", action="store_true",
                        help="also time the training step's pointwise GEMMs alone (TensorFlow and torch)")
    parser.add_argument("--sequential", action="store_true",
                        help="run the contenders one at a time (bounded memory; rounds no longer interleave)")
    parser.add_argument("--verbose", action="store_true", help="show the workers' stderr")
    parser.add_argument("--worker", choices=CONTENDERS, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    for name in ("rounds", "repeats", "image_size", "classes"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be >= 1; received {getattr(args, name)}")
    if any(b < 1 for b in args.batch):
        parser.error(f"--batch must be >= 1; received {args.batch}")
    if args.warmup < 0 or args.threads < 0:
        parser.error(f"--warmup and --threads must be >= 0; received {args.warmup}, {args.threads}")
    if args.image_size % 32:
        parser.error(f"--image-size must be a multiple of 32 (ConvNeXt's total stride); received {args.image_size}")
    if args.skip_infer and args.skip_train and args.part == "contenders":
        parser.error("--skip-infer and --skip-train together leave nothing to time")
    if args.torch_python and not args.worker:
        _check_torch_python(parser, args.torch_python)
    if args.profile and not os.path.isdir(os.path.dirname(os.path.abspath(args.profile))):
        parser.error(f"--profile: the folder of {args.profile!r} does not exist")
    if "keras.applications" in args.contenders and args.model not in _KERAS_APPLICATIONS:
        args.contenders.remove("keras.applications")
    return args


def main(argv=None):
    args = _parse(argv)
    if args.worker:
        return _worker(args)
    print(f"{args.model}: cores {os.cpu_count()}  load average {os.getloadavg()[0]:.1f}  python {sys.executable}  "
          f"torch python {args.torch_python or sys.executable}  threads {args.threads or 'default'}")
    if args.part == "pipeline":
        return _pipeline(args)
    interpreters = {name: (args.torch_python or sys.executable) if name in TORCH_CONTENDERS else sys.executable
                    for name in args.contenders}
    all_results, profile_text = {}, None
    for batch in args.batch:
        all_results[batch], text = _run_batch(args, batch, interpreters)
        profile_text = profile_text or text
    _print_goals(all_results)
    if args.profile and profile_text:
        from keras_visrec.files import write_atomic

        write_atomic(args.profile, profile_text + "\n")
        print(profile_text)
        print(f"profile written to {args.profile}")
    print(f"load average at the end: {os.getloadavg()[0]:.1f} (figures from a shared machine swing; compare ratios)")
    return None


if __name__ == "__main__":
    main()

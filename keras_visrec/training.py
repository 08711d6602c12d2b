"""Helpers shared by every training entry point: one way to name a strategy, one way to build the
optimizer before the first step, one step profiler.

:func:`profile_train_step` answers "where does a training step's time go" on TensorFlow: it
records a few ``train_on_batch`` steps with the TensorFlow profiler, reads the op events of the
trace (``*.xplane.pb``) and splits the step by phase (forward, backward, optimizer, loss) and
op type. Ops that the executor runs at the same time share their overlapping interval equally,
so the table adds up to the step's busy time instead of double-counting concurrent ops.
"""

import collections
import contextlib
import dataclasses
import glob
import os
import shutil
import tempfile
import time

__all__ = ["PHASES", "STRATEGY_CHOICES", "TrainStepProfile", "build_optimizer", "profile_train_step",
           "resolve_strategy", "strategy_scope"]

STRATEGY_CHOICES = ("none", "mirrored", "multiworker")


def resolve_strategy(strategy=None):
    """A ``tf.distribute.Strategy`` from a strategy, a name, or ``None``.

    Args:
        strategy: `None` / `"none"` (the default strategy: one device; `"default"` is its old
            spelling), `"mirrored"`
            (``MirroredStrategy`` over the local GPUs, or CPUs when none), `"multiworker"`
            (``MultiWorkerMirroredStrategy`` configured from ``TF_CONFIG``), or a
            ``tf.distribute.Strategy`` instance, returned as is.
    """
    import tensorflow as tf

    if strategy is None or strategy in ("none", "default"):
        return tf.distribute.get_strategy()
    if isinstance(strategy, tf.distribute.Strategy):
        return strategy
    if strategy == "mirrored":
        return tf.distribute.MirroredStrategy()
    if strategy == "multiworker":
        return tf.distribute.MultiWorkerMirroredStrategy()
    raise ValueError(
        f"`strategy` must be a tf.distribute.Strategy or one of {STRATEGY_CHOICES}; received strategy={strategy!r}."
    )


@contextlib.contextmanager
def strategy_scope(strategy=None):
    """Context manager entering ``resolve_strategy(strategy).scope()``; yields the strategy."""
    resolved = resolve_strategy(strategy)
    with resolved.scope():
        yield resolved


def build_optimizer(model):
    """Creates the compiled optimizer's variables now, eagerly; returns ``model``.

    Without a distribution strategy Keras's TensorFlow trainer builds the optimizer while it traces
    the first training step, and a variable created inside a ``tf.function`` costs tens of
    milliseconds: the 470 Adam slots of the tiny ADP-C test model made its first epoch 2x slower.
    Call it after ``compile`` (inside the strategy scope); it does nothing to an unbuilt model or
    an already built optimizer, and the same on every backend.
    """
    optimizer = getattr(model, "optimizer", None)
    # a subclassed model such as AnytimeHRNet is built once every child is (it is never called here)
    built = model.built or (bool(model.layers) and all(layer.built for layer in model.layers))
    if optimizer is not None and not optimizer.built and built:
        optimizer.build(model.trainable_variables)
    return model


PHASES = ("forward", "backward", "optimizer", "loss", "other")


@dataclasses.dataclass
class TrainStepProfile:
    """Where one training step's time goes, from a TensorFlow profiler trace.

    Attributes:
        entries: one dict per (phase, op type): ``phase`` (one of `PHASES`), ``op``, ``ms``
            (time per step, overlapping ops sharing their interval), ``count`` (ops per step),
            ``share`` (of the busy time).
        steps: number of profiled steps (figures are per step).
        step_ms: wall time per step from the first op's start to the last op's end.
        busy_ms: time per step during which at least one op ran (the entries add up to it).
        wall_ms: per-step wall time of the profiled ``train_on_batch`` calls (Python included).
    """

    entries: list
    steps: int
    step_ms: float
    busy_ms: float
    wall_ms: float

    def by_phase(self):
        """phase -> ms per step, slowest first."""
        table = collections.Counter()
        for entry in self.entries:
            table[entry["phase"]] += entry["ms"]
        return dict(table.most_common())

    def by_type(self):
        """op type -> ms per step over every phase, slowest first."""
        table = collections.Counter()
        for entry in self.entries:
            table[entry["op"]] += entry["ms"]
        return dict(table.most_common())

    def table(self, top=25):
        """The profile as text: the phases, then the `top` (phase, op type) rows."""
        busy = self.busy_ms or 1.0
        lines = [f"train step profile: {self.steps} steps, wall {self.wall_ms:.1f} ms/step, ops span "
                 f"{self.step_ms:.1f} ms, busy {self.busy_ms:.1f} ms (overlapping ops share their time)",
                 "  phase          ms    share"]
        lines += [f"  {phase:<10} {ms:>8.1f}  {ms / busy:>6.1%}" for phase, ms in self.by_phase().items()]
        lines.append("  phase      op type                                          ms    share  count")
        for entry in self.entries[:top]:
            lines.append(f"  {entry['phase']:<10} {entry['op']:<44} {entry['ms']:>8.1f}  {entry['share']:>6.1%}  "
                         f"{entry['count']:>5}")
        return "\n".join(lines)

    def __str__(self):
        return self.table()


def _phase(op_name, optimizer_name):
    """Phase of a traced op from its name scope (Keras 3's TensorFlow trainer names them)."""
    head = op_name.split("/", 1)[0]
    if head == "gradient_tape" or head.startswith("AddN"):  # AddN: summed gradients of shared inputs
        return "backward"
    if optimizer_name and head.startswith(optimizer_name):
        return "optimizer"
    if head.startswith(("compile_loss", "compile_metrics")):
        return "loss"
    if "/" in op_name:
        return "forward"
    return "other"


def _op_events(xspace_path, optimizer_name):
    """``(start_ps, end_ps, phase, op_type)`` of every executed op in a profiler trace."""
    from tensorflow.tsl.profiler.protobuf import xplane_pb2

    space = xplane_pb2.XSpace()
    with open(xspace_path, "rb") as handle:
        space.ParseFromString(handle.read())
    events = []
    for plane in space.planes:
        metadata = plane.event_metadata
        for line in plane.lines:
            if not line.name.startswith("tf_Compute"):  # the executor threads; ops are "name:Type"
                continue
            base = line.timestamp_ns * 1000
            for event in line.events:
                name = metadata[event.metadata_id].name
                if ":" not in name or name.startswith(("ThreadpoolListener", "ExecutorState")):
                    continue
                op_name, op_type = name.rsplit(":", 1)
                start = base + event.offset_ps
                events.append((start, start + event.duration_ps, _phase(op_name, optimizer_name), op_type))
    return events


def _shared_times(events):
    """Per (phase, op type): time with overlapping ops sharing each interval; and the busy time."""
    bounds = sorted([(start, 1, key) for start, _, *key in events] + [(end, -1, key) for _, end, *key in events],
                    key=lambda bound: (bound[0], bound[1]))
    active, shares, busy, last = collections.Counter(), collections.Counter(), 0, None
    for time_ps, delta, key in bounds:
        key = tuple(key)
        if active and last is not None:
            width = time_ps - last
            busy += width
            running = sum(active.values())
            for running_key, count in active.items():
                shares[running_key] += width * count / running
        last = time_ps
        active[key] += delta
        if not active[key]:
            del active[key]
    return shares, busy


def profile_train_step(model, x, y, *, steps=2, warmup=1, logdir=None):
    """Profiles ``model.train_on_batch(x, y)`` with the TensorFlow profiler (TensorFlow backend).

    Args:
        model: a compiled `keras.Model`.
        x, y: one batch of inputs and targets.
        steps: int >= 1. Profiled steps (figures are averaged per step). Defaults to `2`.
        warmup: int >= 0. Unprofiled steps first (tracing and the first-step set-up are not
            part of a step's cost). Defaults to `1`.
        logdir: str or None. Where the trace is written (kept); a temporary directory,
            removed afterwards, when `None`.

    Returns:
        A `TrainStepProfile`.
    """
    import keras
    import tensorflow as tf

    if keras.backend.backend() != "tensorflow":
        raise ValueError(f"profile_train_step reads TensorFlow profiler traces; the Keras backend is "
                         f"{keras.backend.backend()!r}.")
    for name, value, low in (("steps", steps, 1), ("warmup", warmup, 0)):
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise ValueError(f"`{name}` must be an integer >= {low}; received {name}={value!r}.")
    if getattr(model, "optimizer", None) is None:
        raise ValueError("profile_train_step needs a compiled model (call model.compile first).")
    for _ in range(warmup):
        model.train_on_batch(x, y)
    directory = logdir or tempfile.mkdtemp(prefix="keras_visrec_profile_")
    try:
        tf.profiler.experimental.start(directory)
        try:
            start = time.perf_counter()
            for _ in range(steps):
                model.train_on_batch(x, y)
            wall = (time.perf_counter() - start) / steps
        finally:
            tf.profiler.experimental.stop()
        traces = sorted(glob.glob(os.path.join(directory, "plugins", "profile", "*", "*.xplane.pb")))
        if not traces:
            raise RuntimeError(f"The TensorFlow profiler wrote no trace under {directory!r}.")
        events = _op_events(traces[-1], model.optimizer.name)
    finally:
        if logdir is None:
            shutil.rmtree(directory, ignore_errors=True)
    if not events:
        raise RuntimeError("The profiler trace holds no executed ops (was the step run eagerly?).")
    shares, busy = _shared_times(events)
    counts = collections.Counter((phase, op) for _, _, phase, op in events)
    per_step = 1e9 * steps  # picoseconds -> ms per step
    entries = [{"phase": phase, "op": op, "ms": value / per_step, "count": counts[(phase, op)] // steps,
                "share": value / busy if busy else 0.0}
               for (phase, op), value in shares.most_common()]
    span = (max(end for _, end, *_ in events) - min(start for start, *_ in events)) / per_step
    return TrainStepProfile(entries=entries, steps=steps, step_ms=span, busy_ms=busy / per_step, wall_ms=wall * 1e3)

"""Linear warmup then cosine decay, per optimizer step (the ConvNeXt recipe's schedule)."""

import math

import keras

__all__ = ["WarmupCosine"]


@keras.saving.register_keras_serializable(package="keras_visrec")
class WarmupCosine(keras.optimizers.schedules.LearningRateSchedule):
    """Rises linearly from `warmup_start` to `peak` over `warmup_steps`, then follows a
    half cosine down to `end` at `total_steps` (and stays there).

    The official code builds the same curve per iteration (``cosine_scheduler`` with
    ``warmup_epochs`` and ``min_lr``, 1e-6 by default).

    Args:
        peak: float. Learning rate at the end of warmup (the "base" rate).
        total_steps: int. Optimizer steps of the whole run.
        warmup_steps: int. Steps of linear warmup (< `total_steps`). Defaults to `0`.
        end: float. Final learning rate. Defaults to `1e-6`.
        warmup_start: float. Learning rate at step 0. Defaults to `0.0`.

    Examples:

    >>> schedule = WarmupCosine(4e-3, total_steps=1000, warmup_steps=100)
    >>> float(schedule(100))
    0.004
    """

    def __init__(self, peak, total_steps, warmup_steps=0, end=1e-6, warmup_start=0.0):
        for name, value in (("total_steps", total_steps), ("warmup_steps", warmup_steps)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(f"`{name}` must be a non-negative integer; received {name}={value!r}.")
        if total_steps < 1 or warmup_steps >= total_steps:
            raise ValueError(
                "`total_steps` must be >= 1 and larger than `warmup_steps`; "
                f"received total_steps={total_steps}, warmup_steps={warmup_steps}."
            )
        for name, value in (("peak", peak), ("end", end), ("warmup_start", warmup_start)):
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
                raise ValueError(f"`{name}` must be a non-negative float; received {name}={value!r}.")
        self.peak, self.end, self.warmup_start = float(peak), float(end), float(warmup_start)
        self.total_steps, self.warmup_steps = int(total_steps), int(warmup_steps)

    def __call__(self, step):
        ops = keras.ops
        step = ops.cast(step, "float32")
        warmup = float(max(self.warmup_steps, 1))
        rising = self.warmup_start + (self.peak - self.warmup_start) * step / warmup
        span = float(self.total_steps - self.warmup_steps)
        progress = ops.clip((step - self.warmup_steps) / span, 0.0, 1.0)
        falling = self.end + 0.5 * (self.peak - self.end) * (1.0 + ops.cos(math.pi * progress))
        return ops.where(step < self.warmup_steps, rising, falling)

    def get_config(self):
        return {"peak": self.peak, "total_steps": self.total_steps, "warmup_steps": self.warmup_steps,
                "end": self.end, "warmup_start": self.warmup_start}

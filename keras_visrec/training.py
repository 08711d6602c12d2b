"""Scale-out helpers shared by every training entry point: one way to name a strategy."""

import contextlib

__all__ = ["STRATEGY_CHOICES", "resolve_strategy", "strategy_scope"]

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

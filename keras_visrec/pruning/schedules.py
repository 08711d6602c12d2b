"""Sparsity schedules of magnitude pruning: when to update the masks, and to what sparsity.

The same values as tensorflow-model-optimization's ``PolynomialDecay`` and ``ConstantSparsity``
for the same arguments, step for step (``tests/pruning/test_magnitude.py``), in plain Python so
they run on every Keras backend. Steps count training batches from 1, as tfmot's do. Both the
native masks (:mod:`keras_visrec.pruning.magnitude`) and the tfmot bridge read them.
"""

import keras
import numpy as np

from keras_visrec.pruning.base import check_ratio

__all__ = ["ConstantSparsity", "PolynomialSparsity", "SparsitySchedule"]


@keras.saving.register_keras_serializable(package="keras_visrec")
class SparsitySchedule:
    """``schedule(step) -> (update masks now, sparsity)`` for integer training steps (1 = first batch)."""

    final = 0.0

    def __call__(self, step):
        raise NotImplementedError

    def _in_range(self, step):
        """tfmot's rule: in [begin_step, end_step] (end_step -1: forever), every ``frequency`` steps."""
        in_range = step >= self.begin_step and (step <= self.end_step or self.end_step < 0)
        return bool(in_range and (step - self.begin_step) % self.frequency == 0)

    def get_config(self):
        raise NotImplementedError

    @classmethod
    def from_config(cls, config):
        return cls(**config)

    def __repr__(self):
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_config().items())
        return f"{type(self).__name__}({args})"

    def __eq__(self, other):
        return type(self) is type(other) and self.get_config() == other.get_config()

    def __hash__(self):
        return hash((type(self), tuple(sorted(self.get_config().items()))))


def _check_steps(begin_step, end_step, frequency, *, allow_forever):
    for argument, value in (("begin_step", begin_step), ("end_step", end_step), ("frequency", frequency)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
            raise ValueError(f"`{argument}` must be an integer; received {argument}={value!r}.")
    if begin_step < 0:
        raise ValueError(f"`begin_step` must be >= 0; received begin_step={begin_step}.")
    if end_step == -1 and not allow_forever:
        raise ValueError("`end_step` must be >= begin_step for a polynomial schedule (it needs an end); received -1.")
    if end_step != -1 and end_step < begin_step:
        raise ValueError(f"`end_step` ({end_step}) must be -1 or >= `begin_step` ({begin_step}).")
    if frequency <= 0:
        raise ValueError(f"`frequency` must be a positive integer; received frequency={frequency}.")


@keras.saving.register_keras_serializable(package="keras_visrec")
class PolynomialSparsity(SparsitySchedule):
    """Sparsity rising from ``initial_sparsity`` to ``final_sparsity`` as ``1 - (1 - p)^power``.

    ``s(step) = final + (initial - final) · (1 - p)^power`` with ``p = (step - begin) / (end -
    begin)`` clipped to [0, 1]; masks update every ``frequency`` steps in [begin, end]. tfmot's
    ``PolynomialDecay`` with the same arguments gives the same values.

    Args:
        initial_sparsity, final_sparsity: float in [0, 1).
        begin_step, end_step: int. The span of the ramp (``end_step > begin_step``).
        power: float. Exponent of the ramp. Defaults to `3`.
        frequency: int. Steps between mask updates. Defaults to `100`.
    """

    def __init__(self, initial_sparsity, final_sparsity, begin_step, end_step, power=3, frequency=100):
        self.initial_sparsity = check_ratio(initial_sparsity, "initial_sparsity")
        self.final_sparsity = check_ratio(final_sparsity, "final_sparsity")
        _check_steps(begin_step, end_step, frequency, allow_forever=False)
        if end_step == begin_step:
            raise ValueError(f"`end_step` must come after `begin_step` ({begin_step}) for a polynomial ramp.")
        self.begin_step, self.end_step, self.frequency = int(begin_step), int(end_step), int(frequency)
        self.power = float(power)

    @property
    def final(self):
        return self.final_sparsity

    def __call__(self, step):
        p = min(1.0, max(0.0, (step - self.begin_step) / (self.end_step - self.begin_step)))
        sparsity = (self.initial_sparsity - self.final_sparsity) * (1.0 - p) ** self.power + self.final_sparsity
        return self._in_range(step), float(sparsity)

    def get_config(self):
        return {"initial_sparsity": self.initial_sparsity, "final_sparsity": self.final_sparsity,
                "begin_step": self.begin_step, "end_step": self.end_step, "power": self.power,
                "frequency": self.frequency}


@keras.saving.register_keras_serializable(package="keras_visrec")
class ConstantSparsity(SparsitySchedule):
    """One sparsity, re-applied every ``frequency`` steps from ``begin_step`` (to ``end_step``; -1: forever).

    Args:
        target_sparsity: float in [0, 1).
        begin_step: int. Defaults to `0`.
        end_step: int. Defaults to `-1`.
        frequency: int. Defaults to `100`.
    """

    def __init__(self, target_sparsity, begin_step=0, end_step=-1, frequency=100):
        self.target_sparsity = check_ratio(target_sparsity, "target_sparsity")
        _check_steps(begin_step, end_step, frequency, allow_forever=True)
        self.begin_step, self.end_step, self.frequency = int(begin_step), int(end_step), int(frequency)

    @property
    def final(self):
        return self.target_sparsity

    def __call__(self, step):
        return self._in_range(step), self.target_sparsity

    def get_config(self):
        return {"target_sparsity": self.target_sparsity, "begin_step": self.begin_step, "end_step": self.end_step,
                "frequency": self.frequency}

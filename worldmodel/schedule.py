"""The learning-rate schedule and time budget shared by the training loops."""

from __future__ import annotations

import math
from typing import Any, Protocol

from tqdm import tqdm


class ScheduleSettings(Protocol):
    """The fields of a training config that the schedule reads."""

    lr: float
    steps: int
    warmup_steps: int
    min_lr_fraction: float


def learning_rate(step: int, training: ScheduleSettings) -> float:
    """Linear warm-up, then cosine decay over ``steps`` to ``min_lr_fraction`` of the peak.

    A function of the step alone: a time budget (``max_minutes``) stops a run but never bends
    its schedule, so a budgeted run that is resumed repeats an uninterrupted one. A run meant to
    end by time should set ``steps`` to about what its minutes allow.
    """
    if step < training.warmup_steps:
        return training.lr * (step + 1) / training.warmup_steps
    progress = min(1.0, (step - training.warmup_steps) / max(1, training.steps - training.warmup_steps))
    floor = training.min_lr_fraction
    return training.lr * (floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * progress)))


def budget_spent(elapsed_s: float, max_minutes: float | None) -> bool:
    """Whether a run has used its ``max_minutes`` (None: no time budget), counted across resumes."""
    return max_minutes is not None and elapsed_s > 60 * max_minutes


class BudgetProgress(tqdm):
    """A step progress bar for a run bounded by steps and minutes, whichever ends first.

    With a time budget, the bar's total is the step the run is expected to reach when its
    minutes run out (at this invocation's pace), capped at the step budget: a 7-minute run
    of a million allowed steps shows e.g. ``1326/3100`` and a 7-minute ETA, not an 80-hour one.
    Call :meth:`advance` once per step with the run's elapsed seconds (counted across resumes).
    """

    def __init__(self, steps: int, step: int, elapsed_s: float, max_minutes: float | None, **kwargs: Any) -> None:
        super().__init__(total=steps, initial=step, unit="step", dynamic_ncols=True, **kwargs)
        self.steps, self.max_minutes = steps, max_minutes
        self._start_step, self._start_s = step, elapsed_s

    def advance(self, elapsed_s: float) -> None:
        """One step done; the total follows the time budget (shown at tqdm's next refresh)."""
        step = self.n + 1
        done, spent = step - self._start_step, elapsed_s - self._start_s
        if self.max_minutes is not None and spent > 0:
            seconds_left = max(0.0, 60 * self.max_minutes - elapsed_s)
            self.total = min(self.steps, step + round(done / spent * seconds_left))
        self.update(1)

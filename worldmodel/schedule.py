"""The learning-rate schedule and time budget shared by the training loops."""

from __future__ import annotations

import math
from typing import Protocol


class ScheduleSettings(Protocol):
    """The fields of a training config that the schedule reads."""

    lr: float
    steps: int
    warmup_steps: int
    min_lr_fraction: float
    max_minutes: float | None


def learning_rate(step: int, training: ScheduleSettings, elapsed_s: float = 0.0) -> float:
    """Linear warm-up, then cosine decay to ``min_lr_fraction`` of the peak.

    The decay follows whichever budget, steps or ``max_minutes``, is nearer its end,
    so a run bounded by time still anneals.
    """
    if step < training.warmup_steps:
        return training.lr * (step + 1) / training.warmup_steps
    progress = (step - training.warmup_steps) / max(1, training.steps - training.warmup_steps)
    if training.max_minutes is not None:
        progress = max(progress, elapsed_s / (60 * training.max_minutes))
    progress = min(1.0, progress)
    floor = training.min_lr_fraction
    return training.lr * (floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * progress)))


def budget_spent(elapsed_s: float, max_minutes: float | None) -> bool:
    """Whether a run has used its ``max_minutes`` (None: no time budget), counted across resumes."""
    return max_minutes is not None and elapsed_s > 60 * max_minutes

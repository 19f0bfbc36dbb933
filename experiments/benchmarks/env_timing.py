"""Timing and look helpers shared by the generated-env speed benchmarks (voxel terrain, DMLab-style maze).

Both benchmarks time the same things the same way: a stopwatch that reads wall and CPU time (on a loaded
machine the CPU time is the better estimate of the cost), episodes of the env's own scripted expert, and a
contact sheet of frames to look at.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
from PIL import Image


class Stopwatch:
    """Wall and CPU seconds of a block."""

    def __enter__(self) -> "Stopwatch":
        self._wall, self._cpu = time.perf_counter(), time.process_time()
        return self

    def __exit__(self, *exc: object) -> None:
        self.wall = time.perf_counter() - self._wall
        self.cpu = time.process_time() - self._cpu


def expert_episode(env: Any, seed: int, steps: int) -> list[np.ndarray]:
    """Frames of the env's ``scripted_policy(seed)`` from ``reset(seed=seed)``: the reset frame and ``steps`` more."""
    observation, _ = env.reset(seed=seed)
    policy = env.scripted_policy(seed)
    frames = [observation]
    for _ in range(steps):
        observation = env.step(policy(observation))[0]
        frames.append(observation)
    return frames


def per_frame_ms(
    make_env: Callable[[int, int], Any], size: int, seed: int, steps: int, setup_wall: float, setup_cpu: float
) -> tuple[float, float]:
    """Wall and CPU milliseconds per frame (expert step + render) of a ``steps``-step episode at ``size`` pixels,
    after a warm-up episode, less the seconds the reset spends building its world (``setup_*``).
    ``make_env(size, max_steps)`` builds the env."""
    expert_episode(make_env(size, 2), seed, 2)  # warm the per-size camera tables and texture caches
    with Stopwatch() as episode:
        expert_episode(make_env(size, steps), seed, steps)
    return 1000 * (episode.wall - setup_wall) / (steps + 1), 1000 * (episode.cpu - setup_cpu) / (steps + 1)


def contact_sheet(frames: list[np.ndarray], columns: int = 4) -> np.ndarray:
    """Frames tiled row by row into one image."""
    rows = [np.concatenate(frames[i : i + columns], axis=1) for i in range(0, len(frames), columns)]
    return np.concatenate(rows, axis=0)


def save_contact_sheet(frames: list[np.ndarray], path: Path, scale: int = 3) -> None:
    """Frames 0, 20, ..., and the last of an episode, tiled 4 across and enlarged ``scale`` times (nearest)."""
    picked = [frames[i] for i in [*range(0, len(frames) - 1, 20), len(frames) - 1]]
    path.parent.mkdir(parents=True, exist_ok=True)
    sheet = contact_sheet(picked)
    Image.fromarray(sheet.repeat(scale, axis=0).repeat(scale, axis=1)).save(path)

"""The speed benchmark of the first-person envs (voxel terrain, DMLab-style maze), shared by their scripts.

Both benchmarks time the same things the same way (:func:`run_speed_benchmark`): a stopwatch that reads wall and
CPU time (on a loaded machine the CPU time is the better estimate of the cost), world generation, episodes
of the env's own scripted expert, and a contact sheet of frames to look at.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Callable

import numpy as np
from PIL import Image

from envs.first_person import FirstPersonEnv


class Stopwatch:
    """Wall and CPU seconds of a block."""

    def __enter__(self) -> "Stopwatch":
        self._wall, self._cpu = time.perf_counter(), time.process_time()
        return self

    def __exit__(self, *exc: object) -> None:
        self.wall = time.perf_counter() - self._wall
        self.cpu = time.process_time() - self._cpu


def expert_episode(env: FirstPersonEnv, seed: int, steps: int) -> list[np.ndarray]:
    """Frames of the env's ``scripted_policy(seed)`` from ``reset(seed=seed)``: the reset frame and ``steps`` more."""
    observation, _ = env.reset(seed=seed)
    policy = env.scripted_policy(seed)
    frames = [observation]
    for _ in range(steps):
        observation = env.step(policy(observation))[0]
        frames.append(observation)
    return frames


def per_frame_ms(
    make_env: Callable[..., FirstPersonEnv], size: int, seed: int, steps: int, setup_wall: float, setup_cpu: float
) -> tuple[float, float]:
    """Wall and CPU milliseconds per frame (expert step + render) of a ``steps``-step episode at ``size`` pixels,
    after a warm-up episode, less the seconds the reset spends building its world (``setup_*``).
    ``make_env(size=..., max_steps=...)`` builds the env."""
    expert_episode(make_env(size=size, max_steps=2), seed, 2)  # warm the per-size camera tables and texture caches
    with Stopwatch() as episode:
        expert_episode(make_env(size=size, max_steps=steps), seed, steps)
    return 1000 * (episode.wall - setup_wall) / (steps + 1), 1000 * (episode.cpu - setup_cpu) / (steps + 1)


def run_speed_benchmark(
    env_class: type[FirstPersonEnv],
    generate_world: Callable[[int], object],
    world: str,
    expert: str,
    worlds: int,
    episodes: int,
    argv: list[str] | None = None,
) -> None:
    """A speed benchmark's command line and its three timings on this process's thread: ``generate_world(seed)``
    per world, ms per frame at 64 and 128 pixels (expert steps and renders, world generation subtracted), and
    whole 300-frame episodes at 64 pixels with their worlds; then frames of the first episode saved to
    ``--sheet`` if given. ``worlds`` and ``episodes`` are the env's default counts; ``world`` and ``expert``
    name its world and expert in the options and the printout. The timed worlds are generated once untimed
    first, so caches they fill (the maze's textures) are not counted."""
    parser = argparse.ArgumentParser(
        description=f"Time {env_class.__name__} on this process's thread: {world} generation, frames at 64 and "
        f"128 pixels ({expert} steps, rendering included), and whole 300-frame episodes at 64 pixels.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--frames", type=int, default=100, help="steps timed per frame size")
    parser.add_argument(f"--{world}s", type=int, default=worlds, help=f"{world}s generated for the generation time")
    parser.add_argument("--episodes", type=int, default=episodes, help="whole 300-frame episodes timed")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--sheet", type=Path, default=None, help="also save 16 frames of the first episode as a PNG")
    args = parser.parse_args(argv)
    world_seeds = range(args.seed, args.seed + getattr(args, f"{world}s"))

    for seed in world_seeds:
        generate_world(seed)
    with Stopwatch() as generation:
        for seed in world_seeds:
            generate_world(seed)
    world_wall, world_cpu = generation.wall / len(world_seeds), generation.cpu / len(world_seeds)
    print(f"{world} generation: {1000 * world_wall:.2f} ms wall, {1000 * world_cpu:.2f} ms CPU per {world}")
    for size in (64, 128):
        wall, cpu = per_frame_ms(env_class, size, args.seed, args.frames, world_wall, world_cpu)
        print(f"{size}x{size}: {wall:.2f} ms wall, {cpu:.2f} ms CPU per frame ({expert} step + render)")
    with Stopwatch() as timed:
        recorded = [expert_episode(env_class(size=64), args.seed + offset, 299) for offset in range(args.episodes)]
    wall, cpu = timed.wall / args.episodes, timed.cpu / args.episodes
    print(f"300-frame episode at 64x64 with {world} generation: {wall:.2f} s wall, {cpu:.2f} s CPU; "
          f"{3600 / cpu:.0f} episodes per CPU-hour")
    if args.sheet is not None:
        save_contact_sheet(recorded[0], args.sheet)
        print(f"frames 0, 20, ..., 280, 299 of the first episode (enlarged 3x): {args.sheet}")


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

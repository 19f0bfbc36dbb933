"""Speed of the voxel-terrain env on one core: world generation, ms per frame, a whole episode.

The Minecraft-style dataset needs >= 1000 episodes of 300 frames per hour on two cores,
i.e. about 5 ms per frame per core with everything included. Run on one thread:

    OMP_NUM_THREADS=1 python -m experiments.benchmarks.voxel_terrain_speed --sheet frames.png

Wall time and this process's CPU time are both printed: on a loaded machine the CPU time is
the better estimate of the cost, the wall time an upper bound.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
from PIL import Image

from envs.voxel_terrain import TerrainWalker, VoxelTerrainEnv, VoxelWorld


class Stopwatch:
    """Wall and CPU seconds of a block."""

    def __enter__(self) -> "Stopwatch":
        self._wall, self._cpu = time.perf_counter(), time.process_time()
        return self

    def __exit__(self, *exc: object) -> None:
        self.wall = time.perf_counter() - self._wall
        self.cpu = time.process_time() - self._cpu


def walker_episode(size: int, seed: int, steps: int) -> list[np.ndarray]:
    """Frames of the walker's episode: the reset frame and ``steps`` more."""
    env = VoxelTerrainEnv(size=size, max_steps=max(steps, 1))
    observation, _ = env.reset(seed=seed)
    walker = TerrainWalker(seed)
    frames = [observation]
    for _ in range(steps):
        observation = env.step(walker(observation))[0]
        frames.append(observation)
    return frames


def contact_sheet(frames: list[np.ndarray], columns: int = 4) -> np.ndarray:
    """Frames tiled row by row into one image."""
    rows = [np.concatenate(frames[i : i + columns], axis=1) for i in range(0, len(frames), columns)]
    return np.concatenate(rows, axis=0)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description="Time VoxelTerrainEnv on this process's thread: world generation, frames at 64 and 128 "
        "pixels (walker steps, rendering included), and one whole 300-frame episode at 64 pixels.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--frames", type=int, default=100, help="steps timed per frame size")
    parser.add_argument("--worlds", type=int, default=5, help="worlds generated for the generation time")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--sheet", type=Path, default=None, help="also save 16 frames of the episode as a PNG")
    args = parser.parse_args(argv)

    with Stopwatch() as generation:
        for seed in range(args.worlds):
            VoxelWorld.generate(args.seed + seed)
    print(f"world generation: {1000 * generation.wall / args.worlds:.1f} ms wall, "
          f"{1000 * generation.cpu / args.worlds:.1f} ms CPU per world")
    for size in (64, 128):
        walker_episode(size, args.seed, 2)  # warm the camera tables
        with Stopwatch() as frames:
            walker_episode(size, args.seed, args.frames)
        per_frame_wall = 1000 * (frames.wall - generation.wall / args.worlds) / (args.frames + 1)
        per_frame_cpu = 1000 * (frames.cpu - generation.cpu / args.worlds) / (args.frames + 1)
        print(f"{size}x{size}: {per_frame_wall:.2f} ms wall, {per_frame_cpu:.2f} ms CPU per frame (step + render)")
    with Stopwatch() as episode:
        frames_64 = walker_episode(64, args.seed, 299)
    print(f"300-frame episode at 64x64 with world generation: {episode.wall:.2f} s wall, {episode.cpu:.2f} s CPU; "
          f"{3600 / episode.cpu:.0f} episodes per CPU-hour")
    if args.sheet is not None:
        picked = [frames_64[i] for i in [*range(0, 300, 20), 299]]
        args.sheet.parent.mkdir(parents=True, exist_ok=True)
        sheet = contact_sheet(picked).repeat(3, axis=0).repeat(3, axis=1)  # 3x nearest, to be looked at
        Image.fromarray(sheet).save(args.sheet)
        print(f"frames 0, 20, ..., 280, 299 of that episode (enlarged 3x): {args.sheet}")


if __name__ == "__main__":
    main()

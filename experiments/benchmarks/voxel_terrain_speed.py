"""Speed of the voxel-terrain env on one core: world generation, ms per frame, a whole episode.

The Minecraft-style dataset needs >= 1000 episodes of 300 frames per hour on two cores,
i.e. about 5 ms per frame per core with everything included. Run on one thread:

    OMP_NUM_THREADS=1 python -m experiments.benchmarks.voxel_terrain_speed --sheet frames.png

Wall time and this process's CPU time are both printed: on a loaded machine the CPU time is
the better estimate of the cost, the wall time an upper bound.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from envs.voxel_terrain import VoxelTerrainEnv, VoxelWorld
from experiments.benchmarks.env_timing import Stopwatch, expert_episode, per_frame_ms, save_contact_sheet


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
    world_wall, world_cpu = generation.wall / args.worlds, generation.cpu / args.worlds
    print(f"world generation: {1000 * world_wall:.1f} ms wall, {1000 * world_cpu:.1f} ms CPU per world")
    for size in (64, 128):
        wall, cpu = per_frame_ms(
            lambda size, steps: VoxelTerrainEnv(size=size, max_steps=steps), size, args.seed, args.frames,
            world_wall, world_cpu,
        )
        print(f"{size}x{size}: {wall:.2f} ms wall, {cpu:.2f} ms CPU per frame (step + render)")
    with Stopwatch() as episode:
        frames_64 = expert_episode(VoxelTerrainEnv(size=64), args.seed, 299)
    print(f"300-frame episode at 64x64 with world generation: {episode.wall:.2f} s wall, {episode.cpu:.2f} s CPU; "
          f"{3600 / episode.cpu:.0f} episodes per CPU-hour")
    if args.sheet is not None:
        save_contact_sheet(frames_64, args.sheet)
        print(f"frames 0, 20, ..., 280, 299 of that episode (enlarged 3x): {args.sheet}")


if __name__ == "__main__":
    main()

"""Speed of the DMLab-style maze env on one core: maze generation, ms per frame, a whole episode.

The DMLab-style dataset needs >= 1000 episodes of 300 frames per hour on two cores, i.e. about
24 ms per frame per core with everything included. Run on one thread:

    OMP_NUM_THREADS=1 python -m experiments.benchmarks.maze_speed --sheet frames.png

Wall time and this process's CPU time are both printed: on a loaded machine the CPU time is
the better estimate of the cost, the wall time an upper bound. Textures are loaded once per
process (about 0.3 s per DMLab style); the episode timings start after that.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from envs.maze import DMLabMazeEnv, Maze
from experiments.benchmarks.env_timing import Stopwatch, expert_episode, per_frame_ms, save_contact_sheet


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description="Time DMLabMazeEnv on this process's thread: maze generation, frames at 64 and 128 pixels "
        "(explorer steps, rendering included), and whole 300-frame episodes at 64 pixels.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--frames", type=int, default=100, help="steps timed per frame size")
    parser.add_argument("--mazes", type=int, default=20, help="mazes generated for the generation time")
    parser.add_argument("--episodes", type=int, default=3, help="whole 300-frame episodes timed")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--sheet", type=Path, default=None, help="also save 16 frames of the first episode as a PNG")
    args = parser.parse_args(argv)

    for seed in range(args.mazes):  # load every texture the timed mazes use, outside the timings
        Maze.generate(args.seed + seed)
    with Stopwatch() as generation:
        for seed in range(args.mazes):
            Maze.generate(args.seed + seed)
    maze_wall, maze_cpu = generation.wall / args.mazes, generation.cpu / args.mazes
    print(f"maze generation (textures cached): {1000 * maze_wall:.2f} ms wall, {1000 * maze_cpu:.2f} ms CPU per maze")
    for size in (64, 128):
        wall, cpu = per_frame_ms(
            lambda size, steps: DMLabMazeEnv(size=size, max_steps=steps), size, args.seed, args.frames,
            maze_wall, maze_cpu,
        )
        print(f"{size}x{size}: {wall:.2f} ms wall, {cpu:.2f} ms CPU per frame (explorer step + render)")
    episodes = []
    with Stopwatch() as timed:
        for seed in range(args.episodes):
            episodes.append(expert_episode(DMLabMazeEnv(size=64), args.seed + seed, 299))
    wall, cpu = timed.wall / args.episodes, timed.cpu / args.episodes
    print(f"300-frame episode at 64x64 with maze generation: {wall:.2f} s wall, {cpu:.2f} s CPU; "
          f"{3600 / cpu:.0f} episodes per CPU-hour")
    if args.sheet is not None:
        save_contact_sheet(episodes[0], args.sheet)
        print(f"frames 0, 20, ..., 280, 299 of the first episode (enlarged 3x): {args.sheet}")


if __name__ == "__main__":
    main()

"""Speed of the DMLab-style maze env on one core: maze generation, ms per frame, a whole episode.

The DMLab-style dataset needs >= 1000 episodes of 300 frames per hour on two cores, i.e. about
24 ms per frame per core with everything included. Run on one thread:

    OMP_NUM_THREADS=1 python -m experiments.benchmarks.maze_speed --sheet frames.png

Wall time and this process's CPU time are both printed: on a loaded machine the CPU time is
the better estimate of the cost, the wall time an upper bound. Textures are loaded once per
process (about 0.3 s per DMLab style); the timings start after that.
"""

from __future__ import annotations

from envs.maze import DMLabMazeEnv, Maze
from experiments.benchmarks.env_timing import run_speed_benchmark


def main(argv: list[str] | None = None) -> None:
    run_speed_benchmark(DMLabMazeEnv, Maze.generate, "maze", "explorer", worlds=20, episodes=3, argv=argv)


if __name__ == "__main__":
    main()

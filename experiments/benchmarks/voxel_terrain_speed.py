"""Speed of the voxel-terrain env on one core: world generation, ms per frame, a whole episode.

The Minecraft-style dataset needs >= 1000 episodes of 300 frames per hour on two cores,
i.e. about 5 ms per frame per core with everything included. Run on one thread:

    OMP_NUM_THREADS=1 python -m experiments.benchmarks.voxel_terrain_speed --sheet frames.png

Wall time and this process's CPU time are both printed: on a loaded machine the CPU time is
the better estimate of the cost, the wall time an upper bound.
"""

from __future__ import annotations

from envs.voxel_terrain import VoxelTerrainEnv, VoxelWorld
from experiments.benchmarks.env_timing import run_speed_benchmark


def main(argv: list[str] | None = None) -> None:
    run_speed_benchmark(VoxelTerrainEnv, VoxelWorld.generate, "world", "walker", worlds=5, episodes=1, argv=argv)


if __name__ == "__main__":
    main()

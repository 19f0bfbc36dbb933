"""Our envs in gymnasium's registry, so ``gym.make``, ``gym.make_vec`` and stable-baselines3's ``make_vec_env``
build them by id, keyword arguments passed through to the constructors (``size``, ``action_repeat``,
``observation``, ``max_steps`` ...).

Importing ``envs`` registers them; without that import, name the module in the id as gymnasium allows:
``gym.make("envs:videoworld/dmc-cartpole-swingup-v0")``. Each id is the ``envs.make`` spec with its colon as a
dash, in the ``videoworld`` namespace at version 0:

- ``videoworld/dmc-<domain>-<task>-v0``: every dm_control suite task (``dmc:<domain>-<task>``)
- ``videoworld/atari-<Game>-v0``: every ALE game (``atari:<Game>``)
- ``videoworld/dmlab-maze-v0``, ``videoworld/voxel-terrain-v0`` and the scaled benchmark's
  ``videoworld/dmlab-maze-small-v0`` and ``videoworld/voxel-terrain-small-v0`` (``dmlab:maze``, ``voxel:terrain``,
  ``dmlab:maze-small``, ``voxel:terrain-small``)

Registering stores ids, entry-point strings and the scaled presets' keyword arguments: no env is built.
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
from dm_control import suite

from envs.atari import atari_games
from envs.maze import SMALL_MAZE
from envs.voxel_terrain import SMALL_TERRAIN

NAMESPACE = "videoworld"
VERSION = 0


def registered_id(spec: str) -> str:
    """The registry id of an ``envs.make`` spec: ``"dmc:cartpole-swingup"`` -> ``"videoworld/dmc-cartpole-swingup-v0"``."""
    kind, colon, name = spec.partition(":")
    if not colon or not kind or not name:
        raise ValueError(f"bad env spec {spec!r}: expected '<kind>:<name>', e.g. 'dmc:cartpole-swingup'")
    return f"{NAMESPACE}/{kind}-{name}-v{VERSION}"


def _register(spec: str, entry_point: str, **kwargs: Any) -> None:
    env_id = registered_id(spec)
    if env_id not in gym.registry:  # a second call (a module reload) registers nothing twice
        gym.register(env_id, entry_point=entry_point, kwargs=kwargs)


def register_envs() -> None:
    """Register every dm_control suite task, every ALE game, the maze and the terrain (see the module docstring)."""
    for domain, tasks in suite.TASKS_BY_DOMAIN.items():
        for task in tasks:
            _register(f"dmc:{domain}-{task}", "envs.dmc:DMCEnv", domain=domain, task=task)
    for game in atari_games():
        _register(f"atari:{game}", "envs.atari:make_atari", game=game)
    _register("dmlab:maze", "envs.maze:DMLabMazeEnv")
    _register("dmlab:maze-small", "envs.maze:DMLabMazeEnv", **SMALL_MAZE)
    _register("voxel:terrain", "envs.voxel_terrain:VoxelTerrainEnv")
    _register("voxel:terrain-small", "envs.voxel_terrain:VoxelTerrainEnv", **SMALL_TERRAIN)

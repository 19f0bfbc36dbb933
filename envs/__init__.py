"""Gymnasium pixel environments and scripted experts, built from one spec string.

``make("dmc:cartpole-swingup")``, ``make("atari:Pong")``, ``make("voxel:terrain")`` or
``make("dmlab:maze")`` gives an env whose observations are ``(H, W, 3)`` uint8 frames. Importing this package
also registers every env with gymnasium (:mod:`envs.registration`): ``gym.make("videoworld/dmc-cartpole-swingup-v0")``
builds the same env as ``make("dmc:cartpole-swingup")``, inside gymnasium's usual wrappers.
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym

from envs.atari import make_atari
from envs.dmc import DMCEnv
from envs.experts import (
    EXPERT_TASKS, Policy, held_random_policy, make_expert, noisy_policy, random_policy, still_policy,
)
from envs.maze import SMALL_MAZE, DMLabMazeEnv, MazeExplorer
from envs.registration import register_envs, registered_id
from envs.voxel_terrain import SMALL_TERRAIN, TerrainWalker, VoxelTerrainEnv

register_envs()

__all__ = [
    "DMCEnv",
    "DMLabMazeEnv",
    "EXPERT_TASKS",
    "MazeExplorer",
    "Policy",
    "TerrainWalker",
    "VoxelTerrainEnv",
    "make",
    "make_atari",
    "make_expert",
    "held_random_policy",
    "noisy_policy",
    "random_policy",
    "still_policy",
    "registered_id",
]

_SPEC_FORMS = (
    "'dmc:<domain>-<task>' (e.g. 'dmc:cartpole-swingup'), 'atari:<Game>' (e.g. 'atari:Pong'), "
    "'voxel:terrain' (Minecraft-style open terrain), 'dmlab:maze' (DMLab-style 3D mazes), or the scaled memory "
    "benchmark's 'voxel:terrain-small' and 'dmlab:maze-small'"
)


def make(spec: str, **kwargs: Any) -> gym.Env:
    """The environment named by ``spec``; ``kwargs`` go to ``DMCEnv``, ``make_atari``, ``VoxelTerrainEnv`` or
    ``DMLabMazeEnv``."""
    kind, sep, name = spec.partition(":")
    if not sep or kind not in ("dmc", "atari", "voxel", "dmlab"):
        raise ValueError(f"unknown env spec {spec!r}: expected {_SPEC_FORMS}")
    if kind == "atari":
        return make_atari(name, **kwargs)
    if kind == "voxel":
        if name not in ("terrain", "terrain-small"):
            raise ValueError(f"unknown voxel env {spec!r}: expected 'voxel:terrain' or 'voxel:terrain-small'")
        return VoxelTerrainEnv(**{**(SMALL_TERRAIN if name == "terrain-small" else {}), **kwargs})
    if kind == "dmlab":
        if name not in ("maze", "maze-small"):
            raise ValueError(f"unknown dmlab env {spec!r}: expected 'dmlab:maze' or 'dmlab:maze-small'")
        return DMLabMazeEnv(**{**(SMALL_MAZE if name == "maze-small" else {}), **kwargs})
    # Domains contain underscores, not dashes, so the task follows the last dash.
    domain, dash, task = name.rpartition("-")
    if not dash or not domain or not task:
        raise ValueError(f"bad DMC spec {spec!r}: expected 'dmc:<domain>-<task>', e.g. 'dmc:point_mass-easy'")
    return DMCEnv(domain, task, **kwargs)

"""The env skeleton shared by the first-person walking envs (``envs.maze``, ``envs.voxel_terrain``).

Both record long first-person videos for the consistency benchmark with the same three actions and the
same pose layout, so their datasets share action ids and ``poses``. What differs is the world each reset
builds, how a forward step moves the body in it and how a view is drawn: :class:`FirstPersonEnv` keeps
everything else in one place, and each env fills in those hooks and names its expert. Both renderers are
column ray casters over a grid of unit cells, and :func:`grid_crossings` is the 2D grid walk they start from.
"""

from __future__ import annotations

import math
from typing import Any, Callable

import gymnasium as gym
import numpy as np

FORWARD, TURN_LEFT, TURN_RIGHT = range(3)


class FirstPersonEnv(gym.Env):
    """A walk through a world rebuilt from the seed at every reset: ``(size, size, 3)`` uint8 frames, 3 actions.

    Actions: 0 moves ``step_length`` along the heading (as far as the world lets the body go), 1 turns left
    and 2 turns right by ``turn_degrees``. The heading is kept as an integer number of turns, so it never
    drifts and turning back gives exactly the same view. ``reset(seed=...)`` draws a world seed, the start
    position (:meth:`_build_world`) and a random multiple of the turn, in that order. The reward is always 0
    and episodes only truncate, after ``max_steps`` steps. ``info["pose"]`` is :meth:`pose` after every call.

    Subclasses check and store their own arguments (the world's size, ``step_length``'s bound in the world's
    units), set ``metadata``'s ``render_fps`` and implement :meth:`_build_world`, :meth:`_walk`,
    :meth:`_view` and :meth:`scripted_policy`.
    """

    metadata = {"render_modes": ["rgb_array"]}

    def __init__(self, size: int, max_steps: int, turn_degrees: float, step_length: float, render_mode: str) -> None:
        if size < 16:
            raise ValueError(f"size must be at least 16 pixels, got {size}")
        if max_steps < 1:
            raise ValueError(f"max_steps must be >= 1, got {max_steps}")
        if not 0 < turn_degrees <= 180:
            raise ValueError(f"turn_degrees must be in (0, 180], got {turn_degrees}")
        if render_mode != "rgb_array":
            raise ValueError(f"render_mode must be 'rgb_array', got {render_mode!r}")
        self.size = size
        self.max_steps = max_steps
        self.turn_degrees = float(turn_degrees)
        self.step_length = float(step_length)
        self.render_mode = render_mode
        self.observation_space = gym.spaces.Box(0, 255, (size, size, 3), np.uint8)
        self.action_space = gym.spaces.Discrete(3)
        self._position = np.zeros(3)  # x, y (the feet, y up), z
        self._turns = 0  # the heading is turns * turn_degrees
        self._steps = 0
        self._frame: np.ndarray | None = None
        self._episode_over = True

    @property
    def heading(self) -> float:
        """Radians in [0, 2 pi), counter-clockwise from +x towards +z (turning left increases it)."""
        return math.radians((self._turns * self.turn_degrees) % 360.0)

    def pose(self) -> np.ndarray:
        """float32 ``[x, y, z, heading]``: feet position (y up) and heading in radians."""
        if self._frame is None:
            raise RuntimeError("no pose yet: call reset() first")
        return np.array([*self._position, self.heading], np.float32)

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[np.ndarray, dict[str, Any]]:
        super().reset(seed=seed)
        self._position = self._build_world(int(self.np_random.integers(2**63)), options or {})
        self._turns = int(self.np_random.integers(round(360 / self.turn_degrees)))
        self._steps = 0
        self._episode_over = False
        return self._render_frame(), {"pose": self.pose()}

    def step(self, action: Any) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        if self._episode_over:
            raise RuntimeError("episode is over or not started: call reset() before step()")
        if not self.action_space.contains(action):
            raise ValueError(f"unknown action {action!r}: expected 0 (forward), 1 (turn left) or 2 (turn right)")
        if action == FORWARD:
            heading = self.heading
            self._position = self._walk(self.step_length * math.cos(heading), self.step_length * math.sin(heading))
        else:
            self._turns += 1 if action == TURN_LEFT else -1
        self._steps += 1
        truncated = self._steps >= self.max_steps
        self._episode_over = truncated
        return self._render_frame(), 0.0, False, truncated, {"pose": self.pose()}

    def render(self) -> np.ndarray | None:
        """The frame of the latest reset or step."""
        return self._frame

    def scripted_policy(self, seed: int) -> Callable[[np.ndarray], int]:
        """This env's expert for ``wm collect --policies expert``, seeded with ``seed``."""
        raise NotImplementedError

    def _build_world(self, seed: int, options: dict[str, Any]) -> np.ndarray:
        """Build this episode's world from ``seed`` and the reset ``options``; return the start position
        ``[x, y, z]`` (float64), drawn from ``self.np_random``."""
        raise NotImplementedError

    def _walk(self, dx: float, dz: float) -> np.ndarray:
        """The position after a forward move by ``(dx, dz)`` from the current one, as the world allows it."""
        raise NotImplementedError

    def _view(self) -> np.ndarray:
        """The ``(size, size, 3)`` uint8 frame seen from the current position and heading."""
        raise NotImplementedError

    def _render_frame(self) -> np.ndarray:
        self._frame = self._view()
        return self._frame


def grid_crossings(
    x: float, z: float, dx: np.ndarray, dz: np.ndarray, per_axis: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Where horizontal rays from ``(x, z)`` along ``(dx, dz)`` (one per image column) cross the grid lines.

    Each ray's first ``per_axis`` crossings of ``x = const`` lines and of ``z = const`` lines, merged and
    sorted by distance: ``distance`` (W, 2 per_axis), inf for a ray parallel to the lines; ``crosses_x``
    (W, 2 per_axis) bool, whether that crossing steps to the next cell along x (else along z); ``sign_x``
    and ``sign_z`` (W,), the direction (+1 or -1) of those steps. A cell's index along the ray is then a
    cumulative count of the steps, which each caster does in its own indexing.
    """
    steps = np.arange(per_axis)
    crossings, signs = [], []
    for origin, d in ((x, dx), (z, dz)):
        sign = np.where(d >= 0, 1, -1)
        boundary = math.floor(origin) + (d >= 0)[:, None] + sign[:, None] * steps
        with np.errstate(divide="ignore"):
            # abs / abs: an eye exactly on a grid line gives +0, never -0 (which would flip infinities).
            crossings.append(np.where(d[:, None] != 0, np.abs(boundary - origin) / np.abs(d[:, None]), np.inf))
        signs.append(sign)
    both = np.concatenate(crossings, axis=1)
    order = np.argsort(both, axis=1, kind="stable")
    return np.take_along_axis(both, order, axis=1), order < per_axis, signs[0], signs[1]

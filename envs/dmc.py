"""DeepMind Control Suite tasks as pixel-observation gymnasium environments.

Agents and video models see only rendered frames; the dm_control physics stays
reachable (``env.physics``) so scripted experts can act on the true state.
"""

from __future__ import annotations

import os
import sys
import warnings

# Headless rendering is part of the environment, not something users must set.
# dm_control picks its renderer when first imported, so this must come first.
if "MUJOCO_GL" not in os.environ and "dm_control._render" in sys.modules:
    warnings.warn(
        "dm_control was imported before envs with MUJOCO_GL unset, so it chose its own renderer "
        "and headless rendering may fail; import envs first or set MUJOCO_GL=egl",
        stacklevel=2,
    )
os.environ.setdefault("MUJOCO_GL", "egl")

from typing import Any  # noqa: E402

import gymnasium as gym  # noqa: E402
import numpy as np  # noqa: E402
from dm_control import suite  # noqa: E402

# The default camera frames the whole body; quadruped's camera 0 is too close.
_DEFAULT_CAMERA = {"quadruped": 2}
# Shadow-map texels per frame pixel (side). DMC's 2048 x 2048 map costs 36-49 % of a 64 x 64 env step drawn in
# software (EGL without a GPU); 512 draws the same frames but at shadow edges (0.01-0.14 % of pixels differ by
# more than 8 grey levels; python -m experiments.benchmarks.dmc_render_speed).
SHADOW_TEXELS_PER_PIXEL = 8


def check_task(domain: str, task: str) -> None:
    """Raise ValueError naming the bad domain or task and listing valid ones."""
    if domain not in suite.TASKS_BY_DOMAIN:
        valid = ", ".join(sorted(suite.TASKS_BY_DOMAIN))
        raise ValueError(f"unknown DMC domain {domain!r}; valid domains: {valid}")
    tasks = suite.TASKS_BY_DOMAIN[domain]
    if task not in tasks:
        raise ValueError(
            f"unknown task {task!r} for DMC domain {domain!r}; valid tasks: {', '.join(tasks)}"
        )


class DMCEnv(gym.Env):
    """A dm_control suite task with ``(size, size, 3)`` uint8 frames as observations.

    Actions live in ``[-1, 1]`` (clipped) and are mapped linearly onto the actuator
    bounds. Each agent step repeats the action ``action_repeat`` times, sums the
    rewards and renders one frame. The DMC time limit ends an episode with
    ``truncated=True``; ``terminated=True`` only when the task itself ends the
    episode (dm_env discount 0).

    ``observation="state"`` observes the state vector (:meth:`state`) instead, and renders
    a frame only when ``render()`` asks for one: rendering is most of a step's cost, and
    an agent on states with the task's own reward needs frames only for its GIFs.
    """

    metadata = {"render_modes": ["rgb_array"]}

    def __init__(
        self,
        domain: str,
        task: str,
        size: int = 64,
        action_repeat: int = 2,
        camera: int | None = None,
        render_mode: str = "rgb_array",
        observation: str = "pixels",
    ) -> None:
        check_task(domain, task)
        if size < 1:
            raise ValueError(f"size must be a positive number of pixels, got {size}")
        if action_repeat < 1:
            raise ValueError(f"action_repeat must be >= 1, got {action_repeat}")
        if render_mode != "rgb_array":
            raise ValueError(f"render_mode must be 'rgb_array', got {render_mode!r}")
        if observation not in ("pixels", "state"):
            raise ValueError(f"observation must be 'pixels' or 'state', got {observation!r}")
        self.domain = domain
        self.task = task
        self.size = size
        self.action_repeat = action_repeat
        self.camera = _DEFAULT_CAMERA.get(domain, 0) if camera is None else camera
        self.render_mode = render_mode
        self.observation = observation
        self._env = suite.load(domain, task)
        quality = self._env.physics.model.vis.quality  # read when the first frame creates the render context
        quality.shadowsize = min(int(quality.shadowsize), SHADOW_TEXELS_PER_PIXEL * size)

        spec = self._env.action_spec()
        self._action_low = spec.minimum.astype(np.float64)
        self._action_high = spec.maximum.astype(np.float64)
        self.action_space = gym.spaces.Box(-1.0, 1.0, spec.shape, np.float32)
        # Seconds of simulated time per agent step.
        self.control_timestep = self._env.control_timestep() * action_repeat
        self.metadata = {**self.metadata, "render_fps": round(1.0 / self.control_timestep)}
        self._frame: np.ndarray | None = None
        self._dm_observation: dict[str, Any] | None = None  # dm_control's, kept for state()
        self._episode_over = True
        # The state vector: dm_control's observation dict, each entry flattened, in key order.
        self.state_size = sum(int(np.prod(spec.shape)) for spec in self._env.observation_spec().values())
        if observation == "pixels":
            self.observation_space = gym.spaces.Box(0, 255, (size, size, 3), np.uint8)
        else:
            self.observation_space = gym.spaces.Box(-np.inf, np.inf, (self.state_size,), np.float32)

    @property
    def physics(self) -> Any:
        """The dm_control physics; scripted experts read the true state from it."""
        return self._env.physics

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[np.ndarray, dict[str, Any]]:
        super().reset(seed=seed)
        if seed is not None:
            # All of a task's initial-state randomness comes from this RandomState.
            self._env.task.random.seed(seed)
        self._dm_observation = self._env.reset().observation
        self._episode_over = False
        return self._observe(), {}

    def step(self, action: np.ndarray) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        if self._episode_over:
            raise RuntimeError("episode is over: call reset() before step()")
        action = np.clip(np.asarray(action, dtype=np.float64), -1.0, 1.0)
        control = self._action_low + (action + 1.0) * 0.5 * (self._action_high - self._action_low)
        reward = 0.0
        for _ in range(self.action_repeat):
            time_step = self._env.step(control)
            reward += time_step.reward or 0.0
            if time_step.last():
                break
        self._dm_observation = time_step.observation
        terminated = time_step.last() and time_step.discount == 0.0
        truncated = time_step.last() and not terminated
        self._episode_over = time_step.last()
        return self._observe(), float(reward), bool(terminated), bool(truncated), {}

    def render(self) -> np.ndarray | None:
        """The frame of the latest reset or step (rendered once, when first asked for on states)."""
        if self._frame is None and self._dm_observation is not None:
            self._render_frame()
        return self._frame

    def state(self) -> np.ndarray:
        """The task's proprioceptive state after the latest reset or step: dm_control's observation
        dict (positions, velocities, targets...), flattened to float32 ``(state_size,)``."""
        if self._dm_observation is None:
            raise RuntimeError("no state yet: call reset() first")
        return np.concatenate([np.asarray(value, np.float32).ravel() for value in self._dm_observation.values()])

    def close(self) -> None:
        self._env.close()

    def _observe(self) -> np.ndarray:
        if self.observation == "state":
            self._frame = None
            return self.state()
        return self._render_frame()

    def _render_frame(self) -> np.ndarray:
        self._frame = self.physics.render(self.size, self.size, camera_id=self.camera)
        return self._frame

"""Small gymnasium wrappers and helpers the agents' envs need and gymnasium does not ship."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import gymnasium as gym
import numpy as np

SUMMED_INFO = ("task_reward", "viper_reward")  # per-step reward terms that add up like the reward


def env_frame_skip(get_attr: Callable[[str], Any]) -> int:
    """Env steps per observation, from an env's ``action_repeat`` or ``frame_skip`` attribute (else 1).

    ``get_attr`` is ``env.get_wrapper_attr`` for an env, or a lookup in one sub-env of a vector env.
    """
    for name in ("action_repeat", "frame_skip"):
        try:
            return int(get_attr(name))
        except AttributeError:
            continue
    return 1


def env_steps_per_decision(action_repeat: int, env_repeat: int) -> int:
    """How many env steps an :class:`ActionRepeat` must hold each action for the agent to decide every
    ``action_repeat`` underlying steps (physics steps for DMC), on an env that itself repeats each action
    ``env_repeat`` times (``env_frame_skip``; 2 for our DMC envs)."""
    if not isinstance(action_repeat, int) or action_repeat < 1:
        raise ValueError(f"action repeat must be a positive int (physics steps per agent decision), got {action_repeat!r}")
    if action_repeat % env_repeat:
        raise ValueError(
            f"action repeat {action_repeat} (physics steps per agent decision) is not a multiple of the env's own "
            f"repeat of {env_repeat} physics steps per env step"
        )
    return action_repeat // env_repeat


class ActionRepeat(gym.Wrapper):
    """Repeat each agent action ``repeat`` env steps, summing the reward and the reward terms in ``info``.

    Put it *outside* a :class:`envs.viper.ViperReward` so the video model still scores
    every frame at the rate it was trained on, while the agent decides less often
    (DrQ acts every 8 physics steps on cartpole: ``repeat`` 4 on our DMC env, which itself
    repeats 2; :func:`env_steps_per_decision` turns physics steps into ``repeat``). Its ``action_repeat`` and
    ``render_fps`` are the rate of its own observations, so a dataset of them is described at that rate.
    """

    def __init__(self, env: gym.Env, repeat: int) -> None:
        if not isinstance(repeat, int) or repeat < 1:
            raise ValueError(f"repeat must be a positive int, got {repeat!r}")
        super().__init__(env)
        self.repeat = repeat
        self.action_repeat = env_frame_skip(env.get_wrapper_attr) * repeat  # underlying steps per observation
        if env.metadata.get("render_fps"):
            self.metadata = {**env.metadata, "render_fps": env.metadata["render_fps"] / repeat}

    def step(self, action: Any) -> tuple[Any, float, bool, bool, dict[str, Any]]:
        total = 0.0
        sums = dict.fromkeys(SUMMED_INFO, 0.0)
        for _ in range(self.repeat):
            obs, reward, terminated, truncated, info = self.env.step(action)
            total += float(reward)
            for key in SUMMED_INFO:
                sums[key] += float(info.get(key, 0.0))
            if terminated or truncated:
                break
        info = {**info, **{key: value for key, value in sums.items() if key in info}}
        return obs, total, terminated, truncated, info


class StateObservation(gym.Wrapper):
    """Observe the env's state vector (``env.unwrapped.state()``, e.g. :class:`envs.dmc.DMCEnv`'s)
    instead of its frames, which ``render()`` still returns.

    Put it *outside* a :class:`envs.viper.ViperReward`: the video model keeps scoring the
    rendered frames while the agent sees the state, the control that separates "is the
    reward learnable?" from "can pixel RL learn it in this budget?".
    """

    def __init__(self, env: gym.Env) -> None:
        if not callable(getattr(env.unwrapped, "state", None)):
            raise ValueError(f"{env.unwrapped} has no state() method: state observations need one (DMC envs do)")
        super().__init__(env)
        size = int(env.unwrapped.state_size)
        self.observation_space = gym.spaces.Box(-np.inf, np.inf, (size,), np.float32)

    def reset(self, **kwargs: Any) -> tuple[np.ndarray, dict[str, Any]]:
        _, info = self.env.reset(**kwargs)
        return self.env.unwrapped.state(), info

    def step(self, action: Any) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        _, reward, terminated, truncated, info = self.env.step(action)
        return self.env.unwrapped.state(), reward, terminated, truncated, info

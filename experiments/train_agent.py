"""Agents on VIPER reward or the true reward: the env each run builds, and the run itself.

The env stack, inside out: the pixel env (one frame per env step, at the rate the video
model was trained on), :class:`envs.viper.ViperReward` scoring every frame, and
:class:`envs.wrappers.ActionRepeat` so the agent decides every ``action_repeat`` env
steps. The true reward always reaches the logs through ``info["task_reward"]``.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np

import envs
from agents.drq import DrQConfig
from agents.train_drq import DrQTraining, train_drq
from envs.viper import ViperReward
from envs.wrappers import ActionRepeat
from worldmodel.checkpoint import write_json_atomic
from worldmodel.video_model import VideoModel

REWARDS = ("viper", "env")
RUN_FILE = "run.json"


def env_factory(
    env_spec: str,
    reward: str = "viper",
    model: VideoModel | None = None,
    action_repeat: int = 1,
    max_episode_steps: int | None = None,
    **viper_options: Any,
) -> Callable[[int], gym.Env]:
    """``make_env(seed)`` for :func:`agents.train_drq.train_drq`: VIPER-rewarded (``reward="viper"``) or not.

    ``max_episode_steps`` cuts episodes (in env steps); ``viper_options`` go to
    :class:`envs.viper.ViperReward` (task, mode, standardize, ...).
    """
    if reward not in REWARDS:
        raise ValueError(f"unknown reward {reward!r}; expected one of {REWARDS}")
    if reward == "viper" and model is None:
        raise ValueError("a VIPER reward needs a video model (--model)")

    def make_env(seed: int) -> gym.Env:
        env = envs.make(env_spec)
        if max_episode_steps is not None:
            env = gym.wrappers.TimeLimit(env, max_episode_steps)
        if reward == "viper":
            env = ViperReward(env, model, **viper_options)
        env = ActionRepeat(env, action_repeat) if action_repeat > 1 else env
        env.action_space.seed(seed)
        return env

    return make_env


def run_drq(
    env_spec: str,
    run_dir: str | Path,
    agent_config: DrQConfig,
    training: DrQTraining,
    reward: str = "viper",
    model_dir: str | Path | None = None,
    action_repeat: int = 1,
    resume: bool = False,
    max_episode_steps: int | None = None,
    device: str = "cpu",
    **viper_options: Any,
) -> dict[str, Any]:
    """Train DrQ on ``env_spec`` with the chosen reward (agent and video model on ``device``); :func:`train_drq`'s summary.

    ``{run_dir}/run.json`` records the env and reward settings, so tools such as
    ``wm diagnose-reward`` can rebuild the run's env later.
    """
    model = VideoModel.load(model_dir, device) if reward == "viper" and model_dir is not None else None
    settings = {
        "env": env_spec, "reward": reward, "model": None if model is None else str(model_dir),
        "action_repeat": action_repeat, "max_episode_steps": max_episode_steps,
        "viper_options": {k: v.tolist() if isinstance(v, np.ndarray) else v for k, v in viper_options.items()},
    }
    Path(run_dir).mkdir(parents=True, exist_ok=True)
    write_json_atomic(Path(run_dir) / RUN_FILE, settings)
    make_env = env_factory(env_spec, reward, model, action_repeat, max_episode_steps, **viper_options)
    return train_drq(make_env, run_dir, agent_config, training, resume=resume, device=device)

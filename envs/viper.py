"""VIPER reward wrappers: the video model's score of each new frame is the reward.

Video Prediction Rewards (Escontrela et al., 2023): the reward of a transition
``x_t -> x_{t+1}`` is the expert video model's ``log p(x_{t+1} | recent frames)``
(:class:`worldmodel.reward.VideoLikelihoodReward`, which also documents the options:
``score``, ``mode``, ``joint_frames``, ``context_stride``, ``task``, ``score_mask``,
``standardize``, ``frame_weight``; a ``baseline`` video model turns it into a likelihood ratio). Frames go
through the model's rolling KV cache one per env per step, never re-scoring a window of
frames. The env's own reward is kept in ``info["task_reward"]`` so every run can report
its true return; ``viper_weight`` / ``env_reward_weight`` mix the two (the default is the
VIPER reward alone). By default the context stride matches the frame skip the model was
trained at.

The vector version scores all envs in one batched call and starts each env's context
afresh at its own episode boundary (gymnasium's next-step autoreset).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium.vector import AutoresetMode, VectorEnv, VectorWrapper

from envs.wrappers import env_frame_skip
from worldmodel.reward import VideoLikelihoodReward
from worldmodel.video_model import VideoModel


@dataclass(frozen=True)
class ViperOptions:
    """The wrappers' keyword options (see :mod:`worldmodel.reward`); ``context_stride=None`` follows the model."""

    task: str | None = None
    score: str = "log_prob"
    mode: str = "conditional"
    joint_frames: int | None = None
    context_stride: int | None = None
    standardize: bool = True
    score_mask: np.ndarray | None = None
    frame_weight: float = 0.0
    baseline_task: str | None = None  # the baseline model's task, where one model is both (worldmodel.reward)
    viper_weight: float = 1.0
    env_reward_weight: float = 0.0

    def reward_fn(
        self, model: VideoModel, num_envs: int, env_skip: int, baseline: VideoModel | None = None
    ) -> VideoLikelihoodReward:
        """The scorer for ``num_envs`` envs that take ``env_skip`` env steps per observation."""
        stride = self.context_stride
        if stride is None:  # the model sees frames at the rate it was trained on
            if model.info.frame_skip % env_skip:
                raise ValueError(
                    f"the video model's frames are {model.info.frame_skip} env steps apart, which is no multiple "
                    f"of this env's {env_skip} per observation: pass context_stride explicitly"
                )
            stride = model.info.frame_skip // env_skip
        return VideoLikelihoodReward(
            model, num_envs, task=self.task, score=self.score, mode=self.mode, joint_frames=self.joint_frames,
            context_stride=stride, standardize=self.standardize, score_mask=self.score_mask, baseline=baseline,
            frame_weight=self.frame_weight, baseline_task=self.baseline_task,
        )

    def mix(self, viper: np.ndarray | float, env_reward: np.ndarray | float) -> np.ndarray | float:
        return self.viper_weight * viper + self.env_reward_weight * env_reward


class ViperReward(gym.Wrapper):
    """Replace a pixel env's reward by the VIPER reward; keyword options as :class:`ViperOptions`.

    With a ``baseline`` video model (trained on non-expert play) the reward is the likelihood
    ratio of the two models. ``info["task_reward"]`` is the env's own reward, ``info["viper_reward"]`` the VIPER term.
    """

    def __init__(self, env: gym.Env, model: VideoModel, baseline: VideoModel | None = None, **options: Any) -> None:
        super().__init__(env)
        self.options = ViperOptions(**options)
        self.reward_fn = self.options.reward_fn(model, 1, env_frame_skip(env.get_wrapper_attr), baseline)

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[Any, dict[str, Any]]:
        obs, info = self.env.reset(seed=seed, options=options)
        self.reward_fn(obs[None], np.ones(1, bool))
        return obs, info

    def step(self, action: Any) -> tuple[Any, float, bool, bool, dict[str, Any]]:
        obs, reward, terminated, truncated, info = self.env.step(action)
        viper = float(self.reward_fn(obs[None], np.zeros(1, bool))[0])
        info = {**info, "task_reward": float(reward), "viper_reward": viper}
        return obs, self.options.mix(viper, float(reward)), terminated, truncated, info


class ViperRewardVector(VectorWrapper):
    """:class:`ViperReward` for a gymnasium vector env: all envs scored in one batched call per step.

    Needs next-step autoreset (gymnasium's default): an env that finished is reset by the
    following ``step``, whose frame starts that env's new context and earns no reward.
    """

    def __init__(self, env: VectorEnv, model: VideoModel, baseline: VideoModel | None = None, **options: Any) -> None:
        super().__init__(env)
        autoreset = env.metadata.get("autoreset_mode", AutoresetMode.NEXT_STEP)
        if autoreset != AutoresetMode.NEXT_STEP:
            raise ValueError(f"ViperRewardVector needs a vector env with next-step autoreset, got {autoreset}")
        self.options = ViperOptions(**options)
        env_skip = env_frame_skip(lambda name: env.get_attr(name)[0])
        self.reward_fn = self.options.reward_fn(model, env.num_envs, env_skip, baseline)
        self.resetting = np.zeros(env.num_envs, bool)

    def reset(
        self, *, seed: int | list[int] | None = None, options: dict[str, Any] | None = None
    ) -> tuple[Any, dict[str, Any]]:
        if options and "reset_mask" in options:
            raise ValueError("ViperRewardVector resets all envs at once; partial resets come from autoreset")
        obs, info = self.env.reset(seed=seed, options=options)
        self.reward_fn(obs, np.ones(self.num_envs, bool))
        self.resetting[:] = False
        return obs, info

    def step(self, actions: Any) -> tuple[Any, np.ndarray, np.ndarray, np.ndarray, dict[str, Any]]:
        obs, reward, terminated, truncated, info = self.env.step(actions)
        viper = self.reward_fn(obs, self.resetting)
        self.resetting = np.logical_or(terminated, truncated)
        everywhere = np.ones(self.num_envs, bool)
        info = {**info, "task_reward": reward, "_task_reward": everywhere, "viper_reward": viper,
                "_viper_reward": everywhere}
        mixed = self.options.mix(viper, reward).astype(np.float32)
        return obs, mixed, terminated, truncated, info

"""VIPER reward wrappers: the video model's log-likelihood of each new frame is the reward.

Video Prediction Rewards (Escontrela et al., 2023): a video model trained on expert
videos scores an agent's transition ``x_t -> x_{t+1}`` by ``log p(x_{t+1} | recent frames)``
(action-free), so behaviour that looks like the expert's earns reward. Frames go through
the model's :class:`~worldmodel.video_model.FrameScorer` one per env per step (a rolling
KV cache), never re-scoring a window of frames. The env's own reward is kept in
``info["task_reward"]`` so every run can report its true return.

Options:

- ``mode="conditional"`` (default): ``log p(x_{t+1} | x_{<=t})``; ``mode="joint"``: the
  log-likelihood of the last ``joint_frames`` frames together given what came before
  them, the sum of their conditional log-likelihoods (a smoother reward).
- ``context_stride`` s: for slowly moving scenes the model sees every s-th frame, and
  frame t is scored given ``x_{t-s}, x_{t-2s}, ...`` of its episode (s interleaved
  streams per env). By default the stride matches the frame skip the model was trained at.
- ``task``: the task the model is conditioned on (and whose statistics standardise).
- ``score_mask``: pixels (H, W) hidden from the model, e.g. an Atari scoreboard
  (:func:`envs.atari.scoreboard_mask`), while the agent still sees them.
- ``standardize``: ``(log p - mean) / std`` with the per-frame statistics measured on the
  expert data and stored in the model bundle (a public VIPER port's normalisation).
- ``viper_weight`` / ``env_reward_weight``: reward = ``viper_weight * r_viper +
  env_reward_weight * r_env``; the default is the VIPER reward alone.

The vector version scores all envs in one batched call and starts each env's context
afresh at its own episode boundary (gymnasium's next-step autoreset).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from gymnasium.vector import AutoresetMode, VectorEnv, VectorWrapper

from envs.wrappers import env_frame_skip
from worldmodel.likelihood import episode_code_log_probs
from worldmodel.video_model import VideoModel

MODES = ("conditional", "joint")


class VideoLikelihoodReward:
    """VIPER rewards for ``num_envs`` parallel episodes, one batched scorer call per step.

    Call it with each step's frames ``(N, H, W, 3)`` and which envs start a new episode
    with that frame (their reset frame is context, not rewarded). Frame ``t`` of the
    run goes to the phase ``t mod s`` scorer for every env; an env's new episode clears
    its streams in all phases, so each phase stream holds that env's every s-th frame.
    """

    def __init__(
        self,
        model: VideoModel,
        num_envs: int,
        *,
        task: str | None = None,
        mode: str = "conditional",
        joint_frames: int | None = None,
        context_stride: int = 1,
        standardize: bool = True,
        score_mask: np.ndarray | None = None,
    ) -> None:
        if mode not in MODES:
            raise ValueError(f"unknown VIPER reward mode {mode!r}; expected one of {MODES}")
        if not isinstance(context_stride, int) or context_stride < 1:
            raise ValueError(f"context_stride must be a positive int, got {context_stride!r}")
        self.model = model
        self.num_envs = num_envs
        self.mode = mode
        self.joint_frames = (model.window + 1 if joint_frames is None else joint_frames) if mode == "joint" else 1
        if self.joint_frames < 1:
            raise ValueError(f"joint_frames must be >= 1, got {joint_frames}")
        self.stride = context_stride
        self.task_name = self._task_name(task)
        task_id = model.task_id(self.task_name) if model.transformer.config.num_tasks else None
        self.task = None if task_id is None else torch.full((num_envs,), task_id, device=model.transformer.device)
        self.mean, self.std = self._statistics(standardize)
        size = model.image_size
        if score_mask is not None:
            score_mask = np.asarray(score_mask)
            if score_mask.shape != (size, size) or score_mask.dtype != bool:
                raise ValueError(f"score_mask must be a bool array of shape ({size}, {size}), got "
                                 f"{score_mask.shape} {score_mask.dtype}")
        self.score_mask = score_mask
        self.scorers = [model.scorer(num_envs) for _ in range(context_stride)]
        self.recent = np.zeros((num_envs, context_stride, self.joint_frames), np.float32)  # standardised scores
        self.steps = 0

    def _task_name(self, task: str | None) -> str | None:
        tasks = self.model.info.tasks
        if task is not None:
            self.model.task_id(task)  # raises with the known names
            return task
        if self.model.transformer.config.num_tasks:
            raise ValueError(f"this video model is conditioned on tasks {tasks}: pass task=<name>")
        return tasks[0] if len(tasks) == 1 else None

    def _statistics(self, standardize: bool) -> tuple[float, float]:
        if not standardize:
            return 0.0, 1.0
        stats = self.model.info.reward_stats.get(self.task_name) if self.task_name is not None else None
        if stats is None:
            raise ValueError(
                f"the video model has no reward statistics for task {self.task_name!r} (it has "
                f"{sorted(self.model.info.reward_stats)}): run `wm calibrate-reward` on its expert data, "
                "or pass standardize=False"
            )
        return float(stats["mean"]), float(stats["std"])

    def _model_frames(self, frames: np.ndarray, count: int | None) -> np.ndarray:
        """Checked uint8 frames ``(count, H, W, 3)`` with the score mask applied."""
        size = self.model.image_size
        frames = np.asarray(frames)
        if (
            frames.ndim != 4 or frames.shape[1:] != (size, size, 3) or frames.dtype != np.uint8
            or (count is not None and len(frames) != count)
        ):
            raise ValueError(
                f"the video model scores uint8 frames of shape ({count or 'T'}, {size}, {size}, 3), got "
                f"{frames.shape} {frames.dtype}: make the env's frames match the model's image size"
            )
        if self.score_mask is not None:
            frames = np.where(self.score_mask[None, :, :, None], np.uint8(0), frames)
        return frames

    def __call__(self, frames: np.ndarray, new_episode: np.ndarray) -> np.ndarray:
        """Rewards ``(N,)`` float32 for frames ``(N, H, W, 3)`` uint8; 0 where ``new_episode`` (N,) is True."""
        frames = self._model_frames(frames, self.num_envs)
        new_episode = np.asarray(new_episode, dtype=bool)
        phase = self.steps % self.stride
        self.steps += 1
        if new_episode.any():
            for scorer in self.scorers:
                scorer.reset(new_episode)
            self.recent[new_episode] = 0.0
        log_prob = self.scorers[phase].push(frames, task=self.task).cpu().numpy()
        recent = self.recent[:, phase]
        recent[:, :-1] = recent[:, 1:]
        recent[:, -1] = (log_prob - self.mean) / self.std
        return np.where(new_episode, 0.0, recent.sum(-1)).astype(np.float32)

    def episode_code_log_probs(self, frames: np.ndarray) -> np.ndarray:
        """Per-code log-likelihoods ``(T, h, w)`` of a whole recorded episode ``(T, H, W, 3)``, one pass per phase."""
        codes = self.model.tokenizer.encode(self._model_frames(frames, None))
        task = None if self.task is None else int(self.task[0])
        return episode_code_log_probs(self.model.transformer, codes, self.stride, task).cpu().numpy()

    def episode_rewards(self, frames: np.ndarray) -> np.ndarray:
        """The rewards ``(T - 1,)`` this reward gives the steps of a recorded episode ``(T, H, W, 3)``.

        Equal to stepping the episode through a wrapper, computed in one pass per phase.
        """
        return self.rewards_from_code_log_probs(self.episode_code_log_probs(frames))

    def rewards_from_code_log_probs(self, code_log_probs: np.ndarray) -> np.ndarray:
        """:meth:`episode_rewards` from the episode's :meth:`episode_code_log_probs` ``(T, h, w)``."""
        scores = (code_log_probs.reshape(len(code_log_probs), -1).sum(-1) - self.mean) / self.std
        rewards = np.zeros_like(scores)
        for back in range(self.joint_frames):  # the frames t, t - s, ... of the same phase
            shift = back * self.stride
            rewards[shift:] += scores[: len(scores) - shift]
        return rewards[1:].astype(np.float32)


@dataclass(frozen=True)
class ViperOptions:
    """The wrappers' keyword options (see the module docstring); ``context_stride=None`` follows the model."""

    task: str | None = None
    mode: str = "conditional"
    joint_frames: int | None = None
    context_stride: int | None = None
    standardize: bool = True
    score_mask: np.ndarray | None = None
    viper_weight: float = 1.0
    env_reward_weight: float = 0.0

    def reward_fn(self, model: VideoModel, num_envs: int, env_skip: int) -> VideoLikelihoodReward:
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
            model, num_envs, task=self.task, mode=self.mode, joint_frames=self.joint_frames, context_stride=stride,
            standardize=self.standardize, score_mask=self.score_mask,
        )

    def mix(self, viper: np.ndarray | float, env_reward: np.ndarray | float) -> np.ndarray | float:
        return self.viper_weight * viper + self.env_reward_weight * env_reward


class ViperReward(gym.Wrapper):
    """Replace a pixel env's reward by the VIPER reward; keyword options as :class:`ViperOptions`.

    ``info["task_reward"]`` is the env's own reward, ``info["viper_reward"]`` the VIPER term.
    """

    def __init__(self, env: gym.Env, model: VideoModel, **options: Any) -> None:
        super().__init__(env)
        self.options = ViperOptions(**options)
        self.reward_fn = self.options.reward_fn(model, 1, env_frame_skip(env.get_wrapper_attr))

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

    def __init__(self, env: VectorEnv, model: VideoModel, **options: Any) -> None:
        super().__init__(env)
        autoreset = env.metadata.get("autoreset_mode", AutoresetMode.NEXT_STEP)
        if autoreset != AutoresetMode.NEXT_STEP:
            raise ValueError(f"ViperRewardVector needs a vector env with next-step autoreset, got {autoreset}")
        self.options = ViperOptions(**options)
        self.reward_fn = self.options.reward_fn(model, env.num_envs, env_frame_skip(lambda name: env.get_attr(name)[0]))
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

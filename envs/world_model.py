"""The video model as an environment: imagined episodes that an agent steps like the real env.

IRIS (Micheli et al., 2023) and DIAMOND (Alonso et al., 2024) train agents purely inside a
learned world model. Here the world model is the action-conditioned
:class:`~worldmodel.video_model.VideoModel`: :class:`WorldModelVectorEnv` keeps one stream
of the model's rolling KV cache per sub-env, so a ``step`` samples the next frame of every
sub-env in one batched, cached call. ``reset`` (and gymnasium's next-step autoreset) starts
a sub-env from a real context clip, drawn from a :data:`ContextSource` such as an episode
dataset's ``sample``; the other sub-envs carry on undisturbed. Observations are decoded
frames, the first one the decoded last context frame, so the agent sees the same kind of
picture all episode long; or, with ``observations="codes"``, the frames' code vectors
(:meth:`worldmodel.tokenizer.Tokenizer.code_vectors`), for an agent that acts on codes and so
spares every step the decoder, most of an imagined step's cost (IRIS's and Dreamer's agents read
the world model's own representation too).

Rewards, by choice: the transformer's learned reward head (``reward="head"``), any function
of the frames such as an expert model's VIPER likelihood
(:class:`worldmodel.reward.VideoLikelihoodReward` fits), or none. Episodes terminate where the
learned continue head says the episode ends (probability of going on below one half, as IRIS
takes the likelier outcome), unless ``terminations=False``, and are truncated after ``horizon``
steps. :class:`WorldModelEnv` is the single-env view for libraries that expect one env.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from gymnasium.vector import AutoresetMode, VectorEnv
from gymnasium.vector.utils import batch_space

from worldmodel.sampling import check_decoding
from worldmodel.tokenizer import Tokenizer
from worldmodel.video_model import VideoModel

ContextSource = Callable[[int, np.random.Generator], Mapping[str, np.ndarray]]
"""``(n, rng) -> {"video": (n, K, H, W, 3) uint8, "actions": (n, K[, A])}``: real clips to start from.

An optional ``"lengths" (n,)`` says that clip ``i`` is only its last ``lengths[i]`` frames (the ones
before are padding), as :meth:`worldmodel.episodes.EpisodeDataset.sample_contexts` gives."""

RewardFunction = Callable[[np.ndarray, np.ndarray], np.ndarray]
"""``(frames (N, H, W, 3) uint8, starting (N,) bool) -> rewards (N,)``; starting frames begin an episode."""

REWARDS = ("head", "none")
OBSERVATIONS = ("frames", "codes")


def code_observation_space(tokenizer: Tokenizer) -> gym.spaces.Box:
    """The observation space of one frame's code vectors ``(h, w, D)`` float32."""
    shape = tuple(tokenizer.code_vectors(torch.zeros(tokenizer.code_shape, dtype=torch.long)).shape)
    return gym.spaces.Box(-np.inf, np.inf, shape, np.float32)


def observe(tokenizer: Tokenizer, codes: torch.Tensor, observations: str) -> np.ndarray:
    """What an agent observes of frame codes ``(..., h, w)``: the decoded frames or the code vectors."""
    return (tokenizer.decode(codes) if observations == "frames" else tokenizer.code_vectors(codes)).cpu().numpy()


def action_space_of(model: VideoModel) -> gym.Space:
    """The single-env action space a model was trained with (from its bundle, else its config)."""
    config = model.transformer.config
    described = model.info.action_space or {}
    if config.num_actions:
        return gym.spaces.Discrete(config.num_actions)
    if config.action_dim:
        low, high = described.get("low", -1.0), described.get("high", 1.0)
        return gym.spaces.Box(low, high, (config.action_dim,), np.float32)
    raise ValueError("this video model takes no actions (num_actions = action_dim = 0): it cannot be an environment")


class WorldModelVectorEnv(VectorEnv):
    """``num_envs`` imagined episodes of ``model``, stepped together (see the module docstring).

    ``contexts`` gives the real clips episodes start from (``context frames`` each, however many
    it returns); ``reward`` is ``"head"``, ``"none"`` or a :data:`RewardFunction`, by default the
    reward head when the model has one; ``terminations=False`` ignores the continue head (for tasks whose
    real episodes never terminate, where any termination it predicts is wrong); ``horizon`` truncates
    episodes (None: never);
    ``temperature`` and ``top_k`` shape the sampling and ``decoding`` ("sequential" or "jacobi": the same
    frames, see :meth:`worldmodel.streaming.StreamingSampler.sample`) how it runs; ``task`` names the
    model's task if it has several; ``observations`` is ``"frames"`` (uint8 ``(H, W, 3)``) or ``"codes"``
    (float32 code vectors ``(h, w, D)``).
    """

    metadata = {"autoreset_mode": AutoresetMode.NEXT_STEP}

    def __init__(
        self,
        model: VideoModel,
        contexts: ContextSource,
        num_envs: int,
        *,
        reward: str | RewardFunction | None = None,
        terminations: bool = True,
        horizon: int | None = None,
        temperature: float = 1.0,
        top_k: int | None = None,
        decoding: str = "sequential",
        task: str | None = None,
        observations: str = "frames",
    ) -> None:
        if not isinstance(num_envs, int) or num_envs < 1:
            raise ValueError(f"num_envs must be a positive int, got {num_envs!r}")
        if horizon is not None and (not isinstance(horizon, int) or horizon < 1):
            raise ValueError(f"horizon must be a positive int or None, got {horizon!r}")
        check_decoding(decoding)
        has_head = model.transformer.reward_head is not None
        reward = ("head" if has_head else "none") if reward is None else reward
        if isinstance(reward, str) and reward not in REWARDS:
            raise ValueError(f"reward must be one of {REWARDS} or a function of the frames, got {reward!r}")
        if reward == "head" and not has_head:
            raise ValueError("reward='head' needs a transformer trained with reward_head=True")
        if observations not in OBSERVATIONS:
            raise ValueError(f"observations must be one of {OBSERVATIONS}, got {observations!r}")
        if callable(reward) and observations != "frames":
            raise ValueError("a reward function of the frames needs observations='frames'")
        self.observations = observations
        self.model, self.contexts, self.reward = model, contexts, reward
        self.horizon, self.temperature, self.top_k, self.decoding = horizon, temperature, top_k, decoding
        self.terminations = terminations
        self.num_envs = num_envs
        self.single_action_space = action_space_of(model)
        self.action_space = batch_space(self.single_action_space, num_envs)
        if observations == "frames":
            size = model.image_size
            self.single_observation_space = gym.spaces.Box(0, 255, (size, size, 3), np.uint8)
        else:
            self.single_observation_space = code_observation_space(model.tokenizer)
        self.observation_space = batch_space(self.single_observation_space, num_envs)
        device = model.transformer.device
        self.task = None if task is None else torch.full((num_envs,), model.task_id(task), device=device)
        self.sampler = model.sampler(num_envs)
        self.rng = np.random.default_rng()
        self.sub_env_rngs: list[np.random.Generator] | None = None  # one per sub-env after reset(seed=[...])
        self.generator = torch.Generator(device).manual_seed(int(self.rng.integers(2**63)))
        self.steps = np.zeros(num_envs, np.int64)
        self.autoreset = np.zeros(num_envs, bool)
        self.started = False

    def _start(self, mask: np.ndarray) -> np.ndarray:
        """Start the sub-envs in ``mask`` from fresh contexts; their first observations ``(n, H, W, 3)``."""
        n = int(mask.sum())
        clips = self._draw_contexts(mask)
        video, actions = np.asarray(clips["video"]), np.asarray(clips["actions"])
        if video.ndim != 5 or video.shape[0] != n:
            raise ValueError(f"the context source gave video of shape {video.shape}, expected ({n}, K, H, W, 3)")
        lengths = np.asarray(clips.get("lengths", np.full(n, video.shape[1])))
        if lengths.shape != (n,) or lengths.min() < 1 or lengths.max() > video.shape[1]:
            raise ValueError(
                f"the context source gave lengths {lengths.tolist()}, expected {n} of them in [1, {video.shape[1]}]"
            )
        device = self.model.transformer.device
        starting = np.flatnonzero(mask)
        for length in np.unique(lengths):  # one batched start per context length
            same = lengths == length
            streams = np.zeros(self.num_envs, bool)
            streams[starting[same]] = True
            streams = torch.as_tensor(streams, device=device)
            task = None if self.task is None else self.task[streams]
            self.sampler.start(streams, video[same, -length:], actions[same, -length:], task)
        self.steps[mask] = 0
        return self._observe(self.sampler.sampler.latest[torch.as_tensor(mask, device=device)])

    def _observe(self, codes: torch.Tensor) -> np.ndarray:
        return observe(self.model.tokenizer, codes, self.observations)

    def reset(
        self, *, seed: int | list[int] | None = None, options: dict[str, Any] | None = None
    ) -> tuple[np.ndarray, dict[str, Any]]:
        """Start every sub-env from a fresh context; ``seed`` fixes contexts and samples from here on.

        An int seeds one stream of contexts that all sub-envs draw from. A list gives each sub-env its own
        stream, ``seed[i]`` alone deciding the contexts sub-env ``i`` starts from (at this reset and its
        autoresets); the frames sampled from there on come from one generator seeded by the whole list, as
        the sub-envs are sampled together in one batched call.
        """
        if options and "reset_mask" in options:
            raise ValueError("WorldModelVectorEnv resets all sub-envs at once; partial resets come from autoreset")
        if isinstance(seed, (list, tuple)):
            if len(seed) != self.num_envs or not all(isinstance(s, (int, np.integer)) for s in seed):
                raise ValueError(
                    f"seed must be one int or a list of one int per sub-env ({self.num_envs}), got {list(seed)!r}"
                )
            self.sub_env_rngs = [np.random.default_rng(int(s)) for s in seed]
            self.generator.manual_seed(int(np.random.default_rng([int(s) for s in seed]).integers(2**63)))
        elif seed is not None:
            self.sub_env_rngs = None
            self.rng = np.random.default_rng(seed)
            self.generator.manual_seed(seed)
        everywhere = np.ones(self.num_envs, bool)
        obs = self._start(everywhere)
        if callable(self.reward):
            self.reward(obs, everywhere)
        self.autoreset[:] = False
        self.started = True
        return obs, {}

    def _draw_contexts(self, mask: np.ndarray) -> Mapping[str, np.ndarray]:
        """Context clips for the sub-envs in ``mask``: from the shared stream, or each from its sub-env's own."""
        if self.sub_env_rngs is None:
            return self.contexts(int(mask.sum()), self.rng)
        clips = [self.contexts(1, self.sub_env_rngs[i]) for i in np.flatnonzero(mask)]
        return {key: np.concatenate([np.asarray(clip[key]) for clip in clips]) for key in clips[0]}

    def step(self, actions: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, dict[str, Any]]:
        if not self.started:
            raise RuntimeError("call reset() before step()")
        frames = self._observe(self.sampler.sampler.sample(
            self._actions(actions), self.task, self.temperature, self.top_k, self.generator, self.decoding
        ))
        predicted_reward, keep = self.sampler.predict_outcome()
        if keep is None or not self.terminations:
            terminated = np.zeros(self.num_envs, bool)
        else:
            terminated = (keep < 0.5).cpu().numpy()
        starting = self.autoreset.copy()
        if starting.any():
            frames[starting] = self._start(starting)
        if self.reward == "head":
            rewards = predicted_reward.cpu().numpy().astype(np.float32)
        elif callable(self.reward):
            rewards = np.asarray(self.reward(frames, starting), np.float32)
        else:
            rewards = np.zeros(self.num_envs, np.float32)
        self.steps[~starting] += 1
        truncated = np.zeros(self.num_envs, bool) if self.horizon is None else self.steps >= self.horizon
        rewards[starting], terminated[starting], truncated[starting] = 0.0, False, False
        truncated &= ~terminated
        self.autoreset = terminated | truncated
        return frames, rewards, terminated, truncated, {}

    def _actions(self, actions: Any) -> torch.Tensor:
        actions = np.asarray(actions)
        expected = self.action_space.shape
        if actions.shape != expected:
            raise ValueError(f"expected actions of shape {expected} for {self.num_envs} sub-envs, got {actions.shape}")
        device = self.model.transformer.device
        if isinstance(self.single_action_space, gym.spaces.Discrete):
            if not np.issubdtype(actions.dtype, np.integer):
                raise ValueError(f"discrete actions must be integers, got {actions.dtype}")
            if actions.min() < 0 or actions.max() >= self.single_action_space.n:
                raise ValueError(f"actions must be in [0, {self.single_action_space.n}), got {actions.tolist()}")
            return torch.as_tensor(actions, dtype=torch.long, device=device)
        return torch.as_tensor(actions, dtype=torch.float32, device=device)


class WorldModelEnv(gym.Env):
    """One imagined episode at a time: a :class:`WorldModelVectorEnv` of one sub-env, unbatched.

    For libraries that expect a single env (e.g. stable-baselines3); keyword options as the vector env.
    ``render()`` returns the latest frame, so recorders that film ``render()`` see the imagined frames.
    """

    metadata = {"render_modes": ["rgb_array"]}

    def __init__(
        self, model: VideoModel, contexts: ContextSource, render_mode: str = "rgb_array", **options: Any
    ) -> None:
        if render_mode != "rgb_array":
            raise ValueError(f"render_mode must be 'rgb_array', got {render_mode!r}")
        self.render_mode = render_mode
        self.vector = WorldModelVectorEnv(model, contexts, 1, **options)
        self.action_space = self.vector.single_action_space
        self.observation_space = self.vector.single_observation_space
        self._frame: np.ndarray | None = None

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[np.ndarray, dict]:
        super().reset(seed=seed)
        obs, info = self.vector.reset(seed=seed, options=options)
        self._frame = obs[0]
        return obs[0], info

    def step(self, action: Any) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        if self.vector.autoreset[0]:
            raise RuntimeError("the episode has ended: call reset()")
        obs, reward, terminated, truncated, info = self.vector.step(np.asarray([action]))
        self._frame = obs[0]
        return obs[0], float(reward[0]), bool(terminated[0]), bool(truncated[0]), info

    def render(self) -> np.ndarray:
        """The current frame, uint8 ``(H, W, 3)``: the latest observation, or its codes decoded."""
        if self._frame is None:
            raise RuntimeError("no frame yet: call reset() first")
        if self.vector.observations == "frames":
            return self._frame
        return self.vector.model.tokenizer.decode(self.vector.sampler.sampler.latest[0]).cpu().numpy()

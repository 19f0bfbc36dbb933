"""DrQ: soft actor-critic from pixels, regularised by random-shift augmentation (Kostrikov et al. 2020).

VIPER trains this agent on video-model rewards, with jaxrl's ``drq_faster`` settings.
One conv encoder is shared by actor and critic but trained by the critic's loss
only; each head has its own LayerNorm + tanh trunk. Twin Q critics with a Polyak
target (encoder included), a tanh-Gaussian actor and a learned temperature with
target entropy ``-action_dim``. Observations and next observations are shifted by
up to ``image_pad`` pixels (replicate padding, random crop) independently per
sample. Exploration bonuses (RND, ensemble disagreement) join the reward
as :mod:`agents.exploration` mixes them, by ``rnd_weight`` and ``disagreement_weight``.
"""

from __future__ import annotations

import copy
import dataclasses
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import gymnasium as gym
import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from agents.common import (
    ConvEncoder,
    TwinCritic,
    batch_tensors,
    check_obs,
    load_state_tensors,
    mlp,
    optimizer_step,
    random_shift,
    soft_update,
    state_tensors,
    to_box,
    trunk,
)
from agents.exploration import (
    check_exploration_config,
    exploration_modules,
    exploration_optimizers,
    exploration_reward,
)

IntrinsicRewardFn = Callable[[dict[str, Tensor]], Tensor]


@dataclass(frozen=True)
class DrQConfig:
    """VIPER's DrQ settings by default; shrink channels, dims and batch to fit a CPU."""

    encoder_channels: tuple[int, ...] = (32, 64, 128, 256)  # 3x3 convs, stride 2, 'same' padding
    feature_dim: int = 50  # trunk: Linear -> LayerNorm -> tanh
    hidden_dim: int = 256  # actor and critic MLPs: two hidden layers
    batch_size: int = 256
    lr: float = 3e-4  # actor, critic, temperature
    discount: float = 0.99
    tau: float = 0.005  # Polyak rate of the target critic and its encoder
    init_temperature: float = 0.1
    image_pad: int = 4
    log_std_min: float = -10.0
    log_std_max: float = 2.0
    reward_weight: float = 1.0  # the replay reward's weight (viper_rl's density weight)
    rnd_weight: float = 0.0  # beta; 0 disables RND (pixels only)
    disagreement_weight: float = 0.0  # 0 disables the ensemble-disagreement bonus; > 0 percentile-scales each term
    disagreement_members: int = 5  # K, the ensemble's size

    def __post_init__(self) -> None:
        if not self.encoder_channels or min(self.encoder_channels) < 1:
            raise ValueError(f"encoder_channels must be positive channel counts, got {self.encoder_channels}")
        for name in ("feature_dim", "hidden_dim", "batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if not 0.0 <= self.discount <= 1.0 or not 0.0 < self.tau <= 1.0:
            raise ValueError(f"need 0 <= discount <= 1 and 0 < tau <= 1, got {self.discount}, {self.tau}")
        check_exploration_config(self)

    def to_dict(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self), "encoder_channels": list(self.encoder_channels)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> DrQConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown DrQConfig keys {unknown}, expected a subset of {sorted(known)}")
        if "encoder_channels" in data:
            data = {**data, "encoder_channels": tuple(data["encoder_channels"])}
        return cls(**data)


# "cpu" keeps the architecture (four 3x3 stride-2 convs, 50-d trunk, 256x256 MLPs) at half
# the conv width (a quarter of the conv FLOPs) and batch 96: ~10 updates/s on one CPU
# thread with 64x64 frames stacked 3 (~8 with RND), against ~1.4 for "viper".
DRQ_PRESETS: dict[str, DrQConfig] = {
    "viper": DrQConfig(),
    "cpu": DrQConfig(encoder_channels=(16, 32, 64, 128), batch_size=96),
}


class Actor(nn.Module):
    """Tanh-squashed Gaussian policy on encoder features."""

    def __init__(self, in_dim: int, action_dim: int, config: DrQConfig) -> None:
        super().__init__()
        self.trunk = trunk(in_dim, config.feature_dim)
        self.policy = mlp(config.feature_dim, config.hidden_dim, 2 * action_dim)
        self.log_std_min, self.log_std_max = config.log_std_min, config.log_std_max

    def forward(self, h: Tensor, sample: bool) -> tuple[Tensor, Tensor]:
        """An action in [-1, 1] and its log-probability ``(B,)`` (of the mean when not sampling)."""
        mean, log_std = self.policy(self.trunk(h)).chunk(2, dim=-1)
        log_std = self.log_std_min + 0.5 * (self.log_std_max - self.log_std_min) * (torch.tanh(log_std) + 1)
        std = log_std.exp()
        u = mean + std * torch.randn_like(mean) if sample else mean
        log_prob = (-0.5 * ((u - mean) / std).pow(2) - log_std - 0.5 * math.log(2 * math.pi)).sum(-1)
        # Change of variables for tanh, in a numerically stable form.
        log_prob = log_prob - (2 * (math.log(2) - u - F.softplus(-2 * u))).sum(-1)
        return torch.tanh(u), log_prob


class DrQAgent(nn.Module):
    """SAC + random shift on stacked uint8 frames ``obs_shape = (3*S, H, W)`` for a Box action space."""

    def __init__(self, config: DrQConfig, obs_shape: tuple[int, int, int], action_space: gym.spaces.Box) -> None:
        super().__init__()
        if not isinstance(action_space, gym.spaces.Box) or len(action_space.shape) != 1:
            raise ValueError(f"DrQ needs a 1-D Box action space, got {action_space}")
        if not (np.all(np.isfinite(action_space.low)) and np.all(np.isfinite(action_space.high))):
            raise ValueError(f"DrQ needs finite action bounds, got {action_space.low} .. {action_space.high}")
        if len(obs_shape) != 3 or obs_shape[0] % 3:
            raise ValueError(f"obs_shape must be (3*frames, H, W), got {tuple(obs_shape)}")
        self.config = config
        self.obs_shape = tuple(int(d) for d in obs_shape)
        self.action_dim = int(action_space.shape[0])
        self.register_buffer("action_low", torch.as_tensor(action_space.low, dtype=torch.float32))
        self.register_buffer("action_high", torch.as_tensor(action_space.high, dtype=torch.float32))
        self.target_entropy = -float(self.action_dim)

        channels = config.encoder_channels
        self.encoder = ConvEncoder(self.obs_shape, channels, [2] * len(channels), padding=1)
        self.critic = TwinCritic(self.encoder.out_dim, self.action_dim, config.feature_dim, config.hidden_dim)
        self.actor = Actor(self.encoder.out_dim, self.action_dim, config)
        self.encoder_target = copy.deepcopy(self.encoder).requires_grad_(False)
        self.critic_target = copy.deepcopy(self.critic).requires_grad_(False)
        self.log_alpha = nn.Parameter(torch.tensor(math.log(config.init_temperature)))
        self.rnd, self.disagreement, self.reward_mix = exploration_modules(config, self.obs_shape, self.action_dim)

        critic_params = [*self.encoder.parameters(), *self.critic.parameters()]
        self.optimizers: dict[str, torch.optim.Optimizer] = {
            "critic": torch.optim.Adam(critic_params, lr=config.lr),
            "actor": torch.optim.Adam(self.actor.parameters(), lr=config.lr),
            "alpha": torch.optim.Adam([self.log_alpha], lr=config.lr),
        }
        self.optimizers.update(exploration_optimizers(self.rnd, self.disagreement))

    @property
    def device(self) -> torch.device:
        return self.log_alpha.device

    @property
    def alpha(self) -> Tensor:
        return self.log_alpha.exp()

    @torch.no_grad()
    def act(self, obs: np.ndarray, sample: bool, step: int = 0) -> np.ndarray:
        """Action(s) in the env's Box for one stack ``(3*S, H, W)`` or a batch ``(B, 3*S, H, W)`` of uint8.

        ``step`` is the shared loop's agent step; SAC's exploration needs no schedule.
        """
        obs_t = check_obs(torch.as_tensor(np.asarray(obs), device=self.device), self.obs_shape, "obs", allow_single=True)
        single = obs_t.dim() == 3
        action, _ = self.actor(self.encoder(obs_t[None] if single else obs_t), sample)
        scaled = to_box(action, self.action_low, self.action_high)
        return scaled[0] if single else scaled

    def batch_spec(self) -> dict[str, Any]:
        """How the loop samples replay for :meth:`update`: one-step transitions discounted by gamma."""
        return {"batch_size": self.config.batch_size, "n_step": 1, "gamma": self.config.discount}

    def update(
        self, batch: dict[str, np.ndarray], step: int = 0, intrinsic_reward_fn: IntrinsicRewardFn | None = None
    ) -> dict[str, float]:
        """One critic, actor and temperature step on a replay batch; returns losses, alpha and Q.

        ``batch`` is :meth:`~agents.replay.ReplayBuffer.sample`'s output as :meth:`batch_spec`
        asks (``discount`` is the factor on the bootstrapped value). ``intrinsic_reward_fn``
        maps the batch (as tensors) to an extra reward ``(B,)``, added to the env reward.
        """
        tensors = batch_tensors(batch, self.obs_shape, self.action_low, self.action_high)
        reward, metrics = exploration_reward(tensors, self.reward_mix, self.rnd, self.disagreement)
        if intrinsic_reward_fn is not None:
            extra = torch.as_tensor(intrinsic_reward_fn(tensors), dtype=torch.float32).detach()
            if extra.shape != reward.shape:
                raise ValueError(f"intrinsic_reward_fn returned shape {tuple(extra.shape)}, expected {tuple(reward.shape)}")
            reward = reward + extra
            metrics["reward_intrinsic"] = extra.mean().item()

        obs = random_shift(tensors["obs"], self.config.image_pad)
        next_obs = random_shift(tensors["next_obs"], self.config.image_pad)
        action = tensors["action"]

        # Critic (and encoder) towards the soft Bellman target.
        target_q = self.critic_target_q(reward, tensors["discount"], next_obs)
        h = self.encoder(obs)
        q1, q2 = self.critic(h, action)
        critic_loss = F.mse_loss(q1, target_q) + F.mse_loss(q2, target_q)
        self._step("critic", critic_loss)

        # Actor on detached features: the encoder learns from the critic alone.
        sampled, log_prob = self.actor(h.detach(), sample=True)
        actor_q1, actor_q2 = self.critic(h.detach(), sampled)
        actor_loss = (self.alpha.detach() * log_prob - torch.min(actor_q1, actor_q2)).mean()
        self._step("actor", actor_loss)

        alpha_loss = (self.alpha * (-log_prob.detach() - self.target_entropy)).mean()
        self._step("alpha", alpha_loss)

        self._soft_update()
        return {
            **metrics,
            "critic_loss": critic_loss.item(),
            "actor_loss": actor_loss.item(),
            "alpha_loss": alpha_loss.item(),
            "alpha": self.alpha.item(),
            "entropy": -log_prob.mean().item(),
            "q": q1.mean().item(),
            "target_q": target_q.mean().item(),
        }

    @torch.no_grad()
    def critic_target_q(self, reward: Tensor, discount: Tensor, next_obs: Tensor) -> Tensor:
        """Soft Bellman target ``(B,)`` from the target networks; ``discount`` is the factor on the
        bootstrapped value (gamma, or 0 after a terminal transition: the reward alone)."""
        next_action, next_log_prob = self.actor(self.encoder(next_obs), sample=True)
        target_q1, target_q2 = self.critic_target(self.encoder_target(next_obs), next_action)
        target_v = torch.min(target_q1, target_q2) - self.alpha * next_log_prob
        return reward + discount * target_v

    def state_tensors(self) -> dict[str, torch.Tensor]:
        """Weights (``model.*``) and optimizer states (``optim.<name>.*``) as one flat dict."""
        return state_tensors(self, self.optimizers)

    def load_state_tensors(self, tensors: dict[str, torch.Tensor]) -> None:
        """Inverse of :meth:`state_tensors`; optimizer states are optional (weights only for acting)."""
        load_state_tensors(self, self.optimizers, tensors, "DrQ")

    def _step(self, name: str, loss: Tensor) -> None:
        optimizer_step(self.optimizers[name], loss)

    def _soft_update(self) -> None:
        soft_update(self.encoder, self.encoder_target, self.config.tau)
        soft_update(self.critic, self.critic_target, self.config.tau)

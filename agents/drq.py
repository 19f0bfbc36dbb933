"""DrQ: soft actor-critic from pixels, regularised by random-shift augmentation (Kostrikov et al. 2020).

VIPER trains this agent on video-model rewards, with jaxrl's ``drq_faster`` settings.
One conv encoder is shared by actor and critic but trained by the critic's loss
only; each head has its own LayerNorm + tanh trunk. Twin Q critics with a Polyak
target (encoder included), a tanh-Gaussian actor and a learned temperature with
target entropy ``-action_dim``. Observations and next observations are shifted by
up to ``image_pad`` pixels (replicate padding, random crop) independently per
sample. With ``rnd_weight > 0`` the agent owns an :class:`~agents.rnd.RND` module
and trains on ``r_env + rnd_weight * r_rnd(next frame)``.
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

from agents.rnd import RND
from worldmodel.checkpoint import CheckpointError

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
    rnd_weight: float = 0.0  # beta; 0 disables RND

    def __post_init__(self) -> None:
        if not self.encoder_channels or min(self.encoder_channels) < 1:
            raise ValueError(f"encoder_channels must be positive channel counts, got {self.encoder_channels}")
        for name in ("feature_dim", "hidden_dim", "batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if not 0.0 <= self.discount <= 1.0 or not 0.0 < self.tau <= 1.0:
            raise ValueError(f"need 0 <= discount <= 1 and 0 < tau <= 1, got {self.discount}, {self.tau}")
        if self.rnd_weight < 0:
            raise ValueError(f"rnd_weight must be >= 0, got {self.rnd_weight}")

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


def random_shift(obs: Tensor, pad: int) -> Tensor:
    """Shift each image by up to ``pad`` pixels: replicate-pad, then crop at a random offset."""
    if pad == 0:
        return obs
    _, _, height, width = obs.shape
    padded = F.pad(obs, (pad, pad, pad, pad), mode="replicate").permute(0, 2, 3, 1)
    # Slicing per sample copies far less than one gather over the batch; stacking the
    # (H, W, C) crops yields channels-last images, the layout CPU convolutions run fastest on.
    offsets = torch.randint(0, 2 * pad + 1, (obs.shape[0], 2)).tolist()
    crops = [image[y : y + height, x : x + width] for image, (y, x) in zip(padded, offsets)]
    return torch.stack(crops).permute(0, 3, 1, 2)


class Encoder(nn.Module):
    """3x3 stride-2 convolutions with ReLU on pixels scaled to [-0.5, 0.5]; flattened output."""

    def __init__(self, obs_shape: tuple[int, int, int], channels: tuple[int, ...]) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        in_channels = obs_shape[0]
        for out_channels in channels:
            layers += [nn.Conv2d(in_channels, out_channels, 3, stride=2, padding=1), nn.ReLU(inplace=True)]
            in_channels = out_channels
        self.convs = nn.Sequential(*layers, nn.Flatten())
        with torch.no_grad():
            self.out_dim = self.convs(torch.zeros(1, *obs_shape)).shape[1]

    def forward(self, obs: Tensor) -> Tensor:
        # Channels-last runs these convolutions ~1.5x faster on CPU than NCHW.
        return self.convs(obs.contiguous(memory_format=torch.channels_last).float().mul_(1 / 255).sub_(0.5))


def _trunk(in_dim: int, feature_dim: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(in_dim, feature_dim), nn.LayerNorm(feature_dim), nn.Tanh())


def _mlp(in_dim: int, hidden_dim: int, out_dim: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Linear(in_dim, hidden_dim), nn.ReLU(),
        nn.Linear(hidden_dim, hidden_dim), nn.ReLU(),
        nn.Linear(hidden_dim, out_dim),
    )


class Actor(nn.Module):
    """Tanh-squashed Gaussian policy on encoder features."""

    def __init__(self, in_dim: int, action_dim: int, config: DrQConfig) -> None:
        super().__init__()
        self.trunk = _trunk(in_dim, config.feature_dim)
        self.policy = _mlp(config.feature_dim, config.hidden_dim, 2 * action_dim)
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


class Critic(nn.Module):
    """Twin Q networks on a shared trunk of encoder features."""

    def __init__(self, in_dim: int, action_dim: int, config: DrQConfig) -> None:
        super().__init__()
        self.trunk = _trunk(in_dim, config.feature_dim)
        self.q1 = _mlp(config.feature_dim + action_dim, config.hidden_dim, 1)
        self.q2 = _mlp(config.feature_dim + action_dim, config.hidden_dim, 1)

    def forward(self, h: Tensor, action: Tensor) -> tuple[Tensor, Tensor]:
        x = torch.cat([self.trunk(h), action], dim=-1)
        return self.q1(x).squeeze(-1), self.q2(x).squeeze(-1)


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

        self.encoder = Encoder(self.obs_shape, config.encoder_channels)
        self.critic = Critic(self.encoder.out_dim, self.action_dim, config)
        self.actor = Actor(self.encoder.out_dim, self.action_dim, config)
        self.encoder_target = copy.deepcopy(self.encoder).requires_grad_(False)
        self.critic_target = copy.deepcopy(self.critic).requires_grad_(False)
        self.log_alpha = nn.Parameter(torch.tensor(math.log(config.init_temperature)))
        frame_shape = (3, *self.obs_shape[1:])
        self.rnd = RND(frame_shape) if config.rnd_weight > 0 else None

        critic_params = [*self.encoder.parameters(), *self.critic.parameters()]
        self.optimizers: dict[str, torch.optim.Optimizer] = {
            "critic": torch.optim.Adam(critic_params, lr=config.lr),
            "actor": torch.optim.Adam(self.actor.parameters(), lr=config.lr),
            "alpha": torch.optim.Adam([self.log_alpha], lr=config.lr),
        }
        if self.rnd is not None:
            self.optimizers["rnd"] = self.rnd.optimizer

    @property
    def device(self) -> torch.device:
        return self.log_alpha.device

    @property
    def alpha(self) -> Tensor:
        return self.log_alpha.exp()

    @torch.no_grad()
    def act(self, obs: np.ndarray, sample: bool) -> np.ndarray:
        """Action(s) in the env's Box for one stack ``(3*S, H, W)`` or a batch ``(B, 3*S, H, W)`` of uint8."""
        obs_t = self._check_obs(torch.as_tensor(np.asarray(obs), device=self.device), "obs", allow_single=True)
        single = obs_t.dim() == 3
        action, _ = self.actor(self.encoder(obs_t[None] if single else obs_t), sample)
        scaled = self.action_low + (action + 1) * 0.5 * (self.action_high - self.action_low)
        scaled = scaled.cpu().numpy()
        return scaled[0] if single else scaled

    def update(self, batch: dict[str, np.ndarray], intrinsic_reward_fn: IntrinsicRewardFn | None = None) -> dict[str, float]:
        """One critic, actor and temperature step on a replay batch; returns losses, alpha and Q.

        ``batch`` is :meth:`~agents.replay.ReplayBuffer.sample`'s output. ``intrinsic_reward_fn``
        maps the batch (as tensors) to an extra reward ``(B,)``, added to the env reward.
        """
        tensors = self._batch_tensors(batch)
        reward = tensors["reward"]
        metrics: dict[str, float] = {"reward_env": reward.mean().item()}
        if self.rnd is not None:
            bonus, rnd_metrics = self.rnd.update(tensors["next_obs"][:, -3:])  # the newest frame
            reward = reward + self.config.rnd_weight * bonus
            metrics.update(rnd_metrics, reward_rnd=bonus.mean().item())
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
        """Soft Bellman target ``(B,)`` from the target networks; ``discount`` 0 (a terminal
        transition) leaves the reward alone, with nothing bootstrapped."""
        next_action, next_log_prob = self.actor(self.encoder(next_obs), sample=True)
        target_q1, target_q2 = self.critic_target(self.encoder_target(next_obs), next_action)
        target_v = torch.min(target_q1, target_q2) - self.alpha * next_log_prob
        return reward + self.config.discount * discount * target_v

    def state_tensors(self) -> dict[str, torch.Tensor]:
        """Weights (``model.*``) and optimizer states (``optim.<name>.*``) as one flat dict."""
        tensors = {f"model.{k}": v.detach().to("cpu", copy=True) for k, v in self.state_dict().items()}
        for name, optimizer in self.optimizers.items():
            for param_id, state in optimizer.state_dict()["state"].items():
                for key, value in state.items():
                    tensors[f"optim.{name}.{param_id}.{key}"] = torch.as_tensor(value).to("cpu", copy=True)
        return tensors

    def load_state_tensors(self, tensors: dict[str, torch.Tensor]) -> None:
        """Inverse of :meth:`state_tensors`; optimizer states are optional (weights only for acting)."""
        weights = {k.removeprefix("model."): v for k, v in tensors.items() if k.startswith("model.")}
        expected = self.state_dict()
        missing = sorted(set(expected) - set(weights))
        unexpected = sorted(set(weights) - set(expected))
        wrong = [f"{k}: {tuple(weights[k].shape)} vs {tuple(v.shape)}" for k, v in expected.items()
                 if k in weights and weights[k].shape != v.shape]
        if missing or unexpected or wrong:
            raise CheckpointError(
                f"DrQ weights do not match this agent: missing {missing[:5]}, unexpected {unexpected[:5]}, "
                f"wrong shapes {wrong[:5]}"
            )
        self.load_state_dict(weights)
        stray = [k for k in tensors if not k.startswith(("model.", "optim."))]
        if stray:
            raise CheckpointError(f"unexpected DrQ state entries {stray[:5]}")
        for name, optimizer in self.optimizers.items():
            prefix = f"optim.{name}."
            state: dict[int, dict[str, Tensor]] = {}
            for key, value in tensors.items():
                if key.startswith(prefix):
                    param_id, field = key.removeprefix(prefix).split(".", 1)
                    state.setdefault(int(param_id), {})[field] = value
            if not state:
                continue
            try:
                optimizer.load_state_dict({"state": state, "param_groups": optimizer.state_dict()["param_groups"]})
            except (ValueError, KeyError) as err:
                raise CheckpointError(f"DrQ {name} optimizer state does not match this agent: {err}") from err

    def _step(self, name: str, loss: Tensor) -> None:
        optimizer = self.optimizers[name]
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    @torch.no_grad()
    def _soft_update(self) -> None:
        for online, target in ((self.encoder, self.encoder_target), (self.critic, self.critic_target)):
            for p, p_target in zip(online.parameters(), target.parameters()):
                p_target.lerp_(p, self.config.tau)

    def _check_obs(self, obs: Tensor, name: str, allow_single: bool = False) -> Tensor:
        ok_shape = tuple(obs.shape[1:]) == self.obs_shape or (allow_single and tuple(obs.shape) == self.obs_shape)
        if obs.dtype != torch.uint8 or not ok_shape:
            raise ValueError(f"{name} must be uint8 (B, {', '.join(map(str, self.obs_shape))}), got {obs.dtype} {tuple(obs.shape)}")
        return obs

    def _batch_tensors(self, batch: dict[str, np.ndarray]) -> dict[str, Tensor]:
        """Tensors of a replay batch, checked, with actions mapped from the env's Box to [-1, 1]."""
        missing = {"obs", "action", "reward", "discount", "next_obs"} - set(batch)
        if missing:
            raise ValueError(f"batch is missing {sorted(missing)}")
        keys = ("obs", "action", "reward", "discount", "next_obs")
        out = {k: torch.as_tensor(np.asarray(batch[k]), device=self.device) for k in keys}
        size = out["obs"].shape[0]
        for name in ("obs", "next_obs"):
            self._check_obs(out[name], name)
        if tuple(out["action"].shape) != (size, self.action_dim):
            raise ValueError(f"action must be ({size}, {self.action_dim}), got {tuple(out['action'].shape)}")
        for name in ("reward", "discount", "next_obs"):
            if out[name].shape[0] != size or (name != "next_obs" and out[name].dim() != 1):
                raise ValueError(f"{name} has shape {tuple(out[name].shape)}, expected a leading batch of {size}")
        action = out["action"].float()
        out["action"] = (2 * (action - self.action_low) / (self.action_high - self.action_low) - 1).clamp(-1, 1)
        out["reward"] = out["reward"].float()
        out["discount"] = out["discount"].float()
        return out

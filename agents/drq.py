"""DrQ: soft actor-critic from pixels, regularised by random-shift augmentation (Kostrikov et al. 2020).

VIPER trains this agent on video-model rewards, with jaxrl's ``drq_faster`` settings.
One conv encoder is shared by actor and critic but trained by the critic's loss
only; each head has its own LayerNorm + tanh trunk. Twin Q critics with a Polyak
target (encoder included), a tanh-Gaussian actor and a learned temperature with
target entropy ``-action_dim``. Observations and next observations are shifted by
up to ``image_pad`` pixels (replicate padding, random crop) independently per
sample. Exploration bonuses (RND, ensemble disagreement) join the reward
as :mod:`agents.exploration` mixes them, by ``rnd_weight`` and ``disagreement_weight``.

The published DrQ (the ``"paper"`` preset, denisyarats/drq) differs in settings only:
an unpadded 32-channel encoder with one strided conv, 1024-wide MLPs, orthogonal
initialisation, the actor, temperature and target networks stepped every 2nd update,
and K = M = 2 augmentations: the critic's target averages K shifted views of the next
observation, and its loss sums over M shifted views of the observation (the actor
learns on the first). One view each (K = M = 1) is the plain random-shift update.
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
    orthogonal_init,
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

    encoder_channels: tuple[int, ...] = (32, 64, 128, 256)  # 3x3 convs
    encoder_strides: tuple[int, ...] = ()  # one per conv; () = 2 for every conv (VIPER's)
    encoder_padding: int = 1  # 1 keeps a stride-1 conv's size ('same'); DrQ's convs are unpadded (0)
    feature_dim: int = 50  # trunk: Linear -> LayerNorm -> tanh
    hidden_dim: int = 256  # actor and critic MLPs: two hidden layers
    batch_size: int = 256
    lr: float = 3e-4  # actor, critic, temperature
    discount: float = 0.99
    tau: float = 0.005  # Polyak rate of the target critic and its encoder
    actor_update_period: int = 1  # updates per actor and temperature step (DrQ's actor_update_frequency)
    target_update_period: int = 1  # updates per Polyak step (DrQ's critic_target_update_frequency)
    target_augmentations: int = 1  # K, shifted views of the next observation the critic's target averages
    critic_augmentations: int = 1  # M, shifted views of the observation the critic's loss sums over
    orthogonal_init: bool = False  # DrQ's: orthogonal weights (ReLU gain on convs), zero biases; else torch's
    init_temperature: float = 0.1
    image_pad: int = 4
    log_std_min: float = -10.0
    log_std_max: float = 2.0
    reward_weight: float = 1.0  # the replay reward's weight (viper_rl's density weight)
    rnd_weight: float = 0.0  # beta; 0 disables RND (frames or states)
    disagreement_weight: float = 0.0  # 0 disables the ensemble-disagreement bonus; > 0 percentile-scales each term
    disagreement_members: int = 5  # K, the ensemble's size

    def __post_init__(self) -> None:
        if not self.encoder_channels or min(self.encoder_channels) < 1:
            raise ValueError(f"encoder_channels must be positive channel counts, got {self.encoder_channels}")
        if self.encoder_strides and (len(self.encoder_strides) != len(self.encoder_channels)
                                     or min(self.encoder_strides) < 1):
            raise ValueError(f"encoder_strides must be empty or one stride >= 1 per conv of {self.encoder_channels}, "
                             f"got {self.encoder_strides}")
        if self.encoder_padding < 0:
            raise ValueError(f"encoder_padding must be >= 0, got {self.encoder_padding}")
        for name in ("feature_dim", "hidden_dim", "batch_size", "actor_update_period", "target_update_period",
                     "target_augmentations", "critic_augmentations"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if max(self.target_augmentations, self.critic_augmentations) > 1 and self.image_pad == 0:
            raise ValueError("more than one augmented view (target_augmentations, critic_augmentations) needs "
                             "image_pad > 0: unshifted views are all the same")
        if not 0.0 <= self.discount <= 1.0 or not 0.0 < self.tau <= 1.0:
            raise ValueError(f"need 0 <= discount <= 1 and 0 < tau <= 1, got {self.discount}, {self.tau}")
        check_exploration_config(self)

    @property
    def strides(self) -> tuple[int, ...]:
        """The stride of each conv."""
        return self.encoder_strides or (2,) * len(self.encoder_channels)

    def to_dict(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self), "encoder_channels": list(self.encoder_channels),
                "encoder_strides": list(self.encoder_strides)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> DrQConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown DrQConfig keys {unknown}, expected a subset of {sorted(known)}")
        tuples = {name: tuple(data[name]) for name in ("encoder_channels", "encoder_strides") if name in data}
        return cls(**{**data, **tuples})


# "cpu" keeps the architecture (four 3x3 stride-2 convs, 50-d trunk, 256x256 MLPs) at half
# the conv width (a quarter of the conv FLOPs) and batch 96: ~10 updates/s on one CPU
# thread with 64x64 frames stacked 3 (~8 with RND), against ~1.4 for "viper".
# "paper" is DrQ's published DMC setting (Kostrikov et al. 2020; denisyarats/drq's config
# with the paper's batch of 512), which DrQ ran on 84x84 frames (a 35x35x32 conv output);
# on our 64x64 frames the same layers give 25x25x32. Its pixels are scaled to [-0.5, 0.5]
# like the other presets', where DrQ's code scales them to [0, 1]. docs/results/speed.md
# ("What a faithful pixel DrQ costs on this CPU") times it against "cpu" one change at a time.
DRQ_PRESETS: dict[str, DrQConfig] = {
    "viper": DrQConfig(),
    "cpu": DrQConfig(encoder_channels=(16, 32, 64, 128), batch_size=96),
    "paper": DrQConfig(
        encoder_channels=(32, 32, 32, 32), encoder_strides=(2, 1, 1, 1), encoder_padding=0, hidden_dim=1024,
        batch_size=512, lr=1e-3, tau=0.01, actor_update_period=2, target_update_period=2,
        target_augmentations=2, critic_augmentations=2, orthogonal_init=True,
    ),
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

        self.encoder = ConvEncoder(self.obs_shape, config.encoder_channels, config.strides, config.encoder_padding)
        self.critic = TwinCritic(self.encoder.out_dim, self.action_dim, config.feature_dim, config.hidden_dim)
        self.actor = Actor(self.encoder.out_dim, self.action_dim, config)
        if config.orthogonal_init:
            for part in (self.encoder, self.critic, self.actor):
                part.apply(orthogonal_init)
        # Counts updates, for the actor's and the target's periods; a checkpoint carries it.
        self.register_buffer("updates", torch.zeros((), dtype=torch.long))
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
        """One critic step, and the actor, temperature and target steps their periods call for;
        returns losses, alpha and Q (the actor's and temperature's only when they stepped).

        ``batch`` is :meth:`~agents.replay.ReplayBuffer.sample`'s output as :meth:`batch_spec`
        asks (``discount`` is the factor on the bootstrapped value). ``intrinsic_reward_fn``
        maps the batch (as tensors) to an extra reward ``(B,)``, added to the env reward.
        The periods count updates, not ``step``: a loop making several updates per agent step
        still steps the actor every ``actor_update_period``-th one.
        """
        tensors = batch_tensors(batch, self.obs_shape, self.action_low, self.action_high)
        reward, metrics = exploration_reward(tensors, self.reward_mix, self.rnd, self.disagreement)
        if intrinsic_reward_fn is not None:
            extra = torch.as_tensor(intrinsic_reward_fn(tensors), dtype=torch.float32).detach()
            if extra.shape != reward.shape:
                raise ValueError(f"intrinsic_reward_fn returned shape {tuple(extra.shape)}, expected {tuple(reward.shape)}")
            reward = reward + extra
            metrics["reward_intrinsic"] = extra.mean().item()

        # Views stacked on the batch axis, view-major: M of each observation, K of each next one.
        config, size = self.config, reward.shape[0]
        views, target_views = config.critic_augmentations, config.target_augmentations
        obs = random_shift(tensors["obs"].repeat(views, 1, 1, 1), config.image_pad)
        next_obs = random_shift(tensors["next_obs"].repeat(target_views, 1, 1, 1), config.image_pad)
        action = tensors["action"].repeat(views, 1)

        # Critic (and encoder) towards the soft Bellman target, on every view; the sum over views
        # (DrQ's code) is M times the mean over the stacked batch.
        target_q = self.critic_target_q(reward, tensors["discount"], next_obs)
        h = self.encoder(obs)
        q1, q2 = self.critic(h, action)
        stacked_target = target_q.repeat(views)
        critic_loss = views * (F.mse_loss(q1, stacked_target) + F.mse_loss(q2, stacked_target))
        self._step("critic", critic_loss)
        out = {**metrics, "critic_loss": critic_loss.item()}

        index = int(self.updates)
        self.updates += 1
        if index % config.actor_update_period == 0:
            out.update(self._update_actor_and_alpha(h[:size].detach()))
        if index % config.target_update_period == 0:
            self._soft_update()
        return {**out, "alpha": self.alpha.item(), "q": q1.mean().item(), "target_q": target_q.mean().item()}

    def _update_actor_and_alpha(self, h: Tensor) -> dict[str, float]:
        """Actor and temperature steps on detached features of the first view: the encoder learns
        from the critic alone."""
        sampled, log_prob = self.actor(h, sample=True)
        actor_q1, actor_q2 = self.critic(h, sampled)
        actor_loss = (self.alpha.detach() * log_prob - torch.min(actor_q1, actor_q2)).mean()
        self._step("actor", actor_loss)

        alpha_loss = (self.alpha * (-log_prob.detach() - self.target_entropy)).mean()
        self._step("alpha", alpha_loss)
        return {"actor_loss": actor_loss.item(), "alpha_loss": alpha_loss.item(), "entropy": -log_prob.mean().item()}

    @torch.no_grad()
    def critic_target_q(self, reward: Tensor, discount: Tensor, next_obs: Tensor) -> Tensor:
        """Soft Bellman target ``(B,)`` from the target networks; ``discount`` is the factor on the
        bootstrapped value (gamma, or 0 after a terminal transition: the reward alone).

        ``next_obs`` holds K views of the B next observations stacked view-major ``(K*B, C, H, W)``;
        the target averages the K views' soft values (DrQ's K)."""
        if next_obs.shape[0] % reward.shape[0]:
            raise ValueError(f"next_obs holds {next_obs.shape[0]} frames, not a whole number of views of "
                             f"{reward.shape[0]} transitions")
        next_action, next_log_prob = self.actor(self.encoder(next_obs), sample=True)
        target_q1, target_q2 = self.critic_target(self.encoder_target(next_obs), next_action)
        target_v = torch.min(target_q1, target_q2) - self.alpha * next_log_prob
        return reward + discount * target_v.view(-1, reward.shape[0]).mean(0)

    def state_tensors(self) -> dict[str, torch.Tensor]:
        """Weights (``model.*``) and optimizer states (``optim.<name>.*``) as one flat dict."""
        return state_tensors(self, self.optimizers)

    def load_state_tensors(self, tensors: dict[str, torch.Tensor]) -> None:
        """Inverse of :meth:`state_tensors`; optimizer states are optional (weights only for acting).

        Checkpoints that predate the update count were trained with periods of 1, which the count
        does not affect: they load with a count of 0."""
        tensors = {"model.updates": torch.zeros((), dtype=torch.long), **tensors}
        load_state_tensors(self, self.optimizers, tensors, "DrQ")

    def _step(self, name: str, loss: Tensor) -> None:
        optimizer_step(self.optimizers[name], loss)

    def _soft_update(self) -> None:
        soft_update(self.encoder, self.encoder_target, self.config.tau)
        soft_update(self.critic, self.critic_target, self.config.tau)

"""Ensemble disagreement (Plan2Explore, Sekar et al. 2020): novelty as what K forward models disagree on.

K small MLPs each predict the next observation's features from the current features and
action. Where the replay holds many such transitions they all learn the same answer and
their predictions agree; on transitions they have rarely seen, their independent random
initialisations still show, so the variance across members (averaged over feature dims)
is an exploration bonus that fades with familiarity. Unlike RND's prediction error it is
an epistemic signal: transitions that stay noisy however often they are seen (aleatoric
noise) do not keep paying, since every member learns the same conditional mean.
Sekar et al. use K = 10 one-step models; DreamerV3 and VIPER's agent (viper_rl) use 8;
the default here is 5, which already disagrees clearly on novel transitions at half the cost.
Members start from He initialisations, so at first they disagree about as much as the
whitened targets vary (a bonus near 1): the bonus reads as the share of the features'
variance the ensemble is still unsure of, on the unit scale that
:class:`~agents.exploration.PercentileScale` leaves as it is (it never amplifies a range below 1).

Features: state vectors as they are; frames through a fixed random projection (per frame
of the stack, ``projection_dim`` dims each). A fixed projection keeps the prediction target
stationary: the agent's encoder drifts as its critic trains, so on its features a familiar
transition would look novel again and the bonus would measure encoder drift, not novelty.
Random projections preserve the distances between frames (Johnson-Lindenstrauss), the
projection is the same for DrQ and DrQ-v2, and it trains nothing of the agent. Either
kind is whitened by running per-dim statistics and clipped to [-5, 5], as RND does.
The input is the whole observation stack (velocities are visible) and the target the next
observation's newest frame (pixels) or the next state vector. In DrQ-v2's n-step batches the
next observation is the one n steps on (the critic's bootstrap); the members then learn the
mean outcome of the policy's following actions, and still agree where data is plentiful.

The K members are stacked into batched weights (one matmul per layer for all members), and
one Adam steps them: Adam is elementwise and the members' losses are summed, so this is
exactly K independently initialised MLPs with an optimizer each, in a fraction of the calls.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from agents.rnd import RunningMeanStd

_PROJECTION_SEED = 0  # the projection is a fixed feature map, the same for every run


@dataclass(frozen=True)
class DisagreementConfig:
    """Ensemble size and widths; ``subset_fraction < 1`` trains each member on its own random subset of every
    batch (Bernoulli masks, as bootstrapped DQN); 1 trains all on the whole batch, as DreamerV3 does."""

    members: int = 5
    hidden_dim: int = 128  # 2.7 ms per update of 5 members on a 128-batch of states on one CPU thread (256: 8.8)
    lr: float = 3e-4
    projection_dim: int = 64  # features per frame (pixels only)
    subset_fraction: float = 1.0
    obs_clip: float = 5.0

    def __post_init__(self) -> None:
        if self.members < 2:
            raise ValueError(f"an ensemble needs at least 2 members to disagree, got members={self.members}")
        if min(self.hidden_dim, self.projection_dim) < 1 or self.lr <= 0 or self.obs_clip <= 0:
            raise ValueError("hidden_dim and projection_dim must be >= 1, lr and obs_clip > 0")
        if not 0.0 < self.subset_fraction <= 1.0:
            raise ValueError(f"subset_fraction must be in (0, 1], got {self.subset_fraction}")


class EnsembleLinear(nn.Module):
    """K independent linear layers in one batched matmul: ``(B, in)`` or ``(K, B, in)`` -> ``(K, B, out)``."""

    def __init__(self, members: int, in_dim: int, out_dim: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(members, in_dim, out_dim) * math.sqrt(2 / in_dim))  # He, per member
        self.bias = nn.Parameter(torch.zeros(members, 1, out_dim))

    def forward(self, x: Tensor) -> Tensor:
        return x @ self.weight + self.bias


class Disagreement(nn.Module):
    """Exploration bonus for ``(obs, action)``: uint8 frame stacks ``(B, 3*S, H, W)`` or float states ``(B, D)``,
    actions ``(B, A)``; ``update`` trains the ensemble to predict ``next_obs``."""

    def __init__(
        self, obs_shape: tuple[int, ...], action_dim: int, config: DisagreementConfig = DisagreementConfig()
    ) -> None:
        super().__init__()
        obs_shape = tuple(int(d) for d in obs_shape)
        self.pixels = len(obs_shape) == 3
        if not ((self.pixels and obs_shape[0] % 3 == 0) or len(obs_shape) == 1):
            raise ValueError(f"obs_shape must be (3*frames, H, W) pixels or (D,) states, got {obs_shape}")
        self.config = config
        self.obs_shape = obs_shape
        self.action_dim = action_dim
        if self.pixels:
            frame_dim = 3 * obs_shape[1] * obs_shape[2]
            generator = torch.Generator().manual_seed(_PROJECTION_SEED)
            projection = torch.randn(frame_dim, config.projection_dim, generator=generator) / math.sqrt(frame_dim)
            self.register_buffer("projection", projection / 255, persistent=False)  # rebuilt, not saved
            frames, feature_dim = obs_shape[0] // 3, config.projection_dim
        else:
            frames, feature_dim = 1, obs_shape[0]
        self.feature_stats = RunningMeanStd((feature_dim,))
        k, hidden = config.members, config.hidden_dim
        self.ensemble = nn.Sequential(
            EnsembleLinear(k, frames * feature_dim + action_dim, hidden), nn.ReLU(),
            EnsembleLinear(k, hidden, hidden), nn.ReLU(),
            EnsembleLinear(k, hidden, feature_dim),
        )
        self.optimizer = torch.optim.Adam(self.ensemble.parameters(), lr=config.lr)

    def bonus(self, obs: Tensor, action: Tensor) -> Tensor:
        """The members' disagreement ``(B,)``: variance of their predictions, averaged over feature dims."""
        with torch.no_grad():
            return self._predict(self._embed(obs, "obs"), self._check_action(action, obs)).var(0, unbiased=False).mean(-1)

    def update(self, obs: Tensor, action: Tensor, next_obs: Tensor) -> tuple[Tensor, dict[str, float]]:
        """Update the feature statistics, take one step of every member towards ``next_obs``'s features, and
        return the disagreement on ``(obs, action)`` from that same forward pass (before the step) with metrics."""
        action = self._check_action(action, obs)
        inputs = self._embed(obs, "obs")
        target = self._embed(next_obs[:, -3:] if self.pixels else next_obs, "next_obs", stack=False)
        if target.shape[0] != obs.shape[0]:
            raise ValueError(f"next_obs has a batch of {target.shape[0]}, obs of {obs.shape[0]}")
        self.feature_stats.update(torch.cat([inputs.flatten(0, 1), target[:, 0]]))
        predictions = self._predict(inputs, action)
        error = (predictions - self._normalise(target[:, 0])).pow(2).mean(-1)  # (K, B)
        if self.config.subset_fraction < 1:
            mask = torch.rand_like(error) < self.config.subset_fraction
            per_member = (error * mask).sum(1) / mask.sum(1).clamp(min=1)
        else:
            per_member = error.mean(1)
        loss = per_member.sum()
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        bonus = predictions.detach().var(0, unbiased=False).mean(-1)
        return bonus, {"disagreement_loss": per_member.mean().item()}

    def _predict(self, inputs: Tensor, action: Tensor) -> Tensor:
        """Every member's prediction ``(K, B, feature_dim)`` from raw features ``(B, N, feature_dim)``."""
        return self.ensemble(torch.cat([self._normalise(inputs).flatten(1), action], dim=-1))

    def _normalise(self, features: Tensor) -> Tensor:
        clip = self.config.obs_clip
        return ((features - self.feature_stats.mean) / self.feature_stats.std).clamp(-clip, clip)

    def _embed(self, obs: Tensor, name: str, stack: bool = True) -> Tensor:
        """Raw features ``(B, N, feature_dim)``: N projected frames, or the state vector as one."""
        shape = self.obs_shape if stack or not self.pixels else (3, *self.obs_shape[1:])
        ok_dtype = obs.dtype == torch.uint8 if self.pixels else obs.dtype.is_floating_point
        if obs.dim() != len(shape) + 1 or tuple(obs.shape[1:]) != shape or not ok_dtype:
            kind = "uint8" if self.pixels else "float"
            raise ValueError(f"{name} must be {kind} (B, {', '.join(map(str, shape))}), got {obs.dtype} {tuple(obs.shape)}")
        if not self.pixels:
            return obs.float()[:, None]
        return obs.reshape(obs.shape[0], -1, self.projection.shape[0]).float() @ self.projection

    def _check_action(self, action: Tensor, obs: Tensor) -> Tensor:
        if tuple(action.shape) != (obs.shape[0], self.action_dim) or not action.dtype.is_floating_point:
            raise ValueError(f"action must be float ({obs.shape[0]}, {self.action_dim}), got {action.dtype} "
                             f"{tuple(action.shape)}")
        return action.float()

"""The reward an agent trains on: the batch's reward plus weighted exploration bonuses, one mechanism for all.

``reward_weight * r + rnd_weight * b_rnd + disagreement_weight * b_disagreement``, where
``r`` is the replay's reward (VIPER's or the env's), ``b_rnd`` RND's bonus on the next
observation (:mod:`agents.rnd`: the newest frame of a stack, or the state vector) and
``b_disagreement`` the ensemble's disagreement on the transition (:mod:`agents.disagreement`,
pixels or states); a zero weight leaves that bonus out.
With the disagreement bonus on, each term is first divided by its own
:class:`PercentileScale`, as VIPER's DreamerV3 agent weighs its density and disagreement
rewards (``prior_rewards: {density: 1, disag: 1}``, each return normalised by its 5th-95th
percentile range), so equal weights mean equal say whatever the terms' units. Without
it the terms add as they are (RND divides its bonus by its own running scale), as before.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from agents.disagreement import Disagreement, DisagreementConfig
from agents.rnd import RND


def check_exploration_config(config: Any) -> None:
    """The exploration fields an agent config shares: ``reward_weight``, ``rnd_weight``,
    ``disagreement_weight`` (all >= 0) and ``disagreement_members`` (>= 2)."""
    for name in ("reward_weight", "rnd_weight", "disagreement_weight"):
        if getattr(config, name) < 0:
            raise ValueError(f"{name} must be >= 0, got {getattr(config, name)}")
    if config.disagreement_members < 2:
        raise ValueError(f"an ensemble needs at least 2 members to disagree, got disagreement_members="
                         f"{config.disagreement_members}")


class PercentileScale(nn.Module):
    """A reward's scale ``max(1, P95 - P05)``, the percentiles tracked by EMAs over batches (DreamerV3).

    DreamerV3 divides returns by this range (``retnorm``: decay 0.99, percentiles 5 and 95,
    floor 1): large rewards are brought to unit range and small ones are never amplified, so
    a bonus that fades with familiarity keeps fading. The model-free agents here apply it to
    each reward term instead of to returns. The EMAs are debiased (DreamerV3's ``debias``
    option): they start at zero and are divided by ``1 - decay**batches``, so the first batch
    already gives its own range rather than a hundredth of it.
    """

    def __init__(self, decay: float = 0.99, low: float = 0.05, high: float = 0.95, floor: float = 1.0) -> None:
        super().__init__()
        self.decay, self.floor = decay, floor
        self.register_buffer("quantiles", torch.tensor([low, high]), persistent=False)
        self.register_buffer("low", torch.zeros(()))
        self.register_buffer("high", torch.zeros(()))
        self.register_buffer("weight", torch.zeros(()))  # 1 - decay**batches: the debiasing divisor

    def forward(self, reward: Tensor) -> Tensor:
        """Update the percentiles with ``reward`` (a batch) and return the scale (a 0-d tensor)."""
        with torch.no_grad():
            low, high = torch.quantile(reward.detach().float(), self.quantiles)
            for ema, value in ((self.low, low), (self.high, high), (self.weight, torch.ones_like(low))):
                ema.mul_(self.decay).add_(value, alpha=1 - self.decay)
        return self.scale

    @property
    def scale(self) -> Tensor:
        if self.weight == 0:
            return torch.ones_like(self.weight)
        return ((self.high - self.low) / self.weight).clamp(min=self.floor)


class RewardMix(nn.Module):
    """Weighted reward terms, each over its own :class:`PercentileScale` when ``normalise``."""

    def __init__(self, weights: dict[str, float], normalise: bool) -> None:
        super().__init__()
        self.weights = dict(weights)
        self.scales = nn.ModuleDict({name: PercentileScale() for name in weights}) if normalise else None

    def forward(self, terms: dict[str, Tensor]) -> tuple[Tensor, dict[str, float]]:
        """The mixed reward ``(B,)`` with each term's batch mean (``reward_<name>``) and scale for logging."""
        if set(terms) != set(self.weights):
            raise ValueError(f"reward terms {sorted(terms)} do not match the weights {sorted(self.weights)}")
        metrics: dict[str, float] = {}
        total = torch.zeros_like(terms["env"])
        for name, value in terms.items():
            if value.shape != total.shape:
                raise ValueError(f"reward term {name!r} has shape {tuple(value.shape)}, expected {tuple(total.shape)}")
            metrics[f"reward_{name}"] = value.mean().item()
            if self.scales is not None:
                scale = self.scales[name](value)
                metrics[f"reward_{name}_scale"] = scale.item()
                value = value / scale
            total = total + self.weights[name] * value
        return total, metrics


def exploration_modules(
    config: Any, obs_shape: tuple[int, ...], action_dim: int
) -> tuple[RND | None, Disagreement | None, RewardMix]:
    """The bonuses an agent config asks for (None where its weight is 0) and the mix of them with the reward.

    RND scores the newest frame of each stack, or the state vector; disagreement takes frames or states.
    """
    pixels = len(obs_shape) == 3
    rnd = RND((3, *obs_shape[1:]) if pixels else obs_shape) if config.rnd_weight > 0 else None
    disagreement = None
    if config.disagreement_weight > 0:
        disagreement = Disagreement(obs_shape, action_dim, DisagreementConfig(members=config.disagreement_members))
    weights = {"env": config.reward_weight}
    if rnd is not None:
        weights["rnd"] = config.rnd_weight
    if disagreement is not None:
        weights["disagreement"] = config.disagreement_weight
    return rnd, disagreement, RewardMix(weights, normalise=disagreement is not None)


def exploration_optimizers(rnd: RND | None, disagreement: Disagreement | None) -> dict[str, torch.optim.Optimizer]:
    """The bonuses' optimizers by the names an agent's checkpoint stores them under."""
    optimizers = {}
    if rnd is not None:
        optimizers["rnd"] = rnd.optimizer
    if disagreement is not None:
        optimizers["disagreement"] = disagreement.optimizer
    return optimizers


def exploration_reward(
    tensors: dict[str, Tensor], mix: RewardMix, rnd: RND | None = None, disagreement: Disagreement | None = None
) -> tuple[Tensor, dict[str, float]]:
    """The reward to train on for a batch (:func:`agents.common.batch_tensors`), training each bonus on it;
    with each term's mean and the bonuses' own metrics for logging."""
    terms = {"env": tensors["reward"]}
    metrics: dict[str, float] = {}
    if rnd is not None:
        terms["rnd"], rnd_metrics = rnd.update(tensors["next_obs"][:, -3:] if rnd.pixels else tensors["next_obs"])
        metrics.update(rnd_metrics)
    if disagreement is not None:
        terms["disagreement"], disagreement_metrics = disagreement.update(
            tensors["obs"], tensors["action"], tensors["next_obs"]
        )
        metrics.update(disagreement_metrics)
    reward, mix_metrics = mix(terms)
    return reward, {**metrics, **mix_metrics}

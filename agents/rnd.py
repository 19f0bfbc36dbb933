"""Random Network Distillation (Burda et al. 2018): novelty as the error of predicting a random net.

A frozen, randomly initialised target network embeds observations; a predictor is
trained to match it on the states the agent visits. States seen often are predicted
well, so the squared error is an exploration bonus that fades with familiarity.
Observations are frames (the paper's convolutions) or state vectors (the same nets with
fully connected layers in place of the convolutions). As in the paper, observations are
whitened by running per-pixel (per-dimension) statistics (and clipped to [-5, 5]) and the
bonus is divided by a running scale so it stays comparable to the task reward. That scale
is the root mean square of all bonuses seen (their standard deviation about zero): the
spread about the mean alone can be tiny next to the mean, which would turn the bonus into
a large constant.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn


@dataclass(frozen=True)
class RNDConfig:
    """VIPER's RND: CNN 32-64-64, predictor MLP 512x512, lr 3e-4."""

    channels: tuple[int, int, int] = (32, 64, 64)
    hidden_dim: int = 512
    embed_dim: int = 512
    lr: float = 3e-4
    obs_clip: float = 5.0


class RunningMeanStd(nn.Module):
    """Mean and variance over every sample seen (Chan et al.'s parallel update), as buffers."""

    def __init__(self, shape: tuple[int, ...]) -> None:
        super().__init__()
        self.register_buffer("mean", torch.zeros(shape))
        self.register_buffer("var", torch.ones(shape))
        self.register_buffer("count", torch.zeros((), dtype=torch.float64))

    def update(self, x: Tensor) -> None:
        n = x.shape[0]
        flat = x.detach().float().reshape(n, -1)
        batch_mean = flat.mean(0)
        batch_var = (flat - batch_mean).pow_(2).mean(0)  # much faster than torch.var_mean over dim 0 on CPU
        batch_mean, batch_var = batch_mean.view_as(self.mean), batch_var.view_as(self.var)
        total = self.count + n
        old_weight, new_weight = float(self.count / total), n / float(total)
        delta = batch_mean - self.mean
        self.var.mul_(old_weight).add_(batch_var, alpha=new_weight).add_(delta.pow(2), alpha=old_weight * new_weight)
        self.mean.add_(delta, alpha=new_weight)
        self.count.copy_(total)

    @property
    def std(self) -> Tensor:
        return (self.var + 1e-8).sqrt()

    @property
    def rms(self) -> Tensor:
        return (self.var + self.mean.pow(2) + 1e-8).sqrt()


def _conv_net(in_channels: int, channels: tuple[int, int, int]) -> nn.Sequential:
    """Burda et al.'s convolutions: 8x8 stride 4, 4x4 stride 2, 3x3 stride 1, leaky ReLU."""
    c1, c2, c3 = channels
    return nn.Sequential(
        nn.Conv2d(in_channels, c1, 8, stride=4), nn.LeakyReLU(),
        nn.Conv2d(c1, c2, 4, stride=2), nn.LeakyReLU(),
        nn.Conv2d(c2, c3, 3, stride=1), nn.LeakyReLU(),
        nn.Flatten(),
    )


def _state_net(state_dim: int, widths: tuple[int, int, int]) -> nn.Sequential:
    """The convolutions' stand-in for state vectors: three leaky-ReLU layers of the same widths."""
    layers: list[nn.Module] = []
    for width in widths:
        layers += [nn.Linear(state_dim, width), nn.LeakyReLU()]
        state_dim = width
    return nn.Sequential(*layers)


class RND(nn.Module):
    """Exploration bonus for uint8 frames ``(B, C, H, W)`` or float state vectors ``(B, D)``, as ``obs_shape``
    says; ``update`` trains the predictor."""

    def __init__(self, obs_shape: tuple[int, ...], config: RNDConfig = RNDConfig()) -> None:
        super().__init__()
        self.obs_shape = tuple(int(d) for d in obs_shape)
        self.pixels = len(self.obs_shape) == 3
        if self.pixels and min(self.obs_shape[1:]) < 36:
            raise ValueError(f"RND's convolutions need frames of at least 36x36 pixels, got "
                             f"{self.obs_shape[1]}x{self.obs_shape[2]}")
        if not self.pixels and len(self.obs_shape) != 1:
            raise ValueError(f"RND takes frames (C, H, W) or state vectors (D,), got obs_shape {obs_shape}")
        self.config = config

        def features() -> nn.Sequential:
            if self.pixels:
                return _conv_net(self.obs_shape[0], config.channels)
            return _state_net(self.obs_shape[0], config.channels)

        self.obs_stats = RunningMeanStd(self.obs_shape)
        self.bonus_stats = RunningMeanStd(())
        target_features = features()
        with torch.no_grad():
            flat = target_features(torch.zeros(1, *self.obs_shape)).shape[1]
        self.target = nn.Sequential(target_features, nn.Linear(flat, config.embed_dim))
        self.target.requires_grad_(False)
        self.predictor = nn.Sequential(
            features(),
            nn.Linear(flat, config.hidden_dim), nn.ReLU(),
            nn.Linear(config.hidden_dim, config.hidden_dim), nn.ReLU(),
            nn.Linear(config.hidden_dim, config.embed_dim),
        )
        self.optimizer = torch.optim.Adam(self.predictor.parameters(), lr=config.lr)

    def bonus(self, obs: Tensor) -> Tensor:
        """Normalised bonus per sample ``(B,)``: squared prediction error over its running scale."""
        with torch.no_grad():
            return self._error(obs) / self.bonus_stats.rms

    def update(self, obs: Tensor) -> tuple[Tensor, dict[str, float]]:
        """Update the running statistics with ``obs``, take one predictor step on it, and return
        ``obs``'s normalised bonus from that same forward pass (before the step) with metrics."""
        self.obs_stats.update(self._check(obs))
        error = self._error(obs)
        self.bonus_stats.update(error)
        loss = error.mean()
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        bonus = error.detach() / self.bonus_stats.rms
        return bonus, {"rnd_loss": loss.item(), "rnd_bonus_scale": float(self.bonus_stats.rms)}

    def _error(self, obs: Tensor) -> Tensor:
        x = self._check(obs)
        x = (x.contiguous(memory_format=torch.channels_last) if self.pixels else x).float()
        x = x.sub_(self.obs_stats.mean).div_(self.obs_stats.std).clamp_(-self.config.obs_clip, self.config.obs_clip)
        return (self.predictor(x) - self.target(x)).pow(2).mean(1)

    def _check(self, obs: Tensor) -> Tensor:
        right_dtype = obs.dtype == torch.uint8 if self.pixels else obs.dtype.is_floating_point
        if not right_dtype or obs.dim() != len(self.obs_shape) + 1 or tuple(obs.shape[1:]) != self.obs_shape:
            kind = "uint8" if self.pixels else "float"
            raise ValueError(
                f"RND expects {kind} observations (B, {', '.join(map(str, self.obs_shape))}), "
                f"got {obs.dtype} {tuple(obs.shape)}"
            )
        return obs

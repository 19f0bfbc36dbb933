"""A causal video tokenizer that compresses time, in the manner of MAGVIT-v2.

MAGVIT-v2 (Yu et al., 2024, "Language Model Beats Diffusion: Tokenizer is Key to Visual Generation",
arXiv:2310.05737) encodes a video with causal 3D convolutions: each output sees only the frames up to
its own, so the first frame is encoded alone (an image tokenizer for free) and every later code step
stands for ``time_downsample`` frames. A clip of ``1 + k n`` frames becomes ``1 + n`` grids of codes:
``k`` times fewer tokens per second of video than a per-frame tokenizer on the same code grid, so the
same transformer window spans ``k`` times more time.

Here the convolutions pad time on the past side only (with copies of the first frame), halve time with
stride-2 causal convolutions in the first ``log2(k)`` resolution stages of the encoder, and double it in
the decoder by turning channels into time steps (dropping the step before the first frame). Group norms
normalise each frame on its own, so no statistic reaches back from the future: encoding a clip's first
``1 + k m`` frames gives exactly the first ``1 + m`` code steps of encoding the whole clip. The codes
are FSQ or LFQ (lookup-free, as MAGVIT-v2) or VQ, from :mod:`worldmodel.quantizers`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor, nn

from worldmodel.tokenizer import (
    DEFAULT_QUANTIZER_KWARGS, ConvTokenizer, ConvTokenizerConfig, TokenizerOutput, _check_batch_size, _eval_mode,
    _to_tensor,
)

CHECKPOINT_KIND = "causal_video_tokenizer"


@dataclass
class VideoTokenizerConfig(ConvTokenizerConfig):
    """Architecture of a :class:`CausalVideoTokenizer`; validated on construction.

    Space is halved ``len(ch_mult) - 1`` times (as :class:`~worldmodel.tokenizer.TokenizerConfig`'s), time
    ``log2(time_downsample)`` times, in the first stages.
    """

    image_size: int = 64
    base_channels: int = 32
    ch_mult: tuple[int, ...] = (1, 2, 2, 2)
    time_downsample: int = 4
    latent_dim: int = 5
    quantizer: str = "fsq"
    quantizer_kwargs: dict[str, Any] = field(default_factory=dict)  # FSQ's default levels: 7, 5, 5, 5, 5

    def __post_init__(self) -> None:
        if not isinstance(self.time_downsample, int) or self.time_downsample <= 0:
            raise ValueError(f"time_downsample must be a positive int, got {self.time_downsample!r}")
        if self.time_downsample & (self.time_downsample - 1):
            raise ValueError(f"time_downsample must be a power of 2, got {self.time_downsample}")
        defaults = {"levels": [7, 5, 5, 5, 5]} if self.quantizer == "fsq" else DEFAULT_QUANTIZER_KWARGS.get(
            self.quantizer, {})
        self._check_cnn_and_quantizer(defaults)
        if self.time_halvings > len(self.ch_mult) - 1:
            raise ValueError(f"time_downsample {self.time_downsample} needs {self.time_halvings} resolution stages, "
                             f"ch_mult {self.ch_mult} has {len(self.ch_mult) - 1}")

    @property
    def time_halvings(self) -> int:
        return self.time_downsample.bit_length() - 1


class CausalConv3d(nn.Module):
    """A 3x3x3 convolution over ``(B, C, T, H, W)`` that sees only the present and past frames: time is padded
    with two copies of the first frame in front; ``time_stride`` 2 maps ``1 + 2n`` frames to ``1 + n``."""

    def __init__(self, in_channels: int, out_channels: int, space_stride: int = 1, time_stride: int = 1) -> None:
        super().__init__()
        self.conv = nn.Conv3d(in_channels, out_channels, 3, stride=(time_stride, space_stride, space_stride),
                              padding=(0, 1, 1))

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(torch.cat([x[:, :, :1], x[:, :, :1], x], dim=2))


class FrameNorm(nn.GroupNorm):
    """Group norm of each frame on its own: statistics over channels and space, never over time."""

    def forward(self, x: Tensor) -> Tensor:
        frames = x.shape[2]
        y = super().forward(rearrange(x, "b c t h w -> (b t) c h w"))
        return rearrange(y, "(b t) c h w -> b c t h w", t=frames)


def _norm(channels: int) -> FrameNorm:
    return FrameNorm(math.gcd(32, channels), channels, eps=1e-6)


class CausalResBlock(nn.Module):
    """Pre-activation residual block of causal convolutions; it starts as the identity."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.block = nn.Sequential(
            _norm(in_channels), nn.SiLU(), CausalConv3d(in_channels, out_channels),
            _norm(out_channels), nn.SiLU(), CausalConv3d(out_channels, out_channels),
        )
        nn.init.zeros_(self.block[-1].conv.weight)
        nn.init.zeros_(self.block[-1].conv.bias)
        self.skip = nn.Identity() if in_channels == out_channels else nn.Conv3d(in_channels, out_channels, 1)

    def forward(self, x: Tensor) -> Tensor:
        return self.skip(x) + self.block(x)


class Upsample(nn.Module):
    """Space x2 (nearest, then a causal conv) and, with ``time``, time x2: the conv gives two frames' channels
    per step, and the step before the first frame is dropped (``1 + n`` steps -> ``1 + 2n`` frames)."""

    def __init__(self, in_channels: int, out_channels: int, time: bool) -> None:
        super().__init__()
        self.time = time
        self.conv = CausalConv3d(in_channels, out_channels * (2 if time else 1))

    def forward(self, x: Tensor) -> Tensor:
        x = self.conv(F.interpolate(x, scale_factor=(1.0, 2.0, 2.0), mode="nearest"))
        if not self.time:
            return x
        return rearrange(x, "b (c two) t h w -> b c (t two) h w", two=2)[:, :, 1:]


class Encoder(nn.Module):
    """Video ``(B, 3, 1 + k n, H, W)`` -> latents ``(B, latent_dim, 1 + n, h, w)``."""

    def __init__(self, config: VideoTokenizerConfig) -> None:
        super().__init__()
        widths = [config.base_channels * m for m in config.ch_mult]
        layers: list[nn.Module] = [CausalConv3d(3, widths[0])]
        channels = widths[0]
        for level, width in enumerate(widths):
            layers.append(CausalResBlock(channels, width))
            channels = width
            if level < len(widths) - 1:
                layers.append(CausalConv3d(channels, channels, space_stride=2,
                                           time_stride=2 if level < config.time_halvings else 1))
        layers += [CausalResBlock(channels, channels), _norm(channels), nn.SiLU(),
                   nn.Conv3d(channels, config.latent_dim, 1)]
        self.layers = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        return self.layers(x)


class Decoder(nn.Module):
    """Latents ``(B, latent_dim, 1 + n, h, w)`` -> video ``(B, 3, 1 + k n, H, W)``; mirrors the encoder."""

    def __init__(self, config: VideoTokenizerConfig) -> None:
        super().__init__()
        widths = [config.base_channels * m for m in config.ch_mult]
        channels = widths[-1]
        layers: list[nn.Module] = [CausalConv3d(config.latent_dim, channels), CausalResBlock(channels, channels)]
        for level in reversed(range(len(widths))):
            layers.append(CausalResBlock(channels, widths[level]))
            channels = widths[level]
            if level > 0:
                layers.append(Upsample(channels, widths[level - 1], time=level - 1 < config.time_halvings))
                channels = widths[level - 1]
        layers += [_norm(channels), nn.SiLU(), CausalConv3d(channels, 3)]
        self.layers = nn.Sequential(*layers)

    def forward(self, z: Tensor) -> Tensor:
        return self.layers(z)


class CausalVideoTokenizer(ConvTokenizer):
    """uint8 clips ``(..., 1 + k n, H, W, 3)`` <-> codes ``(..., 1 + n, h, w)``, ``k = time_downsample``.

    Training uses :meth:`forward` on float videos in ``[-1, 1]``; :meth:`encode` and :meth:`decode` take and
    give uint8 clips with any leading dims, in eval mode, without gradients, on the module's device.
    """

    kind = CHECKPOINT_KIND
    config_class = VideoTokenizerConfig

    def __init__(self, config: VideoTokenizerConfig) -> None:
        super().__init__(config, Encoder, Decoder)

    @property
    def frames_per_code_step(self) -> int:
        return self.config.time_downsample

    def code_steps(self, frames: int) -> int:
        """Code steps of a clip of ``frames`` frames; ValueError unless it is ``1 + k n`` frames."""
        k = self.config.time_downsample
        if frames < 1 or (frames - 1) % k:
            raise ValueError(f"a clip must hold 1 + {k} n frames (the first frame alone, then groups of {k}), "
                             f"got {frames}")
        return 1 + (frames - 1) // k

    def _quantize(self, x: Tensor) -> tuple[Tensor, Any]:
        """Latents of float videos ``(B, 3, T, H, W)``, quantized frame step by frame step."""
        latents = self.encoder(x)
        steps = latents.shape[2]
        quant = self.quantizer(rearrange(latents, "b d t h w -> (b t) d h w"))
        return rearrange(quant.quantized, "(b t) d h w -> b d t h w", t=steps), quant

    def forward(self, x: Tensor) -> TokenizerOutput:
        """Reconstruct float videos ``x (B, 3, 1 + k n, H, W)`` in ``[-1, 1]``; ``indices`` are ``(B, 1 + n, h, w)``."""
        size = self.config.image_size
        if x.ndim != 5 or x.shape[1] != 3 or tuple(x.shape[3:]) != (size, size) or not x.is_floating_point():
            raise ValueError(f"CausalVideoTokenizer.forward expects float videos of shape (B, 3, T, {size}, {size}), "
                             f"got {tuple(x.shape)} {x.dtype}")
        steps = self.code_steps(x.shape[2])
        quantized, quant = self._quantize(x)
        recon = self.decoder(quantized)
        recon_mse = F.mse_loss(recon, x)
        metrics = {"recon_mse": recon_mse.detach(), "quantizer_loss": quant.loss.detach(),
                   **{k: v.detach() for k, v in quant.metrics.items()}}
        indices = quant.indices.reshape(x.shape[0], steps, *self.code_shape)
        return TokenizerOutput(recon=recon, indices=indices, loss=recon_mse + quant.loss, metrics=metrics)

    @torch.no_grad()
    def encode(self, frames: np.ndarray | Tensor, batch_size: int = 16) -> Tensor:
        """uint8 clips ``(..., 1 + k n, H, W, 3)`` -> int64 codes ``(..., 1 + n, h, w)``, ``batch_size`` clips at
        a time."""
        size = self.config.image_size
        _check_batch_size(batch_size)
        is_uint8 = isinstance(frames, (np.ndarray, Tensor)) and frames.dtype in (np.uint8, torch.uint8)
        if not is_uint8 or frames.ndim < 4 or tuple(frames.shape[-3:]) != (size, size, 3):
            raise ValueError(f"encode expects uint8 clips of shape (..., T, {size}, {size}, 3), got "
                             f"{tuple(getattr(frames, 'shape', ()))} {getattr(frames, 'dtype', type(frames).__name__)}")
        steps = self.code_steps(frames.shape[-4])
        lead = tuple(frames.shape[:-4])
        flat = frames.reshape(-1, *frames.shape[-4:])
        chunks = []
        with _eval_mode(self):
            for start in range(0, flat.shape[0], batch_size):
                clips = _to_tensor(flat[start : start + batch_size]).to(self.device)
                videos = rearrange(clips, "b t h w c -> b c t h w").float() / 127.5 - 1.0
                chunks.append(self._quantize(videos)[1].indices)
        codes = torch.cat(chunks) if chunks else torch.zeros(0, *self.code_shape, dtype=torch.long,
                                                             device=self.device)
        return codes.reshape(*lead, steps, *self.code_shape)

    @torch.no_grad()
    def decode(self, codes: np.ndarray | Tensor, batch_size: int = 16) -> Tensor:
        """Integer codes ``(..., 1 + n, h, w)`` -> uint8 clips ``(..., 1 + k n, H, W, 3)``."""
        _check_batch_size(batch_size)
        codes = self._checked_codes(codes, "decode", steps=True)
        steps, size = codes.shape[-3], self.config.image_size
        frames = 1 + (steps - 1) * self.config.time_downsample
        lead = tuple(codes.shape[:-3])
        flat = codes.reshape(-1, steps, *self.code_shape)
        chunks = []
        with _eval_mode(self):
            for start in range(0, flat.shape[0], batch_size):
                values = self.quantizer.codes_from_indices(flat[start : start + batch_size].to(self.device).long())
                videos = self.decoder(rearrange(values, "b t h w d -> b d t h w"))
                pixels = ((videos.clamp(-1.0, 1.0) + 1.0) * 127.5).round().to(torch.uint8)
                chunks.append(rearrange(pixels, "b c t h w -> b t h w c"))
        clips = torch.cat(chunks) if chunks else torch.zeros(0, frames, size, size, 3, dtype=torch.uint8,
                                                             device=self.device)
        return clips.reshape(*lead, frames, size, size, 3)

"""Tokenizers: the interface every tokenizer family implements, one loader, and the per-frame CNN tokenizer.

:class:`Tokenizer` is what the rest of the toolkit (the video model bundle, the token cache,
training, the imagination loop, reports) sees: ``encode`` uint8 frames to integer codes,
``decode`` codes back, the code grid and the vocabulary, ``save`` and ``load``. Every
checkpoint records its family as its ``kind``, and :func:`load_tokenizer` dispatches on it,
so a second family (e.g. a causal 3D video tokenizer that compresses time, with
``frames_per_code_step > 1``) is a new class plus one line in :data:`TOKENIZER_KINDS`.

``FrameTokenizer``, the per-frame family (a small VQ-GAN-style CNN around a pluggable
quantizer), maps uint8 frames ``(..., H, W, 3)`` to integer codes
``(..., h, w)`` and back. The encoder halves the resolution ``len(ch_mult) - 1``
times, so a 64x64 frame becomes 8x8 codes with ``ch_mult=(1, 2, 2, 2)`` (VIPER's
DMC setting) and 16x16 codes with ``ch_mult=(1, 2, 2)`` (Atari / 3D mazes).

It is built to train on a CPU: no attention, GroupNorm + SiLU residual blocks,
channels-last convolutions, and an upsampling path that changes channel count in
the same conv that doubles the resolution, so the full-resolution stage stays at
the narrowest width.
"""

from __future__ import annotations

import dataclasses
import importlib
import math
from abc import ABC, abstractmethod
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor, nn

from worldmodel.checkpoint import (
    CONFIG_FILE, CheckpointError, load_checkpoint, load_into_module, read_json, save_checkpoint,
)
from worldmodel.device import AUTO, resolve_device
from worldmodel.quantizers import QUANTIZERS, Quantizer, make_quantizer

CHECKPOINT_KIND = "frame_tokenizer"
# Every tokenizer family by the kind its checkpoints record, as "module:Class" so that a family is
# imported only when a checkpoint of its kind is loaded.
TOKENIZER_KINDS: dict[str, str] = {
    CHECKPOINT_KIND: "worldmodel.tokenizer:FrameTokenizer",
    "causal_video_tokenizer": "worldmodel.video_tokenizer:CausalVideoTokenizer",
}
LEGACY_TOKENIZER_KIND = CHECKPOINT_KIND  # of checkpoints and bundles written before kinds were recorded

# Defaults that a config's quantizer_kwargs override; 256 codes as in VIPER's DMC tokenizer.
DEFAULT_QUANTIZER_KWARGS: dict[str, dict[str, Any]] = {"vq": {"codebook_size": 256}, "fsq": {}, "lfq": {}}


class ConvTokenizerConfig:
    """What the CNN tokenizers' configs share (their dataclasses inherit it): the checks of the CNN and its
    quantizer, the code grid, and JSON."""

    image_size: int
    base_channels: int
    ch_mult: tuple[int, ...]
    latent_dim: int
    quantizer: str
    quantizer_kwargs: dict[str, Any]

    def _check_cnn_and_quantizer(self, default_kwargs: dict[str, Any]) -> None:
        """Raise ValueError naming a bad size, channel multiplier or quantizer setting; fill the quantizer's
        ``default_kwargs`` under those given, as JSON gives them back."""
        self.ch_mult = tuple(self.ch_mult)
        if self.quantizer not in QUANTIZERS:
            raise ValueError(f"unknown quantizer {self.quantizer!r}, expected one of {sorted(QUANTIZERS)}")
        sizes = {"image_size": self.image_size, "base_channels": self.base_channels, "latent_dim": self.latent_dim}
        for name, value in sizes.items():
            if not isinstance(value, int) or value <= 0:
                raise ValueError(f"{name} must be a positive int, got {value!r}")
        if not self.ch_mult or any(not isinstance(m, int) or m <= 0 for m in self.ch_mult):
            raise ValueError(f"ch_mult must be a non-empty sequence of positive ints, got {self.ch_mult!r}")
        factor = 2 ** (len(self.ch_mult) - 1)
        if self.image_size % factor:
            raise ValueError(
                f"image_size {self.image_size} is not divisible by 2**(len(ch_mult)-1) = {factor} "
                f"(ch_mult={self.ch_mult})"
            )
        kwargs = {**default_kwargs, **self.quantizer_kwargs}
        self.quantizer_kwargs = {k: list(v) if isinstance(v, tuple) else v for k, v in kwargs.items()}  # as in JSON
        make_quantizer(self.quantizer, self.latent_dim, self.quantizer_kwargs)  # raises on bad kwargs

    @property
    def code_size(self) -> int:
        """Side of the square code grid."""
        return self.image_size // 2 ** (len(self.ch_mult) - 1)

    def to_dict(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self), "ch_mult": list(self.ch_mult)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Any:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown {cls.__name__} keys {unknown}, expected a subset of {sorted(known)}")
        return cls(**data)


@dataclass
class TokenizerConfig(ConvTokenizerConfig):
    """Architecture of a :class:`FrameTokenizer`; validated on construction.

    ``quantizer_kwargs`` go to the quantizer class (see ``worldmodel.quantizers``);
    the latent dim is ``latent_dim`` and must not be repeated there. For ``"fsq"``
    ``latent_dim`` must equal ``len(levels)``; for ``"lfq"`` the vocabulary is
    ``2 ** latent_dim``.
    """

    image_size: int = 64
    base_channels: int = 64
    ch_mult: tuple[int, ...] = (1, 2, 2, 2)
    num_res_blocks: int = 1
    latent_dim: int = 64
    quantizer: str = "vq"
    quantizer_kwargs: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not isinstance(self.num_res_blocks, int) or self.num_res_blocks < 0:
            raise ValueError(f"num_res_blocks must be an int >= 0, got {self.num_res_blocks!r}")
        self._check_cnn_and_quantizer(DEFAULT_QUANTIZER_KWARGS.get(self.quantizer, {}))


@dataclass
class TokenizerOutput:
    recon: Tensor  # (B, 3, H, W) in [-1, 1] (not clamped)
    indices: Tensor  # (B, h, w) int64
    loss: Tensor  # reconstruction MSE + quantizer loss
    metrics: dict[str, Tensor]  # detached scalars


def _norm(channels: int) -> nn.GroupNorm:
    return nn.GroupNorm(math.gcd(32, channels), channels, eps=1e-6)


class ResBlock(nn.Module):
    """Pre-activation residual block; the last conv starts at zero so the block starts as identity."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.block = nn.Sequential(
            _norm(in_channels),
            nn.SiLU(),
            nn.Conv2d(in_channels, out_channels, 3, padding=1),
            _norm(out_channels),
            nn.SiLU(),
            nn.Conv2d(out_channels, out_channels, 3, padding=1),
        )
        nn.init.zeros_(self.block[-1].weight)
        nn.init.zeros_(self.block[-1].bias)
        self.skip = nn.Identity() if in_channels == out_channels else nn.Conv2d(in_channels, out_channels, 1)

    def forward(self, x: Tensor) -> Tensor:
        return self.skip(x) + self.block(x)


class Upsample(nn.Module):
    """Nearest-neighbour x2 followed by a 3x3 conv (avoids transposed-conv checkerboards)."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, 3, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))


class Encoder(nn.Module):
    """Image ``(B, 3, H, W)`` -> latents ``(B, latent_dim, h, w)``; strided-conv downsampling."""

    def __init__(self, config: TokenizerConfig) -> None:
        super().__init__()
        widths = [config.base_channels * m for m in config.ch_mult]
        layers: list[nn.Module] = [nn.Conv2d(3, widths[0], 3, padding=1)]
        channels = widths[0]
        for level, width in enumerate(widths):
            for _ in range(config.num_res_blocks):
                layers.append(ResBlock(channels, width))
                channels = width
            if level < len(widths) - 1:
                layers.append(nn.Conv2d(channels, channels, 3, stride=2, padding=1))
        layers += [
            ResBlock(channels, channels),
            _norm(channels),
            nn.SiLU(),
            nn.Conv2d(channels, config.latent_dim, 1),
        ]
        self.layers = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        return self.layers(x.contiguous(memory_format=torch.channels_last))  # ~2x faster convs on CPU


class Decoder(nn.Module):
    """Latents ``(B, latent_dim, h, w)`` -> image ``(B, 3, H, W)``; mirrors the encoder."""

    def __init__(self, config: TokenizerConfig) -> None:
        super().__init__()
        widths = [config.base_channels * m for m in config.ch_mult]
        channels = widths[-1]
        layers: list[nn.Module] = [nn.Conv2d(config.latent_dim, channels, 3, padding=1), ResBlock(channels, channels)]
        for level in reversed(range(len(widths))):
            for _ in range(config.num_res_blocks):
                layers.append(ResBlock(channels, widths[level]))
                channels = widths[level]
            if level > 0:
                layers.append(Upsample(channels, widths[level - 1]))
                channels = widths[level - 1]
        layers += [_norm(channels), nn.SiLU(), nn.Conv2d(channels, 3, 3, padding=1)]
        self.layers = nn.Sequential(*layers)

    def forward(self, z: Tensor) -> Tensor:
        return self.layers(z.contiguous(memory_format=torch.channels_last))


def frames_to_images(frames: Tensor) -> Tensor:
    """uint8 frames ``(B, H, W, 3)`` -> float images ``(B, 3, H, W)`` in ``[-1, 1]`` (``x / 127.5 - 1``)."""
    return rearrange(frames, "b h w c -> b c h w").float() / 127.5 - 1.0


def images_to_frames(images: Tensor) -> Tensor:
    """Inverse of :func:`frames_to_images`: clamp to ``[-1, 1]``, scale, round to uint8."""
    pixels = ((images.clamp(-1.0, 1.0) + 1.0) * 127.5).round().to(torch.uint8)
    return rearrange(pixels, "b c h w -> b h w c")


def _check_batch_size(batch_size: int) -> None:
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")


def _to_tensor(array: np.ndarray | Tensor) -> Tensor:
    """Zero-copy where possible; read-only arrays (memory maps) and negative-stride views are copied."""
    if isinstance(array, Tensor):
        return array
    shareable = array.flags.writeable and min(array.strides, default=0) >= 0
    return torch.from_numpy(array if shareable else np.array(array))


@contextmanager
def _eval_mode(module: nn.Module) -> Iterator[None]:
    """Run in eval mode (no quantizer EMA updates), then restore the previous mode. A module already in eval
    mode is left alone, sparing two walks over every submodule on each frame a streaming reward encodes."""
    if not module.training:
        yield
        return
    module.eval()
    try:
        yield
    finally:
        module.train()


class Tokenizer(nn.Module, ABC):
    """uint8 frames ``(..., T, H, W, 3)`` <-> integer codes ``(..., T / frames_per_code_step, h, w)``.

    A family sets :attr:`kind` (recorded in its checkpoints, listed in :data:`TOKENIZER_KINDS`)
    and implements the methods below; ``encode`` and ``decode`` run without gradients and
    return tensors on the module's device.
    """

    kind: ClassVar[str]

    @property
    @abstractmethod
    def vocab_size(self) -> int:
        """Number of distinct code values."""

    @property
    @abstractmethod
    def code_shape(self) -> tuple[int, int]:
        """Codes per code step, ``(h, w)``."""

    @property
    @abstractmethod
    def image_size(self) -> int:
        """Side of the square frames it takes and gives."""

    @property
    def frames_per_code_step(self) -> int:
        """Frames one ``(h, w)`` grid of codes stands for: 1 for per-frame tokenizers."""
        return 1

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    def code_vectors(self, codes: np.ndarray | Tensor) -> Tensor:
        """Integer codes ``(..., h, w)`` -> float ``(..., h, w, D)``: each code's vector before decoding, for
        consumers that read codes instead of pixels (an agent acting on codes skips the decoder)."""
        raise ValueError(f"the {self.kind} tokenizer gives no code vectors")

    @property
    def code_levels(self) -> tuple[int, ...]:
        """The levels whose product is the vocabulary, least significant first, where a code is a digit per
        latent channel (FSQ); empty otherwise. A video transformer can predict one digit per softmax
        (``VideoTransformerConfig.code_levels``)."""
        return ()

    @abstractmethod
    def config_dict(self) -> dict[str, Any]:
        """The family's architecture as JSON, as its checkpoint records it."""

    @abstractmethod
    def encode(self, frames: np.ndarray | Tensor, batch_size: int = 256) -> Tensor:
        """uint8 frames ``(..., H, W, 3)`` -> int64 codes ``(..., h, w)``, ``batch_size`` frames at a time."""

    @abstractmethod
    def decode(self, codes: np.ndarray | Tensor, batch_size: int = 256) -> Tensor:
        """Integer codes ``(..., h, w)`` -> uint8 frames ``(..., H, W, 3)``, ``batch_size`` code steps at a time."""

    @abstractmethod
    def save(self, directory: str | Path) -> None:
        """Write a checkpoint (safetensors + ``config.json`` with ``kind``) atomically."""

    @classmethod
    @abstractmethod
    def load(cls, directory: str | Path, map_location: str | torch.device = "cpu") -> Tokenizer:
        """Rebuild a tokenizer of this family from :meth:`save`."""


def checkpoint_kind(directory: str | Path) -> str:
    """The tokenizer family a checkpoint records (checkpoints that record none are frame tokenizers)."""
    return read_json(Path(directory) / CONFIG_FILE).get("kind", LEGACY_TOKENIZER_KIND)


def tokenizer_class(kind: str) -> type[Tokenizer]:
    """The tokenizer family of ``kind``; CheckpointError names the known kinds otherwise."""
    if kind not in TOKENIZER_KINDS:
        raise CheckpointError(f"unknown tokenizer kind {kind!r}; known kinds: {sorted(TOKENIZER_KINDS)}")
    module, name = TOKENIZER_KINDS[kind].split(":")
    return getattr(importlib.import_module(module), name)


def load_tokenizer(directory: str | Path, device: str | torch.device = AUTO) -> Tokenizer:
    """Load any tokenizer checkpoint onto ``device`` (default: CUDA when available), whatever its family (the
    ``kind`` it records)."""
    try:
        kind = checkpoint_kind(directory)
    except CheckpointError as err:
        raise CheckpointError(f"no tokenizer checkpoint at {directory}: {err}") from err
    return tokenizer_class(kind).load(directory, resolve_device(device))


class ConvTokenizer(Tokenizer):
    """What the CNN families share: an encoder, a quantizer and a decoder built from one config (which has
    ``image_size``, ``code_size``, the quantizer's settings, ``to_dict`` and ``from_dict``), saved and loaded as
    safetensors + JSON. A family sets :attr:`kind` and :attr:`config_class` and names its encoder and decoder."""

    config_class: ClassVar[type]

    def __init__(self, config: Any, encoder: type[nn.Module], decoder: type[nn.Module]) -> None:
        super().__init__()
        self.config = config
        # Built in this order, so a seeded initialisation draws the same weights as it always has.
        self.encoder = encoder(config)
        self.quantizer: Quantizer = make_quantizer(config.quantizer, config.latent_dim, config.quantizer_kwargs)
        self.decoder = decoder(config)

    @property
    def vocab_size(self) -> int:
        return self.quantizer.codebook_size

    @property
    def code_levels(self) -> tuple[int, ...]:
        return tuple(getattr(self.quantizer, "levels", ()))

    @property
    def code_shape(self) -> tuple[int, int]:
        return (self.config.code_size, self.config.code_size)

    @property
    def image_size(self) -> int:
        return self.config.image_size

    def config_dict(self) -> dict[str, Any]:
        return self.config.to_dict()

    def _checked_codes(self, codes: np.ndarray | Tensor, use: str, noun: str = "codes", steps: bool = False) -> Tensor:
        """``codes`` as a tensor; ValueError naming ``use`` unless they are integers of this vocabulary, shaped
        ``(..., h, w)`` (``(..., steps, h, w)`` with ``steps``)."""
        codes = torch.as_tensor(codes)
        if codes.is_floating_point() or codes.is_complex() or codes.dtype == torch.bool:
            raise ValueError(f"{use} expects integer {noun}, got {codes.dtype}")
        if codes.ndim < 2 + steps or tuple(codes.shape[-2:]) != self.code_shape:
            lead = "..., steps" if steps else "..."
            raise ValueError(f"{use} expects {noun} of shape ({lead}, {self.code_shape[0]}, {self.code_shape[1]}), "
                             f"got {tuple(codes.shape)}")
        if codes.numel() and (codes.min() < 0 or codes.max() >= self.vocab_size):
            raise ValueError(f"{use} expects {noun} in [0, {self.vocab_size}), got values in "
                             f"[{int(codes.min())}, {int(codes.max())}]")
        return codes

    @torch.no_grad()
    def code_vectors(self, codes: np.ndarray | Tensor) -> Tensor:
        """Integer codes ``(..., h, w)`` -> the quantizer's float vectors ``(..., h, w, latent_dim)`` (FSQ and
        LFQ: values in [-1, 1])."""
        return self.quantizer.codes_from_indices(self._checked_codes(codes, "code_vectors").to(self.device).long())

    def save(self, directory: str | Path) -> None:
        """Write ``model.safetensors`` + ``config.json`` (with the family's ``kind``) atomically."""
        save_checkpoint(directory, self.state_dict(), {"kind": self.kind, "config": self.config_dict()})

    @classmethod
    def load(cls, directory: str | Path, map_location: str | torch.device = "cpu") -> ConvTokenizer:
        """Rebuild a tokenizer from :meth:`save` (a checkpoint that records no kind is a frame tokenizer's, from
        before kinds were recorded); CheckpointError names any mismatch."""
        tensors, meta = load_checkpoint(directory)
        kind = meta.get("kind", LEGACY_TOKENIZER_KIND)
        if kind != cls.kind:
            raise CheckpointError(f"checkpoint {directory} is of kind {kind!r}, expected {cls.kind!r}")
        try:
            config = cls.config_class.from_dict(meta["config"])
        except (KeyError, TypeError, ValueError) as err:
            raise CheckpointError(f"checkpoint {directory} has an invalid {cls.kind} config: {err}") from err
        model = cls(config)
        load_into_module(model, tensors, directory)
        return model.to(map_location)


class FrameTokenizer(ConvTokenizer):
    """Per-frame CNN tokenizer: uint8 frames ``(..., H, W, 3)`` <-> codes ``(..., h, w)``.

    Training uses :meth:`forward` on float images in ``[-1, 1]``; the rest of the
    toolkit uses :meth:`encode` / :meth:`decode`, which take and give uint8 frames,
    work on any number of leading dims, run without gradients in eval mode, in
    chunks of ``batch_size`` frames, on the module's device, and return tensors on
    that device.
    """

    kind = CHECKPOINT_KIND
    config_class = TokenizerConfig

    def __init__(self, config: TokenizerConfig) -> None:
        super().__init__(config, Encoder, Decoder)

    def forward(self, x: Tensor) -> TokenizerOutput:
        """Reconstruct float images ``x (B, 3, H, W)`` in ``[-1, 1]``."""
        size = self.config.image_size
        if x.ndim != 4 or tuple(x.shape[1:]) != (3, size, size) or not x.is_floating_point():
            raise ValueError(
                f"FrameTokenizer.forward expects float images of shape (B, 3, {size}, {size}), "
                f"got {tuple(x.shape)} {x.dtype}"
            )
        quant = self.quantizer(self.encoder(x))
        recon = self.decoder(quant.quantized)
        recon_mse = F.mse_loss(recon, x)
        metrics = {
            "recon_mse": recon_mse.detach(),
            "quantizer_loss": quant.loss.detach(),
            **{k: v.detach() for k, v in quant.metrics.items()},
        }
        return TokenizerOutput(recon=recon, indices=quant.indices, loss=recon_mse + quant.loss, metrics=metrics)

    @torch.no_grad()
    def encode(self, frames: np.ndarray | Tensor, batch_size: int = 256) -> Tensor:
        """uint8 frames ``(..., H, W, 3)`` -> int64 codes ``(..., h, w)``."""
        size = self.config.image_size
        _check_batch_size(batch_size)
        if not isinstance(frames, (np.ndarray, Tensor)):
            raise ValueError(f"encode expects a numpy array or torch tensor of frames, got {type(frames).__name__}")
        is_uint8 = frames.dtype == (torch.uint8 if isinstance(frames, Tensor) else np.uint8)
        if not is_uint8 or frames.ndim < 3 or tuple(frames.shape[-3:]) != (size, size, 3):
            raise ValueError(
                f"encode expects uint8 frames of shape (..., {size}, {size}, 3), "
                f"got {tuple(frames.shape)} {frames.dtype}"
            )
        lead = tuple(frames.shape[:-3])
        flat = frames.reshape(-1, size, size, 3)
        chunks = []
        with _eval_mode(self):
            for start in range(0, flat.shape[0], batch_size):
                images = frames_to_images(_to_tensor(flat[start : start + batch_size]).to(self.device))
                chunks.append(self.quantizer(self.encoder(images)).indices)
        codes = torch.cat(chunks) if chunks else torch.zeros(0, *self.code_shape, dtype=torch.long, device=self.device)
        return codes.reshape(*lead, *self.code_shape)

    @torch.no_grad()
    def decode(self, indices: np.ndarray | Tensor, batch_size: int = 256) -> Tensor:
        """Integer codes ``(..., h, w)`` -> uint8 frames ``(..., H, W, 3)``."""
        _check_batch_size(batch_size)
        indices = self._checked_codes(indices, "decode", noun="indices")
        lead = tuple(indices.shape[:-2])
        flat = indices.reshape(-1, *self.code_shape)
        chunks = []
        for start in range(0, flat.shape[0], batch_size):
            codes = self.quantizer.codes_from_indices(flat[start : start + batch_size].to(self.device).long())
            chunks.append(images_to_frames(self.decoder(rearrange(codes, "b h w d -> b d h w"))))
        size = self.config.image_size
        frames = torch.cat(chunks) if chunks else torch.zeros(0, size, size, 3, dtype=torch.uint8, device=self.device)
        return frames.reshape(*lead, size, size, 3)

"""Pluggable quantizers that turn continuous latents into discrete tokens.

Every quantizer maps latents ``z`` of shape ``(B, D, h, w)`` to a
:class:`QuantizerOutput` and shares one convention for going back:
``codes_from_indices(indices (...)) -> codes (..., D)`` (channels last).

- :class:`VectorQuantizer` - nearest neighbour in a learned codebook (EMA updates).
- :class:`FSQ` - round each of a few bounded dims to a fixed number of levels.
- :class:`LFQ` - the sign of each dim is one bit of the token (vocabulary ``2**dim``).

All three pass gradients straight through the rounding step and compute in
float32 with autocast disabled, so argmins and entropies stay exact under mixed
precision.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.distributed as dist
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor, nn


@dataclass
class QuantizerOutput:
    """What a quantizer returns for latents ``z`` of shape ``(B, D, h, w)``."""

    quantized: Tensor  # (B, D, h, w), straight-through gradient to z
    indices: Tensor  # (B, h, w) int64
    loss: Tensor  # scalar auxiliary loss, 0 when the quantizer has none
    metrics: dict[str, Tensor] = field(default_factory=dict)  # detached scalars


class Quantizer(nn.Module, ABC):
    """Shared shape checks, float32 computation and usage metrics.

    Subclasses set ``dim`` and ``codebook_size`` and implement :meth:`quantize`
    on flat rows ``(N, D)`` and :meth:`codes_from_indices`.
    """

    dim: int
    codebook_size: int

    def forward(self, z: Tensor) -> QuantizerOutput:
        if z.ndim != 4 or z.shape[1] != self.dim:
            raise ValueError(
                f"{type(self).__name__} expects latents of shape (B, {self.dim}, h, w), got {tuple(z.shape)}"
            )
        if not z.is_floating_point():
            raise ValueError(f"{type(self).__name__} expects floating-point latents, got {z.dtype}")
        b, _, h, w = z.shape
        flat = rearrange(z, "b d h w -> (b h w) d")
        with torch.autocast(device_type=z.device.type, enabled=False):
            quantized, indices, loss, metrics = self.quantize(flat.float())
        return QuantizerOutput(
            quantized=rearrange(quantized.to(z.dtype), "(b h w) d -> b d h w", b=b, h=h, w=w),
            indices=rearrange(indices, "(b h w) -> b h w", b=b, h=h, w=w),
            loss=loss,
            metrics={**codebook_usage(indices, self.codebook_size), **metrics},
        )

    @abstractmethod
    def quantize(self, flat: Tensor) -> tuple[Tensor, Tensor, Tensor, dict[str, Tensor]]:
        """Quantize rows ``(N, D)`` -> ``(quantized (N, D), indices (N,), loss, metrics)``."""

    @abstractmethod
    def codes_from_indices(self, indices: Tensor) -> Tensor:
        """Look up the code vectors of ``indices (...)`` -> float ``(..., D)``."""


def codebook_usage(indices: Tensor, codebook_size: int) -> dict[str, Tensor]:
    """Perplexity of the batch's code histogram and the fraction of codes it uses.

    Counts only the codes that occur, so it is cheap even for a ``2**18`` vocabulary.
    """
    _, counts = torch.unique(indices, return_counts=True)
    probs = counts.float() / indices.numel()
    return {
        "perplexity": torch.exp(-(probs * probs.log()).sum()),
        "usage": torch.tensor(counts.numel() / codebook_size, device=indices.device),
    }


def _distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


class VectorQuantizer(Quantizer):
    """VQ-VAE quantizer with an EMA codebook (van den Oord et al., 2017, "Neural
    Discrete Representation Learning", arXiv:1711.00937; EMA variant in its appendix).

    Each latent vector is replaced by its nearest code. The codebook is not a
    parameter: it is the EMA of the vectors assigned to each code (``decay``), which
    trains faster than a codebook loss. The only loss is the commitment term
    ``beta * ||sg[e] - h||^2``. Remedies against codebook collapse (restarts as in
    Jukebox, Dhariwal et al. 2020; l2-normalised codes as in ViT-VQGAN, Yu et al. 2021):

    - the codebook is initialised from a random sample of the first training batch;
    - dead codes, whose EMA cluster size falls below ``dead_code_threshold``, are
      restarted with random encoder outputs of the current batch (0 disables this);
    - ``l2_normalize=True`` normalises inputs and codes to unit length (cosine
      similarity lookup).

    EMA statistics change only in training mode and live in registered buffers, so
    they are saved with the state dict. Under ``torch.distributed`` the per-batch
    counts and sums are all-reduced and new codes are broadcast from rank 0, so
    every rank keeps the same codebook.
    """

    def __init__(
        self,
        dim: int,
        codebook_size: int,
        beta: float = 0.25,
        decay: float = 0.99,
        l2_normalize: bool = False,
        dead_code_threshold: float = 1.0,
        eps: float = 1e-5,
    ) -> None:
        super().__init__()
        if dim < 1 or codebook_size < 1:
            raise ValueError(f"VectorQuantizer needs dim >= 1 and codebook_size >= 1, got {dim} and {codebook_size}")
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"VectorQuantizer decay must be in [0, 1), got {decay}")
        if beta < 0 or dead_code_threshold < 0 or eps <= 0:
            raise ValueError(
                f"VectorQuantizer needs beta >= 0, dead_code_threshold >= 0 and eps > 0, "
                f"got {beta}, {dead_code_threshold} and {eps}"
            )
        self.dim = dim
        self.codebook_size = codebook_size
        self.beta = beta
        self.decay = decay
        self.l2_normalize = l2_normalize
        self.dead_code_threshold = dead_code_threshold
        self.eps = eps
        codebook = torch.randn(codebook_size, dim)
        if l2_normalize:
            codebook = F.normalize(codebook, dim=-1)
        self.register_buffer("codebook", codebook)
        self.register_buffer("ema_cluster_size", torch.ones(codebook_size))
        self.register_buffer("ema_embed_sum", codebook.clone())
        self.register_buffer("initialized", torch.tensor(False))

    def quantize(self, flat: Tensor) -> tuple[Tensor, Tensor, Tensor, dict[str, Tensor]]:
        if self.l2_normalize:
            flat = F.normalize(flat, dim=-1)
        if self.training and not self.initialized:
            self._init_codebook(flat.detach())
        indices = self.nearest(flat.detach())
        codes = self.codebook[indices]
        commitment = F.mse_loss(flat, codes)
        quantized = flat + (codes - flat).detach()
        if self.training:
            self._ema_update(flat.detach(), indices)
            self._restart_dead_codes(flat.detach())
        return quantized, indices, self.beta * commitment, {"commitment": commitment.detach()}

    def nearest(self, flat: Tensor) -> Tensor:
        """Index of the closest code for each row of ``flat (N, D)``."""
        distances = (
            flat.pow(2).sum(1, keepdim=True) - 2 * flat @ self.codebook.t() + self.codebook.pow(2).sum(1)
        )
        return distances.argmin(dim=1)

    def codes_from_indices(self, indices: Tensor) -> Tensor:
        return self.codebook[indices]

    @torch.no_grad()
    def _init_codebook(self, flat: Tensor) -> None:
        samples = _sample_rows(flat, self.codebook_size)
        self.codebook.copy_(samples)
        self.ema_embed_sum.copy_(samples)
        self.ema_cluster_size.fill_(1.0)
        self.initialized.fill_(True)

    @torch.no_grad()
    def _ema_update(self, flat: Tensor, indices: Tensor) -> None:
        counts = torch.bincount(indices, minlength=self.codebook_size).to(flat.dtype)
        sums = torch.zeros_like(self.ema_embed_sum).index_add_(0, indices, flat)
        if _distributed():
            dist.all_reduce(counts)
            dist.all_reduce(sums)
        self.ema_cluster_size.lerp_(counts, 1.0 - self.decay)
        self.ema_embed_sum.lerp_(sums, 1.0 - self.decay)
        codebook = self.ema_embed_sum / self.ema_cluster_size.clamp(min=self.eps).unsqueeze(1)
        self.codebook.copy_(F.normalize(codebook, dim=-1) if self.l2_normalize else codebook)

    @torch.no_grad()
    def _restart_dead_codes(self, flat: Tensor) -> None:
        """Move codes that (almost) never win to random current encoder outputs.

        A restarted code gets an EMA cluster size equal to the threshold, so it
        survives as long as it keeps winning about ``threshold`` vectors per batch.
        """
        dead = self.ema_cluster_size < self.dead_code_threshold
        num_dead = int(dead.sum())
        if num_dead == 0:
            return
        samples = _sample_rows(flat, num_dead)
        self.codebook[dead] = samples
        self.ema_embed_sum[dead] = samples * self.dead_code_threshold
        self.ema_cluster_size[dead] = self.dead_code_threshold


def _sample_rows(flat: Tensor, num: int) -> Tensor:
    """``num`` random rows of ``flat`` (without replacement when there are enough),
    identical on every rank under ``torch.distributed`` (rank 0's sample)."""
    n = flat.shape[0]
    if n >= num:
        rows = torch.randperm(n, device=flat.device)[:num]
    else:
        rows = torch.randint(n, (num,), device=flat.device)
    samples = flat[rows].contiguous()
    if _distributed():
        dist.broadcast(samples, src=0)
    return samples


class FSQ(Quantizer):
    """Finite scalar quantization (Mentzer et al., 2023, "Finite Scalar Quantization:
    VQ-VAE Made Simple", arXiv:2309.15505).

    Dim ``i`` is bounded with tanh to ``levels[i]`` integer values and rounded with a
    straight-through gradient (the tanh stays in the backward pass). For an even
    level count the grid is shifted by half a step so that exactly ``L`` integers
    ``-L/2 .. L/2-1`` are reachable. Codes are those integers divided by ``L // 2``,
    so they lie in ``[-1, 1]``. The token is the mixed-radix number of the digits
    (dim 0 least significant); ``codebook_size = prod(levels)``, e.g. ``[8, 5, 5, 5]``
    gives 1000. There is no codebook and no auxiliary loss.
    """

    def __init__(self, levels: Sequence[int], eps: float = 1e-3) -> None:
        super().__init__()
        levels = [int(level) for level in levels]
        if not levels or min(levels) < 2:
            raise ValueError(f"FSQ needs a non-empty list of levels, each >= 2, got {levels}")
        self.levels = tuple(levels)
        self.dim = len(levels)
        self.codebook_size = math.prod(levels)
        self.eps = eps
        basis = torch.cumprod(torch.tensor([1, *levels[:-1]]), dim=0)
        self.register_buffer("_levels", torch.tensor(levels), persistent=False)
        self.register_buffer("_basis", basis, persistent=False)

    def bound(self, z: Tensor) -> Tensor:
        """Squash ``z (..., D)`` into ``(-L/2 - eps, L/2 + eps)``, half a step lower for even L."""
        levels = self._levels.float()
        half_range = (levels - 1) * (1 + self.eps) / 2
        offset = (self._levels % 2 == 0).float() * 0.5
        shift = torch.atanh(offset / half_range)
        return torch.tanh(z + shift) * half_range - offset

    def quantize(self, flat: Tensor) -> tuple[Tensor, Tensor, Tensor, dict[str, Tensor]]:
        bounded = self.bound(flat)
        rounded = bounded + (bounded.round() - bounded).detach()
        quantized = rounded / (self._levels // 2)
        indices = self.indices_from_codes(quantized.detach())
        return quantized, indices, flat.new_zeros(()), {}

    def indices_from_codes(self, codes: Tensor) -> Tensor:
        """Inverse of :meth:`codes_from_indices`: grid points ``(..., D)`` -> indices ``(...)``."""
        half_width = self._levels // 2
        digits = (codes * half_width + half_width).round().long()
        return (digits * self._basis).sum(dim=-1)

    def codes_from_indices(self, indices: Tensor) -> Tensor:
        half_width = self._levels // 2
        digits = (indices.unsqueeze(-1) // self._basis) % self._levels
        return (digits - half_width).float() / half_width


class LFQ(Quantizer):
    """Lookup-free quantization from MAGVIT-v2 (Yu et al., 2023, "Language Model Beats
    Diffusion - Tokenizer is Key to Visual Generation", arXiv:2310.05737).

    Each latent dim becomes ``sign(z_i)`` in ``{-1, +1}`` (straight-through), and the
    token is ``sum_i 2**i * [z_i > 0]`` over 0-based dims ``i`` - the paper's
    ``sum_i 2**(i-1) [z_i > 0]`` with 1-based ``i``. Vocabulary ``2**dim``.

    Loss: ``commitment_weight * ||sg[q] - z||^2`` plus, in training mode only,
    ``entropy_weight * (E[H(q(z))] - diversity_gamma * H[E q(z)])``, where ``q(c|z)`` is
    a softmax over all codes ``c`` of ``-inv_temperature * ||z - c||^2``. The first
    term makes each token confident, the second spreads the batch over the vocabulary.

    Since ``||z - c||^2 = const - 2 z.c`` and ``c`` is a vector of independent signs,
    ``q`` factorises over bits: ``q(c_i = +1 | z) = sigmoid(4 * inv_temperature * z_i)``.
    So ``E[H(q)]`` is always the exact sum of per-bit entropies. The batch term
    ``H[E q]`` is computed exactly over all ``2**dim`` codes when
    ``dim <= exact_entropy_max_dim``; above that (2^14 .. 2^18 vocabularies) it is the
    sum of per-bit marginal entropies, an upper bound that is tight when the bits are
    independent across the batch, at O(dim) instead of O(2**dim) cost per vector.
    """

    def __init__(
        self,
        dim: int,
        entropy_weight: float = 0.1,
        commitment_weight: float = 0.25,
        diversity_gamma: float = 1.0,
        inv_temperature: float = 100.0,
        exact_entropy_max_dim: int = 12,
    ) -> None:
        super().__init__()
        if not 1 <= dim <= 62:
            raise ValueError(f"LFQ needs 1 <= dim <= 62 (int64 token ids), got dim={dim}")
        if inv_temperature <= 0:
            raise ValueError(f"LFQ inv_temperature must be > 0, got {inv_temperature}")
        self.dim = dim
        self.codebook_size = 2**dim
        self.entropy_weight = entropy_weight
        self.commitment_weight = commitment_weight
        self.diversity_gamma = diversity_gamma
        self.inv_temperature = inv_temperature
        self.exact_entropy = dim <= exact_entropy_max_dim
        self.register_buffer("_bit_values", 2 ** torch.arange(dim), persistent=False)
        if self.exact_entropy:
            all_codes = self.codes_from_indices(torch.arange(self.codebook_size))
            self.register_buffer("_all_codes", all_codes, persistent=False)

    def quantize(self, flat: Tensor) -> tuple[Tensor, Tensor, Tensor, dict[str, Tensor]]:
        positive = flat > 0
        codes = torch.where(positive, 1.0, -1.0)
        quantized = flat + (codes - flat).detach()
        indices = (positive.long() * self._bit_values).sum(dim=-1)
        commitment = F.mse_loss(flat, codes)
        loss = self.commitment_weight * commitment
        metrics = {"commitment": commitment.detach()}
        if self.training and self.entropy_weight != 0:
            per_sample, codebook = self.entropy_terms(flat)
            loss = loss + self.entropy_weight * (per_sample - self.diversity_gamma * codebook)
            metrics.update(per_sample_entropy=per_sample.detach(), codebook_entropy=codebook.detach())
        return quantized, indices, loss, metrics

    def entropy_terms(self, flat: Tensor) -> tuple[Tensor, Tensor]:
        """``(E[H(q(z))], H[E q(z)])`` in nats for rows ``flat (N, dim)``."""
        bit_logits = 4 * self.inv_temperature * flat
        # entropy of Bernoulli(sigmoid(l)) is softplus(l) - l * sigmoid(l)
        per_sample = (F.softplus(bit_logits) - bit_logits * torch.sigmoid(bit_logits)).sum(-1).mean()
        if self.exact_entropy:
            probs = F.softmax(2 * self.inv_temperature * flat @ self._all_codes.t(), dim=-1).mean(0)
            return per_sample, _entropy(probs)
        bit_probs = torch.sigmoid(bit_logits).mean(0)
        return per_sample, (_entropy(bit_probs) + _entropy(1 - bit_probs))

    def codes_from_indices(self, indices: Tensor) -> Tensor:
        bits = (indices.unsqueeze(-1) // self._bit_values) % 2
        return bits.float() * 2 - 1


def _entropy(probs: Tensor) -> Tensor:
    return -(probs * probs.clamp(min=1e-10).log()).sum()


QUANTIZERS: dict[str, type[Quantizer]] = {"vq": VectorQuantizer, "fsq": FSQ, "lfq": LFQ}


def make_quantizer(name: str, dim: int, kwargs: dict[str, Any]) -> Quantizer:
    """Build a quantizer by name for latents with ``dim`` channels.

    ``dim`` is passed to VQ and LFQ; FSQ's dim is ``len(levels)`` and must equal it.
    Raises ValueError for an unknown name, bad kwargs, or a dim mismatch.
    """
    if name not in QUANTIZERS:
        raise ValueError(f"unknown quantizer {name!r}, expected one of {sorted(QUANTIZERS)}")
    if "dim" in kwargs:
        raise ValueError(f"quantizer kwargs must not set 'dim' (it is the latent dim, {dim}); got {kwargs}")
    try:
        quantizer = FSQ(**kwargs) if name == "fsq" else QUANTIZERS[name](dim=dim, **kwargs)
    except TypeError as err:
        raise ValueError(f"bad kwargs {kwargs} for quantizer {name!r}: {err}") from err
    if quantizer.dim != dim:
        raise ValueError(
            f"quantizer {name!r} with {kwargs} has dim {quantizer.dim}, but the latent dim is {dim}"
        )
    return quantizer

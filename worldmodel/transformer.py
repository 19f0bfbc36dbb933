"""Frame-causal video transformer with sliding-window attention and a rolling KV cache.

The model scores and generates the integer codes of a frame tokenizer:
``p(z_t | z_{<t}, a_{<t}, task)``, codes inside a frame in raster order. A clip of
``T`` frames of ``h x w`` codes is a sequence of ``T * (N + 1)`` tokens, ``N = h * w``:
each frame is a *start* token, carrying the action that led into the frame (or a
learned null action), followed by its ``N`` codes. The output at the start token
predicts code 0, the output at code ``i`` predicts code ``i + 1``, so every frame is
scored, frame 0 given only the task. The output at the last code has seen the whole
frame and the action that led into it: the optional world-model heads read it there to
predict the transition's reward and whether the episode goes on (IRIS, Micheli et al.
2023, reads its reward and end heads at the same place).

Attention sees the previous ``window`` frames in full and is causal inside a frame; the
rotary positions, the sliding-window mask and the rolling KV cache that makes streaming
exact live in :mod:`worldmodel.attention`, the frame-at-a-time scorer and sampler in
:mod:`worldmodel.streaming`.

With ``masked_decoding`` the model also learns to fill in a frame in a few parallel passes
(MaskGIT, Chang et al. 2022, as TECO and Genie sample): beside each training clip runs a
*draft* copy of it whose codes are partly replaced by a mask token, at a rate drawn per
frame from MaskGIT's cosine schedule. A draft frame sees the window's real frames and
all of its own tokens, and learns the masked codes at their own places. The clip's tokens
never see the drafts, so likelihoods (the VIPER reward) stay exact and autoregressive.

Tasks condition every LayerNorm (gain ``w + W c``, bias ``b + W_b c`` with ``c`` one-hot,
``W`` and ``W_b`` zero-initialised so training starts unconditional). Vocabularies of
``2**b`` codes can be factorised into ``g`` groups of ``b / g`` bits (MAGVIT-v2's LFQ), and
an FSQ vocabulary into its levels (``code_levels``, one factor per latent channel): one
embedding table per factor, summed, and one softmax head per factor, with
``log p(code) = sum_g log p_g(digit_g)`` given the context. The head then has
``sum(levels)`` outputs instead of ``prod(levels)``: most of a sampling step's cost on a
CPU when the vocabulary runs to thousands.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor, nn

from worldmodel.attention import (
    Attend,
    KVCache,
    SelfAttention,
    rope_tables,
    sliding_window_attention,
    two_stream_attention,
)
from worldmodel.checkpoint import load_into_module, load_typed_checkpoint, save_checkpoint

CHECKPOINT_KIND = "video_transformer"


class CodeScores(NamedTuple):
    """How well codes were predicted: ``log p`` of the actual codes and the entropy of the prediction (nats).

    ``log_prob + entropy`` is the surprise beyond what the model expected: zero on average
    for codes drawn from the model's own prediction, whatever the scene's intrinsic randomness.
    """

    log_prob: Tensor
    entropy: Tensor


@dataclass
class VideoTransformerConfig:
    """Architecture of a :class:`VideoTransformer`; validated on construction.

    The defaults are VIPER's DMC video model without tasks: 8x8 codes from a 256-code
    tokenizer, 16-frame context (each frame sees the 15 before it), embed 256, 8 layers,
    8 heads, MLP 1024. Set ``num_tasks=16`` for its multi-task version. Actions are
    discrete with ``num_actions > 0``, continuous with ``action_dim > 0``, absent when
    both are 0. ``masked_decoding`` adds the draft stream that few-pass sampling needs
    (see the module docstring); it doubles the tokens of a training step.
    """

    vocab_size: int = 256
    code_shape: tuple[int, int] = (8, 8)
    window: int = 15
    embed_dim: int = 256
    layers: int = 8
    heads: int = 8
    mlp_ratio: float = 4.0
    dropout: float = 0.0
    num_tasks: int = 0
    num_actions: int = 0
    action_dim: int = 0
    action_dropout: float = 0.0
    factorized_groups: int = 1
    code_levels: tuple[int, ...] = ()
    rope_theta: float = 10000.0
    reward_head: bool = False
    continue_head: bool = False
    masked_decoding: bool = False

    def __post_init__(self) -> None:
        self.code_shape = tuple(self.code_shape)
        self.code_levels = tuple(self.code_levels)
        for name in ("vocab_size", "embed_dim", "layers", "heads", "factorized_groups"):
            value = getattr(self, name)
            if not isinstance(value, int) or value <= 0:
                raise ValueError(f"{name} must be a positive int, got {value!r}")
        for name in ("window", "num_tasks", "num_actions", "action_dim"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 0:
                raise ValueError(f"{name} must be an int >= 0, got {value!r}")
        if len(self.code_shape) != 2 or any(not isinstance(s, int) or s <= 0 for s in self.code_shape):
            raise ValueError(f"code_shape must be two positive ints (h, w), got {self.code_shape!r}")
        if self.embed_dim % self.heads:
            raise ValueError(f"embed_dim {self.embed_dim} is not divisible by heads {self.heads}")
        if self.head_dim % 2 or self.head_dim < 6:
            raise ValueError(
                f"head dim embed_dim / heads = {self.head_dim} must be even and >= 6 "
                "(RoPE splits its rotation pairs over time, row and col)"
            )
        if not self.mlp_ratio > 0:
            raise ValueError(f"mlp_ratio must be > 0, got {self.mlp_ratio!r}")
        if not 0 <= self.dropout < 1:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout!r}")
        if not 0 <= self.action_dropout <= 1:
            raise ValueError(f"action_dropout must be in [0, 1], got {self.action_dropout!r}")
        if self.num_actions and self.action_dim:
            raise ValueError(
                "set num_actions (discrete) or action_dim (continuous), not both; "
                f"got num_actions={self.num_actions}, action_dim={self.action_dim}"
            )
        if not self.rope_theta > 0:
            raise ValueError(f"rope_theta must be > 0, got {self.rope_theta!r}")
        bits = self.vocab_size.bit_length() - 1
        if self.factorized_groups > 1 and (self.vocab_size != 2**bits or bits % self.factorized_groups):
            raise ValueError(
                f"factorized_groups={self.factorized_groups} needs vocab_size = 2**b with b divisible by "
                f"{self.factorized_groups}, got vocab_size={self.vocab_size}"
            )
        if self.code_levels:
            if any(not isinstance(level, int) or level < 2 for level in self.code_levels):
                raise ValueError(f"code_levels must be ints >= 2, got {self.code_levels!r}")
            if math.prod(self.code_levels) != self.vocab_size or self.factorized_groups > 1:
                raise ValueError(
                    f"code_levels {self.code_levels} must multiply to vocab_size {self.vocab_size}, "
                    f"and replace factorized_groups (got {self.factorized_groups})"
                )

    @property
    def head_dim(self) -> int:
        return self.embed_dim // self.heads

    @property
    def codes_per_frame(self) -> int:
        return self.code_shape[0] * self.code_shape[1]

    @property
    def tokens_per_frame(self) -> int:
        """The start token plus the codes."""
        return self.codes_per_frame + 1

    @property
    def factors(self) -> tuple[int, ...]:
        """The sizes of the vocabulary's factors, least significant first: ``code_levels``, or
        ``factorized_groups`` equal groups, or the whole vocabulary as one."""
        if self.code_levels:
            return self.code_levels
        return (round(self.vocab_size ** (1 / self.factorized_groups)),) * self.factorized_groups

    @property
    def group_vocab(self) -> int:
        """The largest factor: each factor's logits are padded to it."""
        return max(self.factors)

    @property
    def action_kind(self) -> str | None:
        return "discrete" if self.num_actions else "continuous" if self.action_dim else None

    @property
    def receptive_field(self) -> int:
        """How many frames back a frame's score can depend on: ``layers * window``."""
        return self.layers * self.window

    def to_dict(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self), "code_shape": list(self.code_shape), "code_levels": list(self.code_levels)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> VideoTransformerConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown VideoTransformerConfig keys {unknown}, expected a subset of {sorted(known)}")
        return cls(**data)


class CondLayerNorm(nn.Module):
    """LayerNorm with gain ``w + W c`` and bias ``b + W_b c`` for a one-hot task ``c`` (VideoGPT).

    ``W`` and ``W_b`` start at zero, and ``c = 0`` (no task given) is the unconditional model.
    """

    def __init__(self, dim: int, num_tasks: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.bias = nn.Parameter(torch.zeros(dim))
        self.task_weight = nn.Parameter(torch.zeros(num_tasks, dim))
        self.task_bias = nn.Parameter(torch.zeros(num_tasks, dim))

    def forward(self, x: Tensor, task: Tensor) -> Tensor:
        """``x (B, L, d)``, ``task (B, num_tasks)`` one-hot or zero."""
        gain = self.weight + task @ self.task_weight
        bias = self.bias + task @ self.task_bias
        return F.layer_norm(x, x.shape[-1:]) * gain[:, None] + bias[:, None]


class Block(nn.Module):
    """Pre-norm transformer block; both norms are task-conditional."""

    def __init__(self, config: VideoTransformerConfig) -> None:
        super().__init__()
        d = config.embed_dim
        self.ln1 = CondLayerNorm(d, config.num_tasks)
        self.attn = SelfAttention(config)
        self.ln2 = CondLayerNorm(d, config.num_tasks)
        self.mlp = nn.Sequential(
            nn.Linear(d, round(config.mlp_ratio * d)),
            nn.GELU(),
            nn.Linear(round(config.mlp_ratio * d), d),
            nn.Dropout(config.dropout),
        )

    def forward(self, x: Tensor, task: Tensor, rope: tuple[Tensor, Tensor], attend: Attend) -> Tensor:
        x = x + self.attn(self.ln1(x, task), rope, attend)
        return x + self.mlp(self.ln2(x, task))


def is_integer_tensor(x: Tensor) -> bool:
    """True for integer dtypes (bool excluded): what codes, discrete actions and ids must be."""
    return not (x.is_floating_point() or x.is_complex() or x.dtype == torch.bool)


def _value_range(x: Tensor) -> str:
    return f"[{x.min().item()}, {x.max().item()}]"


def mask_codes(frames: tuple[int, ...], codes_per_frame: int, device: torch.device) -> Tensor:
    """Which codes of each frame ``(*frames, N)`` a draft hides: a share ``cos(pi u / 2)``, ``u`` uniform per
    frame (MaskGIT's schedule: mostly-masked frames, as a sampler's first passes see, drawn most often), at
    least one code, at random places."""
    share = torch.cos(math.pi / 2 * torch.rand(*frames, 1, device=device))
    count = (share * codes_per_frame).ceil().clamp_min(1)
    ranks = torch.rand(*frames, codes_per_frame, device=device).argsort(-1).argsort(-1)
    return ranks < count


def _head_mlp(dim: int) -> nn.Module:
    """A scalar read-out of frame features ``(..., d) -> (...)``."""
    return nn.Sequential(nn.Linear(dim, dim), nn.GELU(), nn.Linear(dim, 1), nn.Flatten(-2))


def symlog(x: Tensor) -> Tensor:
    """``sign(x) log(1 + |x|)``: rewards of any scale regress well in this space (DreamerV3)."""
    return torch.sign(x) * torch.log1p(x.abs())


def symexp(x: Tensor) -> Tensor:
    """The inverse of :func:`symlog`."""
    return torch.sign(x) * torch.expm1(x.abs())


class WorldModelLosses(NamedTuple):
    """Mean NLL per code (nats), and where they exist (else None) the heads' losses and the draft
    stream's mean NLL per masked code."""

    codes: Tensor
    reward: Tensor | None
    continues: Tensor | None
    masked: Tensor | None = None


class VideoTransformer(nn.Module):
    """Autoregressive model of frame codes (see the module docstring for the layout).

    Training: :meth:`loss` (mean NLL per code), or :meth:`losses` with the world-model
    heads' too. Scoring: :meth:`log_prob` (one full-sequence pass) or
    :class:`~worldmodel.streaming.StreamingScorer` (a frame at a time through a
    :class:`~worldmodel.attention.KVCache`). Sampling lives in ``worldmodel.streaming``
    and ``worldmodel.rollout``. Inputs may be on any device; outputs are on the
    model's device.
    """

    def __init__(self, config: VideoTransformerConfig) -> None:
        super().__init__()
        self.config = config
        d, groups = config.embed_dim, len(config.factors)
        self.code_embed = nn.Embedding(groups * config.group_vocab, d)
        self.start = nn.Parameter(torch.zeros(d))
        self.null_action = nn.Parameter(torch.zeros(d))
        self.action_embed: nn.Module | None = None
        if config.num_actions:
            self.action_embed = nn.Embedding(config.num_actions, d)
        elif config.action_dim:
            self.action_embed = nn.Linear(config.action_dim, d)
        self.drop = nn.Dropout(config.dropout)
        self.blocks = nn.ModuleList(Block(config) for _ in range(config.layers))
        self.ln_f = CondLayerNorm(d, config.num_tasks)
        self.head = nn.Linear(d, groups * config.group_vocab)
        self.reward_head = _head_mlp(d) if config.reward_head else None
        self.continue_head = _head_mlp(d) if config.continue_head else None
        self.mask_code: nn.Parameter | None = None  # a masked code's embedding in a draft frame
        self.draft: nn.Parameter | None = None  # added to every token of a draft frame
        if config.masked_decoding:
            self.mask_code = nn.Parameter(torch.zeros(d))
            self.draft = nn.Parameter(torch.zeros(d))

        h, w = config.code_shape
        rows, cols = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
        spatial = torch.cat([torch.tensor([[-1, -1]]), torch.stack([rows.flatten(), cols.flatten()], dim=-1)])
        self.register_buffer("_spatial", spatial, persistent=False)  # (N + 1, 2) row, col per token
        factors = torch.tensor(config.factors)
        self.register_buffer("_factors", factors, persistent=False)
        radix = torch.cumprod(torch.cat([factors.new_ones(1), factors[:-1]]), 0)
        self.register_buffer("_radix", radix, persistent=False)
        self.register_buffer("_group_offset", config.group_vocab * torch.arange(groups), persistent=False)
        # padding of the smaller factors' logits, None where all factors are of one size
        unused = torch.arange(config.group_vocab) >= factors[:, None]
        self.register_buffer("_unused_logits", unused if unused.any() else None, persistent=False)

        self.apply(self._init_weights)
        nn.init.normal_(self.start, std=0.02)
        nn.init.normal_(self.null_action, std=0.02)
        for parameter in (self.mask_code, self.draft):
            if parameter is not None:
                nn.init.normal_(parameter, std=0.02)
        for block in self.blocks:  # GPT-2: residual projections scaled down with depth
            nn.init.normal_(block.attn.proj.weight, std=0.02 / math.sqrt(2 * config.layers))
            nn.init.normal_(block.mlp[2].weight, std=0.02 / math.sqrt(2 * config.layers))

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, std=0.02)
        if isinstance(module, nn.Linear):
            nn.init.zeros_(module.bias)

    @property
    def device(self) -> torch.device:
        return self.head.weight.device

    # ----- input checks, shared with the streaming and sampling code

    def validate_codes(self, codes: Tensor | np.ndarray, lead: Sequence[str | int]) -> Tensor:
        """Integer codes ``(*lead, h, w)`` in ``[0, vocab_size)`` -> int64 on the model's device.

        ``lead`` names the leading dims; int entries must match exactly.
        """
        expected = (*lead, *self.config.code_shape)
        codes = torch.as_tensor(codes, device=self.device)
        shape = tuple(codes.shape)
        if len(shape) != len(expected) or any(isinstance(e, int) and e != s for e, s in zip(expected, shape)):
            raise ValueError(f"expected codes of shape ({', '.join(map(str, expected))}), got {shape}")
        if not is_integer_tensor(codes):
            raise ValueError(f"codes must be integers, got {codes.dtype}")
        if codes.numel() and (codes.min() < 0 or codes.max() >= self.config.vocab_size):
            raise ValueError(f"codes must be in [0, {self.config.vocab_size}), got values in {_value_range(codes)}")
        return codes.long()

    def validate_actions(
        self, actions: Tensor | np.ndarray | None, batch: int, frames: int | None = None
    ) -> Tensor | None:
        """Check the actions of ``batch`` streams; returns them on the model's device.

        One step (``frames=None``): ``(B,)`` int or ``(B, A)`` float. A clip of ``frames``
        frames: ``(B, T)`` / ``(B, T, A)``, or one shorter since the action after the last
        frame is unused; returned trimmed to ``T - 1``.
        """
        if actions is None:
            return None
        config = self.config
        actions = torch.as_tensor(actions, device=self.device)
        if config.action_kind is None:
            raise ValueError(
                "this model has no action input (num_actions = action_dim = 0), "
                f"got actions of shape {tuple(actions.shape)}"
            )
        tail = () if config.num_actions else (config.action_dim,)
        lengths = [()] if frames is None else [(frames,), (max(frames - 1, 0),)]
        allowed = [(batch, *length, *tail) for length in lengths]
        if tuple(actions.shape) not in allowed:
            raise ValueError(
                f"expected {config.action_kind} actions of shape {' or '.join(map(str, allowed))}, "
                f"got {tuple(actions.shape)}"
            )
        if config.num_actions:
            if not is_integer_tensor(actions):
                raise ValueError(f"discrete actions must be integers, got {actions.dtype}")
            if actions.numel() and (actions.min() < 0 or actions.max() >= config.num_actions):
                raise ValueError(
                    f"discrete actions must be in [0, {config.num_actions}), got values in {_value_range(actions)}"
                )
            actions = actions.long()
        else:
            if not actions.is_floating_point():
                raise ValueError(f"continuous actions must be floating point, got {actions.dtype}")
            if not torch.isfinite(actions).all():
                raise ValueError("continuous actions must be finite, got NaN or inf")
            actions = actions.to(self.head.weight.dtype)
        return actions if frames is None else actions[:, : max(frames - 1, 0)]

    def validate_task(self, task: Tensor | np.ndarray | None, batch: int) -> Tensor | None:
        """Task ids ``(B,)`` in ``[0, num_tasks)`` or None (unconditional)."""
        if task is None:
            return None
        task = torch.as_tensor(task, device=self.device)
        if not self.config.num_tasks:
            raise ValueError(f"this model has no task input (num_tasks=0), got task of shape {tuple(task.shape)}")
        if tuple(task.shape) != (batch,) or not is_integer_tensor(task):
            raise ValueError(f"expected integer task ids of shape ({batch},), got {tuple(task.shape)} {task.dtype}")
        if task.min() < 0 or task.max() >= self.config.num_tasks:
            raise ValueError(f"task ids must be in [0, {self.config.num_tasks}), got values in {_value_range(task)}")
        return task.long()

    # ----- building blocks

    def split_codes(self, codes: Tensor) -> Tensor:
        """Codes ``(...)`` -> per-factor digits ``(..., groups)`` (least significant first)."""
        return codes.unsqueeze(-1) // self._radix % self._factors

    def join_codes(self, groups: Tensor) -> Tensor:
        """Inverse of :meth:`split_codes`."""
        return (groups * self._radix).sum(-1)

    def embed_codes(self, codes: Tensor) -> Tensor:
        """Codes ``(...)`` -> ``(..., d)``: the sum of the groups' embeddings."""
        return self.code_embed(self.split_codes(codes) + self._group_offset).sum(-2)

    def embed_start(self, actions: Tensor | None, known: Tensor) -> Tensor:
        """Start tokens ``(..., d)`` for the actions that led into frames, null where ``known`` is False."""
        null = self.start + self.null_action
        if actions is None:
            return null.expand(*known.shape, -1)
        return torch.where(known.unsqueeze(-1), self.start + self.action_embed(actions), null)

    def embed_draft(self, start: Tensor, codes: Tensor, masked: Tensor) -> Tensor:
        """Draft frames ``(..., N + 1, d)``: start tokens ``(..., d)``, then codes ``(..., N)`` or, where
        ``masked (..., N)``, the mask token; every token marked as a draft's."""
        if self.mask_code is None or self.draft is None:
            raise ValueError("this model was not trained for masked decoding (config masked_decoding=False)")
        filled = torch.where(masked.unsqueeze(-1), self.mask_code, self.embed_codes(codes))
        return torch.cat([start.unsqueeze(-2), filled], dim=-2) + self.draft

    def logits(self, hidden: Tensor) -> Tensor:
        """Features ``(..., d)`` -> logits ``(..., groups, group_vocab)`` (-inf past a smaller factor's size)."""
        logits = rearrange(self.head(hidden), "... (g v) -> ... g v", g=len(self.config.factors))
        return logits if self._unused_logits is None else logits.masked_fill(self._unused_logits, float("-inf"))

    def code_log_prob(self, logits: Tensor, codes: Tensor) -> Tensor:
        """``log p(code)`` ``(...)`` from logits ``(..., groups, group_vocab)`` and codes ``(...)`` (float32)."""
        log_probs = logits.float().log_softmax(-1)
        return log_probs.gather(-1, self.split_codes(codes).unsqueeze(-1)).squeeze(-1).sum(-1)

    def code_entropy(self, logits: Tensor) -> Tensor:
        """Entropy (nats) ``(...)`` of the predicted code distribution, from logits ``(..., groups, group_vocab)``.

        The groups of a factorised vocabulary are predicted independently given the context,
        so a code's entropy is the sum of its groups' entropies.
        """
        return torch.special.entr(logits.float().softmax(-1)).sum(-1).sum(-1)

    def _positions(self, time: Tensor, offset: int, n: int) -> Tensor:
        """(time, row, col) of tokens ``offset .. offset + n - 1`` of frames ``time (...)`` -> ``(..., n, 3)``."""
        spatial = self._spatial[offset : offset + n].expand(*time.shape, n, 2)
        return torch.cat([time[..., None, None].expand(*time.shape, n, 1), spatial], dim=-1)

    def _trunk(self, x: Tensor, positions: Tensor, task: Tensor | None, attend: Callable[[int], Attend]) -> Tensor:
        """Token embeddings ``(B, L, d)`` -> final features ``(B, L, d)``; ``attend(layer)`` picks the keys."""
        if task is None:
            onehot = x.new_zeros(x.shape[0], self.config.num_tasks)
        else:
            onehot = F.one_hot(task, self.config.num_tasks).to(x.dtype)
        rope = rope_tables(positions, self.config.head_dim, self.config.rope_theta, x.dtype)
        x = self.drop(x)
        for layer, block in enumerate(self.blocks):
            x = block(x, onehot, rope, attend(layer))
        return self.ln_f(x, onehot)

    # ----- full sequence

    def hidden(
        self,
        codes: Tensor,
        actions: Tensor | None = None,
        task: Tensor | None = None,
        action_mask: Tensor | None = None,
    ) -> Tensor:
        """Final features ``(B, T, N, d)`` at the tokens that predict each code of a clip.

        ``codes (B, T, h, w)``; ``actions (B, T)`` int / ``(B, T, A)`` float or one frame
        shorter, action ``t`` taken after frame ``t``; ``task (B,)``; ``action_mask (B,)``
        bool, False to treat a clip as action-free (null actions).
        """
        return self.token_features(codes, actions, task, action_mask)[:, :, :-1]

    def token_features(
        self,
        codes: Tensor,
        actions: Tensor | None = None,
        task: Tensor | None = None,
        action_mask: Tensor | None = None,
    ) -> Tensor:
        """Final features ``(B, T, N + 1, d)`` of every token (arguments as in :meth:`hidden`).

        ``[:, :, :-1]`` predict the codes; ``[:, :, -1]``, after the last code, are the frame
        features that the world-model heads read.
        """
        return self._clip_features(codes, actions, task, action_mask)[0]

    def _clip_features(
        self,
        codes: Tensor,
        actions: Tensor | None,
        task: Tensor | None,
        action_mask: Tensor | None,
        masked: Tensor | None = None,
    ) -> tuple[Tensor, Tensor | None]:
        """:meth:`token_features`, and with ``masked (B, T, N)`` those of the clip's draft copy too."""
        codes = self.validate_codes(codes, ("B", "T"))
        b, t = codes.shape[:2]
        if t == 0:
            raise ValueError("expected a clip of at least one frame, got T = 0")
        actions = self.validate_actions(actions, b, t)
        task = self.validate_task(task, b)
        known = (torch.arange(t, device=self.device) > 0).expand(b, t)
        if action_mask is not None:
            action_mask = torch.as_tensor(action_mask, device=self.device)
            if tuple(action_mask.shape) != (b,) or action_mask.dtype != torch.bool:
                raise ValueError(
                    f"expected a bool action_mask of shape ({b},), got {tuple(action_mask.shape)} {action_mask.dtype}"
                )
            known = known & action_mask[:, None]
        if actions is not None:  # the action into frame t is actions[t - 1]; frame 0 gets a placeholder
            actions = torch.cat([actions.new_zeros(b, 1, *actions.shape[2:]), actions], dim=1)
        start = self.embed_start(actions, known)
        x = torch.cat([start[:, :, None], self.embed_codes(codes.flatten(2))], dim=2)
        n = self.config.tokens_per_frame
        positions = rearrange(self._positions(torch.arange(t, device=self.device), 0, n), "t n c -> (t n) c")
        dropout_p = self.config.dropout if self.training else 0.0
        if masked is None:
            attend = sliding_window_attention(t * n, n, self.config.window, self.device, dropout_p)
            out = self._trunk(rearrange(x, "b t n d -> b (t n) d"), positions, task, lambda _: attend)
            return rearrange(out, "b (t n) d -> b t n d", n=n), None
        draft = self.embed_draft(start, codes.flatten(2), masked)
        attend = two_stream_attention(t, n, self.config.window, self.device, dropout_p)
        both = torch.cat([x, draft], dim=1)
        out = self._trunk(rearrange(both, "b t n d -> b (t n) d"), positions.repeat(2, 1), task, lambda _: attend)
        return rearrange(out, "b (s t n) d -> s b t n d", s=2, n=n).unbind(0)

    def forward(
        self,
        codes: Tensor,
        actions: Tensor | None = None,
        task: Tensor | None = None,
        action_mask: Tensor | None = None,
    ) -> Tensor:
        """Logits ``(B, T, N, groups, group_vocab)`` of every code of a clip (arguments as in :meth:`hidden`)."""
        return self.logits(self.hidden(codes, actions, task, action_mask))

    def loss(self, codes: Tensor, actions: Tensor | None = None, task: Tensor | None = None) -> Tensor:
        """Mean negative log-likelihood per code in nats, for training (see :meth:`losses`)."""
        return self.losses(codes, actions, task).codes

    def losses(
        self,
        codes: Tensor,
        actions: Tensor | None = None,
        task: Tensor | None = None,
        rewards: Tensor | None = None,
        terminals: Tensor | None = None,
        actions_known: Tensor | None = None,
        rewards_known: Tensor | None = None,
    ) -> WorldModelLosses:
        """The training losses of a clip, from one forward pass.

        ``rewards (B, T)``: ``rewards[:, t]`` follows action ``t`` (frame ``t -> t + 1``), so the
        reward head learns it from frame ``t + 1``'s features, by squared error in symlog space.
        ``terminals (B, T)`` bool: frames that end their episode by termination; the continue
        head learns ``not terminals[:, t]`` from frame ``t``'s features (``t >= 1``), by
        cross-entropy. In training mode each clip drops its actions (null action throughout)
        with probability ``action_dropout``, TECO's whole-video dropout, so one model learns
        both ``p(z | a)`` and ``p(z)``. A ``masked_decoding`` model in training mode also learns
        its draft stream (the module docstring), in the same pass.

        A batch may mix sources (:func:`worldmodel.train_video.train_video`'s ``mix_root``):
        ``actions_known (B,)`` bool marks clips that recorded their actions (the others see the null
        action throughout, as a dropped clip does), ``rewards_known (B,)`` those whose rewards the
        reward head learns from.
        """
        codes = self.validate_codes(codes, ("B", "T"))
        b, t = codes.shape[:2]
        action_mask = None if actions_known is None else actions_known.to(self.device).bool()
        if self.training and actions is not None and self.config.action_dropout > 0:
            dropped = torch.rand(b, device=self.device) < self.config.action_dropout
            action_mask = ~dropped if action_mask is None else action_mask & ~dropped
        masked = mask_codes(codes.shape[:2], self.config.codes_per_frame, self.device) if (
            self.training and self.config.masked_decoding) else None
        features, draft = self._clip_features(codes, actions, task, action_mask, masked)
        code_loss = -self.code_log_prob(self.logits(features[:, :, :-1]), codes.flatten(2)).mean()
        masked_loss = None
        if draft is not None:
            masked_loss = -self.code_log_prob(self.logits(draft[:, :, 1:]), codes.flatten(2))[masked].mean()
        after = features[:, 1:, -1]  # frames 1 .. T-1, each seen with the action that led into it
        reward_loss = continue_loss = None
        if rewards is not None and self.reward_head is not None:
            rewards = self._validate_targets(rewards, b, t, "rewards").float()
            errors = (self.reward_head(after).float() - symlog(rewards[:, :-1])) ** 2
            if rewards_known is None:
                reward_loss = errors.mean()
            else:
                known = rewards_known.to(self.device).bool()
                reward_loss = errors[known].mean() if known.any() else errors.sum() * 0.0
        if terminals is not None and self.continue_head is not None:
            terminals = self._validate_targets(terminals, b, t, "terminals")
            targets = (~terminals[:, 1:].bool()).float()
            continue_loss = F.binary_cross_entropy_with_logits(self.continue_head(after), targets)
        return WorldModelLosses(code_loss, reward_loss, continue_loss, masked_loss)

    def _validate_targets(self, targets: Tensor | np.ndarray, b: int, t: int, name: str) -> Tensor:
        targets = torch.as_tensor(targets, device=self.device)
        if tuple(targets.shape) != (b, t):
            raise ValueError(f"expected {name} of shape ({b}, {t}), got {tuple(targets.shape)}")
        return targets

    @torch.no_grad()
    def predict_outcome(self, features: Tensor) -> tuple[Tensor | None, Tensor | None]:
        """Reward and continue probability ``(...)`` from frame features ``(..., d)`` (None without the head).

        The reward is that of the transition into the frame; the continue probability says
        whether the episode goes on after it.
        """
        reward = None if self.reward_head is None else symexp(self.reward_head(features).float())
        keep = None if self.continue_head is None else torch.sigmoid(self.continue_head(features).float())
        return reward, keep

    @torch.no_grad()
    def code_log_probs(
        self,
        codes: Tensor,
        actions: Tensor | None = None,
        task: Tensor | None = None,
        action_mask: Tensor | None = None,
    ) -> Tensor:
        """Log-likelihood of every code ``(B, T, h, w)``: ``log p(z_t^i | z_t^{<i}, z_{<t}, a_{<t}, task)``.

        One full-sequence forward pass (arguments as in :meth:`hidden`); frame 0 is scored
        given nothing but the task. Call ``model.eval()`` first if the model uses dropout.
        """
        return self.code_scores(codes, actions, task, action_mask).log_prob

    def code_scores(
        self,
        codes: Tensor,
        actions: Tensor | None = None,
        task: Tensor | None = None,
        action_mask: Tensor | None = None,
    ) -> CodeScores:
        """:meth:`code_log_probs` and the predictive entropy of every code ``(B, T, h, w)``, from one pass."""
        codes = self.validate_codes(codes, ("B", "T"))
        hidden = self.hidden(codes, actions, task, action_mask)
        chunks = zip(hidden.split(64, dim=1), codes.flatten(2).split(64, dim=1))  # bounds the logits' memory
        log_probs, entropies = [], []
        for h, c in chunks:
            logits = self.logits(h)
            log_probs.append(self.code_log_prob(logits, c))
            entropies.append(self.code_entropy(logits))
        return CodeScores(torch.cat(log_probs, dim=1).view(codes.shape), torch.cat(entropies, dim=1).view(codes.shape))

    def log_prob(
        self,
        codes: Tensor,
        actions: Tensor | None = None,
        task: Tensor | None = None,
        action_mask: Tensor | None = None,
    ) -> Tensor:
        """Per-frame log-likelihood ``(B, T)``: :meth:`code_log_probs` summed over each frame's codes."""
        return self.code_log_probs(codes, actions, task, action_mask).flatten(2).sum(-1)

    # ----- cached, a few tokens at a time

    def with_window(self, window: int) -> VideoTransformer:
        """The same weights attending to the previous ``window`` frames only (a new module, weights shared).

        No parameter depends on the window (positions are rotary), so the weights run unchanged
        on less history: the baseline that shows what a long window buys.
        """
        if not isinstance(window, int) or window < 1:
            raise ValueError(f"window must be a positive int, got {window!r}")
        narrow = VideoTransformer(dataclasses.replace(self.config, window=window))
        narrow.load_state_dict(self.state_dict())
        return narrow.to(self.device).train(self.training)

    def new_cache(self, batch_size: int) -> KVCache:
        return KVCache(self.config, batch_size, device=self.device, dtype=self.head.weight.dtype)

    def step(
        self,
        tokens: Tensor,
        cache: KVCache,
        task: Tensor | None = None,
        advance: bool = True,
        whole_frame: bool = False,
    ) -> Tensor:
        """Run the next ``n`` token embeddings ``(B, n, d)`` of the current frame through ``cache``.

        Returns their final features ``(B, n, d)`` (:meth:`logits` of them predict the next
        codes) and advances the cache; with ``advance=False`` their keys and values are written
        but the cache stays where it was, so the next call overwrites them (a draft of the frame).
        ``whole_frame``: every token sees all of the frame's (a draft frame of masked decoding).
        A building block for :class:`~worldmodel.streaming.StreamingScorer` and the samplers, which validate inputs.
        """
        n = tokens.shape[1]
        positions = self._positions(cache.time, cache.offset, n)
        mask = cache.attention_mask(n, whole_frame)
        hidden = self._trunk(tokens, positions, task, lambda layer: partial(cache.attend, layer, mask))
        if advance:
            cache.advance(n)
        return hidden

    # ----- checkpoints

    def initialise_from(self, trained: VideoTransformer) -> None:
        """Start from a trained model's weights: the same architecture, where only the training-time
        settings (dropout, action dropout) and ``masked_decoding`` may differ. A draft stream the
        trained model lacks keeps its fresh initialisation: how a world model learns masked
        decoding in a short fine-tune rather than from scratch."""
        free = ("dropout", "action_dropout", "masked_decoding")
        mine = {k: v for k, v in self.config.to_dict().items() if k not in free}
        theirs = {k: v for k, v in trained.config.to_dict().items() if k not in free}
        differing = sorted(k for k in mine if mine[k] != theirs[k])
        if differing:
            raise ValueError(
                "cannot start from a model of another architecture: "
                + ", ".join(f"{k} {theirs[k]!r} there, {mine[k]!r} here" for k in differing)
            )
        own = self.state_dict()
        self.load_state_dict({k: v for k, v in trained.state_dict().items() if k in own}, strict=False)

    def save(self, directory: str | Path) -> None:
        """Write ``model.safetensors`` + ``config.json`` (kind ``video_transformer``) atomically."""
        save_checkpoint(directory, self.state_dict(), {"kind": CHECKPOINT_KIND, "config": self.config.to_dict()})

    @classmethod
    def load(cls, directory: str | Path, map_location: str | torch.device = "cpu") -> VideoTransformer:
        """Rebuild a model from :meth:`save`; CheckpointError names any mismatch."""
        config, tensors = load_typed_checkpoint(directory, CHECKPOINT_KIND, VideoTransformerConfig.from_dict)
        model = cls(config)
        load_into_module(model, tensors, directory)
        return model.to(map_location)

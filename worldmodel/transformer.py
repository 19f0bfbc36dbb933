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

Attention is causal inside a frame and sees the previous ``window`` (k) frames in
full. ``L`` layers reach ``L * k`` frames back, and since no layer ever looks more than
k frames back, a rolling cache of the last k frames' keys/values per layer
(:class:`KVCache`) reproduces the full-sequence forward exactly for streams of any
length (:class:`StreamingScorer`).

Positions are rotary embeddings (RoPE) whose rotation pairs are split over time, row
and column. Time is the absolute frame index since the start of the stream: q.k only
depends on offsets, so cached keys stay valid as the window slides, and the angles are
computed in float64 so that frame indices in the millions lose no precision. The start
token sits at row = col = -1, just above and left of the code grid.

Tasks condition every LayerNorm (gain ``w + W c``, bias ``b + W_b c`` with ``c`` one-hot,
``W`` and ``W_b`` zero-initialised so training starts unconditional). Vocabularies of
``2**b`` codes can be factorised into ``g`` groups of ``b / g`` bits (MAGVIT-v2's LFQ):
one embedding table per group, summed, and one softmax head per group, with
``log p(code) = sum_g log p_g(bits_g)`` given the context.
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

from worldmodel.checkpoint import load_into_module, load_typed_checkpoint, save_checkpoint

CHECKPOINT_KIND = "video_transformer"
CHUNK_TOKENS = 1024  # full-sequence attention runs over query chunks of at least this many tokens

Attend = Callable[[Tensor, Tensor, Tensor], Tensor]  # (q, k, v) each (B, H, L, D) -> (B, H, L, D)


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
    both are 0.
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
    rope_theta: float = 10000.0
    reward_head: bool = False
    continue_head: bool = False

    def __post_init__(self) -> None:
        self.code_shape = tuple(self.code_shape)
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
    def group_vocab(self) -> int:
        """Codes per factor group: ``vocab_size ** (1 / factorized_groups)``."""
        return round(self.vocab_size ** (1 / self.factorized_groups))

    @property
    def action_kind(self) -> str | None:
        return "discrete" if self.num_actions else "continuous" if self.action_dim else None

    @property
    def receptive_field(self) -> int:
        """How many frames back a frame's score can depend on: ``layers * window``."""
        return self.layers * self.window

    def to_dict(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self), "code_shape": list(self.code_shape)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> VideoTransformerConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown VideoTransformerConfig keys {unknown}, expected a subset of {sorted(known)}")
        return cls(**data)


def rope_tables(positions: Tensor, head_dim: int, theta: float, dtype: torch.dtype) -> tuple[Tensor, Tensor]:
    """``cos, sin`` of shape ``(..., 1, L, head_dim / 2)`` for integer positions ``(..., L, 3)`` = (time, row, col).

    The rotation pairs are split over the three axes (time gets the remainder) and
    each axis uses frequencies ``theta ** (-i / n)``; angles are float64.
    """
    pairs = head_dim // 2
    spatial = pairs // 3
    freqs = torch.zeros(3, pairs, dtype=torch.float64, device=positions.device)
    start = 0
    for axis, count in enumerate((pairs - 2 * spatial, spatial, spatial)):
        exponents = torch.arange(count, dtype=torch.float64, device=positions.device) / count
        freqs[axis, start : start + count] = theta**-exponents
        start += count
    angles = (positions.double() @ freqs).unsqueeze(-3)
    return angles.cos().to(dtype), angles.sin().to(dtype)


def apply_rope(x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
    """Rotate the pairs ``(x[..., i], x[..., i + D/2])`` of ``x (..., L, D)`` by the tabled angles."""
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat((x1 * cos - x2 * sin, x1 * sin + x2 * cos), dim=-1)


def sliding_window_attention(
    length: int, tokens_per_frame: int, window: int, device: torch.device, dropout_p: float = 0.0
) -> Attend:
    """Attention over ``length`` tokens where a token sees the previous ``window`` frames and
    the earlier-or-equal tokens of its own frame.

    Queries go in chunks of frames, each against only the keys it can see, so time and
    memory grow linearly with the number of frames; a clip of up to twice the window
    (every training clip) is a single masked attention call.
    """
    n = tokens_per_frame
    frames = length // n
    chunk = max(2 * window, math.ceil(CHUNK_TOKENS / n))
    index = torch.arange(length, device=device)
    blocks = []
    for f0 in range(0, frames, chunk):
        f1, k0 = min(f0 + chunk, frames), max(f0 - window, 0)
        query, key = index[f0 * n : f1 * n, None], index[None, k0 * n : f1 * n]
        mask = (key <= query) & (key // n >= query // n - window)
        blocks.append((slice(f0 * n, f1 * n), slice(k0 * n, f1 * n), mask))

    def attend(q: Tensor, k: Tensor, v: Tensor) -> Tensor:
        sdpa = partial(F.scaled_dot_product_attention, dropout_p=dropout_p)
        return torch.cat([sdpa(q[..., qs, :], k[..., ks, :], v[..., ks, :], attn_mask=m) for qs, ks, m in blocks], -2)

    return attend


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


class SelfAttention(nn.Module):
    """Multi-head attention with RoPE; *which* keys a query sees is up to ``attend``."""

    def __init__(self, config: VideoTransformerConfig) -> None:
        super().__init__()
        self.heads = config.heads
        self.qkv = nn.Linear(config.embed_dim, 3 * config.embed_dim)
        self.proj = nn.Linear(config.embed_dim, config.embed_dim)
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, x: Tensor, rope: tuple[Tensor, Tensor], attend: Attend) -> Tensor:
        q, k, v = rearrange(self.qkv(x), "b l (three h d) -> three b h l d", three=3, h=self.heads)
        y = attend(apply_rope(q, *rope), apply_rope(k, *rope), v)
        return self.dropout(self.proj(rearrange(y, "b h l d -> b l (h d)")))


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


class KVCache:
    """Keys and values of every layer for ``batch_size`` streams, in constant memory.

    Per layer a ring of ``window + 1`` frame slots of ``N + 1`` tokens: the last
    ``window`` complete frames and the frame being written. All streams write the same
    slot and token offset (they advance a frame at a time in lockstep), but each has its
    own history: ``valid[b, s]`` marks slots holding a complete frame of stream ``b``
    inside its window and ``time[b]`` is the index of its current frame since its last
    reset, so a reset only clears a row of ``valid`` and one ``time``.
    """

    def __init__(
        self,
        config: VideoTransformerConfig,
        batch_size: int,
        device: torch.device | str | None = None,
        dtype: torch.dtype = torch.float32,
    ) -> None:
        self.tokens_per_frame = n = config.tokens_per_frame
        self.slots = config.window + 1
        shape = (config.layers, batch_size, config.heads, self.slots * n, config.head_dim)
        self.keys = torch.zeros(shape, device=device, dtype=dtype)
        self.values = torch.zeros(shape, device=device, dtype=dtype)
        self.valid = torch.zeros(batch_size, self.slots, dtype=torch.bool, device=device)
        self.time = torch.zeros(batch_size, dtype=torch.long, device=device)
        self.slot = 0  # ring slot of the frame being written
        self.offset = 0  # tokens of that frame written so far
        key = torch.arange(self.slots * n, device=device)
        self._key_slot, self._key_pos = key // n, key % n

    @property
    def batch_size(self) -> int:
        return self.valid.shape[0]

    def reset(self, streams: Tensor) -> None:
        """Forget the history of the streams in the bool mask ``streams (B,)``; their next frame is frame 0."""
        if self.offset:
            raise RuntimeError(f"cannot reset streams in the middle of a frame ({self.offset} of its tokens written)")
        self.valid[streams] = False
        self.time[streams] = 0

    def adopt(self, streams: Tensor, source: KVCache) -> None:
        """Give the streams in the bool mask ``streams (B,)`` the histories of ``source``'s streams, in order.

        Afterwards each such stream continues exactly as if ``source``'s frames had been pushed into it
        here, while the other streams keep theirs: how one stream starts from a context of many frames
        without the others advancing in lockstep. Both caches must be of the same model, between frames.
        """
        if self.offset or source.offset:
            raise RuntimeError("caches can only hand over streams between frames")
        if self.slots != source.slots or self.keys.shape[2:] != source.keys.shape[2:]:
            raise ValueError("the source cache belongs to a different model")
        if int(streams.sum()) != source.batch_size:
            raise ValueError(f"{int(streams.sum())} streams cannot take the {source.batch_size} of the source cache")
        n = self.tokens_per_frame
        for back in range(1, self.slots):  # the window's frames, most recent first; the current slot stays empty
            mine, theirs = (self.slot - back) % self.slots, (source.slot - back) % source.slots
            self.keys[:, streams, :, mine * n : (mine + 1) * n] = source.keys[:, :, :, theirs * n : (theirs + 1) * n]
            self.values[:, streams, :, mine * n : (mine + 1) * n] = source.values[:, :, :, theirs * n : (theirs + 1) * n]
            self.valid[streams, mine] = source.valid[:, theirs]
        self.valid[streams, self.slot] = False
        self.time[streams] = source.time

    def attention_mask(self, n: int) -> Tensor:
        """Bool ``(B, 1, n, slots * (N + 1))``: which cached keys each of ``n`` new tokens sees."""
        query = self.offset + torch.arange(n, device=self.valid.device)
        current = (self._key_slot == self.slot) & (self._key_pos <= query[:, None])
        return (self.valid[:, self._key_slot][:, None] | current)[:, None]

    def attend(self, layer: int, mask: Tensor, q: Tensor, k: Tensor, v: Tensor) -> Tensor:
        """Store the new tokens' keys/values of ``layer`` and attend over the cache."""
        start = self.slot * self.tokens_per_frame + self.offset
        self.keys[layer, :, :, start : start + k.shape[-2]] = k
        self.values[layer, :, :, start : start + v.shape[-2]] = v
        return F.scaled_dot_product_attention(q, self.keys[layer], self.values[layer], attn_mask=mask)

    def advance(self, n: int) -> None:
        """Mark ``n`` more tokens written; a finished frame joins the window and the oldest leaves it."""
        self.offset += n
        if self.offset == self.tokens_per_frame:
            self.valid[:, self.slot] = True
            self.time += 1
            self.slot = (self.slot + 1) % self.slots
            self.valid[:, self.slot] = False
            self.offset = 0


def _is_integer(x: Tensor) -> bool:
    return not (x.is_floating_point() or x.is_complex() or x.dtype == torch.bool)


def _value_range(x: Tensor) -> str:
    return f"[{x.min().item()}, {x.max().item()}]"


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
    """Mean NLL per code (nats), and the heads' losses where they and their targets exist (else None)."""

    codes: Tensor
    reward: Tensor | None
    continues: Tensor | None


class VideoTransformer(nn.Module):
    """Autoregressive model of frame codes (see the module docstring for the layout).

    Training: :meth:`loss` (mean NLL per code), or :meth:`losses` with the world-model
    heads' too. Scoring: :meth:`log_prob` (one full-sequence pass) or
    :class:`StreamingScorer` (a frame at a time through a :class:`KVCache`). Sampling
    lives in ``worldmodel.sampling``. Inputs may be on any device; outputs are on the
    model's device.
    """

    def __init__(self, config: VideoTransformerConfig) -> None:
        super().__init__()
        self.config = config
        d, groups = config.embed_dim, config.factorized_groups
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

        h, w = config.code_shape
        rows, cols = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
        spatial = torch.cat([torch.tensor([[-1, -1]]), torch.stack([rows.flatten(), cols.flatten()], dim=-1)])
        self.register_buffer("_spatial", spatial, persistent=False)  # (N + 1, 2) row, col per token
        self.register_buffer("_radix", config.group_vocab ** torch.arange(groups), persistent=False)
        self.register_buffer("_group_offset", config.group_vocab * torch.arange(groups), persistent=False)

        self.apply(self._init_weights)
        nn.init.normal_(self.start, std=0.02)
        nn.init.normal_(self.null_action, std=0.02)
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
        if not _is_integer(codes):
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
            if not _is_integer(actions):
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
        if tuple(task.shape) != (batch,) or not _is_integer(task):
            raise ValueError(f"expected integer task ids of shape ({batch},), got {tuple(task.shape)} {task.dtype}")
        if task.min() < 0 or task.max() >= self.config.num_tasks:
            raise ValueError(f"task ids must be in [0, {self.config.num_tasks}), got values in {_value_range(task)}")
        return task.long()

    # ----- building blocks

    def split_codes(self, codes: Tensor) -> Tensor:
        """Codes ``(...)`` -> per-group sub-codes ``(..., groups)`` (low bits first)."""
        return codes.unsqueeze(-1) // self._radix % self.config.group_vocab

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

    def logits(self, hidden: Tensor) -> Tensor:
        """Features ``(..., d)`` -> logits ``(..., groups, group_vocab)``."""
        return rearrange(self.head(hidden), "... (g v) -> ... g v", g=self.config.factorized_groups)

    def code_log_prob(self, logits: Tensor, codes: Tensor) -> Tensor:
        """``log p(code)`` ``(...)`` from logits ``(..., groups, group_vocab)`` and codes ``(...)`` (float32)."""
        log_probs = logits.float().log_softmax(-1)
        return log_probs.gather(-1, self.split_codes(codes).unsqueeze(-1)).squeeze(-1).sum(-1)

    def code_entropy(self, logits: Tensor) -> Tensor:
        """Entropy (nats) ``(...)`` of the predicted code distribution, from logits ``(..., groups, group_vocab)``.

        The groups of a factorised vocabulary are predicted independently given the context,
        so a code's entropy is the sum of its groups' entropies.
        """
        log_probs = logits.float().log_softmax(-1)
        return -(log_probs.exp() * log_probs).sum(-1).sum(-1)

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
        x = torch.cat([self.embed_start(actions, known)[:, :, None], self.embed_codes(codes.flatten(2))], dim=2)
        n = self.config.tokens_per_frame
        positions = self._positions(torch.arange(t, device=self.device), 0, n)
        dropout_p = self.config.dropout if self.training else 0.0
        attend = sliding_window_attention(t * n, n, self.config.window, self.device, dropout_p)
        out = self._trunk(
            rearrange(x, "b t n d -> b (t n) d"), rearrange(positions, "t n c -> (t n) c"), task, lambda _: attend
        )
        return rearrange(out, "b (t n) d -> b t n d", n=n)

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
    ) -> WorldModelLosses:
        """The training losses of a clip, from one forward pass.

        ``rewards (B, T)``: ``rewards[:, t]`` follows action ``t`` (frame ``t -> t + 1``), so the
        reward head learns it from frame ``t + 1``'s features, by squared error in symlog space.
        ``terminals (B, T)`` bool: frames that end their episode by termination; the continue
        head learns ``not terminals[:, t]`` from frame ``t``'s features (``t >= 1``), by
        cross-entropy. In training mode each clip drops its actions (null action throughout)
        with probability ``action_dropout``, TECO's whole-video dropout, so one model learns
        both ``p(z | a)`` and ``p(z)``.
        """
        codes = self.validate_codes(codes, ("B", "T"))
        b, t = codes.shape[:2]
        action_mask = None
        if self.training and actions is not None and self.config.action_dropout > 0:
            action_mask = torch.rand(b, device=self.device) >= self.config.action_dropout
        features = self.token_features(codes, actions, task, action_mask)
        code_loss = -self.code_log_prob(self.logits(features[:, :, :-1]), codes.flatten(2)).mean()
        after = features[:, 1:, -1]  # frames 1 .. T-1, each seen with the action that led into it
        reward_loss = continue_loss = None
        if rewards is not None and self.reward_head is not None:
            rewards = self._validate_targets(rewards, b, t, "rewards").float()
            reward_loss = F.mse_loss(self.reward_head(after), symlog(rewards[:, :-1]))
        if terminals is not None and self.continue_head is not None:
            terminals = self._validate_targets(terminals, b, t, "terminals")
            targets = (~terminals[:, 1:].bool()).float()
            continue_loss = F.binary_cross_entropy_with_logits(self.continue_head(after), targets)
        return WorldModelLosses(code_loss, reward_loss, continue_loss)

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

    def step(self, tokens: Tensor, cache: KVCache, task: Tensor | None = None, advance: bool = True) -> Tensor:
        """Run the next ``n`` token embeddings ``(B, n, d)`` of the current frame through ``cache``.

        Returns their final features ``(B, n, d)`` (:meth:`logits` of them predict the next
        codes) and advances the cache; with ``advance=False`` their keys and values are written
        but the cache stays where it was, so the next call overwrites them (a draft of the frame).
        A building block for :class:`StreamingScorer` and the samplers, which validate inputs.
        """
        n = tokens.shape[1]
        positions = self._positions(cache.time, cache.offset, n)
        mask = cache.attention_mask(n)
        hidden = self._trunk(tokens, positions, task, lambda layer: partial(cache.attend, layer, mask))
        if advance:
            cache.advance(n)
        return hidden

    # ----- checkpoints

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


def action_into(actions: Tensor | None, t: int) -> Tensor | None:
    """The action that led into frame ``t`` of a clip ``actions (B, T[, A])`` (None for frame 0)."""
    return None if actions is None or t == 0 else actions[:, t - 1]


def stream_mask(env_ids: Sequence[int] | Sequence[bool] | Tensor | np.ndarray | None, batch_size: int) -> Tensor:
    """Env ids (ints) or a bool mask ``(B,)`` -> bool mask ``(B,)``; None means all streams."""
    if env_ids is None:
        return torch.ones(batch_size, dtype=torch.bool)
    ids = torch.as_tensor(np.asarray(env_ids))
    if ids.dtype == torch.bool:
        if tuple(ids.shape) != (batch_size,):
            raise ValueError(f"expected a bool mask of shape ({batch_size},), got {tuple(ids.shape)}")
        return ids
    mask = torch.zeros(batch_size, dtype=torch.bool)
    if ids.numel() == 0:
        return mask
    if ids.ndim != 1 or not _is_integer(ids):
        raise ValueError(f"expected a sequence of int env ids or a bool mask, got {tuple(ids.shape)} {ids.dtype}")
    if ids.min() < 0 or ids.max() >= batch_size:
        raise ValueError(f"env ids must be in [0, {batch_size}), got {ids.tolist()}")
    mask[ids] = True
    return mask


class StreamingScorer:
    """``log p(frame | that stream's history)`` for ``batch_size`` streams, a frame per call.

    Each :meth:`push` runs exactly one frame (``N + 1`` tokens) per stream through a
    :class:`KVCache` and matches :meth:`VideoTransformer.log_prob` of the stream's whole
    sequence since its last reset, at constant memory however long the streams run.
    Streams reset independently (e.g. vector envs finishing episodes at different steps).
    ``features (B, d)`` are each stream's latest frame features, which the world-model heads
    read (:meth:`VideoTransformer.predict_outcome`). Put the model in eval mode first if it
    uses dropout.
    """

    def __init__(self, model: VideoTransformer, batch_size: int) -> None:
        if not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
        self.model = model
        self.cache = model.new_cache(batch_size)
        self.features = torch.zeros(batch_size, model.config.embed_dim, device=model.device)

    @property
    def batch_size(self) -> int:
        return self.cache.batch_size

    def reset(self, env_ids: Sequence[int] | Sequence[bool] | Tensor | np.ndarray | None = None) -> None:
        """Clear the history of some streams (ids or a bool mask; None = all): their next frame is frame 0."""
        self.cache.reset(stream_mask(env_ids, self.batch_size).to(self.cache.valid.device))

    @torch.no_grad()
    def start(
        self,
        env_ids: Sequence[int] | Sequence[bool] | Tensor | np.ndarray,
        codes: Tensor,
        actions: Tensor | None = None,
        task: Tensor | None = None,
    ) -> Tensor:
        """Restart some streams from context clips ``codes (n, K, h, w)``; the other streams are untouched.

        Equal to resetting those streams and pushing the ``K`` frames into them alone (the others
        do not advance). ``actions (n, K[, A])`` or one shorter, action ``t`` taken after frame
        ``t``; ``task (n,)``. Returns the clips' per-frame log-likelihoods ``(n, K)``.
        """
        mask = stream_mask(env_ids, self.batch_size).to(self.cache.valid.device)
        codes = self.model.validate_codes(codes, (int(mask.sum()), "K"))
        fresh = StreamingScorer(self.model, codes.shape[0])
        actions = self.model.validate_actions(actions, codes.shape[0], codes.shape[1])
        log_probs = [fresh.push(codes[:, t], action_into(actions, t), task) for t in range(codes.shape[1])]
        self.cache.adopt(mask, fresh.cache)
        self.features[mask] = fresh.features
        return torch.stack(log_probs, dim=1)

    @torch.no_grad()
    def push(self, codes: Tensor, actions: Tensor | None = None, task: Tensor | None = None) -> Tensor:
        """Append one frame ``codes (B, h, w)`` to every stream and return its log-likelihood ``(B,)``.

        ``actions (B,)`` / ``(B, A)`` is the action taken after each stream's *previous*
        frame (ignored for a stream's first frame; None = null action); ``task (B,)``.
        """
        return self.push_scores(codes, actions, task).log_prob

    @torch.no_grad()
    def push_scores(self, codes: Tensor, actions: Tensor | None = None, task: Tensor | None = None) -> CodeScores:
        """:meth:`push`, with the frame's predictive entropy ``(B,)`` (the sum over its codes) beside its log-likelihood."""
        model, b = self.model, self.batch_size
        codes = model.validate_codes(codes, (b,)).flatten(1)
        actions = model.validate_actions(actions, b)
        task = model.validate_task(task, b)
        start = model.embed_start(actions, self.cache.time > 0)
        features = model.step(torch.cat([start[:, None], model.embed_codes(codes)], dim=1), self.cache, task)
        self.features = features[:, -1]
        logits = model.logits(features[:, :-1])
        return CodeScores(model.code_log_prob(logits, codes).sum(-1), model.code_entropy(logits).sum(-1))

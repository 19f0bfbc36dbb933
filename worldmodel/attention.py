"""Attention of the video transformer: rotary positions, the sliding-window mask and the rolling KV cache.

Attention is causal inside a frame and sees the previous ``window`` (k) frames in
full. ``L`` layers reach ``L * k`` frames back, and since no layer ever looks more than
k frames back, a rolling cache of the last k frames' keys/values per layer
(:class:`KVCache`) reproduces the full-sequence forward exactly for streams of any
length (:class:`~worldmodel.streaming.StreamingScorer`).

Positions are rotary embeddings (RoPE) whose rotation pairs are split over time, row
and column. Time is the absolute frame index since the start of the stream: q.k only
depends on offsets, so cached keys stay valid as the window slides, and the angles are
computed in float64 so that frame indices in the millions lose no precision. The start
token sits at row = col = -1, just above and left of the code grid.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from functools import partial
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor, nn

if TYPE_CHECKING:
    from worldmodel.transformer import VideoTransformerConfig

CHUNK_TOKENS = 1024  # full-sequence attention runs over query chunks of at least this many tokens

Attend = Callable[[Tensor, Tensor, Tensor], Tensor]  # (q, k, v) each (B, H, L, D) -> (B, H, L, D)


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


def two_stream_attention(
    frames: int, tokens_per_frame: int, window: int, device: torch.device, dropout_p: float = 0.0
) -> Attend:
    """Attention over a clip's tokens followed by a *draft* copy of them, for masked-code training.

    The first ``frames * tokens_per_frame`` tokens attend as in :func:`sliding_window_attention`.
    A draft token of frame ``f`` sees the clip's tokens of the ``window`` frames before ``f`` and
    every draft token of frame ``f``, whichever its place: what a frame being filled in by
    few-pass sampling sees through the cache (:meth:`KVCache.attention_mask` with
    ``whole_frame=True``). Nothing attends to a draft token of another frame, so the clip's own
    tokens are computed exactly as without the drafts.
    """
    n, length = tokens_per_frame, frames * tokens_per_frame
    index = torch.arange(length, device=device)
    frame, earlier = index // n, index[None, :] <= index[:, None]
    in_window = (frame[None, :] < frame[:, None]) & (frame[None, :] >= frame[:, None] - window)
    same_frame = frame[None, :] == frame[:, None]
    mask = torch.cat([
        torch.cat([in_window | (same_frame & earlier), torch.zeros_like(in_window)], dim=1),
        torch.cat([in_window, same_frame], dim=1),
    ])
    return partial(F.scaled_dot_product_attention, attn_mask=mask, dropout_p=dropout_p)


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

    def attention_mask(self, n: int, whole_frame: bool = False) -> Tensor:
        """Additive ``(B, 1, n, slots * (N + 1))``, 0 or -inf: which cached keys each of ``n`` new tokens sees.

        The window's frames, and the current frame's tokens up to the query's own place, or all
        of them with ``whole_frame`` (a draft frame filled in by masked decoding). Additive rather
        than bool, built once per step for every layer: CPU attention kernels run faster on it
        (every query sees at least itself, so no row is all -inf).
        """
        query = self.offset + torch.arange(n, device=self.valid.device)
        current = (self._key_slot == self.slot) & ((self._key_pos <= query[:, None]) | whole_frame)
        seen = (self.valid[:, self._key_slot][:, None] | current)[:, None]
        return torch.zeros(seen.shape, dtype=self.keys.dtype, device=seen.device).masked_fill_(~seen, float("-inf"))

    def attend(self, layer: int, mask: Tensor, q: Tensor, k: Tensor, v: Tensor) -> Tensor:
        """Store the new tokens' keys/values of ``layer`` and attend over the cache.

        One query per stream (sequential sampling) is written out as two matmuls: the fused
        kernel's set-up costs more than the work there (1.7x slower on a CPU at 64 streams).
        """
        start = self.slot * self.tokens_per_frame + self.offset
        self.keys[layer, :, :, start : start + k.shape[-2]] = k
        self.values[layer, :, :, start : start + v.shape[-2]] = v
        keys, values = self.keys[layer], self.values[layer]
        if q.shape[-2] > 1:
            return F.scaled_dot_product_attention(q, keys, values, attn_mask=mask)
        scores = torch.baddbmm(mask.expand(*q.shape[:2], 1, -1).flatten(0, 1), q.flatten(0, 1),
                               keys.flatten(0, 1).transpose(1, 2), alpha=q.shape[-1] ** -0.5)
        return (scores.softmax(-1) @ values.flatten(0, 1)).view(q.shape)

    def advance(self, n: int) -> None:
        """Mark ``n`` more tokens written; a finished frame joins the window and the oldest leaves it."""
        self.offset += n
        if self.offset == self.tokens_per_frame:
            self.valid[:, self.slot] = True
            self.time += 1
            self.slot = (self.slot + 1) % self.slots
            self.valid[:, self.slot] = False
            self.offset = 0

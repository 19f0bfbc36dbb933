"""How the video transformer's codes are drawn from its logits: temperature, top-k, greedy, and decoding orders.

``sample_logits`` draws one code per row by Gumbel-max over the ``top_k`` largest logits;
a factorised vocabulary is sampled group by group from the same context (the groups
are independent given it), ``top_k`` applying to each group. ``DECODINGS`` are the ways
a frame's codes are produced (see :meth:`worldmodel.streaming.worldmodel.streaming.StreamingSampler.sample`).
The samplers themselves live in :mod:`worldmodel.streaming` and :mod:`worldmodel.rollout`.
"""

from __future__ import annotations

import torch
from torch import Tensor

DECODINGS = ("sequential", "jacobi")


def check_decoding(decoding: str) -> None:
    """Raise unless ``decoding`` names a way to sample a frame's codes (see :meth:`worldmodel.streaming.StreamingSampler.sample`)."""
    if decoding not in DECODINGS:
        raise ValueError(f"decoding must be one of {DECODINGS}, got {decoding!r}")


def check_sampling(temperature: float, top_k: int | None) -> None:
    """Raise unless ``temperature >= 0`` and ``top_k`` is None or a positive int."""
    if not temperature >= 0:
        raise ValueError(f"temperature must be >= 0, got {temperature!r}")
    if top_k is not None and (not isinstance(top_k, int) or top_k < 1):
        raise ValueError(f"top_k must be a positive int or None, got {top_k!r}")


def is_greedy(temperature: float, top_k: int | None) -> bool:
    return temperature == 0 or top_k == 1


def sample_logits(
    logits: Tensor,
    temperature: float = 1.0,
    top_k: int | None = None,
    generator: torch.Generator | None = None,
    uniform: Tensor | None = None,
) -> Tensor:
    """One index per row of ``logits (..., V)``: Gumbel-max on ``logits / temperature`` over the ``top_k`` largest.

    Greedy (argmax, no random numbers drawn) when ``temperature == 0`` or ``top_k == 1``.
    ``uniform`` (the shape of ``logits``) is the noise to use, else drawn from ``generator``,
    which must live on the logits' device.
    """
    if is_greedy(temperature, top_k):
        return logits.argmax(-1)
    logits = logits.float()
    if top_k is not None and top_k < logits.shape[-1]:
        kth = logits.topk(top_k, dim=-1).values[..., -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if uniform is None:
        uniform = torch.rand(logits.shape, generator=generator, device=logits.device)
    return (logits / temperature - torch.log(-torch.log(uniform))).argmax(-1)

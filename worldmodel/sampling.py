"""How the video transformer's codes are drawn from its logits: temperature, top-k, greedy, and decoding orders.

``sample_logits`` draws one code per row from the softmax over the ``top_k`` largest logits;
a factorised vocabulary is sampled group by group from the same context (the groups
are independent given it), ``top_k`` applying to each group. ``DECODINGS`` are the ways
a frame's codes are produced, and :func:`masking_schedule` paces masked decoding (see
:meth:`worldmodel.streaming.StreamingSampler.sample`).
The samplers themselves live in :mod:`worldmodel.streaming` and :mod:`worldmodel.rollout`.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

DECODINGS = ("sequential", "jacobi", "masked")
MASKED_PASSES = 4  # passes of "masked" decoding when the name gives none ("masked:8" gives 8)


def parse_decoding(decoding: str) -> tuple[str, int]:
    """A decoding's name and, for ``"masked"`` / ``"masked:S"``, its passes per frame (else 0); raises on others."""
    name, _, passes = str(decoding).partition(":")
    if name not in DECODINGS or (passes and name != "masked"):
        raise ValueError(f"decoding must be one of {DECODINGS} (or masked:PASSES), got {decoding!r}")
    if name != "masked":
        return name, 0
    if not passes:
        return name, MASKED_PASSES
    if not passes.isdigit() or int(passes) < 1:
        raise ValueError(f"masked decoding needs a positive number of passes, as in masked:4, got {decoding!r}")
    return name, int(passes)


def check_decoding(decoding: str) -> str:
    """Raise unless ``decoding`` names a way to sample a frame's codes (see
    :meth:`worldmodel.streaming.StreamingSampler.sample`); returns it, for argparse's ``type``."""
    parse_decoding(decoding)
    return decoding


def masking_schedule(passes: int, codes: int) -> list[int]:
    """How many of a frame's ``codes`` stay masked after each of ``passes`` passes of masked decoding.

    MaskGIT's cosine schedule, ``floor(N cos(pi s / 2S))`` after pass ``s``: few codes are fixed
    while most are unknown, more as the frame fills in; at least one per pass, none left at the end
    (so a frame of ``N`` codes takes at most ``N`` passes, whatever ``passes`` asks).
    """
    left, schedule = codes, []
    for s in range(1, passes + 1):
        left = max(0, min(left - 1, math.floor(codes * math.cos(math.pi / 2 * s / passes))))
        schedule.append(left)
        if left == 0:
            break
    schedule[-1] = 0
    return schedule


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
    """One index per row of ``logits (..., V)``, from ``softmax(logits / temperature)`` over the ``top_k`` largest.

    By inversion of the cumulative distribution: one uniform number per row, where Gumbel-max
    needs one per logit (and two logarithms of each); with thousands of codes that was a fifth
    of an imagined step on a CPU. Greedy (argmax, no random numbers drawn) when
    ``temperature == 0`` or ``top_k == 1``. ``uniform (...)`` (the shape of ``logits`` without
    its last dim) is the noise to use, else drawn from ``generator``, which must live on the
    logits' device; the index is a deterministic function of the logits and that noise.
    """
    if is_greedy(temperature, top_k):
        return logits.argmax(-1)
    logits = logits.float()
    if temperature != 1:
        logits = logits / temperature
    if top_k is not None and top_k < logits.shape[-1]:
        kth = logits.topk(top_k, dim=-1).values[..., -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if uniform is None:
        uniform = torch.rand(logits.shape[:-1], generator=generator, device=logits.device)
    cdf = logits.softmax(-1).cumsum(-1)
    # right=True: the first index whose cumulative mass exceeds u, never a code of zero probability
    index = torch.searchsorted(cdf, (uniform * cdf[..., -1]).unsqueeze(-1).contiguous(), right=True).squeeze(-1)
    return index.clamp_max(logits.shape[-1] - 1)

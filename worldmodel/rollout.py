"""Generating frame codes from context clips: :func:`sample_frames` and world-model :func:`rollout`.

Both push the context through a :class:`~worldmodel.streaming.StreamingSampler` and sample
with the KV cache, at constant memory. :func:`sample_frames_uncached` recomputes the whole
clip for every token and exists to check the cached path: both draw from the generator in
the same order, so they give identical tokens for the same seed.
"""

from __future__ import annotations

import torch
from torch import Tensor

from worldmodel.sampling import check_sampling, sample_logits
from worldmodel.streaming import Policy, StreamingSampler, action_into
from worldmodel.transformer import VideoTransformer


def _push_context(
    model: VideoTransformer, context: Tensor, actions: Tensor | None, task: Tensor | None
) -> StreamingSampler:
    sampler = StreamingSampler(model, context.shape[0])
    for t in range(context.shape[1]):
        sampler.push(context[:, t], action_into(actions, t), task)
    return sampler


def _validate_request(
    model: VideoTransformer,
    context: Tensor,
    actions: Tensor | None,
    horizon: int,
    temperature: float,
    top_k: int | None,
) -> tuple[Tensor, Tensor | None]:
    """The checks shared by the cached and uncached samplers; returns validated context and actions."""
    check_sampling(temperature, top_k)
    if not isinstance(horizon, int) or horizon < 1:
        raise ValueError(f"horizon must be a positive int, got {horizon!r}")
    context = model.validate_codes(context, ("B", "T0"))
    b, t0 = context.shape[:2]
    return context, model.validate_actions(actions, b, t0 + horizon)


def sample_frames(
    model: VideoTransformer,
    context: Tensor,
    actions: Tensor | None = None,
    task: Tensor | None = None,
    horizon: int = 1,
    temperature: float = 1.0,
    top_k: int | None = None,
    generator: torch.Generator | None = None,
) -> Tensor:
    """Continue context clips ``(B, T0, h, w)`` (``T0 >= 0``) by ``horizon`` frames -> ``(B, horizon, h, w)``.

    ``actions`` cover the whole video as in :meth:`VideoTransformer.log_prob`:
    ``(B, T0 + horizon[, A])`` or one shorter, action ``t`` taken after frame ``t``.
    """
    context, actions = _validate_request(model, context, actions, horizon, temperature, top_k)
    b, t0 = context.shape[:2]
    sampler = _push_context(model, context, actions, task)
    frames = [
        sampler.sample(action_into(actions, t0 + j), task, temperature, top_k, generator) for j in range(horizon)
    ]
    return torch.stack(frames, dim=1)


def rollout(
    model: VideoTransformer,
    context: Tensor,
    horizon: int,
    actions: Tensor | None = None,
    policy: Policy | None = None,
    context_actions: Tensor | None = None,
    task: Tensor | None = None,
    temperature: float = 1.0,
    top_k: int | None = None,
    generator: torch.Generator | None = None,
    decoding: str = "sequential",
) -> Tensor:
    """World-model rollout from context clips ``(B, T0, h, w)`` -> generated codes ``(B, horizon, h, w)``.

    ``context_actions`` are the actions between context frames (``(B, T0[, A])`` or one
    shorter); then each generated frame ``j`` follows ``actions[:, j]`` (``(B, horizon[, A])``)
    or ``policy(latest frame codes)``. Memory is constant in ``horizon`` apart from the output.
    ``decoding`` as in :meth:`StreamingSampler.sample`.
    """
    context = model.validate_codes(context, ("B", "T0"))
    b, t0 = context.shape[:2]
    sampler = _push_context(model, context, model.validate_actions(context_actions, b, t0), task)
    return sampler.rollout(horizon, actions, policy, task, temperature, top_k, generator, decoding)


@torch.no_grad()
def sample_frames_uncached(
    model: VideoTransformer,
    context: Tensor,
    actions: Tensor | None = None,
    task: Tensor | None = None,
    horizon: int = 1,
    temperature: float = 1.0,
    top_k: int | None = None,
    generator: torch.Generator | None = None,
) -> Tensor:
    """Reference for :func:`sample_frames`: a full forward pass for every token (for tests and benchmarks)."""
    context, actions = _validate_request(model, context, actions, horizon, temperature, top_k)
    b, t0 = context.shape[:2]
    video = context
    for _ in range(horizon):
        frame = torch.zeros(b, 1, *model.config.code_shape, dtype=torch.long, device=model.device)
        clip = torch.cat([video, frame], dim=1)
        clip_actions = None if actions is None else actions[:, : clip.shape[1] - 1]
        for i in range(model.config.codes_per_frame):  # later codes are placeholders the causal mask hides
            logits = model(clip, clip_actions, task)[:, -1, i]
            clip[:, -1].view(b, -1)[:, i] = model.join_codes(sample_logits(logits, temperature, top_k, generator))
        video = clip
    return video[:, t0:]

"""Sampling frames from a :class:`VideoTransformer` with the KV cache, at constant memory.

:class:`StreamingSampler` is a :class:`StreamingScorer` that can also generate: ``push``
real frames (context), ``sample`` the next frame of every stream one token per forward
step, or ``rollout`` many frames from an action sequence or a policy. :func:`sample_frames`
and :func:`rollout` wrap it for a batch of context clips. :func:`sample_frames_uncached`
recomputes the whole clip for every token and exists to check the cached path: both draw
from the generator in the same order, so they give identical tokens for the same seed.

A factorised vocabulary is sampled group by group from the same context (the groups
are independent given it); ``top_k`` applies to each group.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch
from torch import Tensor

from worldmodel.transformer import StreamingScorer, VideoTransformer, action_into, stream_mask

Policy = Callable[[Tensor], Tensor]  # latest frame codes (B, h, w) -> actions (B,) or (B, A)
DECODINGS = ("sequential", "jacobi")


def check_decoding(decoding: str) -> None:
    """Raise unless ``decoding`` names a way to sample a frame's codes (see :meth:`StreamingSampler.sample`)."""
    if decoding not in DECODINGS:
        raise ValueError(f"decoding must be one of {DECODINGS}, got {decoding!r}")


def _check_sampling(temperature: float, top_k: int | None) -> None:
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


class StreamingSampler(StreamingScorer):
    """Per-stream generation through the rolling KV cache (see :class:`StreamingScorer`)."""

    def __init__(self, model: VideoTransformer, batch_size: int) -> None:
        super().__init__(model, batch_size)
        self.latest: Tensor | None = None  # (B, h, w): each stream's last pushed or sampled frame
        self.frame_steps = 0  # model steps the last sampled frame took

    def push(self, codes: Tensor, actions: Tensor | None = None, task: Tensor | None = None) -> Tensor:
        log_prob = super().push(codes, actions, task)
        self.latest = self.model.validate_codes(codes, (self.batch_size,))
        return log_prob

    def start(
        self,
        env_ids: Sequence[int] | Sequence[bool] | Tensor | np.ndarray,
        codes: Tensor,
        actions: Tensor | None = None,
        task: Tensor | None = None,
    ) -> Tensor:
        mask = stream_mask(env_ids, self.batch_size).to(self.model.device)
        log_probs = super().start(mask, codes, actions, task)
        if self.latest is None:
            self.latest = torch.zeros(self.batch_size, *self.model.config.code_shape, dtype=torch.long, device=mask.device)
        self.latest[mask] = torch.as_tensor(codes, device=mask.device)[:, -1].long()
        return log_probs

    @torch.no_grad()
    def sample(
        self,
        actions: Tensor | None = None,
        task: Tensor | None = None,
        temperature: float = 1.0,
        top_k: int | None = None,
        generator: torch.Generator | None = None,
        decoding: str = "sequential",
    ) -> Tensor:
        """Generate and append the next frame ``(B, h, w)`` of every stream.

        ``actions`` as in :meth:`push`: taken after each stream's previous frame. ``decoding``:
        ``"sequential"``, one code per forward step, or ``"jacobi"``, all codes of the frame per
        step until they stop changing (:meth:`_sample_jacobi`): the same frames for the same
        generator, in fewer, larger steps.
        """
        _check_sampling(temperature, top_k)
        check_decoding(decoding)
        model, cache, b = self.model, self.cache, self.batch_size
        actions = model.validate_actions(actions, b)
        task = model.validate_task(task, b)
        if decoding == "jacobi":
            return self._sample_jacobi(actions, task, temperature, top_k, generator)
        token = model.embed_start(actions, cache.time > 0)[:, None]
        codes = []
        for _ in range(model.config.codes_per_frame):
            logits = model.logits(model.step(token, cache, task)[:, 0])
            code = model.join_codes(sample_logits(logits, temperature, top_k, generator))
            codes.append(code)
            token = model.embed_codes(code)[:, None]
        self.features = model.step(token, cache, task)[:, 0]  # the last code's keys and values, and the frame's features
        self.frame_steps = model.config.tokens_per_frame
        self.latest = torch.stack(codes, dim=1).view(b, *model.config.code_shape)
        return self.latest

    def _sample_jacobi(
        self,
        actions: Tensor | None,
        task: Tensor | None,
        temperature: float,
        top_k: int | None,
        generator: torch.Generator | None,
    ) -> Tensor:
        """Jacobi decoding of a frame (Song et al., 2021; Santilli et al., 2023), exact.

        The noise of every code is drawn first, in the sequential sampler's order, so each code
        is a deterministic function of the codes before it. A draft frame (each stream's latest
        frame: much of a scene stays put) goes through the model in one step; every code is
        re-picked from its logits, and the step repeats on the new draft until nothing changes.
        After ``j`` steps the first ``j`` codes are final, so this ends within ``N + 1`` steps
        with the sequential sampler's frame (the logits differ only by float rounding, which
        could flip a near-tie); it is faster when a few steps suffice.
        """
        model, cache, b = self.model, self.cache, self.batch_size
        n, groups, vocab = model.config.codes_per_frame, model.config.factorized_groups, model.config.group_vocab
        uniform = None
        if not is_greedy(temperature, top_k):
            uniform = torch.rand((n, b, groups, vocab), generator=generator, device=model.device).transpose(0, 1)
        start = model.embed_start(actions, cache.time > 0)[:, None]
        draft = torch.zeros(b, n, dtype=torch.long, device=model.device) if self.latest is None else self.latest.reshape(b, n)
        self.frame_steps = 0
        while True:
            features = model.step(torch.cat([start, model.embed_codes(draft)], dim=1), cache, task, advance=False)
            codes = model.join_codes(sample_logits(model.logits(features[:, :-1]), temperature, top_k, uniform=uniform))
            self.frame_steps += 1
            if torch.equal(codes, draft):
                break
            draft = codes
        cache.advance(n + 1)  # the last step's keys and values are those of the final codes
        self.features = features[:, -1]
        self.latest = codes.view(b, *model.config.code_shape)
        return self.latest

    def rollout(
        self,
        horizon: int,
        actions: Tensor | None = None,
        policy: Policy | None = None,
        task: Tensor | None = None,
        temperature: float = 1.0,
        top_k: int | None = None,
        generator: torch.Generator | None = None,
        decoding: str = "sequential",
    ) -> Tensor:
        """Generate ``horizon`` frames per stream -> codes ``(B, horizon, h, w)``.

        The action leading into generated frame ``j`` is ``actions[:, j]`` (``actions``
        of shape ``(B, horizon)`` or ``(B, horizon, A)``) or ``policy(latest)``, called
        before each frame with every stream's latest frame codes ``(B, h, w)``. Only the
        returned codes grow with ``horizon``; the cache stays at ``window`` frames.
        ``decoding`` as in :meth:`sample`.
        """
        if not isinstance(horizon, int) or horizon < 1:
            raise ValueError(f"horizon must be a positive int, got {horizon!r}")
        if actions is not None and policy is not None:
            raise ValueError("give an action sequence or a policy, not both")
        if actions is not None:
            actions = torch.as_tensor(actions)
            if tuple(actions.shape[:2]) != (self.batch_size, horizon):
                raise ValueError(
                    f"expected actions of shape ({self.batch_size}, {horizon}[, A]), got {tuple(actions.shape)}"
                )
        frames = []
        for j in range(horizon):
            if actions is not None:
                action = actions[:, j]
            elif policy is not None and self.latest is not None:
                action = policy(self.latest)
            else:
                action = None
            frames.append(self.sample(action, task, temperature, top_k, generator, decoding))
        return torch.stack(frames, dim=1)


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
    _check_sampling(temperature, top_k)
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

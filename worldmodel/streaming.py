"""Frame-at-a-time scoring and sampling through the rolling KV cache, at constant memory.

:class:`StreamingScorer` gives ``log p(frame | that stream's history)`` for a batch of
streams, one frame per call, equal to the full-sequence :meth:`VideoTransformer.log_prob`
however long the streams run (the sliding-window mask makes the rolling cache exact; see
:mod:`worldmodel.attention`). :class:`StreamingSampler` is a scorer that can also generate:
``push`` real frames (context), ``sample`` the next frame of every stream one token per
forward step (or a whole frame per step, Jacobi decoding), or ``rollout`` many frames from
an action sequence or a policy. Clip-level wrappers are in :mod:`worldmodel.rollout`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch
from torch import Tensor

from worldmodel.sampling import check_sampling, is_greedy, masking_schedule, parse_decoding, sample_logits
from worldmodel.transformer import CodeScores, VideoTransformer, is_integer_tensor

Policy = Callable[[Tensor], Tensor]  # latest frame codes (B, h, w) -> actions (B,) or (B, A)


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
    if ids.ndim != 1 or not is_integer_tensor(ids):
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
        ``"sequential"``, one code per forward step; ``"jacobi"``, all codes of the frame per
        step until they stop changing (:meth:`_sample_jacobi`): the same frames for the same
        generator, in fewer, larger steps; or ``"masked"`` / ``"masked:S"``, the frame filled in
        over ``S`` parallel passes (:meth:`_sample_masked`; a model trained with ``masked_decoding``):
        other frames, in ``S + 1`` steps.
        """
        check_sampling(temperature, top_k)
        name, passes = parse_decoding(decoding)
        model, cache, b = self.model, self.cache, self.batch_size
        actions = model.validate_actions(actions, b)
        task = model.validate_task(task, b)
        if name == "jacobi":
            return self._sample_jacobi(actions, task, temperature, top_k, generator)
        if name == "masked":
            return self._sample_masked(actions, task, temperature, top_k, generator, passes)
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
        n, groups = model.config.codes_per_frame, len(model.config.factors)
        uniform = None
        if not is_greedy(temperature, top_k):
            uniform = torch.rand((n, b, groups), generator=generator, device=model.device).transpose(0, 1)
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

    def _sample_masked(
        self,
        actions: Tensor | None,
        task: Tensor | None,
        temperature: float,
        top_k: int | None,
        generator: torch.Generator | None,
        passes: int,
    ) -> Tensor:
        """Masked decoding of a frame (MaskGIT, Chang et al. 2022): ``passes`` passes over a draft, one to cache it.

        The draft starts all masked. Each pass draws a code for every masked place from the
        draft stream's logits (given the window's frames and the codes fixed so far) and fixes
        the most probable of those draws, as many as :func:`~worldmodel.sampling.masking_schedule`
        says; the last pass fixes the rest. The finished frame then runs through the model's own
        (causal) stream once, which writes its keys and values to the cache, so later frames and
        scores see it exactly as a pushed frame.
        """
        model, cache, b = self.model, self.cache, self.batch_size
        n = model.config.codes_per_frame
        start = model.embed_start(actions, cache.time > 0)
        codes = torch.zeros(b, n, dtype=torch.long, device=model.device)
        masked = torch.ones(b, n, dtype=torch.bool, device=model.device)
        schedule = masking_schedule(passes, n)
        for left in schedule:
            draft = model.embed_draft(start, codes, masked)
            logits = model.logits(model.step(draft, cache, task, advance=False, whole_frame=True)[:, 1:])
            drawn = model.join_codes(sample_logits(logits, temperature, top_k, generator))
            confidence = model.code_log_prob(logits, drawn).masked_fill(~masked, float("inf"))
            fixed = confidence.argsort(-1, descending=True).argsort(-1) < n - left  # fixed codes rank first
            codes = torch.where(masked, drawn, codes)
            masked = ~fixed
        self.features = model.step(torch.cat([start[:, None], model.embed_codes(codes)], dim=1), cache, task)[:, -1]
        self.frame_steps = len(schedule) + 1
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

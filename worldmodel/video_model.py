"""The video model bundle: tokenizer + transformer + the facts needed to use them on pixels.

One directory holds everything a consumer (VIPER reward, world-model env, rollout
generator) needs::

    model/
      bundle.json     kind, tokenizer kind, frame size, code grid, vocabulary, window,
                      frame skip, action space, task names, reward statistics
      tokenizer/      tokenizer checkpoint (any family, see worldmodel.tokenizer)
      transformer/    VideoTransformer checkpoint

It is written atomically as a whole, and loading checks that the parts fit each other
and ``bundle.json``. All methods take and return uint8 frames ``(..., H, W, 3)``; the
codes stay inside.

A bundle on a causal video tokenizer (code steps of ``k > 1`` frames) continues videos
(:meth:`VideoModel.continue_video`) but does not stream frame by frame: scoring, sampling and
envs need a per-frame tokenizer, and say so.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from worldmodel.checkpoint import CheckpointError, atomic_directory, read_json
from worldmodel.code_rate import aligned_frames, group_actions
from worldmodel.device import AUTO, resolve_device
from worldmodel.rollout import rollout
from worldmodel.streaming import StreamingSampler, StreamingScorer
from worldmodel.tokenizer import LEGACY_TOKENIZER_KIND, Tokenizer, load_tokenizer
from worldmodel.transformer import CodeScores, VideoTransformer

BUNDLE_KIND = "video_model"
BUNDLE_FILE = "bundle.json"
TOKENIZER_DIR = "tokenizer"
TRANSFORMER_DIR = "transformer"

FramePolicy = Callable[[Tensor], Tensor]  # latest frames uint8 (B, H, W, 3) -> actions (B,) or (B, A)


@dataclass
class VideoModelInfo:
    """What the weights do not say: how frames were taken, what actions and tasks mean.

    ``frame_skip`` is env steps between consecutive model frames. ``reward_stats`` maps a
    task name to ``{"mean": ..., "std": ...}`` of its per-frame log-likelihoods on expert
    data (and ``entropy_adjusted_mean`` / ``_std`` of the entropy-adjusted score), filled in
    by VIPER to normalise rewards.
    """

    frame_skip: int = 1
    action_space: dict[str, Any] | None = None
    tasks: list[str] = field(default_factory=list)
    reward_stats: dict[str, dict[str, float]] = field(default_factory=dict)


def check_parts_fit(tokenizer: Tokenizer, transformer: VideoTransformer) -> None:
    """Raise ValueError unless the transformer models exactly the codes the tokenizer makes."""
    config = transformer.config
    if tokenizer.vocab_size != config.vocab_size or tokenizer.code_shape != config.code_shape:
        raise ValueError(
            f"the tokenizer makes {tokenizer.code_shape} codes from {tokenizer.vocab_size} values, but the "
            f"transformer models {config.code_shape} codes from {config.vocab_size}"
        )


class VideoModel(nn.Module):
    """A trained :class:`~worldmodel.tokenizer.Tokenizer` and :class:`VideoTransformer` used together on pixels.

    Kept in eval mode: it scores and samples, training happens on the parts.
    """

    def __init__(self, tokenizer: Tokenizer, transformer: VideoTransformer, info: VideoModelInfo) -> None:
        super().__init__()
        check_parts_fit(tokenizer, transformer)
        num_tasks = transformer.config.num_tasks
        if num_tasks and len(info.tasks) != num_tasks:
            raise ValueError(f"the transformer is conditioned on {num_tasks} tasks, but {len(info.tasks)} are named")
        unknown = sorted(set(info.reward_stats) - set(info.tasks))
        if unknown:
            raise ValueError(f"reward statistics for tasks {unknown} that are not in {info.tasks}")
        self.tokenizer = tokenizer
        self.transformer = transformer
        self.info = info
        self.eval()

    @property
    def image_size(self) -> int:
        return self.tokenizer.image_size

    @property
    def window(self) -> int:
        return self.transformer.config.window

    @property
    def frames_per_code_step(self) -> int:
        return self.tokenizer.frames_per_code_step

    def require_per_frame(self, use: str) -> None:
        """Raise ValueError unless each code step is one frame, as ``use`` (a frame-by-frame consumer) needs."""
        k = self.frames_per_code_step
        if k != 1:
            raise ValueError(f"{use} goes frame by frame, but this model's code steps stand for {k} frames each (a "
                             "causal video tokenizer): it continues videos (continue_video, wm eval-consistency) but "
                             "needs a per-frame tokenizer for this")

    def task_id(self, name: str) -> int:
        """Index of a task name, as the transformer's ``task`` inputs expect."""
        if name not in self.info.tasks:
            raise ValueError(f"unknown task {name!r}; this model knows {self.info.tasks}")
        return self.info.tasks.index(name)

    @torch.no_grad()
    def log_prob(
        self, frames: Tensor | np.ndarray, actions: Tensor | None = None, task: Tensor | None = None
    ) -> Tensor:
        """Per-frame log-likelihood ``(B, T)`` of uint8 clips ``(B, T, H, W, 3)`` in one pass.

        ``actions`` and ``task`` as in :meth:`VideoTransformer.log_prob`.
        """
        self.require_per_frame("log_prob")
        return self.transformer.log_prob(self.tokenizer.encode(frames), actions, task)

    def scorer(self, batch_size: int) -> FrameScorer:
        """A streaming scorer of ``batch_size`` streams that takes frames, one per stream per call."""
        return FrameScorer(self, batch_size)

    def sampler(self, batch_size: int) -> FrameSampler:
        """A streaming generator of ``batch_size`` streams: push real frames, then sample, a frame per call."""
        return FrameSampler(self, batch_size)

    @torch.no_grad()
    def rollout(
        self,
        context_frames: Tensor | np.ndarray,
        horizon: int,
        actions: Tensor | None = None,
        policy: FramePolicy | None = None,
        context_actions: Tensor | None = None,
        task: Tensor | None = None,
        temperature: float = 1.0,
        top_k: int | None = None,
        generator: torch.Generator | None = None,
        decoding: str = "sequential",
    ) -> Tensor:
        """Continue uint8 clips ``(B, T0, H, W, 3)`` by ``horizon`` generated frames ``(B, horizon, H, W, 3)``.

        As :func:`worldmodel.rollout.rollout`, except that ``policy`` sees each stream's
        latest frame as uint8 pixels ``(B, H, W, 3)``.
        """
        self.require_per_frame("rollout")
        codes = self.tokenizer.encode(context_frames)
        code_policy = None if policy is None else (lambda latest: policy(self.tokenizer.decode(latest)))
        generated = rollout(
            self.transformer, codes, horizon, actions, code_policy, context_actions, task, temperature, top_k, generator,
            decoding,
        )
        return self.tokenizer.decode(generated)

    @torch.no_grad()
    def continue_video(
        self,
        videos: Tensor | np.ndarray,
        context: int,
        horizon: int,
        actions: Tensor | np.ndarray | None = None,
        task: Tensor | None = None,
        temperature: float = 1.0,
        top_k: int | None = None,
        generator: torch.Generator | None = None,
        decoding: str = "sequential",
    ) -> Tensor:
        """Generate frames ``context .. context + horizon - 1`` of uint8 videos ``(B, >= context, H, W, 3)``.

        The first ``context`` frames are given; ``actions (B, >= context + horizon - 1[, A])`` are
        the videos' own (action ``t`` taken after frame ``t``) and are used when the model takes
        actions, ignored when it does not. ``decoding`` as in :meth:`StreamingSampler.sample`.
        Returns ``(B, horizon, H, W, 3)`` uint8. On a causal video tokenizer of ``k`` frames per code step
        the context is its last ``1 + k m`` frames, ``ceil(horizon / k)`` code steps are generated, and the
        actions that would follow the horizon within the last step are zeros.
        """
        if context < 1 or horizon < 1:
            raise ValueError(f"need context >= 1 and horizon >= 1, got {context} and {horizon}")
        if np.shape(videos)[1] < context:
            raise ValueError(f"videos have {np.shape(videos)[1]} frames, fewer than the context of {context}")
        k = self.frames_per_code_step
        start = context - aligned_frames(context, k)  # the context a causal video tokenizer encodes: 1 + k m frames
        context_steps = 1 + (context - 1 - start) // k
        steps = -(-horizon // k)  # code steps to generate
        context_actions = future_actions = None
        if self.transformer.config.action_kind is not None:
            if actions is None:
                raise ValueError("this model takes actions: give the videos' actions")
            actions = np.asarray(actions)
            if actions.shape[1] < context + horizon - 1:
                raise ValueError(
                    f"{actions.shape[1]} actions per video cannot lead into frame {context + horizon - 1}"
                )
            # the actions of the generated code steps' frames; those past the horizon are filled in with zeros
            grouped = torch.as_tensor(group_actions(actions[:, start : context + horizon - 1], k,
                                                    self.info.action_space))
            context_actions = grouped[:, :context_steps]
            future_actions = grouped[:, context_steps - 1 : context_steps - 1 + steps]
        codes = self.tokenizer.encode(torch.as_tensor(np.asarray(videos[:, start:context])))
        generated = rollout(
            self.transformer, codes, steps, future_actions, None, context_actions, task, temperature, top_k,
            generator, decoding,
        )
        if k == 1:
            return self.tokenizer.decode(generated)
        # a causal decoder reads each code step after the ones before it: decode the context's codes too
        frames = self.tokenizer.decode(torch.cat([codes, generated], dim=1))
        return frames[:, context - start : context - start + horizon]

    @torch.no_grad()
    def reconstruct(self, videos: Tensor | np.ndarray, context: int, horizon: int) -> Tensor:
        """Frames ``context .. context + horizon - 1`` of uint8 videos encoded and decoded, with the context
        :meth:`continue_video` gives the tokenizer: the best any model on these codes can predict them.

        A causal video tokenizer's last code step may reach past the videos; the last frame is repeated there.
        """
        k = self.frames_per_code_step
        start = context - aligned_frames(context, k)
        videos = torch.as_tensor(np.asarray(videos[:, start : context + horizon]))
        missing = aligned_frames(videos.shape[1] + k - 1, k) - videos.shape[1]
        videos = torch.cat([videos, videos[:, -1:].expand(-1, missing, -1, -1, -1)], dim=1)
        frames = self.tokenizer.decode(self.tokenizer.encode(videos))
        return frames[:, context - start : context - start + horizon]

    def with_window(self, window: int) -> VideoModel:
        """This bundle with the transformer's attention cut to ``window`` frames (weights shared)."""
        return VideoModel(self.tokenizer, self.transformer.with_window(window), self.info)

    def save(self, directory: str | Path) -> None:
        """Write the bundle directory atomically: both parts and ``bundle.json``, or nothing."""
        with atomic_directory(directory) as tmp:
            self.tokenizer.save(tmp / TOKENIZER_DIR)
            self.transformer.save(tmp / TRANSFORMER_DIR)
            bundle = {
                "kind": BUNDLE_KIND,
                "tokenizer_kind": self.tokenizer.kind,
                "image_size": self.image_size,
                "code_shape": list(self.tokenizer.code_shape),
                "vocab_size": self.tokenizer.vocab_size,
                "window": self.window,
                "frame_skip": self.info.frame_skip,
                "action_space": self.info.action_space,
                "tasks": self.info.tasks,
                "reward_stats": self.info.reward_stats,
            }
            (tmp / BUNDLE_FILE).write_text(json.dumps(bundle, indent=2, sort_keys=True))

    @classmethod
    def load(cls, directory: str | Path, map_location: str | torch.device = AUTO) -> VideoModel:
        """Rebuild a bundle from :meth:`save` on ``map_location`` (``"auto"``: CUDA when available, see
        :func:`worldmodel.device.resolve_device`); CheckpointError names any missing or mismatched part."""
        map_location = resolve_device(map_location)
        directory = Path(directory)
        if not directory.is_dir():
            raise CheckpointError(f"no video model directory at {directory}")
        bundle = read_json(directory / BUNDLE_FILE)
        if bundle.get("kind") != BUNDLE_KIND:
            raise CheckpointError(f"{directory} is of kind {bundle.get('kind')!r}, expected {BUNDLE_KIND!r}")
        tokenizer = load_tokenizer(directory / TOKENIZER_DIR, map_location)
        transformer = VideoTransformer.load(directory / TRANSFORMER_DIR, map_location)
        actual = {
            "tokenizer_kind": tokenizer.kind,
            "image_size": tokenizer.image_size,
            "code_shape": list(tokenizer.code_shape),
            "vocab_size": tokenizer.vocab_size,
            "window": transformer.config.window,
        }
        bundle.setdefault("tokenizer_kind", LEGACY_TOKENIZER_KIND)
        wrong = [k for k, v in actual.items() if bundle.get(k) != v]
        if wrong:
            details = "; ".join(f"{k}: bundle.json says {bundle.get(k)}, the parts have {actual[k]}" for k in wrong)
            raise CheckpointError(f"{directory}: bundle.json does not match its parts ({details})")
        try:
            info = VideoModelInfo(bundle["frame_skip"], bundle["action_space"], bundle["tasks"], bundle["reward_stats"])
            return cls(tokenizer, transformer, info)
        except (KeyError, ValueError) as err:
            raise CheckpointError(f"{directory}: inconsistent video model ({err})") from err


class FrameScorer:
    """:class:`StreamingScorer` on pixels: each :meth:`push` encodes one frame per stream and scores it.

    Equal to :meth:`VideoModel.log_prob` of each stream's frames since its last reset.
    """

    def __init__(self, model: VideoModel, batch_size: int) -> None:
        model.require_per_frame("a frame scorer")
        self.tokenizer = model.tokenizer
        self.scorer = StreamingScorer(model.transformer, batch_size)

    @property
    def batch_size(self) -> int:
        return self.scorer.batch_size

    def reset(self, env_ids: Sequence[int] | Sequence[bool] | Tensor | np.ndarray | None = None) -> None:
        """Clear the history of some streams (ids or a bool mask; None = all)."""
        self.scorer.reset(env_ids)

    def push(self, frames: Tensor | np.ndarray, actions: Tensor | None = None, task: Tensor | None = None) -> Tensor:
        """Append uint8 frames ``(B, H, W, 3)`` and return their log-likelihoods ``(B,)``.

        ``actions`` are those taken after each stream's previous frame, as in
        :meth:`StreamingScorer.push`.
        """
        return self.scorer.push(self.tokenizer.encode(frames), actions, task)

    def push_scores(
        self, frames: Tensor | np.ndarray, actions: Tensor | None = None, task: Tensor | None = None
    ) -> CodeScores:
        """:meth:`push`, with each frame's predictive entropy ``(B,)`` beside its log-likelihood."""
        return self.scorer.push_scores(self.tokenizer.encode(frames), actions, task)


class FrameSampler:
    """:class:`~worldmodel.streaming.StreamingSampler` on pixels, at constant memory however long it runs.

    :meth:`push` real uint8 frames ``(B, H, W, 3)`` (context), :meth:`sample` the next frame of every
    stream; both take the action that led into the frame, as :meth:`StreamingScorer.push` does.
    """

    def __init__(self, model: VideoModel, batch_size: int) -> None:
        model.require_per_frame("a frame sampler")
        self.tokenizer = model.tokenizer
        self.sampler = StreamingSampler(model.transformer, batch_size)

    @torch.no_grad()
    def push(self, frames: Tensor | np.ndarray, actions: Tensor | None = None, task: Tensor | None = None) -> Tensor:
        """Append real frames; returns their log-likelihoods ``(B,)``."""
        return self.sampler.push(self.tokenizer.encode(frames), actions, task)

    @torch.no_grad()
    def start(
        self,
        env_ids: Sequence[int] | Sequence[bool] | Tensor | np.ndarray,
        frames: Tensor | np.ndarray,
        actions: Tensor | np.ndarray | None = None,
        task: Tensor | None = None,
    ) -> Tensor:
        """Restart some streams from real clips ``(n, K, H, W, 3)`` (the others untouched); their log-likelihoods ``(n, K)``.

        As :meth:`StreamingScorer.start`: ``actions (n, K[, A])`` or one shorter.
        """
        return self.sampler.start(env_ids, self.tokenizer.encode(frames), actions, task)

    def predict_outcome(self) -> tuple[Tensor | None, Tensor | None]:
        """Each stream's reward into its latest frame and probability of going on after it, ``(B,)`` each.

        None for a head the transformer lacks (:meth:`VideoTransformer.predict_outcome`).
        """
        return self.sampler.model.predict_outcome(self.sampler.features)

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
        """Generate, append and return the next frame of every stream, uint8 ``(B, H, W, 3)``.

        ``decoding`` as in :meth:`StreamingSampler.sample` (``"jacobi"``: the same frames in fewer steps).
        """
        codes = self.sampler.sample(actions, task, temperature, top_k, generator, decoding)
        return self.tokenizer.decode(codes)

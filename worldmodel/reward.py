"""The VIPER reward: a video model's score of each new frame, streamed step by step or offline.

Video Prediction Rewards (Escontrela et al., 2023): a video model trained on expert videos
scores an agent's transition ``x_t -> x_{t+1}`` by ``log p(x_{t+1} | recent frames)``
(action-free), so behaviour that looks like the expert's earns reward. This module is the
reward's math, shared by the gymnasium wrappers (:mod:`envs.viper`) and the offline
evaluations; it knows nothing of environments.

Options:

- ``score="log_prob"`` (VIPER) or ``"entropy_adjusted"``: ``log p + H``, the log-likelihood
  plus the model's predictive entropy of the same codes (:func:`worldmodel.likelihood.code_values`).
- ``mode="conditional"`` (default): the newest frame's score; ``mode="joint"``: the sum of
  the last ``joint_frames`` frames' scores, i.e. their joint log-likelihood given what
  came before them (a smoother reward).
- ``context_stride`` s: the model sees every s-th frame, and frame t is scored given
  ``x_{t-s}, x_{t-2s}, ...`` of its episode (s interleaved streams per env).
- ``task``: the task the model is conditioned on (and whose statistics standardise).
- ``score_mask``: pixels (H, W) hidden from the model, e.g. an Atari scoreboard.
- ``standardize``: ``(score - mean) / std`` with the per-frame statistics measured on the
  expert data and stored in the model bundle (a public VIPER port's normalisation).
- ``baseline``: a second video model of the same env trained on non-expert play (random
  actions: free to collect, no expert or reward needed). The score becomes the
  log-likelihood ratio ``score_expert - score_baseline``, so what any model of the env
  predicts well (an empty picture, a still scene) cancels and only what is specific to the
  expert is rewarded. Standardised by the expert statistics' std alone: the baseline's
  score takes the place of the mean. ``baseline_task`` names the task the baseline is conditioned on
  (default ``task``): with a model conditioned on the data's source (expert episodes as task ``T``, play
  as ``T@play``), one model is both, ``log p(x | T) - log p(x | T@play)``.
- ``frame_weight`` w (needs a baseline): adds w times the ratio of the newest frame's scores
  *alone*, given no earlier frame: how much likelier the picture itself is among the expert's
  frames than among the baseline's (a density ratio of states, as in adversarial imitation).
  The conditional score judges motion: an agent holding still anywhere is predictable under
  both models, which the conditional ratio can pay for; the frame's own density pays for
  where it holds still. Standardised by the same std as the conditional term.
"""

from __future__ import annotations

import numpy as np
import torch

from worldmodel.likelihood import SCORES, code_values, episode_code_scores, stat_key
from worldmodel.streaming import StreamingScorer
from worldmodel.token_cache import tokenizer_fingerprint
from worldmodel.transformer import CodeScores
from worldmodel.video_model import VideoModel

MODES = ("conditional", "joint")


class VideoLikelihoodReward:
    """VIPER rewards for ``num_envs`` parallel episodes, one batched scorer call per step.

    Call it with each step's frames ``(N, H, W, 3)`` and which envs start a new episode
    with that frame (their reset frame is context, not rewarded). Frame ``t`` of the
    run goes to the phase ``t mod s`` scorer for every env; an env's new episode clears
    its streams in all phases, so each phase stream holds that env's every s-th frame.
    """

    def __init__(
        self,
        model: VideoModel,
        num_envs: int,
        *,
        task: str | None = None,
        score: str = "log_prob",
        mode: str = "conditional",
        joint_frames: int | None = None,
        context_stride: int = 1,
        standardize: bool = True,
        score_mask: np.ndarray | None = None,
        baseline: VideoModel | None = None,
        frame_weight: float = 0.0,
        baseline_task: str | None = None,
    ) -> None:
        if score not in SCORES:
            raise ValueError(f"unknown VIPER reward score {score!r}; expected one of {SCORES}")
        if mode not in MODES:
            raise ValueError(f"unknown VIPER reward mode {mode!r}; expected one of {MODES}")
        if not isinstance(context_stride, int) or context_stride < 1:
            raise ValueError(f"context_stride must be a positive int, got {context_stride!r}")
        for video_model in (model, baseline):
            if video_model is not None:
                video_model.require_per_frame("a VIPER reward")
        self.model = model
        self.num_envs = num_envs
        self.score = score
        self.mode = mode
        self.joint_frames = (model.window + 1 if joint_frames is None else joint_frames) if mode == "joint" else 1
        if self.joint_frames < 1:
            raise ValueError(f"joint_frames must be >= 1, got {joint_frames}")
        self.stride = context_stride
        if frame_weight < 0 or (frame_weight > 0 and baseline is None):
            raise ValueError(
                f"frame_weight must be >= 0 and needs a baseline model (it weighs a density ratio of frames), got "
                f"{frame_weight} {'with' if baseline is not None else 'without'} a baseline"
            )
        self.frame_weight = float(frame_weight)
        self.task_name = self._task_name(task)
        task_id = model.task_id(self.task_name) if model.transformer.config.num_tasks else None
        self.task = None if task_id is None else torch.full((num_envs,), task_id, device=model.transformer.device)
        self.baseline = baseline
        if baseline_task is not None and baseline is None:
            raise ValueError(f"baseline_task {baseline_task!r} names the baseline model's task, but there is no "
                             "baseline")
        self.baseline_task = None if baseline is None else self._baseline_task(baseline, num_envs, baseline_task)
        self.mean, self.std = self._statistics(standardize)
        size = model.image_size
        if score_mask is not None:
            score_mask = np.asarray(score_mask)
            if score_mask.shape != (size, size) or score_mask.dtype != bool:
                raise ValueError(f"score_mask must be a bool array of shape ({size}, {size}), got "
                                 f"{score_mask.shape} {score_mask.dtype}")
        self.score_mask = score_mask
        # One encode serves both models when they share a tokenizer (a baseline trained on the expert's tokenizer).
        self.shared_tokenizer = baseline is not None and (
            tokenizer_fingerprint(baseline.tokenizer) == tokenizer_fingerprint(model.tokenizer)
        )
        self.scorers = [StreamingScorer(model.transformer, num_envs) for _ in range(context_stride)]
        self.baseline_scorers = [] if baseline is None else [
            StreamingScorer(baseline.transformer, num_envs) for _ in range(context_stride)
        ]
        self.recent = np.zeros((num_envs, context_stride, self.joint_frames), np.float32)  # standardised scores
        self.steps = 0

    def _task_name(self, task: str | None) -> str | None:
        tasks = self.model.info.tasks
        if task is not None:
            self.model.task_id(task)  # raises with the known names
            return task
        if self.model.transformer.config.num_tasks:
            raise ValueError(f"this video model is conditioned on tasks {tasks}: pass task=<name>")
        return tasks[0] if len(tasks) == 1 else None

    def _baseline_task(self, baseline: VideoModel, num_envs: int, name: str | None) -> torch.Tensor | None:
        """The baseline's task ids (of ``name``, else the expert's task); it must see the same frames on the same
        code grid as the expert model."""
        ours, theirs = self.model.transformer.config, baseline.transformer.config
        if (baseline.image_size, baseline.info.frame_skip, theirs.code_shape) != (
            self.model.image_size, self.model.info.frame_skip, ours.code_shape
        ):
            raise ValueError(
                f"the baseline video model sees {baseline.image_size}px frames {baseline.info.frame_skip} env steps "
                f"apart as {theirs.code_shape} codes, the expert model {self.model.image_size}px, "
                f"{self.model.info.frame_skip} steps, {ours.code_shape}: a likelihood ratio needs them equal"
            )
        if not theirs.num_tasks:
            if name is not None:
                raise ValueError(f"baseline_task {name!r}: the baseline model is not conditioned on tasks")
            return None
        name = self.task_name if name is None else name
        if name is None:
            raise ValueError(f"the baseline model is conditioned on tasks {baseline.info.tasks}: pass task=<name>")
        return torch.full((num_envs,), baseline.task_id(name), device=baseline.transformer.device)

    def _statistics(self, standardize: bool) -> tuple[float, float]:
        if not standardize:
            return 0.0, 1.0
        stats = self.model.info.reward_stats.get(self.task_name) if self.task_name is not None else None
        mean_key, std_key = stat_key(self.score, "mean"), stat_key(self.score, "std")
        if stats is None or mean_key not in stats or std_key not in stats:
            raise ValueError(
                f"the video model has no {self.score} reward statistics for task {self.task_name!r} (it has "
                f"{sorted(self.model.info.reward_stats)}): run `wm calibrate-reward` on its expert data, "
                "or pass standardize=False"
            )
        mean = 0.0 if self.baseline is not None else float(stats[mean_key])
        return mean, float(stats[std_key])

    def _model_frames(self, frames: np.ndarray, count: int | None) -> np.ndarray:
        """Checked uint8 frames ``(count, H, W, 3)`` with the score mask applied."""
        size = self.model.image_size
        frames = np.asarray(frames)
        if (
            frames.ndim != 4 or frames.shape[1:] != (size, size, 3) or frames.dtype != np.uint8
            or (count is not None and len(frames) != count)
        ):
            raise ValueError(
                f"the video model scores uint8 frames of shape ({count or 'T'}, {size}, {size}, 3), got "
                f"{frames.shape} {frames.dtype}: make the env's frames match the model's image size"
            )
        if self.score_mask is not None:
            frames = np.where(self.score_mask[None, :, :, None], np.uint8(0), frames)
        return frames

    def __call__(self, frames: np.ndarray, new_episode: np.ndarray) -> np.ndarray:
        """Rewards ``(N,)`` float32 for frames ``(N, H, W, 3)`` uint8; 0 where ``new_episode`` (N,) is True."""
        frames = self._model_frames(frames, self.num_envs)
        new_episode = np.asarray(new_episode, dtype=bool)
        phase = self.steps % self.stride
        self.steps += 1
        if new_episode.any():
            for scorer in self.scorers + self.baseline_scorers:
                scorer.reset(new_episode)
            self.recent[new_episode] = 0.0
        codes, baseline_codes = self._encode(frames)
        value = code_values(self.scorers[phase].push_scores(codes, task=self.task), self.score).cpu().numpy()
        if self.baseline is not None:
            scores = self.baseline_scorers[phase].push_scores(baseline_codes, task=self.baseline_task)
            value = value - code_values(scores, self.score).cpu().numpy()
        if self.frame_weight:
            alone = code_values(self._frame_alone_scores(codes, baseline_codes), self.score)
            value = value + self.frame_weight * alone.sum((-2, -1)).cpu().numpy()
        recent = self.recent[:, phase]
        recent[:, :-1] = recent[:, 1:]
        recent[:, -1] = (value - self.mean) / self.std
        return np.where(new_episode, 0.0, recent.sum(-1)).astype(np.float32)

    def episode_code_scores(self, frames: np.ndarray) -> CodeScores:
        """Per-code log-likelihoods and entropies ``(T, h, w)`` of a recorded episode ``(T, H, W, 3)``.

        One pass per phase; with a baseline, each is the expert model's minus the baseline's.
        """
        codes, baseline_codes = self._encode(self._model_frames(frames, None))
        scores = self._model_code_scores(self.model, codes, self.task)
        if self.baseline is not None:
            other = self._model_code_scores(self.baseline, baseline_codes, self.baseline_task)
            scores = CodeScores(*(ours - theirs for ours, theirs in zip(scores, other, strict=True)))
        if self.frame_weight:
            alone = self._frame_alone_scores(codes, baseline_codes)
            scores = CodeScores(*(ours + self.frame_weight * frame.cpu().numpy()
                                  for ours, frame in zip(scores, alone, strict=True)))
        return scores

    def _frame_alone_scores(self, codes: torch.Tensor, baseline_codes: torch.Tensor) -> CodeScores:
        """Per-code scores ``(B, h, w)`` of frames' codes ``(B, h, w)``, each scored as a clip of its own (given no
        earlier frame): the expert model's minus the baseline's."""
        def alone(model: VideoModel, frame_codes: torch.Tensor, task: torch.Tensor | None) -> CodeScores:
            task = None if task is None else task[:1].expand(len(frame_codes))
            with torch.no_grad():
                return model.transformer.code_scores(frame_codes[:, None], task=task)

        ours, theirs = alone(self.model, codes, self.task), alone(self.baseline, baseline_codes, self.baseline_task)
        return CodeScores(*(a[:, 0] - b[:, 0] for a, b in zip(ours, theirs, strict=True)))

    def _encode(self, frames: np.ndarray) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The frames' codes for the expert model and for the baseline (None without one; the same codes
        when both share a tokenizer)."""
        codes = self.model.tokenizer.encode(frames)
        if self.baseline is None:
            return codes, None
        return codes, codes if self.shared_tokenizer else self.baseline.tokenizer.encode(frames)

    def _model_code_scores(self, model: VideoModel, codes: torch.Tensor, task: torch.Tensor | None) -> CodeScores:
        scores = episode_code_scores(model.transformer, codes, self.stride, None if task is None else int(task[0]))
        return CodeScores(scores.log_prob.cpu().numpy(), scores.entropy.cpu().numpy())

    def code_values(self, code_scores: CodeScores) -> np.ndarray:
        """What this reward sums over each frame's codes ``(T, h, w)``, from :meth:`episode_code_scores`."""
        return np.asarray(code_values(code_scores, self.score))

    def episode_rewards(self, frames: np.ndarray) -> np.ndarray:
        """The rewards ``(T - 1,)`` this reward gives the steps of a recorded episode ``(T, H, W, 3)``.

        Equal to stepping the episode through a wrapper, computed in one pass per phase.
        """
        return self.rewards_from_code_scores(self.episode_code_scores(frames))

    def rewards_from_code_scores(self, code_scores: CodeScores) -> np.ndarray:
        """:meth:`episode_rewards` from the episode's :meth:`episode_code_scores`."""
        values = self.code_values(code_scores)
        scores = (values.reshape(len(values), -1).sum(-1) - self.mean) / self.std
        rewards = np.zeros_like(scores)
        for back in range(self.joint_frames):  # the frames t, t - s, ... of the same phase
            shift = back * self.stride
            rewards[shift:] += scores[: len(scores) - shift]
        return rewards[1:].astype(np.float32)

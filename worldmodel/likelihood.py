"""Whole-episode log-likelihoods exactly as a streaming VIPER reward sees them, and their statistics.

With a context stride ``s`` the reward of frame ``t`` is ``log p(x_t | x_{t-s}, x_{t-2s}, ...)``
within its episode, so the frames ``t = p, p + s, p + 2s, ...`` of each phase ``p`` form one
stream. Scoring each phase as one clip in one forward pass gives the same numbers as
pushing the frames one at a time through :class:`~worldmodel.streaming.StreamingScorer`,
at a fraction of the cost: used to calibrate the reward's standardisation on expert data
and to evaluate rewards of recorded episodes offline.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from worldmodel.episodes import DatasetManifest, episode_paths, read_episode
from worldmodel.token_cache import CODES_KEY
from worldmodel.transformer import CodeScores, VideoTransformer


@torch.no_grad()
def episode_code_scores(
    transformer: VideoTransformer, codes: Tensor | np.ndarray, stride: int = 1, task: int | None = None
) -> CodeScores:
    """``log p`` and predictive entropy of every code ``(T, h, w)`` of one episode's codes ``(T, h, w)``, action-free.

    ``stride`` is the context stride in frames; ``task`` the transformer's task id (None
    for an unconditional model). Sum over ``(h, w)`` for per-frame values.
    """
    if not isinstance(stride, int) or stride < 1:
        raise ValueError(f"stride must be a positive int, got {stride!r}")
    if not isinstance(codes, Tensor):  # cached codes are small unsigned ints in read-only memory maps
        codes = torch.from_numpy(np.array(codes, dtype=np.int64))
    codes = codes.to(transformer.device)
    if codes.ndim != 3:
        raise ValueError(f"expected one episode of codes (T, h, w), got shape {tuple(codes.shape)}")
    task_ids = None if task is None else torch.tensor([task], device=transformer.device)
    log_prob, entropy = (torch.empty(codes.shape, dtype=torch.float32, device=transformer.device) for _ in range(2))
    for phase in range(min(stride, len(codes))):
        scores = transformer.code_scores(codes[None, phase::stride], task=task_ids)
        log_prob[phase::stride], entropy[phase::stride] = scores.log_prob[0], scores.entropy[0]
    return CodeScores(log_prob, entropy)


SCORES = ("log_prob", "entropy_adjusted")


def code_values(scores: CodeScores, score: str) -> Tensor:
    """What a reward sums over a frame's codes: ``log p`` (VIPER), or ``log p + entropy``
    (``entropy_adjusted``: the surprise beyond what the model expected, which does not
    penalise scenes that are intrinsically hard to predict)."""
    if score == "log_prob":
        return scores.log_prob
    if score == "entropy_adjusted":
        return scores.log_prob + scores.entropy
    raise ValueError(f"unknown reward score {score!r}; expected one of {SCORES}")


def stat_key(score: str, name: str) -> str:
    """The key of statistic ``name`` (mean, std) of ``score`` in a task's reward statistics."""
    return name if score == "log_prob" else f"{score}_{name}"


def rewarded_frames(log_probs: np.ndarray) -> np.ndarray:
    """Per-frame log-likelihoods of the frames a reward wrapper rewards: all but the reset frame."""
    return np.asarray(log_probs)[1:]


def reward_statistics(per_episode: list[np.ndarray]) -> dict[str, float]:
    """Mean and std of the rewarded per-frame log-likelihoods of some episodes (VIPER's standardisation)."""
    values = np.concatenate([rewarded_frames(scores) for scores in per_episode])
    if values.size < 2:
        raise ValueError(f"need at least 2 rewarded frames to measure reward statistics, got {values.size}")
    return {"mean": float(values.mean()), "std": float(max(values.std(), 1e-6)), "frames": int(values.size)}


def expert_reward_stats(
    transformer: VideoTransformer, codes_root: str | Path, stride: int, max_episodes: int = 50
) -> dict[str, dict[str, float]]:
    """Reward statistics per task name from the ``train`` episodes of a token cache (the expert data).

    For each score of :data:`SCORES`, its per-frame mean and std (keys :func:`stat_key`).
    ``codes_root`` is a dataset whose episodes hold ``codes`` (see :mod:`worldmodel.token_cache`);
    at most ``max_episodes`` episodes per task are scored, spread evenly over the split.
    """
    codes_root = Path(codes_root)
    manifest = DatasetManifest.load(codes_root)
    if manifest is None or not manifest.tasks:
        raise ValueError(f"{codes_root} has no manifest naming its tasks; reward statistics are kept per task")
    paths = episode_paths(codes_root, "train")
    if not paths:
        raise FileNotFoundError(f"no train episodes under {codes_root} to measure reward statistics on")
    by_task: dict[int, list[Path]] = {}
    for path in paths:
        by_task.setdefault(read_episode(path, frames_key=CODES_KEY).task_id, []).append(path)
    conditioned = transformer.config.num_tasks > 0
    stats = {}
    transformer.eval()
    for task_id, task_paths in sorted(by_task.items()):
        chosen = task_paths[:: max(1, math.ceil(len(task_paths) / max_episodes))]
        episodes = [
            episode_code_scores(
                transformer, read_episode(path, frames_key=CODES_KEY).video, stride, task_id if conditioned else None
            )
            for path in chosen
        ]
        task_stats: dict[str, float] = {}
        for score in SCORES:
            found = reward_statistics([code_values(e, score).flatten(1).sum(-1).cpu().numpy() for e in episodes])
            task_stats.update({stat_key(score, k): v for k, v in found.items() if k != "frames"}, frames=found["frames"])
        stats[manifest.tasks[task_id]] = task_stats
    return stats

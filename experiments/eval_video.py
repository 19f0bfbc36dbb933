"""Held-out evaluation of a video model bundle: likelihood by policy quality, and sample rollouts.

A VIPER reward model is useful when expert videos score higher than worse behaviour,
so test episodes are scored action-free (null actions, as the reward sees them) and
grouped by the manifest's ``policy`` label (expert, noisy:<std>, random). Rollouts
continue real expert context with the episode's own actions (if the model takes
actions; action-free episodes then have none to follow and are not rolled out) and are
saved next to the ground truth as a GIF and a PNG strip.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from experiments.reports import save_image_grid
from experiments.videos import save_video, side_by_side
from worldmodel.device import AUTO
from worldmodel.episodes import (
    DatasetManifest,
    Episode,
    episode_paths,
    is_action_free,
    read_episode,
)
from worldmodel.metrics import psnr
from worldmodel.video_model import VideoModel

SPLIT = "test"
UNLABELLED = "unlabelled"


@dataclass
class HeldOutEpisode:
    """A test episode at the model's frame rate, with what the model needs to score it."""

    dataset: str  # its root, as given
    policy: str
    video: np.ndarray  # (T, H, W, 3) uint8
    actions: np.ndarray
    task: torch.Tensor | None  # (1,) task id of the model, None for an unconditional model
    fps: float  # model frames per second of the recording


def frame_stride(model: VideoModel, manifest: DatasetManifest | None, root: Path) -> int:
    """Dataset frames per model frame: the model may have been trained on every n-th frame."""
    data_skip = manifest.frame_skip if manifest is not None else 1
    if model.info.frame_skip % data_skip:
        raise ValueError(
            f"the model steps {model.info.frame_skip} env steps per frame, which is no multiple of the "
            f"{data_skip} of the dataset {root}"
        )
    return model.info.frame_skip // data_skip


def episode_task(model: VideoModel, manifest: DatasetManifest | None, episode: Episode) -> torch.Tensor | None:
    if not model.transformer.config.num_tasks:
        return None
    names = manifest.tasks if manifest is not None else model.info.tasks
    return torch.tensor([model.task_id(names[episode.task_id])], device=model.transformer.device)


def held_out_episodes(model: VideoModel, root: str | Path) -> list[HeldOutEpisode]:
    """The test split of a dataset, labelled by policy, subsampled to the model's frame skip."""
    root = Path(root)
    manifest = DatasetManifest.load(root)
    stride = frame_stride(model, manifest, root)
    labels = manifest.episodes if manifest is not None else {}
    fps = (manifest.fps if manifest is not None else DatasetManifest.fps) / stride
    episodes = []
    for path in episode_paths(root, SPLIT):
        episode = read_episode(path)
        policy = labels.get(str(path.relative_to(root)), {}).get("policy", UNLABELLED)
        video, actions = np.array(episode.video[::stride]), np.array(episode.actions[::stride])  # writable copies
        episodes.append(HeldOutEpisode(str(root), policy, video, actions, episode_task(model, manifest, episode), fps))
    if not episodes:
        raise FileNotFoundError(f"no episode files (*.npz) under {root / SPLIT}")
    return episodes


def likelihood_by_policy(model: VideoModel, episodes: list[HeldOutEpisode]) -> list[dict[str, Any]]:
    """Mean action-free log-likelihood per frame (nats) of each (dataset, policy) group.

    ``after_context`` averages only frames past the first ``window`` of each episode,
    which are scored with a full context, as a reward on a running episode is.
    """
    window = model.window
    groups: dict[tuple[str, str], list[np.ndarray]] = {}
    for episode in episodes:
        scores = model.log_prob(episode.video[None], task=episode.task)[0].cpu().numpy()
        groups.setdefault((episode.dataset, episode.policy), []).append(scores)
    rows = []
    for (dataset, policy), scores in sorted(groups.items()):
        every = np.concatenate(scores)
        later = np.concatenate([s[window:] for s in scores])
        rows.append({
            "dataset": dataset,
            "policy": policy,
            "episodes": len(scores),
            "frames": len(every),
            "log_prob_per_frame": float(every.mean()),
            "log_prob_per_frame_after_context": float(later.mean()) if len(later) else None,
        })
    return rows


def likelihood_table(rows: list[dict[str, Any]], window: int) -> str:
    lines = [
        f"| dataset | policy | episodes | frames | log p / frame (nats) | log p / frame after {window} context |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for row in rows:
        later = row["log_prob_per_frame_after_context"]
        lines.append(
            f"| {row['dataset']} | {row['policy']} | {row['episodes']} | {row['frames']} | "
            f"{row['log_prob_per_frame']:.2f} | {'-' if later is None else f'{later:.2f}'} |"
        )
    return "\n".join(lines)


def sample_rollout(
    model: VideoModel,
    episode: HeldOutEpisode,
    context: int,
    horizon: int,
    seed: int,
    temperature: float = 1.0,
    top_k: int | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Ground truth and prediction ``(context + horizon, H, W, 3)``: real context, then generated frames.

    The generated frames follow the episode's real actions when the model takes actions;
    the horizon is cut to the frames the episode has.
    """
    horizon = min(horizon, len(episode.video) - context)
    truth = episode.video[: context + horizon]
    generated = model.continue_video(
        truth[None], context, horizon, actions=episode.actions[None], task=episode.task,
        temperature=temperature, top_k=top_k,
        generator=torch.Generator(model.transformer.device).manual_seed(seed),
    )[0].cpu().numpy()
    return truth, np.concatenate([truth[:context], generated])


def save_gif(truth: np.ndarray, prediction: np.ndarray, path: Path, fps: float, scale: int = 4) -> Path:
    """Ground truth left, prediction right, each frame enlarged ``scale`` times; loops forever."""
    return save_video(side_by_side([truth, prediction], scale=scale), [path], fps)[0]


def evaluate_video_model(
    model_dir: str | Path,
    data_roots: list[str | Path],
    out: str | Path,
    context: int = 8,
    horizon: int = 32,
    rollouts: int = 2,
    seed: int = 0,
    temperature: float = 1.0,
    top_k: int | None = None,
    device: str = AUTO,
) -> dict[str, Any]:
    """Score the test splits of ``data_roots`` by policy and save ``rollouts`` expert rollouts under ``out``
    (the model on ``device``)."""
    if context < 1 or horizon < 1 or rollouts < 0:
        raise ValueError(f"need context >= 1, horizon >= 1 and rollouts >= 0, got {context}, {horizon}, {rollouts}")
    model = VideoModel.load(model_dir, device)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    with torch.no_grad():
        episodes = [episode for root in data_roots for episode in held_out_episodes(model, root)]
        rows = likelihood_by_policy(model, episodes)
        # a model that takes actions rolls out under an episode's own, which action-free footage lacks
        takes_actions = model.transformer.config.action_kind is not None
        long_enough = [
            e for e in episodes if len(e.video) > context and not (takes_actions and is_action_free(e.actions))
        ]
        experts = [e for e in long_enough if e.policy == "expert"] or long_enough
        saved = []
        for i, episode in enumerate(experts[:rollouts]):
            truth, prediction = sample_rollout(model, episode, context, horizon, seed + i, temperature, top_k)
            saved.append({
                "dataset": episode.dataset,
                "policy": episode.policy,
                "frames": len(truth),
                "psnr_db": psnr(truth[context:], prediction[context:]).tolist(),
                "gif": str(save_gif(truth, prediction, out / f"rollout{i}.gif", episode.fps)),
                "png": str(save_image_grid([truth, prediction], out / f"rollout{i}.png")),
            })
    table = likelihood_table(rows, model.window)
    report = {
        "model": str(model_dir),
        "data": [str(root) for root in data_roots],
        "split": SPLIT,
        "window": model.window,
        "action_free_scoring": True,
        "likelihood": rows,
        "rollouts": saved,
        "context_frames": context,
        "temperature": temperature,
        "top_k": top_k,
        "table": table,
    }
    (out / "eval_video.json").write_text(json.dumps(report, indent=2))
    (out / "eval_video.md").write_text(table + "\n")
    return report

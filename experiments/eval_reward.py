"""The VIPER reward of a video model bundle: calibrated on expert data, then judged on graded episodes.

``calibrate_reward`` measures the per-frame log-likelihood statistics of the expert
(training) episodes and stores them in the bundle, so wrappers can standardise rewards.
``evaluate_reward`` scores recorded episodes of graded quality (expert, expert + noise,
random, from ``wm collect``) exactly as :class:`envs.viper.ViperReward` would reward them
step by step, and asks whether VIPER return ranks episodes as the true return does
(Spearman and Pearson correlation per task), with reward curves and likelihood heat-maps.
Footage without rewards (``wm import-videos``: action-free, labelled by policy) is scored
alike; its true return is unknown (NaN), so it is compared by policy only.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from scipy import stats
from tqdm import tqdm

from experiments.eval_video import frame_stride
from experiments.plots import likelihood_heatmaps, reward_curves, scatter_returns
from worldmodel.device import AUTO
from worldmodel.episodes import DatasetManifest, episode_paths, read_episode
from worldmodel.likelihood import expert_reward_stats
from worldmodel.reward import VideoLikelihoodReward
from worldmodel.token_cache import build_token_cache, default_cache_dir, tokenizer_fingerprint
from worldmodel.video_model import VideoModel

SPLITS = {"test": ("test",), "train": ("train",), "all": ("train", "test")}
HEATMAP_FRAMES = 6


def calibrate_reward(model_dir: str | Path, data_root: str | Path, device: str = AUTO) -> dict[str, dict[str, float]]:
    """Measure reward statistics on the train split of expert data (the model on ``device``) and store them in
    the bundle (atomically)."""
    model = VideoModel.load(model_dir, device)
    data_root = Path(data_root)
    manifest = DatasetManifest.load(data_root)
    unknown = sorted(set(manifest.tasks if manifest is not None else []) - set(model.info.tasks))
    if manifest is None or unknown:
        raise ValueError(
            f"{data_root} must have a manifest whose tasks the model knows (model: {model.info.tasks}, "
            f"unknown: {unknown})"
        )
    cache = default_cache_dir(data_root, tokenizer_fingerprint(model.tokenizer))
    build_token_cache(data_root, model.tokenizer, cache)
    with torch.no_grad():
        found = expert_reward_stats(model.transformer, cache, frame_stride(model, manifest, data_root))
    model.info.reward_stats.update(found)
    model.save(model_dir)
    return found


@dataclass
class ScoredEpisode:
    task: str
    policy: str
    path: str
    true_return: float
    rewards: np.ndarray  # (T - 1,) VIPER reward of each step

    @property
    def viper_return(self) -> float:
        return float(self.rewards.sum())


def _true_return(manifest: DatasetManifest, root: Path, path: Path, rewards: np.ndarray | None) -> float:
    """The manifest's return of the episode, else the sum of its rewards; NaN for footage that has neither."""
    entry = manifest.episodes.get(str(path.relative_to(root)), {})
    if "return" in entry:
        return float(entry["return"])
    return float("nan") if rewards is None else float(np.sum(rewards))


def _correlations(episodes: list[ScoredEpisode]) -> dict[str, float]:
    true = [e.true_return for e in episodes]
    viper = [e.viper_return for e in episodes]
    if len(episodes) < 3 or not np.all(np.isfinite(true)) or len(set(true)) < 2 or len(set(viper)) < 2:
        # Nothing to rank (e.g. a sparse task whose graded episodes all returned 0, or footage without
        # returns): NaN, reported as such.
        return {"episodes": len(episodes), "spearman": float("nan"), "pearson": float("nan")}
    return {
        "episodes": len(episodes),
        "spearman": float(stats.spearmanr(true, viper).statistic),
        "pearson": float(stats.pearsonr(true, viper).statistic),
    }


def _pick(episodes: list[ScoredEpisode], policy: str) -> ScoredEpisode | None:
    return next((e for e in episodes if e.policy == policy), None)


def _tables(correlations: dict[str, dict[str, float]], by_policy: list[dict[str, Any]]) -> str:
    lines = ["| task | episodes | Spearman | Pearson |", "|---|---:|---:|---:|"]
    lines += [
        f"| {task} | {c['episodes']} | {c['spearman']:.3f} | {c['pearson']:.3f} |" for task, c in correlations.items()
    ]
    lines += ["", "| task | policy | episodes | true return | VIPER return |", "|---|---|---:|---:|---:|"]
    lines += [
        f"| {r['task']} | {r['policy']} | {r['episodes']} | {r['true_return']:.1f} | {r['viper_return']:.1f} |"
        for r in by_policy
    ]
    return "\n".join(lines)


HeatInputs = dict[str, tuple[np.ndarray, np.ndarray]]  # "task policy" -> (a video, its per-code scores)


def score_episodes(
    model: VideoModel, data_roots: list[str | Path], split: str, mode: str, joint_frames: int | None,
    score: str = "log_prob", baseline: VideoModel | None = None, frame_weight: float = 0.0,
    baseline_task: str | None = None,
) -> tuple[list[ScoredEpisode], HeatInputs]:
    """Every episode of ``data_roots`` scored as the reward wrapper would (a likelihood ratio with a
    ``baseline`` model), and an expert and a random one per task with the per-code scores the reward
    sums (for the heat-map)."""
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; expected one of {sorted(SPLITS)}")
    reward_fns: dict[tuple[str, int], VideoLikelihoodReward] = {}
    episodes: list[ScoredEpisode] = []
    heat_inputs: HeatInputs = {}
    for root in map(Path, data_roots):
        manifest = DatasetManifest.load(root)
        if manifest is None:
            raise FileNotFoundError(f"{root} has no manifest.json: the policy labels and true returns live there")
        stride = frame_stride(model, manifest, root)
        splits = [s for s in SPLITS[split] if split != "all" or (root / s).is_dir()]
        paths = [p for s in splits for p in episode_paths(root, s)]
        if not paths:
            raise FileNotFoundError(f"no episodes under {root} in split {split!r}")
        for path in tqdm(paths, desc=f"scoring {root.name}", unit="episode", dynamic_ncols=True):
            episode = read_episode(path)
            task = manifest.tasks[episode.task_id]
            if (task, stride) not in reward_fns:
                conditioned = bool(model.transformer.config.num_tasks)
                reward_fns[task, stride] = VideoLikelihoodReward(
                    model, 1, task=task if conditioned or task in model.info.tasks else None, score=score, mode=mode,
                    joint_frames=joint_frames, context_stride=stride, standardize=task in model.info.reward_stats,
                    baseline=baseline, frame_weight=frame_weight, baseline_task=baseline_task,
                )
            reward_fn = reward_fns[task, stride]
            video = np.asarray(episode.video)
            policy = manifest.episodes.get(str(path.relative_to(root)), {}).get("policy", "unlabelled")
            true_return = _true_return(manifest, root, path, episode.rewards)
            code_scores = reward_fn.episode_code_scores(video)
            rewards = reward_fn.rewards_from_code_scores(code_scores)
            episodes.append(ScoredEpisode(task, policy, str(path), true_return, rewards))
            if policy in ("expert", "random"):
                heat_inputs.setdefault(f"{task} {policy}", (video, reward_fn.code_values(code_scores)))
    return episodes, heat_inputs


def _by_policy(episodes: list[ScoredEpisode], tasks: list[str]) -> list[dict[str, Any]]:
    rows = []
    for task in tasks:
        for policy in sorted({e.policy for e in episodes if e.task == task}):
            group = [e for e in episodes if e.task == task and e.policy == policy]
            rows.append({
                "task": task, "policy": policy, "episodes": len(group),
                "true_return": float(np.mean([e.true_return for e in group])),
                "viper_return": float(np.mean([e.viper_return for e in group])),
            })
    return rows


def _figures(
    episodes: list[ScoredEpisode], tasks: list[str], heat_inputs: HeatInputs, window: int, out: Path, score: str,
    ratio: bool = False,
) -> dict[str, str]:
    """Scatter of returns per task, reward curves of the first task, likelihood heat-maps (of the
    expert model's minus the baseline's per-code values with ``ratio``)."""
    figures = {"scatter": str(scatter_returns(
        {t: [(e.true_return, e.viper_return, e.policy) for e in episodes if e.task == t] for t in tasks},
        out / "viper_vs_true_return.png",
    ))}
    first_task = [e for e in episodes if e.task == tasks[0]]
    curves = {p: e.rewards for p in ("expert", "random") if (e := _pick(first_task, p)) is not None}
    if curves:
        figures["reward_curves"] = str(reward_curves(curves, out / "reward_curves.png", tasks[0]))
    if heat_inputs:
        rows = {}
        for label, (video, code_log_probs) in sorted(heat_inputs.items(), key=lambda item: item[0].endswith("random")):
            steps = np.linspace(window, len(video) - 1, HEATMAP_FRAMES).astype(int)
            rows[label] = (video[steps], code_log_probs[steps], steps.tolist())
        label = "log p(code) (nats)" if score == "log_prob" else "log p(code) + entropy (nats)"
        if ratio:
            label = f"expert - baseline model: {label}"
        figures["heatmap"] = str(likelihood_heatmaps(rows, out / "likelihood_heatmap.png", label))
    return figures


def evaluate_reward(
    model_dir: str | Path,
    data_roots: list[str | Path],
    out: str | Path,
    split: str = "all",
    mode: str = "conditional",
    joint_frames: int | None = None,
    score: str = "log_prob",
    baseline_dir: str | Path | None = None,
    device: str = AUTO,
    frame_weight: float = 0.0,
    baseline_task: str | None = None,
) -> dict[str, Any]:
    """Score every episode of ``data_roots`` (``split``: test, train or all) with the models on ``device`` and
    write the reward report to ``out``.

    With ``baseline_dir`` (a video model of random play) the reward is the likelihood ratio, plus ``frame_weight``
    times the ratio of each frame scored alone (see :mod:`worldmodel.reward`); ``baseline_task`` conditions the
    baseline on another task than the episodes' (one model of two sources: the same bundle as both).

    Rewards are standardised when the bundle has statistics for the task (correlations do
    not depend on it). Writes ``reward_eval.json``, ``reward_eval.md`` and three PNGs.
    """
    model = VideoModel.load(model_dir, device)
    baseline = None if baseline_dir is None else VideoModel.load(baseline_dir, device)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    with torch.no_grad():
        episodes, heat_inputs = score_episodes(
            model, data_roots, split, mode, joint_frames, score, baseline, frame_weight, baseline_task
        )
        tasks = sorted({e.task for e in episodes})
        correlations = {task: _correlations([e for e in episodes if e.task == task]) for task in tasks}
        by_policy = _by_policy(episodes, tasks)
        figures = _figures(episodes, tasks, heat_inputs, model.window, out, score, ratio=baseline is not None)
    table = _tables(correlations, by_policy)
    report = {
        "model": str(model_dir),
        "baseline_model": None if baseline_dir is None else str(baseline_dir),
        "baseline_task": baseline_task,
        "data": [str(r) for r in data_roots],
        "split": split,
        "mode": mode,
        "score": score,
        "frame_weight": frame_weight,
        "standardized": [t for t in tasks if t in model.info.reward_stats],
        "correlations": correlations,
        "by_policy": by_policy,
        "episodes": [
            {"task": e.task, "policy": e.policy, "path": e.path, "true_return": e.true_return,
             "viper_return": e.viper_return}
            for e in episodes
        ],
        "figures": figures,
        "table": table,
    }
    (out / "reward_eval.json").write_text(json.dumps(report, indent=2))
    (out / "reward_eval.md").write_text(table + "\n")
    return report

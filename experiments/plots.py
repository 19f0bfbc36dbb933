"""Matplotlib figures for reports, drawn without pyplot's global state and saved as PNG."""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from experiments.reports import format_number
from experiments.train_agent import FINAL_EVAL_FILE


def save_figure(figure: Figure, path: str | Path) -> Path:
    """Write a figure as PNG (its folder made if needed)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110, bbox_inches="tight")
    return path


def scatter_returns(points: dict[str, list[tuple[float, float, str]]], path: str | Path) -> Path:
    """One panel per task: VIPER return (y) against true return (x), a colour per policy."""
    figure = Figure(figsize=(4.5 * len(points), 3.8))
    for i, (task, rows) in enumerate(points.items()):
        axes = figure.add_subplot(1, len(points), i + 1)
        for policy in sorted({p for _, _, p in rows}):
            xs = [x for x, _, p in rows if p == policy]
            ys = [y for _, y, p in rows if p == policy]
            axes.scatter(xs, ys, label=policy, s=28)
        axes.set(title=task, xlabel="true return", ylabel="VIPER return")
        axes.grid(alpha=0.3)
        axes.legend(fontsize=7)
    return save_figure(figure, path)


def reward_curves(curves: dict[str, np.ndarray], path: str | Path, title: str) -> Path:
    """Per-step reward of a few episodes, one line each."""
    figure = Figure(figsize=(7, 3.5))
    axes = figure.add_subplot()
    for label, values in curves.items():
        axes.plot(np.arange(1, len(values) + 1), values, label=label, lw=1)
    axes.set(title=title, xlabel="env step", ylabel="VIPER reward")
    axes.grid(alpha=0.3)
    axes.legend()
    return save_figure(figure, path)


def likelihood_heatmaps(
    rows: dict[str, tuple[np.ndarray, np.ndarray, Sequence[int]]], path: str | Path, label: str = "log p(code) (nats)"
) -> Path:
    """Frames with their per-code log-likelihood overlaid (upsampled), one row per episode.

    ``rows`` maps a label to ``(frames (K, H, W, 3) uint8, code log-likelihoods (K, h, w), steps)``;
    all panels share one colour scale so rows compare directly.
    """
    values = np.concatenate([scores.ravel() for _, scores, _ in rows.values()])
    low, high = np.percentile(values, [2, 100])
    columns = max(len(frames) for frames, _, _ in rows.values())
    figure = Figure(figsize=(1.6 * columns + 0.8, 1.7 * len(rows)))
    grid = figure.subplots(len(rows), columns, squeeze=False)
    image = None
    for r, (label, (frames, scores, steps)) in enumerate(rows.items()):
        for c, axes in enumerate(grid[r]):
            axes.axis("off")
            if c >= len(frames):
                continue
            size = frames.shape[1]
            axes.imshow(frames[c], extent=(0, size, size, 0))
            image = axes.imshow(
                scores[c], extent=(0, size, size, 0), cmap="magma", vmin=low, vmax=high, alpha=0.6,
                interpolation="bilinear",
            )
            axes.set_title(f"t={steps[c]}", fontsize=7)
        grid[r][0].text(-0.08, 0.5, label, rotation=90, ha="right", va="center", fontsize=7,
                        transform=grid[r][0].transAxes)
    figure.colorbar(image, ax=grid, shrink=0.8, label=label)
    return save_figure(figure, path)


def _drawable(value: float | None) -> bool:
    """Whether a reference line can be drawn at ``value``: missing (None) and non-finite values are left out."""
    return value is not None and math.isfinite(value)


def _moving_average(values: Sequence[float], width: int) -> np.ndarray:
    values = np.asarray(values, dtype=float)
    width = max(1, min(width, len(values)))
    return np.convolve(values, np.ones(width) / width, mode="valid")


def _return_log(run: Path) -> dict[str, list[dict]]:
    """An agent run's ``returns.json``; or a ``train-imagination`` run's ``progress.json`` read as one: each
    iteration's real evaluation as an evaluation, and its collecting episodes' mean as a training episode."""
    if (run / "returns.json").is_file():
        return json.loads((run / "returns.json").read_text())
    if (run / "progress.json").is_file():
        history = json.loads((run / "progress.json").read_text())["history"]
        return {
            kind: [{"env_step": row["agent_steps"], "true_return": row[key]} for row in history]
            for kind, key in (("train", "collect_return"), ("eval", "eval_return"))
        }
    raise FileNotFoundError(f"no returns.json (agent run) or progress.json (train-imagination run) in {run}")


def compare_runs(
    runs: dict[str, Path], path: str | Path, title: str, smooth: int = 5, baselines: dict[str, float] | None = None
) -> str:
    """Evaluation true return (markers) and smoothed training true return (lines) of agent runs.

    Reads each run's ``returns.json`` (or a ``train-imagination`` run's ``progress.json``, see
    :func:`_return_log`); ``baselines`` (e.g. a random policy's mean return) are dashed lines. A run's
    final evaluation over many fresh episodes (``final_eval.json``, from ``wm benchmark-dmc``) is a
    diamond with its standard error at the run's last step, and the table's last column. Writes the
    PNG and a markdown table next to it, and returns the table.
    """
    figure = Figure(figsize=(7, 4))
    axes = figure.add_subplot()
    rows = ["| run | agent steps | eval true return | last train episodes (mean true return) | final evaluation |",
            "|---|---:|---:|---:|---:|"]
    for i, (label, run) in enumerate(runs.items()):
        log = _return_log(Path(run))
        colour = f"C{i}"
        train = [r for r in log["train"] if not r.get("cut")]  # an episode a resume cut short is no return
        evals = log["eval"]
        if train:
            averaged = _moving_average([r["true_return"] for r in train], smooth)
            steps = [r["env_step"] for r in train][len(train) - len(averaged):]
            axes.plot(steps, averaged, color=colour, alpha=0.5, lw=1)
        if evals:
            axes.plot([r["env_step"] for r in evals], [r["true_return"] for r in evals], "o-", color=colour,
                      label=label, ms=4)
        recent = np.mean([r["true_return"] for r in train[-smooth:]]) if train else float("nan")
        last = evals[-1] if evals else {"env_step": 0, "true_return": float("nan")}
        final = "-"
        if (Path(run) / FINAL_EVAL_FILE).is_file():
            returns = np.asarray(json.loads((Path(run) / FINAL_EVAL_FILE).read_text())["true_returns"], float)
            error = returns.std() / math.sqrt(len(returns))
            axes.errorbar(last["env_step"], returns.mean(), yerr=error, fmt="D", color=colour, ms=6, capsize=3)
            final = f"{format_number(returns.mean())} +- {format_number(error)} ({len(returns)} episodes)"
        rows.append(f"| {label} | {last['env_step']} | {format_number(last['true_return'])} | {format_number(recent)} "
                    f"| {final} |")
    for label, value in (baselines or {}).items():
        if _drawable(value):
            axes.axhline(value, ls="--", color="grey", lw=1)
            axes.annotate(label, (0, value), xycoords=("axes fraction", "data"), xytext=(4, 3),
                          textcoords="offset points", fontsize=8, color="grey")
        rows.append(f"| {label} | - | {format_number(value)} | - | - |")
    axes.set(title=title, xlabel="agent steps", ylabel="true return")
    axes.grid(alpha=0.3)
    axes.legend()
    path = save_figure(figure, path)
    table = "\n".join(rows)
    path.with_suffix(".md").write_text(table + "\n")
    return table


def imagination_curves(history: Sequence[dict], random_return: float | None, path: str | Path, title: str) -> Path:
    """An imagination run by physics steps: the real-env return against random play, imagined-vs-real PSNR,
    and the reward head's error (held-out, on real frames; and along the imagined continuation)."""
    figure = Figure(figsize=(14, 3.6))
    returns, fidelity, reward = figure.subplots(1, 3)
    steps = [row["physics_steps"] for row in history]
    returns.plot(steps, [row["eval_return"] for row in history], "o-", ms=3, label="policy (mode), real env")
    returns.plot(steps, [row["collect_return"] for row in history], ".", color="C1", alpha=0.6,
                 label="policy (sampled), collecting")
    if _drawable(random_return):
        returns.axhline(random_return, ls="--", color="grey", lw=1, label="random play")
    returns.set(title=title, xlabel="physics steps", ylabel="true return")
    returns.legend(fontsize=8)
    fidelity.plot(steps, [row["imagined_psnr_first_15"] for row in history], "o-", ms=3, color="C2")
    fidelity.set(title="imagined vs real, first 15 steps", xlabel="physics steps", ylabel="PSNR (dB)")
    for key, label in (("world_model_reward_mae", "held-out real frames"),
                       ("imagined_reward_error_first_15", "imagined, first 15 steps")):
        known = [(step, row[key]) for step, row in zip(steps, history) if row.get(key) is not None]
        if known:
            reward.plot(*zip(*known), "o-", ms=3, label=label)
    reward.set(title="reward head, mean absolute error", xlabel="physics steps", ylabel="reward per step")
    reward.legend(fontsize=8)
    for axes in (returns, fidelity, reward):
        axes.grid(alpha=0.3)
    return save_figure(figure, path)

"""Matplotlib figures for reports, drawn without pyplot's global state and saved as PNG."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure


def _save(figure: Figure, path: str | Path) -> Path:
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
    return _save(figure, path)


def reward_curves(curves: dict[str, np.ndarray], path: str | Path, title: str) -> Path:
    """Per-step reward of a few episodes, one line each."""
    figure = Figure(figsize=(7, 3.5))
    axes = figure.add_subplot()
    for label, values in curves.items():
        axes.plot(np.arange(1, len(values) + 1), values, label=label, lw=1)
    axes.set(title=title, xlabel="env step", ylabel="VIPER reward")
    axes.grid(alpha=0.3)
    axes.legend()
    return _save(figure, path)


def likelihood_heatmaps(rows: dict[str, tuple[np.ndarray, np.ndarray, Sequence[int]]], path: str | Path) -> Path:
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
    figure.colorbar(image, ax=grid, shrink=0.8, label="log p(code) (nats)")
    return _save(figure, path)


def return_curves(runs: dict[str, tuple[Sequence[float], Sequence[float]]], path: str | Path, title: str) -> Path:
    """True return against env steps, one line per run (``label -> (steps, returns)``)."""
    figure = Figure(figsize=(6, 3.6))
    axes = figure.add_subplot()
    for label, (steps, returns) in runs.items():
        axes.plot(steps, returns, marker="o", ms=3, label=label)
    axes.set(title=title, xlabel="env steps", ylabel="true return")
    axes.grid(alpha=0.3)
    axes.legend()
    return _save(figure, path)

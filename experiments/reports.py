"""Report writers: numbers as JSON, pictures as PNG, both next to the run they describe.

Every figure a report prints goes through :func:`format_number`, and every "x times a baseline" through
:func:`format_ratio` or :func:`format_share`: a missing figure (None) prints as ``n/a``, NaN and infinities
print as such, and a ratio to a zero (or negative, or unknown) baseline says so instead of dividing, so a
report written after hours of training never fails on the numbers it reports.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from worldmodel.device import AUTO, resolve_device
from worldmodel.tokenizer import Tokenizer, load_tokenizer
from worldmodel.train_tokenizer import evaluate_tokenizer, evaluation_frames


MISSING = "n/a"


def format_number(value: float | None, spec: str = ".1f") -> str:
    """``value`` in format ``spec``; ``"n/a"`` when it is missing (None), ``nan``/``inf``/``-inf`` when not finite."""
    if value is None:
        return MISSING
    value = float(value)
    return format(value, spec) if math.isfinite(value) else str(value)


def ratio(value: float | None, baseline: float | None) -> float | None:
    """``value / baseline``, or None where the multiple means nothing: a missing or non-finite figure, or a
    baseline of zero or below (no "x times" of a zero or negative return)."""
    if value is None or baseline is None or not (math.isfinite(value) and math.isfinite(baseline)) or baseline <= 0:
        return None
    return value / baseline


def format_ratio(value: float | None, baseline: float | None, baseline_name: str, spec: str = ".1f") -> str:
    """``value`` as a multiple of a named baseline: ``"3.2x the random policy's 10.5"``; where :func:`ratio`
    has none, why: ``"no ratio to the random policy's 0.0"``."""
    multiple = ratio(value, baseline)
    if multiple is None:
        return f"no ratio to {baseline_name} {format_number(baseline, spec)}"
    return f"{multiple:{spec}}x {baseline_name} {format_number(baseline, spec)}"


def format_share(value: float | None, reference: float | None) -> str:
    """``value`` as a percentage of ``reference``: ``"85 %"``; ``"n/a (reference 0.0)"`` where :func:`ratio` has none."""
    multiple = ratio(value, reference)
    if multiple is None:
        return f"{MISSING} (reference {format_number(reference)})"
    return f"{100 * multiple:.0f} %"


def save_image_grid(rows: list[np.ndarray], path: str | Path, scale: int = 2) -> Path:
    """Stack rows of uint8 frames ``(N,H,W,3)`` into one PNG, each frame enlarged ``scale`` times."""
    grid = np.concatenate([np.concatenate(list(row), axis=1) for row in rows], axis=0)
    image = Image.fromarray(grid).resize((grid.shape[1] * scale, grid.shape[0] * scale), Image.NEAREST)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path)
    return path


def encode_decode_speed(tokenizer: Tokenizer, frames: np.ndarray, repeats: int = 3) -> float:
    """Frames per second of encode followed by decode, best of ``repeats``, on this machine."""
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        tokenizer.decode(tokenizer.encode(frames))
        best = min(best, time.perf_counter() - start)
    return len(frames) / best


def tokenizer_report(
    checkpoint: str | Path, data_root: str | Path, frame_count: int = 1024, out: str | Path | None = None,
    device: str = AUTO,
) -> dict[str, Any]:
    """Held-out quality, codebook use and speed of a tokenizer (on ``device``), with a reconstruction PNG."""
    tokenizer = load_tokenizer(checkpoint, resolve_device(device)).eval()
    frames = evaluation_frames(data_root, frame_count)
    report: dict[str, Any] = {"checkpoint": str(checkpoint), "eval_frames": len(frames)}
    report.update(evaluate_tokenizer(tokenizer, frames))
    report["vocab_size"] = tokenizer.vocab_size
    report["code_shape"] = list(tokenizer.code_shape)
    report["encode_decode_frames_per_s"] = encode_decode_speed(tokenizer, frames[:256])
    report["torch_threads"] = torch.get_num_threads()
    out = Path(out) if out is not None else Path(checkpoint).parent
    sample = frames[np.linspace(0, len(frames) - 1, 8).astype(int)]
    recon = tokenizer.decode(tokenizer.encode(sample)).cpu().numpy()
    report["reconstructions_png"] = str(save_image_grid([sample, recon], out / "reconstructions.png"))
    (out / "tokenizer_eval.json").write_text(json.dumps(report, indent=2))
    return report


def returns_table(episodes: dict[str, dict]) -> str:
    """Markdown table of true returns per (task, policy)."""
    groups: dict[tuple[str, str], list[float]] = {}
    for info in episodes.values():
        groups.setdefault((info["task"], info["policy"]), []).append(info["return"])
    rows = ["| task | policy | episodes | mean return | std | min |", "|---|---|---|---|---|---|"]
    for (task, policy), returns in sorted(groups.items()):
        r = np.asarray(returns)
        rows.append(
            f"| {task} | {policy} | {len(r)} | {format_number(r.mean())} | {format_number(r.std())} "
            f"| {format_number(r.min())} |"
        )
    return "\n".join(rows)

"""Report writers: numbers as JSON, pictures as PNG, both next to the run they describe."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from worldmodel.tokenizer import FrameTokenizer
from worldmodel.train_tokenizer import evaluate_tokenizer, evaluation_frames


def save_image_grid(rows: list[np.ndarray], path: str | Path, scale: int = 2) -> Path:
    """Stack rows of uint8 frames ``(N,H,W,3)`` into one PNG, each frame enlarged ``scale`` times."""
    grid = np.concatenate([np.concatenate(list(row), axis=1) for row in rows], axis=0)
    image = Image.fromarray(grid).resize((grid.shape[1] * scale, grid.shape[0] * scale), Image.NEAREST)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path)
    return path


def encode_decode_speed(tokenizer: FrameTokenizer, frames: np.ndarray, repeats: int = 3) -> float:
    """Frames per second of encode followed by decode, best of ``repeats``, on this machine."""
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        tokenizer.decode(tokenizer.encode(frames))
        best = min(best, time.perf_counter() - start)
    return len(frames) / best


def tokenizer_report(
    checkpoint: str | Path, data_root: str | Path, frame_count: int = 1024, out: str | Path | None = None
) -> dict[str, Any]:
    """Held-out quality, codebook use and speed of a tokenizer, with a reconstruction PNG."""
    tokenizer = FrameTokenizer.load(checkpoint).eval()
    frames = evaluation_frames(data_root, frame_count)
    report: dict[str, Any] = {"checkpoint": str(checkpoint), "eval_frames": len(frames)}
    report.update(evaluate_tokenizer(tokenizer, frames))
    report["vocab_size"] = tokenizer.vocab_size
    report["code_shape"] = list(tokenizer.code_shape)
    report["encode_decode_frames_per_s"] = encode_decode_speed(tokenizer, frames[:256])
    report["torch_threads"] = torch.get_num_threads()
    out = Path(out) if out is not None else Path(checkpoint).parent
    sample = frames[np.linspace(0, len(frames) - 1, 8).astype(int)]
    recon = tokenizer.decode(tokenizer.encode(sample)).numpy()
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
        rows.append(f"| {task} | {policy} | {len(r)} | {r.mean():.1f} | {r.std():.1f} | {r.min():.1f} |")
    return "\n".join(rows)

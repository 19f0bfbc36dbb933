"""Training loop for the frame tokenizer: random frames in, reconstructions out.

Resumable (model, optimizer and step in one atomic checkpoint), logged to
tensorboard (losses, PSNR, codebook usage and perplexity, image grids), bounded
by steps and optionally by wall-clock minutes so CPU budgets can be stated.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.tensorboard import SummaryWriter

from worldmodel.checkpoint import resume_training, save_training_checkpoint
from worldmodel.episodes import EpisodeDataset
from worldmodel.metrics import psnr, ssim
from worldmodel.quantizers import codebook_usage
from worldmodel.schedule import BudgetProgress, budget_spent, learning_rate
from worldmodel.tokenizer import CHECKPOINT_KIND, FrameTokenizer, TokenizerConfig, frames_to_images

CHECKPOINT_DIR = "checkpoint"


@dataclass
class TokenizerTraining:
    """Optimisation settings; the model's own shape lives in :class:`TokenizerConfig`."""

    steps: int = 5000
    batch_size: int = 32
    lr: float = 1e-3
    warmup_steps: int = 100
    min_lr_fraction: float = 0.1
    log_every: int = 25
    eval_every: int = 500
    checkpoint_every: int = 500
    eval_frames: int = 512
    seed: int = 0
    max_minutes: float | None = None


def evaluation_frames(data_root: str | Path, count: int, seed: int = 0) -> np.ndarray:
    """A fixed sample of held-out frames (the ``test`` split), uint8 ``(N,H,W,3)``."""
    dataset = EpisodeDataset(data_root, split="test", clip_length=1)
    rng = np.random.default_rng(seed)
    indices = np.sort(rng.choice(len(dataset), size=min(count, len(dataset)), replace=False))
    return np.stack([dataset[int(i)]["video"][0] for i in indices])


@torch.no_grad()
def evaluate_tokenizer(tokenizer: FrameTokenizer, frames: np.ndarray, batch_size: int = 128) -> dict[str, float]:
    """Held-out PSNR / SSIM of reconstructions, and how much of the codebook the frames use."""
    codes = tokenizer.encode(frames, batch_size=batch_size)
    recon = tokenizer.decode(codes, batch_size=batch_size)
    usage = codebook_usage(codes, tokenizer.vocab_size)
    return {
        "psnr": float(psnr(frames, recon).mean()),
        "ssim": float(ssim(frames, recon).mean()),
        "codebook_usage": float(usage["usage"]),
        "perplexity": float(usage["perplexity"]),
    }


def _image_grid(originals: np.ndarray, tokenizer: FrameTokenizer) -> torch.Tensor:
    """Originals over reconstructions, ``(2N, 3, H, W)`` in [0, 1] for tensorboard."""
    recon = tokenizer.decode(tokenizer.encode(originals)).numpy()
    both = np.concatenate([originals, recon])
    return torch.from_numpy(both).permute(0, 3, 1, 2).float() / 255.0


def train_tokenizer(
    data_root: str | Path,
    run_dir: str | Path,
    model_config: TokenizerConfig,
    training: TokenizerTraining,
    resume: bool = False,
    device: str = "cpu",
) -> dict[str, Any]:
    """Train a tokenizer on ``{data_root}/train`` frames, evaluating on ``test``; returns the final eval."""
    run_dir = Path(run_dir)
    checkpoint_dir = run_dir / CHECKPOINT_DIR
    torch.manual_seed(training.seed)
    tokenizer = FrameTokenizer(model_config).to(device)
    optimizer = torch.optim.Adam(tokenizer.parameters(), lr=training.lr)
    step, elapsed = 0, 0.0
    checkpoint_config = {"kind": CHECKPOINT_KIND, "config": model_config.to_dict()}
    if resume and checkpoint_dir.exists():
        expected = {"config": ("tokenizer config", model_config.to_dict())}
        trainer_state = resume_training(checkpoint_dir, tokenizer, optimizer, expected)
        step, elapsed = trainer_state["step"], trainer_state["elapsed_s"]
    elif checkpoint_dir.exists() and not resume:
        raise FileExistsError(f"{checkpoint_dir} exists: pass resume=True (--resume) or choose another run dir")

    train_data = EpisodeDataset(data_root, split="train", clip_length=1)
    held_out = evaluation_frames(data_root, training.eval_frames, training.seed)
    preview = held_out[:: max(1, len(held_out) // 8)][:8]
    writer = SummaryWriter(run_dir / "tb")

    def save(summary: dict[str, Any] | None = None) -> None:
        state = {"step": step, "elapsed_s": elapsed, "training": asdict(training)}
        save_training_checkpoint(checkpoint_dir, tokenizer, optimizer, checkpoint_config, state)
        if summary is not None:
            (run_dir / "eval.json").write_text(json.dumps(summary, indent=2))

    def evaluate() -> dict[str, float]:
        tokenizer.eval()
        metrics = evaluate_tokenizer(tokenizer, held_out)
        for name, value in metrics.items():
            writer.add_scalar(f"eval/{name}", value, step)
        writer.add_images("eval/originals_top_reconstructions_bottom", _image_grid(preview, tokenizer), step)
        tokenizer.train()
        return metrics

    tokenizer.train()
    started = time.monotonic() - elapsed
    out_of_time = budget_spent(elapsed, training.max_minutes)  # a finished run resumes to no steps
    progress = BudgetProgress(training.steps, step, elapsed, training.max_minutes, desc="tokenizer")
    while step < training.steps and not out_of_time:
        # Randomness is a function of (seed, step), so a resumed run repeats an uninterrupted one.
        rng = np.random.default_rng([training.seed, step])
        torch.manual_seed(training.seed * 1_000_003 + step)
        for group in optimizer.param_groups:
            group["lr"] = learning_rate(step, training, elapsed)
        frames = train_data.sample(training.batch_size, rng)["video"][:, 0]
        batch = frames_to_images(torch.from_numpy(frames).to(device))
        output = tokenizer(batch)
        optimizer.zero_grad(set_to_none=True)
        output.loss.backward()
        optimizer.step()
        step += 1
        elapsed = time.monotonic() - started
        out_of_time = budget_spent(elapsed, training.max_minutes)
        progress.advance(elapsed)
        if step % training.log_every == 0:
            batch_psnr = float(-10 * torch.log10(((output.recon.detach() - batch) / 2).pow(2).mean()))
            writer.add_scalar("train/loss", output.loss.item(), step)
            writer.add_scalar("train/psnr", batch_psnr, step)
            writer.add_scalar("train/lr", optimizer.param_groups[0]["lr"], step)
            for name, value in output.metrics.items():
                writer.add_scalar(f"train/{name}", float(value), step)
            progress.set_postfix(loss=f"{output.loss.item():.4f}", psnr=f"{batch_psnr:.1f}")
        if step % training.eval_every == 0 and step < training.steps and not out_of_time:
            metrics = evaluate()
            progress.write(f"step {step}: " + ", ".join(f"{k} {v:.4f}" for k, v in metrics.items()))
        if step % training.checkpoint_every == 0:
            save()
    progress.close()
    summary = {"step": step, "elapsed_s": elapsed, "eval_frames": len(held_out), **evaluate()}
    save(summary)
    writer.close()
    return summary

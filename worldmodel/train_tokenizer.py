"""Training loop for the tokenizers: random frames (or clips, for the causal video tokenizer) in,
reconstructions out.

A :class:`~worldmodel.training_run.TrainingRun`: resumable (model, optimizer, RNG and step in
one atomic checkpoint; a resumed run repeats an uninterrupted one), logged to tensorboard
(losses, PSNR, codebook usage and perplexity, image grids), bounded by steps and optionally
by wall-clock minutes so CPU budgets can be stated.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from worldmodel.checkpoint import load_into_module
from worldmodel.device import AUTO, resolve_device
from worldmodel.episodes import EpisodeDataset
from worldmodel.metrics import psnr, ssim
from worldmodel.quantizers import codebook_usage
from worldmodel.schedule import learning_rate
from worldmodel.training_run import MAX_MINUTES_HELP, RUN_CADENCE, TrainingRun
from worldmodel.tokenizer import FrameTokenizer, Tokenizer, TokenizerConfig, frames_to_images
from worldmodel.video_tokenizer import CausalVideoTokenizer, VideoTokenizerConfig

EVAL_FILE = "eval.json"


@dataclass
class TokenizerTraining:
    """Optimisation settings; the model's own shape lives in :class:`TokenizerConfig`."""

    steps: int = field(
        default=5000, metadata={"help": "optimisation steps in all (a resumed run continues up to this)"}
    )
    batch_size: int = field(default=32, metadata={"help": "frames (clips, for a video tokenizer) per step"})
    clip_frames: int = field(default=17, metadata={"help": (
        "frames per training and held-out clip of a causal video tokenizer: 1 + k n for k frames per code step "
        "(a frame tokenizer takes single frames)"
    )})
    lr: float = field(default=1e-3, metadata={"help": "peak learning rate, reached after the warm-up"})
    warmup_steps: int = field(default=100, metadata={"help": "linear warm-up steps before cosine decay"})
    min_lr_fraction: float = field(default=0.1, metadata={"help": "final learning rate as a fraction of the peak"})
    log_every: int = field(default=25, metadata={"help": "steps between tensorboard scalars"})
    eval_every: int = field(
        default=500, metadata={"help": "steps between held-out evaluations (PSNR, SSIM, usage, image grid)"}
    )
    checkpoint_every: int = field(default=500, metadata={"help": "steps between atomic checkpoints"})
    eval_frames: int = field(default=512, metadata={"help": "held-out frames scored at each evaluation"})
    seed: int = field(default=0, metadata={"help": "seed of initialisation and frame sampling"})
    max_minutes: float | None = field(
        default=None, metadata={"help": MAX_MINUTES_HELP}
    )


def evaluation_frames(data_root: str | Path, count: int, seed: int = 0) -> np.ndarray:
    """A fixed sample of held-out frames (the ``test`` split), uint8 ``(N,H,W,3)``."""
    return evaluation_clips(data_root, count, 1, seed)[:, 0]


def evaluation_clips(data_root: str | Path, count: int, frames: int, seed: int = 0) -> np.ndarray:
    """A fixed sample of ``count`` held-out clips of ``frames`` frames (the ``test`` split), uint8 ``(N,T,H,W,3)``."""
    dataset = EpisodeDataset(data_root, split="test", clip_length=frames)
    rng = np.random.default_rng(seed)
    indices = np.sort(rng.choice(len(dataset), size=min(count, len(dataset)), replace=False))
    return np.stack([dataset[int(i)]["video"] for i in indices])


def build_tokenizer(config: TokenizerConfig | VideoTokenizerConfig) -> Tokenizer:
    """A fresh tokenizer of the family the config describes."""
    return CausalVideoTokenizer(config) if isinstance(config, VideoTokenizerConfig) else FrameTokenizer(config)


@torch.no_grad()
def evaluate_tokenizer(tokenizer: Tokenizer, frames: np.ndarray, batch_size: int = 128) -> dict[str, float]:
    """Held-out PSNR / SSIM of reconstructions (per frame), and how much of the codebook the frames (or clips,
    for a video tokenizer) use."""
    codes = tokenizer.encode(frames, batch_size=batch_size)
    recon = tokenizer.decode(codes, batch_size=batch_size)
    usage = codebook_usage(codes, tokenizer.vocab_size)
    return {
        "psnr": float(psnr(frames, recon).mean()),
        "ssim": float(ssim(frames, recon).mean()),
        "codebook_usage": float(usage["usage"]),
        "perplexity": float(usage["perplexity"]),
    }


def _image_grid(originals: np.ndarray, tokenizer: Tokenizer) -> torch.Tensor:
    """Originals over reconstructions, ``(2N, 3, H, W)`` in [0, 1] for tensorboard (the frames of clips in a row)."""
    recon = tokenizer.decode(tokenizer.encode(originals)).numpy()
    both = np.concatenate([originals, recon]).reshape(-1, *originals.shape[-3:])
    return torch.from_numpy(both).permute(0, 3, 1, 2).float() / 255.0


def train_tokenizer(
    data_root: str | Path,
    run_dir: str | Path,
    model_config: TokenizerConfig | VideoTokenizerConfig,
    training: TokenizerTraining,
    resume: bool = False,
    device: str = AUTO,
) -> dict[str, Any]:
    """Train a tokenizer of the config's family on ``{data_root}/train`` frames (clips of ``clip_frames`` for a
    video tokenizer), evaluating on ``test``, on ``device`` (default: CUDA when available); returns the final
    eval."""
    device = resolve_device(device)
    run = TrainingRun(run_dir, resume=resume, settings=training, may_change=RUN_CADENCE,
                      max_minutes=training.max_minutes)
    torch.manual_seed(training.seed)
    tokenizer = build_tokenizer(model_config).to(device)
    clip = training.clip_frames if isinstance(tokenizer, CausalVideoTokenizer) else 1
    if clip > 1:
        tokenizer.code_steps(clip)  # raises unless 1 + k n frames
    optimizer = torch.optim.Adam(tokenizer.parameters(), lr=training.lr)
    checkpoint_config = {"kind": tokenizer.kind, "config": model_config.to_dict()}
    restored = run.restore({"config": ("tokenizer config", model_config.to_dict())}, {"adam": optimizer})
    if restored is not None:
        load_into_module(tokenizer, restored.weights, run.checkpoint_dir)

    train_data = EpisodeDataset(data_root, split="train", clip_length=clip)
    held_out = evaluation_clips(data_root, max(1, training.eval_frames // clip), clip, training.seed)
    held_out = held_out if clip > 1 else held_out[:, 0]
    preview = held_out[:: max(1, len(held_out) // 8)][:8]

    def evaluate() -> dict[str, float]:
        tokenizer.eval()
        metrics = evaluate_tokenizer(tokenizer, held_out)
        for name, value in metrics.items():
            run.writer.add_scalar(f"eval/{name}", value, run.counters["step"])
        run.writer.add_images(
            "eval/originals_top_reconstructions_bottom", _image_grid(preview, tokenizer), run.counters["step"]
        )
        tokenizer.train()
        return metrics

    tokenizer.train()
    progress = run.progress_bar(training.steps, desc="tokenizer")
    while run.counters["step"] < training.steps and not run.out_of_time:
        step = run.counters["step"]
        # Randomness is a function of (seed, step), so a resumed run repeats an uninterrupted one.
        rng = np.random.default_rng([training.seed, step])
        torch.manual_seed(training.seed * 1_000_003 + step)
        for group in optimizer.param_groups:
            group["lr"] = learning_rate(step, training)
        videos = torch.from_numpy(train_data.sample(training.batch_size, rng)["video"]).to(device)
        batch = videos.permute(0, 4, 1, 2, 3).float() / 127.5 - 1.0 if clip > 1 else frames_to_images(videos[:, 0])
        output = tokenizer(batch)
        optimizer.zero_grad(set_to_none=True)
        output.loss.backward()
        optimizer.step()
        step = run.counters["step"] = step + 1
        out_of_time = run.tick()
        progress.advance(run.counters["elapsed_s"])
        if step % training.log_every == 0:
            batch_psnr = float(-10 * torch.log10(((output.recon.detach() - batch) / 2).pow(2).mean()))
            run.writer.add_scalar("train/loss", output.loss.item(), step)
            run.writer.add_scalar("train/psnr", batch_psnr, step)
            run.writer.add_scalar("train/lr", optimizer.param_groups[0]["lr"], step)
            for name, value in output.metrics.items():
                run.writer.add_scalar(f"train/{name}", float(value), step)
            progress.set_postfix(loss=f"{output.loss.item():.4f}", psnr=f"{batch_psnr:.1f}")
        if step % training.eval_every == 0 and step < training.steps and not out_of_time:
            metrics = evaluate()
            progress.write(f"step {step}: " + ", ".join(f"{k} {v:.4f}" for k, v in metrics.items()))
        if step % training.checkpoint_every == 0:
            run.save(tokenizer.state_dict(), checkpoint_config, optimizers={"adam": optimizer})
    progress.close()
    summary = {**run.counters, "eval_frames": len(held_out) * clip, **evaluate()}
    run.save(tokenizer.state_dict(), checkpoint_config, optimizers={"adam": optimizer})
    run.write_json(EVAL_FILE, summary)
    run.close()
    return summary

"""What temporal compression buys the transformer: its cost per second of video, by tokenizer, in one run.

A causal video tokenizer (:mod:`worldmodel.video_tokenizer`) makes one grid of codes per ``k`` frames, so a
transformer spans ``k`` times more video per token. This prices that for the scaled memory benchmark
(``dmlab:maze-small``, 15 frames per second, 48 context frames): for each tokenizer, the ``memory``
transformer (4 layers, embed 128) with a window of the context's 48 frames in that tokenizer's code steps,
trained on clips of 64 frames, and

- the milliseconds of one training step (forward and backward, ``--batch`` clips) per second of video in it,
- the milliseconds of sampling one second of video (streamed code steps, ``--batch`` streams, after a context),
- the tokenizer's own milliseconds to encode and decode one second of video (the 3D convolutions cost more
  than the per-frame CNN's).

Weights are random: speed does not depend on them. Reconstruction quality is the other half, measured by
``wm train-tokenizer`` (``--preset video`` against ``--preset dmc``).

    python -m experiments.benchmarks.tokens_per_second --threads 1
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import replace
from typing import Any

import numpy as np
import torch

from experiments.presets import tokenizer_preset, video_preset
from worldmodel.streaming import StreamingSampler
from worldmodel.train_tokenizer import build_tokenizer
from worldmodel.transformer import VideoTransformer

FPS = 15.0  # dmlab:maze-small's frames per second
CONTEXT_FRAMES, CLIP_FRAMES = 48, 64


def _timed(run: Any, repeats: int) -> float:
    """Mean seconds of ``run()`` over ``repeats`` calls, after one warm-up call."""
    run()
    start = time.perf_counter()
    for _ in range(repeats):
        run()
    return (time.perf_counter() - start) / repeats


def measure(preset: str, batch: int, repeats: int) -> dict[str, float]:
    torch.manual_seed(0)
    tokenizer = build_tokenizer(tokenizer_preset(preset)).eval()
    k = tokenizer.frames_per_code_step
    window, clip = CONTEXT_FRAMES // k, 1 + (CLIP_FRAMES - 1) // k  # in code steps
    config = replace(video_preset("memory").transformer, window=window, vocab_size=tokenizer.vocab_size,
                     code_shape=tokenizer.code_shape)
    model = VideoTransformer(config)
    codes = torch.randint(0, config.vocab_size, (batch, clip, *config.code_shape))
    clip_seconds = (1 + (clip - 1) * k) / FPS

    def train_step() -> None:
        model.zero_grad(set_to_none=True)
        model.losses(codes).codes.backward()

    train_s = _timed(train_step, repeats)
    model.eval()
    sampler = StreamingSampler(model, batch)
    with torch.no_grad():
        for t in range(window):  # a full window of context, so every sampled step attends to all of it
            sampler.push(codes[:, t])
        step_s = _timed(sampler.sample, repeats)
    frames = np.random.default_rng(0).integers(0, 256, (1 + 4 * k, 64, 64, 3), dtype=np.uint8)  # 1 + 4k frames
    with torch.no_grad():
        coding_s = _timed(lambda: tokenizer.decode(tokenizer.encode(frames)), repeats)
    return {
        "tokens_per_frame": config.tokens_per_frame / k, "window_code_steps": window, "clip_code_steps": clip,
        "train_ms_per_video_s": 1000 * train_s / (batch * clip_seconds),
        "sample_ms_per_video_s": 1000 * step_s * (FPS / k) / batch,
        "tokenizer_ms_per_video_s": 1000 * coding_s / (len(frames) / FPS),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--presets", nargs="+", default=["dmc", "video", "long"], help="tokenizer presets")
    parser.add_argument("--batch", type=int, default=4, help="clips per training step, streams when sampling")
    parser.add_argument("--repeats", type=int, default=3, help="timed calls after a warm-up")
    parser.add_argument("--threads", type=int, default=1, help="torch threads")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    rows = {preset: measure(preset, args.batch, args.repeats) for preset in args.presets}
    print(f"| tokenizer ({args.threads} thread(s)) | tokens per frame | window / clip (code steps) | training, ms "
          "per s of video | sampling, ms per s of video | tokenizer encode + decode, ms per s of video |")
    print("|---|---:|---:|---:|---:|---:|")
    for preset, row in rows.items():
        print(f"| {preset} | {row['tokens_per_frame']:.2f} | {row['window_code_steps']} / {row['clip_code_steps']} | "
              f"{row['train_ms_per_video_s']:.0f} | {row['sample_ms_per_video_s']:.0f} | "
              f"{row['tokenizer_ms_per_video_s']:.0f} |")
    print(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()

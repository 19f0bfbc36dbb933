"""Where the video model's speed comes from, measured: reward cost, cached sampling, rollout memory.

Weights are random (speed and memory do not depend on them), shapes are VIPER's DMC
model: 8x8 codes from 256 values. Three tables:

a. reward cost per env step: one frame per env through the rolling KV cache
   (:class:`StreamingScorer`) against re-scoring a 16-frame window from scratch every
   step, as VIPER's code does; the streamed scores must equal a re-score of the whole
   receptive field (``layers * window`` frames back), the only exact reference;
b. cached against uncached sampling, tokens per second and identical tokens per seed;
c. peak memory (the process's peak RSS, each rollout in a fresh subprocess) of a long
   rollout against a short one.

    python -m experiments.benchmarks.video_model --preset dmc --envs 8
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

from experiments.presets import video_preset
from worldmodel.rollout import rollout, sample_frames, sample_frames_uncached
from worldmodel.streaming import StreamingScorer
from worldmodel.transformer import VideoTransformer, VideoTransformerConfig

DMC_CODES = {"vocab_size": 256, "code_shape": (8, 8)}
MODULE = "experiments.benchmarks.video_model"  # also under `python -m`, where __name__ is __main__
MEMORY_MODEL = {"embed_dim": 64, "layers": 2, "heads": 2}  # rollout memory: small model, DMC code grid


def random_model(config: VideoTransformerConfig, seed: int = 0) -> VideoTransformer:
    """An untrained model in eval mode."""
    torch.manual_seed(seed)
    return VideoTransformer(config).eval()


def preset_config(preset: str, window: int) -> VideoTransformerConfig:
    """The preset's architecture on DMC codes, action-free (VIPER's reward model)."""
    return replace(video_preset(preset).transformer, window=window, **DMC_CODES)


def _codes(config: VideoTransformerConfig, batch: int, frames: int, seed: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(0, config.vocab_size, (batch, frames, *config.code_shape), generator=generator)


def reward_cost(
    model: VideoTransformer, envs: int, steps: int, warmup: int | None = None, checks: int = 3, seed: int = 0
) -> dict[str, float]:
    """Milliseconds per vector-env step (all ``envs`` at once) of three ways to score the newest frame.

    Streaming pushes one frame per env; the window reference re-scores the last
    ``window + 1`` frames; the receptive-field reference re-scores the last
    ``receptive_field + 1`` frames, which is exact, on the last ``checks`` steps, and the
    largest difference to the streamed scores is reported. ``warmup`` frames (default:
    the receptive field) are streamed first, so the window has slid well past frame 0.
    """
    config = model.config
    warmup = config.receptive_field if warmup is None else warmup
    if warmup < config.window or not 1 <= checks <= steps:
        raise ValueError(f"need warmup >= window ({config.window}) and 1 <= checks <= steps, got {warmup}, {checks}")
    video = _codes(config, envs, warmup + steps, seed)
    scorer = StreamingScorer(model, envs)
    for t in range(warmup):
        scorer.push(video[:, t])
    stream_time, window_time, field_time, max_diff = 0.0, 0.0, 0.0, 0.0
    for t in range(warmup, warmup + steps):
        start = time.perf_counter()
        streamed = scorer.push(video[:, t])
        stream_time += time.perf_counter() - start
        start = time.perf_counter()
        model.log_prob(video[:, t - config.window : t + 1])[:, -1]
        window_time += time.perf_counter() - start
        if t >= warmup + steps - checks:
            start = time.perf_counter()
            exact = model.log_prob(video[:, max(t - config.receptive_field, 0) : t + 1])[:, -1]
            field_time += time.perf_counter() - start
            max_diff = max(max_diff, (streamed - exact).abs().max().item())
    return {
        "stream_ms": 1000 * stream_time / steps,
        "window_ms": 1000 * window_time / steps,
        "field_ms": 1000 * field_time / checks,
        "speedup": window_time / stream_time,
        "max_abs_diff": max_diff,
    }


def sampling_speed(
    model: VideoTransformer, batch: int = 1, context: int = 4, horizon: int = 2, seed: int = 0
) -> dict[str, Any]:
    """Tokens per second of KV-cached and uncached sampling of ``horizon`` frames after ``context`` real ones."""
    clip = _codes(model.config, batch, context, seed)
    results: dict[str, Any] = {"context": context, "horizon": horizon, "batch": batch}
    samples = []
    for name, sample in (("cached", sample_frames), ("uncached", sample_frames_uncached)):
        start = time.perf_counter()
        samples.append(sample(model, clip, horizon=horizon, generator=torch.Generator().manual_seed(seed)))
        results[f"{name}_tokens_per_s"] = samples[-1].numel() / (time.perf_counter() - start)
    results["speedup"] = results["cached_tokens_per_s"] / results["uncached_tokens_per_s"]
    results["identical"] = torch.equal(*samples)
    return results


def rollout_peak_rss(config: VideoTransformerConfig, frames: int, seed: int = 0) -> dict[str, int]:
    """Roll out ``frames`` frames from one context frame in this process -> max RSS and KV cache bytes.

    Meant to run in a fresh process (:func:`measure_in_subprocess`): RSS peaks never go down.
    """
    model = random_model(config, seed)
    rollout(model, _codes(config, 1, 1, seed), frames, generator=torch.Generator().manual_seed(seed))
    cache = model.new_cache(1)
    return {"frames": frames, "max_rss_bytes": peak_rss_bytes(), "kv_cache_bytes": cache.keys.nbytes + cache.values.nbytes}


def peak_rss_bytes() -> int:
    """This process image's peak resident memory (Linux ``VmHWM``).

    Not ``getrusage``'s ``ru_maxrss``: it survives fork + exec, so a subprocess would
    report its parent's peak whenever that is higher.
    """
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024  # kB
    raise RuntimeError("no VmHWM in /proc/self/status; peak memory is measured on Linux only")


def measure_in_subprocess(config: VideoTransformerConfig, frames: int) -> dict[str, int]:
    """:func:`rollout_peak_rss` in a fresh single-threaded Python process."""
    command = [sys.executable, "-m", MODULE, "--_rollout", json.dumps({"config": config.to_dict(), "frames": frames})]
    output = subprocess.run(command, check=True, capture_output=True, text=True).stdout
    return json.loads(output.splitlines()[-1])


def markdown(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return "\n".join([*lines, *("| " + " | ".join(row) + " |" for row in rows)])


def reward_table(result: dict[str, float], config: VideoTransformerConfig, envs: int) -> str:
    ms = [result["stream_ms"], result["window_ms"], result["field_ms"]]
    names = [
        "streaming (rolling KV cache, 1 frame)",
        f"reference ({config.window + 1}-frame window)",
        f"reference (full receptive field, {config.receptive_field + 1} frames)",
    ]
    rows = [[name, f"{m:.2f}", f"{m / envs:.3f}", f"{m / ms[0]:.1f}x"] for name, m in zip(names, ms)]
    table = markdown([f"score newest frame, {envs} envs", "ms / vector step", "ms / env step", "vs streaming"], rows)
    return (
        f"{table}\n\nstreaming is {result['speedup']:.1f}x faster than the window reference; "
        f"max |streaming - receptive-field reference| = {result['max_abs_diff']:.2e} nats per frame"
    )


def sampling_table(results: list[dict[str, Any]]) -> str:
    rows = [
        [str(r["context"]), str(r["horizon"]), str(r["batch"]), f"{r['cached_tokens_per_s']:.0f}",
         f"{r['uncached_tokens_per_s']:.0f}", f"{r['speedup']:.1f}x", str(r["identical"])]
        for r in results
    ]
    header = ["context frames", "sampled frames", "batch", "cached tokens / s (`sample_frames`)",
              "uncached tokens / s (`sample_frames_uncached`)", "speed-up", "identical tokens (same seed)"]
    return markdown(header, rows)


def memory_table(short: dict[str, int], long: dict[str, int], config: VideoTransformerConfig) -> str:
    rows = [[str(r["frames"]), f"{r['max_rss_bytes'] / 2**20:.1f}", f"{r['kv_cache_bytes'] / 2**20:.2f}"] for r in (short, long)]
    size = f"embed {config.embed_dim}, {config.layers} layers, window {config.window}, {config.code_shape} codes"
    table = markdown([f"rollout frames ({size})", "peak RSS MiB", "KV cache MiB"], rows)
    return f"{table}\n\npeak RSS ratio long / short: {long['max_rss_bytes'] / short['max_rss_bytes']:.3f}"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description="Benchmark a randomly initialised video transformer on DMC-shaped codes (8x8 from 256): "
        "per-env-step reward cost of streaming vs re-scoring, cached vs uncached sampling, and peak memory of "
        "long vs short rollouts. Prints markdown tables.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--preset", default="dmc", help="transformer size: dmc (embed 128, 4 layers) or dmc-paper")
    parser.add_argument(
        "--window", type=int, default=15, help="frames each frame attends back; VIPER's 16-frame clip is window 15"
    )
    parser.add_argument("--envs", type=int, default=8, help="parallel envs scored per step")
    parser.add_argument("--steps", type=int, default=40, help="timed env steps")
    parser.add_argument(
        "--contexts", type=int, nargs="+", default=[4, 15],
        help="real frames before sampling, one measurement each (the uncached cost grows with them)",
    )
    parser.add_argument("--horizon", type=int, default=2, help="frames sampled (the uncached path is slow)")
    parser.add_argument(
        "--memory-frames", type=int, nargs=2, default=[200, 2000], metavar=("SHORT", "LONG"),
        help="rollout lengths compared for peak memory (small model: embed 64, 2 layers)",
    )
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    parser.add_argument("--out", type=Path, default=None, help="also write the tables to this markdown file")
    parser.add_argument("--_rollout", help=argparse.SUPPRESS)  # internal: one memory measurement, as JSON
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    if args._rollout:
        job = json.loads(args._rollout)
        print(json.dumps(rollout_peak_rss(VideoTransformerConfig.from_dict(job["config"]), job["frames"])))
        return

    config = preset_config(args.preset, args.window)
    model = random_model(config)
    memory_config = replace(config, **MEMORY_MODEL)
    sections = []

    def report(*parts: str) -> None:
        sections.extend(parts)
        print("\n\n".join(parts), end="\n\n", flush=True)

    report(
        f"## Reward cost per env step ({args.preset}: embed {config.embed_dim}, {config.layers} layers, "
        f"{config.heads} heads, window {config.window}; {args.steps} steps, {torch.get_num_threads()} threads)",
        reward_table(reward_cost(model, args.envs, args.steps), config, args.envs),
    )
    report(
        "## Cached vs uncached sampling",
        sampling_table([sampling_speed(model, 1, context, args.horizon) for context in args.contexts]),
    )
    report(
        "## Rollout peak memory (each in a fresh process)",
        memory_table(*(measure_in_subprocess(memory_config, n) for n in args.memory_frames), memory_config),
    )
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text("\n\n".join(sections) + "\n")


if __name__ == "__main__":
    main()

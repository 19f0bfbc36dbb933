"""Is the imagined env fast enough to train in, and how faithful is it? Steps per second beside the real DMC
env's, and imagined-vs-real PSNR, by lever, in one run.

The real env renders each 64x64 frame with MuJoCo (``MUJOCO_GL=egl``, software GL here) after
``action_repeat`` physics steps; the imagined env (:class:`envs.world_model.WorldModelVectorEnv`)
samples every sub-env's next frame in one batched, KV-cached call and decodes it, with sequential
decoding (one code per model step) and with Jacobi decoding (the same frames, a whole frame per
step until it stops changing), timed apart. Both envs take uniformly random actions; the imagined
env starts from real context frames of the same task.
Without ``--model`` the imagined env runs an untrained model of the ``dmc`` presets (8x8 codes,
4 layers of 8-frame windows): its sequential speed is that of a trained one of the same shape, but
not its Jacobi speed, which depends on how the codes of a frame depend on each other (an untrained
model's hardly do: a few steps per frame; a trained cartpole model's do: about 60 of 65). Time a
trained model, e.g. the world model of a ``train-imagination`` run, at the action repeat it learnt:

    python -m experiments.benchmarks.world_model_env_speed --task cartpole-balance \
        --model runs/imagine-balance/world_model/model --envs 1 16 64 --threads 2

The levers, side by side: several models (``--model LABEL=PATH``, e.g. 8x8 codes against 4x4), shorter
attention windows at sampling time (``--windows 8 4``: the same weights attending to fewer past frames,
:meth:`~worldmodel.video_model.VideoModel.with_window`) and the decodings (``--decodings sequential jacobi
masked:4``; masked decoding needs a model trained with ``--masked-decoding``). Fidelity is the cost side:
``--fidelity-clips`` fresh random-action clips of the real env, each imagined from its first frames (the
model's whole window) under its own later actions; the PSNR of the imagined frames against the real ones over
the first ``--fidelity-steps`` (15, as ``train-imagination`` reports it). And what the env gives
(``--observations frames codes``): decoded frames, or code vectors for an agent that acts on codes
(``train-imagination --agent-observes codes``), which spares every step the decoder.
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
import time
from dataclasses import replace

import gymnasium as gym
import numpy as np
import torch

import envs
from envs.collect import describe_env, run_episode
from envs.world_model import WorldModelVectorEnv
from experiments.eval_consistency import exact_match_psnr
from experiments.presets import tokenizer_preset, video_preset
from worldmodel.metrics import psnr
from worldmodel.sampling import check_decoding, parse_decoding
from worldmodel.tokenizer import FrameTokenizer
from worldmodel.train_video import fit_to_data
from worldmodel.transformer import VideoTransformer
from worldmodel.video_model import VideoModel, VideoModelInfo


def untrained_model(task: str) -> VideoModel:
    """A ``dmc``-preset tokenizer and transformer (with a reward head) for the task's actions, random weights."""
    torch.manual_seed(0)
    tokenizer = FrameTokenizer(tokenizer_preset("dmc"))
    manifest = describe_env(f"dmc:{task}", envs.make(f"dmc:{task}"))
    config = fit_to_data(replace(video_preset("dmc").transformer, reward_head=True), tokenizer, manifest)
    return VideoModel(tokenizer, VideoTransformer(config).eval(), VideoModelInfo(action_space=manifest.action_space))


def real_contexts(task: str, action_repeat: int, frames: int, clips: int, seed: int = 0) -> dict[str, np.ndarray]:
    """``clips`` random-action clips of ``frames`` (>= 2) frames from the real env: where imagined episodes start."""
    env = gym.wrappers.TimeLimit(envs.make(f"dmc:{task}", action_repeat=action_repeat), frames - 1)
    env.action_space.seed(seed)
    episodes = [run_episode(env, lambda obs: env.action_space.sample(), seed + i) for i in range(clips)]
    return {key: np.stack([episode[key] for episode in episodes]) for key in ("video", "actions")}


def real_steps_per_s(task: str, action_repeat: int, steps: int) -> float:
    env = envs.make(f"dmc:{task}", action_repeat=action_repeat)
    env.reset(seed=0)
    env.action_space.seed(0)
    start = time.perf_counter()
    for _ in range(steps):
        _, _, terminated, truncated, _ = env.step(env.action_space.sample())
        if terminated or truncated:
            env.reset()
    return steps / (time.perf_counter() - start)


def imagined_steps_per_s(
    model: VideoModel, pool: dict[str, np.ndarray], num_envs: int, steps: int, decoding: str,
    observations: str = "frames",
) -> tuple[float, float, float]:
    """Sub-env steps per second (``num_envs`` per batched step) after one warm-up step, model steps per frame,
    and the share of a step that decoding codes into frames takes (what an agent acting on codes saves; 0 when
    the env gives code vectors)."""

    def contexts(n: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
        pick = rng.integers(len(pool["video"]), size=n)
        return {key: value[pick] for key, value in pool.items()}

    env = WorldModelVectorEnv(model, contexts, num_envs, decoding=decoding, observations=observations)
    env.reset(seed=0)
    env.action_space.seed(0)
    env.step(env.action_space.sample())
    model_steps = 0
    start = time.perf_counter()
    for _ in range(steps):
        env.step(env.action_space.sample())
        model_steps += env.sampler.sampler.frame_steps
    seconds = time.perf_counter() - start
    if observations == "codes":
        return num_envs * steps / seconds, model_steps / steps, 0.0
    codes = env.sampler.sampler.latest
    start = time.perf_counter()
    with torch.no_grad():
        for _ in range(steps):
            model.tokenizer.decode(codes)
    return num_envs * steps / seconds, model_steps / steps, (time.perf_counter() - start) / seconds


def imagined_psnr(
    model: VideoModel, clips: dict[str, np.ndarray], context: int, steps: int, decoding: str, seed: int = 0
) -> np.ndarray:
    """Mean PSNR (dB) over ``clips`` at each of ``steps`` imagined steps: every real clip imagined from its first
    ``context`` frames under its own later actions (capped where a frame comes out exact)."""
    start = {key: clips[key][:, :context] for key in ("video", "actions")}
    env = WorldModelVectorEnv(model, lambda n, rng: start, len(start["video"]), reward="none", terminations=False,
                              decoding=decoding)
    env.reset(seed=seed)
    scores = []
    for t in range(steps):
        frames = env.step(clips["actions"][:, context - 1 + t])[0]
        real = clips["video"][:, context + t]
        scores.append(np.minimum(psnr(real, frames).numpy(), exact_match_psnr(real.shape)).mean())
    return np.asarray(scores)


def _labelled_models(specs: list[str] | None, task: str) -> dict[str, VideoModel]:
    if not specs:
        return {"untrained dmc": untrained_model(task)}
    models = {}
    for spec in specs:
        label, _, path = spec.rpartition("=")
        models[label or path] = VideoModel.load(path)
    return models


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", action="append", help=(
        "an action-conditioned video model bundle, LABEL=PATH or PATH; repeat to compare models (default: an "
        "untrained dmc preset)"))
    parser.add_argument("--task", default="cartpole-swingup", help="DMC task of the real env")
    parser.add_argument(
        "--action-repeat", type=int, default=8,
        help="physics steps per env step: the model's (train-imagination and DMC-100k: 8 on cartpole)",
    )
    parser.add_argument("--envs", type=int, nargs="+", default=[1, 16, 64], help="imagined sub-env counts")
    parser.add_argument("--steps", type=int, default=20, help="batched imagined steps per timing")
    parser.add_argument("--real-steps", type=int, default=200, help="real env steps to time, beside each row")
    parser.add_argument("--threads", type=int, default=1, help="torch threads")
    parser.add_argument("--windows", type=int, nargs="+", default=None, help=(
        "attention windows (frames) to sample with, each at most the model's (default: the model's own)"))
    parser.add_argument("--decodings", nargs="+", type=check_decoding, default=["sequential", "jacobi"], help=(
        "decodings to time: sequential, jacobi, masked[:PASSES] (a model trained with --masked-decoding)"))
    parser.add_argument("--observations", nargs="+", default=["frames", "codes"], help=(
        "what the imagined env gives: frames (decoded) and/or codes (code vectors, for an agent acting on codes: "
        "no decoder; the same frames are sampled, so the PSNR is the same)"))
    parser.add_argument("--fidelity-clips", type=int, default=8, help="real clips imagined for the PSNR (0: none)")
    parser.add_argument("--fidelity-steps", type=int, default=15, help="imagined steps the PSNR averages over")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    rows = []
    for label, model in _labelled_models(args.model, args.task).items():
        context = max(model.window, 2)
        pool = real_contexts(args.task, args.action_repeat, context, clips=8)
        clips = (real_contexts(args.task, args.action_repeat, context + args.fidelity_steps, args.fidelity_clips,
                               seed=100) if args.fidelity_clips else None)
        for window in args.windows or [model.window]:
            if not 1 <= window <= model.window:
                raise SystemExit(f"--windows: {window} is not in [1, {model.window}], the window of {label}")
            narrow = model if window == model.window else model.with_window(window)
            for decoding in args.decodings:
                if parse_decoding(decoding)[0] == "masked" and not model.transformer.config.masked_decoding:
                    print(f"{label}: no {decoding} rows (trained without --masked-decoding)", file=sys.stderr)
                    continue
                fidelity = (float(imagined_psnr(narrow, clips, context, args.fidelity_steps, decoding).mean())
                            if clips is not None else None)
                for n, observations in itertools.product(args.envs, args.observations):
                    # the real env is timed beside each row, so that the ratio holds while other load comes and goes
                    real = real_steps_per_s(args.task, args.action_repeat, args.real_steps)
                    rate, model_steps, decode_share = imagined_steps_per_s(
                        narrow, pool, n, args.steps, decoding, observations)
                    rows.append({"model": label, "tokens_per_frame": model.transformer.config.tokens_per_frame,
                                 "window": window, "decoding": decoding, "observations": observations, "envs": n,
                                 "steps_per_s": rate, "real_steps_per_s": real, "model_steps_per_frame": model_steps,
                                 "decode_share": decode_share, "psnr_first_steps": fidelity})
    setting = f"{args.task}, action repeat {args.action_repeat}, 64x64, {args.threads} thread(s)"
    print(f"| env ({setting}) | tokens per frame | window | decoding | observations | model steps per frame | "
          f"codes to frames, share of step | steps/s | x real | PSNR, first {args.fidelity_steps} steps |")
    print("|---|---:|---:|---|---|---:|---:|---:|---:|---:|")
    if not rows:
        raise SystemExit("nothing to time: every model lacks the decodings asked for")
    reals = [row["real_steps_per_s"] for row in rows]
    print(f"| real DMC env, timed beside each row | | | | frames | | | {min(reals):.1f}-{max(reals):.1f} | 1.0 | |")
    for row in rows:
        fidelity = "" if row["psnr_first_steps"] is None else f"{row['psnr_first_steps']:.2f} dB"
        print(f"| {row['model']}, {row['envs']} sub-env{'s' if row['envs'] > 1 else ''} | {row['tokens_per_frame']} | "
              f"{row['window']} | {row['decoding']} | {row['observations']} | {row['model_steps_per_frame']:.1f} | "
              f"{100 * row['decode_share']:.0f}% | {row['steps_per_s']:.1f} | "
              f"{row['steps_per_s'] / row['real_steps_per_s']:.2f} | "
              f"{fidelity} |")
    summary = {"imagined": rows, "models": args.model, "action_repeat": args.action_repeat}
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()

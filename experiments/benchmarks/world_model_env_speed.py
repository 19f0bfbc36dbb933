"""Is the imagined env fast enough to train in? Its steps per second beside the real DMC env's, in one run.

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
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import replace

import gymnasium as gym
import numpy as np
import torch

import envs
from envs.collect import describe_env, run_episode
from envs.world_model import WorldModelVectorEnv
from experiments.presets import tokenizer_preset, video_preset
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
    model: VideoModel, pool: dict[str, np.ndarray], num_envs: int, steps: int, decoding: str
) -> tuple[float, float, float]:
    """Sub-env steps per second (``num_envs`` per batched step) after one warm-up step, model steps per frame,
    and the share of a step that decoding codes into frames takes (what an agent acting on codes would save)."""

    def contexts(n: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
        pick = rng.integers(len(pool["video"]), size=n)
        return {key: value[pick] for key, value in pool.items()}

    env = WorldModelVectorEnv(model, contexts, num_envs, decoding=decoding)
    env.reset(seed=0)
    env.action_space.seed(0)
    env.step(env.action_space.sample())
    model_steps = 0
    start = time.perf_counter()
    for _ in range(steps):
        env.step(env.action_space.sample())
        model_steps += env.sampler.sampler.frame_steps
    seconds = time.perf_counter() - start
    codes = env.sampler.sampler.latest
    start = time.perf_counter()
    with torch.no_grad():
        for _ in range(steps):
            model.tokenizer.decode(codes)
    return num_envs * steps / seconds, model_steps / steps, (time.perf_counter() - start) / seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=None, help="an action-conditioned video model bundle (default: untrained dmc preset)")
    parser.add_argument("--task", default="cartpole-swingup", help="DMC task of the real env")
    parser.add_argument(
        "--action-repeat", type=int, default=8,
        help="physics steps per env step: the model's (train-imagination and DMC-100k: 8 on cartpole)",
    )
    parser.add_argument("--envs", type=int, nargs="+", default=[1, 16, 64], help="imagined sub-env counts")
    parser.add_argument("--steps", type=int, default=20, help="batched imagined steps per timing")
    parser.add_argument("--real-steps", type=int, default=200, help="real env steps to time")
    parser.add_argument("--threads", type=int, default=1, help="torch threads")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    real = real_steps_per_s(args.task, args.action_repeat, args.real_steps)
    model = VideoModel.load(args.model) if args.model else untrained_model(args.task)
    pool = real_contexts(args.task, args.action_repeat, max(model.window, 2), clips=8)
    rows = {
        f"{n} {decoding}": imagined_steps_per_s(model, pool, n, args.steps, decoding)
        for n in args.envs for decoding in ("sequential", "jacobi")
    }
    setting = f"{args.task}, action repeat {args.action_repeat}, 64x64, {args.threads} thread(s)"
    print(f"| env ({setting}) | decoding | model steps per frame | codes to frames, share of step | steps/s | x real |")
    print("|---|---|---:|---:|---:|---:|")
    print(f"| real DMC env | | | | {real:.1f} | 1.0 |")
    for key, (rate, model_steps, decode_share) in rows.items():
        n, decoding = key.split()
        print(f"| imagined, {n} sub-env{'s' if int(n) > 1 else ''} | {decoding} | {model_steps:.1f} | "
              f"{100 * decode_share:.0f}% | {rate:.1f} | {rate / real:.2f} |")
    summary = {"real_steps_per_s": real, "imagined": rows, "model": args.model, "action_repeat": args.action_repeat}
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()

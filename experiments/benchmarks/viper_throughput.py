"""What the VIPER reward costs an agent, measured: env steps per second with and without the wrapper.

One DMC env renders 64x64 frames; a DrQ agent acts and updates once per env step (its
training loop's default). Timed separately, best of ``--repeats``, one torch thread:

- env step alone, and env step inside :class:`envs.viper.ViperReward` (their difference
  is the reward's cost: encode one frame, push it through the rolling KV cache);
- the agent's own work per step (act + one update on a replay batch);
- batched scoring of ``--envs`` envs in one call (the vector wrapper) against one
  scorer per env, per env step;
- with ``--baseline-model`` (a random-play model on the same tokenizer), the likelihood-ratio
  reward per frame with one encode shared by both models against an encode per model.

    python -m experiments.benchmarks.viper_throughput --model runs/video-dmc/model
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable

import numpy as np
import torch

import envs
from agents.drq import DRQ_PRESETS, DrQAgent
from agents.replay import ObservationStack, ReplayBuffer
from envs.viper import ViperReward
from worldmodel.reward import VideoLikelihoodReward
from worldmodel.video_model import VideoModel


def best_ms(run: Callable[[], None], count: int, repeats: int) -> float:
    """Best-of-``repeats`` milliseconds per call of ``run``, each timing ``count`` calls."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(count):
            run()
        times.append((time.perf_counter() - start) / count)
    return 1000 * min(times)


def _stepper(env) -> Callable[[], None]:
    env.reset(seed=0)
    env.action_space.seed(0)

    def step() -> None:
        _, _, terminated, truncated, _ = env.step(env.action_space.sample())
        if terminated or truncated:
            env.reset()

    return step


def ratio_ms(model: VideoModel, baseline: VideoModel, task: str, steps: int, repeats: int) -> dict[str, float]:
    """Milliseconds per frame of the likelihood-ratio reward, one encode shared by both models or one each."""
    frames = envs.make(f"dmc:{task}")
    frame, _ = frames.reset(seed=2)
    shared = VideoLikelihoodReward(model, 1, task=task, baseline=baseline)
    if not shared.shared_tokenizer:
        raise ValueError("the baseline model has another tokenizer than the expert model: nothing to share")
    separate = VideoLikelihoodReward(model, 1, task=task, baseline=baseline)
    separate.shared_tokenizer = False  # the same reward, each model encoding the frame itself
    no_reset = np.zeros(1, bool)
    return {
        "ratio_shared_encode_ms": best_ms(lambda: shared(frame[None], no_reset), steps, repeats),
        "ratio_encode_each_ms": best_ms(lambda: separate(frame[None], no_reset), steps, repeats),
    }


def measure(model: VideoModel, task: str, preset: str, steps: int, repeats: int, num_envs: int) -> dict[str, float]:
    plain = envs.make(f"dmc:{task}")
    wrapped = ViperReward(envs.make(f"dmc:{task}"), model)
    env_ms = best_ms(_stepper(plain), steps, repeats)
    viper_env_ms = best_ms(_stepper(wrapped), steps, repeats)

    config = DRQ_PRESETS[preset]
    stack = ObservationStack(3)
    frame, _ = plain.reset(seed=1)
    replay = ReplayBuffer(10 * config.batch_size, frame.shape, plain.action_space.shape, 3)
    replay.add_first(frame)
    obs = stack.reset(frame)
    for _ in range(2 * config.batch_size):
        frame, reward, *_ = plain.step(plain.action_space.sample())
        replay.add(plain.action_space.sample(), reward, frame, False)
        obs = stack.push(frame)
    agent = DrQAgent(config, obs.shape, plain.action_space)
    rng = np.random.default_rng(0)
    act_ms = best_ms(lambda: agent.act(obs, sample=True), steps, repeats)
    update_ms = best_ms(lambda: agent.update(replay.sample(rng=rng, **agent.batch_spec())), max(steps // 10, 3), repeats)

    frames = np.stack([plain.step(plain.action_space.sample())[0] for _ in range(num_envs)])
    batched = VideoLikelihoodReward(model, num_envs, task=task)
    singles = [VideoLikelihoodReward(model, 1, task=task) for _ in range(num_envs)]
    no_reset = np.zeros(num_envs, bool)
    batched_ms = best_ms(lambda: batched(frames, no_reset), steps, repeats) / num_envs
    single_ms = best_ms(lambda: [s(frames[i : i + 1], no_reset[:1]) for i, s in enumerate(singles)], steps, repeats)

    viper_ms = viper_env_ms - env_ms
    agent_ms = act_ms + update_ms
    with_viper = viper_env_ms + agent_ms
    return {
        "env_step_ms": env_ms,
        "viper_reward_ms": viper_ms,
        "agent_act_ms": act_ms,
        "agent_update_ms": update_ms,
        "steps_per_s_without_viper": 1000 / (env_ms + agent_ms),
        "steps_per_s_with_viper": 1000 / with_viper,
        "viper_share_of_step": viper_ms / with_viper,
        "batched_ms_per_env": batched_ms,
        "separate_ms_per_env": single_ms / num_envs,
        "envs": num_envs,
    }


def table(r: dict[str, float], preset: str) -> str:
    return "\n".join([
        f"| per env step (DrQ '{preset}', 1 update/step) | ms |",
        "|---|---:|",
        f"| env step (render 64x64) | {r['env_step_ms']:.1f} |",
        f"| VIPER reward (wrapper minus env) | {r['viper_reward_ms']:.1f} |",
        f"| agent act | {r['agent_act_ms']:.1f} |",
        f"| agent update | {r['agent_update_ms']:.1f} |",
        "",
        "| | env steps/s |",
        "|---|---:|",
        f"| without VIPER | {r['steps_per_s_without_viper']:.2f} |",
        f"| with VIPER | {r['steps_per_s_with_viper']:.2f} |",
        f"| VIPER share of the agent's step time | {100 * r['viper_share_of_step']:.1f} % |",
        "",
        f"| scoring {r['envs']} envs | ms per env step |",
        "|---|---:|",
        f"| one batched call (vector wrapper) | {r['batched_ms_per_env']:.2f} |",
        f"| one scorer per env | {r['separate_ms_per_env']:.2f} "
        f"({r['separate_ms_per_env'] / r['batched_ms_per_env']:.1f}x) |",
    ] + ([] if "ratio_shared_encode_ms" not in r else [
        "",
        "| likelihood-ratio reward | ms per frame |",
        "|---|---:|",
        f"| one encode shared by both models | {r['ratio_shared_encode_ms']:.1f} |",
        f"| an encode per model | {r['ratio_encode_each_ms']:.1f} "
        f"({r['ratio_encode_each_ms'] / r['ratio_shared_encode_ms']:.2f}x) |",
    ]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, help="video model bundle with reward statistics for --task")
    parser.add_argument("--task", default="cartpole-swingup")
    parser.add_argument("--preset", default="cpu", choices=sorted(DRQ_PRESETS), help="DrQ size")
    parser.add_argument("--steps", type=int, default=100, help="calls per timing")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--envs", type=int, default=8, help="envs for the batched-scoring comparison")
    parser.add_argument("--baseline-model", default=None, help="random-play model on the same tokenizer, for the "
                        "likelihood-ratio rows")
    args = parser.parse_args()
    torch.set_num_threads(1)
    model = VideoModel.load(args.model)
    result = measure(model, args.task, args.preset, args.steps, args.repeats, args.envs)
    if args.baseline_model is not None:
        result.update(ratio_ms(model, VideoModel.load(args.baseline_model), args.task, args.steps, args.repeats))
    print(table(result, args.preset))
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()

"""True DMC returns of the scripted experts, next to a random policy's.

The experts are the top of the graded-quality episodes that video-model rewards
are judged on, so they must really solve their tasks (mean return >= 800 of 1000).

    python -m experiments.benchmarks.expert_returns --episodes 20
"""

from __future__ import annotations

import argparse

import gymnasium as gym
import numpy as np
from tqdm import tqdm

from envs import EXPERT_TASKS, Policy, make, make_expert, random_policy


def episode_return(env: gym.Env, policy: Policy, seed: int) -> float:
    """Sum of the env's (true task) rewards over one episode."""
    observation, _ = env.reset(seed=seed)
    total, done = 0.0, False
    while not done:
        observation, reward, terminated, truncated, _ = env.step(policy(observation))
        total += reward
        done = terminated or truncated
    return total


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description="Run each scripted DMC expert (and a random policy, for reference) through "
        "envs.make('dmc:<task>') with 64x64 pixels and action repeat 2, and print a markdown "
        "table of true episode returns (out of ~1000). Rendering dominates: ~8 s per episode.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--episodes", type=int, default=20, help="expert episodes per task")
    parser.add_argument("--random-episodes", type=int, default=5, help="random-policy episodes per task")
    parser.add_argument(
        "--tasks", default=",".join(EXPERT_TASKS), help=f"comma-separated tasks, from: {', '.join(EXPERT_TASKS)}"
    )
    parser.add_argument("--seed", type=int, default=0, help="episode i of each task resets with seed + i")
    args = parser.parse_args(argv)
    if args.episodes < 1 or args.random_episodes < 0:
        parser.error("--episodes must be >= 1 and --random-episodes >= 0")
    tasks = args.tasks.split(",")
    unknown = [task for task in tasks if task not in EXPERT_TASKS]
    if unknown:
        parser.error(f"no expert for {', '.join(unknown)}; choose from {', '.join(EXPERT_TASKS)}")

    rows = []
    with tqdm(total=len(tasks) * (args.episodes + args.random_episodes), unit="episode") as progress:
        for task in tasks:
            env = make(f"dmc:{task}")
            expert = make_expert(task, env)
            expert_returns = []
            for i in range(args.episodes):
                expert_returns.append(episode_return(env, expert, args.seed + i))
                progress.update()
            random_returns = []
            for i in range(args.random_episodes):
                policy = random_policy(env.action_space, args.seed + i)
                random_returns.append(episode_return(env, policy, args.seed + i))
                progress.update()
            env.close()
            rows.append((task, np.array(expert_returns), np.array(random_returns)))

    print(f"\nTrue returns over {args.episodes} expert / {args.random_episodes} random episodes (seed {args.seed}):\n")
    print("| task | expert mean | expert std | expert min | random mean |")
    print("|---|---:|---:|---:|---:|")
    for task, expert_returns, random_returns in rows:
        random_mean = f"{random_returns.mean():.1f}" if len(random_returns) else "-"
        print(
            f"| {task} | {expert_returns.mean():.1f} | {expert_returns.std():.1f} | "
            f"{expert_returns.min():.1f} | {random_mean} |"
        )


if __name__ == "__main__":
    main()

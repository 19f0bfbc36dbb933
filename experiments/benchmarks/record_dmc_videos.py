"""Record DMC episodes as MP4 files with gymnasium's ``RecordVideo``: footage our own dataset writer never touched.

Stands in for a user's own videos in the import chain (docs/results/viper.md, "An MP4 folder to a VIPER
reward"): by default 480x480 frames at every physics step (100 fps on cartpole), written by moviepy, which
``wm import-videos`` then crops, resizes and resamples to the reward model's frames. Needs moviepy
(``pip install moviepy``, in the test extra). Rerunning skips the episodes already written.

    python -m experiments.benchmarks.record_dmc_videos --task cartpole-swingup --policies expert,random \\
        --episodes 40 --out runs/mp4chain/videos
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from gymnasium.wrappers import RecordVideo

import envs
from envs.collect import PolicySpec, make_policy


def record_episode(task: str, policy_label: str, seed: int, out: Path, size: int, physics_per_frame: int) -> float:
    """Write ``{out}/{policy}-seed{seed}-episode-0.mp4`` (``:`` dropped from the policy's label), one episode at
    the env's real-time frame rate, whole or not at all; returns its true return."""
    spec = f"dmc:{task}"
    name = f"{policy_label.replace(':', '')}-seed{seed}"
    partial = out / ".partial"  # RecordVideo writes here; a whole file then moves into place
    env = envs.make(spec, size=size, action_repeat=physics_per_frame)
    env = RecordVideo(env, str(partial), episode_trigger=lambda episode: True, name_prefix=name, disable_logger=True)
    policy = make_policy(PolicySpec.parse(policy_label), env, spec, seed)
    observation, _ = env.reset(seed=seed)
    total, done = 0.0, False
    while not done:
        observation, reward, terminated, truncated, _ = env.step(policy(observation))
        total += float(reward)
        done = terminated or truncated
    env.close()
    file = f"{name}-episode-0.mp4"
    (partial / file).replace(out / file)
    return total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--task", default="cartpole-swingup", help="DMC task with a scripted expert")
    parser.add_argument("--policies", default="expert,random", help="as wm collect's (expert, random, noisy:STD, ...)")
    parser.add_argument("--episodes", type=int, default=40, help="episodes per policy")
    parser.add_argument("--seed", type=int, default=0, help="seed of the first episode; the others count up")
    parser.add_argument("--size", type=int, default=480, help="rendered frame side in pixels")
    parser.add_argument("--physics-per-frame", type=int, default=1,
                        help="physics steps per recorded frame (the MP4's rate is the env's real time)")
    parser.add_argument("--out", required=True, type=Path, help="folder of {policy}/ subfolders of MP4 files")
    args = parser.parse_args()
    for label in args.policies.split(","):
        name = label.replace(":", "")
        folder = args.out / name
        returns = []
        for seed in range(args.seed, args.seed + args.episodes):
            if (folder / f"{name}-seed{seed}-episode-0.mp4").exists():
                continue
            returns.append(record_episode(args.task, label, seed, folder, args.size, args.physics_per_frame))
            print(f"{label} seed {seed}: true return {returns[-1]:.1f}", flush=True)
        if returns:
            print(f"{label}: {len(returns)} episodes recorded, mean true return {np.mean(returns):.1f}")


if __name__ == "__main__":
    main()

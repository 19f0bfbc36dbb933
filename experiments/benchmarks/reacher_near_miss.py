"""Record reacher-easy near misses: the scripted expert aimed beside the target, resting just off it.

The behaviour the VIPER-ratio agents found on reacher (true reward 0), as probe episodes for
`wm eval-reward` beside the recipe's graded ones (see docs/results/viper.md, "Probes of cheap play"):

    python -m experiments.benchmarks.reacher_near_miss --out runs/probes/reacher-easy --episodes 5
"""

from __future__ import annotations

import argparse
from pathlib import Path

import gymnasium as gym
import numpy as np

from envs.collect import PolicySpec, collect
from envs.experts import Policy, ReacherExpert

OFFSET = 0.09  # metres from the target's centre: its radius 0.05, the finger's 0.01, and a margin


def near_miss_policy(spec: PolicySpec, env: gym.Env, env_spec: str, seed: int) -> Policy:
    """The expert aimed ``OFFSET`` beside the target, in a direction drawn from ``seed`` (a policy factory)."""
    angle = np.random.default_rng(seed).uniform(0.0, 2.0 * np.pi)
    return ReacherExpert(env.unwrapped, aim_offset=(OFFSET * np.cos(angle), OFFSET * np.sin(angle)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", required=True, type=Path, help="dataset root to add the episodes to")
    parser.add_argument("--episodes", type=int, default=5, help="episodes to record")
    parser.add_argument("--seed", type=int, default=1000, help="as wm collect's --seed (held out from the recipe)")
    args = parser.parse_args()
    manifest = collect("dmc:reacher-easy", [PolicySpec("agent", source="near-miss")], args.episodes, args.out,
                       seed=args.seed, test_fraction=0.99, policy_factory=near_miss_policy)
    returns = [info["return"] for info in manifest.episodes.values() if info["policy"] == "agent-near-miss"]
    print(f"{len(returns)} near-miss episodes in {args.out}, true return {np.mean(returns):.1f}")


if __name__ == "__main__":
    main()

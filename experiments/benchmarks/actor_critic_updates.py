"""How many gradient steps does the imagination loop's actor-critic need per rollout? Measured on a real env.

The imagination agent (``wm train-imagination``) learns from rollouts that cost a transformer pass per code, so
what it makes of each rollout decides what a CPU budget buys. This script isolates the learner from the world
model: :class:`agents.actor_critic.ActorCritic` on a real DMC task from states (the state vector given as a
``(1, 1, D)`` code-vector grid, the observation kind the loop's agent reads with ``--agent-observes codes``),
32 sub-envs of 20 steps per update, as the loop's defaults, and each variant's settings on top. Every
``--eval-every`` updates it plays ``--eval-episodes`` real episodes (the policy's mode, the same start states
each time). Writes ``<out>/<variant>.json`` (rows of update, returns, entropy, the critic's mean absolute
error, minutes; rerun to skip finished variants) and ``<out>/actor_critic_updates.png``.

    python -m experiments.benchmarks.actor_critic_updates --out runs/actor-critic-updates \\
        --variant reinforce='{"epochs": 1, "minibatches": 1}' --variant ppo4x4='{"epochs": 4}'
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from matplotlib.figure import Figure

import envs
from agents.actor_critic import ActorCritic, ActorCriticConfig, StackingPolicy
from envs.collect import run_episode
from experiments.plots import save_figure
from experiments.train_imagination import learn_from_rollouts

EVAL_SEEDS = 10**6  # reset seeds of the evaluation episodes, apart from the learning envs'


def state_grid_env(spec: str, action_repeat: int) -> gym.Env:
    """The DMC task from states, each state vector a ``(1, 1, D)`` float32 grid (what ActorCritic reads)."""
    env = envs.make(spec, action_repeat=action_repeat, observation="state")
    space = gym.spaces.Box(-np.inf, np.inf, (1, 1, env.observation_space.shape[0]), np.float32)
    return gym.wrappers.TransformObservation(env, lambda state: state.astype(np.float32)[None, None], space)


def run_variant(args: argparse.Namespace, name: str, overrides: dict[str, Any]) -> list[dict[str, Any]]:
    """Train one variant for ``args.updates`` updates; its rows, also written to ``<out>/<name>.json``."""
    config = ActorCriticConfig(**overrides)
    vector = gym.vector.SyncVectorEnv([lambda: state_grid_env(args.env, args.action_repeat)] * args.envs)
    evaluation = state_grid_env(args.env, args.action_repeat)
    torch.manual_seed(args.seed)
    agent = ActorCritic(vector.single_observation_space, vector.single_action_space, config)

    def evaluate() -> list[float]:
        return [float(run_episode(evaluation, StackingPolicy(agent, sample=False), EVAL_SEEDS + i)["rewards"].sum())
                for i in range(args.eval_episodes)]

    start, returns = time.time(), evaluate()
    rows = [{"updates": 0, "returns": returns, "mean": float(np.mean(returns))}]
    for chunk in range(args.updates // args.eval_every):
        seeds = [args.seed if chunk == 0 else None] + [None] * (args.eval_every - 1)
        metrics = learn_from_rollouts(agent, vector, seeds, desc=name)
        returns = evaluate()
        rows.append({"updates": rows[-1]["updates"] + args.eval_every, "returns": returns,
                     "mean": float(np.mean(returns)), "entropy": metrics["entropy"],
                     "value_error": metrics["value_error"],
                     "minutes": (time.time() - start) / 60})
        print(f"{name}: {rows[-1]['updates']} updates, real return {rows[-1]['mean']:.1f}", flush=True)
    (args.out / f"{name}.json").write_text(json.dumps(rows))
    return rows


def updates_figure(results: dict[str, list[dict[str, Any]]], args: argparse.Namespace) -> Path:
    """Real return (mean of the evaluation episodes) by update, one line per variant."""
    figure = Figure(figsize=(7, 4))
    axes = figure.subplots()
    for name, rows in results.items():
        axes.plot([row["updates"] for row in rows], [row["mean"] for row in rows], "o-", ms=3, label=name)
    axes.set(title=f"{args.env} from states: the actor-critic alone", ylabel="real return (mode)",
             xlabel=f"actor-critic updates ({args.envs} sub-envs x {ActorCriticConfig.horizon} steps by default)")
    axes.grid(alpha=0.3)
    axes.legend(fontsize=8)
    return save_figure(figure, args.out / "actor_critic_updates.png")


def parse_variant(text: str) -> tuple[str, dict[str, Any]]:
    name, sep, settings = text.partition("=")
    if not sep or not name:
        raise argparse.ArgumentTypeError(f"expected NAME=JSON (ActorCriticConfig fields), got {text!r}")
    try:
        overrides = json.loads(settings)
        ActorCriticConfig(**overrides)
    except (json.JSONDecodeError, TypeError, ValueError) as error:
        raise argparse.ArgumentTypeError(f"variant {name!r}: {error}") from error
    return name, overrides


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--out", type=Path, required=True, help="directory of the variants' JSON and the figure")
    parser.add_argument("--variant", type=parse_variant, action="append", required=True,
                        help="NAME=JSON of ActorCriticConfig fields, e.g. ppo='{\"epochs\": 4}'; repeatable")
    parser.add_argument("--env", default="dmc:cartpole-balance", help="DMC task, from states")
    parser.add_argument("--action-repeat", type=int, default=8, help="physics steps per agent step")
    parser.add_argument("--envs", type=int, default=32, help="sub-envs per rollout")
    parser.add_argument("--updates", type=int, default=300, help="actor-critic updates per variant")
    parser.add_argument("--eval-every", type=int, default=20, help="updates between evaluations")
    parser.add_argument("--eval-episodes", type=int, default=4, help="real episodes per evaluation")
    parser.add_argument("--seed", type=int, default=0, help="initialisation and first reset seed")
    parser.add_argument("--threads", type=int, default=1, help="torch threads")
    args = parser.parse_args()
    if args.updates % args.eval_every:
        parser.error(f"--updates ({args.updates}) must be a multiple of --eval-every ({args.eval_every})")
    torch.set_num_threads(args.threads)
    args.out.mkdir(parents=True, exist_ok=True)
    results = {}
    for name, overrides in args.variant:
        done = args.out / f"{name}.json"
        results[name] = json.loads(done.read_text()) if done.exists() else run_variant(args, name, overrides)
    print("variant | " + " | ".join(str(row["updates"]) for row in next(iter(results.values()))))
    for name, rows in results.items():
        print(f"{name} | " + " | ".join(f"{row['mean']:.0f}" for row in rows))
    print(updates_figure(results, args))


if __name__ == "__main__":
    main()

"""What a faithful pixel DrQ costs on this CPU: DrQ's presets, and each change from ``cpu`` to ``paper`` alone.

The ``cpu`` preset's pixel agents learn far less in DMC-100k than DrQ's published figures
(cartpole-swingup 759 +- 92); this prices the gap. For each config it times, on random frames
and random weights (cost does not depend on them):

- an update: a replay sample of the config's batch plus :meth:`agents.drq.DrQAgent.update`, as the
  training loop times it, averaged over an even number of updates so that steps of the actor and
  target networks every 2nd update count as often as they happen;
- an agent step: the DMC env holding the action for the task's DMC-100k repeat (our env renders
  a frame every 2 physics steps, the rate VIPER scores them at, so 4 renders an agent step on
  cartpole and 2 on reacher), plus one ``act``;
- the projected minutes of a DMC-100k run (100k physics steps; 1000 seed steps of random
  actions, then one update per agent step, evaluation episodes left out).

Wall and CPU time (``time.process_time``) are both given: on a loaded machine CPU time is
the better estimate of the cost. ``--frame-sizes 84`` adds DrQ's 84x84 frames
(``envs.make(..., size=84)``; ``wm train-agent`` renders 64x64, the frames VIPER's video
models score).

    OMP_NUM_THREADS=1 python -m experiments.benchmarks.pixel_agent_cost
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import time
from dataclasses import dataclass

import gymnasium as gym
import numpy as np
import torch

import envs
from agents.drq import DRQ_PRESETS, DrQAgent, DrQConfig
from agents.replay import ReplayBuffer
from envs.wrappers import ActionRepeat, env_frame_skip, env_steps_per_decision
from experiments.benchmarks.env_timing import Stopwatch
from experiments.train_agent import dmc_action_repeat

PHYSICS_STEPS = 100_000  # DMC-100k
SEED_STEPS = 1000  # agent steps of random actions before the first update (DrQ's, and train-agent's default)
FRAME_STACK = 3
ACTS = 10  # timed act calls per config
# denisyarats/drq's default batch: its figures used 512, "with a smaller batch size it still works well".
REPO_BATCH = 128
# The changes from "cpu" to "paper", each the "paper" preset's values of these fields. Learning rate, tau,
# initial temperature and initialisation change nothing a step costs.
CHANGES = {
    "paper encoder (32 ch, strides 2-1-1-1, unpadded)": ("encoder_channels", "encoder_strides", "encoder_padding"),
    "batch 512": ("batch_size",),
    "MLPs 1024 wide": ("hidden_dim",),
    "K = M = 2 views": ("target_augmentations", "critic_augmentations"),
    "actor and targets every 2nd update": ("actor_update_period", "target_update_period"),
}


@dataclass(frozen=True)
class Variant:
    """A DrQ config to time, on frames of ``frame_size`` pixels square."""

    name: str
    config: DrQConfig
    frame_size: int


def variants(frame_sizes: list[int]) -> list[Variant]:
    """The presets at 64x64, ``paper`` at each other frame size and with DrQ's code's batch; ``cpu`` with one
    change to ``paper``'s values at a time, and ``paper`` with one change back to ``cpu``'s (costs multiply,
    so both directions tell)."""
    cpu, paper = DRQ_PRESETS["cpu"], DRQ_PRESETS["paper"]
    out = [Variant(name, DRQ_PRESETS[name], 64) for name in ("cpu", "viper", "paper")]
    out += [Variant("paper", paper, size) for size in frame_sizes if size != 64]
    repo_batch = dataclasses.replace(paper, batch_size=REPO_BATCH)
    out.append(Variant(f"paper, batch {REPO_BATCH} (DrQ's code's default)", repo_batch, 64))
    for sign, start, source in (("+", cpu, paper), ("-", paper, cpu)):
        name = "cpu" if start is cpu else "paper"
        for change, fields in CHANGES.items():
            config = dataclasses.replace(start, **{field: getattr(source, field) for field in fields})
            out.append(Variant(f"{name} {sign} {change}", config, 64))
    out += [Variant(f"cpu + {size}x{size} frames", cpu, size) for size in frame_sizes if size != 64]
    return out


def filled_replay(
    config: DrQConfig, size: int, action_shape: tuple[int, ...], rng: np.random.Generator
) -> ReplayBuffer:
    """A replay of random frames, twice the batch."""
    replay = ReplayBuffer(2 * config.batch_size + FRAME_STACK, (size, size, 3), action_shape, FRAME_STACK)
    replay.add_first(rng.integers(0, 256, (size, size, 3), dtype=np.uint8))
    for _ in range(2 * config.batch_size):
        frame = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
        replay.add(rng.uniform(-1, 1, action_shape).astype(np.float32), 0.0, frame, False)
    return replay


def agent_ms(variant: Variant, min_updates: int, min_seconds: float) -> dict[str, float]:
    """Wall and CPU ms per update (replay sample included, an even count after one warm-up) and per ``act``."""
    rng = np.random.default_rng(0)
    action_space = gym.spaces.Box(-1.0, 1.0, (1,), np.float32)
    shape = (3 * FRAME_STACK, variant.frame_size, variant.frame_size)
    torch.manual_seed(0)
    agent = DrQAgent(variant.config, shape, action_space)
    replay = filled_replay(variant.config, variant.frame_size, action_space.shape, rng)

    def update() -> None:
        agent.update(replay.sample(rng=rng, **agent.batch_spec()))

    update()  # warm-up: allocator, first Adam step
    count, start = 0, time.perf_counter()
    with Stopwatch() as updates:
        while count < min_updates or count % 2 or time.perf_counter() - start < min_seconds:
            update()
            count += 1
    obs = rng.integers(0, 256, shape, dtype=np.uint8)
    agent.act(obs, sample=True)
    with Stopwatch() as acts:
        for _ in range(ACTS):
            agent.act(obs, sample=True)
    return {"update_wall": 1000 * updates.wall / count, "update_cpu": 1000 * updates.cpu / count,
            "act_wall": 1000 * acts.wall / ACTS, "act_cpu": 1000 * acts.cpu / ACTS, "updates": count}


def agent_step_ms(task: str, size: int, steps: int) -> dict[str, float]:
    """Wall and CPU ms per agent step of the env alone: ``size`` x ``size`` frames, the task's DMC-100k action
    repeat, random actions (a reset where an episode ends), as ``wm train-agent --reward env`` steps it."""
    env = envs.make(f"dmc:{task}", size=size)
    env = ActionRepeat(env, env_steps_per_decision(dmc_action_repeat(task), env_frame_skip(env.get_wrapper_attr)))
    env.reset(seed=0)
    env.action_space.seed(0)
    with Stopwatch() as clock:
        for _ in range(steps):
            _, _, terminated, truncated, _ = env.step(env.action_space.sample())
            if terminated or truncated:
                env.reset()
    env.close()
    return {"wall": 1000 * clock.wall / steps, "cpu": 1000 * clock.cpu / steps}


def dmc100k_minutes(task: str, env_ms: float, act_ms: float, update_ms: float) -> float:
    """Minutes of a DMC-100k run's training loop: every agent step's env, the acts after the seed steps, one update
    per agent step from the last seed step on (as :func:`agents.workspace.train_agent` counts them)."""
    agent_steps = PHYSICS_STEPS // dmc_action_repeat(task)
    learning = agent_steps - SEED_STEPS
    return (agent_steps * env_ms + learning * act_ms + (learning + 1) * update_ms) / 60_000


def measure(frame_sizes: list[int], tasks: list[str], min_updates: int, min_seconds: float,
            env_steps: int) -> list[dict[str, object]]:
    """One row per :func:`variants` entry: its agent's costs, and per task its agent step and DMC-100k minutes."""
    env = {(task, size): agent_step_ms(task, size, env_steps) for task in tasks for size in {64, *frame_sizes}}
    rows = []
    for variant in variants(frame_sizes):
        costs = agent_ms(variant, min_updates, min_seconds)
        row: dict[str, object] = {"name": variant.name, "frame_size": variant.frame_size, **costs}
        for task in tasks:
            for clock in ("wall", "cpu"):
                step = env[task, variant.frame_size][clock] + costs[f"act_{clock}"]
                row[f"{task}_step_{clock}"] = step
                row[f"{task}_minutes_{clock}"] = dmc100k_minutes(
                    task, env[task, variant.frame_size][clock], costs[f"act_{clock}"], costs[f"update_{clock}"])
        rows.append(row)
        print(f"  {variant.name} at {variant.frame_size}x{variant.frame_size}: {costs['update_cpu']:.0f} ms CPU "
              f"per update ({costs['updates']} timed)", flush=True)
    return rows


def _duration(minutes: float) -> str:
    return f"{minutes:.0f} min" if minutes < 120 else f"{minutes / 60:.1f} h"


def table(rows: list[dict[str, object]], tasks: list[str]) -> str:
    """A markdown table: update and agent-step ms, and DMC-100k time per task (wall / CPU), against ``cpu``."""
    base = rows[0]["update_cpu"]
    head = ["DrQ config", "frames", "update ms (wall / CPU)", "x cpu (CPU)"]
    head += [f"agent step ms, {task} (CPU)" for task in tasks]
    head += [f"DMC-100k {task} ({PHYSICS_STEPS // dmc_action_repeat(task)} steps; wall / CPU)" for task in tasks]
    lines = ["| " + " | ".join(head) + " |", "|---|---|" + "---:|" * (len(head) - 2)]
    for row in rows:
        cells = [str(row["name"]), f"{row['frame_size']}x{row['frame_size']}",
                 f"{row['update_wall']:.0f} / {row['update_cpu']:.0f}", f"{row['update_cpu'] / base:.1f}"]
        cells += [f"{row[f'{task}_step_cpu']:.0f}" for task in tasks]
        cells += [f"{_duration(row[f'{task}_minutes_wall'])} / {_duration(row[f'{task}_minutes_cpu'])}"
                  for task in tasks]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description="Time DrQ's presets (cpu, viper, paper) and each change from cpu to paper alone on this CPU: "
        "ms per update, ms per agent step, projected DMC-100k minutes on each task. Prints a markdown table.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--tasks", nargs="+", default=["cartpole-swingup", "reacher-easy"], help="DMC tasks")
    parser.add_argument("--frame-sizes", type=int, nargs="*", default=[84],
                        help="frame sizes besides 64 for the paper preset and the cpu ablation (DrQ's is 84)")
    parser.add_argument("--updates", type=int, default=2, help="timed updates per config at least (made even)")
    parser.add_argument("--min-seconds", type=float, default=3.0, help="time each config's updates this long at least")
    parser.add_argument("--env-steps", type=int, default=20, help="timed agent steps per task and frame size")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    load = os.getloadavg()[0]
    with Stopwatch() as total:
        rows = measure(args.frame_sizes, args.tasks, args.updates, args.min_seconds, args.env_steps)
    print(f"\ntorch {torch.__version__}, {torch.get_num_threads()} torch thread(s), OMP_NUM_THREADS="
          f"{os.environ.get('OMP_NUM_THREADS', 'unset')}; {os.cpu_count()} CPUs, load average {load:.1f} at the start "
          f"and {os.getloadavg()[0]:.1f} at the end; {total.wall:.0f} s in all\n")
    print(table(rows, args.tasks))
    print("\n`cpu + X`: the cpu preset with the paper preset's X; `paper - X`: the paper preset with the cpu preset's "
          "values instead of X.")


if __name__ == "__main__":
    main()

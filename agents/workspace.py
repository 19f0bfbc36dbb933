"""One training loop for every agent: train, evaluate, save and resume (DrQ-v2's ``Workspace``).

``make_env(seed)`` builds the env: uint8 ``(H, W, 3)`` frames or float ``(D,)`` states,
and a Box action space. Observations are stacked by the loop and the replay buffer
(each stored once), not by a wrapper. Two returns are tracked per episode: ``return``
sums the reward the agent trains on (the VIPER reward when the env is VIPER-wrapped)
and ``true_return`` sums ``info["task_reward"]`` when the env provides it (else the
same reward), which is the curve papers plot.

An agent (see :class:`Agent`) acts, updates on replay batches drawn as its
``batch_spec`` asks (n-step returns, discount), and turns its weights and optimizer
states into tensors. The loop counts agent steps (env steps after any action repeat).

The run is a :class:`worldmodel.training_run.TrainingRun`. Its directory holds
``settings.json``, ``tb/`` (tensorboard), ``videos/`` (GIFs of evaluation episodes, from
``env.render()``), ``returns.json`` (train and eval returns by agent step) and ``checkpoint/``:
``model.safetensors`` (weights), ``optimizer.safetensors`` (optimizer states and the torch RNG),
``config.json`` (agent kind, config, shapes), ``trainer.json`` (counters, numpy RNG, the episode
in progress) and ``replay.npz``, swapped in atomically. Every episode's reset seed is a function
of (seed, episode), so a run resumed from a checkpoint taken between episodes repeats the
uninterrupted run exactly. The env's own state is not saved, so a checkpoint taken mid-episode
cannot continue that episode: on resume ``returns.json`` records it with ``"cut": true`` (its
return and length so far) and the next episode starts.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import gymnasium as gym
import imageio.v2 as imageio
import numpy as np
import torch

from agents.drq import DRQ_PRESETS, DrQAgent, DrQConfig
from agents.drqv2 import DRQV2_PRESETS, DrQV2Agent, DrQV2Config
from agents.replay import ObservationStack, ReplayBuffer, stored_layout
from worldmodel.checkpoint import (
    CheckpointError, load_checkpoint, write_json_atomic,
)
from worldmodel.device import AUTO, resolve_device
from worldmodel.training_run import MAX_MINUTES_HELP, RUN_CADENCE, TrainingRun

CHECKPOINT_KIND = "agent"
REPLAY_FILE = "replay.npz"
RETURNS_FILE = "returns.json"
COUNTERS = ("episode", "updates", "env_time_s", "update_time_s")  # beside the run's step and elapsed_s
AGENT_RUN_CADENCE = (*RUN_CADENCE, "total_steps", "eval_episodes", "video_every")
_TRAIN_STREAM, _EVAL_STREAM = 0, 1


class Agent(Protocol):
    """What the loop needs of an agent (``DrQAgent``, ``DrQV2Agent``)."""

    config: Any  # a dataclass with to_dict()
    obs_shape: tuple[int, ...]

    def act(self, obs: np.ndarray, sample: bool, step: int = 0) -> np.ndarray: ...

    def update(self, batch: dict[str, np.ndarray], step: int = 0) -> dict[str, float]: ...

    def batch_spec(self) -> dict[str, Any]: ...  # ReplayBuffer.sample's batch_size, n_step, gamma

    def state_tensors(self) -> dict[str, torch.Tensor]: ...

    def load_state_tensors(self, tensors: dict[str, torch.Tensor]) -> None: ...


@dataclass(frozen=True)
class AgentKind:
    """An agent class with its config class and size presets, by the name runs record."""

    agent: type
    config: type
    presets: dict[str, Any]


AGENTS: dict[str, AgentKind] = {
    "drq": AgentKind(DrQAgent, DrQConfig, DRQ_PRESETS),
    "drqv2": AgentKind(DrQV2Agent, DrQV2Config, DRQV2_PRESETS),
}


def agent_kind(name: str) -> AgentKind:
    if name not in AGENTS:
        raise ValueError(f"unknown agent {name!r}; expected one of {sorted(AGENTS)}")
    return AGENTS[name]


@dataclass
class Training:
    """Loop settings, counted in agent steps (env steps after any action repeat)."""

    total_steps: int = field(
        default=500_000, metadata={"help": "agent steps in all (a resumed run continues up to this)"}
    )
    seed_steps: int = field(default=1000, metadata={"help": "uniformly random actions before the first update"})
    update_every: int = field(
        default=1, metadata={"help": "agent steps per update (default: 1; 2 for drqv2's paper preset, as published)"}
    )
    updates_per_step: int = field(
        default=1, metadata={"help": (
            "updates at each update step, the update-to-data ratio when --update-every is 1 (default: 4 for "
            "drqv2's cpu preset on states, else 1)"
        )},
    )
    frame_stack: int = field(
        default=3, metadata={"help": (
            "observations stacked into each agent input, each stored once in the replay (default: 3 frames for "
            "pixels, 1 for states)"
        )},
    )
    replay_capacity: int = field(default=100_000, metadata={"help": "agent steps kept in the replay buffer"})
    eval_every: int = field(
        default=10_000, metadata={"help": "agent steps between evaluation episodes (deterministic policy)"}
    )
    eval_episodes: int = field(default=10, metadata={"help": "episodes per evaluation"})
    checkpoint_every: int = field(
        default=10_000, metadata={"help": "agent steps between atomic checkpoints (agent, optimizers, replay, RNG)"}
    )
    video_every: int = field(
        default=50_000, metadata={"help": (
            "agent steps between GIFs of an evaluation episode (a multiple of eval-every; 0 = none)"
        )},
    )
    log_every: int = field(default=1000, metadata={"help": "agent steps between tensorboard scalars (losses, timings)"})
    max_minutes: float | None = field(
        default=None, metadata={"help": MAX_MINUTES_HELP}
    )
    seed: int = field(default=0, metadata={"help": "seed of the agent, the replay sampling and the episodes"})

    def __post_init__(self) -> None:
        for name in ("total_steps", "update_every", "updates_per_step", "frame_stack", "replay_capacity",
                     "eval_every", "checkpoint_every", "log_every"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.seed_steps < 0 or self.eval_episodes < 0 or self.video_every < 0:
            raise ValueError("seed_steps, eval_episodes and video_every must be >= 0")
        if self.video_every % self.eval_every:
            raise ValueError(f"video_every ({self.video_every}) must be a multiple of eval_every ({self.eval_every})")


def _episode_seed(seed: int, stream: int, episode: int) -> int:
    return int(np.random.SeedSequence([seed, stream, episode]).generate_state(1)[0])


def _check_env(env: gym.Env) -> tuple[tuple[int, ...], gym.spaces.Box]:
    """The env's observation shape and action space, or an error naming what the agents cannot use."""
    space = env.observation_space
    if not isinstance(space, gym.spaces.Box):
        raise ValueError(f"agents need Box observations (frames or state vectors), the env has {space}")
    stored_layout(space.shape)  # frames or vectors, else a named error
    if len(space.shape) == 3 and space.dtype != np.uint8:
        raise ValueError(f"frame observations must be uint8, the env has {space}")
    if not isinstance(env.action_space, gym.spaces.Box):
        raise ValueError(f"agents need a Box action space, the env has {env.action_space}")
    return tuple(int(d) for d in space.shape), env.action_space


def agent_obs_shape(obs_shape: tuple[int, ...], frame_stack: int) -> tuple[int, ...]:
    """The agent's input: a stack of ``frame_stack`` observations, concatenated on the first stored axis."""
    stored, _ = stored_layout(obs_shape)
    return (stored[0] * frame_stack, *stored[1:])


def _write_gif(path: Path, frames: list[np.ndarray], fps: float) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.tmp.gif")
    imageio.mimsave(tmp, frames, duration=1000.0 / fps, loop=0)
    os.replace(tmp, path)


def evaluate_agent(
    agent: Agent,
    env: gym.Env,
    episodes: int,
    frame_stack: int,
    seed: int = 0,
    video_path: str | Path | None = None,
) -> dict[str, float]:
    """Mean true and env return of deterministic episodes with fixed reset seeds (and each episode's true
    return, since one episode's success or failure can swing a small mean); a GIF of the first."""
    true_returns, returns = [], []
    stack = ObservationStack(frame_stack)
    video: list[np.ndarray] = []
    for index in range(episodes):
        obs, _ = env.reset(seed=_episode_seed(seed, _EVAL_STREAM, index))
        agent_obs = stack.reset(obs)
        record = video_path is not None and index == 0

        def film() -> None:
            frame = env.render() if record else None
            if frame is not None:
                video.append(np.asarray(frame))

        film()
        true_return = env_return = 0.0
        done = False
        while not done:
            obs, reward, terminated, truncated, info = env.step(agent.act(agent_obs, sample=False))
            agent_obs = stack.push(obs)
            film()
            env_return += float(reward)
            true_return += float(info.get("task_reward", reward))
            done = terminated or truncated
        true_returns.append(true_return)
        returns.append(env_return)
    if video_path is not None and video:
        _write_gif(Path(video_path), video, env.metadata.get("render_fps", 30))
    return {"true_return": float(np.mean(true_returns)), "return": float(np.mean(returns)), "episodes": episodes,
            "true_returns": true_returns}


def _build_agent(meta: dict[str, Any]) -> Agent:
    kind = agent_kind(meta["agent"])
    low, high = np.array(meta["action_low"], np.float32), np.array(meta["action_high"], np.float32)
    return kind.agent(kind.config.from_dict(meta["config"]), tuple(meta["obs_shape"]), gym.spaces.Box(low, high))


def load_agent(checkpoint_dir: str | Path, device: str = AUTO) -> Agent:
    """The agent (weights only) of a :func:`train_agent` checkpoint, ready to ``act`` on ``device``."""
    tensors, meta = load_checkpoint(checkpoint_dir)
    if meta.get("kind") != CHECKPOINT_KIND:
        raise CheckpointError(f"{checkpoint_dir} is of kind {meta.get('kind')!r}, expected {CHECKPOINT_KIND!r}")
    agent = _build_agent(meta)
    agent.to(resolve_device(device)).load_state_tensors(tensors)
    return agent


class _Means:
    """Running sums of scalars between two tensorboard writes."""

    def __init__(self) -> None:
        self.sums: dict[str, float] = {}
        self.counts: dict[str, int] = {}

    def add(self, values: dict[str, float]) -> None:
        for name, value in values.items():
            self.sums[name] = self.sums.get(name, 0.0) + value
            self.counts[name] = self.counts.get(name, 0) + 1

    def pop(self) -> dict[str, float]:
        means = {name: total / self.counts[name] for name, total in self.sums.items()}
        self.sums, self.counts = {}, {}
        return means


def train_agent(
    make_env: Callable[[int], gym.Env],
    run_dir: str | Path,
    agent_name: str,
    agent_config: Any,
    training: Training,
    resume: bool = False,
    device: str = AUTO,
) -> dict[str, Any]:
    """Train agent ``agent_name`` (a key of :data:`AGENTS`) on ``make_env(seed)`` on ``device`` (default: CUDA
    when available); a summary of the run."""
    device = resolve_device(device)
    kind = agent_kind(agent_name)
    if not isinstance(agent_config, kind.config):
        raise TypeError(f"agent {agent_name!r} takes a {kind.config.__name__}, got {type(agent_config).__name__}")
    run = TrainingRun(run_dir, resume=resume, settings=training, may_change=AGENT_RUN_CADENCE,
                      max_minutes=training.max_minutes, counters=dict.fromkeys(COUNTERS, 0))
    run_dir = run.dir
    env = make_env(training.seed)
    eval_env = make_env(training.seed + 1)
    env_obs_shape, action_space = _check_env(env)

    meta = {
        "kind": CHECKPOINT_KIND,
        "agent": agent_name,
        "config": agent_config.to_dict(),
        "obs_shape": list(agent_obs_shape(env_obs_shape, training.frame_stack)),
        "action_low": action_space.low.tolist(),
        "action_high": action_space.high.tolist(),
    }
    torch.manual_seed(training.seed)
    agent = _build_agent(meta).to(device)
    replay = ReplayBuffer(training.replay_capacity, env_obs_shape, action_space.shape, training.frame_stack)
    rng = np.random.default_rng(training.seed)
    counters = run.counters
    returns: dict[str, list[dict[str, Any]]] = {"train": [], "eval": []}
    last_eval: dict[str, float] | None = None
    expected = {k: ("agent config" if k == "config" else k.replace("_", " "), v) for k, v in meta.items()}
    # Fields a checkpoint predates take their defaults: runs resume across a release that adds an agent option.
    restored = run.restore(expected, generators={"actions": rng},
                           complete={"config": lambda saved: kind.config.from_dict(saved).to_dict()})
    if restored is not None:
        agent.load_state_tensors({**restored.weights, **restored.tensors})
        try:
            replay.load(run.checkpoint_dir / REPLAY_FILE)
        except (ValueError, FileNotFoundError) as err:
            raise CheckpointError(f"cannot resume the replay buffer of {run.checkpoint_dir}: {err}") from err
        last_eval = restored.state["last_eval"]
        if (run_dir / RETURNS_FILE).is_file():
            logged = json.loads((run_dir / RETURNS_FILE).read_text())
            returns = {k: [r for r in logged.get(k, []) if r["env_step"] <= counters["step"]] for k in returns}
        cut = restored.state["episode_in_progress"]
        if cut is not None:  # the env's mid-episode state was not saved: record the episode as cut, start the next
            counters["episode"] += 1
            returns["train"].append({"env_step": counters["step"], "episode": counters["episode"], **cut, "cut": True})
            write_json_atomic(run_dir / RETURNS_FILE, returns)

    writer = run.writer
    stack = ObservationStack(training.frame_stack)
    window = _Means()
    need_reset, agent_obs = True, None
    episode_return = episode_true_return = 0.0
    episode_length = 0

    def save() -> None:
        tensors = agent.state_tensors()
        in_progress = None if need_reset else {
            "true_return": episode_true_return, "return": episode_return, "length": episode_length,
        }
        run.save(
            {k: v for k, v in tensors.items() if k.startswith("model.")}, meta, generators={"actions": rng},
            tensors={k: v for k, v in tensors.items() if not k.startswith("model.")},
            state={"last_eval": last_eval, "episode_in_progress": in_progress},
            extra_files=lambda directory: replay.save(directory / REPLAY_FILE),
        )

    def evaluate(final: bool = False) -> dict[str, float]:
        step = counters["step"]
        video = training.video_every and (final or step % training.video_every == 0)
        video_path = run_dir / "videos" / f"eval_{step:08d}.gif" if video else None
        result = evaluate_agent(agent, eval_env, training.eval_episodes, training.frame_stack, training.seed, video_path)
        result = {"env_step": step, **result}
        writer.add_scalar("eval/true_return", result["true_return"], step)
        writer.add_scalar("eval/return", result["return"], step)
        returns["eval"].append(result)
        write_json_atomic(run_dir / RETURNS_FILE, returns)
        return result

    out_of_time = run.out_of_time  # a finished run resumes to no steps
    progress = run.progress_bar(training.total_steps, desc=agent_name)
    while counters["step"] < training.total_steps and not out_of_time:
        if need_reset:
            obs, _ = env.reset(seed=_episode_seed(training.seed, _TRAIN_STREAM, counters["episode"]))
            replay.add_first(obs)
            agent_obs = stack.reset(obs)
            episode_return = episode_true_return = 0.0
            episode_length = 0
            need_reset = False
        if counters["step"] < training.seed_steps:
            action = rng.uniform(action_space.low, action_space.high).astype(np.float32)
        else:
            action = agent.act(agent_obs, sample=True, step=counters["step"])
        tick = time.perf_counter()
        obs, reward, terminated, truncated, info = env.step(action)
        env_s = time.perf_counter() - tick
        counters["env_time_s"] += env_s
        replay.add(action, reward, obs, terminated)
        agent_obs = stack.push(obs)
        episode_return += float(reward)
        episode_true_return += float(info.get("task_reward", reward))
        episode_length += 1
        counters["step"] += 1
        step = counters["step"]
        window.add({"env_step_ms": 1000 * env_s})

        if step >= training.seed_steps and step % training.update_every == 0:
            for _ in range(training.updates_per_step):
                tick = time.perf_counter()
                metrics = agent.update(replay.sample(rng=rng, **agent.batch_spec()), step=step)
                update_s = time.perf_counter() - tick
                counters["update_time_s"] += update_s
                counters["updates"] += 1
                window.add({**metrics, "update_ms": 1000 * update_s})

        if terminated or truncated:
            counters["episode"] += 1
            need_reset = True
            writer.add_scalar("train/true_return", episode_true_return, step)
            writer.add_scalar("train/return", episode_return, step)
            writer.add_scalar("train/episode_length", episode_length, step)
            returns["train"].append({
                "env_step": step,
                "episode": counters["episode"],
                "true_return": episode_true_return,
                "return": episode_return,
                "length": episode_length,
            })
            write_json_atomic(run_dir / RETURNS_FILE, returns)
            progress.set_postfix(true_return=f"{episode_true_return:.1f}", episode=counters["episode"])

        out_of_time = run.tick()
        progress.advance(counters["elapsed_s"])
        if step % training.log_every == 0:
            for name, value in window.pop().items():
                group = "time" if name.endswith("_ms") else "train"
                writer.add_scalar(f"{group}/{name}", value, step)
            writer.add_scalar("time/env_steps_per_s", step / max(counters["elapsed_s"], 1e-9), step)
        if training.eval_episodes and step % training.eval_every == 0:
            last_eval = evaluate()
        if step % training.checkpoint_every == 0:
            save()
    progress.close()

    if training.eval_episodes and (last_eval is None or last_eval["env_step"] != counters["step"]):
        last_eval = evaluate(final=True)  # the policy the run ends with, on video too
    run.tick()
    save()
    run.close()
    step, elapsed = counters["step"], counters["elapsed_s"]
    summary = {
        "agent": agent_name,
        "env_steps": step,
        "episodes": counters["episode"],
        "updates": counters["updates"],
        "eval_true_return": last_eval["true_return"] if last_eval else None,
        "eval_return": last_eval["return"] if last_eval else None,
        "elapsed_s": elapsed,
        "env_steps_per_s": step / max(elapsed, 1e-9),
        "env_time_s": counters["env_time_s"],
        "update_time_s": counters["update_time_s"],
        "stopped_by_budget": out_of_time,
    }
    eval_text = f"eval true return {last_eval['true_return']:.1f}" if last_eval else "no evaluation"
    print(
        f"{agent_name}: {step} agent steps, {counters['updates']} updates in {elapsed / 60:.1f} min "
        f"({summary['env_steps_per_s']:.1f} steps/s; env {counters['env_time_s']:.0f} s, "
        f"updates {counters['update_time_s']:.0f} s); {eval_text}"
    )
    env.close()
    eval_env.close()
    return summary

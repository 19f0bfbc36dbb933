"""Agents on VIPER reward or the true reward: the env each run builds, and the run itself.

The env stack, inside out: the pixel env (one frame per env step, at the rate the video
model was trained on), :class:`envs.viper.ViperReward` scoring every frame,
:class:`envs.wrappers.StateObservation` when the agent observes the state vector
instead of the frames, and :class:`envs.wrappers.ActionRepeat` so the agent decides
every ``action_repeat`` physics steps (underlying env steps for non-DMC envs): on our DMC
envs, which repeat each action 2 physics steps themselves, the wrapper holds each
decision ``action_repeat / 2`` env steps. The true reward always reaches the logs through
``info["task_reward"]``.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import fields, replace
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np

import envs
from agents.workspace import Training, agent_kind, evaluate_agent, load_agent, train_agent
from envs.viper import ViperReward
from envs.wrappers import ActionRepeat, StateObservation, env_frame_skip, env_steps_per_decision
from worldmodel.checkpoint import read_json, write_json_atomic
from worldmodel.device import AUTO, resolve_device
from worldmodel.training_run import CHECKPOINT_DIR, SETTINGS_FILE
from worldmodel.video_model import VideoModel

REWARDS = ("viper", "env")
OBSERVATIONS = ("pixels", "state")
RUN_FILE = "run.json"
FINAL_EVAL_FILE = "final_eval.json"  # the finished agent over many fresh episodes (experiments.dmc_benchmark)
# DMC-100k's action repeats (PlaNet's benchmark, as DrQ ran it), in physics steps per agent decision.
PUBLISHED_ACTION_REPEAT = {
    "cartpole-swingup": 8, "cartpole-balance": 8, "reacher-easy": 4, "cheetah-run": 4, "ball_in_cup-catch": 4,
    "finger-spin": 2, "walker-walk": 2,
}
# Other DMC tasks (pendulum, point_mass, ...) take PlaNet's repeat for its remaining tasks, stated
# in physics steps the same way: our choice, where no published figure fixes one.
OTHER_DMC_ACTION_REPEAT = 4


def dmc_action_repeat(task: str) -> int:
    """Physics steps per agent decision on a DMC task: DMC-100k's where published, else 4."""
    return PUBLISHED_ACTION_REPEAT.get(task, OTHER_DMC_ACTION_REPEAT)


def env_repeat(env_spec: str) -> int:
    """Underlying steps (physics steps for DMC) the env of ``env_spec`` takes per step: 2 for our DMC envs."""
    env = envs.make(env_spec)
    try:
        return env_frame_skip(env.get_wrapper_attr)
    finally:
        env.close()


def default_action_repeat(env_spec: str, base: int) -> int:
    """Physics steps per agent decision when none is given: :func:`dmc_action_repeat` on DMC tasks, else the
    env's own ``base`` repeat (one agent decision per env step)."""
    kind, _, task = env_spec.partition(":")
    return dmc_action_repeat(task) if kind == "dmc" else base


def agent_config(
    agent_name: str, preset: str, reward: str, observation: str = "pixels", rnd_weight: float | None = None,
    options: dict[str, str] | None = None,
) -> Any:
    """An agent's config from its preset, with VIPER's defaults on a VIPER reward.

    On a VIPER reward (log p or the likelihood ratio): RND with beta 1 from pixels (VIPER's setting),
    and DrQ-v2 trains on running-standardised rewards, whose scale is otherwise set by how sure
    the video model is (docs/results/viper.md, "Cartpole-balance: the ratio's scale"). ``options`` set any other
    field of the config from text (``{"std_steps": "2500"}``), see :func:`with_options`.
    """
    kind = agent_kind(agent_name)
    if preset not in kind.presets:
        raise ValueError(f"agent {agent_name!r} has no preset {preset!r}; its presets: {sorted(kind.presets)}")
    if reward not in REWARDS:
        raise ValueError(f"unknown reward {reward!r}; expected one of {list(REWARDS)}")
    if rnd_weight is None:
        rnd_weight = 1.0 if reward == "viper" and observation == "pixels" else 0.0
    config = replace(kind.presets[preset], rnd_weight=rnd_weight)
    if reward == "viper" and agent_name == "drqv2":
        config = replace(config, standardize_reward=True)
    return with_options(config, options or {})


def with_options(config: Any, options: dict[str, str]) -> Any:
    """A config dataclass with fields set from text (JSON values: ``2500``, ``1e-4``, ``[16, 16]``),
    each checked against the type of the field's current value."""
    known = {field.name for field in fields(config)}
    unknown = sorted(set(options) - known)
    if unknown:
        raise ValueError(f"unknown {type(config).__name__} option(s) {unknown}; its options: {sorted(known)}")
    values = {}
    for name, text in options.items():
        current = getattr(config, name)
        try:
            value = json.loads(text)
        except json.JSONDecodeError:
            value = None
        if isinstance(current, tuple) and isinstance(value, list):
            value = tuple(value)
        elif isinstance(current, float) and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if type(value) is not type(current):
            kind = type(current).__name__
            raise ValueError(f"{name}={text!r}: expected a value of type {kind}, like {json.dumps(current)}")
        values[name] = value
    return replace(config, **values)


def loop_defaults(agent_name: str, observation: str, preset: str = "cpu") -> dict[str, int]:
    """Loop settings that follow the agent, preset and observation.

    DrQ-v2's ``paper`` preset updates every 2 agent steps (its published setting, for
    budgets of millions of steps); every other agent and preset updates every agent step,
    which at DMC-100k learned about twice as fast. On state vectors an update of the ``cpu``
    preset costs about 8 ms, so it makes 4 per agent step there (swing-up's true return at
    80k physics steps: 767 against 323 with one). docs/results/viper.md, "Agent settings at this budget".
    State vectors already hold velocities, so they are not stacked.
    """
    update_every = 2 if (agent_name, preset) == ("drqv2", "paper") else 1
    updates_per_step = 4 if (agent_name, preset, observation) == ("drqv2", "cpu", "state") else 1
    return {"update_every": update_every, "updates_per_step": updates_per_step,
            "frame_stack": 1 if observation == "state" else 3}


def env_factory(
    env_spec: str,
    reward: str = "viper",
    model: VideoModel | None = None,
    action_repeat: int | None = None,
    max_episode_steps: int | None = None,
    observation: str = "pixels",
    baseline: VideoModel | None = None,
    **viper_options: Any,
) -> Callable[[int], gym.Env]:
    """``make_env(seed)`` for :func:`agents.workspace.train_agent`: VIPER-rewarded (``reward="viper"``) or not,
    observing frames (``observation="pixels"``) or the state vector (``"state"``), deciding every
    ``action_repeat`` physics steps (None: :func:`default_action_repeat`); a repeat that is not a multiple
    of the env's own raises ValueError.

    ``max_episode_steps`` cuts episodes (in env steps); ``baseline`` (a video model of
    non-expert play) makes the VIPER reward a likelihood ratio; ``viper_options`` go to
    :class:`envs.viper.ViperReward` (task, mode, standardize, ...).
    """
    if reward not in REWARDS:
        raise ValueError(f"unknown reward {reward!r}; expected one of {REWARDS}")
    if observation not in OBSERVATIONS:
        raise ValueError(f"unknown observation {observation!r}; expected one of {OBSERVATIONS}")
    if reward == "viper" and model is None:
        raise ValueError("a VIPER reward needs a video model (--model)")

    # On states with no video model scoring frames, a DMC env need not render every step.
    states_only = observation == "state" and reward != "viper" and env_spec.startswith("dmc:")

    def make_env(seed: int) -> gym.Env:
        env = envs.make(env_spec, observation="state") if states_only else envs.make(env_spec)
        base = env_frame_skip(env.get_wrapper_attr)
        repeat = env_steps_per_decision(
            default_action_repeat(env_spec, base) if action_repeat is None else action_repeat, base
        )
        if max_episode_steps is not None:
            env = gym.wrappers.TimeLimit(env, max_episode_steps)
        if reward == "viper":
            env = ViperReward(env, model, baseline, **viper_options)
        if observation == "state" and not states_only:
            env = StateObservation(env)
        env = ActionRepeat(env, repeat) if repeat > 1 else env
        env.action_space.seed(seed)
        return env

    return make_env


def run_agent(
    env_spec: str,
    run_dir: str | Path,
    agent_name: str,
    agent_config: Any,
    training: Training,
    reward: str = "viper",
    model_dir: str | Path | None = None,
    action_repeat: int | None = None,
    resume: bool = False,
    max_episode_steps: int | None = None,
    observation: str = "pixels",
    device: str = AUTO,
    baseline_dir: str | Path | None = None,
    **viper_options: Any,
) -> dict[str, Any]:
    """Train ``agent_name`` on ``env_spec`` with the chosen reward and observation (agent and video
    model on ``device``), deciding every ``action_repeat`` physics steps (None: :func:`default_action_repeat`);
    :func:`agents.workspace.train_agent`'s summary.

    ``baseline_dir``: a video model of non-expert play; the reward becomes the likelihood ratio.
    ``{run_dir}/run.json`` records the env, agent and reward settings, the physics steps per agent
    step among them, so tools such as ``wm diagnose-reward`` can rebuild the run's env later.
    """
    device = resolve_device(device)
    base = env_repeat(env_spec)
    physics_per_decision = default_action_repeat(env_spec, base) if action_repeat is None else action_repeat
    env_steps_per_agent_step = env_steps_per_decision(physics_per_decision, base)  # checked before anything runs
    model = VideoModel.load(model_dir, device) if reward == "viper" and model_dir is not None else None
    baseline = VideoModel.load(baseline_dir, device) if reward == "viper" and baseline_dir is not None else None
    settings = {
        "env": env_spec, "agent": agent_name, "reward": reward, "observation": observation,
        "model": None if model is None else str(model_dir),
        "baseline_model": None if baseline is None else str(baseline_dir),
        "physics_steps_per_agent_step": physics_per_decision, "env_steps_per_agent_step": env_steps_per_agent_step,
        "max_episode_steps": max_episode_steps,
        "viper_options": {k: v.tolist() if isinstance(v, np.ndarray) else v for k, v in viper_options.items()},
    }
    Path(run_dir).mkdir(parents=True, exist_ok=True)
    write_json_atomic(Path(run_dir) / RUN_FILE, settings)
    make_env = env_factory(
        env_spec, reward, model, physics_per_decision, max_episode_steps, observation, baseline, **viper_options
    )
    return train_agent(make_env, run_dir, agent_name, agent_config, training, resume=resume, device=device)


def run_settings(run: str | Path) -> dict[str, Any]:
    """The env and agent settings a run was trained with (``run.json``, written by ``wm train-agent``)."""
    path = Path(run) / RUN_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing: it is written by `wm train-agent` when a run starts")
    return json.loads(path.read_text())


def evaluate_run(run_dir: str | Path, episodes: int, seed: int = 0, device: str = "cpu") -> dict[str, Any]:
    """The true return of a finished (or checkpointed) run's agent over ``episodes`` deterministic episodes.

    The env is the run's own (task, observation, physics steps per decision, from ``run.json``) with the
    true reward, so no video model is loaded. ``seed`` picks the reset seeds as the run's evaluations
    did: the run's own seed replays its evaluation episodes, any other seed gives fresh ones. Used where a
    run's last few evaluation episodes are too few to judge it (a reacher episode scores about 0 or
    about 1000).
    """
    run_dir = Path(run_dir)
    settings = run_settings(run_dir)
    if episodes < 1:
        raise ValueError(f"episodes must be >= 1, got {episodes}")
    make_env = env_factory(settings["env"], "env", action_repeat=settings["physics_steps_per_agent_step"],
                           max_episode_steps=settings.get("max_episode_steps"), observation=settings["observation"])
    agent = load_agent(run_dir / CHECKPOINT_DIR, device)
    frame_stack = int(read_json(run_dir / SETTINGS_FILE)["frame_stack"])
    env = make_env(seed + 1)
    try:
        result = evaluate_agent(agent, env, episodes, frame_stack, seed)
    finally:
        env.close()
    return {"true_return": result["true_return"], "true_returns": result["true_returns"], "episodes": episodes,
            "seed": seed}

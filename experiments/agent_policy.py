"""A trained agent run (``wm train-agent``) as an env-step policy, acting as its training loop ran it.

VIPER got its expert videos by training an agent on the task reward and recording it; so does
``wm collect --policies agent:RUN`` (and ``noisy-agent:STD:RUN`` for graded episodes), through
:func:`run_policy_factory`. ``wm diagnose-reward`` replays a run's agent the same way.

A run's agent decides every ``env_steps_per_agent_step`` rendered env steps and holds its action in
between (as :class:`envs.wrappers.ActionRepeat` did), from a stack of its last observations: the
frames, or the env's state vector for a state-observation run.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np

from agents.replay import ObservationStack
from agents.workspace import Agent, load_agent
from envs.collect import PolicySpec, task_name
from envs.experts import Policy, held_actions, noisy_policy
from experiments.train_agent import run_settings
from worldmodel.checkpoint import read_json
from worldmodel.training_run import CHECKPOINT_DIR, SETTINGS_FILE

AGENT_KINDS = ("agent", "noisy-agent")  # the PolicySpec kinds this module builds


def agent_policy(
    agent: Agent, frame_stack: int, action_repeat: int, observe: Callable[[np.ndarray], np.ndarray] | None = None
) -> Policy:
    """The agent as the training loop ran it: deterministic actions from what it observed, stacked.

    ``observe`` maps the frame to the agent's observation (the env's state vector for a
    state-observation agent); by default the agent sees the frame.
    """
    stack = ObservationStack(frame_stack)

    def decide(frame: np.ndarray, first: bool) -> np.ndarray:
        obs = frame if observe is None else observe(frame)
        return agent.act(stack.reset(obs) if first else stack.push(obs), sample=False)

    return held_actions(decide, action_repeat)


def env_steps_per_decision(settings: dict[str, Any]) -> int:
    """Env steps the run's agent held each action for (runs from before run.json recorded it named it
    ``action_repeat``)."""
    return int(settings.get("env_steps_per_agent_step", settings.get("action_repeat")))


def run_policy(run: str | Path, env: gym.Env, device: str = "cpu") -> Policy:
    """The trained agent of ``run`` acting in ``env`` (the env it was trained on, rendering every frame),
    deterministically; a new one for each episode."""
    run = Path(run)
    settings = run_settings(run)
    agent = load_agent(run / CHECKPOINT_DIR, device)
    frame_stack = int(read_json(run / SETTINGS_FILE)["frame_stack"])
    observe = (lambda frame: env.unwrapped.state()) if settings.get("observation") == "state" else None
    return agent_policy(agent, frame_stack, env_steps_per_decision(settings), observe)


def run_policy_factory(spec: PolicySpec, env: gym.Env, env_spec: str, seed: int) -> Policy:
    """:func:`envs.collect.collect`'s ``policy_factory`` for ``agent:RUN`` and ``noisy-agent:STD:RUN``:
    the run's agent, plus Gaussian action noise for the noisy grade. The run must have been trained on
    the task being collected."""
    if spec.kind not in AGENT_KINDS:
        raise ValueError(f"policy {spec.label!r} is not a trained agent's ({', '.join(AGENT_KINDS)})")
    trained_on = run_settings(spec.source)["env"]
    if task_name(trained_on) != task_name(env_spec):
        raise ValueError(f"{spec.source} trained its agent on {trained_on}, not on {env_spec}")
    policy = run_policy(spec.source, env)
    return noisy_policy(policy, spec.noise_std, seed) if spec.kind == "noisy-agent" else policy

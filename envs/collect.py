"""Record episodes of a policy into an episode dataset (``worldmodel.episodes`` format).

Policies of graded quality (expert, expert + action noise, random) give the
episodes that train video models and evaluate rewards. Episodes run in worker
processes, each file is written atomically, and episodes already on disk are
skipped, so an interrupted collection resumes where it stopped.
"""

from __future__ import annotations

import multiprocessing
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor, as_completed
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
from tqdm import tqdm

from envs import make
from envs.experts import Policy, held_random_policy, make_expert, noisy_policy, random_policy, still_policy
from envs.wrappers import env_frame_skip
from worldmodel.episodes import DatasetManifest, write_episode


POLICY_FORMS = (
    "'expert', 'random', 'still' (the do-nothing action), 'held:<steps>' (a random action held that many env "
    "steps at a time), 'noisy:<std>' (the expert plus Gaussian action noise), 'spread:<fraction>' (a reacher or "
    "point_mass expert coming to rest anywhere within that fraction of the target's radius, drawn per episode), "
    "'agent:<run dir>' (a trained agent of `wm train-agent`) or 'noisy-agent:<std>:<run dir>'"
)
AGENT_POLICIES = ("agent", "noisy-agent")  # built by a policy factory the caller gives (see collect)
PLAY_POLICIES = ("random", "still", "held")  # need neither an expert nor a trained agent
WORKER_DEATHS_ALLOWED = 2  # fresh process pools a collection starts after a worker dies, before it gives up


@dataclass(frozen=True)
class PolicySpec:
    """A policy to record: ``expert``, ``random``, ``still`` (the do-nothing action), ``held:<steps>`` (a random
    action held for that many env steps), ``noisy:<std>`` (expert plus Gaussian action noise), ``spread:<fraction>``
    (a goal task's expert resting anywhere within that fraction of the target's radius), ``agent:<run>`` (the
    trained agent of a run directory) or ``noisy-agent:<std>:<run>``."""

    kind: str
    noise_std: float = 0.0
    source: str = ""  # the run directory of an agent policy
    hold: int = 0  # env steps each random action of a ``held`` policy lasts
    spread: float = 0.0  # a ``spread`` expert's resting places, as a fraction of the target's radius

    @classmethod
    def parse(cls, text: str) -> "PolicySpec":
        kind, _, value = text.strip().partition(":")
        if kind in ("expert", "random", "still") and not value:
            return cls(kind)
        if kind == "held" and value.isdigit() and int(value) >= 1:
            return cls(kind, hold=int(value))
        if kind == "agent" and value:
            return cls(kind, source=value)
        if kind == "spread":
            try:
                spread = float(value)
            except ValueError:
                spread = -1.0
            if 0 < spread <= 1:
                return cls(kind, spread=spread)
            raise ValueError(f"bad policy '{text}': 'spread:<fraction>' needs a fraction of the target's radius in "
                             "(0, 1]")
        if kind in ("noisy", "noisy-agent"):
            std_text, _, source = value.partition(":") if kind == "noisy-agent" else (value, "", "")
            try:
                std = float(std_text)
            except ValueError:
                std = -1.0
            if std > 0 and (source or kind == "noisy"):
                return cls(kind, std, source)
        raise ValueError(f"bad policy '{text}': expected {POLICY_FORMS}, with std > 0 and steps >= 1")

    @property
    def label(self) -> str:
        """The policy's name in episode paths and the manifest (the run's folder name for agents)."""
        if self.kind in AGENT_POLICIES:
            noise = f"noisy{self.noise_std:g}-" if self.kind == "noisy-agent" else ""
            return f"{noise}agent-{Path(self.source).name}"
        if self.kind == "held":
            return f"held{self.hold}"
        if self.kind == "spread":
            return f"spread{self.spread:g}"
        return f"noisy{self.noise_std:g}" if self.kind == "noisy" else self.kind


PolicyFactory = Callable[[PolicySpec, gym.Env, str, int], Policy]


@dataclass(frozen=True)
class EpisodeJob:
    env_spec: str
    policy: PolicySpec
    seed: int
    task_id: int
    path: Path
    max_steps: int | None = None
    policy_factory: PolicyFactory | None = None  # builds agent policies (a picklable, module-level function)
    env_options: tuple[tuple[str, Any], ...] = ()  # keyword arguments of envs.make, e.g. (("action_repeat", 8),)


def task_name(env_spec: str) -> str:
    """``dmc:cartpole-swingup`` -> ``cartpole-swingup``."""
    return env_spec.split(":", 1)[-1]


def describe_action_space(space: gym.Space) -> dict[str, Any]:
    if isinstance(space, gym.spaces.Discrete):
        return {"type": "discrete", "n": int(space.n)}
    if isinstance(space, gym.spaces.Box):
        return {"type": "box", "shape": list(space.shape), "low": float(space.low.min()), "high": float(space.high.max())}
    raise ValueError(f"cannot record episodes with action space {space}")


def describe_env(env_spec: str, env: gym.Env) -> DatasetManifest:
    """A new dataset manifest for episodes of ``env`` (made from ``env_spec``): its task, actions and rate."""
    return DatasetManifest(
        env_spec.split(":")[0], [task_name(env_spec)], describe_action_space(env.action_space),
        env_frame_skip(env.get_wrapper_attr), float(env.metadata.get("render_fps") or 15.0),
    )


def make_policy(
    spec: PolicySpec, env: gym.Env, env_spec: str, seed: int, policy_factory: PolicyFactory | None = None
) -> Policy:
    """The callable ``obs -> action`` that ``spec`` names, for this env; trained agents through ``policy_factory``
    (envs cannot load agents themselves: ``experiments.agent_policy.run_policy_factory`` does)."""
    if spec.kind in AGENT_POLICIES:
        if policy_factory is None:
            raise ValueError(f"policy {spec.label!r} is a trained agent: it needs a policy factory to load it")
        return policy_factory(spec, env, env_spec, seed)
    if spec.kind == "random":
        return random_policy(env.action_space, seed)
    if spec.kind == "still":
        return still_policy(env.action_space)
    if spec.kind == "held":
        return held_random_policy(env.action_space, spec.hold, seed)
    if spec.kind == "noisy" and not isinstance(env.action_space, gym.spaces.Box):
        raise ValueError(
            f"policy 'noisy:<std>' adds Gaussian noise to continuous actions; {env_spec} has {env.action_space}"
        )
    expert = make_expert(task_name(env_spec), env, seed, goal_spread=spec.spread)  # spread 0 but for "spread"
    return noisy_policy(expert, spec.noise_std, seed) if spec.kind == "noisy" else expert


def run_episode(env: gym.Env, policy: Policy, seed: int) -> dict[str, Any]:
    """Roll out one episode; ``T`` frames, ``T`` actions (the last one padding, never taken), ``T`` rewards,
    whether it ``terminated`` (rather than being cut by a time limit), ``poses (T, 4)`` float32 when
    the env reports ``info["pose"]`` (the voxel-terrain or maze agent's x, y, z, heading), and ``task_rewards``
    ``(T,)`` when it reports ``info["task_reward"]`` (the true reward under a VIPER reward wrapper)."""
    obs, info = env.reset(seed=seed)
    frames, actions, rewards = [obs], [], []
    poses = [info["pose"]] if "pose" in info else None
    task_rewards: list[float] = []
    done = False
    while not done:
        action = policy(obs)
        obs, reward, terminated, truncated, info = env.step(action)
        frames.append(obs)
        actions.append(action)
        rewards.append(reward)
        if poses is not None:
            poses.append(info["pose"])
        if "task_reward" in info:
            task_rewards.append(info["task_reward"])
        done = terminated or truncated
    actions.append(np.zeros_like(actions[-1]))
    rewards.append(0.0)
    action_array = np.asarray(actions)
    action_array = action_array.astype(np.int64 if np.issubdtype(action_array.dtype, np.integer) else np.float32)
    episode = {
        "video": np.stack(frames),
        "actions": action_array,
        "rewards": np.asarray(rewards, np.float32),
        "terminated": bool(terminated),
    }
    if poses is not None:
        episode["poses"] = np.asarray(poses, np.float32)
    if task_rewards:
        episode["task_rewards"] = np.asarray([*task_rewards, 0.0], np.float32)
    return episode


def _run_job(job: EpisodeJob) -> tuple[EpisodeJob, float, int]:
    env = make(job.env_spec, **dict(job.env_options))
    if job.max_steps is not None:
        env = gym.wrappers.TimeLimit(env, job.max_steps)
    try:
        episode = run_episode(env, make_policy(job.policy, env, job.env_spec, job.seed, job.policy_factory), job.seed)
    finally:
        env.close()
    write_episode(
        job.path, episode["video"], episode["actions"], episode["rewards"], job.task_id, episode.get("poses"),
        episode["terminated"],
    )
    return job, float(episode["rewards"].sum()), len(episode["video"])


def plan_jobs(
    env_spec: str,
    policies: list[PolicySpec],
    episodes: int,
    root: Path,
    seed: int,
    test_fraction: float,
    task_id: int,
    max_steps: int | None = None,
    policy_factory: PolicyFactory | None = None,
    env_options: dict[str, Any] | None = None,
    task: str | None = None,
) -> list[EpisodeJob]:
    """One job per episode, under ``{split}/{task}/{policy}`` (``task``: the env's by default); the last
    ``round(episodes * test_fraction)`` of each policy go to ``test``."""
    task = task_name(env_spec) if task is None else task
    test_count = min(episodes - 1, max(1, round(episodes * test_fraction))) if test_fraction > 0 else 0
    jobs = []
    for policy_index, policy in enumerate(policies):
        for i in range(episodes):
            split = "test" if i >= episodes - test_count else "train"
            episode_seed = seed * 1_000_003 + policy_index * 10_007 + i
            path = root / split / task / policy.label / f"seed{episode_seed}.npz"
            jobs.append(EpisodeJob(env_spec, policy, episode_seed, task_id, path, max_steps, policy_factory,
                                   tuple(sorted((env_options or {}).items()))))
    return jobs


def collect(
    env_spec: str,
    policies: list[PolicySpec],
    episodes: int,
    root: str | Path,
    seed: int = 0,
    test_fraction: float = 0.1,
    workers: int = 1,
    max_steps: int | None = None,
    policy_factory: PolicyFactory | None = None,
    env_options: dict[str, Any] | None = None,
    task_label: str | None = None,
) -> DatasetManifest:
    """Collect ``episodes`` per policy into ``root`` (resuming), returning the updated manifest.

    ``policy_factory(spec, env, env_spec, seed)`` builds the trained-agent policies (``agent:<run>``);
    it runs in the worker processes, so it must be a module-level function. ``env_options`` go to
    :func:`envs.make` (e.g. ``{"action_repeat": 8}``: a DMC frame, and action, every 8 physics steps).
    ``task_label`` files the episodes under another task name than the env's, e.g. random play as
    ``cartpole-swingup@play`` beside the expert's ``cartpole-swingup``: one video model conditioned on the
    source then serves as expert and baseline of a likelihood-ratio reward.
    """
    if episodes < 1:
        raise ValueError(f"episodes must be >= 1, got {episodes}")
    if max_steps is not None and max_steps < 1:
        raise ValueError(f"max_steps must be >= 1, got {max_steps}")
    root = Path(root)
    probe = make(env_spec, **(env_options or {}))
    described = describe_env(env_spec, probe)
    probe.close()

    manifest = DatasetManifest.load(root) or described
    if manifest.action_space != described.action_space:
        raise ValueError(
            f"{root} holds episodes with action space {manifest.action_space}, not {described.action_space}"
        )
    if manifest.frame_skip != described.frame_skip:
        raise ValueError(f"{root} holds episodes of {manifest.frame_skip} env steps per frame, not "
                         f"{described.frame_skip}")
    task = task_name(env_spec) if task_label is None else task_label
    if not task or "/" in task:
        raise ValueError(f"a task label must be a non-empty name without '/', got {task!r}")
    if task not in manifest.tasks:
        manifest.tasks.append(task)
    jobs = plan_jobs(
        env_spec, policies, episodes, root, seed, test_fraction, manifest.tasks.index(task), max_steps, policy_factory,
        env_options, task,
    )
    todo = [job for job in jobs if not job.path.exists()]
    manifest.save(root)

    results = _run_jobs(todo, workers) if workers > 1 else map(_run_job, todo)
    for job, episode_return, length in tqdm(results, total=len(todo), desc=f"collect {task}", unit="episode"):
        manifest.episodes[str(job.path.relative_to(root))] = {
            "task": task,
            "policy": job.policy.label,
            "seed": job.seed,
            "return": episode_return,
            "length": length,
        }
        manifest.save(root)
    return manifest


def _run_jobs(todo: list[EpisodeJob], workers: int) -> Iterator[tuple[EpisodeJob, float, int]]:
    """``_run_job`` over ``todo`` in ``workers`` processes, as each finishes.

    A worker that dies (one segfaulted in libc after some 800 episodes of a reward recipe here) takes its episode:
    ``multiprocessing.Pool`` then waits for it forever. A broken process pool says so instead, and the lost
    episodes run again in a fresh one, up to ``WORKER_DEATHS_ALLOWED`` times before the collection gives up.
    """
    context = multiprocessing.get_context("spawn")
    remaining = list(todo)
    for _ in range(WORKER_DEATHS_ALLOWED + 1):
        pool = ProcessPoolExecutor(workers, mp_context=context)
        try:
            futures = {pool.submit(_run_job, job): job for job in remaining}
            for future in as_completed(futures):
                try:
                    result = future.result()
                except BrokenProcessPool:
                    continue  # stays in remaining, for the next pool
                remaining.remove(futures[future])
                yield result
        finally:  # on Ctrl-C or an error, the episodes not yet started are dropped, not waited for
            pool.shutdown(cancel_futures=True)
        if not remaining:
            return
        print(f"a collection worker died; running {len(remaining)} episode(s) again in fresh workers", flush=True)
    raise RuntimeError(
        f"collection workers died {WORKER_DEATHS_ALLOWED + 1} times; {len(remaining)} episode(s) were not recorded "
        f"(first: {remaining[0].path}). The episodes recorded are kept: run the same command again to resume, or "
        "with one worker to see the error in this process."
    )

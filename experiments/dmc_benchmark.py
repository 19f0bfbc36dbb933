"""The DMC-100k benchmark grid: task x reward x agent x observation x seed, in parallel, resumable.

DMC-100k (PlaNet's budget) gives every run 100 000 physics steps, with action repeat 8
on cartpole, 4 on reacher, cheetah and cup, 2 on finger and walker, and 4 on any other DMC
task (physics steps per agent decision, the meaning ``wm train-agent --action-repeat``
gives it; :func:`experiments.train_agent.dmc_action_repeat`). Our DMC envs repeat each action over 2 physics steps and
render one frame (the rate the video models are trained on); train-agent's
:class:`ActionRepeat` of 4 (cartpole) or 2 (reacher) outside the VIPER wrapper gives the
published repeat, so the video model still scores every frame. Each run is an ordinary ``wm train-agent``
run directory under ``{out}/{task}/{agent}-{obs}-{reward}/seed{seed}``, where the reward is
``viper`` (the expert model's log-likelihood), ``ratio`` (its likelihood ratio against a
baseline model of random play) or ``env`` (the true reward); a run that
finished has ``summary.json`` and is skipped, an interrupted one resumes from its
checkpoint. The grid writes, over every finished run under ``out`` (so grids run by
separate commands into one directory share one table), ``{out}/results.md`` (each task's
held-out reward Spearman where ``wm build-reward`` measured it, mean and spread over seeds of the
final evaluation's true return, VIPER as a fraction of the true-reward agent, wall time per
run), ``{out}/results.json``, and a true-return curve per task (PNG).

A run's figure is its final agent's mean true return over ``final_eval_episodes`` fresh episodes
(``final_eval.json``) where the grid was given that many, else its last evaluation's. A few
evaluation episodes do not judge a task whose episodes succeed or fail whole: a reacher agent
scored 319 on its last 3 episodes and 714 on 20 fresh ones.
"""

from __future__ import annotations

import json
import multiprocessing
import multiprocessing.connection
import os
import signal
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from agents.workspace import Training, agent_kind
from envs.dmc import check_task
from experiments.plots import compare_runs
from experiments.reports import format_number, format_share
from experiments.train_agent import (
    FINAL_EVAL_FILE, OBSERVATIONS, agent_config, dmc_action_repeat, evaluate_run, loop_defaults, run_agent,
)
from worldmodel.checkpoint import read_json, write_json_atomic
from worldmodel.device import AUTO
from worldmodel.training_run import SETTINGS_FILE
# True-reward DrQ at 100k physics steps (Kostrikov et al. 2020, table 1), for the table's last column.
PUBLISHED_DRQ_100K = {"cartpole-swingup": "759 +- 92", "reacher-easy": "601 +- 213", "finger-spin": "901 +- 104",
                      "walker-walk": "612 +- 164"}
SUMMARY_FILE = "summary.json"
FINAL_EVAL_SEED_OFFSET = 10_000  # final evaluations reset from seeds no training evaluation used
RUN_RESTARTS = 2  # times a run killed by a signal (a segfault) starts again, resuming from its checkpoint
REWARD_QUALITY_FILE = "reward_quality.json"  # held-out Spearman of each reward, by task (and label: see quality_key)
GRID_REWARDS = ("viper", "ratio", "env")


def quality_key(task: str, label: str = "") -> str:
    """Where the held-out Spearman of a task's reward is kept: labelled runs may bring their own reward
    (``--label spread`` with another recipe), so a label's figure never overwrites the plain task's."""
    return task + (f"+{label}" if label else "")


@dataclass(frozen=True)
class GridRun:
    """One cell of the grid, and the run directory it trains in."""

    task: str
    agent: str
    observation: str
    reward: str
    seed: int
    label: str = ""  # names runs whose settings differ from the plain grid's (e.g. an exploration bonus)

    @property
    def variant(self) -> str:
        return f"{self.agent}-{self.observation}-{self.reward}" + (f"+{self.label}" if self.label else "")

    def directory(self, out: Path) -> Path:
        return out / self.task / self.variant / f"seed{self.seed}"


@dataclass(frozen=True)
class GridSettings:
    """What every run of the grid shares."""

    physics_steps: int = 100_000
    preset: str = "cpu"
    eval_every_physics: int = 10_000
    eval_episodes: int = 5
    max_minutes: float | None = None  # per run, a cap for small machines
    score: str = "log_prob"
    mode: str = "conditional"
    rnd_weight: float | None = None  # None: the agent's default (1 on VIPER from pixels)
    update_every: int | None = None  # None: the agent's and preset's default (train_agent.loop_defaults)
    agent_options: dict[str, str] = field(default_factory=dict)  # config fields set from text, e.g. std_steps
    updates_per_step: int | None = None  # None: the agent's, preset's and observation's default
    device: str = AUTO  # of every run's agent and video models
    frame_weight: float = 0.0  # of the ratio reward's frame-alone term (worldmodel.reward)
    final_eval_episodes: int = 0  # fresh episodes of each finished run's agent for the table (0: none)

    def __post_init__(self) -> None:
        if self.physics_steps < 1 or self.eval_every_physics < 1 or self.eval_episodes < 0:
            raise ValueError("physics_steps and eval_every_physics must be >= 1 and eval_episodes >= 0")
        if self.final_eval_episodes < 0:
            raise ValueError(f"final_eval_episodes must be >= 0, got {self.final_eval_episodes}")


def physics_steps_per_agent_step(task: str) -> int:
    """Physics steps behind one agent decision: the task's DMC-100k repeat, or 4 where none is published."""
    domain, _, name = task.partition("-")
    check_task(domain, name)
    return dmc_action_repeat(task)


def plan_grid(
    tasks: Sequence[str], agents: Sequence[str], observations: Sequence[str], rewards: Sequence[str],
    seeds: Sequence[int], models: dict[str, Path], baselines: dict[str, Path] | None = None, label: str = "",
) -> list[GridRun]:
    """Every run of the grid, checked before anything starts (a VIPER run needs its task's video model,
    a ratio run also its baseline model); ``label`` marks them all (letters, digits, ``_`` and ``.``)."""
    if label and not label.replace("_", "").replace(".", "").isalnum():
        raise ValueError(f"a grid label takes letters, digits, '_' and '.', got {label!r}")
    for task in tasks:
        physics_steps_per_agent_step(task)
    for agent in agents:
        agent_kind(agent)
    for name, values, allowed in (("observation", observations, OBSERVATIONS), ("reward", rewards, GRID_REWARDS)):
        bad = sorted(set(values) - set(allowed))
        if bad:
            raise ValueError(f"unknown {name} {bad}; expected a subset of {list(allowed)}")
    needed = [
        ("video model", "--model", models, {"viper", "ratio"}),
        ("baseline", "--baseline-model", baselines or {}, {"ratio"}),
    ]
    for what, flag, paths, users in needed:
        users = sorted(users & set(rewards))
        missing = [task for task in tasks if task not in paths]
        if users and missing:
            raise ValueError(f"{'/'.join(users)} runs need a {what} per task: no {flag} for {missing}")
        for task, path in paths.items():
            if not Path(path).is_dir():
                raise FileNotFoundError(f"{what} for {task} not found at {path}")
    if "state" in observations and "drq" in agents:
        raise ValueError("state observations run with drqv2 (DrQ here is a pixel agent); drop 'drq' or 'state'")
    return [GridRun(t, a, o, r, s, label)
            for t in tasks for a in agents for o in observations for r in rewards for s in seeds]


def run_plan(run: GridRun, settings: GridSettings) -> tuple[Any, Training, str]:
    """The agent config, loop settings and train-agent reward (``viper`` or ``env``) of one grid cell.

    A ratio run is a VIPER run with a baseline, so its agent gets VIPER's defaults (RND on pixels,
    standardised rewards) exactly as ``wm train-agent --reward viper --baseline-model`` gives them.
    """
    physics_per_agent_step = physics_steps_per_agent_step(run.task)
    total = settings.physics_steps // physics_per_agent_step
    eval_every = max(settings.eval_every_physics // physics_per_agent_step, 1)
    loop = loop_defaults(run.agent, run.observation, settings.preset)
    loop.update({name: value for name, value in (("update_every", settings.update_every),
                                                  ("updates_per_step", settings.updates_per_step))
                 if value is not None})
    training = Training(
        total_steps=total, seed_steps=min(1000, total // 10), replay_capacity=total + 1, eval_every=eval_every,
        eval_episodes=settings.eval_episodes, checkpoint_every=max(eval_every // 4, 1), video_every=eval_every * 5,
        log_every=max(eval_every // 4, 1), max_minutes=settings.max_minutes, seed=run.seed, **loop,
    )
    reward = "env" if run.reward == "env" else "viper"
    config = agent_config(run.agent, settings.preset, reward, run.observation, settings.rnd_weight,
                          settings.agent_options)
    return config, training, reward


def run_one(
    run: GridRun, out: Path, settings: GridSettings, models: dict[str, Path], baselines: dict[str, Path], threads: int,
    baseline_tasks: dict[str, str] | None = None,
) -> dict[str, Any]:
    """Train (or resume) one run in this process; its summary, also written to ``summary.json``.
    ``baseline_tasks``: the task a task's baseline is conditioned on, where one model is both (a one-model
    ``wm build-reward``)."""
    torch.set_num_threads(threads)
    directory = run.directory(out)
    if (directory / SUMMARY_FILE).is_file():
        return json.loads((directory / SUMMARY_FILE).read_text())
    repeat = physics_steps_per_agent_step(run.task)
    config, training, reward = run_plan(run, settings)
    viper = {"score": settings.score, "mode": settings.mode} if reward == "viper" else {}
    if run.reward == "ratio" and settings.frame_weight:
        viper["frame_weight"] = settings.frame_weight
    if run.reward == "ratio" and run.task in (baseline_tasks or {}):  # one model of both sources, by task
        viper.update(task=run.task, baseline_task=baseline_tasks[run.task])
    started = time.monotonic()
    summary = run_agent(
        f"dmc:{run.task}", directory, run.agent, config, training, reward, models.get(run.task), repeat,
        resume=True, observation=run.observation, device=settings.device,
        baseline_dir=baselines[run.task] if run.reward == "ratio" else None, **viper,
    )
    physics_steps = summary["env_steps"] * repeat
    summary = {**summary, **asdict(run), "physics_steps": physics_steps, "torch_threads": torch.get_num_threads(),
               "wall_s_this_session": time.monotonic() - started}
    write_json_atomic(directory / SUMMARY_FILE, summary)
    return summary


def final_evaluation(run: GridRun, out: Path, episodes: int, device: str = "cpu") -> dict[str, Any]:
    """The finished run's agent over ``episodes`` fresh episodes, kept in ``final_eval.json``; a kept
    evaluation of at least that many episodes of the same agent (env steps) is reused."""
    summary_path = run.directory(out) / SUMMARY_FILE
    if not summary_path.is_file():
        raise FileNotFoundError(f"{summary_path} is missing: the run has not finished, so it has no final agent")
    env_steps = json.loads(summary_path.read_text())["env_steps"]
    path = run.directory(out) / FINAL_EVAL_FILE
    if path.is_file():
        kept = json.loads(path.read_text())
        if kept["episodes"] >= episodes and kept.get("env_steps") == env_steps:
            return kept
    result = evaluate_run(run.directory(out), episodes, run.seed + FINAL_EVAL_SEED_OFFSET, device)
    result["env_steps"] = env_steps
    write_json_atomic(path, result)
    return result


def run_each_in_a_process(
    target: Callable[..., Any], jobs: Sequence[tuple], workers: int, on_done: Callable[[tuple], None],
    restarts: int = RUN_RESTARTS, name: Callable[[tuple], str] = repr,
) -> None:
    """``target(*job)`` for every job, each in a spawned process of its own, ``workers`` at a time; ``on_done(job)``
    as each one ends (``name(job)`` says which in messages).

    A job whose process is killed by a signal (a segfault, the kernel's OOM killer) starts again, up
    to ``restarts`` times (a grid run resumes from its last checkpoint); ``multiprocessing.Pool`` would wait for it
    forever. A job that fails with an error (its traceback printed above) stops the whole. Leaving, also on Ctrl-C
    or SIGTERM, terminates every running job, so no orphan keeps training. Spawned, not forked: torch and MuJoCo's
    GL state are not fork-safe.
    """
    context = multiprocessing.get_context("spawn")
    waiting = [(job, 0) for job in jobs]
    running: dict[int, tuple[multiprocessing.process.BaseProcess, tuple, int]] = {}
    try:
        while waiting or running:
            while waiting and len(running) < workers:
                job, tries = waiting.pop(0)
                process = context.Process(target=target, args=job)
                process.start()
                running[process.sentinel] = (process, job, tries)
            for sentinel in multiprocessing.connection.wait(list(running)):
                process, job, tries = running.pop(sentinel)
                process.join()
                if process.exitcode == 0:
                    on_done(job)
                elif process.exitcode < 0 and tries < restarts:
                    print(f"{name(job)}: its process was killed by signal {-process.exitcode}; starting it "
                          f"again (restart {tries + 1} of {restarts})", flush=True)
                    waiting.append((job, tries + 1))
                else:
                    cause = ("the error is above" if process.exitcode > 0
                             else f"killed by signal {-process.exitcode} on each of its {tries + 1} starts")
                    raise RuntimeError(f"{name(job)} failed (exit code {process.exitcode}); {cause}")
    finally:
        for process, _, _ in running.values():
            process.terminate()
            process.join()


def run_grid(
    out: str | Path, runs: list[GridRun], settings: GridSettings, models: dict[str, Path], workers: int = 2,
    baselines: dict[str, Path] | None = None, reward_quality: dict[str, float] | None = None,
    threads_per_run: int | None = None, baseline_tasks: dict[str, str] | None = None,
) -> str:
    """Run every grid cell (``workers`` processes at a time), then write the table and plots; returns the table.

    ``reward_quality`` (each task's held-out Spearman, as ``wm build-reward`` measured it) joins what
    earlier grid commands into ``out`` recorded, for the table, under each run's :func:`quality_key`.
    ``threads_per_run`` (default: the CPUs shared out among the workers) is each run's torch threads:
    give 1 where other jobs share the machine, since a multi-threaded run whose threads wait on each
    other crawls on busy cores.
    """
    if threads_per_run is not None and threads_per_run < 1:
        raise ValueError(f"threads_per_run must be >= 1, got {threads_per_run}")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    if reward_quality:
        path = out / REWARD_QUALITY_FILE
        known = json.loads(path.read_text()) if path.is_file() else {}
        recorded = {quality_key(run.task, run.label): reward_quality[run.task]
                    for run in runs if run.task in reward_quality}
        write_json_atomic(path, {**known, **recorded})
    write_json_atomic(out / "grid.json", {"settings": asdict(settings), "runs": [asdict(r) for r in runs],
                                          "models": {k: str(v) for k, v in models.items()},
                                          "baselines": {k: str(v) for k, v in (baselines or {}).items()},
                                          "baseline_tasks": baseline_tasks or {}})
    threads = threads_per_run or max(1, (os.cpu_count() or 1) // workers)
    todo = [run for run in runs if not (run.directory(out) / SUMMARY_FILE).is_file()]
    print(f"dmc benchmark: {len(runs)} runs, {len(runs) - len(todo)} already done, {workers} at a time")
    if todo:
        def report(job: tuple) -> None:
            summary = json.loads((job[0].directory(out) / SUMMARY_FILE).read_text())
            print(f"done {summary['task']} {summary['agent']}-{summary['observation']}-{summary['reward']} "
                  f"seed {summary['seed']}: eval true return {format_number(summary['eval_true_return'])} "
                  f"in {summary['elapsed_s'] / 60:.1f} min")

        previous = signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # SIGTERM leaves as Ctrl-C does
        try:
            jobs = [(run, out, settings, models, baselines or {}, threads, baseline_tasks or {}) for run in todo]
            run_each_in_a_process(run_one, jobs, workers, report,
                                  name=lambda job: f"{job[0].task} {job[0].variant} seed {job[0].seed}")
        finally:
            signal.signal(signal.SIGTERM, previous)
    if settings.final_eval_episodes:
        for run in runs:
            result = final_evaluation(run, out, settings.final_eval_episodes, settings.device)
            print(f"final evaluation {run.task} {run.variant} seed {run.seed}: true return "
                  f"{result['true_return']:.1f} over {result['episodes']} episodes")
    return write_results(out)


def finished_runs(out: Path) -> list[GridRun]:
    """Every run under ``out`` with a summary, whichever grid command ran it."""
    runs = []
    for path in sorted(out.glob(f"*/*/seed*/{SUMMARY_FILE}")):
        summary = json.loads(path.read_text())
        runs.append(GridRun(summary["task"], summary["agent"], summary["observation"], summary["reward"],
                            summary["seed"], summary.get("label", "")))
    return runs


def _run_figures(run: GridRun, out: Path) -> dict[str, Any]:
    """The run's summary, its final true return and the episodes behind it (the final evaluation's where
    the run has one, else its last evaluation's)."""
    summary = json.loads((run.directory(out) / SUMMARY_FILE).read_text())
    final = run.directory(out) / FINAL_EVAL_FILE
    if final.is_file():
        result = json.loads(final.read_text())
        return {**summary, "eval_true_return": result["true_return"], "eval_episodes": result["episodes"]}
    return {**summary, "eval_episodes": read_json(run.directory(out) / SETTINGS_FILE)["eval_episodes"]}


def write_results(out: Path) -> str:
    """``results.md`` / ``results.json`` and one curve plot per task from the summaries of every finished run."""
    runs = finished_runs(out)
    cells: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for run in runs:
        cells.setdefault((run.task, run.variant), []).append(_run_figures(run, out))
    quality_path = out / REWARD_QUALITY_FILE
    spearman = json.loads(quality_path.read_text()) if quality_path.is_file() else {}
    rows = [
        "| task | reward Spearman (held out) | agent | obs | reward | seeds | true return (mean +- std) "
        "| episodes/run | % of true-reward agent | physics steps | wall min/run | published DrQ (true reward) |",
        "|---|---:|---|---|---|---:|---:|---:|---:|---:|---:|---|",
    ]
    means: dict[tuple[str, str], float] = {}
    for (task, variant), summaries in cells.items():
        # A run without an evaluation (None) counts as NaN, and the table says nan.
        means[(task, variant)] = float(np.mean(np.asarray([s["eval_true_return"] for s in summaries], float)))
    results = []
    for (task, variant), summaries in sorted(cells.items()):
        returns = [s["eval_true_return"] for s in summaries]
        figures = np.asarray(returns, float)  # None (no evaluation) as NaN
        first = summaries[0]
        reference = means.get((task, f"{first['agent']}-{first['observation']}-env"))  # the unlabelled one
        # Grids recorded before labels kept their figure: a labelled row without its own shows the task's.
        quality = spearman.get(quality_key(task, first.get("label", "")), spearman.get(task))
        share = "-" if first["reward"] == "env" or reference is None else format_share(means[(task, variant)], reference)
        wall = np.mean([s["elapsed_s"] for s in summaries]) / 60
        physics = int(np.mean([s["physics_steps"] for s in summaries]))
        episodes = ", ".join(str(n) for n in sorted({s["eval_episodes"] for s in summaries}))
        rows.append(
            f"| {task} | {format_number(quality, '.3f')} | {first['agent']} | {first['observation']} "
            f"| {first['reward']}{' (' + first['label'] + ')' if first.get('label') else ''} | {len(returns)} "
            f"| {format_number(np.mean(figures))} +- {format_number(np.std(figures))} "
            f"| {episodes} | {share} | {physics} | {wall:.1f} "
            f"| {PUBLISHED_DRQ_100K.get(task, '-') if first['reward'] == 'env' else '-'} |"
        )
        results.append({"task": task, "variant": variant, "returns": returns, "wall_min": wall,
                        "physics_steps": physics, "episodes": [s["eval_episodes"] for s in summaries]})
    for task in sorted({task for task, _ in cells}):
        curves = {f"{run.variant} s{run.seed}": run.directory(out) for run in runs
                  if run.task == task and (run.directory(out) / "returns.json").is_file()}
        if curves:
            compare_runs(curves, out / f"{task}_curves.png", f"DMC-100k {task}: true return", smooth=3)
    table = "\n".join(rows)
    gifs = [f"- {run.task} {run.variant} seed {run.seed}: {gif.relative_to(out)}" for run in runs
            for gif in sorted((run.directory(out) / "videos").glob("eval_*.gif"))[-1:]]
    (out / "results.md").write_text(table + "\n\nLatest evaluation GIF of each run:\n\n" + "\n".join(gifs) + "\n")
    write_json_atomic(out / "results.json", {"results": results})
    return table

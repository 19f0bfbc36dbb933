"""`wm quickstart`: VIPER end to end on a small DMC default, resumable at every stage.

The reward recipe (:mod:`experiments.reward_recipe`: expert and random-play videos, the
tokenizer, the expert video model and a baseline video model of random play, the
likelihood-ratio reward checked on episodes of graded quality) at minute budgets, then
DrQ-v2 on that reward alone, and ``{out}/report.md``. The agent observes the state vector by
default (the reward still comes from the rendered frames): pixel RL does not learn in
minutes on a CPU, and the state agent shows whether the video reward teaches the task.
Each stage writes its results where a rerun finds them (episodes on disk are skipped,
training resumes from its checkpoint), so an interrupted quickstart continues where it
stopped. The minute budgets fit a 2-core CPU in about 30 minutes; faster machines stop
at the step counts instead.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agents.workspace import Training
from experiments.plots import compare_runs
from experiments.reports import format_number, format_ratio
from experiments.reward_recipe import (
    BASELINE_DIR, VIDEO_DIR, RewardRecipe, build_reward, default_recipe, reward_sections,
)
from experiments.train_agent import agent_config, loop_defaults, run_agent
from worldmodel.device import AUTO, resolve_device

STAGES = 6
AGENT_DIR = "agent"
AGENT_PLOT = "true_return.png"
# About as many steps as a 2-core CPU does per minute: the learning rates anneal over the
# steps, and the minutes stop a slower machine early without bending the schedules.
TOKENIZER_STEPS_PER_MINUTE, VIDEO_STEPS_PER_MINUTE = 90, 40


@dataclass
class QuickstartBudget:
    """Episodes and CPU minutes per stage; step counts cap faster machines."""

    episodes: int = 12
    random_episodes: int = 12
    data_episode_steps: int | None = None  # env steps per expert or random-play episode; None: the task's full length
    graded_episodes: int = 2
    graded_noise: tuple[float, ...] = (0.3, 1.0)  # action-noise stds of the reward check's graded expert episodes
    tokenizer_minutes: float = 5.0
    video_minutes: float = 7.0
    baseline_minutes: float = 3.0
    agent_minutes: float = 7.0
    agent_observation: str = "state"
    agent_action_repeat: int = 8  # physics steps per agent decision (DMC-100k's on cartpole)
    max_steps: int | None = None  # cut every episode short, for a quick look

    def reward_recipe(self) -> RewardRecipe:
        """The reward recipe at this budget: the minutes, and the steps a 2-core CPU does in them."""
        return RewardRecipe(
            episodes=self.episodes, random_episodes=self.random_episodes, episode_steps=self.data_episode_steps,
            graded_noise=self.graded_noise, graded_episodes=self.graded_episodes,
            tokenizer_steps=max(1, round(TOKENIZER_STEPS_PER_MINUTE * self.tokenizer_minutes)),
            video_steps=max(1, round(VIDEO_STEPS_PER_MINUTE * self.video_minutes)),
            baseline_steps=max(1, round(VIDEO_STEPS_PER_MINUTE * self.baseline_minutes)),
            tokenizer_minutes=self.tokenizer_minutes, video_minutes=self.video_minutes,
            baseline_minutes=self.baseline_minutes, max_steps=self.max_steps,
        )


# The reward recipe's task data at the quickstart's scale: reacher's 400 goals become 240, the
# 12 000 frames of cartpole's 12 full episodes.
TASK_DATA = {
    "reacher-easy": {
        "episodes": 240, "random_episodes": 240, "data_episode_steps": 50,
        "graded_noise": default_recipe("reacher-easy").graded_noise,
    },
}


def default_budget(task: str) -> QuickstartBudget:
    """The quickstart's budget for ``task``: the common minutes, the task's data recipe."""
    return QuickstartBudget(**TASK_DATA.get(task, {}))


def _stage(number: int, text: str) -> None:
    print(f"[{number}/{STAGES}] {text}", flush=True)


def _random_policy_return(reward_report: dict[str, Any]) -> float | None:
    """The graded random episodes' mean true return, as the report's reward table shows it (None: not graded)."""
    return next((row["true_return"] for row in reward_report["by_policy"] if row["policy"] == "random"), None)


def _agent_section(out: Path, summary: dict[str, Any], budget: QuickstartBudget, random_return: float | None) -> str:
    run = out / AGENT_DIR
    final = summary.get("eval_true_return")
    against_random = format_ratio(final, random_return, "the random policy's")
    evaluation = (
        f"final evaluation: true return **{format_number(final)}** ({against_random}), "
        f"VIPER return {format_number(summary.get('eval_return'))}."
        if final is not None else "no evaluation ran, so there is no final return."
    )
    lines = [
        f"The agent observes the {budget.agent_observation} "
        f"{'vector' if budget.agent_observation == 'state' else 'frames'}; its reward is the likelihood ratio of the "
        f"rendered frames alone. {summary['env_steps']} agent steps of {budget.agent_action_repeat} physics steps "
        f"({summary['env_steps'] * budget.agent_action_repeat} physics steps) in "
        f"{format_number(summary['elapsed_s'] / 60)} min, {summary['updates']} updates; {evaluation}",
        f"\n![true return]({AGENT_DIR}/{AGENT_PLOT})",
    ]
    gifs = sorted((run / "videos").glob("*.gif"))
    if gifs:
        lines.append(f"\nThe agent (last evaluation): ![agent]({gifs[-1].relative_to(out)})")
    return "\n".join(lines)


def quickstart(out: str | Path, task: str = "cartpole-swingup", budget: QuickstartBudget | None = None,
               workers: int = 2, device: str = AUTO) -> Path:
    """Run every stage into ``out`` (every model on ``device``) and write ``{out}/report.md``; returns its path."""
    device = resolve_device(device)
    budget = budget or default_budget(task)
    out = Path(out)
    started = time.monotonic()
    stage_numbers = iter(range(1, STAGES + 1))
    reward = build_reward(task, out, budget.reward_recipe(), workers, device,
                          announce=lambda text: _stage(next(stage_numbers), text))

    _stage(5, f"training DrQ-v2 on the likelihood-ratio reward alone for up to {budget.agent_minutes:g} minutes "
              f"into {out / AGENT_DIR}")
    agent_training = Training(
        total_steps=10**6, seed_steps=500, eval_every=1000, eval_episodes=2, checkpoint_every=250,
        video_every=1000, log_every=100, max_minutes=budget.agent_minutes,
        **loop_defaults("drqv2", budget.agent_observation),
    )
    config = agent_config("drqv2", "cpu", "viper", budget.agent_observation)
    agent = run_agent(f"dmc:{task}", out / AGENT_DIR, "drqv2", config, agent_training, "viper",
                      out / VIDEO_DIR / "model", budget.agent_action_repeat, resume=True,
                      max_episode_steps=budget.max_steps,
                      observation=budget.agent_observation, baseline_dir=out / BASELINE_DIR / "model",
                      device=device)

    _stage(6, "writing the report")
    compare_runs({"DrQ-v2 on the likelihood-ratio reward": out / AGENT_DIR}, out / AGENT_DIR / AGENT_PLOT,
                 "DrQ-v2 on the VIPER likelihood-ratio reward alone: true return", smooth=1)
    return write_report(out, task, budget, (time.monotonic() - started) / 60, reward=reward, agent=agent)


def write_report(
    out: str | Path, task: str, budget: QuickstartBudget, minutes: float, *, reward: dict[str, Any],
    agent: dict[str, Any],
) -> Path:
    """``{out}/report.md`` from the reward recipe's summary (:func:`experiments.reward_recipe.build_reward`)
    and the agent run's summary.

    Figures that are missing (None) print as ``n/a`` and non-finite ones as ``nan``/``inf``; the agent's
    ratio to random play says so where random play returned 0 (see :mod:`experiments.reports`).
    """
    out = Path(out)
    report = out / "report.md"
    report.write_text(
        f"# Quickstart: VIPER on {task}\n\n"
        f"Wall time of this invocation: {format_number(minutes)} min.\n\n"
        f"{reward_sections(reward)}\n"
        f"## DrQ-v2 on the VIPER reward alone\n\n"
        f"{_agent_section(out, agent, budget, _random_policy_return(reward['reward']))}\n\n"
        f"Tensorboard: `tensorboard --logdir {out}`\n"
    )
    return report

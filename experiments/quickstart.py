"""`wm quickstart`: VIPER end to end on a small DMC default, resumable at every stage.

Collect expert videos and random-policy videos, train the tokenizer, the expert video
model and a baseline video model of random play, check the likelihood-ratio reward
(expert log p minus baseline log p) on episodes of graded quality, train DrQ-v2 on that
reward alone, and write ``{out}/report.md``. The agent observes the state vector by
default (the reward still comes from the rendered frames): pixel RL does not learn in
minutes on a CPU, and the state agent shows whether the video reward teaches the task.
Each stage writes its results where a rerun finds them (episodes on disk are skipped,
training resumes from its checkpoint), so an interrupted quickstart continues where it
stopped. The minute budgets fit a 2-core CPU in about 30 minutes; faster machines stop
at the step counts instead.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from agents.workspace import Training
from envs.collect import PolicySpec, collect
from experiments.eval_reward import evaluate_reward
from experiments.plots import compare_runs
from experiments.presets import tokenizer_preset, video_preset
from experiments.reports import format_number, format_ratio, returns_table, tokenizer_report
from experiments.train_agent import agent_config, loop_defaults, run_agent
from worldmodel.device import AUTO, resolve_device
from worldmodel.episodes import DatasetManifest
from worldmodel.tokenizer import load_tokenizer
from worldmodel.train_tokenizer import TokenizerTraining, train_tokenizer
from worldmodel.train_video import VideoTraining, fit_to_data, train_video

GRADED_POLICIES = ("expert", "noisy:0.3", "noisy:1.0", "random")
STAGES = 6
AGENT_DIR = "agent"
AGENT_PLOT = "true_return.png"


@dataclass
class QuickstartBudget:
    """Episodes and CPU minutes per stage; step counts cap faster machines."""

    episodes: int = 12
    random_episodes: int = 12
    data_episode_steps: int | None = None  # env steps per expert or random-play episode; None: the task's full length
    graded_episodes: int = 2
    graded_policies: tuple[str, ...] = GRADED_POLICIES  # the reward check's grades, worst last
    tokenizer_minutes: float = 5.0
    video_minutes: float = 7.0
    baseline_minutes: float = 3.0
    agent_minutes: float = 7.0
    agent_observation: str = "state"
    agent_action_repeat: int = 8  # physics steps per agent decision (DMC-100k's on cartpole)
    max_steps: int | None = None  # cut every episode short, for a quick look


# Reacher's target moves every episode, so its video models must see many target positions
# to score unseen ones: 240 episodes of 50 env steps, the 12 000 frames of cartpole's 12 full
# episodes. (Held-out goals ranked at Spearman 0.948 after 400 x 50 expert episodes, 0.780
# after 100 x 100.) Its expert loses little to noise 0.3 or 1.0 (true return 990 / 983 / 965),
# so its grades reach further.
TASK_DATA = {
    "reacher-easy": {
        "episodes": 240, "random_episodes": 240, "data_episode_steps": 50,
        "graded_policies": ("expert", "noisy:1.0", "noisy:3.0", "noisy:10.0", "random"),
    },
}


def default_budget(task: str) -> QuickstartBudget:
    """The quickstart's budget for ``task``: the common minutes, the task's data recipe."""
    return QuickstartBudget(**TASK_DATA.get(task, {}))


def _shortest(*limits: int | None) -> int | None:
    given = [limit for limit in limits if limit is not None]
    return min(given) if given else None


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


def _train_video_model(data: Path, tokenizer_checkpoint: Path, run: Path, minutes: float, device: str) -> dict[str, Any]:
    preset = video_preset("dmc")
    config = fit_to_data(
        replace(preset.transformer, action_dropout=0.5), load_tokenizer(tokenizer_checkpoint, device),
        DatasetManifest.load(data), True,
    )
    training = VideoTraining(
        steps=max(1, round(40 * minutes)), clip_length=preset.clip_length, warmup_steps=50,
        max_minutes=minutes, eval_every=10**9, checkpoint_every=50,
    )
    return train_video(data, tokenizer_checkpoint, run, config, training, resume=True, device=device)


def quickstart(out: str | Path, task: str = "cartpole-swingup", budget: QuickstartBudget | None = None,
               workers: int = 2, device: str = AUTO) -> Path:
    """Run every stage into ``out`` (every model on ``device``) and write ``{out}/report.md``; returns its path."""
    device = resolve_device(device)
    budget = budget or default_budget(task)
    out = Path(out)
    started = time.monotonic()
    data, random_data, graded = out / "data", out / "data-random", out / "data-graded"
    data_steps = _shortest(budget.data_episode_steps, budget.max_steps)

    _stage(1, f"collecting {budget.episodes} expert episodes of {task} into {data} and "
              f"{budget.random_episodes} random-policy episodes into {random_data}")
    collect(f"dmc:{task}", [PolicySpec("expert")], budget.episodes, data,
            seed=0, test_fraction=0.15, workers=workers, max_steps=data_steps)
    collect(f"dmc:{task}", [PolicySpec("random")], budget.random_episodes, random_data,
            seed=500, test_fraction=0.15, workers=workers, max_steps=data_steps)
    manifest = DatasetManifest.load(data)

    _stage(2, f"training the dmc tokenizer for up to {budget.tokenizer_minutes:g} minutes into {out / 'tokenizer'}")
    # About as many steps as a 2-core CPU does in the minutes given: the learning rate anneals
    # over the steps, and the minutes stop a slower machine early without bending the schedule.
    tokenizer_training = TokenizerTraining(
        steps=max(1, round(90 * budget.tokenizer_minutes)), max_minutes=budget.tokenizer_minutes,
        eval_every=250, checkpoint_every=100,
    )
    train_tokenizer(data, out / "tokenizer", tokenizer_preset("dmc"), tokenizer_training, resume=True, device=device)
    tokenizer_checkpoint = out / "tokenizer" / "checkpoint"
    tokenizer = tokenizer_report(tokenizer_checkpoint, data, out=out / "tokenizer", device=device)

    _stage(3, f"training the expert video model for up to {budget.video_minutes:g} minutes into {out / 'video'} "
              f"and the random-play baseline for up to {budget.baseline_minutes:g} into {out / 'video-random'}")
    video = _train_video_model(data, tokenizer_checkpoint, out / "video", budget.video_minutes, device)
    baseline = _train_video_model(
        random_data, tokenizer_checkpoint, out / "video-random", budget.baseline_minutes, device
    )

    _stage(4, f"scoring episodes of graded quality ({', '.join(budget.graded_policies)}) with the likelihood-ratio "
              "reward")
    collect(f"dmc:{task}", [PolicySpec.parse(p) for p in budget.graded_policies], budget.graded_episodes, graded,
            seed=1000, test_fraction=0.99, workers=workers, max_steps=budget.max_steps)
    reward = evaluate_reward(out / "video" / "model", [graded], out / "reward",
                             baseline_dir=out / "video-random" / "model", device=device)

    _stage(5, f"training DrQ-v2 on the likelihood-ratio reward alone for up to {budget.agent_minutes:g} minutes "
              f"into {out / 'agent'}")
    agent_training = Training(
        total_steps=10**6, seed_steps=500, eval_every=1000, eval_episodes=2, checkpoint_every=250,
        video_every=1000, log_every=100, max_minutes=budget.agent_minutes,
        **loop_defaults("drqv2", budget.agent_observation),
    )
    config = agent_config("drqv2", "cpu", "viper", budget.agent_observation)
    agent = run_agent(f"dmc:{task}", out / AGENT_DIR, "drqv2", config, agent_training, "viper", out / "video" / "model",
                      budget.agent_action_repeat, resume=True, max_episode_steps=budget.max_steps,
                      observation=budget.agent_observation, baseline_dir=out / "video-random" / "model",
                      device=device)

    _stage(6, "writing the report")
    compare_runs({"DrQ-v2 on the likelihood-ratio reward": out / AGENT_DIR}, out / AGENT_DIR / AGENT_PLOT,
                 "DrQ-v2 on the VIPER likelihood-ratio reward alone: true return", smooth=1)
    return write_report(out, task, budget, (time.monotonic() - started) / 60, expert_episodes=manifest.episodes,
                        tokenizer=tokenizer, video=video, baseline=baseline, reward=reward, agent=agent)


def write_report(
    out: str | Path,
    task: str,
    budget: QuickstartBudget,
    minutes: float,
    *,
    expert_episodes: dict[str, dict],
    tokenizer: dict[str, Any],
    video: dict[str, Any],
    baseline: dict[str, Any],
    reward: dict[str, Any],
    agent: dict[str, Any],
) -> Path:
    """``{out}/report.md`` from the stages' summaries: the expert episodes (the manifest's), the tokenizer's
    report, both video models' training summaries, the reward evaluation and the agent run's summary.

    Figures that are missing (None) print as ``n/a`` and non-finite ones as ``nan``/``inf``; the agent's
    ratio to random play says so where random play returned 0 (see :mod:`experiments.reports`).
    """
    out = Path(out)
    report = out / "report.md"
    report.write_text(
        f"# Quickstart: VIPER on {task}\n\n"
        f"Wall time of this invocation: {format_number(minutes)} min.\n\n"
        f"## Expert episodes (true return)\n\n{returns_table(expert_episodes)}\n\n"
        f"## Tokenizer (held-out {tokenizer['eval_frames']} frames)\n\n"
        "| PSNR (dB) | SSIM | codebook usage | perplexity | codes per frame |\n|---|---|---|---|---|\n"
        f"| {format_number(tokenizer.get('psnr'), '.2f')} | {format_number(tokenizer.get('ssim'), '.3f')} "
        f"| {format_number(tokenizer.get('codebook_usage'), '.2f')} | {format_number(tokenizer.get('perplexity'))} "
        f"| {tokenizer['code_shape'][0]}x{tokenizer['code_shape'][1]} |\n\n"
        "Originals (top) and reconstructions (bottom):\n\n![reconstructions](tokenizer/reconstructions.png)\n\n"
        "## Video models\n\n| model | trained on | steps | held-out bits per code | nats per frame |\n"
        "|---|---|---:|---:|---:|\n"
        f"| expert | {budget.episodes} expert episodes | {video['step']} "
        f"| {format_number(video.get('bits_per_code'), '.3f')} | {format_number(video.get('log_prob_per_frame'))} |\n"
        f"| baseline | {budget.random_episodes} random-policy episodes | {baseline['step']} "
        f"| {format_number(baseline.get('bits_per_code'), '.3f')} "
        f"| {format_number(baseline.get('log_prob_per_frame'))} |\n\n"
        "## VIPER reward against the true return\n\n"
        "The reward is the likelihood ratio: each frame's log-likelihood under the expert model minus under the "
        "baseline model, standardised.\n\n"
        f"{reward['table']}\n\n"
        "![VIPER vs true return](reward/viper_vs_true_return.png)\n\n"
        "![reward curves](reward/reward_curves.png)\n\n"
        "Per-code log-likelihood ratio over frames (bright = more likely under the expert model than the "
        "baseline):\n\n![likelihood heat-map](reward/likelihood_heatmap.png)\n\n"
        f"## DrQ-v2 on the VIPER reward alone\n\n"
        f"{_agent_section(out, agent, budget, _random_policy_return(reward))}\n\n"
        f"Tensorboard: `tensorboard --logdir {out}`\n"
    )
    return report

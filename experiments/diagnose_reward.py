"""What does an agent trained on the VIPER reward do, and what does the reward say about it?

For a DrQ run, play its trained agent, the expert (the scripted one, or the trained agent
whose videos made the run's reward) and a random policy from the same reset seeds, score
every env step with the run's own VIPER reward (the video model and options of
``{run}/run.json``), and write:

- ``reward_trace.png``: per env step, the reward as the agent was trained on it, the raw
  log-likelihood beside the log-likelihood the model expected (minus its entropy), and
  the true reward; one colour per policy;
- ``{policy}_{episode}.gif`` and ``side_by_side_{episode}.gif``: the frames with that
  step's VIPER and true reward drawn under them;
- ``diagnosis.json`` / ``diagnosis.md``: per policy, true and VIPER return, and the mean
  per-step log-likelihood, entropy and entropy-adjusted score, over the whole episode and
  its first and second half (does the expert cross a valley of low reward?).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
from matplotlib.figure import Figure
from PIL import Image, ImageDraw

import envs
from envs.collect import PolicySpec, make_policy, run_episode
from envs.experts import held_random_policy
from envs.viper import ViperOptions
from envs.wrappers import env_frame_skip
from experiments.agent_policy import env_steps_per_decision, run_policy, run_policy_factory
from experiments.plots import save_figure
from experiments.reward_recipe import recipe_expert
from experiments.train_agent import run_settings
from experiments.videos import VideoWriter
from worldmodel.device import AUTO, resolve_device
from worldmodel.video_model import VideoModel

POLICIES = ("agent", "expert", "random")
COLOURS = {"agent": "tab:red", "expert": "tab:green", "random": "tab:gray"}


@dataclass
class Trace:
    """One episode of one policy, every env step scored."""

    policy: str
    episode: int
    frames: np.ndarray  # (T + 1, H, W, 3)
    true_rewards: np.ndarray  # (T,)
    rewards: np.ndarray  # (T,) the VIPER reward as the run trained on it
    log_prob: np.ndarray  # (T,) raw log-likelihood of each new frame (nats)
    entropy: np.ndarray  # (T,) the model's predictive entropy of that frame's codes (nats)

    def summary(self) -> dict[str, Any]:
        half = len(self.rewards) // 2
        parts = {"all": slice(None), "first_half": slice(0, half), "second_half": slice(half, None)}
        row: dict[str, Any] = {
            "policy": self.policy, "episode": self.episode, "steps": len(self.rewards),
            "true_return": float(self.true_rewards.sum()), "viper_return": float(self.rewards.sum()),
        }
        for name, part in parts.items():
            row[f"log_prob_{name}"] = float(self.log_prob[part].mean())
            row[f"entropy_{name}"] = float(self.entropy[part].mean())
            row[f"adjusted_{name}"] = float((self.log_prob[part] + self.entropy[part]).mean())
        return row


def load_run_settings(run: Path) -> dict[str, Any]:
    """The env and reward settings a VIPER run was trained with (``run.json``, written by ``wm train-agent``)."""
    settings = run_settings(run)
    if settings.get("reward") != "viper" or not settings.get("model"):
        raise ValueError(f"{run} was not trained on a VIPER reward (run.json: reward {settings.get('reward')!r})")
    return settings


def diagnose_reward(
    run: str | Path, out: str | Path | None = None, episodes: int = 2, seed: int = 0,
    model_dir: str | Path | None = None, device: str = AUTO, expert: str | None = None,
) -> dict[str, Any]:
    """Play and score the run's agent, the expert and a random policy (agent and video models on ``device``);
    write figures, GIFs and tables to ``out``.

    ``expert`` is a policy (``expert``, the scripted one, or ``agent:RUN``); None takes the one whose videos
    trained the run's video model where a ``wm build-reward`` recipe recorded it, else the scripted expert.
    """
    device = resolve_device(device)
    run = Path(run)
    out = Path(out) if out is not None else run / "diagnosis"
    settings = load_run_settings(run)
    model = VideoModel.load(model_dir or settings["model"], device)
    baseline = VideoModel.load(settings["baseline_model"], device) if settings.get("baseline_model") else None
    options = dict(settings["viper_options"])
    if options.get("score_mask") is not None:
        options["score_mask"] = np.asarray(options["score_mask"], bool)
    viper = ViperOptions(**options)
    repeat = env_steps_per_decision(settings)
    expert = expert or recipe_expert(settings["model"]) or "expert"
    expert_spec = PolicySpec.parse(expert)

    env = envs.make(settings["env"])
    if settings.get("max_episode_steps"):
        env = gym.wrappers.TimeLimit(env, settings["max_episode_steps"])
    reward_fn = viper.reward_fn(model, 1, env_frame_skip(env.get_wrapper_attr), baseline)
    traces: list[Trace] = []
    for index in range(episodes):
        episode_seed = seed + index
        policies = {
            "agent": run_policy(run, env, device),
            "expert": make_policy(expert_spec, env, settings["env"], episode_seed, run_policy_factory),
            "random": held_random_policy(env.action_space, repeat, episode_seed),  # deciding as often as the agent
        }
        for name, policy in policies.items():
            played = run_episode(env, policy, episode_seed)
            frames = played["video"]
            scores = reward_fn.episode_code_scores(frames)  # one pass gives the reward and its parts
            per_frame = [part.reshape(len(frames), -1).sum(-1)[1:] for part in scores]
            rewards = reward_fn.rewards_from_code_scores(scores)
            traces.append(Trace(name, index, frames, played["rewards"][:-1], rewards, *per_frame))
    env.close()

    out.mkdir(parents=True, exist_ok=True)
    fps = env.metadata.get("render_fps", 30)
    figure = reward_trace_figure(traces, f"{settings['env']}: {run.name}", viper, ratio=baseline is not None)
    gifs = [str(reward_gif([t], out / f"{t.policy}_{t.episode}.gif", fps)) for t in traces]
    for index in range(episodes):
        gifs.append(str(reward_gif([t for t in traces if t.episode == index], out / f"side_by_side_{index}.gif", fps)))
    rows = [t.summary() for t in traces]
    table = diagnosis_table(rows)
    report = {
        "run": str(run), "settings": settings, "expert": expert, "episodes": rows, "table": table, "gifs": gifs,
        "figure": str(save_figure(figure, out / "reward_trace.png")),
    }
    (out / "diagnosis.json").write_text(json.dumps(report, indent=2))
    (out / "diagnosis.md").write_text(table + "\n")
    return report


def reward_trace_figure(traces: list[Trace], title: str, viper: ViperOptions, ratio: bool = False) -> Figure:
    """Three panels over env steps: the trained-on reward, log p against -entropy, the true reward.

    With ``ratio`` (a baseline model) the middle panel's values are the expert model's minus the baseline's.
    """
    figure = Figure(figsize=(10, 8))
    panels = figure.subplots(3, 1, sharex=True)
    for trace in traces:
        steps = np.arange(1, len(trace.rewards) + 1)
        colour = COLOURS[trace.policy]
        label = trace.policy if trace.episode == 0 else None
        style = "-" if trace.episode == 0 else ":"
        panels[0].plot(steps, trace.rewards, style, color=colour, lw=0.9, label=label)
        panels[1].plot(steps, trace.log_prob, style, color=colour, lw=0.9, label=label and f"{label}: log p")
        panels[1].plot(steps, -trace.entropy, style, color=colour, lw=0.6, alpha=0.5,
                       label=label and f"{label}: expected log p (-entropy)")
        panels[2].plot(steps, trace.true_rewards, style, color=colour, lw=0.9, label=label)
    kind = "likelihood ratio, " if ratio else ""
    reward_name = f"VIPER reward\n({kind}{viper.score}, {viper.mode}{', standardised' if viper.standardize else ''})"
    panels[0].set(title=title, ylabel=reward_name)
    panels[1].set(ylabel="nats per frame" + ("\n(expert - baseline model)" if ratio else ""))
    panels[2].set(ylabel="true reward", xlabel="env step (episode 0 solid, later dotted)")
    for axes in panels:
        axes.grid(alpha=0.3)
        axes.legend(fontsize=7, ncol=3)
    return figure


def _annotated(frame: np.ndarray, trace: Trace, step: int, scale: int, low: float, high: float) -> Image.Image:
    """A frame scaled up, with the policy, step, VIPER and true reward and a bar of the VIPER reward under it."""
    size = frame.shape[0] * scale
    canvas = Image.new("RGB", (size, size + 40), "black")
    canvas.paste(Image.fromarray(frame).resize((size, size), Image.NEAREST))
    draw = ImageDraw.Draw(canvas)
    draw.text((3, size + 2), f"{trace.policy} t={step}", fill="white")
    if step > 0:
        value = float(trace.rewards[step - 1])
        draw.text((3, size + 14), f"viper {value:+.2f} true {trace.true_rewards[step - 1]:.2f}", fill="white")
        width = int((size - 6) * np.clip((value - low) / max(high - low, 1e-6), 0, 1))
        draw.rectangle((3, size + 28, 3 + width, size + 37), fill="lime" if value >= 0 else "orangered")
    return canvas


def reward_gif(traces: list[Trace], path: Path, fps: float, scale: int = 3) -> Path:
    """One GIF of one or more traces side by side, the reward drawn under every frame (one bar scale for all).

    Frames are streamed to the file, so a 500-step episode costs one frame of memory.
    """
    values = np.concatenate([t.rewards for t in traces])
    low, high = np.percentile(values, [1, 99])
    with VideoWriter([path], fps) as writer:
        for step in range(max(len(t.frames) for t in traces)):
            panels = [_annotated(t.frames[min(step, len(t.frames) - 1)], t, min(step, len(t.frames) - 1), scale,
                                 low, high) for t in traces]
            row = Image.new("RGB", (sum(p.width for p in panels), panels[0].height))
            for i, panel in enumerate(panels):
                row.paste(panel, (i * panel.width, 0))
            writer.append(np.asarray(row))
    return path


def diagnosis_table(rows: list[dict[str, Any]]) -> str:
    lines = [
        "| policy | episode | true return | VIPER return | log p / frame (1st half, 2nd half) | "
        "entropy / frame (1st, 2nd) | log p + entropy (1st, 2nd) |",
        "|---|---:|---:|---:|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['policy']} | {r['episode']} | {r['true_return']:.1f} | {r['viper_return']:.1f} | "
            f"{r['log_prob_all']:.1f} ({r['log_prob_first_half']:.1f}, {r['log_prob_second_half']:.1f}) | "
            f"{r['entropy_all']:.1f} ({r['entropy_first_half']:.1f}, {r['entropy_second_half']:.1f}) | "
            f"{r['adjusted_all']:.1f} ({r['adjusted_first_half']:.1f}, {r['adjusted_second_half']:.1f}) |"
        )
    return "\n".join(lines)

"""Is it the actor-critic, or the loop's budget? An imagination run's agent trained on, in its frozen world model.

``train-imagination`` gives the actor-critic ``imagination_updates`` updates per iteration, between world-model
training and real collection, so on a CPU a run of hours makes a few hundred. Where its world model passes
``check-world-model`` (it imagines the expert's actions to the expert's return) and the agent still does not
learn, two explanations remain: too few updates, or imagined rollouts the actor-critic cannot learn from (e.g.
starting where the task is already lost). :func:`diagnose_imagination` separates them: it loads the run's last
world model, frozen, and its agent (or a fresh one), makes ``updates`` more actor-critic updates with the
imagination settings given (where rollouts start, how many sub-envs), and plays ``eval_episodes`` real episodes
every ``eval_every`` updates on the same start states each time. With ``rollouts="real_env"`` the same updates
learn from real envs instead (seen through the tokenizer, as in imagination): the control that says what the
actor-critic learns with that many updates where the dynamics are right. Nothing in the run is written; the
diagnosis is its own resumable run directory: ``settings.json``, ``checkpoint/`` (the agent, counters, RNG, the
rows so far), ``diagnosis.json`` (the rows), ``diagnosis.png`` (real return and the rollouts' reward by update)
and ``tb/``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from functools import partial
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from gymnasium.vector.utils import batch_space
from gymnasium.wrappers.vector import TransformObservation
from matplotlib.figure import Figure

from envs.world_model import code_observation_space, observe
from experiments.plots import save_figure
from experiments.train_imagination import (
    AGENT_KIND, IMAGINATION_STARTS, PROGRESS_FILE, WORLD_MODEL_DIR, ImaginationSettings, episode_seed, imagine,
    learn_from_rollouts, make_agent, make_learning_env, make_real_env, phase_seed, play, save_agent,
    saved_settings, terminates, tokenizer_checkpoint, true_return,
)
from worldmodel.checkpoint import MODEL_FILE, load_typed_checkpoint, read_json
from worldmodel.device import AUTO, resolve_device
from worldmodel.episodes import EpisodeDataset
from worldmodel.tokenizer import Tokenizer, load_tokenizer
from worldmodel.training_run import CHECKPOINT_DIR, TrainingRun
from worldmodel.video_model import VideoModel

DIAGNOSIS_FILE = "diagnosis.json"
FIGURE_FILE = "diagnosis.png"
DIAGNOSIS_SEEDS = 4 * 10**9  # episode indices of the real evaluations, apart from the loop's and the check's
ROLLOUT_SOURCES = ("imagination", "real_env")


@dataclass
class DiagnosisSettings:
    """What the diagnosis changes from the run it reads (None keeps the run's setting)."""

    run: str = field(default="", metadata={"help": "the train-imagination run directory to diagnose (read only)"})
    updates: int = field(default=200, metadata={"help": "actor-critic updates in all"})
    eval_every: int = field(default=20, metadata={"help": "updates between real evaluations"})
    eval_episodes: int = field(default=4, metadata={"help": "real episodes per evaluation (the same start states)"})
    imagine_from: str | None = field(default=None, metadata={"help": (
        f"where imagined rollouts start, one of {', '.join(IMAGINATION_STARTS)} (see train-imagination); None: "
        "the run's")})
    imagined_envs: int | None = field(default=None, metadata={"help": "imagined sub-envs per update; None: the run's"})
    fresh_agent: bool = field(default=False, metadata={"help": (
        "start from a new actor-critic instead of the run's last one")})
    rollouts: str = field(default="imagination", metadata={"help": (
        "where the actor-critic's rollouts come from: imagination (the run's world model, frozen) or real_env "
        "(imagined-envs real envs of the reward the run learns, seen through its tokenizer: the control)")})

    def __post_init__(self) -> None:
        for name in ("updates", "eval_every", "eval_episodes"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 1:
                raise ValueError(f"{name} must be a positive int, got {getattr(self, name)!r}")
        if self.updates % self.eval_every:
            raise ValueError(f"updates ({self.updates}) must be a multiple of eval_every ({self.eval_every})")
        if self.imagine_from is not None and self.imagine_from not in IMAGINATION_STARTS:
            raise ValueError(f"imagine_from must be one of {IMAGINATION_STARTS}, got {self.imagine_from!r}")
        if self.rollouts not in ROLLOUT_SOURCES:
            raise ValueError(f"rollouts must be one of {ROLLOUT_SOURCES}, got {self.rollouts!r}")
        if self.imagined_envs is not None and self.imagined_envs < 1:
            raise ValueError(f"imagined_envs must be >= 1, got {self.imagined_envs}")


def diagnose_imagination(out: str | Path, settings: DiagnosisSettings, device: str = AUTO) -> dict[str, Any]:
    """Train the agent of the train-imagination run ``settings.run`` on in its frozen world model, evaluating in
    the real env; rerun to resume. Returns ``diagnosis.json``'s content: the run's figures and one row per
    evaluation (updates, real returns, the imagined reward and lambda-return of the updates before it)."""
    device = resolve_device(device)
    run_dir, out = Path(settings.run), Path(out)
    model_dir = run_dir / WORLD_MODEL_DIR / "model"
    loop = saved_settings(run_dir, "world model and agent", model_dir, run_dir / CHECKPOINT_DIR / MODEL_FILE)
    loop = replace(loop, imagination_updates=settings.eval_every,
                   imagine_from=settings.imagine_from or loop.imagine_from,
                   imagined_envs=settings.imagined_envs or loop.imagined_envs)
    env = make_real_env(loop)
    tokenizer = load_tokenizer(tokenizer_checkpoint(loop, run_dir), device).eval()
    model = VideoModel.load(model_dir, device)
    agent = make_agent(loop, env, device)
    diagnosis = TrainingRun(out, resume=True, settings=settings, may_change=("updates",))
    restored = diagnosis.restore({"config": ("actor-critic config", agent.describe())})
    rows: list[dict[str, Any]] = []
    if restored is not None:
        agent.load_state_tensors({**restored.weights, **restored.tensors})
        rows = restored.state["rows"]
    elif not settings.fresh_agent:
        agent.load_state_tensors(load_typed_checkpoint(run_dir / CHECKPOINT_DIR, AGENT_KIND, dict)[1])
    seeds = [episode_seed(loop, DIAGNOSIS_SEEDS + i) for i in range(settings.eval_episodes)]
    with_terminations = terminates(EpisodeDataset(run_dir / "data", "train"))
    progress = read_json(run_dir / PROGRESS_FILE)

    def evaluate() -> list[float]:
        returns = []
        for seed in seeds:
            with torch.random.fork_rng(devices=[]):
                returns.append(true_return(play(env, agent, tokenizer, seed, sample=False)))
        return returns

    def result() -> dict[str, Any]:
        return {"run": str(run_dir), "env": loop.env, "rollouts": settings.rollouts, "imagine_from": loop.imagine_from,
                "imagined_envs": loop.imagined_envs, "fresh_agent": settings.fresh_agent,
                "run_iterations": progress["iteration"], "random_returns": progress["random_returns"],
                "random_mean": float(np.mean(progress["random_returns"])),
                "seeds": seeds, "rows": rows}

    def publish() -> None:
        diagnosis.write_json(DIAGNOSIS_FILE, result())
        diagnosis_figure([result()], out / FIGURE_FILE)

    def save() -> None:
        save_agent(diagnosis, agent, {"rows": rows})
        publish()

    if not rows:
        returns = evaluate()
        rows.append({"updates": 0, "real_returns": returns, "real_mean": float(np.mean(returns))})
        save()
    practice = real_vector_env(loop, tokenizer, device) if settings.rollouts == "real_env" else None
    while rows[-1]["updates"] < settings.updates:
        chunk = len(rows) - 1
        torch.manual_seed(phase_seed(loop, chunk, 0))
        if practice is None:
            metrics = imagine(loop, run_dir / "data", agent, model, 10**3 + chunk, with_terminations)
        else:
            # reset at each chunk's start, so that a resumed diagnosis repeats an uninterrupted one
            seeds = [episode_seed(loop, DIAGNOSIS_SEEDS // 2 + chunk)] + [None] * (settings.eval_every - 1)
            metrics = learn_from_rollouts(agent, practice, seeds, desc="real-env updates")
        returns = evaluate()
        rows.append({"updates": rows[-1]["updates"] + settings.eval_every, "real_returns": returns,
                     "real_mean": float(np.mean(returns)),
                     **{f"imagination_{key}": value for key, value in metrics.items()}})
        for key, value in rows[-1].items():
            if isinstance(value, float):
                diagnosis.writer.add_scalar(key, value, rows[-1]["updates"])
        diagnosis.tick()
        save()
        print(f"{rows[-1]['updates']} updates: real return {rows[-1]['real_mean']:.1f}, rollouts' reward per step "
              f"{metrics.get('reward', float('nan')):.3f}")
    publish()  # a finished diagnosis, rerun, rewrites its summary
    diagnosis.close()
    return result()


def real_vector_env(loop: ImaginationSettings, tokenizer: Tokenizer, device: str) -> gym.vector.VectorEnv:
    """``loop.imagined_envs`` real envs of the reward the loop learns, observed as its agent observes imagined
    ones: each frame encoded by the tokenizer, then decoded or as code vectors."""
    envs = gym.vector.SyncVectorEnv([partial(make_learning_env, loop, device)] * loop.imagined_envs)
    single = (code_observation_space(tokenizer) if loop.agent_observes == "codes"
              else envs.single_observation_space)

    def seen(frames: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return observe(tokenizer, tokenizer.encode(frames), loop.agent_observes)

    return TransformObservation(envs, seen, batch_space(single, loop.imagined_envs), single)


def diagnosis_label(result: dict[str, Any]) -> str:
    """What a diagnosis trained on: its rollouts' source and its starting agent."""
    source = "real envs" if result["rollouts"] == "real_env" else f"imagined from {result['imagine_from']}"
    agent = "a fresh agent" if result["fresh_agent"] else "the run's agent"
    return f"{source}, {agent}"


def diagnosis_figure(results: Sequence[dict[str, Any]], path: str | Path) -> Path:
    """Real return (each episode, and the mean) and the reward per step of the rollouts learnt from, by
    actor-critic update, of one diagnosis or several of the same run (one colour each)."""
    figure = Figure(figsize=(11, 3.8))
    returns, rewards = figure.subplots(1, 2)
    for i, result in enumerate(results):
        rows, colour = result["rows"], f"C{i}"
        for row in rows:
            returns.plot([row["updates"]] * len(row["real_returns"]), row["real_returns"], ".", color=colour,
                         alpha=0.3)
        returns.plot([row["updates"] for row in rows], [row["real_mean"] for row in rows], "o-", ms=3, color=colour,
                     label=diagnosis_label(result))
        known = [(row["updates"], row["imagination_reward"]) for row in rows if "imagination_reward" in row]
        if known:
            rewards.plot(*zip(*known), "o-", ms=3, color=colour)
    first = results[0]
    returns.axhline(first["random_mean"], ls="--", color="grey", lw=1, label="random play")
    returns.set(title=f"{first['env']}: real return of the agent (mode)", xlabel="actor-critic updates",
                ylabel="true return")
    returns.legend(fontsize=8)
    rewards.set(title="reward per step of the rollouts learnt from", xlabel="actor-critic updates",
                ylabel="reward per agent step")
    for axes in (returns, rewards):
        axes.grid(alpha=0.3)
    return save_figure(figure, path)

"""An agent trained purely in imagination: IRIS's loop on our video world model, as one command.

IRIS (Micheli et al., 2023) alternates, and so does :func:`train_in_imagination`:

1. **collect** real episodes with the current policy (random play first), written to
   ``{run}/data`` as the project's episodes;
2. **train the world model** on everything collected so far: the frame-causal transformer with
   reward and continue heads (``train-video``, resumed each time), on the codes of a frozen
   tokenizer (one given, or one trained once on the random-play episodes);
3. **train the actor-critic** (:mod:`agents.actor_critic`) only on imagined rollouts: each update
   starts ``imagined_envs`` sub-envs of :class:`envs.world_model.WorldModelVectorEnv` from real
   context clips and rewards them by the reward head;
4. **evaluate** the policy in the real env (its true return), and imagine the first evaluation
   episode from its first frames and actions, beside the real one (PSNR and the reward head's
   error per step, a GIF).

In the real env the agent sees each frame as the tokenizer reconstructs it (encoded and
decoded), the kind of picture it learnt from in imagination. The run directory holds
``data/`` (episodes, manifest, token cache), ``tokenizer/`` and ``world_model/`` (their training
runs; the bundle in ``world_model/model``), ``agent/`` (actor-critic weights, optimizer and
config), ``progress.json`` (iteration, steps, returns), ``learning_curve.png`` (real return against
random play, imagined-vs-real PSNR), ``tb/`` and ``videos/``. A run resumes at its last finished
iteration (world-model training resumes from its own checkpoint).
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field, replace
from functools import partial
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from safetensors.torch import load_file, save_file
from torch.utils.tensorboard import SummaryWriter
from tqdm import tqdm

import envs
from agents.actor_critic import ActorCritic, ActorCriticConfig, FrameStacks
from envs.collect import describe_env, run_episode, task_name
from envs.experts import make_expert
from envs.world_model import WorldModelEnv, WorldModelVectorEnv
from experiments.eval_consistency import exact_match_psnr
from experiments.plots import imagination_curves
from experiments.presets import tokenizer_preset, video_preset
from experiments.reports import ratio
from experiments.videos import save_video, side_by_side
from worldmodel.checkpoint import atomic_directory, read_json, write_json_atomic
from worldmodel.episodes import DatasetManifest, EpisodeDataset, write_episode
from worldmodel.metrics import psnr
from worldmodel.sampling import check_decoding
from worldmodel.tokenizer import Tokenizer, load_tokenizer
from worldmodel.train_tokenizer import TokenizerTraining, train_tokenizer
from worldmodel.train_video import VideoTraining, fit_to_data, train_video
from worldmodel.video_model import VideoModel

PROGRESS_FILE = "progress.json"
SETTINGS_FILE = "settings.json"
CURVES_FILE = "learning_curve.png"
TOKENIZER_DIR = "tokenizer"
WORLD_MODEL_DIR = "world_model"  # its training run; the bundle is in its "model"
AGENT_DIR = "agent"
AGENT_WEIGHTS = "agent.safetensors"
# Where imagined rollouts start: only after contexts of the model's whole window (frame window - 1 onwards),
# after a context ending at any frame of the real episodes (shorter at an episode's start), or at the real
# episodes' first frames, for imagined episodes as long as the real ones.
IMAGINATION_STARTS = ("full_context", "any_frame", "episode_start")
EVALUATION_SEEDS = 2 * 10**9  # episode indices of evaluate_run, apart from collection (< 10**6) and the loop's
CHECK_SEEDS = 3 * 10**9  # episode indices of check_world_model
CHECK_FILE = "world_model_check.json"


@dataclass
class ImaginationSettings:
    """What one run does; the defaults are the DMC-100k budget on cartpole (action repeat 8)."""

    env: str = "dmc:cartpole-balance"
    action_repeat: int = 8
    episode_steps: int | None = None
    physics_steps: int = 100_000
    seed_episodes: int = 5
    episodes_per_iteration: int = 1
    tokenizer: str | None = None
    tokenizer_preset: str = "dmc"
    tokenizer_steps: int = 2000
    video_preset: str = "dmc"
    first_world_model_steps: int = 1000
    world_model_steps: int = 200
    world_model_batch: int = 8
    world_model_clip: int | None = None
    world_model_lr: float = 3e-4
    imagination_updates: int = 20
    imagined_envs: int = 32
    imagine_from: str = "full_context"
    decoding: str = "sequential"
    eval_episodes: int = 2
    seed: int = 0
    max_minutes: float | None = None
    agent: ActorCriticConfig = field(default_factory=ActorCriticConfig)

    def __post_init__(self) -> None:
        check_decoding(self.decoding)  # before the hours of a run, not at its first imagined step
        if self.imagine_from not in IMAGINATION_STARTS:
            raise ValueError(f"imagine_from must be one of {IMAGINATION_STARTS}, got {self.imagine_from!r}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> ImaginationSettings:
        """Inverse of :meth:`to_dict` (a run's ``settings.json``)."""
        return cls(**{**values, "agent": ActorCriticConfig(**values["agent"])})


# May change when a run resumes: the budgets, and the decoding (both decodings sample the same frames);
# every other setting is fixed.
RESUMABLE_CHANGES = ("physics_steps", "max_minutes", "decoding")


class ReconstructingPolicy:
    """The actor-critic acting in one real episode: frames go through the tokenizer, then the frame stack."""

    def __init__(self, agent: ActorCritic, tokenizer: Tokenizer, sample: bool) -> None:
        self.agent, self.tokenizer, self.sample = agent, tokenizer, sample
        self.stacks = FrameStacks(agent.config.frame_stack)
        self.started = False

    def __call__(self, obs: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            seen = self.tokenizer.decode(self.tokenizer.encode(obs[None])).numpy()
        stacks = self.stacks.push(seen, np.zeros(1, bool)) if self.started else self.stacks.reset(seen)
        self.started = True
        return self.agent.act(stacks, sample=self.sample)[0]


class ImaginationRun:
    """The state of one run directory: paths, settings, progress (see the module docstring)."""

    def __init__(self, run_dir: str | Path, settings: ImaginationSettings) -> None:
        self.dir = Path(run_dir)
        self.data = self.dir / "data"
        self.tokenizer_run = self.dir / TOKENIZER_DIR
        self.world_model_run = self.dir / WORLD_MODEL_DIR
        saved = self.dir / SETTINGS_FILE
        fixed = {k: v for k, v in json.loads(json.dumps(settings.to_dict())).items() if k not in RESUMABLE_CHANGES}
        if saved.exists():
            before = {k: v for k, v in read_json(saved).items() if k not in RESUMABLE_CHANGES}
            changed = sorted(k for k in fixed if before.get(k) != fixed[k])
            if changed:
                raise ValueError(f"{self.dir} was started with other settings ({', '.join(changed)}); "
                                 f"only {', '.join(RESUMABLE_CHANGES)} may change on resume")
        self.dir.mkdir(parents=True, exist_ok=True)
        write_json_atomic(saved, settings.to_dict())
        self.settings = settings
        self.progress = read_json(self.dir / PROGRESS_FILE) if (self.dir / PROGRESS_FILE).exists() else {
            "iteration": 0, "agent_steps": 0, "episodes": 0, "history": [], "random_returns": [],
        }

    def save_progress(self) -> None:
        write_json_atomic(self.dir / PROGRESS_FILE, self.progress)

    def record(self, episode: dict[str, Any], index: int) -> float:
        """Write real episode ``index`` (every tenth, from the first, goes to the test split)."""
        split = "test" if index % 10 == 0 else "train"
        write_episode(
            self.data / split / f"episode{index:05d}.npz", episode["video"], episode["actions"], episode["rewards"],
            terminated=episode["terminated"],
        )
        return float(episode["rewards"].sum())


def make_real_env(settings: ImaginationSettings) -> gym.Env:
    env = envs.make(settings.env, action_repeat=settings.action_repeat)
    steps = settings.episode_steps
    return env if steps is None else gym.wrappers.TimeLimit(env, steps)


def _episode_seed(settings: ImaginationSettings, index: int) -> int:
    return settings.seed * 1_000_003 + index


def _play_random(env: gym.Env, seed: int) -> dict[str, Any]:
    env.action_space.seed(seed)
    return run_episode(env, lambda obs: env.action_space.sample(), seed)


def _collect_random(run: ImaginationRun, env: gym.Env, writer: SummaryWriter) -> None:
    settings = run.settings
    describe_env(settings.env, env).save(run.data)
    while run.progress["episodes"] < settings.seed_episodes:
        index = run.progress["episodes"]
        episode = _play_random(env, _episode_seed(settings, index))
        run.progress["random_returns"].append(run.record(episode, index))
        run.progress["episodes"] += 1
        run.progress["agent_steps"] += len(episode["video"]) - 1
        run.save_progress()
    writer.add_scalar("real/random_return", float(np.mean(run.progress["random_returns"])), 0)


def _tokenizer_checkpoint(settings: ImaginationSettings, run_dir: Path) -> Path:
    """The frozen tokenizer of a run: the one given, else the one the run trains on its random play."""
    return run_dir / TOKENIZER_DIR / "checkpoint" if settings.tokenizer is None else Path(settings.tokenizer)


def _train_tokenizer(run: ImaginationRun) -> Path:
    settings = run.settings
    if settings.tokenizer is None:
        training = TokenizerTraining(steps=settings.tokenizer_steps, eval_every=10**9, seed=settings.seed)
        train_tokenizer(run.data, run.tokenizer_run, tokenizer_preset(settings.tokenizer_preset), training, resume=True)
    return _tokenizer_checkpoint(settings, run.dir)


def _train_world_model(
    run: ImaginationRun, tokenizer: Tokenizer, checkpoint: Path, iteration: int
) -> dict[str, Any]:
    settings = run.settings
    preset = video_preset(settings.video_preset)
    config = fit_to_data(
        replace(preset.transformer, reward_head=True, continue_head=True), tokenizer, DatasetManifest.load(run.data)
    )
    steps = settings.first_world_model_steps + iteration * settings.world_model_steps
    training = VideoTraining(
        steps=steps, batch_size=settings.world_model_batch, clip_length=settings.world_model_clip or preset.clip_length,
        lr=settings.world_model_lr, warmup_steps=100, min_lr_fraction=1.0, eval_every=10**9,
        checkpoint_every=50, eval_clips=8, seed=settings.seed,
    )
    return train_video(run.data, checkpoint, run.world_model_run, config, training, resume=True, reward_stats=False)


def _terminates(episodes: EpisodeDataset) -> bool:
    """Whether any real training episode so far ended by termination. Where none has (cartpole never
    terminates), the continue head is not heeded: it learnt only "go on", so a termination it predicts (for
    0.9% of the imagined balance steps, measured) can only be wrong, and would cut the agent's returns short."""
    return any(episodes.episode(i).terminated for i in range(len(episodes.paths)))


def _imagine(
    run: ImaginationRun, agent: ActorCritic, model: VideoModel, iteration: int, terminations: bool
) -> dict[str, float]:
    """Actor-critic updates on imagined rollouts that start from real clips; the mean of their metrics.

    Rollouts restart from fresh clips at every update (IRIS's way), except with ``episode_start``: imagined
    episodes are then the real task, its start states and its length, and carry on across updates."""
    settings = run.settings
    clips = EpisodeDataset(run.data, "train", clip_length=max(1, model.window))
    whole_episodes = settings.imagine_from == "episode_start"
    if whole_episodes:
        contexts, horizon = partial(clips.sample_contexts, episode_start=True), int(clips.lengths.max()) - 1
    else:
        contexts = clips.sample_contexts if settings.imagine_from == "any_frame" else clips.sample
        horizon = None
    env = WorldModelVectorEnv(
        model, contexts, settings.imagined_envs, reward="head", terminations=terminations, horizon=horizon,
        decoding=settings.decoding,
    )
    totals: dict[str, float] = {}
    for update in tqdm(range(settings.imagination_updates), desc="imagination", unit="update", leave=False):
        restart = update == 0 or not whole_episodes
        seed = _episode_seed(settings, 10**6 * (iteration + 1) + update) if restart else None
        metrics = agent.update(agent.rollout(env, seed=seed))
        for key, value in metrics.items():
            totals[key] = totals.get(key, 0.0) + value / settings.imagination_updates
    return totals


def _play(env: gym.Env, agent: ActorCritic, tokenizer: Tokenizer, seed: int, sample: bool) -> dict[str, Any]:
    return run_episode(env, ReconstructingPolicy(agent, tokenizer, sample), seed)


def _imagined_beside_real(
    model: VideoModel, episode: dict[str, Any], out: Path, fps: float, decoding: str, terminations: bool
) -> tuple[np.ndarray, np.ndarray]:
    """The world model, stepped as an env with a real episode's actions from its first frames, beside that
    episode: PSNR and absolute reward error per imagined step, and a GIF."""
    context = max(1, model.window)
    clip = {"video": episode["video"][None, :context], "actions": episode["actions"][None, :context]}
    env = WorldModelEnv(model, lambda n, rng: clip, reward="head", terminations=terminations, decoding=decoding)
    env.reset(seed=0)
    imagined, rewards = [], []
    for action in episode["actions"][context - 1 : -1]:  # the last action is padding
        frame, reward, terminated, truncated, _ = env.step(action)
        imagined.append(frame)
        rewards.append(reward)
        if terminated or truncated:
            break
    steps = len(imagined)
    real = episode["video"][context : context + steps]
    _save_beside(real, imagined, out.with_suffix(".gif"), fps)
    step_psnr = np.minimum(psnr(real, np.stack(imagined)).numpy(), exact_match_psnr(real.shape))
    return step_psnr, np.abs(np.asarray(rewards) - episode["rewards"][context - 1 : context - 1 + steps])


def _save_beside(real: np.ndarray, imagined: list[np.ndarray], path: Path, fps: float) -> None:
    """A GIF of real frames (left) beside the imagined ones (right), as long as the shorter of the two."""
    frames = [side_by_side([r, i], ["real", "imagined"]) for r, i in zip(real, imagined)]
    save_video(np.stack(frames), [path], fps)


def _save_agent(run: ImaginationRun, agent: ActorCritic) -> None:
    with atomic_directory(run.dir / AGENT_DIR) as tmp:
        save_file(agent.state_tensors(), tmp / AGENT_WEIGHTS)
        (tmp / "config.json").write_text(json.dumps({"kind": "actor_critic", "config": agent.describe()}, indent=2))


def train_in_imagination(run_dir: str | Path, settings: ImaginationSettings, device: str = "cpu") -> dict[str, Any]:
    """Run (or resume) the loop until the physics-step budget or ``max_minutes`` is spent; returns the progress."""
    run = ImaginationRun(run_dir, settings)
    started = time.monotonic()
    writer = SummaryWriter(run.dir / "tb")
    env = make_real_env(settings)
    _collect_random(run, env, writer)
    tokenizer_checkpoint = _train_tokenizer(run)
    tokenizer = load_tokenizer(tokenizer_checkpoint).eval()
    agent = ActorCritic(env.observation_space, env.action_space, settings.agent, device)
    if (run.dir / AGENT_DIR / AGENT_WEIGHTS).exists():
        agent.load_state_tensors(load_file(run.dir / AGENT_DIR / AGENT_WEIGHTS))
    fps = DatasetManifest.load(run.data).fps
    agent_budget = settings.physics_steps // settings.action_repeat
    while run.progress["agent_steps"] < agent_budget:
        if settings.max_minutes is not None and time.monotonic() - started > 60 * settings.max_minutes:
            break
        iteration = run.progress["iteration"]
        seconds = {"start": time.monotonic()}
        summary = _train_world_model(run, tokenizer, tokenizer_checkpoint, iteration)
        model = VideoModel.load(run.world_model_run / "model")
        seconds["world_model"] = time.monotonic()
        terminations = _terminates(EpisodeDataset(run.data, "train"))  # the data change only at collection
        imagination = _imagine(run, agent, model, iteration, terminations)
        _save_agent(run, agent)
        seconds["imagination"] = time.monotonic()
        evaluations = [
            _play(env, agent, tokenizer, _episode_seed(settings, 10**9 + iteration * 100 + i), sample=False)
            for i in range(settings.eval_episodes)
        ]
        returns = [float(episode["rewards"].sum()) for episode in evaluations]
        seconds["evaluation"] = time.monotonic()
        gif = run.dir / "videos" / f"iteration{iteration:03d}"
        step_psnr, reward_error = _imagined_beside_real(
            model, evaluations[0], gif, fps, settings.decoding, terminations
        )
        seconds["imagined_beside_real"] = time.monotonic()
        collected = []
        for _ in range(settings.episodes_per_iteration):
            index = run.progress["episodes"]
            episode = _play(env, agent, tokenizer, _episode_seed(settings, index), sample=True)
            collected.append(run.record(episode, index))
            run.progress["episodes"] += 1
            run.progress["agent_steps"] += len(episode["video"]) - 1
        seconds["collection"] = time.monotonic()
        marks = list(seconds.items())
        row = {
            "iteration": iteration,
            "agent_steps": run.progress["agent_steps"],
            "physics_steps": run.progress["agent_steps"] * settings.action_repeat,
            "eval_return": float(np.mean(returns)),
            "collect_return": float(np.mean(collected)),
            "imagined_psnr_first_15": float(np.mean(step_psnr[:15])),
            "imagined_reward_error_first_15": float(np.mean(reward_error[:15])),
            "world_model_bits_per_code": summary.get("bits_per_code"),
            "world_model_reward_mae": summary.get("reward_mae"),
            **{f"imagination_{key}": value for key, value in imagination.items()},
            **{f"seconds_{name}": round(t - marks[i][1], 1) for i, (name, t) in enumerate(marks[1:])},
        }
        for key, value in row.items():
            if isinstance(value, float):
                writer.add_scalar(key, value, row["physics_steps"])
        print(json.dumps(row))
        run.progress["history"].append(row)
        run.progress["iteration"] += 1
        run.save_progress()
        random_return = float(np.mean(run.progress["random_returns"]))
        imagination_curves(run.progress["history"], random_return, run.dir / CURVES_FILE, settings.env)
    writer.close()
    return run.progress


def _saved_settings(run_dir: Path, what: str, *needed: Path) -> ImaginationSettings:
    """The settings of a train-imagination run directory that holds ``needed``; else an error saying it
    holds no ``what``."""
    for path in (run_dir / SETTINGS_FILE, *needed):
        if not path.exists():
            raise FileNotFoundError(f"{run_dir} holds no {what} trained by train-imagination ({path} is missing)")
    return ImaginationSettings.from_dict(read_json(run_dir / SETTINGS_FILE))


def evaluation_name(sample: bool) -> str:
    """The stem of :func:`evaluate_run`'s JSON and GIF: one per way of acting, so neither overwrites the other."""
    return "evaluation_sampled" if sample else "evaluation"


def evaluate_run(run_dir: str | Path, episodes: int = 10, sample: bool = False) -> dict[str, Any]:
    """A run's saved agent over ``episodes`` fresh real episodes, beside random play on the same seeds:
    the same start states, so the two returns compare episode by episode. The agent acts by its policy's
    mode, or with ``sample`` by sampling it (seeded per episode, so a rerun replays the same episodes).

    Writes ``{run}/evaluation.json`` (``evaluation_sampled.json`` with ``sample``) and the agent's first
    episode to ``{run}/videos/evaluation.gif`` (``evaluation_sampled.gif``).
    """
    run_dir = Path(run_dir)
    if not isinstance(episodes, int) or episodes < 1:
        raise ValueError(f"episodes must be a positive int, got {episodes!r}")
    settings = _saved_settings(run_dir, "agent", run_dir / PROGRESS_FILE, run_dir / AGENT_DIR / AGENT_WEIGHTS)
    env = make_real_env(settings)
    tokenizer = load_tokenizer(_tokenizer_checkpoint(settings, run_dir)).eval()
    agent = ActorCritic(env.observation_space, env.action_space, settings.agent)
    agent.load_state_tensors(load_file(run_dir / AGENT_DIR / AGENT_WEIGHTS))
    fps = DatasetManifest.load(run_dir / "data").fps
    seeds = [_episode_seed(settings, EVALUATION_SEEDS + i) for i in range(episodes)]
    name = evaluation_name(sample)
    agent_returns, random_returns = [], []
    for i, seed in enumerate(tqdm(seeds, desc="evaluation", unit="episode")):
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            episode = _play(env, agent, tokenizer, seed, sample=sample)
        if i == 0:
            save_video(episode["video"], [run_dir / "videos" / f"{name}.gif"], fps)
        agent_returns.append(float(episode["rewards"].sum()))
        random_returns.append(float(_play_random(env, seed)["rewards"].sum()))
    progress = read_json(run_dir / PROGRESS_FILE)
    agent_mean, random_mean = float(np.mean(agent_returns)), float(np.mean(random_returns))
    result = {
        "env": settings.env,
        "policy": "sampled" if sample else "mode",
        "iterations": progress["iteration"],
        "physics_steps": progress["agent_steps"] * settings.action_repeat,
        "seeds": seeds,
        "agent_returns": agent_returns,
        "random_returns": random_returns,
        "agent_mean": agent_mean,
        "agent_std": float(np.std(agent_returns)),
        "random_mean": random_mean,
        "random_std": float(np.std(random_returns)),
        "ratio_to_random": ratio(agent_mean, random_mean),  # None where random play returned 0 or less
    }
    write_json_atomic(run_dir / f"{name}.json", result)
    return result


def check_world_model(run_dir: str | Path, episodes: int = 4) -> dict[str, Any]:
    """Whether a run's world model knows what actions do. Real episodes of the task's scripted expert and
    of random play, from the same start states, are each imagined open loop from their first frame alone,
    fed their own actions (rewards by the reward head, the continue head not heeded). An expert whose
    imagined return comes near its real one says the model has learnt how actions reach high reward; one
    no better than random play's, that an agent cannot learn that in its imagination either.

    Writes ``{run}/world_model_check.json`` and ``{run}/videos/world_model_check.gif`` (the first expert
    episode, real beside imagined).
    """
    run_dir = Path(run_dir)
    if not isinstance(episodes, int) or episodes < 1:
        raise ValueError(f"episodes must be a positive int, got {episodes!r}")
    model_dir = run_dir / WORLD_MODEL_DIR / "model"
    settings = _saved_settings(run_dir, "world model", model_dir)
    env = make_real_env(settings)
    expert = make_expert(task_name(settings.env), env)
    seeds = [_episode_seed(settings, CHECK_SEEDS + i) for i in range(episodes)]
    played = [run_episode(env, expert, seed) for seed in seeds] + [_play_random(env, seed) for seed in seeds]
    model = VideoModel.load(model_dir)
    window = max(1, model.window)
    first = {key: np.stack([np.repeat(e[key][:1], window, 0) for e in played]) for key in ("video", "actions")}
    imagined = WorldModelVectorEnv(
        model, lambda n, rng: {**first, "lengths": np.ones(n, np.int64)}, len(played), reward="head",
        terminations=False, decoding=settings.decoding,
    )
    imagined.reset(seed=settings.seed)
    steps = [len(e["actions"]) - 1 for e in played]  # the last action is padding
    rewards, expert_frames = np.zeros((max(steps), len(played))), []
    for t in tqdm(range(max(steps)), desc="imagining", unit="step"):
        actions = np.stack([e["actions"][min(t, n - 1)] for e, n in zip(played, steps)])
        frames, rewards[t], _, _, _ = imagined.step(actions)
        expert_frames.append(frames[0])
    real = played[0]["video"][1 : steps[0] + 1]
    fps = DatasetManifest.load(run_dir / "data").fps
    _save_beside(real, expert_frames, run_dir / "videos" / "world_model_check.gif", fps)
    result: dict[str, Any] = {"env": settings.env, "seeds": seeds}
    for name, part in (("expert", slice(0, episodes)), ("random", slice(episodes, None))):
        real_returns = [float(e["rewards"].sum()) for e in played[part]]
        imagined_returns = [float(rewards[:n, i].sum()) for i, n in list(enumerate(steps))[part]]
        result[name] = {
            "real_returns": real_returns, "imagined_returns": imagined_returns,
            "real_mean": float(np.mean(real_returns)), "imagined_mean": float(np.mean(imagined_returns)),
        }
    write_json_atomic(run_dir / CHECK_FILE, result)
    return result

"""An agent trained purely in imagination: IRIS's loop on our video world model, as one command.

IRIS (Micheli et al., 2023) alternates, and so does :func:`train_in_imagination`:

1. **collect** real episodes with the current policy (random play first), written to
   ``{run}/data`` as the project's episodes; with ``viper_model`` (VIPER's agent, DreamerV3 there) their
   rewards are the video model's VIPER reward (a likelihood ratio with ``viper_baseline_model``), each frame
   scored at the model's rate, and the env's reward is kept only to report true returns;
2. **train the world model** on everything collected so far: the frame-causal transformer with
   reward and continue heads (``train-video``, resumed each time), on the codes of a frozen
   tokenizer (one given, or one trained once on the random-play episodes); with ``expert_data``,
   a share ``expert_fraction`` of every batch comes from expert episodes, so that the model also
   sees what random play never shows (``check_episodes`` then reports, before any actor-critic
   training, whether it imagines the expert's actions reaching the expert's return, and checks
   every later world model the same way, so a model that drifts shows in the loop's curves);
3. **train the actor-critic** (:mod:`agents.actor_critic`) only on imagined rollouts: each update
   starts ``imagined_envs`` sub-envs of :class:`envs.world_model.WorldModelVectorEnv` from real
   context clips and rewards them by the reward head;
4. **evaluate** the policy in the real env (its true return), and imagine the first evaluation
   episode from its first frames and actions, beside the real one (PSNR and the reward head's
   error per step, a GIF).

In the real env the agent sees each frame as the tokenizer reconstructs it (encoded and
decoded), the kind of picture it learnt from in imagination. The run directory holds
``data/`` (episodes, manifest, token cache), ``tokenizer/`` and ``world_model/`` (their training
runs; the bundle in ``world_model/model``), ``settings.json``, ``checkpoint/`` (the actor-critic's
weights and optimizer, RNG states, counters and history: a
:class:`~worldmodel.training_run.TrainingRun`), ``progress.json`` (iteration, steps, returns),
``learning_curve.png`` (real return against random play, imagined-vs-real PSNR), ``tb/`` and
``videos/``. A run resumes at its last finished iteration, or its last random-play episode
(world-model and tokenizer training resume from their own checkpoints), and repeats what an
uninterrupted run does: each phase of an iteration seeds torch's generator from (seed, iteration),
and episodes a crash wrote after the checkpoint are dropped.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field, replace
from functools import partial
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from tqdm import tqdm

import envs
from agents.actor_critic import ActorCritic, ActorCriticConfig, FrameStacks, StackingPolicy
from envs.collect import describe_env, run_episode, task_name
from envs.experts import make_expert
from envs.world_model import OBSERVATIONS, WorldModelEnv, WorldModelVectorEnv, code_observation_space, observe
from experiments.eval_consistency import exact_match_psnr
from experiments.plots import imagination_curves
from experiments.presets import tokenizer_preset, video_preset
from experiments.reports import ratio
from experiments.train_agent import env_factory
from experiments.videos import save_video, side_by_side
from worldmodel.checkpoint import MODEL_FILE, load_typed_checkpoint, read_json, write_json_atomic
from worldmodel.device import AUTO, resolve_device
from worldmodel.episodes import DatasetManifest, EpisodeDataset, write_episode
from worldmodel.metrics import psnr
from worldmodel.sampling import check_decoding, parse_decoding
from worldmodel.tokenizer import Tokenizer, load_tokenizer
from worldmodel.train_tokenizer import TokenizerTraining, build_tokenizer, train_tokenizer
from worldmodel.training_run import CHECKPOINT_DIR, SETTINGS_FILE, TrainingRun
from worldmodel.train_video import VideoTraining, fit_to_data, train_video
from worldmodel.video_model import VideoModel

PROGRESS_FILE = "progress.json"
CURVES_FILE = "learning_curve.png"
TOKENIZER_DIR = "tokenizer"
WORLD_MODEL_DIR = "world_model"  # its training run; the bundle is in its "model"
AGENT_KIND = "actor_critic"  # what the run's checkpoint holds
IMAGINATION_PHASE, COLLECTION_PHASE = 0, 1  # the phases of an iteration that draw from torch's generator
# Where imagined rollouts start: only after contexts of the model's whole window (frame window - 1 onwards),
# after a context ending at any frame of the real episodes (shorter at an episode's start), or at the real
# episodes' first frames, for imagined episodes as long as the real ones.
IMAGINATION_STARTS = ("full_context", "any_frame", "episode_start")
EVALUATION_SEEDS = 2 * 10**9  # episode indices of evaluate_run, apart from collection (< 10**6) and the loop's
CHECK_SEEDS = 3 * 10**9  # episode indices of check_world_model
CHECK_FILE = "world_model_check.json"
CHECKS_DIR = "checks"  # the checks of iterations after the first


@dataclass
class ImaginationSettings:
    """What one run does; the defaults are the DMC-100k budget on cartpole (action repeat 8)."""

    env: str = field(
        default="dmc:cartpole-balance", metadata={"help": (
            "real env spec (its frames and actions are what the world model learns)"
        )},
    )
    action_repeat: int = field(default=8, metadata={"help": (
        "physics steps (DMC; underlying env steps elsewhere) per agent decision (DMC-100k: 8 on cartpole)"
    )})
    episode_steps: int | None = field(
        default=None, metadata={"help": "cut real episodes to this many agent steps (None: the env's own limit)"}
    )
    physics_steps: int = field(
        default=100_000, metadata={"help": (
            "real physics steps in all, random play included (a resumed run may raise it)"
        )},
    )
    seed_episodes: int = field(
        default=5, metadata={"help": "random-play episodes before the first world model (the tokenizer trains on them)"}
    )
    episodes_per_iteration: int = field(
        default=1, metadata={"help": "real episodes collected with the current policy per iteration"}
    )
    tokenizer: str | None = field(
        default=None, metadata={"help": (
            "a trained tokenizer checkpoint to use, frozen (None: train one on the random play)"
        )},
    )
    tokenizer_preset: str = field(default="dmc", metadata={"help": "tokenizer preset (see train-tokenizer)"})
    tokenizer_steps: int = field(
        default=2000, metadata={"help": "tokenizer training steps, once, on the random-play episodes"}
    )
    video_preset: str = field(
        default="dmc", metadata={"help": "transformer preset (see train-video); reward and continue heads are added"}
    )
    first_world_model_steps: int = field(
        default=1000, metadata={"help": "world-model steps before the first imagination"}
    )
    world_model_steps: int = field(default=200, metadata={"help": "further world-model steps per iteration"})
    world_model_batch: int = field(default=8, metadata={"help": "world-model clips per step"})
    world_model_clip: int | None = field(
        default=None, metadata={"help": "frames per world-model training clip (None: the preset's)"}
    )
    world_model_lr: float = field(
        default=3e-4, metadata={"help": "world-model learning rate (constant after a 100-step warm-up)"}
    )
    expert_data: str | None = field(
        default=None, metadata={"help": (
            "a dataset of expert episodes (wm collect --action-repeat as this run's; footage of wm import-videos "
            "joins without actions) mixed into every world-model batch at --expert-fraction"
        )},
    )
    expert_fraction: float = field(
        default=0.0, metadata={"help": "share of each world-model batch drawn from --expert-data"}
    )
    check_episodes: int = field(
        default=0, metadata={"help": (
            "after every world model, imagine this many scripted-expert and random-play episodes open loop "
            "(wm check-world-model): the first check is reported before any actor-critic training, each "
            "iteration's imagined/real shares are logged (check_expert_share, check_random_share; 0: no check)"
        )},
    )
    check_gate: float = field(
        default=0.0, metadata={"help": (
            "with --check-episodes: stop before any actor-critic training unless the expert's imagined return "
            "reaches this share of its real return (e.g. 0.7; 0: report only). Rerun with another gate, which may "
            "change on resume, to go on"
        )},
    )
    viper_model: str | None = field(
        default=None, metadata={"help": (
            "a VIPER video model (trained on expert footage, e.g. a `wm build-reward` recipe's video/model): the loop "
            "then learns from its reward alone. Every real frame is scored at the model's frame rate, the world "
            "model's reward head learns those scores, the actor-critic maximises them in imagination; the env's "
            "reward is read only to report true returns"
        )},
    )
    viper_baseline_model: str | None = field(
        default=None, metadata={"help": (
            "a video model of random play (the recipe's video-random/model): the VIPER reward becomes the "
            "likelihood ratio of the two models"
        )},
    )
    viper_baseline_task: str | None = field(
        default=None, metadata={"help": (
            "the task the baseline is conditioned on, where one model is both (wm build-reward --one-model: "
            "TASK@play; the expert side is then the env's task)"
        )},
    )
    imagination_updates: int = field(
        default=20, metadata={"help": "actor-critic updates per iteration, each on a fresh imagined rollout"}
    )
    imagined_envs: int = field(default=32, metadata={"help": "imagined sub-envs per rollout, started from real clips"})
    imagine_from: str = field(
        default="full_context", metadata={"help": (
            "where imagined rollouts start: full_context (only after a real context of the model's whole window, "
            "so never within an episode's first window - 1 frames) or any_frame (after a context ending at any "
            "frame of the collected episodes, their first frames included, shorter there; on balance it did not "
            "help) or episode_start (at the collected episodes' first frames: imagined episodes as long as the "
            "real ones, carried on across updates)"
        )},
    )
    agent_observes: str = field(
        default="frames", metadata={"help": (
            "what the actor-critic reads: frames (decoded pixels; real frames pass through the tokenizer and back, "
            "so both look alike) or codes (the tokenizer's code vectors: imagined steps skip the decoder, most of "
            "their cost, and the agent a conv encoder; real frames are encoded)"
        )},
    )
    factorized_head: bool = field(
        default=False, metadata={"help": (
            "the world model predicts each FSQ code (tokenizer preset fast) as one digit per level, each from its "
            "own softmax: 27 outputs instead of 4375 per code, which is most of an imagined step's cost on a CPU"
        )},
    )
    decoding: str = field(
        default="sequential", metadata={"help": (
            "how imagined frames are sampled: sequential (one code per model step) or jacobi (a whole frame per "
            "step until it stops changing: the same frames, faster only where few codes depend on the codes "
            "before them, e.g. an untrained model; a trained cartpole model needs about 60 of the 65 steps); the "
            "two may swap on resume. masked or masked:PASSES: the world model also learns to fill in frames in a "
            "few parallel passes (MaskGIT) and imagines so; fixed for the run"
        )},
    )
    eval_episodes: int = field(default=2, metadata={"help": "real episodes per evaluation (the policy's mode)"})
    seed: int = field(default=0, metadata={"help": "seed of episodes, initialisation and imagination"})
    max_minutes: float | None = field(
        default=None, metadata={"help": (
            "stop at the end of the iteration that passes this many minutes, counted across resumes"
        )},
    )
    agent: ActorCriticConfig = field(
        default_factory=ActorCriticConfig, metadata={"help": "the actor-critic's settings (the --ac-* flags)"}
    )

    def __post_init__(self) -> None:
        check_decoding(self.decoding)  # before the hours of a run, not at its first imagined step
        if self.agent_observes not in OBSERVATIONS:
            raise ValueError(f"agent_observes must be one of {OBSERVATIONS}, got {self.agent_observes!r}")
        if self.imagine_from not in IMAGINATION_STARTS:
            raise ValueError(f"imagine_from must be one of {IMAGINATION_STARTS}, got {self.imagine_from!r}")
        if (self.expert_data is None) != (self.expert_fraction == 0):
            raise ValueError("expert_data and an expert_fraction > 0 go together "
                             f"(got {self.expert_data!r} and {self.expert_fraction})")
        if self.check_episodes < 0:
            raise ValueError(f"check_episodes must be >= 0, got {self.check_episodes}")
        if self.check_gate < 0 or (self.check_gate and not self.check_episodes):
            raise ValueError(f"check_gate must be >= 0 and needs check_episodes, got {self.check_gate} with "
                             f"{self.check_episodes} check episodes")
        if self.viper_model is None and self.viper_baseline_model is not None:
            raise ValueError("viper_baseline_model is the baseline of a VIPER reward: give viper_model too")
        if self.viper_baseline_model is None and self.viper_baseline_task is not None:
            raise ValueError(f"viper_baseline_task {self.viper_baseline_task!r} names the baseline model's task: "
                             "give viper_baseline_model too")

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> ImaginationSettings:
        """The settings a run's ``settings.json`` records."""
        return cls(**{**values, "agent": ActorCriticConfig(**values["agent"])})


# May change when a run resumes: the budgets, the decoding (both decodings sample the same frames) and the
# check's gate; every other setting is fixed.
RESUMABLE_CHANGES = ("physics_steps", "max_minutes", "decoding", "check_gate")


class ReconstructingPolicy:
    """The actor-critic acting in one real episode: frames go through the tokenizer (back to frames, or to code
    vectors, as it observes imagined ones), then the stack."""

    def __init__(self, agent: ActorCritic, tokenizer: Tokenizer, sample: bool) -> None:
        self.tokenizer = tokenizer
        self.observes = "frames" if agent.pixels else "codes"
        self.policy = StackingPolicy(agent, sample)

    def __call__(self, obs: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            seen = observe(self.tokenizer, self.tokenizer.encode(obs[None]), self.observes)
        return self.policy(seen[0])


class ImaginationRun:
    """One run directory: its paths and settings, and the :class:`TrainingRun` that keeps its counters
    (``step`` counts finished iterations), checkpoint (the actor-critic, RNG states, the history of
    iterations), tensorboard (by physics steps) and time budget. See the module docstring."""

    def __init__(self, run_dir: str | Path, settings: ImaginationSettings) -> None:
        self.dir = Path(run_dir)
        self.data = self.dir / "data"
        self.tokenizer_run = self.dir / TOKENIZER_DIR
        self.world_model_run = self.dir / WORLD_MODEL_DIR
        self.training = TrainingRun(
            self.dir, resume=True, settings=settings, may_change=RESUMABLE_CHANGES,
            max_minutes=settings.max_minutes, counters=dict.fromkeys(("agent_steps", "episodes", "physics_steps"), 0),
            log_axis="physics_steps",
        )
        self.settings = settings
        self.counters = self.training.counters
        self.history: list[dict[str, Any]] = []
        self.random_returns: list[float] = []

    def restore(self, agent: ActorCritic) -> None:
        """Resume from the last checkpoint, and drop episodes a crash wrote after it (and their cached codes),
        so the world model trains on what an uninterrupted run had at this point."""
        restored = self.training.restore({"config": ("actor-critic config", agent.describe())})
        if restored is not None:
            agent.load_state_tensors({**restored.weights, **restored.tensors})
            self.history, self.random_returns = restored.state["history"], restored.state["random_returns"]
        for path in self.data.glob("**/episode*.npz"):
            if int(path.stem.removeprefix("episode")) >= self.counters["episodes"]:
                path.unlink()

    def checkpoint(self, agent: ActorCritic) -> None:
        """The actor-critic (weights; optimizer state apart), counters, RNG states and history, then
        ``progress.json``, the readable summary that reports and ``compare-runs`` read."""
        save_agent(self.training, agent, {"history": self.history, "random_returns": self.random_returns})
        write_json_atomic(self.dir / PROGRESS_FILE, self.progress)

    @property
    def progress(self) -> dict[str, Any]:
        """Iterations done, real agent and physics steps, episodes, seconds, the history and random play's returns."""
        counters = {k: v for k, v in self.counters.items() if k != "step"}
        return {"iteration": self.counters["step"], **counters, "history": self.history,
                "random_returns": self.random_returns}

    def record(self, episode: dict[str, Any], index: int) -> float:
        """Write real episode ``index`` (every tenth, from the first, goes to the test split) with the rewards the
        world model learns; its true return."""
        split = "test" if index % 10 == 0 else "train"
        write_episode(
            self.data / split / f"episode{index:05d}.npz", episode["video"], episode["actions"], episode["rewards"],
            terminated=episode["terminated"],
        )
        return true_return(episode)


def save_agent(training: TrainingRun, agent: ActorCritic, state: dict[str, Any]) -> None:
    """Checkpoint the actor-critic in ``training``'s run: its weights (the optimizer state beside them) and the
    loop's JSON ``state``."""
    tensors = agent.state_tensors()
    weights = {k: v for k, v in tensors.items() if not k.startswith("optim.")}
    training.save(weights, {"kind": AGENT_KIND, "config": agent.describe()},
                  tensors={k: v for k, v in tensors.items() if k.startswith("optim.")}, state=state)


def make_real_env(settings: ImaginationSettings) -> gym.Env:
    """The real env with its own (true) reward, the agent deciding every ``action_repeat`` physics steps."""
    return _cut_episodes(envs.make(settings.env, action_repeat=settings.action_repeat), settings)


def make_learning_env(settings: ImaginationSettings, device: str) -> gym.Env:
    """The real env whose rewards the world model learns: :func:`make_real_env`, or with ``viper_model`` the same
    env rewarded by VIPER: every frame scored at the video model's rate under the agent's repeated action, summed
    per agent step (as DrQ-v2's VIPER runs are), the env's reward kept in the episodes' ``task_rewards``."""
    if settings.viper_model is None:
        return make_real_env(settings)
    model = VideoModel.load(settings.viper_model, device)
    baseline = None
    if settings.viper_baseline_model is not None:
        one_model = Path(settings.viper_baseline_model).resolve() == Path(settings.viper_model).resolve()
        baseline = model if one_model else VideoModel.load(settings.viper_baseline_model, device)
    options = {}
    if settings.viper_baseline_task is not None:  # one model of both sources, conditioned on each
        options = {"task": task_name(settings.env), "baseline_task": settings.viper_baseline_task}
    env = env_factory(settings.env, "viper", model, settings.action_repeat, baseline=baseline, **options)(settings.seed)
    return _cut_episodes(env, settings)


def _cut_episodes(env: gym.Env, settings: ImaginationSettings) -> gym.Env:
    """``env`` with episodes cut to ``episode_steps`` agent steps, where the settings cut them."""
    steps = settings.episode_steps
    return env if steps is None else gym.wrappers.TimeLimit(env, steps)


def true_return(episode: dict[str, Any]) -> float:
    """The env's own return of an episode from :func:`make_learning_env`, whichever reward it learnt from."""
    return float(episode.get("task_rewards", episode["rewards"]).sum())


def episode_seed(settings: ImaginationSettings, index: int) -> int:
    return settings.seed * 1_000_003 + index


def _play_random(env: gym.Env, seed: int) -> dict[str, Any]:
    env.action_space.seed(seed)
    return run_episode(env, lambda obs: env.action_space.sample(), seed)


def _count_episode(run: ImaginationRun, episode: dict[str, Any]) -> None:
    run.counters["episodes"] += 1
    run.counters["agent_steps"] += len(episode["video"]) - 1
    run.counters["physics_steps"] = run.counters["agent_steps"] * run.settings.action_repeat


def _collect_random(run: ImaginationRun, env: gym.Env, agent: ActorCritic) -> None:
    settings = run.settings
    describe_env(settings.env, env).save(run.data)
    if run.counters["episodes"] >= settings.seed_episodes:
        return  # collected before a resume, and logged then
    while run.counters["episodes"] < settings.seed_episodes:
        index = run.counters["episodes"]
        episode = _play_random(env, episode_seed(settings, index))
        run.random_returns.append(run.record(episode, index))
        _count_episode(run, episode)
        run.checkpoint(agent)
    run.training.writer.add_scalar("real/random_return", float(np.mean(run.random_returns)), 0)


def tokenizer_checkpoint(settings: ImaginationSettings, run_dir: Path) -> Path:
    """The frozen tokenizer of a run: the one given, else the one the run trains on its random play."""
    return run_dir / TOKENIZER_DIR / "checkpoint" if settings.tokenizer is None else Path(settings.tokenizer)


def _train_tokenizer(run: ImaginationRun, device: str) -> Path:
    settings = run.settings
    if settings.tokenizer is None:
        training = TokenizerTraining(steps=settings.tokenizer_steps, eval_every=10**9, seed=settings.seed)
        train_tokenizer(
            run.data, run.tokenizer_run, tokenizer_preset(settings.tokenizer_preset), training, resume=True, device=device
        )
    return tokenizer_checkpoint(settings, run.dir)


def _train_world_model(
    run: ImaginationRun, tokenizer: Tokenizer, checkpoint: Path, iteration: int, device: str
) -> dict[str, Any]:
    settings = run.settings
    preset = video_preset(settings.video_preset)
    config = fit_to_data(
        replace(preset.transformer, reward_head=True, continue_head=True,
                masked_decoding=parse_decoding(settings.decoding)[0] == "masked"),
        tokenizer, DatasetManifest.load(run.data), factorized=settings.factorized_head,
    )
    steps = settings.first_world_model_steps + iteration * settings.world_model_steps
    training = VideoTraining(
        steps=steps, batch_size=settings.world_model_batch, clip_length=settings.world_model_clip or preset.clip_length,
        lr=settings.world_model_lr, warmup_steps=100, min_lr_fraction=1.0, eval_every=10**9,
        checkpoint_every=50, eval_clips=8, seed=settings.seed, mix_fraction=settings.expert_fraction,
        mix_rewards=settings.viper_model is None,  # the expert data's rewards are the env's, not VIPER's
    )
    return train_video(
        run.data, checkpoint, run.world_model_run, config, training, resume=True, device=device, reward_stats=False,
        mix_root=settings.expert_data,
    )


def terminates(episodes: EpisodeDataset) -> bool:
    """Whether any real training episode so far ended by termination. Where none has (cartpole never
    terminates), the continue head is not heeded: it learnt only "go on", so a termination it predicts (for
    0.9% of the imagined balance steps, measured) can only be wrong, and would cut the agent's returns short."""
    return any(episodes.episode(i).terminated for i in range(len(episodes.paths)))


def imagine(
    settings: ImaginationSettings, data: Path, agent: ActorCritic, model: VideoModel, iteration: int,
    terminations: bool,
) -> dict[str, float]:
    """``settings.imagination_updates`` actor-critic updates on imagined rollouts that start from real clips of
    the episodes in ``data``; the mean of their metrics.

    Rollouts restart from fresh clips at every update (IRIS's way), except with ``episode_start``: imagined
    episodes are then the real task, its start states and its length, and carry on across updates."""
    clips = EpisodeDataset(data, "train", clip_length=max(1, model.window))
    whole_episodes = settings.imagine_from == "episode_start"
    if whole_episodes:
        contexts, horizon = partial(clips.sample_contexts, episode_start=True), int(clips.lengths.max()) - 1
    else:
        contexts = clips.sample_contexts if settings.imagine_from == "any_frame" else clips.sample
        horizon = None
    env = WorldModelVectorEnv(
        model, contexts, settings.imagined_envs, reward="head", terminations=terminations, horizon=horizon,
        decoding=settings.decoding, observations=settings.agent_observes,
    )
    seeds = [episode_seed(settings, 10**6 * (iteration + 1) + update) if update == 0 or not whole_episodes else None
             for update in range(settings.imagination_updates)]
    return learn_from_rollouts(agent, env, seeds, desc="imagination")


def learn_from_rollouts(
    agent: ActorCritic, env: gym.vector.VectorEnv, seeds: list[int | None], desc: str
) -> dict[str, float]:
    """One actor-critic update per entry of ``seeds`` on a rollout of ``env`` (reset with that seed first, or
    carried on where the last rollout left it for None); the mean of their metrics."""
    totals: dict[str, float] = {}
    for seed in tqdm(seeds, desc=desc, unit="update", leave=False):
        metrics = agent.update(agent.rollout(env, seed=seed))
        for key, value in metrics.items():
            totals[key] = totals.get(key, 0.0) + value / len(seeds)
    return totals


def play(env: gym.Env, agent: ActorCritic, tokenizer: Tokenizer, seed: int, sample: bool) -> dict[str, Any]:
    return run_episode(env, ReconstructingPolicy(agent, tokenizer, sample), seed)


def load_saved_agent(settings: ImaginationSettings, env: gym.Env, directory: Path, device: str) -> ActorCritic:
    """The actor-critic saved in ``directory/checkpoint`` (a run's, or a diagnosis's), shaped by ``settings``."""
    agent = make_agent(settings, env, device)
    agent.load_state_tensors(load_typed_checkpoint(directory / CHECKPOINT_DIR, AGENT_KIND, dict)[1])
    return agent


def make_agent(settings: ImaginationSettings, env: gym.Env, device: str) -> ActorCritic:
    """The actor-critic for what it observes: the env's frames, or the code vectors of the run's tokenizer (its
    checkpoint's, or its preset's shape before it is trained)."""
    space = env.observation_space
    if settings.agent_observes == "codes":
        tokenizer = (load_tokenizer(settings.tokenizer) if settings.tokenizer is not None
                     else build_tokenizer(tokenizer_preset(settings.tokenizer_preset)))
        space = code_observation_space(tokenizer)
    return ActorCritic(space, env.action_space, settings.agent, device)


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


def phase_seed(settings: ImaginationSettings, iteration: int, phase: int) -> int:
    """The torch seed of one phase of one iteration: a resumed run draws what an uninterrupted one drew,
    whatever the world model's training (resumed or not) did to the global generator before."""
    return int(np.random.SeedSequence([settings.seed, iteration, phase]).generate_state(1)[0])


def train_in_imagination(run_dir: str | Path, settings: ImaginationSettings, device: str = AUTO) -> dict[str, Any]:
    """Run (or resume) the loop until the physics-step budget or ``max_minutes`` is spent, every model (tokenizer,
    world model, actor-critic) trained and used on ``device``; returns the progress."""
    device = resolve_device(device)
    run = ImaginationRun(run_dir, settings)
    env = make_learning_env(settings, device)
    torch.manual_seed(settings.seed)
    agent = make_agent(settings, env, device)
    run.restore(agent)
    _collect_random(run, env, agent)
    tokenizer_checkpoint = _train_tokenizer(run, device)
    tokenizer = load_tokenizer(tokenizer_checkpoint, device).eval()
    fps = DatasetManifest.load(run.data).fps
    agent_budget = settings.physics_steps // settings.action_repeat
    while run.counters["agent_steps"] < agent_budget and not run.training.tick():
        iteration = run.counters["step"]
        seconds = {"start": time.monotonic()}
        summary = _train_world_model(run, tokenizer, tokenizer_checkpoint, iteration, device)
        model = VideoModel.load(run.world_model_run / "model", device)
        check = _check_iteration(run, env, model, iteration) if settings.check_episodes else None
        if check is not None:
            print(f"world model check: expert imagined {check['expert']['imagined_mean']:.1f} (real "
                  f"{check['expert']['real_mean']:.1f}), random imagined {check['random']['imagined_mean']:.1f} "
                  f"(real {check['random']['real_mean']:.1f})")
            failure = gate_failure(check, settings.check_gate) if iteration == 0 else None
            if failure:
                print(f"stopped before the actor-critic: {failure} (--check-gate {settings.check_gate:g})")
                break
        seconds["world_model"] = time.monotonic()
        terminations = terminates(EpisodeDataset(run.data, "train"))  # the data change only at collection
        torch.manual_seed(phase_seed(settings, iteration, IMAGINATION_PHASE))
        imagination = imagine(settings, run.data, agent, model, iteration, terminations)
        seconds["imagination"] = time.monotonic()
        evaluations = [
            play(env, agent, tokenizer, episode_seed(settings, 10**9 + iteration * 100 + i), sample=False)
            for i in range(settings.eval_episodes)
        ]
        returns = [true_return(episode) for episode in evaluations]
        seconds["evaluation"] = time.monotonic()
        gif = run.dir / "videos" / f"iteration{iteration:03d}"
        step_psnr, reward_error = _imagined_beside_real(
            model, evaluations[0], gif, fps, settings.decoding, terminations
        )
        seconds["imagined_beside_real"] = time.monotonic()
        torch.manual_seed(phase_seed(settings, iteration, COLLECTION_PHASE))
        collected, learned = [], []
        for _ in range(settings.episodes_per_iteration):
            index = run.counters["episodes"]
            episode = play(env, agent, tokenizer, episode_seed(settings, index), sample=True)
            collected.append(run.record(episode, index))
            learned.append(float(episode["rewards"].sum()))
            _count_episode(run, episode)
        seconds["collection"] = time.monotonic()
        marks = list(seconds.items())
        row = {
            "iteration": iteration,
            "agent_steps": run.counters["agent_steps"],
            "physics_steps": run.counters["physics_steps"],
            "eval_return": float(np.mean(returns)),
            "collect_return": float(np.mean(collected)),
            **({"collect_viper_return": float(np.mean(learned))} if settings.viper_model is not None else {}),
            "imagined_psnr_first_15": float(np.mean(step_psnr[:15])),
            "imagined_reward_error_first_15": float(np.mean(reward_error[:15])),
            "world_model_bits_per_code": summary.get("bits_per_code"),
            "world_model_reward_mae": summary.get("reward_mae"),
            **{f"imagination_{key}": value for key, value in imagination.items()},
            **(check_shares(check) if check is not None else {}),
            **{f"seconds_{name}": round(t - marks[i][1], 1) for i, (name, t) in enumerate(marks[1:])},
        }
        for key, value in row.items():
            if isinstance(value, float):
                run.training.writer.add_scalar(key, value, row["physics_steps"])
        print(json.dumps(row))
        run.history.append(row)
        run.counters["step"] += 1
        run.training.tick()
        run.checkpoint(agent)
        imagination_curves(run.history, float(np.mean(run.random_returns)), run.dir / CURVES_FILE, settings.env)
    run.training.close()
    return run.progress


def _check_iteration(run: ImaginationRun, env: gym.Env, model: VideoModel, iteration: int) -> dict[str, Any]:
    """The world model check of this iteration's ``model``, played in the loop's own ``env``. Iteration 0's, the
    gate's, lives in the run directory (where `wm check-world-model --run` writes by default), each later one's in
    ``checks/iterationNNN``; a resumed run reads a saved check back rather than redoing it."""
    out = run.dir if iteration == 0 else run.dir / CHECKS_DIR / f"iteration{iteration:03d}"
    saved = out / CHECK_FILE
    if saved.is_file():
        return read_json(saved)
    check = _expert_and_random_imagined(run.settings, env, model, run.settings.check_episodes, run.dir, out)
    write_json_atomic(saved, check)
    return check


def check_shares(check: dict[str, Any]) -> dict[str, float]:
    """Each policy's imagined return as a share of its real one: the expert's should stay near 1 through the loop,
    and random play's too; a model whose two shares move away from 1 together imagines outcomes, not actions."""
    return {f"check_{name}_share": check[name]["imagined_mean"] / check[name]["real_mean"]
            for name in ("expert", "random") if check[name]["real_mean"] > 0}


def gate_failure(check: dict[str, Any], share: float) -> str | None:
    """Why a world model check fails the gate ``share`` (the expert's imagined return below that share of its real
    one), or None where it passes; an expert whose real return is not positive has no share to reach."""
    expert = check["expert"]
    if share <= 0 or expert["real_mean"] <= 0 or expert["imagined_mean"] >= share * expert["real_mean"]:
        return None
    return (f"the world model imagines the expert's actions to a return of {expert['imagined_mean']:.1f}, below "
            f"{share:g} of the real {expert['real_mean']:.1f}")


def saved_settings(run_dir: Path, what: str, *needed: Path) -> ImaginationSettings:
    """The settings of a train-imagination run directory that holds ``needed``; else an error saying it
    holds no ``what``."""
    for path in (run_dir / SETTINGS_FILE, *needed):
        if not path.exists():
            raise FileNotFoundError(f"{run_dir} holds no {what} trained by train-imagination ({path} is missing)")
    return ImaginationSettings.from_dict(read_json(run_dir / SETTINGS_FILE))


def evaluation_name(sample: bool) -> str:
    """The stem of :func:`evaluate_run`'s JSON and GIF: one per way of acting, so neither overwrites the other."""
    return "evaluation_sampled" if sample else "evaluation"


def evaluate_run(run_dir: str | Path, episodes: int = 10, sample: bool = False, device: str = AUTO) -> dict[str, Any]:
    """A run's saved agent over ``episodes`` fresh real episodes, beside random play on the same seeds:
    the same start states, so the two returns compare episode by episode. The agent acts by its policy's
    mode, or with ``sample`` by sampling it (seeded per episode, so a rerun replays the same episodes).

    Writes ``{run}/evaluation.json`` (``evaluation_sampled.json`` with ``sample``) and the agent's first
    episode to ``{run}/videos/evaluation.gif`` (``evaluation_sampled.gif``). Tokenizer and agent run on ``device``.
    """
    device = resolve_device(device)
    run_dir = Path(run_dir)
    if not isinstance(episodes, int) or episodes < 1:
        raise ValueError(f"episodes must be a positive int, got {episodes!r}")
    settings = saved_settings(run_dir, "agent", run_dir / PROGRESS_FILE, run_dir / CHECKPOINT_DIR / MODEL_FILE)
    env = make_real_env(settings)
    tokenizer = load_tokenizer(tokenizer_checkpoint(settings, run_dir), device).eval()
    agent = load_saved_agent(settings, env, run_dir, device)
    fps = DatasetManifest.load(run_dir / "data").fps
    seeds = [episode_seed(settings, EVALUATION_SEEDS + i) for i in range(episodes)]
    name = evaluation_name(sample)
    agent_returns, random_returns = [], []
    for i, seed in enumerate(tqdm(seeds, desc="evaluation", unit="episode")):
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            episode = play(env, agent, tokenizer, seed, sample=sample)
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


def check_world_model(
    run_dir: str | Path, episodes: int = 4, device: str = AUTO, agents: dict[str, Path] | None = None,
    out: str | Path | None = None,
) -> dict[str, Any]:
    """Whether a run's world model knows what actions do. Real episodes of the task's scripted expert and
    of random play, from the same start states, are each imagined open loop from their first frame alone,
    fed their own actions (rewards by the reward head, the continue head not heeded). An expert whose
    imagined return comes near its real one says the model has learnt how actions reach high reward; one
    no better than random play's, that an agent cannot learn that in its imagination either. Real returns are
    of the reward the run learns (VIPER's, for a run with ``viper_model``, its true returns beside them).

    ``agents`` names directories whose ``checkpoint`` holds an actor-critic of this run's shape (the run's own,
    a ``diagnose-imagination`` one's): each plays the same start states by its policy's mode, in the real env
    and closed loop in the world model (acting on what the model imagines). Agents that the real env tells
    apart and the model does not say that the model's returns hardly depend on the policy.

    Writes ``world_model_check.json`` and ``videos/world_model_check.gif`` (the first expert episode, real beside
    imagined) into ``out``, by default the run (whose loop then reports and gates on this check when resumed).
    The world model runs on ``device``.
    """
    device = resolve_device(device)
    run_dir = Path(run_dir)
    out = run_dir if out is None else Path(out)
    if not isinstance(episodes, int) or episodes < 1:
        raise ValueError(f"episodes must be a positive int, got {episodes!r}")
    model_dir = run_dir / WORLD_MODEL_DIR / "model"
    settings = saved_settings(run_dir, "world model", model_dir)
    env = make_learning_env(settings, device)
    try:
        model = VideoModel.load(model_dir, device)
        result = _expert_and_random_imagined(settings, env, model, episodes, run_dir, out)
        if agents:
            tokenizer = load_tokenizer(tokenizer_checkpoint(settings, run_dir), device).eval()
            result["agents"] = {label: _agent_real_and_imagined(settings, env, tokenizer, model, result["seeds"],
                                                                Path(directory), device)
                                for label, directory in agents.items()}
    finally:
        env.close()
    write_json_atomic(out / CHECK_FILE, result)
    return result


def _expert_and_random_imagined(
    settings: ImaginationSettings, env: gym.Env, model: VideoModel, episodes: int, run_dir: Path, out: Path
) -> dict[str, Any]:
    """The expert and random-play part of :func:`check_world_model`, played in ``env`` and imagined by ``model``
    (the imagination loop passes its own env and the world model it just loaded); saves the GIF into ``out`` and
    returns the check's record, unsaved."""
    expert = make_expert(task_name(settings.env), env)
    seeds = [episode_seed(settings, CHECK_SEEDS + i) for i in range(episodes)]
    played = [run_episode(env, expert, seed) for seed in seeds] + [_play_random(env, seed) for seed in seeds]
    imagined = _imagined_from_first_frames(model, played, settings.decoding, "frames")
    imagined.reset(seed=settings.seed)
    steps = [len(e["actions"]) - 1 for e in played]  # the last action is padding
    rewards, expert_frames = np.zeros((max(steps), len(played))), []
    for t in tqdm(range(max(steps)), desc="imagining", unit="step"):
        actions = np.stack([e["actions"][min(t, n - 1)] for e, n in zip(played, steps)])
        frames, rewards[t], _, _, _ = imagined.step(actions)
        expert_frames.append(frames[0])
    real = played[0]["video"][1 : steps[0] + 1]
    fps = DatasetManifest.load(run_dir / "data").fps
    _save_beside(real, expert_frames, out / "videos" / "world_model_check.gif", fps)
    result: dict[str, Any] = {"env": settings.env, "seeds": seeds}
    for name, part in (("expert", slice(0, episodes)), ("random", slice(episodes, None))):
        real_returns = [float(e["rewards"].sum()) for e in played[part]]
        imagined_returns = [float(rewards[:n, i].sum()) for i, n in list(enumerate(steps))[part]]
        result[name] = {
            "real_returns": real_returns, "imagined_returns": imagined_returns,
            "real_mean": float(np.mean(real_returns)), "imagined_mean": float(np.mean(imagined_returns)),
        }
        if settings.viper_model is not None:
            result[name]["true_returns"] = [true_return(e) for e in played[part]]
    return result


def _agent_real_and_imagined(
    settings: ImaginationSettings, env: gym.Env, tokenizer: Tokenizer, model: VideoModel, seeds: list[int],
    directory: Path, device: str,
) -> dict[str, Any]:
    """The saved agent in ``directory`` by its policy's mode from each seed's start state: in the real env, and
    closed loop in the world model from the real episode's first frame, for as many steps."""
    agent = load_saved_agent(settings, env, directory, device)
    played = [play(env, agent, tokenizer, seed, sample=False) for seed in seeds]
    imagined = _imagined_from_first_frames(model, played, settings.decoding, settings.agent_observes)
    stacks = FrameStacks(agent.config.frame_stack)
    observations = stacks.reset(imagined.reset(seed=settings.seed)[0])
    steps = [len(e["actions"]) - 1 for e in played]  # the last action is padding
    rewards = np.zeros((max(steps), len(played)))
    for t in range(max(steps)):
        frames, rewards[t], _, _, _ = imagined.step(agent.act(observations, sample=False))
        observations = stacks.push(frames, np.zeros(len(played), bool))
    real_returns = [float(e["rewards"].sum()) for e in played]
    imagined_returns = [float(rewards[:n, i].sum()) for i, n in enumerate(steps)]
    return {"real_returns": real_returns, "imagined_returns": imagined_returns,
            "real_mean": float(np.mean(real_returns)), "imagined_mean": float(np.mean(imagined_returns))}


def _imagined_from_first_frames(
    model: VideoModel, episodes: list[dict[str, Any]], decoding: str, observations: str
) -> WorldModelVectorEnv:
    """One imagined sub-env per real episode, started from its first frame alone (repeated over the model's
    window), rewarded by the reward head, the continue head not heeded."""
    window = max(1, model.window)
    first = {key: np.stack([np.repeat(e[key][:1], window, 0) for e in episodes]) for key in ("video", "actions")}
    return WorldModelVectorEnv(
        model, lambda n, rng: {**first, "lengths": np.ones(n, np.int64)}, len(episodes), reward="head",
        terminations=False, decoding=decoding, observations=observations,
    )

"""Training loop for the video transformer on the codes of a trained, frozen tokenizer.

The dataset is tokenised once into a token cache (``worldmodel.token_cache``), then
the transformer trains on clips of ``clip_length`` cached frames with their actions
and task ids. A :class:`~worldmodel.training_run.TrainingRun`: resumable (model, optimizer, RNG and
step in one atomic checkpoint, all randomness a function of (seed, step, rank)), logged to tensorboard, bounded by
steps and optionally by minutes. At the end ``{run}/model`` holds a
:class:`~worldmodel.video_model.VideoModel` bundle.

With ``reward_head`` / ``continue_head`` in the transformer config the same pass trains
the world-model heads on the episodes' rewards and terminations (their losses are added
to the code NLL), and the held-out evaluation reports their errors.

A second dataset can be mixed into every batch at a stated share (``mix_root``, ``mix_fraction``):
expert episodes beside an agent's own play, so that a world model also sees what it could not learn
from the play alone (a pole held upright). Its clips may lack actions (footage: they see the null
action, as action dropout does) or rewards (the reward head skips them, as it skips rewards of another kind
with ``mix_rewards=False``); it must share the primary
dataset's frame rate and tasks, and its action space where it has one. Held-out evaluation stays on
the primary dataset.

A causal video tokenizer (code steps of ``k`` frames) trains the transformer on code steps: clips of
``clip_length`` code steps, ``k`` actions as one (:mod:`worldmodel.code_rate`).

Likelihoods are reported as VideoGPT does: ``bits_per_code`` = NLL per code / ln 2,
and ``bits_per_dim`` = NLL of a whole frame / (ln 2 * H * W * 3), i.e. bits per
pixel channel of the original frame.

Runs on several processes under ``torchrun`` (gloo on CPU, nccl on GPU): every rank
draws its own clips, gradients are averaged across ranks, rank 0 logs, evaluates and
writes checkpoints. ``batch_size`` is per process.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from einops import rearrange
from torch import Tensor

from worldmodel.checkpoint import fingerprint, load_into_module, read_json
from worldmodel.code_rate import code_rate_action_space
from worldmodel.device import AUTO, resolve_device
from worldmodel.episodes import DatasetManifest, EpisodeDataset
from worldmodel.likelihood import expert_reward_stats
from worldmodel.rollout import sample_frames
from worldmodel.schedule import learning_rate
from worldmodel.training_run import MAX_MINUTES_HELP, RUN_CADENCE, TrainingRun
from worldmodel.token_cache import CODES_KEY, build_token_cache, default_cache_dir, tokenizer_fingerprint
from worldmodel.tokenizer import Tokenizer, load_tokenizer
from worldmodel.transformer import CHECKPOINT_KIND, VideoTransformer, VideoTransformerConfig
from worldmodel.video_model import BUNDLE_FILE, VideoModel, VideoModelInfo, check_parts_fit

MODEL_DIR = "model"
EVAL_FILE = "eval.json"


@dataclass
class VideoTraining:
    """Optimisation settings; the model's own shape lives in :class:`VideoTransformerConfig`."""

    steps: int = field(
        default=10000, metadata={"help": "optimisation steps in all (a resumed run continues up to this)"}
    )
    batch_size: int = field(default=16, metadata={"help": "clips per step, per process"})
    clip_length: int = field(
        default=16, metadata={"help": (
            "frames per training clip (code steps, on a video tokenizer); None takes the preset's (16 for dmc and "
            "dmc-paper, 144 for long, 64 for memory)"
        )},
    )
    frame_skip: int = field(
        default=1, metadata={"help": "take every n-th frame of the dataset (use its action at that frame)"}
    )
    curriculum_steps: int = field(
        default=0, metadata={"help": (
            "a curriculum on clip length: clips grow linearly from --curriculum-start frames to --clip-length over "
            "this many steps (0: whole clips from the start)"
        )},
    )
    curriculum_start: int = field(default=8, metadata={"help": "frames per clip at the curriculum's first step"})
    lr: float = field(default=3e-4, metadata={"help": "peak learning rate, reached after the warm-up"})
    warmup_steps: int = field(default=200, metadata={"help": "linear warm-up steps before cosine decay"})
    min_lr_fraction: float = field(default=0.1, metadata={"help": "final learning rate as a fraction of the peak"})
    grad_clip: float = field(default=1.0, metadata={"help": "clip the global gradient norm to this"})
    log_every: int = field(
        default=25, metadata={"help": "steps between tensorboard scalars (loss, bits/code, bits/dim)"}
    )
    eval_every: int = field(
        default=500, metadata={"help": "steps between held-out evaluations (log-likelihood, sampled continuations)"}
    )
    checkpoint_every: int = field(default=500, metadata={"help": "steps between atomic checkpoints"})
    eval_clips: int = field(default=32, metadata={"help": "held-out clips scored at each evaluation"})
    seed: int = field(default=0, metadata={"help": "seed of initialisation and clip sampling"})
    max_minutes: float | None = field(
        default=None, metadata={"help": MAX_MINUTES_HELP + "; the token cache's first build counts too"}
    )
    mix_fraction: float = field(
        default=0.0, metadata={"help": (
            "share of each batch drawn from the mix dataset (--mix-data), e.g. expert episodes beside an agent's "
            "play; rounded, at least one clip of each"
        )},
    )
    mix_rewards: bool = field(
        default=True, metadata={"help": (
            "whether the mix dataset's rewards train the reward head (--no-mix-rewards where they are another "
            "reward than the primary data's, e.g. the env's beside play rewarded by VIPER)"
        )},
    )

    def __post_init__(self) -> None:
        if not 0.0 <= self.mix_fraction < 1.0:
            raise ValueError(f"mix_fraction must be in [0, 1), got {self.mix_fraction}")
        if self.curriculum_steps < 0 or not 2 <= self.curriculum_start:
            raise ValueError(f"curriculum_steps must be >= 0 and curriculum_start >= 2, got {self.curriculum_steps} "
                             f"and {self.curriculum_start}")

    def clip_frames(self, step: int) -> int:
        """Frames per training clip at ``step``: ``clip_length``, or on the curriculum's way to it."""
        if step >= self.curriculum_steps or self.curriculum_start >= self.clip_length:
            return self.clip_length
        grown = self.curriculum_start + (self.clip_length - self.curriculum_start) * step / self.curriculum_steps
        return int(grown)


def bits_per_dim(nats_per_code: float, codes_per_frame: int, image_size: int, frames_per_code_step: int = 1) -> float:
    """Bits per pixel channel: a code step's NLL in bits over the ``H * W * 3`` values of each frame it stands for."""
    return nats_per_code * codes_per_frame / (math.log(2) * image_size * image_size * 3 * frames_per_code_step)


@dataclass
class _Distributed:
    """This process's place in a (possibly one-process) data-parallel run."""

    rank: int = 0
    world: int = 1
    owns_group: bool = False  # initialised here, so destroyed here

    @classmethod
    def start(cls, device: str) -> _Distributed:
        """Join the caller's process group, or start one from torchrun's environment."""
        if dist.is_available() and dist.is_initialized():
            return cls(dist.get_rank(), dist.get_world_size())
        if int(os.environ.get("WORLD_SIZE", "1")) > 1:
            dist.init_process_group("nccl" if device.startswith("cuda") else "gloo")
            return cls(dist.get_rank(), dist.get_world_size(), owns_group=True)
        return cls()

    def average_gradients(self, parameters: list[torch.nn.Parameter]) -> None:
        """All-reduce the mean gradient in one flat buffer (unused parameters count as zero)."""
        for p in parameters:
            if p.grad is None:
                p.grad = torch.zeros_like(p)
        grads = [p.grad for p in parameters]
        flat = torch.cat([g.reshape(-1) for g in grads])
        dist.all_reduce(flat)
        flat /= self.world
        for grad, part in zip(grads, flat.split([g.numel() for g in grads])):
            grad.copy_(part.view_as(grad))

    def from_rank0(self, value: float, device: str) -> float:
        """Rank 0's value everywhere, so that wall-clock decisions agree across ranks."""
        if self.world == 1:
            return value
        tensor = torch.tensor([value], dtype=torch.float64, device=device)
        dist.broadcast(tensor, src=0)
        return float(tensor.item())

    def barrier(self) -> None:
        if self.world > 1:
            dist.barrier()


def fit_to_data(
    config: VideoTransformerConfig,
    tokenizer: Tokenizer,
    manifest: DatasetManifest | None,
    actions: bool | None = None,
    factorized: bool = False,
) -> VideoTransformerConfig:
    """``config`` with the tokenizer's vocabulary and code grid, and the dataset's actions and tasks.

    ``factorized``: predict a code as one digit per level of the tokenizer's (FSQ) codes, each from its own
    softmax (``VideoTransformerConfig.code_levels``).

    Actions come from the manifest's action space. ``actions=None`` takes them where the data has
    them and trains action-free on action-free data (``action_space`` None: footage); ``True``
    insists on them (an error on action-free data); ``False`` trains action-free, as VIPER does.
    A dataset of several tasks makes the model task-conditional. With a tokenizer whose code steps stand
    for ``k`` frames, the model's actions are groups of ``k`` (:mod:`worldmodel.code_rate`).
    """
    if manifest is None and actions is not False:
        raise ValueError("the dataset has no manifest.json, so its action space is unknown; train without actions")
    space = manifest.action_space if manifest is not None else None
    if actions and space is None:
        raise ValueError(
            "the dataset is action-free (its manifest's action_space is null: footage without actions), so a model "
            "cannot be trained on its actions; train without actions"
        )
    use = actions is not False and space is not None
    if config.action_dropout > 0 and not use:
        reason = "the dataset is action-free" if space is None else "it trains without actions"
        raise ValueError(f"action_dropout {config.action_dropout} drops the model's actions, but {reason}")
    if factorized and not tokenizer.code_levels:
        raise ValueError(f"a factorized head needs codes made of levels (FSQ's), not the {tokenizer.kind}'s")
    space = code_rate_action_space(space, tokenizer.frames_per_code_step)
    num_actions = int(space["n"]) if use and space["type"] == "discrete" else 0
    action_dim = int(np.prod(space["shape"])) if use and space["type"] == "box" else 0
    tasks = manifest.tasks if manifest is not None else []
    return replace(
        config,
        vocab_size=tokenizer.vocab_size,
        code_levels=tokenizer.code_levels if factorized else (),
        factorized_groups=1 if factorized else config.factorized_groups,
        code_shape=tokenizer.code_shape,
        num_actions=num_actions,
        action_dim=action_dim,
        num_tasks=len(tasks) if len(tasks) > 1 else 0,
    )


def _model_info(manifest: DatasetManifest | None, config: VideoTransformerConfig, frame_skip: int) -> VideoModelInfo:
    """The bundle's metadata, checked before training so a mismatch costs no compute."""
    tasks = list(manifest.tasks) if manifest is not None else []
    if config.num_tasks and not tasks:
        tasks = [f"task{i}" for i in range(config.num_tasks)]
    if config.num_tasks and len(tasks) != config.num_tasks:
        raise ValueError(
            f"the transformer config has num_tasks={config.num_tasks}, but the dataset names tasks {tasks}"
        )
    data_skip = manifest.frame_skip if manifest is not None else 1
    action_space = manifest.action_space if manifest is not None and config.action_kind else None
    return VideoModelInfo(frame_skip=data_skip * frame_skip, action_space=action_space, tasks=tasks)


def check_mixable(primary: DatasetManifest | None, mix: DatasetManifest | None, mix_root: Path) -> None:
    """Raise ValueError naming what keeps the mix dataset's clips out of the primary dataset's batches."""
    if primary is None or mix is None:
        raise ValueError(f"mixing datasets needs both manifests (frame rate, tasks, actions); {mix_root} or the "
                         "primary dataset has none")
    if mix.frame_skip != primary.frame_skip:
        raise ValueError(f"the mix dataset {mix_root} has {mix.frame_skip} env steps per frame, the primary "
                         f"dataset {primary.frame_skip}")
    if list(mix.tasks) != list(primary.tasks):
        raise ValueError(f"the mix dataset {mix_root} has tasks {mix.tasks}, the primary dataset {primary.tasks}")
    if mix.action_space is not None and mix.action_space != primary.action_space:
        raise ValueError(f"the mix dataset {mix_root} has actions {mix.action_space}, the primary dataset "
                         f"{primary.action_space}")


def _first_frames(clips: dict[str, np.ndarray], frames: int) -> dict[str, np.ndarray]:
    """Clips cut to their first ``frames`` frames (per-clip arrays, such as task ids, as they are)."""
    return {key: value[:, :frames] if value.ndim > 1 else value for key, value in clips.items()}


def mixed_batch(
    primary: dict[str, np.ndarray], mix: dict[str, np.ndarray], mix_rewards: bool = True
) -> tuple[dict[str, np.ndarray], np.ndarray, np.ndarray]:
    """Two sources' clips as one batch, primary first, and which clips recorded their actions and rewards.

    A mix clip without actions (action-free footage) takes zeros in the primary's action layout, and one
    without rewards zero rewards; the masks keep both out of what the model learns, as they keep the mix
    clips' rewards out without ``mix_rewards``.
    """
    n, m = len(primary[CODES_KEY]), len(mix[CODES_KEY])
    actions_known = np.ones(n + m, bool)
    rewards_known = np.ones(n + m, bool)
    rewards_known[n:] = mix_rewards
    batch = {}
    for key, values in primary.items():
        other = mix.get(key)
        if key == "actions" and (other is None or other.shape[2:] != values.shape[2:]):
            other, actions_known[n:] = np.zeros((m, *values.shape[1:]), values.dtype), False
        elif key == "rewards" and other is None:
            other, rewards_known[n:] = np.zeros((m, *values.shape[1:]), values.dtype), False
        elif other is None:
            raise ValueError(f"the mix dataset's clips have no {key!r}")
        batch[key] = np.concatenate([values, other.astype(values.dtype)])
    return batch, actions_known, rewards_known


def _to_model_inputs(
    clips: dict[str, np.ndarray], config: VideoTransformerConfig, device: str
) -> tuple[Tensor, Tensor | None, Tensor | None]:
    """Stacked cached clips -> ``(codes, actions, task)``, dropping inputs the model does not take."""
    codes = torch.from_numpy(clips[CODES_KEY].astype(np.int64)).to(device)
    actions = torch.from_numpy(np.asarray(clips["actions"])).to(device) if config.action_kind else None
    task = torch.from_numpy(clips["task_id"]).to(device) if config.num_tasks else None
    return codes, actions, task


def _head_targets(
    clips: dict[str, np.ndarray], config: VideoTransformerConfig, device: str
) -> tuple[Tensor | None, Tensor | None]:
    """The clips' ``(rewards, terminals)`` for the heads the model has (None for a missing head)."""
    rewards = terminals = None
    if config.reward_head:
        if "rewards" not in clips:
            raise ValueError("the transformer has a reward head, but the dataset's episodes record no rewards")
        rewards = torch.from_numpy(clips["rewards"]).to(device)
    if config.continue_head:
        terminals = torch.from_numpy(clips["terminals"]).to(device)
    return rewards, terminals


def evaluation_clips(cache_dir: Path, training: VideoTraining) -> dict[str, np.ndarray]:
    """A fixed sample of held-out clips (the ``test`` split) of cached codes."""
    dataset = EpisodeDataset(cache_dir, "test", training.clip_length, training.frame_skip, frames_key=CODES_KEY)
    rng = np.random.default_rng(training.seed)
    indices = np.sort(rng.choice(len(dataset), size=min(training.eval_clips, len(dataset)), replace=False))
    items = [dataset[int(i)] for i in indices]
    return {key: np.stack([item[key] for item in items]) for key in items[0]}


@torch.no_grad()
def evaluate_transformer(
    transformer: VideoTransformer, clips: dict[str, np.ndarray], image_size: int, batch_size: int = 16,
    frames_per_code_step: int = 1,
) -> dict[str, float]:
    """Held-out log-likelihood of clips: per frame (nats), of the last frame, in bits per code and per dim."""
    config = transformer.config
    codes, actions, task = _to_model_inputs(clips, config, str(transformer.device))
    log_probs = torch.cat([
        transformer.log_prob(
            codes[i : i + batch_size],
            None if actions is None else actions[i : i + batch_size],
            None if task is None else task[i : i + batch_size],
        )
        for i in range(0, len(codes), batch_size)
    ])
    nats_per_code = -log_probs.mean().item() / config.codes_per_frame
    metrics = {
        "log_prob_per_frame": log_probs.mean().item(),
        "log_prob_last_frame": log_probs[:, -1].mean().item(),
        "bits_per_code": nats_per_code / math.log(2),
        "bits_per_dim": bits_per_dim(nats_per_code, config.codes_per_frame, image_size, frames_per_code_step),
    }
    if config.reward_head or config.continue_head:
        metrics.update(evaluate_heads(transformer, clips, batch_size))
    return metrics


@torch.no_grad()
def evaluate_heads(transformer: VideoTransformer, clips: dict[str, np.ndarray], batch_size: int = 16) -> dict[str, float]:
    """Held-out errors of the world-model heads on frames 1 .. T-1 of the clips, given the true frames.

    ``reward_mae``: mean absolute error of the predicted rewards; ``continue_accuracy``: share of
    frames whose predicted continue probability falls on the right side of one half.
    """
    config, device = transformer.config, str(transformer.device)
    codes, actions, task = _to_model_inputs(clips, config, device)
    rewards, terminals = _head_targets(clips, config, device)
    predicted_rewards, keeps = [], []
    for i in range(0, len(codes), batch_size):
        features = transformer.token_features(
            codes[i : i + batch_size],
            None if actions is None else actions[i : i + batch_size],
            None if task is None else task[i : i + batch_size],
        )[:, 1:, -1]
        reward, keep = transformer.predict_outcome(features)
        predicted_rewards.append(reward)
        keeps.append(keep)
    metrics = {}
    if rewards is not None:
        metrics["reward_mae"] = (torch.cat(predicted_rewards) - rewards[:, :-1]).abs().mean().item()
    if terminals is not None:
        right = (torch.cat(keeps) >= 0.5) == ~terminals[:, 1:]
        metrics["continue_accuracy"] = right.float().mean().item()
    return metrics


@torch.no_grad()
def sample_grid(
    transformer: VideoTransformer, tokenizer: Tokenizer, clips: dict[str, np.ndarray], seed: int, count: int = 4
) -> Tensor:
    """Real clips above continuations sampled from their first half: ``(count, 3, 2H, T*W)`` in [0, 1]."""
    clips = {key: value[:count] for key, value in clips.items()}
    codes, actions, task = _to_model_inputs(clips, transformer.config, str(transformer.device))
    context = max(1, codes.shape[1] // 2)
    generator = torch.Generator(transformer.device).manual_seed(seed)
    sampled = sample_frames(
        transformer, codes[:, :context], actions, task, codes.shape[1] - context, generator=generator
    )
    real = tokenizer.decode(codes)
    fake = tokenizer.decode(torch.cat([codes[:, :context], sampled], dim=1))
    grid = rearrange(torch.cat([real, fake], dim=2), "n t h w c -> n c h (t w)")
    return grid.float().cpu() / 255.0


def train_video(
    data_root: str | Path,
    tokenizer_checkpoint: str | Path,
    run_dir: str | Path,
    transformer_config: VideoTransformerConfig,
    training: VideoTraining,
    resume: bool = False,
    device: str = AUTO,
    cache_dir: str | Path | None = None,
    reward_stats: bool = True,
    mix_root: str | Path | None = None,
    init_from: str | Path | None = None,
) -> dict[str, Any]:
    """Train a video transformer on ``{data_root}/train`` clips, evaluating on ``test``; returns the final summary.

    ``mix_root``: a dataset whose train clips make up ``training.mix_fraction`` of each batch (see above),
    tokenised into its own cache under it. ``init_from``: a video model bundle of the same tokenizer and
    architecture whose transformer weights a fresh run starts from (:meth:`VideoTransformer.initialise_from`;
    e.g. a trained world model learning masked decoding); a resumed run ignores it.

    ``cache_dir`` defaults to ``{data_root}/token_cache/<tokenizer fingerprint>``. ``reward_stats``
    measures the VIPER reward statistics of the training data into the bundle (a pass over all of it;
    a world model that is not a VIPER reward can skip it; a video tokenizer's model skips it, as VIPER
    scores frame by frame). Under torchrun each process calls this; with ``device="cuda"`` each uses its local
    GPU. Every rank returns its step and ``weights_sha256``; rank 0 adds the cache counts and the final eval.
    """
    device = resolve_device(device)
    group = _Distributed.start(device)
    if device == "cuda" and group.world > 1:
        device = f"cuda:{os.environ.get('LOCAL_RANK', group.rank)}"
        torch.cuda.set_device(device)
    run = TrainingRun(run_dir, resume=resume, settings=training, may_change=RUN_CADENCE,
                      max_minutes=training.max_minutes, main_process=group.rank == 0)

    tokenizer = load_tokenizer(tokenizer_checkpoint, device).eval()
    torch.manual_seed(training.seed)
    transformer = VideoTransformer(transformer_config).to(device)
    check_parts_fit(tokenizer, transformer)
    if tokenizer.frames_per_code_step > 1 and training.frame_skip != 1:
        raise ValueError(f"the tokenizer's code steps stand for {tokenizer.frames_per_code_step} frames each, which "
                         f"sets the rate the transformer sees; train it with frame_skip 1, not {training.frame_skip}")
    manifest = DatasetManifest.load(data_root)
    info = _model_info(manifest, transformer_config, training.frame_skip)
    if (mix_root is None) != (training.mix_fraction == 0):
        raise ValueError(f"a mix dataset and a mix_fraction > 0 go together (got {mix_root}, {training.mix_fraction})")
    if mix_root is not None:
        if training.batch_size < 2:
            raise ValueError("mixing two datasets needs batches of at least 2 clips, one of each")
        check_mixable(manifest, DatasetManifest.load(mix_root), Path(mix_root))
    tokenizer_id = tokenizer_fingerprint(tokenizer)
    cache_dir = Path(cache_dir) if cache_dir is not None else default_cache_dir(data_root, tokenizer_id)
    mix_cache = None if mix_root is None else default_cache_dir(mix_root, tokenizer_id)
    cache_counts = build_token_cache(data_root, tokenizer, cache_dir) if group.rank == 0 else {}
    if mix_cache is not None and group.rank == 0:
        cache_counts = {**cache_counts, "mix": build_token_cache(mix_root, tokenizer, mix_cache)}
    group.barrier()

    optimizer = torch.optim.AdamW(transformer.parameters(), lr=training.lr, betas=(0.9, 0.95), weight_decay=0.0)
    checkpoint_config = {
        "kind": CHECKPOINT_KIND, "config": transformer_config.to_dict(), "tokenizer_fingerprint": tokenizer_id
    }
    expected = {
        "config": ("transformer config", transformer_config.to_dict()),
        "tokenizer_fingerprint": ("the codes of tokenizer", tokenizer_id),
    }
    # a run resumes across a release that added a transformer option, at that option's default
    restored = run.restore(expected, {"adamw": optimizer},
                           complete={"config": lambda saved: VideoTransformerConfig.from_dict(saved).to_dict()})
    if restored is not None and run.counters["step"] >= training.steps and (
        (run.dir / EVAL_FILE).exists() and (run.dir / MODEL_DIR / BUNDLE_FILE).exists()
    ):  # finished before: a chain of commands run again goes on at once, not through the final evaluation again
        run.close()
        group.barrier()
        if group.owns_group:
            dist.destroy_process_group()
        return read_json(run.dir / EVAL_FILE)
    if restored is not None:
        load_into_module(transformer, restored.weights, run.checkpoint_dir)
    elif init_from is not None:
        trained = VideoModel.load(init_from, device)
        if tokenizer_fingerprint(trained.tokenizer) != tokenizer_id:
            raise ValueError(f"{init_from} was trained on the codes of another tokenizer than {tokenizer_checkpoint}")
        transformer.initialise_from(trained.transformer)

    train_data = EpisodeDataset(cache_dir, "train", training.clip_length, training.frame_skip, frames_key=CODES_KEY)
    mix_data = None if mix_cache is None else EpisodeDataset(
        mix_cache, "train", training.clip_length, training.frame_skip, frames_key=CODES_KEY
    )
    # at least one clip of each source in every batch, whatever the rounding
    mixed = 0 if mix_data is None else min(
        training.batch_size - 1, max(1, round(training.batch_size * training.mix_fraction))
    )
    held_out = evaluation_clips(cache_dir, training)
    image_size, frames_per_step = tokenizer.image_size, tokenizer.frames_per_code_step
    codes_per_frame = transformer_config.codes_per_frame
    writer = run.writer
    parameters = list(transformer.parameters())

    def save() -> None:
        run.save(transformer.state_dict(), checkpoint_config, optimizers={"adamw": optimizer})

    def evaluate() -> dict[str, float]:
        transformer.eval()
        metrics = evaluate_transformer(transformer, held_out, image_size, frames_per_code_step=frames_per_step)
        for name, value in metrics.items():
            writer.add_scalar(f"eval/{name}", value, run.counters["step"])
        grid = sample_grid(transformer, tokenizer, held_out, training.seed)
        writer.add_images("eval/real_top_sampled_bottom", grid, run.counters["step"])
        transformer.train()
        return metrics

    transformer.train()
    progress = run.progress_bar(training.steps, desc="video transformer")
    while run.counters["step"] < training.steps and not run.out_of_time:
        step = run.counters["step"]
        # Randomness is a function of (seed, step, rank): resumed runs repeat uninterrupted ones,
        # and every rank draws different clips.
        seeds = [training.seed, step, group.rank]
        rng = np.random.default_rng(seeds)
        torch.manual_seed(int(np.random.SeedSequence(seeds).generate_state(1)[0]))
        for param_group in optimizer.param_groups:
            param_group["lr"] = learning_rate(step, training)
        known = {}
        length = training.clip_frames(step)
        clips = _first_frames(train_data.sample(training.batch_size - mixed, rng), length)
        if mixed:
            mix_clips = _first_frames(mix_data.sample(mixed, rng), length)
            clips, actions_known, rewards_known = mixed_batch(clips, mix_clips, training.mix_rewards)
            known = {"actions_known": torch.from_numpy(actions_known), "rewards_known": torch.from_numpy(rewards_known)}
        codes, actions, task = _to_model_inputs(clips, transformer_config, device)
        losses = transformer.losses(codes, actions, task, *_head_targets(clips, transformer_config, device), **known)
        loss = losses.codes + sum(term for term in losses[1:] if term is not None)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if group.world > 1:
            group.average_gradients(parameters)
        grad_norm = torch.nn.utils.clip_grad_norm_(parameters, training.grad_clip)
        optimizer.step()
        step = run.counters["step"] = step + 1
        run.tick()
        run.counters["elapsed_s"] = group.from_rank0(run.counters["elapsed_s"], device)  # one decision for all ranks
        out_of_time = run.out_of_time
        progress.advance(run.counters["elapsed_s"])
        if writer is not None and step % training.log_every == 0:
            nats = losses.codes.item()
            for name, term in zip(("reward_loss", "continue_loss", "masked_loss"), losses[1:]):
                if term is not None:
                    writer.add_scalar(f"train/{name}", term.item(), step)
            writer.add_scalar("train/loss", nats, step)
            writer.add_scalar("train/bits_per_code", nats / math.log(2), step)
            bpd = bits_per_dim(nats, codes_per_frame, image_size, frames_per_step)
            writer.add_scalar("train/bits_per_dim", bpd, step)
            writer.add_scalar("train/grad_norm", grad_norm.item(), step)
            writer.add_scalar("train/lr", optimizer.param_groups[0]["lr"], step)
            progress.set_postfix(loss=f"{nats:.4f}", bpd=f"{bpd:.4f}")
        if writer is not None and step % training.eval_every == 0 and step < training.steps and not out_of_time:
            metrics = evaluate()
            progress.write(f"step {step}: " + ", ".join(f"{k} {v:.4f}" for k, v in metrics.items()))
        if group.rank == 0 and step % training.checkpoint_every == 0:
            save()
    progress.close()

    summary: dict[str, Any] = {
        **run.counters,
        "cache": cache_counts,
        "weights_sha256": fingerprint(transformer.state_dict()),
    }
    if writer is not None:
        summary.update(eval_clips=len(held_out[CODES_KEY]), **evaluate())
        save()
        run.write_json(EVAL_FILE, summary)
        # standardisation statistics for VIPER rewards (which score frame by frame), kept per named task
        if reward_stats and info.tasks and frames_per_step == 1:
            info.reward_stats = expert_reward_stats(transformer, cache_dir, training.frame_skip)
        VideoModel(tokenizer, transformer, info).save(run.dir / MODEL_DIR)
        run.close()
    group.barrier()
    if group.owns_group:
        dist.destroy_process_group()
    return summary

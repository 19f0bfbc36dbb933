"""The VIPER reward recipe: one DMC task's expert to a checked likelihood-ratio reward, every stage resumable.

The same recipe serves every task, so that what a user runs on a task nobody tried is what
the grid ran on seven:

1. record the expert (the task's scripted expert, or a trained agent, ``agent:RUN``, as VIPER
   got its expert videos) and random play;
2. train the tokenizer on the expert's frames;
3. train the expert video model and a baseline video model of random play;
4. score held-out episodes of graded quality (the expert, the expert with growing action
   noise, random play) and probes of what an optimiser finds cheaply (holding still, pushing
   one way) with the likelihood ratio, and rank them against their true returns.

The results sit where ``wm train-agent --model {out}/video/model --baseline-model
{out}/video-random/model`` and ``wm benchmark-dmc --reward-dir TASK={out}`` find them, with
``{out}/report.md`` and ``{out}/reward_recipe.json``. Budgets are step counts (the learning rates
anneal over them); optional minutes stop slow machines early without bending the schedules.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from envs.collect import PLAY_POLICIES, PolicySpec, collect
from experiments.agent_policy import run_policy_factory
from experiments.eval_reward import evaluate_reward
from experiments.presets import tokenizer_preset, video_preset
from experiments.reports import format_number, format_share, returns_table, tokenizer_report
from worldmodel.checkpoint import write_json_atomic
from worldmodel.device import AUTO, resolve_device
from worldmodel.episodes import DatasetManifest
from worldmodel.tokenizer import load_tokenizer
from worldmodel.train_tokenizer import TokenizerTraining, train_tokenizer
from worldmodel.train_video import VideoTraining, fit_to_data, train_video

DATA_DIR, RANDOM_DATA_DIR, GRADED_DIR = "data", "data-random", "data-graded"
TOKENIZER_DIR, VIDEO_DIR, BASELINE_DIR, REWARD_DIR = "tokenizer", "video", "video-random", "reward"
SUMMARY_FILE = "reward_recipe.json"
EXPERT_SEED, RANDOM_SEED, GRADED_SEED = 0, 500, 1000  # disjoint reset seeds: no graded episode is in training
PLAY_SUFFIX = "@play"  # the task name random play is filed under in a one-model recipe
STAGES = 4


@dataclass(frozen=True)
class RewardRecipe:
    """The data and training budgets of one task's reward."""

    expert: str = field(default="expert", metadata={"help": (
        "whose videos the reward imitates: expert (the task's scripted expert), spread:FRACTION (on reacher and "
        "point_mass, the scripted expert coming to rest anywhere within that fraction of the target's radius) or "
        "agent:RUN (the agent of a `wm train-agent --reward env` run on the task)"
    )})
    episodes: int = field(default=40, metadata={"help": "expert episodes to record"})
    random_episodes: int = field(default=40, metadata={"help": "random-play episodes for the baseline model"})
    episode_steps: int | None = field(default=None, metadata={"help": (
        "env steps per expert or random-play episode (default: the task's full length)"
    )})
    graded_noise: tuple[float, ...] = (0.3, 1.0)  # action-noise stds of the graded expert episodes
    # Play that an optimiser finds cheaply, scored beside the graded episodes: a reward that pays holding still
    # or pushing one way as much as the noisy expert invites an agent to do just that.
    probes: tuple[str, ...] = ("still", "held:25")
    graded_episodes: int = field(default=5, metadata={"help": "held-out episodes per graded policy"})
    tokenizer_steps: int = field(default=450, metadata={"help": "tokenizer optimisation steps"})
    video_steps: int = field(default=500, metadata={"help": "expert video model optimisation steps"})
    baseline_steps: int = field(default=300, metadata={"help": "random-play video model optimisation steps"})
    tokenizer_minutes: float | None = field(default=None, metadata={"help": "stop the tokenizer early (CPU)"})
    video_minutes: float | None = field(default=None, metadata={"help": "stop the expert model early (CPU)"})
    baseline_minutes: float | None = field(default=None, metadata={"help": "stop the baseline model early (CPU)"})
    max_steps: int | None = field(default=None, metadata={"help": "cut every episode short (for a quick look)"})
    one_model: bool = field(default=False, metadata={"help": (
        "one video model of both sources instead of two: random play is filed as task TASK@play beside the "
        "expert's episodes, one model trains video_steps + baseline_steps on both, and the ratio reward is "
        "log p(x | TASK) - log p(x | TASK@play) from it"
    )})

    def __post_init__(self) -> None:
        if self.expert_policy.kind not in ("expert", "spread", "agent"):
            raise ValueError(f"expert must be 'expert', 'spread:FRACTION' or 'agent:RUN', got {self.expert!r}")
        counts = {name: getattr(self, name) for name in (
            "episodes", "random_episodes", "graded_episodes", "tokenizer_steps", "video_steps", "baseline_steps")}
        small = {name: value for name, value in counts.items() if value < 1}
        if small:
            raise ValueError(f"these must be >= 1: {small}")
        if any(std <= 0 for std in self.graded_noise):
            raise ValueError(f"graded_noise stds must be > 0, got {self.graded_noise}")
        not_play = [probe for probe in self.probes if PolicySpec.parse(probe).kind not in PLAY_POLICIES]
        if not_play:
            raise ValueError(f"probes must be play policies ({', '.join(PLAY_POLICIES)}), got {not_play}")

    @property
    def expert_policy(self) -> PolicySpec:
        return PolicySpec.parse(self.expert)

    def graded_policies(self) -> list[PolicySpec]:
        """The expert, the expert under each action-noise std and random play (best first), then the probes."""
        expert = self.expert_policy
        noisy_kind = "noisy-agent" if expert.kind == "agent" else "noisy"
        return [expert, *(PolicySpec(noisy_kind, std, expert.source) for std in self.graded_noise),
                PolicySpec("random"), *map(PolicySpec.parse, self.probes)]


# Reacher's target moves every episode, so its video models must see many target positions to
# score unseen ones: 400 episodes of 50 env steps (the expert reaches in about 8 and then holds
# still). Held-out goals ranked at Spearman 0.948 after 400 x 50 expert episodes, 0.780 after
# 100 x 100. Its expert loses little to noise 0.3 or 1.0 (true return 990 / 983 / 965), so its
# grades reach further.
TASK_RECIPES: dict[str, dict[str, Any]] = {
    "reacher-easy": {"episodes": 400, "random_episodes": 400, "episode_steps": 50, "graded_noise": (1.0, 3.0, 10.0)},
}


def default_recipe(task: str, **given: Any) -> RewardRecipe:
    """The recipe for ``task``: the common budgets, the task's data recipe, then what is ``given``."""
    return replace(RewardRecipe(**TASK_RECIPES.get(task, {})), **given)


def _shortest(*limits: int | None) -> int | None:
    given = [limit for limit in limits if limit is not None]
    return min(given) if given else None


def _train_video_model(data: Path, tokenizer_checkpoint: Path, run: Path, steps: int, minutes: float | None,
                       device: str) -> dict[str, Any]:
    preset = video_preset("dmc")
    config = fit_to_data(
        replace(preset.transformer, action_dropout=0.5), load_tokenizer(tokenizer_checkpoint, device),
        DatasetManifest.load(data), True,
    )
    training = VideoTraining(
        steps=steps, clip_length=preset.clip_length, warmup_steps=50, max_minutes=minutes, eval_every=10**9,
        checkpoint_every=50,
    )
    return train_video(data, tokenizer_checkpoint, run, config, training, resume=True, device=device)


def build_reward(
    task: str, out: str | Path, recipe: RewardRecipe | None = None, workers: int = 2, device: str = AUTO,
    announce: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Run the recipe for the DMC ``task`` into ``out`` (every model on ``device``), resuming what is there.

    Writes ``{out}/report.md`` and ``{out}/reward_recipe.json`` and returns that summary (at once, where a
    finished run of the same recipe left them): the expert
    episodes' true returns, the tokenizer's held-out quality, both video models' training summaries and the
    reward's ranking of the graded episodes. ``announce`` hears one line per stage (default: printed, numbered).
    """
    if announce is None:
        numbers = iter(range(1, STAGES + 1))

        def announce(text: str) -> None:
            print(f"[{next(numbers)}/{STAGES}] {text}", flush=True)

    device = resolve_device(device)
    recipe = recipe or default_recipe(task)
    out = Path(out)
    finished = load_summary(out)
    # A recipe saved before a field existed took that field's default.
    same_recipe = finished is not None and json.loads(json.dumps({**asdict(RewardRecipe()), **finished["recipe"]})) \
        == json.loads(json.dumps(asdict(recipe)))
    if same_recipe and finished["task"] == task:
        announce(f"{out} already holds this recipe's reward for {task}; its report is {out / 'report.md'}")
        return finished
    env = f"dmc:{task}"
    started = time.monotonic()
    data, graded = out / DATA_DIR, out / GRADED_DIR
    # One model's play joins the expert's dataset as a task of its own, after the tokenizer has trained on the
    # expert's frames alone (as the two-model recipe's tokenizer does).
    random_data, play_task = (data, f"{task}{PLAY_SUFFIX}") if recipe.one_model else (out / RANDOM_DATA_DIR, None)
    steps = _shortest(recipe.episode_steps, recipe.max_steps)

    def collect_play() -> None:
        collect(env, [PolicySpec("random")], recipe.random_episodes, random_data, seed=RANDOM_SEED,
                test_fraction=0.15, workers=workers, max_steps=steps, task_label=play_task)

    announce(f"recording {recipe.episodes} episodes of {recipe.expert} on {task} into {data}, "
             f"{recipe.random_episodes} of random play into {random_data}"
             + (f" as task {play_task}" if play_task else ""))
    collect(env, [recipe.expert_policy], recipe.episodes, data, seed=EXPERT_SEED, test_fraction=0.15,
            workers=workers, max_steps=steps, policy_factory=run_policy_factory)
    if not recipe.one_model:
        collect_play()

    announce(f"training the tokenizer ({recipe.tokenizer_steps} steps) into {out / TOKENIZER_DIR}")
    tokenizer_training = TokenizerTraining(
        steps=recipe.tokenizer_steps, max_minutes=recipe.tokenizer_minutes, eval_every=250, checkpoint_every=100,
    )
    train_tokenizer(data, out / TOKENIZER_DIR, tokenizer_preset("dmc"), tokenizer_training, resume=True, device=device)
    tokenizer_checkpoint = out / TOKENIZER_DIR / "checkpoint"
    if recipe.one_model:
        collect_play()  # before the tokenizer's report, which then always covers both sources' held-out frames
    tokenizer = tokenizer_report(tokenizer_checkpoint, data, out=out / TOKENIZER_DIR, device=device)

    if recipe.one_model:
        announce(f"training one video model of both sources ({recipe.video_steps + recipe.baseline_steps} steps) "
                 f"into {out / VIDEO_DIR}")
        minutes = None if recipe.video_minutes is None and recipe.baseline_minutes is None else (
            (recipe.video_minutes or 0.0) + (recipe.baseline_minutes or 0.0))
        video = _train_video_model(data, tokenizer_checkpoint, out / VIDEO_DIR,
                                   recipe.video_steps + recipe.baseline_steps, minutes, device)
        baseline, baseline_dir = video, out / VIDEO_DIR / "model"
    else:
        announce(f"training the expert video model ({recipe.video_steps} steps) into {out / VIDEO_DIR} and the "
                 f"random-play baseline ({recipe.baseline_steps} steps) into {out / BASELINE_DIR}")
        video = _train_video_model(data, tokenizer_checkpoint, out / VIDEO_DIR, recipe.video_steps,
                                   recipe.video_minutes, device)
        baseline = _train_video_model(random_data, tokenizer_checkpoint, out / BASELINE_DIR, recipe.baseline_steps,
                                      recipe.baseline_minutes, device)
        baseline_dir = out / BASELINE_DIR / "model"

    policies = recipe.graded_policies()
    announce(f"scoring held-out episodes of graded quality ({', '.join(p.label for p in policies)}) with the "
             "likelihood-ratio reward")
    collect(env, policies, recipe.graded_episodes, graded, seed=GRADED_SEED, test_fraction=0.99, workers=workers,
            max_steps=recipe.max_steps, policy_factory=run_policy_factory)
    reward = evaluate_reward(out / VIDEO_DIR / "model", [graded], out / REWARD_DIR, baseline_dir=baseline_dir,
                             device=device, baseline_task=play_task)

    warnings = probe_warnings(recipe, reward["by_policy"])
    for warning in warnings:
        print(f"hack risk: {warning}", flush=True)
    summary = {
        "task": task, "recipe": asdict(recipe), "minutes": (time.monotonic() - started) / 60,
        "expert_episodes": {name: info for name, info in DatasetManifest.load(data).episodes.items()
                            if info["task"] == task},
        "tokenizer": tokenizer, "video": video, "baseline": baseline, "baseline_model": str(baseline_dir),
        "baseline_task": play_task, "reward": reward, "probe_warnings": warnings,
    }
    write_json_atomic(out / SUMMARY_FILE, summary)
    (out / "report.md").write_text(
        f"# The VIPER reward for {task}\n\nWall time of this invocation: {format_number(summary['minutes'])} min.\n\n"
        + reward_sections(summary)
    )
    return summary


def reward_sections(summary: dict[str, Any]) -> str:
    """The report's sections on the reward (expert returns, tokenizer, video models, ranking), from a summary
    as :func:`build_reward` returns it; figures are linked relative to its ``out``."""
    tokenizer, video, baseline, reward = (summary[key] for key in ("tokenizer", "video", "baseline", "reward"))
    recipe = summary["recipe"]
    policy = PolicySpec.parse(recipe["expert"])
    expert = {"expert": "the scripted expert", "spread": f"the scripted expert resting within {policy.spread:g} of the "
              "target's radius"}.get(policy.kind, f"the agent of {policy.source}")
    return (
        f"## Expert episodes (true return)\n\n{returns_table(summary['expert_episodes'])}\n\n"
        f"## Tokenizer (held-out {tokenizer['eval_frames']} frames)\n\n"
        "| PSNR (dB) | SSIM | codebook usage | perplexity | codes per frame |\n|---|---|---|---|---|\n"
        f"| {format_number(tokenizer.get('psnr'), '.2f')} | {format_number(tokenizer.get('ssim'), '.3f')} "
        f"| {format_number(tokenizer.get('codebook_usage'), '.2f')} | {format_number(tokenizer.get('perplexity'))} "
        f"| {tokenizer['code_shape'][0]}x{tokenizer['code_shape'][1]} |\n\n"
        f"Originals (top) and reconstructions (bottom):\n\n![reconstructions]({TOKENIZER_DIR}/reconstructions.png)\n\n"
        "## Video models\n\n| model | trained on | steps | held-out bits per code | nats per frame |\n"
        f"|---|---|---:|---:|---:|\n{_model_rows(summary, expert)}\n"
        "## VIPER reward against the true return\n\n"
        f"The reward is the likelihood ratio: {_ratio_words(summary)}, standardised. The graded episodes are held "
        f"out: their reset seeds are in no model's data.{_probe_note(recipe.get('probes', ()))}\n\n"
        f"{reward['table']}\n\n{_warnings_section(summary.get('probe_warnings', []))}"
        f"![VIPER vs true return]({REWARD_DIR}/viper_vs_true_return.png)\n\n"
        f"![reward curves]({REWARD_DIR}/reward_curves.png)\n\n"
        "Per-code log-likelihood ratio over frames (bright = more likely under the expert model than the "
        f"baseline):\n\n![likelihood heat-map]({REWARD_DIR}/likelihood_heatmap.png)\n"
    )


def _model_rows(summary: dict[str, Any], expert: str) -> str:
    recipe, video, baseline = summary["recipe"], summary["video"], summary["baseline"]

    def row(name: str, data: str, run: dict[str, Any]) -> str:
        return (f"| {name} | {data} | {run['step']} | {format_number(run.get('bits_per_code'), '.3f')} "
                f"| {format_number(run.get('log_prob_per_frame'))} |\n")

    if summary.get("baseline_task"):
        return row("one model of both sources", f"{recipe['episodes']} episodes of {expert} and "
                   f"{recipe['random_episodes']} random-policy ones (task {summary['baseline_task']})", video)
    return (row("expert", f"{recipe['episodes']} episodes of {expert}", video)
            + row("baseline", f"{recipe['random_episodes']} random-policy episodes", baseline))


def _ratio_words(summary: dict[str, Any]) -> str:
    if summary.get("baseline_task"):
        return (f"each frame's log-likelihood under the model conditioned on {summary['task']} minus under the "
                f"same model conditioned on {summary['baseline_task']}")
    return "each frame's log-likelihood under the expert model minus under the baseline model"


def _probe_note(probes: list[str] | tuple[str, ...]) -> str:
    if not probes:
        return ""
    labels = ", ".join(PolicySpec.parse(probe).label for probe in probes)
    return (f" Probes of cheap play ({labels}) are ranked with them: an agent settles into whatever play the reward "
            "pays as much as the noisy expert.")


def probe_warnings(recipe: RewardRecipe, by_policy: list[dict[str, Any]]) -> list[str]:
    """One line per probe the reward pays at least as much as the noisiest graded expert: play an agent may
    settle into rather than learn the task (as reacher's agents settled beside the target). ``by_policy`` is
    :func:`experiments.eval_reward.evaluate_reward`'s rows of mean returns by policy label."""
    viper = {row["policy"]: row["viper_return"] for row in by_policy}
    true = {row["policy"]: row["true_return"] for row in by_policy}
    graded = recipe.graded_policies()
    expert = graded[0].label
    noisy = [policy for policy in graded if policy.noise_std > 0]
    if not noisy:
        return []
    noisiest = max(noisy, key=lambda policy: policy.noise_std)
    if expert not in viper or noisiest.label not in viper:
        return []
    warnings = []
    for probe in map(PolicySpec.parse, recipe.probes):
        if probe.label in viper and viper[probe.label] >= viper[noisiest.label]:
            warnings.append(
                f"{probe.label} (true return {format_number(true[probe.label])}) earns VIPER return "
                f"{format_number(viper[probe.label])}, {format_share(viper[probe.label], viper[expert])} of the "
                f"expert's, at least the expert's under action noise {noisiest.noise_std:g} "
                f"({format_number(viper[noisiest.label])})"
            )
    return warnings


def _warnings_section(warnings: list[str]) -> str:
    if not warnings:
        return ""
    lines = "".join(f"- {warning}\n" for warning in warnings)
    return (f"**Hack risk.** The reward pays cheap play as much as the noisy expert; an agent may settle into it:\n\n"
            f"{lines}\nWhat to try: the VIPER guide (docs/guides/viper.md), \"When the probes earn too much\".\n\n")


def load_summary(out: str | Path) -> dict[str, Any] | None:
    """The summary a finished :func:`build_reward` left in ``out``, or None."""
    path = Path(out) / SUMMARY_FILE
    return json.loads(path.read_text()) if path.is_file() else None


def recipe_expert(model_dir: str | Path) -> str | None:
    """Whose videos trained the expert video model at ``model_dir`` (``expert`` or ``agent:RUN``), where it is a
    finished recipe's (``{out}/video/model``); None for any other model."""
    model_dir = Path(model_dir)
    summary = load_summary(model_dir.parent.parent) if model_dir.parent.name == VIDEO_DIR else None
    return None if summary is None else summary["recipe"]["expert"]


@dataclass(frozen=True)
class RecipeReward:
    """Where a finished recipe's ratio reward lives: the expert model, the baseline model (the same model where
    one model is both, with ``baseline_task`` its play task) and the held-out Spearman of ``task``."""

    task: str
    model: Path
    baseline: Path
    baseline_task: str | None
    spearman: float


def recipe_reward(out: str | Path) -> RecipeReward:
    """The reward a finished :func:`build_reward` left in ``out``; FileNotFoundError where it has not finished."""
    summary = load_summary(out)
    if summary is None:
        raise FileNotFoundError(f"no finished `wm build-reward` in {out} ({Path(out) / SUMMARY_FILE} is missing)")
    task = summary["task"]
    return RecipeReward(
        task, Path(out) / VIDEO_DIR / "model", Path(summary.get("baseline_model", Path(out) / BASELINE_DIR / "model")),
        summary.get("baseline_task") or None, summary["reward"]["correlations"][task]["spearman"],
    )

"""Commands of the VIPER job: the reward's quality, agents trained on it, the DMC-100k grid, the quickstart."""

from __future__ import annotations

import argparse
import json
from dataclasses import replace
from pathlib import Path

from experiments.cli.flags import (
    add_baseline_flag, add_device_flag, add_reward_flags, dataclass_flags, dataclass_values, labelled,
)


def _add_calibrate_reward(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "calibrate-reward",
        help="store the VIPER reward's expert statistics in a video model bundle",
        description="Score the train episodes of an expert dataset with the video model, as the VIPER reward "
        "would (action-free, context stride = the model's frame skip), and store the mean and std of the "
        "per-frame log-likelihood per task in the bundle, which the reward wrappers use to standardise. "
        "`wm train-video` already does this on its training data; use this for other expert data.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--model", required=True, type=Path, help="video model bundle, e.g. runs/video/model")
    parser.add_argument("--data", required=True, type=Path, help="expert dataset root (its train split is used)")
    add_device_flag(parser)
    parser.set_defaults(handler=_run_calibrate_reward)


def _run_calibrate_reward(args: argparse.Namespace) -> None:
    from experiments.eval_reward import calibrate_reward

    print(json.dumps(calibrate_reward(args.model, args.data, args.device), indent=2))


def _add_eval_reward(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "eval-reward",
        help="does VIPER return rank graded episodes as the true return does?",
        description="Score recorded episodes of graded quality (e.g. `wm collect --policies "
        "expert,noisy:0.3,noisy:1.0,random`) with the VIPER reward exactly as the reward wrapper would step "
        "through them, and report per task the Spearman and Pearson correlation between VIPER return and true "
        "return (from the manifest), a per-policy table, a scatter plot, per-step reward curves of an expert "
        "and a random episode, and a heat-map of per-code log-likelihood over frames. Writes "
        "{out}/reward_eval.json, {out}/reward_eval.md and PNGs.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--model", required=True, type=Path, help="video model bundle, e.g. runs/video/model")
    add_baseline_flag(parser)
    parser.add_argument(
        "--data", required=True, type=Path, action="append",
        help="dataset root with policy labels and returns in its manifest; repeat for more",
    )
    parser.add_argument("--out", required=True, type=Path, help="where the report and figures go")
    parser.add_argument(
        "--split", default="all", choices=["all", "test", "train"],
        help="episodes to score; keep the video model's own training episodes out (e.g. --split test)",
    )
    add_reward_flags(parser)
    parser.add_argument("--joint-frames", type=int, default=None, help="frames per joint reward (default window+1)")
    add_device_flag(parser)
    parser.set_defaults(handler=_run_eval_reward)


def _run_eval_reward(args: argparse.Namespace) -> None:
    from experiments.eval_reward import evaluate_reward

    report = evaluate_reward(
        args.model, args.data, args.out, args.split, args.mode, args.joint_frames, args.score, args.baseline_model,
        args.device, frame_weight=args.frame_weight, baseline_task=args.baseline_task,
    )
    print(report["table"])
    print(f"report and figures written to {args.out}")


def _add_train_agent(subparsers: argparse._SubParsersAction) -> None:
    from agents.workspace import AGENTS, Training

    presets = sorted({name for kind in AGENTS.values() for name in kind.presets})
    parser = subparsers.add_parser(
        "train-agent",
        help="train DrQ-v2 (or DrQ) from states (or pixels) on the VIPER reward or the true reward",
        description="DrQ (SAC + random shift) or DrQ-v2 (DDPG + random shift, n-step returns, scheduled "
        "exploration noise) on a DMC env. With --reward viper the env's reward is replaced by the video model's "
        "standardised log-likelihood of each new frame (VIPER), plus beta times an RND exploration bonus; the "
        "true reward is still logged as true_return. With --obs state the agent observes the dm_control state "
        "vector while the video model still scores the rendered frames (the state-observation control). Logs to "
        "{run}/tb, evaluation GIFs to {run}/videos, returns by step to {run}/returns.json, checkpoints to "
        "{run}/checkpoint; --resume continues an interrupted run.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--env", required=True, help="env spec, e.g. dmc:cartpole-swingup")
    parser.add_argument("--run", required=True, type=Path, help="run directory")
    parser.add_argument(
        "--agent", default="drqv2", choices=sorted(AGENTS),
        help="drqv2 (DDPG; learns on a CPU in minutes from states) or drq (SAC, pixels only)",
    )
    parser.add_argument(
        "--obs", default="state", choices=["pixels", "state"],
        help="what the agent observes (the VIPER reward always scores the rendered frames); pixels need a GPU "
        "and DMC-100k budgets to learn",
    )
    parser.add_argument("--reward", default="viper", choices=["viper", "env"], help="what the agent is trained on")
    parser.add_argument("--model", type=Path, default=None, help="video model bundle (needed for --reward viper)")
    add_baseline_flag(parser)
    parser.add_argument("--task", default=None, help="task the video model is conditioned on / standardised for")
    add_reward_flags(parser)
    parser.add_argument(
        "--env-reward-weight", type=float, default=0.0, help="add this times the env's own reward to VIPER's"
    )
    parser.add_argument(
        "--rnd-weight", type=float, default=None,
        help="beta of the RND exploration bonus; default 1 with --reward viper on pixels (VIPER's setting), else 0",
    )
    parser.add_argument(
        "--action-repeat", type=int, default=None,
        help="physics steps (DMC; underlying env steps elsewhere) per agent decision, a multiple of the env's own "
        "repeat (2 for DMC); default: the task's DMC-100k repeat (8 on cartpole, 4 on reacher), else the env's own",
    )
    parser.add_argument(
        "--preset", default="cpu", choices=presets,
        help="agent settings: cpu (both agents, sized for a CPU), viper (drq as VIPER ran it), paper (each "
        "agent's published DMC setting: drq as Kostrikov et al. 2020, drqv2 as Yarats et al. 2021)",
    )
    parser.add_argument("--batch-size", type=int, default=None, help="override the preset's batch size")
    parser.add_argument(
        "--agent-option", action="append", default=[], metavar="NAME=VALUE",
        help="set any field of the agent's config, e.g. std_steps=2500 or lr=3e-4 (see agents/drqv2.py); repeat",
    )
    parser.add_argument("--resume", action="store_true", help="continue from {run}/checkpoint")
    add_device_flag(parser)
    dataclass_flags(parser, Training())
    parser.set_defaults(handler=_run_train_agent, update_every=None, updates_per_step=None, frame_stack=None)


def _run_train_agent(args: argparse.Namespace) -> None:
    from experiments.train_agent import run_agent

    config, training, viper = _agent_setup(args)
    summary = run_agent(
        args.env, args.run, args.agent, config, training, args.reward, args.model, args.action_repeat, args.resume,
        observation=args.obs, device=args.device, baseline_dir=args.baseline_model, **viper,
    )
    print(json.dumps(summary, indent=2))


def _add_benchmark_dmc(subparsers: argparse._SubParsersAction) -> None:
    from agents.workspace import AGENTS
    from experiments.train_agent import OTHER_DMC_ACTION_REPEAT, PUBLISHED_ACTION_REPEAT

    parser = subparsers.add_parser(
        "benchmark-dmc",
        help="the DMC-100k grid: task x reward x agent x observation x seed, in parallel, resumable",
        description="Train every combination of the given tasks, agents, observations, rewards and seeds at the "
        "DMC-100k budget (100k physics steps at each task's action repeat, see --tasks), --workers runs at a time "
        "in separate processes. Each run is a train-agent run directory under {out}/{task}/{agent}-{obs}-{reward}/"
        "seed{seed}; rerunning skips finished runs and resumes interrupted ones. Writes {out}/results.md (mean and "
        "spread over seeds of the final agent's true return over --final-episodes fresh episodes, VIPER as a "
        "share of the true-reward agent, wall time per run, GIF paths), results.json and {out}/{task}_curves.png.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--out", required=True, type=Path, help="grid directory")
    parser.add_argument(
        "--tasks", default="cartpole-swingup,cartpole-balance,reacher-easy",
        help="comma-separated DMC tasks; physics steps per agent step: DMC-100k's where published ("
        f"{', '.join(f'{task} {repeat}' for task, repeat in sorted(PUBLISHED_ACTION_REPEAT.items()))}), else "
        f"{OTHER_DMC_ACTION_REPEAT}",
    )
    parser.add_argument("--agents", default="drqv2", help=f"comma-separated, of {sorted(AGENTS)}")
    parser.add_argument("--obs", default="pixels", help="comma-separated, of pixels,state (state needs drqv2)")
    parser.add_argument(
        "--rewards", default="viper,env",
        help="comma-separated, of viper (expert model's log-likelihood), ratio (likelihood ratio against "
        "--baseline-model), "
        "env (true reward)",
    )
    parser.add_argument("--seeds", default="0,1", help="comma-separated seeds")
    parser.add_argument(
        "--model", action="append", default=[], metavar="TASK=PATH",
        help="video model bundle of a task for its VIPER runs, e.g. cartpole-swingup=runs/qs/video/model; repeat",
    )
    parser.add_argument(
        "--baseline-model", action="append", default=[], metavar="TASK=PATH",
        help="video model of a task's random play for its ratio runs; repeat",
    )
    parser.add_argument(
        "--reward-dir", action="append", default=[], metavar="TASK=DIR",
        help="a `wm build-reward` output: the task's expert and baseline models, and its held-out Spearman for "
        "the table; repeat",
    )
    parser.add_argument("--physics-steps", type=int, default=100_000, help="budget of each run in physics steps")
    parser.add_argument("--preset", default="cpu",
                        help="agent settings preset, as train-agent's --preset (cpu; paper for either agent; viper "
                        "for drq)")
    parser.add_argument("--eval-every", type=int, default=10_000, help="physics steps between evaluations")
    parser.add_argument("--eval-episodes", type=int, default=5, help="episodes per evaluation")
    parser.add_argument(
        "--final-episodes", type=int, default=20,
        help="fresh episodes of each finished run's final agent, for the table's figure (seconds per run; also "
        "given to runs that finished before; 0: the last evaluation's figure)",
    )
    parser.add_argument("--max-minutes", type=float, default=None, help="cap each run's training time (CPU)")
    add_reward_flags(parser)
    parser.add_argument("--rnd-weight", type=float, default=None, help="RND beta (default 1 on VIPER from pixels)")
    parser.add_argument("--update-every", type=int, default=None, help="agent steps per update (default: the agent's)")
    parser.add_argument("--updates-per-step", type=int, default=None,
                        help="updates at each update step (default: the agent's, 4 for drqv2 cpu on states)")
    parser.add_argument(
        "--agent-option", action="append", default=[], metavar="NAME=VALUE",
        help="set a field of every run's agent config, e.g. std_steps=2500; repeat",
    )
    parser.add_argument(
        "--label", default="",
        help="name these runs, whose settings differ from the plain grid's (e.g. --label disagreement with "
        "--agent-option disagreement_weight=1): their folders and table rows carry it, beside the plain runs",
    )
    parser.add_argument("--workers", type=int, default=2, help="runs in parallel, one process each")
    parser.add_argument("--threads-per-run", type=int, default=None,
                        help="torch threads of each run (default: the CPUs shared among the workers); 1 where "
                        "other jobs share the machine")
    add_device_flag(parser)
    parser.set_defaults(handler=_run_benchmark_dmc)


def _run_benchmark_dmc(args: argparse.Namespace) -> None:
    from experiments.dmc_benchmark import GridSettings, plan_grid, run_grid
    from experiments.reward_recipe import recipe_reward

    models = {task: Path(path) for task, path in labelled(args.model, "--model", "PATH").items()}
    baselines = {task: Path(path) for task, path in labelled(args.baseline_model, "--baseline-model", "PATH").items()}
    quality, baseline_tasks = {}, {}
    for task, directory in labelled(args.reward_dir, "--reward-dir", "DIR").items():
        recipe = recipe_reward(directory)
        if recipe.task != task:
            raise ValueError(f"--reward-dir {task}={directory}: that recipe's reward is for {recipe.task}")
        models[task], baselines[task], quality[task] = recipe.model, recipe.baseline, recipe.spearman
        if recipe.baseline_task:  # one model of both sources
            baseline_tasks[task] = recipe.baseline_task
    runs = plan_grid(_items(args.tasks), _items(args.agents), _items(args.obs), _items(args.rewards),
                     [int(s) for s in _items(args.seeds)], models, baselines, args.label)
    settings = GridSettings(args.physics_steps, args.preset, args.eval_every, args.eval_episodes, args.max_minutes,
                            args.score, args.mode, args.rnd_weight, args.update_every,
                            labelled(args.agent_option, "--agent-option", "VALUE"), args.updates_per_step, args.device,
                            args.frame_weight, args.final_episodes)
    print(run_grid(args.out, runs, settings, models, args.workers, baselines, quality, args.threads_per_run,
                   baseline_tasks))


def _add_diagnose_reward(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "diagnose-reward",
        help="what a VIPER-trained agent does, and what the reward says about it, next to the expert",
        description="Play a `wm train-agent --reward viper` run's final agent, the expert (scripted, or the "
        "trained agent a recipe's videos came from) and a random policy from the same reset seeds, score every "
        "env step with the run's own VIPER reward (video model and options from {run}/run.json), and write "
        "{out}/reward_trace.png (per-step VIPER reward, log-likelihood against the model's expected log-likelihood, "
        "true reward), GIFs with the rewards drawn under each frame "
        "(one per policy and episode, and the three side by side), and a table of returns and mean per-step "
        "log-likelihood, entropy and entropy-adjusted score per episode half (diagnosis.md / .json).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--run", required=True, type=Path, help="a train-agent run directory trained on --reward viper")
    parser.add_argument("--out", type=Path, default=None, help="where figures, GIFs and tables go (default {run}/diagnosis)")
    parser.add_argument("--episodes", type=int, default=2, help="episodes per policy")
    parser.add_argument("--seed", type=int, default=0, help="reset seed of the first episode (then +1 per episode)")
    parser.add_argument("--model", type=Path, default=None, help="score with this video model instead of the run's")
    parser.add_argument("--expert", default=None, help=(
        "the expert to play beside the agent: expert (the task's scripted one) or agent:RUN (a trained agent's "
        "run); default: the one a `wm build-reward` recipe recorded for the run's video model, else the scripted "
        "expert"))
    add_device_flag(parser)
    parser.set_defaults(handler=_run_diagnose_reward)


def _run_diagnose_reward(args: argparse.Namespace) -> None:
    from experiments.diagnose_reward import diagnose_reward

    report = diagnose_reward(args.run, args.out, args.episodes, args.seed, args.model, args.device, args.expert)
    print(report["table"])
    print(f"figure, GIFs and tables written next to {report['figure']}")


def _add_compare_runs(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "compare-runs",
        help="plot and tabulate the true-return curves of several agent runs",
        description="Read {run}/returns.json of agent runs (e.g. DrQ on VIPER reward vs on the true reward), or "
        "{run}/progress.json of train-imagination runs, and draw their evaluation true return against agent steps "
        "in one PNG, with a markdown table of the same numbers. Training episodes (an imagination run's collecting "
        "episodes, one mean per iteration) are drawn too, as a moving average over --smooth episodes.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument(
        "--run", required=True, action="append", metavar="LABEL=DIR", help="a run directory and its label; repeat"
    )
    parser.add_argument("--out", required=True, type=Path, help="PNG to write (the table goes next to it as .md)")
    parser.add_argument("--title", default="true return", help="plot title")
    parser.add_argument("--smooth", type=int, default=5, help="training episodes per moving average")
    parser.add_argument(
        "--reference-return", action="append", default=[], metavar="LABEL=RETURN",
        help="a return drawn as a dashed line (e.g. random=108.3); repeat",
    )
    parser.set_defaults(handler=_run_compare_runs)


def _run_compare_runs(args: argparse.Namespace) -> None:
    from experiments.plots import compare_runs

    runs = {label: Path(path) for label, path in labelled(args.run, "--run", "DIR").items()}
    references = labelled(args.reference_return, "--reference-return", "RETURN")
    try:
        returns = {label: float(value) for label, value in references.items()}
    except ValueError as err:
        raise ValueError(f"--reference-return needs LABEL=RETURN with a number: {err}") from err
    print(compare_runs(runs, args.out, args.title, args.smooth, returns))


def _add_build_reward(subparsers: argparse._SubParsersAction) -> None:
    from experiments.reward_recipe import TASK_RECIPES, RewardRecipe

    defaults = RewardRecipe()
    recipes = "; ".join(
        f"{task}: " + ", ".join(f"{name} {value}" for name, value in recipe.items())
        for task, recipe in TASK_RECIPES.items()
    )
    parser = subparsers.add_parser(
        "build-reward",
        help="the VIPER reward recipe for a DMC task: expert and random-play videos to a checked ratio reward",
        description="Record the expert (the task's scripted expert, or --expert agent:RUN for the agent of a "
        "`wm train-agent --reward env` run, as VIPER got its expert videos) and random play, train the tokenizer, "
        "the expert video model and a baseline video model of random play, and rank held-out episodes of graded "
        "quality (the expert, the expert with action noise, random play) and probes of cheap play (holding still, "
        "a random action held) by the likelihood-ratio reward against their true returns. Writes {out}/report.md "
        "and {out}/reward_recipe.json; train agents on the result with "
        "`wm train-agent --reward viper --model {out}/video/model --baseline-model {out}/video-random/model` or "
        "`wm benchmark-dmc --reward-dir TASK={out}`. Every stage resumes where it stopped. The same recipe serves "
        "every task; tasks whose goal moves per episode take more, shorter episodes unless told otherwise "
        f"({recipes}).",
    )
    parser.add_argument("--task", required=True, help="DMC task, e.g. walker-walk")
    parser.add_argument("--out", required=True, type=Path, help="where data, models and the report go")
    # Flags left out take the task's recipe, then the common default.
    dataclass_flags(parser, defaults, absent_unless_given=True)
    parser.add_argument("--graded-noise", type=_floats, default=argparse.SUPPRESS,
                        help="comma-separated action-noise stds of the graded expert episodes (default: "
                        f"{','.join(f'{std:g}' for std in defaults.graded_noise)})")
    parser.add_argument("--probes", type=_items, default=argparse.SUPPRESS,
                        help="comma-separated play policies scored beside the graded episodes, the cheap behaviour an "
                        "agent may settle into: still (the do-nothing action), held:<steps> (a random action held), "
                        f"random (default: {','.join(defaults.probes)}; '' for none)")
    parser.add_argument("--workers", type=int, default=2, help="episode-recording processes")
    add_device_flag(parser)
    parser.set_defaults(handler=_run_build_reward)


def _floats(text: str) -> tuple[float, ...]:
    try:
        return tuple(float(item) for item in text.split(",") if item.strip())
    except ValueError as err:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got {text!r}") from err


def _items(text: str) -> tuple[str, ...]:
    """The non-empty items of a comma-separated flag value."""
    return tuple(item.strip() for item in text.split(",") if item.strip())


def _run_build_reward(args: argparse.Namespace) -> None:
    from experiments.reward_recipe import RewardRecipe, build_reward, default_recipe

    given = dataclass_values(args, RewardRecipe)
    summary = build_reward(args.task, args.out, default_recipe(args.task, **given), args.workers, args.device)
    print(summary["reward"]["table"])
    print(f"report written to {args.out / 'report.md'}")


def _add_quickstart(subparsers: argparse._SubParsersAction) -> None:
    from experiments.quickstart import TASK_DATA, QuickstartBudget

    defaults = QuickstartBudget()
    recipes = "; ".join(
        f"{task}: {r['episodes']} expert and {r['random_episodes']} random episodes of {r['data_episode_steps']} "
        f"steps, graded by action noise {', '.join(f'{std:g}' for std in r['graded_noise'])}"
        for task, r in TASK_DATA.items()
    )
    parser = subparsers.add_parser(
        "quickstart",
        help="VIPER end to end on a small DMC default (about 30 minutes on a 2-core CPU)",
        description="Collect expert and random-policy videos of a DMC task, train the tokenizer, the expert video "
        "model and a baseline video model of random play, score episodes of graded quality (expert, expert + noise, "
        "random) with the likelihood-ratio VIPER reward and correlate VIPER return with true return, train DrQ-v2 "
        "on that reward alone (observing the state vector by default; the reward comes from the rendered frames), "
        "and write {out}/report.md with tables, plots and a GIF of the agent. Every stage resumes where it stopped. "
        f"Tasks whose goal moves per episode collect more, shorter episodes by default, and some grade episodes "
        f"by other noise levels ({recipes}).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--out", type=Path, default=Path("runs/quickstart"), help="where data, runs and report go")
    parser.add_argument("--task", default="cartpole-swingup", help="DMC task with a scripted expert")
    # These three default to the task's recipe; SUPPRESS keeps the formatter from printing "None".
    parser.add_argument("--episodes", type=int, default=argparse.SUPPRESS,
                        help=f"expert episodes to collect (default: {defaults.episodes}, or the task's recipe)")
    parser.add_argument("--random-episodes", type=int, default=argparse.SUPPRESS,
                        help="random-policy episodes to collect for the baseline video model "
                        f"(default: {defaults.random_episodes}, or the task's recipe)")
    parser.add_argument("--data-episode-steps", type=int, default=argparse.SUPPRESS,
                        help="env steps per expert or random-play episode (default: the task's full length, "
                        "or the task's recipe)")
    parser.add_argument("--graded-episodes", type=int, default=defaults.graded_episodes,
                        help="episodes per graded policy (the expert, the expert with action noise "
                        f"{', '.join(f'{std:g}' for std in defaults.graded_noise)} or the task's recipe, random play) "
                        "for the reward check")
    parser.add_argument("--tokenizer-minutes", type=float, default=defaults.tokenizer_minutes,
                        help="CPU budget for tokenizer training")
    parser.add_argument("--video-minutes", type=float, default=defaults.video_minutes,
                        help="CPU budget for the expert video model")
    parser.add_argument("--baseline-minutes", type=float, default=defaults.baseline_minutes,
                        help="CPU budget for the baseline video model of random play")
    parser.add_argument("--agent-minutes", type=float, default=defaults.agent_minutes,
                        help="CPU budget for DrQ-v2 on the VIPER reward")
    parser.add_argument("--agent-obs", choices=("state", "pixels"), default=defaults.agent_observation,
                        help="what the agent observes (its reward always comes from the rendered frames)")
    parser.add_argument("--workers", type=int, default=2, help="episode-collecting processes")
    parser.add_argument("--max-steps", type=int, default=None, help="cut episodes short (for a quick look)")
    add_device_flag(parser)
    parser.set_defaults(handler=_run_quickstart)


def _run_quickstart(args: argparse.Namespace) -> None:
    from experiments.quickstart import default_budget, quickstart

    given = {name: getattr(args, name) for name in ("episodes", "random_episodes", "data_episode_steps")
             if hasattr(args, name)}
    budget = replace(
        default_budget(args.task), **given,
        graded_episodes=args.graded_episodes, tokenizer_minutes=args.tokenizer_minutes,
        video_minutes=args.video_minutes, baseline_minutes=args.baseline_minutes, agent_minutes=args.agent_minutes,
        agent_observation=args.agent_obs, max_steps=args.max_steps,
    )
    report = quickstart(args.out, args.task, budget, args.workers, args.device)
    print(f"report written to {report}")


def _agent_setup(args: argparse.Namespace) -> tuple[object, object, dict]:
    """Agent config, loop settings and VIPER options from train-agent's flags."""
    from dataclasses import replace

    from agents.workspace import Training
    from experiments.train_agent import agent_config, loop_defaults

    options = labelled(args.agent_option, "--agent-option", "VALUE")
    config = agent_config(args.agent, args.preset, args.reward, args.obs, args.rnd_weight, options)
    if args.batch_size is not None:
        config = replace(config, batch_size=args.batch_size)
    settings = dataclass_values(args, Training)
    defaults = loop_defaults(args.agent, args.obs, args.preset)
    settings.update({k: v for k, v in defaults.items() if settings[k] is None})
    viper = {"task": args.task, "score": args.score, "mode": args.mode, "env_reward_weight": args.env_reward_weight,
             "frame_weight": args.frame_weight, "baseline_task": args.baseline_task}
    return config, Training(**settings), viper if args.reward == "viper" else {}


def add_commands(subparsers: argparse._SubParsersAction) -> None:
    """This job's subcommands, in the order ``wm --help`` lists them."""
    _add_calibrate_reward(subparsers)
    _add_eval_reward(subparsers)
    _add_train_agent(subparsers)
    _add_benchmark_dmc(subparsers)
    _add_diagnose_reward(subparsers)
    _add_compare_runs(subparsers)
    _add_build_reward(subparsers)
    _add_quickstart(subparsers)

"""Commands of the world-model job: an agent trained in imagination, evaluated, its world model checked."""

from __future__ import annotations

import argparse
from pathlib import Path

from experiments.cli.flags import add_device_flag, dataclass_flags, dataclass_values, labelled


def _add_train_imagination(subparsers: argparse._SubParsersAction) -> None:
    from agents.actor_critic import ActorCriticConfig
    from experiments.train_imagination import ImaginationSettings

    parser = subparsers.add_parser(
        "train-imagination",
        help="train an agent purely inside the video world model (IRIS's loop), judged in the real env",
        description="Collect real episodes (random play, then the current policy), train the world model "
        "(tokenizer once, then the transformer with reward and continue heads, resumed each iteration), "
        "train an actor-critic only on imagined rollouts that start from real clips, evaluate it in the real "
        "env; repeat until the physics-step budget is spent. Writes {run}/progress.json (returns per "
        "iteration, imagined-vs-real PSNR), {run}/tb, {run}/videos (imagined beside real GIFs); rerun the "
        "same command to resume.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--run", required=True, type=Path, help="run directory")
    add_device_flag(parser)
    dataclass_flags(parser, ImaginationSettings())
    parser.add_argument("--viper-recipe", type=Path, help=(
        "a finished `wm build-reward` directory for the env's task: its VIPER ratio reward (the expert model and "
        "its baseline) is the loop's reward, as --viper-model and --viper-baseline-model (and, for a one-model "
        "recipe, --viper-baseline-task) would give it"))
    dataclass_flags(parser.add_argument_group("actor-critic"), ActorCriticConfig(), prefix="ac-")
    parser.set_defaults(handler=_run_train_imagination)


def _run_train_imagination(args: argparse.Namespace) -> None:
    from agents.actor_critic import ActorCriticConfig
    from envs.collect import task_name
    from experiments.reward_recipe import recipe_reward
    from experiments.train_imagination import ImaginationSettings, train_in_imagination

    agent = ActorCriticConfig(**dataclass_values(args, ActorCriticConfig, prefix="ac-"))
    values = dataclass_values(args, ImaginationSettings)
    if args.viper_recipe is not None:
        if values["viper_model"] is not None:
            raise ValueError("give --viper-recipe or --viper-model, not both")
        recipe = recipe_reward(args.viper_recipe)
        if recipe.task != task_name(values["env"]):
            raise ValueError(f"--viper-recipe {args.viper_recipe} holds the reward of {recipe.task}, not of "
                             f"{values['env']}")
        values.update(viper_model=str(recipe.model), viper_baseline_model=str(recipe.baseline),
                      viper_baseline_task=recipe.baseline_task)
    settings = ImaginationSettings(**values, agent=agent)
    progress = train_in_imagination(args.run, settings, args.device)
    last = progress["history"][-1]["eval_return"] if progress["history"] else None
    print(f"{progress['iteration']} iterations, {progress['agent_steps'] * settings.action_repeat} physics steps, "
          f"last real-env return {last}; per-iteration figures in {args.run / 'progress.json'}")


def _add_eval_imagination(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "eval-imagination",
        help="the true return of a train-imagination run's agent over fresh real episodes, against random play",
        description="Load the agent that train-imagination saved last in RUN and play EPISODES fresh real "
        "episodes with its policy's mode, or with --sample sampled from its policy (frames seen through the run's "
        "tokenizer, as in training), then random play on the same seeds (the same start states). Writes "
        "{run}/evaluation.json (every return, means, standard deviations, the ratio to random) and "
        "{run}/videos/evaluation.gif (the agent's first episode); evaluation_sampled.* with --sample.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--run", required=True, type=Path, help="run directory of train-imagination")
    parser.add_argument("--episodes", type=int, default=10, help="real episodes for the agent and for random play")
    parser.add_argument("--sample", action="store_true",
                        help="sample the agent's actions from its policy (seeded per episode) instead of its mode")
    add_device_flag(parser)
    parser.set_defaults(handler=_run_eval_imagination)


def _run_eval_imagination(args: argparse.Namespace) -> None:
    from experiments.train_imagination import evaluate_run, evaluation_name

    result = evaluate_run(args.run, args.episodes, args.sample, args.device)
    ratio = result["ratio_to_random"]
    print(f"{result['env']} after {result['iterations']} iterations ({result['physics_steps']} physics steps), "
          f"{args.episodes} episodes on the same seeds, the policy's {result['policy']} actions:\n"
          f"  agent   {result['agent_mean']:8.1f} +- {result['agent_std']:.1f}\n"
          f"  random  {result['random_mean']:8.1f} +- {result['random_std']:.1f}\n"
          f"  ratio   {'n/a' if ratio is None else f'{ratio:.2f}x'}\n"
          f"every return in {args.run / (evaluation_name(args.sample) + '.json')}")


def _add_check_world_model(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "check-world-model",
        help="does a train-imagination run's world model know what actions do? expert and random episodes, "
        "real against imagined",
        description="Play EPISODES real episodes with the task's scripted expert and as many with random play "
        "(the same start states), then imagine each with RUN's world model from its first frame alone, fed the "
        "episode's own actions. Prints the real and imagined returns (the reward head's) of both: where the "
        "expert's imagined return is no better than random play's, the model has not learnt how actions reach "
        "high reward, and an agent trained in it cannot learn that either. Writes {run}/world_model_check.json "
        "and {run}/videos/world_model_check.gif (the first expert episode, real beside imagined).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--run", required=True, type=Path, help="run directory of train-imagination")
    parser.add_argument("--episodes", type=int, default=4, help="real episodes of the expert and of random play")
    parser.add_argument("--agent", action="append", default=[], metavar="LABEL=DIR", help=(
        "also a saved actor-critic of this run's shape (DIR/checkpoint: the run's own, or a diagnose-imagination "
        "output's), played from the same start states by its policy's mode in the real env and closed loop in the "
        "world model; repeat for several"))
    parser.add_argument("--out", type=Path, help=(
        "directory of the check's JSON and GIF (default: the run, whose loop then gates on it when resumed)"))
    add_device_flag(parser)
    parser.set_defaults(handler=_run_check_world_model)


def _run_check_world_model(args: argparse.Namespace) -> None:
    from experiments.train_imagination import CHECK_FILE, check_world_model

    agents = {label: Path(directory) for label, directory in labelled(args.agent, "--agent", "DIR").items()}
    result = check_world_model(args.run, args.episodes, args.device, agents=agents, out=args.out)
    print(f"{result['env']}, {args.episodes} episodes each, returns (mean):")
    rows = {"expert": result["expert"], "random": result["random"], **result.get("agents", {})}
    for name, row in rows.items():
        print(f"  {name:12s} real {row['real_mean']:8.1f}   imagined {row['imagined_mean']:8.1f}")
    print(f"every return in {(args.out or args.run) / CHECK_FILE}")


def _add_diagnose_imagination(subparsers: argparse._SubParsersAction) -> None:
    from experiments.diagnose_imagination import DiagnosisSettings

    parser = subparsers.add_parser(
        "diagnose-imagination",
        help="train a train-imagination run's agent on in its frozen world model, evaluated in the real env: "
        "is it the actor-critic or the loop's budget?",
        description="Load RUN's last world model (frozen) and its agent (or, with --fresh-agent, a new one), make "
        "UPDATES more actor-critic updates on imagined rollouts (optionally starting elsewhere, or on more "
        "sub-envs, than the run's), and play EVAL_EPISODES real episodes every EVAL_EVERY updates, on the same "
        "start states each time. A world model that passes check-world-model and an agent that learns here say "
        "the loop gave the actor-critic too few updates; one that does not learn here, that its imagined "
        "rollouts do not teach the task. RUN is not written. Writes {out}/diagnosis.json (a row per "
        "evaluation), {out}/diagnosis.png and {out}/tb; rerun the same command to resume.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--out", required=True, type=Path, help="directory of the diagnosis (its own run)")
    add_device_flag(parser)
    dataclass_flags(parser, DiagnosisSettings())
    parser.set_defaults(handler=_run_diagnose_imagination)


def _run_diagnose_imagination(args: argparse.Namespace) -> None:
    from experiments.diagnose_imagination import DIAGNOSIS_FILE, DiagnosisSettings, diagnose_imagination

    settings = DiagnosisSettings(**dataclass_values(args, DiagnosisSettings))
    if not settings.run:
        raise ValueError("--run is required: the train-imagination run directory to diagnose")
    result = diagnose_imagination(args.out, settings, args.device)
    first, last = result["rows"][0], result["rows"][-1]
    print(f"{result['env']}: real return {first['real_mean']:.1f} at {first['updates']} updates, "
          f"{last['real_mean']:.1f} at {last['updates']}; random play {result['random_mean']:.1f}; "
          f"every row in {args.out / DIAGNOSIS_FILE}")


def add_commands(subparsers: argparse._SubParsersAction) -> None:
    """This job's subcommands, in the order ``wm --help`` lists them."""
    _add_train_imagination(subparsers)
    _add_eval_imagination(subparsers)
    _add_check_world_model(subparsers)
    _add_diagnose_imagination(subparsers)

"""The ``wm`` command line: one subcommand per job, each with a ``--help`` that explains it.

The subcommands live with their job: :mod:`experiments.cli.models` (data, tokenizers, video
transformers), :mod:`experiments.cli.viper` (rewards, agents, the grid, the quickstart),
:mod:`experiments.cli.world_model` (agents in imagination) and :mod:`experiments.cli.consistency`
(long-horizon evaluation and rollouts); their shared flags, and the flags read from settings
dataclasses, in :mod:`experiments.cli.flags`.
"""

from __future__ import annotations

import argparse
import sys

from experiments.cli import consistency, models, viper, world_model

DESCRIPTION = """\
Video models as rewards (VIPER), world models and long-rollout generators.

Typical flow (VIPER on one task):
  wm build-reward --task cartpole-swingup --out runs/reward    # expert + random-play videos, models, check
  wm train-agent --env dmc:cartpole-swingup --model runs/reward/video/model \\
      --baseline-model runs/reward/video-random/model --run runs/agent
  wm diagnose-reward --run runs/agent
From videos of your own (no actions needed):
  wm import-videos --input videos/expert --out data/expert --fps 25
  wm train-tokenizer --data data/expert --run runs/tokenizer --max-minutes 20
  wm train-video --data data/expert --tokenizer runs/tokenizer/checkpoint --run runs/video --max-minutes 20
or all of it on a small default:
  wm quickstart
Every command explains itself: wm COMMAND --help. Every command that loads or trains a
model takes --device (default: CUDA when available, else the CPU).
"""


def build_parser() -> argparse.ArgumentParser:
    """The whole ``wm`` parser, one subparser per command (the CLI reference is generated from it)."""
    parser = argparse.ArgumentParser(
        prog="wm", description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for job in (models, viper, world_model, consistency):
        job.add_commands(subparsers)
    return parser


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    from worldmodel.checkpoint import CheckpointError
    from worldmodel.device import resolve_device

    try:
        if hasattr(args, "device"):
            args.device = resolve_device(args.device)
        args.handler(args)
    except (ValueError, FileNotFoundError, FileExistsError, CheckpointError) as err:
        sys.exit(f"wm {args.command}: error: {err}")


if __name__ == "__main__":
    main()

"""Flags shared by several ``wm`` commands, and settings dataclasses turned into flags."""

from __future__ import annotations

import argparse
import typing
from dataclasses import fields, is_dataclass
from pathlib import Path
from typing import Any


def add_device_flag(parser: argparse.ArgumentParser) -> None:
    """--device, as every command that loads or trains a model takes it (see worldmodel.device)."""
    parser.add_argument(
        "--device", default="auto",
        help="torch device of every model this command loads or trains: auto (CUDA when available, else CPU), "
        "cpu, cuda or cuda:<index>",
    )


def _scalar_type(annotation: object) -> type:
    """The type a flag parses for a field annotated ``annotation`` (``int | None`` parses ints)."""
    options = [a for a in typing.get_args(annotation) if a is not type(None)] or [annotation]
    return options[0] if options[0] in (int, float, str, bool) else str


def dataclass_flags(
    parser: argparse.ArgumentParser | argparse._ArgumentGroup, defaults: object, prefix: str = "",
    absent_unless_given: bool = False,
) -> None:
    """One ``--flag`` per scalar field of a settings dataclass, typed by its annotation, with the help text
    that lives beside the field (``field(metadata={"help": ...})``; a field without one still gets a flag).
    With ``absent_unless_given`` a flag left out leaves its field out of the namespace (for settings whose
    defaults depend on other flags) and the help names the dataclass's default.

    Nested dataclasses (give them their own ``prefix``) and tuples (give them a parsing flag) are skipped.
    """
    hints = typing.get_type_hints(type(defaults))
    for field in fields(defaults):
        value = getattr(defaults, field.name)
        if is_dataclass(value) or typing.get_origin(hints[field.name]) is tuple:
            continue
        kind = _scalar_type(hints[field.name])
        flag, dest = f"--{prefix}{field.name.replace('_', '-')}", f"{prefix.replace('-', '_')}{field.name}"
        extra = {"action": argparse.BooleanOptionalAction} if kind is bool else {"type": kind}
        help_text = field.metadata.get("help", "")
        if absent_unless_given:
            help_text += "" if value is None else f" (default: {value})"
            value = argparse.SUPPRESS
        parser.add_argument(flag, dest=dest, default=value, help=help_text, **extra)


def dataclass_values(args: argparse.Namespace, settings_type: type, prefix: str = "") -> dict[str, Any]:
    """The values :func:`dataclass_flags` (with the same ``prefix``) parsed into ``args`` for the fields of
    ``settings_type``, by field name; fields without a flag, or left out under ``absent_unless_given``, are
    absent (their defaults then apply)."""
    dest = prefix.replace("-", "_")
    return {f.name: getattr(args, dest + f.name) for f in fields(settings_type) if hasattr(args, dest + f.name)}


def add_sampling_flags(parser: argparse.ArgumentParser, seed_help: str) -> None:
    """--seed, --temperature and --top-k, as every command that samples from a video model takes them."""
    parser.add_argument("--seed", type=int, default=0, help=seed_help)
    parser.add_argument("--temperature", type=float, default=1.0, help="sampling temperature (0 = greedy)")
    parser.add_argument("--top-k", type=int, default=None, help="sample among the k likeliest codes (1 = greedy)")


def add_decoding_flag(parser: argparse.ArgumentParser) -> None:
    from worldmodel.sampling import check_decoding

    parser.add_argument(
        "--decoding", type=check_decoding, default="sequential",
        help="sequential: one code per model step; jacobi: a whole frame per step until it stops changing (the "
        "same frames); masked or masked:PASSES: a frame filled in over a few parallel passes (default 4), for a "
        "model trained with --masked-decoding (other frames, fewer steps)",
    )


def name_equals_path(text: str) -> tuple[str, Path]:
    """An argparse type for ``NAME=PATH`` values (eval-consistency's --compare)."""
    name, sep, path = text.partition("=")
    if not sep or not name or not path:
        raise argparse.ArgumentTypeError(f"expected NAME=PATH, got {text!r}")
    return name, Path(path)


def labelled(items: list[str], flag: str, value_name: str) -> dict[str, str]:
    """``LABEL=VALUE`` flag values as a dict; a clear error names the first malformed one."""
    pairs = [item.partition("=") for item in items]
    bad = [item for item, (label, sep, value) in zip(items, pairs) if not (label and sep and value)]
    if bad:
        raise ValueError(f"expected {flag} LABEL={value_name}, got {bad[0]!r}")
    return {label: value for label, _, value in pairs}


def add_reward_flags(parser: argparse.ArgumentParser) -> None:
    """How the VIPER reward scores frames (see worldmodel/reward.py)."""
    parser.add_argument(
        "--score", default="log_prob", choices=["log_prob", "entropy_adjusted"],
        help="log_prob: VIPER's log-likelihood of each frame; entropy_adjusted: log-likelihood plus the model's "
        "predictive entropy of the same codes (surprise beyond what the model expected)",
    )
    parser.add_argument(
        "--mode", default="conditional", choices=["conditional", "joint"],
        help="conditional: the newest frame's score; joint: the sum over the last --joint-frames frames",
    )
    parser.add_argument(
        "--frame-weight", type=float, default=0.0,
        help="with --baseline-model: add this times the ratio of each frame's score alone (given no earlier "
        "frame), a density ratio of what the frame shows, which pays for where an agent holds still and not "
        "only how it moves",
    )


def add_baseline_flag(parser: argparse.ArgumentParser) -> None:
    """--baseline-model, the random-play model of the likelihood-ratio reward."""
    parser.add_argument(
        "--baseline-model", type=Path, default=None,
        help="video model of the same env under random play: the reward becomes the likelihood ratio "
        "log p_model - log p_baseline (scaled by the expert std), which cancels what any model predicts well",
    )
    parser.add_argument(
        "--baseline-task", default=None,
        help="the task the baseline model is conditioned on (default: the scored task); with one model trained "
        "on expert episodes as task T and play as T@play (wm collect --task-label), pass that model as both "
        "--model and --baseline-model and T@play here",
    )

"""mkdocs hook: the CLI reference page is rendered from `wm`'s own argparse parser at build time.

The page `reference/cli.md` holds one marker line; this hook replaces it with every subcommand's
`--help`, as argparse formats it, so the reference cannot drift from the command line.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

MARKER = "<!-- wm-cli-reference -->"
HELP_WIDTH = "100"  # columns argparse wraps help text to, fixed so every build renders the same page


def _subcommands(parser: argparse.ArgumentParser) -> list[tuple[str, str, argparse.ArgumentParser]]:
    """(name, one-line help, parser) of every subcommand, in the order `wm --help` lists them."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            helps = {choice.dest: choice.help or "" for choice in action._choices_actions}
            return [(name, helps.get(name, ""), sub) for name, sub in action.choices.items()]
    raise RuntimeError("wm's parser has no subcommands")


def _help_block(text: str) -> str:
    return "```text\n" + text.rstrip() + "\n```\n"


def cli_reference_markdown() -> str:
    """Markdown for every `wm` subcommand: a heading, its one-line summary and its full `--help`."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
    from experiments.cli import build_parser

    previous = os.environ.get("COLUMNS")
    os.environ["COLUMNS"] = HELP_WIDTH
    try:
        parser = build_parser()
        parts = ["## `wm`\n", _help_block(parser.format_help())]
        for name, summary, sub in _subcommands(parser):
            parts.append(f"## `wm {name}`\n")
            if summary:
                parts.append(f"{summary[0].upper()}{summary[1:]}.\n")
            parts.append(_help_block(sub.format_help()))
    finally:
        if previous is None:
            del os.environ["COLUMNS"]
        else:
            os.environ["COLUMNS"] = previous
    return "\n".join(parts)


def on_page_markdown(markdown: str, page, config, files) -> str:
    """Fill the CLI reference page's marker with the parser's help texts."""
    if MARKER not in markdown:
        return markdown
    return markdown.replace(MARKER, cli_reference_markdown())

"""docs/edgectl.md names every command and every flag of ``edgectl`` (its argparse parser):
a command added without its line in the reference fails here."""

from __future__ import annotations

import argparse
import re
from pathlib import Path

from edgehub.edgectl import build_parser

DOC = Path(__file__).resolve().parents[2] / "docs" / "edgectl.md"


def commands(
    parser: argparse.ArgumentParser, prefix: str = ""
) -> list[tuple[str, argparse.ArgumentParser]]:
    """(``node add``, its parser) for every command, nested ones included."""
    found = []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                found.append((f"{prefix}{name}", sub))
                found += commands(sub, f"{prefix}{name} ")
    return found


def test_every_command_has_a_row_in_the_reference_table():
    rows = [line for line in DOC.read_text(encoding="utf-8").splitlines() if line.startswith("| `")]
    missing = [
        name
        for name, sub in commands(build_parser())
        if sub._subparsers is None  # a command, not a group of commands (node, twin)
        and not any(re.match(rf"\| `{re.escape(name)}( |`)", row) for row in rows)
    ]
    assert missing == []


def test_every_flag_is_named_in_the_reference():
    text = DOC.read_text(encoding="utf-8")
    parsers = [("edgectl", build_parser()), *commands(build_parser())]
    missing = [
        f"{name} {'/'.join(action.option_strings)}"
        for name, parser in parsers
        for action in parser._actions
        if action.option_strings
        and "--help" not in action.option_strings
        and not any(re.search(rf"`[^`]*{re.escape(o)}\b", text) for o in action.option_strings)
    ]
    assert missing == []

"""Fenced blocks of the Markdown docs, as the doc test reads them.

A block is a top-level fence (```` ```lang ````). ``sh`` blocks are shell scripts;
``console`` blocks hold ``$ command`` lines, each followed by the output the docs show.
An HTML comment on the line right before the fence steers the doc test:

- ``<!-- doc-test: skip — REASON -->``: the block cannot run here (the reason is required);
- ``<!-- doc-test: file NAME -->``: the block is the content of file NAME, written into the
  test's working directory before any command runs (a config the other blocks use);
- ``<!-- doc-test: engine — REASON -->``: the block needs a container engine: it runs, from
  the repository's root, where one exists (``test_doc_commands.py``), and everything it
  creates (containers, volumes, images it names) is removed afterwards.

Expected output is compared line by line after collapsing runs of white space: every
non-empty expected line must appear, in order, among the actual lines (other lines may
come between), and ``...`` inside an expected line matches any text (times, tokens).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

RUNNABLE: Final = ("sh", "console")
FENCE: Final = re.compile(r"^```(\S*)\s*$")
DIRECTIVE: Final = re.compile(r"^<!--\s*doc-test:\s*(\w+)\s*(.*?)\s*-->\s*$")
DIRECTIVES: Final = ("skip", "file", "engine")
REASON_SEPARATORS: Final = "\N{EM DASH}\N{EN DASH}-: "
"""What may separate ``skip`` from its reason."""
PROMPT: Final = "$ "
ELLIPSIS: Final = "..."


@dataclass
class Command:
    """One ``$`` command of a console block and the output the docs show after it."""

    text: str
    expected: list[str] = field(default_factory=list)


@dataclass
class Block:
    doc: Path
    line: int
    """1-based line of the opening fence."""
    lang: str
    text: str
    directive: str = ""
    argument: str = ""

    @property
    def where(self) -> str:
        return f"{self.doc.name}:{self.line}"

    @property
    def runnable(self) -> bool:
        """Runs in the doc test's usual environment (engine blocks run on their own)."""
        return self.lang in RUNNABLE and self.directive not in ("skip", "engine")

    def commands(self) -> list[Command]:
        """Console blocks: the ``$`` lines (a trailing ``\\`` continues a command) with
        their expected output. Sh blocks: one Command per logical line that is not a
        comment (for counting; the block runs as one script)."""
        if self.lang == "console":
            return parse_console(self.text)
        commands: list[Command] = []
        pending = ""
        for raw in self.text.splitlines():
            line = raw.rstrip()
            if not pending and (not line.strip() or line.lstrip().startswith("#")):
                continue
            pending += line
            if pending.endswith("\\"):
                pending = pending[:-1] + " "
                continue
            commands.append(Command(pending.strip()))
            pending = ""
        return commands


def parse_console(text: str) -> list[Command]:
    commands: list[Command] = []
    continuing = False
    for line in text.splitlines():
        if continuing:
            commands[-1].text += "\n" + line
            continuing = line.endswith("\\")
        elif line.startswith(PROMPT):
            commands.append(Command(line[len(PROMPT) :]))
            continuing = line.endswith("\\")
        elif commands:
            commands[-1].expected.append(line)
        elif line.strip():
            raise ValueError(f"console block starts with output, not a '$ ' line: {line!r}")
    return commands


def read_blocks(doc: Path) -> list[Block]:
    """Every top-level fenced block of ``doc``, with the directive right before it."""
    blocks: list[Block] = []
    lines = doc.read_text(encoding="utf-8").splitlines()
    index = 0
    while index < len(lines):
        opening = FENCE.match(lines[index])
        if not opening:
            index += 1
            continue
        start = index
        index += 1
        body: list[str] = []
        while index < len(lines) and not lines[index].startswith("```"):
            body.append(lines[index])
            index += 1
        if index >= len(lines):
            raise ValueError(f"{doc.name}:{start + 1}: unterminated code fence")
        index += 1  # the closing fence
        block = Block(doc, start + 1, opening.group(1), "\n".join(body) + "\n")
        previous = lines[start - 1] if start else ""
        if marker := DIRECTIVE.match(previous):
            block.directive = marker.group(1)
            block.argument = marker.group(2).lstrip(REASON_SEPARATORS).strip()
        blocks.append(block)
    return blocks


def stray_directives(doc: Path) -> list[str]:
    """Directive comments that do not sit right before a fence (they would steer nothing)."""
    lines = doc.read_text(encoding="utf-8").splitlines()
    stray = []
    for number, line in enumerate(lines):
        if DIRECTIVE.match(line) and not (
            number + 1 < len(lines) and FENCE.match(lines[number + 1])
        ):
            stray.append(f"{doc.name}:{number + 1}: {line.strip()}")
    return stray


def indented_runnable_fences(doc: Path) -> list[str]:
    """Runnable fences inside lists (indented): the doc test would not see them."""
    pattern = re.compile(r"^\s+```(" + "|".join(RUNNABLE) + r")\s*$")
    return [
        f"{doc.name}:{number}"
        for number, line in enumerate(doc.read_text(encoding="utf-8").splitlines(), 1)
        if pattern.match(line)
    ]


def _normalise(line: str) -> str:
    return " ".join(line.split())


def _line_pattern(expected: str) -> re.Pattern[str]:
    parts = [re.escape(part) for part in _normalise(expected).split(ELLIPSIS)]
    return re.compile("^" + ".*".join(parts) + "$")


def missing_output(expected: list[str], actual: str) -> str | None:
    """The first expected line not found (in order) in ``actual``, or None if all are."""
    lines = [_normalise(line) for line in actual.splitlines()]
    position = 0
    for wanted in expected:
        if not _normalise(wanted) or _normalise(wanted) == ELLIPSIS:
            continue
        pattern = _line_pattern(wanted)
        while position < len(lines) and not pattern.match(lines[position]):
            position += 1
        if position == len(lines):
            return wanted
        position += 1
    return None

"""The ``edgenode`` command line."""

from __future__ import annotations

import argparse
import platform
import sys
from collections.abc import Sequence

import edgenode


def version_text() -> str:
    """One line: package version, backend and machine architecture."""
    return f"edgenode {edgenode.__version__} backend={edgenode.backend} arch={platform.machine()}"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="edgenode", description="edgenode edge runtime")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    commands.add_parser("version", help="print the version, backend and architecture")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "version":
        print(version_text())
        return 0
    return 2  # pragma: no cover - argparse rejects unknown commands first


if __name__ == "__main__":
    sys.exit(main())

"""See what KubeEdge Device manifests become in edgenode, before applying them::

    python -m edgenode.devices.kubeedge.translate devices.yaml [more.yaml ...]

Prints each document's edgenode resource as JSON (one per document), then what was
ignored; a document that cannot be translated is named on stderr with the field and the
reason, and the exit status is 1. Files are JSON, or YAML (multi-document) when PyYAML is
installed (it is wherever the hub or edgectl is). Reads only the files given.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from edgenode.devices.kubeedge.crd import CrdError, Skipped, translate

MAX_FILE_BYTES = 16 * 1024 * 1024
"""Larger manifests are refused unread."""


def documents(path: Path) -> Iterator[Any]:
    """The documents of one file (ValueError if it cannot be read as JSON or YAML)."""
    if path.stat().st_size > MAX_FILE_BYTES:
        raise ValueError(f"larger than {MAX_FILE_BYTES} bytes")
    text = path.read_text(encoding="utf-8")
    try:
        yield json.loads(text)
        return
    except ValueError:
        pass
    try:
        import yaml
    except ImportError:
        raise ValueError("not JSON (YAML needs PyYAML: pip install pyyaml)") from None
    try:
        yield from (doc for doc in yaml.safe_load_all(text) if doc is not None)
    except yaml.YAMLError as exc:
        raise ValueError(f"not YAML: {exc}") from None


def main(argv: Sequence[str] | None = None) -> int:
    paths = list(sys.argv[1:] if argv is None else argv)
    if not paths:
        print(__doc__, file=sys.stderr)
        return 2
    failed = False
    for path in paths:
        try:
            found = list(documents(Path(path)))
        except (OSError, ValueError) as exc:
            print(f"{path}: {exc}", file=sys.stderr)
            failed = True
            continue
        for index, doc in enumerate(found):
            where = f"{path} (document {index + 1})"
            try:
                result = translate(doc)
            except CrdError as exc:
                print(f"{where}: {exc.field}: {exc.message}", file=sys.stderr)
                failed = True
                continue
            if isinstance(result, Skipped):
                print(f"# {where}: {result.kind} {result.name} skipped: {result.reason}")
                continue
            print(f"# {where}: KubeEdge device {result.device} is edgenode device/{result.name}")
            print(json.dumps(result.resource, indent=2, ensure_ascii=False))
            for ignored in result.ignored:
                print(f"# ignored: {ignored}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

"""``edgectl`` commands for workloads: ``artifact push|delete``, ``get artifacts`` and
``logs app NAME --node NODE``.

``artifact push FILE`` hashes the file (SHA-256), asks the hub how much of it it already
has and uploads the rest in pieces, so an interrupted push of a large file resumes where it
stopped; on a terminal it shows bytes, rate and time left on stderr. It prints the digest
on stdout — what an App's ``spec.artifacts[].sha256`` names.
"""

from __future__ import annotations

import argparse
import hashlib
import sys
import time
import urllib.parse
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any, Final, Protocol

PUSH_CHUNK: Final = 1024 * 1024
"""Bytes per upload request (the hub takes requests of up to 4 MiB)."""
READ_CHUNK: Final = 1024 * 1024
PROGRESS_INTERVAL: Final = 0.5


class ClientLike(Protocol):
    def request(
        self, method: str, path: str, body: bytes | None = None, content_type: str = ...
    ) -> Any: ...

    def stream(self, path: str) -> Any: ...


CtlErrorLike = Callable[[str], Exception]
"""How the CLI builds the error it reports (exit status 1)."""


def file_digest(path: Path) -> tuple[str, int]:
    sha = hashlib.sha256()
    size = 0
    with path.open("rb") as handle:
        while chunk := handle.read(READ_CHUNK):
            sha.update(chunk)
            size += len(chunk)
    return sha.hexdigest(), size


class Progress:
    """``12.3 MiB of 400.0 MiB, 2.1 MiB/s, 3m05s left`` on a terminal, nothing elsewhere."""

    def __init__(self, total: int, start_at: int, out: IO[str]) -> None:
        self.total = total
        self.start_at = start_at
        self.out = out
        self.enabled = out.isatty()
        self.began = time.monotonic()
        self.shown = 0.0

    def update(self, done: int, *, final: bool = False) -> None:
        if not self.enabled:
            return
        now = time.monotonic()
        if not final and now - self.shown < PROGRESS_INTERVAL:
            return
        self.shown = now
        rate = (done - self.start_at) / max(now - self.began, 1e-6)
        left = (self.total - done) / rate if rate > 0 else 0.0
        line = f"{_size(done)} of {_size(self.total)}, {_size(int(rate))}/s"
        if not final:
            line += f", {int(left) // 60}m{int(left) % 60:02d}s left"
        self.out.write("\r" + line.ljust(60) + ("\n" if final else ""))
        self.out.flush()


def _size(count: int) -> str:
    value = float(count)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:.1f} {unit}" if unit != "B" else f"{int(value)} B"
        value /= 1024
    return f"{value:.1f} GiB"


def push(client: ClientLike, path: Path, error: CtlErrorLike) -> str:
    """Upload ``path`` (resuming); its digest."""
    try:
        digest, size = file_digest(path)
    except OSError as exc:
        raise error(f"{path}: {exc.strerror or exc}") from None
    status = _status(client, digest)
    if status is not None and status.get("complete"):
        print(f"artifact {digest[:12]} ({_size(size)}) is already on the hub", file=sys.stderr)
        return digest
    offset = 0 if status is None else int(status.get("received", 0))
    if offset:
        print(f"resuming the upload at {_size(offset)} of {_size(size)}", file=sys.stderr)
    progress = Progress(size, offset, sys.stderr)
    with path.open("rb") as handle:
        handle.seek(offset)
        while True:
            piece = handle.read(PUSH_CHUNK)
            query = urllib.parse.urlencode({"offset": offset, "size": size})
            reply = client.request(
                "PUT", f"/v1/artifacts/{digest}?{query}", piece, "application/octet-stream"
            )
            offset += len(piece)
            progress.update(offset, final=bool(reply.get("complete")))
            if reply.get("complete") or not piece:
                break
    print(f"artifact {digest[:12]} pushed ({_size(size)})", file=sys.stderr)
    return digest


def _status(client: ClientLike, digest: str) -> dict[str, Any] | None:
    try:
        found = client.request("GET", f"/v1/artifacts/{digest}")
    except Exception as exc:  # the CLI's error: 404 means not there yet
        if str(exc).startswith("404"):
            return None
        raise
    return found if isinstance(found, dict) else None


def artifacts_table(items: list[dict[str, Any]], now: float) -> list[list[str]]:
    from edgehub.kinds.base import age_cell

    rows = [["DIGEST", "SIZE", "AGE", "APPS"]]
    for item in items:
        view = {"metadata": {"creationTimestamp": item.get("created")}}
        rows.append(
            [
                item["digest"],
                _size(int(item["size"])),
                age_cell(view, now),
                ",".join(item.get("apps") or []) or "<none>",
            ]
        )
    return rows


def cmd_artifact(client: ClientLike, args: argparse.Namespace, error: CtlErrorLike) -> None:
    if args.artifact_command == "push":
        print(push(client, Path(args.file), error))
    else:
        client.request("DELETE", f"/v1/artifacts/{urllib.parse.quote(args.digest)}")
        print(f"artifact {args.digest[:12]} deleted")


def cmd_logs(client: ClientLike, args: argparse.Namespace, error: CtlErrorLike) -> None:
    if args.kind.lower() not in ("app", "apps"):
        raise error(f"logs are kept for apps only, not {args.kind!r}")
    query = {"node": args.node, "tail": args.tail}
    if args.follow:
        query["follow"] = 1
    path = f"/v1/apps/{urllib.parse.quote(args.name)}/logs?{urllib.parse.urlencode(query)}"
    with client.stream(path) as stream:
        while piece := stream.read1(65536) if hasattr(stream, "read1") else stream.read(65536):
            sys.stdout.buffer.write(piece)
            sys.stdout.buffer.flush()


def add_parsers(sub: Any) -> None:
    artifact = sub.add_parser("artifact", help="artifacts of Apps").add_subparsers(
        dest="artifact_command", required=True
    )
    p = artifact.add_parser("push", help="upload a file (resumable); prints its sha256")
    p.add_argument("file")
    p = artifact.add_parser("delete", help="delete an artifact no App uses")
    p.add_argument("digest")
    p = sub.add_parser("logs", help="an App's log from one node")
    p.add_argument("kind", help="app")
    p.add_argument("name")
    p.add_argument("--node", required=True, help="the node whose log to read")
    p.add_argument("--tail", type=int, default=100, help="lines from the end (0: all kept)")
    p.add_argument("-f", "--follow", action="store_true", help="keep printing new lines")

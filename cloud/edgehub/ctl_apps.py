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
import json
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


ROLLOUT_POLL: Final = 1.0


def _app_name(target: str, error: CtlErrorLike) -> str:
    """``app/NAME`` or ``NAME`` (kubectl's habit)."""
    kind, sep, name = target.partition("/")
    if not sep:
        return target
    if kind.lower() not in ("app", "apps"):
        raise error(f"rollouts are for apps, not {kind!r} (app/NAME)")
    return name


def rollout_lines(view: dict[str, Any]) -> list[str]:
    """What ``rollout status`` prints about one App's rollout."""
    status = view.get("status") or {}
    rollout = status.get("rollout")
    name = view["metadata"]["name"]
    revision = status.get("revision")
    if rollout is None:
        summary = status.get("summary") or {}
        return [
            f"app/{name} revision {revision}: {summary.get('upToDate', 0)} of "
            f"{summary.get('desired', 0)} nodes up to date, {summary.get('ready', 0)} ready "
            "(no staged strategy)"
        ]
    lines = [
        f"app/{name} revision {rollout['revision']} (from {rollout['previous']}): "
        f"{rollout['state']}"
        + (f", wave {rollout['currentWave']}" if rollout.get("currentWave") else "")
    ]
    for wave in rollout.get("waves", []):
        lines.append(
            f"  wave {wave['name']}: {len(wave['done'])} of {wave['nodes']} done, "
            f"{len(wave['pending'])} pending, {len(wave['failed'])} failed"
            + (f" ({', '.join(wave['failed'])})" if wave["failed"] else "")
        )
    if rollout.get("reason"):
        lines.append(f"  reason: {rollout['reason']}")
    return lines


def _finished(view: dict[str, Any]) -> int | None:
    """0 when the rollout completed, 1 when it was aborted, None while it goes on."""
    status = view.get("status") or {}
    rollout = status.get("rollout")
    if rollout is None:
        summary = status.get("summary") or {}
        done = summary.get("upToDate") == summary.get("desired") == summary.get("ready")
        return 0 if done else None
    return {"Complete": 0, "Aborted": 1}.get(rollout["state"])


def cmd_rollout(client: ClientLike, args: argparse.Namespace, error: CtlErrorLike) -> int:
    name = _app_name(args.target, error)
    path = f"/v1/apps/{urllib.parse.quote(name)}"
    if args.rollout_command == "status":
        deadline = None if args.timeout is None else time.monotonic() + args.timeout
        shown: list[str] = []
        while True:
            view = client.request("GET", path)
            lines = rollout_lines(view)
            if lines != shown:
                print("\n".join(lines), flush=True)
                shown = lines
            outcome = _finished(view)
            if outcome is not None:
                return outcome
            if not args.watch or (deadline is not None and time.monotonic() > deadline):
                return 2
            time.sleep(ROLLOUT_POLL)
    if args.rollout_command == "history":
        view = client.request("GET", path)
        history = (view.get("status") or {}).get("history") or []
        print(f"{'REVISION':<10}{'CREATED':<22}COMMAND")
        for entry in history:
            command = " ".join(entry["spec"].get("command") or [entry["spec"].get("image", "")])
            print(f"{entry['revision']:<10}{entry.get('created', ''):<22}{command}")
        return 0
    if args.rollout_command in ("pause", "resume"):
        view = client.request("GET", path)
        body = {k: view[k] for k in ("apiVersion", "kind", "metadata", "spec")}
        body["spec"]["paused"] = args.rollout_command == "pause"
        client.request("POST", "/v1/apply", json.dumps(body).encode())
        print(f"app/{name} {'paused' if body['spec']['paused'] else 'resumed'}")
        return 0
    query = f"?toRevision={args.to_revision}" if args.to_revision else ""
    result = client.request("POST", f"{path}/rollout/undo{query}", b"")
    print(
        f"app/{name} rolled back to revision {result['to']} (now revision {result['appRevision']})"
    )
    return 0


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
    rollout = sub.add_parser("rollout", help="staged rollouts of Apps").add_subparsers(
        dest="rollout_command", required=True
    )
    p = rollout.add_parser("status", help="watch a rollout: exit 0 when complete, 1 when aborted")
    p.add_argument("target", help="app/NAME")
    p.add_argument("--watch", action=argparse.BooleanOptionalAction, default=True)
    p.add_argument("--timeout", type=float, help="seconds to wait (exit 2 when still going)")
    for command, text in (("history", "the App's revisions"), ("pause", "move no more nodes"),
                          ("resume", "go on moving nodes")):  # fmt: skip
        p = rollout.add_parser(command, help=text)
        p.add_argument("target", help="app/NAME")
    p = rollout.add_parser("undo", help="back to the previous good revision, on every node")
    p.add_argument("target", help="app/NAME")
    p.add_argument("--to-revision", type=int, help="a revision of the history instead")

"""What survives a daemon restart: each App's state file, and ``apps.json``.

Layout in data_dir::

    apps/NAME/                      the App's work dir (its command's cwd): artifacts,
                                    Config files, whatever the App writes itself
    apps/.supervisor/NAME/          the node's own files for the App (never the App's):
        state.json                  this module's AppState
        output.log, output.log.1    its stdout/stderr (logs.py)
    apps.json                       every App's phase, for ``edgenode status``

``state.json`` is written (atomically, 0600) when an instance is about to start (its
token first, so that even a daemon killed between the start and the next write leaves a
way to find it), once it started (pid, start time), when it ended, and when the revision
counted as good changes — never per health check. It holds the restart count and last
exit (kept across daemon restarts), where the App's artifacts were placed, the Config
files written, the App's cgroup, and two revisions for rollbacks: ``current`` (what runs)
and ``good`` (the last revision that was ready for STABLE_RUN_SECONDS here, with its
resource body and artifact digests, which the artifact cache keeps).
"""

from __future__ import annotations

import contextlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from edgenode.apps.process import Instance
from edgenode.files import APPS_DIR, APPS_FILE, ensure_dir, write_bytes_atomic

SUPERVISOR_DIR: Final = ".supervisor"
STATE_FILE: Final = "state.json"
APPS_SUMMARY_FILE: Final = APPS_FILE
MAX_STATE_BYTES: Final = 4 * 1024 * 1024
"""A state file larger than this is not read (it holds at most two resource bodies)."""


def work_dir(data_dir: Path, name: str) -> Path:
    return data_dir / APPS_DIR / name


def node_dir(data_dir: Path, name: str) -> Path:
    """The node's own files for App ``name`` (state, logs)."""
    return data_dir / APPS_DIR / SUPERVISOR_DIR / name


@dataclass
class AppState:
    """One App's state as the daemon keeps it across restarts."""

    name: str
    revision: int = 0
    run_key: str = ""
    restarts: int = 0
    instance: Instance | None = None
    cgroup: dict[str, Any] | None = None
    last_exit: dict[str, Any] | None = None
    placed: dict[str, dict[str, Any]] = field(default_factory=dict)
    """Artifact name → {sha256, ino, size, mtime_ns} of the copy placed in the work dir."""
    files: list[str] = field(default_factory=list)
    """Config files written into the work dir (removed when no longer in the spec)."""
    current: dict[str, Any] | None = None
    """{revision, body} of what runs."""
    good: dict[str, Any] | None = None
    """{revision, body, digests, at} of the last revision that was good here."""

    def to_json(self) -> dict[str, Any]:
        return {
            "app": self.name,
            "revision": self.revision,
            "run_key": self.run_key,
            "restarts": self.restarts,
            "instance": self.instance.to_json() if self.instance else None,
            "cgroup": self.cgroup,
            "last_exit": self.last_exit,
            "placed": self.placed,
            "files": self.files,
            "current": self.current,
            "good": self.good,
        }

    @classmethod
    def from_json(cls, name: str, data: dict[str, Any]) -> AppState:
        def mapping(key: str) -> dict[str, Any] | None:
            value = data.get(key)
            return value if isinstance(value, dict) else None

        placed = mapping("placed") or {}
        files = data.get("files")
        restarts = data.get("restarts")
        revision = data.get("revision")
        return cls(
            name=name,
            revision=revision if isinstance(revision, int) else 0,
            run_key=str(data.get("run_key", "")),
            restarts=restarts if isinstance(restarts, int) and restarts >= 0 else 0,
            instance=Instance.from_json(data.get("instance")),
            cgroup=mapping("cgroup"),
            last_exit=mapping("last_exit"),
            placed={k: v for k, v in placed.items() if isinstance(v, dict)},
            files=[f for f in files if isinstance(f, str)] if isinstance(files, list) else [],
            current=mapping("current"),
            good=mapping("good"),
        )


def load_state(data_dir: Path, name: str) -> AppState | None:
    """The App's state file, or None (none yet, unreadable or damaged: then the App
    starts without history)."""
    try:
        with open(node_dir(data_dir, name) / STATE_FILE, "rb") as handle:
            data = json.loads(handle.read(MAX_STATE_BYTES))
    except (OSError, ValueError):
        return None
    return AppState.from_json(name, data) if isinstance(data, dict) else None


def save_state(data_dir: Path, state: AppState) -> None:
    """Write the App's state file (OSError on a full disk)."""
    folder = node_dir(data_dir, state.name)
    ensure_dir(folder)
    path = folder / STATE_FILE
    write_bytes_atomic(path, json.dumps(state.to_json(), sort_keys=True).encode())


def known_apps(data_dir: Path) -> list[str]:
    """Apps with node files (a state file or logs) in data_dir."""
    try:
        return sorted(
            entry.name
            for entry in os.scandir(data_dir / APPS_DIR / SUPERVISOR_DIR)
            if entry.is_dir()
        )
    except OSError:
        return []


def write_summary(data_dir: Path, summary: dict[str, Any]) -> None:
    """``apps.json`` (only when its content changes: flash wear)."""
    path = data_dir / APPS_SUMMARY_FILE
    data = json.dumps(summary, sort_keys=True).encode()
    with contextlib.suppress(OSError):
        if path.read_bytes() == data:
            return
    with contextlib.suppress(OSError):
        write_bytes_atomic(path, data)


def read_summary(data_dir: Path) -> dict[str, Any] | None:
    try:
        with open(data_dir / APPS_SUMMARY_FILE, "rb") as handle:
            data = json.loads(handle.read(MAX_STATE_BYTES))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None

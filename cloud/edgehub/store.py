"""The hub's resource store: resources, the revision log, per-node acks, tokens, status,
uplink dedupe and telemetry, behind the narrow ``HubStore`` interface.

``SqliteHubStore`` is the embedded default (one file in ``--data DIR``, WAL mode). A later
PostgreSQL store implements the same Protocol so several hub replicas can share one fleet;
nothing outside this module writes SQL.

Revisions: one counter for the whole store; every change of a resource's metadata or spec
(create, update, delete) takes the next revision and appends one entry to the log, holding
the new body (``None`` for a tombstone) and the previous body (so a reader can tell whether
the old version targeted a node). Status written by nodes does not take revisions: it is
not fanned out. ``compact`` drops log entries at or below a revision; a node that resumes
from before that gets a snapshot.
"""

from __future__ import annotations

import json
import os
import sqlite3
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from edgehub.kinds.base import SERVER_ANNOTATION_PREFIX, resource_key

SCHEMA_VERSION = 1
BUSY_TIMEOUT_MS = 5000
FILE_MODE = 0o600
"""``hub.db`` and its -wal and -shm files, whatever the umask: node tokens (hashed),
Config data (often secrets), twins and telemetry live there."""

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS resources (
    kind TEXT NOT NULL, name TEXT NOT NULL, revision INTEGER NOT NULL,
    generation INTEGER NOT NULL, created REAL NOT NULL, body TEXT NOT NULL,
    PRIMARY KEY (kind, name));
CREATE TABLE IF NOT EXISTS log (
    revision INTEGER PRIMARY KEY, kind TEXT NOT NULL, name TEXT NOT NULL,
    body TEXT, prev TEXT);
CREATE TABLE IF NOT EXISTS status (
    kind TEXT NOT NULL, name TEXT NOT NULL, body TEXT NOT NULL, PRIMARY KEY (kind, name));
CREATE TABLE IF NOT EXISTS acked (node TEXT PRIMARY KEY, revision INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS tokens (
    hash TEXT PRIMARY KEY, node TEXT NOT NULL, created REAL NOT NULL, revoked REAL);
CREATE INDEX IF NOT EXISTS tokens_node ON tokens (node);
CREATE TABLE IF NOT EXISTS uplink_seen (
    node TEXT NOT NULL, seq INTEGER NOT NULL, received REAL NOT NULL,
    PRIMARY KEY (node, seq)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS telemetry (
    id INTEGER PRIMARY KEY AUTOINCREMENT, node TEXT NOT NULL, device TEXT NOT NULL,
    received REAL NOT NULL, size INTEGER NOT NULL, body TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS telemetry_device ON telemetry (device, id);
CREATE TABLE IF NOT EXISTS rejections (
    node TEXT NOT NULL, key TEXT NOT NULL, revision INTEGER NOT NULL, code INTEGER NOT NULL,
    message TEXT NOT NULL, at REAL NOT NULL, PRIMARY KEY (node, key));
"""


def private_database(path: Path) -> None:
    """Make the SQLite database at ``path`` owner-only (``FILE_MODE``) whatever the umask:
    create it 0600 when missing (SQLite gives its -wal and -shm files the database's
    mode), and take the group and other bits off an existing database, -wal or -shm (as
    an older hub created them under umask 022). Best effort: opening the database reports
    what is really wrong (a missing folder, no permission). The node's store does the
    same (``edgenode._pure.store``, ``store.rs``)."""
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, FILE_MODE)
    except OSError:
        pass
    else:
        try:
            os.fchmod(fd, FILE_MODE)  # O_CREAT's mode is masked by the umask
        finally:
            os.close(fd)
    for name in (path, path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")):
        try:
            mode = os.stat(name).st_mode & 0o7777
            if mode & 0o077:
                os.chmod(name, mode & ~0o077)
        except OSError:
            continue


@dataclass(frozen=True)
class StoredResource:
    """A resource as stored: its body carries metadata.resourceVersion and generation."""

    kind: str
    name: str
    revision: int
    generation: int
    created: float
    body: dict[str, Any]

    @property
    def key(self) -> str:
        return resource_key(self.kind, self.name)


@dataclass(frozen=True)
class LogEntry:
    """One change: ``body`` is None for a deletion; ``prev`` is the version it replaced."""

    revision: int
    kind: str
    name: str
    body: dict[str, Any] | None
    prev: dict[str, Any] | None

    @property
    def key(self) -> str:
        return resource_key(self.kind, self.name)


@dataclass(frozen=True)
class TokenRecord:
    node: str
    revoked: bool


@dataclass(frozen=True)
class TelemetryRecord:
    id: int
    node: str
    device: str
    received: float
    body: dict[str, Any]


@dataclass(frozen=True)
class Rejection:
    node: str
    key: str
    revision: int
    code: int
    message: str
    at: float


Stamp = Callable[[dict[str, Any] | None, dict[str, Any], int], None]
"""``stamp(prev, body, revision)``: set server-managed values in ``body`` before it is
stored at ``revision`` (the kind's ``Kind.stamp``); called only for changed resources."""


class HubStore(Protocol):
    """What the hub needs from its store (SQLite now, PostgreSQL later)."""

    def revision(self) -> int: ...
    def compacted_revision(self) -> int: ...
    def put(
        self, resources: list[dict[str, Any]], stamp: Stamp | None = None
    ) -> list[tuple[LogEntry | None, int]]: ...
    def delete(self, kind: str, name: str) -> LogEntry | None: ...
    def get(self, kind: str, name: str) -> StoredResource | None: ...
    def list_resources(self, kind: str | None = None) -> list[StoredResource]: ...
    def log_since(self, revision: int) -> list[LogEntry]: ...
    def compact(self, up_to: int) -> int: ...
    def set_acked(self, node: str, revision: int) -> None: ...
    def acked(self) -> dict[str, int]: ...
    def add_token(self, node: str, token_hash: str) -> None: ...
    def token(self, token_hash: str) -> TokenRecord | None: ...
    def has_live_token(self, node: str) -> bool: ...
    def revoke(self, node: str) -> int: ...
    def get_status(self, kind: str, name: str) -> dict[str, Any]: ...
    def set_status(self, kind: str, name: str, status: dict[str, Any]) -> None: ...
    def all_status(self, kind: str) -> dict[str, dict[str, Any]]: ...
    def record_uplink(self, node: str, sequences: list[int]) -> set[int]: ...
    def forget_uplink_from(self, node: str, seq: int) -> int: ...
    def add_telemetry(self, node: str, device: str, body: dict[str, Any]) -> None: ...
    def telemetry(self, device: str, after_id: int, limit: int) -> list[TelemetryRecord]: ...
    def telemetry_start(
        self, device: str, after_id: int, since: float | None, tail: int | None
    ) -> int: ...
    def prune(self, max_bytes: int, max_age: float, dedupe_age: float) -> int: ...
    def reject(self, node: str, key: str, revision: int, code: int, message: str) -> None: ...
    def rejections(self, key: str) -> list[Rejection]: ...
    def close(self) -> None: ...
    def transaction(self) -> AbstractContextManager[None]: ...


def _dumps(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), sort_keys=True)


def _user_part(body: dict[str, Any]) -> dict[str, Any]:
    """What an operator sets: compared on apply to tell 'unchanged' from 'configured'
    (server-set metadata and server-managed annotations left out)."""
    metadata = {k: v for k, v in body["metadata"].items() if k in ("name", "labels")}
    annotations = {
        k: v
        for k, v in (body["metadata"].get("annotations") or {}).items()
        if not k.startswith(SERVER_ANNOTATION_PREFIX)
    }
    if annotations:
        metadata["annotations"] = annotations
    return {**body, "metadata": metadata}


class SqliteHubStore:
    """The embedded store: one SQLite file, every call one transaction."""

    def __init__(self, path: Path) -> None:
        private_database(path)
        self._db = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False)
        self._depth = 0
        self._db.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        self._db.execute("PRAGMA journal_mode = WAL")
        self._db.execute("PRAGMA synchronous = NORMAL")
        self._db.executescript(_SCHEMA)
        self._db.execute(
            "INSERT OR IGNORE INTO meta VALUES ('schema', ?), ('revision', 0), ('compacted', 0)",
            (SCHEMA_VERSION,),
        )

    def close(self) -> None:
        self._db.close()

    @contextmanager
    def transaction(self) -> Iterator[None]:
        """One write transaction; nested uses join the outer one (uplink ingest wraps the
        dedupe insert and the status writes so a crash keeps both or neither)."""
        if self._depth:
            self._depth += 1
            try:
                yield
            finally:
                self._depth -= 1
            return
        self._db.execute("BEGIN IMMEDIATE")
        self._depth = 1
        try:
            yield
        except BaseException:
            self._depth = 0
            self._db.execute("ROLLBACK")
            raise
        self._depth = 0
        self._db.execute("COMMIT")

    def _meta(self, key: str) -> int:
        row = self._db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return int(row[0])

    def revision(self) -> int:
        return self._meta("revision")

    def compacted_revision(self) -> int:
        return self._meta("compacted")

    def put(
        self, resources: list[dict[str, Any]], stamp: Stamp | None = None
    ) -> list[tuple[LogEntry | None, int]]:
        """Create or update validated resources in one transaction. For each: the log entry
        (None when nothing changed) and the resource's revision. ``stamp`` writes the
        server-managed values of each changed resource."""
        results: list[tuple[LogEntry | None, int]] = []
        db = self._db
        with self.transaction():
            revision = self._meta("revision")
            for body in resources:
                kind, name = body["kind"], body["metadata"]["name"]
                row = db.execute(
                    "SELECT revision, generation, created, body FROM resources "
                    "WHERE kind = ? AND name = ?",
                    (kind, name),
                ).fetchone()
                prev = None if row is None else json.loads(row[3])
                if prev is not None and _user_part(prev) == _user_part_of_new(prev, body):
                    results.append((None, int(row[0])))
                    continue
                revision += 1
                generation = (
                    1
                    if row is None or prev is None
                    else int(row[1]) + (prev["spec"] != body["spec"])
                )
                created = time.time() if row is None else float(row[2])
                stored = json.loads(_dumps(body))
                if stamp is not None:
                    stamp(prev, stored, revision)
                stored["metadata"]["resourceVersion"] = str(revision)
                stored["metadata"]["generation"] = generation
                db.execute(
                    "INSERT OR REPLACE INTO resources VALUES (?, ?, ?, ?, ?, ?)",
                    (kind, name, revision, generation, created, _dumps(stored)),
                )
                db.execute(
                    "INSERT INTO log VALUES (?, ?, ?, ?, ?)",
                    (revision, kind, name, _dumps(stored), None if row is None else row[3]),
                )
                results.append((LogEntry(revision, kind, name, stored, prev), revision))
            db.execute("UPDATE meta SET value = ? WHERE key = 'revision'", (revision,))
        return results

    def delete(self, kind: str, name: str) -> LogEntry | None:
        db = self._db
        with self.transaction():
            row = db.execute(
                "SELECT body FROM resources WHERE kind = ? AND name = ?", (kind, name)
            ).fetchone()
            if row is None:
                return None
            revision = self._meta("revision") + 1
            db.execute("DELETE FROM resources WHERE kind = ? AND name = ?", (kind, name))
            db.execute("DELETE FROM status WHERE kind = ? AND name = ?", (kind, name))
            db.execute("INSERT INTO log VALUES (?, ?, ?, NULL, ?)", (revision, kind, name, row[0]))
            db.execute("UPDATE meta SET value = ? WHERE key = 'revision'", (revision,))
        return LogEntry(revision, kind, name, None, json.loads(row[0]))

    def _row(self, row: Any) -> StoredResource:
        return StoredResource(
            row[0], row[1], int(row[2]), int(row[3]), float(row[4]), json.loads(row[5])
        )

    def get(self, kind: str, name: str) -> StoredResource | None:
        row = self._db.execute(
            "SELECT kind, name, revision, generation, created, body FROM resources "
            "WHERE kind = ? AND name = ?",
            (kind, name),
        ).fetchone()
        return None if row is None else self._row(row)

    def list_resources(self, kind: str | None = None) -> list[StoredResource]:
        sql = "SELECT kind, name, revision, generation, created, body FROM resources"
        if kind is None:
            rows = self._db.execute(sql + " ORDER BY kind, name").fetchall()
        else:
            rows = self._db.execute(sql + " WHERE kind = ? ORDER BY name", (kind,)).fetchall()
        return [self._row(row) for row in rows]

    def log_since(self, revision: int) -> list[LogEntry]:
        rows = self._db.execute(
            "SELECT revision, kind, name, body, prev FROM log WHERE revision > ? ORDER BY revision",
            (revision,),
        ).fetchall()
        return [
            LogEntry(
                int(r[0]),
                r[1],
                r[2],
                None if r[3] is None else json.loads(r[3]),
                None if r[4] is None else json.loads(r[4]),
            )
            for r in rows
        ]

    def compact(self, up_to: int) -> int:
        """Drop log entries at or below ``up_to`` (never past the current revision)."""
        up_to = min(up_to, self.revision())
        if up_to <= self.compacted_revision():
            return 0
        db = self._db
        with self.transaction():
            cursor = db.execute("DELETE FROM log WHERE revision <= ?", (up_to,))
            db.execute("UPDATE meta SET value = ? WHERE key = 'compacted'", (up_to,))
        return int(cursor.rowcount)

    def set_acked(self, node: str, revision: int) -> None:
        self._db.execute(
            "INSERT INTO acked VALUES (?, ?) ON CONFLICT (node) DO UPDATE SET revision = ?",
            (node, revision, revision),
        )

    def acked(self) -> dict[str, int]:
        return {r[0]: int(r[1]) for r in self._db.execute("SELECT node, revision FROM acked")}

    def add_token(self, node: str, token_hash: str) -> None:
        self._db.execute(
            "INSERT INTO tokens VALUES (?, ?, ?, NULL)", (token_hash, node, time.time())
        )

    def token(self, token_hash: str) -> TokenRecord | None:
        row = self._db.execute(
            "SELECT node, revoked FROM tokens WHERE hash = ?", (token_hash,)
        ).fetchone()
        return None if row is None else TokenRecord(row[0], row[1] is not None)

    def has_live_token(self, node: str) -> bool:
        row = self._db.execute(
            "SELECT 1 FROM tokens WHERE node = ? AND revoked IS NULL", (node,)
        ).fetchone()
        return row is not None

    def revoke(self, node: str) -> int:
        cursor = self._db.execute(
            "UPDATE tokens SET revoked = ? WHERE node = ? AND revoked IS NULL", (time.time(), node)
        )
        return int(cursor.rowcount)

    def get_status(self, kind: str, name: str) -> dict[str, Any]:
        row = self._db.execute(
            "SELECT body FROM status WHERE kind = ? AND name = ?", (kind, name)
        ).fetchone()
        return {} if row is None else dict(json.loads(row[0]))

    def set_status(self, kind: str, name: str, status: dict[str, Any]) -> None:
        self._db.execute(
            "INSERT OR REPLACE INTO status VALUES (?, ?, ?)", (kind, name, _dumps(status))
        )

    def all_status(self, kind: str) -> dict[str, dict[str, Any]]:
        rows = self._db.execute("SELECT name, body FROM status WHERE kind = ?", (kind,))
        return {r[0]: json.loads(r[1]) for r in rows}

    def record_uplink(self, node: str, sequences: list[int]) -> set[int]:
        """Remember (node, seq) pairs; returns the sequences not seen before."""
        fresh: set[int] = set()
        now = time.time()
        db = self._db
        with self.transaction():
            for seq in sequences:
                cursor = db.execute(
                    "INSERT OR IGNORE INTO uplink_seen VALUES (?, ?, ?)", (node, seq, now)
                )
                if cursor.rowcount:
                    fresh.add(seq)
        return fresh

    def forget_uplink_from(self, node: str, seq: int) -> int:
        """Forget the node's sequences ``>= seq`` (its store restarted below them: a
        restored backup or a new file); how many were forgotten."""
        db = self._db
        seen = db.execute(
            "SELECT 1 FROM uplink_seen WHERE node = ? AND seq >= ? LIMIT 1", (node, seq)
        ).fetchone()
        if seen is None:  # the usual case: a read, no write on every handshake
            return 0
        with self.transaction():
            return int(
                db.execute(
                    "DELETE FROM uplink_seen WHERE node = ? AND seq >= ?", (node, seq)
                ).rowcount
            )

    def add_telemetry(self, node: str, device: str, body: dict[str, Any]) -> None:
        text = _dumps(body)
        self._db.execute(
            "INSERT INTO telemetry (node, device, received, size, body) VALUES (?, ?, ?, ?, ?)",
            (node, device, time.time(), len(text), text),
        )

    def telemetry(self, device: str, after_id: int, limit: int) -> list[TelemetryRecord]:
        rows = self._db.execute(
            "SELECT id, node, device, received, body FROM telemetry "
            "WHERE device = ? AND id > ? ORDER BY id LIMIT ?",
            (device, after_id, limit),
        ).fetchall()
        return [TelemetryRecord(int(r[0]), r[1], r[2], float(r[3]), json.loads(r[4])) for r in rows]

    def telemetry_start(
        self, device: str, after_id: int, since: float | None, tail: int | None
    ) -> int:
        """Where a read of ``device``'s telemetry after ``after_id`` starts (the id to read
        after) to show only records received at or after ``since`` (a Unix time) and, of
        those, only the newest ``tail``."""
        db = self._db
        start = after_id
        if since is not None:
            first = db.execute(
                "SELECT MIN(id) FROM telemetry WHERE device = ? AND id > ? AND received >= ?",
                (device, start, since),
            ).fetchone()[0]
            if first is not None:
                start = int(first) - 1
            else:  # nothing that recent: start after the newest record
                last = db.execute(
                    "SELECT MAX(id) FROM telemetry WHERE device = ?", (device,)
                ).fetchone()[0]
                start = max(start, int(last or 0))
        if tail is not None:
            if tail == 0:
                last = db.execute(
                    "SELECT MAX(id) FROM telemetry WHERE device = ?", (device,)
                ).fetchone()[0]
                return max(start, int(last or 0))
            row = db.execute(
                "SELECT id FROM telemetry WHERE device = ? AND id > ? "
                "ORDER BY id DESC LIMIT 1 OFFSET ?",
                (device, start, tail - 1),
            ).fetchone()
            if row is not None:
                start = int(row[0]) - 1
        return start

    def prune(self, max_bytes: int, max_age: float, dedupe_age: float) -> int:
        """Telemetry retention (oldest first past ``max_bytes``, anything older than
        ``max_age``) and the uplink dedupe window; returns telemetry rows dropped."""
        now = time.time()
        db = self._db
        dropped = db.execute("DELETE FROM telemetry WHERE received < ?", (now - max_age,)).rowcount
        total = db.execute("SELECT COALESCE(SUM(size), 0) FROM telemetry").fetchone()[0]
        if total > max_bytes:
            # Walk from the newest back until the budget is spent; drop everything older.
            kept = 0
            cutoff = None
            for row_id, size in db.execute("SELECT id, size FROM telemetry ORDER BY id DESC"):
                kept += size
                if kept > max_bytes:
                    cutoff = row_id
                    break
            if cutoff is not None:
                dropped += db.execute("DELETE FROM telemetry WHERE id <= ?", (cutoff,)).rowcount
        db.execute("DELETE FROM uplink_seen WHERE received < ?", (now - dedupe_age,))
        return int(dropped)

    def reject(self, node: str, key: str, revision: int, code: int, message: str) -> None:
        self._db.execute(
            "INSERT OR REPLACE INTO rejections VALUES (?, ?, ?, ?, ?, ?)",
            (node, key, revision, code, message, time.time()),
        )

    def rejections(self, key: str) -> list[Rejection]:
        rows = self._db.execute(
            "SELECT node, key, revision, code, message, at FROM rejections WHERE key = ? "
            "ORDER BY node",
            (key,),
        ).fetchall()
        return [Rejection(r[0], r[1], int(r[2]), int(r[3]), r[4], float(r[5])) for r in rows]


def _user_part_of_new(prev: dict[str, Any], body: dict[str, Any]) -> dict[str, Any]:
    del prev
    return _user_part(json.loads(_dumps(body)))

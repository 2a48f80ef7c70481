"""The node's durable store in pure Python: the executable spec of ``store.rs``.

One SQLite database in WAL mode holds the desired-state cache (resources by key,
with tombstones), the device twins and the outbox (everything the node sends up,
with a unique increasing sequence number, a priority 0..9 and an optional TTL).
Both backends use exactly the same schema and file format (see ``SCHEMA_SQL``;
``crates/edgecore_fast/src/store.rs`` holds a textually identical copy).

Time comes from the *store clock*: a value persisted in the database plus the
monotonic time elapsed since open. Wall-clock time is never read, so a clock
jump changes nothing and time spent powered off does not count: an expiry may be
delayed, never advanced. Every time-dependent method takes ``now`` (store
seconds) to make tests deterministic.

This module must not decide *what* to send or keep: it stores, orders, bounds and
counts; the sync layer decides.
"""

from __future__ import annotations

import json
import math
import os
import sqlite3
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from typing import Any, Final, TypeVar

from edgenode.errors import ConfigError, OutboxFullError, StoreCorruptError, StoreError

SCHEMA_VERSION: Final = 4
DEFAULT_OUTBOX_MAX_BYTES: Final = 64 * 1024 * 1024

MIN_PRIORITY: Final = 0  # most urgent, sent first
MAX_PRIORITY: Final = 9
I64_MAX: Final = 2**63 - 1
# Bounds of the WAL file: SQLite's own auto-checkpoint (pages), the size the WAL
# is truncated back to after a checkpoint, and our own passive checkpoint cadence.
PAGE_SIZE_BYTES: Final = 1024
"""Page size of new database files (an existing file keeps its own): every page a commit
changes is one WAL frame of this size, so small pages write less flash per commit."""
WAL_AUTOCHECKPOINT_PAGES: Final = 1000
JOURNAL_SIZE_LIMIT_BYTES: Final = 4 * 1024 * 1024
PASSIVE_CHECKPOINT_EVERY_WRITES: Final = 500
CLOCK_PERSIST_SECONDS: Final = 60.0
"""A transaction that appends records skips the meta row (one WAL frame less per commit)
unless the store clock moved this much since the row was last written; the file's meta
is repaired at open from the newest record (sequence, time) and the outbox's size."""
MAX_COALESCE_KEYS: Final = 100_000
"""Coalesce keys the in-memory lookup holds before it is rebuilt from the outbox (keys
of records gone since are dropped then)."""
MAX_DEFERRED_ACKS: Final = 10_000
"""Records acknowledged with ``ack_deferred`` that wait for the next write transaction;
beyond this many they are deleted at once (one transaction)."""
BUSY_TIMEOUT_MS: Final = 5000
SYNCHRONOUS_MODES: Final = ("normal", "full")
# salvage: after an unreadable row, probe further rowids at doubling distances.
SALVAGE_MAX_SKIP: Final = 2**62
FILE_MODE: Final = 0o600
"""The mode of the database and its -wal and -shm files, whatever the process umask:
they hold Config data (often secrets), twins and the outbox."""

# The current schema, executed as one script when a file is created. Keep it
# byte for byte identical to SCHEMA_SQL in crates/edgecore_fast/src/store.rs.
SCHEMA_SQL: Final = """\
CREATE TABLE meta (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    applied_revision INTEGER NOT NULL,
    next_seq INTEGER NOT NULL,
    outbox_bytes INTEGER NOT NULL,
    dropped_expired INTEGER NOT NULL,
    dropped_quota INTEGER NOT NULL,
    rejected INTEGER NOT NULL,
    coalesced INTEGER NOT NULL,
    clock REAL NOT NULL DEFAULT 0
);
INSERT INTO meta VALUES (1, 0, 1, 0, 0, 0, 0, 0, 0.0);
CREATE TABLE resources (
    key TEXT PRIMARY KEY NOT NULL,
    revision INTEGER NOT NULL,
    data BLOB
);
CREATE TABLE twins (
    device TEXT PRIMARY KEY NOT NULL,
    doc BLOB NOT NULL
);
CREATE TABLE outbox (
    seq INTEGER PRIMARY KEY,
    priority INTEGER NOT NULL,
    created REAL NOT NULL,
    expires REAL,
    payload BLOB NOT NULL,
    coalesce_key TEXT
);
CREATE INDEX outbox_order ON outbox (priority, seq);
CREATE INDEX outbox_expiry ON outbox (expires) WHERE expires IS NOT NULL;
CREATE TABLE drops (
    priority INTEGER PRIMARY KEY,
    expired INTEGER NOT NULL,
    quota INTEGER NOT NULL
);
"""

# Schema version 1, the previous layout (no store clock, no coalescing). Kept so
# migrations can be tested; identical in store.rs.
SCHEMA_V1_SQL: Final = """\
CREATE TABLE meta (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    applied_revision INTEGER NOT NULL,
    next_seq INTEGER NOT NULL,
    outbox_bytes INTEGER NOT NULL,
    dropped_expired INTEGER NOT NULL,
    dropped_quota INTEGER NOT NULL,
    rejected INTEGER NOT NULL,
    coalesced INTEGER NOT NULL
);
INSERT INTO meta VALUES (1, 0, 1, 0, 0, 0, 0, 0);
CREATE TABLE resources (
    key TEXT PRIMARY KEY NOT NULL,
    revision INTEGER NOT NULL,
    data BLOB
);
CREATE TABLE twins (
    device TEXT PRIMARY KEY NOT NULL,
    doc BLOB NOT NULL
);
CREATE TABLE outbox (
    seq INTEGER PRIMARY KEY,
    priority INTEGER NOT NULL,
    created REAL NOT NULL,
    expires REAL,
    payload BLOB NOT NULL
);
CREATE INDEX outbox_order ON outbox (priority, seq);
CREATE INDEX outbox_expiry ON outbox (expires) WHERE expires IS NOT NULL;
"""

# MIGRATIONS[v] upgrades a file from schema version v to v + 1.
MIGRATIONS: Final = {
    1: """\
ALTER TABLE meta ADD COLUMN clock REAL NOT NULL DEFAULT 0;
ALTER TABLE outbox ADD COLUMN coalesce_key TEXT;
CREATE INDEX outbox_coalesce ON outbox (coalesce_key) WHERE coalesce_key IS NOT NULL;
""",
    2: """\
CREATE TABLE drops (
    priority INTEGER PRIMARY KEY,
    expired INTEGER NOT NULL,
    quota INTEGER NOT NULL
);
""",
    # The coalescing lookup moved to memory (Store._coalesce): one index less to write
    # per appended record.
    3: """DROP INDEX IF EXISTS outbox_coalesce;
""",
}
UPSERT_DROPS: Final = (
    "INSERT INTO drops (priority, expired, quota) VALUES (?, ?, ?) "
    "ON CONFLICT (priority) DO UPDATE SET expired = expired + excluded.expired, "
    "quota = quota + excluded.quota"
)

META_COLUMNS: Final = (
    "applied_revision, next_seq, outbox_bytes, dropped_expired, dropped_quota, "
    "rejected, coalesced, clock"
)

# Primary SQLite result codes -> the fixed text both backends put in messages.
SQLITE_CORRUPT: Final = 11
SQLITE_NOTADB: Final = 26
SQLITE_CODE_TEXT: Final = {
    3: "access permission denied",
    5: "database is locked",
    6: "database table is locked",
    8: "attempt to write a readonly database",
    10: "disk I/O error",
    11: "database disk image is malformed",
    13: "database or disk is full",
    14: "unable to open database file",
    26: "file is not a database",
}

T = TypeVar("T")


@dataclass
class _Meta:
    """The single meta row, mirrored in memory. Written by every transaction that changes
    more than what the file can be repaired from at open (see ``_repair_meta``)."""

    applied_revision: int
    next_seq: int
    outbox_bytes: int
    dropped_expired: int
    dropped_quota: int
    rejected: int
    coalesced: int
    clock: float


def _code_text(code: int) -> str:
    return SQLITE_CODE_TEXT.get(code & 0xFF, f"SQLite error code {code & 0xFF}")


def _translate(path: str, err: sqlite3.Error) -> StoreError:
    """Map a sqlite3 error to StoreCorruptError / StoreError with a fixed message."""
    code = getattr(err, "sqlite_errorcode", None)
    if code is None:
        return StoreError(f"{path}: {err}")
    if code & 0xFF in (SQLITE_CORRUPT, SQLITE_NOTADB):
        return StoreCorruptError(f"{path}: store is damaged ({_code_text(code)})")
    return StoreError(f"{path}: {_code_text(code)}")


def _type_name(value: object) -> str:
    return type(value).__name__


def _check_int(value: object, what: str, lo: int, hi: int) -> int:
    if not isinstance(value, int):
        raise TypeError(f"{what} must be int, not {_type_name(value)}")
    if not lo <= value <= hi:
        raise ValueError(f"{what} must be in {lo}..{hi}, got {value}")
    return value


def _check_str(value: object, what: str) -> str:
    if not isinstance(value, str):
        raise TypeError(f"{what} must be str, not {_type_name(value)}")
    return value


def _check_bytes(value: object, what: str) -> bytes:
    if not isinstance(value, bytes):
        raise TypeError(f"{what} must be bytes, not {_type_name(value)}")
    return value


def _check_float(value: object, what: str) -> float:
    if not isinstance(value, int | float):
        raise TypeError(f"{what} must be a number, not {_type_name(value)}")
    number = float(value)
    if not math.isfinite(number):
        raise ValueError(f"{what} must be a finite number, got {value!r}")
    return number


def _check_ttl(value: object) -> float | None:
    if value is None:
        return None
    ttl = _check_float(value, "ttl")
    if ttl <= 0:
        raise ValueError(f"ttl must be > 0 seconds, got {value!r}")
    return ttl


def _check_tuple(value: object, size: int, shape: str) -> tuple[Any, ...]:
    if not isinstance(value, tuple) or len(value) != size:
        raise TypeError(f"each item must be a {shape} tuple, not {_type_name(value)}")
    return value


class Store:
    """The node's SQLite database (WAL): desired cache, twins, outbox."""

    def __init__(
        self,
        path: str,
        *,
        synchronous: str = "normal",
        outbox_max_bytes: int = DEFAULT_OUTBOX_MAX_BYTES,
    ) -> None:
        path = _check_str(path, "path")
        if synchronous not in SYNCHRONOUS_MODES:
            raise ConfigError(f"synchronous must be 'normal' or 'full', got {synchronous!r}")
        if (
            not isinstance(outbox_max_bytes, int)
            or isinstance(outbox_max_bytes, bool)
            or not 1 <= outbox_max_bytes <= I64_MAX
        ):
            raise ConfigError(f"outbox_max_bytes must be a positive int, got {outbox_max_bytes!r}")
        if "\x00" in path:
            raise ConfigError("store path must not contain a NUL character")
        self._path = path
        self._max_bytes = outbox_max_bytes
        # One connection shared by threads: the lock serialises transactions, as the
        # Rust backend's mutex does.
        self._lock = threading.RLock()
        self._writes_since_checkpoint = 0
        self._db: sqlite3.Connection | None = None
        try:
            _check_integrity(path)
            _private_files(path)
            db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        except sqlite3.Error as err:
            raise _translate(path, err) from None
        try:
            _configure(db, synchronous)
            _create_or_migrate(db, path)
            self._meta = _repair_meta(db, _read_meta(db))
            coalesce = _coalesce_keys(db)
        except sqlite3.Error as err:
            db.close()
            raise _translate(path, err) from None
        except BaseException:
            db.close()
            raise
        self._db = db
        self._clock_base = self._meta.clock
        self._mono_start = time.monotonic()
        self._persisted = replace(self._meta)
        """The meta values the file holds (or that ``_repair_meta`` derives from it)."""
        self._deferred: dict[int, int] = {}
        """Acknowledged records (seq → payload bytes) deleted by the next transaction."""
        self._in_flight: frozenset[int] = frozenset()
        """Records on the wire: neither evicted by the quota nor expired nor coalesced."""
        self._coalesce = coalesce
        """Coalesce key → sequence numbers of records with it: every stored record with a
        key is there (a number may be stale: its record went; checked when used)."""

    # ------------------------------------------------------------ plumbing --

    @property
    def path(self) -> str:
        return self._path

    def _conn(self) -> sqlite3.Connection:
        if self._db is None:
            raise StoreError("store is closed")
        return self._db

    def _now(self, now: object) -> float:
        if now is None:
            return self.clock()
        return _check_float(now, "now")

    def _read(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        with self._lock:
            db = self._conn()
            try:
                return fn(db)
            except sqlite3.Error as err:
                raise _translate(self._path, err) from None

    def _write(self, now: float, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``fn`` in one write transaction that also persists the meta row."""
        with self._lock:
            return self._write_locked(now, fn)

    def _write_locked(self, now: float, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Deferred acks first, then ``fn``, then the meta row where it must be written,
        in one transaction."""
        db = self._conn()
        saved = replace(self._meta)
        deferred = self._deferred
        try:
            db.execute("BEGIN IMMEDIATE")
            try:
                if deferred:
                    self._deferred = {}
                    self._delete_acked(db, list(deferred))
                result = fn(db)
                self._meta.clock = max(self._meta.clock, now)
                m = self._meta
                if self._meta_due(saved.next_seq):
                    db.execute(
                        "UPDATE meta SET applied_revision = ?, next_seq = ?, outbox_bytes = ?, "
                        "dropped_expired = ?, dropped_quota = ?, rejected = ?, coalesced = ?, "
                        "clock = ? WHERE id = 1",
                        (
                            m.applied_revision,
                            m.next_seq,
                            m.outbox_bytes,
                            m.dropped_expired,
                            m.dropped_quota,
                            m.rejected,
                            m.coalesced,
                            m.clock,
                        ),
                    )
                    written = replace(m)
                else:
                    written = self._persisted
                db.execute("COMMIT")
                self._persisted = written
            except BaseException:
                self._meta = saved
                self._deferred = deferred | self._deferred
                if db.in_transaction:
                    db.execute("ROLLBACK")
                raise
            self._writes_since_checkpoint += 1
            if self._writes_since_checkpoint >= PASSIVE_CHECKPOINT_EVERY_WRITES:
                self._writes_since_checkpoint = 0
                db.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
        except sqlite3.Error as err:
            raise _translate(self._path, err) from None
        return result

    def _meta_due(self, next_seq_before: int) -> bool:
        """Must this transaction write the meta row? Not when it appended records
        (``next_seq`` moved past ``next_seq_before``) and changed nothing else but the
        sequence counter, the outbox's size and (by less than ``CLOCK_PERSIST_SECONDS``)
        the clock: ``_repair_meta`` finds those again at open from the newest record,
        which has a sequence number past the file's."""
        m, p = self._meta, self._persisted
        return (
            m.next_seq == next_seq_before
            or m.applied_revision != p.applied_revision
            or m.dropped_expired != p.dropped_expired
            or m.dropped_quota != p.dropped_quota
            or m.rejected != p.rejected
            or m.coalesced != p.coalesced
            or m.clock - p.clock >= CLOCK_PERSIST_SECONDS
        )

    def _delete_acked(self, db: sqlite3.Connection, seqs: list[int]) -> int:
        """Inside a write transaction: delete these records; how many were there."""
        deleted = 0
        freed = 0
        for seq in seqs:
            for (length,) in db.execute(
                "DELETE FROM outbox WHERE seq = ? RETURNING length(payload)", (seq,)
            ):
                deleted += 1
                freed += length
        self._meta.outbox_bytes -= freed
        return deleted

    def _hidden_json(self) -> str:
        """The records reads must skip or writes must spare, as a JSON array for
        ``json_each``: acknowledged (deferred) and in flight."""
        return json.dumps(sorted(self._deferred.keys() | self._in_flight))

    def close(self) -> None:
        """Delete deferred acks, persist the meta row and the clock, close; idempotent."""
        with self._lock:
            db = self._db
            if db is None:
                return
            try:
                self._write(self.clock(), lambda _db: None)
            finally:
                self._db = None
                db.close()

    def clock(self) -> float:
        """Store time in seconds: monotonic within a run, carried across restarts."""
        self._conn()
        elapsed = time.monotonic() - self._mono_start
        return max(self._clock_base + elapsed, self._meta.clock)

    def checkpoint(self) -> None:
        """Copy the WAL into the database and truncate the WAL file to zero bytes."""
        self._read(lambda db: db.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall())

    # ------------------------------------------------------ desired state --

    def applied_revision(self) -> int:
        self._conn()
        return self._meta.applied_revision

    def next_seq(self) -> int:
        self._conn()
        return self._meta.next_seq

    def reserve_seq(self) -> int:
        """Take the next sequence number for a record sent without being stored (a
        sample), writing nothing; the next write transaction or ``close`` persists the
        counter. After a crash before that the file's ``next_seq`` is at or below the
        taken number, which the node's hello tells the hub (it forgets from there)."""
        with self._lock:
            self._conn()
            seq = self._meta.next_seq
            self._meta.next_seq += 1
            return seq

    def _check_not_older(self, revision: int) -> None:
        """Checked inside the write transaction, so concurrent callers cannot race it."""
        if revision < self._meta.applied_revision:
            raise ValueError(
                f"revision {revision} is older than the applied revision "
                f"{self._meta.applied_revision}"
            )

    def apply_changes(
        self, changes: Iterable[tuple[str, int, bytes | None]], revision: int
    ) -> None:
        """Upsert or tombstone each change and set the applied revision, atomically."""
        self._conn()
        rows: list[tuple[str, int, bytes | None]] = []
        for change in changes:
            key, rev, data = _check_tuple(change, 3, "(key, revision, data)")
            _check_str(key, "key")
            _check_int(rev, "revision", 0, I64_MAX)
            if data is not None:
                _check_bytes(data, "data")
            rows.append((key, rev, data))
        new_revision = _check_int(revision, "revision", 0, I64_MAX)

        def run(db: sqlite3.Connection) -> None:
            self._check_not_older(new_revision)
            db.executemany(
                "INSERT INTO resources (key, revision, data) VALUES (?, ?, ?) "
                "ON CONFLICT (key) DO UPDATE SET revision = excluded.revision, "
                "data = excluded.data",
                rows,
            )
            self._meta.applied_revision = new_revision

        self._write(self.clock(), run)

    def replace_all(self, resources: Iterable[tuple[str, int, bytes]], revision: int) -> None:
        """Replace the whole cache with exactly ``resources`` (a snapshot); the revision may
        be older than the applied one (a hub restored from a backup)."""
        self._conn()
        rows: list[tuple[str, int, bytes]] = []
        for resource in resources:
            key, rev, data = _check_tuple(resource, 3, "(key, revision, data)")
            rows.append(
                (
                    _check_str(key, "key"),
                    _check_int(rev, "revision", 0, I64_MAX),
                    _check_bytes(data, "data"),
                )
            )
        new_revision = _check_int(revision, "revision", 0, I64_MAX)

        def run(db: sqlite3.Connection) -> None:
            # No "not older" check: a snapshot is authoritative and may move the revision
            # backwards (a hub restored from a backup, docs/protocol.md).
            db.execute("DELETE FROM resources")
            db.executemany(
                "INSERT INTO resources (key, revision, data) VALUES (?, ?, ?) "
                "ON CONFLICT (key) DO UPDATE SET revision = excluded.revision, "
                "data = excluded.data",
                rows,
            )
            self._meta.applied_revision = new_revision

        self._write(self.clock(), run)

    def get_resource(self, key: str) -> tuple[int, bytes | None] | None:
        self._conn()
        _check_str(key, "key")
        row = self._read(
            lambda db: db.execute(
                "SELECT revision, data FROM resources WHERE key = ?", (key,)
            ).fetchone()
        )
        return None if row is None else (row[0], row[1])

    def list_resources(
        self, *, include_tombstones: bool = False
    ) -> list[tuple[str, int, bytes | None]]:
        self._conn()
        sql = "SELECT key, revision, data FROM resources"
        if not include_tombstones:
            sql += " WHERE data IS NOT NULL"
        sql += " ORDER BY key"
        rows = self._read(lambda db: db.execute(sql).fetchall())
        return [(key, rev, data) for key, rev, data in rows]

    # -------------------------------------------------------------- twins --

    def put_twin(self, device: str, doc: bytes) -> None:
        self._conn()
        _check_str(device, "device")
        _check_bytes(doc, "doc")
        self._write(
            self.clock(),
            lambda db: db.execute(
                "INSERT INTO twins (device, doc) VALUES (?, ?) "
                "ON CONFLICT (device) DO UPDATE SET doc = excluded.doc",
                (device, doc),
            ),
        )

    def get_twin(self, device: str) -> bytes | None:
        self._conn()
        _check_str(device, "device")
        row = self._read(
            lambda db: db.execute("SELECT doc FROM twins WHERE device = ?", (device,)).fetchone()
        )
        return None if row is None else bytes(row[0])

    def list_twins(self) -> list[str]:
        rows = self._read(
            lambda db: db.execute("SELECT device FROM twins ORDER BY device").fetchall()
        )
        return [row[0] for row in rows]

    def delete_twin(self, device: str) -> bool:
        self._conn()
        _check_str(device, "device")
        deleted = self._write(
            self.clock(),
            lambda db: db.execute("DELETE FROM twins WHERE device = ?", (device,)).rowcount,
        )
        return deleted > 0

    # ------------------------------------------------------------- outbox --

    def append(
        self,
        payload: bytes,
        priority: int = 5,
        ttl: float | None = None,
        *,
        coalesce_key: str | None = None,
        now: float | None = None,
    ) -> int:
        """Append one record durably and return its sequence number."""
        self._conn()
        record = (
            _check_bytes(payload, "payload"),
            _check_int(priority, "priority", MIN_PRIORITY, MAX_PRIORITY),
            _check_ttl(ttl),
        )
        if coalesce_key is not None:
            _check_str(coalesce_key, "coalesce_key")
        return self._append([record], coalesce_key, self._now(now))[0]

    def append_many(
        self,
        records: Iterable[tuple[bytes, int, float | None]],
        *,
        now: float | None = None,
    ) -> list[int]:
        """Append all records in one transaction (all or nothing); their sequence numbers."""
        self._conn()
        checked: list[tuple[bytes, int, float | None]] = []
        for record in records:
            payload, priority, ttl = _check_tuple(record, 3, "(payload, priority, ttl)")
            checked.append(
                (
                    _check_bytes(payload, "payload"),
                    _check_int(priority, "priority", MIN_PRIORITY, MAX_PRIORITY),
                    _check_ttl(ttl),
                )
            )
        t = self._now(now)
        if not checked:
            return []
        return self._append(checked, None, t)

    def _expire_in(self, db: sqlite3.Connection, t: float) -> int:
        # Records in flight are spared: the hub may have them already (its ack deletes
        # them; after a lost connection they expire at the next check).
        rows = db.execute(
            "DELETE FROM outbox WHERE expires IS NOT NULL AND expires <= ? "
            "AND seq NOT IN (SELECT value FROM json_each(?)) "
            "RETURNING priority, length(payload)",
            (t, self._hidden_json()),
        ).fetchall()
        self._meta.outbox_bytes -= sum(row[1] for row in rows)
        self._meta.dropped_expired += len(rows)
        _count_drops(db, [priority for priority, _ in rows], expired=True)
        return len(rows)

    def commit_batch(
        self,
        twins: Iterable[tuple[str, bytes]],
        records: Iterable[tuple[bytes, int, float | None, str | None]],
        *,
        now: float | None = None,
    ) -> list[int | None]:
        """Append ``records`` one by one as ``append`` would, then upsert ``twins``, all in
        one transaction; per record its sequence number, or None where the quota policy
        refused it (counted in ``rejected``, as ``append`` counts it)."""
        self._conn()
        docs: list[tuple[str, bytes]] = []
        for twin in twins:
            device, doc = _check_tuple(twin, 2, "(device, doc)")
            docs.append((_check_str(device, "device"), _check_bytes(doc, "doc")))
        checked: list[tuple[tuple[bytes, int, float | None], str | None]] = []
        for record in records:
            payload, priority, ttl, key = _check_tuple(
                record, 4, "(payload, priority, ttl, coalesce_key)"
            )
            row = (
                _check_bytes(payload, "payload"),
                _check_int(priority, "priority", MIN_PRIORITY, MAX_PRIORITY),
                _check_ttl(ttl),
            )
            checked.append((row, None if key is None else _check_str(key, "coalesce_key")))
        t = self._now(now)
        if not docs and not checked:
            return []

        def run(db: sqlite3.Connection) -> list[int | None]:
            seqs: list[int | None] = []
            for row, key in checked:
                refused: list[str] = []
                appended = self._append_in(db, [row], key, t, refused)
                seqs.append(None if refused else appended[0])
            db.executemany(
                "INSERT INTO twins (device, doc) VALUES (?, ?) "
                "ON CONFLICT (device) DO UPDATE SET doc = excluded.doc",
                docs,
            )
            return seqs

        return self._write(t, run)

    def _append(
        self,
        records: list[tuple[bytes, int, float | None]],
        coalesce_key: str | None,
        t: float,
    ) -> list[int]:
        failure: list[str] = []
        seqs = self._write(t, lambda db: self._append_in(db, records, coalesce_key, t, failure))
        if failure:
            raise OutboxFullError(failure[0])
        return seqs

    def _append_in(
        self,
        db: sqlite3.Connection,
        records: list[tuple[bytes, int, float | None]],
        coalesce_key: str | None,
        t: float,
        failure: list[str],
    ) -> list[int]:
        """Inside a write transaction: coalesce, make room and append ``records``; or, if
        the quota refuses them, count them, add the reason to ``failure`` and return []."""
        incoming = sum(len(payload) for payload, _, _ in records)
        largest = max(len(payload) for payload, _, _ in records)
        # The least urgent record of the call decides what may be evicted for it.
        threshold = max(priority for _, priority, _ in records)
        max_bytes = self._max_bytes
        meta = self._meta
        victims: list[tuple[int, int]] = []
        in_flight = self._in_flight
        if coalesce_key is not None:
            victims = self._coalesce_victims(db, coalesce_key)
        if largest > max_bytes:
            meta.rejected += len(records)
            failure.append(
                f"a record of {largest} bytes exceeds the outbox quota of {max_bytes} bytes"
            )
            return []
        freed = sum(length for _, length in victims)
        if meta.outbox_bytes - freed + incoming > max_bytes:
            self._expire_in(db, t)
            if coalesce_key is not None:
                victims = self._coalesce_victims(db, coalesce_key)
                freed = sum(length for _, length in victims)
        need = meta.outbox_bytes - freed + incoming - max_bytes
        evicted: list[tuple[int, int]] = []
        evicted_priorities: list[int] = []
        if need > 0:
            skip = {seq for seq, _ in victims}
            gained = 0
            spared = 0  # in flight: their acks free these bytes soon
            # Least urgent priority first, oldest first: one indexed scan per priority
            # (a single ORDER BY priority DESC, seq ASC sorts the whole outbox).
            for priority in range(MAX_PRIORITY, threshold - 1, -1):
                cursor = db.execute(
                    "SELECT seq, length(payload) FROM outbox WHERE priority = ? ORDER BY seq",
                    (priority,),
                )
                for seq, length in cursor:
                    if seq in skip:
                        continue
                    if seq in in_flight:
                        spared += length
                        continue
                    evicted.append((seq, length))
                    evicted_priorities.append(priority)
                    gained += length
                    if gained >= need:
                        break
                cursor.close()
                if gained >= need:
                    break
            # Only records in flight could make the rest of the room: the record is stored
            # anyway, over the quota by at most the uplink window until their acks come.
            if gained + spared < need:
                meta.rejected += len(records)
                failure.append(
                    f"outbox full: {incoming} bytes do not fit in the quota of {max_bytes} bytes"
                )
                return []
        for group, counter in ((victims, "coalesced"), (evicted, "dropped_quota")):
            if group:
                db.executemany("DELETE FROM outbox WHERE seq = ?", [(s,) for s, _ in group])
                meta.outbox_bytes -= sum(length for _, length in group)
                setattr(meta, counter, getattr(meta, counter) + len(group))
        _count_drops(db, evicted_priorities, expired=False)
        first = meta.next_seq
        seqs = list(range(first, first + len(records)))
        db.executemany(
            "INSERT INTO outbox (seq, priority, created, expires, payload, coalesce_key) "
            "VALUES (?, ?, ?, ?, ?, ?)",
            [
                (seq, priority, t, None if ttl is None else t + ttl, payload, coalesce_key)
                for seq, (payload, priority, ttl) in zip(seqs, records, strict=True)
            ],
        )
        meta.next_seq = first + len(records)
        meta.outbox_bytes += incoming
        if coalesce_key is not None:
            self._remember_coalesce(db, coalesce_key, seqs)
        return seqs

    def _coalesce_victims(self, db: sqlite3.Connection, key: str) -> list[tuple[int, int]]:
        """The records a new one with coalesce key ``key`` replaces (not those in flight:
        the hub gets them anyway). Found by ``_coalesce`` and checked by sequence number
        (no index on the key: one page less written per appended record)."""
        known = self._coalesce.get(key)
        if known is None:
            return []
        rows: list[tuple[int, int]] = []
        for seq in sorted(known):
            row = db.execute(
                "SELECT length(payload) FROM outbox WHERE seq = ? AND coalesce_key = ?",
                (seq, key),
            ).fetchone()
            if row is not None:
                rows.append((seq, row[0]))
        # Forget the numbers whose records went (never one that may still be there: a
        # rolled-back transaction leaves its victims in place).
        self._coalesce[key] = {seq for seq, _ in rows}
        return [(seq, length) for seq, length in rows if seq not in self._in_flight]

    def _remember_coalesce(self, db: sqlite3.Connection, key: str, seqs: list[int]) -> None:
        if key not in self._coalesce and len(self._coalesce) >= MAX_COALESCE_KEYS:
            self._coalesce = _coalesce_keys(db)
        self._coalesce.setdefault(key, set()).update(seqs)

    def _expire_if_due(self, t: float) -> int:
        due = self._read(
            lambda db: db.execute(
                "SELECT EXISTS (SELECT 1 FROM outbox WHERE expires IS NOT NULL AND expires <= ? "
                "AND seq NOT IN (SELECT value FROM json_each(?)))",
                (t, self._hidden_json()),
            ).fetchone()[0]
        )
        if not due:
            return 0
        return self._write(t, lambda db: self._expire_in(db, t))

    def peek(
        self,
        limit: int = 100,
        *,
        after: tuple[int, int] | None = None,
        now: float | None = None,
    ) -> list[tuple[int, int, bytes]]:
        """Up to ``limit`` records, most urgent first, sequence order within a priority."""
        self._conn()
        count = _check_int(limit, "limit", 0, I64_MAX)
        position: tuple[int, int] | None = None
        if after is not None:
            prio, seq = _check_tuple(after, 2, "(priority, seq)")
            position = (
                _check_int(prio, "priority", -I64_MAX - 1, I64_MAX),
                _check_int(seq, "seq", -I64_MAX - 1, I64_MAX),
            )
        self._expire_if_due(self._now(now))
        acked = json.dumps(sorted(self._deferred))
        if position is None:
            rows = self._read(
                lambda db: db.execute(
                    "SELECT seq, priority, payload FROM outbox "
                    "WHERE seq NOT IN (SELECT value FROM json_each(?)) "
                    "ORDER BY priority, seq LIMIT ?",
                    (acked, count),
                ).fetchall()
            )
        else:
            rows = self._read(
                lambda db: db.execute(
                    "SELECT seq, priority, payload FROM outbox WHERE (priority, seq) > (?, ?) "
                    "AND seq NOT IN (SELECT value FROM json_each(?)) "
                    "ORDER BY priority, seq LIMIT ?",
                    (*position, acked, count),
                ).fetchall()
            )
        return [(seq, prio, payload) for seq, prio, payload in rows]

    def ack(self, seqs: Iterable[int]) -> int:
        """Delete the records with these sequence numbers; how many were deleted."""
        self._conn()
        wanted = [(_check_int(seq, "seq", -I64_MAX - 1, I64_MAX),) for seq in seqs]
        if not wanted:
            return 0

        with self._lock:
            # Deferred ones among them are deleted by the transaction's start.
            already = len({seq for (seq,) in wanted if seq in self._deferred})
            deleted = self._write(
                self.clock(), lambda db: self._delete_acked(db, [seq for (seq,) in wanted])
            )
            return deleted + already

    def ack_deferred(self, seqs: Iterable[int]) -> int:
        """Acknowledge records without a transaction of their own: hidden from ``peek``,
        ``outbox_stats`` and the quota at once, deleted by the next write transaction
        (folded into its commit) or ``flush_acks``; how many of them are in the outbox.
        After a crash before that they are sent again (the hub drops duplicates)."""
        self._conn()
        wanted = [_check_int(seq, "seq", -I64_MAX - 1, I64_MAX) for seq in seqs]
        if not wanted:
            return 0
        with self._lock:
            fresh = json.dumps(sorted(set(wanted) - self._deferred.keys()))
            rows = self._read(
                lambda db: db.execute(
                    "SELECT seq, length(payload) FROM outbox "
                    "WHERE seq IN (SELECT value FROM json_each(?))",
                    (fresh,),
                ).fetchall()
            )
            self._deferred.update(rows)
            self._in_flight = self._in_flight.difference(wanted)
            if len(self._deferred) > MAX_DEFERRED_ACKS:
                self._write(self.clock(), lambda _db: None)
            return len(rows)

    def flush_acks(self) -> int:
        """Delete the records acknowledged with ``ack_deferred`` now; how many."""
        self._conn()
        with self._lock:
            count = len(self._deferred)
            if count:
                self._write(self.clock(), lambda _db: None)
            return count

    def set_in_flight(self, seqs: Iterable[int]) -> None:
        """The records now on the wire (replacing the previous set; empty after a lost
        connection): the quota does not evict them, their TTL does not expire them and a
        newer record with their coalesce key does not replace them, so that a record the
        hub acknowledges is never also counted as dropped."""
        self._conn()
        checked = frozenset(_check_int(seq, "seq", -I64_MAX - 1, I64_MAX) for seq in seqs)
        with self._lock:
            self._in_flight = checked

    def ack_ranges(self, ranges: Iterable[tuple[int, int]]) -> int:
        """Delete every record with ``lo <= seq <= hi`` for each range; how many."""
        self._conn()
        wanted: list[tuple[int, int]] = []
        for pair in ranges:
            lo, hi = _check_tuple(pair, 2, "(lo, hi)")
            wanted.append(
                (
                    _check_int(lo, "seq", -I64_MAX - 1, I64_MAX),
                    _check_int(hi, "seq", -I64_MAX - 1, I64_MAX),
                )
            )
        if not wanted:
            return 0

        def run(db: sqlite3.Connection) -> int:
            deleted = 0
            freed = 0
            for pair in wanted:
                row = db.execute(
                    "SELECT count(*), coalesce(sum(length(payload)), 0) FROM outbox "
                    "WHERE seq BETWEEN ? AND ?",
                    pair,
                ).fetchone()
                if row[0]:
                    db.execute("DELETE FROM outbox WHERE seq BETWEEN ? AND ?", pair)
                    deleted += row[0]
                    freed += row[1]
            self._meta.outbox_bytes -= freed
            return deleted

        return self._write(self.clock(), run)

    def expire(self, *, now: float | None = None) -> int:
        """Delete expired records now; how many."""
        self._conn()
        return self._expire_if_due(self._now(now))

    def outbox_stats(self, *, now: float | None = None) -> dict[str, int | float]:
        self._conn()
        t = self._now(now)
        self._expire_if_due(t)
        acked = json.dumps(sorted(self._deferred))
        messages, oldest = self._read(
            lambda db: db.execute(
                "SELECT count(*), min(created) FROM outbox "
                "WHERE seq NOT IN (SELECT value FROM json_each(?))",
                (acked,),
            ).fetchone()
        )
        m = self._meta
        return {
            "messages": messages,
            "bytes": m.outbox_bytes - sum(self._deferred.values()),
            "oldest_age": 0.0 if oldest is None else max(0.0, t - oldest),
            "next_seq": m.next_seq,
            "max_bytes": self._max_bytes,
            "dropped_expired": m.dropped_expired,
            "dropped_quota": m.dropped_quota,
            "rejected": m.rejected,
            "coalesced": m.coalesced,
        }

    def drop_counts(self) -> list[tuple[int, int, int]]:
        """``(priority, expired, quota)``: records dropped per priority by their TTL and by
        the quota policy since the file has schema version 3 (priorities with drops only,
        in priority order). The totals (``outbox_stats``) go back further."""
        self._conn()
        rows = self._read(
            lambda db: db.execute(
                "SELECT priority, expired, quota FROM drops ORDER BY priority"
            ).fetchall()
        )
        return [(priority, expired, quota) for priority, expired, quota in rows]

    # ------------------------------------------------------------ salvage --

    @staticmethod
    def salvage(path: str, dest: str) -> dict[str, int]:
        """Copy every readable row of the store at ``path`` into a new store at ``dest``."""
        _check_str(path, "path")
        _check_str(dest, "dest")
        if "\x00" in path or "\x00" in dest:
            raise ConfigError("store path must not contain a NUL character")
        if os.path.exists(dest):
            raise StoreError(f"salvage destination already exists: {dest}")
        if not os.path.exists(path):
            raise StoreError(f"{path}: no such file")
        try:
            src = sqlite3.connect(_read_only_uri(path), uri=True, isolation_level=None)
        except sqlite3.Error as err:
            raise _translate(path, err) from None
        # Read past a schema SQLite finds inconsistent (e.g. a truncated file): the
        # connection is read-only, so this cannot write anything.
        src.execute("PRAGMA writable_schema = ON")
        counts = {"resources": 0, "twins": 0, "outbox": 0, "errors": 0}
        try:
            out = Store(dest)
            try:
                _salvage_into(src, out, counts)
            finally:
                out.close()
        finally:
            src.close()
        return counts


def _configure(db: sqlite3.Connection, synchronous: str) -> None:
    db.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
    # Before the first write (switching to WAL writes the header): a no-op on a file that
    # exists, whose page size is fixed.
    db.execute(f"PRAGMA page_size = {PAGE_SIZE_BYTES}")
    db.execute("PRAGMA journal_mode = WAL").fetchall()
    db.execute(f"PRAGMA synchronous = {synchronous.upper()}")
    db.execute(f"PRAGMA journal_size_limit = {JOURNAL_SIZE_LIMIT_BYTES}").fetchall()
    db.execute(f"PRAGMA wal_autocheckpoint = {WAL_AUTOCHECKPOINT_PAGES}").fetchall()


def _read_only_uri(path: str) -> str:
    return "file:" + urllib.parse.quote(os.path.abspath(path)) + "?mode=ro"


def _check_integrity(path: str) -> None:
    """``PRAGMA quick_check`` an existing file on a read-only connection.

    Read-only, so that a damaged file is never written to: a read-write connection
    would switch the journal mode or checkpoint a WAL into it when closed.
    """
    if not os.path.exists(path) or os.path.getsize(path) == 0:
        return
    db = sqlite3.connect(_read_only_uri(path), uri=True, isolation_level=None)
    try:
        db.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        rows = db.execute("PRAGMA quick_check").fetchall()
    finally:
        db.close()
    if rows != [("ok",)]:
        raise StoreCorruptError(f"{path}: store is damaged ({_code_text(SQLITE_CORRUPT)})")


def _private_files(path: str) -> None:
    """Make the database at ``path`` owner-only (``FILE_MODE``) whatever the umask: create
    it 0600 when it does not exist (SQLite gives its -wal and -shm files the database's
    mode), and take the group and other bits off an existing database, -wal or -shm (an
    older version created them 0644 under umask 022). Best effort: what cannot be done
    here (a missing folder, another owner's file) is left to opening the database, which
    reports it. The process umask is never touched (a library does not own it)."""
    if path in ("", ":memory:"):
        return
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, FILE_MODE)
    except OSError:
        pass  # it exists (narrowed below), or opening it will say what is wrong
    else:
        try:
            os.fchmod(fd, FILE_MODE)  # O_CREAT's mode is masked by the umask
        finally:
            os.close(fd)
    for name in (path, path + "-wal", path + "-shm"):
        try:
            mode = os.stat(name).st_mode & 0o7777
            if mode & 0o077:
                os.chmod(name, mode & ~0o077)
        except OSError:
            continue


def _create_or_migrate(db: sqlite3.Connection, path: str) -> None:
    db.execute("BEGIN IMMEDIATE")
    try:
        version = db.execute("PRAGMA user_version").fetchone()[0]
        if version == 0:
            tables = db.execute("SELECT count(*) FROM sqlite_master").fetchone()[0]
            if tables:
                raise StoreError(f"{path}: not an edgenode store (schema version 0 with tables)")
            _run_script(db, SCHEMA_SQL)
        elif version > SCHEMA_VERSION:
            raise StoreError(
                f"{path}: schema version {version} is newer than this build supports "
                f"({SCHEMA_VERSION})"
            )
        else:
            for from_version in range(version, SCHEMA_VERSION):
                _run_script(db, MIGRATIONS[from_version])
        db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        db.execute("COMMIT")
    except BaseException:
        if db.in_transaction:
            db.execute("ROLLBACK")
        raise


def _run_script(db: sqlite3.Connection, script: str) -> None:
    """Run ``;``-separated statements inside the caller's transaction."""
    for statement in script.split(";"):
        if statement.strip():
            db.execute(statement)


def _count_drops(db: sqlite3.Connection, priorities: list[int], *, expired: bool) -> None:
    """Add the dropped records' priorities to the per-priority counters (``drops``)."""
    counts: dict[int, int] = {}
    for priority in priorities:
        counts[priority] = counts.get(priority, 0) + 1
    for priority in sorted(counts):
        n = counts[priority]
        db.execute(UPSERT_DROPS, (priority, n if expired else 0, 0 if expired else n))


def _read_meta(db: sqlite3.Connection) -> _Meta:
    row = db.execute(f"SELECT {META_COLUMNS} FROM meta WHERE id = 1").fetchone()
    if row is None:
        raise StoreError("meta row is missing")
    return _Meta(*row)


def _coalesce_keys(db: sqlite3.Connection) -> dict[str, set[int]]:
    """Coalesce key → sequence numbers, from the stored records (one scan)."""
    found: dict[str, set[int]] = {}
    for seq, key in db.execute(
        "SELECT seq, coalesce_key FROM outbox WHERE coalesce_key IS NOT NULL"
    ):
        found.setdefault(key, set()).add(seq)
    return found


def _repair_meta(db: sqlite3.Connection, meta: _Meta) -> _Meta:
    """The meta row as it was at the last commit: transactions that only append skip it,
    so a newest record past the file's ``next_seq`` means the counter, the outbox's size
    and the clock moved on since; they are found again from the records."""
    newest = db.execute("SELECT seq, created FROM outbox ORDER BY seq DESC LIMIT 1").fetchone()
    if newest is None or newest[0] < meta.next_seq:
        return meta
    (total,) = db.execute("SELECT coalesce(sum(length(payload)), 0) FROM outbox").fetchone()
    return replace(
        meta, next_seq=newest[0] + 1, outbox_bytes=total, clock=max(meta.clock, newest[1])
    )


def _salvage_rows(
    src: sqlite3.Connection, table: str, columns: str, counts: dict[str, int]
) -> Iterable[tuple[Any, ...]]:
    """Yield ``(rowid, *columns)`` of ``table`` in rowid order, skipping what fails to read.

    After a failed scan the next row is re-read alone (sqlite3 cursors read one row
    ahead and drop the row before a failure); if that fails too, the damage is
    counted once and skipped by probing further rowids at doubling distances.
    """
    scan = f"SELECT rowid, {columns} FROM {table} WHERE rowid > ? ORDER BY rowid"
    probe = f"SELECT rowid FROM {table} WHERE rowid > ? ORDER BY rowid LIMIT 1"
    last = -(2**63)
    while True:
        try:
            for row in src.execute(scan, (last,)):
                if not isinstance(row[0], int) or row[0] <= last:
                    break  # a damaged b-tree can go backwards: never loop
                last = row[0]
                yield row
            else:
                return
        except sqlite3.Error:
            pass
        try:
            single = src.execute(scan + " LIMIT 1", (last,)).fetchone()
        except sqlite3.Error:
            single = False
        if single is None:
            return
        if single is not False and isinstance(single[0], int) and single[0] > last:
            last = single[0]
            yield single
            continue
        counts["errors"] += 1
        skip = 1
        while True:
            if last + skip > I64_MAX or skip > SALVAGE_MAX_SKIP:
                return
            try:
                found = src.execute(probe, (last + skip,)).fetchone()
            except sqlite3.Error:
                found = False
            if found is None:
                return
            if found is False or not isinstance(found[0], int) or found[0] <= last + skip:
                skip *= 2
                continue
            last = found[0] - 1
            break


def _salvage_into(src: sqlite3.Connection, out: Store, counts: dict[str, int]) -> None:
    meta: tuple[Any, ...] | None = None
    try:
        meta = src.execute(
            "SELECT applied_revision, next_seq, dropped_expired, dropped_quota, rejected, "
            "coalesced, clock FROM meta WHERE id = 1"
        ).fetchone()
    except sqlite3.Error:
        counts["errors"] += 1
    db = out._conn()
    resource_errors = counts["errors"]
    db.execute("BEGIN IMMEDIATE")
    try:
        for row in _salvage_rows(src, "resources", "key, revision, data", counts):
            try:
                db.execute("INSERT INTO resources (key, revision, data) VALUES (?, ?, ?)", row[1:])
                counts["resources"] += 1
            except sqlite3.Error:
                counts["errors"] += 1
        lost_resources = counts["errors"] > resource_errors
        for row in _salvage_rows(src, "twins", "device, doc", counts):
            try:
                db.execute("INSERT INTO twins (device, doc) VALUES (?, ?)", row[1:])
                counts["twins"] += 1
            except sqlite3.Error:
                counts["errors"] += 1
        max_seq = 0
        total = 0
        columns = "seq, priority, created, expires, payload, coalesce_key"
        for row in _salvage_rows(src, "outbox", columns, counts):
            try:
                db.execute(f"INSERT INTO outbox ({columns}) VALUES (?, ?, ?, ?, ?, ?)", row[1:])
                counts["outbox"] += 1
                max_seq = max(max_seq, row[1])
                total += len(row[5])
            except (sqlite3.Error, TypeError):
                counts["errors"] += 1
        # Sequence numbers are never reused; a lost resource forces a full resync.
        next_seq = max_seq + 1
        values: tuple[Any, ...] = (0, next_seq, total, 0, 0, 0, 0, 0.0)
        if meta is not None:
            applied = 0 if lost_resources else meta[0]
            values = (applied, max(next_seq, meta[1]), total, *meta[2:])
        db.execute(
            "UPDATE meta SET applied_revision = ?, next_seq = ?, outbox_bytes = ?, "
            "dropped_expired = ?, dropped_quota = ?, rejected = ?, coalesced = ?, clock = ? "
            "WHERE id = 1",
            values,
        )
        db.execute("COMMIT")
    except BaseException:
        if db.in_transaction:
            db.execute("ROLLBACK")
        raise
    out._meta = _read_meta(db)
    out._persisted = replace(out._meta)
    out._coalesce = _coalesce_keys(db)
    out._clock_base = out._meta.clock

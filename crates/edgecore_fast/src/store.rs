//! The node's durable store: one SQLite database in WAL mode holding the
//! desired-state cache, the device twins and the outbox.
//!
//! The pure-Python twin `python/edgenode/_pure/store.py` is the specification:
//! same schema text (file format), same results, same messages. Time comes from
//! the *store clock* (a persisted value plus monotonic time since open), never
//! from the wall clock, so TTLs survive restarts and clock jumps.
//!
//! This module stores, orders, bounds and counts; it does not decide what to send.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rusqlite::types::{Value, ValueRef};
use rusqlite::{params, Connection, OpenFlags, OptionalExtension};

/// `PRAGMA user_version` of files this build writes.
pub const SCHEMA_VERSION: i64 = 4;
/// Default outbox quota: the sum of payload lengths.
pub const DEFAULT_OUTBOX_MAX_BYTES: i64 = 64 * 1024 * 1024;
/// Most urgent priority (sent first) and least urgent one.
pub const MIN_PRIORITY: i64 = 0;
pub const MAX_PRIORITY: i64 = 9;
/// Page size of new database files (an existing file keeps its own). Every page a commit
/// changes is one WAL frame of this size, so small pages write less flash per commit
/// (measured: bench/bench_disk.py, docs/store.md "Disk writes").
pub const PAGE_SIZE_BYTES: i64 = 1024;
/// SQLite's own auto-checkpoint threshold, in WAL pages.
pub const WAL_AUTOCHECKPOINT_PAGES: i64 = 1000;
/// Size the WAL file is truncated back to after a checkpoint.
pub const JOURNAL_SIZE_LIMIT_BYTES: i64 = 4 * 1024 * 1024;
/// The store runs a passive checkpoint itself after this many write transactions.
pub const PASSIVE_CHECKPOINT_EVERY_WRITES: u32 = 500;
/// A transaction that appends records skips the meta row (one WAL frame less per commit)
/// unless the store clock moved this much since the row was last written; the file's meta
/// is repaired at open from the newest record (sequence, time) and the outbox's size.
pub const CLOCK_PERSIST_SECONDS: f64 = 60.0;
/// Coalesce keys the in-memory lookup holds before it is rebuilt from the outbox (keys of
/// records gone since are dropped then).
pub const MAX_COALESCE_KEYS: usize = 100_000;
/// Records acknowledged with `ack_deferred` that wait for the next write transaction;
/// beyond this many they are deleted at once (one transaction).
pub const MAX_DEFERRED_ACKS: usize = 10_000;
/// How long a writer waits for another connection's lock.
pub const BUSY_TIMEOUT_MS: u64 = 5000;
/// Salvage probes past unreadable rows at doubling distances up to this one.
pub const SALVAGE_MAX_SKIP: i64 = 1 << 62;
/// Enough cached statements for every query of this module.
const STATEMENT_CACHE: usize = 64;
/// The mode of the database and its -wal and -shm files, whatever the process umask:
/// they hold Config data (often secrets), twins and the outbox.
pub const FILE_MODE: u32 = 0o600;

/// The current schema; byte for byte identical to `SCHEMA_SQL` in `_pure/store.py`.
pub const SCHEMA_SQL: &str = "\
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
";

/// Schema version 1 (no store clock, no coalescing), kept to test migrations.
pub const SCHEMA_V1_SQL: &str = "\
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
";

/// `MIGRATIONS[i] = (v, sql)` upgrades a file from schema version `v` to `v + 1`.
pub const MIGRATIONS: &[(i64, &str)] = &[
    (
        1,
        "\
ALTER TABLE meta ADD COLUMN clock REAL NOT NULL DEFAULT 0;
ALTER TABLE outbox ADD COLUMN coalesce_key TEXT;
CREATE INDEX outbox_coalesce ON outbox (coalesce_key) WHERE coalesce_key IS NOT NULL;
",
    ),
    (
        2,
        "\
CREATE TABLE drops (
    priority INTEGER PRIMARY KEY,
    expired INTEGER NOT NULL,
    quota INTEGER NOT NULL
);
",
    ),
    // The coalescing lookup moved to memory (`Store::coalesce`): one index less to write
    // per appended record.
    (
        3,
        "\
DROP INDEX IF EXISTS outbox_coalesce;
",
    ),
];

const SQLITE_CORRUPT: i32 = 11;
const NUL_IN_PATH: &str = "store path must not contain a NUL character";
const SQLITE_NOTADB: i32 = 26;

const UPDATE_META: &str = "UPDATE meta SET applied_revision = ?1, next_seq = ?2, \
    outbox_bytes = ?3, dropped_expired = ?4, dropped_quota = ?5, rejected = ?6, \
    coalesced = ?7, clock = ?8 WHERE id = 1";
const UPSERT_RESOURCE: &str = "INSERT INTO resources (key, revision, data) VALUES (?1, ?2, ?3) \
    ON CONFLICT (key) DO UPDATE SET revision = excluded.revision, data = excluded.data";
const INSERT_OUTBOX: &str = "INSERT INTO outbox (seq, priority, created, expires, payload, \
    coalesce_key) VALUES (?1, ?2, ?3, ?4, ?5, ?6)";
const UPSERT_TWIN: &str = "INSERT INTO twins (device, doc) VALUES (?1, ?2) \
    ON CONFLICT (device) DO UPDATE SET doc = excluded.doc";
const SELECT_COALESCE: &str =
    "SELECT length(payload) FROM outbox WHERE seq = ?1 AND coalesce_key = ?2";
const SELECT_COALESCE_KEYS: &str =
    "SELECT seq, coalesce_key FROM outbox WHERE coalesce_key IS NOT NULL";
const EXPIRE_DUE: &str =
    "SELECT EXISTS (SELECT 1 FROM outbox WHERE expires IS NOT NULL AND expires <= ?1 \
     AND seq NOT IN (SELECT value FROM json_each(?2)))";
const EXPIRE_DELETE: &str = "DELETE FROM outbox WHERE expires IS NOT NULL AND expires <= ?1 \
    AND seq NOT IN (SELECT value FROM json_each(?2)) RETURNING priority, length(payload)";
const DELETE_ACKED: &str = "DELETE FROM outbox WHERE seq = ?1 RETURNING length(payload)";
const UPSERT_DROPS: &str = "INSERT INTO drops (priority, expired, quota) VALUES (?1, ?2, ?3) \
    ON CONFLICT (priority) DO UPDATE SET expired = expired + excluded.expired, \
    quota = quota + excluded.quota";

/// Every failure of the store; the binding maps each kind to a Python class.
#[derive(Debug, Clone, PartialEq)]
pub enum Error {
    /// Bad option (`ConfigError`, a `ValueError`).
    Config(String),
    /// Bad argument value (`ValueError`).
    Value(String),
    /// The store failed (`StoreError`).
    Store(String),
    /// The file is damaged (`StoreCorruptError`).
    Corrupt(String),
    /// The outbox quota rejected an append (`OutboxFullError`).
    Full(String),
}

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Error::Config(m) | Error::Value(m) | Error::Store(m) | Error::Corrupt(m) => {
                f.write_str(m)
            }
            Error::Full(m) => f.write_str(m),
        }
    }
}

impl std::error::Error for Error {}

pub type Result<T> = std::result::Result<T, Error>;

/// Durability of a commit: `Normal` survives process kills, `Full` power loss.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Synchronous {
    Normal,
    Full,
}

impl Synchronous {
    /// Parse `"normal"` / `"full"`; anything else is a `Config` error.
    pub fn parse(value: &str) -> Result<Self> {
        match value {
            "normal" => Ok(Synchronous::Normal),
            "full" => Ok(Synchronous::Full),
            other => Err(Error::Config(format!(
                "synchronous must be 'normal' or 'full', got '{other}'"
            ))),
        }
    }
}

/// One record handed to [`Store::append_many`].
#[derive(Debug, Clone, Copy)]
pub struct NewRecord<'a> {
    pub payload: &'a [u8],
    pub priority: i64,
    pub ttl: Option<f64>,
}

/// One record handed to [`Store::commit_batch`]: a record and its coalescing key.
#[derive(Debug, Clone, Copy)]
pub struct BatchRecord<'a> {
    pub record: NewRecord<'a>,
    pub coalesce_key: Option<&'a str>,
}

/// What [`Store::outbox_stats`] reports.
#[derive(Debug, Clone, PartialEq)]
pub struct OutboxStats {
    pub messages: i64,
    pub bytes: i64,
    pub oldest_age: f64,
    pub next_seq: i64,
    pub max_bytes: i64,
    pub dropped_expired: i64,
    pub dropped_quota: i64,
    pub rejected: i64,
    pub coalesced: i64,
}

/// What [`Store::salvage`] copied.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SalvageCounts {
    pub resources: i64,
    pub twins: i64,
    pub outbox: i64,
    pub errors: i64,
}

/// A resource of the desired-state cache: key, revision, data (`None` = tombstone).
pub type Resource = (String, i64, Option<Vec<u8>>);

/// The single meta row, mirrored in memory. Written by every transaction that changes
/// more than what the file can be repaired from at open (see `repair_meta`).
#[derive(Debug, Clone, PartialEq)]
struct Meta {
    applied_revision: i64,
    next_seq: i64,
    outbox_bytes: i64,
    dropped_expired: i64,
    dropped_quota: i64,
    rejected: i64,
    coalesced: i64,
    clock: f64,
}

fn code_text(code: i32) -> String {
    let text = match code & 0xff {
        3 => "access permission denied",
        5 => "database is locked",
        6 => "database table is locked",
        8 => "attempt to write a readonly database",
        10 => "disk I/O error",
        11 => "database disk image is malformed",
        13 => "database or disk is full",
        14 => "unable to open database file",
        26 => "file is not a database",
        other => return format!("SQLite error code {other}"),
    };
    text.to_string()
}

/// Map a rusqlite error to `Corrupt` / `Store` with the same text as Python.
fn translate(path: &str, err: rusqlite::Error) -> Error {
    match err {
        rusqlite::Error::SqliteFailure(e, _) => {
            let code = e.extended_code & 0xff;
            if code == SQLITE_CORRUPT || code == SQLITE_NOTADB {
                Error::Corrupt(format!("{path}: store is damaged ({})", code_text(code)))
            } else {
                Error::Store(format!("{path}: {}", code_text(code)))
            }
        }
        other => Error::Store(format!("{path}: {other}")),
    }
}

fn check_priority(priority: i64) -> Result<()> {
    if (MIN_PRIORITY..=MAX_PRIORITY).contains(&priority) {
        Ok(())
    } else {
        Err(Error::Value(format!(
            "priority must be in {MIN_PRIORITY}..{MAX_PRIORITY}, got {priority}"
        )))
    }
}

fn check_revision(revision: i64) -> Result<()> {
    if revision >= 0 {
        Ok(())
    } else {
        Err(Error::Value(format!(
            "revision must be in 0..{}, got {revision}",
            i64::MAX
        )))
    }
}

fn check_now(now: f64) -> Result<f64> {
    if now.is_finite() {
        Ok(now)
    } else {
        Err(Error::Value(format!(
            "now must be a finite number, got {now}"
        )))
    }
}

fn check_ttl(ttl: Option<f64>) -> Result<()> {
    match ttl {
        Some(t) if !t.is_finite() => Err(Error::Value(format!(
            "ttl must be a finite number, got {t}"
        ))),
        Some(t) if t <= 0.0 => Err(Error::Value(format!("ttl must be > 0 seconds, got {t}"))),
        _ => Ok(()),
    }
}

/// The durable store. Not `Sync`: callers serialise access (the binding uses a `Mutex`).
pub struct Store {
    conn: Connection,
    path: String,
    max_bytes: i64,
    meta: Meta,
    /// The meta values the file holds (or that `repair_meta` derives from it).
    persisted: Meta,
    /// Acknowledged records (seq → payload bytes) deleted by the next transaction.
    deferred: BTreeMap<i64, i64>,
    /// Records on the wire: neither evicted by the quota nor expired nor coalesced.
    in_flight: Arc<BTreeSet<i64>>,
    /// Coalesce key → sequence numbers of records with it: every stored record with a key
    /// is there (a number may be stale: its record went; checked when used).
    coalesce: HashMap<String, BTreeSet<i64>>,
    clock_base: f64,
    mono_start: Instant,
    writes_since_checkpoint: u32,
}

/// A JSON array of sequence numbers, for `json_each` in SQL.
fn json_seqs<'a>(seqs: impl Iterator<Item = &'a i64>) -> String {
    let mut text = String::from("[");
    for (i, seq) in seqs.enumerate() {
        if i > 0 {
            text.push(',');
        }
        text.push_str(&seq.to_string());
    }
    text.push(']');
    text
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").field("path", &self.path).finish()
    }
}

impl Store {
    /// Open (creating or migrating) the store at `path`.
    pub fn open(path: &str, synchronous: Synchronous, outbox_max_bytes: i64) -> Result<Store> {
        if outbox_max_bytes < 1 {
            return Err(Error::Config(format!(
                "outbox_max_bytes must be a positive int, got {outbox_max_bytes}"
            )));
        }
        if path.contains('\0') {
            return Err(Error::Config(NUL_IN_PATH.to_string()));
        }
        check_integrity(path)?;
        private_files(path);
        let tr = |e| translate(path, e);
        let conn = Connection::open(path).map_err(tr)?;
        configure(&conn, synchronous).map_err(tr)?;
        create_or_migrate(&conn, path)?;
        let meta = read_meta(&conn)
            .and_then(|meta| repair_meta(&conn, meta))
            .map_err(tr)?;
        let coalesce = coalesce_keys(&conn).map_err(tr)?;
        Ok(Store {
            conn,
            path: path.to_string(),
            max_bytes: outbox_max_bytes,
            clock_base: meta.clock,
            persisted: meta.clone(),
            meta,
            deferred: BTreeMap::new(),
            in_flight: Arc::new(BTreeSet::new()),
            coalesce,
            mono_start: Instant::now(),
            writes_since_checkpoint: 0,
        })
    }

    pub fn path(&self) -> &str {
        &self.path
    }

    /// Delete deferred acks, persist the meta row and the store clock, close.
    pub fn close(mut self) -> Result<()> {
        let now = self.clock();
        self.write(now, |_, _| Ok(()))?;
        let path = self.path.clone();
        self.conn.close().map_err(|(_, e)| translate(&path, e))
    }

    /// Store time in seconds: monotonic within a run, carried across restarts.
    pub fn clock(&self) -> f64 {
        let elapsed = self.mono_start.elapsed().as_secs_f64();
        (self.clock_base + elapsed).max(self.meta.clock)
    }

    fn now_or_clock(&self, now: Option<f64>) -> Result<f64> {
        match now {
            Some(t) => check_now(t),
            None => Ok(self.clock()),
        }
    }

    /// Deferred acks first, then `f`, then the meta row where it must be written, in one
    /// write transaction.
    fn write<T>(
        &mut self,
        now: f64,
        f: impl FnOnce(&Connection, &mut Meta) -> rusqlite::Result<T>,
    ) -> Result<T> {
        let saved = self.meta.clone();
        let deferred = std::mem::take(&mut self.deferred);
        let conn = &self.conn;
        let meta = &mut self.meta;
        let persisted = &self.persisted;
        let outcome = (|| {
            conn.execute_batch("BEGIN IMMEDIATE")?;
            if !deferred.is_empty() {
                delete_acked(conn, meta, deferred.keys())?;
            }
            let value = f(conn, meta)?;
            meta.clock = meta.clock.max(now);
            let written = if meta_due(meta, persisted, saved.next_seq) {
                conn.prepare_cached(UPDATE_META)?.execute(params![
                    meta.applied_revision,
                    meta.next_seq,
                    meta.outbox_bytes,
                    meta.dropped_expired,
                    meta.dropped_quota,
                    meta.rejected,
                    meta.coalesced,
                    meta.clock,
                ])?;
                Some(meta.clone())
            } else {
                None
            };
            conn.execute_batch("COMMIT")?;
            Ok((value, written))
        })();
        match outcome {
            Ok((value, written)) => {
                if let Some(written) = written {
                    self.persisted = written;
                }
                self.writes_since_checkpoint += 1;
                if self.writes_since_checkpoint >= PASSIVE_CHECKPOINT_EVERY_WRITES {
                    self.writes_since_checkpoint = 0;
                    self.conn
                        .execute_batch("PRAGMA wal_checkpoint(PASSIVE)")
                        .map_err(|e| translate(&self.path, e))?;
                }
                Ok(value)
            }
            Err(err) => {
                self.meta = saved;
                self.deferred.extend(deferred);
                if !self.conn.is_autocommit() {
                    let _ = self.conn.execute_batch("ROLLBACK");
                }
                Err(translate(&self.path, err))
            }
        }
    }

    /// Copy the WAL into the database and truncate the WAL file.
    pub fn checkpoint(&mut self) -> Result<()> {
        self.conn
            .execute_batch("PRAGMA wal_checkpoint(TRUNCATE)")
            .map_err(|e| translate(&self.path, e))
    }

    // ------------------------------------------------------ desired state --

    pub fn applied_revision(&self) -> i64 {
        self.meta.applied_revision
    }

    /// The sequence number the next appended outbox record gets. It only grows while this
    /// file lives; a restored backup or a new file starts lower, which the hub uses to
    /// forget the sequence numbers of the node's previous life (see docs/protocol.md).
    pub fn next_seq(&self) -> i64 {
        self.meta.next_seq
    }

    /// Take the next sequence number for a record that is sent without being stored (a
    /// sample, such as the node's status while connected), writing nothing: the counter
    /// is persisted by the next write transaction or `close`. After a crash before that,
    /// the file's `next_seq` is at or below the taken number; the node says so in its
    /// hello and the hub forgets the sequence numbers from there on (docs/protocol.md),
    /// so a number is never taken twice in a way the hub could confuse.
    pub fn reserve_seq(&mut self) -> i64 {
        let seq = self.meta.next_seq;
        self.meta.next_seq += 1;
        seq
    }

    fn check_new_revision(&self, revision: i64) -> Result<()> {
        check_revision(revision)?;
        if revision < self.meta.applied_revision {
            return Err(Error::Value(format!(
                "revision {revision} is older than the applied revision {}",
                self.meta.applied_revision
            )));
        }
        Ok(())
    }

    /// Upsert (`Some`) or tombstone (`None`) each change and set the applied revision.
    pub fn apply_changes(
        &mut self,
        changes: &[(&str, i64, Option<&[u8]>)],
        revision: i64,
    ) -> Result<()> {
        for (_, rev, _) in changes {
            check_revision(*rev)?;
        }
        self.check_new_revision(revision)?;
        let now = self.clock();
        self.write(now, |conn, meta| {
            let mut stmt = conn.prepare_cached(UPSERT_RESOURCE)?;
            for (key, rev, data) in changes {
                stmt.execute(params![key, rev, data])?;
            }
            meta.applied_revision = revision;
            Ok(())
        })
    }

    /// Replace the whole cache with exactly `resources` and set the applied revision. A
    /// snapshot is authoritative: its revision may be older than the applied one (a hub
    /// restored from a backup, docs/protocol.md).
    pub fn replace_all(&mut self, resources: &[(&str, i64, &[u8])], revision: i64) -> Result<()> {
        for (_, rev, _) in resources {
            check_revision(*rev)?;
        }
        check_revision(revision)?;
        let now = self.clock();
        self.write(now, |conn, meta| {
            conn.execute_batch("DELETE FROM resources")?;
            let mut stmt = conn.prepare_cached(UPSERT_RESOURCE)?;
            for (key, rev, data) in resources {
                stmt.execute(params![key, rev, data])?;
            }
            meta.applied_revision = revision;
            Ok(())
        })
    }

    pub fn get_resource(&self, key: &str) -> Result<Option<(i64, Option<Vec<u8>>)>> {
        self.conn
            .prepare_cached("SELECT revision, data FROM resources WHERE key = ?1")
            .and_then(|mut s| {
                s.query_row([key], |r| Ok((r.get(0)?, r.get(1)?)))
                    .optional()
            })
            .map_err(|e| translate(&self.path, e))
    }

    pub fn list_resources(&self, include_tombstones: bool) -> Result<Vec<Resource>> {
        let sql = if include_tombstones {
            "SELECT key, revision, data FROM resources ORDER BY key"
        } else {
            "SELECT key, revision, data FROM resources WHERE data IS NOT NULL ORDER BY key"
        };
        self.conn
            .prepare_cached(sql)
            .and_then(|mut s| {
                s.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
                    .collect()
            })
            .map_err(|e| translate(&self.path, e))
    }

    // -------------------------------------------------------------- twins --

    pub fn put_twin(&mut self, device: &str, doc: &[u8]) -> Result<()> {
        let now = self.clock();
        self.write(now, |conn, _| {
            conn.prepare_cached(UPSERT_TWIN)?
                .execute(params![device, doc])?;
            Ok(())
        })
    }

    pub fn get_twin(&self, device: &str) -> Result<Option<Vec<u8>>> {
        self.conn
            .prepare_cached("SELECT doc FROM twins WHERE device = ?1")
            .and_then(|mut s| s.query_row([device], |r| r.get(0)).optional())
            .map_err(|e| translate(&self.path, e))
    }

    pub fn list_twins(&self) -> Result<Vec<String>> {
        self.conn
            .prepare_cached("SELECT device FROM twins ORDER BY device")
            .and_then(|mut s| s.query_map([], |r| r.get(0))?.collect())
            .map_err(|e| translate(&self.path, e))
    }

    pub fn delete_twin(&mut self, device: &str) -> Result<bool> {
        let now = self.clock();
        self.write(now, |conn, _| {
            Ok(conn
                .prepare_cached("DELETE FROM twins WHERE device = ?1")?
                .execute([device])?
                > 0)
        })
    }

    // ------------------------------------------------------------- outbox --

    /// Append one record durably; its sequence number.
    pub fn append(
        &mut self,
        payload: &[u8],
        priority: i64,
        ttl: Option<f64>,
        coalesce_key: Option<&str>,
        now: Option<f64>,
    ) -> Result<i64> {
        check_priority(priority)?;
        check_ttl(ttl)?;
        let t = self.now_or_clock(now)?;
        let record = NewRecord {
            payload,
            priority,
            ttl,
        };
        Ok(self.append_records(&[record], coalesce_key, t)?[0])
    }

    /// Append all records in one transaction, all or nothing; their sequence numbers.
    pub fn append_many(&mut self, records: &[NewRecord<'_>], now: Option<f64>) -> Result<Vec<i64>> {
        for record in records {
            check_priority(record.priority)?;
            check_ttl(record.ttl)?;
        }
        let t = self.now_or_clock(now)?;
        if records.is_empty() {
            return Ok(Vec::new());
        }
        self.append_records(records, None, t)
    }

    /// Append `records` one by one as [`Store::append`] would, then upsert `twins`, all
    /// in one transaction (all or nothing on an error); per record its sequence number,
    /// or `None` where the quota policy refused it (counted in `rejected`).
    pub fn commit_batch(
        &mut self,
        twins: &[(&str, &[u8])],
        records: &[BatchRecord<'_>],
        now: Option<f64>,
    ) -> Result<Vec<Option<i64>>> {
        for record in records {
            check_priority(record.record.priority)?;
            check_ttl(record.record.ttl)?;
        }
        let t = self.now_or_clock(now)?;
        if twins.is_empty() && records.is_empty() {
            return Ok(Vec::new());
        }
        let max_bytes = self.max_bytes;
        let in_flight = Arc::clone(&self.in_flight);
        let mut coalesce = std::mem::take(&mut self.coalesce);
        let outcome = self.write(t, |conn, meta| {
            let mut seqs = Vec::with_capacity(records.len());
            for record in records {
                let outcome = append_in(
                    conn,
                    meta,
                    &mut coalesce,
                    &in_flight,
                    max_bytes,
                    std::slice::from_ref(&record.record),
                    record.coalesce_key,
                    t,
                )?;
                seqs.push(outcome.ok().map(|appended| appended[0]));
            }
            let mut upsert = conn.prepare_cached(UPSERT_TWIN)?;
            for (device, doc) in twins {
                upsert.execute(params![device, doc])?;
            }
            Ok(seqs)
        });
        self.coalesce = coalesce;
        outcome
    }

    fn append_records(
        &mut self,
        records: &[NewRecord<'_>],
        coalesce_key: Option<&str>,
        t: f64,
    ) -> Result<Vec<i64>> {
        let max_bytes = self.max_bytes;
        let in_flight = Arc::clone(&self.in_flight);
        let mut coalesce = std::mem::take(&mut self.coalesce);
        let outcome = self.write(t, |conn, meta| {
            append_in(
                conn,
                meta,
                &mut coalesce,
                &in_flight,
                max_bytes,
                records,
                coalesce_key,
                t,
            )
        });
        self.coalesce = coalesce;
        outcome?.map_err(Error::Full)
    }

    /// The records reads must skip or writes must spare, as a JSON array for
    /// `json_each`: acknowledged (deferred) and in flight.
    fn hidden_json(&self) -> String {
        let hidden: BTreeSet<i64> = self
            .deferred
            .keys()
            .chain(self.in_flight.iter())
            .copied()
            .collect();
        json_seqs(hidden.iter())
    }

    fn expire_if_due(&mut self, t: f64) -> Result<i64> {
        let hidden = self.hidden_json();
        let due: bool = self
            .conn
            .prepare_cached(EXPIRE_DUE)
            .and_then(|mut s| s.query_row(params![t, hidden], |r| r.get(0)))
            .map_err(|e| translate(&self.path, e))?;
        if !due {
            return Ok(0);
        }
        let in_flight = json_seqs(self.in_flight.iter());
        self.write(t, |conn, meta| expire_in(conn, meta, t, &in_flight))
    }

    /// Up to `limit` records `(seq, priority, payload)`, most urgent first, strictly
    /// after the `(priority, seq)` position `after` when given.
    pub fn peek(
        &mut self,
        limit: i64,
        after: Option<(i64, i64)>,
        now: Option<f64>,
    ) -> Result<Vec<(i64, i64, Vec<u8>)>> {
        if limit < 0 {
            return Err(Error::Value(format!(
                "limit must be in 0..{}, got {limit}",
                i64::MAX
            )));
        }
        let t = self.now_or_clock(now)?;
        self.expire_if_due(t)?;
        let map = |r: &rusqlite::Row<'_>| Ok((r.get(0)?, r.get(1)?, r.get(2)?));
        let acked = json_seqs(self.deferred.keys());
        let result = match after {
            None => self
                .conn
                .prepare_cached(
                    "SELECT seq, priority, payload FROM outbox \
                     WHERE seq NOT IN (SELECT value FROM json_each(?1)) \
                     ORDER BY priority, seq LIMIT ?2",
                )
                .and_then(|mut s| s.query_map(params![acked, limit], map)?.collect()),
            Some((priority, seq)) => self
                .conn
                .prepare_cached(
                    "SELECT seq, priority, payload FROM outbox WHERE (priority, seq) > (?1, ?2) \
                     AND seq NOT IN (SELECT value FROM json_each(?3)) \
                     ORDER BY priority, seq LIMIT ?4",
                )
                .and_then(|mut s| {
                    s.query_map(params![priority, seq, acked, limit], map)?
                        .collect()
                }),
        };
        result.map_err(|e| translate(&self.path, e))
    }

    /// Delete the records with these sequence numbers; how many were deleted.
    pub fn ack(&mut self, seqs: &[i64]) -> Result<i64> {
        if seqs.is_empty() {
            return Ok(0);
        }
        let now = self.clock();
        // Deferred ones among them are deleted by the transaction's start.
        let wanted: BTreeSet<i64> = seqs.iter().copied().collect();
        let already = wanted
            .iter()
            .filter(|seq| self.deferred.contains_key(seq))
            .count() as i64;
        let deleted = self.write(now, |conn, meta| delete_acked(conn, meta, seqs.iter()))?;
        Ok(deleted + already)
    }

    /// Acknowledge records without a transaction of their own: hidden from `peek`,
    /// `outbox_stats` and the quota at once, deleted by the next write transaction
    /// (folded into its commit) or `flush_acks`; how many of them are in the outbox.
    /// After a crash before that they are sent again (the hub drops duplicates).
    pub fn ack_deferred(&mut self, seqs: &[i64]) -> Result<i64> {
        if seqs.is_empty() {
            return Ok(0);
        }
        let wanted: BTreeSet<i64> = seqs.iter().copied().collect();
        let fresh = json_seqs(wanted.iter().filter(|s| !self.deferred.contains_key(s)));
        let rows: Vec<(i64, i64)> = self
            .conn
            .prepare_cached(
                "SELECT seq, length(payload) FROM outbox \
                 WHERE seq IN (SELECT value FROM json_each(?1))",
            )
            .and_then(|mut s| {
                s.query_map([fresh], |r| Ok((r.get(0)?, r.get(1)?)))?
                    .collect()
            })
            .map_err(|e| translate(&self.path, e))?;
        let found = rows.len() as i64;
        self.deferred.extend(rows);
        if self.in_flight.iter().any(|seq| wanted.contains(seq)) {
            self.in_flight = Arc::new(self.in_flight.difference(&wanted).copied().collect());
        }
        if self.deferred.len() > MAX_DEFERRED_ACKS {
            let now = self.clock();
            self.write(now, |_, _| Ok(()))?;
        }
        Ok(found)
    }

    /// Delete the records acknowledged with `ack_deferred` now; how many.
    pub fn flush_acks(&mut self) -> Result<i64> {
        let count = self.deferred.len() as i64;
        if count > 0 {
            let now = self.clock();
            self.write(now, |_, _| Ok(()))?;
        }
        Ok(count)
    }

    /// The records now on the wire (replacing the previous set; empty after a lost
    /// connection): the quota does not evict them, their TTL does not expire them and a
    /// newer record with their coalesce key does not replace them, so that a record the
    /// hub acknowledges is never also counted as dropped.
    pub fn set_in_flight(&mut self, seqs: &[i64]) {
        self.in_flight = Arc::new(seqs.iter().copied().collect());
    }

    /// Delete every record with `lo <= seq <= hi` for each range; how many.
    pub fn ack_ranges(&mut self, ranges: &[(i64, i64)]) -> Result<i64> {
        if ranges.is_empty() {
            return Ok(0);
        }
        let now = self.clock();
        self.write(now, |conn, meta| {
            let mut count = conn.prepare_cached(
                "SELECT count(*), coalesce(sum(length(payload)), 0) FROM outbox \
                 WHERE seq BETWEEN ?1 AND ?2",
            )?;
            let mut delete =
                conn.prepare_cached("DELETE FROM outbox WHERE seq BETWEEN ?1 AND ?2")?;
            let mut deleted = 0i64;
            for (lo, hi) in ranges {
                let (n, bytes): (i64, i64) =
                    count.query_row([lo, hi], |r| Ok((r.get(0)?, r.get(1)?)))?;
                if n > 0 {
                    delete.execute([lo, hi])?;
                    deleted += n;
                    meta.outbox_bytes -= bytes;
                }
            }
            Ok(deleted)
        })
    }

    /// Delete expired records now; how many.
    pub fn expire(&mut self, now: Option<f64>) -> Result<i64> {
        let t = self.now_or_clock(now)?;
        self.expire_if_due(t)
    }

    pub fn outbox_stats(&mut self, now: Option<f64>) -> Result<OutboxStats> {
        let t = self.now_or_clock(now)?;
        self.expire_if_due(t)?;
        let acked = json_seqs(self.deferred.keys());
        let (messages, oldest): (i64, Option<f64>) = self
            .conn
            .prepare_cached(
                "SELECT count(*), min(created) FROM outbox \
                 WHERE seq NOT IN (SELECT value FROM json_each(?1))",
            )
            .and_then(|mut s| s.query_row([acked], |r| Ok((r.get(0)?, r.get(1)?))))
            .map_err(|e| translate(&self.path, e))?;
        let m = &self.meta;
        Ok(OutboxStats {
            messages,
            bytes: m.outbox_bytes - self.deferred.values().sum::<i64>(),
            oldest_age: oldest.map_or(0.0, |o| (t - o).max(0.0)),
            next_seq: m.next_seq,
            max_bytes: self.max_bytes,
            dropped_expired: m.dropped_expired,
            dropped_quota: m.dropped_quota,
            rejected: m.rejected,
            coalesced: m.coalesced,
        })
    }

    /// `(priority, expired, quota)`: records dropped per priority by their TTL and by the
    /// quota policy since the file has schema version 3 (priorities with drops only, in
    /// priority order). The totals (`outbox_stats`) go back further.
    pub fn drop_counts(&self) -> Result<Vec<(i64, i64, i64)>> {
        self.conn
            .prepare_cached("SELECT priority, expired, quota FROM drops ORDER BY priority")
            .and_then(|mut s| {
                s.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
                    .collect()
            })
            .map_err(|e| translate(&self.path, e))
    }

    // ------------------------------------------------------------ salvage --

    /// Copy every readable row of the store at `path` into a new store at `dest`.
    pub fn salvage(path: &str, dest: &str) -> Result<SalvageCounts> {
        if path.contains('\0') || dest.contains('\0') {
            return Err(Error::Config(NUL_IN_PATH.to_string()));
        }
        if std::path::Path::new(dest).exists() {
            return Err(Error::Store(format!(
                "salvage destination already exists: {dest}"
            )));
        }
        if !std::path::Path::new(path).exists() {
            return Err(Error::Store(format!("{path}: no such file")));
        }
        let src = Connection::open_with_flags(
            path,
            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(|e| translate(path, e))?;
        // Read past a schema SQLite finds inconsistent (e.g. a truncated file): the
        // connection is read-only, so this cannot write anything.
        src.execute_batch("PRAGMA writable_schema = ON")
            .map_err(|e| translate(path, e))?;
        let mut out = Store::open(dest, Synchronous::Normal, DEFAULT_OUTBOX_MAX_BYTES)?;
        let mut counts = SalvageCounts::default();
        let copied = salvage_into(&src, &out.conn, &mut counts).map_err(|e| translate(dest, e));
        if !out.conn.is_autocommit() {
            let _ = out.conn.execute_batch("ROLLBACK");
        }
        let reread = read_meta(&out.conn).map_err(|e| translate(dest, e));
        let closed = match reread {
            Ok(meta) => {
                out.clock_base = meta.clock;
                out.persisted = meta.clone();
                out.meta = meta;
                out.coalesce = coalesce_keys(&out.conn).unwrap_or_default();
                out.close()
            }
            Err(e) => Err(e),
        };
        copied?;
        closed?;
        Ok(counts)
    }
}

/// Inside a write transaction: coalesce, make room and append `records` (their
/// sequence numbers); or, if the quota refuses them, count them in `rejected` and return
/// the reason as `Err` (the transaction goes on).
#[allow(clippy::too_many_arguments)]
fn append_in(
    conn: &Connection,
    meta: &mut Meta,
    coalesce: &mut HashMap<String, BTreeSet<i64>>,
    in_flight: &BTreeSet<i64>,
    max_bytes: i64,
    records: &[NewRecord<'_>],
    coalesce_key: Option<&str>,
    t: f64,
) -> rusqlite::Result<std::result::Result<Vec<i64>, String>> {
    let incoming: i64 = records.iter().map(|r| r.payload.len() as i64).sum();
    let largest = records
        .iter()
        .map(|r| r.payload.len() as i64)
        .max()
        .unwrap_or(0);
    // The least urgent record of the call decides what may be evicted for it.
    let threshold = records
        .iter()
        .map(|r| r.priority)
        .max()
        .unwrap_or(MAX_PRIORITY);
    let coalesce_victims = |conn: &Connection,
                            coalesce: &mut HashMap<String, BTreeSet<i64>>|
     -> rusqlite::Result<Vec<(i64, i64)>> {
        match coalesce_key {
            Some(key) => coalesce_victims(conn, coalesce, in_flight, key),
            None => Ok(Vec::new()),
        }
    };
    let mut victims = coalesce_victims(conn, coalesce)?;
    if largest > max_bytes {
        meta.rejected += records.len() as i64;
        return Ok(Err(format!(
            "a record of {largest} bytes exceeds the outbox quota of {max_bytes} bytes"
        )));
    }
    let mut freed: i64 = victims.iter().map(|v| v.1).sum();
    if meta.outbox_bytes - freed + incoming > max_bytes {
        expire_in(conn, meta, t, &json_seqs(in_flight.iter()))?;
        if coalesce_key.is_some() {
            victims = coalesce_victims(conn, coalesce)?;
            freed = victims.iter().map(|v| v.1).sum();
        }
    }
    let need = meta.outbox_bytes - freed + incoming - max_bytes;
    let mut evicted: Vec<(i64, i64)> = Vec::new();
    let mut evicted_priorities: Vec<i64> = Vec::new();
    if need > 0 {
        let mut stmt = conn.prepare_cached(
            "SELECT seq, length(payload) FROM outbox WHERE priority = ?1 ORDER BY seq",
        )?;
        let mut gained = 0i64;
        let mut spared = 0i64; // in flight: their acks free these bytes soon
                               // Least urgent priority first, oldest first: one indexed scan per priority (a
                               // single ORDER BY priority DESC, seq ASC sorts the whole outbox).
        'priorities: for priority in (threshold..=MAX_PRIORITY).rev() {
            let mut rows = stmt.query([priority])?;
            while let Some(row) = rows.next()? {
                let seq: i64 = row.get(0)?;
                let length: i64 = row.get(1)?;
                if victims.iter().any(|v| v.0 == seq) {
                    continue;
                }
                if in_flight.contains(&seq) {
                    spared += length;
                    continue;
                }
                evicted_priorities.push(priority);
                evicted.push((seq, length));
                gained += length;
                if gained >= need {
                    break 'priorities;
                }
            }
        }
        // Only records in flight could make the rest of the room: the record is stored
        // anyway, over the quota by at most the uplink window until their acks come.
        if gained + spared < need {
            meta.rejected += records.len() as i64;
            return Ok(Err(format!(
                "outbox full: {incoming} bytes do not fit in the quota of {max_bytes} bytes"
            )));
        }
    }
    if !victims.is_empty() || !evicted.is_empty() {
        let mut delete = conn.prepare_cached("DELETE FROM outbox WHERE seq = ?1")?;
        for (seq, length) in &victims {
            delete.execute([seq])?;
            meta.outbox_bytes -= length;
            meta.coalesced += 1;
        }
        for (seq, length) in &evicted {
            delete.execute([seq])?;
            meta.outbox_bytes -= length;
            meta.dropped_quota += 1;
        }
    }
    count_drops(conn, &evicted_priorities, false)?;
    let first = meta.next_seq;
    let mut insert = conn.prepare_cached(INSERT_OUTBOX)?;
    let mut seqs = Vec::with_capacity(records.len());
    for (i, record) in records.iter().enumerate() {
        let seq = first + i as i64;
        insert.execute(params![
            seq,
            record.priority,
            t,
            record.ttl.map(|ttl| t + ttl),
            record.payload,
            coalesce_key,
        ])?;
        seqs.push(seq);
    }
    meta.next_seq = first + records.len() as i64;
    meta.outbox_bytes += incoming;
    if let Some(key) = coalesce_key {
        if !coalesce.contains_key(key) && coalesce.len() >= MAX_COALESCE_KEYS {
            *coalesce = coalesce_keys(conn)?;
        }
        coalesce
            .entry(key.to_string())
            .or_default()
            .extend(seqs.iter().copied());
    }
    Ok(Ok(seqs))
}

/// The records a new one with coalesce key `key` replaces (not those in flight: the hub
/// gets them anyway). Found by `coalesce` and checked by sequence number (no index on
/// the key: one page less written per appended record).
fn coalesce_victims(
    conn: &Connection,
    coalesce: &mut HashMap<String, BTreeSet<i64>>,
    in_flight: &BTreeSet<i64>,
    key: &str,
) -> rusqlite::Result<Vec<(i64, i64)>> {
    let mut rows: Vec<(i64, i64)> = Vec::new();
    if let Some(known) = coalesce.get(key) {
        let mut stmt = conn.prepare_cached(SELECT_COALESCE)?;
        for seq in known {
            let length: Option<i64> = stmt.query_row(params![seq, key], |r| r.get(0)).optional()?;
            if let Some(length) = length {
                rows.push((*seq, length));
            }
        }
        // Forget the numbers whose records went (never one that may still be there: a
        // rolled-back transaction leaves its victims in place).
        coalesce.insert(key.to_string(), rows.iter().map(|r| r.0).collect());
    }
    Ok(rows
        .into_iter()
        .filter(|(seq, _)| !in_flight.contains(seq))
        .collect())
}

/// Coalesce key → sequence numbers, from the stored records (one scan).
fn coalesce_keys(conn: &Connection) -> rusqlite::Result<HashMap<String, BTreeSet<i64>>> {
    let mut found: HashMap<String, BTreeSet<i64>> = HashMap::new();
    let mut stmt = conn.prepare_cached(SELECT_COALESCE_KEYS)?;
    let mut rows = stmt.query([])?;
    while let Some(row) = rows.next()? {
        found.entry(row.get(1)?).or_default().insert(row.get(0)?);
    }
    Ok(found)
}

/// Records in flight (`in_flight`, a JSON array) are spared: the hub may have them
/// already (its ack deletes them; after a lost connection they expire at the next check).
fn expire_in(conn: &Connection, meta: &mut Meta, t: f64, in_flight: &str) -> rusqlite::Result<i64> {
    let mut priorities: Vec<i64> = Vec::new();
    {
        let mut stmt = conn.prepare_cached(EXPIRE_DELETE)?;
        let mut rows = stmt.query(params![t, in_flight])?;
        while let Some(row) = rows.next()? {
            priorities.push(row.get(0)?);
            meta.outbox_bytes -= row.get::<_, i64>(1)?;
        }
    }
    let n = priorities.len() as i64;
    meta.dropped_expired += n;
    count_drops(conn, &priorities, true)?;
    Ok(n)
}

/// Inside a write transaction: delete these records; how many were there.
fn delete_acked<'a>(
    conn: &Connection,
    meta: &mut Meta,
    seqs: impl Iterator<Item = &'a i64>,
) -> rusqlite::Result<i64> {
    let mut stmt = conn.prepare_cached(DELETE_ACKED)?;
    let mut deleted = 0i64;
    for seq in seqs {
        let mut rows = stmt.query([seq])?;
        while let Some(row) = rows.next()? {
            deleted += 1;
            meta.outbox_bytes -= row.get::<_, i64>(0)?;
        }
    }
    Ok(deleted)
}

/// Must this transaction write the meta row? Not when it appended records (`next_seq`
/// moved past `next_seq_before`) and changed nothing else but the sequence counter, the
/// outbox's size and (by less than `CLOCK_PERSIST_SECONDS`) the clock: `repair_meta`
/// finds those again at open from the newest record, whose sequence is past the file's.
fn meta_due(meta: &Meta, persisted: &Meta, next_seq_before: i64) -> bool {
    meta.next_seq == next_seq_before
        || meta.applied_revision != persisted.applied_revision
        || meta.dropped_expired != persisted.dropped_expired
        || meta.dropped_quota != persisted.dropped_quota
        || meta.rejected != persisted.rejected
        || meta.coalesced != persisted.coalesced
        || meta.clock - persisted.clock >= CLOCK_PERSIST_SECONDS
}

/// The meta row as it was at the last commit: transactions that only append skip it, so
/// a newest record past the file's `next_seq` means the counter, the outbox's size and
/// the clock moved on since; they are found again from the records.
fn repair_meta(conn: &Connection, meta: Meta) -> rusqlite::Result<Meta> {
    let newest: Option<(i64, f64)> = conn
        .query_row(
            "SELECT seq, created FROM outbox ORDER BY seq DESC LIMIT 1",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .optional()?;
    match newest {
        Some((seq, created)) if seq >= meta.next_seq => {
            let total: i64 = conn.query_row(
                "SELECT coalesce(sum(length(payload)), 0) FROM outbox",
                [],
                |r| r.get(0),
            )?;
            Ok(Meta {
                next_seq: seq + 1,
                outbox_bytes: total,
                clock: meta.clock.max(created),
                ..meta
            })
        }
        _ => Ok(meta),
    }
}

/// Add the dropped records' priorities to the per-priority counters (`drops`).
fn count_drops(conn: &Connection, priorities: &[i64], expired: bool) -> rusqlite::Result<()> {
    if priorities.is_empty() {
        return Ok(());
    }
    let mut counts = std::collections::BTreeMap::<i64, i64>::new();
    for priority in priorities {
        *counts.entry(*priority).or_insert(0) += 1;
    }
    let mut upsert = conn.prepare_cached(UPSERT_DROPS)?;
    for (priority, n) in counts {
        let (e, q) = if expired { (n, 0) } else { (0, n) };
        upsert.execute(params![priority, e, q])?;
    }
    Ok(())
}

fn configure(conn: &Connection, synchronous: Synchronous) -> rusqlite::Result<()> {
    conn.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
    conn.busy_timeout(Duration::from_millis(BUSY_TIMEOUT_MS))?;
    // Before the first write (switching to WAL writes the header): a no-op on a file that
    // exists, whose page size is fixed.
    conn.execute_batch(&format!("PRAGMA page_size = {PAGE_SIZE_BYTES}"))?;
    conn.execute_batch("PRAGMA journal_mode = WAL")?;
    let sync = match synchronous {
        Synchronous::Normal => "NORMAL",
        Synchronous::Full => "FULL",
    };
    conn.execute_batch(&format!(
        "PRAGMA synchronous = {sync}; PRAGMA journal_size_limit = {JOURNAL_SIZE_LIMIT_BYTES}; \
         PRAGMA wal_autocheckpoint = {WAL_AUTOCHECKPOINT_PAGES};"
    ))
}

/// Make the database at `path` owner-only (`FILE_MODE`) whatever the umask: create
/// it 0600 when it does not exist (SQLite gives its -wal and -shm files the database's
/// mode), and take the group and other bits off an existing database, -wal or -shm (an
/// older version created them 0644 under umask 022). Best effort: what cannot be done
/// here (a missing folder, another owner's file) is left to opening the database, which
/// reports it. The process umask is never touched (a library does not own it).
#[cfg(unix)]
fn private_files(path: &str) {
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    if path.is_empty() || path == ":memory:" {
        return;
    }
    let created = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .mode(FILE_MODE)
        .open(path);
    if let Ok(file) = created {
        // The mode given to open(2) is masked by the umask; this is not.
        let _ = file.set_permissions(std::fs::Permissions::from_mode(FILE_MODE));
    }
    for suffix in ["", "-wal", "-shm"] {
        let name = format!("{path}{suffix}");
        if let Ok(meta) = std::fs::metadata(&name) {
            let mode = meta.permissions().mode() & 0o7777;
            if mode & 0o077 != 0 {
                let _ =
                    std::fs::set_permissions(&name, std::fs::Permissions::from_mode(mode & !0o077));
            }
        }
    }
}

#[cfg(not(unix))]
fn private_files(_path: &str) {}

/// `PRAGMA quick_check` an existing file on a read-only connection, so that a
/// damaged file is never written to (a read-write connection would switch the
/// journal mode or checkpoint a WAL into it when closed).
fn check_integrity(path: &str) -> Result<()> {
    let existing = std::fs::metadata(path)
        .map(|m| m.len() > 0)
        .unwrap_or(false);
    if !existing {
        return Ok(());
    }
    let conn = Connection::open_with_flags(path, OpenFlags::SQLITE_OPEN_READ_ONLY)
        .map_err(|e| translate(path, e))?;
    conn.busy_timeout(Duration::from_millis(BUSY_TIMEOUT_MS))
        .map_err(|e| translate(path, e))?;
    let rows: Vec<String> = conn
        .prepare("PRAGMA quick_check")
        .and_then(|mut s| s.query_map([], |r| r.get(0))?.collect())
        .map_err(|e| translate(path, e))?;
    if rows != ["ok"] {
        return Err(Error::Corrupt(format!(
            "{path}: store is damaged ({})",
            code_text(SQLITE_CORRUPT)
        )));
    }
    Ok(())
}

fn create_or_migrate(conn: &Connection, path: &str) -> Result<()> {
    let tr = |e| translate(path, e);
    conn.execute_batch("BEGIN IMMEDIATE").map_err(tr)?;
    let outcome = (|| -> Result<()> {
        let version: i64 = conn
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .map_err(tr)?;
        if version == 0 {
            let tables: i64 = conn
                .query_row("SELECT count(*) FROM sqlite_master", [], |r| r.get(0))
                .map_err(tr)?;
            if tables > 0 {
                return Err(Error::Store(format!(
                    "{path}: not an edgenode store (schema version 0 with tables)"
                )));
            }
            conn.execute_batch(SCHEMA_SQL).map_err(tr)?;
        } else if version > SCHEMA_VERSION {
            return Err(Error::Store(format!(
                "{path}: schema version {version} is newer than this build supports ({SCHEMA_VERSION})"
            )));
        } else {
            for (from, sql) in MIGRATIONS {
                if *from >= version {
                    conn.execute_batch(sql).map_err(tr)?;
                }
            }
        }
        conn.execute_batch(&format!("PRAGMA user_version = {SCHEMA_VERSION}; COMMIT;"))
            .map_err(tr)
    })();
    if outcome.is_err() && !conn.is_autocommit() {
        let _ = conn.execute_batch("ROLLBACK");
    }
    outcome
}

fn read_meta(conn: &Connection) -> rusqlite::Result<Meta> {
    conn.query_row(
        "SELECT applied_revision, next_seq, outbox_bytes, dropped_expired, dropped_quota, \
         rejected, coalesced, clock FROM meta WHERE id = 1",
        [],
        |r| {
            Ok(Meta {
                applied_revision: r.get(0)?,
                next_seq: r.get(1)?,
                outbox_bytes: r.get(2)?,
                dropped_expired: r.get(3)?,
                dropped_quota: r.get(4)?,
                rejected: r.get(5)?,
                coalesced: r.get(6)?,
                clock: r.get(7)?,
            })
        },
    )
}

/// A column as an owned value; invalid UTF-8 text is an unreadable row.
fn owned(value: ValueRef<'_>) -> Option<Value> {
    Some(match value {
        ValueRef::Null => Value::Null,
        ValueRef::Integer(i) => Value::Integer(i),
        ValueRef::Real(f) => Value::Real(f),
        ValueRef::Text(t) => Value::Text(std::str::from_utf8(t).ok()?.to_string()),
        ValueRef::Blob(b) => Value::Blob(b.to_vec()),
    })
}

/// Pass the columns of each row `scan` returns after rowid `last` to `each`,
/// advancing `last`; how many rows were passed, or `Err` at an unreadable row.
///
/// A row is passed on only once the step to the next row succeeded, exactly as
/// Python's sqlite3 cursor does (it reads one row ahead and drops the current row
/// when that read fails), so both backends salvage the same rows.
fn scan_rows(
    src: &Connection,
    scan: &str,
    width: usize,
    last: &mut i64,
    errors: &mut i64,
    each: &mut impl FnMut(Vec<Value>) -> bool,
) -> std::result::Result<usize, ()> {
    let mut stmt = src.prepare(scan).map_err(|_| ())?;
    let mut rows = stmt.query([*last]).map_err(|_| ())?;
    let mut passed = 0;
    let mut pending: Option<(i64, Vec<Value>)> = None;
    let mut pass = |row: Option<(i64, Vec<Value>)>, last: &mut i64| {
        if let Some((rowid, values)) = row {
            *last = rowid;
            passed += 1;
            if !each(values) {
                *errors += 1;
            }
        }
    };
    while let Some(row) = rows.next().map_err(|_| ())? {
        pass(pending.take(), last);
        let rowid: i64 = row.get(0).map_err(|_| ())?;
        if rowid <= *last {
            return Err(()); // a damaged b-tree can go backwards: never loop
        }
        let mut values = Vec::with_capacity(width);
        for i in 1..=width {
            values.push(owned(row.get_ref(i).map_err(|_| ())?).ok_or(())?);
        }
        pending = Some((rowid, values));
    }
    pass(pending.take(), last);
    Ok(passed)
}

/// Call `each` with the columns of every readable row of `table` in rowid order.
///
/// After a failed scan the next row is re-read alone (as the pure twin must, its
/// cursors reading one row ahead); if that fails too, the damage is counted once
/// in `errors` and skipped by probing further rowids at doubling distances.
fn salvage_rows(
    src: &Connection,
    table: &str,
    columns: &str,
    errors: &mut i64,
    mut each: impl FnMut(Vec<Value>) -> bool,
) {
    let width = columns.split(',').count();
    let scan = format!("SELECT rowid, {columns} FROM {table} WHERE rowid > ?1 ORDER BY rowid");
    let single = format!("{scan} LIMIT 1");
    let probe = format!("SELECT rowid FROM {table} WHERE rowid > ?1 ORDER BY rowid LIMIT 1");
    let mut last = i64::MIN;
    loop {
        if scan_rows(src, &scan, width, &mut last, errors, &mut each).is_ok() {
            return;
        }
        match scan_rows(src, &single, width, &mut last, errors, &mut each) {
            Ok(0) => return,
            Ok(_) => continue,
            Err(()) => {}
        }
        *errors += 1;
        let mut skip: i64 = 1;
        loop {
            if last.checked_add(skip).is_none() || skip > SALVAGE_MAX_SKIP {
                return;
            }
            let found: rusqlite::Result<Option<i64>> = src
                .query_row(&probe, [last + skip], |r| r.get(0))
                .optional();
            match found {
                Ok(None) => return,
                Ok(Some(rowid)) if rowid > last + skip => {
                    last = rowid - 1;
                    break;
                }
                _ => skip = skip.saturating_mul(2),
            }
        }
    }
}

fn salvage_into(
    src: &Connection,
    dst: &Connection,
    counts: &mut SalvageCounts,
) -> rusqlite::Result<()> {
    let meta: Option<Vec<Value>> = src
        .query_row(
            "SELECT applied_revision, next_seq, dropped_expired, dropped_quota, rejected, \
             coalesced, clock FROM meta WHERE id = 1",
            [],
            |r| {
                (0..7)
                    .map(|i| Ok(owned(r.get_ref(i)?).unwrap_or(Value::Null)))
                    .collect()
            },
        )
        .optional()
        .unwrap_or_else(|_| {
            counts.errors += 1;
            None
        });
    let resource_errors = counts.errors;
    dst.execute_batch("BEGIN IMMEDIATE")?;
    let mut errors = counts.errors;
    {
        let mut insert =
            dst.prepare_cached("INSERT INTO resources (key, revision, data) VALUES (?1, ?2, ?3)")?;
        salvage_rows(src, "resources", "key, revision, data", &mut errors, |v| {
            let ok = insert.execute(rusqlite::params_from_iter(v)).is_ok();
            counts.resources += i64::from(ok);
            ok
        });
    }
    let lost_resources = errors > resource_errors;
    {
        let mut insert = dst.prepare_cached("INSERT INTO twins (device, doc) VALUES (?1, ?2)")?;
        salvage_rows(src, "twins", "device, doc", &mut errors, |v| {
            let ok = insert.execute(rusqlite::params_from_iter(v)).is_ok();
            counts.twins += i64::from(ok);
            ok
        });
    }
    let mut max_seq = 0i64;
    let mut total = 0i64;
    {
        let columns = "seq, priority, created, expires, payload, coalesce_key";
        let mut insert = dst.prepare_cached(&format!(
            "INSERT INTO outbox ({columns}) VALUES (?1, ?2, ?3, ?4, ?5, ?6)"
        ))?;
        salvage_rows(src, "outbox", columns, &mut errors, |v| {
            let seq = match v[0] {
                Value::Integer(s) => Some(s),
                _ => None,
            };
            let length = match &v[4] {
                Value::Blob(b) => Some(b.len() as i64),
                Value::Text(t) => Some(t.chars().count() as i64),
                _ => None,
            };
            let ok = insert.execute(rusqlite::params_from_iter(v)).is_ok();
            if ok {
                counts.outbox += 1;
                max_seq = max_seq.max(seq.unwrap_or(0));
                total += length.unwrap_or(0);
            }
            ok
        });
    }
    counts.errors = errors;
    // Sequence numbers are never reused; a lost resource forces a full resync.
    let next_seq = max_seq + 1;
    let values: Vec<Value> = match meta {
        Some(m) => {
            let applied = if lost_resources {
                Value::Integer(0)
            } else {
                m[0].clone()
            };
            let old_next = match m[1] {
                Value::Integer(n) => n,
                _ => 0,
            };
            let mut v = vec![
                applied,
                Value::Integer(next_seq.max(old_next)),
                Value::Integer(total),
            ];
            v.extend(m[2..].iter().cloned());
            v
        }
        None => vec![
            Value::Integer(0),
            Value::Integer(next_seq),
            Value::Integer(total),
            Value::Integer(0),
            Value::Integer(0),
            Value::Integer(0),
            Value::Integer(0),
            Value::Real(0.0),
        ],
    };
    dst.execute(UPDATE_META, rusqlite::params_from_iter(values))?;
    dst.execute_batch("COMMIT")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn open(dir: &tempfile::TempDir, max: i64) -> Store {
        let path = dir.path().join("s.db");
        Store::open(path.to_str().unwrap(), Synchronous::Normal, max).unwrap()
    }

    fn rec(payload: &[u8], priority: i64) -> NewRecord<'_> {
        NewRecord {
            payload,
            priority,
            ttl: None,
        }
    }

    #[test]
    fn drops_are_counted_per_priority() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = open(&dir, 10);
        s.append(b"aaaa", 9, None, None, Some(0.0)).unwrap();
        s.append(b"bbbb", 7, Some(5.0), None, Some(0.0)).unwrap();
        s.append(b"cc", 9, None, None, Some(0.0)).unwrap();
        // 10 bytes: the oldest priority-9 record goes for a priority-2 one.
        s.append(b"dddd", 2, None, None, Some(1.0)).unwrap();
        assert_eq!(s.drop_counts().unwrap(), vec![(9, 0, 1)]);
        s.expire(Some(6.0)).unwrap();
        assert_eq!(s.drop_counts().unwrap(), vec![(7, 1, 0), (9, 0, 1)]);
        let stats = s.outbox_stats(Some(6.0)).unwrap();
        assert_eq!((stats.dropped_expired, stats.dropped_quota), (1, 1));
    }

    #[test]
    fn reserved_sequence_numbers_are_never_given_again() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = open(&dir, DEFAULT_OUTBOX_MAX_BYTES);
        assert_eq!(s.append(b"a", 5, None, None, Some(0.0)).unwrap(), 1);
        assert_eq!((s.reserve_seq(), s.reserve_seq()), (2, 3));
        assert_eq!(s.append(b"b", 5, None, None, Some(0.0)).unwrap(), 4);
        s.reserve_seq();
        s.close().unwrap();
        let s = open(&dir, DEFAULT_OUTBOX_MAX_BYTES);
        assert_eq!(s.next_seq(), 6);
    }

    #[test]
    fn sequence_numbers_increase_and_survive_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = open(&dir, DEFAULT_OUTBOX_MAX_BYTES);
        assert_eq!(
            s.append_many(&[rec(b"a", 5), rec(b"b", 0)], Some(1.0))
                .unwrap(),
            vec![1, 2]
        );
        assert_eq!(s.ack_ranges(&[(1, 2)]).unwrap(), 2);
        s.close().unwrap();
        let mut s = open(&dir, DEFAULT_OUTBOX_MAX_BYTES);
        assert_eq!(s.append(b"c", 5, None, None, Some(2.0)).unwrap(), 3);
        assert!(s.clock() >= 2.0);
    }

    #[test]
    fn peek_orders_by_priority_then_sequence_and_honours_after() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = open(&dir, DEFAULT_OUTBOX_MAX_BYTES);
        s.append_many(&[rec(b"a", 5), rec(b"b", 0), rec(b"c", 5)], Some(0.0))
            .unwrap();
        let all: Vec<i64> = s
            .peek(10, None, Some(0.0))
            .unwrap()
            .iter()
            .map(|r| r.0)
            .collect();
        assert_eq!(all, vec![2, 1, 3]);
        let rest: Vec<i64> = s
            .peek(10, Some((0, 2)), Some(0.0))
            .unwrap()
            .iter()
            .map(|r| r.0)
            .collect();
        assert_eq!(rest, vec![1, 3]);
    }

    #[test]
    fn quota_evicts_least_urgent_oldest_first_then_rejects() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = open(&dir, 10);
        s.append_many(&[rec(b"aaaa", 9), rec(b"bbbb", 9)], Some(0.0))
            .unwrap();
        assert_eq!(s.append(b"cccc", 9, None, None, Some(0.0)).unwrap(), 3);
        let seqs: Vec<i64> = s
            .peek(10, None, Some(0.0))
            .unwrap()
            .iter()
            .map(|r| r.0)
            .collect();
        assert_eq!(seqs, vec![2, 3]);
        let mut s2 = s;
        s2.append(b"dd", 0, None, None, Some(0.0)).unwrap();
        assert!(matches!(
            s2.append(b"eeeeeeeee", 9, None, None, Some(0.0)),
            Err(Error::Full(_))
        ));
        let stats = s2.outbox_stats(Some(0.0)).unwrap();
        assert_eq!((stats.dropped_quota, stats.rejected), (1, 1));
    }

    #[test]
    fn commit_batch_appends_each_record_as_append_would_and_stores_twins_in_one_go() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = open(&dir, 10);
        s.append(b"old", 5, None, Some("k"), Some(0.0)).unwrap();
        let batch = [
            BatchRecord {
                record: rec(b"aaaa", 5),
                coalesce_key: Some("k"),
            },
            BatchRecord {
                record: rec(b"bbbbbbbbbbb", 5),
                coalesce_key: None,
            },
            BatchRecord {
                record: rec(b"cccc", 5),
                coalesce_key: Some("k"),
            },
        ];
        let doc: &[u8] = b"{}";
        let seqs = s.commit_batch(&[("lamp", doc)], &batch, Some(0.0)).unwrap();
        assert_eq!(seqs, vec![Some(2), None, Some(3)]);
        let kept: Vec<i64> = s
            .peek(10, None, Some(0.0))
            .unwrap()
            .iter()
            .map(|r| r.0)
            .collect();
        assert_eq!(kept, vec![3]);
        assert_eq!(s.get_twin("lamp").unwrap().as_deref(), Some(doc));
        let stats = s.outbox_stats(Some(0.0)).unwrap();
        assert_eq!((stats.coalesced, stats.rejected, stats.next_seq), (2, 1, 4));
        assert_eq!(s.commit_batch(&[], &[], Some(0.0)).unwrap(), vec![]);
    }

    #[test]
    fn expired_records_are_dropped_and_counted() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = open(&dir, DEFAULT_OUTBOX_MAX_BYTES);
        s.append(b"x", 5, Some(10.0), None, Some(5.0)).unwrap();
        assert_eq!(s.peek(10, None, Some(14.9)).unwrap().len(), 1);
        assert_eq!(s.expire(Some(15.0)).unwrap(), 1);
        assert_eq!(s.outbox_stats(Some(15.0)).unwrap().dropped_expired, 1);
    }

    #[test]
    fn coalescing_keeps_only_the_newest_record() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = open(&dir, DEFAULT_OUTBOX_MAX_BYTES);
        s.append(b"old", 1, None, Some("status"), Some(0.0))
            .unwrap();
        s.append(b"new", 1, None, Some("status"), Some(0.0))
            .unwrap();
        let rows = s.peek(10, None, Some(0.0)).unwrap();
        assert_eq!(rows, vec![(2, 1, b"new".to_vec())]);
        assert_eq!(s.outbox_stats(Some(0.0)).unwrap().coalesced, 1);
    }

    #[test]
    fn changes_and_snapshots_set_the_applied_revision() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = open(&dir, DEFAULT_OUTBOX_MAX_BYTES);
        s.apply_changes(&[("a", 1, Some(b"1")), ("b", 2, None)], 2)
            .unwrap();
        assert_eq!(s.get_resource("b").unwrap(), Some((2, None)));
        assert_eq!(s.list_resources(false).unwrap().len(), 1);
        assert!(matches!(s.apply_changes(&[], 1), Err(Error::Value(_))));
        s.replace_all(&[("c", 3, b"3")], 3).unwrap();
        assert_eq!(
            s.list_resources(true).unwrap(),
            vec![("c".to_string(), 3, Some(b"3".to_vec()))]
        );
        assert_eq!(s.applied_revision(), 3);
        // A snapshot is authoritative: it may move the revision backwards.
        s.replace_all(&[("d", 1, b"1")], 1).unwrap();
        assert_eq!(s.applied_revision(), 1);
    }

    #[test]
    fn twins_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = open(&dir, DEFAULT_OUTBOX_MAX_BYTES);
        s.put_twin("d1", b"{}").unwrap();
        assert_eq!(s.get_twin("d1").unwrap(), Some(b"{}".to_vec()));
        assert_eq!(s.list_twins().unwrap(), vec!["d1".to_string()]);
        assert!(s.delete_twin("d1").unwrap());
        assert!(!s.delete_twin("d1").unwrap());
    }

    #[test]
    fn garbage_file_is_reported_corrupt_and_left_alone() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bad.db");
        let garbage = vec![0xAB_u8; 8192];
        std::fs::write(&path, &garbage).unwrap();
        let err = Store::open(path.to_str().unwrap(), Synchronous::Full, 100).unwrap_err();
        assert!(matches!(err, Error::Corrupt(ref m) if m.contains("bad.db")));
        assert_eq!(std::fs::read(&path).unwrap(), garbage);
    }

    #[test]
    fn newer_schema_version_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("new.db");
        let conn = Connection::open(&path).unwrap();
        conn.execute_batch("PRAGMA user_version = 7").unwrap();
        drop(conn);
        let err = Store::open(path.to_str().unwrap(), Synchronous::Normal, 100).unwrap_err();
        assert!(matches!(err, Error::Store(ref m) if m.contains('7') && m.contains("(4)")));
    }

    #[test]
    fn version_one_files_are_migrated() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("v1.db");
        let conn = Connection::open(&path).unwrap();
        conn.execute_batch(SCHEMA_V1_SQL).unwrap();
        conn.execute_batch(
            "INSERT INTO outbox VALUES (1, 5, 0.0, NULL, x'01'); \
             UPDATE meta SET next_seq = 2, outbox_bytes = 1; PRAGMA user_version = 1;",
        )
        .unwrap();
        drop(conn);
        let mut s = Store::open(path.to_str().unwrap(), Synchronous::Normal, 100).unwrap();
        assert_eq!(s.peek(10, None, Some(0.0)).unwrap(), vec![(1, 5, vec![1])]);
        assert_eq!(s.append(b"x", 5, None, Some("k"), Some(0.0)).unwrap(), 2);
    }

    #[test]
    fn salvage_copies_a_healthy_store() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = open(&dir, DEFAULT_OUTBOX_MAX_BYTES);
        s.append_many(&[rec(b"a", 1), rec(b"b", 2)], Some(0.0))
            .unwrap();
        s.put_twin("d", b"{}").unwrap();
        s.close().unwrap();
        let src = dir.path().join("s.db");
        let dst = dir.path().join("copy.db");
        let counts = Store::salvage(src.to_str().unwrap(), dst.to_str().unwrap()).unwrap();
        assert_eq!(
            counts,
            SalvageCounts {
                resources: 0,
                twins: 1,
                outbox: 2,
                errors: 0
            }
        );
        let mut copy = Store::open(dst.to_str().unwrap(), Synchronous::Normal, 100).unwrap();
        assert_eq!(copy.append(b"c", 1, None, None, None).unwrap(), 3);
    }

    #[test]
    fn salvage_of_garbage_copies_nothing_and_counts_errors() {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("garbage.db");
        std::fs::write(&src, vec![0x5a_u8; 3 * 4096]).unwrap();
        let dst = dir.path().join("out.db");
        let counts = Store::salvage(src.to_str().unwrap(), dst.to_str().unwrap()).unwrap();
        let expected = SalvageCounts {
            resources: 0,
            twins: 0,
            outbox: 0,
            errors: 4,
        };
        assert_eq!(counts, expected);
        assert!(Store::salvage(src.to_str().unwrap(), dst.to_str().unwrap()).is_err());
    }

    #[test]
    fn bad_arguments_are_value_errors() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = open(&dir, DEFAULT_OUTBOX_MAX_BYTES);
        assert!(matches!(
            s.append(b"x", 10, None, None, None),
            Err(Error::Value(_))
        ));
        assert!(matches!(
            s.append(b"x", 1, Some(f64::NAN), None, None),
            Err(Error::Value(_))
        ));
        assert!(matches!(
            s.append(b"x", 1, Some(-1.0), None, None),
            Err(Error::Value(_))
        ));
        assert!(matches!(s.peek(-1, None, None), Err(Error::Value(_))));
        assert!(Synchronous::parse("off").is_err());
    }
}

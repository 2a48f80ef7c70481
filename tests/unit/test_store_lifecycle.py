"""Opening, closing, the store clock, schema, migration, file format, corruption, salvage."""

from __future__ import annotations

import os
import random
import re
import sqlite3
import threading
import time
from pathlib import Path
from types import ModuleType

import pytest

from conftest import native_core
from edgenode import _pure
from edgenode._pure import store as pure_store
from edgenode.errors import ConfigError, StoreCorruptError, StoreError

RUST_STORE_SOURCE = Path(__file__).parents[2] / "crates" / "edgecore_fast" / "src" / "store.rs"
PAGE_SIZE = pure_store.PAGE_SIZE_BYTES
"""Of the files these tests make (new stores)."""


def backends() -> list[ModuleType]:
    return [_pure, native_core()]


def rust_constant(name: str) -> str:
    """The text of a ``pub const NAME: &str = "\\ ... ";`` in store.rs."""
    source = RUST_STORE_SOURCE.read_text()
    match = re.search(rf'pub const {name}: &str = "\\\n(.*?)";\n', source, re.DOTALL)
    assert match, name
    return match.group(1)


def master(path: Path) -> list[tuple[str, str, str]]:
    with sqlite3.connect(path) as db:
        return db.execute("SELECT type, name, sql FROM sqlite_master ORDER BY name").fetchall()


# ------------------------------------------------------------------ open --


def test_a_new_store_is_a_wal_database_with_the_current_schema_version(core, tmp_path):
    path = tmp_path / "node.db"
    store = core.Store(str(path))
    assert store.path == str(path)
    assert core.SCHEMA_VERSION == 4
    assert core.DEFAULT_OUTBOX_MAX_BYTES == 64 * 1024 * 1024
    store.append(b"x", now=0)
    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA journal_mode").fetchone() == ("wal",)
        assert db.execute("PRAGMA user_version").fetchone() == (4,)
    store = core.Store(str(path))  # the per-priority drop counters start empty
    assert store.drop_counts() == []


@pytest.mark.parametrize("synchronous", ["off", "NORMAL", "", None, 1])
def test_an_unknown_synchronous_mode_is_a_config_error(core, tmp_path, synchronous):
    with pytest.raises(ConfigError, match="synchronous must be 'normal' or 'full'"):
        core.Store(str(tmp_path / "node.db"), synchronous=synchronous)
    assert issubclass(ConfigError, ValueError)


@pytest.mark.parametrize("limit", [0, -1, True, "1", 1.5, 2**63])
def test_a_bad_outbox_quota_is_a_config_error(core, tmp_path, limit):
    with pytest.raises(ConfigError, match="outbox_max_bytes"):
        core.Store(str(tmp_path / "node.db"), outbox_max_bytes=limit)


def test_full_synchronous_mode_opens(core, tmp_path):
    store = core.Store(str(tmp_path / "node.db"), synchronous="full")
    assert store.append(b"x", now=0) == 1


def test_a_missing_directory_is_a_store_error(core, tmp_path):
    with pytest.raises(StoreError, match="unable to open database file"):
        core.Store(str(tmp_path / "missing" / "node.db"))


def test_close_is_idempotent_and_any_later_use_is_a_store_error(core, tmp_path):
    store = core.Store(str(tmp_path / "node.db"))
    store.close()
    store.close()
    calls = [
        store.clock,
        store.applied_revision,
        lambda: store.apply_changes([], 1),
        lambda: store.replace_all([], 1),
        lambda: store.get_resource("a"),
        store.list_resources,
        lambda: store.put_twin("d", b""),
        lambda: store.get_twin("d"),
        store.list_twins,
        lambda: store.delete_twin("d"),
        lambda: store.append(b"x"),
        lambda: store.append_many([]),
        store.peek,
        lambda: store.ack([1]),
        lambda: store.ack_ranges([]),
        store.expire,
        store.outbox_stats,
        store.checkpoint,
    ]
    for call in calls:
        with pytest.raises(StoreError, match=r"^store is closed$"):
            call()


# ----------------------------------------------------------------- clock --


def test_the_clock_starts_at_zero_and_advances_monotonically(core, tmp_path):
    store = core.Store(str(tmp_path / "node.db"))
    first = store.clock()
    time.sleep(0.05)
    second = store.clock()
    assert 0 <= first < second < first + 5


def test_the_clock_continues_from_the_persisted_value_and_ignores_time_powered_off(core, tmp_path):
    path = str(tmp_path / "node.db")
    store = core.Store(path)
    store.append(b"x", now=1000)
    store.close()
    time.sleep(0.3)  # "powered off": must not count
    store = core.Store(path)
    assert 1000 <= store.clock() < 1000.25


def test_an_explicit_now_never_moves_the_persisted_clock_backwards(core, tmp_path):
    path = str(tmp_path / "node.db")
    store = core.Store(path)
    store.append(b"x", now=500)
    store.append(b"y", now=10)
    assert store.clock() >= 500
    store.close()
    assert core.Store(path).clock() >= 500


# ------------------------------------------------------- schema & format --


def test_new_files_get_small_pages_and_older_files_keep_theirs(core, tmp_path):
    """1 KiB pages: a commit writes a WAL frame per page it changes (docs/store.md)."""
    new = tmp_path / "new.db"
    core.Store(str(new)).close()
    old = tmp_path / "old.db"
    with sqlite3.connect(old) as db:  # a file made by a build with 4 KiB pages
        db.execute("PRAGMA page_size = 4096")
        db.executescript(pure_store.SCHEMA_V1_SQL + "PRAGMA user_version = 1;")
    store = core.Store(str(old))
    assert store.append(b"x", now=0) == 1
    store.close()
    for path, size in ((new, 1024), (old, 4096)):
        with sqlite3.connect(path) as db:
            assert db.execute("PRAGMA page_size").fetchone() == (size,)
            assert db.execute("PRAGMA journal_mode").fetchone() == ("wal",)


def test_the_schema_sql_is_textually_identical_in_both_backends():
    assert rust_constant("SCHEMA_SQL") == pure_store.SCHEMA_SQL
    assert rust_constant("SCHEMA_V1_SQL") == pure_store.SCHEMA_V1_SQL


def test_both_backends_create_the_same_sqlite_master(tmp_path):
    py_path, rs_path = tmp_path / "py.db", tmp_path / "rs.db"
    _pure.Store(str(py_path)).close()
    native_core().Store(str(rs_path)).close()
    assert master(py_path) == master(rs_path)
    assert {name for kind, name, _ in master(py_path) if kind == "table"} == {
        "meta",
        "resources",
        "twins",
        "outbox",
        "drops",
    }


@pytest.mark.parametrize("direction", ["python-to-rust", "rust-to-python"])
def test_a_file_written_by_one_backend_is_read_and_written_by_the_other(tmp_path, direction):
    first, second = backends() if direction == "python-to-rust" else backends()[::-1]
    path = str(tmp_path / "node.db")
    store = first.Store(path)
    store.apply_changes([("a", 1, b"A"), ("b", 2, None)], 2)
    store.put_twin("dev", b"{}")
    store.append_many([(b"p1", 3, None), (b"p2", 0, 50)], now=10)
    store.append(b"st", 1, coalesce_key="status", now=10)
    store.ack([1])
    stats = store.outbox_stats(now=20)
    store.close()

    other = second.Store(path)
    assert other.applied_revision() == 2
    assert other.list_resources(include_tombstones=True) == [("a", 1, b"A"), ("b", 2, None)]
    assert other.get_twin("dev") == b"{}"
    assert other.outbox_stats(now=20) == stats
    assert other.peek(now=20) == [(2, 0, b"p2"), (3, 1, b"st")]
    assert other.clock() >= 10
    assert other.append(b"st2", 1, coalesce_key="status", now=30) == 4
    assert other.peek(now=30) == [(2, 0, b"p2"), (4, 1, b"st2")]
    other.close()
    again = first.Store(path)
    assert again.outbox_stats(now=30)["coalesced"] == 1
    assert again.peek(now=61) == [(4, 1, b"st2")]


# ------------------------------------------------------------- migration --


def write_v1_file(path: Path) -> None:
    with sqlite3.connect(path) as db:
        db.executescript(pure_store.SCHEMA_V1_SQL)
        db.executescript(
            "INSERT INTO resources VALUES ('cfg', 7, x'6162');"
            "INSERT INTO twins VALUES ('dev', x'7b7d');"
            "INSERT INTO outbox VALUES (4, 2, 1.5, NULL, x'01020304');"
            "UPDATE meta SET applied_revision = 7, next_seq = 5, outbox_bytes = 4, rejected = 3;"
            "PRAGMA user_version = 1;"
        )


def test_a_version_one_file_is_migrated_and_keeps_its_data(core, tmp_path):
    path = tmp_path / "v1.db"
    write_v1_file(path)
    store = core.Store(str(path))
    assert store.applied_revision() == 7
    assert store.get_resource("cfg") == (7, b"ab")
    assert store.get_twin("dev") == b"{}"
    assert store.peek(now=2) == [(4, 2, b"\x01\x02\x03\x04")]
    stats = store.outbox_stats(now=2)
    assert (stats["bytes"], stats["next_seq"], stats["rejected"]) == (4, 5, 3)
    assert store.append(b"s", coalesce_key="status", now=2) == 5
    store.close()
    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA user_version").fetchone() == (4,)


def test_a_version_three_file_loses_its_coalesce_index_and_still_coalesces(core, tmp_path):
    path = tmp_path / "v3.db"
    store = core.Store(str(path))
    store.append(b"old", 3, coalesce_key="twin/a", now=0)
    store.close()
    with sqlite3.connect(path) as db:  # as schema version 3 left it
        db.execute(
            "CREATE INDEX outbox_coalesce ON outbox (coalesce_key) WHERE coalesce_key IS NOT NULL"
        )
        db.execute("PRAGMA user_version = 3")
    store = core.Store(str(path))
    assert store.append(b"new", 3, coalesce_key="twin/a", now=0) == 2
    assert store.peek(now=0) == [(2, 3, b"new")]
    store.close()
    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA user_version").fetchone() == (4,)
        names = {name for (name,) in db.execute("SELECT name FROM sqlite_master")}
    assert "outbox_coalesce" not in names


def test_a_newer_schema_version_is_refused_naming_both_versions(core, tmp_path):
    path = tmp_path / "future.db"
    with sqlite3.connect(path) as db:
        db.execute("PRAGMA user_version = 9")
    newer = r"schema version 9 is newer than this build supports \(4\)"
    with pytest.raises(StoreError, match=newer):
        core.Store(str(path))


def test_a_foreign_sqlite_database_is_refused(core, tmp_path):
    path = tmp_path / "other.db"
    with sqlite3.connect(path) as db:
        db.execute("CREATE TABLE t (x)")
    with pytest.raises(StoreError, match="not an edgenode store"):
        core.Store(str(path))


# ------------------------------------------------------------ corruption --


def filled_store(core: ModuleType, path: Path, records: int = 2000) -> None:
    store = core.Store(str(path))
    store.apply_changes([(f"res/{i}", i, b"r" * 50) for i in range(1, 101)], 100)
    store.put_twin("dev", b"{}")
    for start in range(1, records + 1, 100):
        batch = [(payload_for(seq), seq % 10, None) for seq in range(start, start + 100)]
        store.append_many(batch, now=1)
    store.close()  # the last connection checkpoints: everything is in the main file


def payload_for(seq: int) -> bytes:
    return (b"%08d" % seq) * 40


@pytest.mark.parametrize(
    "damage",
    ["garbage", "truncated", "wrong-magic", "overwritten-pages"],
)
def test_a_damaged_file_raises_store_corrupt_error_naming_it_and_is_left_untouched(
    core, tmp_path, damage
):
    path = tmp_path / "node.db"
    if damage == "garbage":
        path.write_bytes(os.urandom(3 * PAGE_SIZE))
    else:
        filled_store(core, path)
        data = bytearray(path.read_bytes())
        if damage == "truncated":
            data = data[: len(data) // 2]
        elif damage == "wrong-magic":
            data[:16] = b"Not SQLite fmt\x00\x00"
        else:
            data[40 * PAGE_SIZE : 46 * PAGE_SIZE] = b"\xa5" * (6 * PAGE_SIZE)
        path.write_bytes(bytes(data))
    before = path.read_bytes()
    with pytest.raises(StoreCorruptError, match=re.escape(str(path))):
        core.Store(str(path))
    assert path.read_bytes() == before


def test_salvage_copies_every_readable_row_and_leaves_the_original_alone(core, tmp_path):
    path = tmp_path / "node.db"
    filled_store(core, path)
    data = bytearray(path.read_bytes())
    data[40 * PAGE_SIZE : 46 * PAGE_SIZE] = b"\xa5" * (6 * PAGE_SIZE)
    path.write_bytes(bytes(data))
    before = path.read_bytes()
    dest = tmp_path / "salvaged.db"

    counts = core.Store.salvage(str(path), str(dest))

    assert path.read_bytes() == before
    assert set(counts) == {"resources", "twins", "outbox", "errors"}
    assert counts["errors"] > 0
    assert 1000 < counts["outbox"] < 2000
    assert counts["twins"] == 1
    store = core.Store(str(dest))
    rows = store.peek(5000, now=1)
    assert len(rows) == counts["outbox"]
    assert all(payload == payload_for(seq) for seq, _, payload in rows)
    assert store.outbox_stats(now=1)["next_seq"] == 2001
    assert store.outbox_stats(now=1)["bytes"] == sum(len(p) for _, _, p in rows)
    if counts["resources"] < 100:
        assert store.applied_revision() == 0  # lost resources force a full resync


@pytest.mark.parametrize("damage", ["zeroed-pages", "garbage", "truncated", "first-page"])
def test_both_backends_salvage_the_same_rows(tmp_path, damage):
    path = tmp_path / "node.db"
    filled_store(_pure, path)
    data = bytearray(path.read_bytes())
    if damage == "zeroed-pages":
        data[30 * PAGE_SIZE : 33 * PAGE_SIZE] = b"\x00" * (3 * PAGE_SIZE)
    elif damage == "garbage":
        data = bytearray(os.urandom(len(data)))
    elif damage == "truncated":
        data = data[: len(data) // 2]
    else:
        data[100:PAGE_SIZE] = b"\xff" * (PAGE_SIZE - 100)
    path.write_bytes(bytes(data))
    results = [
        core.Store.salvage(str(path), str(tmp_path / f"out-{i}.db"))
        for i, core in enumerate(backends())
    ]
    assert results[0] == results[1]
    if damage == "truncated":
        assert results[0]["resources"] == 100
        assert 0 < results[0]["outbox"] < 2000
    if damage in ("garbage", "first-page"):
        assert results[0] == {"resources": 0, "twins": 0, "outbox": 0, "errors": 4}


def test_salvage_of_a_healthy_store_copies_everything(core, tmp_path):
    path = tmp_path / "node.db"
    filled_store(core, path, records=300)
    counts = core.Store.salvage(str(path), str(tmp_path / "copy.db"))
    assert counts == {"resources": 100, "twins": 1, "outbox": 300, "errors": 0}
    copy = core.Store(str(tmp_path / "copy.db"))
    assert copy.applied_revision() == 100


def test_salvage_never_overwrites_an_existing_destination(core, tmp_path):
    path = tmp_path / "node.db"
    filled_store(core, path, records=100)
    dest = tmp_path / "dest.db"
    dest.write_bytes(b"keep me")
    with pytest.raises(StoreError, match="already exists"):
        core.Store.salvage(str(path), str(dest))
    assert dest.read_bytes() == b"keep me"


# -------------------------------------------------------------- WAL bound --


def test_the_wal_stays_bounded_over_many_appends_and_acks(core, tmp_path):
    path = tmp_path / "node.db"
    store = core.Store(str(path))
    for i in range(10_000):
        seq = store.append(b"m" * 200, i % 10, now=0)
        store.ack([seq])
    wal = Path(f"{path}-wal")
    assert wal.stat().st_size < 6 * 1024 * 1024
    store.checkpoint()
    assert wal.stat().st_size == 0
    assert store.outbox_stats(now=0)["next_seq"] == 10_001


def test_a_path_with_a_nul_character_is_a_config_error(core, tmp_path):
    with pytest.raises(ConfigError, match="NUL"):
        core.Store(str(tmp_path / "a\x00b.db"))
    with pytest.raises(ConfigError, match="NUL"):
        core.Store.salvage(str(tmp_path / "a.db"), str(tmp_path / "b\x00.db"))


def test_threads_sharing_one_store_get_unique_sequence_numbers(core, tmp_path):
    store = core.Store(str(tmp_path / "node.db"))
    results: list[list[int]] = []

    def writer() -> None:
        mine: list[int] = []
        for _ in range(50):
            mine += store.append_many([(b"t" * 10, 5, None)] * 10, now=0)
        results.append(mine)

    threads = [threading.Thread(target=writer) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    every = sorted(seq for mine in results for seq in mine)
    assert every == list(range(1, 2001))
    assert all(mine == sorted(mine) for mine in results)
    assert store.outbox_stats(now=0)["bytes"] == 20_000


def test_a_damaged_file_with_a_wal_is_never_written_to(core, tmp_path):
    live = tmp_path / "live.db"
    filled_store(core, live, records=300)
    store = core.Store(str(live))
    store.append_many([(payload_for(seq), 1, None) for seq in range(301, 400)], now=1)
    path, wal = tmp_path / "copy.db", tmp_path / "copy.db-wal"
    data = bytearray(live.read_bytes())
    data[5 * PAGE_SIZE : 8 * PAGE_SIZE] = b"\x5a" * (3 * PAGE_SIZE)
    path.write_bytes(bytes(data))
    wal.write_bytes(Path(f"{live}-wal").read_bytes())
    store.close()
    before = (path.read_bytes(), wal.read_bytes())
    assert before[1], "the copy must carry a non-empty WAL"
    with pytest.raises(StoreCorruptError):
        core.Store(str(path))
    assert (path.read_bytes(), wal.read_bytes()) == before


def test_salvage_terminates_and_both_backends_agree_on_randomly_damaged_files(tmp_path):
    base = tmp_path / "base.db"
    filled_store(_pure, base)
    original = base.read_bytes()
    rng = random.Random(20261127)  # fixed: a failure must be reproducible
    for case in range(12):
        data = bytearray(original)
        for _ in range(rng.randint(1, 4)):
            start = rng.randrange(1, len(data) // PAGE_SIZE) * PAGE_SIZE + rng.randrange(PAGE_SIZE)
            end = min(start + rng.randint(8, PAGE_SIZE), len(data))
            data[start:end] = rng.randbytes(end - start)
        assert len(data) == len(original)
        path = tmp_path / f"damaged-{case}.db"
        path.write_bytes(bytes(data))
        results = [
            core.Store.salvage(str(path), str(tmp_path / f"out-{case}-{i}.db"))
            for i, core in enumerate(backends())
        ]
        assert results[0] == results[1], case

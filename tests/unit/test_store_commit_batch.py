"""Group commit: ``Store.commit_batch`` appends records and stores twins in one transaction."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from types import ModuleType

import pytest

from edgenode.errors import OutboxFullError, StoreError

QUOTA = 20


def open_store(core: ModuleType, tmp_path: Path, **kwargs: object):
    return core.Store(str(tmp_path / "node.db"), **kwargs)


def payloads(store) -> list[tuple[int, bytes]]:
    return [(seq, payload) for seq, _, payload in store.peek(100, now=0)]


def test_records_get_consecutive_sequence_numbers_in_the_order_given(core, tmp_path):
    store = open_store(core, tmp_path)
    store.append(b"before", now=0)
    seqs = store.commit_batch([], [(b"a", 5, None, None), (b"b", 5, None, None)], now=0)
    assert seqs == [2, 3]
    assert payloads(store) == [(1, b"before"), (2, b"a"), (3, b"b")]
    assert store.append(b"after", now=0) == 4


def test_each_record_keeps_its_own_priority_and_ttl(core, tmp_path):
    store = open_store(core, tmp_path)
    store.commit_batch([], [(b"slow", 9, None, None), (b"fast", 0, 10, None)], now=0)
    assert [(seq, prio) for seq, prio, _ in store.peek(10, now=0)] == [(2, 0), (1, 9)]
    assert store.expire(now=10) == 1
    assert payloads(store) == [(1, b"slow")]


def test_twins_of_the_batch_are_stored_and_a_later_document_of_a_device_wins(core, tmp_path):
    store = open_store(core, tmp_path)
    store.put_twin("lamp", b"old")
    assert store.commit_batch([("lamp", b"v1"), ("fan", b"f"), ("lamp", b"v2")], [], now=0) == []
    assert store.get_twin("lamp") == b"v2"
    assert store.list_twins() == ["fan", "lamp"]


def test_a_record_coalesces_stored_records_and_earlier_records_of_the_same_batch(core, tmp_path):
    store = open_store(core, tmp_path)
    store.append(b"stored", coalesce_key="lamp/status", now=0)
    seqs = store.commit_batch(
        [],
        [
            (b"s1", 5, None, "lamp/status"),
            (b"other", 5, None, "fan/status"),
            (b"s2", 5, None, "lamp/status"),
        ],
        now=0,
    )
    assert seqs == [2, 3, 4]
    assert payloads(store) == [(3, b"other"), (4, b"s2")]
    assert store.outbox_stats(now=0)["coalesced"] == 2
    # ... and the next batch coalesces what this one stored.
    assert store.commit_batch([], [(b"s3", 5, None, "lamp/status")], now=0) == [5]
    assert payloads(store) == [(3, b"other"), (5, b"s3")]


def test_the_quota_refuses_some_records_while_the_others_land(core, tmp_path):
    store = open_store(core, tmp_path, outbox_max_bytes=QUOTA)
    store.append(b"u" * 10, 0, now=0)  # more urgent: never evicted for priority 5
    seqs = store.commit_batch(
        [("lamp", b"doc")],
        [
            (b"a" * 6, 5, None, None),
            (b"b" * 25, 5, None, None),  # larger than the whole quota
            (b"c" * 6, 5, None, None),  # does not fit next to u and a
            (b"d" * 4, 5, None, None),
        ],
        now=0,
    )
    assert seqs == [2, None, 3, 4]
    # c evicted a (same priority, oldest first), then d fitted beside u and c.
    assert payloads(store) == [(1, b"u" * 10), (3, b"c" * 6), (4, b"d" * 4)]
    stats = store.outbox_stats(now=0)
    assert (stats["rejected"], stats["dropped_quota"], stats["bytes"]) == (1, 1, 20)
    assert store.get_twin("lamp") == b"doc"


def test_a_refused_record_never_consumes_a_sequence_number(core, tmp_path):
    store = open_store(core, tmp_path, outbox_max_bytes=QUOTA)
    store.append(b"u" * 20, 0, now=0)
    assert store.commit_batch([], [(b"x", 5, None, None), (b"y", 1, None, None)], now=0) == [
        None,
        None,
    ]
    assert store.next_seq() == 2
    assert store.outbox_stats(now=0)["rejected"] == 2


def test_the_result_equals_appending_the_records_one_by_one(core, tmp_path):
    records = [
        (b"a" * 7, 6, None, "k"),
        (b"b" * 9, 3, 5.0, None),
        (b"c" * 30, 1, None, None),
        (b"d" * 8, 6, None, "k"),
        (b"e" * 12, 2, None, None),
    ]
    batch = core.Store(str(tmp_path / "batch.db"), outbox_max_bytes=QUOTA)
    single = core.Store(str(tmp_path / "single.db"), outbox_max_bytes=QUOTA)
    for store in (batch, single):
        store.append(b"z" * 6, 8, now=0)
    expected: list[int | None] = []
    for payload, priority, ttl, key in records:
        try:
            expected.append(single.append(payload, priority, ttl, coalesce_key=key, now=1))
        except OutboxFullError:
            expected.append(None)
    assert batch.commit_batch([], records, now=1) == expected
    assert batch.peek(100, now=1) == single.peek(100, now=1)
    assert batch.outbox_stats(now=1) == single.outbox_stats(now=1)


def test_a_failing_twin_write_commits_none_of_the_batch(core, tmp_path):
    path = tmp_path / "node.db"
    core.Store(str(path)).close()
    # A real mid-transaction failure: SQLite itself aborts the twin insert, after the
    # batch's records were inserted in the same transaction.
    db = sqlite3.connect(path)
    db.execute(
        "CREATE TRIGGER no_boom BEFORE INSERT ON twins WHEN NEW.device = 'boom' "
        "BEGIN SELECT RAISE(ABORT, 'refused'); END"
    )
    db.commit()
    db.close()
    store = core.Store(str(path))
    store.append(b"kept", coalesce_key="k", now=0)
    before = store.outbox_stats(now=0)
    with pytest.raises(StoreError, match=r"node\.db: SQLite error code 19$"):
        store.commit_batch(
            [("lamp", b"doc"), ("boom", b"doc")],
            [(b"new", 5, None, "k"), (b"more", 5, None, None)],
            now=0,
        )
    assert payloads(store) == [(1, b"kept")]
    assert store.get_twin("lamp") is None
    assert store.outbox_stats(now=0) == before
    assert store.next_seq() == 2
    # The store is still usable, and the same batch without the failing twin lands.
    assert store.commit_batch([("lamp", b"doc")], [(b"new", 5, None, "k")], now=0) == [2]
    store.close()
    store = core.Store(str(path))
    assert payloads(store) == [(2, b"new")]
    assert store.get_twin("lamp") == b"doc"


def test_a_closed_store_refuses_a_batch(core, tmp_path):
    store = open_store(core, tmp_path)
    store.close()
    with pytest.raises(StoreError, match=r"^store is closed$"):
        store.commit_batch([("lamp", b"doc")], [(b"a", 5, None, None)], now=0)


@pytest.mark.parametrize(
    ("twins", "records", "error", "message"),
    [
        ([("lamp", "doc")], [], TypeError, "doc must be bytes, not str"),
        ([(7, b"doc")], [], TypeError, "device must be str, not int"),
        ([["lamp", b"doc"]], [], TypeError, r"each item must be a \(device, doc\) tuple"),
        ([("lamp",)], [], TypeError, r"each item must be a \(device, doc\) tuple, not tuple"),
        (
            [],
            [(b"a", 5, None)],
            TypeError,
            r"each item must be a \(payload, priority, ttl, coalesce_key\) tuple, not tuple",
        ),
        ([], [("a", 5, None, None)], TypeError, "payload must be bytes, not str"),
        ([], [(b"a", 10, None, None)], ValueError, r"priority must be in 0\.\.9, got 10"),
        ([], [(b"a", 5, 0, None)], ValueError, "ttl must be > 0 seconds, got 0"),
        ([], [(b"a", 5, None, 7)], TypeError, "coalesce_key must be str, not int"),
    ],
)
def test_bad_input_anywhere_in_the_batch_writes_nothing(
    core, tmp_path, twins, records, error, message
):
    store = open_store(core, tmp_path)
    good_twin = ("fan", b"f")
    good_record = (b"ok", 5, None, None)
    with pytest.raises(error, match=message):
        store.commit_batch([good_twin, *twins], [good_record, *records], now=0)
    assert store.peek(10, now=0) == []
    assert store.list_twins() == []
    assert store.next_seq() == 1


def test_a_non_finite_now_is_refused(core, tmp_path):
    store = open_store(core, tmp_path)
    with pytest.raises(ValueError, match="now must be a finite number"):
        store.commit_batch([], [(b"a", 5, None, None)], now=float("nan"))
    assert store.next_seq() == 1


def test_an_empty_batch_returns_an_empty_list_and_writes_nothing(core, tmp_path):
    store = open_store(core, tmp_path)
    assert store.commit_batch([], [], now=0) == []
    assert store.commit_batch(iter(()), (), now=0) == []
    assert store.next_seq() == 1


def test_a_batch_is_durable_after_reopening(core, tmp_path):
    store = open_store(core, tmp_path)
    store.commit_batch([("lamp", b"doc")], [(b"r", 3, None, "k")], now=0)
    store.close()
    store = open_store(core, tmp_path)
    assert store.peek(10, now=0) == [(1, 3, b"r")]
    assert store.get_twin("lamp") == b"doc"

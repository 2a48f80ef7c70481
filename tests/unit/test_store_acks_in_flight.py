"""Deferred acks, records in flight and the meta row's repair, on both backends.

- ``ack_deferred``: the hub's acks are deleted by the next write transaction (folded into
  a report's commit: one commit per report instead of two), hidden from reads and the
  quota at once; a crash before that sends them again (the hub drops duplicates).
- ``set_in_flight``: a record on the wire is never evicted by the quota, expired by its
  TTL or coalesced away, so a record the hub acknowledges is never also counted dropped.
- Transactions that only append skip the meta row; a restart after a crash finds the
  sequence counter, the outbox's size and the clock again from the records.
"""

from __future__ import annotations

import os
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from edgenode.errors import StoreError

FRAME_HEADER = 24


def open_store(core: ModuleType, tmp_path: Path, **kwargs: object) -> Any:
    return core.Store(str(tmp_path / "node.db"), **kwargs)


def wal_size(tmp_path: Path) -> int:
    return os.path.getsize(tmp_path / "node.db-wal")


def seqs(rows: list[tuple[int, int, bytes]]) -> list[int]:
    return [seq for seq, _, _ in rows]


# ------------------------------------------------------------- deferred acks --


def test_deferred_acks_are_hidden_at_once_and_cost_no_commit_of_their_own(
    core, tmp_path, after_crash
):
    store = open_store(core, tmp_path)
    store.append_many([(b"a" * 10, 5, None), (b"b" * 20, 5, None), (b"c" * 30, 5, None)], now=0)
    size = wal_size(tmp_path)
    assert store.ack_deferred([1, 2, 99]) == 2  # 99 is not in the outbox
    assert wal_size(tmp_path) == size  # nothing written
    assert seqs(store.peek(10, now=0)) == [3]
    assert seqs(store.peek(10, after=(5, 0), now=0)) == [3]
    stats = store.outbox_stats(now=0)
    assert (stats["messages"], stats["bytes"]) == (1, 30)
    # Acked again (a duplicate ack frame): counted once, no harm.
    assert store.ack_deferred([1]) == 0
    # A crash now: the acknowledged records are still in the file, sent again.
    assert seqs(after_crash("crash").peek(10, now=0)) == [1, 2, 3]


def test_the_next_write_deletes_deferred_acks_in_its_own_commit(core, tmp_path, after_crash):
    store = open_store(core, tmp_path)
    store.append_many([(b"a", 5, None), (b"b", 5, None)], now=0)
    store.ack_deferred([1])
    assert store.append(b"c", now=0) == 3
    crashed = after_crash("crash")
    assert seqs(crashed.peek(10, now=0)) == [2, 3]
    assert crashed.outbox_stats(now=0)["bytes"] == 2
    assert store.outbox_stats(now=0)["bytes"] == 2


def test_flush_acks_and_close_delete_them(core, tmp_path, after_crash):
    store = open_store(core, tmp_path)
    store.append_many([(b"a", 5, None), (b"b", 5, None), (b"c", 5, None)], now=0)
    store.ack_deferred([1])
    assert store.flush_acks() == 1
    assert store.flush_acks() == 0
    assert seqs(after_crash("flushed").peek(10, now=0)) == [2, 3]
    store.ack_deferred([2])
    store.close()
    reopened = open_store(core, tmp_path)
    assert seqs(reopened.peek(10, now=0)) == [3]
    assert reopened.outbox_stats(now=0)["bytes"] == 1
    with pytest.raises(StoreError, match="closed"):
        store.ack_deferred([3])
    with pytest.raises(StoreError, match="closed"):
        store.flush_acks()


def test_ack_counts_records_already_acknowledged_with_ack_deferred(core, tmp_path):
    store = open_store(core, tmp_path)
    store.append_many([(b"a", 5, None), (b"b", 5, None)], now=0)
    store.ack_deferred([1])
    assert store.ack([1, 2, 7]) == 2
    assert store.peek(10, now=0) == []
    assert store.outbox_stats(now=0)["bytes"] == 0


def test_folding_the_acks_into_the_next_commit_writes_fewer_frames(core, tmp_path):
    """One report a second: its commit and its ack's commit, or one commit for both."""

    def frames(folded: bool, where: Path) -> int:
        where.mkdir()
        store = open_store(core, where)
        doc = b'{"reported":{"t":1,"pad":"' + b"x" * 500 + b'"}}'
        previous: int | None = None
        store.commit_batch([("dev", doc)], [(b"r" * 200, 3, None, "twin/dev")], now=0)
        start = wal_size(where)
        for i in range(20):
            if previous is not None:
                if folded:
                    store.ack_deferred([previous])
                else:
                    store.ack([previous])
            (previous,) = store.commit_batch(
                [("dev", doc)], [(b"r" * 200, 3, None, "twin/dev")], now=i
            )
        return (wal_size(where) - start) // (1024 + FRAME_HEADER)

    assert frames(True, tmp_path / "folded") < frames(False, tmp_path / "separate")


def test_deferred_acks_are_bounded(core, tmp_path, after_crash):
    store = open_store(core, tmp_path)
    many = 10_001  # MAX_DEFERRED_ACKS + 1 on both backends
    store.append_many([(b"x", 5, None)] * many, now=0)
    assert store.ack_deferred(range(1, many + 1)) == many
    # Over the bound they were deleted at once: a crash now does not send them again.
    assert after_crash("crash").peek(10, now=0) == []


@pytest.mark.parametrize("bad", [["1"], [1.5], [None], [2**63], "12", [b"1"]])
def test_hostile_sequences_are_refused_without_a_change(core, tmp_path, bad):
    store = open_store(core, tmp_path)
    store.append(b"a", now=0)
    for call in (store.ack_deferred, store.set_in_flight):
        with pytest.raises((TypeError, ValueError, OverflowError)):
            call(bad)
    assert seqs(store.peek(10, now=0)) == [1]


# ---------------------------------------------------------- records in flight --


def test_the_quota_spares_records_in_flight(core, tmp_path):
    store = open_store(core, tmp_path, outbox_max_bytes=300)
    store.append_many([(b"a" * 100, 9, None), (b"b" * 100, 9, None), (b"c" * 100, 9, None)], now=0)
    store.set_in_flight([1, 2])
    assert store.append(b"d" * 100, priority=9, now=0) == 4
    assert seqs(store.peek(10, now=0)) == [1, 2, 4]  # 3, the oldest not on the wire, went
    assert store.drop_counts() == [(9, 0, 1)]
    # The hub acknowledges what it got: delivered, never also counted dropped.
    assert store.ack_deferred([1, 2]) == 2
    assert store.outbox_stats(now=0)["dropped_quota"] == 1


def test_a_record_is_stored_over_the_quota_when_only_records_in_flight_could_make_room(
    core, tmp_path
):
    """An alarm is not refused because the bulk records that would make room for it are
    on the wire: the outbox goes over its quota by at most those until their acks."""
    store = open_store(core, tmp_path, outbox_max_bytes=250)
    store.append_many([(b"a" * 100, 9, None), (b"b" * 100, 9, None)], now=0)
    store.set_in_flight([1, 2])
    assert store.append(b"alarm" * 20, priority=0, now=0) == 3
    stats = store.outbox_stats(now=0)
    assert (stats["bytes"], stats["dropped_quota"], stats["rejected"]) == (300, 0, 0)
    store.ack_deferred([1, 2])  # delivered: back under the quota
    assert store.outbox_stats(now=0)["bytes"] == 100
    # The link lost: records not acked are evictable again.
    store.append(b"c" * 100, priority=9, now=0)
    store.set_in_flight([])
    assert store.append(b"d" * 100, priority=0, now=0) == 5
    assert seqs(store.peek(10, now=0)) == [3, 5]
    assert store.outbox_stats(now=0)["dropped_quota"] == 1


def test_a_record_is_refused_when_records_in_flight_could_not_make_room_either(core, tmp_path):
    store = open_store(core, tmp_path, outbox_max_bytes=250)
    store.append(b"a" * 100, priority=9, now=0)  # in flight
    store.append(b"b" * 100, priority=0, now=0)  # more urgent than what comes: kept
    store.set_in_flight([1])
    with pytest.raises(Exception, match="outbox full"):
        store.append(b"c" * 200, priority=5, now=0)  # needs 150, in flight spares 100
    stats = store.outbox_stats(now=0)
    assert (stats["bytes"], stats["rejected"], stats["dropped_quota"]) == (200, 1, 0)
    assert store.append(b"c" * 140, priority=5, now=0) == 3  # needs 90: over by it


def test_a_ttl_does_not_expire_a_record_in_flight(core, tmp_path):
    store = open_store(core, tmp_path)
    store.append_many([(b"a", 5, 10.0), (b"b", 5, 10.0)], now=0)
    store.set_in_flight([1])
    assert store.expire(now=20) == 1
    assert seqs(store.peek(10, now=20)) == [1]
    assert store.outbox_stats(now=20)["dropped_expired"] == 1
    store.set_in_flight([])  # the connection went: it expires now
    assert store.expire(now=21) == 1
    assert store.peek(10, now=21) == []


def test_a_record_in_flight_is_not_coalesced_away(core, tmp_path):
    store = open_store(core, tmp_path)
    store.append(b"old", coalesce_key="twin/a", now=0)
    store.set_in_flight([1])
    store.append(b"new", coalesce_key="twin/a", now=0)
    assert seqs(store.peek(10, now=0)) == [1, 2]
    assert store.outbox_stats(now=0)["coalesced"] == 0
    store.set_in_flight([])
    store.append(b"newer", coalesce_key="twin/a", now=0)
    assert seqs(store.peek(10, now=0)) == [3]
    assert store.outbox_stats(now=0)["coalesced"] == 2


def test_acking_a_record_takes_it_off_the_wire(core, tmp_path):
    store = open_store(core, tmp_path, outbox_max_bytes=200)
    store.append_many([(b"a" * 100, 9, None), (b"b" * 100, 9, None)], now=0)
    store.set_in_flight([1, 2])
    store.ack_deferred([1])
    store.flush_acks()
    # 2 is still in flight; 1 is gone: room without evicting.
    assert store.append(b"c" * 100, priority=9, now=0) == 3
    assert store.outbox_stats(now=0)["dropped_quota"] == 0


# -------------------------------------------------------------- meta repair --


def test_a_crash_after_appends_finds_counter_size_and_clock_again(core, tmp_path, after_crash):
    store = open_store(core, tmp_path)
    store.append(b"a" * 10, now=100.0)
    store.close()  # the file's meta: next_seq 2, 10 bytes, clock 100
    store = open_store(core, tmp_path)
    store.append(b"b" * 20, now=130.0)
    store.append_many([(b"c" * 30, 5, 60.0)], now=150.0)
    crashed = after_crash("crash")
    assert crashed.next_seq() == 4
    stats = crashed.outbox_stats(now=150.0)
    assert (stats["messages"], stats["bytes"]) == (3, 60)
    assert crashed.clock() >= 150.0  # the TTL's start is not moved back
    assert crashed.append(b"d", now=151.0) == 4


def test_counters_are_never_lost_by_a_crash(core, tmp_path, after_crash):
    store = open_store(core, tmp_path, outbox_max_bytes=100)
    store.append(b"a" * 60, priority=9, now=0)
    store.append(b"b" * 60, priority=9, now=0)  # evicts 1
    store.append(b"c" * 10, ttl=1.0, now=0)
    store.expire(now=5)
    crashed = after_crash("crash")
    stats = crashed.outbox_stats(now=5)
    assert (stats["dropped_quota"], stats["dropped_expired"]) == (1, 1)
    assert crashed.drop_counts() == [(5, 1, 0), (9, 0, 1)]
    assert (stats["messages"], stats["bytes"], stats["next_seq"]) == (1, 60, 4)


def test_everything_acked_then_a_crash_never_reuses_a_sequence_the_hub_kept(
    core, tmp_path, after_crash
):
    store = open_store(core, tmp_path)
    store.append_many([(b"a", 5, None)] * 3, now=0)
    store.ack_deferred([1, 2, 3])
    store.flush_acks()  # a transaction that only deletes writes the meta row
    crashed = after_crash("crash")
    assert crashed.next_seq() == 4
    assert crashed.append(b"b", now=0) == 4

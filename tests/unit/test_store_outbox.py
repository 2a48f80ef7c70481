"""The outbox of the durable store: sequence numbers, order, acks, TTL, quota, coalescing."""

from __future__ import annotations

import math
from pathlib import Path
from types import ModuleType

import pytest

from edgenode.errors import OutboxFullError, StoreError


def open_store(core: ModuleType, tmp_path: Path, **kwargs: object):
    return core.Store(str(tmp_path / "node.db"), **kwargs)


def seqs_of(rows: list[tuple[int, int, bytes]]) -> list[int]:
    return [seq for seq, _, _ in rows]


# ---------------------------------------------------------------- sequence --


def test_sequence_numbers_start_at_one_and_increase_strictly(core, tmp_path):
    store = open_store(core, tmp_path)
    assert store.append(b"a", now=0) == 1
    assert store.append_many([(b"b", 5, None), (b"c", 0, None)], now=0) == [2, 3]
    assert store.append(b"d", now=0) == 4


def test_reserve_seq_takes_a_number_without_writing_and_the_next_write_persists_it(
    core, tmp_path, after_crash
):
    store = open_store(core, tmp_path)
    assert store.append(b"a", now=0) == 1
    wal = tmp_path / "node.db-wal"
    size = wal.stat().st_size
    assert [store.reserve_seq(), store.reserve_seq()] == [2, 3]
    assert store.next_seq() == 4
    assert wal.stat().st_size == size  # nothing written
    assert after_crash("a").next_seq() == 2  # the hub hears next_seq 2
    assert store.peek(10, now=0) == [(1, 5, b"a")]  # a reserved number is no record
    assert store.append(b"b", now=0) == 4
    assert after_crash("b").next_seq() == 5
    store.reserve_seq()
    store.close()  # close persists the counter too
    assert open_store(core, tmp_path).next_seq() == 6
    with pytest.raises(StoreError, match="closed"):
        store.reserve_seq()


def test_sequence_numbers_are_never_reused_after_everything_was_acked_and_reopened(core, tmp_path):
    store = open_store(core, tmp_path)
    store.append_many([(b"x", 5, None)] * 3, now=0)
    assert store.ack_ranges([(1, 3)]) == 3
    store.close()
    store = open_store(core, tmp_path)
    assert store.append(b"y", now=0) == 4
    assert store.outbox_stats(now=0)["next_seq"] == 5


def test_next_seq_names_the_sequence_number_of_the_next_append_and_survives_reopening(
    core, tmp_path
):
    store = open_store(core, tmp_path)
    assert store.next_seq() == 1
    store.append_many([(b"x", 5, None)] * 3, now=0)
    assert store.next_seq() == 4
    store.ack_ranges([(1, 3)])
    store.close()
    store = open_store(core, tmp_path)
    assert store.next_seq() == 4 == store.outbox_stats(now=0)["next_seq"]
    assert store.append(b"y", now=0) == 4


def test_append_many_of_nothing_returns_an_empty_list_and_uses_no_sequence(core, tmp_path):
    store = open_store(core, tmp_path)
    assert store.append_many([], now=0) == []
    assert store.append(b"a", now=0) == 1


# ------------------------------------------------------------------- order --


def test_peek_returns_most_urgent_first_and_sequence_order_within_a_priority(core, tmp_path):
    store = open_store(core, tmp_path)
    store.append_many([(b"a", 5, None), (b"b", 0, None), (b"c", 9, None), (b"d", 0, None)], now=0)
    assert store.peek(now=0) == [(2, 0, b"b"), (4, 0, b"d"), (1, 5, b"a"), (3, 9, b"c")]


def test_peek_after_a_position_continues_strictly_after_it(core, tmp_path):
    store = open_store(core, tmp_path)
    store.append_many([(b"a", 5, None), (b"b", 0, None), (b"c", 9, None), (b"d", 0, None)], now=0)
    assert seqs_of(store.peek(2, now=0)) == [2, 4]
    assert seqs_of(store.peek(2, after=(0, 4), now=0)) == [1, 3]
    assert store.peek(after=(9, 3), now=0) == []


def test_peek_limit_zero_returns_nothing_and_negative_limit_is_rejected(core, tmp_path):
    store = open_store(core, tmp_path)
    store.append(b"a", now=0)
    assert store.peek(0, now=0) == []
    with pytest.raises(ValueError, match="limit"):
        store.peek(-1, now=0)


def test_peek_does_not_remove_records(core, tmp_path):
    store = open_store(core, tmp_path)
    store.append(b"a", now=0)
    assert store.peek(now=0) == store.peek(now=0) == [(1, 5, b"a")]


# -------------------------------------------------------------------- acks --


def test_ack_deletes_exactly_the_given_sequence_numbers_and_ignores_unknown_ones(core, tmp_path):
    store = open_store(core, tmp_path)
    store.append_many([(b"a", 1, None), (b"b", 2, None), (b"c", 1, None)], now=0)
    assert store.ack([3, 99, 3]) == 1
    assert seqs_of(store.peek(now=0)) == [1, 2]


def test_acks_are_per_sequence_number_not_cumulative_across_priorities(core, tmp_path):
    store = open_store(core, tmp_path)
    store.append_many([(b"low", 9, None), (b"high", 0, None)], now=0)
    assert store.ack([2]) == 1
    assert store.peek(now=0) == [(1, 9, b"low")]


def test_ack_ranges_are_inclusive(core, tmp_path):
    store = open_store(core, tmp_path)
    store.append_many([(bytes([i]), 5, None) for i in range(10)], now=0)
    assert store.ack_ranges([(2, 4), (9, 20), (7, 6)]) == 5
    assert seqs_of(store.peek(now=0)) == [1, 5, 6, 7, 8]
    assert store.outbox_stats(now=0)["bytes"] == 5


def test_acked_bytes_are_released_from_the_quota_accounting(core, tmp_path):
    store = open_store(core, tmp_path)
    store.append_many([(b"12345", 5, None), (b"123", 5, None)], now=0)
    store.ack([1])
    stats = store.outbox_stats(now=0)
    assert (stats["messages"], stats["bytes"]) == (1, 3)


# --------------------------------------------------------------------- TTL --


def test_records_expire_at_append_time_plus_ttl_in_store_seconds(core, tmp_path):
    store = open_store(core, tmp_path)
    store.append(b"short", 5, 10, now=5)
    store.append(b"forever", 5, None, now=5)
    assert seqs_of(store.peek(now=14.999)) == [1, 2]
    assert seqs_of(store.peek(now=15)) == [2]
    assert store.outbox_stats(now=15)["dropped_expired"] == 1


def test_expire_deletes_and_counts_expired_records(core, tmp_path):
    store = open_store(core, tmp_path)
    store.append_many([(b"a", 5, 1), (b"b", 5, 2), (b"c", 5, None)], now=0)
    assert store.expire(now=1.5) == 1
    assert store.expire(now=1.5) == 0
    assert store.expire(now=100) == 1
    stats = store.outbox_stats(now=100)
    assert (stats["messages"], stats["dropped_expired"], stats["bytes"]) == (1, 2, 1)


def test_ttl_survives_a_reopen_on_the_store_clock_not_wall_time(core, tmp_path):
    store = open_store(core, tmp_path)
    store.append(b"ttl", 5, 10, now=5)
    store.close()
    store = open_store(core, tmp_path)
    clock = store.clock()
    # The clock continues from the persisted value (5), not from zero or wall time.
    assert 5 <= clock < 6
    assert store.peek() == [(1, 5, b"ttl")]
    assert store.peek(now=15) == []


@pytest.mark.parametrize("ttl", [0, -1, -0.5, math.nan, math.inf, -math.inf])
def test_non_positive_or_non_finite_ttl_is_rejected(core, tmp_path, ttl):
    store = open_store(core, tmp_path)
    with pytest.raises(ValueError, match="ttl"):
        store.append(b"a", 5, ttl, now=0)
    with pytest.raises(ValueError, match="ttl"):
        store.append_many([(b"a", 5, ttl)], now=0)
    assert store.outbox_stats(now=0)["next_seq"] == 1


def test_non_finite_now_is_rejected(core, tmp_path):
    store = open_store(core, tmp_path)
    with pytest.raises(ValueError, match="now must be a finite number"):
        store.append(b"a", now=math.nan)
    with pytest.raises(TypeError, match="now must be a number"):
        store.peek(now="1")


# ------------------------------------------------------------ bad records --


@pytest.mark.parametrize("payload", ["text", bytearray(b"x"), memoryview(b"x"), None, 1])
def test_payload_that_is_not_bytes_is_a_type_error(core, tmp_path, payload):
    store = open_store(core, tmp_path)
    with pytest.raises(TypeError, match="payload must be bytes"):
        store.append(payload, now=0)
    with pytest.raises(TypeError, match="payload must be bytes"):
        store.append_many([(b"ok", 5, None), (payload, 5, None)], now=0)
    assert store.peek(now=0) == []


@pytest.mark.parametrize("priority", [-1, 10, 2**64, -(2**70)])
def test_priority_outside_zero_to_nine_is_a_value_error(core, tmp_path, priority):
    store = open_store(core, tmp_path)
    with pytest.raises(ValueError, match=r"priority must be in 0\.\.9"):
        store.append(b"a", priority, now=0)


def test_priority_that_is_not_an_int_is_a_type_error(core, tmp_path):
    store = open_store(core, tmp_path)
    with pytest.raises(TypeError, match="priority must be int"):
        store.append(b"a", 1.0, now=0)


@pytest.mark.parametrize("record", [(b"a", 5), (b"a", 5, None, 1), [b"a", 5, None], b"a"])
def test_records_that_are_not_three_tuples_are_rejected(core, tmp_path, record):
    store = open_store(core, tmp_path)
    with pytest.raises(TypeError, match=r"\(payload, priority, ttl\) tuple"):
        store.append_many([record], now=0)


def test_a_bad_record_in_a_batch_appends_nothing(core, tmp_path):
    store = open_store(core, tmp_path)
    with pytest.raises(ValueError, match="priority"):
        store.append_many([(b"a", 5, None), (b"b", 11, None)], now=0)
    assert store.outbox_stats(now=0)["messages"] == 0


def test_a_huge_batch_is_one_transaction_with_consecutive_sequences(core, tmp_path):
    store = open_store(core, tmp_path)
    seqs = store.append_many([(b"x" * 16, i % 10, None) for i in range(20_000)], now=0)
    assert seqs == list(range(1, 20_001))
    assert store.outbox_stats(now=0)["bytes"] == 320_000


def test_empty_payload_is_a_valid_record(core, tmp_path):
    store = open_store(core, tmp_path)
    store.append(b"", now=0)
    assert store.peek(now=0) == [(1, 5, b"")]


@pytest.mark.parametrize("seqs", [["1"], [1.0], [None]])
def test_ack_with_non_int_sequence_numbers_is_a_type_error(core, tmp_path, seqs):
    store = open_store(core, tmp_path)
    with pytest.raises(TypeError, match="seq must be int"):
        store.ack(seqs)


def test_ack_with_out_of_range_sequence_numbers_is_a_value_error(core, tmp_path):
    store = open_store(core, tmp_path)
    with pytest.raises(ValueError, match="seq must be in"):
        store.ack([2**63])


# ------------------------------------------------------------------- quota --


def test_quota_evicts_less_or_equally_urgent_records_largest_priority_oldest_first(core, tmp_path):
    store = open_store(core, tmp_path, outbox_max_bytes=10)
    store.append_many([(b"aa", 5, None), (b"bb", 9, None), (b"cc", 9, None)], now=0)
    store.append_many([(b"dd", 3, None), (b"ee", 5, None)], now=0)
    assert store.append(b"ffff", 5, now=0) == 6
    # needed 4 bytes: evicted the oldest priority-9 records (2, 3), nothing more urgent
    assert seqs_of(store.peek(now=0)) == [4, 1, 5, 6]
    stats = store.outbox_stats(now=0)
    assert (stats["dropped_quota"], stats["bytes"], stats["rejected"]) == (2, 10, 0)


def test_quota_drops_are_counted_per_priority_and_kept_across_restarts(core, tmp_path):
    store = open_store(core, tmp_path, outbox_max_bytes=10)
    assert store.drop_counts() == []
    store.append_many([(b"aa", 5, None), (b"bb", 9, None), (b"cc", 9, None)], now=0)
    store.append_many([(b"dd", 3, None), (b"ee", 5, None)], now=0)
    store.append(b"ffffff", 5, now=0)  # 6 bytes: both priority-9 records and seq 1
    assert store.drop_counts() == [(5, 0, 1), (9, 0, 2)]
    store.append(b"g", 1, 5, now=0)  # 1 byte: the oldest of the priority-5 records goes
    store.close()
    store = open_store(core, tmp_path, outbox_max_bytes=10)
    assert store.expire(now=5) == 1
    assert store.drop_counts() == [(1, 1, 0), (5, 0, 2), (9, 0, 2)]
    stats = store.outbox_stats(now=5)
    assert (stats["dropped_quota"], stats["dropped_expired"]) == (4, 1)


def test_a_full_outbox_keeps_taking_more_urgent_records_while_less_urgent_ones_remain(
    core, tmp_path
):
    store = open_store(core, tmp_path, outbox_max_bytes=100)
    # Full: ten 10-byte records, priorities 9, 8, ..., 5 twice each, in that order.
    store.append_many([(b"%010d" % i, 9 - i // 2, None) for i in range(10)], now=0)
    evicted: list[int] = []
    for _ in range(10):
        before = {seq: prio for seq, prio, _ in store.peek(100, now=0)}
        assert store.append(b"u" * 10, 2, now=0) is not None  # never refused
        after = {seq for seq, _, _ in store.peek(100, now=0)}
        (gone,) = set(before) - after
        evicted.append(gone)
        assert before[gone] == max(before.values())  # the least urgent went first ...
        assert gone == min(s for s, p in before.items() if p == before[gone])  # ... oldest
    assert evicted == list(range(1, 11))
    assert store.drop_counts() == [(p, 0, 2) for p in range(5, 10)]
    # Only more urgent records (priority 2) remain: a priority-3 record is refused ...
    with pytest.raises(OutboxFullError):
        store.append(b"x" * 10, 3, now=0)
    # ... and one of the same priority replaces the oldest of them.
    assert store.append(b"y" * 10, 2, now=0) == 21
    assert store.drop_counts()[0] == (2, 0, 1)
    assert store.outbox_stats(now=0)["rejected"] == 1


def test_quota_never_evicts_more_urgent_records_and_rejects_instead(core, tmp_path):
    store = open_store(core, tmp_path, outbox_max_bytes=10)
    store.append_many([(b"aaaa", 0, None), (b"bbbb", 1, None)], now=0)
    with pytest.raises(OutboxFullError, match="outbox full"):
        store.append(b"cccc", 2, now=0)
    stats = store.outbox_stats(now=0)
    assert (stats["messages"], stats["rejected"], stats["dropped_quota"]) == (2, 1, 0)


def test_quota_removes_expired_records_before_evicting(core, tmp_path):
    store = open_store(core, tmp_path, outbox_max_bytes=10)
    store.append_many([(b"aaaa", 9, None), (b"bbbb", 0, 5)], now=0)
    store.append(b"cccc", 9, now=6)
    stats = store.outbox_stats(now=6)
    assert (stats["dropped_expired"], stats["dropped_quota"]) == (1, 0)
    assert seqs_of(store.peek(now=6)) == [1, 3]


def test_append_many_is_all_or_nothing_under_the_quota(core, tmp_path):
    store = open_store(core, tmp_path, outbox_max_bytes=10)
    store.append(b"aaaaaa", 0, now=0)
    with pytest.raises(OutboxFullError):
        store.append_many([(b"b", 9, None), (b"cccccc", 9, None)], now=0)
    stats = store.outbox_stats(now=0)
    assert (stats["messages"], stats["rejected"], stats["next_seq"]) == (1, 2, 2)
    assert store.append_many([(b"dd", 9, None), (b"ee", 9, None)], now=0) == [2, 3]


def test_a_single_payload_larger_than_the_quota_is_rejected_and_counted(core, tmp_path):
    store = open_store(core, tmp_path, outbox_max_bytes=8)
    with pytest.raises(OutboxFullError, match="exceeds the outbox quota of 8 bytes"):
        store.append(b"123456789", 0, now=0)
    assert store.outbox_stats(now=0)["rejected"] == 1
    assert isinstance(OutboxFullError("x"), StoreError)


def test_a_payload_exactly_the_quota_fits(core, tmp_path):
    store = open_store(core, tmp_path, outbox_max_bytes=8)
    assert store.append(b"12345678", 0, now=0) == 1


# -------------------------------------------------------------- coalescing --


def test_coalescing_keeps_only_the_newest_record_of_a_key(core, tmp_path):
    store = open_store(core, tmp_path)
    store.append(b"status-1", 1, coalesce_key="status", now=0)
    store.append(b"other", 1, now=0)
    store.append(b"status-2", 1, coalesce_key="status", now=0)
    store.append(b"status-3", 2, coalesce_key="status", now=0)
    assert store.peek(now=0) == [(2, 1, b"other"), (4, 2, b"status-3")]
    stats = store.outbox_stats(now=0)
    assert (stats["coalesced"], stats["dropped_quota"], stats["bytes"]) == (2, 0, 13)


def test_a_coalesced_record_frees_its_bytes_for_the_quota(core, tmp_path):
    store = open_store(core, tmp_path, outbox_max_bytes=10)
    store.append(b"0123456789", 0, coalesce_key="k", now=0)
    assert store.append(b"abcdefghij", 0, coalesce_key="k", now=0) == 2
    stats = store.outbox_stats(now=0)
    assert (stats["coalesced"], stats["rejected"], stats["dropped_quota"]) == (1, 0, 0)


def test_a_rejected_coalescing_append_keeps_the_previous_record(core, tmp_path):
    store = open_store(core, tmp_path, outbox_max_bytes=10)
    store.append(b"12345", 0, coalesce_key="k", now=0)
    store.append(b"12345", 0, now=0)
    with pytest.raises(OutboxFullError):
        store.append(b"1234567", 5, coalesce_key="k", now=0)
    assert seqs_of(store.peek(now=0)) == [1, 2]
    assert store.outbox_stats(now=0)["coalesced"] == 0


def test_coalescing_finds_records_stored_before_a_restart(core, tmp_path, after_crash):
    store = open_store(core, tmp_path)
    store.append(b"twin-1", 3, coalesce_key="twin/a", now=0)
    store.append(b"twin-b", 3, coalesce_key="twin/b", now=0)
    crashed = after_crash("crash")  # the lookup is rebuilt from the records at open
    assert crashed.append(b"twin-2", 3, coalesce_key="twin/a", now=0) == 3
    assert crashed.peek(now=0) == [(2, 3, b"twin-b"), (3, 3, b"twin-2")]
    assert crashed.outbox_stats(now=0)["coalesced"] == 1


def test_a_record_gone_by_ack_or_ttl_is_not_counted_coalesced(core, tmp_path):
    store = open_store(core, tmp_path)
    store.append(b"one", 3, coalesce_key="k", now=0)
    store.ack([1])
    store.append(b"two", 3, ttl=1.0, coalesce_key="k", now=0)
    store.expire(now=2)
    store.append(b"three", 3, coalesce_key="k", now=2)
    store.append_many([(b"plain", 3, None)], now=2)
    store.append(b"four", 3, coalesce_key="k", now=2)
    assert store.peek(now=2) == [(4, 3, b"plain"), (5, 3, b"four")]
    stats = store.outbox_stats(now=2)
    assert (stats["coalesced"], stats["dropped_expired"]) == (1, 1)


def test_coalescing_holds_after_more_keys_than_the_lookup_keeps(core, tmp_path):
    store = open_store(core, tmp_path)
    many = 100_001  # MAX_COALESCE_KEYS + 1 on both backends: the lookup is rebuilt
    store.commit_batch([], [(b"x", 5, None, f"key-{i}") for i in range(many)], now=0)
    store.ack_ranges([(1, many - 1)])  # all but the last gone: stale keys, then dropped
    store.append(b"new-key", 5, coalesce_key="fresh", now=0)
    store.append(b"again", 5, coalesce_key=f"key-{many - 1}", now=0)
    store.append(b"fresh-2", 5, coalesce_key="fresh", now=0)
    assert store.peek(now=0) == [(many + 2, 5, b"again"), (many + 3, 5, b"fresh-2")]
    assert store.outbox_stats(now=0)["coalesced"] == 2


def test_coalesce_key_must_be_a_string(core, tmp_path):
    store = open_store(core, tmp_path)
    with pytest.raises(TypeError, match="coalesce_key must be str"):
        store.append(b"a", coalesce_key=b"k", now=0)


# ------------------------------------------------------------------- stats --


def test_outbox_stats_has_exactly_the_documented_keys(core, tmp_path):
    store = open_store(core, tmp_path, outbox_max_bytes=1000)
    assert store.outbox_stats(now=0) == {
        "messages": 0,
        "bytes": 0,
        "oldest_age": 0.0,
        "next_seq": 1,
        "max_bytes": 1000,
        "dropped_expired": 0,
        "dropped_quota": 0,
        "rejected": 0,
        "coalesced": 0,
    }


def test_oldest_age_is_store_seconds_since_the_oldest_append(core, tmp_path):
    store = open_store(core, tmp_path)
    store.append(b"a", 9, now=10)
    store.append(b"b", 0, now=20)
    assert store.outbox_stats(now=25)["oldest_age"] == 15.0
    assert store.outbox_stats(now=5)["oldest_age"] == 0.0


def test_counters_survive_a_reopen(core, tmp_path):
    store = open_store(core, tmp_path, outbox_max_bytes=4)
    store.append(b"ab", 5, 1, now=0)
    store.append(b"cd", 5, coalesce_key="k", now=0)
    store.append(b"ef", 5, coalesce_key="k", now=0)
    store.append(b"gh", 5, now=2)  # over quota: record 1 has expired and makes room
    store.append(b"ij", 5, now=2)  # over quota: evicts record 3, the oldest at priority 5
    with pytest.raises(OutboxFullError):
        store.append(b"klmno", 0, now=2)
    before = store.outbox_stats(now=3)
    store.close()
    store = open_store(core, tmp_path, outbox_max_bytes=4)
    assert store.outbox_stats(now=3) == before
    assert before["dropped_expired"] == 1
    assert before["coalesced"] == 1
    assert before["rejected"] == 1
    assert before["dropped_quota"] == 1


def test_explicit_none_is_not_taken_for_an_omitted_priority_or_limit(core, tmp_path):
    store = open_store(core, tmp_path)
    with pytest.raises(TypeError, match="priority must be int, not NoneType"):
        store.append(b"a", None, now=0)
    with pytest.raises(TypeError, match="limit must be int, not NoneType"):
        store.peek(None, now=0)

"""Differential test of the store: the same operation sequence on both backends.

Hypothesis generates operation lists (outbox, group commits, cache, twins, reopen) with explicit
``now`` values and hostile arguments; a pure-Python store and a Rust store, each
in its own file, must return the same results, stats and exceptions (class and
message, with the file path normalised).
"""

from __future__ import annotations

import math
import tempfile
from pathlib import Path
from typing import Any

from hypothesis import event, given
from hypothesis import strategies as st

from conftest import native_core
from edgenode import _pure

QUOTA = 24  # small, so eviction, expiry-before-eviction and rejection all happen


def mostly(valid: st.SearchStrategy[Any], hostile: st.SearchStrategy[Any]) -> Any:
    """``hostile`` one time in ten, else ``valid`` (``one_of`` has no weights)."""
    return st.integers(min_value=0, max_value=9).flatmap(lambda i: hostile if i == 0 else valid)


nows = mostly(
    st.one_of(st.floats(min_value=0, max_value=100, allow_nan=False), st.integers(0, 100)),
    st.sampled_from([math.nan, math.inf, -1.0, "5"]),
)
payloads = mostly(
    st.one_of(st.binary(max_size=16), st.integers(0, 16).map(lambda n: b"p" * n)),
    st.sampled_from(["text", None, bytearray(b"ba")]),
)
priorities = mostly(st.integers(min_value=0, max_value=9), st.sampled_from([-1, 10, 2**64, 1.0]))
ttls = mostly(
    st.one_of(
        st.none(),
        st.floats(min_value=0.5, max_value=50, allow_nan=False),
        st.integers(min_value=1, max_value=50),
    ),
    st.sampled_from([0, -3, math.nan, math.inf, "1"]),
)
keys = st.one_of(st.sampled_from(["", "a", "b", "status", "k\x00nul"]), st.text(max_size=8))
coalesce_keys = mostly(st.sampled_from([None, None, "status", "health"]), st.just(7))
seqs = mostly(st.integers(min_value=-2, max_value=40), st.sampled_from([2**63, "1"]))
revisions = mostly(st.integers(min_value=0, max_value=30), st.sampled_from([-1, 2**63, "2"]))
records = mostly(
    st.tuples(payloads, priorities, ttls),
    st.sampled_from([(b"x", 1), [b"x", 1, None], b"x"]),
)
# Some payloads larger than the quota: a batch where some records are refused.
batch_payloads = st.one_of(payloads, st.integers(QUOTA - 4, QUOTA + 6).map(lambda n: b"q" * n))
batch_records = mostly(
    st.tuples(batch_payloads, priorities, ttls, coalesce_keys),
    st.sampled_from([(b"x", 1, None), [b"x", 1, None, None], b"x"]),
)
batch_twins = mostly(
    st.tuples(keys, mostly(st.binary(max_size=8), st.just("doc"))),
    st.sampled_from([("lamp",), ["lamp", b"{}"], (7, b"{}"), "lamp"]),
)
datas = mostly(st.one_of(st.none(), st.binary(max_size=10)), st.just("text"))

STRATEGIES: dict[str, st.SearchStrategy[tuple[Any, ...]]] = {
    "append": st.tuples(st.just("append"), payloads, priorities, ttls, coalesce_keys, nows),
    "append_many": st.tuples(st.just("append_many"), st.lists(records, max_size=4), nows),
    "commit_batch": st.tuples(
        st.just("commit_batch"),
        st.lists(batch_twins, max_size=3),
        st.lists(batch_records, max_size=5),
        nows,
    ),
    "peek": st.tuples(
        st.just("peek"),
        st.one_of(st.integers(min_value=0, max_value=12), st.just(-1)),
        st.one_of(st.none(), st.tuples(st.integers(-1, 10), st.integers(-1, 40))),
        nows,
    ),
    "ack": st.tuples(st.just("ack"), st.lists(seqs, max_size=6)),
    "ack_ranges": st.tuples(
        st.just("ack_ranges"),
        st.lists(st.tuples(st.integers(-2, 40), st.integers(-2, 40)), max_size=3),
    ),
    "expire": st.tuples(st.just("expire"), nows),
    "outbox_stats": st.tuples(st.just("outbox_stats"), nows),
    "apply_changes": st.tuples(
        st.just("apply_changes"),
        st.lists(st.tuples(keys, revisions, datas), max_size=4),
        revisions,
    ),
    "replace_all": st.tuples(
        st.just("replace_all"),
        st.lists(st.tuples(keys, revisions, st.binary(max_size=8)), max_size=4),
        revisions,
    ),
    "get_resource": st.tuples(st.just("get_resource"), keys),
    "list_resources": st.tuples(st.just("list_resources"), st.booleans()),
    "applied_revision": st.tuples(st.just("applied_revision")),
    "put_twin": st.tuples(
        st.just("put_twin"), keys, st.one_of(st.binary(max_size=8), st.just("doc"))
    ),
    "get_twin": st.tuples(st.just("get_twin"), keys),
    "list_twins": st.tuples(st.just("list_twins")),
    "delete_twin": st.tuples(st.just("delete_twin"), keys),
    "reserve_seq": st.tuples(st.just("reserve_seq")),
    "next_seq": st.tuples(st.just("next_seq")),
    "drop_counts": st.tuples(st.just("drop_counts")),
    "reopen": st.tuples(st.just("reopen")),
}
# The outbox is the heart: its operations are drawn several times as often.
WEIGHTS = {"append": 8, "append_many": 5, "commit_batch": 5, "peek": 3, "ack": 2, "ack_ranges": 2}
NAMES = [name for name in STRATEGIES for _ in range(WEIGHTS.get(name, 1))]
operations = st.sampled_from(NAMES).flatmap(lambda name: STRATEGIES[name])


def call(store: Any, op: tuple[Any, ...]) -> Any:
    name, *args = op
    if name == "append":
        payload, priority, ttl, key, now = args
        return store.append(payload, priority, ttl, coalesce_key=key, now=now)
    if name in ("append_many",):
        return store.append_many(args[0], now=args[1])
    if name == "commit_batch":
        return store.commit_batch(args[0], args[1], now=args[2])
    if name == "peek":
        return store.peek(args[0], after=args[1], now=args[2])
    if name in ("expire", "outbox_stats"):
        return getattr(store, name)(now=args[0])
    if name == "list_resources":
        return store.list_resources(include_tombstones=args[0])
    return getattr(store, name)(*args)


def outcome(store: Any, op: tuple[Any, ...], path: str) -> tuple[Any, ...]:
    try:
        return ("ok", call(store, op))
    except Exception as err:  # the class and message are what we compare
        return ("error", type(err).__name__, str(err).replace(path, "<path>"))


def open_all(paths: list[str]) -> list[Any]:
    backends = [_pure, native_core()]
    return [
        core.Store(path, outbox_max_bytes=QUOTA) for core, path in zip(backends, paths, strict=True)
    ]


@given(st.lists(operations, min_size=1, max_size=40))
def test_both_backends_agree_on_every_operation_sequence(ops):
    with tempfile.TemporaryDirectory() as tmp:
        paths = [str(Path(tmp) / f"{i}.db") for i in range(2)]
        stores = open_all(paths)
        try:
            for op in ops:
                if op[0] == "reopen":
                    for store in stores:
                        store.close()
                    stores = open_all(paths)
                    continue
                results = [outcome(s, op, p) for s, p in zip(stores, paths, strict=True)]
                assert results[0] == results[1], op
                if results[0][0] == "error":
                    event(f"{op[0]} raised {results[0][1]}")
                elif op[0] == "commit_batch" and None in results[0][1]:
                    event("commit_batch: the quota refused a record, others landed")
            final = [s.outbox_stats(now=1000) for s in stores]
            assert final[0] == final[1]
            drops = [s.drop_counts() for s in stores]
            assert drops[0] == drops[1]
            assert sum(e for _, e, _ in drops[0]) <= final[0]["dropped_expired"]
            assert sum(q for _, _, q in drops[0]) == final[0]["dropped_quota"]
            rows = [(s.peek(100, now=1000), s.list_twins()) for s in stores]
            assert rows[0] == rows[1]
            for counter in ("dropped_expired", "dropped_quota", "rejected", "coalesced"):
                if final[0][counter]:
                    event(f"{counter} > 0")
        finally:
            for store in stores:
                store.close()

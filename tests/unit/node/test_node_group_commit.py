"""``Daemon.commit``, the one commit port of the node's services: one transaction for a
batch's records and twins, the records in the node's envelope, with the node's
``[outbox] default_ttl`` (real config parsing, real Store)."""

from __future__ import annotations

from pathlib import Path

import pytest

from edgenode.config import parse_config
from edgenode.errors import StoreError
from edgenode.node.daemon import Daemon
from edgenode.service import OutRecord
from edgenode.store import Store
from edgenode.uplink import decode_uplink


@pytest.fixture
def daemon(tmp_path: Path):
    config = parse_config(
        {
            "node": {"name": "n1", "data_dir": str(tmp_path)},
            "outbox": {"default_ttl": 60, "max_bytes": 1000},
        },
        str(tmp_path / "n.toml"),
        {},
    )
    node = Daemon(config)
    # The store ``run`` would open (the rest of ``run`` is not needed here).
    node._store = Store(str(config.db_path), outbox_max_bytes=config.outbox.max_bytes)
    yield node
    node.store.close()


def test_a_batch_lands_in_one_commit_with_the_default_ttl_for_records_without_one(daemon):
    store = daemon.store
    t = store.clock()
    seqs = daemon.commit(
        [("lamp", b'{"doc":1}')],
        [
            OutRecord("telemetry", b'{"n":"default"}', 5),
            OutRecord("telemetry", b'{"n":"own"}', 5, 1000.0),
            OutRecord("status", b'{"n":"keyed"}', 3, None, "k"),
        ],
    )
    assert seqs == [1, 2, 3]
    assert store.get_twin("lamp") == b'{"doc":1}'
    assert store.expire(now=t + 61) == 2  # the two records without a ttl got 60 s
    (record,) = [decode_uplink(payload) for _, _, payload in store.peek(10, now=t + 61)]
    assert (record["kind"], record["node"], record["body"]) == ("telemetry", "n1", {"n": "own"})


def test_a_refused_record_is_none_and_a_failed_commit_stores_nothing(daemon):
    store = daemon.store
    too_big = OutRecord("telemetry", b'{"x":"' + b"x" * 1001 + b'"}', 5)
    assert daemon.commit([], [too_big]) == [None]
    assert store.outbox_stats()["rejected"] == 1
    store.close()
    with pytest.raises(StoreError, match="store is closed"):
        daemon.commit([("lamp", b"{}")], [OutRecord("telemetry", b"{}", 5)])
    daemon._store = Store(store.path)
    assert daemon.store.get_twin("lamp") is None
    assert daemon.store.next_seq() == 1


def test_a_record_too_large_for_its_envelope_is_refused_alone(daemon):
    huge = OutRecord("telemetry", b'{"x":"' + b"x" * 300_000 + b'"}', 5)
    small = OutRecord("telemetry", b'{"x":1}', 5)
    assert daemon.commit([], [huge, small]) == [None, 1]
    assert daemon.store.outbox_stats()["messages"] == 1

"""``Daemon.commit_uplink_batch``, the device layer's group commit inside the node: one
transaction for a batch's records and twins, with the node's ``[outbox] default_ttl``
(real config parsing, real Store)."""

from __future__ import annotations

from pathlib import Path

import pytest

from edgenode.config import parse_config
from edgenode.errors import StoreError
from edgenode.node.daemon import Daemon
from edgenode.store import Store


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
    seqs = daemon.commit_uplink_batch(
        [("lamp", b'{"doc":1}')],
        [(b"default", 5, None, None), (b"own", 5, 1000.0, None), (b"keyed", 3, None, "k")],
    )
    assert seqs == [1, 2, 3]
    assert store.get_twin("lamp") == b'{"doc":1}'
    assert store.expire(now=t + 61) == 2  # the two records without a ttl got 60 s
    assert [payload for _, _, payload in store.peek(10, now=t + 61)] == [b"own"]


def test_a_refused_record_is_none_and_a_failed_commit_stores_nothing(daemon):
    store = daemon.store
    assert daemon.commit_uplink_batch([], [(b"x" * 1001, 5, None, None)]) == [None]
    assert store.outbox_stats()["rejected"] == 1
    store.close()
    with pytest.raises(StoreError, match="store is closed"):
        daemon.commit_uplink_batch([("lamp", b"{}")], [(b"a", 5, None, None)])
    daemon._store = Store(store.path)
    assert daemon.store.get_twin("lamp") is None
    assert daemon.store.next_seq() == 1

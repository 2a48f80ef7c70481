"""DeferredTwinWrites: while a batch is handled, twin writes are held until the bus
commits them in the same transaction as the batch's uplink records, so a twin change is
never stored without its record (docs/device-api.md, "Delivery"). Real SQLite store in tmp_path."""

from __future__ import annotations

from pathlib import Path

import pytest

from edgenode.devices.bus import DeferredTwinWrites
from edgenode.errors import StoreError
from edgenode.store import Store


@pytest.fixture
def store(tmp_path: Path):
    opened = Store(str(tmp_path / "node.db"))
    yield opened
    opened.close()


def holding(store: Store, doc: bytes) -> DeferredTwinWrites:
    """Writes over ``store`` (lamp stored as b"old") holding ``doc`` for lamp."""
    store.put_twin("lamp", b"old")
    writes = DeferredTwinWrites(store)
    writes.deferring = True
    writes.put_twin("lamp", doc)
    return writes


def commit(store: Store, writes: DeferredTwinWrites) -> None:
    """What the bus does with a batch: the held documents in one commit, then released."""
    store.commit_batch(writes.held(), [])
    writes.committed()


def test_writes_go_straight_to_the_store_unless_deferring(store):
    writes = DeferredTwinWrites(store)
    writes.put_twin("lamp", b'{"a":1}')
    assert store.get_twin("lamp") == b'{"a":1}'


def test_held_writes_are_read_back_and_stored_only_when_committed(store):
    writes = holding(store, b"new-1")
    writes.put_twin("lamp", b"new-2")
    writes.put_twin("fan", b"fan-1")
    assert store.get_twin("lamp") == b"old"
    assert store.get_twin("fan") is None
    assert writes.get_twin("lamp") == b"new-2"
    assert writes.get_twin("fan") == b"fan-1"
    commit(store, writes)
    assert (store.get_twin("lamp"), store.get_twin("fan")) == (b"new-2", b"fan-1")
    assert not writes.deferring
    writes.put_twin("fan", b"fan-2")  # not deferring any more: written at once
    assert store.get_twin("fan") == b"fan-2"


def test_discarded_writes_never_reach_the_store(store):
    writes = holding(store, b"new")
    writes.discard()
    assert writes.get_twin("lamp") == b"old"
    commit(store, writes)
    assert store.get_twin("lamp") == b"old"


def test_deleting_a_twin_drops_its_held_write(store):
    writes = holding(store, b"new")
    assert writes.delete_twin("lamp") is True
    commit(store, writes)
    assert store.get_twin("lamp") is None


def test_a_failed_commit_keeps_what_was_not_stored(tmp_path):
    store = Store(str(tmp_path / "node.db"))
    writes = DeferredTwinWrites(store)
    writes.deferring = True
    writes.put_twin("lamp", b"new")
    store.close()
    with pytest.raises(StoreError, match="closed"):
        commit(store, writes)
    assert writes.get_twin("lamp") == b"new"
    writes.discard()
    with pytest.raises(StoreError):
        writes.get_twin("lamp")


def test_held_documents_are_handed_over_for_the_batch_commit_and_dropped_once_committed(store):
    writes = holding(store, b"new")
    writes.put_twin("fan", b"fan-1")
    assert writes.held() == [("lamp", b"new"), ("fan", b"fan-1")]
    assert writes.get_twin("lamp") == b"new"  # still held until committed
    store.commit_batch(writes.held(), [])
    writes.committed()
    assert not writes.deferring
    assert writes.held() == []
    assert (writes.get_twin("lamp"), writes.get_twin("fan")) == (b"new", b"fan-1")

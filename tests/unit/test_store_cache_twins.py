"""The desired-state cache and the twins of the durable store."""

from __future__ import annotations

from pathlib import Path
from types import ModuleType

import pytest


def open_store(core: ModuleType, tmp_path: Path):
    return core.Store(str(tmp_path / "node.db"))


# ---------------------------------------------------------- desired state --


def test_a_new_store_has_applied_revision_zero_and_no_resources(core, tmp_path):
    store = open_store(core, tmp_path)
    assert store.applied_revision() == 0
    assert store.list_resources(include_tombstones=True) == []
    assert store.get_resource("missing") is None


def test_apply_changes_upserts_and_tombstones_and_sets_the_revision(core, tmp_path):
    store = open_store(core, tmp_path)
    store.apply_changes([("node/a", 1, b"A1"), ("config/b", 2, b"B2")], 2)
    store.apply_changes([("node/a", 3, None), ("config/b", 4, b"B4")], 4)
    assert store.applied_revision() == 4
    assert store.get_resource("node/a") == (3, None)
    assert store.list_resources() == [("config/b", 4, b"B4")]
    assert store.list_resources(include_tombstones=True) == [
        ("config/b", 4, b"B4"),
        ("node/a", 3, None),
    ]


def test_the_applied_revision_never_goes_backwards(core, tmp_path):
    store = open_store(core, tmp_path)
    store.apply_changes([("a", 5, b"x")], 5)
    with pytest.raises(ValueError, match="revision 4 is older than the applied revision 5"):
        store.apply_changes([("a", 6, b"y")], 4)
    assert store.get_resource("a") == (5, b"x")
    store.apply_changes([], 5)
    assert store.applied_revision() == 5


def test_a_snapshot_may_move_the_applied_revision_backwards(core, tmp_path):
    """A hub restored from a backup answers with an older snapshot (docs/protocol.md)."""
    store = open_store(core, tmp_path)
    store.apply_changes([("a", 5, b"x")], 5)
    store.replace_all([("b", 2, b"y")], 3)
    assert store.applied_revision() == 3
    assert store.list_resources() == [("b", 2, b"y")]
    store.apply_changes([("c", 4, b"z")], 4)
    assert store.applied_revision() == 4


def test_replace_all_keeps_exactly_the_snapshot_without_tombstones(core, tmp_path):
    store = open_store(core, tmp_path)
    store.apply_changes([("a", 1, b"1"), ("b", 2, None), ("c", 3, b"3")], 3)
    store.replace_all([("c", 7, b"c7"), ("d", 8, b"d8")], 9)
    assert store.list_resources(include_tombstones=True) == [("c", 7, b"c7"), ("d", 8, b"d8")]
    assert store.applied_revision() == 9


def test_a_failed_change_batch_changes_nothing(core, tmp_path):
    store = open_store(core, tmp_path)
    store.apply_changes([("a", 1, b"1")], 1)
    with pytest.raises(TypeError, match="data must be bytes"):
        store.apply_changes([("b", 2, b"2"), ("c", 3, "text")], 3)
    with pytest.raises(ValueError, match="revision must be in"):
        store.apply_changes([("b", -2, b"2")], 3)
    assert store.list_resources() == [("a", 1, b"1")]
    assert store.applied_revision() == 1


@pytest.mark.parametrize("key", ["", "with\x00nul", "k" * 100_000, "ünïcødé/🙂"])
def test_unusual_keys_round_trip(core, tmp_path, key):
    store = open_store(core, tmp_path)
    store.apply_changes([(key, 1, b"v")], 1)
    assert store.get_resource(key) == (1, b"v")
    assert store.list_resources() == [(key, 1, b"v")]


def test_resources_are_listed_in_code_point_order(core, tmp_path):
    store = open_store(core, tmp_path)
    keys = ["b", "a", "B", "é", "aa", "\x00"]
    store.apply_changes([(k, 1, b"") for k in keys], 1)
    assert [k for k, _, _ in store.list_resources()] == sorted(keys)


@pytest.mark.parametrize(
    ("change", "error"),
    [((1, 1, b""), TypeError), (("k", "1", b""), TypeError), (("k", 1), TypeError)],
)
def test_malformed_changes_are_rejected(core, tmp_path, change, error):
    store = open_store(core, tmp_path)
    with pytest.raises(error):
        store.apply_changes([change], 1)


# ------------------------------------------------------------------ twins --


def test_twins_round_trip_sorted_and_delete_reports_whether_it_existed(core, tmp_path):
    store = open_store(core, tmp_path)
    store.put_twin("sensor-2", b'{"v":2}')
    store.put_twin("sensor-1", b'{"v":1}')
    store.put_twin("sensor-2", b'{"v":3}')
    assert store.list_twins() == ["sensor-1", "sensor-2"]
    assert store.get_twin("sensor-2") == b'{"v":3}'
    assert store.delete_twin("sensor-1") is True
    assert store.delete_twin("sensor-1") is False
    assert store.get_twin("sensor-1") is None


def test_twin_arguments_are_type_checked(core, tmp_path):
    store = open_store(core, tmp_path)
    with pytest.raises(TypeError, match="device must be str"):
        store.put_twin(b"dev", b"{}")
    with pytest.raises(TypeError, match="doc must be bytes"):
        store.put_twin("dev", "{}")


def test_cache_and_twins_survive_a_reopen(core, tmp_path):
    store = open_store(core, tmp_path)
    store.apply_changes([("a", 3, b"x"), ("b", 4, None)], 4)
    store.put_twin("d", b"{}")
    store.close()
    store = open_store(core, tmp_path)
    assert store.applied_revision() == 4
    assert store.list_resources(include_tombstones=True) == [("a", 3, b"x"), ("b", 4, None)]
    assert store.get_twin("d") == b"{}"

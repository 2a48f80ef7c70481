"""Resource validation, selectors, the SQLite store's revisions and the resume decision
(no processes: the functions the hub is built from)."""

from __future__ import annotations

from pathlib import Path

import pytest
from edgehub import fanout
from edgehub.hub import Hub, HubSettings
from edgehub.metrics import HubMetrics
from edgehub.resources import (
    MAX_RESOURCE_BYTES,
    ResourceError,
    parse_documents,
    resolve_kind,
    validate_document,
)
from edgehub.selectors import SelectorError, parse_selector, selector_from_spec
from edgehub.store import SqliteHubStore

from edgenode.protocol import Delete, Upsert


def doc(kind: str, name: str, spec: dict, labels: dict | None = None) -> dict:
    return {
        "apiVersion": "edgenode.io/v1",
        "kind": kind,
        "metadata": {"name": name, "labels": labels or {}},
        "spec": spec,
    }


def test_kinds_are_accepted_singular_plural_and_in_any_case():
    assert [resolve_kind(k) for k in ("node", "NODES", "Device", "configs", "Route")] == [
        "Node",
        "Node",
        "Device",
        "Config",
        "Route",
    ]
    with pytest.raises(ValueError, match="unknown kind 'pods'"):
        resolve_kind("pods")


@pytest.mark.parametrize(
    ("document", "field", "message"),
    [
        ({**doc("Config", "c", {}), "kind": "Pod"}, "kind", "unknown kind 'Pod'"),
        ({**doc("Config", "c", {}), "apiVersion": "v1"}, "apiVersion", "edgenode.io/v1"),
        ({**doc("Config", "c", {}), "extra": 1}, "extra", "unknown field"),
        (doc("Config", "c", {"dat": {}}), "spec.dat", "unknown field for Config"),
        (doc("Config", "Bad_Name", {}), "metadata.name", "invalid name"),
        (doc("Config", "c", {"data": {"k": 1}}), "spec.data.k", "must be a string"),
        (doc("Config", "c", {"nodeSelector": "env in (a"}), "spec.nodeSelector", "unbalanced"),
        (doc("Device", "d", {}), "spec.node", "required"),
        (doc("Device", "d", {"node": "n", "desired": []}), "spec.desired", "map"),
        (
            doc("Route", "r", {"from": "a/#/b", "to": "upstream"}),
            "spec.from",
            "invalid topic filter",
        ),
        (doc("Route", "r", {"from": "a/#", "to": "elsewhere"}), "spec.to", "upstream"),
        (
            doc("Route", "r", {"from": "a", "to": "upstream", "priority": 10}),
            "spec.priority",
            "[0, 9]",
        ),
        (
            doc("Route", "r", {"from": "a", "to": "upstream", "ttl": -1}),
            "spec.ttl",
            "must be in [1,",
        ),
        (doc("Node", "n", {}, {"bad key!": "v"}), "metadata.labels.bad key!", "label key"),
    ],
)
def test_invalid_documents_are_refused_naming_the_index_and_field(document, field, message):
    with pytest.raises(ResourceError) as info:
        validate_document(document, 3)
    assert info.value.index == 3
    assert info.value.field == field
    assert message in str(info.value)
    assert str(info.value).startswith(f"document 3: {field}")


def test_twin_limits_are_checked_when_a_device_is_applied():
    deep: dict = {}
    cursor = deep
    for _ in range(40):
        cursor["a"] = {}
        cursor = cursor["a"]
    with pytest.raises(ResourceError, match=r"spec\.desired") as info:
        validate_document(doc("Device", "d", {"node": "n", "desired": deep}), 0)
    assert info.value.field == "spec.desired"


def test_an_oversized_resource_is_refused():
    big = {f"k{i}": "x" * 1000 for i in range(MAX_RESOURCE_BYTES // 1000 + 1)}
    with pytest.raises(ResourceError, match="more than"):
        validate_document(doc("Config", "c", {"data": big}), 0)


def test_malformed_yaml_names_the_document_where_parsing_stopped():
    with pytest.raises(ResourceError, match="document 1: malformed YAML"):
        parse_documents("kind: Config\n---\nkind: [unclosed\n")


def test_yaml_aliases_are_refused_so_an_alias_bomb_cannot_expand():
    bomb = "a: &a [x, x]\nb: &b [*a, *a]\nc: [*b, *b]\n"
    with pytest.raises(ResourceError, match="aliases"):
        parse_documents(bomb)


def test_json_lists_and_item_lists_are_flattened_and_empty_documents_skipped():
    assert len(parse_documents('[{"a": 1}, {"b": 2}]')) == 2
    assert len(parse_documents('{"items": [{"a": 1}]}\n---\n---\n')) == 1


@pytest.mark.parametrize(
    ("text", "labels", "expected"),
    [
        ("env=prod", {"env": "prod"}, True),
        ("env==prod", {"env": "dev"}, False),
        ("env!=prod", {}, True),
        ("zone in (a, b),env", {"zone": "b", "env": "x"}, True),
        ("zone notin (a,b)", {"zone": "a"}, False),
        ("!gpu", {"gpu": "1"}, False),
        ("", {"anything": "x"}, True),
    ],
)
def test_label_selectors_match_like_kubernetes(text, labels, expected):
    assert parse_selector(text).matches(labels) is expected


@pytest.mark.parametrize(
    "text", ["env=", "=x", "a in (", "a in ()", "a in ((b))", "a,,b", "x" * 5000]
)
def test_invalid_selectors_are_refused(text):
    if text == "env=":  # an empty value is valid, as in Kubernetes
        assert parse_selector(text).matches({"env": ""})
        return
    with pytest.raises(SelectorError):
        parse_selector(text)


def test_a_node_selector_may_be_a_map_of_labels():
    assert selector_from_spec({"env": "prod"}).matches({"env": "prod", "x": "y"})
    with pytest.raises(SelectorError):
        selector_from_spec({"env": 1})


@pytest.fixture
def store(tmp_path: Path):
    s = SqliteHubStore(tmp_path / "hub.db")
    yield s
    s.close()


def test_every_change_takes_the_next_revision_and_unchanged_applies_take_none(store):
    results = store.put([validate_document(doc("Config", "a", {"data": {"k": "1"}}), 0)])
    assert results[0][1] == 1
    again = store.put([validate_document(doc("Config", "a", {"data": {"k": "1"}}), 0)])
    assert again[0] == (None, 1)
    changed = store.put([validate_document(doc("Config", "a", {"data": {"k": "2"}}), 0)])
    assert changed[0][1] == 2
    assert store.get("Config", "a").generation == 2
    tomb = store.delete("Config", "a")
    assert tomb is not None
    assert tomb.revision == 3
    assert tomb.body is None
    assert tomb.prev["spec"]["data"] == {"k": "2"}
    assert store.delete("Config", "a") is None
    assert [e.revision for e in store.log_since(0)] == [1, 2, 3]
    assert store.revision() == 3


def test_revisions_survive_reopening_the_store(tmp_path: Path):
    first = SqliteHubStore(tmp_path / "hub.db")
    first.put([validate_document(doc("Config", "a", {}), 0)])
    first.close()
    second = SqliteHubStore(tmp_path / "hub.db")
    second.put([validate_document(doc("Config", "b", {}), 0)])
    assert second.revision() == 2
    second.close()


def test_compaction_drops_the_log_but_not_the_resources(store):
    for i in range(5):
        store.put([validate_document(doc("Config", f"c{i}", {}), 0)])
    assert store.compact(3) == 3
    assert store.compacted_revision() == 3
    assert [e.revision for e in store.log_since(0)] == [4, 5]
    assert len(store.list_resources("Config")) == 5


def test_uplink_dedupe_reports_only_new_sequences(store):
    assert store.record_uplink("n1", [1, 2, 3]) == {1, 2, 3}
    assert store.record_uplink("n1", [2, 3, 4]) == {4}
    assert store.record_uplink("n2", [1]) == {1}


def test_forgetting_a_nodes_sequences_from_a_point_keeps_the_lower_ones_and_other_nodes(store):
    store.record_uplink("n1", [1, 2, 3, 4])
    store.record_uplink("n2", [3, 4])
    assert store.forget_uplink_from("n1", 3) == 2
    assert store.forget_uplink_from("n1", 3) == 0
    assert store.record_uplink("n1", [2, 3, 4]) == {3, 4}
    assert store.record_uplink("n2", [3, 4]) == set()


def _resume(store, node, since, labels):
    return fanout.resume(
        node,
        since,
        store.revision(),
        store.compacted_revision(),
        store.log_since(since),
        labels,
        store.list_resources(),
    )


def test_resume_sends_only_changes_after_r_for_that_node_including_tombstones(store):
    store.put([validate_document(doc("Node", "n1", {}, {"env": "prod"}), 0)])  # 1
    store.put([validate_document(doc("Config", "all", {}), 0)])  # 2
    store.put([validate_document(doc("Device", "d1", {"node": "n1"}), 0)])  # 3
    store.put([validate_document(doc("Device", "d2", {"node": "n2"}), 0)])  # 4
    store.put([validate_document(doc("Config", "dev", {"nodeSelector": "env=dev"}), 0)])  # 5
    store.delete("Device", "d1")  # 6
    store.put([validate_document(doc("Config", "all", {"nodeSelector": "env=dev"}), 0)])  # 7
    plan = _resume(store, "n1", 2, {"env": "prod"})
    assert isinstance(plan, fanout.Changes)
    assert plan.revision == 7
    # d1 was created and deleted after R (the node never had it): nothing to send;
    # "all" stopped matching: a tombstone; d2 and "dev" are for other nodes.
    assert plan.changes == [Delete("Config/default/all", 7)]


def test_resume_from_before_the_compacted_log_gets_a_snapshot(store):
    store.put([validate_document(doc("Node", "n1", {}), 0)])
    for i in range(4):
        store.put([validate_document(doc("Config", f"c{i}", {}), 0)])
    store.compact(3)
    plan = _resume(store, "n1", 2, {})
    assert isinstance(plan, fanout.Snapshot)
    assert plan.revision == 5
    assert [r.key for r in plan.resources] == [
        "Config/default/c0",
        "Config/default/c1",
        "Config/default/c2",
        "Config/default/c3",
        "Node/default/n1",
    ]
    ahead = _resume(store, "n1", 99, {})
    assert isinstance(ahead, fanout.Snapshot)


def test_resume_after_the_nodes_labels_changed_gets_a_snapshot(store):
    store.put([validate_document(doc("Node", "n1", {}, {"env": "prod"}), 0)])
    store.put([validate_document(doc("Config", "p", {"nodeSelector": "env=prod"}), 0)])
    store.put([validate_document(doc("Node", "n1", {}, {"env": "dev"}), 0)])
    plan = _resume(store, "n1", 2, {"env": "dev"})
    assert isinstance(plan, fanout.Snapshot)
    assert [r.key for r in plan.resources] == ["Node/default/n1"]


def test_live_changes_become_upserts_or_deletes_per_node(store):
    ((entry, _),) = store.put([validate_document(doc("Config", "c", {"nodeSelector": "env=a"}), 0)])
    assert isinstance(fanout.live_change(entry, "n1", {"env": "a"}), Upsert)
    assert fanout.live_change(entry, "n1", {"env": "b"}) is None
    ((moved, _),) = store.put([validate_document(doc("Config", "c", {"nodeSelector": "env=b"}), 0)])
    assert fanout.live_change(moved, "n1", {"env": "a"}) == Delete("Config/default/c", 2)


def test_retry_after_spreads_a_stampede_over_what_the_hub_can_absorb(store):
    hub = Hub(store, HubSettings(max_handshakes=100, retry_after=1.0), HubMetrics())
    delays = [hub.retry_delay() for _ in range(2000)]
    assert all(d >= 1.0 for d in delays)
    assert max(delays[:10]) <= 2.0  # the first few: base plus up to 100 % jitter
    # Nothing measured yet: the hub is assumed to take 100 nodes per base delay, so the
    # 2000 told to come back are spread over about 20 seconds, not brought back at once.
    assert 15.0 < max(delays[-200:]) <= 1.0 + 2000 / 100 + 0.1
    late = sorted(delays[-1000:])
    assert late[len(late) // 2] > 5.0

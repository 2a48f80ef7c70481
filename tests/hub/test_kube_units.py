"""The Kubernetes API's pure parts: patches (merge, JSON, server-side apply), discovery and
OpenAPI from the kind registry (a throwaway kind appears without other changes), tables."""

from __future__ import annotations

import json
from typing import Any, ClassVar

import pytest
from edgehub.feed import Position
from edgehub.kinds import REGISTRY
from edgehub.kinds.base import Column, Kind, status_cell
from edgehub.kube import discovery, openapi
from edgehub.kube.objects import from_object, to_object, uid
from edgehub.kube.patches import PatchError, json_patch, merge_patch, server_side_apply
from edgehub.kube.table import table, wants_table


def test_merge_patch_is_rfc_7386():
    target = {"a": {"b": 1, "c": 2}, "l": [1, 2]}
    assert merge_patch(target, {"a": {"b": None, "d": 3}, "l": [3]}) == {
        "a": {"c": 2, "d": 3},
        "l": [3],
    }
    assert target == {"a": {"b": 1, "c": 2}, "l": [1, 2]}  # unchanged
    assert merge_patch({"a": 1}, {"a": {"b": None}}) == {"a": {}}


def test_json_patch_applies_or_says_why():
    assert json_patch({"a": [1]}, [{"op": "add", "path": "/a/-", "value": 2}]) == {"a": [1, 2]}
    for bad, words in (
        ({"op": "add"}, "list of operations"),
        ([{"op": "test", "path": "/a", "value": 9}], "does not apply"),
        ([{"op": "remove", "path": "/nope"}], "does not apply"),
        ([{"op": "replace", "path": "", "value": 3}], "object"),
    ):
        with pytest.raises(PatchError, match=words):
            json_patch({"a": 1}, bad)


def test_server_side_apply_removes_only_what_the_same_manager_dropped():
    first = server_side_apply(
        None, {"metadata": {"name": "x", "labels": {"a": "1", "b": "2"}}, "spec": {"n": 1}}, "m"
    )
    assert first["metadata"]["labels"] == {"a": "1", "b": "2"}
    stored = json.loads(first["metadata"]["annotations"]["apply.edgenode.io/m"])
    assert stored["spec"] == {"n": 1}
    # Someone else adds a label; manager m applies without "b".
    first["metadata"]["labels"]["other"] = "o"
    second = server_side_apply(first, {"metadata": {"name": "x", "labels": {"a": "1"}}}, "m")
    assert second["metadata"]["labels"] == {"a": "1", "other": "o"}
    assert "n" not in second.get("spec", {})
    # Another manager's apply does not remove m's fields.
    third = server_side_apply(second, {"metadata": {"name": "x"}, "spec": {"k": 2}}, "n2")
    assert third["metadata"]["labels"] == {"a": "1", "other": "o"}
    assert third["spec"] == {"k": 2}
    with pytest.raises(PatchError, match="fieldManager"):
        server_side_apply(None, {}, "a/b")


def test_objects_get_uids_and_positions_and_lose_them_when_sent_back():
    view = {"kind": "Node", "metadata": {"name": "n", "namespace": "default"}, "spec": {}}
    obj = to_object(view, 12.5, Position(4, 7))
    assert obj["metadata"]["resourceVersion"] == "4.7"
    assert obj["metadata"]["uid"] == uid("Node", "n", 12.5) != uid("Node", "n", 12.6)
    assert "namespace" not in obj["metadata"]
    back = from_object({**obj, "status": {"x": 1}})
    assert "status" not in back
    assert set(back["metadata"]) == {"name"}


class Widget(Kind):
    name = "Widget"
    plural = "widgets"
    singular = "widget"
    short_names = ("wg",)
    description = "A throwaway kind."
    spec_schema: ClassVar[dict[str, Any]] = {
        "type": "object",
        "properties": {"size": {"type": "integer", "description": "How big."}},
    }
    columns = (Column("SIZE", status_cell("size")), Column("MORE", status_cell("m"), wide=True))


@pytest.fixture
def widget() -> Any:
    REGISTRY.register(Widget())
    yield
    REGISTRY.unregister("Widget")


def test_a_new_kind_appears_in_discovery_openapi_and_tables(widget: Any):
    resources = {r["name"]: r for r in discovery.resource_list(REGISTRY)["resources"]}
    assert resources["widgets"]["shortNames"] == ["wg"]
    assert resources["widgets"]["namespaced"] is False
    assert resources["widgets/status"]["verbs"] == ["get"]
    document = openapi.group_document(REGISTRY)
    schema = document["components"]["schemas"]["io.edgenode.v1.Widget"]
    assert schema["properties"]["spec"]["properties"]["size"]["description"] == "How big."
    assert schema["x-kubernetes-group-version-kind"] == [
        {"group": "edgenode.io", "kind": "Widget", "version": "v1"}
    ]
    patch = document["paths"]["/apis/edgenode.io/v1/widgets/{name}"]["patch"]
    assert "fieldValidation" in [p["name"] for p in patch["parameters"]]
    index = openapi.index({openapi.GROUP_PATH: document})
    assert index["paths"][openapi.GROUP_PATH]["serverRelativeURL"].startswith(
        "/openapi/v3/apis/edgenode.io/v1?hash="
    )
    obj = {"metadata": {"name": "w", "creationTimestamp": None}, "status": {"size": 3, "m": 4}}
    result = table(REGISTRY.get("Widget"), [obj], "9", now=0.0)
    assert [c["name"] for c in result["columnDefinitions"]] == ["Name", "SIZE", "AGE", "MORE"]
    assert [c["priority"] for c in result["columnDefinitions"]] == [0, 0, 0, 1]
    assert result["rows"][0]["cells"] == ["w", "3", "<unknown>", "4"]
    assert result["rows"][0]["object"]["kind"] == "PartialObjectMetadata"


def test_tables_are_asked_for_by_kubectl_accept_headers():
    assert wants_table("application/json;as=Table;v=v1;g=meta.k8s.io,application/json")
    assert wants_table("application/json;as=Table;v=v1beta1;g=meta.k8s.io")
    assert not wants_table("application/json")

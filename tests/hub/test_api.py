"""The operator HTTP API of a real ``edgehub serve``: admin token, validation errors that
name the document index and field, size limits, selectors, health and metrics."""

from __future__ import annotations

import json
import os
import stat

from edgehub.resources import MAX_DOCUMENTS

VALID = """
apiVersion: edgenode.io/v1
kind: Config
metadata: {name: ok, labels: {tier: edge}}
spec: {data: {k: v}}
"""


def test_the_admin_token_is_created_once_with_mode_0600_and_its_path_printed(hub):
    mode = stat.S_IMODE(os.stat(hub.token_file).st_mode)
    assert mode == 0o600
    assert any(str(hub.token_file) in line for line in hub.output)
    first = hub.token
    hub.stop()
    hub.start()
    assert hub.token == first


def test_the_api_requires_the_admin_token(hub):
    assert hub.call("GET", "/v1/nodes", token="")[0] == 401
    status, body = hub.call("GET", "/v1/nodes", token="wrong")
    assert status == 401
    assert "wrong admin token" in body["error"]
    assert hub.call("GET", "/v1/nodes")[0] == 200
    assert hub.call("GET", "/healthz", token="")[0] == 200


def test_health_readiness_metrics_and_openapi_are_served_without_the_token(hub):
    assert hub.call("GET", "/readyz", token="")[0] == 200
    status, metrics = hub.call("GET", "/metrics", token="")
    assert status == 200
    for name in (
        "edgehub_connected_nodes",
        "edgehub_frames_in_total",
        "edgehub_frames_out_total",
        "edgehub_fanout_latency_seconds",
        "edgehub_acks_pending",
        "edgehub_uplink_records",
        "edgehub_rejected_connections",
    ):
        assert name in metrics
    status, doc = hub.call("GET", "/openapi.json", token="")
    assert status == 200
    assert doc["openapi"].startswith("3.")
    assert "/v1/apply" in doc["paths"]


def test_an_invalid_document_refuses_the_whole_apply_naming_index_and_field(hub):
    bad = (
        VALID
        + "---\n"
        + VALID.replace("name: ok", "name: two").replace("data: {k: v}", "data: {k: 1}")
    )
    status, body = hub.apply(bad)
    assert status == 422
    assert body["index"] == 1
    assert body["field"] == "spec.data.k"
    assert body["error"].startswith("document 1: spec.data.k")
    assert hub.call("GET", "/v1/configs")[1]["items"] == []  # all or nothing


def test_malformed_yaml_unknown_kinds_and_fields_are_4xx_with_a_message(hub):
    for text, fragment in [
        ("kind: [unclosed", "malformed YAML"),
        (VALID.replace("kind: Config", "kind: Pod"), "unknown kind"),
        (VALID.replace("spec:", "spek:"), "spek: unknown field"),
        ("just a string", "must be a map"),
        ("", "no documents"),
        (VALID + "---\n" + VALID, "appears twice"),
    ]:
        status, body = hub.apply(text)
        assert 400 <= status < 500, (text, body)
        assert fragment in body["error"]
    status, body = hub.call("POST", "/v1/apply", raw=b"\xff\xfe", content_type="text/plain")
    assert status == 400


def test_oversized_bodies_and_too_many_documents_are_refused(hub):
    status, _ = hub.call("POST", "/v1/apply", raw=b"x" * (5 * 1024 * 1024))
    assert status == 413
    many = "---\n".join(VALID.replace("name: ok", f"name: c{i}") for i in range(MAX_DOCUMENTS + 1))
    status, body = hub.apply(many)
    assert status == 422
    assert "more than" in body["error"]


def test_list_with_a_label_selector_and_invalid_selectors(hub):
    hub.apply(
        VALID
        + "---\n"
        + VALID.replace("name: ok", "name: other").replace("tier: edge", "tier: core")
    )
    _, body = hub.call("GET", "/v1/configs?labelSelector=tier%3Dedge")
    assert [i["metadata"]["name"] for i in body["items"]] == ["ok"]
    _, body = hub.call("GET", "/v1/Config?labelSelector=tier%20in%20(edge,core)")
    assert len(body["items"]) == 2
    status, body = hub.call("GET", "/v1/configs?labelSelector=tier%20in%20(")
    assert status == 400
    assert body["field"] == "labelSelector"


def test_get_and_delete_of_missing_resources_and_unknown_kinds_are_404(hub):
    assert hub.call("GET", "/v1/configs/nope")[0] == 404
    assert hub.call("DELETE", "/v1/configs/nope")[0] == 404
    assert hub.call("GET", "/v1/pods")[0] == 404


def test_twin_patches_are_merged_validated_and_bump_the_generation(hub):
    hub.node_add("n")
    hub.apply(
        "apiVersion: edgenode.io/v1\nkind: Device\nmetadata: {name: d}\n"
        "spec: {node: n, desired: {a: 1, b: 2}}\n"
    )
    status, body = hub.call("PATCH", "/v1/devices/d/desired", {"b": None, "c": {"x": True}})
    assert status == 200
    assert body["spec"]["desired"] == {"a": 1, "c": {"x": True}}
    assert body["metadata"]["generation"] == 2
    assert body["status"]["delta"] == {"a": 1, "c": {"x": True}}
    status, body = hub.call("PATCH", "/v1/devices/d/desired", raw=b"[1]")
    assert status == 400
    status, body = hub.call("PATCH", "/v1/devices/d/desired", {"k" * 300: 1})
    assert status == 422
    assert body["field"] == "spec.desired"
    assert hub.call("PATCH", "/v1/devices/nope/desired", {"a": 1})[0] == 404


def test_node_add_refuses_a_second_live_token_and_bad_labels(hub):
    hub.node_add("n")
    status, body = hub.call("POST", "/v1/nodes/n/token", {})
    assert status == 409
    status, body = hub.call("POST", "/v1/nodes/m/token", {"labels": {"bad key": "v"}})
    assert status == 400
    assert body["field"] == "labels"
    status, body = hub.call("POST", "/v1/nodes/Bad_Name/token", {})
    assert status == 400
    assert "invalid name" in body["error"]
    assert hub.call("POST", "/v1/nodes/ghost/revoke", {})[0] == 404
    assert json.dumps(hub.call("POST", "/v1/nodes/n/revoke", {})[1]) == json.dumps(
        {"node": "n", "revoked": 1}
    )

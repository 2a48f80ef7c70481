"""The KubeEdge device API over real DeviceTwins of both backends (devices/kubeedge/api.py),
driven the way the node's device layer drives it (kubeedge_node.py)."""

from __future__ import annotations

import json

import pytest
from kubeedge_node import KubeEdgeNode, actual, body, one, update

from edgenode.devices import kubeedge as ke
from edgenode.devices.kubeedge.topics import DeviceId, MembershipRequest
from edgenode.twin import MAX_DOCUMENT_BYTES

THERMO = DeviceId("default", "thermo")
T = "$hw/events/device/default/thermo"


@pytest.fixture
def node(core) -> KubeEdgeNode:
    return KubeEdgeNode(core.DeviceTwin, {"thermo": None})


def test_a_mapper_report_becomes_reported_values_of_its_types(node):
    replies = node.handle(
        f"{T}/twin/update",
        update(
            {
                "temperature": actual("21.5", "float"),
                "power": actual("true", "boolean"),
                "count": actual("7", "integer"),
                "label": actual("hall 3 ✓"),
            }
        ),
        100.0,
    )
    # edgectl twin get shows JSON values, not strings.
    assert node.view("thermo", 100.0)["reported"] == {
        "temperature": 21.5,
        "power": True,
        "count": 7,
        "label": "hall 3 ✓",
    }
    result = one(replies, "twin/update/result")
    assert result["event_id"] == "ev-1"
    assert result["timestamp"] == 100_000
    assert result["twin"]["count"] == {
        "actual": {"value": "7", "metadata": {"timestamp": 100_000}},
        "optional": True,
        "metadata": {"type": "int"},  # "integer" is not remembered without a declaration
    }
    assert list(result["twin"]) == sorted(result["twin"])
    document = one(replies, "twin/update/document")
    assert document["event_id"] == "ev-1"
    assert document["twin"]["temperature"] == {
        "last": None,
        "current": {
            "actual": {"value": "21.5", "metadata": {"timestamp": 100_000}},
            "optional": True,
            "metadata": {"type": "float"},
        },
    }
    assert not [m for m in replies if m.topic.endswith("/delta")]  # nothing desired
    assert all(m.qos == 1 and not m.retain for m in replies)


def test_edgectl_twin_set_arrives_as_a_kubeedge_delta(node):
    (delta,) = node.set_desired("thermo", {"target": 23, "mode": "eco"}, 50.0)
    assert delta.topic == f"{T}/twin/update/delta"
    message = body(delta)
    assert message["event_id"] == "node-1"
    assert message["delta"] == {"mode": "eco", "target": "23"}
    assert message["twin"]["target"] == {
        "expected": {"value": "23", "metadata": {"timestamp": 50_000}},
        "optional": True,
        "metadata": {"type": "int"},
    }
    # The mapper applies it and reports the values it was given, with their types.
    replies = node.handle(
        f"{T}/twin/update",
        update({"target": actual("23", "int"), "mode": actual("eco", "string")}),
        51.0,
    )
    view = node.view("thermo", 51.0)
    assert view["delta"] == {}  # both APIs agree: nothing pending
    assert view["reported"] == {"target": 23, "mode": "eco"}
    assert not [m for m in replies if m.topic.endswith("/delta")]
    # Setting desired to what is reported publishes no delta.
    assert node.set_desired("thermo", {"target": 23}, 52.0) == []


def test_a_pending_delta_is_published_after_every_update_as_edgecore_does(node):
    node.set_desired("thermo", {"target": 23}, 1.0)
    for now in (2.0, 3.0):
        replies = node.handle(
            f"{T}/twin/update", update({"temperature": actual("19", "float")}), now
        )
        assert one(replies, "twin/update/delta")["delta"] == {"target": "23"}


def test_untyped_values_take_the_type_of_the_current_value(node):
    node.set_desired("thermo", {"target": 23, "ratio": 0.5, "name": "x"}, 1.0)
    node.handle(
        f"{T}/twin/update",
        update({"target": actual("23"), "ratio": actual("1"), "name": actual("7")}),
        2.0,
    )
    assert node.view("thermo", 2.0)["reported"] == {"target": 23, "ratio": 1.0, "name": "7"}
    # A new untyped property is a string (KubeEdge's default type).
    node.handle(f"{T}/twin/update", update({"fresh": actual("42")}), 3.0)
    assert node.view("thermo", 3.0)["reported"]["fresh"] == "42"


def test_declared_types_win_over_the_message(core):
    spec = {"kubeedge": {"types": {"target": "float", "on": "boolean"}}}
    node = KubeEdgeNode(core.DeviceTwin, {"thermo": spec})
    replies = node.handle(
        f"{T}/twin/update", update({"target": actual("21", "string"), "on": actual("true")}), 1.0
    )
    assert node.view("thermo", 1.0)["reported"] == {"target": 21.0, "on": True}
    assert one(replies, "twin/update/result")["twin"]["target"]["metadata"] == {"type": "float"}
    refused = node.handle(f"{T}/twin/update", update({"on": actual("yes", "string")}), 2.0)
    assert one(refused, "twin/update/result")["reason"] == "the bool value must be true or false"


def test_an_object_property_round_trips_through_its_text(node):
    node.set_desired("thermo", {"fan": {"speed": 3, "mode": "auto"}}, 1.0)
    node.handle(f"{T}/twin/update", update({"fan": actual('{"speed":2,"extra":1}')}), 2.0)
    assert node.view("thermo", 2.0)["reported"] == {"fan": {"speed": 2, "extra": 1}}
    (delta,) = node.set_desired("thermo", {"fan": {"speed": 4}}, 3.0)
    text = body(delta)["delta"]["fan"]
    assert json.loads(text) == {"speed": 4, "mode": "auto"}
    # Echoing the delta's text replaces the whole value: "extra" goes, the delta clears.
    node.handle(f"{T}/twin/update", update({"fan": actual(text, "string")}), 4.0)
    view = node.view("thermo", 4.0)
    assert view["reported"] == {"fan": {"speed": 4, "mode": "auto"}}
    assert view["delta"] == {}


def test_expected_from_a_device_is_checked_but_never_written(node):
    node.set_desired("thermo", {"target": 23}, 1.0)
    replies = node.handle(
        f"{T}/twin/update",
        update({"target": {"expected": {"value": "30"}, "actual": {"value": "22"}}}),
        2.0,
    )
    view = node.view("thermo", 2.0)
    assert view["desired"] == {"target": 23}
    assert view["reported"] == {"target": 22}
    entry = one(replies, "twin/update/result")["twin"]["target"]
    assert entry["expected"]["value"] == "23"  # the node's expected, not the device's
    refused = node.handle(
        f"{T}/twin/update",
        update({"target": {"expected": {"value": "warm"}, "actual": {"value": "22"}}}),
        3.0,
    )
    assert one(refused, "twin/update/result")["reason"] == "the value is not int or integer"


def test_an_identical_report_changes_nothing(node):
    report = update({"temperature": actual("21.5", "float")})
    node.handle(f"{T}/twin/update", report, 10.0)
    before = node.view("thermo", 10.0)
    replies = node.handle(f"{T}/twin/update", report, 20.0)
    after = node.view("thermo", 20.0)
    assert after["version"] == before["version"]
    assert after["metadata"] == before["metadata"]
    assert [m.topic for m in replies] == [f"{T}/twin/update/result"]  # no document
    entry = one(replies, "twin/update/result")["twin"]["temperature"]
    assert entry["actual"]["metadata"]["timestamp"] == 10_000  # when it last changed


def test_deleting_a_reported_value(node):
    node.set_desired("thermo", {"target": 23}, 1.0)
    node.handle(f"{T}/twin/update", update({"target": actual("22"), "temp": actual("1")}), 2.0)
    replies = node.handle(
        f"{T}/twin/update", update({"target": None, "temp": {"metadata": {"type": "deleted"}}}), 3.0
    )
    view = node.view("thermo", 3.0)
    assert view["reported"] == {}
    assert view["desired"] == {"target": 23}  # a device never deletes desired
    twin = one(replies, "twin/update/result")["twin"]
    assert twin["temp"] is None
    assert twin["target"] == {
        "expected": {"value": "23", "metadata": {"timestamp": 1000}},
        "optional": True,
        "metadata": {"type": "int"},
    }
    document = one(replies, "twin/update/document")["twin"]
    assert document["temp"]["current"] is None
    assert document["target"]["current"] == twin["target"]
    # Deleting again (a redelivered message) is no error and changes nothing.
    again = node.handle(f"{T}/twin/update", update({"target": None, "temp": None}), 4.0)
    assert "code" not in one(again, "twin/update/result")
    assert not [m for m in again if m.topic.endswith("/document")]


def test_errors_go_to_the_devices_own_result_topic_with_the_event_id(node):
    for payload, event_id in [
        (b'{"event_id": "bad-1", "twin": {"x": {"actual": {"value": 5}}}}', "bad-1"),
        (b'{"event_id": "bad-2", oops', "bad-2"),  # not JSON: the id is still found
        (b'{"event_id": "bad-3"}', "bad-3"),
        (b'{"event_id": "bad-4", "twin": {"x": {"actual": {}}}}', "bad-4"),
        (update({"n": actual("abc", "int")}, "bad-5"), "bad-5"),
        (update({"n": actual("1", "nil")}, "bad-6"), "bad-6"),
        (b"{}", ""),
    ]:
        (reply,) = node.handle(f"{T}/twin/update", payload, 5.0)
        assert reply.topic == f"{T}/twin/update/result"
        message = body(reply)
        assert (message["event_id"], message["code"]) == (event_id, 400)
        assert set(message) == {"event_id", "timestamp", "code", "reason"}
    assert node.view("thermo", 6.0)["version"]["reported"] == 0  # nothing was applied


def test_an_unknown_device(node):
    (reply,) = node.handle(
        "$hw/events/device/default/nobody/twin/update", update({"a": actual("1")}, "u-1"), 1.0
    )
    assert reply.topic == "$hw/events/device/default/nobody/twin/update/result"
    assert body(reply) == {
        "event_id": "u-1",
        "timestamp": 1000,
        "code": 404,
        "reason": "update rejected due to the device is not existed",
    }
    (reply,) = node.handle("$hw/events/device/other/thermo/twin/get", b'{"event_id":"g"}', 1.0)
    assert body(reply)["code"] == 404
    assert body(reply)["reason"] == "Device other/thermo not found while getting twin"


def test_a_report_over_the_twins_limits_is_refused_as_400(node):
    big = "x" * (MAX_DOCUMENT_BYTES // 2)
    node.handle(f"{T}/twin/update", update({"a": actual(big)}), 1.0)
    (reply,) = node.handle(f"{T}/twin/update", update({"b": actual(big)}, "big"), 2.0)
    message = body(reply)
    assert (message["event_id"], message["code"]) == ("big", 400)
    assert "MAX_DOCUMENT_BYTES" in message["reason"]
    assert node.service.counters["kubeedge_refused"] == 1


def test_get(node):
    node.set_desired("thermo", {"target": 23}, 1.0)
    node.handle(f"{T}/twin/update", update({"temperature": actual("19.5", "float")}), 2.0)
    (reply,) = node.handle(f"{T}/twin/get", b'{"event_id": "g-1"}', 3.0)
    assert reply.topic == f"{T}/twin/get/result"
    assert body(reply) == {
        "event_id": "g-1",
        "timestamp": 3000,
        "twin": {
            "target": {
                "expected": {"value": "23", "metadata": {"timestamp": 1000}},
                "optional": True,
                "metadata": {"type": "int"},
            },
            "temperature": {
                "actual": {"value": "19.5", "metadata": {"timestamp": 2000}},
                "optional": True,
                "metadata": {"type": "float"},
            },
        },
    }
    (bad,) = node.handle(f"{T}/twin/get", b"", 3.0)
    assert body(bad)["code"] == 400
    assert body(bad)["reason"].startswith("Unmarshal twin info failed, err: ")


def test_nested_timestamps_show_the_newest_leaf(node):
    node.set_desired("thermo", {"fan": {"speed": 1, "mode": "a"}}, 1.0)
    node.set_desired("thermo", {"fan": {"speed": 2}}, 5.5)
    (reply,) = node.handle(f"{T}/twin/get", b"{}", 6.0)
    assert body(reply)["twin"]["fan"]["expected"]["metadata"] == {"timestamp": 5500}


def test_state_update(node):
    (reply,) = node.handle(
        f"{T}/state/update", b'{"event_id": "s-1", "timestamp": 5, "state": "Online"}', 1700000000.0
    )
    assert reply.topic == f"{T}/state/update/result"
    assert body(reply) == {
        "event_id": "s-1",
        "timestamp": 1700000000000,
        "device": {"name": "thermo", "state": "online", "lastOnlineTime": "2023-11-14T22:13:20Z"},
    }
    assert node.view("thermo", 1.0)["state"] == {"value": "online", "timestamp": 1700000000.0}
    (reply,) = node.handle(f"{T}/state/update", b'{"event_id": "s-2", "state": "offline"}', 2.0)
    assert body(reply)["device"] == {"name": "thermo", "state": "offline"}
    (reply,) = node.handle(f"{T}/state/update", b'{"event_id": "s-3", "state": "melted"}', 3.0)
    assert body(reply)["code"] == 400
    assert node.view("thermo", 3.0)["state"]["value"] == "offline"
    (reply,) = node.handle(
        "$hw/events/device/default/x/state/update", b'{"event_id": "s-4", "state": "ok"}', 3.0
    )
    assert (body(reply)["code"], body(reply)["event_id"]) == (404, "s-4")


def test_state_store_failure_reply():
    plan = ke.plan_state_update(THERMO, b'{"event_id": "s", "state": "ok"}', True, 1.0)
    failed = ke.error_result(plan.result_topic, plan.event_id, 500, "disk full", 1.0)
    assert body(failed) == {"event_id": "s", "timestamp": 1000, "code": 500, "reason": "disk full"}


def test_membership_get(core):
    node = KubeEdgeNode(
        core.DeviceTwin,
        {"thermo": None, "line-a_pump": {"kubeedge": {"namespace": "line-a", "name": "pump"}}},
    )
    node.handle(f"{T}/state/update", b'{"state": "ok"}', 1700000000.0)
    (reply,) = node.handle("$hw/events/node/pi-1/membership/get", b'{"event_id": "m-1"}', 5.0)
    assert reply.topic == "$hw/events/node/pi-1/membership/get/result"
    assert body(reply) == {
        "event_id": "m-1",
        "timestamp": 5000,
        "devices": [
            {
                "id": "default/thermo",
                "name": "thermo",
                "state": "ok",
                "last_online": "2023-11-14T22:13:20Z",
            },
            {"id": "line-a/pump", "name": "pump"},
        ],
    }
    (bad,) = node.handle("$hw/events/node/pi-1/membership/get", b"[", 5.0)
    assert body(bad)["code"] == 400
    # Another node's request is not this node's to answer.
    other = ke.answer_membership_get(MembershipRequest("pi-2"), "pi-1", b"{}", [], 5.0)
    assert other is None


def test_membership_updated():
    added = ke.member(THERMO, {"desired": {"a": 1}, "reported": {}, "metadata": {}}, None, "Hall")
    removed = ke.Member(DeviceId("line-a", "pump"))
    message = ke.membership_updated("pi-1", [added], [removed], 2.0, "m-2")
    assert message is not None
    assert message.topic == "$hw/events/node/pi-1/membership/updated"
    assert body(message) == {
        "event_id": "m-2",
        "timestamp": 2000,
        "added_devices": [
            {
                "id": "default/thermo",
                "name": "thermo",
                "description": "Hall",
                "twin": {
                    "a": {"expected": {"value": "1"}, "optional": True, "metadata": {"type": "int"}}
                },
            }
        ],
        "removed_devices": [{"id": "line-a/pump", "name": "pump"}],
    }
    assert ke.membership_updated("pi-1", [], [], 2.0, "m-3") is None
    assert ke.member(THERMO, None) == ke.Member(THERMO)


def test_the_node_never_answers_its_own_or_unsupported_topics(node):
    for topic in [
        f"{T}/twin/update/result",
        f"{T}/twin/update/delta",
        f"{T}/twin/update/document",
        f"{T}/twin/get/result",
        f"{T}/state/update/result",
        f"{T}/twin/cloud_updated",
        "$hw/events/node/pi-1/membership/get/result",
        "$edge/devices/thermo/twin/update",
    ]:
        assert node.handle(topic, update({"a": actual("1")}), 1.0) == [], topic


def test_kubeedge_code():
    assert [ke.kubeedge_code(c) for c in (400, 403, 404, 413, 500, 418, 503)] == [
        400,
        400,
        404,
        400,
        500,
        400,
        500,
    ]


def test_new_event_ids_are_unique():
    assert len({ke.new_event_id() for _ in range(100)}) == 100


def test_views_are_accepted_as_bytes_or_mappings(core):
    twin = core.DeviceTwin("thermo")
    twin.set_desired(b'{"a": 1}', 1.0)
    twin.commit()
    as_bytes = ke.answer_get(THERMO, b"{}", twin.view(2.0), None, 2.0)
    as_dict = ke.answer_get(THERMO, b"{}", json.loads(twin.view(2.0)), None, 2.0)
    assert as_bytes == as_dict

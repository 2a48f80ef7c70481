"""The KubeEdge API inside the node's device layer (TwinService + KubeEdgeFront), both
backends: one twin behind both APIs, the edgenode side effects of a KubeEdge report
(store, retained delta, uplink records), membership when the served devices change,
deltas on reconnect, subscriptions, and the node's configuration of KubeEdge IDs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from kubeedge_node import KubeEdgeNode, MemoryTwins, actual, body, one, update

from edgenode.config import load_config
from edgenode.devices import kubeedge as ke
from edgenode.devices.actions import Publish, Uplink
from edgenode.devices.config import DeviceSpec
from edgenode.devices.twins import SUBSCRIPTIONS, TwinService
from edgenode.errors import ConfigError

T = "$hw/events/device/default/thermo"
PUMP = "$hw/events/device/line-a/pump"


@pytest.fixture
def node(core) -> KubeEdgeNode:
    return KubeEdgeNode(
        core.DeviceTwin,
        {"thermo": None, "line-a_pump": {"kubeedge": {"namespace": "line-a", "name": "pump"}}},
    )


def test_a_kubeedge_report_is_stored_and_sent_up_like_an_edgenode_one(node):
    node.set_desired("thermo", {"target": 23}, 1.0)
    node.actions.clear()
    replies = node.handle(f"{T}/twin/update", update({"temperature": actual("21.5")}), 2.0)
    assert one(replies, "twin/update/result")["event_id"] == "ev-1"
    stored = json.loads(node.store.docs["thermo"])
    assert stored["reported"] == {"temperature": "21.5"}
    uplinks = [a for a in node.actions if isinstance(a, Uplink)]
    assert [u.kind for u in uplinks] == ["twin"]
    assert json.loads(uplinks[0].body)["reported"] == {"temperature": "21.5"}
    # The edgenode retained delta is kept as the store says (it still asks for target).
    retained = [a for a in node.actions if isinstance(a, Publish) and a.retain]
    assert retained == []  # the delta did not move: nothing republished
    node.actions.clear()
    node.handle(f"{T}/twin/update", update({"target": actual("23", "int")}, "ev-2"), 3.0)
    (cleared,) = [a for a in node.actions if isinstance(a, Publish) and a.retain]
    assert (cleared.topic, cleared.payload) == ("$edge/devices/thermo/twin/delta", b"")


def test_both_apis_show_one_twin(node):
    node.handle(f"{T}/twin/update", update({"temperature": actual("19.5", "float")}), 1.0)
    native = node.service.handle(
        "$edge/devices/thermo/twin/update", b'{"reported": {"mode": "eco"}}', 2.0
    )
    assert any(isinstance(a, Publish) and a.topic.endswith("/update/accepted") for a in native)
    (get,) = node.handle(f"{T}/twin/get", b'{"event_id": "g"}', 3.0)
    twin = body(get)["twin"]
    assert twin["mode"]["actual"]["value"] == "eco"
    assert twin["temperature"]["actual"]["value"] == "19.5"
    (native_get,) = node.service.handle("$edge/devices/thermo/twin/get", b"", 4.0)
    assert json.loads(native_get.payload)["reported"] == {"temperature": 19.5, "mode": "eco"}


def test_a_kubeedge_state_is_the_twins_state_and_goes_upstream(node):
    replies = node.handle(f"{PUMP}/state/update", b'{"event_id": "s", "state": "unhealthy"}', 5.0)
    assert one(replies, "state/update/result")["device"]["state"] == "unhealthy"
    assert node.view("line-a_pump", 6.0)["state"]["value"] == "unhealthy"
    (uplink,) = [a for a in node.actions if isinstance(a, Uplink)]
    assert uplink.kind == "device-state"
    assert json.loads(uplink.body)["state"] == "unhealthy"
    # The same state again changes nothing and sends nothing.
    node.actions.clear()
    node.handle(f"{PUMP}/state/update", b'{"event_id": "s2", "state": "unhealthy"}', 7.0)
    assert not [a for a in node.actions if isinstance(a, Uplink)]


def test_membership_follows_the_served_devices(node):
    (answer,) = node.handle("$hw/events/node/pi-1/membership/get", b'{"event_id": "m"}', 1.0)
    assert [d["id"] for d in body(answer)["devices"]] == ["default/thermo", "line-a/pump"]
    (updated,) = node.serve({"thermo": None, "valve": {"kubeedge": {"namespace": "line-b"}}}, 2.0)
    assert updated.topic == "$hw/events/node/pi-1/membership/updated"
    message = body(updated)
    assert [d["id"] for d in message["added_devices"]] == ["line-b/valve"]
    assert "twin" in message["added_devices"][0]
    assert [d["id"] for d in message["removed_devices"]] == ["line-a/pump"]
    # A removed device is no longer served on the KubeEdge topics.
    (gone,) = node.handle(f"{PUMP}/twin/get", b'{"event_id": "g"}', 3.0)
    assert body(gone)["code"] == 404
    # Serving the same set again says nothing.
    assert node.serve({"thermo": None, "valve": {"kubeedge": {"namespace": "line-b"}}}, 4.0) == []
    # Another node's membership request is not answered.
    assert node.handle("$hw/events/node/pi-2/membership/get", b'{"event_id": "m"}', 5.0) == []


def test_a_kubeedge_delta_goes_out_again_on_reconnect(node):
    node.set_desired("thermo", {"target": 23}, 1.0)
    resync = node.service.resync(2.0)
    deltas = [p for p in resync if p.topic == f"{T}/twin/update/delta"]
    assert len(deltas) == 1
    assert body(deltas[0])["delta"] == {"target": "23"}
    assert not deltas[0].retain  # KubeEdge's deltas are events
    # No delta pending: nothing on KubeEdge topics.
    node.handle(f"{T}/twin/update", update({"target": actual("23", "int")}), 3.0)
    assert not [p for p in node.service.resync(4.0) if p.topic.startswith("$hw/")]


def test_own_and_unsupported_topics_are_never_answered(node):
    assert node.handle(f"{T}/twin/update/result", b'{"event_id": "x"}', 1.0) == []
    assert node.handle(f"{T}/twin/cloud_updated", b"{}", 1.0) == []
    assert node.service.counters["kubeedge_unsupported"] == 1


def test_without_kubeedge_the_hw_topics_are_neither_subscribed_nor_answered(core):
    service = TwinService(MemoryTwins(), [DeviceSpec("thermo")], device_twin=core.DeviceTwin)
    assert service.subscriptions() == SUBSCRIPTIONS
    assert service.handle(f"{T}/twin/get", b'{"event_id": "g"}', 1.0) == []
    served = TwinService(
        MemoryTwins(), [DeviceSpec("thermo")], device_twin=core.DeviceTwin, kubeedge_node="n"
    )
    assert set(ke.subscriptions("n")) <= set(served.subscriptions())


def test_two_devices_with_one_kubeedge_id_serve_only_the_first(core, caplog):
    node = KubeEdgeNode(
        core.DeviceTwin, {"a": {"kubeedge": {"name": "x"}}, "b": {"kubeedge": {"name": "x"}}}
    )
    (answer,) = node.handle("$hw/events/device/default/x/twin/get", b'{"event_id": "g"}', 1.0)
    assert "code" not in body(answer)
    assert "device 'b' is not served to KubeEdge clients" in caplog.text


def test_config_devices_take_a_kubeedge_table(tmp_path: Path):
    path = tmp_path / "node.toml"
    path.write_text(
        '[node]\nname = "pi-1"\ndata_dir = "data"\n'
        '[[device]]\nname = "pump"\n'
        'kubeedge = { namespace = "line-a", types = { rpm = "int" } }\n'
    )
    config = load_config(path, env={})
    assert config.devices[0].kubeedge == {"namespace": "line-a", "types": {"rpm": "int"}}
    path.write_text(
        '[node]\nname = "pi-1"\ndata_dir = "data"\n'
        '[[device]]\nname = "pump"\nkubeedge = { namespace = "Line_A" }\n'
    )
    with pytest.raises(ConfigError, match=r"device\[0\]\.kubeedge: .*namespace"):
        load_config(path, env={})
    path.write_text(
        '[node]\nname = "pi-1"\ndata_dir = "data"\n[[device]]\nname = "pump"\nkubeedge = 3\n'
    )
    with pytest.raises(ConfigError, match=r"device\[0\]\.kubeedge: expected a table"):
        load_config(path, env={})

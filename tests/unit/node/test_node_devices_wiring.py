"""How hub Device/Route resources in the store map onto the device layer's specs, merged
with ``[[device]]``/``[[route]]`` config (real Store, real config parsing)."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from edgenode.config import parse_config
from edgenode.devices import DeviceSpec, RouteSpec, TwinService, Uplink
from edgenode.devices.twins import MAX_TELEMETRY_BYTES
from edgenode.errors import ConfigError
from edgenode.node.devices import (
    DeviceWiring,
    device_from_resource,
    resource_kind_and_name,
    route_from_resource,
)
from edgenode.node.metrics import Metrics
from edgenode.node.uplink import encode_uplink
from edgenode.store import Store

NODE = "ship-7"


def body(kind: str, name: str, spec: dict[str, Any]) -> bytes:
    doc = {"apiVersion": "edgenode.io/v1", "kind": kind, "metadata": {"name": name}, "spec": spec}
    return json.dumps(doc, separators=(",", ":"), sort_keys=True).encode()


def test_resource_keys_split_into_kind_and_name():
    assert resource_kind_and_name("Device/default/lamp") == ("Device", "lamp")
    assert resource_kind_and_name("Route/default/a.b-c") == ("Route", "a.b-c")


def test_a_device_resource_for_this_node_becomes_a_device_spec():
    data = body("Device", "lamp", {"node": NODE, "desired": {"power": "on"}})
    assert device_from_resource(NODE, "Device/default/lamp", data) == DeviceSpec(
        "lamp", {"power": "on"}
    )
    no_desired = body("Device", "fan", {"node": NODE})
    assert device_from_resource(NODE, "Device/default/fan", no_desired) == DeviceSpec("fan", {})
    other = body("Device", "lamp", {"node": "other-node"})
    assert device_from_resource(NODE, "Device/default/lamp", other) is None


@pytest.mark.parametrize(
    ("data", "error"),
    [
        (b"[1]", ValueError),
        (b"not json", ValueError),
        (body("Device", "x", {"node": NODE, "desired": [1]}), ValueError),
        (body("Device", "x" * 200, {"node": NODE}), ConfigError),
    ],
)
def test_a_device_resource_the_node_cannot_serve_is_an_error(data, error):
    with pytest.raises(error):
        device_from_resource(NODE, "Device/default/x", data)


def test_a_route_resource_becomes_a_route_spec():
    data = body(
        "Route", "alarms", {"from": "a/+/alarm", "to": "upstream", "priority": 0, "ttl": 60}
    )
    assert route_from_resource(data) == RouteSpec("a/+/alarm", "upstream", 0, 60)
    assert route_from_resource(body("Route", "r", {"from": "x/#"})) == RouteSpec("x/#")
    with pytest.raises(ConfigError):
        route_from_resource(body("Route", "r", {"from": "x/#", "to": "elsewhere"}))


@pytest.fixture
def store(tmp_path: Path):
    opened = Store(str(tmp_path / "node.db"))
    yield opened
    opened.close()


def wiring(store: Store, tmp_path: Path, toml: dict[str, Any]) -> DeviceWiring:
    config = parse_config(
        {"node": {"name": NODE, "data_dir": str(tmp_path)}, **toml}, str(tmp_path / "n.toml"), {}
    )
    # The daemon's part the wiring uses: its config, metrics and open store.
    daemon = SimpleNamespace(config=config, metrics=Metrics(), store=store)
    return DeviceWiring(daemon)  # type: ignore[arg-type]


def test_hub_devices_join_config_devices_and_the_hub_desired_wins(store, tmp_path):
    store.apply_changes(
        [
            ("Device/default/lamp", 1, body("Device", "lamp", {"node": NODE, "desired": {"a": 2}})),
            ("Device/default/far", 2, body("Device", "far", {"node": "elsewhere"})),
            ("Device/default/bad", 3, b"{"),
            ("Config/default/c", 4, body("Config", "c", {"data": {}})),
        ],
        4,
    )
    w = wiring(
        store, tmp_path, {"device": [{"name": "lamp", "desired": {"a": 1}}, {"name": "fan"}]}
    )
    devices, routes = w.wanted()
    assert sorted(devices, key=lambda d: d.name) == [
        DeviceSpec("fan"),
        DeviceSpec("lamp", {"a": 2}),
    ]
    assert routes == []


def test_a_hub_route_that_would_loop_is_left_out(store, tmp_path):
    store.apply_changes(
        [
            ("Route/default/a", 1, body("Route", "a", {"from": "x/+", "to": "topic:y/1"})),
            ("Route/default/b", 2, body("Route", "b", {"from": "y/#", "priority": 1})),
        ],
        2,
    )
    w = wiring(store, tmp_path, {"route": [{"from": "z/#", "priority": 2}]})
    _, routes = w.wanted()
    assert routes == [RouteSpec("z/#", priority=2), RouteSpec("x/+", "topic:y/1")]


def test_telemetry_too_large_for_the_envelope_is_counted_not_an_internal_error(store):
    svc = TwinService(
        store,
        [DeviceSpec("lamp")],
        uplink_encoder=lambda kind, body: encode_uplink(kind, body, NODE),
    )
    binary = bytes(range(256)) * (MAX_TELEMETRY_BYTES // 256)  # base64: over 256 KiB
    actions = svc.handle("$edge/devices/lamp/telemetry/blob", binary, 1.0)
    assert not [a for a in actions if isinstance(a, Uplink)]
    assert svc.counters["uplink_too_large"] == 1
    assert svc.counters["internal_errors"] == 0
    text = "温度" * 30_000  # 180 KB of UTF-8: fits once it is not escaped
    (uplink,) = svc.handle("$edge/devices/lamp/telemetry/t", text.encode(), 2.0)
    assert isinstance(uplink, Uplink)
    assert json.loads(uplink.payload)["body"]["payload"] == text

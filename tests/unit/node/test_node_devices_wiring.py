"""How hub Device/Route resources in the store map onto the device layer's specs, merged
with ``[[device]]``/``[[route]]`` config, for the device service on its host (real Store,
real config parsing, the real Daemon as host)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from edgenode.config import parse_config
from edgenode.devices import DeviceSpec, RouteSpec, TwinService, Uplink
from edgenode.devices.service import DeviceService, device_from_resource, route_from_resource
from edgenode.devices.twins import MAX_TELEMETRY_BYTES
from edgenode.errors import ConfigError
from edgenode.node.daemon import Daemon
from edgenode.service import kind_of, name_of, parse_desired
from edgenode.store import Store

NODE = "ship-7"


def body(kind: str, name: str, spec: dict[str, Any], **metadata: Any) -> bytes:
    doc = {
        "apiVersion": "edgenode.io/v1",
        "kind": kind,
        "metadata": {"name": name, **metadata},
        "spec": spec,
    }
    return json.dumps(doc, separators=(",", ":"), sort_keys=True).encode()


def resource(key: str, data: bytes, revision: int = 1) -> Any:
    return parse_desired(key, revision, data)


def test_resource_keys_split_into_kind_and_name():
    assert (kind_of("Device/default/lamp"), name_of("Device/default/lamp")) == ("Device", "lamp")
    assert (kind_of("Route/default/a.b-c"), name_of("Route/default/a.b-c")) == ("Route", "a.b-c")


def test_a_device_resource_for_this_node_becomes_a_device_spec():
    data = body("Device", "lamp", {"node": NODE, "desired": {"power": "on"}})
    assert device_from_resource(NODE, resource("Device/default/lamp", data)) == DeviceSpec(
        "lamp", {"power": "on"}
    )
    no_desired = body("Device", "fan", {"node": NODE})
    assert device_from_resource(NODE, resource("Device/default/fan", no_desired)) == DeviceSpec(
        "fan", {}
    )
    other = body("Device", "lamp", {"node": "other-node"})
    assert device_from_resource(NODE, resource("Device/default/lamp", other)) is None


def test_the_hubs_desired_version_travels_in_its_annotation():
    data = body(
        "Device",
        "lamp",
        {"node": NODE, "desired": {"power": "on"}},
        annotations={"edgenode.io/desired-version": "17"},
    )
    spec = device_from_resource(NODE, resource("Device/default/lamp", data))
    assert spec == DeviceSpec("lamp", {"power": "on"}, 17)


@pytest.mark.parametrize(
    ("data", "error"),
    [
        (body("Device", "x", {"node": NODE, "desired": [1]}), ValueError),
        (body("Device", "x" * 200, {"node": NODE}), ConfigError),
    ],
)
def test_a_device_resource_the_node_cannot_serve_is_an_error(data, error):
    with pytest.raises(error):
        device_from_resource(NODE, resource("Device/default/x", data))


@pytest.mark.parametrize("data", [b"[1]", b"not json"])
def test_a_body_that_is_not_a_map_is_not_a_resource(data):
    with pytest.raises(ValueError):  # noqa: PT011 - json's message or ours
        parse_desired("Device/default/x", 1, data)


def test_a_route_resource_becomes_a_route_spec():
    data = body(
        "Route", "alarms", {"from": "a/+/alarm", "to": "upstream", "priority": 0, "ttl": 60}
    )
    assert route_from_resource(resource("Route/default/alarms", data)) == RouteSpec(
        "a/+/alarm", "upstream", 0, 60
    )
    plain = body("Route", "r", {"from": "x/#"})
    assert route_from_resource(resource("Route/default/r", plain)) == RouteSpec("x/#")
    bad = resource("Route/default/r", body("Route", "r", {"from": "x/#", "to": "elsewhere"}))
    with pytest.raises(ConfigError):
        route_from_resource(bad)


def host(tmp_path: Path, toml: dict[str, Any]) -> Daemon:
    config = parse_config(
        {"node": {"name": NODE, "data_dir": str(tmp_path)}, **toml}, str(tmp_path / "n.toml"), {}
    )
    daemon = Daemon(config)
    # The store ``run`` would open (the rest of ``run`` is not needed here).
    daemon._store = Store(str(config.db_path))
    return daemon


@pytest.fixture
def make_host(tmp_path: Path):
    made: list[Daemon] = []

    def make(toml: dict[str, Any]) -> Daemon:
        daemon = host(tmp_path, toml)
        made.append(daemon)
        return daemon

    yield make
    for daemon in made:
        daemon.store.close()


def test_hub_devices_join_config_devices_and_the_hub_desired_wins(make_host):
    daemon = make_host(
        {"device": [{"name": "lamp", "desired": {"a": 1}}, {"name": "fan"}]},
    )
    daemon.store.apply_changes(
        [
            ("Device/default/lamp", 1, body("Device", "lamp", {"node": NODE, "desired": {"a": 2}})),
            ("Device/default/far", 2, body("Device", "far", {"node": "elsewhere"})),
            ("Device/default/bad", 3, b"{"),
            ("Config/default/c", 4, body("Config", "c", {"data": {}})),
        ],
        4,
    )
    devices, routes = DeviceService(daemon.config).wanted(daemon)
    assert sorted(devices, key=lambda d: d.name) == [
        DeviceSpec("fan"),
        DeviceSpec("lamp", {"a": 2}),
    ]
    assert routes == []


def test_a_hub_route_that_would_loop_is_left_out(make_host):
    daemon = make_host({"route": [{"from": "z/#", "priority": 2}]})
    daemon.store.apply_changes(
        [
            ("Route/default/a", 1, body("Route", "a", {"from": "x/+", "to": "topic:y/1"})),
            ("Route/default/b", 2, body("Route", "b", {"from": "y/#", "priority": 1})),
        ],
        2,
    )
    _, routes = DeviceService(daemon.config).wanted(daemon)
    assert routes == [RouteSpec("z/#", priority=2), RouteSpec("x/+", "topic:y/1")]


def test_telemetry_too_large_for_the_envelope_is_counted_not_an_internal_error(tmp_path):
    store = Store(str(tmp_path / "node.db"))
    try:
        svc = TwinService(store, [DeviceSpec("lamp")])
        binary = bytes(range(256)) * (MAX_TELEMETRY_BYTES // 256)  # base64: over 256 KiB
        actions = svc.handle("$edge/devices/lamp/telemetry/blob", binary, 1.0)
        assert not [a for a in actions if isinstance(a, Uplink)]
        assert svc.counters["uplink_too_large"] == 1
        assert svc.counters["internal_errors"] == 0
        text = "温度" * 30_000  # 180 KB of UTF-8: fits once it is not escaped
        (uplink,) = svc.handle("$edge/devices/lamp/telemetry/t", text.encode(), 2.0)
        assert isinstance(uplink, Uplink)
        assert uplink.kind == "telemetry"
        assert json.loads(uplink.body)["payload"] == text
    finally:
        store.close()

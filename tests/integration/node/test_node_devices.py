"""The device layer inside real ``edgenode run`` processes, against a real Mosquitto.

Devices are aiomqtt clients (paho underneath). Covered: the device API served from
``[[device]]`` config (update → accepted, delta, get, telemetry into the outbox, metrics,
``edgenode status``); autonomy (no hub reachable, SIGKILL and restart: twins, deltas and get
answers keep coming from the store, reports and telemetry queue in the outbox); and the hub
path (a Device resource from the fake hub produces the delta, a report reaches the hub as a
"twin" record, a Route resource changes the priority of telemetry, a deleted Device is no
longer served, and hub devices are served after an offline restart).
"""

from __future__ import annotations

import asyncio
import json
import signal
import sqlite3
import urllib.request
from collections.abc import Callable, Coroutine, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest

from integration.devices.mqtt_broker import WAIT, Broker, Device, device_client, free_port
from node.conftest import NODE_NAME, NodeProcess
from node.fakehub import FakeHub, wait_for

pytestmark = pytest.mark.timeout(60)

T = TypeVar("T")
SCENARIO_TIMEOUT = 30.0
NODE_START_TIMEOUT = 10.0
"""Seconds for a node process to connect to the broker (and publish its deltas)."""


def run(scenario: Callable[[], Coroutine[Any, Any, T]]) -> T:
    return asyncio.run(asyncio.wait_for(scenario(), timeout=SCENARIO_TIMEOUT))


def toml_value(value: Any) -> str:
    """A TOML value (inline tables for dicts) for the generated configs."""
    if isinstance(value, dict):
        return (
            "{ " + ", ".join(f"{json.dumps(k)} = {toml_value(v)}" for k, v in value.items()) + " }"
        )
    return json.dumps(value)


def configure(
    node: NodeProcess,
    broker: Broker,
    hub_url: str | None,
    *,
    devices: list[dict[str, Any]] = (),  # type: ignore[assignment]
    routes: list[dict[str, Any]] = (),  # type: ignore[assignment]
    metrics_port: int | None = None,
) -> None:
    node.configure(
        hub_url,
        mqtt={"port": broker.port, "keepalive": 5},
        metrics={"listen": f"127.0.0.1:{metrics_port}" if metrics_port else ""},
    )
    lines: list[str] = []
    for name, entries in (("device", devices), ("route", routes)):
        for entry in entries:
            lines.append(f"[[{name}]]")
            lines += [f"{key} = {toml_value(value)}" for key, value in entry.items()]
    with node.config_path.open("a") as handle:
        handle.write("\n".join(lines) + "\n")


def served(node: NodeProcess, devices: list[str]) -> dict[str, Any]:
    """Wait until the node's device layer serves ``devices`` and is connected."""

    def ready() -> dict[str, Any] | None:
        result = node.status("--json")  # exit 1 until the daemon created its store
        layer = (json.loads(result.stdout).get("device_layer") if result.stdout else None) or {}
        ok = layer.get("devices") == devices and layer.get("broker_connected")
        return layer if ok else None

    return wait_for(ready, NODE_START_TIMEOUT, f"the node serving {devices}")


def outbox(node: NodeProcess) -> list[tuple[int, dict[str, Any]]]:
    """(priority, record) of every outbox record, in outbox order, read-only."""
    db = sqlite3.connect(f"file:{node.data_dir / 'node.db'}?mode=ro", uri=True, timeout=5)
    try:
        rows = db.execute("SELECT priority, payload FROM outbox ORDER BY priority, seq").fetchall()
    finally:
        db.close()
    return [(priority, json.loads(payload)) for priority, payload in rows]


def records(node: NodeProcess, kind: str) -> list[dict[str, Any]]:
    return [record for _, record in outbox(node) if record["kind"] == kind]


async def eventually(condition: Callable[[], Any], what: str, timeout: float = WAIT) -> Any:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not (value := condition()):
        if loop.time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)
    return value


async def next_delta(device: Device) -> dict[str, Any]:
    return json.loads(await device.next("twin/delta", NODE_START_TIMEOUT))


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Broker]:
    directory = tmp_path / "broker"
    directory.mkdir()
    started = Broker(directory, free_port())
    started.start()
    yield started
    started.stop()


def dead_hub_url() -> str:
    """A ws:// URL on a port nothing listens on: the hub is unreachable."""
    return f"ws://127.0.0.1:{free_port()}"


# ------------------------------------------------------------------ from config ----


def test_a_configured_device_updates_gets_its_delta_and_sends_telemetry(node, broker):
    metrics_port = free_port()
    configure(
        node,
        broker,
        None,
        devices=[{"name": "lamp", "desired": {"power": "on", "level": 3}}],
        metrics_port=metrics_port,
    )
    node.start()
    layer = served(node, ["lamp"])
    assert layer["broker"] == f"127.0.0.1:{broker.port}"

    async def scenario() -> None:
        async with device_client(broker.port, "lamp") as lamp:
            assert await next_delta(lamp) == {"version": 1, "delta": {"power": "on", "level": 3}}
            verdict, body = await lamp.request(
                "twin/update", {"reported": {"power": "on"}, "clientToken": "r-1"}
            )
            assert (verdict, body["version"], body["clientToken"]) == ("accepted", 1, "r-1")
            assert await next_delta(lamp) == {"version": 1, "delta": {"level": 3}}
            verdict, twin = await lamp.request("twin/get", {"clientToken": "g-1"})
            assert verdict == "accepted"
            assert twin["desired"] == {"power": "on", "level": 3}
            assert twin["reported"] == {"power": "on"}
            assert twin["version"] == {"desired": 1, "reported": 1}
            await lamp.publish("telemetry/temperature", b"21.5")
            await eventually(lambda: records(node, "telemetry"), "telemetry in the outbox")

    run(scenario)
    (twin,) = records(node, "twin")
    assert twin["v"] == 1  # the daemon's envelope
    assert twin["node"] == NODE_NAME
    assert twin["body"]["device"] == "lamp"
    assert twin["body"]["reported"] == {"power": "on"}
    assert twin["body"]["version"] == 1
    (telemetry,) = records(node, "telemetry")
    assert telemetry["body"] == {
        "device": "lamp",
        "topic": "$edge/devices/lamp/telemetry/temperature",
        "payload": "21.5",
        "encoding": "utf-8",
        "timestamp": telemetry["body"]["timestamp"],
    }
    text = wait_for(
        lambda: (
            (
                t := urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=5)
                .read()
                .decode()
            )
            and 'edgenode_device_events_total{event="updates_accepted"} 1.0' in t
            and t
        ),
        5,
        "device metrics",
    )
    assert "edgenode_devices 1.0" in text
    assert "edgenode_device_broker_connected 1.0" in text
    # The report and the telemetry took the core's batch call (the daemon's port offers
    # its batch target; telemetry that only goes upstream is enveloped in the core too).
    assert 'edgenode_device_events_total{event="batch_fast"} 2.0' in text
    human = node.status()
    assert human.returncode == 0
    assert "1 served (lamp)" in human.stdout


# --------------------------------------------------------------------- offline ----


def test_devices_are_served_offline_and_across_a_sigkill_with_reports_queued(node, broker):
    configure(
        node,
        broker,
        dead_hub_url(),
        devices=[{"name": "lamp", "desired": {"power": "on"}}, {"name": "fan"}],
    )
    node.start()
    served(node, ["fan", "lamp"])
    wait_for(lambda: "hub unreachable, retrying" in node.log(1), 10, "the retry message")

    async def before_kill() -> None:
        async with device_client(broker.port, "lamp") as lamp:
            assert await next_delta(lamp) == {"version": 1, "delta": {"power": "on"}}
            verdict, body = await lamp.request("twin/update", {"reported": {"power": "off"}})
            assert (verdict, body["version"]) == ("accepted", 1)
            await lamp.publish("telemetry/t", b"1")
            await lamp.publish("state", b"online")
            await eventually(lambda: len(outbox(node)) >= 3, "three records queued")

    run(before_kill)
    assert node.signal(signal.SIGKILL) == -signal.SIGKILL

    async def while_down() -> None:
        # QoS 1 to the node's persistent session: the broker keeps it for the node.
        async with device_client(broker.port, "fan") as fan:
            await fan.publish("twin/update", {"reported": {"speed": 2}, "clientToken": "f-1"})

    run(while_down)
    node.start()
    served(node, ["fan", "lamp"])

    async def after_restart() -> None:
        async with (
            device_client(broker.port, "lamp") as lamp,
            device_client(broker.port, "fan") as fan,
        ):
            # The retained delta is the store's; get answers from the store.
            assert await next_delta(lamp) == {"version": 1, "delta": {"power": "on"}}
            verdict, twin = await lamp.request("twin/get", {"clientToken": "g"})
            assert verdict == "accepted"
            assert twin["reported"] == {"power": "off"}
            assert twin["state"]["value"] == "online"
            verdict, twin = await fan.request("twin/get", {})
            assert twin["reported"] == {"speed": 2}  # the report sent while the node was down
            verdict, body = await lamp.request("twin/update", {"reported": {"power": "on"}})
            assert (verdict, body["version"]) == ("accepted", 2)
            assert json.loads(await lamp.next("twin/delta", NODE_START_TIMEOUT) or b"{}") == {}
            await lamp.publish("telemetry/t", b"2")
            await eventually(lambda: len(records(node, "telemetry")) == 2, "telemetry queued")

    run(after_restart)
    status = node.status_json()
    assert status["hub"]["state"] != "connected"
    twins = {r["body"]["device"]: r["body"] for r in records(node, "twin")}
    assert twins["lamp"]["reported"] == {"power": "on"}  # coalesced: only the newest waits
    assert twins["fan"]["reported"] == {"speed": 2}
    assert [r["body"]["payload"] for r in records(node, "telemetry")] == ["1", "2"]
    assert [r["body"].get("state") for r in records(node, "device-state")] == ["online"]
    assert status["outbox"]["messages"] == len(outbox(node))
    assert "ERROR" not in node.log()


# ------------------------------------------------------------------------- hub ----


def device_resource(name: str, node_name: str, desired: dict[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": "edgenode.io/v1",
        "kind": "Device",
        "metadata": {"name": name, "labels": {"room": "hall"}},
        "spec": {"node": node_name, "desired": desired},
    }


def route_resource(name: str, spec: dict[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": "edgenode.io/v1",
        "kind": "Route",
        "metadata": {"name": name, "labels": {}},
        "spec": spec,
    }


def hub_records(hub: FakeHub, kind: str) -> list[tuple[int, dict[str, Any]]]:
    out = []
    for record in sorted(hub.stored.values(), key=lambda r: r.sequence):
        payload = json.loads(record.payload)
        if record.node == NODE_NAME and payload["kind"] == kind:
            out.append((record.priority, payload))
    return out


def test_hub_devices_and_routes_drive_the_device_layer(node, broker, hub):
    configure(node, broker, hub.url)
    node.start()
    node.wait_state("connected")
    served(node, [])
    hub.publish(
        [
            ("Device/default/lamp", device_resource("lamp", NODE_NAME, {"power": "on"})),
            ("Device/default/other", device_resource("other", "another-node", {"x": 1})),
        ]
    )
    served(node, ["lamp"])

    async def online() -> None:
        async with device_client(broker.port, "lamp") as lamp:
            assert await next_delta(lamp) == {"version": 1, "delta": {"power": "on"}}
            verdict, _ = await lamp.request(
                "twin/update",
                {"reported": {"power": "off"}, "ack": {"version": 1, "status": "in-progress"}},
            )
            assert verdict == "accepted"
            await eventually(lambda: hub_records(hub, "twin"), "a twin record at the hub")
            # A desired change from the hub: a new delta version.
            hub.publish(
                [("Device/default/lamp", device_resource("lamp", NODE_NAME, {"power": "dim"}))]
            )
            assert await next_delta(lamp) == {"version": 2, "delta": {"power": "dim"}}
            # A Route from the hub: alarms go up first.
            revision = hub.publish(
                [
                    (
                        "Route/default/alarms",
                        route_resource(
                            "alarms",
                            {"from": "$edge/devices/+/telemetry/alarm", "to": "upstream",
                             "priority": 0, "ttl": 600},
                        ),
                    )
                ]
            )  # fmt: skip
            await eventually(
                lambda: node.status_json()["applied_revision"] == revision, "the route applied"
            )
            await asyncio.sleep(0.3)  # the subscription follows the route table
            await lamp.publish("telemetry/alarm", b"fire")
            await lamp.publish("telemetry/temp", b"20")
            await eventually(lambda: len(hub_records(hub, "telemetry")) == 2, "telemetry at hub")

    run(online)
    ((_, twin),) = hub_records(hub, "twin")
    assert twin["node"] == NODE_NAME
    assert twin["body"]["device"] == "lamp"
    assert twin["body"]["reported"] == {"power": "off"}
    assert twin["body"]["version"] == 1
    acks = [r for _, r in hub_records(hub, "device-state") if "ack" in r["body"]]
    assert acks[0]["body"]["ack"]["status"] == "in-progress"
    priorities = {r["body"]["topic"].rsplit("/", 1)[1]: p for p, r in hub_records(hub, "telemetry")}
    assert priorities == {"alarm": 0, "temp": 5}

    # Offline restart: the hub's device is served from the store's cache.
    node.stop()
    configure(node, broker, dead_hub_url())
    node.start()
    served(node, ["lamp"])

    async def offline() -> None:
        async with device_client(broker.port, "lamp") as lamp:
            assert await next_delta(lamp) == {"version": 2, "delta": {"power": "dim"}}
            verdict, twin = await lamp.request("twin/get", {})
            assert (verdict, twin["desired"]) == ("accepted", {"power": "dim"})

    run(offline)


def test_a_device_the_hub_deletes_is_no_longer_served(node, broker, hub):
    hub.publish([("Device/default/lamp", device_resource("lamp", NODE_NAME, {"power": "on"}))])
    configure(node, broker, hub.url, devices=[{"name": "sensor"}])
    node.start()
    served(node, ["lamp", "sensor"])
    hub.publish([("Device/default/lamp", None)])
    served(node, ["sensor"])

    async def scenario() -> None:
        async with device_client(broker.port, "lamp") as lamp:
            verdict, body = await lamp.request("twin/update", {"reported": {"power": "on"}})
            assert (verdict, body["code"]) == ("rejected", 404)

    run(scenario)

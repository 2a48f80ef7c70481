"""The whole story, end to end, with every part real (issue 5's "Done means").

A real ``edgehub serve`` subprocess (SQLite data in tmp_path, free ports, heartbeat
0.2 s), a real Mosquitto, two real ``edgenode run`` processes (node-a with site=north,
node-b with site=south, their tokens from ``edgectl node add``) and an aiomqtt device
client for a device attached to node-a. Everything an operator does goes through
``edgectl``; what a node holds is read with ``edgenode status --json`` and its SQLite
outbox (read-only). Steps: join, apply (with isolation between the nodes), delta and
report, the reported state at the hub (a deleted key disappears), a desired change, a hub
restart (the node keeps serving, reports queue and then arrive, the outbox drains), and a
delete that reaches the node.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from node.conftest import NodeProcess

from hub.conftest import RunningHub
from integration.devices.mqtt_broker import Broker, Device, device_client, free_port

pytestmark = pytest.mark.timeout(120)

STORY_TIMEOUT = 90.0
"""The whole story must finish within this (the issue's bound for the test)."""
STEP_TIMEOUT = 15.0
"""Bound of every single wait; a failure names what did not happen."""
POLL = 0.1
DEVICE = "thermo"
DEVICE_KEY = f"Device/default/{DEVICE}"
CONFIG_KEY = "Config/default/north-tuning"

FLEET = f"""
apiVersion: edgenode.io/v1
kind: Device
metadata: {{name: {DEVICE}}}
spec: {{node: node-a, desired: {{target_temp: 21}}}}
---
apiVersion: edgenode.io/v1
kind: Config
metadata: {{name: north-tuning}}
spec: {{data: {{interval: "5"}}, nodeSelector: {{site: north}}}}
"""


async def eventually(condition: Callable[[], Any], what: str, timeout: float = STEP_TIMEOUT) -> Any:
    """Poll ``condition`` (run in a thread: it may start processes) until truthy."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    last: Any = None
    while True:
        last = await asyncio.to_thread(condition)
        if last:
            return last
        if loop.time() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        await asyncio.sleep(POLL)


async def ctl(hub: RunningHub, *args: str, stdin: str | None = None) -> str:
    """Run ``edgectl``; it must succeed. Its standard output."""
    result: subprocess.CompletedProcess[str] = await asyncio.to_thread(hub.ctl, *args, stdin=stdin)
    assert result.returncode == 0, f"edgectl {' '.join(args)}: {result.stderr}"
    return result.stdout


def ctl_json(hub: RunningHub, *args: str) -> Any:
    result = hub.ctl(*args, "-o", "json")
    return json.loads(result.stdout) if result.returncode == 0 else None


def node_states(hub: RunningHub) -> dict[str, str]:
    listing = ctl_json(hub, "get", "nodes") or {"items": []}
    return {n["metadata"]["name"]: n["status"]["state"] for n in listing["items"]}


def hub_device(hub: RunningHub) -> dict[str, Any]:
    device = ctl_json(hub, "get", "device", DEVICE)
    assert device is not None, f"edgectl get device {DEVICE} failed"
    status: dict[str, Any] = device["status"]
    return status


async def next_delta(device: Device) -> dict[str, Any]:
    """The next non-empty delta (an empty retained one says "in sync" and is skipped)."""
    while not (payload := await device.next("twin/delta", STEP_TIMEOUT)):
        pass
    delta: dict[str, Any] = json.loads(payload)
    return delta


def status(node: NodeProcess) -> dict[str, Any]:
    result = node.status("--json")
    return json.loads(result.stdout) if result.stdout else {}


def resource_keys(node: NodeProcess) -> set[str]:
    return {r["key"] for r in status(node).get("resources", [])}


def outbox_kinds(node: NodeProcess) -> list[str]:
    """The kind of every record waiting in the node's outbox (read-only)."""
    db = sqlite3.connect(f"file:{node.data_dir / 'node.db'}?mode=ro", uri=True, timeout=5)
    try:
        rows = db.execute("SELECT payload FROM outbox ORDER BY priority, seq").fetchall()
    finally:
        db.close()
    return [json.loads(payload)["kind"] for (payload,) in rows]


def serving(node: NodeProcess, devices: list[str]) -> bool:
    layer = status(node).get("device_layer") or {}
    return bool(layer.get("devices") == devices and layer.get("broker_connected"))


@pytest.fixture
def brokers(tmp_path: Path) -> Iterator[dict[str, Broker]]:
    """One Mosquitto per node, as on real sites: a node's device layer answers every
    device under ``$edge/devices/`` on its broker (unknown ones with 404), so two nodes
    must not share one."""
    started: dict[str, Broker] = {}
    try:
        for name in ("node-a", "node-b"):
            directory = tmp_path / f"broker-{name}"
            directory.mkdir()
            started[name] = Broker(directory, free_port())
            started[name].start()
        yield started
    finally:
        for broker in started.values():
            broker.stop()


@pytest.fixture
def hub(tmp_path: Path) -> Iterator[RunningHub]:
    data = tmp_path / "hub"
    data.mkdir()
    running = RunningHub(data)
    running.start()
    yield running
    running.stop()  # SIGTERM, then SIGKILL after 10 s


@pytest.fixture
def nodes(tmp_path: Path) -> Iterator[dict[str, NodeProcess]]:
    made: dict[str, NodeProcess] = {}
    for name in ("node-a", "node-b"):
        directory = tmp_path / name
        directory.mkdir()
        made[name] = NodeProcess(directory, name)
    yield made
    for node in made.values():
        node.stop()  # SIGTERM, then SIGKILL after 10 s


async def story(hub: RunningHub, brokers: dict[str, Broker], nodes: dict[str, NodeProcess]) -> None:
    node_a, node_b = nodes["node-a"], nodes["node-b"]

    # 1. edgectl node add (the token alone on the last line), both nodes join: Ready.
    for node, site in ((node_a, "north"), (node_b, "south")):
        out = await ctl(hub, "node", "add", node.name, "--label", f"site={site}")
        token = out.splitlines()[-1]
        assert token.startswith("ent_"), out
        port = brokers[node.name].port
        node.configure(hub.link, token=token, mqtt={"port": port, "keepalive": 5})
        node.start()
    await eventually(
        lambda: node_states(hub) == {"node-a": "Ready", "node-b": "Ready"},
        "both nodes Ready in `edgectl get nodes`",
    )

    # 2. apply a Device on node-a and a Config for site=north: node-a has both, node-b none.
    applied = await ctl(hub, "apply", "-f", "-", stdin=FLEET)
    assert applied.splitlines() == [f"device/{DEVICE} created", "config/north-tuning created"]
    await eventually(
        lambda: {DEVICE_KEY, CONFIG_KEY} <= resource_keys(node_a),
        "node-a's store to hold the Device and the Config",
    )
    await eventually(
        lambda: status(node_b).get("applied_revision") == status(node_a).get("applied_revision"),
        "node-b to reach node-a's revision",
    )
    keys_b = resource_keys(node_b)
    assert DEVICE_KEY not in keys_b, keys_b
    assert CONFIG_KEY not in keys_b, keys_b
    await eventually(lambda: serving(node_a, [DEVICE]), f"node-a serving {DEVICE}")

    async with device_client(brokers["node-a"].port, DEVICE) as device:
        await device_story(hub, device, node_a)


async def device_story(hub: RunningHub, device: Device, node_a: NodeProcess) -> None:
    # 3. the retained delta, a report, the reported state at the hub.
    delta = await next_delta(device)
    assert delta == {"version": 1, "delta": {"target_temp": 21}}
    verdict, body = await device.request(
        "twin/update",
        {"reported": {"target_temp": 21, "temperature": 19.5, "battery": 90}},
    )
    assert verdict == "accepted", body
    await eventually(
        lambda: (
            hub_device(hub)["reported"] == {"target_temp": 21, "temperature": 19.5, "battery": 90}
        ),
        "the report in `edgectl get device` status.reported",
    )
    # The device deletes a key: it disappears at the hub too (full document replaces).
    verdict, body = await device.request("twin/update", {"reported": {"battery": None}})
    assert verdict == "accepted", body
    await eventually(
        lambda: hub_device(hub)["reported"] == {"target_temp": 21, "temperature": 19.5},
        "the deleted key gone from status.reported",
    )
    assert hub_device(hub)["delta"] == {}

    # 4. edgectl twin set → a new delta with desired version 2.
    await ctl(hub, "twin", "set", DEVICE, "target_temp=23")
    delta = await next_delta(device)
    assert delta == {"version": 2, "delta": {"target_temp": 23}}

    # 5. the hub stops: node-a keeps serving from its store, reports queue in its outbox.
    assert hub.stop() == 0, "the hub did not exit 0 on SIGTERM"
    await eventually(
        lambda: status(node_a)["hub"]["state"] != "connected", "node-a to notice the hub gone"
    )
    verdict, twin = await device.request("twin/get", {"clientToken": "g-1"})
    assert verdict == "accepted", twin
    assert twin["desired"]["target_temp"] == 23
    verdict, body = await device.request(
        "twin/update", {"reported": {"target_temp": 23, "temperature": 20.5}}
    )
    assert verdict == "accepted", body
    await eventually(lambda: "twin" in outbox_kinds(node_a), "the report queued in node-a's outbox")
    assert status(node_a)["outbox"]["messages"] > 0

    # 6. the hub starts again on the same data and ports: nodes reconnect by themselves,
    # the queued report arrives, the outbox drains.
    await asyncio.to_thread(hub.start)
    await eventually(
        lambda: node_states(hub) == {"node-a": "Ready", "node-b": "Ready"},
        "both nodes Ready again after the hub restart",
    )
    await eventually(
        lambda: hub_device(hub)["reported"] == {"target_temp": 23, "temperature": 20.5},
        "the report queued during the outage at the hub",
    )
    # Only the periodic node-status record (coalesced, re-added every [status] interval)
    # may be waiting; everything queued during the outage is acknowledged and gone.
    await eventually(lambda: set(outbox_kinds(node_a)) <= {"status"}, "node-a's outbox to drain")
    assert status(node_a)["outbox"]["messages"] <= 1

    # 7. edgectl delete: gone from node-a's store, the device's updates are refused (404).
    assert (await ctl(hub, "delete", "device", DEVICE)).strip() == f"device/{DEVICE} deleted"
    await eventually(
        lambda: DEVICE_KEY not in resource_keys(node_a), "the Device gone from node-a's store"
    )
    await eventually(lambda: serving(node_a, []), f"node-a no longer serving {DEVICE}")
    verdict, body = await device.request("twin/update", {"reported": {"temperature": 21}})
    assert (verdict, body["code"]) == ("rejected", 404), body


def test_the_whole_story_hub_two_nodes_mosquitto_and_a_device(hub, brokers, nodes):
    asyncio.run(asyncio.wait_for(story(hub, brokers, nodes), timeout=STORY_TIMEOUT))

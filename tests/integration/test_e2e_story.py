"""The demo's story as a test (issue 7): the same programs, the same fleet file, the same
steps, with assertions at every step.

Every part is real and its own process: ``edgehub serve`` (SQLite in tmp_path, free ports,
heartbeat 0.2 s), one Mosquitto per node, two ``edgenode run`` (node-a with site=north,
node-b with site=south, their tokens from ``edgectl node add``), and the simulated devices
of ``scripts/demo.sh`` (``python -m edgenode.devices.simulate``): a thermostat on node-a, a
meter on node-b. Everything an operator does goes through ``edgectl`` with
``deploy/demo/fleet.yaml``; what a node holds is read with ``edgenode status --json`` and
its SQLite outbox (read-only).

1. join: both nodes Ready; 2. apply Devices, a Config and a Route: each node holds
exactly what targets it; 3. the thermostat applies its delta and its report reaches the
hub, the meter's readings flow; 4. ``edgectl twin set`` → a new delta → the device acks and
reports → the hub; 5. the hub stops: node-a answers twin/get from its store, node-b
queues the meter's readings; 6. the hub starts again: the outboxes drain, every reading
the meter published is at the hub exactly once, the thermostat's latest report too; then
what the demo does not show: a key the device deletes disappears at the hub, and a
deleted Device is no longer served (its twin updates get 404).
"""

from __future__ import annotations

import asyncio
import json
import re
import subprocess
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from node.conftest import NodeProcess

from hub.conftest import RunningHub
from integration.devices.mqtt_broker import Broker, device_client
from integration.fleet import Fleet, Simulator, eventually, node_status, outbox_records, serving

pytestmark = pytest.mark.timeout(120)

ROOT = Path(__file__).resolve().parents[2]
FLEET = ROOT / "deploy" / "demo" / "fleet.yaml"
STORY_TIMEOUT = 60.0
"""The whole story must finish within this."""
NODES = {"node-a": "north", "node-b": "south"}
THERMO, METER = "thermo-1", "meter-1"
DEVICE_INTERVAL = "0.2"
"""The simulators' tick (seconds): the meter publishes five readings a second."""
QUEUED = 5
"""Readings the meter must publish while the hub is down."""
HOLDS = {
    "node-a": {"Node/default/node-a", f"Device/default/{THERMO}", "Config/default/north-tuning"},
    "node-b": {"Node/default/node-b", f"Device/default/{METER}", "Route/default/meter-energy"},
}
"""What each node's store holds after the apply: what targets it, nothing else."""


async def ctl(hub: RunningHub, *args: str) -> str:
    """Run ``edgectl``; it must succeed. Its standard output."""
    result: subprocess.CompletedProcess[str] = await asyncio.to_thread(hub.ctl, *args)
    assert result.returncode == 0, f"edgectl {' '.join(args)}: {result.stderr}"
    return result.stdout


def ctl_json(hub: RunningHub, *args: str) -> Any:
    result = hub.ctl(*args, "-o", "json")
    return json.loads(result.stdout) if result.returncode == 0 else None


def node_states(hub: RunningHub) -> dict[str, str]:
    listing = ctl_json(hub, "get", "nodes") or {"items": []}
    return {n["metadata"]["name"]: n["status"]["state"] for n in listing["items"]}


def all_ready(hub: RunningHub) -> bool:
    return node_states(hub) == dict.fromkeys(NODES, "Ready")


def twin(hub: RunningHub, device: str) -> dict[str, Any]:
    """``edgectl twin get``: desired, reported, delta, versions."""
    result = hub.ctl("twin", "get", device)
    assert result.returncode == 0, result.stderr
    value: dict[str, Any] = json.loads(result.stdout)
    return value


def readings(hub: RunningHub) -> list[int]:
    """The meter's reading numbers in ``edgectl telemetry meter-1`` (every record)."""
    result = hub.ctl("telemetry", METER)
    assert result.returncode == 0, result.stderr
    numbers = []
    for line in result.stdout.splitlines():
        record = json.loads(line)["record"]
        assert record["topic"] == f"$edge/devices/{METER}/telemetry/energy", record
        numbers.append(json.loads(record["payload"])["n"])
    return numbers


def all_readings(hub: RunningHub, sent: int) -> list[int] | None:
    """The readings at the hub once they include 0 .. sent-1, else None."""
    numbers = readings(hub)
    return numbers if set(range(sent)) <= set(numbers) else None


def resource_keys(node: NodeProcess) -> set[str]:
    return {r["key"] for r in node_status(node).get("resources", [])}


def published(meter: Simulator) -> int:
    return int(meter.state().get("published", 0))


async def story(
    hub: RunningHub,
    brokers: dict[str, Broker],
    nodes: dict[str, NodeProcess],
    simulate: Callable[..., Simulator],
) -> None:
    node_a, node_b = nodes["node-a"], nodes["node-b"]

    # 1. edgectl node add (the token alone on the last line); both nodes join: Ready.
    for name, site in NODES.items():
        out = await ctl(hub, "node", "add", name, "--label", f"site={site}")
        token = out.splitlines()[-1]
        assert token.startswith("ent_"), out
        nodes[name].configure(
            hub.link, token=token, mqtt={"port": brokers[name].port, "keepalive": 5}
        )
        nodes[name].start()
    await eventually(lambda: all_ready(hub), "both nodes Ready in `edgectl get nodes`")
    wide = await ctl(hub, "get", "nodes", "-o", "wide")
    assert "site=north" in wide
    assert "site=south" in wide

    # 2. the demo's fleet: each node's store holds exactly what targets it.
    applied = await ctl(hub, "apply", "-f", str(FLEET))
    assert applied.splitlines() == [
        f"device/{THERMO} created",
        f"device/{METER} created",
        "config/north-tuning created",
        "route/meter-energy created",
    ]
    for name, keys in HOLDS.items():
        await eventually(
            lambda n=name, k=keys: resource_keys(nodes[n]) == k, f"{name}'s store holding {keys}"
        )
    await eventually(lambda: serving(node_a, [THERMO]), f"node-a serving {THERMO}")
    await eventually(lambda: serving(node_b, [METER]), f"node-b serving {METER}")

    # 3. the devices connect: the thermostat applies the retained delta (v1) and acks it,
    # its report reaches the hub; the meter's readings reach the hub.
    thermostat = simulate(
        "thermostat", THERMO, brokers["node-a"].port, "--interval", DEVICE_INTERVAL
    )
    meter = simulate("meter", METER, brokers["node-b"].port, "--interval", DEVICE_INTERVAL)
    # One number names one desired document: the hub's, the delta's, the ack's.
    first = twin(hub, THERMO)["versions"]["desired"]
    await eventually(
        lambda: f'delta v{first} {{"target_temp": 21}}: applying' in thermostat.log(),
        "the thermostat applying target_temp 21",
    )
    await eventually(
        lambda: twin(hub, THERMO)["reported"].get("target_temp") == 21,
        "the thermostat's report of target_temp 21 at the hub",
    )
    assert twin(hub, THERMO)["delta"] == {}
    await eventually(lambda: readings(hub), "the meter's first readings at the hub")

    # 4. edgectl twin set → a new delta version → the device applies, acks and reports.
    out = await ctl(hub, "twin", "set", THERMO, "target_temp=23")
    printed = re.fullmatch(rf"device/{THERMO} desired set \(version (\d+)\)", out.strip())
    assert printed, out
    version = int(printed[1])
    assert version > first
    await eventually(
        lambda: f'delta v{version} {{"target_temp": 23}}: applying' in thermostat.log(),
        "the thermostat receiving the new delta version",
    )
    now = await eventually(
        lambda: (t := twin(hub, THERMO))["reported"].get("target_temp") == 23 and t,
        "the report of target_temp 23 at the hub",
    )
    assert now["desired"] == {"target_temp": 23}
    assert now["delta"] == {}
    assert now["versions"]["desired"] == version
    device = ctl_json(hub, "get", "device", THERMO)
    await eventually(
        lambda: (
            (ctl_json(hub, "get", "device", THERMO) or {})["status"]
            .get("lastAck", {})
            .get("version")
            == version
        ),
        "the thermostat's ack of the desired version at the hub",
    )
    device = ctl_json(hub, "get", "device", THERMO)
    assert device["status"]["lastAck"]["status"] == "accepted"

    # 5. the hub stops: node-a answers twin/get from its own store; node-b queues readings.
    at_hub_before = len(set(await asyncio.to_thread(readings, hub)))
    assert hub.stop() == 0, "the hub did not exit 0 on SIGTERM"
    for node in nodes.values():
        await eventually(
            lambda n=node: node_status(n)["hub"]["state"] != "connected",
            f"{node.name} to notice the hub gone",
        )
    async with device_client(brokers["node-a"].port, THERMO) as client:
        verdict, body = await client.request("twin/get", {"clientToken": "g-1"})
    assert verdict == "accepted", body
    assert body["desired"] == {"target_temp": 23}
    assert body["reported"]["target_temp"] == 23
    assert body["clientToken"] == "g-1"
    published_at_stop = published(meter)
    await eventually(
        lambda: published(meter) >= published_at_stop + QUEUED,
        f"{QUEUED} more readings published with the hub down",
    )
    queued = [
        r
        for r in outbox_records(node_b)
        if r["kind"] == "telemetry" and r["body"]["device"] == METER
    ]
    assert len(queued) >= QUEUED, queued
    assert node_status(node_b)["outbox"]["messages"] >= QUEUED

    # 6. the hub starts on the same data and ports: both nodes reconnect by themselves,
    # the outboxes drain (only the coalesced periodic status record may wait), every
    # reading published so far is at the hub exactly once. What waits is what status
    # counts: the newest acknowledged readings stay in the file until the next commit
    # deletes them (deferred acks, docs/store.md), and the meter keeps publishing.
    await asyncio.to_thread(hub.start)
    await eventually(lambda: all_ready(hub), "both nodes Ready again after the hub restart")
    for node in nodes.values():
        await eventually(
            lambda n=node: node_status(n)["outbox"]["messages"] <= 1,
            f"{node.name}'s outbox to drain",
        )
    sent = published(meter)
    at_hub = await eventually(
        lambda: all_readings(hub, sent),
        f"all {sent} readings at the hub",
    )
    twice = sorted(n for n, times in Counter(at_hub).items() if times > 1)
    assert twice == [], f"readings stored twice at the hub: {twice}"
    assert sent - at_hub_before >= QUEUED, (sent, at_hub_before)
    await eventually(
        lambda: twin(hub, THERMO)["reported"] == thermostat.state()["reported"],
        "the thermostat's latest report at the hub",
    )

    # Beyond the demo: a key the device deletes disappears at the hub (the full reported
    # document replaces the hub's), and a deleted Device is no longer served.
    async with device_client(brokers["node-a"].port, THERMO) as client:
        verdict, body = await client.request("twin/update", {"reported": {"humidity": 40}})
        assert verdict == "accepted", body
        await eventually(
            lambda: twin(hub, THERMO)["reported"].get("humidity") == 40, "humidity at the hub"
        )
        verdict, body = await client.request("twin/update", {"reported": {"humidity": None}})
        assert verdict == "accepted", body
        await eventually(
            lambda: "humidity" not in twin(hub, THERMO)["reported"],
            "the deleted key gone from the hub's reported state",
        )
    async with device_client(brokers["node-b"].port, METER) as client:
        assert (await ctl(hub, "delete", "device", METER)).strip() == f"device/{METER} deleted"
        await eventually(
            lambda: f"Device/default/{METER}" not in resource_keys(node_b),
            f"{METER} gone from node-b's store",
        )
        await eventually(lambda: serving(node_b, []), f"node-b no longer serving {METER}")
        verdict, body = await client.request("twin/update", {"reported": {"n": 1}})
        assert (verdict, body["code"]) == ("rejected", 404), body


def test_the_demo_story_hub_two_nodes_a_thermostat_and_a_meter_nothing_lost(tmp_path):
    with Fleet(tmp_path) as fleet:
        brokers = {name: fleet.broker(name) for name in NODES}
        hub = fleet.hub()
        nodes = {name: fleet.node(name) for name in NODES}
        asyncio.run(
            asyncio.wait_for(story(hub, brokers, nodes, fleet.simulator), timeout=STORY_TIMEOUT)
        )

"""Compatibility: the newest hub serves nodes of every protocol version since 1 (ships
come back after months on old software). A version-1 node — the real NodeProtocol asked
to speak version 1, over a real websockets connection to a real ``edgehub serve`` —
syncs, resumes, gets live changes and sends uplink exactly as before; later issues that
add frames extend this test."""

from __future__ import annotations

import asyncio
import contextlib
import json
from typing import Any

from edgehub.simnode import SimNode

from edgenode.protocol import NodeConfig, UplinkRecord, Welcomed

WAIT = 5.0

DEVICE = """
apiVersion: edgenode.io/v1
kind: Device
metadata: {{name: {name}}}
spec: {{node: {node}, desired: {{power: "{power}"}}}}
"""


async def _start(node: SimNode) -> asyncio.Task[Any]:
    node.welcomed.clear()
    task = asyncio.create_task(node.run_once())
    async with asyncio.timeout(WAIT):
        await node.welcomed.wait()
    return task


async def _stop(task: asyncio.Task[Any]) -> None:
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


def test_a_version_1_node_syncs_resumes_and_sends_uplink_to_the_newest_hub(hub):
    token = hub.node_add("old")
    hub.apply(DEVICE.format(name="d", node="old", power="on"))
    record = json.dumps(
        {
            "v": 1,
            "kind": "device-state",
            "node": "old",
            "ts": 1.0,
            "body": {"device": "d", "state": "online"},
        }
    ).encode()

    async def scenario() -> None:
        node = SimNode(hub.link, token, "old", config=NodeConfig(version=1))
        task = await _start(node)
        (welcomed,) = [e for e in node.events if isinstance(e, Welcomed)]
        assert (welcomed.protocol_version, welcomed.features) == (1, frozenset())
        assert welcomed.hub_time is None  # not a version-1 field
        await node.wait_until(lambda: "Device/default/d" in node.desired)
        assert node.desired["Device/default/d"][1]["spec"]["desired"] == {"power": "on"}
        await node.send_uplink([UplinkRecord(1, 3, record)])
        await node.wait_until(lambda: 1 in node.acked_uplink)
        await _stop(task)
        # Offline: the operator changes the device; the old node resumes from its revision.
        await asyncio.to_thread(hub.apply, DEVICE.format(name="d", node="old", power="off"))
        task = await _start(node)
        await node.wait_until(
            lambda: node.desired["Device/default/d"][1]["spec"]["desired"] == {"power": "off"}
        )
        # And live changes while connected.
        await asyncio.to_thread(hub.apply, DEVICE.format(name="d", node="old", power="dim"))
        await node.wait_until(
            lambda: node.desired["Device/default/d"][1]["spec"]["desired"] == {"power": "dim"}
        )
        await _stop(task)

    asyncio.run(scenario())
    _, device = hub.call("GET", "/v1/devices/d")
    assert device["status"]["state"] == "online"
    _, node = hub.call("GET", "/v1/nodes/old")
    assert node["status"]["revision"] == hub.call("GET", "/readyz")[1]["revision"]


def test_the_newest_node_is_welcomed_with_the_newest_version_and_the_hubs_time(hub):
    token = hub.node_add("new")

    async def scenario() -> Welcomed:
        node = SimNode(hub.link, token, "new")
        task = await _start(node)
        await _stop(task)
        (welcomed,) = [e for e in node.events if isinstance(e, Welcomed)]
        return welcomed

    welcomed = asyncio.run(scenario())
    assert welcomed.protocol_version == 2
    assert welcomed.hub_time is not None

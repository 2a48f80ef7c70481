"""Node status samples against the real hub (issue 15): sent without a disk write while
connected, they still give the hub each node's latest status, after a hub restart and
after a SIGKILL of the node (whose samples' sequence numbers were never stored: its hello
says where its store's counter stands and the hub forgets from there, so the new
process's records are not taken for duplicates)."""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path
from typing import Any

import pytest

from hub.conftest import RunningHub
from integration.fleet import Fleet, eventually

pytestmark = pytest.mark.timeout(90)

NODE = "ship-a"


def hub_status(hub: RunningHub) -> dict[str, Any]:
    code, body = hub.call("GET", f"/v1/nodes/{NODE}")
    return body.get("status") or {} if code == 200 else {}


def uptime(hub: RunningHub) -> float:
    status = hub_status(hub)
    metrics = status.get("metrics") or {}
    if status.get("state") != "Ready" or "process_uptime" not in metrics:
        return -1.0
    return float(metrics["process_uptime"])


def newer_than(hub: RunningHub, value: float) -> tuple[float] | None:
    """(uptime,) once the hub shows a status with process_uptime > value (truthy)."""
    now = uptime(hub)
    return (now,) if now > value else None


async def scenario(tmp_path: Path) -> None:
    with Fleet(tmp_path) as fleet:
        hub = fleet.hub()
        token = hub.node_add(NODE)
        node = fleet.node(NODE)
        node.configure(hub.link, token, status={"interval": 0.2}, mqtt={"enabled": False})
        node.start()
        (first,) = await eventually(lambda: newer_than(hub, -0.5), "a status at the hub")
        await eventually(lambda: newer_than(hub, first + 1), "newer samples at the hub")

        hub.stop()
        await asyncio.sleep(1.0)
        hub.start()
        await eventually(lambda: newer_than(hub, first + 2), "the status after a hub restart")

        old = uptime(hub)
        assert node.proc is not None
        node.proc.send_signal(signal.SIGKILL)
        node.proc.wait(10)
        node.start()
        # The new process's status (a small uptime) replaces the old one at the hub.
        await eventually(lambda: 0 <= uptime(hub) < old - 0.5, "the restarted node's status")


def test_status_samples_keep_the_hub_current_across_hub_restarts_and_node_kills(tmp_path):
    asyncio.run(scenario(tmp_path))

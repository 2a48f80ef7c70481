"""Wrong state that trying edgenode found, reproduced with the real programs (a real
``edgehub serve``, Mosquitto and ``edgenode run``) and fixed:

- a retained delta left stale after a node restart: stop the node, change the desired
  state at the hub, start the node — the retained ``twin/delta`` must say what the store
  says, every time (it was stale in 2 of 5 restarts: the new delta was published only
  once connected, after the resync had already gone out with the old one);
- a second ``edgenode run`` on the same data_dir is refused at once, naming the first's
  pid, and the first keeps running undisturbed.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import aiomqtt
import pytest
from node.conftest import NodeProcess

from hub.conftest import RunningHub
from integration.fleet import Fleet, eventually, node_status

pytestmark = pytest.mark.timeout(180)

DEVICE = """
apiVersion: edgenode.io/v1
kind: Device
metadata: {{name: lamp}}
spec: {{node: ship-1, desired: {{power: "{power}"}}}}
"""
RESTARTS = 5
RETAINED_WAIT = 1.0


def ctl(hub: RunningHub, *args: str) -> str:
    result = hub.ctl(*args)
    assert result.returncode == 0, f"edgectl {' '.join(args)}: {result.stderr}"
    return result.stdout


async def retained_delta(port: int) -> dict[str, Any] | None:
    """The retained delta a fresh subscriber gets (None: none retained)."""
    async with aiomqtt.Client("127.0.0.1", port, identifier="") as client:
        await client.subscribe("$edge/devices/lamp/twin/delta", qos=1)
        try:
            async with asyncio.timeout(RETAINED_WAIT):
                async for message in client.messages:
                    if message.retain and message.payload:
                        assert isinstance(message.payload, bytes)
                        return dict(json.loads(message.payload))
        except TimeoutError:
            pass
    return None


def desired_version(hub: RunningHub) -> int:
    return int(json.loads(ctl(hub, "twin", "get", "lamp"))["versions"]["desired"])


def test_the_retained_delta_matches_the_store_after_every_restart(tmp_path: Path):
    with Fleet(tmp_path) as fleet:
        hub = fleet.hub()
        broker = fleet.broker("a")
        token = ctl(hub, "node", "add", "ship-1").splitlines()[-1]
        node = fleet.node("ship-1")
        node.configure(hub.link, token, mqtt={"port": broker.port, "keepalive": 5})
        hub.apply(DEVICE.format(power="p0"))
        node.start()

        async def story() -> None:
            await eventually(
                lambda: (
                    (asyncio.run(retained_delta(broker.port)) or {}).get("delta") == {"power": "p0"}
                ),
                "the first delta",
            )
            for restart in range(1, RESTARTS + 1):
                node.stop()
                ctl(hub, "twin", "set", "lamp", f"power=p{restart}")
                version = desired_version(hub)
                node.start()
                revision = hub.call("GET", "/readyz")[1]["revision"]
                await eventually(
                    lambda r=revision: node_status(node).get("applied_revision") == r,
                    "the node synced",
                )
                # Whatever the order of connecting and syncing, the broker ends up holding
                # the store's delta: the new value, with the hub's version.
                await eventually(
                    lambda v=version, r=restart: (
                        asyncio.run(retained_delta(broker.port))
                        == {"version": v, "delta": {"power": f"p{r}"}}
                    ),
                    f"the retained delta of restart {restart}",
                )

        asyncio.run(story())


def test_a_second_daemon_on_the_same_data_dir_is_refused_naming_the_first(tmp_path: Path):
    node = NodeProcess(tmp_path, "ship-1")
    node.configure(None, mqtt={"enabled": False})
    try:
        first = node.start()
        asyncio.run(
            eventually(
                lambda: node_status(node).get("daemon", {}).get("running"), "the first daemon"
            )
        )
        second = subprocess.run(
            [sys.executable, "-m", "edgenode", "run", "--config", str(node.config_path)],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        assert second.returncode == 1
        assert f"another edgenode daemon (pid {first.pid}) is running on data_dir" in second.stderr
        assert first.poll() is None
        status = node_status(node)
        assert status["daemon"] == {"running": True, "pid": first.pid}
    finally:
        node.stop()

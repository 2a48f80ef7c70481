"""Config reaches the programs on the node: a real ``edgehub serve``, a real Mosquitto and a
real ``edgenode run``. A Config targeted at the node becomes ``DATA_DIR/config/NAME.json``
and a retained ``$edge/config/NAME`` message; a change changes both, a delete removes
both; the hub counts the nodes that applied the current generation (``APPLIED``); a node
restarted with the hub down still has its Configs (files and retained messages, also on a
restarted broker); ``[[config]]`` tables work without a hub; a stale retained Config left
at the broker is cleared."""

from __future__ import annotations

import asyncio
import json
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiomqtt
import pytest
from node.conftest import NodeProcess

from hub.conftest import RunningHub
from integration.fleet import Fleet, eventually, node_status

pytestmark = pytest.mark.timeout(120)

CONFIG = """
apiVersion: edgenode.io/v1
kind: Config
metadata: {{name: {name}}}
spec: {{data: {data}, nodeSelector: {{site: {site}}}}}
"""
RETAINED_WAIT = 1.0
"""Seconds a fresh subscriber waits for retained messages (they come right after SUBACK)."""


def ctl(hub: RunningHub, *args: str) -> str:
    result: subprocess.CompletedProcess[str] = hub.ctl(*args)
    assert result.returncode == 0, f"edgectl {' '.join(args)}: {result.stderr}"
    return result.stdout


async def retained(port: int, topic_filter: str = "$edge/config/#") -> dict[str, Any]:
    """The retained messages a fresh subscriber gets: topic → parsed JSON."""
    found: dict[str, Any] = {}
    async with aiomqtt.Client("127.0.0.1", port, identifier="") as client:
        await client.subscribe(topic_filter, qos=1)
        try:
            async with asyncio.timeout(RETAINED_WAIT):
                async for message in client.messages:
                    if message.retain and message.payload:
                        assert isinstance(message.payload, bytes)
                        found[message.topic.value] = json.loads(message.payload)
        except TimeoutError:
            pass
    return found


async def retained_when(
    port: int, settled: Callable[[dict[str, Any]], bool], timeout: float = 20
) -> dict[str, Any]:
    """The broker's retained messages once ``settled(them)`` holds (polled)."""
    return await eventually(
        lambda: (lambda now: now if settled(now) else None)(asyncio.run(retained(port))),
        "the broker's retained messages",
        timeout,
    )


def config_file(node: NodeProcess, name: str) -> dict[str, Any] | None:
    path = node.data_dir / "config" / f"{name}.json"
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def applied(hub: RunningHub, name: str) -> str:
    """The APPLIED cell of ``edgectl get configs``."""
    lines = ctl(hub, "get", "configs").splitlines()
    header = lines[0].split()
    for line in lines[1:]:
        cells = line.split()
        if cells[0] == name:
            return cells[header.index("APPLIED")]
    return ""


def start_node(fleet: Fleet, hub: RunningHub, port: int, *, site: str) -> NodeProcess:
    token = ctl(hub, "node", "add", "ship-1", "--label", f"site={site}").splitlines()[-1]
    node = fleet.node("ship-1")
    node.configure(hub.link, token, mqtt={"port": port, "keepalive": 5})
    with node.config_path.open("a") as handle:
        handle.write('[[config]]\nname = "local"\ndata = { mode = "eco" }\n')
    node.start()
    node.wait_state("connected", 20)
    return node


def test_a_config_becomes_a_file_and_a_retained_message_and_follows_changes(tmp_path: Path):
    with Fleet(tmp_path) as fleet:
        hub = fleet.hub()
        broker = fleet.broker("a")
        node = start_node(fleet, hub, broker.port, site="north")

        async def story() -> None:
            # [[config]] without the hub's involvement.
            await eventually(lambda: config_file(node, "local") == {"mode": "eco"}, "local")
            hub.apply(CONFIG.format(name="tuning", data='{interval: "5"}', site="north"))
            hub.apply(CONFIG.format(name="south", data='{x: "1"}', site="south"))
            await eventually(lambda: config_file(node, "tuning") == {"interval": "5"}, "file")
            assert config_file(node, "south") is None  # not targeted at this node
            # The file is written before the retained message reaches the broker, and a
            # live (not retained) copy does not count: poll until the broker holds it.
            now = await retained_when(broker.port, lambda m: "$edge/config/tuning" in m)
            assert now["$edge/config/tuning"] == {
                "name": "tuning",
                "generation": 1,
                "data": {"interval": "5"},
            }
            assert now["$edge/config/local"]["data"] == {"mode": "eco"}
            assert "$edge/config/south" not in now
            await eventually(lambda: applied(hub, "tuning") == "1/1", "APPLIED 1/1")
            assert applied(hub, "south") == "0/0"
            # A change changes both, and the hub counts the new generation.
            hub.apply(CONFIG.format(name="tuning", data='{interval: "9"}', site="north"))
            await eventually(lambda: config_file(node, "tuning") == {"interval": "9"}, "change")
            later = await retained_when(
                broker.port, lambda m: m["$edge/config/tuning"]["generation"] == 2
            )
            assert later["$edge/config/tuning"]["data"] == {"interval": "9"}
            await eventually(lambda: applied(hub, "tuning") == "1/1", "APPLIED 1/1 again")
            view = json.loads(ctl(hub, "get", "config", "tuning", "-o", "json"))
            assert view["status"]["nodes"]["ship-1"]["generation"] == 2
            # edgenode status lists the node's Configs with their generation.
            configs = node_status(node)["configs"]
            assert configs["tuning"] == {"generation": 2, "source": "hub", "keys": 1}
            assert configs["local"]["source"] == "local"
            text = node.status().stdout
            assert "tuning@2" in text
            # A delete removes both.
            ctl(hub, "delete", "config", "tuning")
            await eventually(lambda: config_file(node, "tuning") is None, "the file removed")
            await retained_when(broker.port, lambda m: "$edge/config/tuning" not in m)

        asyncio.run(story())


def test_configs_survive_a_node_and_broker_restart_with_the_hub_down(
    tmp_path: Path,
):
    with Fleet(tmp_path) as fleet:
        hub = fleet.hub()
        broker = fleet.broker("a")
        node = start_node(fleet, hub, broker.port, site="north")

        async def story() -> None:
            hub.apply(CONFIG.format(name="tuning", data='{interval: "5"}', site="north"))
            await eventually(lambda: config_file(node, "tuning") is not None, "the file")
            assert hub.stop() == 0
            node.stop()
            # Without persistence the restarted broker has lost every retained message:
            # the node, offline, must publish its Configs again from its own store.
            broker.restart()
            assert await retained(broker.port) == {}
            node.start()
            node.wait_state("disconnected", 20)
            await eventually(
                lambda: (node_status(node).get("device_layer") or {}).get("broker_connected"),
                "the node connected to its broker",
            )
            assert config_file(node, "tuning") == {"interval": "5"}
            now = await eventually(
                lambda: asyncio.run(retained(broker.port)).get("$edge/config/tuning"),
                "the retained Config published again by the restarted node",
            )
            assert now["data"] == {"interval": "5"}

        asyncio.run(story())


def test_a_stale_retained_config_at_the_broker_is_cleared_when_the_node_connects(
    tmp_path: Path,
):
    with Fleet(tmp_path) as fleet:
        broker = fleet.broker("a")

        async def story() -> None:
            async with aiomqtt.Client("127.0.0.1", broker.port) as client:
                await client.publish("$edge/config/gone", b'{"name":"gone"}', qos=1, retain=True)
            assert "$edge/config/gone" in await retained(broker.port)
            node = fleet.node("ship-1")
            node.configure(None, mqtt={"port": broker.port, "keepalive": 5})
            with node.config_path.open("a") as handle:
                handle.write('[[config]]\nname = "kept"\ndata = { a = "1" }\n')
            node.start()
            await eventually(
                lambda: set(asyncio.run(retained(broker.port))) == {"$edge/config/kept"},
                "only the node's own Config retained",
            )

        asyncio.run(story())

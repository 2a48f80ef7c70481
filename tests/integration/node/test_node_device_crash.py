"""No device message the broker considers delivered is lost when the node is SIGKILLed.

A real Mosquitto, a real ``edgenode run`` (standalone, three ``[[device]]`` entries) and
three devices (aiomqtt clients) publishing a numbered QoS 1 stream of telemetry, with a
numbered twin report every few messages. The node is SIGKILLed mid-stream several times
and restarted; the devices keep publishing throughout (the broker queues for the node's
persistent session). In the end every numbered telemetry message the broker acknowledged
to a device is in the node's outbox at least once, and every device's twin (in the store
and in the newest ``twin`` record of the outbox) holds its last report.

This holds because the node sends the PUBACK of a device's message only after the twin
save and the outbox append it caused were committed (docs/device-api.md, "Delivery"):
whatever it had not acknowledged, the broker delivers again after the restart.
"""

from __future__ import annotations

import asyncio
import json
import random
import signal
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from integration.devices.mqtt_broker import Broker, device_client, free_port
from node.conftest import NodeProcess
from node.test_node_devices import configure, outbox, served

pytestmark = pytest.mark.timeout(120)

DEVICES = ["d0", "d1", "d2"]
KILLS = 3
CHUNK = 10
"""Messages a device publishes back to back before pausing CHUNK_PAUSE seconds (a
bounded rate, so the node keeps up between kills on a loaded machine)."""
CHUNK_PAUSE = 0.01
REPORT_EVERY = 7
"""Every REPORT_EVERY-th message of a device is also a twin report of its number."""
KILL_AFTER = (0.0, 0.2)
"""Seconds the node runs after its first outbox append of a run before each SIGKILL."""
DOWNTIME = 0.3
"""Seconds the node stays dead (the broker queues the stream for it meanwhile)."""
POLL = 0.01
MIN_MESSAGES = 100
"""Each device publishes at least this many after the last restart too."""
DRAIN_TIMEOUT = 60.0
SCENARIO_TIMEOUT = 100.0


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Broker]:
    directory = tmp_path / "broker"
    directory.mkdir()
    # No cap on what the broker queues for the node's session while it restarts
    # (Mosquitto's default, 1000, would drop on purpose, which is not what is tested).
    started = Broker(directory, free_port(), extra=["max_queued_messages 0"])
    started.start()
    yield started
    started.stop()


def telemetry_numbers(node: NodeProcess) -> dict[str, set[int]]:
    found: dict[str, set[int]] = {name: set() for name in DEVICES}
    for _, record in outbox(node):
        if record["kind"] == "telemetry":
            body = record["body"]
            found[body["device"]].add(int(body["payload"]))
    return found


def stored_twin(node: NodeProcess, device: str) -> dict[str, Any]:
    db = sqlite3.connect(f"file:{node.data_dir / 'node.db'}?mode=ro", uri=True, timeout=5)
    try:
        (doc,) = db.execute("SELECT doc FROM twins WHERE device = ?", (device,)).fetchone()
    finally:
        db.close()
    return json.loads(doc)


def test_sigkill_mid_stream_loses_no_qos1_message_the_broker_delivered(node, broker):
    configure(node, broker, None, devices=[{"name": name} for name in DEVICES])
    node.start()
    served(node, DEVICES)
    sent: dict[str, list[int]] = {name: [] for name in DEVICES}
    last_report: dict[str, int] = {}
    stop = asyncio.Event()
    outbox_at_kill: list[int] = []

    async def publish(name: str) -> None:
        async with device_client(
            broker.port, name, subscribe=f"$edge/devices/{name}/rejected"
        ) as device:
            number = 0
            after_stop = 0
            while after_stop < MIN_MESSAGES:
                # Awaited: the broker has PUBACKed it, so it must reach the node.
                await device.publish("telemetry/seq", str(number).encode())
                sent[name].append(number)
                if number % REPORT_EVERY == 0:
                    await device.publish("twin/update", {"reported": {"seq": number}})
                    last_report[name] = number
                number += 1
                if stop.is_set():
                    after_stop += 1
                if number % CHUNK == 0:
                    await asyncio.sleep(CHUNK_PAUSE)
            assert device.inbox == [], "the node rejected something"

    async def kill_and_restart() -> None:
        rng = random.Random(4)
        for _ in range(KILLS):
            # Kill while the node works through a backlog: right after it (re)connected
            # and began appending what the broker queued for it meanwhile.
            before = len(outbox(node))
            while len(outbox(node)) == before:
                await asyncio.sleep(POLL)
            await asyncio.sleep(rng.uniform(*KILL_AFTER))
            outbox_at_kill.append(len(outbox(node)))
            assert node.signal(signal.SIGKILL) == -signal.SIGKILL
            await asyncio.sleep(DOWNTIME)
            node.start()
        await asyncio.to_thread(served, node, DEVICES)
        stop.set()

    async def scenario() -> None:
        await asyncio.gather(*(publish(name) for name in DEVICES), kill_and_restart())

    asyncio.run(asyncio.wait_for(scenario(), SCENARIO_TIMEOUT))

    # The node was consuming the stream each time it was killed.
    assert outbox_at_kill == sorted(outbox_at_kill)
    assert outbox_at_kill[0] > 0
    assert len(set(outbox_at_kill)) == KILLS

    def all_there() -> bool:
        found = telemetry_numbers(node)
        return all(found[name] >= set(sent[name]) for name in DEVICES)

    async def drained() -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + DRAIN_TIMEOUT
        while not all_there() and loop.time() < deadline:
            await asyncio.sleep(0.2)

    asyncio.run(drained())
    found = telemetry_numbers(node)
    for name in DEVICES:
        missing = sorted(set(sent[name]) - found[name])
        assert missing == [], f"{name}: {len(missing)} of {len(sent[name])} lost: {missing[:20]}"
        assert found[name] == set(sent[name])  # and nothing that was never sent

    twins = [record["body"] for _, record in outbox(node) if record["kind"] == "twin"]
    for name in DEVICES:
        doc = stored_twin(node, name)
        assert doc["reported"] == {"seq": last_report[name]}
        newest = [body for body in twins if body["device"] == name][-1]
        assert newest["reported"] == {"seq": last_report[name]}
        assert newest["version"] == doc["version"]["reported"]
    log = node.log()
    assert "Traceback" not in log

"""A QoS 1 burst while the node is connected: with the broker settings edgenode ships
(deploy/mosquitto/edgenode.conf) every message reaches the node's outbox; with limits too
small for the burst the broker drops some — after acknowledging them to the publisher —
and the node reports the drops (``edgenode status``, its metrics) instead of losing them
silently. Real ``edgenode run``, real Mosquitto, a paho publisher."""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho
import pytest

from integration.devices.mqtt_broker import Broker, free_port
from node.conftest import NodeProcess
from node.fakehub import wait_for

pytestmark = pytest.mark.timeout(120)

BURST = 5000
TOPIC = "$edge/devices/meter/telemetry/n"


def flood(port: int, count: int) -> float:
    """Publish ``count`` QoS 1 messages as fast as the broker acknowledges them; the
    seconds it took until the last PUBACK."""
    client = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id="flood")
    client.max_inflight_messages_set(1000)
    client.max_queued_messages_set(0)
    acked = threading.Event()
    done = [0]

    def on_publish(*_: object) -> None:
        done[0] += 1
        if done[0] == count:
            acked.set()

    client.on_publish = on_publish
    client.connect("127.0.0.1", port)
    client.loop_start()
    try:
        start = time.monotonic()
        for index in range(count):
            client.publish(TOPIC, str(index).encode(), qos=1)
        assert acked.wait(60), f"only {done[0]} of {count} PUBACKs"
        return time.monotonic() - start
    finally:
        client.loop_stop()
        client.disconnect()


def telemetry_in_outbox(node: NodeProcess) -> int:
    try:
        db = sqlite3.connect(f"file:{node.data_dir / 'node.db'}?mode=ro", uri=True, timeout=5)
    except sqlite3.Error:
        return 0
    try:
        return int(
            db.execute(
                "SELECT count(*) FROM outbox WHERE CAST(payload AS TEXT) LIKE ?",
                ('%"kind":"telemetry"%',),
            ).fetchone()[0]
        )
    except sqlite3.Error:
        return 0
    finally:
        db.close()


@pytest.fixture
def make_broker(tmp_path: Path) -> Iterator[type[Broker]]:
    started: list[Broker] = []

    def make(*extra: str) -> Broker:
        directory = tmp_path / f"broker{len(started)}"
        directory.mkdir()
        broker = Broker(directory, free_port(), extra=["sys_interval 1", *extra])
        started.append(broker)
        broker.start()
        return broker

    yield make  # type: ignore[misc]
    for broker in started:
        broker.stop()


def device_layer(node: NodeProcess) -> dict[str, Any]:
    """``edgenode status --json``'s device layer ({} until the daemon made its store)."""
    result = node.status("--json")
    return (json.loads(result.stdout).get("device_layer") if result.stdout else None) or {}


def start_node(node: NodeProcess, broker: Broker) -> None:
    node.configure(None, mqtt={"port": broker.port, "keepalive": 5})
    with node.config_path.open("a") as handle:
        handle.write('[[device]]\nname = "meter"\n')
    node.start()
    wait_for(
        lambda: device_layer(node).get("broker_connected"),
        20,
        "the node connected to its broker",
    )


def test_a_burst_reaches_the_node_whole_with_the_shipped_broker_settings(node, make_broker):
    broker = make_broker()
    start_node(node, broker)
    flood(broker.port, BURST)
    wait_for(lambda: telemetry_in_outbox(node) == BURST, 60, f"{BURST} records in the outbox")
    time.sleep(1.5)  # one more $SYS interval: a drop would be counted by now
    layer = device_layer(node)
    assert layer["broker_dropped"] == 0
    assert layer["broker_dropped_total"] == 0


def test_drops_inside_a_broker_with_small_limits_are_reported_not_silent(node, make_broker):
    broker = make_broker("max_queued_messages 50")
    start_node(node, broker)
    flood(broker.port, BURST)
    # Everything the publisher was told was delivered ends up either in the outbox or
    # counted as dropped by the broker (seen by the node within a $SYS interval or two).
    layer = wait_for(
        lambda: (
            (layer := device_layer(node)).get("broker_dropped")
            and telemetry_in_outbox(node) + layer["broker_dropped"] >= BURST
            and layer
        ),
        20,
        "the node reporting the broker's drops",
    )
    assert 0 < telemetry_in_outbox(node) < BURST
    text = node.status().stdout
    assert f"THE BROKER DROPPED {layer['broker_dropped']} messages" in text
    assert "the MQTT broker dropped" in node.log()

"""The foundation demo: a hub and a node talking the sync protocol in one process.

Until the node daemon and the hub exist as programs, this shows the parts they stand
on, for real: the sans-I/O protocol (node and hub state machines joined by an in-memory
pipe), the node's SQLite store (a real file in ``demo-data/``), the twin engine and the
topic router, on the backend this machine chose. It persists desired state before
acknowledging it, queues reports in the outbox while the link is down, survives a
restart of the node's store, and delivers everything once the link is back.
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import edgenode
from edgenode import twin
from edgenode.cli import version_text
from edgenode.protocol import (
    ChangesReceived,
    Delete,
    HubProtocol,
    NodeProtocol,
    RevisionAcked,
    UplinkAcked,
    UplinkReceived,
    UplinkRecord,
    Upsert,
)
from edgenode.router import TopicRouter
from edgenode.store import Store

DATA = Path("demo-data")


def say(text: str) -> None:
    print(f"\n\033[1m== {text}\033[0m")


def show(label: str, value: object) -> None:
    rendered = value if isinstance(value, str) else json.dumps(value, sort_keys=True)
    print(f"   {label:<28} {rendered}")


def pump(node: NodeProtocol, hub: HubProtocol, now: float) -> tuple[list[object], list[object]]:
    """Deliver messages both ways until both sides are quiet; return their events."""
    node_events: list[object] = []
    hub_events: list[object] = []
    while True:
        to_hub, to_node = node.data_to_send(), hub.data_to_send()
        if not to_hub and not to_node:
            return node_events, hub_events
        for message in to_hub:
            hub.receive_message(message, now)
        for message in to_node:
            node.receive_message(message, now)
        node_events.extend(node.events_received())
        hub_events.extend(hub.events_received())


def connect(store: Store, now: float) -> tuple[NodeProtocol, HubProtocol]:
    node = NodeProtocol("ship-7", f"edgenode {edgenode.__version__}", store.applied_revision(), now)
    hub = HubProtocol(now)
    pump(node, hub, now)
    hub.accept(hub_revision=3, now=now)
    pump(node, hub, now)
    show("node says it has revision", store.applied_revision())
    return node, hub


def main() -> int:
    print(version_text())
    shutil.rmtree(DATA, ignore_errors=True)
    DATA.mkdir()
    store = Store(str(DATA / "node.db"))

    say("1. the node connects and receives desired state; it persists, then acks")
    node, hub = connect(store, now=0.0)
    desired = {"target_temp": 21.5, "fan": {"mode": "auto", "speed": 2}}
    hub.send_changes(
        [
            Upsert("Device/thermostat-1", 1, json.dumps({"desired": desired}).encode()),
            Upsert("Config/site", 2, b'{"data": {"units": "metric"}}'),
            Delete("Config/old", 3),
        ],
        revision=3,
    )
    node_events, _ = pump(node, hub, 0.1)
    for event in node_events:
        if isinstance(event, ChangesReceived):
            store.apply_changes(
                [
                    (c.key, c.revision, c.body if isinstance(c.body, bytes) else None)
                    if isinstance(c, Upsert)
                    else (c.key, c.revision, None)
                    for c in event.changes
                ],
                event.revision,
            )
            node.ack(event.revision)
    _, hub_events = pump(node, hub, 0.2)
    show("persisted revision", store.applied_revision())
    show("hub saw acks", [e.revision for e in hub_events if isinstance(e, RevisionAcked)])

    say("2. the device reports; the twin engine computes the delta it still owes")
    reported = {"temperature": 19.0, "target_temp": 18.0, "fan": {"mode": "auto", "speed": 1}}
    show("desired", desired)
    show("reported", reported)
    show("delta", twin.delta(desired, reported))
    reported = twin.merge_patch(reported, {"target_temp": 21.5, "fan": {"speed": 2}})
    show("after the device applied it", twin.delta(desired, reported))

    say("3. telemetry is routed by MQTT filters; the link is down, so it queues")
    router = TopicRouter()
    router.add("$edge/devices/+/telemetry/#", 1)
    router.add("$edge/devices/thermostat-1/#", 2)
    topics = ["$edge/devices/thermostat-1/telemetry/temp", "$edge/devices/meter-1/state"]
    for topic, targets in zip(topics, router.match_many(topics), strict=True):
        show(topic, f"-> handlers {targets}")
    for reading in range(5):
        store.append(json.dumps({"temp": 19.0 + reading / 2}).encode(), priority=5)
    store.append(b'{"alarm": "door open"}', priority=0)
    show("outbox while offline", store.outbox_stats())

    say("4. the node restarts while offline: everything is still there")
    store.close()
    store = Store(str(DATA / "node.db"))
    show("applied revision", store.applied_revision())
    show("outbox messages", store.outbox_stats()["messages"])
    show("cached resources", [key for key, _, _ in store.list_resources()])

    say("5. the link is back: the node resumes from its revision and drains the outbox")
    node, hub = connect(store, now=10.0)
    received: list[int] = []
    while records := store.peek(100):
        sent = node.send_uplink(
            [UplinkRecord(seq, prio, payload) for seq, prio, payload in records]
        )
        _, hub_events = pump(node, hub, 10.1)
        sequences = [
            r.sequence for e in hub_events if isinstance(e, UplinkReceived) for r in e.records
        ]
        received.extend(sequences)
        hub.ack_uplink(sequences)  # the hub persists, then acks
        node_events, _ = pump(node, hub, 10.2)
        for event in node_events:
            if isinstance(event, UplinkAcked):
                store.ack(list(event.sequences))
        if sent == 0:
            break
    show("hub received sequences (alarm first)", received)
    show("outbox after acks", store.outbox_stats()["messages"])
    store.close()
    print(f"\nbackend: {edgenode.backend}; the node's database is {DATA / 'node.db'}")
    print("next: ./scripts/test.sh runs every test; ./scripts/bench.sh measures the core")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Uplink through the outbox: SIGKILL during a stream loses nothing the outbox accepted."""

from __future__ import annotations

import json
import signal
import sqlite3
import sys
import time
from pathlib import Path

from edgenode.node.link import ACK_FLUSH_SECONDS
from node.fakehub import FakeHub, wait_for

PRODUCER = str(Path(__file__).with_name("producer.py"))


def accepted_sequences(stdout: bytes) -> list[int]:
    return [
        int(line.split()[1])
        for line in stdout.decode().splitlines()
        if line.startswith("accepted ")
    ]


def telemetry(hub: FakeHub) -> dict[int, dict]:
    records = {seq: json.loads(payload) for seq, payload in hub.payloads("ship-7").items()}
    return {seq: r for seq, r in records.items() if r["kind"] == "telemetry"}


def rows_in_file(node) -> int:
    """Outbox rows in the node's database file, as another reader sees them."""
    db = sqlite3.connect(f"file:{node.data_dir / 'node.db'}?mode=ro", uri=True, timeout=5)
    try:
        return int(db.execute("SELECT count(*) FROM outbox").fetchone()[0])
    finally:
        db.close()


def test_acknowledged_records_leave_the_file_without_a_commit_of_their_own(hub: FakeHub, node):
    """Acks are deleted by the next commit or ACK_FLUSH_SECONDS after the last ack; the
    node's status stops counting them at once."""
    node.configure(hub.url)
    node.start(args=[sys.executable, PRODUCER, str(node.config_path), "60", "--quiet"])
    wait_for(lambda: len(telemetry(hub)) == 60, 20, "all 60 records at the hub")
    wait_for(lambda: node.status_json()["outbox"]["messages"] == 0, 10, "status: none waiting")
    acked_at = time.monotonic()
    wait_for(lambda: rows_in_file(node) == 0, ACK_FLUSH_SECONDS + 10, "the rows deleted")
    assert time.monotonic() - acked_at <= ACK_FLUSH_SECONDS + 10
    assert len(hub.wire) == len(set(hub.wire))  # nothing sent twice meanwhile


def test_sigkill_during_an_uplink_stream_loses_and_duplicates_nothing(hub: FakeHub, node):
    hub.window_records = 200
    node.configure(hub.url)
    proc = node.start(args=[sys.executable, PRODUCER, str(node.config_path), "100000"])
    wait_for(lambda: len(telemetry(hub)) > 300, 20, "uplink to start flowing")
    # The hub stops acknowledging (it persists but its acks are "lost"): the records in
    # flight at the kill are in the hub and still in the node's outbox, and once the
    # window is full the rest wait in the outbox, never sent.
    hub.ack_uplink = False
    wait_for(
        lambda: node.status_json()["outbox"]["messages"] > 600, 20, "a queue behind the window"
    )
    proc.send_signal(signal.SIGKILL)
    proc.wait(10)
    assert proc.stdout is not None
    accepted = accepted_sequences(proc.stdout.read())
    assert len(accepted) > 300
    delivered_before_restart = len(telemetry(hub))
    assert len(accepted) > delivered_before_restart  # some were never sent before the kill

    # Restart as a plain `edgenode run`: it must drain the outbox it finds.
    hub.ack_uplink = True
    node.start()
    wait_for(lambda: set(accepted) <= set(telemetry(hub)), 30, "every accepted record at the hub")
    wait_for(lambda: node.status_json()["outbox"]["messages"] == 0, 30, "an empty outbox")
    stored = telemetry(hub)
    # Sequence numbers are unique and increasing; the body says which record it was.
    assert sorted(stored) == sorted(set(stored))
    indexes = [stored[seq]["body"]["i"] for seq in sorted(stored)]
    assert indexes == sorted(indexes)
    assert indexes == list(range(len(indexes)))  # no gaps among what reached the hub
    duplicates = len(hub.wire) - len(set(hub.wire))
    print(
        f"accepted={len(accepted)} delivered_before_kill={delivered_before_restart} "
        f"stored={len(stored)} duplicates_on_wire={duplicates}"
    )
    assert duplicates > 0  # resent after the crash, dropped by the hub by (node, seq)


def test_the_outbox_keeps_records_while_the_hub_is_away_and_sends_them_later(hub: FakeHub, node):
    node.configure(hub.url, status={"interval": 0.1, "persist_interval": 0.15})
    hub.stop()
    node.start()
    wait_for(lambda: "hub unreachable" in node.log(), 10, "a failed attempt")
    time.sleep(0.5)
    status = node.status_json()
    # Offline, the newest status is stored every persist_interval, coalesced: however
    # long the outage, one status record waits.
    assert status["outbox"]["messages"] == 1
    assert status["outbox"]["coalesced"] >= 2
    hub.start()
    wait_for(lambda: hub.payloads("ship-7"), 10, "the status record at the hub")
    record = json.loads(next(iter(hub.payloads("ship-7").values())))
    assert record["kind"] == "status"
    body = record["body"]
    for key in (
        "cpu_percent",
        "memory",
        "disk",
        "load",
        "uptime",
        "outbox",
        "version",
        "backend",
        "arch",
        "temperatures",
    ):
        assert key in body
    assert body["disk"]["total"] > 0


def test_records_in_flight_when_the_link_drops_are_reported_in_doubt(hub: FakeHub, node):
    """Their acks may be lost with the connection: status says how many such records a
    drop by the quota or a TTL could count dropped though the hub has them."""
    node.configure(hub.url)
    hub.ack_uplink = False  # the hub stores, its acks never come
    node.start(args=[sys.executable, PRODUCER, str(node.config_path), "25", "--quiet"])
    wait_for(lambda: len(telemetry(hub)) == 25, 20, "all 25 records at the hub")
    assert node.status_json()["hub"]["uplink_in_doubt"] == 0
    hub.stop()
    node.wait_state("disconnected", 20)
    # The 25 and any other stored record then unacknowledged (samples are not counted).
    assert 25 <= node.status_json()["hub"]["uplink_in_doubt"] <= 30
    # After the reconnect they are sent again, acked (the hub drops the duplicates) and
    # deleted; the count stays (it bounds, it does not track).
    hub.ack_uplink = True
    hub.start()
    wait_for(lambda: node.status_json()["outbox"]["messages"] == 0, 20, "the outbox drained")
    assert len(telemetry(hub)) == 25

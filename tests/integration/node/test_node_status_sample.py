"""Node status is a sample, not a record (issue 15, docs/store.md "Durability"): while
connected it goes to the hub with no write to the node's disk; while the hub is away only
the newest is kept, stored at most every ``[status] persist_interval`` and at a clean stop."""

from __future__ import annotations

import json
import os
import sqlite3
import time
from pathlib import Path

from node.conftest import NodeProcess
from node.fakehub import FakeHub, wait_for


def statuses(hub: FakeHub) -> dict[int, dict]:
    records = {seq: json.loads(payload) for seq, payload in hub.payloads("ship-7").items()}
    return {seq: r for seq, r in records.items() if r["kind"] == "status"}


def disk_state(data_dir: Path) -> list[tuple[str, int, int]]:
    """(name, size, mtime_ns) of the store's files: any write changes one of them."""
    found = []
    for name in ("node.db", "node.db-wal"):
        stat = os.stat(data_dir / name)
        found.append((name, stat.st_size, stat.st_mtime_ns))
    return found


def stored_statuses(data_dir: Path) -> list[dict]:
    db = sqlite3.connect(f"file:{data_dir / 'node.db'}?mode=ro", uri=True, timeout=5)
    try:
        rows = db.execute(
            "SELECT payload FROM outbox WHERE coalesce_key = 'node-status' ORDER BY seq"
        ).fetchall()
    finally:
        db.close()
    return [json.loads(payload) for (payload,) in rows]


def test_while_connected_status_reaches_the_hub_without_a_disk_write(
    hub: FakeHub, node: NodeProcess
):
    node.configure(hub.url, status={"interval": 0.1})
    node.start()
    node.wait_state("connected")
    # The status stored at start (the link was not up yet) is delivered and deleted.
    wait_for(lambda: statuses(hub) and not stored_statuses(node.data_dir), 10, "status at hub")
    before = disk_state(node.data_dir)
    seen = len(statuses(hub))
    wait_for(lambda: len(statuses(hub)) >= seen + 10, 10, "ten more status samples")
    assert disk_state(node.data_dir) == before  # nothing written, not even an ack's delete
    got = statuses(hub)
    # Each sample has its own sequence number (the hub acks them like any record) ...
    assert len(got) == len(set(got))
    uptimes = [got[seq]["body"]["process_uptime"] for seq in sorted(got)]
    assert uptimes == sorted(uptimes)  # ... in the order they were taken
    assert node.status_json()["outbox"]["messages"] == 0


def test_offline_only_the_newest_status_is_stored_at_most_every_persist_interval(
    hub: FakeHub, node: NodeProcess
):
    node.configure(hub.url, status={"interval": 0.05, "persist_interval": 1.0})
    hub.stop()
    node.start()
    wait_for(lambda: "hub unreachable" in node.log(), 10, "a failed attempt")
    wait_for(lambda: stored_statuses(node.data_dir), 10, "a stored status")
    began = time.monotonic()
    time.sleep(2.5)
    elapsed = time.monotonic() - began
    outbox = node.status_json()["outbox"]
    assert outbox["messages"] == 1  # only the newest waits
    # ~50 samples were taken; at most one store per persist_interval replaced the last.
    assert 1 <= outbox["coalesced"] <= elapsed / 1.0 + 1
    node.stop()
    assert node.proc is not None
    assert node.proc.returncode == 0
    # A clean stop stores the newest sample: taken within a sample interval of the stop.
    (last,) = stored_statuses(node.data_dir)
    assert last["body"]["process_uptime"] >= elapsed
    hub.start()
    node.start()
    wait_for(
        lambda: any(r["body"]["process_uptime"] >= elapsed for r in statuses(hub).values()),
        10,
        "the stored status at the hub after the restart",
    )

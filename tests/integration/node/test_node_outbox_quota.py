"""A full outbox drops by priority (issue 15): least urgent and oldest first, counted per
priority in ``edgenode status`` and the status the node sends; more urgent records are
always taken while less urgent ones remain. Real ``edgenode`` daemons (the producer
service of ``producer.py``) on a real SQLite file, standalone (nothing is sent)."""

from __future__ import annotations

import json
import sqlite3
import sys
from pathlib import Path

from node.conftest import NodeProcess, terminate
from node.fakehub import FakeHub, wait_for

PRODUCER = str(Path(__file__).with_name("producer.py"))
QUOTA = 3000
"""Bytes: about 30 telemetry records."""


def produce(node: NodeProcess, count: int, priority: int) -> list[str]:
    """Run the producer until it accepted ``count`` records; what it printed per record."""
    proc = node.start(
        args=[sys.executable, PRODUCER, str(node.config_path), str(count), f"--priority={priority}"]
    )
    assert proc.stdout is not None
    lines: list[str] = []
    for _ in range(count):
        line = proc.stdout.readline().decode()
        assert line.startswith("accepted "), node.log()
        lines.append(line.split()[1])
    assert terminate(proc) == 0
    return lines


def waiting_by_priority(node: NodeProcess) -> dict[int, int]:
    db = sqlite3.connect(f"file:{node.data_dir / 'node.db'}?mode=ro", uri=True)
    try:
        rows = db.execute(
            "SELECT priority, count(*) FROM outbox WHERE coalesce_key IS NULL GROUP BY priority"
        ).fetchall()
    finally:
        db.close()
    return dict(rows)


def test_a_full_outbox_drops_the_least_urgent_oldest_first_and_counts_per_priority(
    node: NodeProcess,
):
    node.configure(
        None, outbox={"max_bytes": QUOTA}, mqtt={"enabled": False}, apps={"enabled": False}
    )
    low = produce(node, 100, 9)
    assert "None" not in low  # equal priority: the oldest make room
    status = node.status_json()["outbox"]
    dropped = status["dropped_by_priority"]
    waiting = waiting_by_priority(node)
    assert set(waiting) == {9}
    assert dropped["9"]["quota"] + waiting[9] == 100  # every accepted record is accounted
    assert dropped["9"]["expired"] == 0
    assert sum(d["quota"] for d in dropped.values()) == status["dropped_quota"]

    # Urgent records keep coming in while priority-9 records are there to make room.
    urgent = produce(node, waiting[9], 1)
    assert "None" not in urgent
    after = node.status_json()["outbox"]
    waiting = waiting_by_priority(node)
    assert waiting.get(1) == len(urgent)  # none of them was dropped
    assert "1" not in after["dropped_by_priority"]
    assert after["dropped_by_priority"]["9"]["quota"] + waiting.get(9, 0) == 100
    text = node.status().stdout
    assert "by priority 9: " in text

    # Once the priority-9 records are all gone, priority 1 makes room among its own
    # (oldest first) and a priority-9 record is refused, counted.
    more = produce(node, 40, 1)
    assert "None" not in more
    waiting = waiting_by_priority(node)
    assert set(waiting) == {1}
    final = node.status_json()["outbox"]
    assert final["dropped_by_priority"]["9"]["quota"] == 100
    assert final["dropped_by_priority"]["1"]["quota"] + waiting[1] == len(urgent) + len(more)
    rejected = final["rejected"]
    assert produce(node, 1, 9) == ["None"]
    assert node.status_json()["outbox"]["rejected"] > rejected


def test_the_status_sent_to_the_hub_counts_drops_per_priority(hub: FakeHub, node: NodeProcess):
    hub.ack_uplink = False  # everything stays in the outbox: the quota must drop
    node.configure(
        hub.url, outbox={"max_bytes": QUOTA}, status={"interval": 0.1}, mqtt={"enabled": False}
    )
    proc = node.start(
        args=[sys.executable, PRODUCER, str(node.config_path), "100", "--priority=9", "--quiet"]
    )

    def dropped_at_hub() -> dict | None:
        for payload in reversed(list(hub.payloads("ship-7").values())):
            record = json.loads(payload)
            if record["kind"] == "status":
                by_priority = record["body"]["outbox"]["dropped_by_priority"]
                return by_priority if by_priority.get("9", {}).get("quota") else None
        return None

    dropped = wait_for(dropped_at_hub, 20, "a status counting priority-9 drops")
    assert dropped["9"]["expired"] == 0
    terminate(proc)

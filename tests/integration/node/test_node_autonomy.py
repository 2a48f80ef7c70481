"""A node restarted while the hub is unreachable serves exactly the state it had persisted."""

from __future__ import annotations

import json
import signal
import sqlite3

import pytest

from node.fakehub import FakeHub, wait_for

DESIRED = [
    ("Config/default/app", {"mode": "eco", "limits": {"temp": 80}}),
    ("Device/default/pump-1", {"model": "p-100", "desired": {"speed": 3}}),
    ("Route/default/alarms", {"topic": "alarms/#", "priority": 1}),
    ("Config/default/old", {"x": 1}),
]


@pytest.mark.parametrize(
    "stop_signal", [signal.SIGKILL, signal.SIGTERM], ids=["SIGKILL", "SIGTERM"]
)
def test_a_node_restarted_offline_serves_the_same_state_at_once(hub: FakeHub, node, stop_signal):
    node.configure(hub.url)
    node.start()
    node.wait_state("connected")
    hub.publish(DESIRED)
    revision = hub.publish([("Config/default/old", None)])
    wait_for(lambda: hub.acked_revision.get("ship-7") == revision, 10, "the node's ack")
    before = node.status_json()
    assert before["applied_revision"] == revision
    assert before["hub"]["state"] == "connected"
    assert before["daemon"]["running"] is True

    hub.stop()
    code = node.signal(stop_signal)
    assert code == (0 if stop_signal == signal.SIGTERM else -signal.SIGKILL)

    node.start()
    after = node.status_json()  # immediately: no hub, no wait
    assert after["applied_revision"] == revision
    assert after["resources"] == before["resources"]
    assert [r["key"] for r in after["resources"]] == sorted(k for k, _ in DESIRED[:3])
    # The bodies are stored as persisted JSON, exactly as the hub sent them.
    db = sqlite3.connect(f"file:{node.data_dir / 'node.db'}?mode=ro", uri=True)
    rows = dict(db.execute("SELECT key, data FROM resources WHERE data IS NOT NULL"))
    db.close()
    assert json.loads(rows["Config/default/app"]) == DESIRED[0][1]

    wait_for(lambda: "hub unreachable, retrying" in node.log(2), 10, "the retry message")
    wait_for(lambda: node.status_json()["hub"]["state"] == "disconnected", 10, "disconnected")
    status = node.status_json()
    assert status["daemon"]["running"] is True
    assert "connection refused" in status["hub"]["last_error"]
    log = node.log(2)
    assert "ERROR" not in log
    assert "Traceback" not in log
    text = node.status()
    assert text.returncode == 0
    assert f"revision:  {revision} applied" in text.stdout


def test_status_exits_zero_with_the_daemon_stopped_and_says_so(hub: FakeHub, node):
    node.configure(hub.url)
    node.start()
    node.wait_state("connected")
    assert node.signal(signal.SIGTERM) == 0
    assert not (node.data_dir / "edgenode.pid").exists()
    result = node.status()
    assert result.returncode == 0
    assert "daemon:    not running" in result.stdout
    assert "hub:       stopped" in result.stdout


@pytest.mark.parametrize("backend", ["rust", "python"])
def test_a_reconnecting_node_resumes_from_its_revision(hub: FakeHub, node, backend):
    node.configure(hub.url)
    first = hub.publish(DESIRED[:2])
    node.start(env={"EDGENODE_BACKEND": backend})
    wait_for(lambda: hub.acked_revision.get("ship-7") == first, 10, "first ack")
    node.signal(signal.SIGKILL)
    latest = hub.publish([("Config/default/app", {"mode": "turbo"})])
    node.start(env={"EDGENODE_BACKEND": backend})
    assert f"backend {backend}" in node.status().stdout
    wait_for(lambda: hub.acked_revision.get("ship-7") == latest, 10, "second ack")
    assert hub.hellos[-1].last_revision == first

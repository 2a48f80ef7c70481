"""State files, status reading, uplink payloads and sd_notify, without a daemon."""

from __future__ import annotations

import json
import os
import socket

import pytest

from edgenode.node.notify import Notifier
from edgenode.node.state import (
    LinkState,
    daemon_pid,
    format_status,
    read_link_state,
    read_status,
    write_link_state,
    write_pid_file,
)
from edgenode.store import Store
from edgenode.uplink import MAX_UPLINK_PAYLOAD, decode_uplink, encode_uplink


def test_the_link_state_file_is_replaced_atomically(tmp_path):
    write_link_state(tmp_path, LinkState(state="connected", hub_url="ws://h"))
    write_link_state(tmp_path, LinkState(state="disconnected", last_error="boom"))
    assert read_link_state(tmp_path)["state"] == "disconnected"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["link-state.json"]


def test_a_garbled_state_file_reads_as_none(tmp_path):
    (tmp_path / "link-state.json").write_bytes(b"\x00{not json")
    assert read_link_state(tmp_path) is None


def test_a_pid_file_of_a_dead_process_means_not_running(tmp_path):
    (tmp_path / "edgenode.pid").write_text(json.dumps({"pid": 2**22 + 12345}))
    assert daemon_pid(tmp_path) is None
    (tmp_path / "edgenode.pid").write_text("garbage")
    assert daemon_pid(tmp_path) is None


def test_status_reads_the_store_without_writing_it(tmp_path):
    store = Store(str(tmp_path / "node.db"))
    store.apply_changes([("Config/a", 3, b"{}"), ("Config/b", 4, None)], 4)
    store.append(b"x" * 10, 5)
    store.put_twin("dev-1", b"{}")
    store.put_twin("@app-rollout/svc", b"{}")  # the node's own record: not a device
    store.close()
    before = (tmp_path / "node.db").read_bytes()
    write_pid_file(tmp_path)  # this test process stands in for a daemon
    status = read_status(tmp_path, "ship-7", "")
    assert (tmp_path / "node.db").read_bytes() == before
    assert status["applied_revision"] == 4
    assert status["resources"] == [{"key": "Config/a", "revision": 3}]
    assert status["devices"] == 1
    assert status["outbox"]["messages"] == 1
    assert status["outbox"]["bytes"] == 10
    assert status["hub"]["state"] == "standalone"
    assert status["daemon"]["running"] is False or status["daemon"]["pid"] == os.getpid()
    text = format_status(status)
    assert "revision:  4 applied" in text
    assert "Config/a @3" in text


def test_status_without_a_store_says_so(tmp_path):
    status = read_status(tmp_path, "ship-7", "ws://h/v1/connect")
    assert "no store yet" in status["store_error"]
    assert status["hub"]["state"] == "disconnected"
    assert "ERROR" in format_status(status)


def test_uplink_payloads_are_compact_json_with_a_kind():
    payload = encode_uplink("telemetry", {"t": 21.5}, "ship-7", ts=12.0)
    assert payload == b'{"v":1,"kind":"telemetry","node":"ship-7","ts":12.0,"body":{"t":21.5}}'
    assert decode_uplink(payload)["body"] == {"t": 21.5}


@pytest.mark.parametrize(
    ("kind", "body", "message"),
    [
        ("Bad Kind", {}, "uplink kind"),
        ("", {}, "uplink kind"),
        ("status", {"x": float("nan")}, "not JSON"),
        ("status", {"x": object()}, "not JSON"),
        ("status", "y" * MAX_UPLINK_PAYLOAD, "exceeds"),
    ],
)
def test_bad_uplink_records_are_refused(kind, body, message):
    with pytest.raises(ValueError, match=message):
        encode_uplink(kind, body, "n")


def test_decode_refuses_foreign_payloads():
    with pytest.raises(ValueError, match="not an edgenode uplink record"):
        decode_uplink(b"[1, 2]")


def test_notify_sends_datagrams_to_the_socket(tmp_path):
    path = str(tmp_path / "n.sock")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(path)
    sock.settimeout(5)
    notifier = Notifier({"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "2000000"})
    assert notifier.watchdog_interval == 1.0
    assert notifier.ready("ok")
    assert sock.recv(100) == b"READY=1\nSTATUS=ok"
    assert notifier.watchdog()
    assert sock.recv(100) == b"WATCHDOG=1"
    notifier.close()
    sock.close()


def test_notify_is_a_no_op_without_systemd_and_ignores_foreign_watchdogs():
    notifier = Notifier({})
    assert not notifier.enabled
    assert notifier.ready() is False
    assert notifier.watchdog_interval is None
    assert Notifier({"WATCHDOG_USEC": "1000", "WATCHDOG_PID": "1"}).watchdog_interval is None
    gone = Notifier({"NOTIFY_SOCKET": "/nonexistent/socket"})
    assert gone.send("READY=1") is False
    gone.close()

"""systemd notify (a real Unix datagram socket as NOTIFY_SOCKET) and the metrics endpoint."""

from __future__ import annotations

import signal
import socket
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from node.fakehub import FakeHub, wait_for

WATCHDOG_USEC = 100_000


@pytest.fixture
def notify_socket(tmp_path: Path) -> Iterator[tuple[socket.socket, str]]:
    path = str(tmp_path / "notify.sock")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(path)
    sock.settimeout(10)
    yield sock, path
    sock.close()


def receive_until(sock: socket.socket, wanted: str, limit: int = 200) -> list[str]:
    seen: list[str] = []
    for _ in range(limit):
        message = sock.recv(4096).decode()
        seen.append(message)
        if wanted in message.split("\n"):
            return seen
    raise AssertionError(f"{wanted} never arrived: {seen[-5:]}")


def test_the_daemon_notifies_ready_pets_the_watchdog_and_says_stopping(node, notify_socket):
    sock, path = notify_socket
    node.configure(None)
    started = time.monotonic()
    node.start(env={"NOTIFY_SOCKET": path, "WATCHDOG_USEC": str(WATCHDOG_USEC)})
    first = receive_until(sock, "READY=1")
    ready_after = time.monotonic() - started
    assert (node.data_dir / "node.db").exists()  # READY comes after the store is open
    assert len(first) == 1
    watchdog_at = []
    for _ in range(3):
        receive_until(sock, "WATCHDOG=1")
        watchdog_at.append(time.monotonic())
    # Petted at half the watchdog timeout (0.05 s), so three arrive well within 1 s.
    assert watchdog_at[-1] - watchdog_at[0] < 1.0
    node.proc.send_signal(signal.SIGTERM)
    receive_until(sock, "STOPPING=1")
    assert node.proc.wait(10) == 0
    print(f"READY after {ready_after:.3f} s (process start included)")


def test_metrics_are_served_as_prometheus_text(hub: FakeHub, node):
    node.configure(hub.url, metrics={"listen": "127.0.0.1:0"})
    hub.publish([("Config/default/a", {"v": 1})])
    node.start()
    state = node.wait_state("connected")
    address = state["metrics"]
    assert address.startswith("127.0.0.1:")

    def scrape() -> str:
        with urllib.request.urlopen(f"http://{address}/metrics", timeout=5) as response:
            return response.read().decode()

    text = wait_for(lambda: "edgenode_applied_revision 1.0" in (t := scrape()) and t, 10, "metrics")
    assert 'edgenode_link_state{state="connected"} 1.0' in text
    assert "edgenode_outbox_messages" in text
    assert 'edgenode_outbox_dropped{reason="quota"}' in text
    assert "edgenode_link_frames_received_total" in text
    assert "edgenode_link_connect_attempts_total 1.0" in text

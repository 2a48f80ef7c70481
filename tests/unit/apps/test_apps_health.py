"""Health probes for real (a TCP listener, an HTTP server, commands) and the tracker's
rules (ready at the first success, unhealthy at the threshold)."""

from __future__ import annotations

import asyncio
import os
import sys
import time
from pathlib import Path

from edgenode.apps.health import HealthTracker, probe_exec, probe_http, probe_tcp
from edgenode.apps.spec import HealthCheck


def test_tracker_counts_failures_in_a_row():
    tracker = HealthTracker(HealthCheck("tcp", port=1, failure_threshold=2, period=5.0), 0.0)
    assert tracker.due(0.0)
    tracker.start(0.0)
    assert not tracker.due(100.0)  # one at a time
    verdict = tracker.record(False, "refused")
    assert (verdict.ready, verdict.changed, verdict.unhealthy) == (False, False, False)
    assert tracker.due(5.0)
    tracker.start(5.0)
    assert tracker.record(True).changed
    tracker.start(10.0)
    assert not tracker.record(False, "x").unhealthy
    assert tracker.ready
    tracker.start(15.0)
    verdict = tracker.record(False, "y")
    assert verdict.unhealthy
    assert verdict.changed
    assert not verdict.ready


def test_tcp_probe():
    async def scenario():
        server = await asyncio.start_server(lambda r, w: w.close(), "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        up = await probe_tcp(port, 2.0)
        server.close()
        await server.wait_closed()
        down = await probe_tcp(port, 2.0)
        return up, down

    up, down = asyncio.run(scenario())
    assert up == (True, "")
    assert down[0] is False
    assert "127.0.0.1" in down[1]


def test_http_probe_status_codes_and_timeouts():
    async def scenario():
        async def handle(reader, writer):
            line = await reader.readline()
            path = line.split()[1].decode()
            if path == "/slow":
                await reader.read()  # until the probe gives up and closes
            status = {"/ok": "200 OK", "/moved": "302 Found"}.get(path, "503 Unavailable")
            writer.write(f"HTTP/1.1 {status}\r\nContent-Length: 0\r\n\r\n".encode())
            await writer.drain()
            writer.close()

        server = await asyncio.start_server(handle, "127.0.0.1", 0)
        base = f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"
        results = [
            await probe_http(f"{base}/ok", 2.0),
            await probe_http(f"{base}/moved", 2.0),
            await probe_http(f"{base}/down?x=1", 2.0),
            await probe_http(f"{base}/slow", 0.3),
        ]
        server.close()
        return results

    started = time.monotonic()
    ok, moved, down, slow = asyncio.run(scenario())
    assert time.monotonic() - started < 5
    assert ok == (True, "")
    assert moved == (True, "")
    assert down[0] is False
    assert down[1].endswith("HTTP 503")
    assert slow[0] is False
    assert slow[1].endswith("/slow: no answer within 0.3 s")


def test_exec_probe_in_the_work_dir_with_the_env(tmp_path: Path):
    script = "import os, sys; sys.exit(0 if os.environ['X'] == os.getcwd() else 3)"
    env = {"X": str(tmp_path), "PATH": os.environ["PATH"]}

    async def scenario():
        return (
            await probe_exec([sys.executable, "-c", script], tmp_path, env, 5.0),
            await probe_exec(
                [sys.executable, "-c", "print('not yet'); raise SystemExit(1)"], tmp_path, env, 5.0
            ),
            await probe_exec(
                [sys.executable, "-c", "import time; time.sleep(9)"], tmp_path, env, 0.2
            ),
        )

    ok, failed, slow = asyncio.run(scenario())
    assert ok == (True, "")
    assert failed == (False, f"{sys.executable} exited with code 1: not yet")
    assert slow[0] is False
    assert slow[1].endswith("timed out after 0.2 s")

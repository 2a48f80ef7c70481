"""``edgehub serve`` starting and stopping as a newcomer meets it (issue 18): a busy port is
one line naming the address and the flag, with nothing written; a stop is logged and
ends open operator streams at once, whose clients say the hub went away."""

from __future__ import annotations

import queue
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from hub.conftest import RunningHub
from hub.test_edgectl import clean_env, edgectl

START_TIMEOUT = 15.0
QUICK_STOP = 6.0
"""A stop with an open watch takes well under this (the hub's stream grace is 2 s)."""


def serve(data: Path, *flags: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "edgehub.cli", "serve", "--data", str(data), *flags],
        capture_output=True,
        text=True,
        timeout=START_TIMEOUT,
        check=False,
    )


@pytest.fixture
def busy_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield sock.getsockname()[1]


@pytest.mark.parametrize("flag", ["--listen", "--api-listen"])
def test_a_busy_port_is_one_line_naming_the_address_and_the_flag(tmp_path, busy_port, flag):
    other = "--api-listen" if flag == "--listen" else "--listen"
    data = tmp_path / "hub-data"
    result = serve(data, flag, f"127.0.0.1:{busy_port}", other, "127.0.0.1:0")
    assert result.returncode == 1
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith(f"edgehub: cannot listen on 127.0.0.1:{busy_port} ({flag}): ")
    assert "Address already in use" in lines[0]
    assert lines[0].endswith(f"choose another address with {flag}")
    # Nothing written before the ports are bound: no admin token, no database.
    assert not data.exists()
    assert result.stdout == ""


def test_a_bad_address_is_a_usage_error(tmp_path):
    result = serve(tmp_path / "hub-data", "--api-listen", "8080")
    assert result.returncode == 2
    assert "argument --api-listen: expected HOST:PORT, got '8080'" in result.stderr
    assert not (tmp_path / "hub-data").exists()


def test_the_hub_logs_its_stop_and_open_watches_end_saying_so(hub: RunningHub):
    watch = subprocess.Popen(
        edgectl(hub, "watch", "nodes"),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=clean_env(),
    )
    lines: queue.Queue[str] = queue.Queue()

    def pump() -> None:
        assert watch.stdout is not None
        for line in watch.stdout:
            lines.put(line)

    threading.Thread(target=pump, daemon=True).start()
    try:
        hub.node_add("ship-7")
        assert lines.get(timeout=20).split("\t")[1] == "node/ship-7"  # ADDED or MODIFIED
        started = time.monotonic()
        assert hub.stop() == 0  # SIGTERM; killed (-9) if the stop hangs on the watch
        assert time.monotonic() - started < QUICK_STOP
        assert watch.wait(10) == 1
        assert watch.stderr is not None
        error = watch.stderr.read()
        # "closed the connection" (the stream's end) or "lost the connection" (cut mid-chunk)
        assert re.search(rf"edgectl: watch ended: .*the hub at {re.escape(hub.api)}", error), error
    finally:
        watch.kill()
        watch.wait(5)
    log = (hub.data / "hub.log").read_text()
    assert "started at revision 0" in log
    assert "stopping (SIGTERM): closing 0 node links and the operator API" in log
    assert log.rstrip().endswith("edgehub stopped")


def test_sigint_is_logged_too(hub: RunningHub):
    assert hub.stop(signal.SIGINT) == 0
    assert "stopping (SIGINT)" in (hub.data / "hub.log").read_text()

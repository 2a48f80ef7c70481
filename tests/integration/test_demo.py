"""The README's first command (issue 7): ``scripts/demo.sh`` sets up, tells the whole story
with every step checked, can run twice in a row, and leaves nothing running — after the
story (``--exit-after-story``) or when SIGINT/SIGTERM stops it while it stays up.

Every process the demo starts names its data directory on its command line (Mosquitto's
config, ``--data``, ``--config``, ``--state-file``), so "nothing left running" is checked
by looking for that path in every process of the machine.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

ROOT = Path(__file__).resolve().parents[2]
DEMO_SH = ROOT / "scripts" / "demo.sh"
DEMO_PY = ROOT / "scripts" / "demo.py"
STORY_TIMEOUT = 120.0
"""The issue's bound: the story within two minutes after the set-up."""
SETUP_TIMEOUT = 300.0
"""scripts/setup.sh on a machine where everything is already installed (pip checks)."""
STOP_TIMEOUT = 30.0

pytestmark = pytest.mark.timeout(600)

STORY_LINES = [
    "== 1. join two nodes with different labels",
    "$ edgectl node add node-a --label site=north",
    "$ edgectl node add node-b --label site=south",
    "$ edgectl get nodes -o wide",
    "ok: node-a and node-b joined: Ready",
    "$ edgectl apply -f deploy/demo/fleet.yaml",
    "device/thermo-1 created",
    "device/meter-1 created",
    "config/north-tuning created",
    "route/meter-energy created",
    "ok: each node got what targets it: the Config only on site=north, the Route only on "
    "site=south",
    "$ edgectl artifact push deploy/demo/sampler.py",
    "app/sampler created",
    "ok: the App sampler runs on node-a only (site=north), reads north-tuning (comfort_band 0.5)",
    '{"target_temp": 21}: applying',  # after "thermo-1: delta v<its desired version>"
    "$ edgectl twin get thermo-1",
    "$ edgectl twin set thermo-1 target_temp=23",
    "device/thermo-1 desired set (version ",
    '{"target_temp": 23}: applying',
    "$ edgectl telemetry meter-1",
    "== 4. the hub stops: the nodes keep serving their devices and queue reports",
    "ok: node-a answered thermo-1's twin/get from its own store (desired target_temp 23) "
    "with the hub down",
    "ok: sampler keeps running on node-a with the hub down",
    "== 5. the hub starts again: everything queued arrives, nothing is lost",
    "$ edgectl logs app sampler --node node-a --tail 3",
    "ok: thermo-1's reported state at the hub is the device's latest report",
    "source ",
    "edgectl get nodes -o wide",
    "Ctrl-C stops everything the demo started.",
    "demo: every process it started has stopped",
]


def leftovers(data: Path) -> list[str]:
    """Processes (other than this one) whose command line names ``data`` or that run in a
    folder under it (the App: ``python3 sampler.py`` in node-a's apps folder)."""
    found = []
    for proc in psutil.process_iter(["pid", "cmdline", "cwd"]):
        cmdline = " ".join(proc.info["cmdline"] or [])
        named = str(data) in cmdline or (proc.info["cwd"] or "").startswith(str(data))
        if named and proc.info["pid"] != os.getpid():
            found.append(f"{proc.info['pid']}: {cmdline}")
    return found


def ports_of(output: str) -> list[int]:
    """The hub's and the brokers' ports, from the demo's first "ok:" line."""
    match = re.search(
        r"node links on wss://127\.0\.0\.1:(\d+), operator API on https://127\.0\.0\.1:(\d+); "
        r"brokers on ports (\d+) \(node-a\), (\d+) \(node-b\)",
        output,
    )
    assert match, output
    return [int(port) for port in match.groups()]


def free(port: int) -> bool:
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def readme_transcript_lines() -> list[str]:
    """The README's shortened demo output: its step headings and ``edgectl`` commands,
    which must be the demo's own (the README cannot drift from the demo)."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    start = text.index("<!-- demo-transcript: start -->")
    end = text.index("<!-- demo-transcript: end -->")
    return [
        line.strip()
        for line in text[start:end].splitlines()
        if re.match(r"== \d\. |\$ edgectl ", line.strip())
    ]


def test_the_readme_transcript_shows_steps_and_commands():
    lines = readme_transcript_lines()
    assert sum(line.startswith("== ") for line in lines) == 5
    assert sum(line.startswith("$ edgectl") for line in lines) >= 6


def assert_story(result: subprocess.CompletedProcess[str], data: Path) -> None:
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    # The README shows the default data directory; this run's is under tmp_path.
    lines = [line.strip().replace(str(data), "demo-data") for line in result.stdout.splitlines()]
    # Step headings end with the elapsed time ("  [  0.8s]"), which the README leaves out.
    missing = [
        wanted
        for wanted in readme_transcript_lines()
        if not any(line == wanted or line.startswith(wanted + "  [") for line in lines)
    ]
    assert missing == [], f"README transcript lines the demo no longer prints: {missing}"
    position = 0
    for wanted in STORY_LINES:  # in this order
        index = next((i for i in range(position, len(lines)) if wanted in lines[i]), None)
        assert index is not None, f"{wanted!r} missing (after line {position}):\n{result.stdout}"
        position = index + 1
    counted = re.search(
        r"ok: meter-1 had published (\d+) readings \(n = 0\.\.(\d+)\); the hub has each of them "
        r"exactly once: none lost, none twice",
        result.stdout,
    )
    assert counted, result.stdout
    assert int(counted[1]) == int(counted[2]) + 1 > 4
    story = re.search(r"== the story took ([\d.]+)s: every step checked", result.stdout)
    assert story, result.stdout
    assert float(story[1]) < STORY_TIMEOUT
    assert leftovers(data) == []
    assert [port for port in ports_of(result.stdout) if not free(port)] == []
    assert not (data / "demo.pid").exists()
    exported = re.findall(r"^export (\w+)=", (data / "env.sh").read_text(), re.MULTILINE)
    assert sorted(exported) == [
        "EDGECTL_HUB", "EDGECTL_TOKEN", "KUBECONFIG", "PATH", "SSL_CERT_FILE"
    ]  # fmt: skip


def test_the_demo_tells_the_whole_story_twice_in_a_row_and_leaves_nothing_running(tmp_path):
    data = tmp_path / "demo-data"
    first = subprocess.run(
        [str(DEMO_SH), "--exit-after-story", "--data", str(data)],
        capture_output=True,
        text=True,
        timeout=SETUP_TIMEOUT + STORY_TIMEOUT,
        check=False,
    )
    # The set-up shows its progress with elapsed seconds before the story starts.
    assert re.search(r"\[demo +[01]s\]", first.stderr), first.stderr  # $SECONDS may tick
    assert "1/2 set-up" in first.stderr
    assert re.search(r"\[setup +\d+s\].* building edgenode and its Rust extension", first.stderr)
    assert "2/2 the story" in first.stderr
    assert_story(first, data)
    first_token = (data / "hub" / "admin.token").read_text()

    # Again on the same directory (the Python entry demo.sh ends with, the exit asked for
    # through the environment): a fresh story, the previous run's data gone.
    second = subprocess.run(
        [sys.executable, str(DEMO_PY), "--data", str(data)],
        capture_output=True,
        text=True,
        timeout=STORY_TIMEOUT,
        env={**os.environ, "EDGENODE_DEMO_EXIT": "1"},
        check=False,
    )
    assert_story(second, data)
    assert (data / "hub" / "admin.token").read_text() != first_token


def test_a_step_that_cannot_happen_stops_the_demo_with_exit_1_saying_which(tmp_path):
    # No mosquitto_rr on the PATH: step 4 (a device's twin/get with the hub down) cannot run.
    data = tmp_path / "demo-data"
    result = subprocess.run(
        [sys.executable, str(DEMO_PY), "--exit-after-story", "--data", str(data)],
        capture_output=True,
        text=True,
        timeout=STORY_TIMEOUT,
        env={**os.environ, "PATH": str(tmp_path / "empty")},
        check=False,
    )
    assert result.returncode == 1, result.stdout
    assert "== 4. the hub stops" in result.stdout
    assert "demo: FAILED: `mosquitto_rr -h 127.0.0.1" in result.stderr
    assert "mosquitto_rr not found in PATH=" in result.stderr
    assert f"demo: the logs stay in {data}" in result.stderr
    assert "demo: every process it started has stopped" in result.stdout
    assert leftovers(data) == []
    assert (data / "hub.log").exists()


def wait_for_nothing_left(data: Path) -> list[str]:
    """The demo's processes still running after STOP_TIMEOUT (a SIGTERM takes a moment)."""
    deadline = time.monotonic() + STOP_TIMEOUT
    while (left := leftovers(data)) and time.monotonic() < deadline:
        time.sleep(0.2)
    return left


@pytest.mark.parametrize(
    "signum", [signal.SIGINT, signal.SIGTERM, signal.SIGKILL], ids=["SIGINT", "SIGTERM", "SIGKILL"]
)
def test_a_signal_while_the_demo_stays_up_stops_every_process_it_started(tmp_path, signum):
    """SIGINT (Ctrl-C) and SIGTERM: the demo stops everything and exits 0; SIGKILL: its
    processes get SIGTERM from the kernel (parent-death signal) and stop too."""
    data = tmp_path / "demo-data"
    demo = subprocess.Popen(
        [sys.executable, str(DEMO_PY), "--data", str(data)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={k: v for k, v in os.environ.items() if k != "EDGENODE_DEMO_EXIT"},
    )
    try:
        assert demo.stdout is not None
        output: list[str] = []
        deadline = time.monotonic() + STORY_TIMEOUT
        for line in demo.stdout:  # ends when the demo exits (a failed story)
            output.append(line)
            if "Ctrl-C stops everything the demo started." in line:
                break
            assert time.monotonic() < deadline, "".join(output)
        else:
            pytest.fail(f"the demo ended before staying up:\n{''.join(output)}")
        time.sleep(1.0)
        assert demo.poll() is None, "the demo did not stay up"
        running = leftovers(data)
        # 2 brokers, the hub, 2 nodes, 2 devices, the App, the demo
        assert len(running) == 9, running
        # A second demo on the same data directory is refused; the first is untouched.
        second = subprocess.run(
            [sys.executable, str(DEMO_PY), "--exit-after-story", "--data", str(data)],
            capture_output=True,
            text=True,
            timeout=STORY_TIMEOUT,
            check=False,
        )
        assert second.returncode == 1
        assert f"demo: FAILED: a demo is already running on {data} (pid {demo.pid})" in (
            second.stderr
        )
        assert (data / "demo.pid").read_text() == f"{demo.pid}\n"
        assert leftovers(data) == running
        demo.send_signal(signum)
        rest, _ = demo.communicate(timeout=STOP_TIMEOUT)
    finally:
        if demo.poll() is None:
            demo.kill()
            demo.wait()
    text = "".join(output) + rest
    assert wait_for_nothing_left(data) == []
    assert [port for port in ports_of(text) if not free(port)] == []
    if signum == signal.SIGKILL:
        assert demo.returncode == -signal.SIGKILL
        return
    assert demo.returncode == 0, text
    assert f"demo: {signal.Signals(signum).name} received, stopping" in text
    assert "demo: every process it started has stopped" in text

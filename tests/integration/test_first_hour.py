"""A newcomer's first hour (issue 18) with the real programs: ``edgenode run`` and
``edgenode status``/``config check``, ``edgehub serve``, Mosquitto and ``edgectl``.

What a newcomer tripped over: a busy metrics port, log lines without times, a token file
the check did not read, a status complaining about a broker the node does not use,
telemetry with two differently written times, a node's VERSION that changed with a
reconnect, errors that did not say which config file to fix.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from node.conftest import NodeProcess

import edgenode
from hub.conftest import RunningHub
from integration.fleet import Fleet, eventually, node_status

pytestmark = pytest.mark.timeout(120)

ISO_MS = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")
LOG_LINE = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z (DEBUG|INFO|WARNING|ERROR) \S+: ")


def edgenode_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "edgenode", *args],
        capture_output=True,
        text=True,
        timeout=30,
        env={**os.environ, **(env or {})},
        check=False,
    )


def node_row(hub: RunningHub, name: str) -> dict[str, str]:
    """``edgectl get nodes``: the row of ``name``, by column."""
    lines = hub.ctl("get", "nodes").stdout.splitlines()
    header = lines[0]
    starts = [match.start() for match in re.finditer(r"\S+", header)]
    for line in lines[1:]:
        if line.split()[0] == name:
            cells = [line[a:b].strip() for a, b in zip(starts, [*starts[1:], None], strict=True)]
            return dict(zip(header.split(), cells, strict=True))
    return {}


def test_a_busy_metrics_port_is_one_line_naming_the_key_and_the_file(tmp_path):
    node = NodeProcess(tmp_path)
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        address = f"127.0.0.1:{busy.getsockname()[1]}"
        node.configure(None, metrics={"listen": address})
        node.start()
        try:
            node.wait_state("standalone")
            deadline = time.monotonic() + 10
            while "metrics endpoint" not in node.log() and time.monotonic() < deadline:
                time.sleep(0.1)
            assert node.proc is not None
            assert node.proc.poll() is None  # the node keeps running without its metrics
        finally:
            node.stop()
    lines = [line for line in node.log(1).splitlines() if "metrics endpoint" in line]
    assert len(lines) == 1, node.log()
    assert lines[0].endswith(
        f"ERROR edgenode.daemon: metrics endpoint {address} unavailable: Address already in "
        f'use; change [metrics] listen in {node.config_path} (or set it to "" to turn the '
        "endpoint off)"
    )
    assert "Traceback" not in node.log()


def run_until_logged(node: NodeProcess, text: str, env: dict[str, str] | None = None) -> str:
    """Start the node, wait until its log of this run says ``text``, stop it; that log."""
    node.start(env=env)
    deadline = time.monotonic() + 10
    while text not in node.log(node.runs) and time.monotonic() < deadline:
        time.sleep(0.05)
    node.stop()
    return node.log(node.runs)


def test_log_lines_carry_a_utc_timestamp_except_under_journald(tmp_path):
    node = NodeProcess(tmp_path)
    node.configure(None)
    run_until_logged(node, "running standalone")
    lines = [line for line in node.log(1).splitlines() if line]
    assert lines
    assert all(LOG_LINE.match(line) for line in lines), lines
    # systemd names the journal stream it gave the service in JOURNAL_STREAM (device:inode);
    # here the node's stderr is its log file: the same numbers mean "under journald".
    stat = os.stat(node.log_path)
    run_until_logged(node, "running standalone", {"JOURNAL_STREAM": f"{stat.st_dev}:{stat.st_ino}"})
    lines = [line for line in node.log(2).splitlines() if line]
    assert lines
    assert all(re.match(r"^(DEBUG|INFO|WARNING|ERROR) \S+: ", line) for line in lines), lines


def test_config_check_reads_the_token_file(tmp_path):
    node = NodeProcess(tmp_path)
    node.configure("ws://127.0.0.1:1", hub={"token": "", "token_file": "ship-7.token"})
    config = str(node.config_path)
    token = tmp_path / "ship-7.token"
    result = edgenode_cli("config", "check", "--config", config)
    assert result.returncode == 2
    assert result.stderr == (
        f"edgenode: error: {config}: [hub] token_file: cannot read {token}: "
        "No such file or directory\n"
    )
    token.write_text("\n")
    assert (
        f"[hub] token_file: {token} is empty"
        in edgenode_cli("config", "check", "--config", config).stderr
    )
    token.write_text("ent_secret\n")
    result = edgenode_cli("config", "check", "--config", config)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(f"{config}: ok (node ship-7")


def test_errors_about_data_dir_name_the_config_file(tmp_path):
    node = NodeProcess(tmp_path)
    (tmp_path / "a-file").write_text("")
    node.configure(None, node={"data_dir": str(tmp_path / "a-file" / "data")})
    node.start()
    assert node.proc is not None
    assert node.proc.wait(10) == 1
    assert f"ERROR edgenode.daemon: {node.config_path}: [node] data_dir " in node.log()


def test_a_ca_file_that_cannot_be_loaded_names_the_config_file(tmp_path):
    node = NodeProcess(tmp_path)
    bad = tmp_path / "ca.pem"
    bad.write_text("not a certificate\n")
    node.configure("wss://127.0.0.1:1", hub={"ca_file": str(bad), "backoff_cap": 30.0})
    run_until_logged(node, "cannot load")
    assert f"ERROR edgenode.link: {node.config_path}: [hub] ca_file: cannot load {bad}: " in (
        node.log()
    )


def test_status_says_nothing_of_a_broker_when_mqtt_is_off(tmp_path):
    node = NodeProcess(tmp_path)
    # A first run with the device layer on (no broker there) leaves devices.json behind.
    port = socket.socket()
    port.bind(("127.0.0.1", 0))
    closed_port = port.getsockname()[1]
    port.close()
    node.configure(None, mqtt={"port": closed_port})
    with node.config_path.open("a") as config:
        config.write('[[device]]\nname = "lamp"\n')
    node.start()
    node.wait_state("standalone")
    deadline = time.monotonic() + 10
    while "broker" not in node.status().stdout and time.monotonic() < deadline:
        time.sleep(0.1)
    node.stop()
    assert "broker 127.0.0.1:" in node.status().stdout
    text = node.config_path.read_text().replace(f"port = {closed_port}", "enabled = false")
    node.config_path.write_text(text)
    node.start()
    deadline = time.monotonic() + 10
    while "running standalone" not in node.log(node.runs) and time.monotonic() < deadline:
        time.sleep(0.05)
    shown = node.status()
    node.stop()
    assert shown.returncode == 0
    assert "broker" not in shown.stdout
    assert "device layer off ([mqtt] enabled = false)" in shown.stdout
    assert json.loads(node.status("--json").stdout)["device_layer"] is None


def test_telemetry_has_one_iso_timestamp_and_version_stays_across_a_reconnect(tmp_path):
    asyncio.run(_telemetry_and_version(tmp_path))


async def _telemetry_and_version(tmp_path: Path) -> None:
    with Fleet(tmp_path) as fleet:
        hub = fleet.hub()
        broker = fleet.broker("ship-7")
        node = fleet.node("ship-7")
        token = hub.node_add("ship-7")
        assert (
            hub.apply(
                "apiVersion: edgenode.io/v1\nkind: Device\nmetadata: {name: lamp}\n"
                "spec: {node: ship-7}\n"
            )[0]
            == 200
        )
        node.configure(hub.link, token, mqtt={"port": broker.port}, status={"interval": 60.0})
        node.start()
        version = edgenode.__version__
        await eventually(
            lambda: node_row(hub, "ship-7").get("VERSION") == version,
            f"VERSION {version} (the node's status record) at the hub",
        )
        await eventually(
            lambda: "lamp" in (node_status(node).get("device_layer") or {}).get("devices", []),
            "the node serving lamp",
        )
        subprocess.run(
            [
                *("mosquitto_pub", "-h", "127.0.0.1", "-p", str(broker.port), "-q", "1"),
                *("-t", "$edge/devices/lamp/telemetry/temperature", "-m", "21.5"),
            ],
            check=True,
            timeout=10,
        )
        lines = await eventually(
            lambda: hub.ctl("telemetry", "lamp").stdout.splitlines(), "lamp's telemetry at the hub"
        )
        item = json.loads(lines[0])
        assert item["record"]["payload"] == "21.5"
        assert "ts" not in item["record"]
        assert ISO_MS.match(item["record"]["timestamp"]), item
        assert ISO_MS.match(item["received"]), item

        # The hub restarts; the node reconnects (its hello says "edgenode X.Y.Z") and sends
        # no status for a minute: VERSION must read the same as before.
        hub.stop()
        hub.start()
        await eventually(
            lambda: node_row(hub, "ship-7").get("STATUS") == "Ready", "ship-7 Ready again"
        )
        await asyncio.sleep(1.0)  # persisted statuses and acks are written every 0.5 s
        assert node_row(hub, "ship-7")["VERSION"] == version
        log = (hub.data / "hub.log").read_text()
        assert "node ship-7 connected" in log
        assert "node ship-7 disconnected" in log
        assert "edgehub stopped" in log

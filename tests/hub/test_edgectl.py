"""``edgectl`` end to end against a real ``edgehub serve`` subprocess."""

from __future__ import annotations

import asyncio
import json
import os
import queue
import subprocess
import sys
import threading

import yaml
from edgehub.simnode import SimNode

DEVICES = """
apiVersion: edgenode.io/v1
kind: Device
metadata: {name: pump-1, labels: {site: north}}
spec: {node: ship-7, desired: {speed: 10}}
---
apiVersion: edgenode.io/v1
kind: Config
metadata: {name: tuning}
spec: {data: {interval: "5"}, nodeSelector: {fleet: blue}}
---
apiVersion: edgenode.io/v1
kind: Route
metadata: {name: up}
spec: {from: "sensors/#", to: upstream, priority: 7, ttl: 3600}
"""


def test_node_add_prints_the_join_token_alone_on_the_last_line_and_it_works(hub):
    result = hub.ctl("node", "add", "ship-7", "--label", "fleet=blue", "--label", "zone=a")
    assert result.returncode == 0, result.stderr
    token = result.stdout.splitlines()[-1]
    assert token.startswith("ent_")
    assert len(token) >= 4 + 43  # 256 bits in URL-safe base64
    assert token not in hub.ctl("get", "node", "ship-7", "-o", "json").stdout

    async def join() -> int:
        node = SimNode(hub.link, token, "ship-7")
        task = asyncio.create_task(node.run_once())
        await node.wait_until(lambda: node.revision >= 1)
        task.cancel()
        return node.revision

    assert asyncio.run(join()) == 1
    again = hub.ctl("node", "add", "ship-7")
    assert again.returncode == 1
    assert "already has a token" in again.stderr
    revoked = hub.ctl("node", "revoke", "ship-7")
    assert revoked.returncode == 0
    assert "revoked (1 token(s))" in revoked.stdout


def test_apply_get_describe_and_delete(hub, tmp_path):
    hub.ctl("node", "add", "ship-7", "--label", "fleet=blue")
    path = tmp_path / "fleet.yaml"
    path.write_text(DEVICES)
    result = hub.ctl("apply", "-f", str(path))
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [
        "device/pump-1 created",
        "config/tuning created",
        "route/up created",
    ]
    assert hub.ctl("apply", "-f", "-", stdin=DEVICES).stdout.splitlines()[0] == (
        "device/pump-1 unchanged"
    )
    nodes = hub.ctl("get", "nodes").stdout.splitlines()
    assert nodes[0].split() == [
        "NAME",
        "STATUS",
        "REVISION",
        "LAG",
        "OUTBOX",
        "VERSION",
        "ARCH",
        "AGE",
    ]
    assert nodes[1].split()[:2] == ["ship-7", "NotReady"]
    # Columns are aligned: every row starts its second column at the same offset.
    assert nodes[0].index("STATUS") == nodes[1].index("NotReady")
    wide = hub.ctl("get", "NODE", "-o", "wide").stdout
    assert "fleet=blue" in wide
    devices = hub.ctl("get", "Devices", "-l", "site=north").stdout
    assert "pump-1" in devices
    assert hub.ctl("get", "devices", "-l", "site=south").stderr.strip() == "No devices found."
    as_json = json.loads(hub.ctl("get", "device", "pump-1", "-o", "json").stdout)
    assert as_json["spec"]["desired"] == {"speed": 10}
    as_yaml = yaml.safe_load(hub.ctl("get", "routes", "-o", "yaml").stdout)
    assert as_yaml["items"][0]["spec"]["priority"] == 7
    described = yaml.safe_load(hub.ctl("describe", "config", "tuning").stdout)
    assert described["spec"]["data"] == {"interval": "5"}
    deleted = hub.ctl("delete", "route", "up")
    assert deleted.stdout.strip() == "route/up deleted"
    missing = hub.ctl("delete", "route", "up")
    assert missing.returncode == 1
    assert "404" in missing.stderr


def test_apply_errors_name_the_file_the_document_index_and_the_field(hub, tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text(DEVICES.replace("priority: 7", "priority: 12"))
    result = hub.ctl("apply", "-f", str(path))
    assert result.returncode == 1
    assert f"{path}: 422: document 2: spec.priority: must be in [0, 9]" in result.stderr
    result = hub.ctl("apply", "-f", str(tmp_path / "missing.yaml"))
    assert result.returncode == 1
    assert "missing.yaml" in result.stderr
    assert hub.ctl("get", "pods").returncode == 1


def test_twin_set_parses_json_values_and_twin_get_shows_the_delta(hub):
    hub.ctl("node", "add", "ship-7")
    hub.ctl("apply", "-f", "-", stdin=DEVICES)
    result = hub.ctl("twin", "set", "pump-1", "speed=20", "mode=eco", "limits.max=[1,2]", "on=true")
    assert result.returncode == 0, result.stderr
    twin = json.loads(hub.ctl("twin", "get", "pump-1").stdout)
    assert result.stdout == f"device/pump-1 desired set (version {twin['versions']['desired']})\n"
    assert twin["desired"] == {"speed": 20, "mode": "eco", "limits": {"max": [1, 2]}, "on": True}
    assert twin["delta"] == twin["desired"]
    unset = hub.ctl("twin", "set", "pump-1", "mode=null")
    assert unset.returncode == 0
    assert "mode" not in json.loads(hub.ctl("twin", "get", "pump-1").stdout)["desired"]
    assert hub.ctl("twin", "set", "ghost", "a=1").returncode == 1


def test_the_hub_and_token_come_from_the_environment_or_the_config_file(hub, tmp_path):
    base = {k: v for k, v in os.environ.items() if not k.startswith("EDGECTL_")}
    env = {**base, "HOME": str(tmp_path), "EDGECTL_HUB": hub.api, "EDGECTL_TOKEN": hub.token}
    cmd = [sys.executable, "-m", "edgehub.edgectl", "get", "nodes"]
    result = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=30, check=False)
    assert result.returncode == 0, result.stderr
    config = tmp_path / ".config" / "edgectl" / "config.toml"
    config.parent.mkdir(parents=True)
    config.write_text(f'hub = "{hub.api}"\ntoken_file = "{hub.token_file}"\n')
    env = {**base, "HOME": str(tmp_path)}
    result = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=30, check=False)
    assert result.returncode == 0, result.stderr
    env["EDGECTL_TOKEN"] = "wrong"
    result = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=30, check=False)
    assert result.returncode == 1
    assert "401" in result.stderr


def test_watch_streams_changes(hub):
    hub.ctl("apply", "-f", "-", stdin=DEVICES.split("---")[1])
    env = {k: v for k, v in os.environ.items() if not k.startswith("EDGECTL_")}
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "edgehub.edgectl",
            "--hub",
            hub.api,
            "--token-file",
            str(hub.token_file),
            "watch",
            "configs",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    lines: queue.Queue[str] = queue.Queue()

    def pump() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.put(line)

    threading.Thread(target=pump, daemon=True).start()
    try:
        assert lines.get(timeout=20).split("\t")[:2] == ["ADDED", "config/tuning"]
        hub.ctl("delete", "config", "tuning")
        assert lines.get(timeout=20).split("\t")[:2] == ["DELETED", "config/tuning"]
    finally:
        proc.kill()
        proc.wait(5)


def test_telemetry_prints_every_record_page_by_page(hub, monkeypatch, capsys):
    from edgehub import edgectl

    from edgenode.protocol import UplinkRecord
    from hub.test_link import start, stop

    token = hub.node_add("ship-7")
    assert hub.apply(DEVICES)[0] == 200
    records = [
        UplinkRecord(
            seq, 5, json.dumps({"kind": "telemetry", "device": "pump-1", "n": seq}).encode()
        )
        for seq in range(1, 8)
    ]

    async def scenario() -> None:
        node = SimNode(hub.link, token, "ship-7")
        task = await start(node)
        await node.send_uplink(records)
        await node.wait_until(lambda: node.acked_uplink >= set(range(1, 8)))
        await stop(task)

    asyncio.run(scenario())
    monkeypatch.setattr(edgectl, "TELEMETRY_PAGE", 3)  # 7 records: pages of 3, 3, 1
    argv = ["--hub", hub.api, "--token-file", str(hub.token_file), "telemetry", "pump-1"]
    assert edgectl.main(argv) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [json.loads(line)["record"]["n"] for line in lines] == list(range(1, 8))

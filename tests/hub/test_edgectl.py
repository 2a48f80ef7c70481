"""``edgectl`` end to end against a real ``edgehub serve`` subprocess."""

from __future__ import annotations

import asyncio
import json
import os
import queue
import re
import shlex
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import yaml
from edgehub.simnode import SimNode

from edgenode.protocol import UplinkRecord

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


# --- A newcomer's first hour (issue 18) ------------------------------------------------------


def send_records(hub, token: str, node: str, bodies: list[dict[str, object]]) -> None:
    """A simulated node sends these records (the node daemon's envelope) and disconnects."""
    from hub.test_link import start, stop

    records = [
        UplinkRecord(
            seq,
            5,
            json.dumps(
                {"v": 1, "kind": body.pop("kind"), "node": node, "ts": 1795000000.5, "body": body}
            ).encode(),
        )
        for seq, body in enumerate(bodies, 1)
    ]

    async def scenario() -> None:
        sim = SimNode(hub.link, token, node)
        task = await start(sim)
        await sim.send_uplink(records)
        await sim.wait_until(lambda: sim.acked_uplink >= set(range(1, len(records) + 1)))
        await stop(task)

    asyncio.run(scenario())


def edgectl(hub, *args: str, hub_url: str | None = None) -> list[str]:
    """The command line of ``edgectl`` against ``hub`` (for Popen)."""
    url = hub.api if hub_url is None else hub_url
    return [
        sys.executable,
        "-m",
        "edgehub.edgectl",
        "--hub",
        url,
        "--token-file",
        str(hub.token_file),
        *args,
    ]


def clean_env(**extra: str) -> dict[str, str]:
    """The test's environment without the operator's EDGECTL_* settings."""
    return {**{k: v for k, v in os.environ.items() if not k.startswith("EDGECTL_")}, **extra}


def test_the_hub_url_needs_no_scheme(hub):
    bare = hub.api.removeprefix("http://")
    result = subprocess.run(
        edgectl(hub, "get", "nodes", hub_url=bare),
        capture_output=True,
        text=True,
        timeout=30,
        env=clean_env(),
        check=False,
    )
    assert result.returncode == 0, result.stderr
    node_link = hub.ctl("--hub", hub.link, "get", "nodes")  # the last --hub wins
    assert node_link.returncode == 2
    assert "is a node-link URL; edgectl talks to the operator API" in node_link.stderr


def test_errors_about_edgectls_config_file_name_it(hub, tmp_path):
    config = tmp_path / ".config" / "edgectl" / "config.toml"
    config.parent.mkdir(parents=True)
    base = {k: v for k, v in os.environ.items() if not k.startswith("EDGECTL_")}
    env = {**base, "HOME": str(tmp_path)}
    cmd = [sys.executable, "-m", "edgehub.edgectl", "get", "nodes"]

    def run() -> subprocess.CompletedProcess[str]:
        return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=30, check=False)

    config.write_text('hub = "127.0.0.1:1\n')
    result = run()
    assert result.returncode == 2
    assert result.stderr.startswith(f"edgectl: {config}: not valid TOML: ")
    config.write_text(f'hub = "{hub.api}"\ntokenfile = "admin.token"\n')
    assert f"{config}: unknown key 'tokenfile'" in run().stderr
    config.write_text(f'hub = "{hub.api}"\ntoken_file = "missing.token"\n')
    result = run()
    assert result.returncode == 1
    assert f"cannot read token file {config.parent / 'missing.token'} (token_file in {config})" in (
        result.stderr
    )
    (config.parent / "admin.token").write_text(hub.token)  # relative to the config file
    config.write_text(f'hub = "{hub.api.removeprefix("http://")}"\ntoken_file = "admin.token"\n')
    assert run().returncode == 0


def test_yaml_errors_name_the_file_and_the_line(hub, tmp_path):
    path = tmp_path / "broken.yaml"
    path.write_text(DEVICES.split("---")[0] + "---\nkind: Route\n  metadata: x\n")
    result = hub.ctl("apply", "-f", str(path))
    assert result.returncode == 1
    [line] = result.stderr.splitlines()
    # PyYAML says "... not allowed here", libyaml "... not allowed in this context".
    assert line.startswith(
        f"edgectl: {path}: 422: document 1: malformed YAML/JSON: line 8, column 11: "
        "mapping values are not allowed "
    )
    assert "<unicode string>" not in result.stderr


def test_watch_shows_the_revision_of_what_exists(hub):
    hub.ctl("apply", "-f", "-", stdin=DEVICES.split("---")[1])
    revision = json.loads(hub.ctl("get", "config", "tuning", "-o", "json").stdout)["metadata"][
        "resourceVersion"
    ]
    proc = subprocess.Popen(
        edgectl(hub, "watch", "configs"),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=clean_env(),
    )
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline() == f"ADDED\tconfig/tuning\t{revision}\n"
    finally:
        proc.kill()
        proc.wait(5)


def test_get_devices_shows_values_and_wide_shows_versions(hub):
    token = hub.node_add("ship-7")
    hub.ctl("apply", "-f", "-", stdin=DEVICES)
    hub.ctl("twin", "set", "pump-1", "mode=eco", "fan.speed=3")
    send_records(
        hub,
        token,
        "ship-7",
        [
            {
                "kind": "twin",
                "device": "pump-1",
                "reported": {"speed": 10, "mode": "off"},
                "version": 4,
            }
        ],
    )
    rows = hub.ctl("get", "devices").stdout.splitlines()
    header = rows[0].split("   ")
    assert [cell.strip() for cell in header if cell.strip()] == [
        "NAME", "NODE", "STATE", "DESIRED", "REPORTED", "DELTA", "AGE",
    ]  # fmt: skip
    row = rows[1]
    desired = rows[0].index("DESIRED")
    reported = rows[0].index("REPORTED")
    delta = rows[0].index("DELTA")
    assert row[desired:reported].strip() == "fan.speed=3,mode=eco,speed=10"
    assert row[reported:delta].strip() == "mode=off,speed=10"
    assert row[delta:].split()[0] == "fan.speed=3,mode=eco"
    wide = hub.ctl("get", "devices", "-o", "wide").stdout.splitlines()
    assert "DESIRED VERSION" in wide[0]
    assert "REPORTED VERSION" in wide[0]
    versions = wide[1][wide[0].index("DESIRED VERSION") :].split()[:2]
    twin = json.loads(hub.ctl("twin", "get", "pump-1").stdout)
    assert versions == [str(twin["versions"]["desired"]), "4"]


def test_telemetry_times_are_iso_8601_in_one_field_with_tail_and_since(hub):
    token = hub.node_add("ship-7")
    hub.ctl("apply", "-f", "-", stdin=DEVICES)
    readings = [
        {"kind": "telemetry", "device": "pump-1", "topic": "t", "payload": str(n),
         "encoding": "utf-8", "timestamp": 1795000000.25 + n}
        for n in range(5)
    ]  # fmt: skip
    send_records(hub, token, "ship-7", readings)
    lines = hub.ctl("telemetry", "pump-1").stdout.splitlines()
    items = [json.loads(line) for line in lines]
    assert [item["record"]["payload"] for item in items] == ["0", "1", "2", "3", "4"]
    record = items[0]["record"]
    assert record["timestamp"] == "2026-11-18T11:06:40.250Z"
    assert "ts" not in record
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", items[0]["received"])
    tail = hub.ctl("telemetry", "pump-1", "--tail", "2").stdout.splitlines()
    assert [json.loads(line)["record"]["payload"] for line in tail] == ["3", "4"]
    assert hub.ctl("telemetry", "pump-1", "--tail", "0").stdout == ""
    assert len(hub.ctl("telemetry", "pump-1", "--since", "10m").stdout.splitlines()) == 5
    time.sleep(1.1)
    assert hub.ctl("telemetry", "pump-1", "--since", "1s").stdout == ""
    huge = "9" * 30  # bounded by the API, never an overflow in SQLite
    status, body = hub.call(
        "GET", f"/v1/devices/pump-1/telemetry?sinceSeconds={huge}&tailLines={huge}"
    )
    assert (status, len(body["items"])) == (200, 5)
    status, body = hub.call("GET", "/v1/devices/pump-1/telemetry?tailLines=-1")
    assert (status, body["error"]) == (400, "tailLines must not be negative")
    bad = hub.ctl("telemetry", "pump-1", "--since", "ten minutes")
    assert bad.returncode == 2
    assert "argument --since: expected a duration such as 30s, 10m, 2h or 1d" in bad.stderr


def test_delete_f_deletes_every_resource_of_the_file(hub, tmp_path):
    path = tmp_path / "fleet.yaml"
    path.write_text(DEVICES)
    hub.ctl("apply", "-f", str(path))
    hub.ctl("delete", "route", "up")
    result = hub.ctl("delete", "-f", str(path))
    assert result.stdout.splitlines() == ["device/pump-1 deleted", "config/tuning deleted"]
    assert result.returncode == 1
    assert f"edgectl: {path}: not found: route/up" in result.stderr
    hub.ctl("apply", "-f", str(path))
    quiet = hub.ctl("delete", "-f", "-", "--ignore-not-found", stdin=DEVICES.split("---")[2])
    assert (quiet.returncode, quiet.stdout) == (0, "route/up deleted\n")
    assert hub.ctl("get", "routes").stderr.strip() == "No routes found."
    bad = tmp_path / "bad.yaml"
    bad.write_text("kind: Device\nmetadata: {}\n")
    refused = hub.ctl("delete", "-f", str(bad))
    assert (refused.returncode, refused.stderr) == (
        1,
        f"edgectl: {bad}: document 0: metadata.name: required\n",
    )
    assert hub.ctl("delete", "-f", str(path), "device", "x").returncode == 2


def test_label_adds_overwrites_and_removes_labels(hub):
    hub.ctl("node", "add", "ship-7", "--label", "fleet=blue")
    result = hub.ctl("label", "node", "ship-7", "zone=a", "deck=2")
    assert (result.returncode, result.stdout) == (0, "node/ship-7 labeled\n")
    labels = json.loads(hub.ctl("get", "node", "ship-7", "-o", "json").stdout)["metadata"]["labels"]
    assert labels == {"fleet": "blue", "zone": "a", "deck": "2"}
    refused = hub.ctl("label", "node", "ship-7", "fleet=red")
    assert refused.returncode == 1
    assert "label 'fleet' already has the value 'blue'; --overwrite replaces it" in refused.stderr
    assert hub.ctl("label", "node", "ship-7", "fleet=red", "deck-", "--overwrite").returncode == 0
    labels = json.loads(hub.ctl("get", "node", "ship-7", "-o", "json").stdout)["metadata"]["labels"]
    assert labels == {"fleet": "red", "zone": "a"}
    same = hub.ctl("label", "node", "ship-7", "zone=a")
    assert same.stdout == "node/ship-7 not labeled\n"
    assert hub.ctl("label", "node", "ship-7", "=x").returncode == 2
    assert hub.ctl("label", "device", "ghost", "a=b").returncode == 1


def test_get_w_lists_then_prints_a_row_per_change(hub):
    hub.ctl("apply", "-f", "-", stdin=DEVICES)
    proc = subprocess.Popen(
        edgectl(hub, "get", "routes", "-w"),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=clean_env(),
    )
    lines: queue.Queue[str] = queue.Queue()

    def pump() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.put(line)

    threading.Thread(target=pump, daemon=True).start()
    try:
        assert lines.get(timeout=20).split()[:2] == ["NAME", "FROM"]
        assert lines.get(timeout=20).split()[:3] == ["up", "sensors/#", "upstream"]
        hub.ctl(
            "apply", "-f", "-", stdin=DEVICES.split("---")[2].replace("priority: 7", "priority: 2")
        )
        assert lines.get(timeout=20).split()[:4] == ["up", "sensors/#", "upstream", "2"]
        with pytest.raises(queue.Empty):  # the watch's initial ADDED is not shown twice
            lines.get(timeout=1)
    finally:
        proc.kill()
        proc.wait(5)


EDITOR = """\
import sys
from pathlib import Path

*replacements, name = sys.argv[1:]  # edgectl appends the file to the editor's command
path = Path(name)
text = path.read_text()
Path(name + ".seen").write_text(text)
for old, new in zip(replacements[::2], replacements[1::2]):
    text = text.replace(old, new)
path.write_text(text)
"""


def test_edit_opens_the_yaml_and_applies_what_was_saved(hub, tmp_path):
    hub.ctl("node", "add", "ship-7")
    hub.ctl("apply", "-f", "-", stdin=DEVICES)
    editor = tmp_path / "editor.py"
    editor.write_text(EDITOR)

    def edit(*replacements: str) -> subprocess.CompletedProcess[str]:
        command = shlex.join([sys.executable, str(editor), *replacements])
        return subprocess.run(
            edgectl(hub, "edit", "device", "pump-1"),
            capture_output=True,
            text=True,
            timeout=30,
            env=clean_env(EDGECTL_EDITOR=command, HOME=str(tmp_path), TMPDIR=str(tmp_path)),
            check=False,
        )

    unchanged = edit()
    assert (unchanged.returncode, unchanged.stdout) == (
        0,
        "device/pump-1 unchanged (nothing was edited)\n",
    )
    [seen] = tmp_path.glob("edgectl-edit-device-*.yaml.seen")  # what the editor was given
    assert seen.read_text().startswith("# Edit this device/pump-1 and save to apply it")
    shown = yaml.safe_load(seen.read_text())
    assert shown == {
        "apiVersion": "edgenode.io/v1",
        "kind": "Device",
        "metadata": {"name": "pump-1", "labels": {"site": "north"}},
        "spec": {"node": "ship-7", "desired": {"speed": 10}},
    }
    edited = edit("speed: 10", "speed: 12")
    assert (edited.returncode, edited.stdout) == (0, "device/pump-1 edited\n"), edited.stderr
    assert json.loads(hub.ctl("twin", "get", "pump-1").stdout)["desired"] == {"speed": 12}
    refused = edit("node: ship-7", "node: Ship_7")
    assert refused.returncode == 1
    assert "device/pump-1: 422: document 0: spec.node: invalid name 'Ship_7'" in refused.stderr
    kept = re.search(r"your edit is kept in (\S+):", refused.stderr)
    assert kept
    assert "Ship_7" in Path(kept[1]).read_text()
    renamed = edit("name: pump-1", "name: pump-2")
    assert renamed.returncode == 1
    assert "kind and metadata.name must stay Device 'pump-1'" in renamed.stderr
    assert hub.ctl("get", "device", "pump-2").returncode == 1

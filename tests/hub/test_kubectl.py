"""The real ``kubectl`` drives the hub (issue 20): a real ``edgehub serve`` on TLS (kubectl
sends its token only over TLS), a kubeconfig from ``edgectl kubeconfig``, and the kubectl
binary on PATH. Where kubectl is not on PATH the whole module is skipped, and the run's
header says so once (tests/conftest.py)."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import ssl
import subprocess
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest
import yaml
from edgehub.simnode import SimNode

from hub.conftest import RunningHub
from hub.tls_certs import make_ca_and_server_cert

KUBECTL = shutil.which("kubectl")
pytestmark = [
    pytest.mark.skipif(KUBECTL is None, reason="kubectl is not on PATH"),
    pytest.mark.timeout(180),
]

RESOURCES = """
apiVersion: edgenode.io/v1
kind: Node
metadata: {name: ship-7, labels: {fleet: blue}}
spec: {description: a ship}
---
apiVersion: edgenode.io/v1
kind: Device
metadata: {name: lamp, labels: {room: a}}
spec: {node: ship-7, desired: {power: "on"}}
---
apiVersion: edgenode.io/v1
kind: Device
metadata: {name: fan, labels: {room: b}}
spec: {node: ship-7, desired: {speed: 2}}
---
apiVersion: edgenode.io/v1
kind: Config
metadata: {name: tuning}
spec: {data: {interval: "5"}}
"""


class Kubectl:
    """kubectl with its own kubeconfig and cache, against one hub."""

    def __init__(self, hub: RunningHub, directory: Path, ca: Path) -> None:
        self.hub = hub
        self.directory = directory
        result = hub.ctl("kubeconfig", "--ca-file", str(ca))
        assert result.returncode == 0, result.stderr
        self.config = directory / "kubeconfig"
        self.config.write_text(result.stdout)

    def env(self, **extra: str) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("KUBE")}
        env.update(KUBECONFIG=str(self.config), HOME=str(self.directory), **extra)
        return env

    def run(
        self, *args: str, stdin: str | None = None, **env: str
    ) -> subprocess.CompletedProcess[str]:
        assert KUBECTL is not None
        return subprocess.run(
            [KUBECTL, *args],
            input=stdin,
            capture_output=True,
            text=True,
            timeout=60,
            env=self.env(**env),
            cwd=self.directory,
            check=False,
        )

    def ok(self, *args: str, stdin: str | None = None, **env: str) -> str:
        result = self.run(*args, stdin=stdin, **env)
        assert result.returncode == 0, f"kubectl {' '.join(args)}: {result.stderr}"
        return result.stdout

    def popen(self, *args: str) -> subprocess.Popen[str]:
        assert KUBECTL is not None
        return subprocess.Popen(
            [KUBECTL, *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=self.env(),
            cwd=self.directory,
        )


@pytest.fixture
def tls(tmp_path: Path) -> tuple[Path, Path, Path]:
    return make_ca_and_server_cert(tmp_path)


@pytest.fixture
def tls_hub(hub_factory: Any, tls: tuple[Path, Path, Path], monkeypatch: Any) -> RunningHub:
    ca, cert, key = tls
    monkeypatch.setenv("SSL_CERT_FILE", str(ca))  # edgectl trusts the test CA
    hub: RunningHub = hub_factory("--tls-cert", str(cert), "--tls-key", str(key))
    hub.ssl_context = ssl.create_default_context(cafile=str(ca))
    return hub


@pytest.fixture
def kubectl(tls_hub: RunningHub, tmp_path: Path, tls: tuple[Path, Path, Path]) -> Kubectl:
    directory = tmp_path / "kube"
    directory.mkdir()
    return Kubectl(tls_hub, directory, tls[0])


def lines_of(text: str) -> list[list[str]]:
    return [line.split() for line in text.strip().splitlines()]


def test_api_resources_and_tables(kubectl: Kubectl):
    resources = kubectl.ok("api-resources")
    for kind, short in (("nodes", "no"), ("devices", "dev"), ("configs", "cfg")):
        row = next(r for r in lines_of(resources) if r[0] == kind and "edgenode.io/v1" in r)
        assert row[1:] == [short, "edgenode.io/v1", "false", kind[:-1].capitalize()]
    assert "devices.kubeedge.io/v1beta1" in resources
    out = kubectl.ok("apply", "-f", "-", stdin=RESOURCES)
    assert out.splitlines() == [
        "node.edgenode.io/ship-7 created",
        "device.edgenode.io/lamp created",
        "device.edgenode.io/fan created",
        "config.edgenode.io/tuning created",
    ]
    nodes = lines_of(kubectl.ok("get", "nodes"))
    assert nodes[0][:4] == ["NAME", "STATUS", "REVISION", "LAG"]
    assert nodes[1][:2] == ["ship-7", "NotReady"]
    wide = kubectl.ok("get", "nodes", "-o", "wide")
    assert "LAST SEEN" in wide
    assert "LABELS" in wide
    devices = lines_of(kubectl.ok("get", "devices", "-l", "room=a"))
    assert [row[0] for row in devices[1:]] == ["lamp"]
    names = kubectl.ok("get", "dev", "-o", "name")
    assert names.split() == ["device.edgenode.io/fan", "device.edgenode.io/lamp"]
    by_field = kubectl.ok("get", "devices", "--field-selector", "metadata.name=fan", "-o", "name")
    assert by_field.split() == ["device.edgenode.io/fan"]


def test_apply_configure_unchanged_and_yaml_round_trip(kubectl: Kubectl, tls_hub: RunningHub):
    kubectl.ok("apply", "-f", "-", stdin=RESOURCES)
    changed = RESOURCES.replace('power: "on"', 'power: "off"')
    out = kubectl.ok("apply", "-f", "-", stdin=changed)
    assert "device.edgenode.io/lamp configured" in out
    assert "device.edgenode.io/fan unchanged" in out
    out = kubectl.ok("apply", "-f", "-", stdin=changed)
    assert all(line.endswith("unchanged") for line in out.splitlines()), out
    # get -o yaml re-applies: with edgectl as unchanged; kubectl only rewrites its own
    # last-applied annotation (as against Kubernetes): the spec and generation stay.
    text = kubectl.ok("get", "device", "lamp", "-o", "yaml")
    obj = yaml.safe_load(text)
    assert obj["metadata"]["uid"]
    assert obj["spec"]["desired"] == {"power": "off"}
    generation = obj["metadata"]["generation"]
    result = tls_hub.ctl("apply", "-f", "-", stdin=text)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "device/lamp unchanged"
    kubectl.ok("apply", "-f", "-", stdin=text)
    final = yaml.safe_load(kubectl.ok("get", "device", "lamp", "-o", "yaml"))
    assert final["spec"] == obj["spec"]
    assert final["metadata"]["generation"] == generation
    # The file carries the resourceVersion it was read at: applied again after that
    # change, it is a conflict, as against Kubernetes.
    stale = kubectl.run("apply", "-f", "-", stdin=text)
    assert "the object has been modified" in stale.stderr


def test_server_side_apply(kubectl: Kubectl):
    out = kubectl.ok("apply", "--server-side", "-f", "-", stdin=RESOURCES)
    assert out.splitlines()[0] == "node.edgenode.io/ship-7 serverside-applied"
    # A label this manager applied and no longer does is removed; others' stay.
    kubectl.ok("label", "device", "lamp", "owner=ops")
    fewer = RESOURCES.replace("labels: {room: a}", "labels: {}")
    kubectl.ok("apply", "--server-side", "-f", "-", stdin=fewer)
    labels = json.loads(kubectl.ok("get", "device", "lamp", "-o", "json"))["metadata"]["labels"]
    assert labels == {"owner": "ops"}


def test_edit_patch_label_delete(kubectl: Kubectl, tmp_path: Path):
    kubectl.ok("apply", "-f", "-", stdin=RESOURCES)
    editor = tmp_path / "editor.sh"
    editor.write_text('#!/bin/sh\nsed -i \'s/power: "on"/power: dim/\' "$1"\n')
    editor.chmod(0o755)
    out = kubectl.ok("edit", "device", "lamp", KUBE_EDITOR=str(editor))
    assert out.strip() == "device.edgenode.io/lamp edited"
    desired = kubectl.ok("get", "device", "lamp", "-o", "jsonpath={.spec.desired.power}")
    assert desired == "dim"
    kubectl.ok(
        "patch", "device", "fan", "--type", "merge", "-p", '{"spec":{"desired":{"speed":3}}}'
    )
    kubectl.ok(
        "patch", "device", "fan", "--type", "json",
        "-p", '[{"op":"add","path":"/metadata/labels/tier","value":"gold"}]',
    )  # fmt: skip
    fan = json.loads(kubectl.ok("get", "device", "fan", "-o", "json"))
    assert fan["spec"]["desired"] == {"speed": 3}
    assert fan["metadata"]["labels"] == {"room": "b", "tier": "gold"}
    assert (
        kubectl.ok("label", "device", "fan", "tier-").strip() == "device.edgenode.io/fan unlabeled"
    )
    failed = kubectl.run(
        "patch",
        "device",
        "fan",
        "--type",
        "json",
        "-p",
        '[{"op":"test","path":"/spec/node","value":"x"}]',
    )
    assert failed.returncode != 0
    out = kubectl.ok("delete", "-f", "-", stdin=RESOURCES)
    assert 'device.edgenode.io "lamp" deleted' in out
    assert (
        kubectl.ok("get", "devices").strip() == ""
        or "No resources" in kubectl.run("get", "devices").stderr
    )


def test_errors_as_kubectl_users_know_them(kubectl: Kubectl, tmp_path: Path):
    bad = (
        "apiVersion: edgenode.io/v1\nkind: Device\nmetadata: {name: bad}\n"
        "spec: {node: n, colour: red}\n"
    )
    result = kubectl.run("apply", "-f", "-", stdin=bad)
    assert result.returncode != 0
    assert 'The Device "bad" is invalid: spec.colour: unknown field for Device' in result.stderr
    missing = kubectl.run("get", "device", "nope")
    assert 'Error from server (NotFound): devices.edgenode.io "nope" not found' in missing.stderr
    wrong = kubectl.run("--token", "wrong", "get", "nodes")
    assert wrong.returncode != 0
    assert "Unauthorized" in wrong.stderr
    # Conflict: a replace with the resourceVersion from before someone else's change.
    kubectl.ok("apply", "-f", "-", stdin=RESOURCES)
    old = kubectl.ok("get", "device", "lamp", "-o", "yaml")
    kubectl.ok("patch", "device", "lamp", "--type", "merge", "-p", '{"spec":{"model":"m2"}}')
    conflict = kubectl.run("replace", "-f", "-", stdin=old)
    assert conflict.returncode != 0
    assert "Conflict" in conflict.stderr
    assert "the object has been modified" in conflict.stderr
    # A status change is no conflict: people write only spec.
    status = kubectl.run(
        "patch", "device", "lamp", "--subresource", "status", "--type", "merge",
        "-p", '{"status":{"state":"online"}}',
    )  # fmt: skip
    assert status.returncode != 0
    assert "Forbidden" in status.stderr
    created = kubectl.run("create", "-f", "-", stdin=RESOURCES)
    assert "AlreadyExists" in created.stderr


def test_explain(kubectl: Kubectl):
    out = kubectl.ok("explain", "device.spec")
    assert "KIND:       Device" in out
    assert "The node that serves the device." in out
    assert "kubeedge" in out


def test_get_watch_sees_an_edgectl_change_and_a_status_change(
    kubectl: Kubectl, tls_hub: RunningHub
):
    kubectl.ok("apply", "-f", "-", stdin=RESOURCES)
    watch = kubectl.popen("get", "devices", "-w", "--output-watch-events")
    seen: list[str] = []

    def pump() -> None:
        assert watch.stdout is not None
        for line in watch.stdout:
            seen.append(line)

    threading.Thread(target=pump, daemon=True).start()
    try:
        deadline = time.monotonic() + 20
        while len(seen) < 3 and time.monotonic() < deadline:  # header + 2 rows
            time.sleep(0.1)
        result = tls_hub.ctl("twin", "set", "lamp", "power=off")
        assert result.returncode == 0, result.stderr
        while time.monotonic() < deadline and not any(
            "MODIFIED" in line and "power=off" in line for line in seen
        ):
            time.sleep(0.1)
        assert any("MODIFIED" in line and "power=off" in line for line in seen), seen
    finally:
        watch.terminate()
        watch.wait(10)


def test_wait_for_a_node_to_be_ready(kubectl: Kubectl, tls_hub: RunningHub, tls: Any):
    token = tls_hub.node_add("ship-7")
    waiting = kubectl.popen("wait", "--for=condition=Ready", "node/ship-7", "--timeout=60s")
    time.sleep(1.0)  # it lists first, then watches: the node connects while it waits

    async def connect() -> None:
        ctx = ssl.create_default_context(cafile=str(tls[0]))
        node = SimNode(tls_hub.link, token, "ship-7", ssl_context=ctx)
        task = asyncio.create_task(node.run_once())
        await asyncio.sleep(8)
        task.cancel()

    thread = threading.Thread(target=lambda: asyncio.run(connect()))
    thread.start()
    out, err = waiting.communicate(timeout=60)
    thread.join(20)
    assert waiting.returncode == 0, err
    assert out.strip() == "node.edgenode.io/ship-7 condition met"
    ready = json.loads(kubectl.ok("get", "node", "ship-7", "-o", "json"))
    condition = ready["status"]["conditions"][0]
    assert condition["type"] == "Ready"


def test_kubeedge_manifests_apply_with_kubectl(kubectl: Kubectl, tls_hub: RunningHub):
    manifest = Path(__file__).resolve().parents[2] / "docs" / "kubeedge.md"
    text = manifest.read_text()
    start = text.index("<!-- doc-test: file kubeedge-thermo.yaml -->")
    body = text[start:].split("```yaml\n", 1)[1].split("```", 1)[0]
    out = kubectl.ok("apply", "-f", "-", stdin=body)
    assert "device.devices.kubeedge.io/thermo created" in out
    again = kubectl.ok("apply", "-f", "-", stdin=body)
    assert "device.devices.kubeedge.io/thermo unchanged" in again
    listed = lines_of(kubectl.ok("get", "devices.devices.kubeedge.io", "-A"))
    assert listed[1][:2] == ["line-a", "thermo"]
    edgenode = json.loads(kubectl.ok("get", "device.edgenode.io", "line-a_thermo", "-o", "json"))
    assert edgenode["spec"]["desired"] == {"target": 23, "mode": "eco"}
    assert edgenode["spec"]["kubeedge"]["namespace"] == "line-a"
    out = kubectl.ok("delete", "-f", "-", stdin=body)
    assert 'device.devices.kubeedge.io "thermo" deleted' in out
    assert tls_hub.call("GET", "/v1/devices/line-a_thermo")[0] == 404


def test_a_watch_from_a_forgotten_position_is_gone(tls_hub: RunningHub):
    request = urllib.request.Request(
        tls_hub.api + "/apis/edgenode.io/v1/nodes?watch=true&resourceVersion=1.5",
        headers={"Authorization": f"Bearer {tls_hub.token}"},
    )
    with urllib.request.urlopen(request, timeout=10, context=tls_hub.ssl_context) as response:
        event = json.loads(response.readline())
    assert event["type"] == "ERROR"
    assert event["object"]["code"] == 410

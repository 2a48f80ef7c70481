"""deploy/compose: the one-command local fleet (deploy/compose/up.sh) comes up, and a node
cut off from the fleet network catches up with what changed meanwhile once it is back.

Compose: `docker compose` (v2) where it exists, else Debian's `docker-compose` (1.29), as
up.sh picks; the file uses only what both read.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from deploy.ctl import Ctl
from deploy.engine import ROOT, docker, run_logged, unique, wait_for
from integration.devices.mqtt_broker import free_port

pytestmark = pytest.mark.timeout(900)

COMPOSE_FILE = ROOT / "deploy" / "compose" / "docker-compose.yml"
NODES = ("node-1", "node-2", "node-3")
PARTITIONED = "node-3"
HEARTBEAT = 5.0
"""The fleet hub's --heartbeat (docker-compose.yml): NotReady after 3 of them."""
SYNC_TIMEOUT = 90.0
CONFIG = """\
apiVersion: edgenode.io/v1
kind: Config
metadata: {{name: fleet-tuning}}
spec:
  nodeSelector: {{fleet: local}}
  data: {{round: "{round}"}}
"""


def compose_command() -> list[str]:
    v2 = subprocess.run(["docker", "compose", "version"], capture_output=True, check=False)
    if v2.returncode == 0:
        return ["docker", "compose"]
    if shutil.which("docker-compose"):
        return ["docker-compose"]
    pytest.fail("neither 'docker compose' nor 'docker-compose' is installed")


@dataclass
class Fleet:
    project: str
    ctl: Ctl
    compose: list[str]

    def run(self, *args: str) -> str:
        result = subprocess.run(
            [*self.compose, "-f", str(COMPOSE_FILE), "-p", self.project, *args],
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
        assert result.returncode == 0, f"compose {args}: {result.stderr}{result.stdout}"
        return result.stdout

    def container(self, service: str) -> str:
        return self.run("ps", "-q", service).strip()

    @property
    def network(self) -> str:
        return f"{self.project}_fleet"

    def revision(self, name: str) -> int:
        return int(self.ctl.nodes()[name]["REVISION"])


def build_stages() -> set[str]:
    """Untagged build stages of cloud/Containerfile (compose leaves them behind)."""
    out = docker(
        "images", "-q", "--no-trunc", "-f", "dangling=true", "-f", "label=org.edgenode.stage=build"
    ).stdout
    return set(out.split())


@pytest.fixture(scope="module")
def fleet(
    base_image: str, build_log: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Fleet]:
    work = tmp_path_factory.mktemp("fleet")
    project = unique("fleet")
    api_port = free_port()
    env = {
        "COMPOSE_PROJECT_NAME": project,
        "EDGEHUB_API_PORT": str(api_port),
        "EDGEHUB_LINK_PORT": str(free_port()),
        "EDGENODE_WHEELHOUSE_PROFILE": "dev",  # the build scripts/setup.sh made: seconds
        "BASE_IMAGE": base_image,
    }
    compose = compose_command()
    stages = build_stages()
    fleet = Fleet(project, Ctl(f"http://127.0.0.1:{api_port}", work / "admin.token", work), compose)
    try:
        run_logged([str(ROOT / "deploy" / "compose" / "up.sh")], build_log, **env)
        hub = fleet.container("hub")
        fleet.ctl.token_file.write_text(
            docker("exec", hub, "cat", "/var/lib/edgehub/admin.token").stdout
        )
        yield fleet
    finally:
        down = ["down", "--volumes", "--rmi", "local"]
        subprocess.run(
            [*compose, "-f", str(COMPOSE_FILE), "-p", project, *down],
            capture_output=True,
            timeout=300,
            check=False,
            env={**os.environ, **env},
        )
        for stage in build_stages() - stages:
            docker("rmi", stage, check=False)


def test_up_brings_a_hub_and_three_nodes_in_sync(fleet: Fleet):
    rows = wait_for("the three nodes in sync", lambda: fleet.ctl.in_sync(*NODES), SYNC_TIMEOUT)
    assert {rows[n]["ARCH"] for n in NODES} == {"x86_64"}
    # Each node reached the fleet's Mosquitto by its service name.
    for name in NODES:
        logs = docker("logs", fleet.container(name)).stderr
        assert "connected to the MQTT broker mosquitto:1883" in logs, logs


def test_a_partitioned_node_converges_after_it_is_reconnected(fleet: Fleet):
    fleet.ctl.ok("apply", "-f", "-", stdin=CONFIG.format(round=0))
    rows = wait_for("the three nodes in sync", lambda: fleet.ctl.in_sync(*NODES), SYNC_TIMEOUT)
    before = int(rows[PARTITIONED]["REVISION"])
    cut = fleet.container(PARTITIONED)
    docker("network", "disconnect", fleet.network, cut)
    try:
        wait_for(
            f"the hub to see {PARTITIONED} gone",
            lambda: fleet.ctl.nodes().get(PARTITIONED, {}).get("STATUS") == "NotReady",
            HEARTBEAT * 3 + 30,
        )
        # Desired state changes while it is away; the others take it at once.
        fleet.ctl.ok("apply", "-f", "-", stdin=CONFIG.format(round=1))
        others = wait_for(
            "node-1 and node-2 in sync", lambda: fleet.ctl.in_sync(*NODES[:2]), SYNC_TIMEOUT
        )
        target = int(others[NODES[0]]["REVISION"])
        assert target > before
        assert fleet.revision(PARTITIONED) == before
    finally:
        # --alias: without it the service name no longer resolves for the others.
        docker("network", "connect", "--alias", PARTITIONED, fleet.network, cut)
    rows = wait_for(f"{PARTITIONED} back in sync", lambda: fleet.ctl.in_sync(*NODES), SYNC_TIMEOUT)
    assert {int(rows[n]["REVISION"]) for n in NODES} == {target}

"""cloud/Containerfile for real: built from the local base image and the wheelhouse (as
README.md's "Run a hub in a container" says), run, and used by a node on the host.

One container (with its volume) serves the module's tests in order: who runs it, what the
image holds, the health check (also failing), a node joining and syncing, the admin token
across a restart and a new container, then ``docker stop``. TLS has its own container.
"""

from __future__ import annotations

import os
import ssl
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from deploy.ctl import Ctl
from deploy.engine import Container, Resources, docker, resources, unique, wait_for
from deploy.hostnode import HostNode
from hub.test_tls_retention import make_ca_and_server_cert

pytestmark = pytest.mark.timeout(900)  # the first test also builds the images (minutes cold)

HEALTH_TIMEOUT = 60.0
SYNC_TIMEOUT = 60.0
STOP_GRACE = 10
"""docker stop's grace period before SIGKILL (its default)."""
MAX_IMAGE_MB = 200
CONFIG = """\
apiVersion: edgenode.io/v1
kind: Config
metadata: {{name: container-check}}
spec:
  nodeSelector: {{site: container}}
  data: {{round: "{round}"}}
"""


@dataclass
class HubContainer:
    container: Container
    volume: str
    image: str
    work: Path

    @property
    def api_port(self) -> int:
        return self.container.port(8080)

    @property
    def link_port(self) -> int:
        return self.container.port(8443)

    def token(self) -> str:
        return self.container.exec("cat", "/var/lib/edgehub/admin.token").stdout.strip()

    def ctl(self) -> Ctl:
        token_file = self.work / "admin.token"
        token_file.write_text(self.token() + "\n")
        return Ctl(f"http://127.0.0.1:{self.api_port}", token_file, self.work)


def run_hub(
    created: Resources, image: str, volume: str, *extra: str, args: tuple[str, ...] = ()
) -> Container:
    """``docker run -d`` the hub image, its ports published on loopback only, the health
    check every second (the image's 30 s interval would make the test wait)."""
    container = created.container(unique("hub"))
    docker(
        "run", "-d", "--name", container.name,
        "-p", "127.0.0.1::8443", "-p", "127.0.0.1::8080",
        "-v", f"{volume}:/var/lib/edgehub",
        "--health-interval", "1s", "--health-start-period", "30s",
        *extra, image, *args,
    )  # fmt: skip
    return container


def health(container: Container) -> str:
    state = container.inspect()["State"]
    if not state["Running"]:
        raise AssertionError(f"the hub container exited ({state}):\n{container.logs()}")
    return str(state.get("Health", {}).get("Status", ""))


def wait_healthy(container: Container) -> None:
    wait_for(
        f"{container.name} to be healthy", lambda: health(container) == "healthy", HEALTH_TIMEOUT
    )


@pytest.fixture(scope="module")
def hub(hub_image: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[HubContainer]:
    with resources() as created:
        volume = created.volume(unique("hub-data"))
        docker("volume", "create", volume)
        container = run_hub(created, hub_image, volume)
        wait_healthy(container)
        yield HubContainer(container, volume, hub_image, tmp_path_factory.mktemp("hub-image"))


def test_the_hub_is_pid_1_and_runs_as_uid_10001(hub: HubContainer):
    c = hub.container
    assert c.exec("id", "-u").stdout.strip() == "10001"
    pid1 = c.exec("cat", "/proc/1/cmdline").stdout.split("\0")
    assert "/opt/edgehub/bin/edgehub" in pid1, pid1
    assert "serve" in pid1, pid1
    assert c.sh("stat -c '%u' /proc/1").strip() == "10001"
    assert c.sh("stat -c '%u %a' /var/lib/edgehub/admin.token").split() == ["10001", "600"]
    assert c.inspect()["Config"]["ExposedPorts"].keys() == {"8443/tcp", "8080/tcp"}
    assert "/var/lib/edgehub" in c.inspect()["Config"]["Volumes"]


def test_the_image_is_small_and_holds_no_compiler_installer_or_wheels(hub: HubContainer):
    size_mb = int(docker("image", "inspect", "-f", "{{.Size}}", hub.image).stdout) / 1e6
    print(f"hub image: {size_mb:.0f} MB")
    assert size_mb < MAX_IMAGE_MB
    found = hub.container.sh(
        "for t in gcc cc cargo rustc maturin pip pip3; do command -v $t; done;"
        " ls -d /wheels /root/.cache /opt/edgehub/bin/pip 2>/dev/null; true"
    )
    assert found.strip() == "", found


def test_the_health_check_says_healthy_and_fails_when_the_hub_hangs(hub: HubContainer):
    c = hub.container
    ok = c.exec("/opt/edgehub/bin/python", "-m", "edgehub.healthcheck", check=False)
    assert ok.returncode == 0, ok.stdout
    assert "healthy: http://127.0.0.1:8080/healthz: HTTP 200" in ok.stdout
    pid = str(c.inspect()["State"]["Pid"])
    subprocess.run(["kill", "-STOP", pid], check=True, timeout=10)
    try:
        hung = c.exec("/opt/edgehub/bin/python", "-m", "edgehub.healthcheck", check=False)
    finally:
        subprocess.run(["kill", "-CONT", pid], check=True, timeout=10)
    assert hung.returncode == 1, hung.stdout
    assert hung.stdout.startswith("unhealthy: http://127.0.0.1:8080/healthz"), hung.stdout


def test_a_node_on_the_host_joins_and_syncs(hub: HubContainer, tmp_path: Path):
    ctl = hub.ctl()
    token = ctl.node_add("host-node", "site=container")
    node = HostNode(tmp_path, "host-node")
    node.configure(f"ws://127.0.0.1:{hub.link_port}", token)
    node.start()
    try:
        wait_for("host-node Ready with LAG 0", lambda: ctl.in_sync("host-node"), SYNC_TIMEOUT)
        before = int(ctl.nodes()["host-node"]["REVISION"])
        ctl.ok("apply", "-f", "-", stdin=CONFIG.format(round=1))
        rows = wait_for(
            "host-node to ack the Config",
            lambda: (
                (r := ctl.in_sync("host-node")) and int(r["host-node"]["REVISION"]) > before and r
            ),
            SYNC_TIMEOUT,
        )
        revision = int(rows["host-node"]["REVISION"])
        assert node.status()["hub"]["state"] == "connected"
    finally:
        node.stop()
    # Across a restart of the container the hub keeps the node, its ack and its token.
    docker("restart", "-t", str(STOP_GRACE), hub.container.name)
    wait_healthy(hub.container)
    ctl = hub.ctl()  # the published port may change with the restart
    node.configure(f"ws://127.0.0.1:{hub.link_port}", token)
    node.start()
    try:
        rows = wait_for("host-node back in sync", lambda: ctl.in_sync("host-node"), SYNC_TIMEOUT)
        assert int(rows["host-node"]["REVISION"]) == revision
    finally:
        node.stop()


def test_the_admin_token_is_made_once_and_kept_in_the_volume(hub: HubContainer):
    first = hub.token()
    assert len(first) >= 32
    docker("restart", "-t", str(STOP_GRACE), hub.container.name)
    wait_healthy(hub.container)
    assert hub.token() == first
    assert hub.container.logs().count("admin token created in /var/lib/edgehub/admin.token") == 1
    # A new container on the same volume (an upgrade) keeps it too.
    with resources() as created:
        again = run_hub(created, hub.image, hub.volume, "--rm")
        docker("stop", hub.container.name)  # one hub per volume (one SQLite writer)
        try:
            wait_healthy(again)
            assert again.exec("cat", "/var/lib/edgehub/admin.token").stdout.strip() == first
            assert "admin token in /var/lib/edgehub/admin.token" in again.logs()
        finally:
            docker("stop", again.name)
            docker("start", hub.container.name)
    wait_healthy(hub.container)


def test_docker_stop_is_clean_and_fast(hub: HubContainer):
    started = time.monotonic()
    docker("stop", "-t", str(STOP_GRACE), hub.container.name)
    took = time.monotonic() - started
    state = hub.container.inspect()["State"]
    assert state["ExitCode"] == 0, hub.container.logs()
    assert took < STOP_GRACE / 2, f"docker stop took {took:.1f} s (SIGTERM not handled?)"


def test_the_health_check_speaks_https_when_the_hub_has_a_certificate(
    hub_image: str, engine_resources: Resources, tmp_path: Path
):
    tls = tmp_path / "tls"
    tls.mkdir()
    ca, _cert, key = make_ca_and_server_cert(tls)
    # The hub runs as uid 10001: it must be able to read the (throwaway) key.
    os.chmod(tmp_path, 0o755)
    os.chmod(tls, 0o755)
    os.chmod(key, 0o644)
    volume = engine_resources.volume(unique("hub-tls"))
    container = run_hub(
        engine_resources,
        hub_image,
        volume,
        "-v",
        f"{tls}:/tls:ro",
        args=("--tls-cert", "/tls/hub.pem", "--tls-key", "/tls/hub.key"),
    )
    wait_healthy(container)
    check = container.exec("/opt/edgehub/bin/python", "-m", "edgehub.healthcheck")
    assert "healthy: https://127.0.0.1:8080/healthz: HTTP 200" in check.stdout
    # And it is TLS for real: the API answers https with the CA's certificate.
    context = ssl.create_default_context(cafile=str(ca))
    url = f"https://127.0.0.1:{container.port(8080)}/healthz"
    with urllib.request.urlopen(url, timeout=10, context=context) as response:
        assert response.status == 200
    docker("stop", container.name)
    assert container.inspect()["State"]["ExitCode"] == 0

"""The Raspberry Pi install for real, on emulated ARM: README.md's "Install a node on a
Raspberry Pi" steps in a complete Debian bookworm for arm64 (64-bit Raspberry Pi OS) and
armhf (32-bit), made by debootstrap under qemu-user (deploy/images/base.sh), with Debian's
own Mosquitto, psutil and python3-venv of that architecture, the project's aarch64 /
armv7l wheel (cross/build-wheels.sh) and a wheelhouse for the target
(deploy/images/wheelhouse.sh). The node serves a device twin while its hub is unreachable,
joins the hub (on the host) once it is up, and says ``backend=rust`` and the target's CPU.

This is the ARM step of scripts/test.sh (marker ``arm``). It fails when it cannot run;
``EDGENODE_ARM_SMOKE=0`` skips it on purpose.
"""

from __future__ import annotations

import json
import os
import platform
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from edgehub.testing import HubProcess

from deploy.ctl import BIN, Ctl
from deploy.engine import (
    IMAGES,
    ROOT,
    Container,
    docker,
    engine,
    resources,
    run_logged,
    unique,
    wait_for,
)
from deploy.readme_pi import CONFIG, NODE_NAME, edit_config, pi_steps

pytestmark = [pytest.mark.arm, pytest.mark.timeout(1800)]

ARCHES = {
    # wheel target: (Debian architecture, platform.machine() there)
    "aarch64": ("arm64", "aarch64"),
    "armv7": ("armhf", "armv7l"),
}
SRC = "/root/edgenode"
NODE_LOG = "/var/log/edgenode.log"
DEVICE = "thermo"
STEP_TIMEOUT = 600.0
"""Bound of one README step under emulation (pip install of the wheelhouse: the longest)."""
NODE_TIMEOUT = 120.0
HEARTBEAT = 5.0
"""The hub's heartbeat: generous, an emulated node is slow to answer pings."""
NODE_EXTRA = f"""
[[device]]
name = "{DEVICE}"
desired = {{ target_temp = 21 }}
"""
CONFIG_TEXT = """\
apiVersion: edgenode.io/v1
kind: Config
metadata: {name: pi-check}
spec:
  nodeSelector: {site: north}
  data: {mode: eco}
"""


def require_arm() -> None:
    """Skip only on purpose; anything else that stops the step is a failure."""
    if os.environ.get("EDGENODE_ARM_SMOKE", "1") == "0":
        pytest.skip("the ARM step is disabled by EDGENODE_ARM_SMOKE=0")
    why = " (EDGENODE_ARM_SMOKE=0 skips the ARM step)"
    if platform.machine() != "x86_64":
        pytest.fail(f"the ARM step runs on x86_64 hosts, this is {platform.machine()}{why}")
    status = engine()
    if not status.available:
        pytest.fail(f"the ARM step needs a container engine: {status.detail}{why}")


@dataclass
class Pi:
    arch: str
    machine: str
    container: Container
    hub: HubProcess
    ctl: Ctl
    timings: dict[str, float] = field(default_factory=dict)

    def edgenode(self, *args: str, check: bool = True) -> str:
        return self.container.exec(
            "/opt/edgenode/bin/edgenode", *args, check=check, timeout=NODE_TIMEOUT
        ).stdout

    def status(self) -> dict[str, Any]:
        text = self.edgenode("status", "--config", CONFIG, "--json", check=False)
        return json.loads(text) if text.strip() else {}

    def rr(self, topic: str, payload: dict[str, Any]) -> dict[str, Any]:
        """One request/response with the node as a device would (mosquitto_rr)."""
        out = self.container.exec(
            "mosquitto_rr", "-h", "127.0.0.1", "-V", "mqttv311", "-W", "60",
            "-t", f"$edge/devices/{DEVICE}/{topic}",
            "-e", f"$edge/devices/{DEVICE}/{topic}/accepted",
            "-m", json.dumps(payload), timeout=NODE_TIMEOUT,
        ).stdout  # fmt: skip
        return json.loads(out)  # type: ignore[no-any-return]


def pi_image(deb_arch: str, log: Path) -> str:
    """deploy/images/pi.sh's image (scripts/test.sh starts making it early, in the
    background: then this finds it up to date)."""
    run_logged([str(IMAGES / "pi.sh"), deb_arch], log)
    return f"edgenode-pi:bookworm-{deb_arch}"


def install(pi: Pi, work: Path, wheelhouse: Path, env: dict[str, str]) -> None:
    """README.md's steps (the systemd ones left out), timed."""
    c = pi.container
    wheels = list(wheelhouse.glob(f"edgenode-*_{pi.machine}.whl"))
    assert len(wheels) == 1, wheels
    c.exec("mkdir", "-p", SRC)
    docker("cp", str(wheels[0]), f"{c.name}:{SRC}/")
    # No package index here (nor at an offline site): pip takes the target's wheelhouse.
    c.sh("printf '[global]\\nno-index = true\\nfind-links = /wheelhouse\\n' > /etc/pip.conf")
    for step in pi_steps(pi.machine, systemd=False):
        started = time.monotonic()
        if step.where == "host":
            command = ["bash", "-e", "-o", "pipefail", "-c", step.command]
            run_logged(command, work / "host.log", cwd=work, **env)
            docker("cp", str(work / f"{NODE_NAME}.token"), f"{c.name}:{SRC}/")
            # The hub goes away now: the node must start and serve without it.
            pi.hub.stop()
        elif step.where == "start":
            start_node(pi)
        elif step.where == "edit":
            config = edit_config(c.exec("cat", CONFIG).stdout, pi.hub.link.rsplit("/v1/", 1)[0])
            (work / "edgenode.toml").write_text(config + NODE_EXTRA)
            docker("cp", str(work / "edgenode.toml"), f"{c.name}:{CONFIG}")
        else:
            result = docker(
                "exec", "-w", SRC, c.name, "bash", "-e", "-o", "pipefail", "-c", step.command,
                check=False, timeout=STEP_TIMEOUT,
            )  # fmt: skip
            assert result.returncode == 0, f"$ {step.command}\n{result.stdout}{result.stderr}"
        pi.timings[step.command.split("#")[0].strip()[:60]] = time.monotonic() - started


@pytest.fixture(scope="module", params=sorted(ARCHES))
def pi(
    request: pytest.FixtureRequest, build_log: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Pi]:
    require_arm()
    arch: str = request.param
    deb_arch, machine = ARCHES[arch]
    work = tmp_path_factory.mktemp(f"pi-{arch}")
    timings: dict[str, float] = {}
    started = time.monotonic()
    image = pi_image(deb_arch, build_log)
    timings["image (cached by its inputs)"] = time.monotonic() - started
    started = time.monotonic()
    wheelhouse = ROOT / "cross" / ".cache" / f"wheelhouse-{arch}"
    command = [str(IMAGES / "wheelhouse.sh"), "--target", arch, "--profile", "ci"]
    run_logged([*command, "--out", str(wheelhouse)], build_log)
    timings["wheel + wheelhouse"] = time.monotonic() - started
    with resources() as created:
        network = created.network(unique("pi-net"))
        docker("network", "create", network)
        # The hub runs on the host, listening on the network's gateway (the host's own
        # address on it), so the emulated node reaches it as it would a hub on its LAN.
        gateway = docker(
            "network", "inspect", "-f", "{{(index .IPAM.Config 0).Gateway}}", network
        ).stdout.strip()
        hub_dir = work / "hub"
        hub_dir.mkdir()
        hub = HubProcess(hub_dir, heartbeat=HEARTBEAT, listen=f"{gateway}:0")
        hub.start()
        try:
            ctl = Ctl(hub.api, hub.token_file, work)
            container = created.container(unique(f"pi-{arch}"))
            docker(
                "run", "-d", "--init", "--name", container.name, "--hostname", NODE_NAME,
                "--network", network, "-v", f"{wheelhouse}:/wheelhouse:ro", image,
                "sleep", "infinity",
            )  # fmt: skip
            pi = Pi(arch, machine, container, hub, ctl, timings)
            assert container.exec("uname", "-m").stdout.strip() == machine
            env = {
                "EDGECTL_HUB": hub.api,
                "EDGECTL_TOKEN": hub.token,
                "HOME": str(work),
                "PATH": f"{BIN}:/usr/bin:/bin",
            }
            install(pi, work, wheelhouse, env)
            yield pi
        finally:
            hub.stop()
            print(f"{arch}: " + "; ".join(f"{k}: {v:.1f} s" for k, v in timings.items()))


def start_node(pi: Pi) -> None:
    """What ``systemctl enable --now edgenode`` does on a Pi, without systemd: Mosquitto as
    Debian's service runs it (loopback, port 1883), then ``edgenode run`` in the
    background, waited for until its store is open (the unit's READY=1)."""
    c = pi.container
    c.exec("mosquitto", "-d")
    run = f"exec /opt/edgenode/bin/edgenode run --config {CONFIG} >>{NODE_LOG} 2>&1"
    docker("exec", "-d", c.name, "sh", "-c", run)
    started = time.monotonic()
    wait_for(
        "edgenode run to open its store",
        lambda: "node.db open" in c.exec("cat", NODE_LOG, check=False).stdout,
        NODE_TIMEOUT,
    )
    pi.timings["edgenode run under qemu: store open"] = time.monotonic() - started


def serving(pi: Pi) -> dict[str, Any] | None:
    status = pi.status()
    layer = status.get("device_layer") or {}
    return (
        status if DEVICE in (layer.get("devices") or []) and layer.get("broker_connected") else None
    )


def test_the_node_serves_a_device_twin_with_its_hub_unreachable(pi: Pi):
    started = time.monotonic()
    status = wait_for(f"{NODE_NAME} serving {DEVICE}", lambda: serving(pi), NODE_TIMEOUT)
    pi.timings["edgenode run: serving its device"] = time.monotonic() - started
    assert status["hub"]["state"] != "connected", status["hub"]
    started = time.monotonic()
    twin = pi.rr("twin/get", {"clientToken": "pi-get"})
    assert twin["desired"] == {"target_temp": 21}, twin
    assert twin["delta"] == {"target_temp": 21}, twin
    report = {"reported": {"target_temp": 21, "temperature": 19.5}, "clientToken": "pi-1"}
    accepted = pi.rr("twin/update", report)
    assert accepted["clientToken"] == "pi-1", accepted
    twin = pi.rr("twin/get", {"clientToken": "pi-get-2"})
    assert twin["reported"] == {"target_temp": 21, "temperature": 19.5}, twin
    assert twin["delta"] == {}, twin
    pi.timings["twin get, update, get (mosquitto_rr)"] = time.monotonic() - started


def test_it_says_backend_rust_and_the_targets_cpu(pi: Pi):
    assert pi.edgenode("version").split() == [
        "edgenode",
        "0.1.0",
        "backend=rust",
        f"arch={pi.machine}",
    ]
    text = pi.edgenode("status", "--config", CONFIG)
    assert f"node:      {NODE_NAME}  (edgenode 0.1.0, backend rust)" in text, text
    # psutil is Debian's (README: --system-site-packages), from the target's packages.
    where = pi.container.exec(
        "/opt/edgenode/bin/python", "-c", "import psutil; print(psutil.__file__)"
    ).stdout
    assert where.startswith("/usr/lib/python3/dist-packages/psutil/"), where


def test_the_node_joins_the_hub_once_it_is_reachable(pi: Pi):
    started = time.monotonic()
    pi.hub.start()  # the same address and port as before
    rows = wait_for(
        f"{NODE_NAME} Ready with LAG 0", lambda: pi.ctl.in_sync(NODE_NAME), NODE_TIMEOUT
    )
    pi.timings["hub up -> node Ready"] = time.monotonic() - started
    assert rows[NODE_NAME]["ARCH"] == pi.machine
    before = int(rows[NODE_NAME]["REVISION"])
    pi.ctl.ok("apply", "-f", "-", stdin=CONFIG_TEXT)

    def acked() -> dict[str, dict[str, str]] | None:
        rows = pi.ctl.in_sync(NODE_NAME)
        return rows if rows and int(rows[NODE_NAME]["REVISION"]) > before else None

    wait_for(f"{NODE_NAME} to ack the Config", acked, NODE_TIMEOUT)
    assert pi.status()["hub"]["state"] == "connected"
    # A clean stop: SIGTERM (through qemu) and the daemon exits.
    pid = json.loads(pi.container.exec("cat", "/var/lib/edgenode/edgenode.pid").stdout)["pid"]
    pi.container.sh(f"kill -TERM {pid}")
    wait_for(
        "edgenode run to exit",
        lambda: pi.container.exec("sh", "-c", f"kill -0 {pid}", check=False).returncode != 0,
        NODE_TIMEOUT,
    )
    assert "stopping" in pi.container.exec("cat", NODE_LOG).stdout

"""deploy/edgenode.service under systemd as PID 1, installed as README.md's Raspberry Pi
steps say (x86_64 wheel), joined to the hub image on a private network.

The module's fixture does the install once; the tests then check, in order: READY=1 and
the link, state owned by the dynamic user, the journal, Restart=always after SIGKILL, the
watchdog after SIGSTOP, and how a new token reaches the service; then the workload checks:
an App over its memory limit is OOM-killed and reported so, and an App outlives a watchdog
restart of the daemon with exactly one instance running.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from deploy.ctl import BIN, Ctl
from deploy.engine import (
    IMAGES,
    ROOT,
    Container,
    docker,
    resources,
    run_logged,
    unique,
    wait_for,
)
from deploy.readme_pi import CONFIG, NODE_NAME, edit_config, pi_steps

pytestmark = pytest.mark.timeout(900)

SYSTEMD_IMAGE = "edgenode-systemd:bookworm"
"""Kept between runs like the base image: docker's build cache makes a rebuild instant."""
BOOT_TIMEOUT = 60.0
ACTIVE_TIMEOUT = 60.0
SYNC_TIMEOUT = 60.0
TEST_WATCHDOG_SEC = 4
"""The unit's WatchdogSec=30s lowered by a drop-in, so a hang is seen in seconds."""
RESTART_TIMEOUT = 60.0
SRC = "/root/edgenode"
"""The node's copy of what the README's steps use: the wheel, deploy/edgenode.service."""
CONFIG_TEXT = """\
apiVersion: edgenode.io/v1
kind: Config
metadata: {{name: systemd-check}}
spec:
  nodeSelector: {{site: north}}
  data: {{round: "{round}"}}
"""
APP_TIMEOUT = 90.0
HOG = "b = bytearray(300 * 1024 * 1024)\nb[::4096] = b'x' * len(b[::4096])\nprint('survived')"
"""Touches 300 MiB: over a 48Mi memoryMax it can only be OOM-killed."""
SLEEPER_MARK = "edgenode-systemd-sleeper"
"""In the sleeper App's command line: how ps finds its instances."""


def app_text(name: str, command: list[str], **spec: object) -> str:
    body = {
        "apiVersion": "edgenode.io/v1",
        "kind": "App",
        "metadata": {"name": name},
        "spec": {"node": NODE_NAME, "command": command, **spec},
    }
    return json.dumps(body)  # JSON is YAML: edgectl apply reads it


@dataclass
class SystemdNode:
    """The container running systemd, with edgenode installed and enabled."""

    container: Container
    ctl: Ctl
    work: Path

    def systemctl(self, *args: str, check: bool = True) -> str:
        return self.container.exec("systemctl", *args, check=check).stdout.strip()

    def show(self, prop: str) -> str:
        return self.systemctl("show", "-p", prop, "--value", "edgenode")

    def main_pid(self) -> int:
        return int(self.show("MainPID"))

    def active(self) -> bool:
        return self.systemctl("is-active", "edgenode", check=False) == "active"

    def wait_active(self, other_than: int = 0) -> int:
        """Wait until the unit is active (READY=1 seen) with a main process other than
        ``other_than``; its pid."""

        def up() -> int | None:
            pid = self.main_pid()
            return pid if self.active() and pid not in (0, other_than) else None

        try:
            return wait_for("edgenode.service active", up, ACTIVE_TIMEOUT)
        except AssertionError:
            raise AssertionError(f"edgenode.service not active:\n{self.journal()}") from None

    def journal(self) -> str:
        return self.container.exec("journalctl", "-u", "edgenode", "--no-pager").stdout

    def app_on_node(self, name: str) -> dict[str, object] | None:
        """The node's entry in the App's status at the hub (None until it reported)."""
        result = self.ctl.run("get", "app", name, "-o", "json")
        if result.returncode != 0:
            return None
        nodes = (json.loads(result.stdout).get("status") or {}).get("nodes") or {}
        entry = nodes.get(NODE_NAME)
        return entry if isinstance(entry, dict) else None

    def wait_app(self, name: str, phase: str) -> dict[str, object]:
        def reached() -> dict[str, object] | None:
            entry = self.app_on_node(name)
            return entry if entry is not None and entry.get("phase") == phase else None

        try:
            return wait_for(f"App {name} {phase}", reached, APP_TIMEOUT)
        except AssertionError:
            raise AssertionError(
                f"App {name} not {phase}: {self.app_on_node(name)}\n{self.journal()[-4000:]}"
            ) from None

    @contextlib.contextmanager
    def short_watchdog(self) -> Iterator[int]:
        """The unit restarted with WatchdogSec=TEST_WATCHDOG_SEC (a drop-in), so a hang is
        seen in seconds; yields the new main pid; the drop-in goes and the unit restarts
        after."""
        drop_in = "/etc/systemd/system/edgenode.service.d/test-watchdog.conf"
        self.container.exec("mkdir", "-p", str(Path(drop_in).parent))
        self.container.sh(f"printf '[Service]\\nWatchdogSec={TEST_WATCHDOG_SEC}s\\n' > {drop_in}")
        try:
            self.systemctl("daemon-reload")
            self.systemctl("restart", "edgenode")
            yield self.wait_active()
        finally:
            self.container.exec("rm", "-f", drop_in)
            self.systemctl("daemon-reload")
            self.systemctl("restart", "edgenode")

    def wait_in_sync(self) -> dict[str, dict[str, str]]:
        return wait_for(
            f"{NODE_NAME} Ready with LAG 0", lambda: self.ctl.in_sync(NODE_NAME), SYNC_TIMEOUT
        )


def boot(name: str, network: str, wheelhouse: Path) -> Container:
    """systemd as PID 1, with the flags notes/containers.md found to work here."""
    docker(
        "run", "-d", "--name", name, "--hostname", NODE_NAME, "--network", network,
        "--cap-add", "SYS_ADMIN", "-v", "/sys/fs/cgroup:/sys/fs/cgroup:ro",
        "-v", f"{wheelhouse}:/wheelhouse:ro", SYSTEMD_IMAGE,
    )  # fmt: skip
    container = Container(name)

    def booted() -> bool:
        state = container.exec("systemctl", "is-system-running", check=False).stdout.strip()
        assert state not in ("degraded", "maintenance"), container.exec(
            "systemctl", "--failed", "--no-pager", check=False
        ).stdout
        return state == "running"

    wait_for("systemd to reach running", booted, BOOT_TIMEOUT)
    return container


def install_as_the_readme_says(node: Container, ctl: Ctl, work: Path, wheelhouse: Path) -> str:
    """Run README.md's steps; the output of the node's steps (for the record)."""
    wheels = list(wheelhouse.glob("edgenode-*_x86_64.whl"))
    assert len(wheels) == 1, wheels
    node.exec("mkdir", "-p", f"{SRC}/deploy")
    docker("cp", str(wheels[0]), f"{node.name}:{SRC}/")
    docker("cp", str(ROOT / "deploy" / "edgenode.service"), f"{node.name}:{SRC}/deploy/")
    offline_pip(node)
    env = ctl_env(ctl)
    output = []
    for step in pi_steps("x86_64", systemd=True):
        if step.where == "host":
            command = ["bash", "-e", "-o", "pipefail", "-c", step.command]
            run_logged(command, work / "host.log", cwd=work, **env)
            docker("cp", str(work / f"{NODE_NAME}.token"), f"{node.name}:{SRC}/")
        elif step.where == "edit":
            text = node.exec("cat", CONFIG).stdout
            (work / "edgenode.toml").write_text(edit_config(text, "ws://hub:8443"))
            docker("cp", str(work / "edgenode.toml"), f"{node.name}:{CONFIG}")
        else:
            result = docker(
                "exec", "-w", SRC, node.name, "bash", "-e", "-o", "pipefail", "-c", step.command,
                check=False, timeout=300,
            )  # fmt: skip
            output.append(f"$ {step.command}\n{result.stdout}{result.stderr}")
            assert result.returncode == 0, "\n".join(output)
    return "\n".join(output)


def offline_pip(node: Container) -> None:
    """No package index here (as on an offline site): pip takes every wheel from the
    wheelhouse mounted at /wheelhouse, also under sudo (which drops PIP_* variables)."""
    node.sh("printf '[global]\\nno-index = true\\nfind-links = /wheelhouse\\n' > /etc/pip.conf")


def ctl_env(ctl: Ctl) -> dict[str, str]:
    """How docs/edgectl.md points edgectl at a hub (the README step runs plain edgectl)."""
    return {
        "EDGECTL_HUB": ctl.hub,
        "EDGECTL_TOKEN": ctl.token_file.read_text().strip(),
        "HOME": str(ctl.home),
        "PATH": f"{BIN}:/usr/bin:/bin",
    }


def hub_health(hub: Container) -> str:
    return str(hub.inspect()["State"].get("Health", {}).get("Status", ""))


@pytest.fixture(scope="module")
def systemd_image(base_image: str, build_log: Path) -> str:
    before = docker("images", "-q", SYSTEMD_IMAGE).stdout.strip()
    run_logged(
        ["docker", "build", "--build-arg", f"BASE_IMAGE={base_image}", "-t", SYSTEMD_IMAGE,
         "-f", str(IMAGES / "systemd" / "Containerfile"), str(IMAGES / "systemd")],
        build_log,
    )  # fmt: skip
    if before and before != docker("images", "-q", SYSTEMD_IMAGE).stdout.strip():
        docker("rmi", before, check=False)  # the image this build replaced
    return SYSTEMD_IMAGE


@pytest.fixture(scope="module")
def node(
    systemd_image: str, hub_image: str, wheelhouse: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[SystemdNode]:
    work = tmp_path_factory.mktemp("systemd")
    with resources() as created:
        network = created.network(unique("net"))
        docker("network", "create", network)
        hub = created.container(unique("hub"))
        docker(
            "run", "-d", "--name", hub.name, "--network", network, "--network-alias", "hub",
            "-p", "127.0.0.1::8080", "--health-interval", "1s", hub_image,
        )  # fmt: skip
        wait_for("the hub's health check", lambda: hub_health(hub) == "healthy", 60)
        token_file = work / "admin.token"
        token_file.write_text(hub.exec("cat", "/var/lib/edgehub/admin.token").stdout)
        ctl = Ctl(f"http://127.0.0.1:{hub.port(8080)}", token_file, work)
        container = created.container(unique("systemd"))
        boot(container.name, network, wheelhouse)
        print(install_as_the_readme_says(container, ctl, work, wheelhouse))
        yield SystemdNode(container, ctl, work)


def test_the_readme_steps_bring_the_node_up_and_in_sync(node: SystemdNode):
    node.wait_active()
    assert node.show("Type") == "notify"
    assert node.show("NotifyAccess") == "main"
    rows = node.wait_in_sync()
    before = int(rows[NODE_NAME]["REVISION"])
    node.ctl.ok("apply", "-f", "-", stdin=CONFIG_TEXT.format(round=1))

    def acked() -> dict[str, dict[str, str]] | None:
        rows = node.ctl.in_sync(NODE_NAME)
        return rows if rows and int(rows[NODE_NAME]["REVISION"]) > before else None

    wait_for(f"{NODE_NAME} to ack the Config", acked, SYNC_TIMEOUT)
    assert node.ctl.nodes()[NODE_NAME]["ARCH"] == "x86_64"


def test_state_lives_in_var_lib_edgenode_owned_by_the_dynamic_user(node: SystemdNode):
    c = node.container
    user = c.sh(f"ps -o user= -p {node.main_pid()}").strip()
    assert user == "edgenode"
    uid = int(c.sh(f"ps -o uid= -p {node.main_pid()}").strip())
    assert 61184 <= uid <= 65519, uid  # systemd's range for dynamic users
    # StateDirectory= with DynamicUser=: /var/lib/edgenode links to /var/lib/private/edgenode.
    assert c.sh("readlink /var/lib/edgenode").strip() == "private/edgenode"
    owners = c.sh("stat -c '%U %a %n' /var/lib/private/edgenode /var/lib/private/edgenode/node.db")
    assert owners.split()[0::3] == ["edgenode", "edgenode"], owners
    # Everything else is read-only to it (ProtectSystem=strict): /etc/edgenode/token too.
    assert c.sh("stat -c '%U %a' /etc/edgenode/token").split() == ["root", "600"]


def test_journalctl_shows_the_daemons_log(node: SystemdNode):
    journal = node.journal()
    assert "edgenode 0.1.0 backend=rust arch=x86_64 starting" in journal, journal
    # Type=notify: systemd says "Started" only after READY=1, sent once the store is open.
    opened = journal.index("/var/lib/private/edgenode/node.db open (backend rust")
    assert opened < journal.index("Started edgenode.service", opened - 200), journal
    assert "connected to hub ws://hub:8443/v1/connect" in journal, journal


def test_a_killed_daemon_is_restarted(node: SystemdNode):
    pid = node.wait_active()
    restarts = int(node.show("NRestarts"))
    node.container.exec("kill", "-KILL", str(pid))
    new = node.wait_active(other_than=pid)
    assert new != pid
    assert int(node.show("NRestarts")) == restarts + 1
    node.wait_in_sync()


def test_the_watchdog_restarts_a_hung_daemon(node: SystemdNode):
    with node.short_watchdog() as pid:
        node.wait_in_sync()
        restarts = int(node.show("NRestarts"))
        hung_at = time.monotonic()
        node.container.exec("kill", "-STOP", str(pid))  # alive, but its event loop is stuck
        new = node.wait_active(other_than=pid)
        took = time.monotonic() - hung_at
        assert int(node.show("NRestarts")) == restarts + 1
        assert "Watchdog timeout" in node.journal()
        print(f"watchdog ({TEST_WATCHDOG_SEC} s): hung daemon replaced after {took:.1f} s")
        assert new != pid
    node.wait_active()
    node.wait_in_sync()


def test_a_new_token_reaches_the_service_by_a_restart(node: SystemdNode):
    """LoadCredential= copies /etc/edgenode/token when the service starts (the docs say:
    restart after changing it). The old token is revoked: the running service keeps its
    copy and is refused; after a restart it reads the new one."""
    node.wait_in_sync()
    node.ctl.ok("node", "revoke", NODE_NAME)
    node.systemctl("restart", "edgenode")  # drop the live link: reconnect with the old copy
    wait_for(
        "the hub to refuse the revoked token",
        lambda: "revoked" in node.journal().rsplit("Started edgenode", 1)[-1],
        SYNC_TIMEOUT,
    )
    token = node.ctl.node_add(NODE_NAME, "site=north")
    (node.work / "new.token").write_text(token + "\n")
    docker("cp", str(node.work / "new.token"), f"{node.container.name}:{SRC}/new.token")
    credential = "/run/credentials/edgenode.service/token"
    old = node.container.exec("cat", credential).stdout.strip()
    node.container.exec("install", "-m", "0600", f"{SRC}/new.token", "/etc/edgenode/token")
    # The running service does not see the new file: its credential is the copy of the old.
    assert node.container.exec("cat", credential).stdout.strip() == old != token
    node.systemctl("restart", "edgenode")
    node.wait_active()
    assert node.container.exec("cat", credential).stdout.strip() == token
    node.wait_in_sync()


def test_the_unit_leaves_room_for_workloads(node: SystemdNode):
    """Apps run in cgroups the daemon makes (Delegate=yes) and outlive a daemon crash
    (KillMode=process); the App checks themselves come with the App kind."""
    assert node.show("Delegate") == "yes"
    assert node.show("KillMode") == "process"
    assert node.show("MemoryDenyWriteExecute") == "no"
    assert node.show("ProtectControlGroups") == "no"


HOST_CGROUP_V2 = Path("/sys/fs/cgroup/cgroup.controllers").exists()
"""The container shares the host's cgroup hierarchy (no cgroup namespace here)."""


def test_an_app_over_its_memory_limit_is_stopped_under_the_unit(node: SystemdNode):
    """With cgroup v2, Delegate=yes hands the dynamic user its own subtree: the App gets a
    memory cgroup and is OOM-killed. With cgroup v1 (this project's machines) systemd
    delegates no controller hierarchy to an unprivileged user (the unit's memory cgroup
    stays root's), so the node limits the App's address space (rlimit) and reports
    MemoryLimit: enforced either way, and the status says how."""
    node.wait_active()
    spec = app_text(
        "hog", ["python3", "-c", HOG], restartPolicy="Never", resources={"memoryMax": "48Mi"}
    )
    node.ctl.ok("apply", "-f", "-", stdin=spec)
    try:
        entry = node.wait_app("hog", "Failed")
        expected = ("cgroup-v2", "OOMKilled") if HOST_CGROUP_V2 else ("rlimit", "MemoryLimit")
        assert (entry.get("limits"), entry.get("reason")) == expected, entry
        print(f"memoryMax under the unit: enforced by {expected[0]}, reported {expected[1]}")
    finally:
        node.ctl.ok("delete", "app", "hog")


def test_an_app_outlives_a_watchdog_restart_with_one_instance(node: SystemdNode):
    """KillMode=process: the watchdog kills the hung daemon, not its Apps; the daemon that
    systemd starts next stops the instance the hung one left (docs/apps.md, "What survives
    a restart") and starts the App again: exactly one instance, never two."""
    node.wait_active()
    command = ["python3", "-c", f"import time  # {SLEEPER_MARK}\nwhile True: time.sleep(1)"]
    node.ctl.ok("apply", "-f", "-", stdin=app_text("sleeper", command))

    def instances() -> list[str]:
        ps = node.container.sh("ps -eo pid=,args= | grep -v grep | grep -F " + SLEEPER_MARK)
        return [line.split()[0] for line in ps.splitlines() if line.strip()]

    try:
        with node.short_watchdog() as pid:
            first = node.wait_app("sleeper", "Running")
            assert instances() == [str(first["pid"])], instances()
            node.container.exec("kill", "-STOP", str(pid))
            node.wait_active(other_than=pid)
            assert "Watchdog timeout" in node.journal()
            node.wait_in_sync()  # the new daemon has started its Apps and is back on the hub

            def running_again() -> dict[str, object] | None:
                entry = node.app_on_node("sleeper")
                fresh = entry and entry.get("phase") == "Running" and entry["pid"] != first["pid"]
                return entry if fresh else None

            second = wait_for("the new daemon's App instance", running_again, APP_TIMEOUT)
            time.sleep(3.0)  # time enough for a wrongly started third copy to show
            assert instances() == [str(second["pid"])], instances()
    finally:
        node.ctl.ok("delete", "app", "sleeper")
    node.wait_active()
    node.wait_in_sync()

"""Apps under a real ``edgenode run`` process: an App from the hub runs, reports its status
through the outbox, restarts when killed and stops when deleted; after a ``kill -9`` of
the daemon with the hub unreachable the App runs again from local state, exactly once;
a clean stop (SIGTERM) stops every App within its grace period before the daemon exits.

The fake hub (``fakehub.py``) stands in for the hub until its App kind lands; the
kill -9 and clean-stop tests need no hub (the App is written into the store the way the
link writes it)."""

from __future__ import annotations

import json
import os
import signal
import socket
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from edgenode.store import Store
from node.conftest import NodeProcess
from node.fakehub import FakeHub, wait_for

PY = sys.executable
LOOP = "import time\nprint('up', flush=True)\nwhile True: time.sleep(1)"
STUBBORN = (
    "import signal, time\nsignal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
    "print('up', flush=True)\nwhile True: time.sleep(1)"
)


def app(name: str, script: str, node: str, revision: int = 1, **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "edgenode.io/v1",
        "kind": "App",
        "metadata": {
            "name": name,
            "generation": 1,
            "annotations": {"edgenode.io/revision": str(revision)},
        },
        "spec": {"node": node, "command": [PY, "-c", script], **spec},
    }


def preload(node: NodeProcess, *apps: dict[str, Any]) -> None:
    """Desired Apps in the node's store, as the link persists them."""
    node.data_dir.mkdir(parents=True, exist_ok=True)
    store = Store(str(node.data_dir / "node.db"))
    rows = [
        (f"App/default/{a['metadata']['name']}", n + 1, json.dumps(a, sort_keys=True).encode())
        for n, a in enumerate(apps)
    ]
    store.apply_changes(rows, len(rows))
    store.close()


def app_pids(node: NodeProcess, app_name: str) -> list[int]:
    """Live processes of one App of this node (by the environment the node gives it: the
    App's name and its work dir under this node's data_dir), from /proc."""
    marks = {f"EDGENODE_APP={app_name}".encode(), f"EDGENODE_NODE={node.name}".encode()}
    work = f"EDGENODE_APP_DIR={node.data_dir / 'apps' / app_name}".encode()
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
            env = set(Path(f"/proc/{entry}/environ").read_bytes().split(b"\0"))
        except OSError:
            continue
        if stat.rsplit(")", 1)[1].split()[0] in ("Z", "X"):
            continue
        if marks <= env and work in env:
            found.append(int(entry))
    return sorted(found)


@pytest.fixture
def node(node: NodeProcess) -> Iterator[NodeProcess]:
    """The node; afterwards, whatever of its Apps a failed test left running is killed."""
    yield node
    node.stop()
    apps = node.data_dir / "apps"
    names = [p.name for p in apps.iterdir()] if apps.exists() else []
    for name in names:
        for pid in app_pids(node, name):
            os.kill(pid, signal.SIGKILL)


def apps_json(node: NodeProcess) -> dict[str, Any]:
    try:
        return json.loads((node.data_dir / "apps.json").read_text())
    except (OSError, ValueError):
        return {}


def running(node: NodeProcess, name: str, timeout: float = 20.0, **extra: Any) -> dict[str, Any]:
    def check() -> dict[str, Any] | None:
        summary = apps_json(node)
        entry = summary.get("apps", {}).get(name)
        if not entry or entry.get("phase") != "Running":
            return None
        assert node.proc is not None
        if summary.get("pid") != node.proc.pid:
            return None
        return entry if all(entry.get(k) == v for k, v in extra.items()) else None

    return wait_for(check, timeout, f"App {name} Running {extra} (apps.json: {apps_json(node)})")


def log_of(node: NodeProcess, name: str) -> str:
    path = node.data_dir / "apps" / ".supervisor" / name / "output.log"
    return path.read_text(errors="replace") if path.exists() else ""


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def hub_statuses(hub: FakeHub, node: str, app_name: str) -> list[dict[str, Any]]:
    found = []
    for _, payload in sorted(hub.payloads(node).items()):
        record = json.loads(payload)
        if record.get("kind") == "app-status" and record["body"]["app"] == app_name:
            found.append(record["body"])
    return found


def test_an_app_from_the_hub_runs_reports_restarts_and_goes_when_deleted(
    node: NodeProcess, hub: FakeHub
):
    node.configure(hub.url)
    hub.publish([("App/default/sampler", app("sampler", LOOP, node.name, revision=3))])
    node.start()
    first = running(node, "sampler")["pid"]
    assert app_pids(node, "sampler") == [first]
    wait_for(
        lambda: any(s["phase"] == "Running" for s in hub_statuses(hub, node.name, "sampler")),
        20,
        "a Running app-status record at the hub",
    )
    status = next(s for s in hub_statuses(hub, node.name, "sampler") if s["phase"] == "Running")
    assert (status["revision"], status["pid"], status["runtime"]) == (3, first, "process")
    assert set(status) >= {"ready", "restarts", "lastExit", "startedAt", "limits", "reason"}

    os.kill(first, signal.SIGKILL)
    second = running(node, "sampler", restarts=1)["pid"]
    assert second != first
    assert app_pids(node, "sampler") == [second]

    shown = node.status()
    assert "apps:      1 (sampler Running ready, 1 restarts)" in shown.stdout

    hub.publish([("App/default/sampler", None)])
    wait_for(lambda: not app_pids(node, "sampler"), 20, "the App stopped")
    wait_for(lambda: not (node.data_dir / "apps" / "sampler").exists(), 10, "work dir removed")
    wait_for(
        lambda: any(s["reason"] == "Removed" for s in hub_statuses(hub, node.name, "sampler")),
        20,
        "a Removed app-status record at the hub",
    )


def test_after_kill_9_with_the_hub_down_each_app_runs_again_exactly_once(node: NodeProcess):
    node.configure(f"ws://127.0.0.1:{closed_port()}")  # a hub that never answers
    preload(node, app("alpha", LOOP, node.name), app("beta", LOOP, node.name))
    node.start()
    before = {name: running(node, name)["pid"] for name in ("alpha", "beta")}
    for name in before:  # each App wrote its line: it writes nothing more
        wait_for(lambda name=name: "up" in log_of(node, name), 10, f"{name} started")
    daemon = node.proc
    assert daemon is not None
    # kill -9: the Apps outlive it (as under systemd's KillMode=process; an App that
    # writes output meanwhile gets EPIPE: its pipe's reader is gone).
    daemon.kill()
    daemon.wait(10)
    for name, pid in before.items():
        assert app_pids(node, name) == [pid]

    node.start()  # still no hub
    after = {name: running(node, name)["pid"] for name in ("alpha", "beta")}
    for name in ("alpha", "beta"):
        assert after[name] != before[name]
        # Exactly one process of the App: the old one was stopped before the new start.
        assert app_pids(node, name) == [after[name]]
        assert not os.path.exists(f"/proc/{before[name]}/environ") or (
            before[name] not in app_pids(node, name)
        )
    assert "stopping 1 process(es) a previous daemon left running" in node.log(2)
    status = node.status_json()
    assert status["apps"]["apps"]["alpha"]["phase"] == "Running"
    assert status["apps"]["stale"] is False


def test_a_clean_stop_stops_every_app_within_its_grace_period(node: NodeProcess):
    node.configure(None)
    preload(
        node,
        app("polite", LOOP, node.name),
        app("stubborn", STUBBORN, node.name, terminationGracePeriodSeconds=1),
    )
    node.start()
    for name in ("polite", "stubborn"):
        running(node, name)
    wait_for(lambda: "up" in log_of(node, "stubborn"), 10, "the stubborn App's handler in place")
    started = time.monotonic()
    assert node.signal(signal.SIGTERM) == 0
    took = time.monotonic() - started
    assert 1.0 <= took < 8.0, took  # the stubborn one got its grace period, then SIGKILL
    assert app_pids(node, "polite") == []
    assert app_pids(node, "stubborn") == []
    summary = apps_json(node)
    assert {a["phase"] for a in summary["apps"].values()} == {"Stopped"}
    state = json.loads((node.data_dir / "apps/.supervisor/stubborn/state.json").read_text())
    assert state["instance"] is None
    assert state["last_exit"]["signal"] == "SIGKILL"
    shown = node.status()
    assert "as last recorded (the daemon is not running)" in shown.stdout

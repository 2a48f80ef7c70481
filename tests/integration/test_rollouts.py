"""Staged rollouts of Apps end to end (issue 14): a real ``edgehub serve``, five real
``edgenode run`` processes and real App processes (tiny Python scripts pushed as
artifacts; each run appends ``node revision time`` to a shared run log, so the test
knows every revision every node ever started).

- A good revision goes out wave by wave, in order, and completes (``edgectl rollout
  status`` exits 0); a bad one (it exits at once) fails in the canary wave: the canary
  rolls back by itself, the rollout aborts (exit 1), the canary runs the previous revision
  again, and no node of a later wave ever started the bad one.
- A canary cut off from the hub (the userspace fault proxy) while a bad revision (this
  one runs but never passes its health check) fails rolls back alone, keeps the report
  in its outbox, and the hub learns of it when the link returns.
- A node killed with SIGKILL with a switch committed but not confirmed restarts on the
  committed revision, whole, as one instance.
"""

from __future__ import annotations

import asyncio
import hashlib
import itertools
import json
import signal
import sqlite3
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from node.conftest import NodeProcess
from node.fakehub import Background, Proxy
from node.test_node_apps import app_pids, closed_port

from hub.conftest import RunningHub
from integration.fleet import Fleet, eventually, outbox_records, read_only

pytestmark = pytest.mark.timeout(240)

PY = sys.executable
MIN_READY = 1.5
DEADLINE = 8.0
WAIT = 60.0
GOOD = """import os, time
with open(os.environ["RUNLOG"], "a") as log:
    env = os.environ
    log.write(f"{env['EDGENODE_NODE']} {env['EDGENODE_APP_REVISION']} {time.time()}\\n")
print("serving VERSION", flush=True)
while True:
    time.sleep(1)
"""
BAD = """import os, sys, time
with open(os.environ["RUNLOG"], "a") as log:
    env = os.environ
    log.write(f"{env['EDGENODE_NODE']} {env['EDGENODE_APP_REVISION']} {time.time()}\\n")
print("broken VERSION", flush=True)
sys.exit(3)
"""
APP = """
apiVersion: edgenode.io/v1
kind: App
metadata: {{name: svc}}
spec:
  nodeSelector: {{}}
  artifacts: [{{name: app.py, sha256: "{digest}"}}]
  command: ["{py}", "app.py"]
  env: {{RUNLOG: "{runlog}"}}
  paused: {paused}{health}
  strategy:
    waves:
      - {{name: canary, nodeSelector: {{ring: canary}}}}
      - {{name: north, nodeSelector: {{site: north}}, maxUnavailable: 1}}
      - {{name: rest}}
    minReadySeconds: {min_ready}
    progressDeadlineSeconds: {deadline}
"""
FLEET = {
    "c1": {"ring": "canary", "site": "north"},
    "n1": {"site": "north"},
    "n2": {"site": "north"},
    "s1": {"site": "south"},
    "s2": {"site": "south"},
}
WAVES = [["c1"], ["n1", "n2"], ["s1", "s2"]]


class Rollout:
    """The fleet's App, its artifacts and its run log."""

    def __init__(self, tmp_path: Path, hub: RunningHub) -> None:
        self.tmp_path = tmp_path
        self.hub = hub
        self.runlog = tmp_path / "runs.log"
        self.runlog.touch()

    def push(self, template: str, version: str) -> str:
        path = self.tmp_path / f"app-{version}.py"
        path.write_text(template.replace("VERSION", version))
        pushed = self.hub.ctl("artifact", "push", str(path))
        assert pushed.returncode == 0, pushed.stderr
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
        assert pushed.stdout.strip() == digest
        return digest

    def apply(self, template: str, version: str, *, paused: bool = False, health: str = "") -> None:
        text = APP.format(
            paused=str(paused).lower(),
            health=f"\n  healthCheck: {health}" if health else "",
            digest=self.push(template, version),
            py=PY,
            runlog=self.runlog,
            min_ready=MIN_READY,
            deadline=DEADLINE,
        )
        status, body = self.hub.apply(text)
        assert status == 200, body

    def view(self) -> dict[str, Any]:
        status, view = self.hub.call("GET", "/v1/apps/svc")
        assert status == 200, view
        return dict(view.get("status") or {})

    def reached(self, revision: int, state: str) -> bool:
        rollout = self.view().get("rollout") or {}
        return rollout.get("revision") == revision and rollout.get("state") == state

    def runs(self) -> list[tuple[str, int, float]]:
        """(node, revision, time) of every App start, in order."""
        found = []
        for line in self.runlog.read_text().splitlines():
            node, revision, at = line.split()
            found.append((node, int(revision), float(at)))
        return found

    def started(self, revision: int) -> dict[str, float]:
        """Node → when it first started ``revision``."""
        first: dict[str, float] = {}
        for node, rev, at in self.runs():
            if rev == revision:
                first.setdefault(node, at)
        return first

    def status(self) -> Any:
        return self.hub.ctl("rollout", "status", "app/svc", "--timeout", "20")


def start_node(fleet: Fleet, hub: RunningHub, name: str, url: str | None = None) -> NodeProcess:
    token = hub.node_add(name, FLEET.get(name, {}))
    node = fleet.node(name)
    node.configure(url or hub.link, token, mqtt={"enabled": False})
    node.start()
    return node


def apps_json(node: NodeProcess) -> dict[str, Any]:
    try:
        entry = json.loads((node.data_dir / "apps.json").read_text())["apps"]["svc"]
    except (OSError, ValueError, KeyError):
        return {}
    return dict(entry)


def running(node: NodeProcess, revision: int) -> bool:
    entry = apps_json(node)
    return entry.get("revision") == revision and entry.get("phase") == "Running"


def pid_alive(pid: int) -> bool:
    return Path(f"/proc/{pid}").exists()


def test_a_good_revision_goes_wave_by_wave_a_bad_one_aborts_in_the_canary(tmp_path: Path):
    with Fleet(tmp_path) as fleet:
        hub = fleet.hub()
        app = Rollout(tmp_path, hub)
        nodes = {name: start_node(fleet, hub, name) for name in FLEET}

        async def scenario() -> None:
            # Revision 1: the first rollout, from nothing.
            app.apply(GOOD, "v1")
            await eventually(lambda: app.reached(1, "Complete"), "revision 1 complete", WAIT)
            assert sorted(app.started(1)) == sorted(FLEET)
            # Revision 2: wave by wave, in order, at most one north node at a time.
            began = time.monotonic()
            app.apply(GOOD, "v2")
            await eventually(lambda: app.reached(2, "Complete"), "revision 2 complete", WAIT)
            print(f"revision 2 out on 5 nodes in 3 waves: {time.monotonic() - began:.1f} s")
            done = await asyncio.to_thread(app.status)
            assert done.returncode == 0, done.stdout + done.stderr
            assert "app/svc revision 2 (from 1): Complete" in done.stdout
            assert "wave north: 2 of 2 done, 0 pending, 0 failed" in done.stdout
            started = app.started(2)
            assert sorted(started) == sorted(FLEET)
            for earlier, later in itertools.pairwise(WAVES):
                assert max(started[n] for n in earlier) < min(started[n] for n in later)
            # maxUnavailable 1: the second north node started after the first was done.
            first, second = sorted(WAVES[1], key=started.__getitem__)
            assert started[second] - started[first] >= MIN_READY
            for node in nodes.values():
                assert running(node, 2)
            good_pid = {name: apps_json(node)["pid"] for name, node in nodes.items()}
            # Revision 3 exits at once: the canary rolls back by itself, the hub aborts.
            began = time.monotonic()
            app.apply(BAD, "v3")
            await eventually(lambda: app.reached(3, "Aborted"), "revision 3 aborted", WAIT)
            print(f"revision 3 aborted in the canary: {time.monotonic() - began:.1f} s")
            aborted = await asyncio.to_thread(app.status)
            assert aborted.returncode == 1, aborted.stdout + aborted.stderr
            assert "wave canary: 0 of 1 done, 0 pending, 1 failed (c1)" in aborted.stdout
            assert "wave north: 0 of 2 done, 2 pending, 0 failed" in aborted.stdout
            assert "reason: wave 'canary': 1 of 1 nodes failed (threshold 0): c1: " in (
                aborted.stdout
            )
            await eventually(lambda: running(nodes["c1"], 2), "the canary back on revision 2")
            reported = await eventually(
                lambda: (app.view().get("nodes") or {}).get("c1", {}).get("rolledBack"),
                "the canary's rollback at the hub",
            )
            assert reported is True
            c1 = app.view()["nodes"]["c1"]
            assert (c1["revision"], c1["ready"], c1["failedRevision"]) == (2, True, 3)
            # Its own deadline, or the hub's abort if that came first.
            assert c1["rollbackReason"].startswith(
                (f"revision 3 not ready within {DEADLINE:g} s", "revision 3 not confirmed")
            )
            assert c1["rollbackReason"].endswith("rolled back to revision 2")
            described = await asyncio.to_thread(hub.ctl, "describe", "app", "svc")
            assert "rolledBack: true" in described.stdout
            assert "failedRevision: 3" in described.stdout
            back_pid = apps_json(nodes["c1"])["pid"]
            assert pid_alive(back_pid)
            assert back_pid != good_pid["c1"]
            # The hub sent the canary back to 2; no later wave ever received 3.
            _, assignment = hub.call("GET", "/v1/appassignments/svc.c1")
            assert assignment["spec"]["revision"] == 2
            await asyncio.sleep(2 * MIN_READY)
            assert set(app.started(3)) == {"c1"}
            for name in ("n1", "n2", "s1", "s2"):
                _, other = hub.call("GET", f"/v1/appassignments/svc.{name}")
                assert other["spec"]["revision"] == 2
                assert apps_json(nodes[name])["pid"] == good_pid[name]
                assert pid_alive(good_pid[name])
            # The canary does not retry 3 (no flip-flop): it started it only within the
            # deadline, and its log on the node says why it went back.
            count = sum(1 for node, rev, _ in app.runs() if rev == 3)
            await asyncio.sleep(2.0)
            assert sum(1 for node, rev, _ in app.runs() if rev == 3) == count
            assert "rolled back to revision 2" in nodes["c1"].log()
            # Undo: revision 2's spec again, as revision 4, on every node at once. What
            # runs everywhere is already that spec: nothing restarts, every node says 4.
            good_pid["c1"] = back_pid
            undone = await asyncio.to_thread(hub.ctl, "rollout", "undo", "app/svc")
            assert undone.returncode == 0, undone.stderr
            assert "rolled back to revision 2 (now revision 4)" in undone.stdout
            await eventually(lambda: app.reached(4, "Complete"), "the undo complete", WAIT)
            for name, node in nodes.items():
                assert running(node, 4), name
                assert apps_json(node)["pid"] == good_pid[name]
                assert (app.view()["nodes"][name]["revision"]) == 4
            assert app.started(4) == {}
            # Pause: a new revision moves nobody; resume: it goes out.
            paused = await asyncio.to_thread(hub.ctl, "rollout", "pause", "app/svc")
            assert paused.returncode == 0, paused.stderr
            app.apply(GOOD, "v5", paused=True)
            await eventually(lambda: app.reached(5, "Paused"), "revision 5 paused", WAIT)
            await asyncio.sleep(2 * MIN_READY)
            assert app.started(5) == {}
            waiting = await asyncio.to_thread(hub.ctl, "rollout", "status", "app/svc", "--no-watch")
            assert waiting.returncode == 2, waiting.stdout + waiting.stderr
            resumed = await asyncio.to_thread(hub.ctl, "rollout", "resume", "app/svc")
            assert resumed.returncode == 0, resumed.stderr
            await eventually(lambda: app.reached(5, "Complete"), "revision 5 complete", WAIT)
            assert sorted(app.started(5)) == sorted(FLEET)

        asyncio.run(scenario())


def test_a_canary_cut_off_from_the_hub_rolls_back_alone_and_reports_after(tmp_path: Path):
    background = Background()
    with Fleet(tmp_path) as fleet:
        hub = fleet.hub()
        app = Rollout(tmp_path, hub)
        link_port = int(hub.link.rsplit(":", 1)[1].split("/")[0])
        proxy = Proxy(background, link_port)
        proxy.start()
        try:
            canary = start_node(fleet, hub, "c1", proxy.url)
            rest = start_node(fleet, hub, "s1")

            async def scenario() -> None:
                app.apply(GOOD, "v1")
                await eventually(lambda: app.reached(1, "Complete"), "revision 1 complete", WAIT)
                # Revision 2 runs but never passes its health check (nothing listens).
                health = f"{{tcp: {closed_port()}, periodSeconds: 0.5}}"
                app.apply(GOOD, "v2", health=health)
                await eventually(lambda: "c1" in app.started(2), "the canary trying 2", WAIT)
                proxy.blackhole()
                proxy.cut()
                await eventually(
                    lambda: canary.link_state().get("state") != "connected", "the canary offline"
                )
                # Alone: back on 1 after the deadline, the report waiting in its outbox.
                await eventually(lambda: running(canary, 1), "the canary back on 1", WAIT)

                def queued() -> dict[str, Any] | None:
                    for record in outbox_records(canary):
                        body = record.get("body") or {}
                        if record.get("kind") == "app-status" and body.get("rolledBack"):
                            return dict(body)
                    return None

                local = await asyncio.to_thread(canary.status)
                assert "svc Running ready, rolled back from revision 2" in local.stdout
                body = await eventually(queued, "the rollback report in the outbox")
                assert (body["revision"], body["failedRevision"]) == (1, 2)
                assert body["rollbackReason"].startswith("revision 2 not ready within")
                assert "health check failed" in body["rollbackReason"]
                # The hub has not heard: the canary is pending, not failed, while offline.
                assert app.reached(2, "Progressing")
                assert not (app.view().get("nodes") or {}).get("c1", {}).get("rolledBack")
                proxy.blackhole(False)
                await eventually(lambda: app.reached(2, "Aborted"), "the abort", WAIT)
                c1 = app.view()["nodes"]["c1"]
                assert (c1["revision"], c1["rolledBack"], c1["failedRevision"]) == (1, True, 2)
                rollout = app.view()["rollout"]
                assert "c1: rolled back from revision 2" in rollout["reason"]
                assert set(app.started(2)) == {"c1"}
                assert running(rest, 1)

            asyncio.run(scenario())
        finally:
            proxy.stop()
            background.close()


def rollout_record(node: NodeProcess) -> dict[str, Any]:
    """The node's committed rollout record of App svc (its store, read-only)."""
    try:
        db = read_only(node.data_dir / "node.db")
    except sqlite3.Error:
        return {}
    try:
        row = db.execute("SELECT doc FROM twins WHERE device = '@app-rollout/svc'").fetchone()
    except sqlite3.Error:
        row = None
    finally:
        db.close()
    return dict(json.loads(row[0])) if row else {}


def test_a_node_killed_in_the_middle_of_a_switch_restarts_on_a_complete_revision(
    tmp_path: Path,
):
    with Fleet(tmp_path) as fleet:
        hub = fleet.hub()
        app = Rollout(tmp_path, hub)
        node = start_node(fleet, hub, "c1")

        async def scenario() -> None:
            app.apply(GOOD, "v1")
            await eventually(lambda: app.reached(1, "Complete"), "revision 1 complete", WAIT)
            app.apply(GOOD, "v2")

            def switching() -> dict[str, Any] | None:
                record = rollout_record(node)
                current = record.get("current") or {}
                return record if current.get("revision") == 2 else None

            record = await eventually(switching, "the switch to 2 committed", WAIT)
            node.signal(signal.SIGKILL)
            # Killed with 2 committed as current, 1 kept as the previous good revision.
            assert not record["confirmed"]
            assert record["good"]["revision"] == 1
            node.start()
            await eventually(lambda: running(node, 2), "the node back on revision 2", WAIT)
            await eventually(lambda: app.reached(2, "Complete"), "revision 2 complete", WAIT)
            # What runs is revision 2, whole: its artifact in the work dir, one instance.
            placed = (node.data_dir / "apps" / "svc" / "app.py").read_bytes()
            assert b"serving v2" in placed
            pid = apps_json(node)["pid"]
            assert pid_alive(pid)
            environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
            assert b"EDGENODE_APP_REVISION=2" in environ
            assert app_pids(node, "svc") == [pid]  # the killed daemon's instance is gone
            record = await eventually(
                lambda: (r := rollout_record(node)).get("confirmed") and r, "2 confirmed"
            )
            assert record["good"] is None
            assert record["failedRevision"] is None

        asyncio.run(scenario())

"""Staged Apps in the App service on a real daemon host (real store, real processes): the
node runs what its AppAssignment names, nothing before it has one; a revision whose
artifact arrives with the wrong digest is rolled back at once to the previous good one
(whose artifact the cache keeps), reported, committed to the store, and not tried again —
also not after a daemon restart."""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path
from typing import Any

import pytest
from apps_harness import Harness, body, run

from edgenode.apps.artifacts import ArtifactDigestError
from edgenode.apps.rollout import record_key
from edgenode.node import daemon as daemon_module
from edgenode.store import Store

PY = sys.executable
GOOD = "a" * 64
BAD = "b" * 64
SLEEP = "import time\nwhile True: time.sleep(1)"
STRATEGY = {"waves": [{"name": "all"}], "minReadySeconds": 0.3, "progressDeadlineSeconds": 30}


class Source:
    """An artifact source holding GOOD; fetching anything else arrives damaged."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.kept: set[str] = set()

    def cached(self, digest: str) -> Path | None:
        return self.path if digest == GOOD else None

    def keep(self, digests: Any) -> None:
        self.kept = set(digests)

    async def fetch(self, digest: str, progress: Any = None) -> Path:
        await asyncio.sleep(0.05)
        raise ArtifactDigestError(f"artifact {digest[:12]} arrived with digest {'0' * 12}")


def template(digest: str) -> dict[str, Any]:
    return {
        "nodeSelector": {},
        "artifacts": [{"name": "main.py", "sha256": digest}],
        "command": [PY, "main.py"],
        "strategy": STRATEGY,
    }


def assignment(node: str, revision: int, digest: str) -> bytes:
    spec = {"app": "svc", "node": node, "revision": revision, "template": template(digest)}
    return body("AppAssignment", f"svc.{node}", spec, revision=None)


def stored_record(harness: Harness) -> dict[str, Any]:
    assert harness.daemon is not None
    data = harness.daemon.store.get_twin(record_key("svc"))
    return dict(json.loads(data)) if data else {}


def test_the_assignment_runs_a_digest_mismatch_rolls_back_at_once_for_good(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    program = tmp_path / "main.py"
    program.write_text("import time\nprint('up', flush=True)\nwhile True: time.sleep(1)\n")
    harness = Harness(tmp_path)
    source = Source(program)
    monkeypatch.setattr(daemon_module, "ArtifactDownloads", lambda *a, **k: source)

    async def start(h: Harness) -> None:
        await h.start()

    async def scenario() -> None:
        await start(harness)
        try:
            node = harness.node
            # The App says revision 3, but nothing is assigned here yet: nothing runs.
            harness.apply("App", "svc", body("App", "svc", template(BAD), revision=3))
            await asyncio.sleep(0.5)
            assert harness.statuses("svc") == []
            assert stored_record(harness) == {}
            # Assigned revision 1: it runs, and is confirmed after minReadySeconds.
            harness.apply("AppAssignment", f"svc.{node}", assignment(node, 1, GOOD))
            first = await harness.phase("svc", "Running", revision=1, ready=True)
            assert first["readySince"] > 0
            assert first["rolledBack"] is False
            assert first["failedRevision"] is None
            await harness.until(lambda: stored_record(harness).get("confirmed"), 10, "confirmed")
            assert stored_record(harness)["current"]["revision"] == 1
            # Assigned revision 2: its artifact arrives damaged, a failure no retry fixes.
            harness.apply("AppAssignment", f"svc.{node}", assignment(node, 2, BAD))
            back = await harness.phase("svc", "Running", revision=1, rolledBack=True)
            assert back["failedRevision"] == 2
            reason = back["rollbackReason"]
            assert reason.startswith("revision 2 failed: Failed (DigestMismatch) artifact")
            assert reason.endswith("; rolled back to revision 1")
            assert any(s.get("reason") == "DigestMismatch" for s in harness.statuses("svc"))
            assert back["pid"] != first["pid"]
            record = stored_record(harness)
            assert record["current"]["revision"] == 1
            assert (record["failedRevision"], record["rolledBack"]) == (2, True)
            assert GOOD in source.kept
            await asyncio.sleep(0.5)
            assert harness.last("svc")["revision"] == 1  # 2 is not tried again
        finally:
            await harness.stop()
        # A new daemon on the same store: revision 1 again, the rollback still reported,
        # revision 2 (still assigned) not tried.
        again = Harness(tmp_path)
        await start(again)
        try:
            status = await again.phase("svc", "Running", revision=1)
            assert (status["rolledBack"], status["failedRevision"]) == (True, 2)
            await asyncio.sleep(0.5)
            assert all(s["revision"] == 1 for s in again.statuses("svc"))
            # A newer revision is taken (and fails the same way: back to 1 again).
            node = again.node
            again.apply("AppAssignment", f"svc.{node}", assignment(node, 3, BAD))
            await again.phase("svc", "Running", revision=1, failedRevision=3)
        finally:
            await again.stop()
        store = Store(str(tmp_path / "data" / "node.db"))
        try:
            assert json.loads(store.get_twin(record_key("svc")) or b"{}")["failedRevision"] == 3
        finally:
            store.close()

    run(scenario)


def test_a_first_revision_that_cannot_run_is_stopped_and_reported(tmp_path: Path):
    harness = Harness(tmp_path)

    async def scenario() -> None:
        await harness.start()
        try:
            node = harness.node
            harness.apply("App", "svc", body("App", "svc", template(GOOD), revision=1))
            bad = assignment(node, 1, "not-a-digest")
            harness.apply("AppAssignment", f"svc.{node}", bad)
            last = await harness.phase("svc", "Stopped", failedRevision=1)
            assert last["reason"] == "Removed"
            assert last["rolledBack"] is False
            assert last["rollbackReason"] == (
                "revision 1 failed: Failed (InvalidSpec) spec.artifacts[0].sha256: must be 64 "
                "lowercase hex digits; no previous good revision to go back to: stopped"
            )
            assert any(s["reason"] == "InvalidSpec" for s in harness.statuses("svc"))
            record = stored_record(harness)
            assert record["current"] is None
            assert record["failedRevision"] == 1
            # A newer revision is taken.
            sleeper = {**template(GOOD), "artifacts": [], "command": [PY, "-c", SLEEP]}
            spec = {"app": "svc", "node": node, "revision": 2, "template": sleeper}
            harness.apply(
                "AppAssignment", f"svc.{node}", body("AppAssignment", f"svc.{node}", spec, None)
            )
            await harness.phase("svc", "Running", revision=2, ready=True)
        finally:
            await harness.stop()

    run(scenario)

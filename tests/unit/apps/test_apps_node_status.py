"""``edgenode status`` and the node's status record show the Apps from ``apps.json``."""

from __future__ import annotations

import json
import os
from pathlib import Path

from edgenode.node.state import _apps, _apps_text
from edgenode.node.status import collect_status

SUMMARY = {
    "pid": 4242,
    "enabled": True,
    "limits": "cgroup-v1",
    "engine": None,
    "engine_reason": "no docker on PATH; no podman on PATH",
    "apps": {
        "sampler": {"phase": "Running", "ready": True, "restarts": 0, "pid": 7, "reason": ""},
        "web": {
            "phase": "CrashLoopBackOff",
            "ready": False,
            "restarts": 4,
            "pid": None,
            "reason": "Error",
        },
    },
}


def test_the_apps_lines_of_edgenode_status(tmp_path: Path):
    (tmp_path / "apps.json").write_text(json.dumps(SUMMARY))
    running = _apps(tmp_path, 4242)
    assert running is not None
    assert running["stale"] is False
    assert _apps_text(running) == [
        "apps:      2 (sampler Running ready, web CrashLoopBackOff: Error, 4 restarts)",
        "           limits by cgroup-v1; container engine: none "
        "(no docker on PATH; no podman on PATH)",
    ]
    stopped = _apps(tmp_path, None)
    assert stopped is not None
    assert stopped["stale"] is True
    assert _apps_text(stopped)[0].endswith("; as last recorded (the daemon is not running)")
    rolled = {**SUMMARY, "apps": {"svc": {"phase": "Running", "ready": True, "revision": 2,
                                          "rolledBack": True, "failedRevision": 3}}}  # fmt: skip
    (tmp_path / "apps.json").write_text(json.dumps(rolled))
    assert _apps_text(_apps(tmp_path, 4242))[0] == (
        "apps:      1 (svc Running ready, rolled back from revision 3)"
    )
    assert _apps(tmp_path / "nowhere", 1) is None
    assert _apps_text(None) == []


def test_the_node_status_record_carries_the_engine_and_counts(tmp_path: Path):
    (tmp_path / "apps.json").write_text(json.dumps({**SUMMARY, "engine": "docker 20.10.24"}))
    body = collect_status(str(tmp_path), {}, 0.0, False)
    assert body["apps"] == {
        "enabled": True,
        "engine": "docker 20.10.24",
        "engine_reason": "no docker on PATH; no podman on PATH",
        "limits": "cgroup-v1",
        "count": 2,
        "running": 1,
    }
    os.unlink(tmp_path / "apps.json")
    assert collect_status(str(tmp_path), {}, 0.0, False)["apps"] is None

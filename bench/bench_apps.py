"""From ``apply`` to every targeted node ``Running``: the App kind end to end.

A real ``edgehub serve`` and ``--nodes`` real ``edgenode run`` processes (no broker: the
device layer is off) on this machine. The program is pushed as an artifact, then an App
selecting every node is applied; the clock runs from the apply until the hub's view of the
App says every targeted node runs the App's current revision and is ready (what ``edgectl
get apps`` shows as READY n/n, UP-TO-DATE n). That first time includes each node fetching
the artifact over its link. Then ``--changes`` new revisions (an env change: every node
stops the App and starts the new one) are timed the same way. Writes
bench/results/apps.json.

    .venv/bin/python bench/bench_apps.py --nodes 20
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from edgehub.testing import HubProcess

ROOT = Path(__file__).resolve().parent.parent
PROGRAM = (
    b"import os, time\nprint('round', os.environ['ROUND'], flush=True)\nwhile True: time.sleep(1)\n"
)
"""The App: starts at once and stays up (ready while it runs: no health check)."""
LIMIT = 300.0
"""Seconds one change may take before the benchmark gives up."""
POLL = 0.05


def node_config(directory: Path, name: str, hub: HubProcess, token: str) -> Path:
    directory.mkdir(parents=True)
    (directory / "token").write_text(token + "\n")
    config = directory / "node.toml"
    config.write_text(
        f'[node]\nname = "{name}"\ndata_dir = "{directory / "data"}"\n\n'
        f'[hub]\nurl = "{hub.link}"\ntoken_file = "{directory / "token"}"\n'
        "backoff_base = 0.2\nbackoff_cap = 1.0\n\n"
        '[mqtt]\nenabled = false\n\n[metrics]\nlisten = ""\n\n[status]\ninterval = 5.0\n\n'
        '[log]\nlevel = "warning"\n'
    )
    return config


def app_document(digest: str, round_: int) -> str:
    body = {
        "apiVersion": "edgenode.io/v1",
        "kind": "App",
        "metadata": {"name": "bench-app"},
        "spec": {
            "nodeSelector": {"bench": "apps"},
            "artifacts": [{"name": "app.py", "sha256": digest}],
            "command": [sys.executable, "app.py"],
            "env": {"ROUND": str(round_)},
            "terminationGracePeriodSeconds": 2,
        },
    }
    return json.dumps(body)


def all_running(hub: HubProcess, nodes: int) -> dict[str, Any] | None:
    """The App's status once every node is ready at the current revision."""
    status, found = hub.call("GET", "/v1/apps/bench-app")
    if status != 200:
        return None
    summary = (found.get("status") or {}).get("summary") or {}
    done = summary.get("ready") == nodes == summary.get("upToDate") == summary.get("desired")
    return found["status"] if done else None


def timed_apply(hub: HubProcess, text: str, nodes: int) -> float:
    start = time.perf_counter()
    status, body = hub.apply(text)
    assert status == 200, body
    deadline = time.monotonic() + LIMIT
    while all_running(hub, nodes) is None:
        assert time.monotonic() < deadline, f"not all {nodes} nodes Running within {LIMIT} s"
        time.sleep(POLL)
    return time.perf_counter() - start


def measure(nodes: int, changes: int, workdir: Path) -> dict[str, Any]:
    hub = HubProcess(workdir / "hub", heartbeat=5.0)
    hub.data.mkdir(parents=True)
    hub.start()
    procs: list[subprocess.Popen[bytes]] = []
    try:
        for i in range(nodes):
            name = f"node-{i:02d}"
            config = node_config(workdir / name, name, hub, hub.node_add(name, {"bench": "apps"}))
            procs.append(
                subprocess.Popen(
                    [sys.executable, "-m", "edgenode", "run", "--config", str(config)],
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                )
            )
        deadline = time.monotonic() + LIMIT
        while True:
            _, listing = hub.call("GET", "/v1/nodes")
            ready = [i for i in listing["items"] if i["status"].get("state") == "Ready"]
            if len(ready) == nodes:
                break
            assert time.monotonic() < deadline, f"{len(ready)} of {nodes} nodes connected"
            time.sleep(0.2)
        digest = hashlib.sha256(PROGRAM).hexdigest()
        status, body = hub.call(
            "PUT",
            f"/v1/artifacts/{digest}?offset=0&size={len(PROGRAM)}",
            raw=PROGRAM,
            content_type="application/octet-stream",
        )
        assert status in (200, 201), body
        first = timed_apply(hub, app_document(digest, 0), nodes)
        revisions = [
            timed_apply(hub, app_document(digest, n), nodes) for n in range(1, changes + 1)
        ]
    finally:
        for proc in procs:
            proc.send_signal(signal.SIGTERM)
        for proc in procs:
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)
        hub.stop()
    return {
        "nodes": nodes,
        "first_apply_seconds": round(first, 3),
        "new_revision_seconds": [round(t, 3) for t in revisions],
        "new_revision_median_seconds": round(statistics.median(revisions), 3)
        if revisions
        else None,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--nodes", type=int, default=20)
    parser.add_argument("--changes", type=int, default=3, help="new revisions timed")
    parser.add_argument("--output", default=str(ROOT / "bench" / "results" / "apps.json"))
    args = parser.parse_args()
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory() as workdir:
        result = measure(args.nodes, args.changes, Path(workdir))
    report = {
        **result,
        "machine": {
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
            "python": platform.python_version(),
            "load_average_before": load_before,
            "load_average_after": os.getloadavg(),
        },
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
    }
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    Path(args.output).write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())

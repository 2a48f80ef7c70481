"""The hub's event loop during a large apply: how long does it stop answering?

A real ``edgehub serve`` with ``--nodes`` simulated nodes connected (real NodeProtocol over
real WebSockets, in a separate process so they do not share this process's GIL) takes one
``POST /v1/apply`` of ``--documents`` Devices (spread over the nodes). Meanwhile a probe
calls ``/healthz`` every ``PROBE_INTERVAL`` seconds: a request that takes long is the
hub's loop not answering (no heartbeat, fan-out or API answer in that time either). Reports
the longest and the 99th-percentile probe latency during the apply, the apply's own time,
and the time until every node acknowledged the last revision; writes
bench/results/apply.json.

    .venv/bin/python bench/bench_apply.py --documents 1000 --nodes 200
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

from edgehub.simnode import SimNode
from edgehub.testing import HubProcess, raise_fd_limit

ROOT = Path(__file__).resolve().parent.parent
PROBE_INTERVAL = 0.005
"""Seconds between two health probes (each waits for its answer first)."""
SYNC_LIMIT = 120.0


def simulate(url: str, tokens_file: str) -> None:
    """The simulated fleet (a child process): connect every node, print READY, run until
    killed."""
    tokens: dict[str, str] = json.loads(Path(tokens_file).read_text())
    # Lower priority than the hub: on a small machine the fleet's own work (its nodes
    # decoding and acking changes) must not be what delays the hub's answers.
    os.nice(10)

    async def fleet() -> None:
        nodes = [SimNode(url, token, name) for name, token in tokens.items()]
        tasks = [asyncio.create_task(node.run_once(open_timeout=60.0)) for node in nodes]
        async with asyncio.timeout(SYNC_LIMIT):
            await asyncio.gather(*(node.welcomed.wait() for node in nodes))
        print("READY", flush=True)
        await asyncio.gather(*tasks)

    asyncio.run(fleet())


class Probe:
    """Calls ``/healthz`` in a loop from a thread; latencies of the calls started while
    ``recording``."""

    def __init__(self, api: str) -> None:
        self.url = api + "/healthz"
        self.recording = False
        self.latencies: list[float] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(30)

    def _run(self) -> None:
        while not self._stop.is_set():
            recording = self.recording
            start = time.perf_counter()
            with urllib.request.urlopen(self.url, timeout=30) as response:
                response.read()
            if recording:
                self.latencies.append(time.perf_counter() - start)
            time.sleep(PROBE_INTERVAL)


def documents(count: int, nodes: int) -> str:
    return "\n---\n".join(
        f"apiVersion: edgenode.io/v1\nkind: Device\n"
        f"metadata: {{name: dev-{i}, labels: {{batch: b{i % 10}}}}}\n"
        f'spec: {{node: node-{i % nodes}, desired: {{power: "on", level: {i}}}, '
        f'description: "device {i} of the apply benchmark"}}'
        for i in range(count)
    )


def all_acked(hub: HubProcess, revision: int) -> bool:
    _, listing = hub.call("GET", "/v1/nodes")
    return all(item["status"]["revision"] >= revision for item in listing["items"])


def measure(count: int, nodes: int, workdir: Path) -> dict[str, Any]:
    raise_fd_limit()
    hub = HubProcess(workdir / "hub", heartbeat=5.0, many_files=True)
    hub.data.mkdir(parents=True)
    hub.start()
    try:
        tokens = {f"node-{i}": hub.node_add(f"node-{i}") for i in range(nodes)}
        tokens_file = workdir / "tokens.json"
        tokens_file.write_text(json.dumps(tokens))
        fleet = subprocess.Popen(
            [sys.executable, __file__, "--simulate", hub.link, str(tokens_file)],
            stdout=subprocess.PIPE,
            text=True,
        )
        try:
            assert fleet.stdout is not None
            assert fleet.stdout.readline().strip() == "READY", "the simulated fleet failed"
            probe = Probe(hub.api)
            probe.start()
            time.sleep(0.5)
            probe.recording = True
            start = time.perf_counter()
            status, body = hub.call(
                "POST",
                "/v1/apply",
                raw=documents(count, nodes).encode(),
                content_type="application/yaml",
            )
            applied = time.perf_counter() - start
            assert status == 200, body
            time.sleep(0.2)
            probe.recording = False
            revision = int(body["revision"])
            deadline = time.monotonic() + SYNC_LIMIT
            while not all_acked(hub, revision):
                assert time.monotonic() < deadline, "nodes did not acknowledge in time"
                time.sleep(0.05)
            synced = time.perf_counter() - start
            probe.stop()
        finally:
            fleet.kill()
            fleet.wait(30)
    finally:
        hub.stop()
    latencies = sorted(probe.latencies)
    return {
        "documents": count,
        "nodes": nodes,
        "probes": len(latencies),
        "longest_stall_ms": round(1000 * latencies[-1], 1),
        "p99_probe_ms": round(1000 * latencies[int(0.99 * (len(latencies) - 1))], 1),
        "median_probe_ms": round(1000 * statistics.median(latencies), 2),
        "apply_seconds": round(applied, 3),
        "all_nodes_acked_seconds": round(synced, 3),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--documents", type=int, default=1000)
    parser.add_argument("--nodes", type=int, default=200)
    parser.add_argument("--runs", type=int, default=3, help="the median run is reported")
    parser.add_argument("--output", default=str(ROOT / "bench" / "results" / "apply.json"))
    parser.add_argument("--simulate", nargs=2, metavar=("URL", "TOKENS"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.simulate:
        simulate(*args.simulate)
        return 0
    runs = []
    for run in range(args.runs):
        with tempfile.TemporaryDirectory() as workdir:
            result = measure(args.documents, args.nodes, Path(workdir))
        print(f"run {run + 1}: {json.dumps(result)}", flush=True)
        runs.append(result)
    runs.sort(key=lambda r: r["longest_stall_ms"])
    report = {
        "median_run": runs[len(runs) // 2],
        "runs": runs,
        "machine": {
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
            "python": platform.python_version(),
            "load_average": os.getloadavg(),
        },
        "date": time.strftime("%Y-%m-%d"),
    }
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    Path(args.output).write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report["median_run"], indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Fleet benchmark of the hub: N simulated nodes (real NodeProtocol over real WebSockets on
loopback, one process) against a real ``edgehub serve`` subprocess.

Measures: hub RSS per connected node; the time for one Config targeted at every node to be
received and acknowledged by all N (p50/p99/max, node side); the time for all N to
reconnect and resync after the hub is restarted (SIGTERM, start again), with retry-after
answers honoured. Writes bench/results/hub-N.json.

    .venv/bin/python bench/bench_hub.py --nodes 1000
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import random
import re
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from edgehub.simnode import SimNode

ROOT = Path(__file__).resolve().parent.parent


def rss_kib(pid: int) -> int:
    text = Path(f"/proc/{pid}/status").read_text()
    return int(re.search(r"VmRSS:\s+(\d+)", text).group(1))


def raise_fd_limit() -> None:
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


class Hub:
    def __init__(self, data: Path, max_handshakes: int) -> None:
        self.data = data
        self.listen = "127.0.0.1:0"
        self.api_listen = "127.0.0.1:0"
        self.proc: subprocess.Popen[str] | None = None
        self.max_handshakes = max_handshakes

    def start(self) -> None:
        cmd = [
            sys.executable,
            "-m",
            "edgehub.cli",
            "serve",
            "--data",
            str(self.data),
            "--listen",
            self.listen,
            "--api-listen",
            self.api_listen,
            "--max-handshakes",
            str(self.max_handshakes),
            "--retry-after",
            "1",
            "--handshake-timeout",
            "30",
        ]
        log = (self.data / "hub.log").open("a")
        self.proc = subprocess.Popen(
            cmd, stdout=subprocess.PIPE, stderr=log, text=True, preexec_fn=raise_fd_limit
        )
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            if m := re.search(r"node links on (\S+)", line):
                self.link = m.group(1)
                self.listen = self.link.split("//")[1].split("/")[0]
            if m := re.search(r"operator API on (\S+)", line):
                self.api = m.group(1)
                self.api_listen = self.api.split("//")[1]
                break

    def stop(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(60)

    def call(self, method: str, path: str, body: bytes | None = None) -> object:
        token = (self.data / "admin.token").read_text().strip()
        req = urllib.request.Request(self.api + path, data=body, method=method)
        req.add_header("Authorization", f"Bearer {token}")
        with urllib.request.urlopen(req, timeout=120) as resp:
            return json.loads(resp.read())


async def keep_connected(node: SimNode, stop: asyncio.Event, refused: list[int]) -> None:
    while not stop.is_set():
        try:
            result = await node.run_once(open_timeout=60)
        except (TimeoutError, OSError):
            result = None
        if stop.is_set():
            return
        delay = random.uniform(0.2, 1.0)
        if result is not None and result.retry_after is not None:
            refused[0] += 1
            delay = result.retry_after + random.uniform(0, 1.0)
        await asyncio.sleep(delay)


def percentiles(values: list[float]) -> dict[str, float]:
    values = sorted(values)

    def at(q: float) -> float:
        return round(values[min(len(values) - 1, int(q * len(values)))], 4)

    return {"p50": at(0.5), "p99": at(0.99), "max": round(values[-1], 4)}


async def run(n: int, max_handshakes: int) -> dict[str, object]:
    raise_fd_limit()
    data = Path(tempfile.mkdtemp(prefix="edgehub-bench-"))
    hub = Hub(data, max_handshakes)
    hub.start()
    tokens = []
    t0 = time.monotonic()
    for i in range(n):
        body = json.dumps({"labels": {"fleet": "bench"}}).encode()
        tokens.append(hub.call("POST", f"/v1/nodes/n{i}/token", body)["token"])  # type: ignore[index]
    registration = time.monotonic() - t0
    rss_idle = rss_kib(hub.proc.pid)  # type: ignore[union-attr]
    nodes = [SimNode(hub.link, tokens[i], f"n{i}") for i in range(n)]
    stop = asyncio.Event()
    refused = [0]
    t0 = time.monotonic()
    tasks = [asyncio.create_task(keep_connected(node, stop, refused)) for node in nodes]
    base = n
    while sum(1 for node in nodes if node.revision >= base) < n:
        await asyncio.sleep(0.2)
        if time.monotonic() - t0 > 240:
            raise RuntimeError("nodes did not all connect")
    connect_all = time.monotonic() - t0
    await asyncio.sleep(2)
    rss_connected = rss_kib(hub.proc.pid)  # type: ignore[union-attr]

    # One change targeted at every node: time until each node has received and acked it.
    received: dict[str, float] = {}
    target = base + 1

    def on_change(node: SimNode) -> None:
        if node.revision >= target and node.name not in received:
            received[node.name] = time.monotonic()

    for node in nodes:
        node.on_change = on_change
    doc = (
        b"apiVersion: edgenode.io/v1\nkind: Config\nmetadata: {name: all}\n"
        b"spec: {data: {k: v}, nodeSelector: fleet=bench}\n"
    )
    t_change = time.monotonic()
    await asyncio.to_thread(hub.call, "POST", "/v1/apply", doc)
    while len(received) < n and time.monotonic() - t_change < 120:
        await asyncio.sleep(0.05)
    fanout = percentiles([t - t_change for t in received.values()])
    fanout["received"] = len(received)

    # Restart the hub: every node reconnects and resyncs (changes since its revision).
    for node in nodes:
        node.on_change = None
    refused[0] = 0
    await asyncio.to_thread(hub.stop)
    doc2 = (
        b"apiVersion: edgenode.io/v1\nkind: Config\nmetadata: {name: all}\n"
        b"spec: {data: {k: v2}, nodeSelector: fleet=bench}\n"
    )
    await asyncio.to_thread(hub.start)
    t_restart = time.monotonic()
    await asyncio.to_thread(hub.call, "POST", "/v1/apply", doc2)
    resync_target = target + 1
    while sum(1 for node in nodes if node.revision >= resync_target) < n:
        await asyncio.sleep(0.2)
        if time.monotonic() - t_restart > 300:
            break
    resync = time.monotonic() - t_restart
    resynced = sum(1 for node in nodes if node.revision >= resync_target)
    stop.set()
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    hub.stop()
    shutil.rmtree(data, ignore_errors=True)
    return {
        "nodes": n,
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs (shared), "
        f"Python {platform.python_version()}",
        "note": "simulator and hub share the same 2 cores",
        "register_seconds": round(registration, 2),
        "connect_all_seconds": round(connect_all, 2),
        "hub_rss_idle_mib": round(rss_idle / 1024, 1),
        "hub_rss_connected_mib": round(rss_connected / 1024, 1),
        "hub_rss_per_node_kib": round((rss_connected - rss_idle) / n, 1),
        "fanout_ack_seconds": fanout,
        "restart_resync_seconds": round(resync, 2),
        "restart_resynced_nodes": resynced,
        "restart_retry_after_answers": refused[0],
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--nodes", type=int, default=1000)
    parser.add_argument("--max-handshakes", type=int, default=256)
    args = parser.parse_args()
    result = asyncio.run(run(args.nodes, args.max_handshakes))
    print(json.dumps(result, indent=2))
    out = ROOT / "bench" / "results" / f"hub-{args.nodes}.json"
    out.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()

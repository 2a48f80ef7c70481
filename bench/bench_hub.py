"""Fleet benchmark of the hub: N simulated nodes (real NodeProtocol over real WebSockets on
loopback, one process) against a real ``edgehub serve`` subprocess.

Measures: hub RSS per connected node; the time for all N to connect from cold; the time
for a Config targeted at every node to be received and acknowledged by all N
(p50/p99/max, node side; ``--changes`` of them, one after the other); the time for all N
to reconnect and resync after the hub is restarted (SIGTERM, start again), with
retry-after answers honoured. Also the CPU seconds each side spent per phase (simulator
and hub share the machine's cores, so on a busy machine the CPU seconds say more than the
wall-clock times) and the load average. Writes bench/results/hub-N.json.

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
import shutil
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

from edgehub.cli import tune_gc
from edgehub.simnode import SimNode
from edgehub.testing import HubProcess, raise_fd_limit
from websockets.exceptions import ConnectionClosed, InvalidHandshake

ROOT = Path(__file__).resolve().parent.parent
CONNECT_LIMIT = 300.0
"""Seconds for all nodes to connect (cold) or resync (restart) before giving up."""
FANOUT_LIMIT = 120.0
SETTLE_SECONDS = 2.0
"""Pause after everyone connected, before measuring RSS and the fan-out."""
OPEN_TIMEOUT = 60.0
"""The simulated nodes' WebSocket opening timeout (the hub's handshake timeout is 30 s)."""
HUB_HANDSHAKE_TIMEOUT = 30.0
RECONNECT_JITTER = (0.2, 1.0)
"""Seconds a simulated node waits after a lost link (a real node uses its back-off)."""


def rss_kib(pid: int) -> int:
    text = Path(f"/proc/{pid}/status").read_text()
    match = re.search(r"VmRSS:\s+(\d+)", text)
    assert match is not None
    return int(match.group(1))


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class Cpu:
    """CPU seconds of the hub and of this process (the simulator) between marks."""

    def __init__(self, hub: HubProcess) -> None:
        self.hub = hub
        self.mark()

    def mark(self, sim_from: float | None = None) -> None:
        self._hub = cpu_seconds(self.hub.pid)
        self._sim = time.process_time() if sim_from is None else sim_from

    def since(self) -> dict[str, float]:
        used = {
            "hub": round(cpu_seconds(self.hub.pid) - self._hub, 2),
            "simulator": round(time.process_time() - self._sim, 2),
        }
        self.mark()
        return used


async def keep_connected(node: SimNode, stop: asyncio.Event, outcomes: Counter[str]) -> None:
    """Connect, and connect again whenever the link ends; ``outcomes`` counts the attempts
    that did not stay connected: "retry-after", or why they failed."""
    while not stop.is_set():
        try:
            result = await node.run_once(open_timeout=OPEN_TIMEOUT)
        except (TimeoutError, OSError, InvalidHandshake, ConnectionClosed) as exc:
            # As a real node: a connection the hub closed during the handshake (shed in a
            # burst, see docs/hub.md "Slow and unauthenticated clients") is retried.
            result = None
            outcomes[type(exc).__name__] += 1
        if stop.is_set():
            return
        delay = random.uniform(*RECONNECT_JITTER)
        if result is not None and result.retry_after is not None:
            outcomes["retry-after"] += 1
            delay = result.retry_after + random.uniform(0, 1.0)
        elif result is not None and result.http_status is not None:
            outcomes[f"HTTP {result.http_status}"] += 1
        await asyncio.sleep(delay)


def percentiles(values: list[float]) -> dict[str, float]:
    values = sorted(values)

    def at(q: float) -> float:
        return round(values[min(len(values) - 1, int(q * len(values)))], 4)

    return {"p50": at(0.5), "p99": at(0.99), "max": round(values[-1], 4)}


async def wait_all(nodes: list[SimNode], revision: int, limit: float) -> tuple[float, int]:
    """Seconds until every node has ``revision`` (or ``limit``), and how many have it."""
    t0 = time.monotonic()
    while True:
        done = sum(1 for node in nodes if node.revision >= revision)
        if done == len(nodes) or time.monotonic() - t0 > limit:
            return time.monotonic() - t0, done
        await asyncio.sleep(0.1)


def apply_change(hub: HubProcess, value: str) -> None:
    """One Config selecting every node (all carry the label fleet=bench)."""
    status, body = hub.apply(
        "apiVersion: edgenode.io/v1\nkind: Config\nmetadata: {name: all}\n"
        f"spec: {{data: {{k: {value}}}, nodeSelector: fleet=bench}}\n"
    )
    assert status == 200, body


async def run(n: int, max_handshakes: int, retry_after: float, changes: int) -> dict[str, Any]:
    raise_fd_limit()
    tune_gc()  # the simulator holds as many connections as the hub
    load_before = os.getloadavg()
    data = Path(tempfile.mkdtemp(prefix="edgehub-bench-"))
    hub = HubProcess(
        data,
        [
            "--max-handshakes",
            str(max_handshakes),
            "--retry-after",
            str(retry_after),
        ],
        handshake_timeout=HUB_HANDSHAKE_TIMEOUT,
        stop_timeout=120.0,
        api_timeout=120.0,
        many_files=True,
    )
    hub.start()
    t0 = time.monotonic()
    tokens = [hub.node_add(f"n{i}", {"fleet": "bench"}) for i in range(n)]
    registration = time.monotonic() - t0
    rss_idle = rss_kib(hub.pid)
    cpu = Cpu(hub)
    nodes = [SimNode(hub.link, tokens[i], f"n{i}") for i in range(n)]
    stop = asyncio.Event()
    outcomes: Counter[str] = Counter()
    tasks = [asyncio.create_task(keep_connected(node, stop, outcomes)) for node in nodes]
    connect_all, connected = await wait_all(nodes, n, CONNECT_LIMIT)
    if connected < n:
        raise RuntimeError(f"only {connected} of {n} nodes connected")
    cpu_connect = cpu.since()
    connect_outcomes = dict(outcomes)
    await asyncio.sleep(SETTLE_SECONDS)
    rss_connected = rss_kib(hub.pid)

    # Changes targeted at every node, one after the other: for each, the time until each
    # node has received and acked it (several, since one sample on a shared machine is noise).
    fanouts: list[dict[str, Any]] = []
    received: dict[str, float] = {}
    target = n

    def on_change(node: SimNode) -> None:
        if node.revision >= target and node.name not in received:
            received[node.name] = time.monotonic()

    for node in nodes:
        node.on_change = on_change
    cpu.mark()
    for k in range(changes):
        received.clear()
        target = n + 1 + k
        t_change = time.monotonic()
        await asyncio.to_thread(apply_change, hub, f"v{k}")
        while len(received) < n and time.monotonic() - t_change < FANOUT_LIMIT:
            await asyncio.sleep(0.05)
        fanout: dict[str, Any] = percentiles([t - t_change for t in received.values()])
        fanout["received"] = len(received)
        fanouts.append(fanout)
        await asyncio.sleep(SETTLE_SECONDS)
    cpu_fanout = cpu.since()
    cpu_fanout = {side: round(used / changes, 2) for side, used in cpu_fanout.items()}

    # Restart the hub: every node reconnects and resyncs (changes since its revision).
    for node in nodes:
        node.on_change = None
    outcomes.clear()
    await asyncio.to_thread(hub.stop)
    sim_cpu_before = time.process_time()
    await asyncio.to_thread(hub.start)
    cpu.mark(sim_from=sim_cpu_before)  # the new hub process; the simulator since the stop
    t_restart = time.monotonic()
    while_down = dict(outcomes)  # the kernel refused connections while no hub listened
    outcomes.clear()
    await asyncio.to_thread(apply_change, hub, "after-restart")
    _, resynced = await wait_all(nodes, target + 1, CONNECT_LIMIT)
    resync = time.monotonic() - t_restart
    cpu_resync = cpu.since()
    stop.set()
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    await asyncio.to_thread(hub.stop)
    shutil.rmtree(data, ignore_errors=True)
    load_after = os.getloadavg()
    return {
        "nodes": n,
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs (shared), "
        f"Python {platform.python_version()}",
        "note": "simulator and hub share the same cores; other sessions may use them too",
        "when": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "load_average_1_5_15": {
            "before": [round(x, 2) for x in load_before],
            "after": [round(x, 2) for x in load_after],
        },
        "max_handshakes": max_handshakes,
        "retry_after_base": retry_after,
        "register_seconds": round(registration, 2),
        "connect_all_seconds": round(connect_all, 2),
        "connect_retry_after_answers": connect_outcomes.get("retry-after", 0),
        "connect_other_outcomes": {k: v for k, v in connect_outcomes.items() if k != "retry-after"},
        "connect_cpu_seconds": cpu_connect,
        "hub_rss_idle_mib": round(rss_idle / 1024, 1),
        "hub_rss_connected_mib": round(rss_connected / 1024, 1),
        "hub_rss_per_node_kib": round((rss_connected - rss_idle) / n, 1),
        "fanout_ack_seconds": fanouts,
        "fanout_worst": {q: max(f[q] for f in fanouts) for q in ("p50", "p99", "max")},
        "fanout_cpu_seconds_per_change": cpu_fanout,
        "restart_resync_seconds": round(resync, 2),
        "restart_resynced_nodes": resynced,
        "restart_retry_after_answers": outcomes.get("retry-after", 0),
        "restart_other_outcomes": {k: v for k, v in outcomes.items() if k != "retry-after"},
        "restart_attempts_while_down": while_down,
        "restart_cpu_seconds": cpu_resync,
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--nodes", type=int, default=1000)
    parser.add_argument("--max-handshakes", type=int, default=512, help="the hub's cap")
    parser.add_argument("--retry-after", type=float, default=1.0, help="hub's base delay")
    parser.add_argument(
        "--changes", type=int, default=3, help="changes fanned out one after the other"
    )
    parser.add_argument("--out", type=Path, help="result file (default bench/results/hub-N.json)")
    args = parser.parse_args()
    result = asyncio.run(run(args.nodes, args.max_handshakes, args.retry_after, args.changes))
    print(json.dumps(result, indent=2))
    out = args.out or ROOT / "bench" / "results" / f"hub-{args.nodes}.json"
    out.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()

"""Benchmark of the device layer: twin reports through Mosquitto -> node -> outbox.

A real ``mosquitto`` on a free port, the node's DeviceLayer in its own process (a SQLite
store in a temporary directory, ``synchronous=normal``), N simulated devices (aiomqtt
clients, one connection each, in this process) sending twin reports with QoS 1. Each
report is merged into the device's twin, stored, appended to the outbox and answered; the
node acknowledges it to the broker only after that (docs/device-api.md, "Delivery"). Like
the daemon, the node commits each batch of messages (records and twins) in one store
transaction (``Store.commit_batch``).

The broker runs with ``set_tcp_nodelay true`` (docs/device-api.md advises it: with
Mosquitto's default, Nagle's algorithm holds its small packets to the node for up to a
delayed ACK, ~20 ms of latency and a ceiling of ~2,500 reports/s); ``--broker-nagle``
measures the default. Two measurements per N:

- **Backlog** (throughput): the devices publish N x R reports while the node is down (its
  persistent session queues them); then a plain ``mosquitto_sub`` with its own persistent
  session drains the same backlog (the broker's own ceiling for one QoS 1 subscriber), and
  then the node drains it. Node reports/s is counted from its first outbox append to its
  last; its CPU time over the same span comes from psutil on the node process. The
  simulated devices cannot be the bottleneck here: they are done before either starts.
- **Paced** (latency): the node runs, the devices publish at a fixed total rate below its
  capacity; latency is from the device's publish call to the node's outbox append of that
  report (both ``time.monotonic()``, one clock for every process), p50 and p99.

``--sweep 1,10,100,1000`` runs every N and writes them together (bench/results/devices.json);
without it one N runs. Speed is measured here, never asserted in tests
(tests/integration/devices/test_device_bus.py runs a tiny workload so the script cannot
rot).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import aiomqtt
import psutil

from edgenode import backend
from edgenode.devices import DeviceLayer, DeviceSpec, MqttSettings, RouteSpec
from edgenode.devices.bus import StoreCommit
from edgenode.devtwin import BatchResult
from edgenode.service import BatchTarget, OutRecord
from edgenode.store import Store

VIA_PORT_ENV = "EDGENODE_BENCH_VIA_PORT"
"""Set to 1 (``--via-port``): the node commits through its port, as before the batch call."""
READY = "node ready"
HOLDING = "node holding"
TIMEOUT = 300.0
"""Seconds any one phase (publishing, a drain) may take before the run fails."""
WINDOW = 50
"""Reports a device has in flight (published, broker's PUBACK not yet seen)."""
CONNECT_CONCURRENCY = 100
"""Device connections opened at once (1,000 at once would only queue in the kernel)."""
CLIENT_ID = "bench-node"
CEILING_ID = "bench-ceiling"
TELEMETRY_ENV = "EDGENODE_BENCH_TELEMETRY"
"""Set to 1 (``--telemetry``): the devices send telemetry through an upstream route."""
TELEMETRY = os.environ.get(TELEMETRY_ENV) == "1"
WINDOW_ENV = "EDGENODE_BENCH_COMMIT_WINDOW"
"""The node's ``[store] commit_window`` (seconds), for its processes."""
REPORT_TOPIC = "$edge/devices/{}/telemetry/t" if TELEMETRY else "$edge/devices/{}/twin/update"
TELEMETRY_ROUTE = "$edge/devices/+/telemetry/#"
"""``--telemetry``: the node's upstream route (priority 4) for what the devices send."""
DESIRED: dict[str, Any] = {"mode": "eco", "target": 21}
DEFAULT_BACKLOG = 20_000
"""Reports in a sweep's backlog, whatever N (each device sends backlog / N)."""
DEFAULT_RATE = 500.0
DEFAULT_PACED_SECONDS = 5.0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def cpu_seconds(process: psutil.Process) -> float:
    times = process.cpu_times()
    return float(times.user + times.system)


def report(device: str, seq: int) -> bytes:
    body = {"reported": {"temperature": 20 + seq % 7, "seq": seq}, "clientToken": str(seq)}
    return json.dumps(body).encode()


# --------------------------------------------------------------------- node ----


async def node_main(port: int, db: str, devices: int, expect: int, hold: bool = False) -> None:
    """Serve until ``expect`` reports are in the outbox (0: connect once and stop), then
    print when each was appended and the CPU time between the first and last append
    (``hold``: wait for a line on stdin before connecting, for a profiler to attach)."""
    if hold:
        print(HOLDING, flush=True)
        await asyncio.to_thread(sys.stdin.readline)
    store = Store(db)
    specs = [DeviceSpec(f"dev{i}", DESIRED) for i in range(devices)]
    me = psutil.Process()
    commits: list[tuple[float, Any]] = []
    total = 0
    done = asyncio.Event()
    cpu_at_first = 0.0

    class TimedLayer(DeviceLayer):
        """The device layer noting when each batch of reports was committed (the core's
        batch call commits before it returns); the reports are read after the run."""

        def _batch_in_core(
            self, target: BatchTarget, messages: list[tuple[str, bytes, int, int]]
        ) -> BatchResult:
            nonlocal cpu_at_first, total
            if not commits:
                cpu_at_first = cpu_seconds(me)
            result = super()._batch_in_core(target, messages)
            commits.append((time.monotonic(), messages))
            total += result.appended
            if total >= expect:
                done.set()
            return result

    class TimedCommit(StoreCommit):
        """``--via-port``: the path before the core's batch call (the whole batch through
        TwinService, then the port's commit), noting when each twin record was committed."""

        def commit(
            self, twins: Sequence[tuple[str, bytes]], records: Sequence[OutRecord]
        ) -> list[int | None]:
            nonlocal cpu_at_first, total
            if not commits:
                cpu_at_first = cpu_seconds(me)
            seqs = super().commit(twins, records)
            bodies = [r.body for r in records if r.kind in ("twin", "telemetry")]
            commits.append((time.monotonic(), bodies))
            total += len(bodies)
            if total >= expect:
                done.set()
            return seqs

    window = float(os.environ.get(WINDOW_ENV, "0"))
    settings = MqttSettings(port=port, client_id=CLIENT_ID, commit_window=window)
    via_port = os.environ.get(VIA_PORT_ENV) == "1"
    port_ = TimedCommit(store, "bench") if via_port else StoreCommit(store, "bench")
    routes = [RouteSpec(TELEMETRY_ROUTE, priority=4)] if TELEMETRY else []
    layer = TimedLayer(store, settings, specs, routes, port_)
    task = asyncio.get_running_loop().create_task(layer.run())
    await asyncio.wait_for(layer.connected.wait(), 30)
    print(READY, flush=True)
    if expect:
        await asyncio.wait_for(done.wait(), TIMEOUT)
    cpu = cpu_seconds(me) - cpu_at_first
    stats = layer.stats()
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    store.close()
    appends = []
    for at, items in commits:
        for item in items:
            if via_port:  # a twin or telemetry record's body
                record = json.loads(item)
                sent = json.loads(record["payload"]) if TELEMETRY else record
                appends.append((record["device"], sent["reported"]["seq"], at))
                continue
            topic, payload, _, _ = item
            if not topic.endswith(REPORT_TOPIC.split("{}")[1]):
                continue  # the broker's counters, the node's own retained deltas
            seq = json.loads(payload)["reported"]["seq"]
            appends.append((topic.split("/")[2], seq, at))
    print(json.dumps({"cpu_seconds": cpu, "stats": stats, "appends": appends}), flush=True)


class Node:
    """The node process of one measurement (``profile``: py-spy samples it into that
    file, collapsed stacks, from READY until it exits)."""

    def __init__(
        self,
        port: int,
        db: Path,
        devices: int,
        expect: int,
        profile: Path | None = None,
        core: str | None = None,
    ) -> None:
        env = dict(os.environ)
        if core is not None:
            env["EDGENODE_BACKEND"] = core
        self.process = subprocess.Popen(
            [sys.executable, __file__, "--node", "--port", str(port), "--db", str(db),
             "--devices", str(devices), "--expect", str(expect),
             *(["--hold"] if profile is not None else [])],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env=env,
        )  # fmt: skip
        assert self.process.stdout is not None
        assert self.process.stdin is not None
        self.profiler: subprocess.Popen[bytes] | None = None
        if profile is not None:
            # The node waits (imports done, nothing connected) until py-spy is attached.
            if self.process.stdout.readline().strip() != HOLDING:
                raise RuntimeError("the node did not start")
            self.profiler = subprocess.Popen(
                [py_spy() or "py-spy", "record", "--pid", str(self.process.pid), "--rate", "500",
                 "--format", "raw", "--output", str(profile), "--nonblocking"],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )  # fmt: skip
            time.sleep(2.0)
            self.process.stdin.write("go\n")
            self.process.stdin.flush()
        if self.process.stdout.readline().strip() != READY:
            raise RuntimeError("the node did not start")

    def result(self) -> dict[str, Any]:
        out, _ = self.process.communicate(timeout=TIMEOUT)
        if self.process.returncode != 0:
            raise RuntimeError(f"the node failed ({self.process.returncode})")
        if self.profiler is not None:
            self.profiler.wait(timeout=60)
        return json.loads(out.strip().splitlines()[-1])

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(timeout=10)
        if self.profiler is not None and self.profiler.poll() is None:
            self.profiler.kill()
            self.profiler.wait(timeout=10)


def py_spy() -> str | None:
    """py-spy next to this Python (``pip install py-spy`` into the venv), or on PATH."""
    found = Path(sys.executable).with_name("py-spy")
    return str(found) if found.exists() else shutil.which("py-spy")


# ------------------------------------------------------------------ devices ----


async def connected_devices(
    port: int, names: Iterable[str], stack: contextlib.AsyncExitStack
) -> dict[str, aiomqtt.Client]:
    gate = asyncio.Semaphore(CONNECT_CONCURRENCY)
    clients: dict[str, aiomqtt.Client] = {}

    async def connect(name: str) -> None:
        client = aiomqtt.Client("127.0.0.1", port, identifier=f"bench-{name}", timeout=60)
        client.pending_calls_threshold = 10 * WINDOW
        async with gate:
            clients[name] = await stack.enter_async_context(client)

    await asyncio.gather(*(connect(name) for name in names))
    return clients


async def publish_backlog(port: int, devices: int, reports: int) -> None:
    """Every device sends ``reports`` reports, WINDOW in flight at a time."""

    async def one(name: str, client: aiomqtt.Client) -> None:
        topic = REPORT_TOPIC.format(name)
        for first in range(0, reports, WINDOW):
            await asyncio.gather(
                *(
                    client.publish(topic, report(name, seq), qos=1)
                    for seq in range(first, min(first + WINDOW, reports))
                )
            )

    async with contextlib.AsyncExitStack() as stack:
        clients = await connected_devices(port, [f"dev{i}" for i in range(devices)], stack)
        await asyncio.gather(*(one(name, client) for name, client in clients.items()))


async def publish_paced(
    port: int, devices: int, total: int, rate: float, sent: dict[tuple[str, int], float]
) -> None:
    """``total`` reports at ``rate`` per second, device after device (round robin)."""
    async with contextlib.AsyncExitStack() as stack:
        names = [f"dev{i}" for i in range(devices)]
        clients = await connected_devices(port, names, stack)
        pending = []
        start = time.monotonic()
        for k in range(total):
            name, seq = names[k % devices], k // devices
            sent[(name, seq)] = time.monotonic()
            pending.append(
                asyncio.ensure_future(
                    clients[name].publish(REPORT_TOPIC.format(name), report(name, seq), qos=1)
                )
            )
            await asyncio.sleep(max(0.0, start + (k + 1) / rate - time.monotonic()))
        await asyncio.gather(*pending)


# --------------------------------------------------------------------- runs ----


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


@contextlib.contextmanager
def broker(workdir: Path, max_inflight: int, nodelay: bool) -> Any:
    port = free_port()
    config = workdir / "mosquitto.conf"
    config.write_text(
        f"listener {port} 127.0.0.1\nallow_anonymous true\nuser root\n"
        f"max_queued_messages 0\nmax_inflight_messages {max_inflight}\n"
        f"set_tcp_nodelay {'true' if nodelay else 'false'}\n"
    )
    process = subprocess.Popen(
        ["mosquitto", "-c", str(config)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        deadline = time.monotonic() + 5
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.02)
        yield port
    finally:
        process.kill()
        process.wait(timeout=10)


def ceiling_command(port: int, *extra: str) -> list[str]:
    return ["mosquitto_sub", "-p", str(port), "-q", "1", "-c", "-i", CEILING_ID,
            "-t", REPORT_TOPIC.format("+"), *extra]  # fmt: skip


def backlog_run(
    devices: int,
    reports: int,
    workdir: Path,
    max_inflight: int,
    nodelay: bool,
    profile: Path | None = None,
    core: str | None = None,
) -> dict[str, Any]:
    total = devices * reports
    db = workdir / f"backlog-{devices}.db"
    with broker(workdir, max_inflight, nodelay) as port:
        # Both persistent sessions exist before the devices publish: the broker queues.
        Node(port, db, devices, 0).result()
        subprocess.run(ceiling_command(port, "-E"), check=True, timeout=30)
        asyncio.run(asyncio.wait_for(publish_backlog(port, devices, reports), TIMEOUT))
        started = time.perf_counter()
        subprocess.run(
            ceiling_command(port, "-C", str(total)),
            check=True,
            timeout=TIMEOUT,
            stdout=subprocess.DEVNULL,
        )
        ceiling_s = time.perf_counter() - started
        node = Node(port, db, devices, total, profile, core)
        try:
            result = node.result()
        finally:
            node.kill()
    times = [at for _, _, at in result["appends"]]
    span = max(times) - min(times)
    stats = result["stats"]
    return {
        "reports": total,
        "accepted": stats.get("updates_accepted", 0),
        "outbox_appends": stats.get("uplinks", 0),
        # Messages the core's batch call handled itself (the rest took its fallback).
        "batch_fast": stats.get("batch_fast", 0),
        # Broker sessions the drain took, and messages past the client's queue bound that
        # it left to the broker for the next one (docs/device-api.md).
        "connects": stats.get("connects", 0),
        "left_to_broker": stats.get("left_to_broker", 0),
        "node_reports_per_s": (total - 1) / span if span > 0 else None,
        "broker_ceiling_msgs_per_s": total / ceiling_s,
        "node_cpu_s_per_1000": 1000 * result["cpu_seconds"] / total,
    }


def paced_run(
    devices: int,
    total: int,
    rate: float,
    workdir: Path,
    max_inflight: int,
    nodelay: bool,
    core: str | None = None,
) -> dict[str, Any]:
    db = workdir / f"paced-{devices}.db"
    sent: dict[tuple[str, int], float] = {}
    with broker(workdir, max_inflight, nodelay) as port:
        node = Node(port, db, devices, total, core=core)
        try:
            asyncio.run(asyncio.wait_for(publish_paced(port, devices, total, rate, sent), TIMEOUT))
            result = node.result()
        finally:
            node.kill()
    latencies = [at - sent[(device, seq)] for device, seq, at in result["appends"]]
    return {
        "paced_rate": rate,
        "paced_reports": total,
        "paced_node_cpu_s_per_1000": 1000 * result["cpu_seconds"] / total,
        "latency_p50_ms": 1000 * percentile(latencies, 0.5),
        "latency_p99_ms": 1000 * percentile(latencies, 0.99),
        "latency_max_ms": 1000 * max(latencies),
    }


def run(
    devices: int,
    reports: int,
    rate: float,
    paced_reports: int,
    workdir: Path,
    max_inflight: int,
    nodelay: bool,
    profile: Path | None = None,
    core: str | None = None,
) -> dict[str, Any]:
    result: dict[str, Any] = {
        "backend": core or backend,
        "devices": devices,
        "max_inflight_messages": max_inflight,
        "broker_tcp_nodelay": nodelay,
    }
    result |= backlog_run(devices, reports, workdir, max_inflight, nodelay, profile, core)
    result |= paced_run(devices, paced_reports, rate, workdir, max_inflight, nodelay, core)
    return result


def show(result: dict[str, Any]) -> None:
    for key, value in result.items():
        shown = f"{value:,.2f}" if isinstance(value, float) else str(value)
        print(f"{key:28} {shown}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--devices", type=int, default=20)
    parser.add_argument("--reports", type=int, default=500, help="backlog reports per device")
    parser.add_argument("--sweep", help="comma-separated N: each sends backlog/N reports")
    parser.add_argument("--backlog", type=int, default=DEFAULT_BACKLOG)
    parser.add_argument("--rate", type=float, default=DEFAULT_RATE, help="paced reports/s")
    parser.add_argument(
        "--paced-reports", type=int, help=f"default: {DEFAULT_PACED_SECONDS:g} s at --rate"
    )
    parser.add_argument(
        "--max-inflight", type=int, default=20, help="Mosquitto's max_inflight_messages"
    )
    parser.add_argument(
        "--broker-nagle",
        action="store_true",
        help="Mosquitto's default set_tcp_nodelay false (default here: true, as docs advise)",
    )
    parser.add_argument(
        "--output", type=Path, default=Path(__file__).parent / "results" / "devices.json"
    )
    parser.add_argument(
        "--telemetry",
        action="store_true",
        help="the devices send telemetry (the same JSON) through an upstream route instead "
        "of twin reports",
    )
    parser.add_argument(
        "--via-port",
        action="store_true",
        help="the path before the core's batch call (TwinService per batch, the port's "
        "commit): an A/B of the batch call in the same minutes",
    )
    parser.add_argument(
        "--backends",
        help="comma-separated: the node's core for each run (rust,python: both, same run); "
        "default: the chosen one",
    )
    parser.add_argument(
        "--profile",
        type=Path,
        help="py-spy the node during the backlog drain: collapsed stacks into this file "
        "(one N; see bench/profile_top.py)",
    )
    parser.add_argument(
        "--commit-window",
        type=float,
        default=0.0,
        help="the node's [store] commit_window in seconds (issue 15): the paced latency "
        "and the reports per commit it buys",
    )
    parser.add_argument("--node", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--db", help=argparse.SUPPRESS)
    parser.add_argument("--expect", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--hold", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.node:
        asyncio.run(node_main(args.port, args.db, args.devices, args.expect, args.hold))
        return
    if args.profile and py_spy() is None:
        parser.error(f"--profile needs py-spy: {Path(sys.executable).parent}/pip install py-spy")
    if args.via_port:
        os.environ[VIA_PORT_ENV] = "1"  # the node processes inherit it
    os.environ[WINDOW_ENV] = str(args.commit_window)  # the node processes inherit it
    if args.telemetry:
        os.environ[TELEMETRY_ENV] = "1"  # the node processes inherit it
        global REPORT_TOPIC
        REPORT_TOPIC = "$edge/devices/{}/telemetry/t"
    # A single run paces as many reports as its backlog had (the smoke test stays quick).
    paced = args.paced_reports or (
        int(args.rate * DEFAULT_PACED_SECONDS) if args.sweep else args.devices * args.reports
    )
    sizes = [int(n) for n in args.sweep.split(",")] if args.sweep else [args.devices]
    cores: list[str | None] = (
        [name.strip() for name in args.backends.split(",")] if args.backends else [None]
    )
    runs = []
    with tempfile.TemporaryDirectory() as workdir:
        for n in sizes:
            for core in cores:
                reports = max(1, args.backlog // n) if args.sweep else args.reports
                result = run(
                    n,
                    reports,
                    args.rate,
                    paced,
                    Path(workdir),
                    args.max_inflight,
                    not args.broker_nagle,
                    args.profile,
                    core,
                )
                show(result)
                runs.append(result)
    output: dict[str, Any] = {
        "backend": backend,
        "path": "port" if args.via_port else "batch call",
        "messages": "telemetry via an upstream route" if args.telemetry else "twin reports",
        "load_average": os.getloadavg(),
        **({"runs": runs} if args.sweep or len(runs) > 1 else runs[0]),
    }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(output, indent=2) + "\n")
    if os.environ.get("BENCH_QUIET") is None:
        print(f"written to {args.output}")


if __name__ == "__main__":
    main()

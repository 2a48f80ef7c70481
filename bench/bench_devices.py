"""Benchmark of the device layer: twin reports through Mosquitto -> node -> outbox.

A real ``mosquitto`` on a free port, the node's DeviceLayer in its own process (so its
CPU time is its own, from ``getrusage``), N simulated devices (aiomqtt clients in this
process) each sending M twin reports with QoS 1 as fast as the broker takes them, and,
side by side, a plain ``mosquitto_sub`` on the same stream: the broker's own ceiling.

Reported: reports/s handled by the node (each one merged into the twin, stored with
``put_twin``, appended to the outbox and answered), the node's CPU seconds per 1,000
reports, and the latency from a device's publish to the node's ``accepted`` reply
(p50/p99; the reply is published after the outbox append, so this bounds
publish-to-outbox). Speed is measured here, never asserted in tests.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import resource
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiomqtt

from edgenode import backend
from edgenode.devices import DeviceLayer, DeviceSpec, MqttSettings
from edgenode.store import Store

READY = "node ready"
TIMEOUT = 120.0
WINDOW = 50
"""Reports a device has in flight (published, PUBACK not yet seen)."""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


# --------------------------------------------------------------------- node ----


async def node_main(port: int, db: str, devices: int) -> None:
    store = Store(db)
    specs = [DeviceSpec(f"dev{i}", {"mode": "eco", "target": 21}) for i in range(devices)]

    def enqueue(payload: bytes, priority: int, ttl: float | None, key: str | None) -> int:
        return store.append(payload, priority, ttl, coalesce_key=key)

    settings = MqttSettings(port=port, client_id="bench-node")
    layer = DeviceLayer(store, settings, specs, [], enqueue)
    task = asyncio.get_running_loop().create_task(layer.run())
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    await asyncio.wait_for(layer.connected.wait(), 10)
    start = cpu_seconds()
    print(READY, flush=True)
    await stop.wait()
    cpu = cpu_seconds() - start
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    store.close()
    print(json.dumps({"cpu_seconds": cpu, "stats": layer.stats()}), flush=True)


# ------------------------------------------------------------------ devices ----


async def device(
    port: int, name: str, reports: int, latencies: list[float], interval: float
) -> None:
    """Send ``reports`` reports: in windows of WINDOW as fast as possible, or one every
    ``interval`` seconds (paced, for latency below saturation)."""
    sent: dict[str, float] = {}
    done = asyncio.Event()
    async with aiomqtt.Client("127.0.0.1", port, identifier=f"bench-{name}") as client:
        client.pending_calls_threshold = 10 * WINDOW
        await client.subscribe(f"$edge/devices/{name}/twin/update/accepted", qos=1)
        answered = 0

        async def replies() -> None:
            nonlocal answered
            async for message in client.messages:
                assert isinstance(message.payload, bytes)
                token = json.loads(message.payload)["clientToken"]
                latencies.append(time.perf_counter() - sent.pop(token))
                answered += 1
                if answered == reports:
                    done.set()

        reader = asyncio.get_running_loop().create_task(replies())
        topic = f"$edge/devices/{name}/twin/update"
        if interval:
            start = time.perf_counter()
            pending = []
            for seq in range(reports):
                token = str(seq)
                body = {"reported": {"temperature": 20 + seq % 7, "seq": seq}, "clientToken": token}
                sent[token] = time.perf_counter()
                pending.append(
                    asyncio.ensure_future(client.publish(topic, json.dumps(body), qos=1))
                )
                await asyncio.sleep(max(0.0, start + (seq + 1) * interval - time.perf_counter()))
            await asyncio.gather(*pending)
        for first in range(0, reports if not interval else 0, WINDOW):
            publishes = []
            for seq in range(first, min(first + WINDOW, reports)):
                token = str(seq)
                body = {"reported": {"temperature": 20 + seq % 7, "seq": seq}, "clientToken": token}
                sent[token] = time.perf_counter()
                publishes.append(client.publish(topic, json.dumps(body), qos=1))
            await asyncio.gather(*publishes)
        await asyncio.wait_for(done.wait(), TIMEOUT)
        reader.cancel()
        with contextlib.suppress(asyncio.CancelledError, aiomqtt.MqttError):
            await reader


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def run(devices: int, reports: int, rate: float, workdir: Path) -> dict[str, Any]:
    port = free_port()
    config = workdir / "mosquitto.conf"
    config.write_text(
        f"listener {port} 127.0.0.1\nallow_anonymous true\nuser root\nmax_queued_messages 100000\n"
    )
    broker = subprocess.Popen(
        ["mosquitto", "-c", str(config)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    node = ceiling = None
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
        node = subprocess.Popen(
            [sys.executable, __file__, "--node", "--port", str(port),
             "--db", str(workdir / "node.db"), "--devices", str(devices)],
            stdout=subprocess.PIPE,
            text=True,
        )  # fmt: skip
        assert node.stdout is not None
        if node.stdout.readline().strip() != READY:
            raise RuntimeError("the node did not start")
        total = devices * reports
        ceiling = subprocess.Popen(
            ["mosquitto_sub", "-p", str(port), "-q", "1", "-C", str(total),
             "-t", "$edge/devices/+/twin/update"],
            stdout=subprocess.DEVNULL,
        )  # fmt: skip
        time.sleep(0.3)  # let it subscribe
        latencies: list[float] = []

        async def devices_main() -> None:
            await asyncio.gather(
                *(
                    device(port, f"dev{i}", reports, latencies, devices / rate if rate else 0.0)
                    for i in range(devices)
                )
            )

        started = time.perf_counter()
        asyncio.run(devices_main())
        node_elapsed = time.perf_counter() - started
        ceiling.wait(timeout=TIMEOUT)
        ceiling_elapsed = time.perf_counter() - started
        node.send_signal(signal.SIGTERM)
        out, _ = node.communicate(timeout=30)
        node_report = json.loads(out.strip().splitlines()[-1])
    finally:
        for process in (ceiling, node, broker):
            if process is not None and process.poll() is None:
                process.kill()
                process.wait(timeout=10)
    stats = node_report["stats"]
    return {
        "backend": backend,
        "mode": f"paced at {rate:g} reports/s" if rate else "saturated",
        "devices": devices,
        "reports": total,
        "accepted": stats.get("updates_accepted", 0),
        "outbox_appends": stats.get("uplinks", 0),
        "node_reports_per_s": total / node_elapsed,
        "broker_ceiling_msgs_per_s": total / ceiling_elapsed,
        "node_cpu_s_per_1000": 1000 * node_report["cpu_seconds"] / total,
        "latency_p50_ms": 1000 * percentile(latencies, 0.5),
        "latency_p99_ms": 1000 * percentile(latencies, 0.99),
        "latency_mean_ms": 1000 * statistics.fmean(latencies),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--devices", type=int, default=20)
    parser.add_argument("--reports", type=int, default=500, help="reports per device")
    parser.add_argument(
        "--rate", type=float, default=0.0, help="total reports/s (0: as fast as possible)"
    )
    parser.add_argument(
        "--output", type=Path, default=Path(__file__).parent / "results" / "devices.json"
    )
    parser.add_argument("--node", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--db", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.node:
        asyncio.run(node_main(args.port, args.db, args.devices))
        return
    with tempfile.TemporaryDirectory() as workdir:
        result = run(args.devices, args.reports, args.rate, Path(workdir))
    for key, value in result.items():
        shown = f"{value:,.2f}" if isinstance(value, float) else str(value)
        print(f"{key:28} {shown}")
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(result, indent=2) + "\n")
    if os.environ.get("BENCH_QUIET") is None:
        print(f"written to {args.output}")


if __name__ == "__main__":
    main()

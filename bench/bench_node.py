"""Benchmarks of the node daemon: memory, start-up time, uplink throughput.

Real processes against the test hub of tests/integration/node/fakehub.py (a real
``websockets`` server driving ``HubProtocol`` on 127.0.0.1), like the integration tests but
measured instead of asserted. Workloads (issue 3):

- start-up: ``edgenode run`` (standalone) from ``exec`` to ``READY=1`` on a real
  NOTIFY_SOCKET, median of several starts;
- idle RSS: ``edgenode run`` connected to the hub holding 100 devices' desired state
  (~1 KB each), after it settled;
- RSS under load: the daemon with a service appending a steady 1,000 uplink records/s
  (``Daemon.enqueue_uplink``, what the device layer calls), drained to the hub;
- RSS with Apps: ``edgenode run`` connected to the hub, supervising APPS running Apps
  (small Python processes, each with an exec health check), after they settled: the
  daemon's own RSS, not its Apps' (goal: 40 MB with 10 Apps);
- uplink throughput: the outbox pre-filled with N records of ~200 B, then ``edgenode run``
  drains it to the hub: records/s, for N = 10,000 and N = 1,000,000 ("after a long
  outage"; the quota is raised to hold them).

Writes ``bench/results/node.json``. ``--scale`` shrinks every count for a quick look.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "integration"))

from node.fakehub import Background, FakeHub, wait_for  # noqa: E402

from edgenode import backend  # noqa: E402
from edgenode.store import Store  # noqa: E402

PRODUCER = ROOT / "tests" / "integration" / "node" / "producer.py"
DEVICES = 100
DEVICE_BODY_BYTES = 1000
SETTLE_SECONDS = 3.0
LOAD_RATE = 1000
LOAD_SECONDS = 10.0
RECORD_BYTES = 200
STARTS = 5
APPS = 10
APP_PROGRAM = "import time\nwhile True: time.sleep(1)"


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError("no VmRSS")


def write_config(directory: Path, hub_url: str | None, **extra: dict[str, Any]) -> Path:
    sections: dict[str, dict[str, Any]] = {
        "node": {"name": "bench-node", "data_dir": str(directory / "data")},
        "metrics": {"listen": ""},
        "status": {"interval": 30.0},
        "log": {"level": "warning"},
    }
    if hub_url:
        sections["hub"] = {"url": hub_url, "token": "secret"}
    for name, values in extra.items():
        sections.setdefault(name, {}).update(values)
    text = "".join(
        f"[{name}]\n" + "".join(f"{k} = {json.dumps(v)}\n" for k, v in values.items())
        for name, values in sections.items()
    )
    path = directory / "node.toml"
    path.write_text(text)
    return path


def run_node(
    config: Path, *args: str, env: dict[str, str] | None = None
) -> subprocess.Popen[bytes]:
    command = [sys.executable, "-m", "edgenode", "run", "--config", str(config)]
    if args:
        command = [sys.executable, *args]
    return subprocess.Popen(
        command,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env={**os.environ, **(env or {})},
    )


def stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


def bench_startup(starts: int) -> dict[str, Any]:
    samples = []
    for _ in range(starts):
        with tempfile.TemporaryDirectory() as tmp:
            directory = Path(tmp)
            config = write_config(directory, None)
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
            sock.bind(str(directory / "notify.sock"))
            sock.settimeout(30)
            begin = time.perf_counter()
            proc = run_node(config, env={"NOTIFY_SOCKET": str(directory / "notify.sock")})
            try:
                while b"READY=1" not in sock.recv(4096):
                    pass
                samples.append(time.perf_counter() - begin)
            finally:
                stop(proc)
                sock.close()
    return {"median_seconds": statistics.median(samples), "samples": samples}


def bench_idle_rss(background: Background, seconds: float) -> dict[str, Any]:
    hub = FakeHub(background, heartbeat=15.0)
    hub.start()
    body = {"model": "sensor", "desired": {"pad": "x" * DEVICE_BODY_BYTES}}
    revision = hub.publish([(f"Device/default/dev-{i:03d}", body) for i in range(DEVICES)])
    with tempfile.TemporaryDirectory() as tmp:
        config = write_config(Path(tmp), hub.url)
        proc = run_node(config)
        try:
            wait_for(lambda: hub.acked_revision.get("bench-node") == revision, 30, "the ack")
            time.sleep(seconds)
            rss = rss_kib(proc.pid)
        finally:
            stop(proc)
    hub.stop()
    return {"devices": DEVICES, "rss_kib": rss, "rss_mb": round(rss / 1024, 1)}


def bench_apps_rss(background: Background, seconds: float, apps: int) -> dict[str, Any]:
    hub = FakeHub(background, heartbeat=15.0)
    hub.start()
    check = {"exec": [sys.executable, "-c", "pass"], "periodSeconds": 2}
    hub.publish(
        [
            (
                f"App/default/app-{i:02d}",
                {
                    "apiVersion": "edgenode.io/v1",
                    "kind": "App",
                    "metadata": {"name": f"app-{i:02d}"},
                    "spec": {
                        "node": "bench-node",
                        "command": [sys.executable, "-c", APP_PROGRAM],
                        "healthCheck": check,
                    },
                },
            )
            for i in range(apps)
        ]
    )
    with tempfile.TemporaryDirectory() as tmp:
        config = write_config(Path(tmp), hub.url)
        proc = run_node(config)

        def all_ready() -> bool:
            try:
                summary = json.loads((Path(tmp) / "data" / "apps.json").read_text())
            except (OSError, ValueError):
                return False
            states = summary.get("apps", {}).values()
            return len(states) == apps and all(s.get("ready") for s in states)

        try:
            wait_for(all_ready, 60, f"{apps} Apps running and ready")
            time.sleep(seconds)
            rss = rss_kib(proc.pid)
        finally:
            stop(proc)
    hub.stop()
    return {"apps": apps, "rss_kib": rss, "rss_mb": round(rss / 1024, 1)}


def bench_load_rss(background: Background, seconds: float) -> dict[str, Any]:
    hub = FakeHub(background, heartbeat=15.0)
    hub.start()
    with tempfile.TemporaryDirectory() as tmp:
        config = write_config(Path(tmp), hub.url)
        total = int(LOAD_RATE * seconds)
        proc = run_node(config, str(PRODUCER), str(config), str(total), str(LOAD_RATE), "--quiet")
        samples = []
        try:
            wait_for(lambda: hub.connected(), 30, "the connection")
            begin = time.perf_counter()
            while time.perf_counter() - begin < seconds:
                time.sleep(1.0)
                samples.append(rss_kib(proc.pid))
            received = len(hub.payloads("bench-node"))
            elapsed = time.perf_counter() - begin
        finally:
            stop(proc)
    hub.stop()
    return {
        "rate_target": LOAD_RATE,
        "received_per_second": round(received / elapsed),
        "rss_kib_max": max(samples),
        "rss_mb_max": round(max(samples) / 1024, 1),
    }


def bench_drain(background: Background, records: int) -> dict[str, Any]:
    hub = FakeHub(background, heartbeat=15.0)
    hub.start()
    with tempfile.TemporaryDirectory() as tmp:
        directory = Path(tmp)
        quota = max(64 * 1024 * 1024, records * (RECORD_BYTES + 64))
        config = write_config(directory, hub.url, outbox={"max_bytes": quota})
        (directory / "data").mkdir()
        store = Store(str(directory / "data" / "node.db"), outbox_max_bytes=quota)
        payload = b'{"v":1,"kind":"telemetry","body":"' + b"x" * (RECORD_BYTES - 40) + b'"}'
        fill_start = time.perf_counter()
        batch = 10_000
        for start in range(0, records, batch):
            store.append_many([(payload, 5, None)] * min(batch, records - start))
        fill_seconds = time.perf_counter() - fill_start
        store.close()
        proc = run_node(config)
        begin = time.perf_counter()
        try:
            wait_for(lambda: len(hub.stored) >= records, 3600, "the drain")
            elapsed = time.perf_counter() - begin
        finally:
            stop(proc)
    hub.stop()
    return {
        "records": records,
        "record_bytes": len(payload),
        "fill_seconds": round(fill_seconds, 2),
        "drain_seconds": round(elapsed, 2),
        "records_per_second": round(records / elapsed),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", type=float, default=1.0, help="shrink every workload")
    parser.add_argument("--output", type=Path, default=ROOT / "bench" / "results" / "node.json")
    args = parser.parse_args()
    scale = args.scale
    background = Background()
    results: dict[str, Any] = {
        "machine": {
            "machine": platform.machine(),
            "cores": os.cpu_count(),
            "python": platform.python_version(),
        },
        "backend": backend,
        "scale": scale,
    }
    try:
        results["startup"] = bench_startup(max(1, round(STARTS * min(1.0, scale))))
        print(f"start-up to READY        {results['startup']['median_seconds']:.3f} s (median)")
        results["idle"] = bench_idle_rss(background, SETTLE_SECONDS * scale)
        print(f"idle RSS, {DEVICES} devices      {results['idle']['rss_mb']} MB")
        apps = max(1, round(APPS * min(1.0, scale * 10)))
        results["apps"] = bench_apps_rss(background, max(1.0, SETTLE_SECONDS * scale), apps)
        print(f"RSS, {apps} Apps running        {results['apps']['rss_mb']} MB")
        results["load"] = bench_load_rss(background, max(1.0, LOAD_SECONDS * scale))
        load = results["load"]
        print(
            f"RSS at {LOAD_RATE} uplink/s     {load['rss_mb_max']} MB "
            f"(hub received {load['received_per_second']}/s)"
        )
        for count in (10_000, 1_000_000):
            records = max(100, int(count * scale))
            drain = bench_drain(background, records)
            results[f"drain_{count}"] = drain
            print(
                f"drain {records:>9,} records   {drain['records_per_second']:,} records/s "
                f"({drain['drain_seconds']} s; filled in {drain['fill_seconds']} s)"
            )
    finally:
        background.close()
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(results, indent=2) + "\n")
    print(f"results written to {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

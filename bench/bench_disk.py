"""Disk writes of a real node (issue 15's flash-wear budgets): bytes per day idle while
connected, and bytes per device report at 100 reports/s and at a lone 1 report/s.

Everything is real: ``edgehub serve`` (its own data dir), a Mosquitto on a free port (the
shipped settings, ``deploy/mosquitto/edgenode.conf``), one ``edgenode run`` process per
phase (a fresh ``data_dir`` on the disk under ``--dir``, the default backend unless
``EDGENODE_BACKEND`` says otherwise) and simulated devices (aiomqtt clients in this
process, QoS 1, one connection each). Bytes are the node process's ``write_bytes`` from
``/proc/PID/io``, read in real time: what the kernel accounts to the process for the
storage layer (SQLite's WAL, database and checkpoints, state files, logs). A tmpfs
``--dir`` would read 0 and is refused.

Phases, each at ``synchronous = normal`` (the default) and ``full``:

- **idle**: connected to the hub, no devices reporting, ``[status] interval`` shortened to
  ``--status-interval`` (default 2 s) for ``--idle-seconds``; bytes per status interval
  are scaled to the default interval (30 s) to give bytes per day. Every byte written in
  the run is charged to the status reports, so the figure is an upper bound (time-driven
  writes are counted 15 times too often); the raw rate over the run is printed too.
- **offline** (only with ``--phases ...,offline``): the hub unreachable; the node stores
  its newest status every ``[status] persist_interval``, shortened to
  ``--persist-interval`` (default 5 s) and scaled to the default (300 s) per day.
- **burst**: 100 devices report at 1 Hz each (100 reports/s) for ``--report-seconds``;
  bytes per report = bytes written from the start of the window until the outbox has been
  drained to the hub (its deletes are part of the cost) / reports acknowledged by the node
  (PUBACK: the node commits first) in the window.
- **lone**: one device at 1 report/s, measured the same way.

``--commit-window S`` sets the node's ``[store] commit_window`` (default 0).

The machine is shared: run it when it is quiet, read medians over ``--repeat`` runs.
Prints one JSON document (``--out`` also writes it). Budgets (issue 15): idle <= 5 MB/day,
<= 2 KB per report at 100/s, <= 4 KiB per report at a lone 1/s.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiomqtt
from edgehub.testing import HubProcess

from edgenode import backend

ROOT = Path(__file__).resolve().parents[1]
SHIPPED_BROKER_SETTINGS = ROOT / "deploy" / "mosquitto" / "edgenode.conf"
MOSQUITTO = "/usr/sbin/mosquitto"
DEFAULT_STATUS_INTERVAL = 30.0
DEFAULT_PERSIST_INTERVAL = 300.0
DAY = 86_400.0
DEVICES_AT_100 = 100
WARMUP = 5.0
"""Default seconds before a window opens (connections, first twins; ``--warmup``)."""
DRAIN_TIMEOUT = 60.0
STEP_TIMEOUT = 30.0
BUDGET_IDLE_PER_DAY = 5_000_000
BUDGET_PER_REPORT_100 = 2_000
BUDGET_PER_REPORT_LONE = 4_096


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def write_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/io").read_text().splitlines():
        if line.startswith("write_bytes:"):
            return int(line.split()[1])
    raise RuntimeError(f"no write_bytes in /proc/{pid}/io")


def filesystem_type(path: Path) -> str:
    """The type of the file system holding ``path`` (from /proc/self/mounts)."""
    best, kind = "", "?"
    resolved = str(path.resolve())
    for line in Path("/proc/self/mounts").read_text().splitlines():
        parts = line.split()
        mount = parts[1]
        if (resolved == mount or resolved.startswith(mount.rstrip("/") + "/")) and len(mount) > len(
            best
        ):
            best, kind = mount, parts[2]
    return kind


def wait_until(condition: Any, what: str, timeout: float = STEP_TIMEOUT) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out waiting for {what}")
        time.sleep(0.1)


class Broker:
    def __init__(self, directory: Path) -> None:
        self.port = free_port()
        config = directory / "mosquitto.conf"
        config.write_text(
            f"listener {self.port} 127.0.0.1\nallow_anonymous true\npersistence false\n"
            + SHIPPED_BROKER_SETTINGS.read_text()
        )
        self.proc = subprocess.Popen(
            [MOSQUITTO, "-c", str(config)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        wait_until(self._listening, "mosquitto")

    def _listening(self) -> bool:
        import socket

        with socket.socket() as sock:
            return sock.connect_ex(("127.0.0.1", self.port)) == 0

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)


class Node:
    """One ``edgenode run`` with its config in ``directory``."""

    def __init__(
        self,
        directory: Path,
        name: str,
        hub: HubProcess,
        broker: Broker,
        *,
        synchronous: str,
        status_interval: float,
        devices: int,
        offline_url: str = "",
        persist_interval: float = 300.0,
        commit_window: float = 0.0,
    ) -> None:
        directory.mkdir()
        self.data_dir = directory / "data"
        token = hub.node_add(name)
        sections: dict[str, dict[str, Any]] = {
            "node": {"name": name, "data_dir": str(self.data_dir)},
            "hub": {"url": offline_url or hub.link, "token": token},
            "mqtt": {"port": broker.port},
            "store": {"synchronous": synchronous, "commit_window": commit_window},
            "status": {"interval": status_interval, "persist_interval": persist_interval},
            "metrics": {"listen": ""},
            "log": {"level": "warning"},
        }
        text = "".join(
            f"[{section}]\n" + "".join(f"{k} = {json.dumps(v)}\n" for k, v in values.items())
            for section, values in sections.items()
        )
        text += "".join(f'[[device]]\nname = "dev-{i:03d}"\n' for i in range(devices))
        config = directory / "node.toml"
        config.write_text(text)
        self.log = directory / "node.log"
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "edgenode", "run", "--config", str(config)],
                stdout=subprocess.DEVNULL,
                stderr=log,
            )
        wanted = "disconnected" if offline_url else "connected"
        wait_until(lambda: self._state("link-state.json").get("state") == wanted, "the link")
        if devices:
            wait_until(
                lambda: self._state("devices.json").get("broker_connected"), "the device layer"
            )

    def _state(self, name: str) -> dict[str, Any]:
        if self.proc.poll() is not None:
            raise RuntimeError(f"the node exited: {self.log.read_text()[-2000:]}")
        try:
            value = json.loads((self.data_dir / name).read_text())
        except (OSError, ValueError):
            return {}
        return value if isinstance(value, dict) else {}

    def written(self) -> int:
        return write_bytes(self.proc.pid)

    def outbox_waiting(self) -> int:
        """Records in the outbox other than the node's status sample (read-only)."""
        db = sqlite3.connect(f"file:{self.data_dir / 'node.db'}?mode=ro", uri=True, timeout=5)
        try:
            (count,) = db.execute(
                "SELECT count(*) FROM outbox WHERE coalesce_key IS NOT 'node-status'"
            ).fetchone()
        finally:
            db.close()
        return int(count)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)


def report(seq: int) -> bytes:
    return json.dumps(
        {"reported": {"temperature": round(20 + (seq % 50) / 10, 1), "seq": seq}},
        separators=(",", ":"),
    ).encode()


async def devices_report(
    port: int, devices: int, rate_each: float, seconds: float, node: Node, warmup: float
) -> tuple[int, int]:
    """``devices`` clients, each publishing QoS 1 at ``rate_each`` Hz (phases spread);
    after ``warmup`` s a window of ``seconds`` opens. Returns (bytes written by the node
    from the window's start until its outbox drained, reports acknowledged in it)."""
    stop = asyncio.Event()
    window = {"open": False, "count": 0}

    async def device(index: int) -> None:
        name = f"dev-{index:03d}"
        async with aiomqtt.Client("127.0.0.1", port, identifier=f"bench-{name}") as client:
            period = 1.0 / rate_each
            next_at = time.monotonic() + period * index / devices
            seq = 0
            while not stop.is_set():
                await asyncio.sleep(max(0.0, next_at - time.monotonic()))
                seq += 1
                opened = window["open"]
                await client.publish(f"$edge/devices/{name}/twin/update", report(seq), qos=1)
                if opened and window["open"]:
                    window["count"] += 1
                next_at += period

    tasks = [asyncio.create_task(device(i)) for i in range(devices)]
    try:
        await asyncio.sleep(warmup)
        start = node.written()
        window["open"] = True
        await asyncio.sleep(seconds)
        window["open"] = False
        count = window["count"]
        stop.set()
        await asyncio.gather(*tasks)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + DRAIN_TIMEOUT
        while await asyncio.to_thread(node.outbox_waiting):
            if loop.time() > deadline:
                raise RuntimeError("the outbox did not drain to the hub")
            await asyncio.sleep(0.2)
        await asyncio.sleep(1.0)  # the last acks' deletes
        return node.written() - start, count
    finally:
        stop.set()
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, aiomqtt.MqttError):
                await task


def idle_phase(
    work: Path, hub: HubProcess, broker: Broker, name: str, sync: str, args: argparse.Namespace
) -> dict[str, Any]:
    node = Node(
        work / name,
        name,
        hub,
        broker,
        synchronous=sync,
        commit_window=args.commit_window,
        status_interval=args.status_interval,
        devices=0,
    )
    try:
        time.sleep(args.warmup)
        start, began = node.written(), time.monotonic()
        time.sleep(args.idle_seconds)
        written, elapsed = node.written() - start, time.monotonic() - began
    finally:
        node.stop()
    per_status = written / (elapsed / args.status_interval)
    return {
        "seconds": round(elapsed, 1),
        "status_interval": args.status_interval,
        "bytes": written,
        "bytes_per_status": round(per_status),
        "bytes_per_day": round(per_status * DAY / DEFAULT_STATUS_INTERVAL),
        "raw_bytes_per_day": round(written / elapsed * DAY),
    }


def offline_phase(
    work: Path, hub: HubProcess, broker: Broker, name: str, sync: str, args: argparse.Namespace
) -> dict[str, Any]:
    """The hub unreachable (a closed port): the newest status is stored every
    ``persist_interval``, shortened to ``--persist-interval`` and scaled to the default."""
    node = Node(
        work / name,
        name,
        hub,
        broker,
        synchronous=sync,
        commit_window=args.commit_window,
        status_interval=args.status_interval,
        devices=0,
        offline_url=f"ws://127.0.0.1:{free_port()}",
        persist_interval=args.persist_interval,
    )
    try:
        time.sleep(args.warmup)
        start, began = node.written(), time.monotonic()
        time.sleep(args.idle_seconds)
        written, elapsed = node.written() - start, time.monotonic() - began
    finally:
        node.stop()
    per_store = written / (elapsed / args.persist_interval)
    return {
        "seconds": round(elapsed, 1),
        "persist_interval": args.persist_interval,
        "bytes": written,
        "bytes_per_stored_status": round(per_store),
        "bytes_per_day": round(per_store * DAY / DEFAULT_PERSIST_INTERVAL),
    }


def report_phase(
    work: Path,
    hub: HubProcess,
    broker: Broker,
    name: str,
    sync: str,
    devices: int,
    args: argparse.Namespace,
) -> dict[str, Any]:
    node = Node(
        work / name,
        name,
        hub,
        broker,
        synchronous=sync,
        commit_window=args.commit_window,
        status_interval=DEFAULT_STATUS_INTERVAL,
        devices=devices,
    )
    try:
        written, count = asyncio.run(
            devices_report(broker.port, devices, 1.0, args.report_seconds, node, args.warmup)
        )
    finally:
        node.stop()
    return {
        "devices": devices,
        "reports": count,
        "bytes": written,
        "bytes_per_report": round(written / max(count, 1)),
    }


def batch_sweep(work: Path, sync: str, sizes: list[int], reports: int) -> dict[str, Any]:
    """The store alone, in this process: bytes written (``/proc/self/io``) per report when
    ``k`` reports (100 devices' twins and their coalesced twin records, ~600 B documents)
    go into one commit and their acks are deleted by the next (``ack_deferred``, as the
    node does): what a group-commit window of ``k`` reports costs per report."""
    from edgenode.store import Store

    found: dict[str, Any] = {}
    for k in sizes:
        with tempfile.TemporaryDirectory(dir=work) as tmp:
            store = Store(str(Path(tmp) / "node.db"), synchronous=sync)
            me = os.getpid()
            start = write_bytes(me)
            done = 0
            while done < reports:
                twins, records = [], []
                for i in range(done, done + k):
                    device = f"dev-{i % DEVICES_AT_100:03d}"
                    doc = json.dumps({"reported": {"temperature": i % 50, "pad": "x" * 500}})
                    twins.append((device, doc.encode()))
                    record = json.dumps({"kind": "twin", "device": device, "seq": i}).encode()
                    records.append((record + b" " * 150, 3, None, f"twin/{device}"))
                seqs = store.commit_batch(twins, records)
                # As the node acks: deleted by the next commit (docs/store.md).
                store.ack_deferred([seq for seq in seqs if seq is not None])
                done += k
            store.close()
            found[str(k)] = round((write_bytes(me) - start) / done)
    return found


def median_of(runs: list[dict[str, Any]], key: str) -> float:
    return statistics.median(run[key] for run in runs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dir", default=None, help="work directory (on the disk under test)")
    parser.add_argument("--idle-seconds", type=float, default=90.0)
    parser.add_argument("--status-interval", type=float, default=2.0)
    parser.add_argument("--persist-interval", type=float, default=5.0)
    parser.add_argument("--warmup", type=float, default=WARMUP)
    parser.add_argument("--report-seconds", type=float, default=60.0)
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--sync", default="normal,full", help="settings to measure")
    parser.add_argument("--phases", default="idle,burst,lone")
    parser.add_argument(
        "--commit-window", type=float, default=0.0, help="the node's [store] commit_window"
    )
    parser.add_argument("--out", default=None, help="also write the JSON here")
    parser.add_argument(
        "--batch-sweep",
        default="",
        help="instead: the store alone, bytes per report at these reports per commit (1,10,100)",
    )
    args = parser.parse_args()
    base = Path(args.dir) if args.dir else None
    if args.batch_sweep:
        sizes = [int(k) for k in args.batch_sweep.split(",")]
        with tempfile.TemporaryDirectory(dir=base, prefix="bench-disk-") as tmp:
            sweep = {
                sync: batch_sweep(Path(tmp), sync, sizes, 3000) for sync in args.sync.split(",")
            }
        text = json.dumps({"bench": "disk-batch", "backend": backend, "sweep": sweep}, indent=2)
        print(text)
        if args.out:
            Path(args.out).write_text(text + "\n")
        return
    if base is not None:
        base.mkdir(parents=True, exist_ok=True)
    phases = args.phases.split(",")
    with tempfile.TemporaryDirectory(dir=base, prefix="bench-disk-") as tmp:
        work = Path(tmp)
        fs = filesystem_type(work)
        if fs in ("tmpfs", "ramfs"):
            raise SystemExit(f"{work} is on {fs}: write_bytes would read 0; pass --dir")
        (work / "hub").mkdir()
        hub = HubProcess(work / "hub")
        hub.start()
        broker = Broker(work)
        results: dict[str, Any] = {}
        try:
            for sync in args.sync.split(","):
                runs: dict[str, list[dict[str, Any]]] = {phase: [] for phase in phases}
                for attempt in range(args.repeat):
                    tag = f"{sync}-{attempt}"
                    if "idle" in phases:
                        runs["idle"].append(
                            idle_phase(work, hub, broker, f"idle-{tag}", sync, args)
                        )
                    if "offline" in phases:
                        runs["offline"].append(
                            offline_phase(work, hub, broker, f"offline-{tag}", sync, args)
                        )
                    if "burst" in phases:
                        runs["burst"].append(
                            report_phase(
                                work, hub, broker, f"burst-{tag}", sync, DEVICES_AT_100, args
                            )
                        )
                    if "lone" in phases:
                        runs["lone"].append(
                            report_phase(work, hub, broker, f"lone-{tag}", sync, 1, args)
                        )
                summary: dict[str, Any] = {"runs": runs}
                if runs.get("idle"):
                    summary["idle_bytes_per_day"] = median_of(runs["idle"], "bytes_per_day")
                if runs.get("offline"):
                    summary["offline_bytes_per_day"] = median_of(runs["offline"], "bytes_per_day")
                if runs.get("burst"):
                    summary["bytes_per_report_at_100"] = median_of(
                        runs["burst"], "bytes_per_report"
                    )
                if runs.get("lone"):
                    summary["bytes_per_report_lone"] = median_of(runs["lone"], "bytes_per_report")
                results[sync] = summary
                print(
                    f"synchronous={sync}: idle {summary.get('idle_bytes_per_day', '-')} B/day, "
                    f"offline {summary.get('offline_bytes_per_day', '-')} B/day, "
                    f"{summary.get('bytes_per_report_at_100', '-')} B/report at 100/s, "
                    f"{summary.get('bytes_per_report_lone', '-')} B/report lone 1/s",
                    file=sys.stderr,
                    flush=True,
                )
        finally:
            broker.stop()
            hub.stop()
    document = {
        "bench": "disk",
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "machine": f"{platform.machine()} {os.cpu_count()} cores (shared)",
        "filesystem": fs,
        "backend": backend,
        "commit_window": args.commit_window,
        "budgets": {
            "idle_bytes_per_day": BUDGET_IDLE_PER_DAY,
            "bytes_per_report_at_100": BUDGET_PER_REPORT_100,
            "bytes_per_report_lone": BUDGET_PER_REPORT_LONE,
        },
        "results": results,
    }
    text = json.dumps(document, indent=2)
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n")


if __name__ == "__main__":
    main()

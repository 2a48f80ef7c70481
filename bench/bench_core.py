"""Benchmarks of the core: Rust extension vs the pure-Python twin, in one run.

Reports medians of several repetitions and the Rust/Python ratio for each
workload, prints a table and writes a JSON results file. Speed is measured
here, never asserted in tests: the machines are shared and noisy.

Workloads (from the foundation issue):
- router: 10,000 filters (mixed exact / ``+`` / ``#``), 1,000,000 topics matched
  with ``match_many`` in batches of 1,000; first as a user calls it (the garbage
  collector on, no ``gc.freeze()``) with both result shapes, ``match_many`` (a list per
  topic) and ``match_flat`` (ids plus offsets, no object per topic), then ``match_many``
  with the input frozen as before;
- twin: ``delta`` on a ~1.2 KB document with 3 changed leaves;
- report: a device report through ``DeviceTwin.apply_report`` + ``commit`` on a ~1.2 KB
  twin (payload bytes -> parse -> limits -> merge -> stamp -> delta -> the reply, delta,
  outbox record and stored document bytes), 1-3 leaves changed per report;
- outbox: append 1,000,000 messages of 200 bytes in batches of 100 durably
  (``synchronous="full"``), then read (``peek``) and acknowledge them all; bytes
  written to disk per message from /proc/self/io.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any, Final

from edgenode import _pure
from edgenode._backend import load_native

SEED = 20261127


def machine_description() -> dict[str, Any]:
    model = "unknown"
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return {
        "machine": platform.machine(),
        "cpu": model,
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "system": platform.platform(),
    }


def median_of(repeats: int, run: Callable[[], float]) -> tuple[float, list[float]]:
    samples = [run() for _ in range(repeats)]
    return statistics.median(samples), samples


# ---------------------------------------------------------------- router ----


def router_workload(filter_count: int, topic_count: int) -> tuple[list[str], list[str]]:
    rng = random.Random(SEED)
    sites = [f"site{i}" for i in range(50)]
    kinds = ["temp", "humidity", "power", "door", "flow", "level", "rpm", "alarm"]
    devices = [f"dev{i}" for i in range(400)]
    filters: list[str] = []
    seen: set[str] = set()
    while len(filters) < filter_count:
        site, kind, device = rng.choice(sites), rng.choice(kinds), rng.choice(devices)
        shape = rng.random()
        if shape < 0.6:
            candidate = f"plant/{site}/{device}/{kind}"
        elif shape < 0.8:
            candidate = f"plant/{site}/+/{kind}"
        elif shape < 0.95:
            candidate = f"plant/{site}/{device}/#"
        else:
            candidate = f"plant/+/{device}/+"
        if candidate not in seen:
            seen.add(candidate)
            filters.append(candidate)
    topics = [
        f"plant/{rng.choice(sites)}/{rng.choice(devices)}/{rng.choice(kinds)}"
        for _ in range(topic_count)
    ]
    return filters, topics


def bench_router(
    core: ModuleType, filters: list[str], topics: list[str], repeats: int, flat: bool = False
) -> dict[str, Any]:
    """``match_many`` (or with ``flat``, ``match_flat``) in batches of 1,000 topics."""
    router = core.TopicRouter()
    for target, topic_filter in enumerate(filters):
        router.add(topic_filter, target)
    batches = [topics[i : i + 1000] for i in range(0, len(topics), 1000)]
    matched = 0

    def run() -> float:
        nonlocal matched
        matched = 0
        start = time.perf_counter()
        if flat:
            for batch in batches:
                ids, _offsets = router.match_flat(batch)
                matched += len(ids)
        else:
            for batch in batches:
                for result in router.match_many(batch):
                    matched += len(result)
        return time.perf_counter() - start

    seconds, samples = median_of(repeats, run)
    return {
        "filters": len(filters),
        "topics": len(topics),
        "targets_matched": matched,
        "seconds": seconds,
        "samples": samples,
        "topics_per_second": len(topics) / seconds,
    }


# ------------------------------------------------------------------ twin ----


def twin_documents() -> tuple[dict[str, Any], dict[str, Any]]:
    """A ~1.2 KB desired document and a reported one differing in 3 leaves."""
    desired: dict[str, Any] = {
        "firmware": {"version": "2.4.1", "channel": "stable", "autoUpdate": True},
        "network": {
            "wifi": {"ssid": "plant-floor-2", "band": "5GHz", "powerSave": False},
            "ntp": ["0.pool.ntp.example", "1.pool.ntp.example"],
            "mqtt": {"keepalive": 30, "qos": 1, "retain": False},
        },
        "sampling": {
            f"channel{i}": {"rate_hz": 10 * i, "enabled": i % 2 == 0, "gain": 1.5 + i}
            for i in range(14)
        },
        "thresholds": {
            "temperature": {"low": 5.0, "high": 42.5},
            "humidity": {"low": 20, "high": 80},
        },
        "labels": {"zone": "north", "line": "L4", "owner": "maintenance"},
        "display": {"brightness": 70, "timeout_s": 120, "units": "metric", "locale": "en_GB"},
    }
    reported = json.loads(json.dumps(desired))
    reported["firmware"]["version"] = "2.3.9"
    reported["sampling"]["channel3"]["rate_hz"] = 25
    reported["display"]["brightness"] = 55
    reported["uptime_s"] = 86400  # only in reported: never in the delta
    return desired, reported


def bench_twin(core: ModuleType, iterations: int, repeats: int) -> dict[str, Any]:
    desired, reported = twin_documents()
    result = core.delta(desired, reported)
    delta = core.delta

    def run() -> float:
        start = time.perf_counter()
        for _ in range(iterations):
            delta(desired, reported)
        return time.perf_counter() - start

    seconds, samples = median_of(repeats, run)
    return {
        "document_bytes": len(json.dumps(desired, separators=(",", ":")).encode()),
        "changed_leaves": 3,
        "delta": result,
        "iterations": iterations,
        "seconds": seconds,
        "samples": samples,
        "microseconds_per_delta": seconds / iterations * 1e6,
        "deltas_per_second": iterations / seconds,
    }


# ---------------------------------------------------------------- report ----

REPORT_PAYLOADS = 1000
"""Distinct report payloads cycled through (each changes 1-3 leaves of the twin)."""


def report_payloads(count: int) -> list[bytes]:
    """Small device reports as a device sends them: 1-3 changed leaves and a token."""
    payloads = []
    for i in range(count):
        reported: dict[str, Any] = {"display": {"brightness": i % 100}}
        if i % 3 >= 1:
            reported["sampling"] = {"channel3": {"rate_hz": 20 + i % 7}}
        if i % 3 == 2:
            reported["firmware"] = {"version": f"2.4.{i % 5}"}
        payloads.append(json.dumps({"reported": reported, "clientToken": f"t-{i}"}).encode())
    return payloads


def report_twin(core: ModuleType) -> Any:
    """A device twin holding the ~1.2 KB desired and reported documents."""
    desired, reported = twin_documents()
    twin = core.DeviceTwin("sensor-1")
    twin.set_desired(json.dumps(desired).encode(), 1.0)
    twin.commit()
    twin.apply_report(json.dumps({"reported": reported}).encode(), 2.0)
    twin.commit()
    return twin


def bench_report(core: ModuleType, iterations: int, repeats: int) -> dict[str, Any]:
    payloads = report_payloads(REPORT_PAYLOADS)
    twin = report_twin(core)
    document_bytes = len(twin.document())

    def run() -> float:
        apply, commit = twin.apply_report, twin.commit
        start = time.perf_counter()
        for i in range(iterations):
            outcome = apply(payloads[i % REPORT_PAYLOADS], 1000.0 + i)
            if outcome.code:
                raise RuntimeError(f"benchmark report rejected: {outcome.message}")
            commit()
        return time.perf_counter() - start

    seconds, samples = median_of(repeats, run)
    # A fresh twin fed the same reports: its outputs are compared across backends.
    check = report_twin(core)
    outputs = [check.apply_report(p, 3.0 + n) for n, p in enumerate(payloads[:50])]
    check.commit()
    return {
        "document_bytes": document_bytes,
        "payload_bytes": statistics.mean(len(p) for p in payloads),
        "outputs": [[o.reply, o.delta, o.twin_uplink, o.document] for o in outputs],
        "iterations": iterations,
        "seconds": seconds,
        "samples": samples,
        "microseconds_per_report": seconds / iterations * 1e6,
        "reports_per_second": iterations / seconds,
    }


# ------------------------------------------------------------ mqtt codec ----

MQTT_CHUNK: Final = 65_536
"""Bytes per ``feed``: what one socket read of the node's client typically holds."""


def mqtt_stream(count: int) -> list[bytes]:
    """``count`` QoS 1 twin reports of 100 devices as a broker sends them, cut in
    MQTT_CHUNK-byte reads (packets split across reads, as on a socket)."""
    payloads = report_payloads(REPORT_PAYLOADS)
    packets = [
        (
            f"$edge/devices/dev{i % 100}/twin/update",
            payloads[i % REPORT_PAYLOADS],
            False,
            1,
            i % 65_535 + 1,
        )
        for i in range(count)
    ]
    stream = _pure.encode_publishes(packets)
    return [stream[at : at + MQTT_CHUNK] for at in range(0, len(stream), MQTT_CHUNK)]


def bench_mqtt(core: ModuleType, count: int, repeats: int) -> dict[str, Any]:
    """Decode a stream of ``count`` PUBLISH packets and encode their PUBACKs, as the
    node's client does per socket read and per batch."""
    chunks = mqtt_stream(count)

    def run() -> float:
        decoder = core.MqttDecoder()
        feed, encode_acks = decoder.feed, core.encode_acks
        start = time.perf_counter()
        for chunk in chunks:
            messages = feed(chunk)[0]
            encode_acks([(message[3], 1) for message in messages])
        return time.perf_counter() - start

    seconds, samples = median_of(repeats, run)
    decoded = core.MqttDecoder().feed(b"".join(chunks))[0]
    return {
        "messages": count,
        "bytes": sum(len(chunk) for chunk in chunks),
        "check": [list(m) for m in decoded[:: max(1, count // 50)]],
        "seconds": seconds,
        "samples": samples,
        "messages_per_second": count / seconds,
    }


# ---------------------------------------------------------------- outbox ----


def process_write_bytes() -> int:
    """Bytes this process caused to be written to storage (Linux /proc/self/io)."""
    try:
        with open("/proc/self/io", encoding="ascii") as io_stats:
            for line in io_stats:
                if line.startswith("write_bytes:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return -1


def bench_outbox(core: ModuleType, messages: int, repeats: int) -> dict[str, Any]:
    batch_size = 100
    payload = bytes(range(200))
    batch = [(payload, 5, None)] * batch_size
    append_samples: list[float] = []
    drain_samples: list[float] = []
    written_per_message: list[float] = []
    for _ in range(repeats):
        with tempfile.TemporaryDirectory(prefix="edgenode-bench-") as folder:
            store = core.Store(
                str(Path(folder) / "node.db"),
                synchronous="full",
                outbox_max_bytes=2 * messages * len(payload),
            )
            written_before = process_write_bytes()
            start = time.perf_counter()
            for _ in range(messages // batch_size):
                store.append_many(batch)
            append_samples.append(time.perf_counter() - start)
            written_after = process_write_bytes()
            if written_before >= 0:
                written_per_message.append((written_after - written_before) / messages)

            drained = 0
            start = time.perf_counter()
            while True:
                records = store.peek(1000)
                if not records:
                    break
                store.ack_ranges([(records[0][0], records[-1][0])])
                drained += len(records)
            drain_samples.append(time.perf_counter() - start)
            store.close()
            if drained != messages:
                raise RuntimeError(f"drained {drained} of {messages} messages")
    append_seconds = statistics.median(append_samples)
    drain_seconds = statistics.median(drain_samples)
    return {
        "messages": messages,
        "payload_bytes": len(payload),
        "batch": batch_size,
        "synchronous": "full",
        "append_seconds": append_seconds,
        "append_samples": append_samples,
        "append_per_second": messages / append_seconds,
        "drain_seconds": drain_seconds,
        "drain_samples": drain_samples,
        "drain_per_second": messages / drain_seconds,
        "disk_bytes_written_per_message": (
            statistics.median(written_per_message) if written_per_message else None
        ),
    }


# ------------------------------------------------------------------ main ----


def ratio(rust: float, python: float) -> float:
    return rust / python if python else float("nan")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", default="bench/results/core.json", help="results file (JSON)")
    parser.add_argument("--repeats", type=int, default=3, help="repetitions per measurement")
    parser.add_argument(
        "--scale", type=float, default=1.0, help="scale workload sizes (0.1 for a quick run)"
    )
    args = parser.parse_args(argv)

    native = load_native()
    if native is None:
        print("the Rust extension is not built: run scripts/bench.sh", file=sys.stderr)
        return 1
    backends = {"rust": native, "python": _pure}
    scale = args.scale

    filters, topics = router_workload(10_000, int(1_000_000 * scale))
    results: dict[str, Any] = {"machine": machine_description(), "scale": scale}
    # First as a user calls it: no gc.freeze(), the collector on, both result shapes.
    gc.collect()
    results["router_unfrozen"] = {
        shape: {
            name: bench_router(core, filters, topics, args.repeats, flat=shape == "match_flat")
            for name, core in backends.items()
        }
        for shape in ("match_many", "match_flat")
    }
    counts = {
        (shape, name): run["targets_matched"]
        for shape, by_backend in results["router_unfrozen"].items()
        for name, run in by_backend.items()
    }
    if len(set(counts.values())) != 1:
        raise RuntimeError(f"the router runs disagree on what matched: {counts}")
    # The million input topics are benchmark scaffolding: without this, every full
    # collection triggered by the result lists walks them (~300 ns a topic on both
    # backends) and the run measures the garbage collector instead of the router.
    gc.collect()
    gc.freeze()
    results["router"] = {
        name: bench_router(core, filters, topics, args.repeats) for name, core in backends.items()
    }
    results["twin"] = {
        name: bench_twin(core, int(100_000 * scale), args.repeats)
        for name, core in backends.items()
    }
    results["report"] = {
        name: bench_report(core, int(100_000 * scale), args.repeats)
        for name, core in backends.items()
    }
    if results["report"]["rust"].pop("outputs") != results["report"]["python"].pop("outputs"):
        raise RuntimeError("the backends disagree on the benchmark report outputs")
    results["mqtt"] = {
        name: bench_mqtt(core, int(500_000 * scale), args.repeats)
        for name, core in backends.items()
    }
    if results["mqtt"]["rust"].pop("check") != results["mqtt"]["python"].pop("check"):
        raise RuntimeError("the backends disagree on the decoded MQTT messages")
    results["outbox"] = {
        name: bench_outbox(core, int(1_000_000 * scale) // 100 * 100, args.repeats)
        for name, core in backends.items()
    }
    if results["twin"]["rust"]["delta"] != results["twin"]["python"]["delta"]:
        raise RuntimeError("the backends disagree on the benchmark delta")

    router_r, router_p = results["router"]["rust"], results["router"]["python"]
    many_r, many_p = (results["router_unfrozen"]["match_many"][n] for n in ("rust", "python"))
    flat_r, flat_p = (results["router_unfrozen"]["match_flat"][n] for n in ("rust", "python"))
    twin_r, twin_p = results["twin"]["rust"], results["twin"]["python"]
    out_r, out_p = results["outbox"]["rust"], results["outbox"]["python"]
    rep_r, rep_p = results["report"]["rust"], results["report"]["python"]
    mqtt_r, mqtt_p = results["mqtt"]["rust"], results["mqtt"]["python"]
    results["ratios"] = {
        "mqtt_rust_over_python": ratio(
            mqtt_r["messages_per_second"], mqtt_p["messages_per_second"]
        ),
        "report_rust_over_python": ratio(rep_r["reports_per_second"], rep_p["reports_per_second"]),
        "router_rust_over_python": ratio(
            router_r["topics_per_second"], router_p["topics_per_second"]
        ),
        "router_unfrozen_match_many_rust_over_python": ratio(
            many_r["topics_per_second"], many_p["topics_per_second"]
        ),
        "router_unfrozen_match_flat_rust_over_python": ratio(
            flat_r["topics_per_second"], flat_p["topics_per_second"]
        ),
        "twin_rust_over_python": ratio(twin_r["deltas_per_second"], twin_p["deltas_per_second"]),
        "outbox_append_rust_over_python": ratio(
            out_r["append_per_second"], out_p["append_per_second"]
        ),
        "outbox_drain_rust_over_python": ratio(
            out_r["drain_per_second"], out_p["drain_per_second"]
        ),
    }
    rows = [
        (
            "router match_many, GC on (topics/s)",
            many_r["topics_per_second"],
            many_p["topics_per_second"],
            "report",
        ),
        (
            "router match_flat, GC on (topics/s)",
            flat_r["topics_per_second"],
            flat_p["topics_per_second"],
            "5,000,000",
        ),
        (
            "router match_many (topics/s)",
            router_r["topics_per_second"],
            router_p["topics_per_second"],
            "2,000,000",
        ),
        (
            "twin delta (deltas/s)",
            twin_r["deltas_per_second"],
            twin_p["deltas_per_second"],
            "1.5x python",
        ),
        (
            "device report (reports/s)",
            rep_r["reports_per_second"],
            rep_p["reports_per_second"],
            "5x python",
        ),
        (
            "mqtt decode + PUBACKs (msgs/s)",
            mqtt_r["messages_per_second"],
            mqtt_p["messages_per_second"],
            "report",
        ),
        (
            "outbox append (msgs/s)",
            out_r["append_per_second"],
            out_p["append_per_second"],
            "200,000",
        ),
        (
            "outbox peek+ack (msgs/s)",
            out_r["drain_per_second"],
            out_p["drain_per_second"],
            "200,000",
        ),
    ]
    print(
        f"machine: {results['machine']['cpu']} ({results['machine']['cores']} cores), "
        f"Python {results['machine']['python']}, scale {scale}, median of {args.repeats}"
    )
    print(f"{'workload':36} {'rust':>14} {'python':>14} {'ratio':>7}  goal")
    for label, rust_value, python_value, goal in rows:
        print(
            f"{label:36} {rust_value:>14,.0f} {python_value:>14,.0f} "
            f"{ratio(rust_value, python_value):>6.1f}x  {goal}"
        )
    print(
        f"twin delta: rust {twin_r['microseconds_per_delta']:.2f} us, "
        f"python {twin_p['microseconds_per_delta']:.2f} us"
        f" on a {twin_r['document_bytes']}-byte document"
    )
    print(
        f"device report: rust {rep_r['microseconds_per_report']:.2f} us, "
        f"python {rep_p['microseconds_per_report']:.2f} us"
        f" on a {rep_r['document_bytes']}-byte stored twin"
    )
    for name, stats in results["outbox"].items():
        written = stats["disk_bytes_written_per_message"]
        if written is not None:
            print(f"outbox disk bytes written per message ({name}): {written:,.0f}")

    output = Path(args.output)
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(results, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    print(f"results written to {output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

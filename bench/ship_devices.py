"""The ship test's devices: telemetry of mixed priorities and TTLs on a node's local bus.

Run by ``bench/bench_ship.py`` inside the node's network namespace (the ship's own LAN:
device traffic never crosses the shaped uplink). It publishes QoS 1 telemetry of known
devices on ``$edge/devices/{device}/telemetry/{class}``; the node's Routes give each class
its priority and TTL. Every message carries its number ``n``, its class and the
publisher's ``CLOCK_MONOTONIC`` (system-wide, never faked: this process runs without
libfaketime), and is logged once Mosquitto acknowledged it, one JSON line each, so the
scenario can count every record from the device to the hub.

The rate (messages per second) is read from ``--rate-file`` twice a second: the scenario
raises it while the link is down (simulated days pass) and lowers it when the link is
back. SIGTERM stops it after flushing its log.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import json
import signal
import threading
import time
from pathlib import Path
from types import FrameType
from typing import TextIO

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

CLASSES = ("alarm", "energy", "temp", "bulk")
"""Message classes; the scenario's Routes map each to a priority and TTL."""
PAD = "x" * 48
"""A little body, so that a record is the size of a small real reading (~230 B)."""
RATE_POLL = 0.5
MAX_INFLIGHT = 1000


ALARM_EVERY = 1000
"""One message in 1,000 is an alarm (0.1 %: about 7 a day at 300 reports an hour; a month of
them, ~70 KB in the outbox, fits the scenario's quota with room for other records)."""


def message_class(n: int) -> str:
    """0.1 % alarms, then energy, temp and bulk in a 6:7:6 mix."""
    if n % ALARM_EVERY == 0:
        return "alarm"
    return ("energy", "temp", "bulk")[(n * 7) % 19 % 3]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--devices", type=int, default=3)
    parser.add_argument("--rate-file", type=Path, required=True)
    parser.add_argument("--log", type=Path, required=True)
    args = parser.parse_args()

    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)

    # Acknowledged message ids, appended by paho's thread (no lock: paho calls on_publish
    # holding its own message lock, which publish() takes too).
    acked: collections.deque[int] = collections.deque()
    pending: dict[int, str] = {}
    early: set[int] = set()

    def on_publish(
        client: mqtt.Client, userdata: object, mid: int, reason: object, props: object
    ) -> None:
        acked.append(mid)

    def flush(log: TextIO) -> None:
        while acked:
            early.add(acked.popleft())
        for mid in list(early):
            line = pending.pop(mid, None)
            if line is not None:
                early.discard(mid)
                log.write(line + "\n")
        log.flush()

    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="ship-devices")
    client.on_publish = on_publish
    client.max_inflight_messages_set(MAX_INFLIGHT)
    client.connect("127.0.0.1", args.port, keepalive=30)
    client.loop_start()
    rate = 1.0
    next_rate_read = 0.0
    n = 0
    with args.log.open("a", encoding="utf-8") as log:
        next_at = time.monotonic()
        while not stop.is_set():
            now = time.monotonic()
            if now >= next_rate_read:
                next_rate_read = now + RATE_POLL
                flush(log)
                with contextlib.suppress(OSError, ValueError):
                    rate = max(0.1, float(args.rate_file.read_text().strip()))
            if now < next_at:
                stop.wait(min(next_at - now, RATE_POLL))
                continue
            next_at = max(next_at + 1.0 / rate, now - 1.0)
            cls = message_class(n)
            device = f"sensor-{n % args.devices + 1}"
            body = {"n": n, "c": cls, "t": round(now, 3), "pad": PAD}
            info = client.publish(
                f"$edge/devices/{device}/telemetry/{cls}", json.dumps(body), qos=1
            )
            if info.rc != mqtt.MQTT_ERR_SUCCESS:
                continue  # not handed over: not counted as published
            pending[info.mid] = json.dumps({"n": n, "c": cls, "t": round(now, 3)})
            n += 1
        deadline = time.monotonic() + 5.0
        while pending and time.monotonic() < deadline:
            flush(log)
            time.sleep(0.05)
        flush(log)
    client.loop_stop()
    client.disconnect()


if __name__ == "__main__":
    main()

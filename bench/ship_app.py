"""The ship test's App (``bench/bench_ship.py`` pushes it as an artifact; the App
``ship-app`` runs it on the node): a heartbeat on the node's local bus.

Every ``BEAT`` seconds it publishes a QoS 1 beat on ``ship/app/{node}`` to the node's
broker (``EDGENODE_MQTT_HOST``/``PORT``, inside the node's network namespace) and, once
Mosquitto acknowledged it, appends a JSON line to ``SHIP_APP_LOG`` (a path the App's spec
passes in ``env``): ``{"e": "start"|"beat", "rev", "pid", "t"}``, ``t`` being
``CLOCK_MONOTONIC`` — the real one: the node builds an App's environment from scratch
(docs/apps.md), so libfaketime, preloaded into the node, is not in the App's. The scenario
reads the log to tell which revision ran when, and which instance (pid) the node started
after each of its restarts. It prints one line when it starts and nothing after (a daemon
killed with SIGKILL leaves the App a stdout with no reader).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sys
import threading
import time

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

BEAT = 1.0
VERSION = "1"
"""Rewritten by the scenario for the App's second revision (a new artifact)."""


def log(path: str, event: str, revision: str) -> None:
    line = {"e": event, "rev": int(revision), "v": VERSION, "pid": os.getpid()}
    line["t"] = round(time.monotonic(), 3)
    with open(path, "a", encoding="utf-8") as handle:
        handle.write(json.dumps(line) + "\n")


def main() -> None:
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(0))
    node = os.environ.get("EDGENODE_NODE", "?")
    revision = os.environ.get("EDGENODE_APP_REVISION", "0")
    path = os.environ["SHIP_APP_LOG"]
    connected = threading.Event()
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"ship-app-{node}")
    client.connect_async(
        os.environ.get("EDGENODE_MQTT_HOST", "127.0.0.1"),
        int(os.environ.get("EDGENODE_MQTT_PORT", "1883")),
        keepalive=30,
    )
    client.on_connect = lambda *_: connected.set()
    client.loop_start()  # reconnects by itself if the broker restarts
    log(path, "start", revision)
    print(f"ship-app version {VERSION} revision {revision} on {node}", flush=True)
    connected.wait(30.0)
    n = 0
    while True:
        info = client.publish(f"ship/app/{node}", json.dumps({"n": n, "rev": revision}), qos=1)
        # RuntimeError: not connected (the beat is not logged, the App goes on).
        with contextlib.suppress(RuntimeError, ValueError):
            info.wait_for_publish(timeout=5.0)
            if info.is_published():
                log(path, "beat", revision)
        n += 1
        time.sleep(BEAT)


if __name__ == "__main__":
    main()

"""The demo's App (scripts/demo.py pushes it as an artifact; the App ``sampler`` runs it on
the nodes labelled site=north): it reads its Config file and publishes a sample on the
node's local MQTT bus every SAMPLE_INTERVAL seconds, printing a line per sample (its log).

The node tells an App where its broker is (EDGENODE_MQTT_HOST, EDGENODE_MQTT_PORT) and
which node it runs on (EDGENODE_NODE); docs/apps.md lists the whole environment.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import time
from types import FrameType

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

TUNING = "tuning.json"
"""The Config north-tuning as a file (the App's ``files``), re-read for every sample."""


def tuning() -> dict[str, str]:
    try:
        with open(TUNING, encoding="utf-8") as handle:
            data = json.load(handle)
    except (OSError, ValueError) as exc:
        print(f"cannot read {TUNING}: {exc}", flush=True)
        return {}
    return data if isinstance(data, dict) else {}


def stop(signum: int, frame: FrameType | None) -> None:
    print(f"stopping on signal {signum}", flush=True)
    sys.exit(0)


def main() -> None:
    signal.signal(signal.SIGTERM, stop)
    node = os.environ.get("EDGENODE_NODE", "?")
    host = os.environ.get("EDGENODE_MQTT_HOST", "127.0.0.1")
    port = int(os.environ.get("EDGENODE_MQTT_PORT", "1883"))
    interval = float(os.environ.get("SAMPLE_INTERVAL", "1"))
    topic = f"apps/sampler/{node}"
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"sampler-{node}")
    client.connect_async(host, port, keepalive=30)
    client.loop_start()  # reconnects by itself if the broker restarts
    print(f"sampler on {node}: publishing to {topic} on {host}:{port}", flush=True)
    n = 0
    while True:
        settings = tuning()
        sample = {"n": n, "node": node, "comfort_band": settings.get("comfort_band")}
        client.publish(topic, json.dumps(sample), qos=0)
        print(f"sample {n}: comfort_band {sample['comfort_band']}", flush=True)
        n += 1
        time.sleep(interval)


if __name__ == "__main__":
    main()

"""A node daemon with one extra service: a stream of telemetry uplink records.

Run as ``python producer.py CONFIG COUNT``: the real ``Daemon`` (as ``edgenode run`` runs
it) plus a service that calls ``Daemon.enqueue_uplink`` — the API the device layer uses —
COUNT times in small bursts, printing ``accepted <seq>`` after each append returned (so the
record is durable in the outbox). Tests SIGKILL it in the middle of the stream.
"""

from __future__ import annotations

import asyncio
import logging
import sys

from edgenode.config import load_config
from edgenode.node import Daemon

BURST = 20
PAUSE = 0.005


async def produce(daemon: Daemon, count: int) -> None:
    for index in range(count):
        seq = daemon.enqueue_uplink("telemetry", {"i": index, "temp": 20 + index % 7})
        sys.stdout.write(f"accepted {seq}\n")
        sys.stdout.flush()
        if index % BURST == BURST - 1:
            await asyncio.sleep(PAUSE)
    await asyncio.Event().wait()


def main() -> int:
    config = load_config(sys.argv[1])
    count = int(sys.argv[2])
    logging.basicConfig(level="INFO", format="%(levelname)s %(name)s: %(message)s")
    daemon = Daemon(config)
    daemon.add_service("producer", lambda d: produce(d, count))
    return asyncio.run(daemon.run())


if __name__ == "__main__":
    sys.exit(main())

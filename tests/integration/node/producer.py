"""A node daemon with one extra service: a stream of telemetry uplink records.

Run as ``python producer.py CONFIG COUNT [RATE] [--priority=N] [--quiet]``: the real
``Daemon`` with the services ``edgenode run`` assembles, plus a service that commits one
record at a time (priority 5 unless ``--priority``) through the host's commit port
(``Daemon.enqueue_uplink``, what every service's writes go through) COUNT times in small
bursts (or at RATE records/s), printing ``accepted <seq>`` after each commit returned (so
the record is durable in the outbox; ``--quiet`` prints nothing). Tests SIGKILL it in the
middle of the stream; bench/bench_node.py uses RATE.
"""

from __future__ import annotations

import asyncio
import logging
import sys
from collections.abc import Sequence

from edgenode.cli import node_services
from edgenode.config import load_config
from edgenode.node import Daemon
from edgenode.service import DesiredRow, NodeHost

BURST = 20
PAUSE = 0.005
PACE_SLICE = 0.01


class Producer:
    """A node service producing ``count`` telemetry records."""

    name = "producer"
    kinds: frozenset[str] = frozenset()

    def __init__(
        self, daemon: Daemon, count: int, rate: float, quiet: bool, priority: int = 5
    ) -> None:
        self.daemon = daemon
        self.count = count
        self.rate = rate
        self.quiet = quiet
        self.priority = priority

    async def run(self, host: NodeHost) -> None:
        await produce(self.daemon, self.count, self.rate, self.quiet, self.priority)

    def on_desired(self, host: NodeHost, rows: Sequence[DesiredRow], snapshot: bool) -> None:
        pass


async def produce(daemon: Daemon, count: int, rate: float, quiet: bool, priority: int = 5) -> None:
    loop = asyncio.get_running_loop()
    start = loop.time()
    for index in range(count):
        seq = daemon.enqueue_uplink(
            "telemetry", {"i": index, "temp": 20 + index % 7}, priority=priority
        )
        if not quiet:
            sys.stdout.write(f"accepted {seq}\n")
            sys.stdout.flush()
        if rate > 0:
            # Paced: sleep until this record's slot (batches of ~10 ms).
            due = start + (index + 1) / rate
            if due - loop.time() > PACE_SLICE:
                await asyncio.sleep(due - loop.time())
        elif index % BURST == BURST - 1:
            await asyncio.sleep(PAUSE)
    await asyncio.Event().wait()


def main() -> int:
    options = [arg for arg in sys.argv[1:] if arg.startswith("--")]
    args = [arg for arg in sys.argv[1:] if not arg.startswith("--")]
    quiet = "--quiet" in options
    priority = 5
    for option in options:
        if option.startswith("--priority="):
            priority = int(option.removeprefix("--priority="))
    config = load_config(args[0])
    count = int(args[1])
    rate = float(args[2]) if len(args) > 2 else 0.0
    logging.basicConfig(level="INFO", format="%(levelname)s %(name)s: %(message)s")
    daemon = Daemon(config, node_services(config))
    daemon.add_service(Producer(daemon, count, rate, quiet, priority))
    return asyncio.run(daemon.run())


if __name__ == "__main__":
    sys.exit(main())

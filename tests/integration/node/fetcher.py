"""A node daemon with one extra service that fetches one artifact over the hub link, as an
App would: ``python fetcher.py CONFIG DIGEST`` prints ``progress DONE TOTAL`` lines, then
``fetched PATH`` or ``failed REASON``, and keeps running (the test stops it)."""

from __future__ import annotations

import asyncio
import logging
import sys
from collections.abc import Sequence

from edgenode.apps.artifacts import ArtifactError
from edgenode.cli import node_services
from edgenode.config import load_config
from edgenode.node import Daemon
from edgenode.service import DesiredRow, NodeHost


class Fetcher:
    name = "fetcher"
    kinds: frozenset[str] = frozenset()

    def __init__(self, digest: str) -> None:
        self.digest = digest

    async def run(self, host: NodeHost) -> None:
        def progress(done: int, total: int) -> None:
            print(f"progress {done} {total}", flush=True)

        try:
            path = await host.artifacts.fetch(self.digest, progress)
        except ArtifactError as exc:
            print(f"failed {exc}", flush=True)
        else:
            print(f"fetched {path}", flush=True)
        await asyncio.Event().wait()

    def on_desired(self, host: NodeHost, rows: Sequence[DesiredRow], snapshot: bool) -> None:
        pass


def main() -> int:
    config = load_config(sys.argv[1])
    logging.basicConfig(level="INFO", format="%(levelname)s %(name)s: %(message)s")
    daemon = Daemon(config, node_services(config))
    daemon.add_service(Fetcher(sys.argv[2]))
    return asyncio.run(daemon.run())


if __name__ == "__main__":
    sys.exit(main())

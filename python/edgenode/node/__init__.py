"""The edge node daemon (``edgenode run``): asyncio glue around the store and the protocol.

One module per job: ``daemon`` orchestrates (store, services, tasks, signals) and is the
services' host (``edgenode.service``), ``link`` drives the cloud link over ``websockets``,
``state`` keeps the state files that ``edgenode status`` reads, ``status`` samples the
machine with psutil, ``notify`` speaks sd_notify, ``metrics`` serves Prometheus text, and
``configs`` is the Config service. See docs/node.md.
"""

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from edgenode.node.daemon import Daemon


def __getattr__(name: str) -> Any:
    # The daemon pulls in websockets: imported on first use, so that what only reads the
    # node's files (``edgenode status``) or runs beside it does not load it.
    if name == "Daemon":
        from edgenode.node.daemon import Daemon

        return Daemon
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["Daemon"]

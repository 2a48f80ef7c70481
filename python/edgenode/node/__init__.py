"""The edge node daemon (``edgenode run``): asyncio glue around the store and the protocol.

One module per job: ``daemon`` orchestrates (store, tasks, signals), ``link`` drives the
cloud link over ``websockets``, ``backoff`` computes reconnect delays, ``state`` keeps the
link state file that ``edgenode status`` reads, ``status`` samples the machine with psutil,
``uplink`` encodes uplink records, ``notify`` speaks sd_notify, ``metrics`` serves
Prometheus text. See docs/node.md.
"""

from edgenode.node.daemon import Daemon

__all__ = ["Daemon"]

"""Connections that have not authenticated yet, bounded in number on both listeners.

A connection costs a file descriptor from the moment it is accepted, and the node links
share the process's file limit with everything else: 800 connections that trickled one
header line every 10 s once held the operator API open indefinitely. Time is bounded by
each listener (the operator API: ``--api-timeout`` for headers and bodies; node links:
``--handshake-timeout`` for TLS, the HTTP upgrade and the hello); the number is bounded
here. Each listener keeps its unauthenticated connections in arrival order; when one more
arrives at the limit:

- if the OLDEST has been waiting for ``PENDING_GRACE_SECONDS``, it is closed: a client
  that means it authenticates in its first round trip, so it is never old; a slow loris
  always is. (Refusing the newest instead would let a few hundred trickling connections
  lock everyone else out.)
- otherwise (a burst: a fleet reconnecting at once, every pending connection fresh) the
  NEWEST is closed at once, as a full listen backlog would drop it: it has cost nothing
  yet, while the older ones may have sent their request already. The node retries later.

A connection stops counting when it authenticates: the operator API's first request with
the admin token, a node link's upgrade request with a valid node token.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from edgehub.metrics import HubMetrics
from edgehub.ratelog import RateLimitedLog

PENDING_GRACE_SECONDS = 2.0
"""How long a pending connection is spared at the limit: a client that means it sends its
request in its first round trip (TLS is done before a connection counts), under 2 s even
over a satellite link."""
log = logging.getLogger("edgehub.guard")


class PendingConnections:
    """The unauthenticated connections of one listener (``api`` or ``link``)."""

    def __init__(self, listener: str, limit: int, metrics: HubMetrics) -> None:
        self.listener = listener
        self.limit = limit
        self._gauge = metrics.unauthenticated.labels(listener)
        self._closed = metrics.unauthenticated_closed.labels(listener)
        self._pending: dict[asyncio.BaseTransport, float] = {}
        """Transport -> loop time of its arrival; insertion order is arrival order."""
        self._log = RateLimitedLog(log)

    def __len__(self) -> int:
        return len(self._pending)

    def opened(self, transport: asyncio.BaseTransport) -> None:
        """A connection was accepted: it counts until it authenticates or closes."""
        now = asyncio.get_running_loop().time()
        if len(self._pending) >= self.limit:
            oldest, since = next(iter(self._pending.items()))
            if now - since < PENDING_GRACE_SECONDS:
                self._close(transport, "a burst: closed the newest")
                return
            del self._pending[oldest]
            self._close(oldest, "closed the oldest")
        self._pending[transport] = now
        self._gauge.set(len(self._pending))

    def _close(self, transport: asyncio.BaseTransport, what: str) -> None:
        self._closed.inc()
        self._log.log(
            logging.WARNING,
            self.listener,
            "%s listener: %d connections have not authenticated; %s (from %s)",
            self.listener,
            self.limit,
            what,
            _peer(transport),
        )
        if isinstance(transport, asyncio.Transport):
            transport.abort()
        else:
            transport.close()

    def authenticated(self, transport: asyncio.BaseTransport | None) -> None:
        if transport is not None and self._pending.pop(transport, None) is not None:
            self._gauge.set(len(self._pending))

    def closed(self, transport: asyncio.BaseTransport | None) -> None:
        self.authenticated(transport)


def _peer(transport: asyncio.BaseTransport) -> str:
    peer: Any = transport.get_extra_info("peername")
    if isinstance(peer, tuple) and len(peer) >= 2:
        return f"{peer[0]}:{peer[1]}"
    return "unknown"


class GuardedProtocol(asyncio.Protocol):
    """Wraps the protocol of one accepted connection (aiohttp's request handler) to count
    it in ``pending`` from its acceptance to its close."""

    def __init__(self, inner: asyncio.Protocol, pending: PendingConnections) -> None:
        self._inner = inner
        self._pending = pending
        self._transport: asyncio.BaseTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport
        self._pending.opened(transport)
        self._inner.connection_made(transport)

    def connection_lost(self, exc: Exception | None) -> None:
        self._pending.closed(self._transport)
        self._inner.connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        self._inner.data_received(data)

    def eof_received(self) -> bool | None:
        return self._inner.eof_received()

    def pause_writing(self) -> None:
        self._inner.pause_writing()

    def resume_writing(self) -> None:
        self._inner.resume_writing()

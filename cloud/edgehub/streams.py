"""Long-lived responses of the operator API (watches, telemetry follows, App logs), for
``/v1`` and the Kubernetes API alike: counted in ``edgehub_open_streams`` and bounded
(``MAX_OPEN_STREAMS``), ended when their client goes away or stops reading."""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
from typing import Any

from aiohttp import web

from edgehub.metrics import HubMetrics

MAX_OPEN_STREAMS = 256
"""Streams (watches, telemetry follows) open at once; beyond, a new one is answered 503.
Each costs a connection and, for a follow, a store query every ``FOLLOW_POLL_SECONDS``:
256 of them are a few percent of a core. Dashboards and operators need a handful."""
STREAM_CHECK_SECONDS = 1.0
"""A watch with nothing to send checks this often that its client is still connected: a
client that closed its end is noticed within a second, whether or not events come."""
STREAM_KEEPALIVE_IDLE = 60
STREAM_KEEPALIVE_INTERVAL = 10
STREAM_KEEPALIVE_COUNT = 6
"""TCP keep-alive of stream connections: a client that vanished without closing (a
laptop shut, a NAT that forgot the flow) is found dead after 60 s of silence and 6
unanswered probes 10 s apart (2 minutes) instead of the kernel's 2 hours; the stream then
ends like one whose client closed. Writes to a client that stops reading are bounded by
``--api-timeout``."""


def keepalive(transport: asyncio.BaseTransport | None) -> None:
    """Shorter TCP keep-alive on a stream's connection (``STREAM_KEEPALIVE_*``)."""
    sock = None if transport is None else transport.get_extra_info("socket")
    if sock is None:
        return
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
        for option, value in (
            ("TCP_KEEPIDLE", STREAM_KEEPALIVE_IDLE),
            ("TCP_KEEPINTVL", STREAM_KEEPALIVE_INTERVAL),
            ("TCP_KEEPCNT", STREAM_KEEPALIVE_COUNT),
        ):
            if hasattr(socket, option):
                sock.setsockopt(socket.IPPROTO_TCP, getattr(socket, option), value)


class Stream:
    """One open stream: counted in ``edgehub_open_streams`` while open; ends (the ``async
    with`` block is left) when its client goes away or stops reading. NDJSON streams start
    at once; a lazy one (an App's log) only at its first write, so that it can still
    answer with an error status until then."""

    def __init__(
        self,
        request: web.Request,
        write_timeout: float,
        metrics: HubMetrics,
        *,
        content_type: str = "application/x-ndjson",
        lazy: bool = False,
    ) -> None:
        self.request = request
        self.response = web.StreamResponse(headers={"Content-Type": content_type})
        self.write_timeout = write_timeout
        self.metrics = metrics
        self.lazy = lazy

    def _count(self, change: int) -> None:
        self.metrics.open_streams_count += change
        self.metrics.open_streams.set(self.metrics.open_streams_count)

    async def __aenter__(self) -> Stream:
        self._count(+1)  # before the first await: the bound holds under concurrency
        if not self.lazy:
            try:
                await self.start()
            except BaseException:
                self._count(-1)
                raise
        return self

    async def __aexit__(self, kind: Any, exc: Any, tb: Any) -> bool:
        self._count(-1)
        # The client left (reset, closed) or did not take a write in time: the normal
        # end of a stream, not an error.
        return isinstance(exc, ConnectionError | TimeoutError)

    async def start(self) -> None:
        """Send the response head (once)."""
        if not self.response.prepared:
            await self.response.prepare(self.request)
            keepalive(self.request.transport)

    def gone(self) -> bool:
        """Has the client closed its end? (aiohttp drops the transport then.)"""
        transport = self.request.transport
        return transport is None or transport.is_closing()

    async def write(self, data: bytes) -> None:
        """Write; TimeoutError when the client does not take it in time."""
        await self.start()
        async with asyncio.timeout(self.write_timeout):
            await self.response.write(data)

    async def send(self, item: Any) -> None:
        """Write one NDJSON line."""
        await self.write((json.dumps(item) + "\n").encode())


class TooManyStreams(Exception):
    """``MAX_OPEN_STREAMS`` are open: answer 503."""


def open_stream(
    request: web.Request, write_timeout: float, metrics: HubMetrics, **options: Any
) -> Stream:
    """A stream to use as ``async with`` (TooManyStreams over ``MAX_OPEN_STREAMS``)."""
    if metrics.open_streams_count >= MAX_OPEN_STREAMS:
        raise TooManyStreams(
            f"{MAX_OPEN_STREAMS} streams are open, the most this hub serves; retry later"
        )
    return Stream(request, write_timeout, metrics, **options)

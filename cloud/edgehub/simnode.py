"""A simulated node: the real ``NodeProtocol`` over a real ``websockets`` client connection,
keeping its desired state in memory. Used by the hub's tests and the fleet benchmark
(the real node daemon lives in the ``edgenode`` package).
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from edgenode.protocol import (
    ChangesReceived,
    Delete,
    Event,
    NodeConfig,
    NodeProtocol,
    RetryAfter,
    SnapshotReceived,
    UplinkAcked,
    UplinkRecord,
    Upsert,
    Welcomed,
)

MAX_MESSAGE = 2 * 1024 * 1024


@dataclass
class LinkResult:
    """How one connection ended."""

    http_status: int | None = None
    http_body: str = ""
    close_code: int | None = None
    close_reason: str = ""
    retry_after: float | None = None


@dataclass
class SimNode:
    """One node: connect with ``run_once`` (returns when the link ends)."""

    url: str
    token: str
    name: str
    revision: int = 0
    ssl_context: ssl.SSLContext | None = None
    config: NodeConfig | None = None
    desired: dict[str, tuple[int, Any]] = field(default_factory=dict)
    events: list[Event] = field(default_factory=list)
    acked_uplink: set[int] = field(default_factory=set)
    welcomed: asyncio.Event = field(default_factory=asyncio.Event)
    changed: asyncio.Event = field(default_factory=asyncio.Event)
    proto: NodeProtocol | None = None
    ws: ClientConnection | None = None
    on_change: Callable[[SimNode], None] | None = None
    next_seq: int | None = None
    """Sent in hello as the outbox's next sequence number (as ``edgenode run`` does)."""

    async def run_once(self, open_timeout: float = 10.0) -> LinkResult:
        result = LinkResult()
        loop = asyncio.get_running_loop()
        self.welcomed.clear()
        try:
            ws = await connect(
                self.url,
                additional_headers={"Authorization": f"Bearer {self.token}"},
                max_size=MAX_MESSAGE,
                ping_interval=None,
                open_timeout=open_timeout,
                ssl=self.ssl_context,
                compression=None,
            )
        except InvalidStatus as exc:
            result.http_status = exc.response.status_code
            result.http_body = exc.response.body.decode(errors="replace")
            return result
        self.ws = ws
        proto = NodeProtocol(
            self.name,
            "simnode 1",
            self.revision,
            loop.time(),
            self.config,
            next_seq=self.next_seq,
        )
        self.proto = proto
        try:
            with contextlib.suppress(ConnectionClosed):
                await self._drive(ws, proto, result)
            for event in proto.events_received():  # those left when the peer hung up
                self._handle(event, result)
        finally:
            await ws.close()
            self.proto = None
            self.ws = None
        if ws.protocol.close_rcvd is not None:
            result.close_code = ws.protocol.close_rcvd.code
            result.close_reason = ws.protocol.close_rcvd.reason
        return result

    async def _drive(self, ws: ClientConnection, proto: NodeProtocol, result: LinkResult) -> None:
        loop = asyncio.get_running_loop()
        while proto.close_requested() is None:
            await self._flush()
            for event in proto.events_received():
                self._handle(event, result)
            await self._flush()
            if proto.close_requested() is not None:
                break
            deadline = proto.next_deadline()
            timeout = None if deadline is None else max(0.0, deadline - loop.time())
            try:
                # asyncio.timeout, not wait_for: on 3.11 wait_for swallows a cancel that
                # races a message arriving, and the node then never stops.
                async with asyncio.timeout(timeout):
                    message = await ws.recv()
            except TimeoutError:
                proto.tick(loop.time())
            except ConnectionClosed:
                break
            else:
                proto.receive_message(message, loop.time())
        for event in proto.events_received():
            self._handle(event, result)
        await self._flush()
        close = proto.close_requested()
        if close is not None:
            await ws.close(close.code, close.reason)

    async def _flush(self) -> None:
        if self.proto is None or self.ws is None:
            return
        for message in self.proto.data_to_send():
            await self.ws.send(message)

    def _handle(self, event: Event, result: LinkResult) -> None:
        self.events.append(event)
        proto = self.proto
        assert proto is not None
        if isinstance(event, Welcomed):
            self.welcomed.set()
        elif isinstance(event, ChangesReceived):
            for change in event.changes:
                if isinstance(change, Upsert):
                    self.desired[change.key] = (change.revision, change.body)
                elif isinstance(change, Delete):
                    self.desired.pop(change.key, None)
            self.revision = event.revision
            proto.ack(event.revision)
            self._changed()
        elif isinstance(event, SnapshotReceived):
            self.desired = {r.key: (r.revision, r.body) for r in event.resources}
            self.revision = event.revision
            proto.ack(event.revision)
            self._changed()
        elif isinstance(event, UplinkAcked):
            self.acked_uplink.update(event.sequences)
            self._changed()
        elif isinstance(event, RetryAfter):
            result.retry_after = event.delay

    def _changed(self) -> None:
        self.changed.set()
        if self.on_change is not None:
            self.on_change(self)

    async def send_uplink(self, records: list[UplinkRecord]) -> int:
        """Send records now (the caller resends what was not acked)."""
        if self.proto is None:
            return 0
        sent = self.proto.send_uplink(records)
        await self._flush()
        return sent

    async def wait_until(self, predicate: Callable[[], bool], timeout: float = 5.0) -> None:
        async with asyncio.timeout(timeout):
            while not predicate():
                self.changed.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.changed.wait(), 0.1)

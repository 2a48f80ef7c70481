"""Test helpers: a small real hub (a ``websockets`` server driving ``HubProtocol``) and a
userspace TCP proxy that can cut, blackhole, stall, refuse, slow down or delay the link
(the one fault proxy of the tests and benchmarks: ``bench/bench_ship.py`` puts it on a veth
address for its 600 ms RTT, stalls and half-open cuts). Both run on 127.0.0.1:0 (the proxy
on ``host``) in one background event loop thread, so synchronous tests can drive real node
processes.

The hub is what the real hub will be for a node, reduced to the protocol: it checks the
bearer token in the HTTP handshake (401 otherwise), keeps a revision log of desired
changes and streams it, persists uplink records in a dict keyed by sequence number
(dropping duplicates by (node, sequence) as the real hub will, while counting what arrived
on the wire) and acknowledges them. Switches make it misbehave: retry-after, garbage,
closing mid-frame.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import threading
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any, TypeVar

from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.datastructures import Headers
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

from edgenode.protocol import (
    Change,
    Delete,
    HubConfig,
    HubProtocol,
    NodeHello,
    Resource,
    RevisionAcked,
    State,
    UplinkReceived,
    Upsert,
)

T = TypeVar("T")
WAIT_STEP = 0.02
PAUSE_POLL = 0.05
DELAY_QUEUE = 256
"""Chunks (of at most 4 KiB) a delayed proxy direction holds in flight."""


class Background:
    """An event loop in a daemon thread; ``call`` runs a coroutine there and waits."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self._thread.start()

    def call(self, coro: Coroutine[Any, Any, T], timeout: float = 10.0) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def soon(self, fn: Callable[[], None]) -> None:
        self.loop.call_soon_threadsafe(fn)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(5)


@dataclass
class HubRecord:
    node: str
    sequence: int
    priority: int
    payload: bytes


@dataclass
class FakeHub:
    background: Background
    token: str = "secret"
    heartbeat: float = 0.2
    window_records: int = 1000
    ssl_context: ssl.SSLContext | None = None
    http_status: int | None = None
    """Answer every handshake with this HTTP status (and ``Retry-After: 1``) instead."""
    path: str = "/v1/connect"
    port: int = 0
    revision: int = 0
    log: list[Change] = field(default_factory=list)
    resources: dict[str, Resource] = field(default_factory=dict)
    stored: dict[tuple[str, int], HubRecord] = field(default_factory=dict)
    wire: list[int] = field(default_factory=list)
    acked_revision: dict[str, int] = field(default_factory=dict)
    accept_times: list[float] = field(default_factory=list)
    hellos: list[NodeHello] = field(default_factory=list)
    auth_failures: int = 0
    retry_after: float | None = None
    retry_after_count: int = 0
    garbage: bytes | None = None
    close_mid_frame: bool = False
    ack_uplink: bool = True
    _server: Server | None = None
    _connections: dict[ServerConnection, tuple[HubProtocol, asyncio.Event]] = field(
        default_factory=dict
    )

    # --- Control from the test thread -------------------------------------------------------

    def start(self) -> int:
        self.port = self.background.call(self._start())
        return self.port

    @property
    def url(self) -> str:
        if self.ssl_context is not None:
            return f"wss://localhost:{self.port}"
        return f"ws://127.0.0.1:{self.port}"

    def stop(self) -> None:
        self.background.call(self._stop())

    def publish(self, changes: list[tuple[str, dict[str, Any] | None]]) -> int:
        """Append upserts (a body) or deletes (None) to the log; stream to connected nodes."""
        return self.background.call(self._publish(changes))

    def payloads(self, node: str) -> dict[int, bytes]:
        return {seq: rec.payload for (name, seq), rec in list(self.stored.items()) if name == node}

    def set_resources(self, revision: int, resources: dict[str, dict[str, Any]]) -> None:
        """Make this hub one restored from a backup: ``resources`` at ``revision``, no log."""
        self.revision = revision
        self.log = []
        self.resources = {k: Resource(k, revision, body) for k, body in resources.items()}

    def connected(self) -> int:
        return sum(1 for proto, _ in list(self._connections.values()) if proto.state is State.OPEN)

    # --- In the hub's loop ----------------------------------------------------------------

    async def _start(self) -> int:
        self._server = await serve(
            self._handler,
            "127.0.0.1",
            self.port,
            process_request=self._check_request,
            ping_interval=None,
            compression=None,
            max_size=2 * 1024 * 1024,
            ssl=self.ssl_context,
        )
        return int(self._server.sockets[0].getsockname()[1])

    async def _stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None

    async def _publish(self, changes: list[tuple[str, dict[str, Any] | None]]) -> int:
        new: list[Change] = []
        for key, body in changes:
            self.revision += 1
            if body is None:
                new.append(Delete(key, self.revision))
                self.resources.pop(key, None)
            else:
                new.append(Upsert(key, self.revision, body))
                self.resources[key] = Resource(key, self.revision, body)
        self.log.extend(new)
        for proto, wake in self._connections.values():
            if proto.state is State.OPEN:
                proto.send_changes(new, self.revision)
                wake.set()
        return self.revision

    def _check_request(self, connection: ServerConnection, request: Request) -> Response | None:
        self.accept_times.append(time.monotonic())
        if self.http_status is not None:
            headers = Headers({"Retry-After": "1"})
            return Response(self.http_status, "Unavailable", headers, b"busy\n")
        if request.path != self.path:
            return connection.respond(HTTPStatus.NOT_FOUND, "no such path\n")
        if request.headers.get("Authorization") != f"Bearer {self.token}":
            self.auth_failures += 1
            return Response(401, "Unauthorized", Headers(), b"invalid token\n")
        return None

    async def _handler(self, ws: ServerConnection) -> None:
        loop = asyncio.get_running_loop()
        config = HubConfig(
            heartbeat_interval=self.heartbeat, max_in_flight_records=self.window_records
        )
        proto = HubProtocol(loop.time(), config)
        wake = asyncio.Event()
        self._connections[ws] = (proto, wake)
        recv: asyncio.Task[Any] | None = None
        try:
            while True:
                for message in proto.data_to_send():
                    await ws.send(message)
                for event in proto.events_received():
                    await self._on_event(ws, proto, event)
                for message in proto.data_to_send():
                    await ws.send(message)
                close = proto.close_requested()
                if close is not None:
                    await ws.close(close.code, close.reason)
                    return
                if recv is None:
                    recv = asyncio.ensure_future(ws.recv())
                waker = asyncio.ensure_future(wake.wait())
                deadline = proto.next_deadline()
                timeout = None if deadline is None else max(0.0, deadline - loop.time())
                done, _ = await asyncio.wait(
                    {recv, waker}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED
                )
                waker.cancel()
                wake.clear()
                if recv in done:
                    task, recv = recv, None
                    try:
                        message = task.result()
                    except ConnectionClosed:
                        return
                    proto.receive_message(message, loop.time())
                else:
                    proto.tick(loop.time())
        finally:
            self._connections.pop(ws, None)
            if recv is not None:
                recv.cancel()
                with contextlib.suppress(BaseException):
                    await recv

    async def _on_event(self, ws: ServerConnection, proto: HubProtocol, event: Any) -> None:
        match event:
            case NodeHello():
                self.hellos.append(event)
                if self.retry_after is not None and self.retry_after_count > 0:
                    self.retry_after_count -= 1
                    proto.send_retry_after(self.retry_after, "busy")
                    return
                proto.accept(self.revision)
                if event.last_revision > self.revision:
                    proto.send_snapshot(self.revision, list(self.resources.values()))
                else:
                    after = [c for c in self.log if c.revision > event.last_revision]
                    proto.send_changes(after, self.revision)
                if self.garbage is not None:
                    for message in proto.data_to_send():
                        await ws.send(message)
                    await ws.send(self.garbage)
                if self.close_mid_frame:
                    for message in proto.data_to_send():
                        await ws.send(message)
                    # A binary frame header announcing 300 bytes, 3 of them, then TCP close.
                    ws.transport.write(b"\x82\x7e\x01\x2cabc")
                    ws.transport.close()
            case UplinkReceived():
                for record in event.records:
                    self.wire.append(record.sequence)
                    key = (event.node_name, record.sequence)
                    # The real hub drops duplicates by (node, sequence).
                    self.stored.setdefault(
                        key,
                        HubRecord(
                            event.node_name, record.sequence, record.priority, record.payload
                        ),
                    )
                if self.ack_uplink:
                    proto.ack_uplink([r.sequence for r in event.records])
            case RevisionAcked():
                self.acked_revision[event.node_name] = event.revision
            case _:
                pass


@dataclass
class Proxy:
    """A TCP proxy on 127.0.0.1:0 in front of ``target_port``, with fault switches."""

    background: Background
    target_port: int
    port: int = 0
    blackholed: bool = False
    rate: float | None = None
    """Bytes per second each direction may carry (None: as fast as it goes)."""
    forwarded: int = 0
    """Bytes forwarded so far, both directions."""
    connections: int = 0
    host: str = "127.0.0.1"
    """The address to listen on (e.g. the host end of a veth pair in a ship test)."""
    delay: float = 0.0
    """Seconds added to each direction (half the round-trip time added), without
    serialising the bytes behind it: a long thin link, not a slow one."""
    paused: bool = False
    """Hold the bytes (TCP keeps them) and forward them when unpaused: a stall."""
    refusing: bool = False
    """Close every new connection at once (the link is down)."""
    _server: asyncio.Server | None = None
    _pairs: list[tuple[asyncio.StreamWriter, asyncio.StreamWriter]] = field(default_factory=list)

    def start(self) -> int:
        self.port = self.background.call(self._start())
        return self.port

    @property
    def url(self) -> str:
        return f"ws://{self.host}:{self.port}"

    def blackhole(self, on: bool = True) -> None:
        """Keep every TCP connection open but forward nothing (a half-open link)."""
        self.blackholed = on

    def cut(self) -> None:
        """Close both sides of every current connection (a clean cut)."""
        self.background.call(self._cut())

    def stop(self) -> None:
        self.background.call(self._stop())

    async def _start(self) -> int:
        self._server = await asyncio.start_server(self._accept, self.host, 0)
        return int(self._server.sockets[0].getsockname()[1])

    async def _stop(self) -> None:
        await self._cut()
        if self._server is not None:
            self._server.close()
            self._server = None

    async def _cut(self) -> None:
        for a, b in self._pairs:
            for writer in (a, b):
                writer.close()
        self._pairs.clear()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.refusing:
            writer.close()
            return
        self.connections += 1
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        except OSError:
            writer.close()
            return
        self._pairs.append((writer, up_writer))
        await asyncio.gather(
            self._pipe(reader, up_writer), self._pipe(up_reader, writer), return_exceptions=True
        )

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.delay > 0:
            await self._delayed_pipe(reader, writer)
            return
        try:
            while data := await reader.read(4096 if self.rate else 65536):
                if self.blackholed:
                    continue  # swallowed: neither side learns anything
                await self._forward(writer, data)
        finally:
            writer.close()

    async def _forward(self, writer: asyncio.StreamWriter, data: bytes) -> None:
        while self.paused:
            await asyncio.sleep(PAUSE_POLL)
        writer.write(data)
        self.forwarded += len(data)
        await writer.drain()
        if self.rate:
            await asyncio.sleep(len(data) / self.rate)

    async def _delayed_pipe(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        """Each chunk is forwarded ``delay`` seconds after it was read (a bounded queue in
        between: a full queue stops reading, and TCP pushes back on the sender)."""
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[tuple[float, bytes] | None] = asyncio.Queue(DELAY_QUEUE)

        async def deliver() -> None:
            while (item := await queue.get()) is not None:
                due, data = item
                if (wait := due - loop.time()) > 0:
                    await asyncio.sleep(wait)
                await self._forward(writer, data)

        sender = asyncio.ensure_future(deliver())
        try:
            while data := await reader.read(4096):
                if self.blackholed:
                    continue  # swallowed: neither side learns anything
                if sender.done():
                    break
                await queue.put((loop.time() + self.delay, data))
            if not sender.done():
                await queue.put(None)
                await sender
        finally:
            sender.cancel()
            if sender.done() and not sender.cancelled():
                sender.exception()  # retrieved: a closed peer ends the pipe, nothing more
            writer.close()


def wait_for(predicate: Callable[[], Any], timeout: float, what: str) -> Any:
    """Poll ``predicate`` until truthy; AssertionError naming ``what`` after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(WAIT_STEP)

"""The node link server: one ``websockets`` connection per node at ``/v1/connect``, driving
a ``HubProtocol``.

Authentication happens in the HTTP handshake (``process_request``): a missing or unknown
``Authorization: Bearer`` token is 401, a revoked one 403, each with a reason body, before
any WebSocket exists. The hello's node name must be the token's node. Admission control:
when ``max_handshakes`` accepted links have not yet acknowledged their initial sync, the
next hello is answered with retry-after (the base delay plus jitter spread over a window
that grows with the nodes already told to come back, ``Hub.retry_delay``) and close 1013,
so a fleet reconnecting at once spreads out instead of piling up.

Each connection has a reader (frames in, timers) and a writer (the only task that sends):
the hub's fan-out never blocks on a slow node, it only queues and wakes the writer.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import weakref
from http import HTTPStatus
from typing import Any

from websockets.asyncio.server import ServerConnection
from websockets.datastructures import Headers
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

from edgehub.guard import PendingConnections
from edgehub.hub import Hub, Session, hash_token
from edgehub.ratelog import RateLimitedLog
from edgenode.protocol import ErrorCode, HubProtocol, NodeHello, ProtocolViolation

LINK_PATH = "/v1/connect"
DEFAULT_MAX_PENDING_LINKS = 4096
"""``--max-pending-links``: node connections accepted but not yet authenticated (TLS
done, upgrade request not yet checked); beyond, the oldest is closed (``guard.py``). As
many as the listen backlog: asyncio accepts up to a whole backlog in one go when a fleet
reconnects, and those connections are all legitimately pending for a moment; a slow loris
gets no more than this many file descriptors (each for ``--handshake-timeout`` at most)."""
LISTEN_BACKLOG = 4096
"""Pending TCP connections the kernel queues for accept (capped by net.core.somaxconn).
asyncio's default of 100 drops SYNs when a fleet reconnects at once, and a dropped SYN
is retried by the client's kernel only after 1, 3, 7, 15... seconds."""
log = logging.getLogger("edgehub.link")


def _refuse(status: HTTPStatus, reason: str) -> Response:
    body = (reason + "\n").encode()
    headers = Headers(
        [("Content-Type", "text/plain; charset=utf-8"), ("Content-Length", str(len(body)))]
    )
    return Response(status.value, status.phrase, headers, body)


class LinkServer:
    """Accepts node connections for one ``Hub``."""

    def __init__(self, hub: Hub, max_pending: int = DEFAULT_MAX_PENDING_LINKS) -> None:
        self.hub = hub
        self._nodes: weakref.WeakKeyDictionary[ServerConnection, str] = weakref.WeakKeyDictionary()
        self._error_log = RateLimitedLog(log)
        self.pending = PendingConnections("link", max_pending, hub.metrics)
        pending = self.pending

        class Connection(ServerConnection):
            """Counted in ``pending`` from its acceptance until it authenticates."""

            def connection_made(self, transport: asyncio.BaseTransport) -> None:
                pending.opened(transport)
                super().connection_made(transport)

            def connection_lost(self, exc: Exception | None) -> None:
                pending.closed(self.transport)
                super().connection_lost(exc)

        self.connection_class = Connection

    def server_options(self) -> dict[str, Any]:
        """Options for ``websockets.asyncio.server.serve`` (see :func:`server_options`),
        with connections counted until they authenticate."""
        return {**server_options(self.hub), "create_connection": self.connection_class}

    def process_request(self, connection: ServerConnection, request: Request) -> Response | None:
        path = request.path.split("?", 1)[0]
        if path not in (LINK_PATH, "/"):
            self.hub.metrics.rejected_connections.labels("path").inc()
            return _refuse(HTTPStatus.NOT_FOUND, f"node links are at {LINK_PATH}")
        header = request.headers.get("Authorization", "")
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            self.hub.metrics.rejected_connections.labels("unauthenticated").inc()
            return _refuse(HTTPStatus.UNAUTHORIZED, "missing bearer token")
        record = self.hub.store.token(hash_token(token.strip()))
        if record is None:
            self.hub.metrics.rejected_connections.labels("unauthenticated").inc()
            return _refuse(HTTPStatus.UNAUTHORIZED, "unknown token")
        if record.revoked:
            self.hub.metrics.rejected_connections.labels("revoked").inc()
            return _refuse(HTTPStatus.FORBIDDEN, f"token of node {record.node!r} was revoked")
        self._nodes[connection] = record.node
        self.pending.authenticated(connection.transport)
        return None

    async def handler(self, ws: ServerConnection) -> None:
        hub = self.hub
        node = self._nodes.get(ws)
        if node is None:  # process_request always sets it; defensive
            await ws.close(4003, "unauthorized")
            return
        loop = asyncio.get_running_loop()
        proto = HubProtocol(loop.time(), hub.settings.protocol_config())
        session: Session | None = None
        writer: asyncio.Task[None] | None = None
        wake = asyncio.Event()
        try:
            while proto.close_requested() is None:
                deadline = proto.next_deadline()
                try:
                    # asyncio.timeout, not wait_for: wait_for wraps every recv in a task
                    # (Python 3.11), a cost paid per frame on every link.
                    async with asyncio.timeout_at(deadline):
                        message = await ws.recv()
                except TimeoutError:
                    proto.tick(loop.time())
                except ConnectionClosed:
                    break
                else:
                    hub.metrics.frames_in.inc()
                    now = loop.time()
                    proto.receive_message(message, now)
                    if deadline is not None and now >= deadline:
                        proto.tick(now)  # frames kept coming: timers still run
                    if session is not None:
                        hub.seen(node)
                events = proto.events_received()
                for event in events:
                    if isinstance(event, ProtocolViolation):
                        hub.metrics.protocol_violations.inc()
                    if isinstance(event, NodeHello) and session is None:
                        session = self._answer_hello(proto, node, event)
                        if session is not None:
                            session.wake = wake
                            writer = asyncio.create_task(self._writer(ws, session))
                if session is not None:
                    hub.handle_events(session, [e for e in events if not isinstance(e, NodeHello)])
                    # Wake the writer only when there is something to send (most frames
                    # in are acks, which answer nothing): a task switch per frame saved.
                    outgoing = proto.data_to_send()
                    if outgoing or proto.close_requested() is not None:
                        session.unsent.extend(outgoing)
                        session.kick()
                else:
                    await self._send_all(ws, proto.data_to_send())
            if session is None:
                await self._send_all(ws, proto.data_to_send())
                close = proto.close_requested()
                if close is not None:
                    await ws.close(close.code, close.reason)
        except Exception as exc:
            self._error_log.log(
                logging.ERROR, "link-failed", "link of node %s failed", node, exc_info=exc
            )
        finally:
            if session is not None:
                hub.close_session(session)
                session.kick()
            if writer is not None:
                with contextlib.suppress(asyncio.TimeoutError, Exception):
                    await asyncio.wait_for(writer, 5.0)
            await ws.close()

    def _answer_hello(self, proto: HubProtocol, node: str, hello: NodeHello) -> Session | None:
        hub = self.hub
        if hello.node_name != node:
            hub.metrics.rejected_connections.labels("wrong-node").inc()
            proto.send_error(
                ErrorCode.UNAUTHORIZED,
                f"this token belongs to node {node!r}, not {hello.node_name!r}",
            )
            return None
        if ("Node", node) not in hub.cache:
            hub.metrics.rejected_connections.labels("unknown-node").inc()
            proto.send_error(ErrorCode.UNKNOWN_NODE, f"no Node {node!r} on this hub")
            return None
        if hub.over_capacity():
            hub.metrics.rejected_connections.labels("retry-after").inc()
            proto.send_retry_after(hub.retry_delay(), "hub busy: too many concurrent handshakes")
            return None
        return hub.open_session(node, proto, hello)

    async def _send_all(self, ws: ServerConnection, messages: list[bytes]) -> None:
        for message in messages:
            await ws.send(message)
        if messages:
            self.hub.metrics.frames_out.inc(len(messages))

    async def _writer(self, ws: ServerConnection, session: Session) -> None:
        """The only sender on an open link: flushes pending changes and protocol output."""
        proto = session.proto
        try:
            while True:
                await session.wake.wait()
                session.wake.clear()
                if proto.close_requested() is None and self.hub.is_current(session):
                    self.hub.take_outgoing(session)
                # What the reader took from the protocol first, then what was made since.
                messages, session.unsent = session.unsent, []
                messages.extend(proto.data_to_send())
                await self._send_all(ws, messages)
                close = proto.close_requested()
                if close is not None:
                    await ws.close(close.code, close.reason)
                    return
                if not self.hub.is_current(session):
                    return
        except ConnectionClosed:
            return


def server_options(hub: Hub) -> dict[str, Any]:
    """Options for ``websockets.asyncio.server.serve``: the frame limit above the
    protocol's (the protocol reports FRAME_TOO_BIG itself), bounded handshake time."""
    return {
        "max_size": hub.settings.max_frame_size + 1024,
        "open_timeout": hub.settings.handshake_timeout,
        "ping_interval": None,  # the protocol has its own heartbeats
        "compression": None,
        "backlog": LISTEN_BACKLOG,
    }

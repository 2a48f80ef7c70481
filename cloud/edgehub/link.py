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
import random
import re
import resource
import weakref
from dataclasses import dataclass
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
LISTEN_BACKLOG = 4096
"""Pending TCP connections the kernel queues for accept (capped by net.core.somaxconn).
asyncio's default of 100 drops SYNs when a fleet reconnects at once, and a dropped SYN
is retried by the client's kernel only after 1, 3, 7, 15... seconds."""
PENDING_SHARE_OF_FILES = 4
"""Default of ``--max-pending-links``: node connections accepted but not yet authenticated
(TLS done, upgrade request not yet checked) may hold at most a quarter of the process's
open-file limit (``edgehub serve`` raises its soft limit to the hard one first: 524288
under systemd gives 131072), so trickling connections leave three quarters of the file
descriptors to node links, the store and the operator API; a fleet reconnecting at once is
as large a burst as any, and fits unless the limit is too small for the fleet anyway. At
the limit ``guard.py`` closes the oldest (a slow loris) or, in a burst, the newest."""
MIN_PENDING_LINKS = 64


def default_max_pending_links() -> int:
    """A quarter of the open-file (soft) limit, at least ``MIN_PENDING_LINKS``."""
    soft, _hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        soft = 1 << 20
    return max(MIN_PENDING_LINKS, soft // PENDING_SHARE_OF_FILES)


LIVE_SILENCE_INTERVALS = 2.5
"""A link heard from within this many heartbeat intervals may be live: each side pings
at the latest about 2 intervals after its last frame. Silent longer, it is presumed dead."""
TAKEOVER_PROBE_SECONDS = 5.0
"""How long a link that may be live has to answer a WebSocket ping when another
connection with its node's token arrives (at most half of ``--handshake-timeout``, so
the newcomer's own handshake does not time out meanwhile). A satellite round trip is
under 2 s."""
log = logging.getLogger("edgehub.link")


@dataclass
class _Link:
    """A node's current link, as the takeover rule needs it."""

    ws: ServerConnection
    peer: str
    heard: float
    """Loop time of the last frame received."""


MAX_SNIFFED_HEAD = 8192
"""Bytes of a request that is not a GET read to find its Host header before answering."""
_HOST_HEADER_RE = re.compile(rb"\r\nhost:[ \t]*([^\r\n]*)", re.IGNORECASE)
_HOST_RE = re.compile(r"(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9.-]+)(:[0-9]+)?")


def listener_url(
    scheme: str, host_header: str | None, bound: tuple[str, int], path: str = ""
) -> str:
    """The URL of a listener of this hub bound at ``bound`` (host, port), as a client that
    reached the hub as ``host_header`` (the HTTP Host: the name it used) would write it.
    A Host that is not a host name or address is not echoed."""
    host, port = bound
    if host_header and (m := _HOST_RE.fullmatch(host_header)):
        host = m.group(1)
    elif ":" in host and not host.startswith("["):
        host = f"[{host}]"
    return f"{scheme}://{host}:{port}{path}"


def _refuse(status: HTTPStatus, reason: str) -> Response:
    body = (reason + "\n").encode()
    headers = Headers(
        [("Content-Type", "text/plain; charset=utf-8"), ("Content-Length", str(len(body)))]
    )
    return Response(status.value, status.phrase, headers, body)


class LinkServer:
    """Accepts node connections for one ``Hub``."""

    def __init__(self, hub: Hub, max_pending: int | None = None) -> None:
        self.hub = hub
        self._nodes: weakref.WeakKeyDictionary[ServerConnection, str] = weakref.WeakKeyDictionary()
        self._error_log = RateLimitedLog(log)
        self._takeover_log = RateLimitedLog(log)
        self.pending = PendingConnections(
            "link", max_pending or default_max_pending_links(), hub.metrics
        )
        self.api_listener: tuple[str, tuple[str, int]] | None = None
        """The operator API's scheme and bound address (set once both listen): named to
        clients that come here for the API."""
        self._links: dict[str, _Link] = {}
        """Each node's current link (the one its session runs on)."""
        self._probes: dict[ServerConnection, asyncio.Task[float | None]] = {}
        """Pings in flight to links whose place is claimed (one per link)."""
        pending = self.pending

        links = self

        class Connection(ServerConnection):
            """Counted in ``pending`` from its acceptance until it authenticates; a
            request that is not a GET (``edgectl apply`` sent to this port) is answered
            here: websockets would close it without a word."""

            _head: bytes | None = b""
            """The start of the request until it is known to be a GET (then None)."""

            def connection_made(self, transport: asyncio.BaseTransport) -> None:
                pending.opened(transport)
                super().connection_made(transport)

            def connection_lost(self, exc: Exception | None) -> None:
                pending.closed(self.transport)
                super().connection_lost(exc)

            def data_received(self, data: bytes) -> None:
                if self._head is None:
                    super().data_received(data)
                    return
                head = self._head + data
                if head.startswith(b"GET ") or b"GET ".startswith(head):
                    if len(head) < 4:
                        self._head = head
                        return
                    self._head = None
                    super().data_received(head)
                    return
                if b"\r\n\r\n" not in head and len(head) < MAX_SNIFFED_HEAD:
                    self._head = head
                    return
                self._head = None
                links.hub.metrics.rejected_connections.labels("path").inc()
                host = _HOST_HEADER_RE.search(head)
                answer = links.not_a_node(host.group(1).decode("latin-1").strip() if host else None)
                body = (answer + "\n").encode()
                self.transport.write(
                    b"HTTP/1.1 404 Not Found\r\nContent-Type: text/plain; charset=utf-8\r\n"
                    b"Content-Length: %d\r\nConnection: close\r\n\r\n%s" % (len(body), body)
                )
                self.transport.close()

        self.connection_class = Connection

    def server_options(self) -> dict[str, Any]:
        """Options for ``websockets.asyncio.server.serve`` (see :func:`server_options`),
        with connections counted until they authenticate."""
        return {**server_options(self.hub), "create_connection": self.connection_class}

    def not_a_node(self, host_header: str | None) -> str:
        """What an HTTP client that is not a node (an operator's edgectl, curl) is told."""
        if self.api_listener is None:
            return "this is the node-link listener"
        scheme, bound = self.api_listener
        api = listener_url(scheme, host_header, bound)
        return f"this is the node-link listener; the operator API is at {api}"

    def process_request(self, connection: ServerConnection, request: Request) -> Response | None:
        path = request.path.split("?", 1)[0]
        if request.headers.get("Upgrade", "").lower() != "websocket":
            # Not a node: an operator (edgectl, curl) who took this port for the API.
            self.hub.metrics.rejected_connections.labels("path").inc()
            return _refuse(HTTPStatus.NOT_FOUND, self.not_a_node(request.headers.get("Host")))
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
        link: _Link | None = None
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
                    if link is not None:
                        link.heard = now
                        hub.seen(node)
                events = proto.events_received()
                for event in events:
                    if isinstance(event, ProtocolViolation):
                        hub.metrics.protocol_violations.inc()
                    if isinstance(event, NodeHello) and session is None:
                        session = await self._answer_hello(ws, proto, node, event)
                        if session is not None:
                            link = self._links[node]
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
            if link is not None and self._links.get(node) is link:
                del self._links[node]
            if session is not None:
                hub.close_session(session)
                session.kick()
            if writer is not None:
                with contextlib.suppress(asyncio.TimeoutError, Exception):
                    await asyncio.wait_for(writer, 5.0)
            await ws.close()

    async def _answer_hello(
        self, ws: ServerConnection, proto: HubProtocol, node: str, hello: NodeHello
    ) -> Session | None:
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
        current = self._links.get(node)
        replacing = ""
        if current is not None:
            replacing = await self._why_replaceable(current)
            if not replacing:
                self._refuse_takeover(ws, proto, node, current)
                return None
            if self._links.get(node) is not current:  # it ended during the probe
                replacing = ""
        if ("Node", node) not in hub.cache:  # deleted during the probe
            hub.metrics.rejected_connections.labels("unknown-node").inc()
            proto.send_error(ErrorCode.UNKNOWN_NODE, f"no Node {node!r} on this hub")
            return None
        if hub.over_capacity():
            hub.metrics.rejected_connections.labels("retry-after").inc()
            proto.send_retry_after(hub.retry_delay(), "hub busy: too many concurrent handshakes")
            return None
        if replacing and current is not None:
            hub.metrics.link_takeovers.labels("replaced").inc()
            self._takeover_log.log(
                logging.WARNING,
                node,
                "node %s: the link from %s replaces its link from %s (%s)",
                node,
                _peer(ws),
                current.peer,
                replacing,
            )
        session = hub.open_session(node, proto, hello)
        self._links[node] = _Link(ws, _peer(ws), asyncio.get_running_loop().time())
        return session

    async def _why_replaceable(self, current: _Link) -> str:
        """Why the node's current link may be replaced by a newer connection ("" when it
        keeps its place): it was silent past ``LIVE_SILENCE_INTERVALS`` heartbeats, or it
        did not answer a WebSocket ping within ``TAKEOVER_PROBE_SECONDS``."""
        settings = self.hub.settings
        silence = asyncio.get_running_loop().time() - current.heard
        if silence > LIVE_SILENCE_INTERVALS * settings.heartbeat_interval:
            return f"silent for {silence:.1f} s"
        timeout = min(TAKEOVER_PROBE_SECONDS, settings.handshake_timeout / 2)
        probe = self._probes.get(current.ws)
        if probe is None:  # one ping per link, however many connections claim its place
            probe = asyncio.create_task(_ping(current.ws, timeout))
            self._probes[current.ws] = probe
            probe.add_done_callback(lambda _: self._probes.pop(current.ws, None))
        latency = await asyncio.shield(probe)
        if latency is None:
            return f"it did not answer a ping within {timeout:g} s"
        return ""

    def _refuse_takeover(
        self, ws: ServerConnection, proto: HubProtocol, node: str, current: _Link
    ) -> None:
        """A live link keeps its place: the newcomer is told to retry once a dead link
        would have gone silent (a stolen token cannot push the node off its link)."""
        self.hub.metrics.link_takeovers.labels("refused").inc()
        interval = LIVE_SILENCE_INTERVALS * self.hub.settings.heartbeat_interval
        self._takeover_log.log(
            logging.WARNING,
            node,
            "node %s: refused a connection from %s with its token: its link from %s is live "
            "(it answered a ping); if that is not this node, the token is stolen: "
            "edgectl node revoke %s",
            node,
            _peer(ws),
            current.peer,
            node,
        )
        proto.send_retry_after(
            interval * (1 + random.random()),
            f"node {node!r} is connected from {current.peer} and answering; "
            "a second connection with its token is refused",
        )

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


async def _ping(ws: ServerConnection, timeout: float) -> float | None:
    """The round trip of a WebSocket ping on ``ws`` in seconds; None without a pong in
    ``timeout`` (or when the link is closed)."""
    try:
        async with asyncio.timeout(timeout):
            return await (await ws.ping())
    except (TimeoutError, ConnectionClosed):
        return None


def _peer(ws: ServerConnection) -> str:
    """The source address of a connection (a proxy's, behind one), as HOST:PORT."""
    try:
        peer: Any = ws.remote_address
    except Exception:
        return "unknown"
    if isinstance(peer, tuple) and len(peer) >= 2:
        return f"{peer[0]}:{peer[1]}"
    return "unknown"


def server_options(hub: Hub) -> dict[str, Any]:
    """Options for ``websockets.asyncio.server.serve``: the frame limit above the
    protocol's (the protocol reports FRAME_TOO_BIG itself), bounded handshake time."""
    return {
        "max_size": hub.settings.max_frame_size + 1024,
        "open_timeout": hub.settings.handshake_timeout,
        "ping_interval": None,  # the protocol has its own heartbeats
        "compression": "deflate" if hub.settings.compression else None,
        "backlog": LISTEN_BACKLOG,
    }

"""App logs fetched from nodes on demand: ``edgectl logs app NAME --node NODE``.

The operator API opens a :class:`LogStream`; the hub asks the node over its link (the
``logs`` feature: ``lq`` request, ``ld`` pieces, ``le`` end, ``lc`` cancel) and the pieces
land in the stream's bounded queue, which the API writes to its HTTP response. A node
that is not connected is an error naming when it was last seen. A reader that is too slow
(the queue full), that goes away, or a link that drops ends the stream and cancels the
request on the node: nothing is held for a reader that is gone.
"""

from __future__ import annotations

import asyncio
import itertools
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Final

from edgehub.kinds.base import iso_time
from edgenode.protocol.events import LogEnded, LogReceived

if TYPE_CHECKING:
    from edgehub.sessions import Session, Sessions

MAX_QUEUED_PIECES: Final = 256
"""Log pieces waiting for a slow reader (each at most a frame); past that the stream is
ended with an error rather than buffering without bound."""


class NodeNotConnected(Exception):
    """The node has no link now; the message says when it was last seen."""


class LogsUnsupported(Exception):
    """The node's link does not speak the ``logs`` feature (an older node)."""


@dataclass
class LogStream:
    """One log request: the pieces as they come; ``None`` ends it (``code``, ``message``)."""

    node: str
    request: int
    queue: asyncio.Queue[bytes | None] = field(
        default_factory=lambda: asyncio.Queue(MAX_QUEUED_PIECES)
    )
    code: int = 0
    message: str = ""
    received: int = 0

    def end(self, code: int, message: str) -> None:
        if self.code == 0:
            self.code, self.message = code, message
        # A full queue still takes the end: drop the oldest piece for it.
        if self.queue.full():
            self.queue.get_nowait()
        self.queue.put_nowait(None)


class LogRequests:
    """The log requests of one hub, by node and request id."""

    def __init__(self, sessions: Sessions) -> None:
        self._sessions = sessions
        self._ids = itertools.count(1)
        self._streams: dict[tuple[str, int], LogStream] = {}

    @property
    def open_streams(self) -> int:
        return len(self._streams)

    def open(self, node: str, app: str, tail: int, follow: bool) -> LogStream:
        """Ask ``node`` for ``app``'s log. NodeNotConnected, LogsUnsupported; ValueError
        when the node has too many requests open (``MAX_LOG_REQUESTS``)."""
        session = self._sessions.open.get(node)
        if session is None:
            live = self._sessions.live.get(node)
            last = None if live is None else live.last_seen
            seen = "never" if last is None else iso_time(last)
            raise NodeNotConnected(f"node {node!r} is not connected (last seen {seen})")
        if "logs" not in session.proto.features:
            raise LogsUnsupported(
                f"node {node!r} runs a version that cannot send logs over its link"
            )
        request = next(self._ids)
        session.proto.request_log(request, app, tail, follow)
        stream = LogStream(node, request)
        self._streams[(node, request)] = stream
        session.kick()
        return stream

    def close(self, stream: LogStream) -> None:
        """The reader is done (or gone): cancel the request on the node if it runs."""
        if self._streams.pop((stream.node, stream.request), None) is None:
            return
        session = self._sessions.open.get(stream.node)
        if session is not None and stream.request in session.proto.log_requests:
            session.proto.cancel_log(stream.request)
            session.kick()

    def received(self, session: Session, event: LogReceived) -> None:
        stream = self._streams.get((session.node, event.request))
        if stream is None:
            return
        if stream.queue.full():
            self._streams.pop((session.node, event.request), None)
            session.proto.cancel_log(event.request)
            stream.end(503, "the log came faster than it was read: ended")
            return
        stream.received += len(event.data)
        stream.queue.put_nowait(event.data)

    def ended(self, session: Session, event: LogEnded) -> None:
        stream = self._streams.pop((session.node, event.request), None)
        if stream is not None:
            stream.end(event.code, event.message)

    def link_ended(self, node: str) -> None:
        """The node's link dropped: its streams end with that reason."""
        for key in [key for key in self._streams if key[0] == node]:
            self._streams.pop(key).end(503, f"the link of node {node!r} dropped")

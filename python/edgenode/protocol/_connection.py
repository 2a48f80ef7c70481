"""What the node and hub state machines share: queues, states, close, heartbeats, errors.

A ``_Connection`` owns the two output queues (events for the application, messages for the
I/O driver), the close instruction and the heartbeat timers. Subclasses implement
``_handle`` for the frames their side may receive. Nothing here touches a socket, a clock
or an event loop: time only enters through the ``now`` arguments.
"""

from __future__ import annotations

import math
from enum import Enum
from typing import NamedTuple

from edgenode.errors import ProtocolError
from edgenode.protocol.constants import (
    MAX_CLOSE_REASON_BYTES,
    MAX_MESSAGE_LENGTH,
    ErrorCode,
    close_code_for,
)
from edgenode.protocol.events import ErrorReceived, Event, PeerTimedOut, ProtocolViolation
from edgenode.protocol.frames import (
    ErrorFrame,
    Frame,
    PingFrame,
    decode_frame,
    encode_frame,
    error_code,
)


class State(Enum):
    """Life cycle of one connection, on either side."""

    CONNECTING = "connecting"
    """Before ``welcome`` (node: waiting for it; hub: waiting for hello, then for ``accept``)."""
    OPEN = "open"
    """Changes, acks, uplink and heartbeats flow."""
    CLOSED = "closed"
    """A close was requested (by either side or a violation); input is ignored from now on."""


class Close(NamedTuple):
    """The WebSocket close the driver should perform: ``await ws.close(code, reason)``."""

    code: int
    reason: str


def truncate_message(message: str) -> str:
    """``message`` cut to what an error frame may carry."""
    return message[:MAX_MESSAGE_LENGTH]


def close_reason(message: str) -> str:
    """``message`` cut to the 123 UTF-8 bytes a WebSocket close reason may hold."""
    return message.encode("utf-8")[:MAX_CLOSE_REASON_BYTES].decode("utf-8", "ignore")


def check_now(now: float) -> float:
    """``now`` if it is a finite number, else ``ValueError`` (application misuse)."""
    if isinstance(now, bool) or not isinstance(now, int | float) or not math.isfinite(now):
        raise ValueError(f"now must be a finite number of monotonic seconds, got {now!r}")
    return float(now)


class _Connection:
    """Queues, state, close and heartbeats common to ``NodeProtocol`` and ``HubProtocol``."""

    def __init__(self, now: float, max_frame_size: int, handshake_timeout: float) -> None:
        now = check_now(now)
        self._state = State.CONNECTING
        self._events: list[Event] = []
        self._outgoing: list[bytes] = []
        self._close: Close | None = None
        self._receive_limit = max_frame_size
        # What we may send is capped by the peer's limit once its hello/welcome told us.
        self._send_limit = max_frame_size
        self._handshake_deadline: float | None = now + handshake_timeout
        self._heartbeat_interval = 0.0
        self._heartbeat_deadline = 0.0
        self._last_received = now
        self._next_ping_check = math.inf
        # Set by every send; a ping is due only after a whole interval without one.
        self._sent_since_ping_check = False

    # --- Outputs for the driver and the application ----------------------------------------

    @property
    def state(self) -> State:
        """``CONNECTING``, ``OPEN`` or ``CLOSED``."""
        return self._state

    def events_received(self) -> list[Event]:
        """Events since the last call, oldest first (the list is handed over, not copied)."""
        events, self._events = self._events, []
        return events

    def data_to_send(self) -> list[bytes]:
        """Messages to send, in order, each one WebSocket binary message."""
        messages, self._outgoing = self._outgoing, []
        return messages

    def close_requested(self) -> Close | None:
        """The close to perform once ``data_to_send()`` is flushed; ``None`` while open."""
        return self._close

    def next_deadline(self) -> float | None:
        """When ``tick`` must be called next (monotonic seconds); ``None``: no timer runs."""
        if self._state is State.CLOSED:
            return None
        if self._state is State.CONNECTING:
            return self._handshake_deadline
        return min(self._next_ping_check, self._last_received + self._heartbeat_deadline)

    # --- Inputs ---------------------------------------------------------------------------

    def receive_message(self, data: bytes | str, now: float) -> None:
        """Process one whole WebSocket message received at ``now``.

        Never raises for anything the peer sent: a bad message becomes a
        ``ProtocolViolation`` event, an ``error`` frame to send and a close request.
        Messages received after the close request are ignored.
        """
        now = check_now(now)
        if self._state is State.CLOSED:
            return
        # Any message counts as liveness, even one that turns out to be bad.
        self._last_received = now
        if not isinstance(data, bytes | bytearray | memoryview):
            self._violation(ErrorCode.MALFORMED_FRAME, "text messages are not part of the protocol")
            return
        data = bytes(data)
        try:
            frame = decode_frame(data, self._receive_limit)
            self._handle(frame, len(data), now)
        except ProtocolError as exc:
            self._violation(error_code(exc), str(exc))
        except Exception as exc:  # a bug here must still not take the driver down
            self._violation(ErrorCode.INTERNAL_ERROR, f"{type(exc).__name__}: {exc}")

    def tick(self, now: float) -> None:
        """Run the timers due at ``now``: handshake timeout, peer deadline, pings."""
        now = check_now(now)
        if self._state is State.CLOSED:
            return
        if self._state is State.CONNECTING:
            if self._handshake_deadline is not None and now >= self._handshake_deadline:
                self._timed_out(now, "the handshake did not complete in time")
            return
        if now >= self._last_received + self._heartbeat_deadline:
            self._timed_out(now, "heartbeat deadline missed")
            return
        if now >= self._next_ping_check:
            if not self._sent_since_ping_check:
                self._send(PingFrame())
            self._sent_since_ping_check = False
            self._next_ping_check = now + self._heartbeat_interval

    def send_error(self, code: int, message: str) -> None:
        """Send an ``error`` frame and request the close that goes with ``code``.

        For example ``ErrorCode.UNAUTHORIZED``, ``REPLACED`` or ``SHUTTING_DOWN``.
        Does nothing once closed.
        """
        if isinstance(code, bool) or not isinstance(code, int) or not 0 <= code <= 65535:
            raise ValueError(f"error code must be an integer in [0, 65535], got {code!r}")
        if self._state is State.CLOSED:
            return
        self._send(ErrorFrame(int(code), truncate_message(message)))
        self._request_close(close_code_for(code), message)

    def close(self, code: int = 1000, reason: str = "") -> None:
        """Request a plain WebSocket close (no error frame); does nothing once closed."""
        if self._state is State.CLOSED:
            return
        self._request_close(code, reason)

    # --- For subclasses -------------------------------------------------------------------

    def _handle(self, frame: Frame, size: int, now: float) -> None:
        raise NotImplementedError

    def _send(self, frame: Frame) -> None:
        self._send_bytes(encode_frame(frame))

    def _send_bytes(self, message: bytes) -> None:
        self._outgoing.append(message)
        self._sent_since_ping_check = True

    def _open(self, now: float, interval: float, deadline: float) -> None:
        self._state = State.OPEN
        self._handshake_deadline = None
        self._heartbeat_interval = interval
        self._heartbeat_deadline = deadline
        self._last_received = now
        self._next_ping_check = now + interval
        self._sent_since_ping_check = False

    def _request_close(self, code: int, reason: str) -> None:
        self._state = State.CLOSED
        self._close = Close(int(code), close_reason(reason))

    def _violation(self, code: ErrorCode, message: str) -> None:
        """The peer broke the protocol: tell the application, tell the peer, close."""
        close_code = close_code_for(code)
        self._events.append(ProtocolViolation(int(code), message, int(close_code)))
        self._send(ErrorFrame(int(code), truncate_message(message)))
        self._request_close(close_code, message)

    def _timed_out(self, now: float, message: str) -> None:
        self._events.append(PeerTimedOut(now - self._last_received))
        self._send(ErrorFrame(int(ErrorCode.TIMED_OUT), message))
        self._request_close(close_code_for(ErrorCode.TIMED_OUT), message)

    def _error_received(self, frame: ErrorFrame) -> None:
        self._events.append(ErrorReceived(frame.code, frame.message))
        self._request_close(close_code_for(frame.code), frame.message)

    def _require_open(self, action: str) -> bool:
        """True when open; False when closed (the call is a no-op); raise when connecting."""
        if self._state is State.OPEN:
            return True
        if self._state is State.CLOSED:
            return False
        raise RuntimeError(f"cannot {action} before the connection is open")

"""Events the sync protocol state machines hand to the application.

``NodeProtocol.events_received()`` and ``HubProtocol.events_received()`` return these, in the
order they happened. Events are plain frozen dataclasses: they carry data, never behaviour,
and never a reference to the protocol object. Durations are float seconds.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TypeAlias

from edgenode.protocol.frames import Change, Resource, UplinkRecord

# --- Node side ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Welcomed:
    """The hub accepted the hello; the connection is open."""

    protocol_version: int
    hub_revision: int
    heartbeat_interval: float
    heartbeat_deadline: float
    max_frame_size: int
    """The frame limit in force for what this node sends (min of both sides' limits)."""
    window_records: int
    window_bytes: int
    features: frozenset[str] = frozenset()
    """The features in use on this connection (both ends speak them)."""
    hub_time: float | None = None
    """The hub's wall clock when it welcomed (Unix seconds), if it said."""


@dataclass(frozen=True)
class ChangesReceived:
    """Changes in revision order; after persisting them the node has everything up to
    ``revision`` and should ``ack(revision)``. ``changes`` may be empty (nothing for this
    node up to ``revision``)."""

    changes: tuple[Change, ...]
    revision: int


@dataclass(frozen=True)
class SnapshotReceived:
    """A complete snapshot: replace the whole desired cache with ``resources`` atomically,
    then ``ack(revision)``."""

    revision: int
    resources: tuple[Resource, ...]


@dataclass(frozen=True)
class UplinkAcked:
    """The hub persisted these in-flight records (ascending); delete them from the outbox."""

    sequences: tuple[int, ...]


@dataclass(frozen=True)
class RetryAfter:
    """The hub is overloaded: reconnect no sooner than ``delay`` seconds from now."""

    delay: float
    message: str


@dataclass(frozen=True)
class ArtifactReceived:
    """Bytes of an artifact the node asked for (feature ``artifacts``)."""

    digest: str
    offset: int
    size: int
    data: bytes


@dataclass(frozen=True)
class ArtifactRefused:
    """The hub cannot send artifact ``digest`` (404 unknown, 413 too large, 500)."""

    digest: str
    code: int
    message: str


@dataclass(frozen=True)
class LogRequested:
    """The hub asks for an App's log (feature ``logs``): answer with ``send_log`` and
    ``end_log``."""

    request: int
    app: str
    tail: int
    follow: bool


@dataclass(frozen=True)
class LogCancelled:
    """The hub no longer wants request ``request`` (its reader went away)."""

    request: int


# --- Hub side -----------------------------------------------------------------------------


@dataclass(frozen=True)
class NodeHello:
    """A node introduced itself; answer with ``accept``, ``send_retry_after`` or ``send_error``."""

    node_name: str
    software_version: str
    last_revision: int
    protocol_version: int
    max_frame_size: int
    next_seq: int | None = None
    """The node's next outbox sequence number (``None``: the node did not say)."""
    features: frozenset[str] = frozenset()
    """The features the node says it speaks (names this hub does not know included)."""


@dataclass(frozen=True)
class RevisionAcked:
    """The node persisted every change up to ``revision``."""

    node_name: str
    revision: int


@dataclass(frozen=True)
class ChangeRejected:
    """The node could not apply ``key`` at ``revision`` (its revision still advances)."""

    node_name: str
    key: str
    revision: int
    code: int
    message: str


@dataclass(frozen=True)
class UplinkReceived:
    """Records from the node's outbox; persist them, then ``ack_uplink`` their sequences."""

    node_name: str
    records: tuple[UplinkRecord, ...]


@dataclass(frozen=True)
class ArtifactRequested:
    """The node asks for up to ``max_bytes`` of artifact ``digest`` from ``offset``:
    answer with ``send_artifact`` or ``refuse_artifact``."""

    digest: str
    offset: int
    max_bytes: int


@dataclass(frozen=True)
class LogReceived:
    """A piece of log request ``request``."""

    request: int
    data: bytes


@dataclass(frozen=True)
class LogEnded:
    """Log request ``request`` is over (``code`` 0: ended; 404: no such App; 500)."""

    request: int
    code: int
    message: str


# --- Both sides ---------------------------------------------------------------------------


@dataclass(frozen=True)
class ErrorReceived:
    """The peer sent an ``error`` frame and is closing; the protocol asks to close too."""

    code: int
    message: str


@dataclass(frozen=True)
class PeerTimedOut:
    """Nothing was heard from the peer for ``silence`` seconds (over the deadline)."""

    silence: float


@dataclass(frozen=True)
class ProtocolViolation:
    """The peer broke the protocol; an error frame was queued and a close requested."""

    code: int
    message: str
    close_code: int


Event: TypeAlias = (
    Welcomed
    | ChangesReceived
    | SnapshotReceived
    | UplinkAcked
    | RetryAfter
    | NodeHello
    | RevisionAcked
    | ChangeRejected
    | UplinkReceived
    | ErrorReceived
    | PeerTimedOut
    | ProtocolViolation
    | ArtifactReceived
    | ArtifactRefused
    | LogRequested
    | LogCancelled
    | ArtifactRequested
    | LogReceived
    | LogEnded
)

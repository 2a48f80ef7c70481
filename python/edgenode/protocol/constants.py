"""Named constants of the node↔hub sync protocol: version, limits, codes and timers.

Every limit the protocol enforces is here, with the reason for its value; the state
machines and the frame codec read them from here and nowhere else. Durations on the
wire are integer milliseconds; durations in the Python API are float seconds.
"""

from __future__ import annotations

from enum import IntEnum
from typing import Final

PROTOCOL_VERSION: Final = 2
"""The newest protocol version this code speaks. A node sends it in ``hello``; the hub
answers in ``welcome`` with the lower of the node's and its own, and both ends speak that
one on the connection (docs/protocol.md, "Versions and features")."""

SUPPORTED_VERSIONS: Final = frozenset({1, 2})
"""Versions this code speaks on either side. A hub accepts every version since 1: ships
come back after months on old software."""

FEATURES: Final[frozenset[str]] = frozenset({"artifacts", "logs"})
"""Optional capabilities this code speaks beyond its version's frames, negotiated in
hello/welcome (version 2 on): a frame that belongs to a feature may only be sent when both
ends listed it. Later additions to the link (artifacts, logs, ...) are features, so a node
and a hub of different releases use exactly what both understand."""

MAX_ARTIFACT_SIZE: Final = 2**50
"""Largest artifact size a frame may name (1 PiB: far beyond any hub's own limit)."""

MAX_REQUEST_ID: Final = 2**53
"""Log request ids are counters below this (exact in a float64 too)."""

MAX_LOG_TAIL: Final = 1_000_000
"""Most log lines one request may ask for from the end."""

MAX_ARTIFACT_REQUESTS: Final = 8
"""Artifact fetches a node may have outstanding on a connection; more is a violation (a
hub reads what it is asked for from disk: a node must not make it read without bound)."""

MAX_LOG_REQUESTS: Final = 16
"""Log requests a hub may have open on a connection; more is a violation."""

MAX_FEATURES: Final = 64
"""Feature names one hello or welcome may list."""

MAX_FEATURE_LENGTH: Final = 32
"""Characters of one feature name."""

# --- Frame size -------------------------------------------------------------------------

DEFAULT_MAX_FRAME_SIZE: Final = 1024 * 1024
"""Largest WebSocket message (one CBOR frame) a side accepts by default: 1 MiB."""

MIN_MAX_FRAME_SIZE: Final = 4096
"""Smallest allowed frame limit: room for a chunk header with the longest key."""

MAX_MAX_FRAME_SIZE: Final = 64 * 1024 * 1024
"""Largest allowed frame limit (64 MiB): bigger frames would defeat chunking."""

# --- Shape limits of fields ---------------------------------------------------------------

MAX_NODE_NAME_LENGTH: Final = 253
"""A node name is at most a DNS name long."""

MAX_SOFTWARE_VERSION_LENGTH: Final = 128
"""Free-form software version string (``edgenode 1.2.3+build``)."""

MAX_KEY_LENGTH: Final = 512
"""A resource key (``kind/namespace/name``) in characters."""

MAX_MESSAGE_LENGTH: Final = 1024
"""Error messages in frames; longer ones are truncated by the sender, rejected by the receiver."""

MAX_CLOSE_REASON_BYTES: Final = 123
"""RFC 6455 limits a close reason to 123 bytes of UTF-8."""

MAX_REVISION: Final = 2**63 - 1
"""Revisions and sequence numbers are non-negative signed 64-bit integers (SQLite INTEGER)."""

MAX_SEQUENCE: Final = 2**63 - 1

MIN_PRIORITY: Final = 0
MAX_PRIORITY: Final = 9
"""Uplink priorities are 0..9 as assigned by the outbox; the protocol only carries them."""

MAX_CODE: Final = 65535
"""Error codes on the wire are integers 0..65535; unknown values are carried as ints."""

MAX_CBOR_DEPTH: Final = 48
"""Nesting limit of a whole frame: the frame's own structure needs 4 levels, a resource
body may nest up to ``MAX_BODY_DEPTH`` more. Checked before cbor2 sees the bytes."""

MAX_BODY_DEPTH: Final = 32
"""Nesting limit of a resource body given as a CBOR map (JSON-like documents)."""

MAX_ACK_RANGES_PER_FRAME: Final = 4096
"""Sequence ranges in one uplink-ack frame; the hub splits longer acks across frames."""

# --- Reassembly limits (the receiving node) -----------------------------------------------

DEFAULT_MAX_CHANGE_BYTES: Final = 16 * 1024 * 1024
"""Largest single resource body reassembled from chunks: 16 MiB."""

MAX_CHUNKS_PER_CHANGE: Final = 65536
"""A chunked body arriving in more pieces than this is refused (hostile 1-byte chunks)."""

DEFAULT_MAX_SNAPSHOT_BYTES: Final = 256 * 1024 * 1024
"""Largest snapshot (sum of its item and chunk frame sizes) a node buffers: 256 MiB."""

DEFAULT_MAX_SNAPSHOT_RESOURCES: Final = 1_000_000
"""Most resources a snapshot may declare."""

# --- Uplink window ------------------------------------------------------------------------

DEFAULT_MAX_IN_FLIGHT_RECORDS: Final = 1000
"""Uplink records sent but not yet acknowledged, per connection."""

DEFAULT_MAX_IN_FLIGHT_BYTES: Final = 8 * 1024 * 1024
"""Payload bytes sent but not yet acknowledged, per connection (≥ the frame limit)."""

# --- Timers -------------------------------------------------------------------------------

DEFAULT_HEARTBEAT_INTERVAL: Final = 15.0
"""Seconds between pings when a side has sent nothing else."""

HEARTBEAT_DEADLINE_FACTOR: Final = 3
"""The default deadline is this many intervals: a side pings at the latest ~2 intervals
after its last frame, so one lost ping never trips the deadline."""

DEFAULT_HEARTBEAT_DEADLINE: Final = DEFAULT_HEARTBEAT_INTERVAL * HEARTBEAT_DEADLINE_FACTOR

MIN_HEARTBEAT_INTERVAL: Final = 0.01
MAX_HEARTBEAT_INTERVAL: Final = 3600.0

DEFAULT_HANDSHAKE_TIMEOUT: Final = 30.0
"""Seconds the node waits for ``welcome`` and the hub waits for ``hello``."""

MAX_RETRY_AFTER: Final = 86400.0
"""A retry-after hint longer than a day is refused as malformed."""


class ErrorCode(IntEnum):
    """Codes carried in ``error`` frames and ``ProtocolViolation`` events."""

    MALFORMED_FRAME = 1
    """Not CBOR, trailing bytes, wrong shape or field types, a text message."""
    UNKNOWN_FRAME_TYPE = 2
    """The ``t`` field names no frame type of the negotiated version."""
    UNEXPECTED_FRAME = 3
    """A valid frame at the wrong time: before hello, duplicate hello, wrong direction."""
    FRAME_TOO_BIG = 4
    """A message over the receiver's frame limit."""
    LIMIT_EXCEEDED = 5
    """Reassembly, snapshot or uplink window limits were exceeded."""
    UNSUPPORTED_VERSION = 6
    """The hello asked for a protocol version the hub does not speak."""
    UNAUTHORIZED = 7
    """The node is not allowed to connect (decided by the driver from the handshake)."""
    UNKNOWN_NODE = 8
    """The hub knows no node of that name."""
    REPLACED = 9
    """A newer connection of the same node replaced this one."""
    TIMED_OUT = 10
    """The peer was silent past the heartbeat or handshake deadline."""
    INVALID_SEQUENCE = 11
    """Revisions or sequence numbers out of order, duplicated or never sent."""
    SHUTTING_DOWN = 12
    """The sender is going away (hub restart, node stop)."""
    INTERNAL_ERROR = 13
    """A bug on the sending side; reported, never expected."""


class ChangeErrorCode(IntEnum):
    """Documented codes of per-change error acks (node could not apply one resource)."""

    INVALID_RESOURCE = 1
    """The body does not parse or validate as a resource."""
    UNSUPPORTED_KIND = 2
    """This node's software does not know the resource's kind or apiVersion."""
    REJECTED = 3
    """The node's local policy refused the change."""
    APPLY_FAILED = 4
    """Applying the change failed (a handler raised, a device refused)."""


class CloseCode(IntEnum):
    """WebSocket close codes the protocol asks the driver to close with."""

    NORMAL = 1000
    GOING_AWAY = 1001
    PROTOCOL_ERROR = 1002
    POLICY_VIOLATION = 1008
    MESSAGE_TOO_BIG = 1009
    INTERNAL_ERROR = 1011
    TRY_AGAIN_LATER = 1013
    UNSUPPORTED_VERSION = 4001
    UNAUTHORIZED = 4003
    UNKNOWN_NODE = 4004
    PEER_TIMED_OUT = 4008
    REPLACED = 4009


CLOSE_CODE_FOR_ERROR: Final[dict[int, CloseCode]] = {
    ErrorCode.MALFORMED_FRAME: CloseCode.PROTOCOL_ERROR,
    ErrorCode.UNKNOWN_FRAME_TYPE: CloseCode.PROTOCOL_ERROR,
    ErrorCode.UNEXPECTED_FRAME: CloseCode.PROTOCOL_ERROR,
    ErrorCode.FRAME_TOO_BIG: CloseCode.MESSAGE_TOO_BIG,
    ErrorCode.LIMIT_EXCEEDED: CloseCode.POLICY_VIOLATION,
    ErrorCode.UNSUPPORTED_VERSION: CloseCode.UNSUPPORTED_VERSION,
    ErrorCode.UNAUTHORIZED: CloseCode.UNAUTHORIZED,
    ErrorCode.UNKNOWN_NODE: CloseCode.UNKNOWN_NODE,
    ErrorCode.REPLACED: CloseCode.REPLACED,
    ErrorCode.TIMED_OUT: CloseCode.PEER_TIMED_OUT,
    ErrorCode.INVALID_SEQUENCE: CloseCode.PROTOCOL_ERROR,
    ErrorCode.SHUTTING_DOWN: CloseCode.GOING_AWAY,
    ErrorCode.INTERNAL_ERROR: CloseCode.INTERNAL_ERROR,
}
"""The close code that follows an ``error`` frame of each code (unknown codes: 1002)."""


def close_code_for(code: int) -> CloseCode:
    """The WebSocket close code that goes with an error code."""
    return CLOSE_CODE_FOR_ERROR.get(code, CloseCode.PROTOCOL_ERROR)

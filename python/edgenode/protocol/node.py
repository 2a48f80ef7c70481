"""The node side of the sync protocol: one ``NodeProtocol`` per WebSocket connection.

Sans-I/O: the driver feeds whole messages with ``receive_message(data, now)`` and timer
ticks with ``tick(now)``, and drains ``data_to_send()``, ``events_received()`` and
``close_requested()``. The application answers events with ``ack``, ``reject_change`` and
``send_uplink``. The object is per connection: after a reconnect, a new one is made with
the last persisted revision, and every uplink record that was never acknowledged is
simply sent again from the outbox (the hub drops duplicates by sequence number).
"""

from __future__ import annotations

import bisect
from collections.abc import Sequence
from dataclasses import dataclass, field

from edgenode.errors import ConfigError
from edgenode.protocol._connection import _Connection, truncate_message
from edgenode.protocol.constants import (
    DEFAULT_HANDSHAKE_TIMEOUT,
    DEFAULT_MAX_CHANGE_BYTES,
    DEFAULT_MAX_FRAME_SIZE,
    DEFAULT_MAX_IN_FLIGHT_BYTES,
    DEFAULT_MAX_IN_FLIGHT_RECORDS,
    DEFAULT_MAX_SNAPSHOT_BYTES,
    DEFAULT_MAX_SNAPSHOT_RESOURCES,
    FEATURES,
    MAX_ARTIFACT_REQUESTS,
    MAX_ARTIFACT_SIZE,
    MAX_BODY_DEPTH,
    MAX_CHUNKS_PER_CHANGE,
    MAX_CODE,
    MAX_KEY_LENGTH,
    MAX_LOG_REQUESTS,
    MAX_MAX_FRAME_SIZE,
    MAX_NODE_NAME_LENGTH,
    MAX_PRIORITY,
    MAX_REQUEST_ID,
    MAX_REVISION,
    MAX_SEQUENCE,
    MAX_SOFTWARE_VERSION_LENGTH,
    MIN_MAX_FRAME_SIZE,
    MIN_PRIORITY,
    PROTOCOL_VERSION,
    SUPPORTED_VERSIONS,
    CloseCode,
    ErrorCode,
)
from edgenode.protocol.events import (
    ArtifactReceived,
    ArtifactRefused,
    ChangesReceived,
    LogCancelled,
    LogRequested,
    RetryAfter,
    SnapshotReceived,
    UplinkAcked,
    Welcomed,
)
from edgenode.protocol.frames import (
    FEATURE_OF,
    AckFrame,
    ArtifactDataFrame,
    ArtifactErrorFrame,
    ArtifactFetchFrame,
    ChangeErrorFrame,
    ChangesFrame,
    ChunkFrame,
    ErrorFrame,
    Frame,
    HelloFrame,
    LogCancelFrame,
    LogDataFrame,
    LogEndFrame,
    LogQueryFrame,
    PingFrame,
    Resource,
    RetryAfterFrame,
    SnapshotBeginFrame,
    SnapshotEndFrame,
    SnapshotItemsFrame,
    UplinkAckFrame,
    UplinkRecord,
    Upsert,
    WelcomeFrame,
    assemble_list_frame,
    check_body,
    check_digest,
    decode_cbor,
    encode_frame,
    encode_record,
    violation,
)

_ARRAY_HEAD_MAX = 9
"""Longest CBOR head of an array or byte string; used to size frames before assembling."""


@dataclass(frozen=True)
class NodeConfig:
    """Limits of the node side; validated once (``ConfigError``)."""

    max_frame_size: int = DEFAULT_MAX_FRAME_SIZE
    """Largest message this node accepts, announced in hello."""
    handshake_timeout: float = DEFAULT_HANDSHAKE_TIMEOUT
    """Seconds to wait for welcome / error / retry-after after sending hello."""
    max_in_flight_records: int = DEFAULT_MAX_IN_FLIGHT_RECORDS
    max_in_flight_bytes: int = DEFAULT_MAX_IN_FLIGHT_BYTES
    """Uplink window; the hub's (from welcome) applies when smaller."""
    max_change_bytes: int = DEFAULT_MAX_CHANGE_BYTES
    """Largest body reassembled from chunks."""
    max_snapshot_bytes: int = DEFAULT_MAX_SNAPSHOT_BYTES
    max_snapshot_resources: int = DEFAULT_MAX_SNAPSHOT_RESOURCES
    version: int = PROTOCOL_VERSION
    """The protocol version to ask for in hello (a lower one speaks to an older hub)."""
    features: frozenset[str] = FEATURES
    """Features this node speaks (sent in a version-2 hello)."""

    def __post_init__(self) -> None:
        if self.version not in SUPPORTED_VERSIONS:
            raise ConfigError(f"version must be one of {sorted(SUPPORTED_VERSIONS)}")
        if not MIN_MAX_FRAME_SIZE <= self.max_frame_size <= MAX_MAX_FRAME_SIZE:
            raise ConfigError(
                f"max_frame_size must be in [{MIN_MAX_FRAME_SIZE}, {MAX_MAX_FRAME_SIZE}]"
            )
        if not self.handshake_timeout > 0:
            raise ConfigError("handshake_timeout must be positive")
        for name in (
            "max_in_flight_records",
            "max_in_flight_bytes",
            "max_change_bytes",
            "max_snapshot_bytes",
            "max_snapshot_resources",
        ):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be at least 1")


@dataclass(frozen=True)
class UplinkWindow:
    """Accounting of uplink records sent on this connection and not yet acknowledged."""

    records_in_flight: int
    bytes_in_flight: int
    max_records: int
    max_bytes: int


@dataclass
class _Reassembly:
    """A body arriving in chunks."""

    key: str
    revision: int
    is_map: bool
    total_size: int
    buffer: bytearray = field(default_factory=bytearray)
    chunks: int = 0


@dataclass
class _SnapshotBuffer:
    """A snapshot between its begin and end frames."""

    revision: int
    declared: int
    size: int
    resources: list[Resource] = field(default_factory=list)
    keys: set[str] = field(default_factory=set)


def _check_text(value: str, what: str, max_length: int, *, empty: bool) -> str:
    if not isinstance(value, str) or len(value) > max_length or (not empty and not value):
        raise ValueError(f"{what} must be a string of 1..{max_length} characters")
    return value


def _check_int(value: int, what: str, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise ValueError(f"{what} must be an integer in [{low}, {high}], got {value!r}")
    return value


class NodeProtocol(_Connection):
    """The node's end of one connection to the hub.

    Constructing it queues the ``hello`` frame: flush ``data_to_send()`` right away.
    """

    def __init__(
        self,
        node_name: str,
        software_version: str,
        last_revision: int,
        now: float,
        config: NodeConfig | None = None,
        *,
        next_seq: int | None = None,
    ) -> None:
        """``next_seq``: the sequence number the outbox gives its next record (sent as
        ``hello.ns`` so the hub notices a restored or replaced store)."""
        config = config or NodeConfig()
        _check_text(node_name, "node_name", MAX_NODE_NAME_LENGTH, empty=False)
        _check_text(software_version, "software_version", MAX_SOFTWARE_VERSION_LENGTH, empty=True)
        _check_int(last_revision, "last_revision", 0, MAX_REVISION)
        if next_seq is not None:
            _check_int(next_seq, "next_seq", 1, MAX_SEQUENCE)
        super().__init__(now, config.max_frame_size, config.handshake_timeout)
        self._config = config
        self._node_name = node_name
        # Everything up to _revision has been delivered to the application; changes
        # must come after it. A snapshot resets it (possibly backwards: a restored hub).
        self._revision = last_revision
        # The application may acknowledge anything delivered on this connection.
        self._ackable = last_revision
        self._hub_revision: int | None = None
        self._reassembly: _Reassembly | None = None
        self._snapshot: _SnapshotBuffer | None = None
        self._in_flight: dict[int, int] = {}
        self._in_flight_bytes = 0
        self._window_records = config.max_in_flight_records
        self._window_bytes = config.max_in_flight_bytes
        self._fetches: dict[str, int] = {}
        """Artifact fetches sent and not answered, per digest."""
        self._log_requests: set[int] = set()
        """Log requests of the hub that are open."""
        self._version = config.version
        self._features: frozenset[str] = frozenset()
        self._send(
            HelloFrame(
                config.version,
                node_name,
                software_version,
                last_revision,
                config.max_frame_size,
                next_seq,
                tuple(sorted(config.features)) if config.version >= 2 else (),
            )
        )

    # --- Read-only state ------------------------------------------------------------------

    @property
    def node_name(self) -> str:
        return self._node_name

    @property
    def version(self) -> int:
        """The protocol version of this connection (asked for, then the hub's answer)."""
        return self._version

    @property
    def features(self) -> frozenset[str]:
        """The features in use on this connection (empty before welcome)."""
        return self._features

    @property
    def revision(self) -> int:
        """The revision the node is complete up to on this connection (as delivered)."""
        return self._revision

    @property
    def hub_revision(self) -> int | None:
        """The hub's revision when it welcomed us (``None`` before welcome)."""
        return self._hub_revision

    @property
    def window(self) -> UplinkWindow:
        return UplinkWindow(
            len(self._in_flight), self._in_flight_bytes, self._window_records, self._window_bytes
        )

    @property
    def in_flight(self) -> tuple[int, ...]:
        """Sequence numbers sent on this connection and not yet acknowledged, ascending."""
        return tuple(sorted(self._in_flight))

    @property
    def max_uplink_payload(self) -> int:
        """The largest payload one record may carry (it must fit in one frame)."""
        return self._uplink_frame_budget() - self._record_overhead()

    def can_send(self, payload_size: int = 0) -> bool:
        """Whether one more record of ``payload_size`` bytes fits the window now.

        A record is admitted when it fits, or when nothing is in flight (so a record
        larger than the byte window still goes, alone).
        """
        if not self._in_flight:
            return True
        return (
            len(self._in_flight) < self._window_records
            and self._in_flight_bytes + payload_size <= self._window_bytes
        )

    # --- Application calls ----------------------------------------------------------------

    def ack(self, revision: int) -> None:
        """Tell the hub everything up to ``revision`` is persisted.

        ``RuntimeError`` before welcome; ``ValueError`` for a revision not delivered on
        this connection (nor the hello's); nothing once closed.
        """
        _check_int(revision, "revision", 0, MAX_REVISION)
        if not self._require_open("ack"):
            return
        if revision > self._ackable:
            raise ValueError(f"revision {revision} was never delivered (up to {self._ackable})")
        self._send(AckFrame(revision))

    def reject_change(self, key: str, revision: int, code: int, message: str) -> None:
        """Tell the hub ``key`` at ``revision`` could not be applied (``ChangeErrorCode``).

        Then ``ack`` past it as usual: a rejected change still advances the revision.
        """
        _check_text(key, "key", MAX_KEY_LENGTH, empty=False)
        _check_int(revision, "revision", 0, MAX_REVISION)
        _check_int(code, "code", 0, MAX_CODE)
        if not self._require_open("reject a change"):
            return
        if revision > self._ackable:
            raise ValueError(f"revision {revision} was never delivered (up to {self._ackable})")
        self._send(ChangeErrorFrame(key, revision, int(code), truncate_message(message)))

    def send_uplink(self, records: Sequence[UplinkRecord]) -> int:
        """Send the longest prefix of ``records`` that fits the window; return its length.

        Records are packed into as few frames as the frame limit allows. ``ValueError``
        for an invalid record, a sequence already in flight, or a payload over
        ``max_uplink_payload``; ``RuntimeError`` before welcome; returns 0 once closed.
        """
        if not self._require_open("send uplink records"):
            return 0
        budget = self._uplink_frame_budget()
        max_payload = budget - self._record_overhead()
        accepted = 0
        batch: list[bytes] = []
        batch_size = 0
        frames: list[bytes] = []
        in_flight = dict(self._in_flight)
        in_flight_bytes = self._in_flight_bytes
        for record in records:
            self._check_record(record, in_flight, max_payload)
            fits_window = not in_flight or (
                len(in_flight) < self._window_records
                and in_flight_bytes + len(record.payload) <= self._window_bytes
            )
            if not fits_window:
                break
            item = encode_record(record)
            if batch and batch_size + len(item) > budget:
                frames.append(assemble_list_frame({"t": "u"}, "rs", batch))
                batch, batch_size = [], 0
            batch.append(item)
            batch_size += len(item)
            in_flight[record.sequence] = len(record.payload)
            in_flight_bytes += len(record.payload)
            accepted += 1
        if batch:
            frames.append(assemble_list_frame({"t": "u"}, "rs", batch))
        # Commit only after every record validated: a ValueError leaves no partial send.
        self._in_flight = in_flight
        self._in_flight_bytes = in_flight_bytes
        for message in frames:
            self._send_bytes(message)
        return accepted

    # --- Feature "artifacts" --------------------------------------------------------------

    @property
    def max_artifact_chunk(self) -> int:
        """The most bytes one ``ad`` frame can carry to this node (its frame limit less the
        frame's own fields): ask for at most this much at a time."""
        empty = ArtifactDataFrame("0" * 64, MAX_ARTIFACT_SIZE, MAX_ARTIFACT_SIZE, b"")
        return self._receive_limit - len(encode_frame(empty)) - _ARRAY_HEAD_MAX

    @property
    def artifact_fetches(self) -> int:
        """Artifact fetches sent and not yet answered on this connection."""
        return sum(self._fetches.values())

    def fetch_artifact(self, digest: str, offset: int, max_bytes: int) -> None:
        """Ask the hub for up to ``max_bytes`` (at most ``max_artifact_chunk``) of
        artifact ``digest`` from ``offset``. RuntimeError unless the connection uses the
        ``artifacts`` feature; ValueError beyond ``MAX_ARTIFACT_REQUESTS`` outstanding."""
        self._require_feature("artifacts")
        _check_int(offset, "offset", 0, MAX_ARTIFACT_SIZE)
        _check_int(max_bytes, "max_bytes", 1, self.max_artifact_chunk)
        if not self._require_open("fetch an artifact"):
            return
        if self.artifact_fetches >= MAX_ARTIFACT_REQUESTS:
            raise ValueError(f"at most {MAX_ARTIFACT_REQUESTS} artifact fetches at a time")
        check_digest(digest)
        self._fetches[digest] = self._fetches.get(digest, 0) + 1
        self._send(ArtifactFetchFrame(digest, offset, max_bytes))

    # --- Feature "logs" -------------------------------------------------------------------

    def send_log(self, request: int, data: bytes) -> None:
        """A piece of an open log request's answer (split to fit the frame limit)."""
        self._require_feature("logs")
        if not self._require_open("send a log") or request not in self._log_requests:
            return  # cancelled meanwhile: dropped
        piece = self._send_limit - len(encode_frame(LogDataFrame(MAX_REQUEST_ID, b""))) - 16
        for start in range(0, len(data), piece):
            self._send(LogDataFrame(request, data[start : start + piece]))

    def end_log(self, request: int, code: int = 0, message: str = "") -> None:
        """Close log request ``request`` (``code`` 0: done; 404: no such App; 500)."""
        self._require_feature("logs")
        _check_int(code, "code", 0, MAX_CODE)
        if not self._require_open("end a log") or request not in self._log_requests:
            return
        self._log_requests.discard(request)
        self._send(LogEndFrame(request, code, truncate_message(message)))

    def _require_feature(self, feature: str) -> None:
        if self._hub_revision is not None and feature not in self._features:
            raise RuntimeError(f"the connection does not use the {feature!r} feature")

    # --- Frame handling -------------------------------------------------------------------

    def _handle(self, frame: Frame, size: int, now: float) -> None:
        feature = FEATURE_OF.get(type(frame))
        if feature is not None and feature not in self._features:
            raise violation(
                ErrorCode.UNEXPECTED_FRAME,
                f"{type(frame).__name__} without the {feature!r} feature",
            )
        match frame:
            case ErrorFrame():
                self._error_received(frame)
            case RetryAfterFrame():
                self._events.append(RetryAfter(frame.delay_ms / 1000, frame.message))
                self._request_close(CloseCode.TRY_AGAIN_LATER, f"retry after {frame.delay_ms} ms")
            case WelcomeFrame():
                if self._hub_revision is not None:
                    raise violation(ErrorCode.UNEXPECTED_FRAME, "duplicate welcome")
                self._welcome(frame, now)
            case _ if self._hub_revision is None:
                raise violation(
                    ErrorCode.UNEXPECTED_FRAME, f"{type(frame).__name__} before welcome"
                )
            case PingFrame():
                pass
            case ChangesFrame():
                self._changes(frame)
            case ChunkFrame():
                self._chunk(frame, size)
            case SnapshotBeginFrame():
                self._snapshot_begin(frame, size)
            case SnapshotItemsFrame():
                self._snapshot_items(frame, size)
            case SnapshotEndFrame():
                self._snapshot_end()
            case UplinkAckFrame():
                self._uplink_ack(frame)
            case ArtifactDataFrame():
                self._artifact_answered(frame.digest)
                self._events.append(
                    ArtifactReceived(frame.digest, frame.offset, frame.size, frame.data)
                )
            case ArtifactErrorFrame():
                self._artifact_answered(frame.digest)
                self._events.append(ArtifactRefused(frame.digest, frame.code, frame.message))
            case LogQueryFrame():
                if frame.request in self._log_requests:
                    raise violation(ErrorCode.INVALID_SEQUENCE, "log request id reused")
                if len(self._log_requests) >= MAX_LOG_REQUESTS:
                    raise violation(
                        ErrorCode.LIMIT_EXCEEDED, f"more than {MAX_LOG_REQUESTS} log requests"
                    )
                self._log_requests.add(frame.request)
                self._events.append(
                    LogRequested(frame.request, frame.app, frame.tail, frame.follow)
                )
            case LogCancelFrame():
                if frame.request in self._log_requests:
                    self._log_requests.discard(frame.request)
                    self._events.append(LogCancelled(frame.request))
            case _:
                raise violation(
                    ErrorCode.UNEXPECTED_FRAME, f"{type(frame).__name__} is not sent to nodes"
                )

    def _artifact_answered(self, digest: str) -> None:
        count = self._fetches.get(digest, 0)
        if not count:
            raise violation(ErrorCode.UNEXPECTED_FRAME, f"artifact {digest[:12]} never asked for")
        if count == 1:
            del self._fetches[digest]
        else:
            self._fetches[digest] = count - 1

    def _welcome(self, frame: WelcomeFrame, now: float) -> None:
        if frame.version > self._config.version:
            raise violation(
                ErrorCode.UNSUPPORTED_VERSION,
                f"hub answered protocol version {frame.version}, this node asked for "
                f"{self._config.version}",
            )
        unasked = set(frame.features) - self._config.features
        if unasked:
            raise violation(
                ErrorCode.MALFORMED_FRAME,
                f"welcome lists features never offered: {sorted(unasked)}",
            )
        self._version = frame.version
        self._features = frozenset(frame.features)
        self._hub_revision = frame.hub_revision
        self._send_limit = min(self._config.max_frame_size, frame.max_frame_size)
        self._window_records = min(self._config.max_in_flight_records, frame.window_records)
        self._window_bytes = min(self._config.max_in_flight_bytes, frame.window_bytes)
        interval = frame.heartbeat_interval_ms / 1000
        deadline = frame.heartbeat_deadline_ms / 1000
        self._open(now, interval, deadline)
        self._events.append(
            Welcomed(
                frame.version,
                frame.hub_revision,
                interval,
                deadline,
                self._send_limit,
                self._window_records,
                self._window_bytes,
                self._features,
                None if frame.hub_time_ms is None else frame.hub_time_ms / 1000,
            )
        )

    def _changes(self, frame: ChangesFrame) -> None:
        if self._snapshot is not None or self._reassembly is not None:
            raise violation(
                ErrorCode.UNEXPECTED_FRAME, "changes while a snapshot or chunked body is open"
            )
        previous = self._revision
        for change in frame.changes:
            if change.revision <= previous:
                raise violation(
                    ErrorCode.INVALID_SEQUENCE,
                    f"change {change.key!r} at revision {change.revision} does not follow "
                    f"revision {previous}",
                )
            previous = change.revision
        if frame.revision < previous:
            raise violation(
                ErrorCode.INVALID_SEQUENCE,
                f"batch revision {frame.revision} is behind its changes or the node ({previous})",
            )
        self._advance(frame.revision)
        self._events.append(ChangesReceived(frame.changes, frame.revision))

    def _chunk(self, frame: ChunkFrame, size: int) -> None:
        current = self._reassembly
        if current is None:
            if frame.offset != 0:
                raise violation(ErrorCode.INVALID_SEQUENCE, "first chunk does not start at 0")
            if frame.total_size > self._config.max_change_bytes:
                raise violation(
                    ErrorCode.LIMIT_EXCEEDED,
                    f"chunked body of {frame.total_size} bytes exceeds the limit of "
                    f"{self._config.max_change_bytes}",
                )
            self._check_item_revision(frame.key, frame.revision)
            current = _Reassembly(frame.key, frame.revision, frame.is_map, frame.total_size)
            self._reassembly = current
        elif (
            frame.key != current.key
            or frame.revision != current.revision
            or frame.is_map != current.is_map
            or frame.total_size != current.total_size
            or frame.offset != len(current.buffer)
        ):
            raise violation(
                ErrorCode.INVALID_SEQUENCE, f"chunk does not continue the body of {current.key!r}"
            )
        current.chunks += 1
        if current.chunks > MAX_CHUNKS_PER_CHANGE:
            raise violation(
                ErrorCode.LIMIT_EXCEEDED, f"more than {MAX_CHUNKS_PER_CHANGE} chunks for one body"
            )
        self._count_snapshot_bytes(size)
        current.buffer += frame.data
        if len(current.buffer) < current.total_size:
            return
        self._reassembly = None
        data = bytes(current.buffer)
        body = check_body(decode_cbor(data, MAX_BODY_DEPTH)) if current.is_map else data
        if self._snapshot is not None:
            self._snapshot_add(Resource(current.key, current.revision, body))
        else:
            self._advance(current.revision)
            self._events.append(
                ChangesReceived((Upsert(current.key, current.revision, body),), current.revision)
            )

    def _check_item_revision(self, key: str, revision: int) -> None:
        """A change must follow the node's revision; a snapshot item must not pass the
        snapshot's revision."""
        if self._snapshot is not None:
            if revision > self._snapshot.revision:
                raise violation(
                    ErrorCode.INVALID_SEQUENCE,
                    f"snapshot item {key!r} at revision {revision} is newer than the snapshot",
                )
        elif revision <= self._revision:
            raise violation(
                ErrorCode.INVALID_SEQUENCE,
                f"change {key!r} at revision {revision} does not follow {self._revision}",
            )

    def _snapshot_begin(self, frame: SnapshotBeginFrame, size: int) -> None:
        if self._snapshot is not None or self._reassembly is not None:
            raise violation(ErrorCode.UNEXPECTED_FRAME, "snapshot begins inside another transfer")
        if frame.count > self._config.max_snapshot_resources:
            raise violation(
                ErrorCode.LIMIT_EXCEEDED,
                f"snapshot of {frame.count} resources exceeds the limit of "
                f"{self._config.max_snapshot_resources}",
            )
        self._snapshot = _SnapshotBuffer(frame.revision, frame.count, 0)
        self._count_snapshot_bytes(size)

    def _snapshot_items(self, frame: SnapshotItemsFrame, size: int) -> None:
        if self._snapshot is None or self._reassembly is not None:
            raise violation(ErrorCode.UNEXPECTED_FRAME, "snapshot items outside a snapshot")
        self._count_snapshot_bytes(size)
        for resource in frame.resources:
            self._check_item_revision(resource.key, resource.revision)
            self._snapshot_add(resource)

    def _snapshot_add(self, resource: Resource) -> None:
        snapshot = self._snapshot
        assert snapshot is not None  # callers check
        if resource.key in snapshot.keys:
            raise violation(
                ErrorCode.INVALID_SEQUENCE, f"snapshot repeats the resource {resource.key!r}"
            )
        if len(snapshot.resources) >= snapshot.declared:
            raise violation(
                ErrorCode.LIMIT_EXCEEDED,
                f"snapshot holds more than the {snapshot.declared} resources it declared",
            )
        snapshot.keys.add(resource.key)
        snapshot.resources.append(resource)

    def _count_snapshot_bytes(self, size: int) -> None:
        if self._snapshot is None:
            return
        self._snapshot.size += size
        if self._snapshot.size > self._config.max_snapshot_bytes:
            raise violation(
                ErrorCode.LIMIT_EXCEEDED,
                f"snapshot exceeds the limit of {self._config.max_snapshot_bytes} bytes",
            )

    def _snapshot_end(self) -> None:
        snapshot = self._snapshot
        if snapshot is None or self._reassembly is not None:
            raise violation(ErrorCode.UNEXPECTED_FRAME, "snapshot end outside a snapshot")
        if len(snapshot.resources) != snapshot.declared:
            raise violation(
                ErrorCode.INVALID_SEQUENCE,
                f"snapshot ended with {len(snapshot.resources)} of {snapshot.declared} resources",
            )
        self._snapshot = None
        # A snapshot may move the revision backwards (a hub restored from a backup).
        self._revision = snapshot.revision
        self._ackable = max(self._ackable, snapshot.revision)
        self._events.append(SnapshotReceived(snapshot.revision, tuple(snapshot.resources)))

    def _uplink_ack(self, frame: UplinkAckFrame) -> None:
        lows = [low for low, _ in frame.ranges]
        acked: list[int] = []
        for sequence in self._in_flight:
            index = bisect.bisect_right(lows, sequence) - 1
            if index >= 0 and sequence <= frame.ranges[index][1]:
                acked.append(sequence)
        # Ranges may span sequences never sent here (other priorities, gaps): ignored.
        for sequence in acked:
            self._in_flight_bytes -= self._in_flight.pop(sequence)
        if acked:
            self._events.append(UplinkAcked(tuple(sorted(acked))))

    def _advance(self, revision: int) -> None:
        self._revision = revision
        self._ackable = max(self._ackable, revision)

    # --- Uplink sizing --------------------------------------------------------------------

    def _uplink_frame_budget(self) -> int:
        empty = assemble_list_frame({"t": "u"}, "rs", [])
        return self._send_limit - len(empty) + 1 - _ARRAY_HEAD_MAX

    @staticmethod
    def _record_overhead() -> int:
        return (
            len(encode_record(UplinkRecord(MAX_SEQUENCE, MAX_PRIORITY, b"")))
            - 1
            + (_ARRAY_HEAD_MAX)
        )

    @staticmethod
    def _check_record(record: UplinkRecord, in_flight: dict[int, int], max_payload: int) -> None:
        if not isinstance(record, UplinkRecord):
            raise ValueError(f"not an UplinkRecord: {record!r}")
        _check_int(record.sequence, "sequence", 0, MAX_SEQUENCE)
        _check_int(record.priority, "priority", MIN_PRIORITY, MAX_PRIORITY)
        if not isinstance(record.payload, bytes):
            raise ValueError("payload must be bytes")
        if record.sequence in in_flight:
            raise ValueError(f"sequence {record.sequence} is already in flight")
        if len(record.payload) > max_payload:
            raise ValueError(
                f"payload of {len(record.payload)} bytes exceeds the per-record limit of "
                f"{max_payload}"
            )

"""The hub side of the sync protocol: one ``HubProtocol`` per node connection.

Sans-I/O like ``NodeProtocol``. The hub application learns who connected from the
``NodeHello`` event, then decides: ``accept(hub_revision)`` (welcome), ``send_retry_after``
(overloaded) or ``send_error`` (unknown node, replaced, ...). Once open it streams
``send_changes`` or ``send_snapshot`` and acknowledges uplink with ``ack_uplink``.

The sending methods split automatically so that no message exceeds the smaller of both
sides' frame limits: batches become several ``c`` frames, snapshots several ``si`` frames,
and a body too large for any frame becomes a run of ``k`` chunk frames.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import cbor2

from edgenode.errors import ConfigError, ProtocolError
from edgenode.protocol._connection import State, _Connection, check_now, truncate_message
from edgenode.protocol.constants import (
    DEFAULT_HANDSHAKE_TIMEOUT,
    DEFAULT_HEARTBEAT_INTERVAL,
    DEFAULT_MAX_FRAME_SIZE,
    DEFAULT_MAX_IN_FLIGHT_BYTES,
    DEFAULT_MAX_IN_FLIGHT_RECORDS,
    FEATURES,
    HEARTBEAT_DEADLINE_FACTOR,
    MAX_ACK_RANGES_PER_FRAME,
    MAX_ARTIFACT_REQUESTS,
    MAX_ARTIFACT_SIZE,
    MAX_CODE,
    MAX_HEARTBEAT_INTERVAL,
    MAX_KEY_LENGTH,
    MAX_LOG_REQUESTS,
    MAX_LOG_TAIL,
    MAX_MAX_FRAME_SIZE,
    MAX_NODE_NAME_LENGTH,
    MAX_REQUEST_ID,
    MAX_RETRY_AFTER,
    MAX_REVISION,
    MIN_HEARTBEAT_INTERVAL,
    MIN_MAX_FRAME_SIZE,
    PROTOCOL_VERSION,
    CloseCode,
    ErrorCode,
)
from edgenode.protocol.events import (
    ArtifactRequested,
    ChangeRejected,
    LogEnded,
    LogReceived,
    NodeHello,
    RevisionAcked,
    UplinkReceived,
)
from edgenode.protocol.frames import (
    FEATURE_OF,
    AckFrame,
    ArtifactDataFrame,
    ArtifactErrorFrame,
    ArtifactFetchFrame,
    Body,
    Change,
    ChangeErrorFrame,
    ChunkFrame,
    Delete,
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
    UplinkFrame,
    Upsert,
    WelcomeFrame,
    assemble_list_frame,
    check_body,
    encode_change,
    encode_frame,
    encode_resource,
    violation,
)

_HEAD_MAX = 9
"""Longest CBOR head (array, byte string, integer); used to size frames conservatively."""

_RANGE_MAX_BYTES = 1 + 2 * _HEAD_MAX
"""Encoded size of the largest ``[low, high]`` ack range."""


@dataclass(frozen=True)
class HubConfig:
    """Limits and timers of the hub side, announced to the node in welcome."""

    max_frame_size: int = DEFAULT_MAX_FRAME_SIZE
    handshake_timeout: float = DEFAULT_HANDSHAKE_TIMEOUT
    """Seconds to wait for the node's hello."""
    heartbeat_interval: float = DEFAULT_HEARTBEAT_INTERVAL
    heartbeat_deadline: float | None = None
    """Defaults to ``HEARTBEAT_DEADLINE_FACTOR`` intervals."""
    max_in_flight_records: int = DEFAULT_MAX_IN_FLIGHT_RECORDS
    max_in_flight_bytes: int = DEFAULT_MAX_IN_FLIGHT_BYTES
    """Uplink window the node must respect; exceeding it is a protocol violation."""
    features: frozenset[str] = FEATURES
    """Features this hub speaks; a connection uses those the node speaks too."""

    def __post_init__(self) -> None:
        if not MIN_MAX_FRAME_SIZE <= self.max_frame_size <= MAX_MAX_FRAME_SIZE:
            raise ConfigError(
                f"max_frame_size must be in [{MIN_MAX_FRAME_SIZE}, {MAX_MAX_FRAME_SIZE}]"
            )
        if not self.handshake_timeout > 0:
            raise ConfigError("handshake_timeout must be positive")
        if not MIN_HEARTBEAT_INTERVAL <= self.heartbeat_interval <= MAX_HEARTBEAT_INTERVAL:
            raise ConfigError(
                f"heartbeat_interval must be in [{MIN_HEARTBEAT_INTERVAL}, "
                f"{MAX_HEARTBEAT_INTERVAL}] seconds"
            )
        deadline = self.effective_heartbeat_deadline
        if not self.heartbeat_interval < deadline <= 10 * MAX_HEARTBEAT_INTERVAL:
            raise ConfigError("heartbeat_deadline must be longer than heartbeat_interval")
        if self.max_in_flight_records < 1 or self.max_in_flight_bytes < 1:
            raise ConfigError("the uplink window must admit at least one record and byte")

    @property
    def effective_heartbeat_deadline(self) -> float:
        if self.heartbeat_deadline is None:
            return self.heartbeat_interval * HEARTBEAT_DEADLINE_FACTOR
        return self.heartbeat_deadline


def _check_key(key: str) -> None:
    if not isinstance(key, str) or not 1 <= len(key) <= MAX_KEY_LENGTH:
        raise ValueError(f"key must be a string of 1..{MAX_KEY_LENGTH} characters, got {key!r}")


def _check_revision(revision: int, what: str = "revision") -> None:
    if isinstance(revision, bool) or not isinstance(revision, int):
        raise ValueError(f"{what} must be an integer, got {revision!r}")
    if not 0 <= revision <= MAX_REVISION:
        raise ValueError(f"{what} must be in [0, {MAX_REVISION}], got {revision}")


def _valid_body(body: Body) -> Body:
    try:
        return check_body(body)
    except ProtocolError as exc:
        raise ValueError(str(exc)) from None


class HubProtocol(_Connection):
    """The hub's end of one node connection."""

    def __init__(self, now: float, config: HubConfig | None = None) -> None:
        config = config or HubConfig()
        super().__init__(now, config.max_frame_size, config.handshake_timeout)
        self._config = config
        self._hello: HelloFrame | None = None
        # Changes must follow _sent_revision; acks may not pass _ackable.
        self._sent_revision = 0
        self._ackable = 0
        self._in_flight: dict[int, int] = {}
        self._in_flight_bytes = 0
        self._fetches = 0
        """Artifact fetches of the node not answered yet."""
        self._log_requests: set[int] = set()

    # --- Read-only state ------------------------------------------------------------------

    @property
    def node_name(self) -> str | None:
        """The node's name from its hello (``None`` before hello)."""
        return None if self._hello is None else self._hello.node_name

    @property
    def version(self) -> int:
        """The protocol version of this connection (the hello's until welcomed: then the
        lower of the node's and this code's)."""
        if self._hello is None:
            return PROTOCOL_VERSION
        return min(self._hello.version, PROTOCOL_VERSION)

    @property
    def features(self) -> frozenset[str]:
        """The features in use on this connection (both ends speak them; none before
        version 2)."""
        if self._hello is None or self.version < 2:
            return frozenset()
        return self._config.features & frozenset(self._hello.features)

    @property
    def sent_revision(self) -> int:
        """The revision the node will be complete up to once it has what was sent."""
        return self._sent_revision

    @property
    def in_flight(self) -> tuple[int, ...]:
        """Uplink sequences received on this connection and not yet acknowledged."""
        return tuple(sorted(self._in_flight))

    # --- Application calls ----------------------------------------------------------------

    def accept(
        self, hub_revision: int, now: float | None = None, *, wall_time: float | None = None
    ) -> None:
        """Welcome the node; ``RuntimeError`` unless a hello arrived and nothing was answered.

        Heartbeat timers start at ``now`` (default: when the hello arrived). ``wall_time``
        (Unix seconds) goes into a version-2 welcome so the node can tell how far off its
        clock is.
        """
        _check_revision(hub_revision, "hub_revision")
        start = self._last_received if now is None else check_now(now)
        if self._hello is None or self._state is not State.CONNECTING:
            raise RuntimeError("accept() needs a hello and an unanswered connection")
        config = self._config
        deadline = config.effective_heartbeat_deadline
        interval_ms = max(1, round(config.heartbeat_interval * 1000))
        self._send(
            WelcomeFrame(
                self.version,
                hub_revision,
                interval_ms,
                max(interval_ms + 1, round(deadline * 1000)),
                config.max_frame_size,
                config.max_in_flight_records,
                config.max_in_flight_bytes,
                tuple(sorted(self.features)),
                None if wall_time is None else max(0, round(wall_time * 1000)),
            )
        )
        self._open(start, config.heartbeat_interval, deadline)

    def send_retry_after(self, delay: float, message: str = "") -> None:
        """Tell the node to come back in ``delay`` seconds at the earliest, and close (1013)."""
        if isinstance(delay, bool) or not isinstance(delay, int | float):
            raise ValueError(f"delay must be a number of seconds, got {delay!r}")
        if not 0 <= delay <= MAX_RETRY_AFTER:
            raise ValueError(f"delay must be in [0, {MAX_RETRY_AFTER}] seconds")
        if self._state is State.CLOSED:
            return
        self._send(RetryAfterFrame(math.ceil(delay * 1000), truncate_message(message)))
        self._request_close(CloseCode.TRY_AGAIN_LATER, message or "overloaded, retry later")

    def send_changes(self, changes: Sequence[Change], revision: int) -> None:
        """Send ``changes`` (strictly increasing revisions after ``sent_revision``); the node
        is then complete up to ``revision``. Empty ``changes`` just advance the node.

        ``ValueError`` for changes out of order or invalid; ``RuntimeError`` before accept;
        nothing once closed. Splits into as many frames as the node's frame limit needs.
        """
        _check_revision(revision)
        previous = self._sent_revision
        for change in changes:
            if not isinstance(change, Upsert | Delete):
                raise ValueError(f"not a change: {change!r}")
            _check_key(change.key)
            _check_revision(change.revision, f"revision of {change.key!r}")
            if change.revision <= previous:
                raise ValueError(
                    f"change {change.key!r} at revision {change.revision} does not follow "
                    f"revision {previous}"
                )
            if isinstance(change, Upsert):
                _valid_body(change.body)
            previous = change.revision
        if revision < previous:
            raise ValueError(f"batch revision {revision} is behind revision {previous}")
        if not self._require_open("send changes"):
            return
        messages = self._change_messages(changes, revision)
        self._sent_revision = revision
        self._ackable = max(self._ackable, revision)
        for message in messages:
            self._send_bytes(message)

    def send_snapshot(self, revision: int, resources: Sequence[Resource]) -> None:
        """Send a complete snapshot at ``revision`` (the node replaces its cache with it).

        ``ValueError`` for duplicate keys or items newer than ``revision``; may move the
        node's revision backwards (a hub restored from backup).
        """
        _check_revision(revision)
        keys: set[str] = set()
        for resource in resources:
            if not isinstance(resource, Resource):
                raise ValueError(f"not a Resource: {resource!r}")
            _check_key(resource.key)
            _check_revision(resource.revision, f"revision of {resource.key!r}")
            if resource.revision > revision:
                raise ValueError(f"resource {resource.key!r} is newer than the snapshot")
            if resource.key in keys:
                raise ValueError(f"resource {resource.key!r} appears twice")
            keys.add(resource.key)
            _valid_body(resource.body)
        if not self._require_open("send a snapshot"):
            return
        messages = [encode_frame(SnapshotBeginFrame(revision, len(resources)))]
        budget = self._list_budget({"t": "si"}, "i")
        batch: list[bytes] = []
        size = 0
        for resource in resources:
            item = encode_resource(resource)
            if len(item) > budget:
                if batch:
                    messages.append(assemble_list_frame({"t": "si"}, "i", batch))
                    batch, size = [], 0
                messages.extend(
                    self._chunk_messages(resource.key, resource.revision, resource.body)
                )
                continue
            if batch and size + len(item) > budget:
                messages.append(assemble_list_frame({"t": "si"}, "i", batch))
                batch, size = [], 0
            batch.append(item)
            size += len(item)
        if batch:
            messages.append(assemble_list_frame({"t": "si"}, "i", batch))
        messages.append(encode_frame(SnapshotEndFrame()))
        self._sent_revision = revision
        self._ackable = max(self._ackable, revision)
        for message in messages:
            self._send_bytes(message)

    def ack_uplink(self, sequences: Iterable[int]) -> None:
        """Acknowledge persisted uplink records (sent as compact ranges).

        ``ValueError`` for a sequence not in flight on this connection; nothing once closed.
        """
        wanted = set(sequences)
        if not self._require_open("acknowledge uplink"):
            return
        missing = wanted - self._in_flight.keys()
        if missing:
            raise ValueError(f"sequences not in flight: {sorted(missing)[:10]}")
        ranges: list[list[int]] = []
        for sequence in sorted(wanted):
            if ranges and ranges[-1][1] == sequence - 1:
                ranges[-1][1] = sequence
            else:
                ranges.append([sequence, sequence])
        for sequence in wanted:
            self._in_flight_bytes -= self._in_flight.pop(sequence)
        per_frame = min(
            MAX_ACK_RANGES_PER_FRAME, (self._send_limit - 16 - _HEAD_MAX) // _RANGE_MAX_BYTES
        )
        for start in range(0, len(ranges), per_frame):
            self._send_bytes(cbor2.dumps({"t": "ua", "a": ranges[start : start + per_frame]}))

    # --- Feature "artifacts" --------------------------------------------------------------

    @property
    def max_artifact_chunk(self) -> int:
        """The most bytes of an artifact one frame to this node can carry."""
        empty = ArtifactDataFrame("0" * 64, MAX_ARTIFACT_SIZE, MAX_ARTIFACT_SIZE, b"")
        return self._send_limit - len(encode_frame(empty)) - _HEAD_MAX

    def send_artifact(self, digest: str, offset: int, size: int, data: bytes) -> None:
        """Answer one fetch: ``data`` (at most ``max_artifact_chunk`` bytes) of the
        ``size``-byte artifact ``digest`` at ``offset``."""
        if len(data) > self.max_artifact_chunk:
            raise ValueError(f"artifact chunk of {len(data)} bytes is over the frame limit")
        if not 0 <= offset <= size or offset + len(data) > size or (not data and offset != size):
            raise ValueError("artifact data must lie within its size (empty only at the end)")
        self._answer_fetch("send an artifact")
        if self._state is State.CLOSED:
            return
        self._send(ArtifactDataFrame(digest, offset, size, data))

    def refuse_artifact(self, digest: str, code: int, message: str) -> None:
        """Answer one fetch with an error (404 unknown, 413 too large, 500 unreadable)."""
        if isinstance(code, bool) or not isinstance(code, int) or not 0 <= code <= MAX_CODE:
            raise ValueError(f"code must be an integer in [0, {MAX_CODE}]")
        self._answer_fetch("refuse an artifact")
        if self._state is State.CLOSED:
            return
        self._send(ArtifactErrorFrame(digest, code, truncate_message(message)))

    def _answer_fetch(self, action: str) -> None:
        self._require_feature("artifacts")
        if self._state is State.OPEN:
            if self._fetches <= 0:
                raise RuntimeError(f"cannot {action}: no fetch is waiting")
            self._fetches -= 1

    # --- Feature "logs" -------------------------------------------------------------------

    def request_log(self, request: int, app: str, tail: int, follow: bool) -> None:
        """Ask the node for App ``app``'s log as request ``request`` (a fresh id)."""
        self._require_feature("logs")
        _check_revision(request, "request")
        if not 0 <= request <= MAX_REQUEST_ID or request in self._log_requests:
            raise ValueError(f"request id {request} is in use or out of range")
        if not isinstance(app, str) or not 1 <= len(app) <= MAX_NODE_NAME_LENGTH:
            raise ValueError("app must be a name")
        if isinstance(tail, bool) or not isinstance(tail, int) or not 0 <= tail <= MAX_LOG_TAIL:
            raise ValueError(f"tail must be in [0, {MAX_LOG_TAIL}]")
        if len(self._log_requests) >= MAX_LOG_REQUESTS:
            raise ValueError(f"at most {MAX_LOG_REQUESTS} log requests at a time")
        if not self._require_open("request a log"):
            return
        self._log_requests.add(request)
        self._send(LogQueryFrame(request, app, tail, bool(follow)))

    def cancel_log(self, request: int) -> None:
        """Stop request ``request`` (its reader went away); nothing if it is over."""
        if request not in self._log_requests or self._state is not State.OPEN:
            return
        self._log_requests.discard(request)
        self._send(LogCancelFrame(request))

    @property
    def log_requests(self) -> frozenset[int]:
        return frozenset(self._log_requests)

    def _require_feature(self, feature: str) -> None:
        if self._state is not State.CONNECTING and feature not in self.features:
            raise RuntimeError(f"the connection does not use the {feature!r} feature")

    # --- Frame handling -------------------------------------------------------------------

    def _handle(self, frame: Frame, size: int, now: float) -> None:
        feature = FEATURE_OF.get(type(frame))
        if feature is not None and (self._state is not State.OPEN or feature not in self.features):
            raise violation(
                ErrorCode.UNEXPECTED_FRAME,
                f"{type(frame).__name__} without the {feature!r} feature",
            )
        match frame:
            case ErrorFrame():
                self._error_received(frame)
            case HelloFrame():
                if self._hello is not None:
                    raise violation(ErrorCode.UNEXPECTED_FRAME, "duplicate hello")
                self._receive_hello(frame)
            case _ if self._hello is None:
                raise violation(ErrorCode.UNEXPECTED_FRAME, f"{type(frame).__name__} before hello")
            case _ if self._state is State.CONNECTING:
                raise violation(
                    ErrorCode.UNEXPECTED_FRAME, f"{type(frame).__name__} before welcome"
                )
            case PingFrame():
                pass
            case AckFrame():
                self._check_ackable(frame.revision)
                self._events.append(RevisionAcked(self._name(), frame.revision))
            case ChangeErrorFrame():
                self._check_ackable(frame.revision)
                self._events.append(
                    ChangeRejected(
                        self._name(), frame.key, frame.revision, frame.code, frame.message
                    )
                )
            case UplinkFrame():
                self._receive_uplink(frame)
            case ArtifactFetchFrame():
                if self._fetches >= MAX_ARTIFACT_REQUESTS:
                    raise violation(
                        ErrorCode.LIMIT_EXCEEDED,
                        f"more than {MAX_ARTIFACT_REQUESTS} artifact fetches at a time",
                    )
                self._fetches += 1
                self._events.append(ArtifactRequested(frame.digest, frame.offset, frame.max_bytes))
            case LogDataFrame():
                if frame.request in self._log_requests:
                    self._events.append(LogReceived(frame.request, frame.data))
            case LogEndFrame():
                if frame.request in self._log_requests:
                    self._log_requests.discard(frame.request)
                    self._events.append(LogEnded(frame.request, frame.code, frame.message))
            case _:
                raise violation(
                    ErrorCode.UNEXPECTED_FRAME, f"{type(frame).__name__} is not sent to hubs"
                )

    def _receive_hello(self, frame: HelloFrame) -> None:
        self._hello = frame
        self._send_limit = min(self._config.max_frame_size, frame.max_frame_size)
        self._sent_revision = frame.last_revision
        self._ackable = frame.last_revision
        # From here the application decides; its answer is not the node's to time out.
        self._handshake_deadline = None
        self._events.append(
            NodeHello(
                frame.node_name,
                frame.software_version,
                frame.last_revision,
                frame.version,
                frame.max_frame_size,
                frame.next_seq,
                frozenset(frame.features),
            )
        )

    def _name(self) -> str:
        assert self._hello is not None  # _handle checks
        return self._hello.node_name

    def _check_ackable(self, revision: int) -> None:
        if revision > self._ackable:
            raise violation(
                ErrorCode.INVALID_SEQUENCE,
                f"revision {revision} acknowledged but only {self._ackable} was sent",
            )

    def _receive_uplink(self, frame: UplinkFrame) -> None:
        config = self._config
        for record in frame.records:
            if record.sequence in self._in_flight:
                raise violation(
                    ErrorCode.INVALID_SEQUENCE, f"sequence {record.sequence} sent twice"
                )
            # Same admission rule as the node: fits the window, or nothing is in flight.
            if self._in_flight and (
                len(self._in_flight) >= config.max_in_flight_records
                or self._in_flight_bytes + len(record.payload) > config.max_in_flight_bytes
            ):
                raise violation(ErrorCode.LIMIT_EXCEEDED, "uplink window exceeded")
            self._in_flight[record.sequence] = len(record.payload)
            self._in_flight_bytes += len(record.payload)
        if frame.records:
            self._events.append(UplinkReceived(self._name(), frame.records))

    # --- Splitting ------------------------------------------------------------------------

    def _list_budget(self, fields: dict[str, object], list_key: str) -> int:
        """Bytes left for list items in a list frame with ``fields`` (ints at their widest)."""
        widest = {key: MAX_REVISION if isinstance(v, int) else v for key, v in fields.items()}
        empty = assemble_list_frame(widest, list_key, [])
        return self._send_limit - len(empty) + 1 - _HEAD_MAX

    def _change_messages(self, changes: Sequence[Change], revision: int) -> list[bytes]:
        budget = self._list_budget({"t": "c", "r": 0}, "ch")
        messages: list[bytes] = []
        batch: list[bytes] = []
        size = 0
        last_revision = self._sent_revision  # what the node is complete up to so far

        def flush(up_to: int) -> None:
            nonlocal batch, size, last_revision
            messages.append(assemble_list_frame({"t": "c", "r": up_to}, "ch", batch))
            batch, size, last_revision = [], 0, up_to

        pending_revision = last_revision
        for change in changes:
            item = encode_change(change)
            if len(item) > budget and isinstance(change, Upsert):
                if batch:
                    flush(pending_revision)
                messages.extend(self._chunk_messages(change.key, change.revision, change.body))
                last_revision = change.revision
                continue
            if batch and size + len(item) > budget:
                flush(pending_revision)
            batch.append(item)
            size += len(item)
            pending_revision = change.revision
        if batch or revision > last_revision or not messages:
            flush(revision)
        return messages

    def _chunk_messages(self, key: str, revision: int, body: Body) -> list[bytes]:
        is_map = not isinstance(body, bytes)
        data = cbor2.dumps(body) if is_map else body
        assert isinstance(data, bytes)
        header = encode_frame(ChunkFrame(key, MAX_REVISION, True, MAX_REVISION, MAX_REVISION, b""))
        piece = self._send_limit - len(header) + 1 - _HEAD_MAX
        return [
            encode_frame(
                ChunkFrame(key, revision, is_map, len(data), offset, data[offset : offset + piece])
            )
            for offset in range(0, len(data), piece)
        ]

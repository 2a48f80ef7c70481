"""The frames of the node↔hub sync protocol: types, CBOR encoding, bounded strict decoding.

A frame is one WebSocket binary message holding one CBOR map with short string keys and a
``t`` field naming its type (see docs/protocol.md for every field). This module knows the
wire format only: it does not know who may send which frame when (that is ``node.py`` and
``hub.py``), and it never does I/O.

Decoding treats its input as hostile. In order: the size is checked against the
receiver's frame limit, an iterative pre-scan walks the CBOR item headers (bounded depth,
declared lengths within the remaining bytes, no tags, no indefinite lengths, no simple
values but false/true/null, exactly one item), only then does cbor2 build Python objects,
and the result is validated field by field (exact key sets, exact types: ``True`` is not
an int here). Every failure raises ``edgenode.errors.ProtocolError`` carrying an
``ErrorCode`` in its ``code`` attribute; nothing else escapes ``decode_frame``.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final, TypeAlias

import cbor2

from edgenode.errors import ProtocolError
from edgenode.protocol.constants import (
    MAX_ACK_RANGES_PER_FRAME,
    MAX_ARTIFACT_SIZE,
    MAX_BODY_DEPTH,
    MAX_CBOR_DEPTH,
    MAX_CODE,
    MAX_FEATURE_LENGTH,
    MAX_FEATURES,
    MAX_HEARTBEAT_INTERVAL,
    MAX_KEY_LENGTH,
    MAX_LOG_TAIL,
    MAX_MAX_FRAME_SIZE,
    MAX_MESSAGE_LENGTH,
    MAX_NODE_NAME_LENGTH,
    MAX_PRIORITY,
    MAX_REQUEST_ID,
    MAX_RETRY_AFTER,
    MAX_REVISION,
    MAX_SEQUENCE,
    MAX_SOFTWARE_VERSION_LENGTH,
    MIN_HEARTBEAT_INTERVAL,
    MIN_MAX_FRAME_SIZE,
    MIN_PRIORITY,
    SUPPORTED_VERSIONS,
    ErrorCode,
)

Body: TypeAlias = bytes | dict[str, Any]
"""A resource body: opaque bytes, or a JSON-like CBOR map (str keys, no bytes, no tags)."""

MAX_WINDOW_RECORDS: Final = 2**31 - 1
MAX_WINDOW_BYTES: Final = 2**63 - 1
MAX_RETRY_AFTER_MS: Final = int(MAX_RETRY_AFTER * 1000)
MIN_HEARTBEAT_MS: Final = int(MIN_HEARTBEAT_INTERVAL * 1000)
MAX_HEARTBEAT_MS: Final = int(MAX_HEARTBEAT_INTERVAL * 1000)
MAX_DEADLINE_MS: Final = MAX_HEARTBEAT_MS * 10
_MIN_CBOR_INT: Final = -(2**64)
_MAX_CBOR_INT: Final = 2**64 - 1


class _CodedProtocolError(ProtocolError):
    """A ``ProtocolError`` that also says which ``ErrorCode`` the peer deserves.

    Private on purpose: callers catch ``ProtocolError`` (the one public class) and may
    read ``code``; the error tree stays defined in ``edgenode.errors``.
    """

    def __init__(self, code: ErrorCode, message: str) -> None:
        super().__init__(message)
        self.code = code


def violation(code: ErrorCode, message: str) -> ProtocolError:
    """A ``ProtocolError`` carrying ``code`` (read back with ``error_code``)."""
    return _CodedProtocolError(code, message)


def error_code(error: ProtocolError) -> ErrorCode:
    """The ``ErrorCode`` of a ``ProtocolError`` raised by this package (else malformed)."""
    if isinstance(error, _CodedProtocolError):
        return error.code
    return ErrorCode.MALFORMED_FRAME


# --- Value types --------------------------------------------------------------------------


@dataclass(frozen=True)
class Upsert:
    """A resource created or changed at ``revision``."""

    key: str
    revision: int
    body: Body


@dataclass(frozen=True)
class Delete:
    """A tombstone: the resource ``key`` was deleted (or untargeted) at ``revision``."""

    key: str
    revision: int


Change: TypeAlias = Upsert | Delete


@dataclass(frozen=True)
class Resource:
    """One resource of a snapshot."""

    key: str
    revision: int
    body: Body


@dataclass(frozen=True)
class UplinkRecord:
    """One outbox record sent to the hub: per-node sequence number, priority 0..9, bytes."""

    sequence: int
    priority: int
    payload: bytes


# --- Frames -------------------------------------------------------------------------------


@dataclass(frozen=True)
class HelloFrame:
    """``h``, node → hub, always the first frame."""

    version: int
    node_name: str
    software_version: str
    last_revision: int
    max_frame_size: int
    next_seq: int | None = None
    """Optional ``ns``: the sequence number the node's outbox gives its next record. It only
    grows while the node's store lives; lower than what the hub has seen means a restored
    backup or a new store, whose numbers the hub must not drop as duplicates."""
    features: tuple[str, ...] = ()
    """``fs`` (version 2 on): the features the node speaks."""


@dataclass(frozen=True)
class WelcomeFrame:
    """``w``, hub → node: accepted; timers, limits and the hub's revision."""

    version: int
    hub_revision: int
    heartbeat_interval_ms: int
    heartbeat_deadline_ms: int
    max_frame_size: int
    window_records: int
    window_bytes: int
    features: tuple[str, ...] = ()
    """``fs`` (version 2 on): the features both ends speak, to be used on this connection."""
    hub_time_ms: int | None = None
    """``ts`` (version 2 on, optional): the hub's wall clock when it welcomed, Unix ms, so
    a node can tell how far off its own clock is (an RTC-less board after a power cut)."""


@dataclass(frozen=True)
class ErrorFrame:
    """``e``, either way: a fatal error; the sender closes right after."""

    code: int
    message: str


@dataclass(frozen=True)
class RetryAfterFrame:
    """``ra``, hub → node: overloaded, come back in ``delay_ms`` at the earliest."""

    delay_ms: int
    message: str


@dataclass(frozen=True)
class ChangesFrame:
    """``c``, hub → node: changes in revision order; the node is complete up to ``revision``."""

    revision: int
    changes: tuple[Change, ...]


@dataclass(frozen=True)
class ChunkFrame:
    """``k``, hub → node: one piece of a body too big for one frame.

    ``is_map`` says the reassembled bytes are a CBOR-encoded map body (else raw bytes).
    """

    key: str
    revision: int
    is_map: bool
    total_size: int
    offset: int
    data: bytes


@dataclass(frozen=True)
class SnapshotBeginFrame:
    """``sb``, hub → node: a snapshot of ``count`` resources at ``revision`` follows."""

    revision: int
    count: int


@dataclass(frozen=True)
class SnapshotItemsFrame:
    """``si``, hub → node: some resources of the snapshot in progress."""

    resources: tuple[Resource, ...]


@dataclass(frozen=True)
class SnapshotEndFrame:
    """``se``, hub → node: the snapshot is complete."""


@dataclass(frozen=True)
class AckFrame:
    """``a``, node → hub: everything up to ``revision`` is persisted."""

    revision: int


@dataclass(frozen=True)
class ChangeErrorFrame:
    """``n``, node → hub: resource ``key`` at ``revision`` could not be applied."""

    key: str
    revision: int
    code: int
    message: str


@dataclass(frozen=True)
class UplinkFrame:
    """``u``, node → hub: outbox records."""

    records: tuple[UplinkRecord, ...]


@dataclass(frozen=True)
class UplinkAckFrame:
    """``ua``, hub → node: these inclusive sequence ranges are persisted by the hub."""

    ranges: tuple[tuple[int, int], ...]


@dataclass(frozen=True)
class PingFrame:
    """``p``, either way: liveness when nothing else was sent for an interval."""


# --- Feature "artifacts": a node fetches the files of its Apps over its link -------------


@dataclass(frozen=True)
class ArtifactFetchFrame:
    """``af``, node → hub: send me up to ``max_bytes`` of artifact ``digest`` from
    ``offset`` (a download resumes where its partial file ends)."""

    digest: str
    offset: int
    max_bytes: int


@dataclass(frozen=True)
class ArtifactDataFrame:
    """``ad``, hub → node: ``data`` of artifact ``digest`` at ``offset``; the whole
    artifact is ``size`` bytes (``data`` is empty only when ``offset`` is ``size``)."""

    digest: str
    offset: int
    size: int
    data: bytes


@dataclass(frozen=True)
class ArtifactErrorFrame:
    """``ax``, hub → node: artifact ``digest`` cannot be sent (``code``: 404 unknown,
    413 over a limit, 500 the hub failed to read it)."""

    digest: str
    code: int
    message: str


# --- Feature "logs": the hub asks a node for an App's log ---------------------------------


@dataclass(frozen=True)
class LogQueryFrame:
    """``lq``, hub → node: request ``request`` for the last ``tail`` lines of ``app``'s
    log (0: all kept), then, with ``follow``, what it writes until cancelled."""

    request: int
    app: str
    tail: int
    follow: bool


@dataclass(frozen=True)
class LogDataFrame:
    """``ld``, node → hub: a piece of request ``request``'s log."""

    request: int
    data: bytes


@dataclass(frozen=True)
class LogEndFrame:
    """``le``, node → hub: request ``request`` is over (``code`` 0: the log ended or the
    request was cancelled; 404: no such App on the node; 500: it could not be read)."""

    request: int
    code: int
    message: str


@dataclass(frozen=True)
class LogCancelFrame:
    """``lc``, hub → node: stop sending request ``request`` (its reader went away)."""

    request: int


Frame: TypeAlias = (
    HelloFrame
    | WelcomeFrame
    | ErrorFrame
    | RetryAfterFrame
    | ChangesFrame
    | ChunkFrame
    | SnapshotBeginFrame
    | SnapshotItemsFrame
    | SnapshotEndFrame
    | AckFrame
    | ChangeErrorFrame
    | UplinkFrame
    | UplinkAckFrame
    | PingFrame
    | ArtifactFetchFrame
    | ArtifactDataFrame
    | ArtifactErrorFrame
    | LogQueryFrame
    | LogDataFrame
    | LogEndFrame
    | LogCancelFrame
)

FRAME_TYPES: Final[dict[type[Any], str]] = {
    HelloFrame: "h",
    WelcomeFrame: "w",
    ErrorFrame: "e",
    RetryAfterFrame: "ra",
    ChangesFrame: "c",
    ChunkFrame: "k",
    SnapshotBeginFrame: "sb",
    SnapshotItemsFrame: "si",
    SnapshotEndFrame: "se",
    AckFrame: "a",
    ChangeErrorFrame: "n",
    UplinkFrame: "u",
    UplinkAckFrame: "ua",
    PingFrame: "p",
    ArtifactFetchFrame: "af",
    ArtifactDataFrame: "ad",
    ArtifactErrorFrame: "ax",
    LogQueryFrame: "lq",
    LogDataFrame: "ld",
    LogEndFrame: "le",
    LogCancelFrame: "lc",
}
"""The ``t`` value of each frame class."""

FEATURE_OF: Final[dict[type[Any], str]] = {
    ArtifactFetchFrame: "artifacts",
    ArtifactDataFrame: "artifacts",
    ArtifactErrorFrame: "artifacts",
    LogQueryFrame: "logs",
    LogDataFrame: "logs",
    LogEndFrame: "logs",
    LogCancelFrame: "logs",
}
"""Frames that belong to a feature: sent and accepted only on a connection whose welcome
listed it."""


# --- Encoding -----------------------------------------------------------------------------


def cbor_head(major: int, length: int) -> bytes:
    """The shortest CBOR item head of ``major`` type with argument ``length``."""
    if length < 24:
        return bytes([major << 5 | length])
    if length < 0x100:
        return bytes([major << 5 | 24, length])
    if length < 0x10000:
        return bytes([major << 5 | 25]) + length.to_bytes(2, "big")
    if length < 0x100000000:
        return bytes([major << 5 | 26]) + length.to_bytes(4, "big")
    return bytes([major << 5 | 27]) + length.to_bytes(8, "big")


_MAJOR_ARRAY: Final = 4
_MAJOR_MAP: Final = 5


def encode_change(change: Change) -> bytes:
    """The CBOR item of one change inside a ``c`` frame."""
    if isinstance(change, Upsert):
        return cbor2.dumps({"o": "u", "k": change.key, "r": change.revision, "b": change.body})
    return cbor2.dumps({"o": "d", "k": change.key, "r": change.revision})


def encode_resource(resource: Resource) -> bytes:
    """The CBOR item of one resource inside an ``si`` frame."""
    return cbor2.dumps({"k": resource.key, "r": resource.revision, "b": resource.body})


def encode_record(record: UplinkRecord) -> bytes:
    """The CBOR item of one record inside a ``u`` frame."""
    return cbor2.dumps({"s": record.sequence, "p": record.priority, "x": record.payload})


def assemble_list_frame(fields: Mapping[str, Any], list_key: str, items: Sequence[bytes]) -> bytes:
    """A frame map whose last field is a list of already-encoded items.

    Byte-identical to ``cbor2.dumps`` of the same map, without encoding the items twice:
    the senders size items one by one to split a batch under the frame limit.
    """
    parts = [cbor_head(_MAJOR_MAP, len(fields) + 1)]
    for key, value in fields.items():
        parts.append(cbor2.dumps(key))
        parts.append(cbor2.dumps(value))
    parts.append(cbor2.dumps(list_key))
    parts.append(cbor_head(_MAJOR_ARRAY, len(items)))
    parts.extend(items)
    return b"".join(parts)


def encode_frame(frame: Frame) -> bytes:
    """The CBOR bytes of ``frame`` (field order fixed, ``t`` first, shortest heads)."""
    match frame:
        case HelloFrame():
            hello: dict[str, Any] = {
                "t": "h",
                "v": frame.version,
                "n": frame.node_name,
                "sw": frame.software_version,
                "r": frame.last_revision,
                "mf": frame.max_frame_size,
            }
            if frame.next_seq is not None:
                hello["ns"] = frame.next_seq
            if frame.version >= 2:
                hello["fs"] = list(frame.features)
            return cbor2.dumps(hello)
        case WelcomeFrame():
            welcome: dict[str, Any] = {
                "t": "w",
                "v": frame.version,
                "r": frame.hub_revision,
                "hb": frame.heartbeat_interval_ms,
                "hd": frame.heartbeat_deadline_ms,
                "mf": frame.max_frame_size,
                "uw": frame.window_records,
                "ub": frame.window_bytes,
            }
            if frame.version >= 2:
                welcome["fs"] = list(frame.features)
                if frame.hub_time_ms is not None:
                    welcome["ts"] = frame.hub_time_ms
            return cbor2.dumps(welcome)
        case ErrorFrame():
            return cbor2.dumps({"t": "e", "c": frame.code, "m": frame.message})
        case RetryAfterFrame():
            return cbor2.dumps({"t": "ra", "d": frame.delay_ms, "m": frame.message})
        case ChangesFrame():
            return assemble_list_frame(
                {"t": "c", "r": frame.revision}, "ch", [encode_change(c) for c in frame.changes]
            )
        case ChunkFrame():
            return cbor2.dumps(
                {
                    "t": "k",
                    "k": frame.key,
                    "r": frame.revision,
                    "f": 1 if frame.is_map else 0,
                    "s": frame.total_size,
                    "o": frame.offset,
                    "x": frame.data,
                }
            )
        case SnapshotBeginFrame():
            return cbor2.dumps({"t": "sb", "r": frame.revision, "n": frame.count})
        case SnapshotItemsFrame():
            return assemble_list_frame(
                {"t": "si"}, "i", [encode_resource(r) for r in frame.resources]
            )
        case SnapshotEndFrame():
            return cbor2.dumps({"t": "se"})
        case AckFrame():
            return cbor2.dumps({"t": "a", "r": frame.revision})
        case ChangeErrorFrame():
            return cbor2.dumps(
                {"t": "n", "k": frame.key, "r": frame.revision, "c": frame.code, "m": frame.message}
            )
        case UplinkFrame():
            return assemble_list_frame({"t": "u"}, "rs", [encode_record(r) for r in frame.records])
        case UplinkAckFrame():
            return cbor2.dumps({"t": "ua", "a": [[lo, hi] for lo, hi in frame.ranges]})
        case PingFrame():
            return cbor2.dumps({"t": "p"})
        case ArtifactFetchFrame():
            return cbor2.dumps(
                {"t": "af", "d": frame.digest, "o": frame.offset, "n": frame.max_bytes}
            )
        case ArtifactDataFrame():
            return cbor2.dumps(
                {"t": "ad", "d": frame.digest, "o": frame.offset, "s": frame.size, "x": frame.data}
            )
        case ArtifactErrorFrame():
            return cbor2.dumps({"t": "ax", "d": frame.digest, "c": frame.code, "m": frame.message})
        case LogQueryFrame():
            return cbor2.dumps(
                {"t": "lq", "i": frame.request, "a": frame.app, "n": frame.tail, "f": frame.follow}
            )
        case LogDataFrame():
            return cbor2.dumps({"t": "ld", "i": frame.request, "x": frame.data})
        case LogEndFrame():
            return cbor2.dumps({"t": "le", "i": frame.request, "c": frame.code, "m": frame.message})
        case LogCancelFrame():
            return cbor2.dumps({"t": "lc", "i": frame.request})
    raise TypeError(f"not a frame: {type(frame).__name__}")


# --- Bounded pre-scan of CBOR -------------------------------------------------------------

_ARG_BYTES: Final = {24: 1, 25: 2, 26: 4, 27: 8}
_SIMPLE_FALSE_TRUE_NULL: Final = frozenset({20, 21, 22})
_FLOAT_INFO: Final = frozenset({25, 26, 27})


def check_cbor_structure(data: bytes, max_depth: int) -> int:
    """Walk the item heads of ``data`` without building objects; raise on anything hostile.

    Iterative (no recursion), O(number of items), and every declared length is checked
    against the bytes that remain, so a header claiming 2**64 elements costs nothing.
    Returns the number of key/value pairs its maps declare (see ``decode_cbor``).
    """
    end = len(data)
    pos = 0
    map_pairs = 0
    remaining = [1]  # items still expected at each open nesting level
    while remaining:
        if remaining[-1] == 0:
            remaining.pop()
            continue
        remaining[-1] -= 1
        if pos >= end:
            raise violation(ErrorCode.MALFORMED_FRAME, "truncated CBOR")
        initial = data[pos]
        pos += 1
        major = initial >> 5
        info = initial & 0x1F
        if info < 24:
            argument = info
        elif info in _ARG_BYTES:
            width = _ARG_BYTES[info]
            if pos + width > end:
                raise violation(ErrorCode.MALFORMED_FRAME, "truncated CBOR")
            argument = int.from_bytes(data[pos : pos + width], "big")
            pos += width
        else:
            raise violation(ErrorCode.MALFORMED_FRAME, "indefinite-length or reserved CBOR item")
        if major in (2, 3):
            if argument > end - pos:
                raise violation(ErrorCode.MALFORMED_FRAME, "CBOR string longer than the frame")
            pos += argument
        elif major in (4, 5):
            count = argument if major == 4 else argument * 2
            map_pairs += argument if major == 5 else 0
            if count > end - pos:
                raise violation(ErrorCode.MALFORMED_FRAME, "CBOR container longer than the frame")
            remaining.append(count)
            if len(remaining) - 1 > max_depth:
                raise violation(ErrorCode.MALFORMED_FRAME, f"CBOR nested deeper than {max_depth}")
        elif major == 6:
            raise violation(ErrorCode.MALFORMED_FRAME, "CBOR tags are not allowed")
        elif major == 7 and not (
            (info < 24 and info in _SIMPLE_FALSE_TRUE_NULL) or info in _FLOAT_INFO
        ):
            raise violation(ErrorCode.MALFORMED_FRAME, "CBOR simple value not allowed")
    if pos != end:
        raise violation(ErrorCode.MALFORMED_FRAME, "trailing bytes after the CBOR item")
    return map_pairs


def _cbor2_has_strict_options() -> bool:
    """Does this cbor2 take ``allow_indefinite``/``allow_duplicate_keys``?

    cbor2's compiled builds do; its pure-Python wheel (the one pip installs where PyPI has
    no compiled cbor2 wheel, e.g. armv7l) does not, and rejects them with TypeError.
    """
    try:
        cbor2.loads(b"\xa0", allow_indefinite=False, allow_duplicate_keys=False)
    except TypeError:
        return False
    return True


_CBOR2_STRICT_OPTIONS: Final = _cbor2_has_strict_options()


def decoded_map_pairs(value: Any) -> int:
    """Key/value pairs in all maps of a decoded CBOR item (keys included), iteratively."""
    pairs = 0
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, Mapping):
            pairs += len(item)
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, list | tuple):
            stack.extend(item)
    return pairs


def decode_cbor(data: bytes, max_depth: int) -> Any:
    """Bounded decoding of one CBOR item (see ``check_cbor_structure``)."""
    declared_pairs = check_cbor_structure(data, max_depth)
    try:
        if _CBOR2_STRICT_OPTIONS:
            return cbor2.loads(
                data,
                max_depth=max_depth + 1,
                allow_indefinite=False,
                allow_duplicate_keys=False,
            )
        value = cbor2.loads(data, max_depth=max_depth + 1)
    except Exception as exc:  # cbor2 has many error types (bad UTF-8, duplicate keys, ...)
        raise violation(ErrorCode.MALFORMED_FRAME, f"invalid CBOR: {exc}") from None
    # Pure-Python cbor2: the pre-scan refused indefinite lengths; a duplicate key shows as
    # a map with fewer pairs than its header declared.
    if decoded_map_pairs(value) != declared_pairs:
        raise violation(ErrorCode.MALFORMED_FRAME, "invalid CBOR: duplicate map key")
    return value


# --- Field validation ---------------------------------------------------------------------


def _fail(message: str) -> ProtocolError:
    return violation(ErrorCode.MALFORMED_FRAME, message)


HELLO_OPTIONAL: Final = frozenset({"ns"})
"""Hello fields added after version 1 shipped: a hub reads them when present."""
HELLO_KEYS: Final = {
    1: frozenset({"t", "v", "n", "sw", "r", "mf"}),
    2: frozenset({"t", "v", "n", "sw", "r", "mf", "fs"}),
}
WELCOME_KEYS: Final = {
    1: frozenset({"t", "v", "r", "hb", "hd", "mf", "uw", "ub"}),
    2: frozenset({"t", "v", "r", "hb", "hd", "mf", "uw", "ub", "fs"}),
}
WELCOME_OPTIONAL: Final = {1: frozenset[str](), 2: frozenset({"ts"})}
MAX_TIME_MS: Final = 2**53
"""Wall-clock times on the wire are Unix milliseconds (exact in a float64)."""


def _features(obj: Mapping[Any, Any], kind: str) -> tuple[str, ...]:
    """A list of feature names; unknown names are kept (a newer peer may speak more)."""
    items = _list(obj, "fs", kind)
    if len(items) > MAX_FEATURES:
        raise violation(ErrorCode.LIMIT_EXCEEDED, f"{kind}.fs lists more than {MAX_FEATURES}")
    for item in items:
        if type(item) is not str or not 0 < len(item) <= MAX_FEATURE_LENGTH:
            raise _fail(f"{kind}.fs items must be strings of 1..{MAX_FEATURE_LENGTH} characters")
    return tuple(items)


def _check_keys(
    obj: Mapping[Any, Any],
    kind: str,
    keys: frozenset[str],
    optional: frozenset[str] = frozenset(),
) -> None:
    present = obj.keys() - optional
    if present != keys:
        extra = sorted(str(k) for k in present - keys)
        missing = sorted(keys - present)
        raise _fail(f"{kind}: missing fields {missing}, unknown fields {extra}")


def _int(obj: Mapping[Any, Any], key: str, kind: str, low: int, high: int) -> int:
    value = obj[key]
    if type(value) is not int or not low <= value <= high:
        raise _fail(f"{kind}.{key} must be an integer in [{low}, {high}]")
    return value


def _str(obj: Mapping[Any, Any], key: str, kind: str, max_length: int, *, empty: bool) -> str:
    value = obj[key]
    if type(value) is not str or len(value) > max_length or (not empty and not value):
        need = "a string" if empty else "a non-empty string"
        raise _fail(f"{kind}.{key} must be {need} of at most {max_length} characters")
    return value


def _bytes(obj: Mapping[Any, Any], key: str, kind: str) -> bytes:
    value = obj[key]
    if type(value) is not bytes:
        raise _fail(f"{kind}.{key} must be a byte string")
    return value


def _list(obj: Mapping[Any, Any], key: str, kind: str) -> list[Any]:
    value = obj[key]
    if type(value) is not list:
        raise _fail(f"{kind}.{key} must be an array")
    return value


def _map(value: Any, kind: str) -> dict[Any, Any]:
    if type(value) is not dict:
        raise _fail(f"{kind} must be a map")
    return value


def check_body(body: Any, what: str = "body") -> Body:
    """Return ``body`` if it is bytes or a JSON-like map within ``MAX_BODY_DEPTH``; else raise.

    JSON-like: str keys; values None, bool, int, float, str, list or such a map.
    """
    if type(body) is bytes:
        return body
    if type(body) is not dict:
        raise _fail(f"{what} must be a byte string or a map")
    stack: list[tuple[Any, int]] = [(body, 1)]
    while stack:
        value, depth = stack.pop()
        if depth > MAX_BODY_DEPTH:
            raise _fail(f"{what} nested deeper than {MAX_BODY_DEPTH}")
        if type(value) is dict:
            for key, item in value.items():
                if type(key) is not str:
                    raise _fail(f"{what} map keys must be strings")
                stack.append((item, depth + 1))
        elif type(value) is list:
            stack.extend((item, depth + 1) for item in value)
        elif type(value) is int and not _MIN_CBOR_INT <= value <= _MAX_CBOR_INT:
            # Bigger integers would need CBOR bignum tags, which receivers refuse.
            raise _fail(f"{what} holds an integer outside the 64-bit CBOR range")
        elif value is not None and type(value) not in (bool, int, float, str):
            raise _fail(f"{what} holds a {type(value).__name__}, not a JSON-like value")
    return body


_CHANGE_UPSERT_KEYS: Final = frozenset({"o", "k", "r", "b"})
_CHANGE_DELETE_KEYS: Final = frozenset({"o", "k", "r"})
_RESOURCE_KEYS: Final = frozenset({"k", "r", "b"})
_RECORD_KEYS: Final = frozenset({"s", "p", "x"})


def _change_from(value: Any) -> Change:
    item = _map(value, "change")
    operation = item.get("o")
    if operation == "u":
        _check_keys(item, "change", _CHANGE_UPSERT_KEYS)
        return Upsert(
            _str(item, "k", "change", MAX_KEY_LENGTH, empty=False),
            _int(item, "r", "change", 0, MAX_REVISION),
            check_body(item["b"], "change.b"),
        )
    if operation == "d":
        _check_keys(item, "change", _CHANGE_DELETE_KEYS)
        return Delete(
            _str(item, "k", "change", MAX_KEY_LENGTH, empty=False),
            _int(item, "r", "change", 0, MAX_REVISION),
        )
    raise _fail('change.o must be "u" or "d"')


def _resource_from(value: Any) -> Resource:
    item = _map(value, "resource")
    _check_keys(item, "resource", _RESOURCE_KEYS)
    return Resource(
        _str(item, "k", "resource", MAX_KEY_LENGTH, empty=False),
        _int(item, "r", "resource", 0, MAX_REVISION),
        check_body(item["b"], "resource.b"),
    )


def _record_from(value: Any) -> UplinkRecord:
    item = _map(value, "record")
    _check_keys(item, "record", _RECORD_KEYS)
    return UplinkRecord(
        _int(item, "s", "record", 0, MAX_SEQUENCE),
        _int(item, "p", "record", MIN_PRIORITY, MAX_PRIORITY),
        _bytes(item, "x", "record"),
    )


def _range_from(value: Any) -> tuple[int, int]:
    if (
        type(value) is not list
        or len(value) != 2
        or type(value[0]) is not int
        or type(value[1]) is not int
        or not 0 <= value[0] <= value[1] <= MAX_SEQUENCE
    ):
        raise _fail("ua.a items must be [low, high] with 0 <= low <= high")
    return value[0], value[1]


def check_digest(value: object) -> str:
    """``value`` if it is a SHA-256 digest (64 lowercase hex digits), else ValueError."""
    if type(value) is not str or len(value) != 64 or value.strip("0123456789abcdef"):
        raise ValueError("must be a SHA-256 digest (64 lowercase hex digits)")
    return value


def _digest(obj: Mapping[Any, Any], kind: str) -> str:
    try:
        return check_digest(obj["d"])
    except ValueError as exc:
        raise _fail(f"{kind}.d {exc}") from None


def _hello_from(obj: dict[Any, Any]) -> HelloFrame:
    # The version is checked before the other fields: a hello of a future version may
    # carry fields this code does not know, and deserves "unsupported version", not
    # "malformed".
    if "v" not in obj or type(obj["v"]) is not int:
        raise _fail("h.v must be an integer")
    if obj["v"] not in SUPPORTED_VERSIONS:
        raise violation(
            ErrorCode.UNSUPPORTED_VERSION,
            f"protocol version {obj['v']} is not supported (supported: "
            f"{sorted(SUPPORTED_VERSIONS)})",
        )
    version = obj["v"]
    _check_keys(obj, "h", HELLO_KEYS[version], optional=HELLO_OPTIONAL)
    return HelloFrame(
        version,
        _str(obj, "n", "h", MAX_NODE_NAME_LENGTH, empty=False),
        _str(obj, "sw", "h", MAX_SOFTWARE_VERSION_LENGTH, empty=True),
        _int(obj, "r", "h", 0, MAX_REVISION),
        _int(obj, "mf", "h", MIN_MAX_FRAME_SIZE, MAX_MAX_FRAME_SIZE),
        _int(obj, "ns", "h", 1, MAX_SEQUENCE) if "ns" in obj else None,
        _features(obj, "h") if version >= 2 else (),
    )


def _welcome_from(obj: dict[Any, Any]) -> WelcomeFrame:
    if "v" not in obj or type(obj["v"]) is not int:
        raise _fail("w.v must be an integer")
    version = obj["v"]
    if version not in SUPPORTED_VERSIONS:
        raise violation(
            ErrorCode.UNSUPPORTED_VERSION,
            f"hub answered protocol version {version} (this node speaks "
            f"{sorted(SUPPORTED_VERSIONS)})",
        )
    _check_keys(obj, "w", WELCOME_KEYS[version], optional=WELCOME_OPTIONAL[version])
    interval = _int(obj, "hb", "w", MIN_HEARTBEAT_MS, MAX_HEARTBEAT_MS)
    deadline = _int(obj, "hd", "w", interval + 1, MAX_DEADLINE_MS)
    return WelcomeFrame(
        version,
        _int(obj, "r", "w", 0, MAX_REVISION),
        interval,
        deadline,
        _int(obj, "mf", "w", MIN_MAX_FRAME_SIZE, MAX_MAX_FRAME_SIZE),
        _int(obj, "uw", "w", 1, MAX_WINDOW_RECORDS),
        _int(obj, "ub", "w", 1, MAX_WINDOW_BYTES),
        _features(obj, "w") if version >= 2 else (),
        _int(obj, "ts", "w", 0, MAX_TIME_MS) if "ts" in obj else None,
    )


def _chunk_from(obj: dict[Any, Any]) -> ChunkFrame:
    _check_keys(obj, "k", frozenset({"t", "k", "r", "f", "s", "o", "x"}))
    total = _int(obj, "s", "k", 1, MAX_REVISION)
    offset = _int(obj, "o", "k", 0, total - 1)
    data = _bytes(obj, "x", "k")
    if not data or offset + len(data) > total:
        raise _fail("k.x must be non-empty and end within the declared size k.s")
    return ChunkFrame(
        _str(obj, "k", "k", MAX_KEY_LENGTH, empty=False),
        _int(obj, "r", "k", 0, MAX_REVISION),
        _int(obj, "f", "k", 0, 1) == 1,
        total,
        offset,
        data,
    )


def _ack_ranges_from(obj: dict[Any, Any]) -> UplinkAckFrame:
    _check_keys(obj, "ua", frozenset({"t", "a"}))
    items = _list(obj, "a", "ua")
    if len(items) > MAX_ACK_RANGES_PER_FRAME:
        raise violation(
            ErrorCode.LIMIT_EXCEEDED, f"more than {MAX_ACK_RANGES_PER_FRAME} ranges in one ack"
        )
    ranges = tuple(_range_from(item) for item in items)
    for previous, current in itertools.pairwise(ranges):
        if current[0] <= previous[1]:
            raise _fail("ua.a ranges must be sorted and must not overlap")
    return UplinkAckFrame(ranges)


def frame_from_object(obj: Any) -> Frame:
    """Validate a decoded CBOR value as a frame; raise ``ProtocolError`` if it is not one."""
    obj = _map(obj, "a frame")
    kind = obj.get("t")
    if type(kind) is not str:
        raise _fail("frame.t must be a string")
    match kind:
        case "h":
            return _hello_from(obj)
        case "w":
            return _welcome_from(obj)
        case "e":
            _check_keys(obj, "e", frozenset({"t", "c", "m"}))
            return ErrorFrame(
                _int(obj, "c", "e", 0, MAX_CODE),
                _str(obj, "m", "e", MAX_MESSAGE_LENGTH, empty=True),
            )
        case "ra":
            _check_keys(obj, "ra", frozenset({"t", "d", "m"}))
            return RetryAfterFrame(
                _int(obj, "d", "ra", 0, MAX_RETRY_AFTER_MS),
                _str(obj, "m", "ra", MAX_MESSAGE_LENGTH, empty=True),
            )
        case "c":
            _check_keys(obj, "c", frozenset({"t", "r", "ch"}))
            return ChangesFrame(
                _int(obj, "r", "c", 0, MAX_REVISION),
                tuple(_change_from(item) for item in _list(obj, "ch", "c")),
            )
        case "k":
            return _chunk_from(obj)
        case "sb":
            _check_keys(obj, "sb", frozenset({"t", "r", "n"}))
            return SnapshotBeginFrame(
                _int(obj, "r", "sb", 0, MAX_REVISION), _int(obj, "n", "sb", 0, MAX_REVISION)
            )
        case "si":
            _check_keys(obj, "si", frozenset({"t", "i"}))
            return SnapshotItemsFrame(tuple(_resource_from(i) for i in _list(obj, "i", "si")))
        case "se":
            _check_keys(obj, "se", frozenset({"t"}))
            return SnapshotEndFrame()
        case "a":
            _check_keys(obj, "a", frozenset({"t", "r"}))
            return AckFrame(_int(obj, "r", "a", 0, MAX_REVISION))
        case "n":
            _check_keys(obj, "n", frozenset({"t", "k", "r", "c", "m"}))
            return ChangeErrorFrame(
                _str(obj, "k", "n", MAX_KEY_LENGTH, empty=False),
                _int(obj, "r", "n", 0, MAX_REVISION),
                _int(obj, "c", "n", 0, MAX_CODE),
                _str(obj, "m", "n", MAX_MESSAGE_LENGTH, empty=True),
            )
        case "u":
            _check_keys(obj, "u", frozenset({"t", "rs"}))
            return UplinkFrame(tuple(_record_from(item) for item in _list(obj, "rs", "u")))
        case "ua":
            return _ack_ranges_from(obj)
        case "p":
            _check_keys(obj, "p", frozenset({"t"}))
            return PingFrame()
        case "af":
            _check_keys(obj, "af", frozenset({"t", "d", "o", "n"}))
            return ArtifactFetchFrame(
                _digest(obj, "af"),
                _int(obj, "o", "af", 0, MAX_ARTIFACT_SIZE),
                _int(obj, "n", "af", 1, MAX_MAX_FRAME_SIZE),
            )
        case "ad":
            _check_keys(obj, "ad", frozenset({"t", "d", "o", "s", "x"}))
            size = _int(obj, "s", "ad", 0, MAX_ARTIFACT_SIZE)
            offset = _int(obj, "o", "ad", 0, size)
            data = _bytes(obj, "x", "ad")
            if offset + len(data) > size or (not data and offset != size):
                raise _fail("ad.x must be non-empty and end within ad.s (empty only at the end)")
            return ArtifactDataFrame(_digest(obj, "ad"), offset, size, data)
        case "ax":
            _check_keys(obj, "ax", frozenset({"t", "d", "c", "m"}))
            return ArtifactErrorFrame(
                _digest(obj, "ax"),
                _int(obj, "c", "ax", 0, MAX_CODE),
                _str(obj, "m", "ax", MAX_MESSAGE_LENGTH, empty=True),
            )
        case "lq":
            _check_keys(obj, "lq", frozenset({"t", "i", "a", "n", "f"}))
            follow = obj["f"]
            if type(follow) is not bool:
                raise _fail("lq.f must be a boolean")
            return LogQueryFrame(
                _int(obj, "i", "lq", 0, MAX_REQUEST_ID),
                _str(obj, "a", "lq", MAX_NODE_NAME_LENGTH, empty=False),
                _int(obj, "n", "lq", 0, MAX_LOG_TAIL),
                follow,
            )
        case "ld":
            _check_keys(obj, "ld", frozenset({"t", "i", "x"}))
            return LogDataFrame(_int(obj, "i", "ld", 0, MAX_REQUEST_ID), _bytes(obj, "x", "ld"))
        case "le":
            _check_keys(obj, "le", frozenset({"t", "i", "c", "m"}))
            return LogEndFrame(
                _int(obj, "i", "le", 0, MAX_REQUEST_ID),
                _int(obj, "c", "le", 0, MAX_CODE),
                _str(obj, "m", "le", MAX_MESSAGE_LENGTH, empty=True),
            )
        case "lc":
            _check_keys(obj, "lc", frozenset({"t", "i"}))
            return LogCancelFrame(_int(obj, "i", "lc", 0, MAX_REQUEST_ID))
    raise violation(ErrorCode.UNKNOWN_FRAME_TYPE, f"unknown frame type {kind[:32]!r}")


def decode_frame(data: bytes, max_size: int) -> Frame:
    """Decode one message into a frame, treating it as hostile.

    Raises ``ProtocolError`` (with ``code``: ``FRAME_TOO_BIG``, ``MALFORMED_FRAME``,
    ``UNKNOWN_FRAME_TYPE``, ``UNSUPPORTED_VERSION`` or ``LIMIT_EXCEEDED``) and nothing else.
    """
    if len(data) > max_size:
        raise violation(
            ErrorCode.FRAME_TOO_BIG, f"frame of {len(data)} bytes exceeds the limit of {max_size}"
        )
    return frame_from_object(decode_cbor(data, MAX_CBOR_DEPTH))

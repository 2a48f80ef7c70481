"""The uplink record envelope: the one definition, for the node (which writes records) and
the hub (which reads them). See docs/node.md, "Uplink format".

A record is one compact JSON object, UTF-8::

    {"v": 1, "kind": "status", "node": "ship-7", "ts": 1790000000.25, "body": {...}}

``kind`` says what the body is (``status``, ``twin``, ``device-state``, ``telemetry``,
``config-status``, ...; the hub's kind registry says which resource kind takes which).
``ts`` is the node's wall clock when the record was made: informative only (the node's
clock may be wrong after a power-off); order and identity come from the outbox sequence
number. ``node`` is informative too: the link decides who wrote a record.

The hub also reads a bare map (CBOR or JSON) with ``kind`` and the fields at the top
level (:func:`read_record`), what simple clients and older tools send.

As the hub reads it, a record has ONE time, ``timestamp``, in ISO 8601 (UTC, milliseconds:
``2026-11-27T05:51:03.250Z``): the body's own ``timestamp`` (when the event happened on the
node: a report, a telemetry message) or else the envelope's ``ts`` (when the record was
made), the same for every record kind.
"""

from __future__ import annotations

import json
import math
import re
import time
from typing import Any, Final

import cbor2

UPLINK_FORMAT_VERSION: Final = 1
MAX_UPLINK_PAYLOAD: Final = 256 * 1024
"""Largest uplink payload accepted into the outbox, far below any frame limit a hub may
negotiate (4 KiB is the protocol's minimum, so records larger than the negotiated limit
are dropped and counted at send time instead of wedging the outbox)."""
KIND_PATTERN: Final = re.compile(r"^[a-z][a-z0-9-]{0,31}$")
MAX_NODE_NAME_CHARS: Final = 253
ENVELOPE_OVERHEAD: Final = 64 + 32 + 4 * MAX_NODE_NAME_CHARS
"""Bytes the envelope adds to a body at most (fields, a 32-character kind, a timestamp, a
node name of 253 characters of up to 4 UTF-8 bytes each)."""
MAX_BODY_BYTES: Final = MAX_UPLINK_PAYLOAD - ENVELOPE_OVERHEAD
"""A body up to this size always fits in a record, whatever the node's name."""
MAX_RECORD_DEPTH: Final = 64
"""Nesting a record read by the hub may have (a deeper one is refused, not parsed)."""
MAX_TIMESTAMP: Final = 253402300799.0
"""9999-12-31T23:59:59Z: the largest time ISO 8601's four-digit years can show."""


def iso_timestamp(seconds: float) -> str:
    """A Unix time as records show it: ISO 8601, UTC, milliseconds."""
    whole = math.floor(seconds)
    millis = min(999, round((seconds - whole) * 1000))
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(whole)) + f".{millis:03d}Z"


def _seconds(value: Any) -> float | None:
    """``value`` as a Unix time a record can show, or None (not a number, out of range)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if 0 <= value <= MAX_TIMESTAMP else None


def encode_uplink(kind: str, body: Any, node: str, ts: float | None = None) -> bytes:
    """The payload bytes of one record; ValueError for a bad kind, body or size."""
    if not KIND_PATTERN.fullmatch(kind):
        raise ValueError(f"uplink kind must match {KIND_PATTERN.pattern}, got {kind!r}")
    record = {
        "v": UPLINK_FORMAT_VERSION,
        "kind": kind,
        "node": node,
        "ts": round(time.time() if ts is None else ts, 3),
        "body": body,
    }
    try:
        # ensure_ascii=False: non-ASCII text (telemetry) stays UTF-8 instead of growing
        # up to sixfold as \uXXXX escapes.
        payload = json.dumps(
            record, separators=(",", ":"), allow_nan=False, ensure_ascii=False
        ).encode()
    except (TypeError, ValueError) as exc:
        raise ValueError(f"uplink body is not JSON: {exc}") from None
    if len(payload) > MAX_UPLINK_PAYLOAD:
        raise ValueError(f"uplink record of {len(payload)} bytes exceeds {MAX_UPLINK_PAYLOAD}")
    return payload


def envelope_head(kind: str, node: str, ts: float | None = None) -> bytes:
    """A record's bytes up to its body: ``head + body + b"}"`` is :func:`encode_uplink_raw`
    of that body (before its size check). ValueError for a bad kind."""
    # The record of an empty body ends with '"body":{}}': cut the empty object off.
    return encode_uplink(kind, {}, node, ts)[: -len(b"{}}")]


def encode_uplink_raw(kind: str, body: bytes, node: str, ts: float | None = None) -> bytes:
    """:func:`encode_uplink` of a body that is already compact JSON (``ensure_ascii=False``
    bytes, e.g. a twin record made by the DeviceTwin): the same bytes, without parsing it."""
    payload = envelope_head(kind, node, ts) + body + b"}"
    if len(payload) > MAX_UPLINK_PAYLOAD:
        raise ValueError(f"uplink record of {len(payload)} bytes exceeds {MAX_UPLINK_PAYLOAD}")
    return payload


def decode_uplink(payload: bytes) -> dict[str, Any]:
    """The envelope as a dict (ValueError if it is not one of ours)."""
    record = json.loads(payload)
    if not isinstance(record, dict) or "kind" not in record or "body" not in record:
        raise ValueError("not an edgenode uplink record")
    return record


def _too_deep(payload: bytes, limit: int) -> bool:
    """Does JSON text nest deeper than ``limit``? (a cheap bracket count; strings may
    contain brackets, which only makes this stricter, never looser, on hostile input)."""
    depth = 0
    for byte in payload:
        if byte in b"[{":
            depth += 1
            if depth > limit:
                return True
        elif byte in b"]}":
            depth -= 1
    return False


def read_record(payload: bytes) -> dict[str, Any] | None:
    """An uplink record as the hub reads it: a flat map with a ``kind``, or None.

    Accepted: the envelope above (the body's fields are lifted to the top level, with
    ``kind`` and ``ts``), or a bare CBOR/JSON map with ``kind`` and its fields at the top
    level. Anything else, including maps nesting deeper than ``MAX_RECORD_DEPTH`` or not
    representable as JSON, is None.
    """
    value: Any
    try:
        # A JSON object starts with "{" (CBOR would read that byte as a short text string).
        if payload[:1] == b"{":
            if _too_deep(payload, MAX_RECORD_DEPTH):
                return None
            value = json.loads(payload)
        else:
            value = cbor2.loads(payload, max_depth=MAX_RECORD_DEPTH)
    except Exception:
        return None
    if not isinstance(value, dict) or not isinstance(value.get("kind"), str):
        return None
    body = value.get("body")
    if isinstance(body, dict):
        value = {**body, "kind": value["kind"], "ts": value.get("ts")}
    # One time field, "timestamp", in ISO 8601: the event's own time, else the record's.
    envelope_time = value.pop("ts", None)
    when = _seconds(value.get("timestamp"))
    if when is None and "timestamp" not in value:
        when = _seconds(envelope_time)
    if when is not None:
        value["timestamp"] = iso_timestamp(when)
    try:
        json.dumps(value)
    except (TypeError, ValueError, RecursionError):
        return None
    record: dict[str, Any] = value
    return record

"""The payload of an uplink record: one compact JSON object, UTF-8 (see docs/node.md).

``{"v": 1, "kind": "status", "node": "ship-7", "ts": 1790000000.25, "body": {...}}``

``kind`` says what the body is: ``status`` (node status, this package), and later
``twin``, ``telemetry``, ``device-state`` (the device layer). ``ts`` is the node's wall
clock when the record was made: informative only (the node's clock may be wrong after a
power-off); order and identity come from the outbox sequence number.
"""

from __future__ import annotations

import json
import re
import time
from typing import Any, Final

UPLINK_FORMAT_VERSION: Final = 1
MAX_UPLINK_PAYLOAD: Final = 256 * 1024
"""Largest uplink payload accepted into the outbox, far below any frame limit a hub may
negotiate (4 KiB is the protocol's minimum, so records larger than the negotiated limit
are dropped and counted at send time instead of wedging the outbox)."""
KIND_PATTERN: Final = re.compile(r"^[a-z][a-z0-9-]{0,31}$")


def encode_uplink(kind: str, body: Any, node: str, ts: float | None = None) -> bytes:
    """The payload bytes of one record; ValueError for a bad kind, body or size."""
    if not KIND_PATTERN.match(kind):
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


def encode_uplink_raw(kind: str, body: bytes, node: str, ts: float | None = None) -> bytes:
    """:func:`encode_uplink` of a body that is already compact JSON (``ensure_ascii=False``
    bytes, e.g. a twin record made by the DeviceTwin): the same bytes, without parsing it."""
    head = encode_uplink(kind, {}, node, ts)
    # head ends with '"body":{}}': put the body in place of the empty object.
    payload = head[: -len(b"{}}")] + body + b"}"
    if len(payload) > MAX_UPLINK_PAYLOAD:
        raise ValueError(f"uplink record of {len(payload)} bytes exceeds {MAX_UPLINK_PAYLOAD}")
    return payload


def decode_uplink(payload: bytes) -> dict[str, Any]:
    """The record as a dict (ValueError if it is not one of ours)."""
    record = json.loads(payload)
    if not isinstance(record, dict) or "kind" not in record or "body" not in record:
        raise ValueError("not an edgenode uplink record")
    return record

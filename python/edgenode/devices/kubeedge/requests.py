"""Reading KubeEdge requests: payload bytes in, a checked request or a refusal out.

Payloads are read as edgenode reads its own (``edgenode._pure.devtwin.read_payload``:
UTF-8, JSON as Python's ``json`` reads it without NaN, at most 4 MiB, nesting at most 64
levels, no lone surrogates, an object at the top), then checked in edgecore's order:
first the field types, with the strictness of Go's ``encoding/json`` on edgecore's structs
(a field of the wrong JSON type is refused, unknown fields are ignored, ``null`` is the
same as absent), then the meaning (a twin map, valid keys); type names are checked with
the values once the device is known (``api.plan_update``). Refusals carry KubeEdge's code
and reason (``dttype.ErrorUnmarshal``, ``ErrorUpdate``, ``ErrorKey``...), a type error
followed by what exactly was wrong, and the request's ``event_id`` whenever it can be
read, even from a payload that is not JSON.

Nothing here raises on bad input; no I/O, no clock.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

from edgenode._pure.devtwin import json_type, read_payload
from edgenode.devices.kubeedge import values

BAD_REQUEST: Final = 400
NOT_FOUND: Final = 404
INTERNAL_ERROR: Final = 500
"""KubeEdge's result codes (dtcommon.BadRequestCode, NotFoundCode, InternalErrorCode)."""

MAX_EVENT_ID_CHARS: Final = 128
"""Longest event_id a request may carry (edgecore's are 36-character UUIDs)."""
MAX_PROPERTIES: Final = 1024
"""Most properties one twin/update may name (edgecore has no bound)."""
MAX_SHOWN_CHARS: Final = 32
"""How much of a bad value a reason quotes."""

# KubeEdge's reasons (edge/pkg/devicetwin/dttype/types.go and dtmanager/twin.go), verbatim.
REASON_UNMARSHAL: Final = "Unmarshal update request body failed, please check the request"
REASON_NO_TWIN: Final = "Update twin error, key:twin does not exist"
REASON_KEY: Final = (
    "The key of twin must only include upper or lowercase letters, number, english, and "
    "special letter - _ . , : / @ # and the length of key should be less than 128 bytes"
)
REASON_UPDATE_NOT_FOUND: Final = "update rejected due to the device is not existed"
REASON_BODY_WRONG: Final = "the request body is wrong"
# edgecore's prefixes of the other requests' parse errors (it also quotes the payload;
# we do not: a reason stays short whatever was sent).
UNMARSHAL_GET: Final = "Unmarshal twin info failed, err"
UNMARSHAL_MEMBERSHIP: Final = "Unmarshal get membership info failed, err"
UNMARSHAL_STATE: Final = "Unmarshal device info failed, err"

STATES: Final = ("online", "offline", "ok", "unknown", "unhealthy")
"""The device states edgecore keeps (dtcommon.DeviceStatus*), compared in lower case."""
ONLINE_STATES: Final = frozenset({"online", "ok"})
"""States that set ``lastOnlineTime`` (as edgecore's dealDeviceStateUpdate does)."""

_EVENT_ID_PATTERN: Final = re.compile(rb'"event_id"\s*:\s*"([^"\\]{1,128})"')


@dataclass(frozen=True, slots=True)
class Refusal:
    """A request refused with KubeEdge's ``code`` and ``reason``; ``event_id`` is the
    request's ("" if it could not be read)."""

    event_id: str
    code: int
    reason: str


@dataclass(frozen=True, slots=True)
class PropertyChange:
    """One property of a twin/update, checked.

    ``delete``: the property was ``null`` or of type ``deleted``; else ``actual`` and
    ``expected`` are the strings given (None: absent; an ``expected`` of ``""`` counts as
    absent, as edgecore stores it) and ``value_type`` the message's ``metadata.type``
    (None when absent or ``""``; not yet checked: edgecore checks type names with the
    values, after it has found the device).
    """

    key: str
    delete: bool = False
    actual: str | None = None
    expected: str | None = None
    value_type: str | None = None


@dataclass(frozen=True, slots=True)
class TwinUpdate:
    """A twin/update request: its event_id and its properties in payload order."""

    event_id: str
    changes: tuple[PropertyChange, ...]


@dataclass(frozen=True, slots=True)
class StateUpdate:
    """A state/update request: ``state`` is one of :data:`STATES` (lower case)."""

    event_id: str
    state: str


class _TypeError(Exception):
    """A field of the wrong JSON type (Go's json.Unmarshal would fail)."""

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


class _Refused(Exception):
    """A refusal whose reason is complete (KubeEdge's own words)."""

    def __init__(self, code: int, reason: str) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason


def read_event_id(doc: Mapping[str, Any] | None, payload: bytes) -> str:
    """The request's event_id, best effort: the field of a parsed object if it is a string
    of at most :data:`MAX_EVENT_ID_CHARS`, else an ``"event_id": "..."`` found in the raw
    payload (so even a payload that is not JSON gets its error correlated), else ""."""
    if doc is not None:
        event_id = doc.get("event_id")
        if type(event_id) is str and len(event_id) <= MAX_EVENT_ID_CHARS:
            try:
                event_id.encode()
            except UnicodeEncodeError:  # a lone surrogate: read_payload refuses it anyway
                return ""
            return str(event_id)
        return ""
    match = _EVENT_ID_PATTERN.search(payload)
    if match is None:
        return ""
    try:
        return match.group(1).decode("utf-8")
    except UnicodeDecodeError:
        return ""


def _shown(text: str) -> str:
    return repr(text if len(text) <= MAX_SHOWN_CHARS else text[:MAX_SHOWN_CHARS] + "…")


def _object(value: Any, where: str) -> Mapping[str, Any] | None:
    """``value`` if it is an object, None if null or absent; _TypeError otherwise."""
    if value is None:
        return None
    if type(value) is not dict:
        raise _TypeError(f"{where} must be an object, not {json_type(value)}")
    return value


def _integer(value: Any, where: str) -> None:
    if value is not None and type(value) is not int:
        raise _TypeError(f"{where} must be an integer, not {json_type(value)}")


def _string(value: Any, where: str) -> str | None:
    if value is None:
        return None
    if type(value) is not str:
        raise _TypeError(f"{where} must be a string, not {json_type(value)}")
    return str(value)


def _read(payload: bytes, prefix: str) -> tuple[dict[str, Any] | None, str, Refusal | None]:
    """(object, event_id, refusal) of a request payload: JSON and its BaseMessage fields
    (``event_id`` a string, ``timestamp`` an integer, both optional)."""
    doc, code, message = read_payload(payload)
    event_id = read_event_id(doc, payload)
    if code:
        return None, event_id, Refusal(event_id, BAD_REQUEST, f"{prefix}: {message}")
    assert doc is not None
    try:
        event = _string(doc.get("event_id"), "event_id")
        if event is not None and len(event) > MAX_EVENT_ID_CHARS:
            raise _TypeError(f"event_id is longer than {MAX_EVENT_ID_CHARS} characters")
        _integer(doc.get("timestamp"), "timestamp")
    except _TypeError as error:
        return None, event_id, Refusal(event_id, BAD_REQUEST, f"{prefix}: {error.detail}")
    return doc, event_id, None


# ------------------------------------------------------------- twin/update ----


def _twin_value_types(value: Any, where: str) -> None:
    """TwinValue ``{value: string, metadata: {timestamp: int}}``: its field types."""
    obj = _object(value, where)
    if obj is None:
        return
    _string(obj.get("value"), f"{where}.value")
    metadata = _object(obj.get("metadata"), f"{where}.metadata")
    if metadata is not None:
        _integer(metadata.get("timestamp"), f"{where}.metadata.timestamp")


def _property_types(key: str, entry: Any) -> None:
    """MsgTwin's field types (versions are read and then ignored, as for edgecore)."""
    where = f"twin.{key}"
    obj = _object(entry, where)
    if obj is None:
        return
    optional = obj.get("optional")
    if optional is not None and type(optional) is not bool:
        raise _TypeError(f"{where}.optional must be a boolean, not {json_type(optional)}")
    metadata = _object(obj.get("metadata"), f"{where}.metadata")
    if metadata is not None:
        _string(metadata.get("type"), f"{where}.metadata.type")
    for side in ("expected", "actual"):
        _twin_value_types(obj.get(side), f"{where}.{side}")
    for version in ("expected_version", "actual_version"):
        counters = _object(obj.get(version), f"{where}.{version}")
        if counters is not None:
            _integer(counters.get("cloud"), f"{where}.{version}.cloud")
            _integer(counters.get("edge"), f"{where}.{version}.edge")


def _side_value(entry: Mapping[str, Any], side: str, where: str) -> str | None:
    obj = entry.get(side)
    if obj is None:
        return None
    text = obj.get("value")
    if text is None:
        # edgecore dereferences the missing value: its twin module panics.
        raise _Refused(BAD_REQUEST, f"{where}.{side} has no value: it needs a string value")
    return str(text)


def _property(key: str, entry: Any) -> PropertyChange:
    """The meaning of one (type-checked) property."""
    if not values.valid_twin_key(key):
        raise _Refused(BAD_REQUEST, REASON_KEY)
    if entry is None:
        return PropertyChange(key, delete=True)
    where = f"twin.{key}"
    metadata = entry.get("metadata") or {}
    value_type = metadata.get("type") or None  # checked with the values, as edgecore does
    expected = _side_value(entry, "expected", where)
    actual = _side_value(entry, "actual", where)
    if value_type == values.DELETED:
        return PropertyChange(key, delete=True)
    return PropertyChange(key, False, actual, expected or None, value_type)


def read_twin_update(payload: bytes) -> TwinUpdate | Refusal:
    """A twin/update payload, checked (values are checked against types later, when the
    property's type is known: :func:`edgenode.devices.kubeedge.api.plan_update`)."""
    doc, event_id, refusal = _read(payload, REASON_UNMARSHAL)
    if refusal is not None:
        return refusal
    assert doc is not None
    try:
        twin = _object(doc.get("twin"), "twin")
        if twin is not None:
            if len(twin) > MAX_PROPERTIES:
                raise _TypeError(f"{len(twin)} properties, over {MAX_PROPERTIES}")
            for key, entry in twin.items():
                _property_types(key, entry)
    except _TypeError as error:
        return Refusal(event_id, BAD_REQUEST, f"{REASON_UNMARSHAL}: {error.detail}")
    if twin is None:
        return Refusal(event_id, BAD_REQUEST, REASON_NO_TWIN)
    try:
        changes = tuple(_property(key, entry) for key, entry in twin.items())
    except _Refused as refused:
        return Refusal(event_id, refused.code, refused.reason)
    return TwinUpdate(event_id, changes)


# ------------------------------------------------------- the other requests ----


def read_base_message(payload: bytes, prefix: str) -> str | Refusal:
    """The event_id of a BaseMessage payload (twin/get with :data:`UNMARSHAL_GET`,
    membership/get with :data:`UNMARSHAL_MEMBERSHIP`), or a refusal."""
    _, event_id, refusal = _read(payload, prefix)
    return refusal if refusal is not None else event_id


def read_state_update(payload: bytes) -> StateUpdate | Refusal:
    """A state/update payload ``{"event_id", "timestamp", "state"}``. edgecore drops an
    unknown state without a word; it is refused here."""
    doc, event_id, refusal = _read(payload, UNMARSHAL_STATE)
    if refusal is not None:
        return refusal
    assert doc is not None
    state = doc.get("state")
    if type(state) is not str:
        return Refusal(
            event_id,
            BAD_REQUEST,
            f"{UNMARSHAL_STATE}: state must be a string, not {json_type(state)}",
        )
    lowered = state.lower()
    if lowered not in STATES:
        return Refusal(
            event_id,
            BAD_REQUEST,
            f"the device state must be one of {', '.join(STATES)}, not {_shown(state)}",
        )
    return StateUpdate(event_id, lowered)

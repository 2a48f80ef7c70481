"""One device's twin on bytes, in pure Python: the executable specification of
``crates/edgecore_fast/src/devtwin.rs`` and ``py_devtwin.rs``.

A :class:`DeviceTwin` owns the twin of one device (desired, reported, their versions and
per-key timestamps, the last ack, the device state and the delta message last sent) as
the stored document of ``edgenode.devices.twins`` (format 1), and turns a device report
(the MQTT payload bytes of ``$edge/devices/{d}/twin/update``) into the bytes to publish,
to append to the outbox and to store. Rust does the same without building Python objects
(PRODUCT.md, "Where Rust pays"); this module uses ``json`` and dicts, and both produce the
same bytes: compact JSON as ``json.dumps(value, separators=(",", ":"),
ensure_ascii=False)`` writes it (floats as ``repr``, ``\\u00XX`` escapes in lower case).

Reading a payload (:func:`read_payload`), the first problem wins, in this order:

1. more than :data:`MAX_PAYLOAD_BYTES`: 413, not read at all;
2. not UTF-8: 400 ``payload is not valid UTF-8 (byte N)``;
3. not JSON as ``json.loads`` reads it (NaN and Infinity refused): 400
   ``payload is not JSON: <json's message>``; nesting that exhausts the parser's
   recursion, or valid JSON nested deeper than :data:`PARSE_MAX_DEPTH` levels: 400
   ``payload nests too deep to parse``;
4. a ``\\uXXXX`` escape that leaves a lone surrogate in a string or key: 400
   ``payload is not valid UTF-8: a \\u escape is a lone surrogate``;
5. not an object: 400 ``payload must be a JSON object, not <type>``.

Integers of any size that ``json`` reads (up to Python's 4300 digits) are kept exactly;
duplicate keys keep the last value at the first key's position, as ``dict`` does.
Mutators (:meth:`DeviceTwin.apply_report`, :meth:`DeviceTwin.set_desired`,
:meth:`DeviceTwin.set_state`) only *prepare* the new state and return the document to
store; :meth:`DeviceTwin.commit` makes it current once it is stored, and any later
mutator discards a prepared state that was never committed.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from typing import Any, Final

from edgenode._pure import twin as engine
from edgenode.errors import TwinError, TwinLimitError

TWIN_FORMAT: Final = 1
MAX_PAYLOAD_BYTES: Final = 4 * 1024 * 1024
"""Payloads up to this size are parsed (to find the clientToken of an error reply);
larger ones are rejected unread. The twin engine's own limits apply after parsing."""
PARSE_MAX_DEPTH: Final = 64
"""Deepest nesting of a payload that is parsed (the twin engine allows 32 in reported)."""
MAX_CLIENT_TOKEN_CHARS: Final = 64
MAX_REASON_CHARS: Final = 1024
MAX_VERSION: Final = 2**63 - 1
"""Versions are stored as 64-bit integers."""

# Error codes (HTTP-like, as AWS IoT shadows do).
BAD_REQUEST: Final = 400
FORBIDDEN: Final = 403
TOO_LARGE: Final = 413

UPDATE_FIELDS: Final = frozenset({"reported", "clientToken", "ack", "desired"})
ACK_FIELDS: Final = ("version", "status", "reason")
ACK_STATUSES: Final = frozenset({"accepted", "in-progress", "rejected"})

TOO_DEEP_MESSAGE: Final = "payload nests too deep to parse"
SURROGATE_MESSAGE: Final = "payload is not valid UTF-8: a \\u escape is a lone surrogate"

# Best effort for payloads the JSON parser refuses (too deep, NaN, not JSON at all): a
# clientToken-looking string, so the error can still be correlated.
_TOKEN_PATTERN: Final = re.compile(rb'"clientToken"\s*:\s*"([^"\\]{1,64})"')

_encode_compact: Final = json.JSONEncoder(
    ensure_ascii=False, separators=(",", ":"), check_circular=False
).encode


def encode(value: Any) -> bytes:
    """Compact UTF-8 JSON, as every message and document of a twin is written."""
    return _encode_compact(value).encode()


@dataclass(frozen=True, slots=True)
class ReportOutcome:
    """What a mutator decided. ``code`` 0: accepted; else rejected with ``message``.

    ``delta`` is None when the retained delta message stays as it is, ``b""`` when it
    must be cleared, else the message to publish. ``document`` is the twin document to
    store before anything is published (None: nothing changed).
    """

    code: int
    message: str
    token: str | None
    reply: bytes
    changed: bool
    ack_changed: bool
    delta: bytes | None
    twin_uplink: bytes | None
    ack_uplink: bytes | None
    document: bytes | None


def _rejected(code: int, message: str, token: str | None) -> ReportOutcome:
    return ReportOutcome(code, message, token, b"", False, False, None, None, None, None)


class _Refused(Exception):
    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


# ------------------------------------------------------------------ reading ----


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _nests_deeper(value: Any, levels: int) -> bool:
    """True if ``value`` has containers nested more than ``levels`` deep (itself is 1)."""
    kind = type(value)
    if kind is dict:
        items: Any = value.values()
    elif kind is list:
        items = value
    else:
        return False
    if levels == 0:
        return True
    return any(_nests_deeper(item, levels - 1) for item in items)


def _is_lone(text: str) -> bool:
    try:
        text.encode()
    except UnicodeEncodeError:
        return True
    return False


def _has_lone_surrogate(value: Any) -> bool:
    kind = type(value)
    if kind is str:
        return _is_lone(value)
    if kind is dict:
        return any(_is_lone(k) or _has_lone_surrogate(v) for k, v in value.items())
    if kind is list:
        return any(_has_lone_surrogate(item) for item in value)
    return False


def json_type(value: Any) -> str:
    """The JSON name of a parsed value's type."""
    if value is None:
        return "null"
    return {
        bool: "boolean",
        int: "number",
        float: "number",
        str: "string",
        list: "array",
        dict: "object",
    }.get(type(value), type(value).__name__)


def read_payload(payload: bytes) -> tuple[dict[str, Any] | None, int, str]:
    """(object, 0, "") or (what could be read, code, message): steps 1-5 of the module
    docstring. A rejected payload still yields its object when it parsed (for the
    clientToken)."""
    if len(payload) > MAX_PAYLOAD_BYTES:
        return None, TOO_LARGE, f"payload is {len(payload)} bytes, over {MAX_PAYLOAD_BYTES}"
    try:
        text = payload.decode("utf-8")
    except UnicodeDecodeError as exc:
        return None, BAD_REQUEST, f"payload is not valid UTF-8 (byte {exc.start})"
    try:
        value = json.loads(text, parse_constant=_reject_constant)
    except RecursionError:
        return None, BAD_REQUEST, TOO_DEEP_MESSAGE
    except ValueError as exc:
        return None, BAD_REQUEST, f"payload is not JSON: {exc}"
    doc = value if type(value) is dict else None
    # Both filters are necessary conditions, so the walks run only on unusual payloads.
    if payload.count(b"[") + payload.count(b"{") > PARSE_MAX_DEPTH and _nests_deeper(
        value, PARSE_MAX_DEPTH
    ):
        return doc, BAD_REQUEST, TOO_DEEP_MESSAGE
    if b"\\u" in payload and _has_lone_surrogate(value):
        return doc, BAD_REQUEST, SURROGATE_MESSAGE
    if doc is None:
        return None, BAD_REQUEST, f"payload must be a JSON object, not {json_type(value)}"
    return doc, 0, ""


def read_token(doc: dict[str, Any] | None, payload: bytes) -> tuple[str | None, str | None]:
    """(token, problem): the clientToken if one can be read, else why not (or None)."""
    if doc is None:
        if len(payload) > MAX_PAYLOAD_BYTES:
            return None, None  # rejected unread
        match = _TOKEN_PATTERN.search(payload)
        if match is None:
            return None, None
        try:
            return match.group(1).decode("utf-8"), None
        except UnicodeDecodeError:
            return None, None
    if "clientToken" not in doc:
        return None, None
    token = doc["clientToken"]
    if type(token) is not str or not 0 < len(token) <= MAX_CLIENT_TOKEN_CHARS:
        return None, f"clientToken must be a string of 1 to {MAX_CLIENT_TOKEN_CHARS} characters"
    if _is_lone(token):
        return None, "clientToken is not valid UTF-8"
    return token, None


def payload_rejection(payload: bytes) -> tuple[int, str, str | None]:
    """(code, message, token) of a payload that :func:`read_payload` or its clientToken
    refuses; code 0 if neither does. The Rust binding asks this for the payloads its own
    parser refuses, so both backends word parse errors as ``json`` does."""
    doc, code, message = read_payload(payload)
    token, problem = read_token(doc, payload)
    if code == 0 and problem is not None:
        return BAD_REQUEST, problem, None
    return code, message, token


# -------------------------------------------------------------- JSON bits ----


def _same(a: Any, b: Any) -> bool:
    """JSON equality: same types (``true`` is not ``1``) except int/float, by value."""
    if a is b:
        return True
    kind_a, kind_b = type(a), type(b)
    if kind_a is int or kind_a is float:
        return (kind_b is int or kind_b is float) and a == b
    if kind_a is not kind_b:
        return False
    if kind_a is dict:
        return len(a) == len(b) and all(k in b and _same(v, b[k]) for k, v in a.items())
    if kind_a is list:
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    return bool(a == b)


def _diff_patch(old: dict[str, Any], new: dict[str, Any]) -> dict[str, Any]:
    """The smallest merge patch turning ``old`` into ``new`` (for per-key timestamps)."""
    patch: dict[str, Any] = {}
    for key in old:
        if key not in new:
            patch[key] = None
    for key, value in new.items():
        if key not in old:
            patch[key] = value
            continue
        before = old[key]
        if type(value) is dict and type(before) is dict:
            nested = _diff_patch(before, value)
            if nested:
                patch[key] = nested
        elif not _same(before, value):
            patch[key] = value
    return patch


def _same_ack(a: Any, b: Any) -> bool:
    """Acks are equal when version, status and reason are (the timestamp is not news)."""
    if a is None or b is None:
        return a is b
    return all(_same(a.get(k), b.get(k)) for k in ACK_FIELDS)


# --------------------------------------------------------------------- twin ----


class _State:
    __slots__ = (
        "ack",
        "delta_sent",
        "desired",
        "desired_meta",
        "desired_version",
        "reported",
        "reported_meta",
        "reported_version",
        "state",
    )

    def __init__(self) -> None:
        self.desired: dict[str, Any] = {}
        self.reported: dict[str, Any] = {}
        self.desired_version = 0
        self.reported_version = 0
        self.desired_meta: dict[str, Any] = {}
        self.reported_meta: dict[str, Any] = {}
        self.ack: Any = None
        self.state: Any = None
        self.delta_sent: Any = None

    def copy(self) -> _State:
        """Shallow: fields are replaced, never mutated, so sharing is safe."""
        other = _State()
        for name in _State.__slots__:
            setattr(other, name, getattr(self, name))
        return other

    def document(self) -> bytes:
        return encode(
            {
                "format": TWIN_FORMAT,
                "desired": self.desired,
                "reported": self.reported,
                "version": {"desired": self.desired_version, "reported": self.reported_version},
                "metadata": {"desired": self.desired_meta, "reported": self.reported_meta},
                "ack": self.ack,
                "state": self.state,
                "delta_sent": self.delta_sent,
            }
        )

    def delta_message(self) -> dict[str, Any] | None:
        current = engine.delta(self.desired, self.reported)
        return {"version": self.desired_version, "delta": current} if current else None

    def update_delta(self) -> bytes | None:
        """Set ``delta_sent``; the retained message to publish (b"": clear) if it moved."""
        message = self.delta_message()
        sent = self.delta_sent
        if (message is None and sent is None) or (
            message is not None and sent is not None and _same(message, sent)
        ):
            return None
        self.delta_sent = message
        return b"" if message is None else encode(message)


def _stored_state(stored: bytes) -> _State:
    try:
        doc = json.loads(stored.decode("utf-8"), parse_constant=_reject_constant)
    except (ValueError, RecursionError):
        raise ValueError("stored twin is not JSON") from None
    if type(doc) is not dict or not _same(doc.get("format"), TWIN_FORMAT):
        raise ValueError("not a twin document of format 1")
    state = _State()
    version = doc.get("version")
    metadata = doc.get("metadata")
    if type(version) is not dict or type(metadata) is not dict:
        raise ValueError("version and metadata must be objects")
    fields = {
        "desired": doc.get("desired"),
        "reported": doc.get("reported"),
        "desired_meta": metadata.get("desired"),
        "reported_meta": metadata.get("reported"),
    }
    for name, value in fields.items():
        if type(value) is not dict:
            raise ValueError(f"{name} is not an object")
        setattr(state, name, value)
    for name in ("desired", "reported"):
        number = version.get(name)
        if type(number) is not int or not 0 <= number <= MAX_VERSION:
            raise ValueError("versions are not integers")
        setattr(state, f"{name}_version", number)
    state.ack = doc.get("ack")
    state.state = doc.get("state")
    state.delta_sent = doc.get("delta_sent")
    return state


def _check_version(version: object) -> int:
    """A desired version: an exact int in [1, MAX_VERSION] (TypeError / ValueError)."""
    if type(version) is not int:
        raise TypeError(f"version must be an int, not {type(version).__name__}")
    if not 1 <= version <= MAX_VERSION:
        raise ValueError(f"version must be in [1, 2**63 - 1], not {version!r}")
    return version


def _check_now(now: float) -> float:
    """A finite int or float (not bool) as a float: TypeError, ValueError otherwise."""
    if type(now) is not float and type(now) is not int:
        raise TypeError(f"now must be a number, not {type(now).__name__}")
    value = float(now)
    if not math.isfinite(value):
        raise ValueError(f"now must be a finite number, not {value!r}")
    return value


class DeviceTwin:
    """The twin of one device; ValueError if ``stored`` is not a document of ours."""

    __slots__ = ("_current", "_device", "_pending")

    def __init__(self, device: str, stored: bytes | None = None) -> None:
        if type(device) is not str:
            raise TypeError(f"device must be a str, not {type(device).__name__}")
        self._device = device
        self._current = _State() if stored is None else _stored_state(stored)
        self._pending: _State | None = None

    @property
    def device(self) -> str:
        return self._device

    @property
    def desired_version(self) -> int:
        return self._current.desired_version

    @property
    def reported_version(self) -> int:
        return self._current.reported_version

    def document(self) -> bytes:
        """The stored form of the current (committed) twin."""
        return self._current.document()

    def commit(self) -> None:
        """Make the state prepared by the last mutator current (no-op if none)."""
        if self._pending is not None:
            self._current, self._pending = self._pending, None

    def delta_message(self) -> bytes | None:
        """The retained delta message the device should hold now (None: clear it)."""
        message = self._current.delta_message()
        return None if message is None else encode(message)

    def view(self, now: float, token: str | None = None) -> bytes:
        """The full twin as ``twin/get/accepted`` shows it."""
        now = _check_now(now)
        s = self._current
        body: dict[str, Any] = {
            "desired": s.desired,
            "reported": s.reported,
            "delta": engine.delta(s.desired, s.reported),
            "version": {"desired": s.desired_version, "reported": s.reported_version},
            "metadata": {"desired": s.desired_meta, "reported": s.reported_meta},
            "ack": s.ack,
            "state": s.state,
            "timestamp": now,
        }
        if token is not None:
            body["clientToken"] = token
        return encode(body)

    def set_state(self, value: str, now: float) -> bytes | None:
        """Prepare the device state ``value``; the document to store, None if unchanged."""
        now = _check_now(now)
        self._pending = None
        old = self._current
        if type(old.state) is dict and _same(old.state.get("value"), value):
            return None
        new = old.copy()
        new.state = {"value": value, "timestamp": now}
        self._pending = new
        return new.document()

    def set_desired(
        self, desired: bytes, now: float, merge: bool = False, version: int | None = None
    ) -> ReportOutcome:
        """Prepare ``desired`` (JSON object bytes) as the desired document, or merge-patch
        it in; TwinError/TwinLimitError as the twin engine raises them.

        ``version``: the desired version the hub gave this document. It becomes the twin's
        desired version when it is greater than the current one (also for an unchanged
        document: one number names one document everywhere); otherwise a changed document
        takes the current version + 1, so versions never go backwards."""
        now = _check_now(now)
        if version is not None:
            _check_version(version)
        self._pending = None
        doc, code, message = read_payload(desired)
        if code:
            raise TwinError(f"desired {message}")
        assert doc is not None
        old = self._current
        new_desired = engine.merge_patch(old.desired if merge else {}, doc)
        changed = not _same(new_desired, old.desired)
        adopted = version if version is not None and version > old.desired_version else None
        if not changed and adopted is None:
            return ReportOutcome(0, "", None, b"", False, False, None, None, None, None)
        new = old.copy()
        new.desired = new_desired
        # Saturating: a version of 2**63 - 1 (only ever a hostile one) stays there.
        new.desired_version = (
            min(old.desired_version + 1, MAX_VERSION) if adopted is None else adopted
        )
        if changed:
            new.desired_meta = engine.stamp(
                old.desired_meta, _diff_patch(old.desired, new_desired), now
            )
        delta = new.update_delta()
        self._pending = new
        return ReportOutcome(0, "", None, b"", True, False, delta, None, None, new.document())

    def apply_report(self, payload: bytes, now: float) -> ReportOutcome:
        """Prepare a device report (``twin/update`` payload): the outcome to act on."""
        now = _check_now(now)
        self._pending = None
        doc, code, message = read_payload(payload)
        token, problem = read_token(doc, payload)
        if code:
            return _rejected(code, message, token)
        if problem is not None:
            return _rejected(BAD_REQUEST, problem, None)
        assert doc is not None
        try:
            return self._apply(doc, token, now)
        except _Refused as refused:
            return _rejected(refused.code, refused.message, token)

    def _apply(self, doc: dict[str, Any], token: str | None, now: float) -> ReportOutcome:
        if "desired" in doc:
            raise _Refused(FORBIDDEN, "desired is owned by the cloud; a device writes reported")
        unknown = sorted(set(doc) - UPDATE_FIELDS)
        if unknown:
            raise _Refused(BAD_REQUEST, f"unknown field {unknown[0]!r}")
        if "reported" not in doc and "ack" not in doc:
            raise _Refused(BAD_REQUEST, "an update needs reported or ack")
        old = self._current
        patch = doc.get("reported", {})
        if type(patch) is not dict:
            raise _Refused(BAD_REQUEST, f"reported must be a JSON object, not {json_type(patch)}")
        new_ack = self._check_ack(doc["ack"], now) if "ack" in doc else old.ack
        try:
            new_reported = engine.merge_patch(old.reported, patch)
        except TwinLimitError as exc:
            raise _Refused(TOO_LARGE, str(exc)) from None
        except TwinError as exc:
            raise _Refused(BAD_REQUEST, str(exc)) from None
        changed = not _same(new_reported, old.reported)
        ack_changed = "ack" in doc and not _same_ack(new_ack, old.ack)
        new = old
        delta: bytes | None = None
        if changed or ack_changed:
            new = old.copy()
            if changed:
                new.reported = new_reported
                new.reported_version = old.reported_version + 1
                new.reported_meta = engine.stamp(
                    old.reported_meta, _diff_patch(old.reported, new_reported), now
                )
                delta = new.update_delta()
            if ack_changed:
                new.ack = new_ack
        accepted: dict[str, Any] = {"version": new.reported_version}
        if token is not None:
            accepted["clientToken"] = token
        accepted["timestamp"] = now
        if not changed and not ack_changed:
            return ReportOutcome(
                0, "", token, encode(accepted), False, False, None, None, None, None
            )
        twin_uplink = encode(
            {
                "device": self._device,
                "reported": new.reported,
                "version": new.reported_version,
                "ack": new.ack,
                "timestamp": now,
            }
        )
        ack_uplink = (
            encode({"device": self._device, "ack": new.ack, "timestamp": now})
            if ack_changed
            else None
        )
        self._pending = new
        return ReportOutcome(
            0,
            "",
            token,
            encode(accepted),
            changed,
            ack_changed,
            delta,
            twin_uplink,
            ack_uplink,
            new.document(),
        )

    def _check_ack(self, ack: Any, now: float) -> dict[str, Any]:
        if type(ack) is not dict:
            raise _Refused(BAD_REQUEST, f"ack must be a JSON object, not {json_type(ack)}")
        unknown = sorted(set(ack) - set(ACK_FIELDS))
        if unknown:
            raise _Refused(BAD_REQUEST, f"unknown ack field {unknown[0]!r}")
        version = ack.get("version")
        if type(version) is not int:
            raise _Refused(BAD_REQUEST, "ack.version must be an integer")
        desired_version = self._current.desired_version
        if not 1 <= version <= desired_version:
            raise _Refused(
                BAD_REQUEST,
                f"ack.version {version} is not a desired version "
                f"(the desired version is {desired_version})",
            )
        status = ack.get("status")
        if type(status) is not str or status not in ACK_STATUSES:
            raise _Refused(
                BAD_REQUEST, f"ack.status must be one of {', '.join(sorted(ACK_STATUSES))}"
            )
        result: dict[str, Any] = {"version": version, "status": status}
        if "reason" in ack:
            reason = ack["reason"]
            if type(reason) is not str or len(reason) > MAX_REASON_CHARS:
                raise _Refused(
                    BAD_REQUEST,
                    f"ack.reason must be a string of at most {MAX_REASON_CHARS} characters",
                )
            result["reason"] = reason
        result["timestamp"] = now
        return result

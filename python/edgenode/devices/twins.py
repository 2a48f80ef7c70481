"""Device twins over MQTT, sans-I/O: (topic, payload bytes, now) in, actions out.

:class:`TwinService` implements the device API of docs/device-api.md on top of the
durable :class:`~edgenode.store.Store` and the twin engine (:mod:`edgenode.twin`). It
opens no sockets and reads no clock: the caller (``bus.DeviceLayer``) feeds it MQTT
messages with the current wall-clock time and carries out the returned actions —
:class:`Publish` to the broker, :class:`Uplink` to the outbox. It does write the store
(one ``put_twin`` per accepted change, before any action mentions that change), so a
twin survives broker restarts and node restarts.

A twin is stored as one compact JSON document per device::

    {"format": 1,
     "desired": {...}, "reported": {...},
     "version": {"desired": 3, "reported": 17},
     "metadata": {"desired": {<per-key timestamps>}, "reported": {...}},
     "ack": {"version": 3, "status": "accepted", "reason": "...", "timestamp": t} | null,
     "state": {"value": "online", "timestamp": t} | null,
     "delta_sent": {"version": 3, "delta": {...}} | null}

``delta_sent`` is the retained delta message the device was last given, so a change that
leaves the delta as it was publishes nothing. Versions count *changes*: a report that
changes nothing (same values, numbers by value) bumps nothing and writes nothing.
Per-key timestamps say when each value last changed.

Bad input never raises: it becomes an error reply on the operation's ``.../rejected``
topic (never on a topic with an empty device id), a counter in :attr:`TwinService.counters`
and a log line, and nothing already accepted is touched.
"""

from __future__ import annotations

import base64
import json
import logging
import re
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Final, Protocol

from edgenode import twin as engine
from edgenode.devices.config import DeviceSpec
from edgenode.devices.routes import RouteDecision, RouteTable
from edgenode.errors import StoreError, TopicError, TwinError, TwinLimitError

log = logging.getLogger("edgenode.devices")

TOPIC_ROOT: Final = "$edge/devices"
TWIN_FORMAT: Final = 1
MAX_PAYLOAD_BYTES: Final = 4 * 1024 * 1024
"""Twin payloads up to this size are parsed (to find the clientToken of an error reply);
larger ones are rejected unread. The twin engine's own limits apply after parsing."""
MAX_CLIENT_TOKEN_CHARS: Final = 64
MAX_REASON_CHARS: Final = 1024
"""Longest ``reason`` of an ack."""
MAX_TELEMETRY_BYTES: Final = 192 * 1024
"""Largest telemetry payload sent upstream (base64 grows it by a third; the node's
uplink records stay below 256 KiB)."""
ACK_STATUSES: Final = frozenset({"accepted", "in-progress", "rejected"})
TWIN_UPLINK_PRIORITY: Final = 3
STATE_UPLINK_PRIORITY: Final = 3
REPLY_QOS: Final = 1
LOG_BURST: Final = 20
"""Bad-input warnings logged per LOG_WINDOW; the rest are only counted
(``log_suppressed``), so a misbehaving device cannot flood the node's log."""
LOG_WINDOW: Final = 60.0
STATE_VALUES: Final = frozenset({"online", "offline"})
STATE_WHITESPACE: Final = b" \t\r\n"

# Error codes (HTTP-like, as AWS IoT shadows do).
BAD_REQUEST: Final = 400
FORBIDDEN: Final = 403
NOT_FOUND: Final = 404
TOO_LARGE: Final = 413
INTERNAL: Final = 500

UPDATE_FIELDS: Final = frozenset({"reported", "clientToken", "ack", "desired"})
ACK_FIELDS: Final = frozenset({"version", "status", "reason"})
GET_FIELDS: Final = frozenset({"clientToken"})

# Best effort for payloads the JSON parser refuses (too deep, NaN, not JSON at all): a
# clientToken-looking string, so the error can still be correlated.
_TOKEN_PATTERN: Final = re.compile(rb'"clientToken"\s*:\s*"([^"\\]{1,64})"')


# ------------------------------------------------------------------ actions ----


@dataclass(frozen=True, slots=True)
class Publish:
    """Publish ``payload`` on the local broker (an empty retained payload clears)."""

    topic: str
    payload: bytes
    retain: bool = False
    qos: int = REPLY_QOS


@dataclass(frozen=True, slots=True)
class Uplink:
    """Append ``payload`` to the outbox (``Store.append`` arguments); ``kind`` as in it."""

    payload: bytes
    priority: int
    ttl: float | None
    coalesce_key: str | None
    kind: str


Action = Publish | Uplink
UplinkEncoder = Callable[[str, dict[str, Any]], bytes]


class TwinStore(Protocol):
    """What TwinService needs of :class:`~edgenode.store.Store` (the device bus hands
    it a wrapper that holds twin writes until a batch's uplinks are appended)."""

    def put_twin(self, device: str, doc: bytes) -> None: ...
    def get_twin(self, device: str) -> bytes | None: ...
    def delete_twin(self, device: str) -> bool: ...


def encode_json(value: Any) -> bytes:
    """Compact UTF-8 JSON (the twin engine guarantees the documents are JSON)."""
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode()


def flat_uplink(kind: str, body: dict[str, Any]) -> bytes:
    """The default uplink record: ``{"kind": kind, **body}`` as compact JSON."""
    return encode_json({"kind": kind, **body})


class Rejection(Exception):
    """Internal: an input is refused with this code and message."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


# ---------------------------------------------------------------- JSON bits ----


def _same(a: Any, b: Any) -> bool:
    """JSON equality of checked documents: same types (``true`` is not ``1``) except
    int/float, which compare by value."""
    if a is b:
        return True
    kind_a, kind_b = type(a), type(b)
    if kind_a in (int, float):
        return kind_b in (int, float) and a == b
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


def _same_ack(a: dict[str, Any] | None, b: dict[str, Any] | None) -> bool:
    """Acks are equal when version, status and reason are (the timestamp is not news)."""
    if a is None or b is None:
        return a is b
    return all(a.get(k) == b.get(k) for k in ACK_FIELDS)


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _parse_object(payload: bytes) -> tuple[dict[str, Any] | None, Rejection | None]:
    """The payload as a JSON object, or the rejection (with what could be read)."""
    if len(payload) > MAX_PAYLOAD_BYTES:
        return None, Rejection(
            TOO_LARGE, f"payload is {len(payload)} bytes, over {MAX_PAYLOAD_BYTES}"
        )
    try:
        text = payload.decode("utf-8")
    except UnicodeDecodeError as exc:
        return None, Rejection(BAD_REQUEST, f"payload is not valid UTF-8 (byte {exc.start})")
    try:
        value = json.loads(text, parse_constant=_reject_constant)
    except RecursionError:
        return None, Rejection(BAD_REQUEST, "payload nests too deep to parse")
    except ValueError as exc:
        return None, Rejection(BAD_REQUEST, f"payload is not JSON: {exc}")
    if type(value) is not dict:
        return None, Rejection(
            BAD_REQUEST, f"payload must be a JSON object, not {_json_type(value)}"
        )
    return value, None


def _json_type(value: Any) -> str:
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


def _read_token(doc: dict[str, Any] | None, payload: bytes) -> tuple[str | None, str | None]:
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
    try:
        token.encode()
    except UnicodeEncodeError:
        return None, "clientToken is not valid UTF-8"
    return token, None


# --------------------------------------------------------------------- twin ----


class Twin:
    """One device's twin, mirrored from its stored document."""

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
        self.ack: dict[str, Any] | None = None
        self.state: dict[str, Any] | None = None
        self.delta_sent: dict[str, Any] | None = None

    def copy(self) -> Twin:
        """A shallow copy: fields are replaced, never mutated, so sharing is safe."""
        other = Twin()
        for name in Twin.__slots__:
            setattr(other, name, getattr(self, name))
        return other

    def to_doc(self) -> dict[str, Any]:
        return {
            "format": TWIN_FORMAT,
            "desired": self.desired,
            "reported": self.reported,
            "version": {"desired": self.desired_version, "reported": self.reported_version},
            "metadata": {"desired": self.desired_meta, "reported": self.reported_meta},
            "ack": self.ack,
            "state": self.state,
            "delta_sent": self.delta_sent,
        }

    @classmethod
    def from_doc(cls, doc: Any) -> Twin:
        """ValueError if ``doc`` is not a twin document of ours."""
        if type(doc) is not dict or doc.get("format") != TWIN_FORMAT:
            raise ValueError("not a twin document of format 1")
        twin = cls()
        twin.desired = doc["desired"]
        twin.reported = doc["reported"]
        twin.desired_version = doc["version"]["desired"]
        twin.reported_version = doc["version"]["reported"]
        twin.desired_meta = doc["metadata"]["desired"]
        twin.reported_meta = doc["metadata"]["reported"]
        twin.ack = doc.get("ack")
        twin.state = doc.get("state")
        twin.delta_sent = doc.get("delta_sent")
        for name in ("desired", "reported", "desired_meta", "reported_meta"):
            if type(getattr(twin, name)) is not dict:
                raise ValueError(f"{name} is not an object")
        if type(twin.desired_version) is not int or type(twin.reported_version) is not int:
            raise ValueError("versions are not integers")
        return twin

    def delta(self) -> dict[str, Any]:
        return engine.delta(self.desired, self.reported)

    def delta_message(self) -> dict[str, Any] | None:
        """The retained delta message the device should hold (None: clear it)."""
        current = self.delta()
        return {"version": self.desired_version, "delta": current} if current else None

    def view(self, now: float) -> dict[str, Any]:
        """The full twin as ``twin/get/accepted`` shows it."""
        return {
            "desired": self.desired,
            "reported": self.reported,
            "delta": self.delta(),
            "version": {"desired": self.desired_version, "reported": self.reported_version},
            "metadata": {"desired": self.desired_meta, "reported": self.reported_meta},
            "ack": self.ack,
            "state": self.state,
            "timestamp": now,
        }


# ------------------------------------------------------------------ service ----


def topic(device: str, *levels: str) -> str:
    """``$edge/devices/{device}/{levels...}``."""
    return "/".join((TOPIC_ROOT, device, *levels))


SUBSCRIPTIONS: Final = (
    f"{TOPIC_ROOT}/+/+",
    f"{TOPIC_ROOT}/+/twin/+",
    f"{TOPIC_ROOT}/+/telemetry/#",
)
"""The filters the node subscribes to for the device API (route filters come on top).
Wider than the API's topics so that a misspelt operation (``twin/updte``) is answered
with an error instead of silence."""

# Topics the node publishes itself: seen again (e.g. through a wide route filter, or a
# broker without no-local), they are ignored, never answered, so nothing can loop.
_OWN_SUFFIXES: Final = frozenset(
    {
        ("twin", "update", "accepted"),
        ("twin", "update", "rejected"),
        ("twin", "get", "accepted"),
        ("twin", "get", "rejected"),
        ("twin", "delta"),
        ("state", "rejected"),
        ("rejected",),
    }
)


class TwinService:
    """The device API of one node: twins, state and telemetry of its known devices."""

    def __init__(
        self,
        store: TwinStore,
        devices: Iterable[DeviceSpec] = (),
        routes: RouteTable | None = None,
        *,
        now: float = 0.0,
        uplink_encoder: UplinkEncoder = flat_uplink,
    ) -> None:
        self.store = store
        self.routes = routes if routes is not None else RouteTable()
        self.counters: Counter[str] = Counter()
        self._encode_uplink = uplink_encoder
        self._known: set[str] = set()
        self._twins: dict[str, Twin] = {}
        self._startup_actions: list[Action] = []
        self._log_window_start = float("-inf")
        self._logged_in_window = 0
        for spec in devices:
            self._startup_actions += self.add_device(spec, now)

    # ------------------------------------------------------------ devices ----

    def devices(self) -> list[str]:
        return sorted(self._known)

    def is_known(self, device: str) -> bool:
        return device in self._known

    def add_device(self, spec: DeviceSpec, now: float) -> list[Action]:
        """Serve ``spec.name``; its desired document becomes ``spec.desired`` if given.

        Twin state already in the store (from before a restart) is kept. Returns the
        delta message to publish if the desired document changed it.
        """
        self._known.add(spec.name)
        self._twin(spec.name)
        if spec.desired is None:
            return []
        return self.set_desired(spec.name, spec.desired, now)

    def remove_device(self, device: str, *, forget: bool = False) -> list[Action]:
        """Stop serving ``device`` (its retained delta is cleared); ``forget`` also
        deletes its twin from the store."""
        if device not in self._known:
            return []
        self._known.discard(device)
        self._twins.pop(device, None)
        if forget:
            self.store.delete_twin(device)
        return [Publish(topic(device, "twin", "delta"), b"", retain=True)]

    def startup_actions(self) -> list[Action]:
        """Actions produced while adding the constructor's devices (taken once)."""
        actions, self._startup_actions = self._startup_actions, []
        return actions

    def twin(self, device: str) -> dict[str, Any]:
        """The full twin of a known device (KeyError otherwise), as ``get`` answers."""
        if device not in self._known:
            raise KeyError(f"unknown device {device!r}")
        return self._twin(device).view(0.0)

    def forget_cached(self) -> None:
        """Drop the twins held in memory: the next use of each reads the store again
        (after changes that could not all be stored)."""
        self._twins.clear()

    def _twin(self, device: str) -> Twin:
        cached = self._twins.get(device)
        if cached is not None:
            return cached
        stored = self.store.get_twin(device)
        twin = Twin()
        if stored is not None:
            try:
                twin = Twin.from_doc(json.loads(stored))
            except (ValueError, KeyError, TypeError) as exc:
                # Cannot happen with documents this module wrote; start over rather than
                # refuse to serve the device, and say so.
                self.counters["twin_unreadable"] += 1
                log.error("twin of device %r in the store is unreadable (%s); reset", device, exc)
        self._twins[device] = twin
        return twin

    def _save(self, device: str, twin: Twin) -> None:
        """Persist then cache; StoreError leaves the cached twin as it was."""
        self.store.put_twin(device, encode_json(twin.to_doc()))
        self._twins[device] = twin

    # ------------------------------------------------------------ desired ----

    def set_desired(
        self, device: str, desired: dict[str, Any], now: float, *, merge: bool = False
    ) -> list[Action]:
        """Replace (or, with ``merge``, merge-patch) the desired document of ``device``.

        Cloud-wins: this is the only way desired changes. KeyError for an unknown device,
        TwinError/TwinLimitError for a bad document, StoreError if it cannot be stored.
        Returns the delta message to publish if the delta changed.
        """
        if device not in self._known:
            raise KeyError(f"unknown device {device!r}")
        old = self._twin(device)
        # Replacing is merging into {}: nulls vanish, limits are checked the same way.
        new_desired = engine.merge_patch(old.desired if merge else {}, desired)
        if _same(new_desired, old.desired):
            return []
        twin = old.copy()
        twin.desired = new_desired
        twin.desired_version += 1
        twin.desired_meta = engine.stamp(
            old.desired_meta, _diff_patch(old.desired, new_desired), now
        )
        actions = self._delta_actions(device, twin)
        self._save(device, twin)
        self.counters["desired_changes"] += 1
        return actions

    def resync(self) -> list[Publish]:
        """What to publish after (re)connecting to the broker: every known device's
        retained delta, or an empty retained message clearing a stale one (a restarted
        broker may have lost or kept retained messages)."""
        actions: list[Publish] = []
        for device in sorted(self._known):
            message = self._twin(device).delta_message()
            payload = b"" if message is None else encode_json(message)
            actions.append(Publish(topic(device, "twin", "delta"), payload, retain=True))
        return actions

    def _delta_actions(self, device: str, twin: Twin) -> list[Action]:
        """Set ``twin.delta_sent``; the publish (or clear) if it differs from before."""
        message = twin.delta_message()
        sent = twin.delta_sent
        if (message is None and sent is None) or (
            message is not None and sent is not None and _same(message, sent)
        ):
            return []
        twin.delta_sent = message
        delta_topic = topic(device, "twin", "delta")
        if message is None:
            self.counters["delta_cleared"] += 1
            return [Publish(delta_topic, b"", retain=True)]
        self.counters["delta_published"] += 1
        return [Publish(delta_topic, encode_json(message), retain=True)]

    # ------------------------------------------------------------ messages ----

    def handle(self, topic_name: str, payload: bytes, now: float) -> list[Action]:
        """Actions for one MQTT message."""
        return self.handle_many([(topic_name, payload)], now)

    def handle_many(self, messages: Sequence[tuple[str, bytes]], now: float) -> list[Action]:
        """Actions for a batch of MQTT messages, in order (routes matched in one call)."""
        topics = [message[0] for message in messages]
        parsed = [self._parse_topic(name) for name in topics]
        telemetry_of_known = [
            p is not None and p[1] == "telemetry" and p[0] in self._known for p in parsed
        ]
        try:
            decisions = self.routes.decide_many(topics, telemetry_of_known)
        except TopicError:
            decisions = [
                self._decide_one(name, flag)
                for name, flag in zip(topics, telemetry_of_known, strict=True)
            ]
        actions: list[Action] = []
        for (name, payload), where, decision in zip(messages, parsed, decisions, strict=True):
            self.counters["messages"] += 1
            try:
                actions += self._dispatch(name, payload, where, decision, now)
            except Exception:  # a bug must cost one message, not the device layer
                self.counters["internal_errors"] += 1
                log.exception("device layer failed on a message on %r", name)
        return actions

    def _decide_one(self, name: str, flag: bool) -> RouteDecision:
        try:
            return self.routes.decide(name, flag)
        except TopicError:
            self.counters["invalid_topics"] += 1
            return RouteDecision(None)

    @staticmethod
    def _parse_topic(name: str) -> tuple[str, str, tuple[str, ...]] | None:
        """(device, operation, rest) of a ``$edge/devices/...`` topic, else None."""
        levels = name.split("/")
        if len(levels) < 4 or levels[0] != "$edge" or levels[1] != "devices":
            return None
        device, rest = levels[2], tuple(levels[3:])
        if rest in (("twin", "update"), ("twin", "get"), ("state",)):
            return device, "/".join(rest), rest
        if rest[0] == "telemetry":
            return device, "telemetry", rest
        if rest in _OWN_SUFFIXES:
            return device, "own", rest
        return device, "unknown", rest

    def _dispatch(
        self,
        name: str,
        payload: bytes,
        where: tuple[str, str, tuple[str, ...]] | None,
        decision: RouteDecision,
        now: float,
    ) -> list[Action]:
        actions = self._route(name, payload, where, decision, now)
        if where is None:
            return actions
        device, operation, _ = where
        if operation == "own":
            return actions
        if not device:
            # Nowhere to answer: "$edge/devices//..." correlates with no device.
            self.counters["uncorrelatable"] += 1
            self._warn(now, "message on %r names no device; dropped", name)
            return actions
        if operation == "twin/update":
            return actions + self._update(device, payload, now)
        if operation == "twin/get":
            return actions + self._get(device, payload, now)
        if operation == "state":
            return actions + self._state(device, payload, now)
        if operation == "telemetry":
            return actions + self._telemetry_checks(device, payload, decision, now)
        return actions + self._reject(
            device,
            topic(device, "rejected"),
            None,
            Rejection(NOT_FOUND, f"unknown topic {name!r}"),
            now,
        )

    # ------------------------------------------------------------ replies ----

    def _warn(self, now: float, message: str, *args: Any) -> None:
        """A bad-input warning, at most LOG_BURST per LOG_WINDOW seconds of ``now``."""
        if not 0 <= now - self._log_window_start < LOG_WINDOW:
            self._log_window_start = now
            self._logged_in_window = 0
        if self._logged_in_window >= LOG_BURST:
            self.counters["log_suppressed"] += 1
            return
        self._logged_in_window += 1
        log.warning(message, *args)

    def _reject(
        self, device: str, reply_topic: str, token: str | None, rejection: Rejection, now: float
    ) -> list[Action]:
        self.counters["rejected"] += 1
        self.counters[f"rejected_{rejection.code}"] += 1
        self._warn(now, "device %r: %s (%d)", device, rejection.message, rejection.code)
        body: dict[str, Any] = {"code": rejection.code, "message": rejection.message}
        if token is not None:
            body["clientToken"] = token
        body["timestamp"] = now
        return [Publish(reply_topic, encode_json(body))]

    def _uplink(
        self, kind: str, body: dict[str, Any], priority: int, ttl: float | None, key: str | None
    ) -> Uplink:
        self.counters[f"uplink_{kind}"] += 1
        return Uplink(self._encode_uplink(kind, body), priority, ttl, key, kind)

    # ------------------------------------------------------------- update ----

    def _update(self, device: str, payload: bytes, now: float) -> list[Action]:
        rejected = topic(device, "twin", "update", "rejected")
        doc, problem = _parse_object(payload)
        token, token_problem = _read_token(doc, payload)
        if problem is None and token_problem is not None:
            problem = Rejection(BAD_REQUEST, token_problem)
        if problem is None and device not in self._known:
            problem = Rejection(NOT_FOUND, f"unknown device {device!r}")
        if problem is not None or doc is None:
            assert problem is not None
            return self._reject(device, rejected, token, problem, now)
        try:
            twin, changed, ack_changed, delta_actions = self._apply_update(device, doc, now)
        except Rejection as rejection:
            return self._reject(device, rejected, token, rejection, now)
        accepted: dict[str, Any] = {"version": twin.reported_version}
        if token is not None:
            accepted["clientToken"] = token
        accepted["timestamp"] = now
        actions: list[Action] = [
            Publish(topic(device, "twin", "update", "accepted"), encode_json(accepted))
        ]
        self.counters["updates_accepted"] += 1
        if changed:
            self.counters["reports_changed"] += 1
        else:
            self.counters["reports_unchanged"] += 1
        if changed or ack_changed:
            actions += delta_actions
            actions.append(
                self._uplink(
                    "twin",
                    {
                        "device": device,
                        "reported": twin.reported,
                        "version": twin.reported_version,
                        "ack": twin.ack,
                        "timestamp": now,
                    },
                    TWIN_UPLINK_PRIORITY,
                    None,
                    f"twin/{device}",
                )
            )
        if ack_changed:
            # The hub keeps a device's last ack from "device-state" records (its Device
            # status.lastAck); the twin record above carries it too, for the full picture.
            actions.append(
                self._uplink(
                    "device-state",
                    {"device": device, "ack": twin.ack, "timestamp": now},
                    STATE_UPLINK_PRIORITY,
                    None,
                    f"device-ack/{device}",
                )
            )
        return actions

    def _apply_update(
        self, device: str, doc: dict[str, Any], now: float
    ) -> tuple[Twin, bool, bool, list[Action]]:
        """Validate and apply an update: (twin, reported changed, ack changed, delta
        actions); Rejection for bad input, with the twin untouched."""
        if "desired" in doc:
            raise Rejection(FORBIDDEN, "desired is owned by the cloud; a device writes reported")
        unknown = sorted(set(doc) - UPDATE_FIELDS)
        if unknown:
            raise Rejection(BAD_REQUEST, f"unknown field {unknown[0]!r}")
        if "reported" not in doc and "ack" not in doc:
            raise Rejection(BAD_REQUEST, "an update needs reported or ack")
        old = self._twin(device)
        patch = doc.get("reported", {})
        if type(patch) is not dict:
            raise Rejection(BAD_REQUEST, f"reported must be a JSON object, not {_json_type(patch)}")
        new_ack = self._check_ack(doc["ack"], old, now) if "ack" in doc else old.ack
        try:
            new_reported = engine.merge_patch(old.reported, patch)
        except TwinLimitError as exc:
            raise Rejection(TOO_LARGE, str(exc)) from None
        except TwinError as exc:
            raise Rejection(BAD_REQUEST, str(exc)) from None
        changed = not _same(new_reported, old.reported)
        ack_changed = new_ack is not old.ack and not _same_ack(new_ack, old.ack)
        if not changed and not ack_changed:
            return old, False, False, []
        twin = old.copy()
        delta_actions: list[Action] = []
        if changed:
            twin.reported = new_reported
            twin.reported_version += 1
            twin.reported_meta = engine.stamp(
                old.reported_meta, _diff_patch(old.reported, new_reported), now
            )
            delta_actions = self._delta_actions(device, twin)
        if ack_changed:
            twin.ack = new_ack
        try:
            self._save(device, twin)
        except StoreError as exc:
            raise Rejection(INTERNAL, f"the twin could not be stored: {exc}") from None
        return twin, changed, ack_changed, delta_actions

    def _check_ack(self, ack: Any, twin: Twin, now: float) -> dict[str, Any]:
        if type(ack) is not dict:
            raise Rejection(BAD_REQUEST, f"ack must be a JSON object, not {_json_type(ack)}")
        unknown = sorted(set(ack) - ACK_FIELDS)
        if unknown:
            raise Rejection(BAD_REQUEST, f"unknown ack field {unknown[0]!r}")
        version = ack.get("version")
        if type(version) is not int:
            raise Rejection(BAD_REQUEST, "ack.version must be an integer")
        if not 1 <= version <= twin.desired_version:
            raise Rejection(
                BAD_REQUEST,
                f"ack.version {version} is not a desired version "
                f"(the desired version is {twin.desired_version})",
            )
        status = ack.get("status")
        if status not in ACK_STATUSES:
            raise Rejection(
                BAD_REQUEST, f"ack.status must be one of {', '.join(sorted(ACK_STATUSES))}"
            )
        result: dict[str, Any] = {"version": version, "status": status}
        if "reason" in ack:
            reason = ack["reason"]
            if type(reason) is not str or len(reason) > MAX_REASON_CHARS:
                raise Rejection(
                    BAD_REQUEST,
                    f"ack.reason must be a string of at most {MAX_REASON_CHARS} characters",
                )
            try:
                reason.encode()
            except UnicodeEncodeError:
                raise Rejection(BAD_REQUEST, "ack.reason is not valid UTF-8") from None
            result["reason"] = reason
        result["timestamp"] = now
        return result

    # ---------------------------------------------------------------- get ----

    def _get(self, device: str, payload: bytes, now: float) -> list[Action]:
        rejected = topic(device, "twin", "get", "rejected")
        token: str | None = None
        if payload.strip(STATE_WHITESPACE):
            doc, problem = _parse_object(payload)
            token, token_problem = _read_token(doc, payload)
            if problem is None and token_problem is not None:
                problem = Rejection(BAD_REQUEST, token_problem)
            if problem is None and doc is not None:
                unknown = sorted(set(doc) - GET_FIELDS)
                if unknown:
                    problem = Rejection(BAD_REQUEST, f"unknown field {unknown[0]!r}")
            if problem is not None:
                return self._reject(device, rejected, token, problem, now)
        if device not in self._known:
            return self._reject(
                device, rejected, token, Rejection(NOT_FOUND, f"unknown device {device!r}"), now
            )
        view = self._twin(device).view(now)
        if token is not None:
            view["clientToken"] = token
        self.counters["gets"] += 1
        return [Publish(topic(device, "twin", "get", "accepted"), encode_json(view))]

    # -------------------------------------------------------------- state ----

    def _state(self, device: str, payload: bytes, now: float) -> list[Action]:
        rejected = topic(device, "state", "rejected")
        value = payload.strip(STATE_WHITESPACE)
        if value not in (b"online", b"offline"):
            shown = value[:32].decode("utf-8", "replace")
            return self._reject(
                device,
                rejected,
                None,
                Rejection(BAD_REQUEST, f'state must be "online" or "offline", not {shown!r}'),
                now,
            )
        if device not in self._known:
            return self._reject(
                device, rejected, None, Rejection(NOT_FOUND, f"unknown device {device!r}"), now
            )
        state = value.decode()
        old = self._twin(device)
        if old.state is not None and old.state.get("value") == state:
            return []
        twin = old.copy()
        twin.state = {"value": state, "timestamp": now}
        try:
            self._save(device, twin)
        except StoreError as exc:
            return self._reject(
                device,
                rejected,
                None,
                Rejection(INTERNAL, f"state could not be stored: {exc}"),
                now,
            )
        self.counters[f"state_{state}"] += 1
        return [
            self._uplink(
                "device-state",
                {"device": device, "state": state, "timestamp": now},
                STATE_UPLINK_PRIORITY,
                None,
                f"device-state/{device}",
            )
        ]

    # ---------------------------------------------------------- telemetry ----

    def _telemetry_checks(
        self, device: str, payload: bytes, decision: RouteDecision, now: float
    ) -> list[Action]:
        """Errors for telemetry that cannot go where it should (routing already done)."""
        if device in self._known:
            self.counters["telemetry"] += 1
            if len(payload) > MAX_TELEMETRY_BYTES:
                return self._reject(
                    device,
                    topic(device, "rejected"),
                    None,
                    Rejection(
                        TOO_LARGE,
                        f"telemetry payload is {len(payload)} bytes, over {MAX_TELEMETRY_BYTES}",
                    ),
                    now,
                )
            return []
        if decision.upstream is not None or decision.republish:
            return []  # an explicit route wants it: not an error
        return self._reject(
            device,
            topic(device, "rejected"),
            None,
            Rejection(NOT_FOUND, f"unknown device {device!r}"),
            now,
        )

    def _route(
        self,
        name: str,
        payload: bytes,
        where: tuple[str, str, tuple[str, ...]] | None,
        decision: RouteDecision,
        now: float,
    ) -> list[Action]:
        actions: list[Action] = [Publish(target, payload) for target in decision.republish]
        if decision.republish:
            self.counters["republished"] += len(decision.republish)
        upstream = decision.upstream
        if upstream is None:
            return actions
        if len(payload) > MAX_TELEMETRY_BYTES:
            self.counters["uplink_too_large"] += 1
            self._warn(
                now, "message on %r is %d bytes, too large to go upstream", name, len(payload)
            )
            return actions
        try:
            text, encoding = payload.decode("utf-8"), "utf-8"
        except UnicodeDecodeError:
            text, encoding = base64.b64encode(payload).decode("ascii"), "base64"
        device = where[0] if where is not None and where[0] else None
        body = {
            "device": device,
            "topic": name,
            "payload": text,
            "encoding": encoding,
            "timestamp": now,
        }
        try:
            actions.append(self._uplink("telemetry", body, upstream.priority, upstream.ttl, None))
        except ValueError as exc:  # the encoder's envelope limit (base64 grows a payload)
            self.counters["uplink_too_large"] += 1
            self._warn(now, "message on %r cannot go upstream: %s", name, exc)
        return actions

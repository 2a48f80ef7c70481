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

The report path runs on bytes: each device's twin is a :class:`edgenode.devtwin.DeviceTwin`
(Rust when the extension is built) that takes the payload bytes and hands back the
reply, the delta message, the uplink record bodies and the document to store, so no
Python object is built for the twin documents on the hot path.

Bad input never raises: it becomes an error reply on the operation's ``.../rejected``
topic (never on a topic with an empty device id), a counter in :attr:`TwinService.counters`
and a log line, and nothing already accepted is touched.
"""

from __future__ import annotations

import json
import logging
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, Final, Protocol

from edgenode import twin as engine
from edgenode._pure.devbatch import telemetry_body
from edgenode._pure.devtwin import read_payload, read_token
from edgenode.devices.actions import Action, Applied, Publish, Uplink
from edgenode.devices.config import DeviceSpec
from edgenode.devices.kubeedge.front import PREFIX as KUBEEDGE_PREFIX
from edgenode.devices.kubeedge.front import KubeEdgeFront
from edgenode.devices.routes import RouteDecision, RouteTable
from edgenode.devtwin import DeviceTwin
from edgenode.errors import StoreError, TopicError
from edgenode.uplink import MAX_BODY_BYTES

log = logging.getLogger("edgenode.devices")

TOPIC_ROOT: Final = "$edge/devices"
TWIN_FORMAT: Final = 1
MAX_PAYLOAD_BYTES: Final = 4 * 1024 * 1024
"""Twin payloads up to this size are parsed (to find the clientToken of an error reply);
larger ones are rejected unread. The twin engine's own limits apply after parsing.
(The same limit as ``edgenode.devtwin.MAX_PAYLOAD_BYTES``, which applies it.)"""
MAX_TELEMETRY_BYTES: Final = 192 * 1024
"""Largest telemetry payload sent upstream (base64 grows it by a third; the node's
uplink records stay below 256 KiB)."""
TWIN_UPLINK_PRIORITY: Final = 3
STATE_UPLINK_PRIORITY: Final = 3
"""The same as TWIN_UPLINK_PRIORITY: the core's batch call (``edgenode.devtwin.handle_batch``)
gives a report's twin and device-state records one priority."""
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

GET_FIELDS: Final = frozenset({"clientToken"})


class TwinStore(Protocol):
    """What TwinService needs of :class:`~edgenode.store.Store` (the device bus hands
    it a wrapper that holds twin writes until a batch's uplinks are appended)."""

    def put_twin(self, device: str, doc: bytes) -> None: ...
    def get_twin(self, device: str) -> bytes | None: ...
    def delete_twin(self, device: str) -> bool: ...


def encode_json(value: Any) -> bytes:
    """Compact UTF-8 JSON (the twin engine guarantees the documents are JSON)."""
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode()


class Rejection(Exception):
    """Internal: an input is refused with this code and message."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def _read_request(payload: bytes) -> tuple[dict[str, Any] | None, str | None, Rejection | None]:
    """(object, clientToken, problem) of a request payload read by the Python parser."""
    doc, code, message = read_payload(payload)
    token, token_problem = read_token(doc, payload)
    if code:
        return doc, token, Rejection(code, message)
    if token_problem is not None:
        return doc, None, Rejection(BAD_REQUEST, token_problem)
    return doc, token, None


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
        device_twin: Callable[..., DeviceTwin] = DeviceTwin,
        kubeedge_node: str | None = None,
    ) -> None:
        # device_twin: the DeviceTwin class (of the chosen backend unless a test pins one).
        # kubeedge_node: also serve KubeEdge's device API, for the node of that name.
        self._device_twin = device_twin
        self.store = store
        self.routes = routes if routes is not None else RouteTable()
        self.counters: Counter[str] = Counter()
        self._specs: dict[str, DeviceSpec] = {}
        self._twins: dict[str, DeviceTwin] = {}
        self._log_window_start = float("-inf")
        self._logged_in_window = 0
        self.kubeedge = (
            None
            if kubeedge_node is None
            else KubeEdgeFront(kubeedge_node, self.counters, self._warn)
        )
        self._startup_actions: list[Action] = self.serve(devices, now)

    # ------------------------------------------------------------ devices ----

    def devices(self) -> list[str]:
        return sorted(self._specs)

    def is_known(self, device: str) -> bool:
        return device in self._specs

    def serve(self, specs: Iterable[DeviceSpec], now: float) -> list[Action]:
        """Serve exactly these devices: the others are removed (their twins stay in the
        store), these added or updated as :meth:`add_device` does; KubeEdge clients are
        told once what changed."""
        wanted = list(specs)
        names = {spec.name for spec in wanted}
        actions: list[Action] = []
        for name in sorted(self._specs):
            if name not in names:
                actions += self._remove(name, forget=False)
        for spec in wanted:
            actions += self._add(spec, now)
        return actions + self._kubeedge_serve(now)

    def add_device(self, spec: DeviceSpec, now: float) -> list[Action]:
        """Serve ``spec.name``; its desired document becomes ``spec.desired`` if given.

        Twin state already in the store (from before a restart) is kept. Returns the
        delta message to publish if the desired document changed it.
        """
        return self._add(spec, now) + self._kubeedge_serve(now)

    def remove_device(self, device: str, *, forget: bool = False) -> list[Action]:
        """Stop serving ``device`` (its retained delta is cleared); ``forget`` also
        deletes its twin from the store."""
        if device not in self._specs:
            return []
        return self._remove(device, forget=forget) + self._kubeedge_serve(0.0)

    def _add(self, spec: DeviceSpec, now: float) -> list[Action]:
        self._specs[spec.name] = spec
        self._twin(spec.name)
        if spec.desired is None:
            return []
        return self.set_desired(spec.name, spec.desired, now, version=spec.desired_version)

    def _remove(self, device: str, *, forget: bool) -> list[Action]:
        del self._specs[device]
        self._twins.pop(device, None)
        if forget:
            self.store.delete_twin(device)
        return [Publish(topic(device, "twin", "delta"), b"", retain=True)]

    def _kubeedge_serve(self, now: float) -> list[Action]:
        if self.kubeedge is None:
            return []
        specs = {
            name: None if spec.kubeedge is None else {"kubeedge": spec.kubeedge}
            for name, spec in self._specs.items()
        }
        return self.kubeedge.serve(specs, self, now)

    def subscriptions(self) -> tuple[str, ...]:
        """The filters the device APIs need (route filters come on top)."""
        if self.kubeedge is None:
            return SUBSCRIPTIONS
        return (*SUBSCRIPTIONS, *self.kubeedge.subscriptions())

    def startup_actions(self) -> list[Action]:
        """Actions produced while adding the constructor's devices (taken once)."""
        actions, self._startup_actions = self._startup_actions, []
        return actions

    def twin(self, device: str) -> dict[str, Any]:
        """The full twin of a known device (KeyError otherwise), as ``get`` answers."""
        if device not in self._specs:
            raise KeyError(f"unknown device {device!r}")
        view: dict[str, Any] = json.loads(self._twin(device).view(0.0))
        return view

    def view(self, device: str, now: float) -> bytes | None:
        """The twin view of a served device as ``twin/get`` answers it (None: unknown)."""
        if device not in self._specs:
            return None
        return self._twin(device).view(now)

    @property
    def known_devices(self) -> Mapping[str, DeviceSpec]:
        """The devices this service knows (their telemetry goes upstream by default)."""
        return self._specs

    @property
    def cached_twins(self) -> dict[str, DeviceTwin]:
        """The twins held in memory, by device (served devices only): the core's batch
        call applies reports to them directly."""
        return self._twins

    def forget_cached(self) -> None:
        """Drop the twins held in memory: the next use of each reads the store again
        (after changes that could not all be stored)."""
        self._twins.clear()

    def _twin(self, device: str) -> DeviceTwin:
        cached = self._twins.get(device)
        if cached is not None:
            return cached
        stored = self.store.get_twin(device)
        twin = self._device_twin(device)
        if stored is not None:
            try:
                twin = self._device_twin(device, stored)
            except ValueError as exc:
                # Cannot happen with documents this module wrote; start over rather than
                # refuse to serve the device, and say so.
                self.counters["twin_unreadable"] += 1
                log.error("twin of device %r in the store is unreadable (%s); reset", device, exc)
        self._twins[device] = twin
        return twin

    def _save(self, device: str, twin: DeviceTwin, document: bytes) -> None:
        """Persist, then make the twin's prepared state current; StoreError leaves the
        twin as it was."""
        self.store.put_twin(device, document)
        twin.commit()

    # ------------------------------------------------------------ desired ----

    def set_desired(
        self,
        device: str,
        desired: dict[str, Any],
        now: float,
        *,
        merge: bool = False,
        version: int | None = None,
    ) -> list[Action]:
        """Replace (or, with ``merge``, merge-patch) the desired document of ``device``;
        ``version`` is the hub's number for it (see ``DeviceTwin.set_desired``).

        Cloud-wins: this is the only way desired changes. KeyError for an unknown device,
        TwinError/TwinLimitError for a bad document, StoreError if it cannot be stored.
        Returns the delta message to publish if the delta changed.
        """
        if device not in self._specs:
            raise KeyError(f"unknown device {device!r}")
        twin = self._twin(device)
        # Checked as a merge patch (the engine's errors), then handed over as bytes.
        engine.merge_patch({}, desired)
        outcome = twin.set_desired(encode_json(desired), now, merge, version)
        if outcome.document is None:
            return []
        self._save(device, twin, outcome.document)
        self.counters["desired_changes"] += 1
        actions = self._delta_actions(device, outcome.delta)
        if self.kubeedge is not None:
            actions += self.kubeedge.desired_changed(device, twin.view(now), now)
        return actions

    def resync(self, now: float = 0.0) -> list[Publish]:
        """What to publish after (re)connecting to the broker: every known device's
        retained delta, or an empty retained message clearing a stale one (a restarted
        broker may have lost or kept retained messages); KubeEdge deltas pending."""
        actions: list[Publish] = []
        for device in sorted(self._specs):
            message = self._twin(device).delta_message()
            payload = b"" if message is None else message
            actions.append(Publish(topic(device, "twin", "delta"), payload, retain=True))
        if self.kubeedge is not None:
            actions += self.kubeedge.resync(self, now)
        return actions

    def _delta_actions(self, device: str, delta: bytes | None) -> list[Action]:
        """The retained delta publish (``b""``: clear) of an outcome, if it moved."""
        if delta is None:
            return []
        if delta:
            self.counters["delta_published"] += 1
        else:
            self.counters["delta_cleared"] += 1
        return [Publish(topic(device, "twin", "delta"), delta, retain=True)]

    # ------------------------------------------------------------ messages ----

    def handle(self, topic_name: str, payload: bytes, now: float) -> list[Action]:
        """Actions for one MQTT message."""
        return self.handle_many([(topic_name, payload)], now)

    def handle_many(self, messages: Sequence[tuple[str, bytes]], now: float) -> list[Action]:
        """Actions for a batch of MQTT messages, in order (routes matched in one call)."""
        topics = [message[0] for message in messages]
        parsed = [self._parse_topic(name) for name in topics]
        telemetry_of_known = [
            p is not None and p[1] == "telemetry" and p[0] in self._specs for p in parsed
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
            if self.kubeedge is not None and name.startswith(KUBEEDGE_PREFIX):
                actions += self.kubeedge.handle(name, payload, self, now)
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
        """An uplink record; ValueError if its body could not fit an envelope."""
        return self._uplink_encoded(kind, encode_json(body), priority, ttl, key)

    def _uplink_encoded(
        self, kind: str, data: bytes, priority: int, ttl: float | None, key: str | None
    ) -> Uplink:
        """An uplink record of a body already encoded (compact JSON); ValueError if it
        could not fit an envelope."""
        if len(data) > MAX_BODY_BYTES:
            raise ValueError(f"uplink body of {len(data)} bytes exceeds {MAX_BODY_BYTES}")
        self.counters[f"uplink_{kind}"] += 1
        return Uplink(kind, data, priority, ttl, key)

    def _uplink_raw(self, kind: str, body: bytes, priority: int, key: str) -> Uplink:
        """An uplink record around a body that is already compact JSON (a twin record,
        bounded by the twin engine's limits)."""
        self.counters[f"uplink_{kind}"] += 1
        return Uplink(kind, body, priority, None, key)

    # ------------------------------------------------------------- update ----

    def _update(self, device: str, payload: bytes, now: float) -> list[Action]:
        rejected = topic(device, "twin", "update", "rejected")
        if device not in self._specs:
            # Parse errors first, then the token, then the device (as for a known one).
            _, token, problem = _read_request(payload)
            if problem is None:
                problem = Rejection(NOT_FOUND, f"unknown device {device!r}")
            return self._reject(device, rejected, token, problem, now)
        applied = self.apply_report(device, payload, now)
        if applied.code:
            return self._reject(
                device, rejected, applied.token, Rejection(applied.code, applied.message), now
            )
        accepted = Publish(topic(device, "twin", "update", "accepted"), applied.reply)
        return [accepted, *applied.actions]

    def apply_report(self, device: str, payload: bytes, now: float) -> Applied:
        """Apply a report (a ``twin/update`` payload) to a served device's twin and store
        it: the retained delta and uplink records to carry out, or the refusal."""
        twin = self._twin(device)
        outcome = twin.apply_report(payload, now)
        token = outcome.token
        if outcome.code:
            return Applied(code=outcome.code, message=outcome.message, token=token)
        if outcome.document is not None:
            try:
                self._save(device, twin, outcome.document)
            except StoreError as exc:
                return Applied(
                    code=INTERNAL, message=f"the twin could not be stored: {exc}", token=token
                )
        self.counters["updates_accepted"] += 1
        if outcome.changed:
            self.counters["reports_changed"] += 1
        else:
            self.counters["reports_unchanged"] += 1
        actions: list[Action] = []
        if outcome.twin_uplink is not None:
            actions += self._delta_actions(device, outcome.delta)
            actions.append(
                self._uplink_raw(
                    "twin", outcome.twin_uplink, TWIN_UPLINK_PRIORITY, f"twin/{device}"
                )
            )
        if outcome.ack_uplink is not None:
            # The hub keeps a device's last ack from "device-state" records (its Device
            # status.lastAck); the twin record above carries it too, for the full picture.
            actions.append(
                self._uplink_raw(
                    "device-state",
                    outcome.ack_uplink,
                    STATE_UPLINK_PRIORITY,
                    f"device-ack/{device}",
                )
            )
        return Applied(actions, token=token, reply=outcome.reply)

    # ---------------------------------------------------------------- get ----

    def _get(self, device: str, payload: bytes, now: float) -> list[Action]:
        rejected = topic(device, "twin", "get", "rejected")
        token: str | None = None
        if payload.strip(STATE_WHITESPACE):
            doc, token, problem = _read_request(payload)
            if problem is None and doc is not None:
                unknown = sorted(set(doc) - GET_FIELDS)
                if unknown:
                    problem = Rejection(BAD_REQUEST, f"unknown field {unknown[0]!r}")
            if problem is not None:
                return self._reject(device, rejected, token, problem, now)
        if device not in self._specs:
            return self._reject(
                device, rejected, token, Rejection(NOT_FOUND, f"unknown device {device!r}"), now
            )
        view = self._twin(device).view(now, token)
        self.counters["gets"] += 1
        return [Publish(topic(device, "twin", "get", "accepted"), view)]

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
        if device not in self._specs:
            return self._reject(
                device, rejected, None, Rejection(NOT_FOUND, f"unknown device {device!r}"), now
            )
        applied = self.store_state(device, value.decode(), now)
        if applied.code:
            return self._reject(
                device, rejected, None, Rejection(applied.code, applied.message), now
            )
        return applied.actions

    def store_state(self, device: str, state: str, now: float) -> Applied:
        """Keep ``state`` as a served device's state: stored, and sent upstream when it
        changed (the device-state record)."""
        twin = self._twin(device)
        document = twin.set_state(state, now)
        if document is None:
            return Applied()
        try:
            self._save(device, twin, document)
        except StoreError as exc:
            return Applied(code=INTERNAL, message=f"state could not be stored: {exc}")
        self.counters[f"state_{state}"] += 1
        record = self._uplink(
            "device-state",
            {"device": device, "state": state, "timestamp": now},
            STATE_UPLINK_PRIORITY,
            None,
            f"device-state/{device}",
        )
        return Applied([record])

    # ---------------------------------------------------------- telemetry ----

    def _telemetry_checks(
        self, device: str, payload: bytes, decision: RouteDecision, now: float
    ) -> list[Action]:
        """Errors for telemetry that cannot go where it should (routing already done)."""
        if device in self._specs:
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
        device = where[0] if where is not None and where[0] else None
        body = telemetry_body(device, name, payload, now)
        try:
            actions.append(
                self._uplink_encoded("telemetry", body, upstream.priority, upstream.ttl, None)
            )
        except ValueError as exc:  # the encoder's envelope limit (base64 grows a payload)
            self.counters["uplink_too_large"] += 1
            self._warn(now, "message on %r cannot go upstream: %s", name, exc)
        return actions

"""The KubeEdge device API over edgenode's twins, sans-I/O.

Bytes and ``now`` (float seconds) in, :class:`Message` values to publish out; no
sockets, no clock, no randomness (node-initiated messages take their ``event_id`` from
the caller, e.g. :func:`new_event_id`). The node's device layer drives it:

- ``$hw/events/device/{ns}/{name}/twin/update``: :func:`plan_update` reads the request
  against the twin's current view and either refuses it (``plan.refusal``) or gives the
  edgenode report to apply (``plan.report``: a ``$edge/devices/{d}/twin/update`` payload
  for ``DeviceTwin.apply_report``); after the report is stored, :func:`update_replies`
  builds the result, the document (when a value changed) and the delta (while one is
  pending); if the report was refused or could not be stored, :func:`update_refused`
  builds the error result;
- ``.../twin/get``: :func:`answer_get`;
- ``.../state/update``: :func:`plan_state_update` (the state to keep and the result);
- ``$hw/events/node/{node}/membership/get``: :func:`answer_membership_get`; when the
  node's devices change: :func:`membership_updated`;
- whenever desired changes (the hub, ``edgectl twin set``): :func:`delta_message`.

Every answer goes to the request's own ``.../result`` topic with the request's
``event_id``, errors included. Shapes and codes are KubeEdge's; docs/kubeedge.md lists
where the behaviour deliberately differs.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

from edgenode._pure.devtwin import MAX_CLIENT_TOKEN_CHARS
from edgenode.devices.kubeedge import requests, topics, values
from edgenode.devices.kubeedge.requests import PropertyChange, Refusal
from edgenode.devices.kubeedge.topics import DeviceId
from edgenode.devices.kubeedge.twinview import (
    ABSENT,
    Property,
    PropertyTypes,
    TwinView,
    epoch_ms,
    parse_view,
    properties,
    section,
    twin_map,
)
from edgenode.devices.kubeedge.twinview import delta as twin_delta

QOS: Final = 1
BOTH_SIDES: Final = frozenset({"expected", "actual"})

# Map edgenode's refusal codes (DeviceTwin.apply_report, the store) to KubeEdge's.
_KUBEEDGE_CODES: Final = {400: 400, 403: 400, 404: 404, 413: 400, 500: 500}

_encode_compact: Final = json.JSONEncoder(
    ensure_ascii=False, separators=(",", ":"), check_circular=False
).encode


def encode(body: Any) -> bytes:
    """Compact UTF-8 JSON, as every message is written."""
    return _encode_compact(body).encode()


def new_event_id() -> str:
    """A fresh event_id for node-initiated messages (a UUID, as edgecore's)."""
    return str(uuid.uuid4())


@dataclass(frozen=True, slots=True)
class Message:
    """Publish ``payload`` on ``topic`` on the local broker (QoS 1, not retained:
    KubeEdge's results, deltas and documents are events, not state)."""

    topic: str
    payload: bytes
    qos: int = QOS
    retain: bool = False


def _base(event_id: str, now: float) -> dict[str, Any]:
    return {"event_id": event_id, "timestamp": epoch_ms(now)}


def error_result(topic: str, event_id: str, code: int, reason: str, now: float) -> Message:
    """KubeEdge's error result ``{event_id, timestamp, code, reason}`` on ``topic``."""
    return Message(topic, encode({**_base(event_id, now), "code": code, "reason": reason}))


def _refused(topic: str, refusal: Refusal, now: float) -> Message:
    return error_result(topic, refusal.event_id, refusal.code, refusal.reason, now)


def kubeedge_code(edgenode_code: int) -> int:
    """KubeEdge's result code for an edgenode refusal code (413 and 403 become 400)."""
    return _KUBEEDGE_CODES.get(edgenode_code, 400 if edgenode_code < 500 else 500)


# --------------------------------------------------------------- twin/update ----


@dataclass(frozen=True, slots=True)
class UpdatePlan:
    """What to do with one twin/update.

    ``refusal``: publish it and stop (nothing to apply). Otherwise apply ``report`` (an
    edgenode ``twin/update`` payload) to the device's twin, store it, and publish
    :func:`update_replies`. ``before`` is the twin's view the plan was made against.
    """

    device: DeviceId
    event_id: str
    refusal: Message | None = None
    report: bytes | None = None
    keys: tuple[str, ...] = ()
    sides: Mapping[str, frozenset[str]] = field(default_factory=dict)
    """Per property: the sides (expected, actual) the request gave; both for a delete."""
    value_types: Mapping[str, str] = field(default_factory=dict)
    """Per property (not deleted): the type its strings were read with."""
    before: TwinView = field(default_factory=dict)
    types: PropertyTypes = field(default_factory=dict)

    @property
    def result_topic(self) -> str:
        return topics.device_topic(self.device, topics.TWIN_UPDATE_RESULT)


def _replacement(old: Any, new: Any) -> Any:
    """The merge patch value that turns ``old`` into exactly ``new`` (a KubeEdge value
    replaces the whole property: keys of an old object missing from the new one go)."""
    if type(old) is not dict or type(new) is not dict:
        return new
    patch: dict[str, Any] = {key: None for key in old if key not in new}
    for key, value in new.items():
        patch[key] = _replacement(old[key], value) if key in old else value
    return patch


def _value_type(change: PropertyChange, current: Any, types: PropertyTypes) -> str:
    """The type a property's incoming strings are read with: the declared type (as
    edgecore keeps the type a property was created with), else the message's, else the
    type of the property's current value, else ``string``."""
    declared = types.get(change.key)
    if declared is not None:
        return declared
    if change.value_type is not None:
        return change.value_type
    if current is not ABSENT:
        return values.infer_type(current)
    return values.STRING


def plan_update(
    device: DeviceId,
    payload: bytes,
    view: TwinView | bytes | None,
    types: PropertyTypes | None,
    now: float,
) -> UpdatePlan:
    """Read a twin/update of ``device`` against its twin ``view`` (None: the device is
    not served here) and its declared ``types``.

    Each property's ``actual`` becomes a reported value (converted from KubeEdge's string
    by the property's type); ``null`` or type ``deleted`` removes the reported value;
    ``expected`` is checked like edgecore checks it but never written (desired belongs to
    the hub). Checks follow edgecore's order: the payload, then the device, then each
    property (expected before actual); the first problem refuses the whole update.
    """
    topic = topics.device_topic(device, topics.TWIN_UPDATE_RESULT)
    request = requests.read_twin_update(payload)
    if isinstance(request, Refusal):
        return UpdatePlan(device, request.event_id, refusal=_refused(topic, request, now))
    event_id = request.event_id
    if view is None:
        refusal = Refusal(event_id, requests.NOT_FOUND, requests.REASON_UPDATE_NOT_FOUND)
        return UpdatePlan(device, event_id, refusal=_refused(topic, refusal, now))
    before = parse_view(view)
    declared: PropertyTypes = dict(types or {})
    desired = section(before, "desired")
    reported = section(before, "reported")
    patch: dict[str, Any] = {}
    sides: dict[str, frozenset[str]] = {}
    value_types: dict[str, str] = {}
    for change in request.changes:
        current = desired.get(change.key, reported.get(change.key, ABSENT))
        if change.delete:
            # Deleting what is not there is no error: a redelivered QoS 1 message must
            # not turn into one (edgecore: "the request body is wrong").
            patch[change.key] = None
            sides[change.key] = BOTH_SIDES
            continue
        if change.value_type is not None and change.value_type not in values.VALUE_TYPES:
            refusal = Refusal(event_id, requests.BAD_REQUEST, values.REASON_TYPE_NOT_ALLOWED)
            return UpdatePlan(device, event_id, refusal=_refused(topic, refusal, now))
        value_type = _value_type(change, current, declared)
        given: set[str] = set()
        for side, text in (("expected", change.expected), ("actual", change.actual)):
            if text is None:
                continue
            problem = values.validate_value(value_type, text)
            if problem is not None:
                refusal = Refusal(event_id, requests.BAD_REQUEST, problem)
                return UpdatePlan(device, event_id, refusal=_refused(topic, refusal, now))
            given.add(side)
        if change.actual is not None:
            value = values.to_json(change.actual, value_type, current)
            patch[change.key] = _replacement(reported.get(change.key), value)
        sides[change.key] = frozenset(given)
        value_types[change.key] = value_type
    report: dict[str, Any] = {"reported": patch}
    if 0 < len(event_id) <= MAX_CLIENT_TOKEN_CHARS:
        report["clientToken"] = event_id
    return UpdatePlan(
        device,
        event_id,
        report=encode(report),
        keys=tuple(change.key for change in request.changes),
        sides=sides,
        value_types=value_types,
        before=before,
        types=declared,
    )


def update_refused(plan: UpdatePlan, code: int, message: str, now: float) -> Message:
    """The error result when the planned report was refused by the twin (its limits:
    edgenode code 413, shown as KubeEdge's 400) or could not be stored (500)."""
    return error_result(plan.result_topic, plan.event_id, kubeedge_code(code), message, now)


def _result_entry(
    prop: Property | None, shown: frozenset[str], value_type: str | None
) -> dict[str, Any] | None:
    """A property as the update result shows it: the sides the request gave. A property
    the request deleted shows what is left of it (None: nothing); one it named without
    a value to write (only a type, say) shows just that, as edgecore adds it."""
    if prop is None:
        if value_type is None:
            return None
        return {"optional": True, "metadata": {"type": value_type}}
    body = prop.message()
    for side in ("expected", "actual"):
        if side not in shown:
            body.pop(side, None)
    return body


def update_replies(
    plan: UpdatePlan, after: TwinView | bytes, now: float, delta_event_id: str
) -> list[Message]:
    """After the planned report was applied and stored: the result (each property of the
    request as it now is; ``null`` for one that no longer exists), the document
    (``last``/``current`` of each property whose value changed; none if nothing did: an
    identical report changes nothing, not even a timestamp), and the delta while desired
    and reported differ (edgecore publishes it after every update too)."""
    after_view = parse_view(after)
    before_props = properties(plan.before, plan.types)
    after_props = properties(after_view, plan.types)
    twin: dict[str, Any] = {}
    for key in sorted(set(plan.keys)):
        twin[key] = _result_entry(
            after_props.get(key), plan.sides.get(key, frozenset()), plan.value_types.get(key)
        )
    replies = [Message(plan.result_topic, encode({**_base(plan.event_id, now), "twin": twin}))]
    document: dict[str, Any] = {}
    for key in sorted(set(plan.keys)):
        last, current = before_props.get(key), after_props.get(key)
        old = last.actual if last is not None else ABSENT
        new = current.actual if current is not None else ABSENT
        if (old is ABSENT) != (new is ABSENT) or not values.same_json(old, new):
            document[key] = {
                "last": None if last is None else last.message(),
                "current": None if current is None else current.message(),
            }
    if document:
        replies.append(
            Message(
                topics.device_topic(plan.device, topics.TWIN_UPDATE_DOCUMENT),
                encode({**_base(plan.event_id, now), "twin": document}),
            )
        )
    delta = delta_message(plan.device, after_view, plan.types, now, delta_event_id)
    if delta is not None:
        replies.append(delta)
    return replies


def delta_message(
    device: DeviceId,
    view: TwinView | bytes,
    types: PropertyTypes | None,
    now: float,
    event_id: str,
) -> Message | None:
    """KubeEdge's ``twin/update/delta`` (``{event_id, timestamp, twin, delta}``) when
    reported lacks something of desired, else None (edgecore sends none then either)."""
    twin, wanted = twin_delta(view, types)
    if not wanted:
        return None
    body = {**_base(event_id, now), "twin": twin, "delta": wanted}
    return Message(topics.device_topic(device, topics.TWIN_UPDATE_DELTA), encode(body))


# ------------------------------------------------------------------ twin/get ----


def answer_get(
    device: DeviceId,
    payload: bytes,
    view: TwinView | bytes | None,
    types: PropertyTypes | None,
    now: float,
) -> Message:
    """KubeEdge's ``twin/get/result``: every property (``{event_id, timestamp, twin}``),
    or 400 for a payload that is not a BaseMessage, 404 for a device not served here."""
    topic = topics.device_topic(device, topics.TWIN_GET_RESULT)
    event_id = requests.read_base_message(payload, requests.UNMARSHAL_GET)
    if isinstance(event_id, Refusal):
        return _refused(topic, event_id, now)
    if view is None:
        reason = f"Device {device} not found while getting twin"
        return error_result(topic, event_id, requests.NOT_FOUND, reason, now)
    twin = twin_map(properties(view, types))
    return Message(topic, encode({**_base(event_id, now), "twin": twin}))


# -------------------------------------------------------------- state/update ----


def rfc3339(seconds: float) -> str:
    """Go's ``time.RFC3339`` in UTC, as edgecore writes ``lastOnlineTime``."""
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(seconds))


@dataclass(frozen=True, slots=True)
class StatePlan:
    """What to do with one state/update: keep ``state`` in the twin (None: refused) and
    publish ``reply`` once it is stored (or :func:`error_result` 500 if it could not be)."""

    event_id: str
    state: str | None
    reply: Message

    @property
    def result_topic(self) -> str:
        return self.reply.topic


def plan_state_update(device: DeviceId, payload: bytes, served: bool, now: float) -> StatePlan:
    """Read a state/update of ``device`` (``served``: the node serves it). The result is
    ``{event_id, timestamp, device: {name, state, lastOnlineTime}}`` as edgecore's, with
    the request's event_id (edgecore's is a fresh one)."""
    topic = topics.device_topic(device, topics.STATE_UPDATE_RESULT)
    request = requests.read_state_update(payload)
    if isinstance(request, Refusal):
        return StatePlan(request.event_id, None, _refused(topic, request, now))
    if not served:
        reason = f"Device {device} not found"
        reply = error_result(topic, request.event_id, requests.NOT_FOUND, reason, now)
        return StatePlan(request.event_id, None, reply)
    info: dict[str, Any] = {"name": device.name, "state": request.state}
    if request.state in requests.ONLINE_STATES:
        info["lastOnlineTime"] = rfc3339(now)
    body = {**_base(request.event_id, now), "device": info}
    return StatePlan(request.event_id, request.state, Message(topic, encode(body)))


# ---------------------------------------------------------------- membership ----


@dataclass(frozen=True, slots=True)
class Member:
    """A device of the node as the membership messages list it."""

    device: DeviceId
    description: str = ""
    state: str = ""
    last_online: str = ""
    twin: Mapping[str, Any] | None = None

    def message(self, with_twin: bool) -> dict[str, Any]:
        """KubeEdge's ``Device`` (``id``, ``name``, then the non-empty fields)."""
        body: dict[str, Any] = {"id": str(self.device), "name": self.device.name}
        if self.description:
            body["description"] = self.description
        if self.state:
            body["state"] = self.state
        if self.last_online:
            body["last_online"] = self.last_online
        if with_twin and self.twin is not None:
            body["twin"] = dict(self.twin)
        return body


def member(
    device: DeviceId,
    view: TwinView | bytes | None,
    types: PropertyTypes | None = None,
    description: str = "",
) -> Member:
    """The membership entry of a served device from its twin view: its state and, while
    the state is online or ok, ``last_online`` (when it became so)."""
    if view is None:
        return Member(device, description)
    parsed = parse_view(view)
    state = parsed.get("state")
    value = state.get("value") if isinstance(state, Mapping) else None
    at = state.get("timestamp") if isinstance(state, Mapping) else None
    last_online = ""
    if value in requests.ONLINE_STATES and isinstance(at, int | float):
        last_online = rfc3339(float(at))
    return Member(
        device,
        description,
        value if isinstance(value, str) else "",
        last_online,
        twin_map(properties(parsed, types)),
    )


def answer_membership_get(
    request: topics.MembershipRequest,
    node: str,
    payload: bytes,
    members: Iterable[Member],
    now: float,
) -> Message | None:
    """``membership/get/result`` (``{event_id, timestamp, devices}``, devices without
    their twins, as edgecore's) for this ``node``; None for another node's request."""
    if request.node != node:
        return None
    event_id = requests.read_base_message(payload, requests.UNMARSHAL_MEMBERSHIP)
    if isinstance(event_id, Refusal):
        return _refused(request.result_topic, event_id, now)
    devices = [m.message(with_twin=False) for m in sorted(members, key=lambda m: m.device)]
    return Message(request.result_topic, encode({**_base(event_id, now), "devices": devices}))


def membership_updated(
    node: str,
    added: Sequence[Member],
    removed: Sequence[Member],
    now: float,
    event_id: str,
) -> Message | None:
    """``membership/updated`` (``{event_id, timestamp, added_devices, removed_devices}``;
    added devices with their twins); None if nothing changed."""
    if not added and not removed:
        return None
    body = {
        **_base(event_id, now),
        "added_devices": [m.message(with_twin=True) for m in added],
        "removed_devices": [m.message(with_twin=False) for m in removed],
    }
    return Message(topics.node_topic(node, topics.MEMBERSHIP_UPDATED), encode(body))

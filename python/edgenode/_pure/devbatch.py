"""A batch of received device messages in one call: the specification of ``handle_batch``.

The device layer hands the core every message of a batch at once — (topic, payload,
QoS, packet id) — and gets back only what must be published and which packets to
acknowledge. In that one call the core routes each message, applies the twin reports of
the devices whose twins it is given (``DeviceTwin.apply_report``), builds the
``accepted`` replies, the retained deltas and the uplink records (in the node's envelope),
and commits the batch's twin documents and records in ONE store transaction
(``Store.commit_batch``). Nothing is published or acknowledged by the core: the caller
publishes the replies and then acknowledges the packets, so a packet is acknowledged only
after everything it caused is committed.

The fast path is a report (``$edge/devices/{device}/twin/update``) of a device in
``twins``, on a topic no route matches, that the twin accepts; and, when ``routing`` is
given, a message that only goes upstream (see :func:`_upstream`): telemetry of a device
(``$edge/devices/{device}/telemetry...``) or a topic outside ``$``, matched by enabled
upstream routes and by no enabled republish route (or telemetry of a known device that no
upstream route matches: the default route), becomes its ``telemetry`` record here, the
bytes, priority and TTL the device layer's TwinService gives it. Every other message
(gets, states, refusals, unknown devices, KubeEdge topics, republished topics, oversized
telemetry) goes to ``fallback(index)``, in order, which returns its publishes, its encoded
records and the twin documents it wrote; they join the batch where the message stands,
so the result is what handling the messages one by one would give.

If the commit fails (StoreError) nothing is stored, and the twins the batch changed hold
changes that are not stored: the caller must drop them (read them again from the store).
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable, Container, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

if TYPE_CHECKING:
    from edgenode._pure.devtwin import DeviceTwin
    from edgenode._pure.router import TopicRouter
    from edgenode._pure.store import Store

from edgenode._pure.devtwin import _check_now
from edgenode.errors import TopicError

MAX_RECORD_BYTES: Final = 256 * 1024
"""An uplink record (envelope included) larger than this is not appended (the node's
``edgenode.uplink.MAX_UPLINK_PAYLOAD``); it is counted in ``oversize``."""

MAX_TELEMETRY_BYTES: Final = 192 * 1024
"""A message payload larger than this does not go upstream
(``edgenode.devices.twins.MAX_TELEMETRY_BYTES``): the fallback counts and logs it."""
MAX_BODY_BYTES: Final = MAX_RECORD_BYTES - (64 + 32 + 4 * 253)
"""``edgenode.uplink.MAX_BODY_BYTES``: a larger telemetry body goes to the fallback."""

Message = tuple[str, bytes, int, int]
"""(topic, payload, QoS, packet id) of one received message."""
OutPublish = tuple[str, bytes, bool, int]
"""(topic, payload, retain, QoS) to publish."""
OutRecord = tuple[str, bytes, int, "float | None", "str | None"]
"""(kind, encoded record, priority, ttl, coalescing key) to append."""
Fallback = tuple[list[OutPublish], list[OutRecord], list[tuple[str, bytes]]]
"""What the caller did with one message: publishes, records, (device, document) writes."""
Rule = tuple[bool, bool, int, "float | None"]
"""(republish, enabled, priority, ttl) of the route whose index the router gives."""
Routing = tuple[Sequence[Rule], Container[str], bytes, int]
"""(rules, known devices, the envelope head of a ``telemetry`` record, the priority of
telemetry that no upstream route matches): ``edgenode.devices.RouteTable.batch_rules``,
the device layer's devices and ``edgenode.devices.config.DEFAULT_TELEMETRY_PRIORITY``."""


@dataclass(frozen=True, slots=True)
class BatchResult:
    """What a batch left to do, and what it did.

    ``publishes`` in order (replies, deltas, the fallback's), then ``acks``: (packet id,
    QoS) of every message with QoS > 0, in order. ``counters``: the fast path's
    TwinService counters (the fallback counts its own). ``appended``: records the outbox
    took; ``urgent``: the most urgent (lowest) priority among them, None if none;
    ``refused``: kinds of the records the outbox's quota policy refused; ``oversize``:
    kinds of the records too large for an envelope (not appended); ``fast``: messages
    handled without the fallback.
    """

    publishes: list[OutPublish]
    acks: list[tuple[int, int]]
    counters: dict[str, int]
    appended: int
    urgent: int | None
    refused: list[str]
    oversize: list[str]
    fast: int


def _report_device(name: str) -> str | None:
    """The device of a ``$edge/devices/{device}/twin/update`` topic, else None."""
    levels = name.split("/")
    if (
        len(levels) == 5
        and levels[0] == "$edge"
        and levels[1] == "devices"
        and levels[3] == "twin"
        and levels[4] == "update"
        and levels[2]
    ):
        return levels[2]
    return None


def _check_message(message: object) -> Message:
    """A (topic: str, payload: bytes, QoS: 0-2, packet id: int) tuple, else TypeError."""
    if (
        type(message) is not tuple
        or len(message) != 4
        or type(message[0]) is not str
        or type(message[1]) is not bytes
        or type(message[2]) is not int
        or type(message[3]) is not int
        or not 0 <= message[2] <= 2
    ):
        raise TypeError(
            "a message must be a (topic: str, payload: bytes, qos: 0-2, packet id: int) "
            f"tuple, not {message!r:.80}"
        )
    return message  # checked above


def _check_heads(heads: object) -> tuple[bytes, bytes]:
    if (
        type(heads) is not tuple
        or len(heads) != 2
        or type(heads[0]) is not bytes
        or type(heads[1]) is not bytes
    ):
        raise TypeError("heads must be a (twin, device-state) tuple of bytes")
    return heads[0], heads[1]


ROUTING_SHAPE: Final = (
    "routing must be a (rules: sequence of (republish: bool, enabled: bool, "
    "priority: 0-9, ttl: number or None), known devices, telemetry head: bytes, "
    "default priority: 0-9) tuple"
)


def _priority_ok(value: object) -> bool:
    return type(value) is int and 0 <= value <= 9


def _check_routing(routing: object) -> tuple[list[tuple[bool, bool, int, float | None]], Any]:
    """(rules, (known, head, default priority)) of a :data:`Routing`, else TypeError."""
    if type(routing) is not tuple or len(routing) != 4:
        raise TypeError(ROUTING_SHAPE)
    rules, known, head, default_priority = routing
    if type(rules) not in (list, tuple) or type(head) is not bytes:
        raise TypeError(ROUTING_SHAPE)
    if not _priority_ok(default_priority):
        raise TypeError(ROUTING_SHAPE)
    checked: list[tuple[bool, bool, int, float | None]] = []
    for rule in rules:
        if type(rule) is not tuple or len(rule) != 4:
            raise TypeError(ROUTING_SHAPE)
        republish, enabled, rule_priority, ttl = rule
        if type(republish) is not bool or type(enabled) is not bool:
            raise TypeError(ROUTING_SHAPE)
        if not _priority_ok(rule_priority):
            raise TypeError(ROUTING_SHAPE)
        if ttl is not None and type(ttl) is not float and type(ttl) is not int:
            raise TypeError(ROUTING_SHAPE)
        checked.append((republish, enabled, rule_priority, None if ttl is None else float(ttl)))
    return checked, (known, head, default_priority)


def _ttl_rank(ttl: float | None) -> float:
    return float("inf") if ttl is None else ttl


def _upstream(
    name: str,
    router: TopicRouter | None,
    rules: Sequence[tuple[bool, bool, int, float | None]],
    known: Container[str],
    default_priority: int,
) -> tuple[str | None, int, float | None, bool] | None:
    """(device, priority, TTL, known device?) when the message on ``name`` goes upstream
    and nowhere else, as ``edgenode.devices.RouteTable`` decides, on a topic the
    TwinService does nothing else with; None otherwise (the fallback handles it)."""
    device: str | None = None
    known_device = False
    if name.startswith("$"):
        # Only a device's telemetry: other `$` topics are twins, states, the broker's
        # counters, KubeEdge's... (the fallback's).
        levels = name.split("/", 4)
        if (
            len(levels) < 4
            or levels[0] != "$edge"
            or levels[1] != "devices"
            or not levels[2]
            or levels[3] != "telemetry"
        ):
            return None
        device = levels[2]
        known_device = device in known
    try:
        matched = [] if router is None else router.match(name)
    except TopicError:
        return None
    best: tuple[int, float | None] | None = None
    any_upstream_route = False
    for index in matched:
        if index >= len(rules):
            raise ValueError(f"routing has no rule for route {index}")
        republish, enabled, rule_priority, ttl = rules[index]
        if republish:
            if enabled:
                return None  # a local copy to publish: the fallback's
            continue
        any_upstream_route = True
        if enabled and (
            best is None
            or rule_priority < best[0]
            or (rule_priority == best[0] and _ttl_rank(ttl) > _ttl_rank(best[1]))
        ):
            best = (rule_priority, ttl)
    if not any_upstream_route and known_device:
        best = (default_priority, None)
    if best is None:
        return None
    return device, best[0], best[1], known_device


def telemetry_body(device: str | None, name: str, payload: bytes, now: float) -> bytes:
    """The body of the ``telemetry`` record of a message that goes upstream (TwinService
    makes it with this function too): compact JSON, the payload as text when it is UTF-8,
    else base64."""
    try:
        text, encoding = payload.decode("utf-8"), "utf-8"
    except UnicodeDecodeError:
        text, encoding = base64.b64encode(payload).decode("ascii"), "base64"
    body = {
        "device": device,
        "topic": name,
        "payload": text,
        "encoding": encoding,
        "timestamp": now,
    }
    return json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode()


def _encodable(name: str) -> bool:
    """False for a str with a lone surrogate (no UTF-8 form: the fallback handles it)."""
    try:
        name.encode()
    except UnicodeEncodeError:
        return False
    return True


def _telemetry_record(
    name: str,
    payload: bytes,
    router: TopicRouter | None,
    rules: Sequence[tuple[bool, bool, int, float | None]],
    known: Container[str],
    head: bytes,
    default_priority: int,
    now: float,
) -> tuple[bytes, int, float | None, bool] | None:
    """(record, priority, TTL, known device?) of a message that only goes upstream, the
    record no larger than the fallback would take; None: the fallback's."""
    if len(payload) > MAX_TELEMETRY_BYTES or not _encodable(name):
        return None
    upstream = _upstream(name, router, rules, known, default_priority)
    if upstream is None:
        return None
    device, record_priority, record_ttl, known_device = upstream
    body = telemetry_body(device, name, payload, now)
    if len(body) > MAX_BODY_BYTES or len(head) + len(body) + 1 > MAX_RECORD_BYTES:
        return None  # the fallback counts and logs it
    return head + body + b"}", record_priority, record_ttl, known_device


def handle_batch(
    store: Store,
    twins: Mapping[str, DeviceTwin],
    router: TopicRouter | None,
    messages: Sequence[Message],
    now: float,
    heads: tuple[bytes, bytes],
    priority: int,
    ttl: float | None,
    fallback: Callable[[int], Fallback],
    routing: Routing | None = None,
) -> BatchResult:
    """Handle, route and commit a batch (see the module docstring).

    ``heads``: the envelopes of a ``twin`` and a ``device-state`` record up to the body
    (``edgenode.uplink.envelope_head``); a record is head + body + ``}``. ``priority`` and
    ``ttl``: of those records. ``router``: the route filters (None: no routes); a report
    on a topic it matches goes to the fallback. ``routing``: the routes' decisions, for
    the fast path of messages that only go upstream (None: they fall back). StoreError:
    nothing was committed.
    """
    now = _check_now(now)
    twin_head, state_head = _check_heads(heads)
    if type(priority) is not int or not 0 <= priority <= 9:
        raise ValueError(f"priority must be an int in [0, 9], not {priority!r}")
    rules: list[tuple[bool, bool, int, float | None]] = []
    known: Container[str] = ()
    telemetry_head = b""
    default_priority = 0
    if routing is not None:
        rules, (known, telemetry_head, default_priority) = _check_routing(routing)
    publishes: list[OutPublish] = []
    acks: list[tuple[int, int]] = []
    records: list[OutRecord] = []
    written: dict[str, bytes] = {}
    counters: dict[str, int] = {}
    fast = 0

    def count(name: str) -> None:
        counters[name] = counters.get(name, 0) + 1

    for index, message in enumerate(messages):
        name, payload, qos, mid = _check_message(message)
        if qos > 0:
            acks.append((mid, qos))
        device = _report_device(name)
        twin = None if device is None else twins.get(device)
        outcome = None
        if twin is not None and device is not None and _encodable(name):
            routed = False
            if router is not None:
                try:
                    routed = bool(router.match(name))
                except TopicError:
                    routed = True
            if not routed:
                outcome = twin.apply_report(payload, now)
                if outcome.code:
                    outcome = None  # refusals are worded, counted and logged by the caller
        if (outcome is None or device is None or twin is None) and routing is not None:
            record = _telemetry_record(
                name, payload, router, rules, known, telemetry_head, default_priority, now
            )
            if record is not None:
                data, record_priority, record_ttl, known_device = record
                fast += 1
                count("messages")
                if known_device:
                    count("telemetry")
                count("uplink_telemetry")
                life = ttl if record_ttl is None else record_ttl
                records.append(("telemetry", data, record_priority, life, None))
                continue
        if outcome is None or device is None or twin is None:
            more_publishes, more_records, more_twins = fallback(index)
            publishes += more_publishes
            records += more_records
            for written_device, document in more_twins:
                written[written_device] = document
            continue
        fast += 1
        count("messages")
        if outcome.document is not None:
            written[device] = outcome.document
            twin.commit()
        count("updates_accepted")
        count("reports_changed" if outcome.changed else "reports_unchanged")
        root = "$edge/devices/" + device
        publishes.append((root + "/twin/update/accepted", outcome.reply, False, 1))
        if outcome.twin_uplink is not None:
            if outcome.delta is not None:
                count("delta_published" if outcome.delta else "delta_cleared")
                publishes.append((root + "/twin/delta", outcome.delta, True, 1))
            count("uplink_twin")
            records.append(
                ("twin", twin_head + outcome.twin_uplink + b"}", priority, ttl, "twin/" + device)
            )
        if outcome.ack_uplink is not None:
            count("uplink_device-state")
            records.append(
                (
                    "device-state",
                    state_head + outcome.ack_uplink + b"}",
                    priority,
                    ttl,
                    "device-ack/" + device,
                )
            )
    oversize = [kind for kind, data, *_ in records if len(data) > MAX_RECORD_BYTES]
    if oversize:
        records = [r for r in records if len(r[1]) <= MAX_RECORD_BYTES]
    seqs: list[int | None] = []
    if records or written:
        seqs = store.commit_batch(
            list(written.items()), [(data, prio, life, key) for _, data, prio, life, key in records]
        )
    refused = [record[0] for record, seq in zip(records, seqs, strict=True) if seq is None]
    taken = [record[2] for record, seq in zip(records, seqs, strict=True) if seq is not None]
    return BatchResult(
        publishes,
        acks,
        counters,
        len(taken),
        min(taken) if taken else None,
        refused,
        oversize,
        fast,
    )

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
``twins``, on a topic no route matches, that the twin accepts. Every other message
(telemetry, gets, states, refusals, unknown devices, KubeEdge topics, anything a route
matches) goes to ``fallback(index)``, in order, which returns its publishes, its encoded
records and the twin documents it wrote; they join the batch where the message stands,
so the result is what handling the messages one by one would give.

If the commit fails (StoreError) nothing is stored, and the twins the batch changed hold
changes that are not stored: the caller must drop them (read them again from the store).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final

if TYPE_CHECKING:
    from edgenode._pure.devtwin import DeviceTwin
    from edgenode._pure.router import TopicRouter
    from edgenode._pure.store import Store

from edgenode._pure.devtwin import _check_now
from edgenode.errors import TopicError

MAX_RECORD_BYTES: Final = 256 * 1024
"""An uplink record (envelope included) larger than this is not appended (the node's
``edgenode.uplink.MAX_UPLINK_PAYLOAD``); it is counted in ``oversize``."""

Message = tuple[str, bytes, int, int]
"""(topic, payload, QoS, packet id) of one received message."""
OutPublish = tuple[str, bytes, bool, int]
"""(topic, payload, retain, QoS) to publish."""
OutRecord = tuple[str, bytes, int, "float | None", "str | None"]
"""(kind, encoded record, priority, ttl, coalescing key) to append."""
Fallback = tuple[list[OutPublish], list[OutRecord], list[tuple[str, bytes]]]
"""What the caller did with one message: publishes, records, (device, document) writes."""


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


def _encodable(name: str) -> bool:
    """False for a str with a lone surrogate (no UTF-8 form: the fallback handles it)."""
    try:
        name.encode()
    except UnicodeEncodeError:
        return False
    return True


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
) -> BatchResult:
    """Handle, route and commit a batch (see the module docstring).

    ``heads``: the envelopes of a ``twin`` and a ``device-state`` record up to the body
    (``edgenode.uplink.envelope_head``); a record is head + body + ``}``. ``priority`` and
    ``ttl``: of those records. ``router``: the route filters (None: no routes); a report
    on a topic it matches goes to the fallback. StoreError: nothing was committed.
    """
    now = _check_now(now)
    twin_head, state_head = _check_heads(heads)
    if type(priority) is not int or not 0 <= priority <= 9:
        raise ValueError(f"priority must be an int in [0, 9], not {priority!r}")
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

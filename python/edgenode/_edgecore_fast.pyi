"""Type stub of the Rust extension: the contract both backends implement.

``edgenode._pure`` exports exactly these names with the same signatures,
results and exceptions (classes from :mod:`edgenode.errors`).
"""

from array import array
from collections.abc import Callable, Container, Mapping, Sequence
from typing import Any, Final

# ---------------------------------------------------------------- router ----

MAX_TOPIC_BYTES: Final[int]  # 65535, the MQTT limit

class TopicRouter:
    """MQTT topic filters -> integer targets, matched through a trie.

    Targets are ``int`` in ``0 <= target < 2**63``: ValueError outside that range,
    TypeError for anything else (``bool`` included). A non-str filter or topic raises
    TypeError; an invalid one (including a str with a lone surrogate) TopicError.
    """

    def __init__(self) -> None: ...
    def add(self, filter: str, target: int) -> bool:
        """Add the pair; False if it was already there. TopicError on a bad filter."""
    def remove(self, filter: str, target: int) -> bool:
        """Remove the pair; False if it was not there. TopicError on a bad filter."""
    def match(self, topic: str) -> list[int]:
        """Targets whose filter matches ``topic``, each once, ascending."""
    def match_many(self, topics: Sequence[str]) -> list[list[int]]:
        """``[match(t) for t in topics]`` in one call (any iterable of str but a str
        itself, which raises TypeError; the first bad topic raises)."""
    def match_flat(self, topics: Sequence[str]) -> tuple[array[int], array[int]]:
        """``match_many`` flat: ``(ids, offsets)``, two ``array('q')``; the targets of
        ``topics[i]`` are ``ids[offsets[i]:offsets[i + 1]]``. No Python object per topic
        (no list for the garbage collector to walk); same errors as ``match_many``."""
    def __len__(self) -> int:
        """Number of (filter, target) pairs."""

def validate_filter(filter: str) -> None:
    """Raise TopicError naming the problem if ``filter`` is not a valid MQTT filter."""

def validate_topic(topic: str) -> None:
    """Raise TopicError naming the problem if ``topic`` is not a valid topic name."""

# ------------------------------------------------------------------ twin ----

MAX_DEPTH: Final[int]  # 32 levels of nesting
MAX_DOCUMENT_BYTES: Final[int]  # 65536 bytes of compact UTF-8 JSON
MAX_KEY_BYTES: Final[int]  # 256 bytes of UTF-8

def check_limits(doc: dict[str, Any]) -> None:
    """TwinLimitError naming the limit, TwinError for non-JSON values."""

def merge_patch(doc: dict[str, Any], patch: dict[str, Any]) -> dict[str, Any]:
    """RFC 7386 merge patch; returns a new dict, never mutates its arguments."""

def delta(desired: dict[str, Any], reported: dict[str, Any]) -> dict[str, Any]:
    """What ``reported`` still lacks of ``desired`` (PRODUCT.md "Device twins")."""

def stamp(meta: dict[str, Any], patch: dict[str, Any], now: float) -> dict[str, Any]:
    """Per-key timestamp metadata after ``patch`` (see edgenode._pure.twin)."""

# -------------------------------------------------------------- devtwin ----

MAX_PAYLOAD_BYTES: Final[int]  # 4 MiB: larger report payloads are rejected unread
PARSE_MAX_DEPTH: Final[int]  # 64: deeper payloads are "too deep to parse"

class ReportOutcome:
    """What a DeviceTwin mutator decided; ``code`` 0 is accepted (see _pure/devtwin.py).

    ``delta``: None leaves the retained delta, ``b""`` clears it, else publish it.
    ``document``: the twin document to store before acting (None: nothing changed).
    """

    @property
    def code(self) -> int: ...
    @property
    def message(self) -> str: ...
    @property
    def token(self) -> str | None: ...
    @property
    def reply(self) -> bytes: ...
    @property
    def changed(self) -> bool: ...
    @property
    def ack_changed(self) -> bool: ...
    @property
    def delta(self) -> bytes | None: ...
    @property
    def twin_uplink(self) -> bytes | None: ...
    @property
    def ack_uplink(self) -> bytes | None: ...
    @property
    def document(self) -> bytes | None: ...

class DeviceTwin:
    """One device's twin on bytes (report payload in; replies, delta, uplink records and
    the stored document out). Mutators prepare; ``commit()`` makes the prepared state
    current once its document is stored. ValueError if ``stored`` is not a twin document
    of format 1; ``now`` is a finite int or float (TypeError / ValueError)."""

    def __init__(self, device: str, stored: bytes | None = None) -> None: ...
    @property
    def device(self) -> str: ...
    @property
    def desired_version(self) -> int: ...
    @property
    def reported_version(self) -> int: ...
    def document(self) -> bytes: ...
    def commit(self) -> None: ...
    def delta_message(self) -> bytes | None: ...
    def view(self, now: float, token: str | None = None) -> bytes: ...
    def set_state(self, value: str, now: float) -> bytes | None: ...
    def set_desired(
        self, desired: bytes, now: float, merge: bool = False, version: int | None = None
    ) -> ReportOutcome:
        """TwinError / TwinLimitError as the twin engine's merge_patch raises them.
        ``version``: the hub's desired version, adopted when greater than the current one
        (TypeError unless an int, ValueError outside [1, 2**63 - 1])."""
    def apply_report(self, payload: bytes, now: float) -> ReportOutcome: ...

# ----------------------------------------------------------------- store ----

SCHEMA_VERSION: Final[int]  # 2; PRAGMA user_version of the files this build writes
DEFAULT_OUTBOX_MAX_BYTES: Final[int]  # 64 MiB: the outbox quota, as a sum of payload lengths

class Store:
    """The node's SQLite database (WAL): desired cache, twins, outbox. See docs/store.md.

    ConfigError for a bad ``synchronous`` ("normal" | "full") or ``outbox_max_bytes``;
    StoreCorruptError (naming the path, never touching the file) for a damaged file;
    StoreError for a schema version newer than SCHEMA_VERSION and for any use after
    ``close()`` ("store is closed"). Time-dependent methods take ``now`` in store
    seconds; without it they use ``clock()``.
    """

    def __init__(
        self,
        path: str,
        *,
        synchronous: str = "normal",
        outbox_max_bytes: int = ...,
    ) -> None: ...
    @property
    def path(self) -> str: ...
    def close(self) -> None:
        """Persist the store clock and close; idempotent."""
    def clock(self) -> float:
        """Store time in seconds: monotonic within a run, carried across restarts."""
    # desired-state cache
    def applied_revision(self) -> int: ...
    def next_seq(self) -> int:
        """The sequence number the next appended outbox record gets (1 in a new file)."""
    def reserve_seq(self) -> int:
        """Take ``next_seq()`` for a record sent without being stored (a sample), writing
        nothing; the counter is persisted by the next write transaction or ``close``."""
    def apply_changes(
        self, changes: Sequence[tuple[str, int, bytes | None]], revision: int
    ) -> None:
        """Upsert (bytes) or tombstone (None) each change, set the applied revision; one
        transaction. ValueError if ``revision`` < applied_revision()."""
    def replace_all(self, resources: Sequence[tuple[str, int, bytes]], revision: int) -> None:
        """Replace the whole cache with exactly ``resources``; one transaction."""
    def get_resource(self, key: str) -> tuple[int, bytes | None] | None: ...
    def list_resources(
        self, *, include_tombstones: bool = False
    ) -> list[tuple[str, int, bytes | None]]:
        """(key, revision, data) sorted by key (code point order)."""
    # twins
    def put_twin(self, device: str, doc: bytes) -> None: ...
    def get_twin(self, device: str) -> bytes | None: ...
    def list_twins(self) -> list[str]: ...
    def delete_twin(self, device: str) -> bool: ...
    # outbox
    def append(
        self,
        payload: bytes,
        priority: int = 5,
        ttl: float | None = None,
        *,
        coalesce_key: str | None = None,
        now: float | None = None,
    ) -> int:
        """Append one record durably; its sequence number. OutboxFullError if the quota
        policy rejects it (counted in ``rejected``)."""
    def append_many(
        self,
        records: Sequence[tuple[bytes, int, float | None]],
        *,
        now: float | None = None,
    ) -> list[int]:
        """Append (payload, priority, ttl) records in one transaction, all or nothing.
        Under quota pressure the least urgent record of the call (largest priority
        number) decides which stored records may be evicted."""
    def commit_batch(
        self,
        twins: Sequence[tuple[str, bytes]],
        records: Sequence[tuple[bytes, int, float | None, str | None]],
        *,
        now: float | None = None,
    ) -> list[int | None]:
        """Group commit: append each ``(payload, priority, ttl, coalesce_key)`` record in
        order exactly as ``append`` would (coalescing, eviction, quota), then upsert each
        ``(device, doc)`` twin, all in ONE transaction. Per record its sequence number, or
        None where the quota policy refused it (counted in ``rejected``; the other records
        still land). Any other failure (StoreError, ...) commits nothing at all; bad input
        (TypeError/ValueError, messages as ``append``/``put_twin``) is refused before any
        write. Both sequences empty: no transaction, ``[]``."""
    def peek(
        self,
        limit: int = 100,
        *,
        after: tuple[int, int] | None = None,
        now: float | None = None,
    ) -> list[tuple[int, int, bytes]]:
        """(seq, priority, payload), priority 0 first, seq order within a priority,
        strictly after the (priority, seq) position ``after``; expired records are
        deleted and counted first."""
    def ack(self, seqs: Sequence[int]) -> int:
        """Delete these sequence numbers (unknown ones ignored); how many were deleted."""
    def ack_deferred(self, seqs: Sequence[int]) -> int:
        """Acknowledge without a transaction of their own: hidden from reads and the quota
        at once, deleted by the next write transaction or ``flush_acks``; how many of them
        are in the outbox."""
    def flush_acks(self) -> int:
        """Delete the records acknowledged with ``ack_deferred`` now; how many."""
    def set_in_flight(self, seqs: Sequence[int]) -> None:
        """The records now on the wire (replacing the previous set): never evicted by the
        quota, expired or coalesced away while there."""
    def ack_ranges(self, ranges: Sequence[tuple[int, int]]) -> int:
        """Delete every ``lo <= seq <= hi``; how many were deleted."""
    def expire(self, *, now: float | None = None) -> int: ...
    def drop_counts(self) -> list[tuple[int, int, int]]:
        """``(priority, expired, quota)``: records dropped per priority by TTL and by the
        quota policy (priorities with drops only, in priority order)."""
    def outbox_stats(self, *, now: float | None = None) -> dict[str, int | float]:
        """messages, bytes, oldest_age, next_seq, max_bytes, dropped_expired,
        dropped_quota, rejected, coalesced (counters persist across restarts)."""
    def checkpoint(self) -> None:
        """PRAGMA wal_checkpoint(TRUNCATE)."""
    @staticmethod
    def salvage(path: str, dest: str) -> dict[str, int]:
        """Copy every readable row of a (damaged) store at ``path`` into a new store at
        ``dest`` (which must not exist); counts per table plus ``errors`` (read or copy
        failures). The original is never modified."""

# ----------------------------------------------------------------- batch ----

class BatchResult:
    """What a batch left to do (see ``handle_batch``): ``publishes`` (topic, payload,
    retain, qos) in order, then ``acks`` (packet id, qos) of every message with QoS > 0;
    ``counters``: the fast path's TwinService counters; ``appended`` records, ``urgent``
    their lowest priority (None: none); kinds of the records ``refused`` by the outbox's
    quota and of those ``oversize`` for an envelope; ``fast``: messages handled without
    the fallback."""

    @property
    def publishes(self) -> list[tuple[str, bytes, bool, int]]: ...
    @property
    def acks(self) -> list[tuple[int, int]]: ...
    @property
    def counters(self) -> dict[str, int]: ...
    @property
    def appended(self) -> int: ...
    @property
    def urgent(self) -> int | None: ...
    @property
    def refused(self) -> list[str]: ...
    @property
    def oversize(self) -> list[str]: ...
    @property
    def fast(self) -> int: ...

def handle_batch(
    store: Store,
    twins: Mapping[str, DeviceTwin],
    router: TopicRouter | None,
    messages: Sequence[tuple[str, bytes, int, int]],
    now: float,
    heads: tuple[bytes, bytes],
    priority: int,
    ttl: float | None,
    fallback: Callable[
        [int],
        tuple[
            list[tuple[str, bytes, bool, int]],
            list[tuple[str, bytes, int, float | None, str | None]],
            list[tuple[str, bytes]],
        ],
    ],
    routing: tuple[Sequence[tuple[bool, bool, int, float | None]], Container[str], bytes, int]
    | None = None,
) -> BatchResult:
    """A batch of received device messages (topic, payload, QoS, packet id) in ONE call:
    route, apply the reports of the devices in ``twins`` (on topics ``router`` does not
    match, accepted by the twin), build the replies, retained deltas and uplink records
    (``heads``: the ``twin`` and ``device-state`` envelopes up to the body), and commit
    the twins and records in ONE store transaction. With ``routing`` (rules by route
    index, known devices, the ``telemetry`` envelope head, the default telemetry
    priority), a message that only goes upstream becomes its ``telemetry`` record here
    too. Every other message goes to ``fallback(index)``, in order. Nothing is published
    or acknowledged here. StoreError: nothing was committed (drop the twins the batch
    changed). The store, twins and router must be of this backend (TypeError otherwise)."""

# ------------------------------------------------------------- mqttcodec ----

DEFAULT_MAX_PACKET: Final[int]  # 16 MiB: a larger received PUBLISH is dropped, not buffered

class MqttDecoder:
    """MQTT 3.1.1 bytes from a broker in, packets out, whatever the chunks (see
    _pure/mqttcodec.py). ValueError unless ``max_packet`` is an int in [0, 268435455]:
    the bound on a received PUBLISH's remaining length, above which its payload is
    skipped as it streams in and the message is reported in ``dropped``."""

    def __init__(self, max_packet: int = ...) -> None: ...
    @property
    def buffered(self) -> int:
        """Bytes held for a packet not yet complete."""
    def feed(
        self, data: bytes
    ) -> tuple[
        list[tuple[str, bytes, int, int]],
        list[int],
        list[int],
        list[tuple[int, bytes]],
        list[tuple[str, int, int, int]],
    ]:
        """(messages (topic, payload, QoS, packet id), indices in messages of those with
        RETAIN, PUBACK packet ids, other control packets (type, body), dropped messages
        (topic, QoS, packet id, payload size)) of what ``data`` completes; TypeError
        unless bytes. MqttPacketError on a packet a broker must not send: the decoder is
        then failed and every later call raises it again."""

def encode_publishes(publishes: list[tuple[str, bytes, bool, int, int]]) -> bytes:
    """The PUBLISH packets of (topic, payload, retain, QoS 0 or 1, packet id) in one
    buffer; TypeError for a wrong shape or type, ValueError for a bad topic, QoS, packet
    id (1-65535 at QoS 1, ignored at QoS 0) or size."""

def encode_acks(acks: list[tuple[int, int]]) -> bytes:
    """The PUBACK packets of (packet id, QoS) in one buffer; QoS 0 entries are skipped,
    other QoS than 0 and 1 and packet ids outside [1, 65535] are a ValueError."""

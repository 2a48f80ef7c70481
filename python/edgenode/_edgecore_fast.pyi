"""Type stub of the Rust extension: the contract both backends implement.

``edgenode._pure`` exports exactly these names with the same signatures,
results and exceptions (classes from :mod:`edgenode.errors`).
"""

from collections.abc import Sequence
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

# ----------------------------------------------------------------- store ----

SCHEMA_VERSION: Final[int]
DEFAULT_OUTBOX_MAX_BYTES: Final[int]

class Store:
    """The node's SQLite database (WAL): desired cache, twins, outbox."""

    def __init__(
        self,
        path: str,
        *,
        synchronous: str = "normal",
        outbox_max_bytes: int = ...,
    ) -> None: ...
    @property
    def path(self) -> str: ...
    def close(self) -> None: ...
    def clock(self) -> float:
        """Store time in seconds: monotonic within a run, carried across restarts."""
    # desired-state cache
    def applied_revision(self) -> int: ...
    def apply_changes(
        self, changes: Sequence[tuple[str, int, bytes | None]], revision: int
    ) -> None: ...
    def replace_all(self, resources: Sequence[tuple[str, int, bytes]], revision: int) -> None: ...
    def get_resource(self, key: str) -> tuple[int, bytes | None] | None: ...
    def list_resources(
        self, *, include_tombstones: bool = False
    ) -> list[tuple[str, int, bytes | None]]: ...
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
    ) -> int: ...
    def append_many(
        self,
        records: Sequence[tuple[bytes, int, float | None]],
        *,
        now: float | None = None,
    ) -> list[int]: ...
    def peek(
        self,
        limit: int = 100,
        *,
        after: tuple[int, int] | None = None,
        now: float | None = None,
    ) -> list[tuple[int, int, bytes]]: ...
    def ack(self, seqs: Sequence[int]) -> int: ...
    def ack_ranges(self, ranges: Sequence[tuple[int, int]]) -> int: ...
    def expire(self, *, now: float | None = None) -> int: ...
    def outbox_stats(self, *, now: float | None = None) -> dict[str, int | float]: ...
    def checkpoint(self) -> None: ...
    @staticmethod
    def salvage(path: str, dest: str) -> dict[str, int]: ...

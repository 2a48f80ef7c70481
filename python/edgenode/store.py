"""The node's durable store: desired cache, twins, outbox (backend chosen by edgenode._backend)."""

from typing import TYPE_CHECKING

from edgenode._backend import core

if TYPE_CHECKING:  # the pure twin is the typed specification of both backends
    from edgenode._pure.store import DEFAULT_OUTBOX_MAX_BYTES, SCHEMA_VERSION, Store
else:
    Store = core.Store
    SCHEMA_VERSION = core.SCHEMA_VERSION
    DEFAULT_OUTBOX_MAX_BYTES = core.DEFAULT_OUTBOX_MAX_BYTES

__all__ = ["DEFAULT_OUTBOX_MAX_BYTES", "SCHEMA_VERSION", "Store"]

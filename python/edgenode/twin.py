"""The twin engine: merge patch, delta, limits, timestamps (backend chosen by edgenode._backend)."""

from typing import TYPE_CHECKING

from edgenode._backend import core

if TYPE_CHECKING:  # the pure twin is the typed specification of both backends
    from edgenode._pure.twin import (
        MAX_DEPTH,
        MAX_DOCUMENT_BYTES,
        MAX_KEY_BYTES,
        check_limits,
        delta,
        merge_patch,
        stamp,
    )
else:
    merge_patch = core.merge_patch
    delta = core.delta
    check_limits = core.check_limits
    stamp = core.stamp
    MAX_DEPTH = core.MAX_DEPTH
    MAX_DOCUMENT_BYTES = core.MAX_DOCUMENT_BYTES
    MAX_KEY_BYTES = core.MAX_KEY_BYTES

__all__ = [
    "MAX_DEPTH",
    "MAX_DOCUMENT_BYTES",
    "MAX_KEY_BYTES",
    "check_limits",
    "delta",
    "merge_patch",
    "stamp",
]

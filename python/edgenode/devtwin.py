"""One device's twin on bytes (backend chosen by edgenode._backend); see _pure/devtwin.py."""

from typing import TYPE_CHECKING

from edgenode._backend import core

if TYPE_CHECKING:  # the pure twin is the typed specification of both backends
    from edgenode._pure.devbatch import BatchResult, handle_batch
    from edgenode._pure.devtwin import (
        MAX_PAYLOAD_BYTES,
        PARSE_MAX_DEPTH,
        DeviceTwin,
        ReportOutcome,
    )
else:
    BatchResult = core.BatchResult
    handle_batch = core.handle_batch
    DeviceTwin = core.DeviceTwin
    ReportOutcome = core.ReportOutcome
    MAX_PAYLOAD_BYTES = core.MAX_PAYLOAD_BYTES
    PARSE_MAX_DEPTH = core.PARSE_MAX_DEPTH

__all__ = [
    "MAX_PAYLOAD_BYTES",
    "PARSE_MAX_DEPTH",
    "BatchResult",
    "DeviceTwin",
    "ReportOutcome",
    "handle_batch",
]

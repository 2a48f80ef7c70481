"""The pure-Python twin of the Rust extension: the executable specification.

Exports exactly the names of ``edgenode._edgecore_fast`` (see its ``.pyi``),
with the same signatures, results and exceptions.
"""

from edgenode._pure.devtwin import (
    MAX_PAYLOAD_BYTES,
    PARSE_MAX_DEPTH,
    DeviceTwin,
    ReportOutcome,
)
from edgenode._pure.router import (
    MAX_TOPIC_BYTES,
    TopicRouter,
    validate_filter,
    validate_topic,
)
from edgenode._pure.store import DEFAULT_OUTBOX_MAX_BYTES, SCHEMA_VERSION, Store
from edgenode._pure.twin import (
    MAX_DEPTH,
    MAX_DOCUMENT_BYTES,
    MAX_KEY_BYTES,
    check_limits,
    delta,
    merge_patch,
    stamp,
)

__all__ = [
    "DEFAULT_OUTBOX_MAX_BYTES",
    "MAX_DEPTH",
    "MAX_DOCUMENT_BYTES",
    "MAX_KEY_BYTES",
    "MAX_PAYLOAD_BYTES",
    "MAX_TOPIC_BYTES",
    "PARSE_MAX_DEPTH",
    "SCHEMA_VERSION",
    "DeviceTwin",
    "ReportOutcome",
    "Store",
    "TopicRouter",
    "check_limits",
    "delta",
    "merge_patch",
    "stamp",
    "validate_filter",
    "validate_topic",
]

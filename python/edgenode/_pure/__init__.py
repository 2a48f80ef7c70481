"""The pure-Python twin of the Rust extension: the executable specification.

Exports exactly the names of ``edgenode._edgecore_fast`` (see its ``.pyi``),
with the same signatures, results and exceptions.

Submodules load on first use (PEP 562): the node on the Rust backend only needs
``devtwin``'s payload reader, and importing the pure store would load a second SQLite
(Python's ``sqlite3``) into every daemon for nothing.
"""

import importlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from edgenode._pure.devbatch import BatchResult, handle_batch
    from edgenode._pure.devtwin import (
        MAX_PAYLOAD_BYTES,
        PARSE_MAX_DEPTH,
        DeviceTwin,
        ReportOutcome,
    )
    from edgenode._pure.mqttcodec import (
        DEFAULT_MAX_PACKET,
        MqttDecoder,
        encode_acks,
        encode_publishes,
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

_SOURCES = {
    "BatchResult": "devbatch",
    "handle_batch": "devbatch",
    "MAX_PAYLOAD_BYTES": "devtwin",
    "PARSE_MAX_DEPTH": "devtwin",
    "DeviceTwin": "devtwin",
    "ReportOutcome": "devtwin",
    "DEFAULT_MAX_PACKET": "mqttcodec",
    "MqttDecoder": "mqttcodec",
    "encode_acks": "mqttcodec",
    "encode_publishes": "mqttcodec",
    "MAX_TOPIC_BYTES": "router",
    "TopicRouter": "router",
    "validate_filter": "router",
    "validate_topic": "router",
    "DEFAULT_OUTBOX_MAX_BYTES": "store",
    "SCHEMA_VERSION": "store",
    "Store": "store",
    "MAX_DEPTH": "twin",
    "MAX_DOCUMENT_BYTES": "twin",
    "MAX_KEY_BYTES": "twin",
    "check_limits": "twin",
    "delta": "twin",
    "merge_patch": "twin",
    "stamp": "twin",
}


def __getattr__(name: str) -> object:
    module = _SOURCES.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"edgenode._pure.{module}"), name)
    globals()[name] = value  # once loaded, a plain attribute
    return value


__all__ = [
    "DEFAULT_MAX_PACKET",
    "DEFAULT_OUTBOX_MAX_BYTES",
    "MAX_DEPTH",
    "MAX_DOCUMENT_BYTES",
    "MAX_KEY_BYTES",
    "MAX_PAYLOAD_BYTES",
    "MAX_TOPIC_BYTES",
    "PARSE_MAX_DEPTH",
    "SCHEMA_VERSION",
    "BatchResult",
    "DeviceTwin",
    "MqttDecoder",
    "ReportOutcome",
    "Store",
    "TopicRouter",
    "check_limits",
    "delta",
    "encode_acks",
    "encode_publishes",
    "handle_batch",
    "merge_patch",
    "stamp",
    "validate_filter",
    "validate_topic",
]

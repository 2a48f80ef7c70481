"""Every exception edgenode raises, defined once; the Rust extension raises these too.

Each class also subclasses the builtin that fits, so plain ``except ValueError``
or ``except OSError`` clauses keep working::

    EdgenodeError
    ├── ConfigError (ValueError)            bad configuration or environment
    ├── TopicError (ValueError)             invalid MQTT topic or topic filter
    ├── TwinError (ValueError)              a twin document or patch is not acceptable
    │   └── TwinLimitError                  ... because it exceeds a named limit
    ├── StoreError (OSError)                the durable store failed
    │   ├── StoreCorruptError               the database file is damaged
    │   └── OutboxFullError                 the outbox quota rejected an append
    ├── ProtocolError (ValueError)          a peer broke the sync protocol
    └── MqttPacketError (ValueError)        an MQTT broker sent what MQTT 3.1.1 forbids
"""

from __future__ import annotations


class EdgenodeError(Exception):
    """Base class of every edgenode error."""


class ConfigError(EdgenodeError, ValueError):
    """A configuration file, option or environment variable is invalid."""


class TopicError(EdgenodeError, ValueError):
    """An MQTT topic or topic filter is invalid; the message names the problem."""


class TwinError(EdgenodeError, ValueError):
    """A twin document or merge patch is not acceptable."""


class TwinLimitError(TwinError):
    """A twin document or patch exceeds a limit (depth, size, key length)."""


class StoreError(EdgenodeError, OSError):
    """The durable store could not complete an operation."""


class StoreCorruptError(StoreError):
    """The database file is damaged; it is never deleted, see ``Store.salvage``."""


class OutboxFullError(StoreError):
    """The outbox quota is reached and the drop policy rejected the new records."""


class ProtocolError(EdgenodeError, ValueError):
    """A peer sent a frame the sync protocol does not allow."""


class MqttPacketError(EdgenodeError, ValueError):
    """An MQTT broker sent bytes MQTT 3.1.1 does not allow a client to receive; the
    connection must be closed (``edgenode.mqttcodec``)."""

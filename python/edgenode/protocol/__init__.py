"""The node↔hub sync protocol as sans-I/O state machines (see docs/protocol.md).

Both sides import this package: ``NodeProtocol`` on each node, ``HubProtocol`` in the hub,
one object per WebSocket connection. Each takes whole binary messages and a monotonic
``now`` in (``receive_message``, ``tick``) and gives events, messages and a close
instruction out (``events_received``, ``data_to_send``, ``close_requested``); neither
touches a socket, a clock or an event loop. A driver looks like::

    proto = NodeProtocol("ship-7", "edgenode 0.1", last_revision, now=loop.time())
    while proto.close_requested() is None:
        for message in proto.data_to_send():
            await ws.send(message)
        for event in proto.events_received():
            handle(event)            # may call proto.ack(...), proto.send_uplink(...)
        message = await recv_until(ws, proto.next_deadline())
        if message is None:
            proto.tick(loop.time())
        else:
            proto.receive_message(message, loop.time())
    for message in proto.data_to_send():
        await ws.send(message)
    await ws.close(*proto.close_requested())
"""

from __future__ import annotations

from edgenode.protocol._connection import Close, State
from edgenode.protocol.constants import (
    PROTOCOL_VERSION,
    SUPPORTED_VERSIONS,
    ChangeErrorCode,
    CloseCode,
    ErrorCode,
    close_code_for,
)
from edgenode.protocol.events import (
    ChangeRejected,
    ChangesReceived,
    ErrorReceived,
    Event,
    NodeHello,
    PeerTimedOut,
    ProtocolViolation,
    RetryAfter,
    RevisionAcked,
    SnapshotReceived,
    UplinkAcked,
    UplinkReceived,
    Welcomed,
)
from edgenode.protocol.frames import (
    Body,
    Change,
    Delete,
    Frame,
    Resource,
    UplinkRecord,
    Upsert,
    decode_frame,
    encode_frame,
    error_code,
)
from edgenode.protocol.hub import HubConfig, HubProtocol
from edgenode.protocol.node import NodeConfig, NodeProtocol, UplinkWindow

__all__ = [
    "PROTOCOL_VERSION",
    "SUPPORTED_VERSIONS",
    "Body",
    "Change",
    "ChangeErrorCode",
    "ChangeRejected",
    "ChangesReceived",
    "Close",
    "CloseCode",
    "Delete",
    "ErrorCode",
    "ErrorReceived",
    "Event",
    "Frame",
    "HubConfig",
    "HubProtocol",
    "NodeConfig",
    "NodeHello",
    "NodeProtocol",
    "PeerTimedOut",
    "ProtocolViolation",
    "Resource",
    "RetryAfter",
    "RevisionAcked",
    "SnapshotReceived",
    "State",
    "UplinkAcked",
    "UplinkReceived",
    "UplinkRecord",
    "UplinkWindow",
    "Upsert",
    "Welcomed",
    "close_code_for",
    "decode_frame",
    "encode_frame",
    "error_code",
]

"""What the device layer's sans-I/O services ask their caller to do.

:class:`~edgenode.devices.twins.TwinService` and the KubeEdge front
(:mod:`edgenode.devices.kubeedge.front`) return these; ``bus.DeviceLayer`` carries them
out: :class:`Publish` to the local broker, :class:`Uplink` to the outbox (committed with
the twins in one transaction).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Final

from edgenode.service import OutRecord

REPLY_QOS: Final = 1


@dataclass(frozen=True, slots=True)
class Publish:
    """Publish ``payload`` on the local broker (an empty retained payload clears)."""

    topic: str
    payload: bytes
    retain: bool = False
    qos: int = REPLY_QOS


@dataclass(frozen=True, slots=True)
class Uplink:
    """Append an uplink record to the outbox: ``kind`` and ``body`` (compact JSON object
    bytes) go into the node's envelope (``edgenode.uplink``) when committed."""

    kind: str
    body: bytes
    priority: int
    ttl: float | None
    coalesce_key: str | None

    def record(self) -> OutRecord:
        return OutRecord(self.kind, self.body, self.priority, self.ttl, self.coalesce_key)


Action = Publish | Uplink


@dataclass(frozen=True, slots=True)
class Applied:
    """The outcome of a change to a twin made for one of the device APIs.

    ``code`` 0: stored, and ``actions`` (the edgenode retained delta, uplink records) are
    to be carried out; else refused (or not stored) with ``code`` (HTTP-like) and
    ``message``, nothing changed. ``reply`` is the edgenode API's answer to a report
    (its ``twin/update/accepted`` body), ``token`` the request's clientToken.
    """

    actions: list[Action] = field(default_factory=list)
    code: int = 0
    message: str = ""
    token: str | None = None
    reply: bytes = b""

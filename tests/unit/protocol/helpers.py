"""Test helpers: drive a NodeProtocol and a HubProtocol against each other in memory."""

from __future__ import annotations

from dataclasses import dataclass, field

from edgenode.protocol import (
    Event,
    HubConfig,
    HubProtocol,
    NodeConfig,
    NodeProtocol,
    State,
)
from edgenode.protocol.frames import Frame, decode_frame

BIG = 64 * 1024 * 1024


def frames_of(messages: list[bytes]) -> list[Frame]:
    """Decode messages the code under test produced (they must always decode)."""
    return [decode_frame(message, BIG) for message in messages]


@dataclass
class Link:
    """A node and a hub joined by an in-memory, loss-free, in-order pipe."""

    node: NodeProtocol
    hub: HubProtocol
    now: float = 0.0
    node_events: list[Event] = field(default_factory=list)
    hub_events: list[Event] = field(default_factory=list)
    to_hub: list[bytes] = field(default_factory=list)
    to_node: list[bytes] = field(default_factory=list)

    @classmethod
    def connect(
        cls,
        *,
        last_revision: int = 0,
        node_config: NodeConfig | None = None,
        hub_config: HubConfig | None = None,
        hub_revision: int = 0,
        now: float = 0.0,
        accept: bool = True,
        keep_events: bool = False,
    ) -> Link:
        """Construct both sides and exchange hello (and welcome when ``accept``).

        The handshake's events are dropped after an accept unless ``keep_events``.
        """
        node = NodeProtocol("ship-7", "edgenode 0.1", last_revision, now, node_config)
        hub = HubProtocol(now, hub_config)
        link = cls(node, hub, now)
        link.pump()
        if accept:
            link.hub.accept(hub_revision)
            link.pump()
            if not keep_events:
                link.take_node_events()
                link.take_hub_events()
        return link

    def pump(self) -> None:
        """Deliver every queued message both ways until both sides are quiet."""
        while True:
            to_hub = self.node.data_to_send()
            to_node = self.hub.data_to_send()
            if not to_hub and not to_node:
                break
            self.to_hub.extend(to_hub)
            self.to_node.extend(to_node)
            for message in to_hub:
                if self.hub.state is not State.CLOSED:
                    self.hub.receive_message(message, self.now)
            for message in to_node:
                if self.node.state is not State.CLOSED:
                    self.node.receive_message(message, self.now)
            self.node_events.extend(self.node.events_received())
            self.hub_events.extend(self.hub.events_received())
        self.node_events.extend(self.node.events_received())
        self.hub_events.extend(self.hub.events_received())

    def take_node_events(self) -> list[Event]:
        events, self.node_events = self.node_events, []
        return events

    def take_hub_events(self) -> list[Event]:
        events, self.hub_events = self.hub_events, []
        return events

    def advance(self, seconds: float) -> None:
        """Move the fake clock, ticking both sides at every deadline on the way."""
        target = self.now + seconds
        for _ in range(1_000_000):
            deadlines = [
                d for d in (self.node.next_deadline(), self.hub.next_deadline()) if d is not None
            ]
            due = min(deadlines, default=None)
            if due is None or due > target:
                break
            self.now = max(self.now, due)
            self.node.tick(self.now)
            self.hub.tick(self.now)
            self.pump()
        else:
            raise AssertionError("timers never settle")
        self.now = target

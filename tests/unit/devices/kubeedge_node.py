"""A node's device layer serving the KubeEdge API, without broker or disk: the real
``TwinService`` (with its KubeEdge front, ``edgenode.devices.kubeedge.front``) over an
in-memory twin store. Tests see only what goes to KubeEdge topics (``$hw/...``); the
edgenode side (its retained delta, uplink records) is kept in :attr:`KubeEdgeNode.actions`.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Mapping
from typing import Any

from edgenode.devices import kubeedge as ke
from edgenode.devices.actions import Action, Publish
from edgenode.devices.config import DeviceSpec
from edgenode.devices.twins import TwinService


class MemoryTwins:
    """The twin store of a TwinService, in a dict."""

    def __init__(self) -> None:
        self.docs: dict[str, bytes] = {}

    def put_twin(self, device: str, doc: bytes) -> None:
        self.docs[device] = doc

    def get_twin(self, device: str) -> bytes | None:
        return self.docs.get(device)

    def delete_twin(self, device: str) -> bool:
        return self.docs.pop(device, None) is not None


class KubeEdgeNode:
    def __init__(
        self,
        device_twin: Any,
        devices: Mapping[str, Mapping[str, Any] | None],
        node: str = "pi-1",
    ) -> None:
        self.node = node
        self.store = MemoryTwins()
        specs = [
            DeviceSpec(name, kubeedge=None if spec is None else spec.get("kubeedge"))
            for name, spec in devices.items()
        ]
        self.service = TwinService(self.store, specs, device_twin=device_twin, kubeedge_node=node)
        self.actions: list[Action] = []
        ids = itertools.count(1)
        assert self.service.kubeedge is not None
        self.service.kubeedge.event_ids = lambda: f"node-{next(ids)}"

    def _kubeedge(self, actions: list[Action]) -> list[Publish]:
        self.actions += actions
        return [a for a in actions if isinstance(a, Publish) and a.topic.startswith("$hw/")]

    def view(self, name: str, now: float) -> dict[str, Any]:
        view = self.service.view(name, now)
        assert view is not None
        parsed: dict[str, Any] = json.loads(view)
        return parsed

    def view_bytes(self, name: str, now: float) -> bytes:
        view = self.service.view(name, now)
        assert view is not None
        return view

    def set_desired(self, name: str, desired: dict[str, Any], now: float) -> list[Publish]:
        """What `edgectl twin set` causes on the node: the new desired, then a delta."""
        return self._kubeedge(self.service.set_desired(name, desired, now, merge=True))

    def handle(self, topic: str, payload: bytes, now: float) -> list[Publish]:
        return self._kubeedge(self.service.handle(topic, payload, now))

    def serve(self, devices: Mapping[str, Mapping[str, Any] | None], now: float) -> list[Publish]:
        specs = [
            DeviceSpec(name, kubeedge=None if spec is None else spec.get("kubeedge"))
            for name, spec in devices.items()
        ]
        return self._kubeedge(self.service.serve(specs, now))


def body(message: ke.Message | Publish) -> dict[str, Any]:
    parsed: dict[str, Any] = json.loads(message.payload)
    return parsed


def one(messages: list[Any], suffix: str) -> dict[str, Any]:
    """The body of the single message whose topic ends with ``suffix``."""
    found = [m for m in messages if m.topic.endswith("/" + suffix)]
    assert len(found) == 1, [m.topic for m in messages]
    return body(found[0])


def update(twin: dict[str, Any], event_id: str = "ev-1", **extra: Any) -> bytes:
    return json.dumps({"event_id": event_id, "timestamp": 1, "twin": twin, **extra}).encode()


def actual(value: str, value_type: str | None = None) -> dict[str, Any]:
    entry: dict[str, Any] = {"actual": {"value": value}}
    if value_type is not None:
        entry["metadata"] = {"type": value_type}
    return entry

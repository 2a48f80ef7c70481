"""The KubeEdge API wired onto DeviceTwins in memory: the sequence of calls the node's
device layer makes per message (docs/kubeedge.md, "Wiring"), without store or broker.

Tests drive it with a backend's ``DeviceTwin`` class; state and stored documents are
committed at once (the real layer stores the document first, then commits).
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Mapping
from typing import Any

from edgenode.devices import kubeedge as ke
from edgenode.devices.kubeedge.topics import DeviceRequest, MembershipRequest


class KubeEdgeNode:
    def __init__(
        self,
        device_twin: Any,
        devices: Mapping[str, Mapping[str, Any] | None],
        node: str = "pi-1",
    ) -> None:
        self.node = node
        self.specs = dict(devices)
        self.index = ke.DeviceIndex.from_specs(self.specs)
        self.twins = {name: device_twin(name) for name in devices}
        self._ids = itertools.count(1)
        self.refused_reports: list[tuple[int, str]] = []

    def new_event_id(self) -> str:
        return f"node-{next(self._ids)}"

    def types(self, name: str) -> Mapping[str, str]:
        spec = self.index.spec_of(name)
        return {} if spec is None else spec.types

    def view(self, name: str, now: float) -> dict[str, Any]:
        parsed: dict[str, Any] = json.loads(self.twins[name].view(now))
        return parsed

    def set_desired(self, name: str, desired: dict[str, Any], now: float) -> list[ke.Message]:
        """What `edgectl twin set` causes on the node: the new desired, then a delta."""
        twin = self.twins[name]
        outcome = twin.set_desired(json.dumps(desired).encode(), now, True)
        twin.commit()
        if outcome.document is None:
            return []
        spec = self.index.spec_of(name)
        assert spec is not None
        delta = ke.delta_message(spec.device, twin.view(now), spec.types, now, self.new_event_id())
        return [] if delta is None else [delta]

    def handle(self, topic: str, payload: bytes, now: float) -> list[ke.Message]:
        request = ke.parse_topic(topic)
        if isinstance(request, MembershipRequest):
            members = [
                ke.member(spec.device, self.twins[name].view(now), spec.types)
                for name, spec in self.index
            ]
            answer = ke.answer_membership_get(request, self.node, payload, members, now)
            return [] if answer is None else [answer]
        if not isinstance(request, DeviceRequest):
            return []  # own publications, unsupported or foreign topics: never answered
        name = self.index.name_of(request.device)
        twin = None if name is None else self.twins[name]
        types = {} if name is None else self.types(name)
        if request.operation == "twin/get":
            view = None if twin is None else twin.view(now)
            return [ke.answer_get(request.device, payload, view, types, now)]
        if request.operation == "state/update":
            plan = ke.plan_state_update(request.device, payload, twin is not None, now)
            if plan.state is not None and twin is not None:
                twin.set_state(plan.state, now)
                twin.commit()
            return [plan.reply]
        # twin/update
        plan = ke.plan_update(
            request.device, payload, None if twin is None else twin.view(now), types, now
        )
        if plan.refusal is not None:
            return [plan.refusal]
        assert twin is not None
        assert plan.report is not None
        outcome = twin.apply_report(plan.report, now)
        if outcome.code:
            self.refused_reports.append((outcome.code, outcome.message))
            return [ke.update_refused(plan, outcome.code, outcome.message, now)]
        twin.commit()
        return ke.update_replies(plan, twin.view(now), now, self.new_event_id())


def body(message: ke.Message) -> dict[str, Any]:
    parsed: dict[str, Any] = json.loads(message.payload)
    return parsed


def one(messages: list[ke.Message], suffix: str) -> dict[str, Any]:
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

"""KubeEdge's device topics served over the node's twins, sans-I/O.

:class:`KubeEdgeFront` is what the node's device layer runs for ``$hw/events/...``
messages (docs/kubeedge.md, "Inside the node"): it reads them with the protocol functions
of :mod:`edgenode.devices.kubeedge.api`, changes twins only through a :class:`TwinPort`
(the :class:`~edgenode.devices.twins.TwinService` of the node: the same store commit, the
same uplink records and the same ``$edge/devices/...`` delta as a report on edgenode's
own API), and returns the messages to publish. It opens nothing and reads no clock.

Which devices it serves, and under which KubeEdge IDs, comes from :meth:`serve` (the
``spec.kubeedge`` of each Device); a change of that set is announced on
``membership/updated``, a change of desired state as a KubeEdge delta.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable, Mapping
from typing import Any, Final, Protocol

from edgenode.devices import kubeedge as ke
from edgenode.devices.actions import Action, Applied, Publish
from edgenode.devices.kubeedge.requests import INTERNAL_ERROR
from edgenode.devices.kubeedge.topics import (
    DeviceRequest,
    MembershipRequest,
    OwnTopic,
    Unsupported,
)

log = logging.getLogger("edgenode.devices.kubeedge")

PREFIX: Final = "$hw/"


class TwinPort(Protocol):
    """What the front needs of the node's twins (``TwinService`` provides it)."""

    def view(self, device: str, now: float) -> bytes | None:
        """The twin view of a served device (its ``twin/get`` answer), None if unknown."""
        ...

    def apply_report(self, device: str, payload: bytes, now: float) -> Applied:
        """Apply and store an edgenode ``twin/update`` report of a served device."""
        ...

    def store_state(self, device: str, state: str, now: float) -> Applied:
        """Keep ``state`` as a served device's state (stored, sent upstream)."""
        ...


def publish(message: ke.Message) -> Publish:
    return Publish(message.topic, message.payload, message.retain, message.qos)


class KubeEdgeFront:
    """KubeEdge's device API of one node (``node``: its name, as in membership topics)."""

    def __init__(
        self,
        node: str,
        counters: Counter[str] | None = None,
        warn: Callable[..., None] | None = None,
        event_ids: Callable[[], str] = ke.new_event_id,
    ) -> None:
        self.node = node
        self.index = ke.DeviceIndex()
        self.counters: Counter[str] = counters if counters is not None else Counter()
        self._warn = warn if warn is not None else _log_warning
        self.event_ids = event_ids
        """Where node-initiated messages take their event_id (UUIDs; tests count)."""
        self._warned_duplicates: set[tuple[str, str]] = set()

    def subscriptions(self) -> tuple[str, ...]:
        return ke.subscriptions(self.node)

    # ------------------------------------------------------------ devices ----

    def serve(
        self, specs: Mapping[str, Mapping[str, Any] | None], twins: TwinPort, now: float
    ) -> list[Action]:
        """Serve exactly these devices (name -> Device spec with its ``kubeedge`` field,
        None for a device of the node's configuration); ``membership/updated`` if the
        set of KubeEdge IDs changed."""
        before = self.index
        self.index = ke.DeviceIndex.from_specs(specs)
        for kept, dropped, device in self.index.duplicates:
            if (kept, dropped) not in self._warned_duplicates:
                self._warned_duplicates.add((kept, dropped))
                log.warning(
                    "device %r is not served to KubeEdge clients: device %r already is, as %s",
                    dropped,
                    kept,
                    device,
                )
        added, removed = self.index.changes_since(before)
        if not added and not removed:
            return []
        joined = [
            ke.member(device, twins.view(name, now), self._types(name)) for name, device in added
        ]
        left = [ke.Member(device) for device in removed]
        message = ke.membership_updated(self.node, joined, left, now, self.event_ids())
        return [] if message is None else [publish(message)]

    def _types(self, name: str) -> Mapping[str, str]:
        spec = self.index.spec_of(name)
        return {} if spec is None else spec.types

    def desired_changed(self, name: str, view: bytes, now: float) -> list[Publish]:
        """The KubeEdge delta after desired state of ``name`` changed (none when reported
        already has everything desired asks for)."""
        spec = self.index.spec_of(name)
        if spec is None:
            return []
        delta = ke.delta_message(spec.device, view, spec.types, now, self.event_ids())
        if delta is None:
            return []
        self.counters["kubeedge_deltas"] += 1
        return [publish(delta)]

    def resync(self, twins: TwinPort, now: float) -> list[Publish]:
        """After (re)connecting to the broker: the delta of every device that has one
        (KubeEdge deltas are not retained; a mapper that missed one gets it again)."""
        actions: list[Publish] = []
        for name, _spec in self.index:
            view = twins.view(name, now)
            if view is not None:
                actions += self.desired_changed(name, view, now)
        return actions

    # ----------------------------------------------------------- messages ----

    def handle(self, topic: str, payload: bytes, twins: TwinPort, now: float) -> list[Action]:
        """What to do for one message on a ``$hw/events/...`` topic."""
        request = ke.parse_topic(topic)
        if request is None or isinstance(request, OwnTopic):
            return []
        if isinstance(request, Unsupported):
            self.counters["kubeedge_unsupported"] += 1
            self._warn(now, "KubeEdge topic %r is not served by edgenode; ignored", topic)
            return []
        self.counters["kubeedge_requests"] += 1
        if isinstance(request, MembershipRequest):
            return self._membership(request, payload, twins, now)
        return self._device_request(request, payload, twins, now)

    def _membership(
        self, request: MembershipRequest, payload: bytes, twins: TwinPort, now: float
    ) -> list[Action]:
        members = [
            ke.member(device.device, twins.view(name, now), device.types)
            for name, device in self.index
        ]
        answer = ke.answer_membership_get(request, self.node, payload, members, now)
        return [] if answer is None else [publish(answer)]

    def _device_request(
        self, request: DeviceRequest, payload: bytes, twins: TwinPort, now: float
    ) -> list[Action]:
        name = self.index.name_of(request.device)
        view = None if name is None else twins.view(name, now)
        types = {} if name is None else self._types(name)
        if request.operation == ke.topics.TWIN_GET:
            return [publish(ke.answer_get(request.device, payload, view, types, now))]
        if request.operation == ke.topics.STATE_UPDATE:
            return self._state(request, payload, name, twins, now)
        plan = ke.plan_update(request.device, payload, view, types, now)
        if plan.refusal is not None:
            self._refused(request, now)
            return [publish(plan.refusal)]
        # A plan without a refusal is for a served device and has a report.
        assert name is not None
        assert plan.report is not None
        applied = twins.apply_report(name, plan.report, now)
        if applied.code:
            self._refused(request, now)
            return [publish(ke.update_refused(plan, applied.code, applied.message, now))]
        after = twins.view(name, now)
        assert after is not None
        self.counters["kubeedge_updates"] += 1
        replies = ke.update_replies(plan, after, now, self.event_ids())
        # The edgenode side (retained $edge delta, uplinks) first: it is what got stored.
        return [*applied.actions, *map(publish, replies)]

    def _state(
        self,
        request: DeviceRequest,
        payload: bytes,
        name: str | None,
        twins: TwinPort,
        now: float,
    ) -> list[Action]:
        plan = ke.plan_state_update(request.device, payload, name is not None, now)
        if plan.state is None or name is None:
            self._refused(request, now)
            return [publish(plan.reply)]
        applied = twins.store_state(name, plan.state, now)
        if applied.code:
            self._refused(request, now)
            error = ke.error_result(
                plan.result_topic, plan.event_id, INTERNAL_ERROR, applied.message, now
            )
            return [publish(error)]
        return [*applied.actions, publish(plan.reply)]

    def _refused(self, request: DeviceRequest, now: float) -> None:
        self.counters["kubeedge_refused"] += 1
        self._warn(now, "KubeEdge %s of %s refused", request.operation, request.device)


def _log_warning(now: float, message: str, *args: Any) -> None:
    del now
    log.warning(message, *args)

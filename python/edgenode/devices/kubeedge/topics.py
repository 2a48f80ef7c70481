"""KubeEdge's device topics (edgecore v1.16 and later), parsed and built.

Devices and mappers publish requests; the node answers on the request's topic plus
``/result`` and publishes the twin's delta and document beside them::

    $hw/events/device/{ns}/{name}/twin/update        -> .../twin/update/result
                                                        .../twin/update/delta
                                                        .../twin/update/document
    $hw/events/device/{ns}/{name}/twin/get           -> .../twin/get/result
    $hw/events/device/{ns}/{name}/state/update       -> .../state/update/result
    $hw/events/node/{node}/membership/get            -> .../membership/get/result
                                                        .../membership/updated

Since v1.16 a device is named by its namespace *and* name (two topic levels: edgecore's
``classifyMsg`` joins levels 3 and 4 of a device topic); earlier single-level device IDs
are not served. :func:`parse_topic` sorts a topic into a request, one of the node's own
publications (seen again through a wide subscription or a route, never answered, so
nothing can loop), a KubeEdge topic edgenode does not serve, or not a KubeEdge topic.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

DEVICE_PREFIX: Final = "$hw/events/device"
NODE_PREFIX: Final = "$hw/events/node"

TWIN_UPDATE: Final = "twin/update"
TWIN_GET: Final = "twin/get"
STATE_UPDATE: Final = "state/update"
MEMBERSHIP_GET: Final = "membership/get"

RESULT: Final = "result"
TWIN_UPDATE_RESULT: Final = "twin/update/result"
TWIN_UPDATE_DELTA: Final = "twin/update/delta"
TWIN_UPDATE_DOCUMENT: Final = "twin/update/document"
TWIN_GET_RESULT: Final = "twin/get/result"
STATE_UPDATE_RESULT: Final = "state/update/result"
MEMBERSHIP_GET_RESULT: Final = "membership/get/result"
MEMBERSHIP_UPDATED: Final = "membership/updated"

DEVICE_REQUESTS: Final = frozenset({TWIN_UPDATE, TWIN_GET, STATE_UPDATE})
DEVICE_OWN: Final = frozenset(
    {
        TWIN_UPDATE_RESULT,
        TWIN_UPDATE_DELTA,
        TWIN_UPDATE_DOCUMENT,
        TWIN_GET_RESULT,
        STATE_UPDATE_RESULT,
    }
)
NODE_OWN: Final = frozenset({MEMBERSHIP_GET_RESULT, MEMBERSHIP_UPDATED})

DEFAULT_NAMESPACE: Final = "default"


@dataclass(frozen=True, slots=True, order=True)
class DeviceId:
    """A KubeEdge device ID, ``<namespace>/<name>`` (two topic levels)."""

    namespace: str
    name: str

    def __str__(self) -> str:
        return f"{self.namespace}/{self.name}"

    @classmethod
    def parse(cls, text: str) -> DeviceId:
        """``"ns/name"`` (ValueError unless exactly two non-empty levels)."""
        namespace, sep, name = text.partition("/")
        if not sep or not namespace or not name or "/" in name:
            raise ValueError(f"a KubeEdge device ID is <namespace>/<name>, not {text!r}")
        return cls(namespace, name)


def device_topic(device: DeviceId, suffix: str) -> str:
    """``$hw/events/device/{ns}/{name}/{suffix}``."""
    return f"{DEVICE_PREFIX}/{device.namespace}/{device.name}/{suffix}"


def node_topic(node: str, suffix: str) -> str:
    """``$hw/events/node/{node}/{suffix}``."""
    return f"{NODE_PREFIX}/{node}/{suffix}"


def subscriptions(node: str) -> tuple[str, ...]:
    """The filters a node subscribes to for the KubeEdge API: edgecore's own for devices
    (``twin/+`` is one level, so the node's ``.../twin/update/result`` never matches) and
    the membership request of this node only."""
    return (
        f"{DEVICE_PREFIX}/+/+/twin/+",
        f"{DEVICE_PREFIX}/+/+/{STATE_UPDATE}",
        node_topic(node, MEMBERSHIP_GET),
    )


@dataclass(frozen=True, slots=True)
class DeviceRequest:
    """A request about one device: ``operation`` is ``twin/update``, ``twin/get`` or
    ``state/update``."""

    device: DeviceId
    operation: str

    @property
    def result_topic(self) -> str:
        """Where the answer goes: the request's own topic plus ``/result``, even for
        errors (edgecore sends some errors to ``$hw/events/device//...``)."""
        return device_topic(self.device, f"{self.operation}/{RESULT}")


@dataclass(frozen=True, slots=True)
class MembershipRequest:
    """``$hw/events/node/{node}/membership/get``."""

    node: str

    @property
    def result_topic(self) -> str:
        return node_topic(self.node, MEMBERSHIP_GET_RESULT)


@dataclass(frozen=True, slots=True)
class OwnTopic:
    """A topic the node itself publishes on: never answered."""

    topic: str


@dataclass(frozen=True, slots=True)
class Unsupported:
    """A KubeEdge topic edgenode does not serve (``twin/cloud_updated``, ``state/get``,
    membership detail, pre-1.16 device IDs...): counted and logged, not answered, as
    there is no result topic to answer on."""

    topic: str


Parsed = DeviceRequest | MembershipRequest | OwnTopic | Unsupported


def parse_topic(topic: str) -> Parsed | None:
    """What a topic under ``$hw/events/device/`` or ``$hw/events/node/`` is; None for any
    other topic. Empty namespace or name levels parse (such a device is simply unknown,
    and answered as such on the request's own topic)."""
    levels = topic.split("/")
    if len(levels) < 4 or levels[0] != "$hw" or levels[1] != "events":
        return None
    if levels[2] == "device":
        if len(levels) < 6:
            return Unsupported(topic)
        suffix = "/".join(levels[5:])
        device = DeviceId(levels[3], levels[4])
        if suffix in DEVICE_REQUESTS:
            return DeviceRequest(device, suffix)
        if suffix in DEVICE_OWN:
            return OwnTopic(topic)
        return Unsupported(topic)
    if levels[2] == "node":
        suffix = "/".join(levels[4:])
        if suffix == MEMBERSHIP_GET:
            return MembershipRequest(levels[3])
        if suffix in NODE_OWN:
            return OwnTopic(topic)
        return Unsupported(topic)
    return None

"""KubeEdge's device twin MQTT API over edgenode's twins, sans-I/O (docs/kubeedge.md).

Devices and mappers written for KubeEdge (edgecore v1.16+, ``$hw/events/device/{ns}/
{name}/...``) talk to an edgenode node unchanged: their twin maps become edgenode twin
reports, and edgenode twins are shown to them as KubeEdge twins (``expected`` = desired,
``actual`` = reported).

- :mod:`.topics`: topic parsing and building, :class:`DeviceId`;
- :mod:`.values`: KubeEdge's typed strings <-> JSON values, its validation;
- :mod:`.requests`: reading request payloads (codes and reasons as edgecore's);
- :mod:`.twinview`: an edgenode twin view as KubeEdge properties;
- :mod:`.api`: the request/answer functions the node's device layer calls;
- :mod:`.ids`: the KubeEdge ID of a Device, the reversible name mapping, the index;
- :mod:`.crd`: KubeEdge ``Device`` manifests as edgenode Devices.

``client`` (a paho-mqtt client of these topics) and ``mapper`` (an example mapper,
``python -m edgenode.devices.kubeedge.mapper``) do I/O and are not imported here.
"""

from edgenode.devices.kubeedge.api import (
    Member,
    Message,
    StatePlan,
    UpdatePlan,
    answer_get,
    answer_membership_get,
    delta_message,
    error_result,
    kubeedge_code,
    member,
    membership_updated,
    new_event_id,
    plan_state_update,
    plan_update,
    update_refused,
    update_replies,
)
from edgenode.devices.kubeedge.crd import (
    CrdError,
    Skipped,
    Translation,
    is_kubeedge_document,
    translate,
)
from edgenode.devices.kubeedge.ids import (
    DeviceIndex,
    KubeEdgeSpec,
    KubeEdgeSpecError,
    device_id,
    device_id_from_name,
    device_id_of,
    edgenode_name,
    id_conflict,
    kubeedge_spec,
    name_conflict,
)
from edgenode.devices.kubeedge.topics import (
    DeviceId,
    DeviceRequest,
    MembershipRequest,
    OwnTopic,
    Unsupported,
    device_topic,
    node_topic,
    parse_topic,
    subscriptions,
)

__all__ = [
    "CrdError",
    "DeviceId",
    "DeviceIndex",
    "DeviceRequest",
    "KubeEdgeSpec",
    "KubeEdgeSpecError",
    "Member",
    "MembershipRequest",
    "Message",
    "OwnTopic",
    "Skipped",
    "StatePlan",
    "Translation",
    "Unsupported",
    "UpdatePlan",
    "answer_get",
    "answer_membership_get",
    "delta_message",
    "device_id",
    "device_id_from_name",
    "device_id_of",
    "device_topic",
    "edgenode_name",
    "error_result",
    "id_conflict",
    "is_kubeedge_document",
    "kubeedge_code",
    "kubeedge_spec",
    "member",
    "membership_updated",
    "name_conflict",
    "new_event_id",
    "node_topic",
    "parse_topic",
    "plan_state_update",
    "plan_update",
    "subscriptions",
    "translate",
    "update_refused",
    "update_replies",
]

"""The device layer: device twins and routes over the local MQTT broker (docs/device-api.md).

- :mod:`~edgenode.devices.config`: ``DeviceSpec``, ``RouteSpec``, ``MqttSettings``;
- :mod:`~edgenode.devices.twins`: ``TwinService``, the sans-I/O device API over the store;
- :mod:`~edgenode.devices.routes`: ``RouteTable``, routes matched by the topic router;
- :mod:`~edgenode.devices.bus`: ``DeviceLayer``, the glue the node daemon runs;
- :mod:`~edgenode.devices.mqtt`: ``MqttSession``, the node's MQTT 3.1.1 client.
"""

from typing import TYPE_CHECKING, Any

from edgenode.devices.actions import Publish, Uplink
from edgenode.devices.config import DeviceSpec, MqttSettings, RouteSpec
from edgenode.devices.routes import RouteDecision, RouteTable, Upstream
from edgenode.devices.twins import TwinService

if TYPE_CHECKING:
    from edgenode.devices.bus import DeviceLayer


def __getattr__(name: str) -> Any:
    # DeviceLayer pulls in the MQTT client, the batch call and the store: imported on
    # first use, so that reading the node's configuration (which uses DeviceSpec and
    # RouteSpec) does not load them.
    if name == "DeviceLayer":
        from edgenode.devices.bus import DeviceLayer

        return DeviceLayer
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "DeviceLayer",
    "DeviceSpec",
    "MqttSettings",
    "Publish",
    "RouteDecision",
    "RouteSpec",
    "RouteTable",
    "TwinService",
    "Uplink",
    "Upstream",
]

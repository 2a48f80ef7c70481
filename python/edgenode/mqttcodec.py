"""MQTT 3.1.1 packets of the device path (backend chosen by edgenode._backend); see
_pure/mqttcodec.py."""

from typing import TYPE_CHECKING

from edgenode._backend import core

if TYPE_CHECKING:  # the pure twin is the typed specification of both backends
    from edgenode._pure.mqttcodec import (
        DEFAULT_MAX_PACKET,
        MqttDecoder,
        encode_acks,
        encode_publishes,
    )
else:
    MqttDecoder = core.MqttDecoder
    encode_acks = core.encode_acks
    encode_publishes = core.encode_publishes
    DEFAULT_MAX_PACKET = core.DEFAULT_MAX_PACKET

__all__ = ["DEFAULT_MAX_PACKET", "MqttDecoder", "encode_acks", "encode_publishes"]

"""Versions and features: the hub speaks every version since 1, the two ends settle on
the lower version and on the features both speak, and each version's frames keep their
exact shape (a version-1 node never sees a field it does not know)."""

from __future__ import annotations

import cbor2
import pytest

from edgenode.errors import ConfigError, ProtocolError
from edgenode.protocol import (
    HubConfig,
    NodeConfig,
    NodeHello,
    ProtocolViolation,
    State,
    Welcomed,
)
from edgenode.protocol.constants import (
    FEATURES,
    PROTOCOL_VERSION,
    SUPPORTED_VERSIONS,
    ErrorCode,
)
from edgenode.protocol.frames import HelloFrame, WelcomeFrame, decode_frame, encode_frame

from .helpers import BIG, Link, frames_of


def test_every_version_since_1_is_supported():
    assert set(range(1, PROTOCOL_VERSION + 1)) == SUPPORTED_VERSIONS


def test_a_version_1_node_gets_a_version_1_welcome_with_exactly_the_version_1_fields():
    link = Link.connect(node_config=NodeConfig(version=1), accept=False)
    (hello,) = link.take_hub_events()
    assert isinstance(hello, NodeHello)
    assert (hello.protocol_version, hello.features) == (1, frozenset())
    link.hub.accept(7, wall_time=1_800_000_000.0)
    welcome_bytes = list(link.hub.data_to_send())
    (welcome,) = [cbor2.loads(message) for message in welcome_bytes]
    assert set(welcome) == {"t", "v", "r", "hb", "hd", "mf", "uw", "ub"}
    assert welcome["v"] == 1
    link.node.receive_message(welcome_bytes[0], 0.0)
    (welcomed,) = link.node.events_received()
    assert isinstance(welcomed, Welcomed)
    assert (welcomed.protocol_version, welcomed.features, welcomed.hub_time) == (
        1,
        frozenset(),
        None,
    )
    assert link.node.state is State.OPEN
    assert (link.node.version, link.hub.version) == (1, 1)


def test_the_newest_node_and_hub_settle_on_the_features_both_speak_and_the_hubs_time():
    link = Link.connect(
        node_config=NodeConfig(features=frozenset({"artifacts", "logs"})),
        hub_config=HubConfig(features=frozenset({"logs", "credentials"})),
        accept=False,
    )
    (hello,) = link.take_hub_events()
    assert hello.features == frozenset({"artifacts", "logs"})
    link.hub.accept(3, wall_time=1_800_000_000.25)
    link.pump()
    (welcomed,) = link.take_node_events()
    assert welcomed.protocol_version == PROTOCOL_VERSION
    assert welcomed.features == frozenset({"logs"})
    assert welcomed.hub_time == 1_800_000_000.25
    assert link.node.features == link.hub.features == frozenset({"logs"})


def test_a_welcome_naming_a_feature_the_node_never_offered_is_a_violation():
    link = Link.connect(node_config=NodeConfig(features=frozenset({"logs"})), accept=False)
    welcome = WelcomeFrame(PROTOCOL_VERSION, 0, 1000, 3000, 4096, 10, 4096, ("logs", "other"))
    link.node.receive_message(encode_frame(welcome), 0.0)
    (event,) = link.node.events_received()
    assert isinstance(event, ProtocolViolation)
    assert "never offered" in event.message


def test_a_welcome_of_a_newer_version_than_asked_is_unsupported():
    link = Link.connect(node_config=NodeConfig(version=1), accept=False)
    welcome = WelcomeFrame(2, 0, 1000, 3000, 4096, 10, 4096)
    link.node.receive_message(encode_frame(welcome), 0.0)
    (event,) = link.node.events_received()
    assert isinstance(event, ProtocolViolation)
    assert event.code == ErrorCode.UNSUPPORTED_VERSION


def test_version_1_frames_refuse_the_fields_of_version_2():
    hello = cbor2.loads(encode_frame(HelloFrame(1, "n", "", 0, 4096)))
    assert "fs" not in hello
    with pytest.raises(ProtocolError, match="unknown fields"):
        decode_frame(cbor2.dumps({**hello, "fs": []}), BIG)
    welcome = cbor2.loads(encode_frame(WelcomeFrame(1, 0, 1000, 3000, 4096, 10, 4096)))
    with pytest.raises(ProtocolError, match="unknown fields"):
        decode_frame(cbor2.dumps({**welcome, "ts": 5}), BIG)


@pytest.mark.parametrize(
    "features",
    [["x" * 33], [""], [1], ["a"] * 65],
)
def test_hostile_feature_lists_are_refused(features):
    hello = cbor2.loads(encode_frame(HelloFrame(2, "n", "", 0, 4096)))
    with pytest.raises(ProtocolError):
        decode_frame(cbor2.dumps({**hello, "fs": features}), BIG)


def test_a_hub_welcomes_a_version_2_hello_with_its_features_and_no_time_unless_given():
    link = Link.connect(accept=False)
    link.take_hub_events()
    link.hub.accept(0)
    (welcome,) = frames_of(link.hub.data_to_send())
    assert isinstance(welcome, WelcomeFrame)
    assert (welcome.version, welcome.features, welcome.hub_time_ms) == (
        PROTOCOL_VERSION,
        tuple(sorted(FEATURES)),
        None,
    )


def test_a_node_cannot_ask_for_a_version_this_code_does_not_speak():
    with pytest.raises(ConfigError):
        NodeConfig(version=PROTOCOL_VERSION + 1)

"""KubeEdge's device topics parsed and built (devices/kubeedge/topics.py)."""

from __future__ import annotations

import pytest

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
from edgenode.router import TopicRouter

THERMO = DeviceId("line-a", "thermo")
ROOT = "$hw/events/device/line-a/thermo"


@pytest.mark.parametrize("operation", ["twin/update", "twin/get", "state/update"])
def test_device_requests_and_their_result_topics(operation):
    parsed = parse_topic(f"{ROOT}/{operation}")
    assert parsed == DeviceRequest(THERMO, operation)
    assert isinstance(parsed, DeviceRequest)
    assert parsed.result_topic == f"{ROOT}/{operation}/result"


def test_membership_request():
    parsed = parse_topic("$hw/events/node/pi-1/membership/get")
    assert parsed == MembershipRequest("pi-1")
    assert isinstance(parsed, MembershipRequest)
    assert parsed.result_topic == "$hw/events/node/pi-1/membership/get/result"


@pytest.mark.parametrize(
    "topic",
    [
        f"{ROOT}/twin/update/result",
        f"{ROOT}/twin/update/delta",
        f"{ROOT}/twin/update/document",
        f"{ROOT}/twin/get/result",
        f"{ROOT}/state/update/result",
        "$hw/events/node/pi-1/membership/get/result",
        "$hw/events/node/pi-1/membership/updated",
    ],
)
def test_the_nodes_own_topics_are_never_requests(topic):
    assert parse_topic(topic) == OwnTopic(topic)


@pytest.mark.parametrize(
    "topic",
    [
        f"{ROOT}/twin/cloud_updated",  # edgecore would take it as a cloud sync
        f"{ROOT}/twin/edge_updated",
        f"{ROOT}/state/get",
        f"{ROOT}/updated",
        f"{ROOT}/twin/updte",
        "$hw/events/device/thermo/twin",  # pre-1.16: one level of device ID
        "$hw/events/device/thermo",
        "$hw/events/node/pi-1/membership/detail",
        "$hw/events/node/pi-1",
    ],
)
def test_kubeedge_topics_edgenode_does_not_serve(topic):
    assert parse_topic(topic) == Unsupported(topic)


@pytest.mark.parametrize(
    "topic",
    [
        "$edge/devices/lamp/twin/update",
        "$hw/events/connected/x",
        "$hw/other/device/a/b/twin/update",
        "hw/events/device/a/b/twin/update",
        "$hw/events",
        "",
    ],
)
def test_other_topics(topic):
    assert parse_topic(topic) is None


def test_empty_levels_parse_as_an_unknown_device():
    # Answered (404) on the request's own topic, where the sender listens.
    parsed = parse_topic("$hw/events/device//x/twin/update")
    assert parsed == DeviceRequest(DeviceId("", "x"), "twin/update")


def test_builders():
    assert device_topic(THERMO, "twin/update/delta") == f"{ROOT}/twin/update/delta"
    assert node_topic("pi-1", "membership/updated") == "$hw/events/node/pi-1/membership/updated"
    assert str(THERMO) == "line-a/thermo"


def test_device_id_parse():
    assert DeviceId.parse("line-a/thermo") == THERMO
    for bad in ("thermo", "/thermo", "line-a/", "a/b/c", ""):
        with pytest.raises(ValueError, match="namespace"):
            DeviceId.parse(bad)


def test_subscriptions_match_requests_and_not_the_nodes_own_publications():
    router = TopicRouter()
    for index, topic_filter in enumerate(subscriptions("pi-1")):
        router.add(topic_filter, index)
    for topic in [
        f"{ROOT}/twin/update",
        f"{ROOT}/twin/get",
        f"{ROOT}/state/update",
        "$hw/events/node/pi-1/membership/get",
    ]:
        assert router.match(topic), topic
    for topic in [
        f"{ROOT}/twin/update/result",
        f"{ROOT}/twin/update/delta",
        f"{ROOT}/twin/get/result",
        f"{ROOT}/state/update/result",
        "$hw/events/node/pi-1/membership/get/result",
        "$hw/events/node/pi-2/membership/get",  # another node's
    ]:
        assert not router.match(topic), topic

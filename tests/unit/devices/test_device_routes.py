"""RouteTable decisions, routes inside TwinService, and the config dataclasses' checks."""

from __future__ import annotations

import json

import pytest

from edgenode.devices import DeviceSpec, MqttSettings, RouteSpec, RouteTable, TwinService, Uplink
from edgenode.devices.routes import DEFAULT_UPSTREAM, NOWHERE, RouteDecision, Upstream
from edgenode.errors import ConfigError

TELEMETRY = "$edge/devices/lamp/telemetry/temp"


def test_telemetry_of_a_known_device_goes_upstream_by_default_and_other_topics_nowhere():
    table = RouteTable()
    assert table.decide(TELEMETRY, True) == RouteDecision(DEFAULT_UPSTREAM)
    assert table.decide("plant/line1", False) == NOWHERE


def test_an_upstream_route_changes_the_priority_and_ttl_of_telemetry():
    table = RouteTable([RouteSpec("$edge/devices/+/telemetry/temp", priority=1, ttl=60)])
    assert table.decide(TELEMETRY, True) == RouteDecision(Upstream(1, 60))
    assert table.decide("$edge/devices/lamp/telemetry/hum", True) == RouteDecision(DEFAULT_UPSTREAM)


def test_a_disabled_upstream_route_turns_the_default_uplink_off():
    table = RouteTable([RouteSpec("$edge/devices/+/telemetry/#", enabled=False)])
    assert table.decide(TELEMETRY, True) == NOWHERE


def test_the_most_urgent_matching_route_wins_and_the_longest_ttl_breaks_ties():
    table = RouteTable(
        [
            RouteSpec("$edge/devices/#", priority=4, ttl=10),
            RouteSpec("$edge/devices/+/telemetry/+", priority=2, ttl=5),
            RouteSpec("$edge/devices/lamp/#", priority=2, ttl=None),
            RouteSpec("$edge/devices/lamp/telemetry/temp", priority=0, enabled=False),
        ]
    )
    assert table.decide(TELEMETRY, True).upstream == Upstream(2, None)


def test_a_republish_route_adds_a_local_copy_and_keeps_the_default_uplink():
    table = RouteTable([RouteSpec("$edge/devices/+/telemetry/temp", to="topic:plant/temps")])
    assert table.decide(TELEMETRY, True) == RouteDecision(DEFAULT_UPSTREAM, ("plant/temps",))


def test_a_route_selects_any_local_topic_for_upstream():
    table = RouteTable([RouteSpec("plant/+/alarm", priority=0, ttl=3600)])
    assert table.decide("plant/line1/alarm", False) == RouteDecision(Upstream(0, 3600))
    assert table.decide("plant/line1/ok", False) == NOWHERE


def test_decide_many_agrees_with_decide_one_topic_at_a_time():
    table = RouteTable(
        [
            RouteSpec("a/#", priority=1),
            RouteSpec("+/b", to="topic:c/d"),
            RouteSpec("x", enabled=False),
        ]
    )
    topics = ["a/b", "z/b", "x", "q", TELEMETRY]
    flags = [False, True, True, False, True]
    assert table.decide_many(topics, flags) == [
        table.decide(t, f) for t, f in zip(topics, flags, strict=True)
    ]


def test_filters_lists_each_route_filter_once_in_order():
    table = RouteTable([RouteSpec("a/#"), RouteSpec("b/+", to="topic:c"), RouteSpec("a/#")])
    assert table.filters() == ["a/#", "b/+"]


@pytest.mark.parametrize(
    ("routes", "match"),
    [
        ([RouteSpec("a/#", to="topic:a/b")], "would loop"),
        ([RouteSpec("x/#", to="topic:y/1"), RouteSpec("y/#", to="topic:z")], "would loop"),
    ],
)
def test_a_republish_that_would_loop_is_refused(routes, match):
    with pytest.raises(ConfigError, match=match):
        RouteTable(routes)


def test_routes_work_inside_the_twin_service(core, tmp_path):
    store = core.Store(str(tmp_path / "node.db"))
    try:
        svc = TwinService(
            store,
            [DeviceSpec("lamp")],
            RouteTable(
                [
                    RouteSpec("$edge/devices/+/telemetry/temp", priority=0, ttl=30),
                    RouteSpec("$edge/devices/+/telemetry/temp", to="topic:plant/temp"),
                    RouteSpec("plant/alarms/#", priority=1),
                ]
            ),
        )
        actions = svc.handle(TELEMETRY, b"21", 1.0)
        (uplink,) = [a for a in actions if isinstance(a, Uplink)]
        assert (uplink.priority, uplink.ttl) == (0, 30)
        assert [(a.topic, a.payload) for a in actions if not isinstance(a, Uplink)] == [
            ("plant/temp", b"21")
        ]
        (alarm,) = svc.handle("plant/alarms/fire", b"!", 2.0)
        assert isinstance(alarm, Uplink)
        assert json.loads(alarm.body)["device"] is None
        assert svc.handle("plant/other", b"x", 3.0) == []
    finally:
        store.close()


# ------------------------------------------------------------------ config ----


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"from_filter": "a/#/b"}, "from"),
        ({"from_filter": "a", "to": "cloud"}, "to must be"),
        ({"from_filter": "a", "to": "topic:a/+"}, "to:"),
        ({"from_filter": "a", "priority": 10}, "priority"),
        ({"from_filter": "a", "priority": True}, "priority"),
        ({"from_filter": "a", "ttl": 0}, "ttl"),
        ({"from_filter": "a", "ttl": float("nan")}, "ttl"),
        ({"from_filter": "a", "enabled": "yes"}, "enabled"),
    ],
)
def test_a_bad_route_is_a_config_error_naming_the_field(kwargs, match):
    with pytest.raises(ConfigError, match=match):
        RouteSpec(**kwargs)


@pytest.mark.parametrize("name", ["", "a/b", "a+", "#", "with space", "x" * 129, "-lead", 5])
def test_a_device_name_must_be_one_topic_level_and_a_username(name):
    with pytest.raises(ConfigError, match="device name"):
        DeviceSpec(name)


def test_a_desired_document_over_the_twin_limits_is_a_config_error():
    with pytest.raises(ConfigError, match="MAX_DOCUMENT_BYTES"):
        DeviceSpec("lamp", {"x": "y" * 70_000})


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"host": ""}, "host"),
        ({"port": 0}, "port"),
        ({"client_id": ""}, "client_id"),
        ({"backoff_base": 0}, "backoff"),
    ],
)
def test_bad_mqtt_settings_are_config_errors(kwargs, match):
    with pytest.raises(ConfigError, match=match):
        MqttSettings(**kwargs)


def test_the_mqtt_password_is_not_shown_in_the_repr():
    assert "s3cret" not in repr(MqttSettings(username="node", password="s3cret"))

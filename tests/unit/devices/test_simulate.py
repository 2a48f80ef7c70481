"""The simulated devices' own logic (edgenode.devices.simulate), without a broker: the
thermostat's delta handling and drift, the meter's numbered readings, the parsers."""

from __future__ import annotations

import argparse
import json

import pytest

from edgenode.devices.simulate import (
    MAX_TARGET,
    MIN_TARGET,
    Meter,
    Thermostat,
    main,
    parse_broker,
    parse_delta,
    round_step,
    write_state,
)


def test_a_thermostat_applies_target_temp_from_its_delta_and_acks_the_version():
    thermostat = Thermostat(temperature=19.0)
    patch, ack = thermostat.apply_delta(3, {"target_temp": 23})
    assert patch == {"target_temp": 23}
    assert ack == {"version": 3, "status": "accepted"}
    assert thermostat.target_temp == 23.0
    assert thermostat.applied_version == 3
    assert thermostat.reported() == {"temperature": 19.0, "target_temp": 23.0}


@pytest.mark.parametrize(
    "value", [MIN_TARGET - 0.1, MAX_TARGET + 1, True, "23", None, [23], {"c": 23}, float("nan")]
)
def test_a_thermostat_refuses_a_target_that_is_not_a_number_in_range_and_keeps_its_own(value):
    thermostat = Thermostat(temperature=19.0, target_temp=21.0, applied_version=1)
    patch, ack = thermostat.apply_delta(2, {"target_temp": value})
    assert patch == {}
    assert ack["status"] == "rejected"
    assert ack["version"] == 2
    assert ack["reason"] == "target_temp must be a number in [5, 35]"
    assert (thermostat.target_temp, thermostat.applied_version) == (21.0, 1)


def test_a_delta_without_target_temp_is_acked_and_changes_nothing():
    thermostat = Thermostat()
    patch, ack = thermostat.apply_delta(4, {"fan": {"speed": 2}})
    assert (patch, ack) == ({}, {"version": 4, "status": "accepted"})
    assert thermostat.target_temp is None
    assert thermostat.reported() == {"temperature": 19.0}


def test_the_temperature_drifts_toward_the_target_at_the_rate_and_stops_on_it():
    thermostat = Thermostat(temperature=19.0, target_temp=20.0, rate=0.5)
    seen = []
    while thermostat.step(0.5):
        seen.append(thermostat.temperature)
    assert seen == [19.2, 19.5, 19.8, 20.0]  # 19.25 rounds half to even
    assert thermostat.step(10) is False
    assert thermostat.temperature == 20.0


def test_the_temperature_drifts_down_too_and_never_overshoots():
    thermostat = Thermostat(temperature=25.0, target_temp=21.0, rate=3.0)
    assert thermostat.step(1.0)
    assert thermostat.temperature == 22.0
    assert thermostat.step(5.0)
    assert thermostat.temperature == 21.0


def test_without_a_target_or_time_the_temperature_does_not_move():
    assert Thermostat(temperature=19.0).step(100) is False
    assert Thermostat(temperature=19.0, target_temp=30.0).step(0) is False
    assert Thermostat(temperature=19.0, target_temp=30.0).step(-1) is False


def test_reported_temperatures_are_on_the_tenth_of_a_degree_grid():
    assert round_step(20.300000000000001) == 20.3
    assert round_step(19.94) == 19.9
    thermostat = Thermostat(temperature=19.0, target_temp=23.0, rate=0.37)
    for _ in range(30):
        thermostat.step(0.5)
        assert thermostat.temperature == round(thermostat.temperature, 1)
    assert thermostat.temperature == 23.0


def test_meter_readings_are_numbered_from_zero_and_count_only_what_was_acknowledged():
    meter = Meter(interval=0.5)
    first = meter.reading()
    assert first["n"] == 0
    assert meter.reading() == first  # not acknowledged: the same reading again
    meter.acknowledged(first)
    second = meter.reading()
    assert second["n"] == 1
    assert second["energy_wh"] > first["energy_wh"] > 0
    meter.acknowledged(second)
    assert meter.sent == 2
    assert set(second) == {"n", "power_w", "energy_wh"}


@pytest.mark.parametrize(
    ("payload", "expected"),
    [
        (b"", None),
        (b"not json", None),
        (b"[1, 2]", None),
        (b'{"version": true, "delta": {}}', None),
        (b'{"version": 2, "delta": [1]}', None),
        (b'{"delta": {"a": 1}}', None),
        (b'{"version": 2, "delta": {"target_temp": 23}}', (2, {"target_temp": 23})),
    ],
)
def test_a_delta_message_is_read_and_anything_else_is_ignored(payload, expected):
    assert parse_delta(payload) == expected


def test_broker_addresses_are_host_and_port_with_1883_by_default():
    assert parse_broker("127.0.0.1:18830") == ("127.0.0.1", 18830)
    assert parse_broker("broker.local") == ("broker.local", 1883)
    assert parse_broker(":1884") == ("127.0.0.1", 1884)
    for bad in ("host:x", "host:0", "host:70000"):
        with pytest.raises(argparse.ArgumentTypeError, match="expected HOST:PORT"):
            parse_broker(bad)


def test_the_state_file_is_replaced_whole(tmp_path):
    path = tmp_path / "meter.json"
    write_state(path, {"published": 1})
    write_state(path, {"published": 2})
    assert json.loads(path.read_text()) == {"published": 2}
    assert [p.name for p in tmp_path.iterdir()] == ["meter.json"]
    write_state(None, {"published": 3})  # no file asked for: nothing happens


def test_the_command_refuses_a_non_positive_interval(capsys):
    assert main(["meter", "--device", "m", "--interval", "0"]) == 2
    assert "--interval and --rate must be positive" in capsys.readouterr().err

"""The example KubeEdge mapper's device logic (devices/kubeedge/mapper.py)."""

from __future__ import annotations

import pytest

from edgenode.devices.kubeedge.mapper import Thermostat, parse_args


def test_it_applies_expected_values_and_reports_them_with_their_types():
    thermostat = Thermostat()
    twin = {
        "target": {"expected": {"value": "23"}, "metadata": {"type": "int"}},
        "mode": {"expected": {"value": "eco"}},
        "temperature": {"actual": {"value": "19.0"}, "metadata": {"type": "float"}},
    }
    assert thermostat.apply(twin) == {"target": ("23", "int"), "mode": ("eco", "string")}
    assert thermostat.target == 23.0
    assert thermostat.apply(twin, ["mode"]) == {"mode": ("eco", "string")}


def test_a_target_it_cannot_reach_is_not_applied():
    thermostat = Thermostat()
    twin = {"target": {"expected": {"value": "warm"}, "metadata": {"type": "string"}}}
    assert thermostat.apply(twin) == {}
    assert thermostat.target is None


def test_the_temperature_drifts_toward_the_target_in_steps():
    thermostat = Thermostat(temperature=19.0, rate=1.0)
    assert thermostat.tick(0.0) == {"temperature": ("19.0", "float")}
    assert thermostat.tick(1.0) == {}  # no target: no change, nothing to report
    thermostat.target = 20.0
    assert thermostat.tick(0.5) == {"temperature": ("19.5", "float")}
    assert thermostat.tick(10.0) == {"temperature": ("20.0", "float")}
    assert thermostat.tick(1.0) == {}


def test_arguments():
    args = parse_args(["--device", "line-a/thermo", "--count", "3"])
    assert (args.device, args.count, args.broker) == ("line-a/thermo", 3, "127.0.0.1:1883")
    with pytest.raises(SystemExit):
        parse_args(["--interval", "soon"])

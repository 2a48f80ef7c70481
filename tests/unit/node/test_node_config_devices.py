"""``[[device]]``, ``[[route]]`` and the device-layer keys of ``[mqtt]`` in the node config:
defaults, values read, and errors naming the file and the entry's key."""

from __future__ import annotations

from pathlib import Path

import pytest

from edgenode.cli import main
from edgenode.config import DEFAULT_CONFIG_TEXT, load_config
from edgenode.devices import DeviceSpec, RouteSpec
from edgenode.errors import ConfigError

MINIMAL = "[node]\nname = 'ship-7'\ndata_dir = 'state'\n"


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "node.toml"
    path.write_text(MINIMAL + text)
    return path


def test_devices_and_routes_are_read_in_order(tmp_path):
    config = load_config(
        write(
            tmp_path,
            """
[[device]]
name = "lamp"
desired = { power = "on", fan = { speed = 2 } }

[[device]]
name = "thermometer"

[[route]]
from = "$edge/devices/+/telemetry/alarm"
priority = 0
ttl = 3600

[[route]]
from = "$edge/devices/+/telemetry/debug"
enabled = false

[[route]]
from = "$edge/devices/+/telemetry/temperature"
to = "topic:plant/temperatures"
""",
        ),
        env={},
    )
    assert config.devices == (
        DeviceSpec("lamp", {"power": "on", "fan": {"speed": 2}}),
        DeviceSpec("thermometer"),
    )
    assert config.routes == (
        RouteSpec("$edge/devices/+/telemetry/alarm", "upstream", 0, 3600.0),
        RouteSpec("$edge/devices/+/telemetry/debug", enabled=False),
        RouteSpec("$edge/devices/+/telemetry/temperature", "topic:plant/temperatures"),
    )
    assert config.device_layer_enabled


def test_the_device_layer_runs_only_when_enabled_and_it_has_something_to_serve(tmp_path):
    assert not load_config(write(tmp_path, ""), env={}).device_layer_enabled
    with_hub = "[hub]\nurl = 'ws://hub:1'\ntoken = 't'\n"
    assert load_config(write(tmp_path, with_hub), env={}).device_layer_enabled
    device = "[[device]]\nname = 'lamp'\n"
    assert load_config(write(tmp_path, device), env={}).device_layer_enabled
    off = "[mqtt]\nenabled = false\n" + device
    assert not load_config(write(tmp_path, off), env={}).device_layer_enabled
    env = {"EDGENODE_MQTT_ENABLED": "no"}
    assert not load_config(write(tmp_path, device), env=env).device_layer_enabled


def test_mqtt_settings_default_the_client_id_to_the_node_name(tmp_path):
    settings = load_config(write(tmp_path, ""), env={}).mqtt_settings()
    assert settings.client_id == "edgenode-ship-7"
    assert (settings.host, settings.port, settings.keepalive) == ("127.0.0.1", 1883, 30)
    (tmp_path / "ca.pem").write_text("x")
    text = "[mqtt]\nclient_id = 'gw'\ntls = true\nca_file = 'ca.pem'\nkeepalive = 7\n"
    settings = load_config(write(tmp_path, text), env={}).mqtt_settings()
    assert (settings.client_id, settings.tls, settings.keepalive) == ("gw", True, 7)
    assert settings.ca_file == str(tmp_path / "ca.pem")  # relative to the config file


def test_a_long_node_name_gives_a_client_id_the_broker_accepts(tmp_path):
    text = "[node]\nname = '" + "n" * 200 + "'\ndata_dir = 's'\n"
    path = tmp_path / "node.toml"
    path.write_text(text)
    settings = load_config(path, env={}).mqtt_settings()
    assert settings.client_id.startswith("edgenode-nnn")
    assert len(settings.client_id) <= 92


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("[[device]]\ndesired = {}\n", "device[0].name: required"),
        ("[[device]]\nname = 'a'\n[[device]]\nname = 7\n", "device[1].name: expected a string"),
        ("[[device]]\nname = 'a/b'\n", "device[0].name: device name 'a/b' must match"),
        ("[[device]]\nname = 'a'\ncolour = 1\n", "device[0]: unknown key 'colour'"),
        ("[[device]]\nname = 'a'\ndesired = 3\n", "device[0].desired: expected a table"),
        (
            "[[device]]\nname = 'a'\n[[device]]\nname = 'a'\n",
            "device[1].name: device 'a' is configured twice",
        ),
        ("[[device]]\nname = 'a'\ndesired = { when = 1979-05-27 }\n", "device[0].desired:"),
        ("[[route]]\nto = 'upstream'\n", "route[0].from: required"),
        ("[[route]]\nfrom = 'a/#/b'\n", "route[0].from:"),
        ("[[route]]\nfrom = 'a'\nto = 'nowhere'\n", "route[0].to:"),
        ("[[route]]\nfrom = 'a'\nto = 'topic:a/+'\n", "route[0].to:"),
        ("[[route]]\nfrom = 'a'\npriority = 10\n", "route[0].priority: must be in [0, 9]"),
        ("[[route]]\nfrom = 'a'\npriority = true\n", "route[0].priority: expected an integer"),
        ("[[route]]\nfrom = 'a'\nttl = 0\n", "route[0].ttl: must be a positive number"),
        ("[[route]]\nfrom = 'a'\nttl = 'x'\n", "route[0].ttl: expected a number"),
        ("[[route]]\nfrom = 'a'\nenabled = 1\n", "route[0].enabled: expected a boolean"),
        ("[[route]]\nfrom = 'a'\nvia = 1\n", "route[0]: unknown key 'via'"),
        ("[[route]]\nfrom = 'a/#'\nto = 'topic:a/b'\n", "would loop"),
        ("[mqtt]\nkeepalive = 0\n", "[mqtt] keepalive: must be in [1, 65535]"),
        ("[mqtt]\nclient_id = '" + "c" * 93 + "'\n", "[mqtt] client_id: at most 92"),
        ("[mqtt]\nca_file = 'ca.pem'\n", "[mqtt] ca_file is only used with tls = true"),
        ("[mqtt]\nenabled = 'yes'\n", "[mqtt] enabled: expected a boolean"),
    ],
)
def test_bad_device_route_and_mqtt_entries_are_errors_naming_file_and_key(tmp_path, text, expected):
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load_config(path, env={})
    message = str(info.value)
    assert message.startswith(f"{path.absolute()}: ")
    assert expected in message


def test_a_device_key_that_is_not_an_array_of_tables_is_an_error(tmp_path):
    path = tmp_path / "node.toml"
    path.write_text("device = 3\n" + MINIMAL)
    with pytest.raises(ConfigError, match="device must be an array of tables"):
        load_config(path, env={})


def test_config_check_reports_a_bad_device_entry(tmp_path, capsys):
    path = write(tmp_path, "[[device]]\nname = ''\n")
    assert main(["config", "check", "--config", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("edgenode: error: ")
    assert "device[0].name" in err


def test_the_default_config_text_documents_devices_and_routes(capsys):
    assert main(["config", "print-default"]) == 0
    text = capsys.readouterr().out
    assert "# [[device]]" in text
    assert "# [[route]]" in text
    for key in ("enabled", "client_id", "ca_file", "keepalive"):
        assert f"\n{key} = " in text


def test_the_commented_device_and_route_examples_are_valid_once_uncommented(tmp_path):
    lines = []
    for line in DEFAULT_CONFIG_TEXT.splitlines():
        body = line.removeprefix("# ")
        if body.startswith("[[") or (" = " in body and not body.startswith(("#", "e.g"))):
            line = body
        lines.append(line)
    path = tmp_path / "node.toml"
    path.write_text("\n".join(lines) + "\n")
    config = load_config(path, env={})
    kubeedge = {"namespace": "line-a", "name": "lamp", "types": {"power": "string"}}
    assert config.devices == (DeviceSpec("lamp", {"power": "on"}, kubeedge=kubeedge),)
    assert config.routes == (RouteSpec("$edge/devices/+/telemetry/alarm", "upstream", 0, 3600),)

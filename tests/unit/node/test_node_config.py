"""The node's TOML configuration: defaults, every key, env overrides, errors naming key+file."""

from __future__ import annotations

import dataclasses
import tomllib
from pathlib import Path

import pytest

from edgenode.cli import main
from edgenode.config import (
    DEFAULT_CONFIG_TEXT,
    SECTIONS,
    Config,
    env_name,
    load_config,
    parse_config,
)
from edgenode.errors import ConfigError

MINIMAL = "[node]\nname = 'ship-7'\ndata_dir = 'state'\n"


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "node.toml"
    path.write_text(text)
    return path


def test_a_minimal_config_gets_every_default(tmp_path):
    config = load_config(write(tmp_path, MINIMAL), env={})
    assert config.node.name == "ship-7"
    assert config.node.data_dir == str(tmp_path / "state")  # relative to the file
    assert config.standalone
    assert config.hub.backoff_cap == 30.0
    assert config.mqtt.port == 1883
    assert config.outbox.max_bytes == 64 * 1024 * 1024
    assert config.outbox.default_ttl == 0.0
    assert config.status.interval == 30.0
    assert config.metrics.listen == "127.0.0.1:9101"
    assert config.log.level == "info"
    assert config.db_path == tmp_path / "state" / "node.db"
    # A node on an SD card stays under 2 KB written per report at 100 reports/s.
    assert (config.store.synchronous, config.store.commit_window) == ("normal", 0.1)


def test_every_key_of_the_default_text_is_read_back(tmp_path):
    """print-default cannot drift from the dataclasses: every field is in the text."""
    data = tomllib.loads(DEFAULT_CONFIG_TEXT)
    for section, cls in SECTIONS.items():
        assert set(data[section]) == {f.name for f in dataclasses.fields(cls)}, section
    config = load_config(write(tmp_path, DEFAULT_CONFIG_TEXT), env={})
    defaults = Config(node=config.node)
    for section in SECTIONS:
        if section not in ("node",):
            assert getattr(config, section) == getattr(defaults, section), section


def test_every_key_can_be_set(tmp_path):
    token_file = tmp_path / "token"
    token_file.write_text("  s3cret\n")
    text = (
        MINIMAL
        + """
[hub]
url = "wss://hub.example.com:8443"
token_file = "token"
ca_file = "ca.pem"
handshake_timeout = 5
backoff_base = 0.5
backoff_cap = 60.0
max_frame_size = 65536
uplink_batch = 10
[mqtt]
host = "broker"
port = 8883
username = "u"
password = "p"
tls = true
[outbox]
max_bytes = 1000
default_ttl = 3600
[store]
synchronous = "FULL"
commit_window = 0.25
[status]
interval = 5
[metrics]
listen = ""
[log]
level = "DEBUG"
"""
    )
    config = load_config(write(tmp_path, text), env={})
    assert config.hub.url == "wss://hub.example.com:8443/v1/connect"
    assert config.hub.ca_file == str(tmp_path / "ca.pem")
    assert config.hub_token() == "s3cret"
    assert config.hub.handshake_timeout == 5.0
    assert (config.hub.backoff_base, config.hub.backoff_cap) == (0.5, 60.0)
    assert (config.hub.max_frame_size, config.hub.uplink_batch) == (65536, 10)
    assert config.mqtt == type(config.mqtt)("broker", 8883, "u", "p", True)
    assert (config.outbox.max_bytes, config.outbox.default_ttl) == (1000, 3600.0)
    assert config.store.synchronous == "full"
    assert config.store.commit_window == 0.25
    assert config.mqtt_settings().commit_window == 0.25
    assert config.status.interval == 5.0
    assert config.metrics.listen == ""
    assert config.log.level == "debug"


def test_a_hub_url_with_a_path_keeps_it(tmp_path):
    text = MINIMAL + "[hub]\nurl = 'ws://h:1/custom'\ntoken = 't'\n"
    assert load_config(write(tmp_path, text), env={}).hub.url == "ws://h:1/custom"


def test_environment_variables_override_the_file(tmp_path):
    env = {
        "EDGENODE_HUB_URL": "ws://10.0.0.1:9000",
        "EDGENODE_HUB_TOKEN": "from-env",
        "EDGENODE_MQTT_PORT": "1884",
        "EDGENODE_MQTT_TLS": "yes",
        "EDGENODE_STATUS_INTERVAL": "2.5",
        "EDGENODE_NODE_NAME": "other",
        "EDGENODE_BACKEND": "python",  # not a config key: ignored here
    }
    config = load_config(write(tmp_path, MINIMAL), env=env)
    assert config.hub.url == "ws://10.0.0.1:9000/v1/connect"
    assert config.hub_token() == "from-env"
    assert config.mqtt.port == 1884
    assert config.mqtt.tls is True
    assert config.status.interval == 2.5
    assert config.node.name == "other"


def test_required_keys_may_come_from_the_environment(tmp_path):
    env = {"EDGENODE_NODE_NAME": "n", "EDGENODE_NODE_DATA_DIR": "/var/lib/x"}
    config = load_config(write(tmp_path, ""), env=env)
    assert (config.node.name, config.node.data_dir) == ("n", "/var/lib/x")


def test_an_environment_variable_of_the_wrong_type_is_named(tmp_path):
    with pytest.raises(
        ConfigError, match="environment variable EDGENODE_MQTT_PORT: expected an integer"
    ):
        load_config(write(tmp_path, MINIMAL), env={"EDGENODE_MQTT_PORT": "many"})
    with pytest.raises(ConfigError, match="EDGENODE_MQTT_TLS: expected a boolean"):
        load_config(write(tmp_path, MINIMAL), env={"EDGENODE_MQTT_TLS": "maybe"})


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ("[node]\nname = 'a'\n", "[node] data_dir is required"),
        ("", None),
        ("[nodes]\n", "unknown section [nodes]"),
        ("[hub]\nurl = 'ws://h'\ntoken = 't'\ntokn = 'x'\n", "[hub] unknown key 'tokn'"),
        ("[mqtt]\nport = '1883'\n", "[mqtt] port: expected an integer, got str '1883'"),
        ("[mqtt]\nport = true\n", "[mqtt] port: expected an integer, got True"),
        ("[mqtt]\nport = 70000\n", "[mqtt] port: must be in [1, 65535]"),
        ("[mqtt]\ntls = 1\n", "[mqtt] tls: expected a boolean"),
        ("[status]\ninterval = 'fast'\n", "[status] interval: expected a number"),
        ("[status]\ninterval = 0\n", "[status] interval: must be at least"),
        ("[hub]\nurl = 'http://h'\ntoken = 't'\n", "[hub] url: expected a ws:// or wss:// URL"),
        ("[hub]\nurl = 'ws://h:99999'\ntoken = 't'\n", "[hub] url: invalid port"),
        ("[hub]\nurl = 'ws://h'\n", "[hub] url is set but neither token nor token_file"),
        ("[hub]\ntoken = 'a'\ntoken_file = 'b'\n", "token and token_file are exclusive"),
        ("[hub]\nurl = 'ws://h'\ntoken = 't'\nca_file = 'c'\n", "ca_file is only used with a wss"),
        ("[hub]\nbackoff_cap = -1\n", "[hub] backoff_cap: must be positive"),
        ("[hub]\nbackoff_base = 10.0\nbackoff_cap = 5.0\n", "backoff_base: must not exceed"),
        ("[hub]\nmax_frame_size = 10\n", "[hub] max_frame_size: must be in"),
        ("[outbox]\nmax_bytes = 0\n", "[outbox] max_bytes: must be at least 1"),
        ("[outbox]\ndefault_ttl = -1\n", "[outbox] default_ttl: must not be negative"),
        ("[metrics]\nlisten = 'nohost'\n", "[metrics] listen: expected host:port"),
        ("[log]\nlevel = 'loud'\n", "[log] level: must be one of"),
        ("[store]\nsynchronous = 'off'\n", "[store] synchronous: must be one of normal, full"),
        ("[store]\ncommit_window = -0.1\n", "[store] commit_window: must be in [0, 1]"),
        ("[store]\ncommit_window = 5\n", "[store] commit_window: must be in [0, 1]"),
        ("[store]\ncommit_window = 'soon'\n", "[store] commit_window"),
        ("hub = 3\n", "[hub] must be a table"),
    ],
)
def test_bad_values_name_the_file_and_the_key(tmp_path, extra, message):
    text = extra if extra.startswith("[node]") else MINIMAL + extra
    if message is None:
        load_config(write(tmp_path, text), env={})
        return
    path = write(tmp_path, text if not extra.startswith("hub =") else extra + MINIMAL)
    with pytest.raises(ConfigError) as info:
        load_config(path, env={})
    assert str(path) in str(info.value)
    assert message in str(info.value)


def test_a_node_name_must_fit_the_protocol(tmp_path):
    with pytest.raises(ConfigError, match=r"\[node\] name"):
        parse_config({"node": {"name": "x" * 254, "data_dir": "/d"}}, "f.toml", env={})
    with pytest.raises(ConfigError, match=r"\[node\] name"):
        parse_config({"node": {"name": " padded", "data_dir": "/d"}}, "f.toml", env={})


def test_malformed_toml_and_missing_files_are_config_errors(tmp_path):
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(write(tmp_path, "[node\nname="), env={})
    with pytest.raises(ConfigError, match="no such file"):
        load_config(tmp_path / "absent.toml", env={})
    with pytest.raises(ConfigError, match="is a directory"):
        load_config(tmp_path, env={})
    (tmp_path / "bin.toml").write_bytes(b"\xff\xfe\x00")
    with pytest.raises(ConfigError, match="not valid UTF-8"):
        load_config(tmp_path / "bin.toml", env={})


def test_an_unreadable_token_file_is_named_when_the_token_is_needed(tmp_path):
    text = MINIMAL + "[hub]\nurl = 'ws://h'\ntoken_file = 'missing'\n"
    config = load_config(write(tmp_path, text), env={})
    with pytest.raises(ConfigError, match=r"\[hub\] token_file: cannot read .*missing"):
        config.hub_token()
    (tmp_path / "missing").write_text("\n")
    with pytest.raises(ConfigError, match="is empty"):
        config.hub_token()


def test_config_print_default_prints_a_file_that_config_check_accepts(tmp_path, capsys):
    assert main(["config", "print-default"]) == 0
    text = capsys.readouterr().out
    assert text == DEFAULT_CONFIG_TEXT
    path = write(tmp_path, text)
    assert main(["config", "check", "--config", str(path)]) == 0
    assert "ok (node my-node" in capsys.readouterr().out


def test_config_check_exits_2_with_the_error_on_stderr(tmp_path, capsys):
    path = write(tmp_path, MINIMAL + "[mqtt]\nprot = 1\n")
    assert main(["config", "check", "--config", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("edgenode: error: ")
    assert "[mqtt] unknown key 'prot'" in err
    assert main(["status", "--config", str(path)]) == 2
    assert main(["run", "--config", str(path)]) == 2


def test_env_names_follow_section_and_key():
    assert env_name("hub", "token_file") == "EDGENODE_HUB_TOKEN_FILE"

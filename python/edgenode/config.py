"""The node's configuration: frozen dataclasses loaded from TOML, validated once.

``load_config(path)`` reads a TOML file, applies ``EDGENODE_<SECTION>_<KEY>`` environment
overrides, checks every key and type, and returns a :class:`Config`. Every problem is a
:class:`~edgenode.errors.ConfigError` naming the file (or the environment variable) and the
``[section] key``. ``DEFAULT_CONFIG_TEXT`` is the commented default file printed by
``edgenode config print-default``; a test loads it back so it cannot drift from the
dataclasses. This module only parses and validates: it opens no sockets and no store.

Besides the ``[section]`` tables, two arrays of tables configure the device layer:
``[[device]]`` (``name``, optional ``desired`` table) and ``[[route]]`` (``from``, ``to``,
``priority``, ``ttl``, ``enabled``); errors name them by 0-based index (``device[2].name``).
A third, ``[[config]]`` (``name``, ``data`` table of strings), gives the node Configs of its
own (the hub's Config of the same name wins). They are not overridable from the
environment.
"""

from __future__ import annotations

import dataclasses
import os
import re
import tomllib
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final
from urllib.parse import urlsplit, urlunsplit

from edgenode.devices.config import (
    DEFAULT_TELEMETRY_PRIORITY,
    MAX_CLIENT_ID_CHARS,
    MAX_PRIORITY,
    MIN_PRIORITY,
    UPSTREAM,
    DeviceSpec,
    MqttSettings,
    RouteSpec,
    validate_device_name,
)
from edgenode.devices.routes import RouteTable
from edgenode.errors import ConfigError
from edgenode.protocol.constants import (
    MAX_MAX_FRAME_SIZE,
    MAX_NODE_NAME_LENGTH,
    MIN_MAX_FRAME_SIZE,
)

ENV_PREFIX: Final = "EDGENODE_"
HUB_LINK_PATH: Final = "/v1/connect"
"""The hub's node-link path, used when ``hub.url`` has none."""
LOG_LEVELS: Final = ("debug", "info", "warning", "error")
MIN_STATUS_INTERVAL: Final = 0.05
MIN_HEARTBEAT_FLOOR: Final = 0.01
MAX_PORT: Final = 65535
DEFAULT_METRICS_LISTEN: Final = "127.0.0.1:9101"
MAX_TOKEN_FILE_BYTES: Final = 64 * 1024
"""A token file larger than this is certainly not a token."""
CLIENT_ID_PREFIX: Final = "edgenode-"
"""The default MQTT client id is this plus the node name (cut to MAX_CLIENT_ID_CHARS)."""
MAX_MQTT_KEEPALIVE: Final = 65535
"""MQTT's keep-alive field is 16 bits."""
MAX_DEVICES: Final = 10_000
MAX_ROUTES: Final = 1_000
DEVICE_KEYS: Final = ("name", "desired", "kubeedge")
ROUTE_KEYS: Final = ("from", "to", "priority", "ttl", "enabled")
CONFIG_KEYS: Final = ("name", "data")
MIN_LOG_BYTES: Final = 4096
CONTAINER_RUNTIMES: Final = ("auto", "docker", "podman", "none")
SYNCHRONOUS_SETTINGS: Final = ("normal", "full")
"""``[store] synchronous``: SQLite's ``PRAGMA synchronous`` in WAL mode (docs/store.md)."""
MAX_COMMIT_WINDOW: Final = 1.0
"""``[store] commit_window`` at most this many seconds: a PUBACK is held this long at most."""
MAX_CONFIGS: Final = 1_000
MAX_CONFIG_ENTRIES: Final = 4096
CONFIG_NAME_PATTERN: Final = re.compile(r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$")
"""Config names as the hub's resource names (DNS subdomains): safe as file names."""
MAX_CONFIG_NAME_CHARS: Final = 253


@dataclass(frozen=True)
class LocalConfig:
    """A ``[[config]]`` table: a Config the node has without a hub."""

    name: str
    data: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class NodeSection:
    name: str
    """This node's name (1..253 characters), as the hub knows it."""
    data_dir: str
    """Directory of the node's state: ``node.db`` (SQLite), ``link-state.json``, pid file."""


@dataclass(frozen=True)
class HubSection:
    url: str = ""
    """``ws://`` or ``wss://`` URL of the hub; empty: the node runs standalone."""
    token: str = ""
    token_file: str = ""
    """A file holding the token (whitespace stripped); exclusive with ``token``."""
    ca_file: str = ""
    """PEM file of the CA that signed the hub's certificate (``wss://`` only)."""
    handshake_timeout: float = 10.0
    """Seconds for the TCP + TLS + HTTP handshake, and again for the hub's welcome."""
    backoff_base: float = 1.0
    """First reconnect delay bound in seconds; doubles per failed attempt (full jitter)."""
    backoff_cap: float = 30.0
    """Largest reconnect delay bound in seconds."""
    max_frame_size: int = 1024 * 1024
    """Largest message the node accepts from the hub, in bytes."""
    uplink_batch: int = 100
    """Outbox records read per step while sending uplink."""
    compression: bool = False
    """Ask the hub for permessage-deflate on the link (a thin link: satellite, cellular);
    the hub grants it only when it runs with ``--compression``."""


@dataclass(frozen=True)
class MqttSection:
    host: str = "127.0.0.1"
    port: int = 1883
    username: str = ""
    password: str = field(default="", repr=False)
    tls: bool = False
    enabled: bool = True
    """Run the device layer (when there is anything for it to serve, see Config)."""
    client_id: str = ""
    """Empty: ``edgenode-<node name>`` (fixed, so the broker keeps the node's session)."""
    ca_file: str = ""
    """PEM CA bundle for ``tls``; empty: the system trust store."""
    keepalive: int = 30
    """Seconds between MQTT pings: how fast a dead broker connection is noticed."""
    kubeedge: bool = True
    """Also serve KubeEdge's device twin API (``$hw/events/...``, docs/kubeedge.md)."""


@dataclass(frozen=True)
class OutboxSection:
    max_bytes: int = 64 * 1024 * 1024
    """Disk quota of the outbox (sum of payload bytes); see docs/store.md for the policy."""
    default_ttl: float = 0.0
    """Seconds an uplink record may wait; 0 means no expiry."""


@dataclass(frozen=True)
class StoreSection:
    synchronous: str = "normal"
    """``normal``: a commit survives a process kill, not a power loss; ``full``: it
    survives both (the WAL is synced on every commit). See docs/store.md, "Durability"."""
    commit_window: float = 0.1
    """Seconds the device layer waits after a message for more before it commits them
    together (0: commit what has arrived at once). Fewer, larger commits write less to
    flash; each message's PUBACK waits up to this long. The default keeps a node at 100
    reports/s under 2 KB written per report (an SD card's budget); 0 gives the lowest
    latency. See docs/store.md, "Disk writes"."""


@dataclass(frozen=True)
class AppsSection:
    enabled: bool = True
    """Run the Apps the hub targets at this node (false: report them Failed, run nothing)."""
    artifacts_max_bytes: int = 1024 * 1024 * 1024
    """Disk quota of the artifact cache (``data_dir/artifacts``), bytes."""
    log_max_bytes: int = 10 * 1024 * 1024
    """Each App's stdout/stderr log file is rotated at this size (one old file kept)."""
    container_runtime: str = "auto"
    """``auto`` (docker, then podman, if found), ``docker``, ``podman`` or ``none``."""


@dataclass(frozen=True)
class StatusSection:
    interval: float = 30.0
    """Seconds between node status samples. While connected each goes to the hub without
    a disk write; while not, only the newest is kept (see ``persist_interval``)."""
    persist_interval: float = 300.0
    """While the hub is unreachable (or standalone), seconds between durable writes of the
    newest status (coalesced in the outbox: only the newest waits); 0: every sample."""


@dataclass(frozen=True)
class MetricsSection:
    listen: str = DEFAULT_METRICS_LISTEN
    """``host:port`` of the Prometheus text endpoint; empty disables it."""


@dataclass(frozen=True)
class LogSection:
    level: str = "info"


@dataclass(frozen=True)
class Config:
    node: NodeSection
    hub: HubSection = field(default_factory=HubSection)
    mqtt: MqttSection = field(default_factory=MqttSection)
    outbox: OutboxSection = field(default_factory=OutboxSection)
    store: StoreSection = field(default_factory=StoreSection)
    apps: AppsSection = field(default_factory=AppsSection)
    status: StatusSection = field(default_factory=StatusSection)
    metrics: MetricsSection = field(default_factory=MetricsSection)
    log: LogSection = field(default_factory=LogSection)
    devices: tuple[DeviceSpec, ...] = ()
    """``[[device]]`` entries: devices served even with no hub."""
    routes: tuple[RouteSpec, ...] = ()
    """``[[route]]`` entries (hub Route resources come on top)."""
    configs: tuple[LocalConfig, ...] = ()
    """``[[config]]`` entries (hub Config resources of the same name replace them)."""
    source: str = ""
    """Where the configuration came from (the file path), for messages."""

    @property
    def db_path(self) -> Path:
        return Path(self.node.data_dir) / "node.db"

    @property
    def device_layer_enabled(self) -> bool:
        """The device layer runs when ``[mqtt] enabled`` and it may have work: devices,
        routes or Configs (retained messages) in the config, or a hub (which may send
        Device, Route and Config resources)."""
        return self.mqtt.enabled and bool(
            self.devices or self.routes or self.configs or self.hub.url
        )

    def mqtt_settings(self) -> MqttSettings:
        """What the device layer needs to reach the broker."""
        m = self.mqtt
        client_id = m.client_id or (CLIENT_ID_PREFIX + self.node.name)[:MAX_CLIENT_ID_CHARS]
        return MqttSettings(
            host=m.host,
            port=m.port,
            username=m.username,
            password=m.password,
            tls=m.tls,
            client_id=client_id,
            ca_file=m.ca_file,
            keepalive=m.keepalive,
            kubeedge=m.kubeedge,
            commit_window=self.store.commit_window,
        )

    @property
    def standalone(self) -> bool:
        return not self.hub.url

    def hub_token(self) -> str:
        """The token, read from ``token_file`` when that is set (ConfigError if unreadable)."""
        if not self.hub.token_file:
            return self.hub.token
        try:
            with open(self.hub.token_file, "rb") as handle:
                raw = handle.read(MAX_TOKEN_FILE_BYTES + 1)
        except OSError as exc:
            raise ConfigError(
                f"{self.source}: [hub] token_file: cannot read {self.hub.token_file}: "
                f"{exc.strerror or exc}"
            ) from None
        if len(raw) > MAX_TOKEN_FILE_BYTES:
            raise ConfigError(f"{self.source}: [hub] token_file: {self.hub.token_file} is too big")
        token = raw.decode("utf-8", errors="replace").strip()
        if not token:
            raise ConfigError(f"{self.source}: [hub] token_file: {self.hub.token_file} is empty")
        return token


SECTIONS: Final[dict[str, type[Any]]] = {
    "node": NodeSection,
    "hub": HubSection,
    "mqtt": MqttSection,
    "outbox": OutboxSection,
    "store": StoreSection,
    "apps": AppsSection,
    "status": StatusSection,
    "metrics": MetricsSection,
    "log": LogSection,
}
REQUIRED: Final = (("node", "name"), ("node", "data_dir"))
ARRAYS: Final = ("device", "route", "config")
"""Arrays of tables (``[[device]]``, ``[[route]]``, ``[[config]]``), parsed apart from the
sections."""


DEFAULT_CONFIG_TEXT: Final = """\
# edgenode configuration (TOML). Only [node] name and data_dir are required.
# Every key can be overridden by an environment variable EDGENODE_<SECTION>_<KEY>,
# e.g. EDGENODE_HUB_URL or EDGENODE_LOG_LEVEL. Relative paths are relative to this file.

[node]
name = "my-node"                  # this node's name, as the hub knows it (1..253 characters)
data_dir = "/var/lib/edgenode"    # node.db (SQLite), link-state.json, edgenode.pid

[hub]
# Without a url the node runs standalone (no cloud link).
url = ""                          # ws://host:port or wss://host; no path: /v1/connect
token = ""                        # sent as "Authorization: Bearer <token>"
token_file = ""                   # or read the token from this file (not both)
ca_file = ""                      # PEM CA bundle that signed the hub's certificate (wss)
handshake_timeout = 10.0          # seconds to connect and to be welcomed
backoff_base = 1.0                # reconnect delay bound, doubled per failure, full jitter
backoff_cap = 30.0                # largest reconnect delay bound, seconds
max_frame_size = 1048576          # largest message accepted from the hub, bytes
uplink_batch = 100                # outbox records read per step while sending uplink
compression = false               # ask for permessage-deflate (hub: edgehub serve --compression)

[mqtt]
# The local MQTT broker (Mosquitto) of the device layer (docs/device-api.md). The device
# layer runs when enabled and there is something to serve: [[device]] or [[route]]
# entries below, or a hub (which may send Device and Route resources).
host = "127.0.0.1"
port = 1883
username = ""                     # empty: anonymous
password = ""
tls = false                       # TLS to the broker (system trust store or ca_file)
enabled = true                    # false: never run the device layer
client_id = ""                    # empty: "edgenode-<node name>" (keep it fixed)
ca_file = ""                      # PEM CA bundle that signed the broker's certificate
keepalive = 30                    # seconds between MQTT pings
kubeedge = true                   # also serve KubeEdge's device API ($hw/events/...)

[outbox]
max_bytes = 67108864              # disk quota of the uplink outbox (payload bytes)
default_ttl = 0.0                 # seconds a record may wait; 0: no expiry

[store]
synchronous = "normal"            # normal: survives a process kill; full: also power loss
commit_window = 0.1               # seconds to gather device messages into one commit (0: none)

[apps]
# Apps (workloads) the hub targets at this node (docs/apps.md).
enabled = true                    # false: run no Apps (they are reported Failed)
artifacts_max_bytes = 1073741824  # disk quota of the artifact cache, bytes (1 GiB)
log_max_bytes = 10485760          # each App's log is rotated at this size (one old kept)
container_runtime = "auto"        # auto (docker, then podman), docker, podman or none

[status]
interval = 30.0                   # seconds between node status samples (sent, not stored)
persist_interval = 300.0          # offline: seconds between stored status records

[metrics]
listen = "127.0.0.1:9101"         # Prometheus text endpoint; "" disables it

[log]
level = "info"                    # debug, info, warning or error

# Devices served by this node, with or without a hub (the hub adds its Device resources):
# [[device]]
# name = "lamp"                   # 1..128 of A-Z a-z 0-9 . _ - (one topic level)
# desired = { power = "on" }      # optional; replaces the twin's desired at start
# kubeedge = { namespace = "line-a", name = "lamp", types = { power = "string" } }
#                                 # optional; its KubeEdge ID and types (docs/kubeedge.md)
#
# Configs of this node, with or without a hub (a hub Config of the same name wins); each
# is written to data_dir/config/NAME.json and published retained at $edge/config/NAME:
# [[config]]
# name = "tuning"                 # lowercase letters, digits, '-' and '.'
# data = { interval = "5", mode = "eco" }   # strings only
#
# Routes of local MQTT topics upstream (outbox) or to another local topic:
# [[route]]
# from = "$edge/devices/+/telemetry/alarm"   # MQTT filter
# to = "upstream"                 # or "topic:<local topic>" (republish)
# priority = 0                    # 0 (first) .. 9; default 5
# ttl = 3600                      # seconds; absent: no expiry
# enabled = true                  # false on an upstream route: those topics stay local
"""


def _field_type(cls: type[Any], name: str) -> type[Any]:
    hints = typing.get_type_hints(cls)
    hint = hints[name]
    if isinstance(hint, types.UnionType):  # pragma: no cover - no optional keys today
        raise TypeError(hint)
    return typing.cast(type[Any], hint)


def _type_name(kind: type[Any]) -> str:
    return {str: "a string", int: "an integer", float: "a number", bool: "a boolean"}[kind]


def _check_value(value: Any, kind: type[Any], where: str) -> Any:
    """``value`` as ``kind`` (ints are accepted where numbers are), or ConfigError."""
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if kind is int and isinstance(value, bool):
        raise ConfigError(f"{where}: expected {_type_name(kind)}, got {value!r}")
    if not isinstance(value, kind):
        raise ConfigError(
            f"{where}: expected {_type_name(kind)}, got {type(value).__name__} {value!r}"
        )
    return value


def _parse_env(raw: str, kind: type[Any], where: str) -> Any:
    """An environment variable's text as ``kind``, or ConfigError naming the variable."""
    if kind is str:
        return raw
    text = raw.strip()
    try:
        if kind is bool:
            lowered = text.lower()
            if lowered in ("1", "true", "yes", "on"):
                return True
            if lowered in ("0", "false", "no", "off"):
                return False
            raise ValueError(text)
        if kind is int:
            return int(text)
        return float(text)
    except ValueError:
        raise ConfigError(f"{where}: expected {_type_name(kind)}, got {raw!r}") from None


def env_name(section: str, key: str) -> str:
    return f"{ENV_PREFIX}{section.upper()}_{key.upper()}"


def parse_config(
    data: Mapping[str, Any], source: str, env: Mapping[str, str] | None = None
) -> Config:
    """Build and validate a Config from parsed TOML ``data`` plus ``env`` overrides."""
    env = os.environ if env is None else env
    values: dict[str, dict[str, Any]] = {}
    for section, table in data.items():
        if section in ARRAYS:
            continue
        if section not in SECTIONS:
            raise ConfigError(
                f"{source}: unknown section [{section}] "
                f"(known: {', '.join(SECTIONS)}, [[device]], [[route]], [[config]])"
            )
        if not isinstance(table, dict):
            raise ConfigError(f"{source}: [{section}] must be a table")
        cls = SECTIONS[section]
        names = {f.name for f in dataclasses.fields(cls)}
        for key, value in table.items():
            if key not in names:
                raise ConfigError(
                    f"{source}: [{section}] unknown key {key!r} (known: {', '.join(sorted(names))})"
                )
            kind = _field_type(cls, key)
            values.setdefault(section, {})[key] = _check_value(
                value, kind, f"{source}: [{section}] {key}"
            )
    # Environment overrides: only the known EDGENODE_<SECTION>_<KEY> names are read, so
    # other EDGENODE_* variables (EDGENODE_BACKEND) are not mistaken for config.
    for section, cls in SECTIONS.items():
        for f in dataclasses.fields(cls):
            name = env_name(section, f.name)
            if name in env:
                kind = _field_type(cls, f.name)
                values.setdefault(section, {})[f.name] = _parse_env(
                    env[name], kind, f"environment variable {name}"
                )
    for section, key in REQUIRED:
        if key not in values.get(section, {}):
            raise ConfigError(
                f"{source}: [{section}] {key} is required "
                f"(or set the environment variable {env_name(section, key)})"
            )
    base = Path(source).parent if source else Path.cwd()
    sections = {name: SECTIONS[name](**values.get(name, {})) for name in SECTIONS}
    devices = _parse_devices(data.get("device", []), source)
    routes = _parse_routes(data.get("route", []), source)
    configs = _parse_configs(data.get("config", []), source)
    config = Config(**sections, devices=devices, routes=routes, configs=configs, source=source)
    return _validate(config, base)


def _array(value: Any, name: str, source: str, limit: int) -> list[dict[str, Any]]:
    """``[[name]]`` entries as a list of tables, or ConfigError."""
    if not isinstance(value, list) or not all(isinstance(entry, dict) for entry in value):
        raise ConfigError(f"{source}: {name} must be an array of tables ([[{name}]])")
    if len(value) > limit:
        raise ConfigError(f"{source}: {name}: more than {limit} entries")
    return value


def _check_keys(entry: dict[str, Any], known: tuple[str, ...], where: str) -> None:
    for key in entry:
        if key not in known:
            raise ConfigError(f"{where}: unknown key {key!r} (known: {', '.join(known)})")


def _parse_devices(value: Any, source: str) -> tuple[DeviceSpec, ...]:
    specs: list[DeviceSpec] = []
    seen: set[str] = set()
    for index, entry in enumerate(_array(value, "device", source, MAX_DEVICES)):
        where = f"{source}: device[{index}]"
        _check_keys(entry, DEVICE_KEYS, where)
        if "name" not in entry:
            raise ConfigError(f"{where}.name: required")
        name = _check_value(entry["name"], str, f"{where}.name")
        desired = entry.get("desired")
        if desired is not None and not isinstance(desired, dict):
            raise ConfigError(
                f"{where}.desired: expected a table, got {type(desired).__name__} {desired!r}"
            )
        kubeedge = entry.get("kubeedge")
        if kubeedge is not None and not isinstance(kubeedge, dict):
            raise ConfigError(
                f"{where}.kubeedge: expected a table, got {type(kubeedge).__name__} {kubeedge!r}"
            )
        if name in seen:
            raise ConfigError(f"{where}.name: device {name!r} is configured twice")
        seen.add(name)
        try:
            validate_device_name(name)
        except ConfigError as exc:
            raise ConfigError(f"{where}.name: {exc}") from None
        if kubeedge is not None:
            try:
                DeviceSpec(name, kubeedge=kubeedge)
            except ConfigError as exc:
                raise ConfigError(f"{where}.kubeedge: {exc}") from None
        try:
            specs.append(DeviceSpec(name, desired, kubeedge=kubeedge))
        except ConfigError as exc:
            raise ConfigError(f"{where}.desired: {exc}") from None
        except (TypeError, ValueError) as exc:  # e.g. a TOML date in desired
            raise ConfigError(f"{where}.desired: {exc}") from None
    return tuple(specs)


def _parse_routes(value: Any, source: str) -> tuple[RouteSpec, ...]:
    specs: list[RouteSpec] = []
    for index, entry in enumerate(_array(value, "route", source, MAX_ROUTES)):
        where = f"{source}: route[{index}]"
        _check_keys(entry, ROUTE_KEYS, where)
        if "from" not in entry:
            raise ConfigError(f"{where}.from: required (an MQTT topic filter)")
        from_filter = _check_value(entry["from"], str, f"{where}.from")
        to = _check_value(entry.get("to", UPSTREAM), str, f"{where}.to")
        priority = _check_value(
            entry.get("priority", DEFAULT_TELEMETRY_PRIORITY), int, f"{where}.priority"
        )
        ttl = entry.get("ttl")
        if ttl is not None:
            ttl = _check_value(ttl, float, f"{where}.ttl")
        enabled = _check_value(entry.get("enabled", True), bool, f"{where}.enabled")
        if not MIN_PRIORITY <= priority <= MAX_PRIORITY:
            raise ConfigError(f"{where}.priority: must be in [{MIN_PRIORITY}, {MAX_PRIORITY}]")
        if ttl is not None and not 0 < ttl < float("inf"):
            raise ConfigError(f"{where}.ttl: must be a positive number of seconds")
        try:
            RouteSpec(from_filter)
        except ConfigError as exc:
            raise ConfigError(f"{where}.from: {exc}") from None
        try:
            specs.append(RouteSpec(from_filter, to, priority, ttl, enabled))
        except ConfigError as exc:
            raise ConfigError(f"{where}.to: {exc}") from None
    try:
        RouteTable(specs)
    except ConfigError as exc:
        raise ConfigError(f"{source}: route: {exc}") from None
    return tuple(specs)


def _parse_configs(value: Any, source: str) -> tuple[LocalConfig, ...]:
    configs: list[LocalConfig] = []
    seen: set[str] = set()
    for index, entry in enumerate(_array(value, "config", source, MAX_CONFIGS)):
        where = f"{source}: config[{index}]"
        _check_keys(entry, CONFIG_KEYS, where)
        if "name" not in entry:
            raise ConfigError(f"{where}.name: required")
        name = _check_value(entry["name"], str, f"{where}.name")
        if len(name) > MAX_CONFIG_NAME_CHARS or not CONFIG_NAME_PATTERN.fullmatch(name):
            raise ConfigError(
                f"{where}.name: {name!r} must be lowercase alphanumerics, '-' and '.' "
                f"(at most {MAX_CONFIG_NAME_CHARS} characters, as the hub's names)"
            )
        if name in seen:
            raise ConfigError(f"{where}.name: config {name!r} is configured twice")
        seen.add(name)
        data = entry.get("data", {})
        if not isinstance(data, dict):
            raise ConfigError(f"{where}.data: expected a table of strings")
        if len(data) > MAX_CONFIG_ENTRIES:
            raise ConfigError(f"{where}.data: more than {MAX_CONFIG_ENTRIES} entries")
        for key, item in data.items():
            if not isinstance(item, str):
                raise ConfigError(
                    f"{where}.data.{key}: expected a string, got {type(item).__name__} {item!r}"
                )
        configs.append(LocalConfig(name, dict(data)))
    return tuple(configs)


def _resolve(base: Path, path: str) -> str:
    if not path:
        return path
    return str((base / os.path.expanduser(path)).resolve())


def _normalize_hub_url(url: str, where: str) -> str:
    parts = urlsplit(url)
    if parts.scheme not in ("ws", "wss") or not parts.hostname:
        raise ConfigError(f"{where}: expected a ws:// or wss:// URL with a host, got {url!r}")
    try:
        parts.port  # noqa: B018 - raises ValueError for a bad port
    except ValueError:
        raise ConfigError(f"{where}: invalid port in {url!r}") from None
    path = parts.path if parts.path not in ("", "/") else HUB_LINK_PATH
    return urlunsplit((parts.scheme, parts.netloc, path, parts.query, ""))


def parse_listen(listen: str, where: str = "[metrics] listen") -> tuple[str, int]:
    """``host:port`` (``[v6]:port`` too) as a pair, or ConfigError."""
    host, sep, port_text = listen.rpartition(":")
    host = host.strip("[]")
    if not sep or not host or not port_text.isdigit() or int(port_text) > MAX_PORT:
        raise ConfigError(f"{where}: expected host:port, got {listen!r}")
    return host, int(port_text)


def _validate(config: Config, base: Path) -> Config:
    src = config.source
    node, hub = config.node, config.hub
    if not 1 <= len(node.name) <= MAX_NODE_NAME_LENGTH or node.name.strip() != node.name:
        raise ConfigError(
            f"{src}: [node] name: must be 1..{MAX_NODE_NAME_LENGTH} characters without "
            f"surrounding spaces, got {node.name!r}"
        )
    if not node.data_dir:
        raise ConfigError(f"{src}: [node] data_dir: must not be empty")
    node = dataclasses.replace(node, data_dir=_resolve(base, node.data_dir))
    if hub.url:
        hub = dataclasses.replace(hub, url=_normalize_hub_url(hub.url, f"{src}: [hub] url"))
        if not hub.token and not hub.token_file:
            raise ConfigError(f"{src}: [hub] url is set but neither token nor token_file is")
    if hub.token and hub.token_file:
        raise ConfigError(f"{src}: [hub] token and token_file are exclusive: set one")
    hub = dataclasses.replace(
        hub, token_file=_resolve(base, hub.token_file), ca_file=_resolve(base, hub.ca_file)
    )
    if hub.ca_file and hub.url.startswith("ws://"):
        raise ConfigError(f"{src}: [hub] ca_file is only used with a wss:// url")
    for key in ("handshake_timeout", "backoff_base", "backoff_cap"):
        if not getattr(hub, key) > 0:
            raise ConfigError(f"{src}: [hub] {key}: must be positive")
    if hub.backoff_base > hub.backoff_cap:
        raise ConfigError(f"{src}: [hub] backoff_base: must not exceed backoff_cap")
    if not MIN_MAX_FRAME_SIZE <= hub.max_frame_size <= MAX_MAX_FRAME_SIZE:
        raise ConfigError(
            f"{src}: [hub] max_frame_size: must be in [{MIN_MAX_FRAME_SIZE}, {MAX_MAX_FRAME_SIZE}]"
        )
    if hub.uplink_batch < 1:
        raise ConfigError(f"{src}: [hub] uplink_batch: must be at least 1")
    if not 1 <= config.mqtt.port <= MAX_PORT:
        raise ConfigError(f"{src}: [mqtt] port: must be in [1, {MAX_PORT}]")
    if not config.mqtt.host:
        raise ConfigError(f"{src}: [mqtt] host: must not be empty")
    if not 1 <= config.mqtt.keepalive <= MAX_MQTT_KEEPALIVE:
        raise ConfigError(f"{src}: [mqtt] keepalive: must be in [1, {MAX_MQTT_KEEPALIVE}]")
    if len(config.mqtt.client_id) > MAX_CLIENT_ID_CHARS:
        raise ConfigError(f"{src}: [mqtt] client_id: at most {MAX_CLIENT_ID_CHARS} characters")
    if config.mqtt.ca_file and not config.mqtt.tls:
        raise ConfigError(f"{src}: [mqtt] ca_file is only used with tls = true")
    mqtt = dataclasses.replace(config.mqtt, ca_file=_resolve(base, config.mqtt.ca_file))
    if config.outbox.max_bytes < 1:
        raise ConfigError(f"{src}: [outbox] max_bytes: must be at least 1")
    if config.outbox.default_ttl < 0:
        raise ConfigError(f"{src}: [outbox] default_ttl: must not be negative")
    synchronous = config.store.synchronous.lower()
    if synchronous not in SYNCHRONOUS_SETTINGS:
        raise ConfigError(
            f"{src}: [store] synchronous: must be one of {', '.join(SYNCHRONOUS_SETTINGS)}"
        )
    if not 0 <= config.store.commit_window <= MAX_COMMIT_WINDOW:
        raise ConfigError(f"{src}: [store] commit_window: must be in [0, {MAX_COMMIT_WINDOW:g}]")
    if config.apps.artifacts_max_bytes < 1:
        raise ConfigError(f"{src}: [apps] artifacts_max_bytes: must be at least 1")
    if config.apps.log_max_bytes < MIN_LOG_BYTES:
        raise ConfigError(f"{src}: [apps] log_max_bytes: must be at least {MIN_LOG_BYTES}")
    if config.apps.container_runtime not in CONTAINER_RUNTIMES:
        raise ConfigError(
            f"{src}: [apps] container_runtime: must be one of {', '.join(CONTAINER_RUNTIMES)}"
        )
    if not config.status.interval >= MIN_STATUS_INTERVAL:
        raise ConfigError(f"{src}: [status] interval: must be at least {MIN_STATUS_INTERVAL}")
    if not config.status.persist_interval >= 0:
        raise ConfigError(f"{src}: [status] persist_interval: must not be negative")
    if config.metrics.listen:
        parse_listen(config.metrics.listen, f"{src}: [metrics] listen")
    level = config.log.level.lower()
    if level not in LOG_LEVELS:
        raise ConfigError(f"{src}: [log] level: must be one of {', '.join(LOG_LEVELS)}")
    return dataclasses.replace(
        config,
        node=node,
        hub=hub,
        mqtt=mqtt,
        store=StoreSection(synchronous, config.store.commit_window),
        log=LogSection(level),
    )


def load_config(path: str | os.PathLike[str], env: Mapping[str, str] | None = None) -> Config:
    """Read, override from the environment and validate the TOML file at ``path``."""
    source = str(path)
    try:
        with open(path, "rb") as handle:
            data = tomllib.load(handle)
    except FileNotFoundError:
        raise ConfigError(f"{source}: no such file") from None
    except IsADirectoryError:
        raise ConfigError(f"{source}: is a directory, not a config file") from None
    except OSError as exc:
        raise ConfigError(f"{source}: cannot read: {exc.strerror or exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{source}: not valid TOML: {exc}") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{source}: not valid UTF-8: {exc}") from None
    return parse_config(data, str(Path(source).absolute()), env)

"""The device layer's configuration: devices, routes and the broker connection.

Small frozen dataclasses, validated on construction (``ConfigError`` naming the field),
that the node daemon's TOML sections ``[[device]]``, ``[[route]]`` and ``[mqtt]`` map
onto one to one (docs/device-api.md, "Configuration"). Hub resources (Device, Route)
map onto the same classes, so the device layer does not care where a device came from.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Final

from edgenode.devices.kubeedge.ids import SPEC_FIELD, KubeEdgeSpecError, kubeedge_spec
from edgenode.errors import ConfigError, TopicError, TwinError
from edgenode.router import validate_filter, validate_topic
from edgenode.twin import check_limits

DEVICE_NAME_PATTERN: Final = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
"""Device names: one MQTT topic level and a Mosquitto username (``%u`` in ACLs), so no
``/``, ``+``, ``#``, spaces or control characters; at most 128 characters."""
MIN_PRIORITY: Final = 0
MAX_PRIORITY: Final = 9
DEFAULT_TELEMETRY_PRIORITY: Final = 5
"""Outbox priority of device telemetry without a route (0 is the most urgent)."""
UPSTREAM: Final = "upstream"
TOPIC_PREFIX: Final = "topic:"
MAX_PORT: Final = 65535
MAX_CLIENT_ID_CHARS: Final = 23 * 4
"""MQTT 3.1.1 only guarantees 23 characters; Mosquitto accepts far longer ids."""


def validate_device_name(name: object) -> str:
    """``name`` if it is a valid device name, else ConfigError naming the rule."""
    if not isinstance(name, str) or not DEVICE_NAME_PATTERN.fullmatch(name):
        raise ConfigError(
            f"device name {name!r} must match {DEVICE_NAME_PATTERN.pattern} "
            "(one topic level, usable as an MQTT username)"
        )
    return name


@dataclass(frozen=True)
class DeviceSpec:
    """A device this node serves: ``[[device]]`` in the config or a hub Device resource.

    ``desired`` (a JSON object) replaces the twin's desired document when given; ``None``
    leaves whatever desired document the twin already has (e.g. set by the hub).
    ``desired_version`` is the hub's number for that document (None for a local one).
    ``kubeedge`` is how KubeEdge clients see it (``namespace``, ``name``, ``types``;
    docs/kubeedge.md, "Device IDs"); None: as ``default/<name>``.
    """

    name: str
    desired: dict[str, Any] | None = None
    desired_version: int | None = None
    kubeedge: dict[str, Any] | None = None

    def __post_init__(self) -> None:
        validate_device_name(self.name)
        if self.kubeedge is not None:
            try:
                kubeedge_spec(self.name, {SPEC_FIELD: self.kubeedge})
            except KubeEdgeSpecError as exc:
                raise ConfigError(f"device {self.name!r}: {exc}") from None
        version = self.desired_version
        if version is not None and (type(version) is not int or version < 1):
            raise ConfigError(f"device {self.name!r}: desired version must be a positive int")
        if self.desired is not None:
            try:
                check_limits(self.desired)
            except TwinError as exc:
                raise ConfigError(f"device {self.name!r}: desired: {exc}") from None


@dataclass(frozen=True)
class RouteSpec:
    """A route: local topics matching ``from_filter`` go ``to`` "upstream" (the outbox,
    with ``priority`` 0-9 and ``ttl`` seconds, None = no expiry) or ``"topic:<t>"`` (a
    republish to local topic ``t``). A disabled upstream route that matches device
    telemetry turns its default uplink off."""

    from_filter: str
    to: str = UPSTREAM
    priority: int = DEFAULT_TELEMETRY_PRIORITY
    ttl: float | None = None
    enabled: bool = True

    def __post_init__(self) -> None:
        where = f"route {self.from_filter!r}"
        if not isinstance(self.from_filter, str):
            raise ConfigError(f"route: from must be a string, not {type(self.from_filter)}")
        try:
            validate_filter(self.from_filter)
        except TopicError as exc:
            raise ConfigError(f"{where}: from: {exc}") from None
        if self.to != UPSTREAM:
            if not isinstance(self.to, str) or not self.to.startswith(TOPIC_PREFIX):
                raise ConfigError(
                    f'{where}: to must be "{UPSTREAM}" or "{TOPIC_PREFIX}<topic>", not {self.to!r}'
                )
            try:
                validate_topic(self.republish_topic or "")
            except TopicError as exc:
                raise ConfigError(f"{where}: to: {exc}") from None
        if type(self.priority) is not int or not MIN_PRIORITY <= self.priority <= MAX_PRIORITY:
            raise ConfigError(
                f"{where}: priority must be an integer in [{MIN_PRIORITY}, {MAX_PRIORITY}], "
                f"not {self.priority!r}"
            )
        if self.ttl is not None and (
            type(self.ttl) not in (int, float) or not 0 < self.ttl < float("inf")
        ):
            raise ConfigError(f"{where}: ttl must be a positive number of seconds or absent")
        if type(self.enabled) is not bool:
            raise ConfigError(f"{where}: enabled must be true or false")

    @property
    def upstream(self) -> bool:
        return self.to == UPSTREAM

    @property
    def republish_topic(self) -> str | None:
        """The local topic of a republish route, None for an upstream route."""
        return None if self.upstream else self.to[len(TOPIC_PREFIX) :]


@dataclass(frozen=True)
class MqttSettings:
    """How the node reaches the local broker (``[mqtt]``); empty username = anonymous.

    ``tls`` uses the system trust store unless ``ca_file`` names a PEM bundle.
    """

    host: str = "127.0.0.1"
    port: int = 1883
    username: str = ""
    password: str = field(default="", repr=False)
    tls: bool = False
    client_id: str = "edgenode"
    ca_file: str = ""
    keepalive: int = 30
    """Seconds between MQTT pings: how fast a dead broker connection is noticed."""
    backoff_base: float = 0.5
    """First reconnect delay bound (seconds), doubled per failure, full jitter."""
    backoff_cap: float = 30.0
    """Largest reconnect delay bound (seconds)."""
    kubeedge: bool = True
    """Serve KubeEdge's device API (``$hw/events/...``) beside edgenode's own."""
    commit_window: float = 0.0
    """Seconds to wait after a message for more to commit with it (``[store]
    commit_window``); 0: commit what the client has queued at once."""

    def __post_init__(self) -> None:
        if not self.host:
            raise ConfigError("[mqtt] host: must not be empty")
        if type(self.port) is not int or not 1 <= self.port <= MAX_PORT:
            raise ConfigError(f"[mqtt] port: must be in [1, {MAX_PORT}]")
        if not self.client_id or len(self.client_id) > MAX_CLIENT_ID_CHARS:
            raise ConfigError(f"[mqtt] client_id: 1 to {MAX_CLIENT_ID_CHARS} characters")
        if self.keepalive < 1:
            raise ConfigError("[mqtt] keepalive: at least 1 second")
        if not 0 < self.backoff_base <= self.backoff_cap:
            raise ConfigError("[mqtt] backoff: need 0 < backoff_base <= backoff_cap")

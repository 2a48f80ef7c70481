"""The device layer inside the node daemon: which devices and routes it serves, and how.

:class:`DeviceWiring` runs :class:`edgenode.devices.DeviceLayer` as a daemon service. The
devices served are the ``[[device]]`` entries of the config plus the hub's Device resources
targeted at this node; the routes are the ``[[route]]`` entries plus the hub's Route
resources. Hub resources are read from the store's desired-state cache — at start (so a
node restarted offline serves exactly what it served before) and again after every change
or snapshot the link persisted (the desired listener). A hub Device and a ``[[device]]`` of
the same name: the hub's ``spec.desired`` wins (the cloud owns desired); the config's
applies again once the hub deletes its Device.

Uplink records go through the daemon's outbox in its envelope
(``{"v": 1, "kind", "node", "ts", "body"}``, docs/node.md): a batch of device messages is
committed with ``Daemon.commit_uplink_batch`` (records and twins in one transaction),
anything else with ``Daemon.enqueue_payload``. The layer's counters are
exported as Prometheus metrics, and ``devices.json`` in data_dir tells ``edgenode status``
which devices are served and whether the broker is connected.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from edgenode.devices.config import UPSTREAM, DeviceSpec, RouteSpec
from edgenode.devices.routes import RouteTable
from edgenode.errors import ConfigError, StoreError
from edgenode.node.state import DEVICES_FILE, write_json_atomic
from edgenode.node.uplink import encode_uplink, encode_uplink_raw

if TYPE_CHECKING:
    from edgenode.devices.bus import DeviceLayer
    from edgenode.node.daemon import Daemon

log = logging.getLogger("edgenode.daemon.devices")

REFRESH_INTERVAL: Final = 1.0
"""Seconds between metrics snapshots (and broker-state checks for ``devices.json``)."""
DEVICE_KIND: Final = "Device"
ROUTE_KIND: Final = "Route"
DEFAULT_ROUTE_PRIORITY: Final = 5
MAX_LISTED_DEVICES: Final = 1000
"""``devices.json`` lists at most this many names (the count is always exact)."""


def resource_kind_and_name(key: str) -> tuple[str, str]:
    """``Kind/namespace/name`` → (kind, name); names never contain ``/``."""
    kind, _, rest = key.partition("/")
    return kind, rest.rpartition("/")[2]


def device_from_resource(node: str, key: str, data: bytes) -> DeviceSpec | None:
    """The DeviceSpec of a hub Device body stored as JSON; None if it is not for ``node``.

    ValueError/ConfigError when the body cannot be served (logged by the caller)."""
    body = json.loads(data)
    if not isinstance(body, dict):
        raise ValueError("body is not a map")
    spec = body.get("spec")
    if not isinstance(spec, dict):
        raise ValueError("spec is not a map")
    if spec.get("node") != node:
        return None
    metadata = body.get("metadata")
    name = metadata.get("name") if isinstance(metadata, dict) else None
    if not isinstance(name, str):
        name = resource_kind_and_name(key)[1]
    desired = spec.get("desired", {})
    if not isinstance(desired, dict):
        raise ValueError("spec.desired is not a map")
    return DeviceSpec(name, desired)


def route_from_resource(data: bytes) -> RouteSpec:
    """The RouteSpec of a hub Route body (ValueError/ConfigError if unusable)."""
    body = json.loads(data)
    spec = body.get("spec") if isinstance(body, dict) else None
    if not isinstance(spec, dict):
        raise ValueError("spec is not a map")
    ttl = spec.get("ttl")
    return RouteSpec(
        spec.get("from"),  # type: ignore[arg-type]  # RouteSpec checks the type
        spec.get("to", UPSTREAM),
        spec.get("priority", DEFAULT_ROUTE_PRIORITY),
        None if ttl is None else ttl,
    )


class DeviceCollector:
    """Prometheus view of the device layer, from a snapshot the event loop refreshes
    (the metrics server runs in its own thread and must not read live counters)."""

    def __init__(self) -> None:
        self.snapshot: dict[str, Any] = {"counters": {}, "devices": 0, "routes": 0, "up": 0}

    def collect(self) -> Iterator[Any]:
        # Imported here: only a node serving its metrics ever scrapes (see node/metrics.py).
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        snap = self.snapshot  # one reference: replaced whole, never mutated
        events = CounterMetricFamily(
            "edgenode_device_events",
            "Device layer events by kind (messages, updates, rejections, uplinks, ...)",
            labels=["event"],
        )
        for name, value in sorted(snap["counters"].items()):
            events.add_metric([name], value)
        yield events
        yield GaugeMetricFamily("edgenode_devices", "Devices served", value=snap["devices"])
        yield GaugeMetricFamily("edgenode_device_routes", "Routes in use", value=snap["routes"])
        yield GaugeMetricFamily(
            "edgenode_device_broker_connected",
            "1 while connected to the MQTT broker",
            value=snap["up"],
        )


class _Envelope:
    """The device layer's uplink encoder: the node's record envelope, for parsed bodies
    and for bodies that are already JSON bytes (twin records from the DeviceTwin)."""

    def __init__(self, wiring: DeviceWiring) -> None:
        self._wiring = wiring

    def __call__(self, kind: str, body: dict[str, Any]) -> bytes:
        return self._wiring.encode(kind, body)

    def raw(self, kind: str, body: bytes) -> bytes:
        return self._wiring.encode_raw(kind, body)


class DeviceWiring:
    """Builds, feeds and reports on the daemon's DeviceLayer."""

    def __init__(self, daemon: Daemon) -> None:
        self.daemon = daemon
        self.config = daemon.config
        self.layer: DeviceLayer | None = None
        self.collector = DeviceCollector()
        daemon.metrics.add_collector(self.collector.collect)
        self._written: dict[str, Any] | None = None
        self._routes_in_use = 0

    # --- What to serve ---------------------------------------------------------------------

    def hub_resources(self) -> tuple[list[DeviceSpec], list[RouteSpec]]:
        """Devices and routes of the hub, from the store's desired-state cache."""
        devices: list[DeviceSpec] = []
        routes: list[RouteSpec] = []
        node = self.config.node.name
        for key, _revision, data in self.daemon.store.list_resources():
            if data is None:
                continue
            kind, _name = resource_kind_and_name(key)
            try:
                if kind == DEVICE_KIND:
                    spec = device_from_resource(node, key, data)
                    if spec is not None:
                        devices.append(spec)
                elif kind == ROUTE_KIND:
                    routes.append(route_from_resource(data))
            except (ValueError, TypeError, ConfigError) as exc:
                log.warning("hub resource %s cannot be served: %s", key, exc)
        return devices, routes

    def wanted(self) -> tuple[list[DeviceSpec], list[RouteSpec]]:
        """Config devices and routes merged with the hub's (hub desired wins)."""
        hub_devices, hub_routes = self.hub_resources()
        by_name = {spec.name: spec for spec in self.config.devices}
        by_name.update((spec.name, spec) for spec in hub_devices)
        return list(by_name.values()), self._usable_routes(hub_routes)

    def _usable_routes(self, hub_routes: Sequence[RouteSpec]) -> list[RouteSpec]:
        """Config routes plus every hub route that does not make the set loop."""
        routes = list(self.config.routes)
        try:
            RouteTable([*routes, *hub_routes])
            return [*routes, *hub_routes]
        except ConfigError:
            pass
        for route in hub_routes:
            try:
                RouteTable([*routes, route])
            except ConfigError as exc:
                log.warning("hub route %r not used: %s", route.from_filter, exc)
                continue
            routes.append(route)
        return routes

    # --- The service ------------------------------------------------------------------------

    def encode(self, kind: str, body: dict[str, Any]) -> bytes:
        return encode_uplink(kind, body, self.config.node.name)

    def encode_raw(self, kind: str, body: bytes) -> bytes:
        return encode_uplink_raw(kind, body, self.config.node.name)

    async def run(self, daemon: Daemon) -> None:
        """The daemon service: serve until cancelled (restarted by the daemon on failure)."""
        from edgenode.devices.bus import DeviceLayer  # aiomqtt only when the layer runs

        devices, routes = self.wanted()
        layer = DeviceLayer(
            daemon.store,
            self.config.mqtt_settings(),
            devices,
            routes,
            daemon.enqueue_payload,
            commit_batch=daemon.commit_uplink_batch,
            uplink_encoder=_Envelope(self),
        )
        self._routes_in_use = len(routes)
        self.layer = layer
        self._write_state(layer, connected=False)
        s = layer.settings
        log.info(
            "device layer: %d devices, %d routes, broker %s:%d",
            len(devices),
            len(routes),
            s.host,
            s.port,
        )
        try:
            await asyncio.gather(layer.run(), self._refresh())
        finally:
            self.layer = None
            self._snapshot(layer, connected=False)
            self._write_state(layer, connected=False)

    async def _refresh(self) -> None:
        while True:
            layer = self.layer
            if layer is not None:
                up = layer.connected.is_set()
                self._snapshot(layer, up)
                self._write_state(layer, up)
            await asyncio.sleep(REFRESH_INTERVAL)

    def on_desired(self, rows: Sequence[tuple[str, int, bytes | None]], snapshot: bool) -> None:
        """Desired-state listener: hub Device/Route changes reach the running layer."""
        layer = self.layer
        if layer is None:
            return  # the layer reads the store when it starts
        kinds = {resource_kind_and_name(key)[0] for key, _rev, _data in rows}
        if not snapshot and not kinds & {DEVICE_KIND, ROUTE_KIND}:
            return
        try:
            devices, routes = self.wanted()
        except StoreError as exc:
            log.error("cannot read hub devices and routes from the store: %s", exc)
            return
        if snapshot or DEVICE_KIND in kinds:
            try:
                layer.set_devices(devices)
            except (StoreError, ConfigError, ValueError) as exc:
                log.error("cannot apply the hub's devices: %s", exc)
        if snapshot or ROUTE_KIND in kinds:
            layer.set_routes(routes)
            self._routes_in_use = len(routes)
        self._snapshot(layer, layer.connected.is_set())
        self._write_state(layer, layer.connected.is_set())

    # --- Reporting --------------------------------------------------------------------------

    def _snapshot(self, layer: DeviceLayer, connected: bool) -> None:
        self.collector.snapshot = {
            "counters": layer.stats(),
            "devices": len(layer.service.devices()),
            "routes": self._routes_in_use,
            "up": 1 if connected else 0,
        }

    def _write_state(self, layer: DeviceLayer, connected: bool) -> None:
        """``devices.json`` for ``edgenode status``, rewritten only when it changes."""
        names = layer.service.devices()
        s = layer.settings
        state = {
            "devices": names[:MAX_LISTED_DEVICES],
            "device_count": len(names),
            "routes": self._routes_in_use,
            "broker": f"{s.host}:{s.port}",
            "broker_connected": connected,
            "pid": os.getpid(),  # status trusts broker_connected only from the live daemon
        }
        if state == self._written:
            return
        with contextlib.suppress(OSError):  # status is informative; never fatal
            write_json_atomic(
                Path(self.config.node.data_dir) / DEVICES_FILE, {**state, "since": time.time()}
            )
            self._written = state

"""The device layer as a node service: which devices and routes it serves, and how.

:class:`DeviceService` runs :class:`edgenode.devices.DeviceLayer` on the node's
:class:`~edgenode.service.NodeHost`. The devices served are the ``[[device]]`` entries of
the config plus the hub's Device resources targeted at this node; the routes are the
``[[route]]`` entries plus the hub's Route resources. Hub resources are read from the
store's desired-state cache (``host.desired``) — at start (so a node restarted offline
serves exactly what it served before) and again after every persisted change of a Device
or Route (``on_desired``). A hub Device and a ``[[device]]`` of the same name: the hub's
``spec.desired`` wins (the cloud owns desired); the config's applies again once the hub
deletes its Device.

Every durable write goes through the host's one commit port (twins and uplink records in
one transaction; the host builds the record envelope). The layer's counters are exported
as Prometheus metrics, and ``devices.json`` in data_dir tells ``edgenode status`` which
devices are served and whether the broker is connected.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from edgenode.devices.config import UPSTREAM, DeviceSpec, RouteSpec
from edgenode.devices.routes import RouteTable
from edgenode.errors import ConfigError, StoreError
from edgenode.files import DEVICES_FILE, write_json_atomic
from edgenode.service import DesiredResource, DesiredRow, NodeHost, kind_of

if TYPE_CHECKING:
    from edgenode.config import Config
    from edgenode.devices.bus import DeviceLayer

log = logging.getLogger("edgenode.devices.service")

REFRESH_INTERVAL: Final = 1.0
"""Seconds between metrics snapshots (and broker-state checks for ``devices.json``)."""
DEVICE_KIND: Final = "Device"
ROUTE_KIND: Final = "Route"
DEFAULT_ROUTE_PRIORITY: Final = 5
MAX_LISTED_DEVICES: Final = 1000
"""``devices.json`` lists at most this many names (the count is always exact)."""
DESIRED_VERSION_ANNOTATION: Final = "edgenode.io/desired-version"
"""Where the hub puts its number for the desired document (its Device kind stamps it)."""


def device_from_resource(node: str, resource: DesiredResource) -> DeviceSpec | None:
    """The DeviceSpec of a hub Device; None if it is not for ``node``.

    ValueError/ConfigError when the body cannot be served (logged by the caller)."""
    spec = resource.spec
    if spec.get("node") != node:
        return None
    desired = spec.get("desired", {})
    if not isinstance(desired, dict):
        raise ValueError("spec.desired is not a map")
    version_text = resource.annotation(DESIRED_VERSION_ANNOTATION)
    version = int(version_text) if version_text and version_text.isdigit() else None
    kubeedge = spec.get("kubeedge")
    if kubeedge is not None and not isinstance(kubeedge, dict):
        raise ValueError("spec.kubeedge is not a map")
    return DeviceSpec(resource.name, desired, version if version else None, kubeedge)


def route_from_resource(resource: DesiredResource) -> RouteSpec:
    """The RouteSpec of a hub Route (ValueError/ConfigError if unusable)."""
    spec = resource.spec
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


class DeviceService:
    """The device layer as a node service (``kinds``: Device and Route)."""

    name: Final = "devices"
    kinds: Final = frozenset({DEVICE_KIND, ROUTE_KIND})

    def __init__(self, config: Config) -> None:
        self.config = config
        self.layer: DeviceLayer | None = None
        self.collector = DeviceCollector()
        self._collector_added = False
        self._written: dict[str, Any] | None = None
        self._routes_in_use = 0

    # --- What to serve ---------------------------------------------------------------------

    def hub_resources(self, host: NodeHost) -> tuple[list[DeviceSpec], list[RouteSpec]]:
        """Devices and routes of the hub, from the store's desired-state cache."""
        devices: list[DeviceSpec] = []
        routes: list[RouteSpec] = []
        node = self.config.node.name
        for resource in host.desired(DEVICE_KIND):
            try:
                spec = device_from_resource(node, resource)
            except (ValueError, TypeError, ConfigError) as exc:
                log.warning("hub resource %s cannot be served: %s", resource.key, exc)
                continue
            if spec is not None:
                devices.append(spec)
        for resource in host.desired(ROUTE_KIND):
            try:
                routes.append(route_from_resource(resource))
            except (ValueError, TypeError, ConfigError) as exc:
                log.warning("hub resource %s cannot be served: %s", resource.key, exc)
        return devices, routes

    def wanted(self, host: NodeHost) -> tuple[list[DeviceSpec], list[RouteSpec]]:
        """Config devices and routes merged with the hub's (hub desired wins)."""
        hub_devices, hub_routes = self.hub_resources(host)
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

    async def run(self, host: NodeHost) -> None:
        """Serve until cancelled (the daemon restarts it on failure)."""
        from edgenode.devices.bus import DeviceLayer  # the MQTT client only when it runs

        if not self._collector_added:
            host.metrics.add_collector(self.collector.collect)
            self._collector_added = True
        devices, routes = self.wanted(host)
        layer = DeviceLayer(
            host.store,
            self.config.mqtt_settings(),
            devices,
            routes,
            host,
            retained=host.retained,
            node=self.config.node.name,
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

    def on_desired(self, host: NodeHost, rows: Sequence[DesiredRow], snapshot: bool) -> None:
        """Hub Device/Route changes reach the running layer."""
        layer = self.layer
        if layer is None:
            return  # the layer reads the store when it starts
        kinds = {kind_of(key) for key, _rev, _data in rows}
        if not snapshot and not kinds & self.kinds:
            return
        try:
            devices, routes = self.wanted(host)
        except StoreError as exc:
            log.error("cannot read hub devices and routes from the store: %s", exc)
            return
        if snapshot or DEVICE_KIND in kinds:
            try:
                layer.set_devices(devices)
            except Exception as exc:  # the store, a bad document: the next change retries
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
            "broker_dropped": layer.stats().get("broker_dropped", 0),
            "broker_dropped_total": layer.broker_dropped_total,
            "pid": os.getpid(),  # status trusts broker_connected only from the live daemon
        }
        if state == self._written:
            return
        with contextlib.suppress(OSError):  # status is informative; never fatal
            write_json_atomic(
                Path(self.config.node.data_dir) / DEVICES_FILE, {**state, "since": time.time()}
            )
            self._written = state

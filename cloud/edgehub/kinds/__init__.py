"""Resource kinds as plug-ins: one module per kind, one registry for the hub.

``REGISTRY`` holds the built-in kinds (Node, Device, Config, Route, App). To add a kind, write a
module with a :class:`~edgehub.kinds.base.Kind` subclass (schema, validation, targeting,
status, uplink ingest, table columns, names) and register an instance here; every verb of
the hub, ``edgectl`` and the OpenAPI documents pick it up (ARCHITECTURE.md, "Adding a
kind").
"""

from __future__ import annotations

from edgehub.kinds.app import AppKind
from edgehub.kinds.assignment import AppAssignmentKind
from edgehub.kinds.base import API_VERSION, Column, Kind, ResourceError, check_name, resource_key
from edgehub.kinds.config import ConfigKind
from edgehub.kinds.device import DeviceKind
from edgehub.kinds.node import NodeKind
from edgehub.kinds.registry import Registry
from edgehub.kinds.route import RouteKind


def builtin_registry() -> Registry:
    """A registry with the built-in kinds, in the order tables and discovery list them."""
    registry = Registry()
    for kind in (
        NodeKind(),
        DeviceKind(),
        ConfigKind(),
        RouteKind(),
        AppKind(),
        AppAssignmentKind(),
    ):
        registry.register(kind)
    return registry


REGISTRY = builtin_registry()

__all__ = [
    "API_VERSION",
    "REGISTRY",
    "Column",
    "Kind",
    "Registry",
    "ResourceError",
    "builtin_registry",
    "check_name",
    "resource_key",
]

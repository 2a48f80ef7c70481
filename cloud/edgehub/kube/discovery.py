"""Kubernetes API discovery from the kind registry: what ``kubectl api-resources`` lists
and how kubectl finds ``nodes`` or ``dev`` (``/version``, ``/api``, ``/apis``, the group's
APIResourceList). The legacy discovery documents only: kubectl asks for the aggregated
ones first and reads these when the answer is plain ``application/json``."""

from __future__ import annotations

from typing import Any, Final

from edgehub import __version__
from edgehub.kinds import Registry
from edgehub.kube.objects import GROUP, GROUP_VERSION, VERSION

KUBERNETES_LEVEL: Final = ("1", "32")
"""The Kubernetes API level the hub's resource API follows (kubectl warns past ±1 minor)."""
VERBS: Final = ["create", "delete", "get", "list", "patch", "update", "watch"]
STATUS_VERBS: Final = ["get"]


def version() -> dict[str, Any]:
    major, minor = KUBERNETES_LEVEL
    return {
        "major": major,
        "minor": minor,
        "gitVersion": f"v{major}.{minor}.0+edgehub-{__version__}",
        "gitCommit": "",
        "gitTreeState": "clean",
        "buildDate": "",
        "goVersion": "",
        "compiler": "edgehub",
        "platform": "edgehub",
    }


def core_versions() -> dict[str, Any]:
    """``/api``: the core group exists (kubectl expects it) with nothing in it."""
    return {"kind": "APIVersions", "versions": [], "serverAddressByClientCIDRs": []}


def core_resources() -> dict[str, Any]:
    """``/api/v1``: empty — no pods, services or namespaces here (docs/kubectl.md)."""
    return {"kind": "APIResourceList", "groupVersion": "v1", "resources": []}


def _group(name: str, version: str) -> dict[str, Any]:
    entry = {"groupVersion": f"{name}/{version}", "version": version}
    return {"name": name, "versions": [entry], "preferredVersion": entry}


def group_list(extra: list[tuple[str, str]]) -> dict[str, Any]:
    """``/apis``: edgenode.io/v1 and the groups served beside it (``extra``)."""
    groups = [_group(GROUP, VERSION), *(_group(name, version) for name, version in extra)]
    return {"kind": "APIGroupList", "apiVersion": "v1", "groups": groups}


def group(name: str, version: str) -> dict[str, Any]:
    """``/apis/{group}``."""
    return {"kind": "APIGroup", "apiVersion": "v1", **_group(name, version)}


def resource_list(registry: Registry) -> dict[str, Any]:
    """``/apis/edgenode.io/v1``: every kind of the registry, and its status subresource."""
    resources: list[dict[str, Any]] = []
    for kind in registry:
        resources.append(
            {
                "name": kind.plural,
                "singularName": kind.singular,
                "namespaced": False,
                "kind": kind.name,
                "verbs": VERBS,
                "shortNames": list(kind.short_names),
                "categories": list(kind.categories),
            }
        )
        resources.append(
            {
                "name": f"{kind.plural}/status",
                "singularName": "",
                "namespaced": False,
                "kind": kind.name,
                "verbs": STATUS_VERBS,
            }
        )
    return {
        "kind": "APIResourceList",
        "apiVersion": "v1",
        "groupVersion": GROUP_VERSION,
        "resources": resources,
    }

"""OpenAPI v3 for kubectl (``/openapi/v3`` and the group document it points to), generated
from the kind registry's schemas: ``kubectl explain device.spec`` reads the field
descriptions, and the ``fieldValidation`` parameter on every write tells kubectl the hub
validates fields itself (strictly: unknown fields are always refused), so ``kubectl apply``
needs no ``--validate=false``."""

from __future__ import annotations

import hashlib
import json
from typing import Any, Final

from edgehub.kinds import Registry
from edgehub.kinds.base import Kind
from edgehub.kube.objects import GROUP, GROUP_VERSION, VERSION

GROUP_PATH: Final = f"apis/{GROUP_VERSION}"
META: Final = "io.k8s.apimachinery.pkg.apis.meta.v1"
OBJECT_META: Final = f"{META}.ObjectMeta"
LIST_META: Final = f"{META}.ListMeta"
STATUS: Final = f"{META}.Status"


def schema_name(kind: Kind) -> str:
    return f"io.edgenode.{VERSION}.{kind.name}"


def _ref(name: str) -> dict[str, Any]:
    return {"$ref": f"#/components/schemas/{name}"}


def _gvk(kind: str) -> list[dict[str, str]]:
    return [{"group": GROUP, "kind": kind, "version": VERSION}]


_META_SCHEMAS: Final[dict[str, Any]] = {
    OBJECT_META: {
        "type": "object",
        "description": "Standard object metadata. Resources are cluster-scoped (no namespace).",
        "properties": {
            "name": {"type": "string", "description": "The resource's name."},
            "labels": {
                "type": "object",
                "additionalProperties": {"type": "string"},
                "description": "Labels, for selectors (nodeSelector, -l).",
            },
            "annotations": {
                "type": "object",
                "additionalProperties": {"type": "string"},
                "description": "Free-form text; edgenode.io/ ones are the hub's own.",
            },
            "uid": {"type": "string", "description": "Set by the hub."},
            "resourceVersion": {"type": "string", "description": "Set by the hub."},
            "generation": {"type": "integer", "format": "int64", "description": "Set by the hub."},
            "creationTimestamp": {"type": "string", "format": "date-time"},
            "namespace": {"type": "string", "description": "Not used: cluster-scoped."},
            "managedFields": {
                "type": "array",
                "items": {"type": "object", "x-kubernetes-preserve-unknown-fields": True},
            },
        },
    },
    LIST_META: {
        "type": "object",
        "properties": {
            "resourceVersion": {"type": "string"},
            "continue": {"type": "string"},
        },
    },
    STATUS: {
        "type": "object",
        "description": "An error.",
        "properties": {
            "kind": {"type": "string"},
            "apiVersion": {"type": "string"},
            "status": {"type": "string"},
            "message": {"type": "string"},
            "reason": {"type": "string"},
            "code": {"type": "integer"},
            "details": {"type": "object", "x-kubernetes-preserve-unknown-fields": True},
        },
        "x-kubernetes-group-version-kind": [{"group": "", "kind": "Status", "version": "v1"}],
    },
}


def kind_schema(kind: Kind) -> dict[str, Any]:
    return {
        "type": "object",
        "description": kind.description,
        "properties": {
            "apiVersion": {"type": "string", "description": f"{GROUP_VERSION}"},
            "kind": {"type": "string", "description": kind.name},
            "metadata": {"allOf": [_ref(OBJECT_META)], "default": {}},
            "spec": {
                "description": f"What the {kind.name} should be (written by people).",
                **kind.spec_schema,
            },
            "status": {
                **kind.status_schema,
                "description": "Written by the hub and the nodes; read-only for people.",
            },
        },
        "x-kubernetes-group-version-kind": _gvk(kind.name),
    }


def list_schema(kind: Kind) -> dict[str, Any]:
    return {
        "type": "object",
        "required": ["items"],
        "properties": {
            "apiVersion": {"type": "string"},
            "kind": {"type": "string"},
            "metadata": {"allOf": [_ref(LIST_META)], "default": {}},
            "items": {"type": "array", "items": _ref(schema_name(kind))},
        },
        "x-kubernetes-group-version-kind": _gvk(kind.list_kind),
    }


def _query(name: str, kind: str = "string") -> dict[str, Any]:
    return {"name": name, "in": "query", "schema": {"type": kind, "uniqueItems": True}}


_WRITE_PARAMS: Final = [_query("dryRun"), _query("fieldManager"), _query("fieldValidation")]


def _content(schema: dict[str, Any]) -> dict[str, Any]:
    return {"application/json": {"schema": schema}, "application/yaml": {"schema": schema}}


def _op(
    kind: Kind,
    action: str,
    schema: dict[str, Any],
    params: list[dict[str, Any]],
    *,
    body: dict[str, Any] | None = None,
    body_types: tuple[str, ...] = ("application/json", "application/yaml"),
) -> dict[str, Any]:
    op: dict[str, Any] = {
        "operationId": f"{action}{kind.name}",
        "tags": [f"edgenode_{VERSION}"],
        "parameters": params,
        "responses": {
            "200": {"description": "OK", "content": _content(schema)},
            "401": {"description": "Unauthorized"},
        },
        "x-kubernetes-action": action,
        "x-kubernetes-group-version-kind": _gvk(kind.name)[0],
    }
    if body is not None:
        op["requestBody"] = {
            "required": True,
            "content": {media: {"schema": body} for media in body_types},
        }
    return op


def _paths(kind: Kind) -> dict[str, Any]:
    item = _ref(schema_name(kind))
    items = _ref(f"{schema_name(kind)}List")
    name_param = {
        "name": "name",
        "in": "path",
        "required": True,
        "schema": {"type": "string", "uniqueItems": True},
    }
    list_params = [
        _query("labelSelector"),
        _query("fieldSelector"),
        _query("limit", "integer"),
        _query("continue"),
        _query("resourceVersion"),
        _query("watch", "boolean"),
        _query("allowWatchBookmarks", "boolean"),
        _query("timeoutSeconds", "integer"),
    ]
    patch_types = (
        "application/merge-patch+json",
        "application/json-patch+json",
        "application/apply-patch+yaml",
    )
    base = f"/{GROUP_PATH}/{kind.plural}"
    return {
        base: {
            "get": _op(kind, "list", items, list_params),
            "post": _op(kind, "post", item, _WRITE_PARAMS, body=item),
        },
        f"{base}/{{name}}": {
            "parameters": [name_param],
            "get": _op(kind, "get", item, []),
            "put": _op(kind, "put", item, _WRITE_PARAMS, body=item),
            "patch": _op(
                kind,
                "patch",
                item,
                [*_WRITE_PARAMS, _query("force", "boolean")],
                body={"type": "object"},
                body_types=patch_types,
            ),
            "delete": _op(kind, "delete", _ref(STATUS), []),
        },
        f"{base}/{{name}}/status": {
            "parameters": [name_param],
            "get": _op(kind, "get", item, []),
        },
    }


def group_document(registry: Registry) -> dict[str, Any]:
    """``/openapi/v3/apis/edgenode.io/v1``."""
    schemas: dict[str, Any] = dict(_META_SCHEMAS)
    paths: dict[str, Any] = {}
    for kind in registry:
        schemas[schema_name(kind)] = kind_schema(kind)
        schemas[f"{schema_name(kind)}List"] = list_schema(kind)
        paths.update(_paths(kind))
    return {
        "openapi": "3.0.0",
        "info": {"title": "edgehub", "version": GROUP_VERSION},
        "paths": paths,
        "components": {
            "schemas": schemas,
            "securitySchemes": {
                "BearerToken": {"type": "apiKey", "in": "header", "name": "authorization"}
            },
        },
        "security": [{"BearerToken": []}],
    }


def document_hash(document: dict[str, Any]) -> str:
    text = json.dumps(document, sort_keys=True, separators=(",", ":"))
    return hashlib.sha512(text.encode()).hexdigest()[:32].upper()


def index(groups: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """``/openapi/v3``: where each group's document is, with a content hash."""
    return {
        "paths": {
            path: {"serverRelativeURL": f"/openapi/v3/{path}?hash={document_hash(document)}"}
            for path, document in groups.items()
        }
    }


KUBEEDGE_GROUP: Final = "devices.kubeedge.io"
KUBEEDGE_VERSION: Final = "v1beta1"
KUBEEDGE_PATH: Final = f"apis/{KUBEEDGE_GROUP}/{KUBEEDGE_VERSION}"


def _kubeedge_schema(kind: str, description: str) -> dict[str, Any]:
    return {
        "type": "object",
        "description": description,
        "properties": {
            "apiVersion": {"type": "string"},
            "kind": {"type": "string"},
            "metadata": {"allOf": [_ref(OBJECT_META)], "default": {}},
            "spec": {"type": "object", "x-kubernetes-preserve-unknown-fields": True},
            "status": {"type": "object", "x-kubernetes-preserve-unknown-fields": True},
        },
        "x-kubernetes-group-version-kind": [
            {"group": KUBEEDGE_GROUP, "kind": kind, "version": KUBEEDGE_VERSION}
        ],
    }


def kubeedge_group_document() -> dict[str, Any]:
    """``/openapi/v3/apis/devices.kubeedge.io/v1beta1``: KubeEdge's Device (translated to
    an edgenode Device, docs/kubeedge.md) and DeviceModel (accepted, not kept). Their
    specs are KubeEdge's and checked by the translation, not by a schema here."""
    schemas: dict[str, Any] = dict(_META_SCHEMAS)
    paths: dict[str, Any] = {}
    for kind, plural, description in (
        ("Device", "devices", "A KubeEdge device: served as an edgenode Device."),
        ("DeviceModel", "devicemodels", "A KubeEdge device model: accepted, not kept."),
    ):
        name = f"io.kubeedge.devices.{KUBEEDGE_VERSION}.{kind}"
        schemas[name] = _kubeedge_schema(kind, description)
        item = _ref(name)
        gvk = {"group": KUBEEDGE_GROUP, "kind": kind, "version": KUBEEDGE_VERSION}

        def op(action: str, body: bool, gvk: dict[str, str] = gvk, item: Any = item) -> Any:
            entry: dict[str, Any] = {
                "operationId": f"{action}{gvk['kind']}",
                "parameters": _WRITE_PARAMS if body else [],
                "responses": {"200": {"description": "OK", "content": _content(item)}},
                "x-kubernetes-action": action,
                "x-kubernetes-group-version-kind": gvk,
            }
            if body:
                entry["requestBody"] = {"content": _content(item)}
            return entry

        base = f"/{KUBEEDGE_PATH}/namespaces/{{namespace}}/{plural}"
        paths[base] = {"get": op("list", False), "post": op("post", True)}
        paths[f"{base}/{{name}}"] = {
            "get": op("get", False),
            "put": op("put", True),
            "patch": op("patch", True),
            "delete": op("delete", False),
        }
    return {
        "openapi": "3.0.0",
        "info": {
            "title": "edgehub: KubeEdge devices",
            "version": f"{KUBEEDGE_GROUP}/{KUBEEDGE_VERSION}",
        },
        "paths": paths,
        "components": {"schemas": schemas},
    }

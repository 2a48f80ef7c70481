"""The OpenAPI 3 document of the operator API, served at ``/openapi.json``.

The resource kinds (the ``{kind}`` path values and one schema per kind) come from the kind
registry: a new kind appears here without a change to this module.
"""

from __future__ import annotations

from typing import Any

from edgehub.kinds import REGISTRY, Registry
from edgehub.kinds.base import API_VERSION, Kind

METADATA_SCHEMA: dict[str, Any] = {
    "type": "object",
    "description": "Kubernetes-style object metadata; one namespace ('default').",
    "required": ["name"],
    "properties": {
        "name": {"type": "string", "maxLength": 253},
        "namespace": {"type": "string", "enum": ["default"]},
        "labels": {"type": "object", "additionalProperties": {"type": "string"}},
        "annotations": {"type": "object", "additionalProperties": {"type": "string"}},
        "resourceVersion": {"type": "string", "description": "Set by the hub."},
        "generation": {"type": "integer", "description": "Set by the hub."},
        "creationTimestamp": {"type": "string", "description": "Set by the hub."},
        "uid": {"type": "string", "description": "Set by the hub."},
    },
}


def kind_schema(kind: Kind) -> dict[str, Any]:
    """The OpenAPI schema of one kind's resources."""
    return {
        "type": "object",
        "description": kind.description,
        "required": ["apiVersion", "kind", "metadata"],
        "properties": {
            "apiVersion": {"type": "string", "enum": [API_VERSION]},
            "kind": {"type": "string", "enum": [kind.name]},
            "metadata": METADATA_SCHEMA,
            "spec": kind.spec_schema,
            "status": kind.status_schema,
        },
    }


def _kind_param(registry: Registry) -> dict[str, Any]:
    return {
        "name": "kind",
        "in": "path",
        "required": True,
        "schema": {"type": "string", "enum": [kind.plural for kind in registry]},
    }


_NAME_PARAM = {"name": "name", "in": "path", "required": True, "schema": {"type": "string"}}
_DIGEST_PARAM = {
    "name": "digest",
    "in": "path",
    "required": True,
    "schema": {"type": "string", "pattern": "^[0-9a-f]{64}$"},
}
_ERROR = {
    "description": "error",
    "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
}
_OBJ = {"description": "ok", "content": {"application/json": {"schema": {"type": "object"}}}}


def _op(
    summary: str,
    params: list[dict[str, Any]],
    codes: tuple[str, ...] = ("401", "404"),
    body: dict[str, Any] | None = None,
    ok: str = "200",
) -> dict[str, Any]:
    op: dict[str, Any] = {
        "summary": summary,
        "parameters": params,
        "security": [{"admin": []}],
        "responses": {ok: _OBJ, **{code: _ERROR for code in codes}},
    }
    if body is not None:
        op["requestBody"] = body
    return op


def openapi_document(registry: Registry = REGISTRY) -> dict[str, Any]:
    kind_param = _kind_param(registry)
    text_body = {
        "required": True,
        "content": {"application/yaml": {"schema": {"type": "string"}}},
    }
    json_body = {
        "required": True,
        "content": {"application/json": {"schema": {"type": "object"}}},
    }
    return {
        "openapi": "3.0.3",
        "info": {"title": "edgehub operator API", "version": "1"},
        "components": {
            "securitySchemes": {"admin": {"type": "http", "scheme": "bearer"}},
            "schemas": {
                **{kind.name: kind_schema(kind) for kind in registry},
                "Error": {
                    "type": "object",
                    "properties": {
                        "error": {"type": "string"},
                        "index": {"type": "integer", "nullable": True},
                        "field": {"type": "string"},
                    },
                    "required": ["error"],
                },
            },
        },
        "paths": {
            "/healthz": {"get": {"summary": "liveness", "responses": {"200": _OBJ}}},
            "/readyz": {"get": {"summary": "readiness", "responses": {"200": _OBJ, "503": _ERROR}}},
            "/metrics": {
                "get": {
                    "summary": "Prometheus metrics",
                    "responses": {"200": {"description": "text exposition"}},
                }
            },
            "/v1/apply": {
                "post": _op(
                    "create or update resources (multi-document YAML/JSON)",
                    [],
                    ("400", "401", "408", "413", "422"),
                    text_body,
                )
            },
            "/v1/{kind}": {
                "get": _op(
                    "list resources",
                    [
                        kind_param,
                        {"name": "labelSelector", "in": "query", "schema": {"type": "string"}},
                    ],
                    ("400", "401", "404"),
                )
            },
            "/v1/{kind}/{name}": {
                "get": _op("one resource with its status", [kind_param, _NAME_PARAM]),
                "delete": _op("delete a resource", [kind_param, _NAME_PARAM]),
            },
            "/v1/nodes/{name}/token": {
                "post": _op(
                    "create the node (if missing) and its join token",
                    [_NAME_PARAM],
                    ("400", "401", "408", "409"),
                    json_body,
                    "201",
                )
            },
            "/v1/nodes/{name}/revoke": {"post": _op("revoke the node's tokens", [_NAME_PARAM])},
            "/v1/devices/{name}/desired": {
                "patch": _op(
                    "merge-patch the device's desired twin",
                    [_NAME_PARAM],
                    ("400", "401", "404", "408", "422"),
                    json_body,
                )
            },
            "/v1/devices/{name}/telemetry": {
                "get": _op(
                    "telemetry records",
                    [
                        _NAME_PARAM,
                        {
                            "name": "after",
                            "in": "query",
                            "schema": {"type": "integer", "minimum": 0, "maximum": 2**63 - 1},
                        },
                        {
                            "name": "limit",
                            "in": "query",
                            "schema": {"type": "integer", "minimum": 0, "maximum": 2**63 - 1},
                        },
                        {
                            "name": "sinceSeconds",
                            "in": "query",
                            "description": "only records received in the last N seconds",
                            "schema": {"type": "integer", "minimum": 0},
                        },
                        {
                            "name": "tailLines",
                            "in": "query",
                            "description": "only the newest N records (then page with after)",
                            "schema": {"type": "integer", "minimum": 0},
                        },
                    ],
                    ("400", "401", "404", "503"),
                )
            },
            "/v1/watch/{kind}": {
                "get": _op("stream of changes (NDJSON)", [kind_param], ("401", "404", "503"))
            },
            "/v1/artifacts": {
                "get": _op("artifacts with size, age and the Apps that use them", [], ("401",))
            },
            "/v1/artifacts/{digest}": {
                "get": _op("one artifact (or its upload in progress)", [_DIGEST_PARAM]),
                "put": _op(
                    "upload a piece of an artifact: ?offset=N&size=S; the last piece verifies it",
                    [
                        _DIGEST_PARAM,
                        {
                            "name": "offset",
                            "in": "query",
                            "schema": {"type": "integer", "minimum": 0},
                        },
                        {
                            "name": "size",
                            "in": "query",
                            "required": True,
                            "schema": {"type": "integer", "minimum": 0},
                        },
                    ],
                    ("400", "401", "404", "408", "409", "413", "422"),
                    {
                        "required": True,
                        "content": {
                            "application/octet-stream": {
                                "schema": {"type": "string", "format": "binary"}
                            }
                        },
                    },
                ),
                "delete": _op(
                    "delete an artifact no App uses", [_DIGEST_PARAM], ("400", "401", "404", "409")
                ),
            },
            "/v1/apps/{name}/rollout/undo": {
                "post": _op(
                    "go back to a revision of the App's history, on every node at once",
                    [
                        _NAME_PARAM,
                        {
                            "name": "toRevision",
                            "in": "query",
                            "schema": {"type": "integer", "minimum": 0},
                        },
                    ],
                    ("400", "401", "404", "422"),
                )
            },
            "/v1/apps/{name}/logs": {
                "get": _op(
                    "an App's log from one node, over its link (text)",
                    [
                        _NAME_PARAM,
                        {
                            "name": "node",
                            "in": "query",
                            "required": True,
                            "schema": {"type": "string"},
                        },
                        {
                            "name": "tail",
                            "in": "query",
                            "schema": {"type": "integer", "minimum": 0},
                        },
                        {"name": "follow", "in": "query", "schema": {"type": "boolean"}},
                    ],
                    ("400", "401", "404", "409", "429", "503"),
                )
            },
        },
    }

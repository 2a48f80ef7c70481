"""Errors as Kubernetes ``Status`` objects, with Kubernetes' reasons, so ``kubectl``
prints them the way its users know (``Error from server (NotFound): ...``)."""

from __future__ import annotations

from typing import Any, Final

REASONS: Final = {
    400: "BadRequest",
    401: "Unauthorized",
    403: "Forbidden",
    404: "NotFound",
    405: "MethodNotAllowed",
    406: "NotAcceptable",
    409: "Conflict",
    410: "Gone",
    413: "RequestEntityTooLarge",
    415: "UnsupportedMediaType",
    422: "Invalid",
    429: "TooManyRequests",
    500: "InternalError",
    503: "ServiceUnavailable",
}


class KubeError(Exception):
    """An API error: HTTP ``code``, Kubernetes ``reason``, and ``details`` (the object's
    kind and name, causes with the field)."""

    def __init__(
        self,
        code: int,
        message: str,
        *,
        reason: str | None = None,
        kind: str | None = None,
        name: str | None = None,
        field: str | None = None,
        cause: str | None = None,
    ) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.reason = reason or REASONS.get(code, "Unknown")
        self.kind = kind
        self.name = name
        self.field = field
        self.cause = cause

    def status(self) -> dict[str, Any]:
        return status_object(
            self.code,
            self.message,
            self.reason,
            kind=self.kind,
            name=self.name,
            field=self.field,
            cause=self.cause,
        )


def status_object(
    code: int,
    message: str,
    reason: str | None = None,
    *,
    kind: str | None = None,
    name: str | None = None,
    field: str | None = None,
    cause: str | None = None,
) -> dict[str, Any]:
    """A ``v1`` ``Status`` (``Failure``); ``field`` and ``cause``: what is wrong where
    (kubectl prints ``The Device "x" is invalid: <field>: <cause>``)."""
    status: dict[str, Any] = {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason or REASONS.get(code, "Unknown"),
        "code": code,
    }
    details: dict[str, Any] = {}
    if name is not None:
        details["name"] = name
    if kind is not None:
        details["group"] = "edgenode.io"
        details["kind"] = kind
    if field is not None:
        details["causes"] = [
            {"reason": "FieldValueInvalid", "message": cause or message, "field": field}
        ]
    if details:
        status["details"] = details
    return status


def success(kind: str, name: str) -> dict[str, Any]:
    """The ``Status`` a delete answers with."""
    return {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Success",
        "details": {"name": name, "group": "edgenode.io", "kind": kind},
    }

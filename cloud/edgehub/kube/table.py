"""``meta.k8s.io/v1`` Tables from the kind registry's columns, so ``kubectl get nodes``
prints what ``edgectl get nodes`` prints (``-o wide``: the wide columns, priority 1)."""

from __future__ import annotations

import time
from typing import Any, Final

from edgehub.kinds.base import Kind
from edgehub.kube.objects import partial_metadata

TABLE_MEDIA: Final = "as=Table"


def wants_table(accept: str) -> bool:
    """True when the client asks for a Table (``application/json;as=Table;v=v1;g=meta.k8s.io``)
    in ``v1`` (the ``v1beta1`` Table is the same shape and kubectl asks for both)."""
    for part in accept.split(","):
        params = {p.strip() for p in part.split(";")}
        if "as=Table" in params and "g=meta.k8s.io" in params:
            return True
    return False


def column_definitions(kind: Kind) -> list[dict[str, Any]]:
    definitions = []
    for column in kind.table_columns(wide=True):
        definitions.append(
            {
                "name": column.name.title() if column.name == "NAME" else column.name,
                "type": "string",
                "format": "name" if column.name == "NAME" else "",
                "description": column.description,
                "priority": column.priority,
            }
        )
    return definitions


def table(
    kind: Kind,
    objects: list[dict[str, Any]],
    resource_version: str,
    *,
    include_object: str = "Metadata",
    now: float | None = None,
) -> dict[str, Any]:
    """A Table of ``objects`` (Kubernetes objects with their status); cells are the
    registry's, all columns (kubectl hides priority 1 unless ``-o wide``)."""
    moment = time.time() if now is None else now
    columns = kind.table_columns(wide=True)
    rows = []
    for obj in objects:
        row: dict[str, Any] = {"cells": [c.cell(obj, moment) for c in columns]}
        if include_object == "Object":
            row["object"] = obj
        elif include_object != "None":
            row["object"] = partial_metadata(obj)
        rows.append(row)
    return {
        "kind": "Table",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": {"resourceVersion": resource_version},
        "columnDefinitions": column_definitions(kind),
        "rows": rows,
    }

"""AppAssignment: which revision of a staged App one node runs (written by the hub's
rollout controller, never applied by people; docs/apps.md, "Rollouts").

One per (App, node) while an App with ``spec.strategy`` targets the node: ``spec.app``,
``spec.node``, ``spec.revision`` and ``spec.template``, the App's spec at that revision
(so a node can be kept on, or sent back to, an older revision than the App's spec). It
targets its node only: moving a node is a change for that node alone.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

from edgehub.kinds.base import Column, Kind, ResourceError, spec_cell
from edgehub.kinds.schema import PRESERVE, Schema
from edgehub.targeting import Target


def assignment_name(app: str, node: str) -> str:
    """``app.node``: a resource name (both parts are DNS names; at most 253 characters
    together for the names a fleet uses)."""
    return f"{app}.{node}"


class AppAssignmentKind(Kind):
    name = "AppAssignment"
    plural = "appassignments"
    singular = "appassignment"
    short_names = ("aa",)
    categories = ()
    description = "The App revision one node runs during a staged rollout (hub-written)."
    spec_schema: ClassVar[Schema] = {
        "type": "object",
        "required": ["app", "node", "revision", "template"],
        "properties": {
            "app": {"type": "string"},
            "node": {"type": "string"},
            "revision": {"type": "integer", "minimum": 1},
            "template": {"type": "object", PRESERVE: True},
        },
        "additionalProperties": False,
    }
    columns = (
        Column("APP", spec_cell("app")),
        Column("NODE", spec_cell("node")),
        Column("REVISION", spec_cell("revision"), type="integer"),
    )

    def validate(self, spec: dict[str, Any], index: int | None) -> None:
        raise ResourceError(index, "kind", "AppAssignments are written by the hub's rollouts")

    def target(self, body: Mapping[str, Any]) -> Target | None:
        node = (body.get("spec") or {}).get("node")
        return None if node is None else Target(str(node), None)

"""Hub resources as Kubernetes objects, and back.

The hub's resources are already Kubernetes-shaped (``apiVersion``, ``kind``,
``metadata``, ``spec``, ``status``); what Kubernetes adds is metadata: a ``uid`` (derived
from the kind, name and creation time, so a resource deleted and created again gets a new
one without storing anything), ``resourceVersion`` (the feed position of the object's
last change, spec or status: ``edgehub.feed``), ``namespace``-less names (every kind is
cluster-scoped) and ``Status`` errors (``errors.py``).
"""

from __future__ import annotations

import uuid
from typing import Any, Final

from edgehub.feed import Position
from edgehub.kinds.base import API_VERSION

GROUP: Final = "edgenode.io"
VERSION: Final = "v1"
GROUP_VERSION: Final = f"{GROUP}/{VERSION}"
assert GROUP_VERSION == API_VERSION
UID_NAMESPACE: Final = uuid.UUID("6f1c1f7e-3a55-4c36-9d87-6b1e2c9a0e11")
"""Fixed: uids are uuid5(this, kind/name/creation time)."""
HUB_METADATA: Final = ("uid", "resourceVersion", "generation", "creationTimestamp")


def uid(kind: str, name: str, created: float) -> str:
    return str(uuid.uuid5(UID_NAMESPACE, f"{kind}/{name}/{created!r}"))


def to_object(view: dict[str, Any], created: float, position: Position) -> dict[str, Any]:
    """The hub's view of a resource (``Operations.render``) as a Kubernetes object
    (``view`` is changed and returned)."""
    metadata = view["metadata"]
    metadata.pop("namespace", None)
    metadata["uid"] = uid(view["kind"], metadata["name"], created)
    metadata["resourceVersion"] = str(position)
    return view


def from_object(body: Any) -> Any:
    """What a client sent, as a document for the hub's apply: the server-set metadata and
    ``status`` dropped (nodes own status), ``namespace`` dropped (there is none)."""
    if not isinstance(body, dict):
        return body
    document = {k: v for k, v in body.items() if k != "status"}
    metadata = document.get("metadata")
    if isinstance(metadata, dict):
        document["metadata"] = {
            k: v
            for k, v in metadata.items()
            if k not in (*HUB_METADATA, "namespace", "managedFields", "selfLink")
        }
    return document


def partial_metadata(obj: dict[str, Any]) -> dict[str, Any]:
    """A Table row's ``object`` (``includeObject=Metadata``, kubectl's default)."""
    return {
        "kind": "PartialObjectMetadata",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": obj["metadata"],
    }

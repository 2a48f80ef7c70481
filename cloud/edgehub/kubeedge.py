"""KubeEdge ``Device`` manifests applied to the hub (docs/kubeedge.md, "Manifests").

Documents of KubeEdge's ``devices.kubeedge.io`` group are translated to edgenode Devices
before validation (``edgenode.devices.kubeedge.crd``), so existing manifests apply
unchanged; ``DeviceModel`` and ``DeviceStatus`` documents apply as no-ops, said so in the
apply result. A KubeEdge device whose edgenode name is taken by another device (a native
Device of that name) is refused with 409 naming it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from edgehub.kinds.base import ResourceConflict, ResourceError
from edgenode.devices.kubeedge import CrdError, Skipped, is_kubeedge_document, name_conflict
from edgenode.devices.kubeedge import translate as translate_crd

if TYPE_CHECKING:
    from edgehub.cache import ResourceCache


@dataclass(frozen=True, slots=True)
class Incoming:
    """One document of an apply, ready for validation: ``index`` is its place in what was
    applied, ``note`` what its result says besides the action (where it came from)."""

    index: int
    doc: Any
    note: dict[str, Any] = field(default_factory=dict)


def translate(
    documents: Sequence[Any], cache: ResourceCache, *, keep_last_applied: bool = False
) -> tuple[list[Incoming], list[tuple[int, dict[str, Any]]]]:
    """(the documents to validate, the results of the skipped ones by index).
    ResourceError (or ResourceConflict) for a KubeEdge document that cannot apply.
    ``keep_last_applied``: keep kubectl's annotation (the Kubernetes API does)."""
    incoming: list[Incoming] = []
    skipped: list[tuple[int, dict[str, Any]]] = []
    for index, doc in enumerate(documents):
        if not is_kubeedge_document(doc):
            incoming.append(Incoming(index, doc))
            continue
        try:
            translation = translate_crd(doc, keep_last_applied=keep_last_applied)
        except CrdError as exc:
            raise ResourceError(index, exc.field, exc.message) from None
        if isinstance(translation, Skipped):
            skipped.append(
                (
                    index,
                    {
                        "kind": translation.kind,
                        "name": translation.name,
                        "action": "skipped",
                        "reason": translation.reason,
                    },
                )
            )
            continue
        existing = cache.get("Device", translation.name)
        problem = name_conflict(
            translation.name, translation.device, None if existing is None else existing.body
        )
        if problem is not None:
            raise ResourceConflict(index, "metadata.name", problem)
        note: dict[str, Any] = {"kubeedge": str(translation.device)}
        if translation.ignored:
            note["ignored"] = list(translation.ignored)
        incoming.append(Incoming(index, translation.resource, note))
    return incoming, skipped


def merge_results(
    incoming: Sequence[Incoming],
    results: Sequence[dict[str, Any]],
    skipped: Sequence[tuple[int, dict[str, Any]]],
) -> list[dict[str, Any]]:
    """The apply's results in document order: each committed one with its note, the
    skipped ones where they were."""
    ordered = [
        (item.index, {**result, **item.note})
        for item, result in zip(incoming, results, strict=True)
    ]
    return [result for _index, result in sorted([*ordered, *skipped], key=lambda e: e[0])]

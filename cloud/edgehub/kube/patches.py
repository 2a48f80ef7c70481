"""The patch types of the Kubernetes API on the hub's objects: JSON merge patch (RFC 7386,
what kubectl sends for custom resources: ``apply``, ``edit``, ``label``, ``patch --type
merge``), JSON patch (RFC 6902, ``patch --type json``, by the ``jsonpatch`` library) and
server-side apply (``apply --server-side``).

Server-side apply here: the applied object is merged into the current one (maps merge
key by key, lists and values replace), and what the same field manager applied last time
but no longer does is removed — the applied configuration of each manager is kept in the
annotation ``apply.edgenode.io/<manager>``, as kubectl's client-side apply keeps its own
in ``kubectl.kubernetes.io/last-applied-configuration``. There are no per-field owners
across managers: a manager's apply always wins, as with ``--force-conflicts``
(docs/kubectl.md).
"""

from __future__ import annotations

import copy
import json
from typing import Any, Final

import jsonpatch

APPLIED_PREFIX: Final = "apply.edgenode.io/"
MAX_MANAGER_CHARS: Final = 128


class PatchError(ValueError):
    """A patch that cannot be applied (400/422 naming why)."""


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386: ``patch`` applied to ``target`` (neither is changed)."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = copy.deepcopy(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


def json_patch(target: dict[str, Any], operations: Any) -> dict[str, Any]:
    """RFC 6902 (PatchError for a malformed patch, a failed ``test``, a missing path)."""
    if not isinstance(operations, list):
        raise PatchError("a JSON patch is a list of operations")
    try:
        result = jsonpatch.JsonPatch(operations).apply(target)
    except (jsonpatch.JsonPatchException, jsonpatch.JsonPointerException) as exc:
        raise PatchError(f"the JSON patch does not apply: {exc}") from None
    except (TypeError, KeyError, IndexError, ValueError) as exc:
        raise PatchError(f"the JSON patch is malformed: {exc}") from None
    if not isinstance(result, dict):
        raise PatchError("the JSON patch must leave an object")
    return result


def _removed(before: Any, after: Any) -> Any:
    """A merge patch deleting what ``before`` sets and ``after`` no longer does (maps key
    by key; a value still given, changed or not, is not removed)."""
    if not isinstance(before, dict):
        return None
    patch: dict[str, Any] = {}
    for key, value in before.items():
        if not isinstance(after, dict) or key not in after:
            patch[key] = None
        elif isinstance(value, dict) and isinstance(after[key], dict):
            inner = _removed(value, after[key])
            if inner:
                patch[key] = inner
    return patch


def applied_annotation(manager: str) -> str:
    return APPLIED_PREFIX + manager


def server_side_apply(
    current: dict[str, Any] | None, applied: dict[str, Any], manager: str
) -> dict[str, Any]:
    """The object after ``manager`` applied ``applied`` to ``current`` (None: it does not
    exist yet). PatchError for an unusable manager name."""
    if not manager or len(manager) > MAX_MANAGER_CHARS or "/" in manager:
        raise PatchError(f"fieldManager must be 1-{MAX_MANAGER_CHARS} characters without '/'")
    intent = copy.deepcopy(applied)
    intent.pop("status", None)
    annotation = applied_annotation(manager)
    intent_metadata = intent.setdefault("metadata", {})
    if isinstance(intent_metadata, dict):
        annotations = intent_metadata.get("annotations")
        if isinstance(annotations, dict):
            annotations.pop(annotation, None)
    base = {} if current is None else copy.deepcopy(current)
    previous: Any = None
    text = ((base.get("metadata") or {}).get("annotations") or {}).get(annotation)
    if isinstance(text, str):
        try:
            previous = json.loads(text)
        except ValueError:
            previous = None
    result = merge_patch(base, _removed(previous, intent) or {})
    result = merge_patch(result, intent)
    metadata = result.setdefault("metadata", {})
    metadata.setdefault("annotations", {})[annotation] = json.dumps(
        intent, separators=(",", ":"), sort_keys=True
    )
    return dict(result)

"""The hub's in-memory copy of its resources, indexed for fan-out.

Every resource is kept as stored (``StoredResource``); an index says which resources may
target a node — those aimed at it by name, and those with a selector — so a snapshot or a
resume looks at these only, not at the whole fleet's resources. The cache is updated from
the store's log entries as they are committed (``committed``), never written on its own.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from typing import Any

from edgehub.kinds import REGISTRY, Registry
from edgehub.store import LogEntry, StoredResource

Ident = tuple[str, str]
"""(kind, name)."""


class ResourceCache:
    """Resources by (kind, name), with the targeting index."""

    def __init__(self, resources: Iterable[StoredResource], registry: Registry = REGISTRY) -> None:
        self.registry = registry
        self.resources: dict[Ident, StoredResource] = {(r.kind, r.name): r for r in resources}
        self._by_node: dict[str, set[Ident]] = {}
        self._selected: set[Ident] = set()
        for ident, stored in self.resources.items():
            self._index(ident, stored.body, add=True)

    def get(self, kind: str, name: str) -> StoredResource | None:
        return self.resources.get((kind, name))

    def __contains__(self, ident: object) -> bool:
        return ident in self.resources

    def of_kind(self, kind: str) -> Iterator[StoredResource]:
        """Resources of ``kind``, sorted by name."""
        for (k, _), stored in sorted(self.resources.items()):
            if k == kind:
                yield stored

    def committed(self, entry: LogEntry, stored: StoredResource | None) -> None:
        """A change is durable: ``stored`` is the resource now (None after a delete)."""
        ident = (entry.kind, entry.name)
        self._index(ident, entry.prev, add=False)
        if stored is None:
            self.resources.pop(ident, None)
        else:
            self.resources[ident] = stored
            self._index(ident, stored.body, add=True)

    def candidates(self, node: str) -> list[StoredResource]:
        """Resources that may target ``node``: by name, or by selector."""
        idents = self._by_node.get(node, set()) | self._selected
        return [self.resources[i] for i in idents if i in self.resources]

    def node_body(self, node: str) -> dict[str, Any] | None:
        stored = self.resources.get(("Node", node))
        return None if stored is None else stored.body

    def labels(self, node: str) -> dict[str, str]:
        """The node's current labels (not copied: callers only read them)."""
        body = self.node_body(node)
        if body is None:
            return {}
        labels: dict[str, str] = body.get("metadata", {}).get("labels", {})
        return labels

    def targeted_nodes(self, body: Mapping[str, Any]) -> list[str]:
        """Names of the existing Nodes this resource version targets, sorted."""
        kind = self.registry.find(str(body.get("kind")))
        target = None if kind is None else kind.target(body)
        if target is None:
            return []
        if target.node is not None:
            return [target.node] if ("Node", target.node) in self.resources else []
        return [
            name
            for (k, name), stored in sorted(self.resources.items())
            if k == "Node" and target.matches(name, stored.body["metadata"].get("labels", {}))
        ]

    def _index(self, ident: Ident, body: dict[str, Any] | None, *, add: bool) -> None:
        if body is None:
            return
        kind = self.registry.find(ident[0])
        target = None if kind is None else kind.target(body)
        if target is None:
            return
        if target.node is not None:
            names = self._by_node.setdefault(target.node, set())
            if add:
                names.add(ident)
            else:
                names.discard(ident)
        elif add:
            self._selected.add(ident)
        else:
            self._selected.discard(ident)

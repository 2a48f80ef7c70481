"""Which resources target which node.

Each kind says whom a version of one of its resources is for (``Kind.target`` in
``edgehub.kinds``): one node by name (a Node itself, a Device's ``spec.node``) or every node
whose labels match a selector (a Config's or Route's ``spec.nodeSelector``; none: every
node). This module holds the shared pieces: :class:`Target`, parsed selectors (cached), and
``target_of``/``targets`` over the registry. Pure functions of a resource body and a node's
name and labels: the fan-out and the resume path both ask "did this version target that
node" for the old and the new version, so a resource that stops matching (its selector or
the node's labels changed) becomes a delete.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from edgehub.selectors import Selector, selector_from_spec

_SELECTOR_CACHE_SIZE = 4096
"""Parsed selectors kept (there are few distinct ones in a fleet; parsing is per change)."""


@dataclass(frozen=True)
class Target:
    """Who a resource version is for: one node by name, or nodes matching a selector."""

    node: str | None
    selector: Selector | None

    def matches(self, node: str, labels: Mapping[str, str]) -> bool:
        if self.node is not None:
            return self.node == node
        return self.selector is None or self.selector.matches(labels)


@lru_cache(maxsize=_SELECTOR_CACHE_SIZE)
def _selector(encoded: str) -> Selector:
    return selector_from_spec(json.loads(encoded))


def selector_target(node_selector: Any) -> Target:
    """The target of a ``spec.nodeSelector`` value (validated); ``None``: every node."""
    if node_selector is None:
        return Target(None, None)
    return Target(None, _selector(json.dumps(node_selector, sort_keys=True)))


def target_of(body: Mapping[str, Any] | None) -> Target | None:
    """The target of a (validated) resource body, as its kind defines it; ``None`` for no
    resource or a kind this hub does not know."""
    if body is None:
        return None
    from edgehub.kinds import REGISTRY  # the registry's kinds import this module

    kind = REGISTRY.find(str(body.get("kind")))
    return None if kind is None else kind.target(body)


def targets(body: Mapping[str, Any] | None, node: str, labels: Mapping[str, str]) -> bool:
    """Does this resource version target ``node`` (with ``labels``)?"""
    target = target_of(body)
    return target is not None and target.matches(node, labels)


def labels_of(body: Mapping[str, Any] | None) -> dict[str, str]:
    """A Node body's labels (empty for none)."""
    if body is None:
        return {}
    return dict(body.get("metadata", {}).get("labels", {}))

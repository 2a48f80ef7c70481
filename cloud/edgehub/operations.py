"""What operators do, for every kind alike: apply, delete, views; plus node join tokens and
device twin patches. ``api.py`` maps HTTP onto these; the kind registry supplies what is
kind-specific (validation, server-managed values, status views).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import secrets
import time
from collections.abc import AsyncIterator, Iterable
from typing import TYPE_CHECKING, Any, TypeVar

from edgehub import kubeedge
from edgehub.kinds.base import ResourceError, check_name, iso_time
from edgehub.resources import validate_document
from edgehub.selectors import Selector
from edgehub.store import LogEntry, StoredResource
from edgehub.targeting import labels_of
from edgenode.errors import TwinError
from edgenode.twin import check_limits, merge_patch

if TYPE_CHECKING:
    from edgehub.hub import Hub

STALL_BUDGET = 0.02
"""Seconds of store writes and fan-out an apply may take on the event loop before it lets
everything else run (heartbeats, other nodes' links, API answers). A large apply is
committed in chunks sized to this: a chunk is committed and queued to every node without
a suspension point (no node can miss a change), then the loop gets its turn."""
FIRST_CHUNK = 32
MAX_CHUNK = 512

T = TypeVar("T")

TOKEN_PREFIX = "ent_"
TOKEN_BYTES = 32
"""256-bit node tokens."""


def hash_token(token: str) -> str:
    """Tokens are stored as SHA-256 hex (fast on purpose: a fleet reconnect checks many)."""
    return hashlib.sha256(token.encode()).hexdigest()


async def cooperatively(items: Iterable[T]) -> AsyncIterator[T]:
    """``items`` as an async iterator that lets the event loop run whenever producing them
    took more than ``STALL_BUDGET`` since it last did."""
    turn = time.perf_counter()
    for item in items:
        yield item
        if time.perf_counter() - turn > STALL_BUDGET:
            await let_others_run()
            turn = time.perf_counter()


async def let_others_run() -> None:
    """Let everything that is ready run before going on. One ``sleep(0)`` is not enough:
    the loop runs our wake-up first in its next turn, before the I/O and timers that turn
    finds ready (they queue behind it); after a second one they run in between."""
    await asyncio.sleep(0)
    await asyncio.sleep(0)


class Operations:
    """The operator-facing verbs of one hub."""

    def __init__(self, hub: Hub) -> None:
        self.hub = hub

    def _stamp(self, prev: dict[str, Any] | None, body: dict[str, Any], revision: int) -> None:
        self.hub.registry.get(body["kind"]).stamp(prev, body, revision)

    def admit(self, resources: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """The kinds' checks that need the hub (other resources, artifacts)."""
        batch = {(body["kind"], body["metadata"]["name"]) for body in resources}
        by_kind: dict[str, list[tuple[int, dict[str, Any]]]] = {}
        for index, body in enumerate(resources):
            by_kind.setdefault(body["kind"], []).append((index, body))
        for kind, bodies in by_kind.items():
            self.hub.registry.get(kind).admit_all(self.hub, bodies, batch)
        return resources

    @staticmethod
    def validate_names(resources: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """``resources``, unless one kind and name appears twice (ResourceError)."""
        seen: set[tuple[str, str]] = set()
        for index, body in enumerate(resources):
            ident = (body["kind"], body["metadata"]["name"])
            if ident in seen:
                raise ResourceError(index, "metadata.name", f"{ident[0]} {ident[1]} appears twice")
            seen.add(ident)
        return resources

    def check(self, documents: list[Any]) -> list[dict[str, Any]]:
        """What an apply of ``documents`` would store, validated and admitted, without
        storing anything (dry runs); ResourceError as ``apply`` would raise."""
        incoming, _skipped = kubeedge.translate(documents, self.hub.cache)
        registry = self.hub.registry
        validated = [validate_document(item.doc, item.index, registry) for item in incoming]
        return self.admit(self.validate_names(validated))

    def apply(self, documents: list[Any]) -> list[dict[str, Any]]:
        """Validate every document first (all or nothing), then store and fan out, in one
        go (small applies: node tokens, twin patches, tests). KubeEdge manifests are
        translated first (``edgehub.kubeedge``)."""
        incoming, skipped = kubeedge.translate(documents, self.hub.cache)
        registry = self.hub.registry
        validated = [validate_document(item.doc, item.index, registry) for item in incoming]
        results = self._commit(self.admit(self.validate_names(validated)))
        return kubeedge.merge_results(incoming, results, skipped)

    async def apply_async(self, documents: list[Any]) -> list[dict[str, Any]]:
        """``apply`` for the operator API, keeping each turn of the event loop within
        ``STALL_BUDGET``: validation document by document, then the store writes and the
        fan-out in chunks sized to the budget (a 1,000-document apply stopped everything
        for 2 s before: bench/bench_apply.py). All or nothing still holds for validation:
        nothing is stored unless every document is valid."""
        incoming, skipped = kubeedge.translate(documents, self.hub.cache)
        registry = self.hub.registry
        validated = [
            validate_document(item.doc, item.index, registry)
            async for item in cooperatively(incoming)
        ]
        resources = self.admit(self.validate_names(validated))
        results: list[dict[str, Any]] = []
        size = FIRST_CHUNK
        index = 0
        while index < len(resources):
            chunk = resources[index : index + size]
            began = time.perf_counter()
            results += self._commit(chunk)
            took = time.perf_counter() - began
            index += len(chunk)
            if took > STALL_BUDGET:
                size = max(1, size // 2)
            elif took < STALL_BUDGET / 3:
                size = min(MAX_CHUNK, size * 2)
            await let_others_run()
        return kubeedge.merge_results(incoming, results, skipped)

    def _commit(self, resources: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Store validated resources in one transaction, then cache and fan out each."""
        hub = self.hub
        results = []
        for (entry, revision), body in zip(
            hub.store.put(resources, self._stamp), resources, strict=True
        ):
            kind, name = body["kind"], body["metadata"]["name"]
            existed = (kind, name) in hub.cache
            if entry is not None:
                hub.committed(entry)
            action = "unchanged" if entry is None else ("configured" if existed else "created")
            results.append({"kind": kind, "name": name, "revision": revision, "action": action})
        return results

    def delete(self, kind: str, name: str) -> LogEntry | None:
        entry = self.hub.store.delete(kind, name)
        if entry is not None:
            self.hub.committed(entry)
            if kind == "Node":
                self.revoke(name)
        return entry

    def node_add(self, name: str, labels: dict[str, str]) -> tuple[str, int]:
        """Create the Node (if missing) and a join token; returns (token, revision).
        ValueError when the node already has a live token."""
        hub = self.hub
        check_name(name, None, "name")
        if hub.store.has_live_token(name):
            raise ValueError(f"node {name!r} already has a token; revoke it first")
        existing = hub.cache.get("Node", name)
        if existing is None:
            doc = {
                "apiVersion": "edgenode.io/v1",
                "kind": "Node",
                "metadata": {"name": name, "labels": labels},
                "spec": {},
            }
            revision = self.apply([doc])[0]["revision"]
        else:
            revision = existing.revision
        token = TOKEN_PREFIX + secrets.token_urlsafe(TOKEN_BYTES)
        hub.store.add_token(name, hash_token(token))
        return token, revision

    def revoke(self, name: str) -> int:
        count = self.hub.store.revoke(name)
        self.hub.sessions.revoke(name)
        return count

    def twin_set(self, device: str, patch: dict[str, Any]) -> dict[str, Any]:
        current = self.hub.cache.get("Device", device)
        if current is None:
            raise KeyError(device)
        body = json.loads(json.dumps(current.body))
        spec = body["spec"]
        try:
            spec["desired"] = merge_patch(spec.get("desired", {}), patch)
            check_limits(spec["desired"])
        except TwinError as exc:
            raise ResourceError(None, "spec.desired", str(exc)) from None
        body["metadata"].pop("resourceVersion", None)
        body["metadata"].pop("generation", None)
        self.apply([body])
        return self.view("Device", device) or {}

    def apps_using(self, digest: str) -> list[str]:
        """The Apps whose spec names artifact ``digest``."""
        return [
            stored.name
            for stored in self.hub.cache.of_kind("App")
            if any(a.get("sha256") == digest for a in stored.body["spec"].get("artifacts", []))
        ]

    # --- Views ------------------------------------------------------------------------------

    def view(self, kind: str, name: str) -> dict[str, Any] | None:
        stored = self.hub.cache.get(kind, name)
        if stored is None:
            return None
        return self.render(stored)

    def render(self, stored: StoredResource) -> dict[str, Any]:
        """The resource as the API shows it: the stored body, its creation time, and the
        kind's status view (with the nodes' rejections of its current revision)."""
        hub = self.hub
        body: dict[str, Any] = json.loads(json.dumps(stored.body))
        body["metadata"]["creationTimestamp"] = iso_time(stored.created)
        status = hub.registry.get(stored.kind).status(hub, stored)
        if status is not None:
            body["status"] = status
        rejections = hub.store.rejections(stored.key)
        current = [r for r in rejections if r.revision == stored.revision]
        if current:
            body.setdefault("status", {})["rejections"] = [
                {"node": r.node, "revision": r.revision, "code": r.code, "message": r.message}
                for r in current
            ]
        return body

    def list_views(self, kind: str, selector: Selector | None) -> list[dict[str, Any]]:
        return [
            self.render(stored)
            for stored in self.hub.cache.of_kind(kind)
            if selector is None or selector.matches(labels_of(stored.body))
        ]

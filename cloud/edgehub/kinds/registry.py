"""The kind registry: every resource kind the hub serves, looked up by any of its names.

The verbs of the hub (apply, get, list, delete, watch, fan-out, ingest), ``edgectl``'s
tables and the OpenAPI documents all ask the registry instead of branching on kind names,
so adding a kind is adding one module that registers a :class:`~edgehub.kinds.base.Kind`.
"""

from __future__ import annotations

from collections.abc import Iterator

from edgehub.kinds.base import Kind


class Registry:
    """Kinds by name; names, plurals, singulars and short names resolve case-insensitively."""

    def __init__(self) -> None:
        self._kinds: dict[str, Kind] = {}
        self._aliases: dict[str, Kind] = {}
        self._by_uplink: dict[str, Kind] = {}

    def register(self, kind: Kind) -> Kind:
        """Add ``kind``; ValueError if one of its names or uplink kinds is taken."""
        names = {kind.name.lower(), kind.plural, kind.singular, *kind.short_names}
        taken = sorted(n for n in names if n in self._aliases)
        if kind.name in self._kinds or taken:
            raise ValueError(f"kind {kind.name}: names already registered: {taken or kind.name}")
        shared = sorted(kind.uplink_kinds & self._by_uplink.keys())
        if shared:
            raise ValueError(f"kind {kind.name}: uplink kinds already taken: {shared}")
        self._kinds[kind.name] = kind
        for name in names:
            self._aliases[name] = kind
        for uplink in kind.uplink_kinds:
            self._by_uplink[uplink] = kind
        return kind

    def unregister(self, name: str) -> None:
        """Remove a kind (tests that add throwaway kinds clean up with this)."""
        kind = self._kinds.pop(name)
        self._aliases = {k: v for k, v in self._aliases.items() if v is not kind}
        self._by_uplink = {k: v for k, v in self._by_uplink.items() if v is not kind}

    def __iter__(self) -> Iterator[Kind]:
        return iter(self._kinds.values())

    def __contains__(self, name: object) -> bool:
        return name in self._kinds

    def names(self) -> list[str]:
        """Kind names in registration order (Node, Device, Config, Route, ...)."""
        return list(self._kinds)

    def get(self, name: str) -> Kind:
        """The kind named exactly ``name`` (the ``kind`` field); KeyError otherwise."""
        return self._kinds[name]

    def find(self, name: str) -> Kind | None:
        return self._kinds.get(name)

    def resolve(self, text: str) -> Kind:
        """``node``, ``nodes``, ``Node``, ``NODES``, ``no`` → the Node kind; ValueError for
        names no kind has."""
        kind = self._aliases.get(text.lower())
        if kind is None:
            raise ValueError(f"unknown kind {text!r} (known: {', '.join(self._kinds)})")
        return kind

    def for_uplink(self, record_kind: str) -> Kind | None:
        """The kind whose ``ingest`` takes uplink records of ``record_kind``."""
        return self._by_uplink.get(record_kind)

    def uplink_kinds(self) -> frozenset[str]:
        return frozenset(self._by_uplink)

"""Routes: which local MQTT messages go upstream (and how urgently) or to another topic.

Built on :class:`edgenode.router.TopicRouter` (the Rust trie when the extension is
there): every route's filter maps to the route's index, and a batch of topics is matched
in one ``match_many`` call.

Rules (docs/device-api.md, "Routes"):

- telemetry of a *known* device (``$edge/devices/{d}/telemetry/...``) goes upstream by
  default with priority :data:`DEFAULT_TELEMETRY_PRIORITY` and no TTL;
- an upstream route matching a topic replaces that default: when several enabled
  upstream routes match, the message is sent once with the most urgent priority (and
  the TTL of that route; on a tie, the longest TTL); when every matching upstream route
  is disabled, the message does not go upstream at all;
- republish routes (``to = "topic:<t>"``) add local copies; disabled ones do nothing;
- any other topic goes nowhere unless a route selects it.

A republish target must not match any route's filter, so a route can never feed itself
(or another route) in a loop: :class:`~edgenode.errors.ConfigError` at construction.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Final

from edgenode.devices.config import DEFAULT_TELEMETRY_PRIORITY, RouteSpec
from edgenode.errors import ConfigError
from edgenode.router import TopicRouter

NO_REPUBLISH: Final[tuple[str, ...]] = ()


@dataclass(frozen=True)
class Upstream:
    """Send the message to the outbox with this priority and TTL (None: no expiry)."""

    priority: int
    ttl: float | None


@dataclass(frozen=True)
class RouteDecision:
    """Where one message goes: upstream (or not) and the local topics to republish to."""

    upstream: Upstream | None
    republish: tuple[str, ...] = NO_REPUBLISH


DEFAULT_UPSTREAM: Final = Upstream(DEFAULT_TELEMETRY_PRIORITY, None)
NOWHERE: Final = RouteDecision(None)
DEFAULT_DECISION: Final = RouteDecision(DEFAULT_UPSTREAM)


def _ttl_rank(ttl: float | None) -> float:
    return float("inf") if ttl is None else ttl


class RouteTable:
    """Immutable: build a new table when the routes change."""

    def __init__(self, routes: Iterable[RouteSpec] = ()) -> None:
        self.routes: tuple[RouteSpec, ...] = tuple(routes)
        self.batch_rules: tuple[tuple[bool, bool, int, float | None], ...] = tuple(
            (
                route.republish_topic is not None,
                route.enabled,
                route.priority,
                None if route.ttl is None else float(route.ttl),
            )
            for route in self.routes
        )
        """(republish, enabled, priority, ttl) of each route, by its index in
        :attr:`router`: what the core's batch call needs to decide as :meth:`decide_many`
        does (``edgenode.devtwin.handle_batch``'s ``routing``)."""
        self._router = TopicRouter()
        for index, route in enumerate(self.routes):
            self._router.add(route.from_filter, index)
        for route in self.routes:
            target = route.republish_topic
            if target is not None and route.enabled:
                loops = [self.routes[i].from_filter for i in self._router.match(target)]
                if loops:
                    raise ConfigError(
                        f"route {route.from_filter!r}: republishing to {target!r} would loop "
                        f"(matched by route filter {loops[0]!r})"
                    )

    @property
    def router(self) -> TopicRouter | None:
        """The routes' filters (each mapped to its route's index); None without routes."""
        return self._router if self.routes else None

    def filters(self) -> list[str]:
        """The distinct filters the node must subscribe to, in route order."""
        return list(dict.fromkeys(route.from_filter for route in self.routes))

    def decide(self, topic: str, default_upstream: bool) -> RouteDecision:
        """Where a message on ``topic`` goes; see :meth:`decide_many`."""
        return self.decide_many([topic], [default_upstream])[0]

    def decide_many(
        self, topics: Sequence[str], default_upstream: Sequence[bool]
    ) -> list[RouteDecision]:
        """One decision per topic (one router call for the batch).

        ``default_upstream[i]`` says whether ``topics[i]`` is telemetry of a known device
        (upstream by default). TopicError if a topic is not a valid topic name.
        """
        if not self.routes:
            return [DEFAULT_DECISION if flag else NOWHERE for flag in default_upstream]
        matches = self._router.match_many(topics)
        return [
            self._decision(indices, flag)
            for indices, flag in zip(matches, default_upstream, strict=True)
        ]

    def _decision(self, indices: list[int], default_upstream: bool) -> RouteDecision:
        if not indices:
            return DEFAULT_DECISION if default_upstream else NOWHERE
        best: Upstream | None = None
        any_upstream_route = False
        republish: list[str] = []
        for index in indices:
            route = self.routes[index]
            target = route.republish_topic
            if target is not None:
                if route.enabled and target not in republish:
                    republish.append(target)
                continue
            any_upstream_route = True
            if not route.enabled:
                continue
            if (
                best is None
                or route.priority < best.priority
                or (route.priority == best.priority and _ttl_rank(route.ttl) > _ttl_rank(best.ttl))
            ):
                best = Upstream(route.priority, route.ttl)
        if not any_upstream_route and default_upstream:
            best = DEFAULT_UPSTREAM
        return RouteDecision(best, tuple(republish))

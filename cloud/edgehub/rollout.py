"""Staged rollouts of Apps, sans-I/O: who runs which App revision, decided from what the
nodes report and the time passed in.

An App with ``spec.strategy`` is not run from its spec directly: each node runs what its
*assignment* names (an ``AppAssignment`` resource per node: the revision and its spec),
and :func:`plan` decides the assignments. Its rules (docs/apps.md, "Rollouts"):

- A new revision R starts a rollout from P, the last revision every targeted node was on
  when a rollout completed (the previous good one). Waves go in order; a node is in the
  first wave whose ``nodeSelector`` matches it (a wave without one takes every remaining
  node; nodes no wave matches form an implicit last wave).
- In the current wave, nodes are moved to R at most ``maxUnavailable`` at a time (default:
  the whole wave): a moved node is *done* once it reports R ready for
  ``minReadySeconds``; *failed* when it reports it rolled back from R (or R failed there),
  or is not done ``progressDeadlineSeconds`` after it was moved — counted from when it
  was connected, so a node offline when its wave started is pending, not failed, until
  the deadline after it returns.
- More than ``failureThreshold`` of a wave failed (a count or a percentage; default 0:
  any failure) aborts the rollout: every node of that wave is assigned P again, and no
  later wave ever receives R. A wave whose nodes are all done or failed (within the
  threshold) is complete; the next one starts. ``spec.paused`` moves nobody new.
- A revision applied while a rollout runs wins: the rollout restarts for the newest from
  the same P (nodes that were given the intermediate revision keep it until their wave
  moves them on).

Without a strategy an App needs no assignments: every node runs its spec at once.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from edgehub.selectors import Selector, selector_from_spec

DEFAULT_MIN_READY_SECONDS = 0.0
DEFAULT_PROGRESS_DEADLINE_SECONDS = 600.0

PROGRESSING = "Progressing"
COMPLETE = "Complete"
ABORTED = "Aborted"
PAUSED = "Paused"


@dataclass(frozen=True)
class Wave:
    name: str
    selector: Selector | None
    max_unavailable: str | int | None


@dataclass(frozen=True)
class Strategy:
    waves: tuple[Wave, ...]
    min_ready: float = DEFAULT_MIN_READY_SECONDS
    progress_deadline: float = DEFAULT_PROGRESS_DEADLINE_SECONDS
    failure_threshold: str | int = 0


def parse_strategy(value: Mapping[str, Any]) -> Strategy:
    """``spec.strategy`` (validated by the App kind) as a :class:`Strategy`."""
    waves = []
    for item in value.get("waves", []):
        selector = item.get("nodeSelector")
        waves.append(
            Wave(
                str(item["name"]),
                None if selector is None else selector_from_spec(selector),
                item.get("maxUnavailable"),
            )
        )
    return Strategy(
        tuple(waves),
        float(value.get("minReadySeconds", DEFAULT_MIN_READY_SECONDS)),
        float(value.get("progressDeadlineSeconds", DEFAULT_PROGRESS_DEADLINE_SECONDS)),
        value.get("failureThreshold", 0),
    )


def amount(value: str | int | None, total: int, *, default: int) -> int:
    """A count or a percentage of ``total`` (rounded up, as Kubernetes does)."""
    if value is None:
        return default
    if isinstance(value, str) and value.endswith("%"):
        return math.ceil(total * float(value[:-1]) / 100)
    return int(value)


@dataclass(frozen=True)
class NodeView:
    """What the planner knows of one targeted node."""

    name: str
    labels: Mapping[str, str]
    connected: bool = False
    connected_since: float | None = None
    """Since when the current link is up (None: offline)."""
    revision: int | None = None
    """The App revision the node reports running."""
    ready: bool = False
    ready_since: float | None = None
    failed_revision: int | None = None
    """A revision the node reports it rolled back from (or that failed there)."""


@dataclass
class RolloutState:
    """What a rollout remembers between steps (kept in the App's status)."""

    revision: int
    """The revision being rolled out."""
    previous: int
    """The previous good revision: what nodes go back to on an abort."""
    state: str = PROGRESSING
    wave: int = 0
    moved: dict[str, float] = field(default_factory=dict)
    """Nodes moved to ``revision``, and when."""
    failed: dict[str, str] = field(default_factory=dict)
    """Nodes failed on ``revision``, and why."""
    reason: str = ""

    def to_json(self) -> dict[str, Any]:
        return {
            "revision": self.revision,
            "previous": self.previous,
            "state": self.state,
            "wave": self.wave,
            "moved": dict(self.moved),
            "failed": dict(self.failed),
            "reason": self.reason,
        }

    @classmethod
    def from_json(cls, value: Mapping[str, Any]) -> RolloutState:
        return cls(
            int(value["revision"]),
            int(value["previous"]),
            str(value.get("state", PROGRESSING)),
            int(value.get("wave", 0)),
            {str(k): float(v) for k, v in dict(value.get("moved", {})).items()},
            {str(k): str(v) for k, v in dict(value.get("failed", {})).items()},
            str(value.get("reason", "")),
        )


@dataclass(frozen=True)
class WaveStatus:
    name: str
    nodes: tuple[str, ...]
    done: tuple[str, ...]
    pending: tuple[str, ...]
    failed: tuple[str, ...]

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "nodes": len(self.nodes),
            "done": list(self.done),
            "pending": list(self.pending),
            "failed": list(self.failed),
        }


@dataclass(frozen=True)
class Plan:
    """The outcome of one step: who runs which revision, and the rollout's state."""

    assignments: dict[str, int]
    state: RolloutState
    waves: tuple[WaveStatus, ...]


def waves_of(strategy: Strategy, nodes: Sequence[NodeView]) -> list[tuple[str, list[str]]]:
    """The waves' members, in order (a node in the first wave that matches it)."""
    remaining = sorted(nodes, key=lambda n: n.name)
    result: list[tuple[str, list[str]]] = []
    for wave in strategy.waves:
        members = [n for n in remaining if wave.selector is None or wave.selector.matches(n.labels)]
        names = {n.name for n in members}
        remaining = [n for n in remaining if n.name not in names]
        result.append((wave.name, [n.name for n in members]))
    if remaining:
        result.append(("(remaining)", [n.name for n in remaining]))
    return result


def start(revision: int, previous_good: int, current: RolloutState | None) -> RolloutState:
    """The state of a rollout of ``revision`` (a new one, or the same continued). A newer
    revision during a rollout restarts it from the same previous good revision."""
    if current is not None and current.revision == revision:
        return current
    previous = previous_good
    if current is not None and current.state != COMPLETE:
        previous = current.previous
    return RolloutState(revision, previous)


def plan(
    strategy: Strategy,
    state: RolloutState,
    nodes: Sequence[NodeView],
    assigned: Mapping[str, int],
    now: float,
    *,
    paused: bool = False,
) -> Plan:
    """One step of the rollout: the next assignments and state (nothing is changed in
    place). ``assigned`` is what each node was assigned before."""
    state = replace(state, moved=dict(state.moved), failed=dict(state.failed))
    by_name = {n.name: n for n in nodes}
    waves = waves_of(strategy, nodes)
    assignments: dict[str, int] = {}
    for name in by_name:
        if name in state.moved:
            assignments[name] = state.revision
        else:
            assignments[name] = assigned.get(name, state.previous)
    if state.state not in (ABORTED, COMPLETE) and state.wave < len(waves):
        _step_wave(strategy, state, waves, by_name, assignments, now, paused=paused)
    if state.state == PROGRESSING and state.wave >= len(waves):
        state.state = COMPLETE
        state.reason = ""
    statuses = []
    for wave_name, members in waves:
        done, pending, failed = [], [], []
        for name in members:
            if name in state.failed:
                failed.append(name)
            elif name in state.moved and _done(by_name[name], state, strategy, now):
                done.append(name)
            else:
                pending.append(name)
        statuses.append(
            WaveStatus(wave_name, tuple(members), tuple(done), tuple(pending), tuple(failed))
        )
    return Plan(assignments, state, tuple(statuses))


def _step_wave(
    strategy: Strategy,
    state: RolloutState,
    waves: list[tuple[str, list[str]]],
    by_name: Mapping[str, NodeView],
    assignments: dict[str, int],
    now: float,
    *,
    paused: bool,
) -> None:
    """The current wave: failures first, then the abort rule, then more nodes moved, then
    whether the wave is settled (all done or failed) and the next one starts."""
    wave_name, members = waves[state.wave]
    for name in members:
        if name in state.moved and name not in state.failed:
            why = _failure(by_name[name], state, strategy, now)
            if why:
                state.failed[name] = why
    failed_count = sum(1 for name in members if name in state.failed)
    threshold = amount(strategy.failure_threshold, len(members), default=0)
    if failed_count > threshold:
        state.state = ABORTED
        failures = "; ".join(
            f"{n}: {state.failed[n]}" for n in sorted(state.failed) if n in members
        )
        state.reason = (
            f"wave {wave_name!r}: {failed_count} of {len(members)} nodes failed "
            f"(threshold {threshold}): {failures}"
        )
        for name in members:
            state.moved.pop(name, None)  # back, and never moved again by this rollout
            assignments[name] = state.previous
        return
    if paused:
        state.state = PAUSED
        return
    state.state = PROGRESSING
    wave = strategy.waves[state.wave] if state.wave < len(strategy.waves) else None
    limit = amount(
        None if wave is None else wave.max_unavailable, len(members), default=len(members)
    )
    busy = [
        n
        for n in members
        if n in state.moved
        and n not in state.failed
        and not _done(by_name[n], state, strategy, now)
    ]
    waiting = [n for n in members if n not in state.moved]
    # Connected nodes first: an offline one would hold a slot until it returns.
    waiting.sort(key=lambda n: (not by_name[n].connected, n))
    for name in waiting[: max(0, max(1, limit) - len(busy))]:
        state.moved[name] = now
        assignments[name] = state.revision
    settled = all(
        n in state.failed or (n in state.moved and _done(by_name[n], state, strategy, now))
        for n in members
    )
    if settled:
        state.wave += 1


def _done(node: NodeView, state: RolloutState, strategy: Strategy, now: float) -> bool:
    return (
        node.revision == state.revision
        and node.ready
        and node.ready_since is not None
        and now - node.ready_since >= strategy.min_ready
    )


def _failure(node: NodeView, state: RolloutState, strategy: Strategy, now: float) -> str:
    """Why a moved node counts as failed on the rollout's revision ("" if it does not)."""
    if node.failed_revision == state.revision:
        return f"rolled back from revision {state.revision}"
    if _done(node, state, strategy, now):
        return ""
    moved = state.moved[node.name]
    # The deadline counts from when the node could act on its assignment: the later of
    # the move and its current connection (an offline node is pending, not failed).
    if not node.connected or node.connected_since is None:
        return ""
    began = max(moved, node.connected_since)
    if now - began > strategy.progress_deadline:
        deadline = f"{strategy.progress_deadline:g}"
        return f"not ready {deadline} s after it was given revision {state.revision}"
    return ""

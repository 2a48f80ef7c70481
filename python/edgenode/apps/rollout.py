"""Staged rollouts on the node: which revision of an App runs, and the node-local rollback
(docs/apps.md, "Rollouts"). Sans-I/O: the service passes in what the hub assigned, what
the App's runner reported and the wall-clock time, and stores the result.

An App with ``spec.strategy`` is not run from its spec: the node runs what its
``AppAssignment`` (``APP.NODE``, written by the hub's rollout controller) names — a
revision and the App's spec at that revision. Per App the node keeps a
:class:`RolloutRecord`, committed to its SQLite store (the twins table, under
``@app-rollout/NAME``: device names never start with ``@``) before anything acts on it:

- ``current``: the revision committed to run, with its whole spec. A daemon killed in
  the middle of a switch comes back on ``current`` and prepares it from scratch
  (artifacts verified by digest), never on a half-installed mix.
- ``good``: the previous good revision and its spec, kept (its artifacts count as used)
  until ``current`` has been ready for ``minReadySeconds`` (then ``current`` is
  *confirmed* and ``good`` is released).
- If ``current`` is not confirmed ``progressDeadlineSeconds`` after the switch (counted
  again from a daemon start: the App restarts then), or it fails in a way no retry can
  fix (a digest mismatch, no container engine, an invalid spec), or the daemon started
  MAX_UNCONFIRMED_STARTS times without confirming it (a revision that takes the node
  down with it must not keep it in a boot loop), the node goes back to
  ``good`` by itself — hub or no hub — and remembers ``failedRevision`` and the reason;
  every ``app-status`` record says ``rolledBack: true`` with them from then on (the
  outbox keeps the newest until the hub has it). Without a previous good revision (the
  first one failed) the App is stopped.
- An assignment of ``failedRevision`` is not acted on (no flip-flop); any other revision
  the hub assigns — a newer one, or an older one it sends the node back to — is. Sent
  back to the good revision while the new one is not confirmed (the hub aborted first)
  counts as a rollback too: the abandoned revision is the failed one.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any, Final

from edgenode.apps.spec import REVISION_ANNOTATION

ASSIGNMENT_KIND: Final = "AppAssignment"
RECORD_PREFIX: Final = "@app-rollout/"
"""Key prefix of the rollout records in the store's twins table."""
DEFAULT_MIN_READY_SECONDS: Final = 0.0
DEFAULT_PROGRESS_DEADLINE_SECONDS: Final = 600.0
"""The hub's defaults (``edgehub.rollout``)."""
MAX_UNCONFIRMED_STARTS: Final = 3
"""Daemon starts with the same revision switched to but never confirmed, after which the
node rolls back at once (a revision that takes the node down with it: a boot loop)."""
TERMINAL_REASONS: Final = frozenset({"DigestMismatch", "NoContainerEngine", "InvalidSpec"})
"""Status reasons no retry of the same revision can fix: rolled back without waiting."""


def record_key(app: str) -> str:
    return RECORD_PREFIX + app


def assignment_name(app: str, node: str) -> str:
    """The hub's name of the assignment of ``app`` to ``node`` (``edgehub.kinds.assignment``)."""
    return f"{app}.{node}"


@dataclass(frozen=True)
class Revision:
    """One App revision as the node runs it: an App resource body whose spec is that
    revision's (and whose revision annotation says its number)."""

    number: int
    body: Mapping[str, Any]

    @property
    def spec(self) -> Mapping[str, Any]:
        spec = self.body.get("spec")
        return spec if isinstance(spec, Mapping) else {}

    @property
    def digests(self) -> set[str]:
        found: set[str] = set()
        artifacts = self.spec.get("artifacts")
        for artifact in artifacts if isinstance(artifacts, list) else []:
            if isinstance(artifact, Mapping) and isinstance(artifact.get("sha256"), str):
                found.add(artifact["sha256"])
        return found

    def to_json(self) -> dict[str, Any]:
        return {"revision": self.number, "body": dict(self.body)}

    @classmethod
    def from_json(cls, value: object) -> Revision | None:
        if not isinstance(value, Mapping):
            return None
        number, body = value.get("revision"), value.get("body")
        if not isinstance(number, int) or isinstance(number, bool) or not isinstance(body, dict):
            return None
        return cls(number, body)


def assigned_revision(
    app_body: Mapping[str, Any], assignment: Mapping[str, Any]
) -> Revision | None:
    """The revision an AppAssignment body names, as an App body (the App's metadata with
    the assigned revision, the assignment's template as spec); None if malformed."""
    spec = assignment.get("spec")
    if not isinstance(spec, Mapping):
        return None
    number, template = spec.get("revision"), spec.get("template")
    if not isinstance(number, int) or isinstance(number, bool) or number < 1:
        return None
    if not isinstance(template, dict):
        return None
    metadata = app_body.get("metadata")
    metadata = dict(metadata) if isinstance(metadata, Mapping) else {}
    annotations = metadata.get("annotations")
    annotations = dict(annotations) if isinstance(annotations, Mapping) else {}
    annotations[REVISION_ANNOTATION] = str(number)
    metadata["annotations"] = annotations
    body = {**app_body, "metadata": metadata, "spec": template}
    return Revision(number, body)


@dataclass(frozen=True)
class Timing:
    """A revision's ``spec.strategy`` numbers that the node applies."""

    min_ready: float = DEFAULT_MIN_READY_SECONDS
    progress_deadline: float = DEFAULT_PROGRESS_DEADLINE_SECONDS

    @classmethod
    def of(cls, revision: Revision | None) -> Timing:
        strategy = revision.spec.get("strategy") if revision is not None else None
        if not isinstance(strategy, Mapping):
            return cls()

        def number(key: str, default: float) -> float:
            value = strategy.get(key)
            if isinstance(value, bool) or not isinstance(value, int | float):
                return default
            return float(value) if math.isfinite(value) and value >= 0 else default

        return cls(
            number("minReadySeconds", DEFAULT_MIN_READY_SECONDS),
            number("progressDeadlineSeconds", DEFAULT_PROGRESS_DEADLINE_SECONDS),
        )


@dataclass(frozen=True)
class RolloutRecord:
    """What the node knows of one staged App (committed to the store on every change)."""

    current: Revision | None = None
    switched_at: float | None = None
    """When ``current`` was switched to (or the daemon started): its deadline counts from
    here (wall clock)."""
    confirmed: bool = False
    """``current`` was ready for ``minReadySeconds`` (it is the good one)."""
    good: Revision | None = None
    """The previous good revision, kept until ``current`` is confirmed."""
    failed_revision: int | None = None
    rolled_back: bool = False
    reason: str = ""
    ready_since: float | None = None
    """Since when ``current`` has been ready without a break (not stored: an App starts
    again with the daemon)."""
    starts: int = 0
    """Daemon starts since the switch to the unconfirmed ``current``."""

    @property
    def revision(self) -> int | None:
        return self.current.number if self.current is not None else None

    def to_json(self) -> dict[str, Any]:
        return {
            "current": self.current.to_json() if self.current else None,
            "switchedAt": self.switched_at,
            "confirmed": self.confirmed,
            "good": self.good.to_json() if self.good else None,
            "failedRevision": self.failed_revision,
            "rolledBack": self.rolled_back,
            "reason": self.reason,
            "starts": self.starts,
        }

    def encode(self) -> bytes:
        return json.dumps(self.to_json(), sort_keys=True, separators=(",", ":")).encode()

    @classmethod
    def decode(cls, data: bytes | None, now: float) -> RolloutRecord:
        """A stored record as a daemon start sees it (an unconfirmed revision gets its
        whole deadline again, the App starts again now, and the start is counted);
        damaged: an empty record."""
        try:
            value = json.loads(data) if data else None
        except ValueError:
            value = None
        if not isinstance(value, dict):
            return cls()
        failed = value.get("failedRevision")
        current = Revision.from_json(value.get("current"))
        confirmed = value.get("confirmed") is True
        starts = value.get("starts")
        starts = starts if isinstance(starts, int) and not isinstance(starts, bool) else 0
        return cls(
            current=current,
            switched_at=now if current is not None else None,
            confirmed=confirmed,
            good=Revision.from_json(value.get("good")),
            failed_revision=failed
            if isinstance(failed, int) and not isinstance(failed, bool)
            else None,
            rolled_back=value.get("rolledBack") is True,
            reason=str(value.get("reason") or ""),
            starts=starts + 1 if current is not None and not confirmed else 0,
        )

    def report(self) -> dict[str, Any]:
        """The rollout fields of the App's ``app-status`` records (the hub's names)."""
        return {
            "rolledBack": self.rolled_back,
            "failedRevision": self.failed_revision,
            "rollbackReason": self.reason,
        }


def assign(record: RolloutRecord, offered: Revision | None, now: float) -> RolloutRecord:
    """The hub assigned ``offered`` (None: no assignment for this node yet: whatever runs
    keeps running). The failed revision is never taken again; another revision is switched
    to, the current one becoming the previous good one if it was confirmed."""
    if offered is None or offered.number == record.failed_revision:
        return record
    current = record.current
    if current is not None and offered.number == current.number:
        if offered.body != current.body:  # an edit that keeps the revision (a health check)
            return replace(record, current=offered)
        return record
    good = current if current is not None and record.confirmed else record.good
    if (
        current is not None
        and not record.confirmed
        and good is not None
        and good.number == offered.number
    ):
        # The hub sends the node back before the new revision was confirmed here (its
        # rollout aborted): a rollback too, and the abandoned revision is not taken again.
        return RolloutRecord(
            current=offered,
            switched_at=now,
            confirmed=True,
            failed_revision=current.number,
            rolled_back=True,
            reason=(
                f"revision {current.number} not confirmed when the hub sent this node back; "
                f"rolled back to revision {offered.number}"
            ),
        )
    if good is not None and good.number == offered.number:
        good = None  # back to the good revision itself: nothing else to keep
    return RolloutRecord(
        current=offered,
        switched_at=now,
        confirmed=False,
        good=good,
        failed_revision=record.failed_revision,
    )


def observe(
    record: RolloutRecord, revision: int | None, ready_since: float | None
) -> RolloutRecord:
    """The runner reported ``revision`` ready since ``ready_since`` (None: not ready)."""
    if record.current is None or revision != record.current.number:
        return record
    if ready_since == record.ready_since:
        return record
    return replace(record, ready_since=ready_since)


def step(
    record: RolloutRecord, now: float, problem: str = "", terminal: bool = False
) -> RolloutRecord:
    """Confirm ``current`` once it was ready long enough; roll back when it failed:
    ``terminal`` (a failure no retry fixes) or past its deadline. ``problem`` says what
    is wrong with it (its last status), for the reason."""
    current = record.current
    if current is None or record.confirmed:
        return record
    timing = Timing.of(current)
    since = record.ready_since
    if since is not None and now - since >= timing.min_ready:
        return replace(record, confirmed=True, good=None, starts=0)
    started = record.switched_at if record.switched_at is not None else now
    if terminal:
        why = f"revision {current.number} failed: {problem or 'cannot run'}"
    elif record.starts >= MAX_UNCONFIRMED_STARTS:
        why = f"revision {current.number} not ready after {record.starts} starts of the node daemon"
    elif now - started > timing.progress_deadline:
        why = f"revision {current.number} not ready within {timing.progress_deadline:g} s" + (
            f": {problem}" if problem else ""
        )
    else:
        return record
    good = record.good
    if good is None or good.number == current.number:
        return RolloutRecord(
            current=None,
            failed_revision=current.number,
            rolled_back=False,
            reason=f"{why}; no previous good revision to go back to: stopped",
        )
    return RolloutRecord(
        current=good,
        switched_at=now,
        confirmed=True,
        good=None,
        failed_revision=current.number,
        rolled_back=True,
        reason=f"{why}; rolled back to revision {good.number}",
    )


def next_check(record: RolloutRecord) -> float | None:
    """When :func:`step` may decide something without a new report (wall clock)."""
    current = record.current
    if current is None or record.confirmed:
        return None
    timing = Timing.of(current)
    times = []
    if record.ready_since is not None:
        times.append(record.ready_since + timing.min_ready)
    if record.switched_at is not None:
        times.append(record.switched_at + timing.progress_deadline + 0.001)
    return min(times) if times else None


def kept_digests(record: RolloutRecord) -> set[str]:
    """Artifacts the record needs kept in the cache (current's and the previous good's)."""
    found: set[str] = set()
    for revision in (record.current, record.good):
        if revision is not None:
            found |= revision.digests
    return found

"""The hub's rollout controller: drives :mod:`edgehub.rollout`'s planner for every App
with a ``spec.strategy`` and writes its decisions as ``AppAssignment`` resources (one per
node, fanned out to that node alone).

It keeps, in each App's status (never sent to nodes): ``history``, the App's last
``revisionHistoryLimit`` revisions with their specs (an assignment or an undo needs an
older one); ``lastComplete``, the last revision a rollout completed (the previous good
one); and ``rollout``, the planner's state with each wave's done/pending/failed nodes.
``step`` runs every ``ROLLOUT_PERIOD`` seconds on the hub's loop.
"""

from __future__ import annotations

import json
import logging
import time
from typing import TYPE_CHECKING, Any, Final

from edgehub.kinds.app import app_revision
from edgehub.kinds.assignment import assignment_name
from edgehub.kinds.base import API_VERSION, iso_time
from edgehub.rollout import (
    ABORTED,
    COMPLETE,
    NodeView,
    RolloutState,
    parse_strategy,
    plan,
    start,
)
from edgehub.store import StoredResource

if TYPE_CHECKING:
    from edgehub.hub import Hub

ROLLOUT_PERIOD: Final = 1.0
DEFAULT_HISTORY_LIMIT: Final = 10
APP_LABEL: Final = "edgenode.io/app"

log = logging.getLogger("edgehub.rollouts")


class RolloutController:
    """Staged rollouts of one hub's Apps."""

    def __init__(self, hub: Hub) -> None:
        self.hub = hub

    # --- What operators ask ---------------------------------------------------------------

    def undo(self, app: str, to_revision: int | None) -> dict[str, Any]:
        """Go back to ``to_revision`` (default: the previous good one) at once, on every
        node: the App's spec becomes that revision's again (a new revision number, as in
        Kubernetes), rolled out without waves since it is known to run. KeyError: no such
        App; ValueError: no such revision in its history."""
        stored = self.hub.cache.get("App", app)
        if stored is None:
            raise KeyError(app)
        status = self.hub.store.get_status("App", app)
        history = {int(h["revision"]): h for h in status.get("history", [])}
        target = to_revision
        if target is None:
            rollout = status.get("rollout") or {}
            target = int(rollout.get("previous") or status.get("lastComplete") or 0)
        if target not in history:
            known = ", ".join(str(r) for r in sorted(history)) or "none"
            raise ValueError(f"App {app!r} has no revision {target} in its history ({known})")
        body = json.loads(json.dumps(stored.body))
        spec = body["spec"]
        for key in list(spec):
            if key not in KEPT_ON_UNDO:
                del spec[key]
        spec.update({k: v for k, v in history[target]["spec"].items() if k not in KEPT_ON_UNDO})
        body["metadata"].pop("resourceVersion", None)
        body["metadata"].pop("generation", None)
        result = self.hub.ops.apply([body])[0]
        new_revision = app_revision(self.hub.cache.get("App", app).body)  # type: ignore[union-attr]
        status = self.hub.store.get_status("App", app)
        status["rollbackOf"] = {"revision": new_revision, "to": target}
        self.hub.store.set_status("App", app, status)
        self.step()
        return {**result, "appRevision": new_revision, "to": target}

    # --- The periodic step ------------------------------------------------------------------

    def step(self) -> None:
        """One step for every App: plan, write the changed assignments, keep the state."""
        hub = self.hub
        apps = {stored.name: stored for stored in hub.cache.of_kind("App")}
        assignments: dict[str, dict[str, StoredResource]] = {}
        for stored in hub.cache.of_kind("AppAssignment"):
            spec = stored.body["spec"]
            assignments.setdefault(spec["app"], {})[spec["node"]] = stored
        for name in set(assignments) - set(apps):
            self._write(name, {}, assignments[name])  # the App is gone: so are they
        for name, stored in apps.items():
            try:
                self._step_app(stored, assignments.get(name, {}))
            except Exception:  # one App's problem must not stop the others' rollouts
                log.exception("rollout step of App %s failed", name)

    def _step_app(self, app: StoredResource, current: dict[str, StoredResource]) -> None:
        hub = self.hub
        spec = app.body["spec"]
        revision = app_revision(app.body)
        status = hub.store.get_status("App", app.name)
        history = self._history(status, spec, revision)
        if "strategy" not in spec:
            # No staged rollout: every node runs the spec; leftovers go.
            if current:
                self._write(app.name, {}, current)
            if status.get("history") != history:
                status["history"] = history
                hub.store.set_status("App", app.name, status)
            return
        previous_good = int(status.get("lastComplete") or 0)
        saved = status.get("rollout")
        state = start(
            revision, previous_good, None if saved is None else RolloutState.from_json(saved)
        )
        rollback = status.get("rollbackOf") or {}
        fast = rollback.get("revision") == revision
        nodes = self._views(app, status)
        assigned = {node: int(a.body["spec"]["revision"]) for node, a in current.items()}
        strategy = parse_strategy({} if fast else spec["strategy"])
        if fast:
            strategy = parse_strategy({"waves": [{"name": "rollback"}], "failureThreshold": "100%"})
        result = plan(
            strategy, state, nodes, assigned, time.time(), paused=bool(spec.get("paused"))
        )
        templates = {int(h["revision"]): h["spec"] for h in history}
        wanted = {node: rev for node, rev in result.assignments.items() if rev in templates}
        self._write(app.name, {n: (r, templates[r]) for n, r in wanted.items()}, current)
        new_state = result.state
        if new_state.state == COMPLETE:
            status["lastComplete"] = new_state.revision
        if saved is None or new_state.state != RolloutState.from_json(saved).state:
            log.info(
                "App %s revision %d: rollout %s%s",
                app.name,
                revision,
                new_state.state.lower(),
                f" ({new_state.reason})" if new_state.state == ABORTED else "",
            )
        rollout = new_state.to_json()
        rollout["waves"] = [w.to_json() for w in result.waves]
        rollout["currentWave"] = (
            result.waves[new_state.wave].name if new_state.wave < len(result.waves) else None
        )
        if status.get("rollout") != rollout or status.get("history") != history:
            status["rollout"] = rollout
            status["history"] = history
            hub.store.set_status("App", app.name, status)

    def _history(
        self, status: dict[str, Any], spec: dict[str, Any], revision: int
    ) -> list[dict[str, Any]]:
        history = [h for h in status.get("history", []) if int(h["revision"]) != revision]
        known = {int(h["revision"]): h for h in status.get("history", [])}
        entry = known.get(revision) or {"revision": revision, "created": iso_time(time.time())}
        entry = {**entry, "spec": spec}
        history.append(entry)
        history.sort(key=lambda h: int(h["revision"]))
        limit = int(spec.get("revisionHistoryLimit", DEFAULT_HISTORY_LIMIT))
        keep = {revision, int(status.get("lastComplete") or 0)}
        rollout = status.get("rollout") or {}
        keep.add(int(rollout.get("previous") or 0))
        while len(history) > limit:
            drop = next((h for h in history if int(h["revision"]) not in keep), None)
            if drop is None:
                break
            history.remove(drop)
        return history

    def _views(self, app: StoredResource, status: dict[str, Any]) -> list[NodeView]:
        hub = self.hub
        reports = status.get("nodes", {})
        views = []
        for node in hub.cache.targeted_nodes(app.body):
            session = hub.sessions.open.get(node)
            report = reports.get(node) or {}
            views.append(
                NodeView(
                    node,
                    hub.cache.labels(node),
                    connected=session is not None,
                    connected_since=None if session is None else session.connected_at,
                    revision=_int(report.get("revision")),
                    ready=report.get("ready") is True,
                    ready_since=_seconds(report.get("readySince")),
                    failed_revision=_int(report.get("failedRevision")),
                )
            )
        return views

    def _write(
        self,
        app: str,
        wanted: dict[str, tuple[int, dict[str, Any]]],
        current: dict[str, StoredResource],
    ) -> None:
        """Make the App's assignments ``wanted`` (node → (revision, template))."""
        hub = self.hub
        bodies = []
        for node, (revision, template) in sorted(wanted.items()):
            existing = current.get(node)
            if existing is not None and existing.body["spec"]["revision"] == revision:
                continue
            bodies.append(
                {
                    "apiVersion": API_VERSION,
                    "kind": "AppAssignment",
                    "metadata": {
                        "name": assignment_name(app, node),
                        "labels": {APP_LABEL: app},
                    },
                    "spec": {"app": app, "node": node, "revision": revision, "template": template},
                }
            )
        if bodies:
            for entry, _revision in hub.store.put(bodies):
                if entry is not None:
                    hub.committed(entry)
        for node, existing in current.items():
            if node not in wanted:
                entry = hub.store.delete("AppAssignment", existing.name)
                if entry is not None:
                    hub.committed(entry)


UNDO_STRATEGY: Final = {"waves": [{"name": "undo"}], "failureThreshold": "100%"}

KEPT_ON_UNDO: Final = frozenset(
    {"node", "nodeSelector", "strategy", "revisionHistoryLimit", "paused"}
)
"""Spec fields an undo keeps (where and how to roll out); everything else comes back."""


def _int(value: object) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _seconds(value: object) -> float | None:
    """A timestamp as nodes report it: Unix seconds, or ISO 8601 UTC."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    if isinstance(value, str):
        try:
            import calendar

            return float(calendar.timegm(time.strptime(value, "%Y-%m-%dT%H:%M:%SZ")))
        except ValueError:
            return None
    return None

"""The App service: the node service that supervises the Apps targeted at this node.

Kind ``App``. The desired Apps come from the store (the link persists them; a node
restarted without its hub has them), the Configs they read from the Config service. Each
App gets an :class:`~edgenode.apps.runner.AppRunner`; the service only assembles: it
finds the limits mechanism and the container engine when it starts, clears what a
previous daemon left running, creates, updates and removes runners as the desired state
and the Configs change, tells the artifact cache what to keep, keeps ``apps.json`` for
``edgenode status``, answers the hub's log requests, and on a clean stop of the daemon
stops every App (in parallel, each within its grace period) before the daemon exits.

**Exactly one instance.** The daemon never adopts an instance a previous daemon
started: it could not read that instance's output (its pipe went with the old daemon)
nor its exit status. Before starting anything it stops every recorded instance that
still runs — identity checked (``process.py``): same boot, the leader's pid *and* start
time, or the instance token in a process's environment, and every process in the App's
cgroup — with the App's stop signal and grace period, then SIGKILL; a container by its
fixed name. Then it starts each App fresh. After a clean stop nothing is left to find.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import signal
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from edgenode.apps import container
from edgenode.apps.limits import Cgroups, app_cgroup_from_json, detect, remove_parents
from edgenode.apps.logs import AppLogs
from edgenode.apps.plan import APP_KIND, Plan, make_plan
from edgenode.apps.process import KILL_WAIT_SECONDS, leftovers, stop_leftovers
from edgenode.apps.rollout import (
    ASSIGNMENT_KIND,
    TERMINAL_REASONS,
    Revision,
    RolloutRecord,
    assign,
    assigned_revision,
    assignment_name,
    kept_digests,
    next_check,
    observe,
    record_key,
    step,
)
from edgenode.apps.runner import AppRunner, Context
from edgenode.apps.spec import DEFAULT_GRACE_SECONDS, AppSpecError, app_from_body
from edgenode.apps.state import (
    known_apps,
    load_state,
    node_dir,
    save_state,
    work_dir,
    write_summary,
)
from edgenode.apps.supervisor import FAILED, Timing
from edgenode.apps.workdir import remove_tree
from edgenode.service import DesiredResource, DesiredRow, NodeHost

if TYPE_CHECKING:
    from edgenode.config import Config, MqttSection
    from edgenode.node.configs import ConfigEntry, ConfigService

log = logging.getLogger("edgenode.apps")

APP_NAME: Final = re.compile(r"[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?")
"""An App name the node accepts (a resource name: it becomes a folder and a cgroup)."""
STOP_SLACK_SECONDS: Final = KILL_WAIT_SECONDS + 2 * container.ENGINE_CALL_SECONDS
"""Beyond the longest grace period, how long a clean stop waits for its Apps."""


def broker_env(mqtt: MqttSection) -> dict[str, str]:
    """The node's broker for its Apps' environment (nothing when the node runs none).
    Never its credentials: an App that needs them gets its own through a Config."""
    if not mqtt.enabled:
        return {}
    env = {"EDGENODE_MQTT_HOST": mqtt.host, "EDGENODE_MQTT_PORT": str(mqtt.port)}
    if mqtt.tls:
        env["EDGENODE_MQTT_TLS"] = "1"
    return env


class AppService:
    """Runs and supervises the node's Apps (``edgenode.service.NodeService``)."""

    name: Final = "apps"
    kinds: Final = frozenset({APP_KIND, ASSIGNMENT_KIND})

    def __init__(
        self,
        config: Config,
        configs: ConfigService | None = None,
        *,
        timing: Timing | None = None,
    ) -> None:
        self.config = config
        self.configs = configs
        self.timing = timing or Timing()
        self.data_dir = Path(config.node.data_dir)
        self.logs = AppLogs()
        self.runners: dict[str, AppRunner] = {}
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._ctx: Context | None = None
        self._wake: asyncio.Event | None = None
        self._dirty = True
        self._summary: dict[str, dict[str, Any]] = {}
        self._mechanism = "rlimit"
        self.rollouts: dict[str, RolloutRecord] = {}
        """Staged Apps' rollout records (``rollout.py``), as committed to the store."""
        self._problems: dict[str, tuple[int, str, bool]] = {}
        """Per staged App: (revision, what is wrong with it, no retry can fix it)."""
        self._clock = time.time
        if configs is not None:
            configs.listen(self._config_changed)

    # --- NodeService --------------------------------------------------------------------------

    def on_desired(self, host: NodeHost, rows: Sequence[DesiredRow], snapshot: bool) -> None:
        self._changed()

    def _config_changed(self, name: str, entry: ConfigEntry | None) -> None:
        self._changed()

    def _changed(self) -> None:
        self._dirty = True
        if self._wake is not None:
            self._wake.set()

    async def run(self, host: NodeHost) -> None:
        self._wake = asyncio.Event()
        host.serve_logs(self.logs)
        ctx = await self._context(host)
        self._ctx = ctx
        self._write_summary()
        try:
            await self._clean_leftovers(ctx)
            while True:
                self._wake.clear()
                self._check_rollouts(ctx.host)
                if self._dirty:
                    self._dirty = False
                    self._reconcile(ctx)
                checks = [t for r in self.rollouts.values() if (t := next_check(r)) is not None]
                timeout = max(0.0, min(checks) - self._clock()) if checks else None
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), timeout)
        finally:
            await self._stop_all()

    # --- Start-up -------------------------------------------------------------------------------

    async def _context(self, host: NodeHost) -> Context:
        apps = self.config.apps
        cgroups: Cgroups | None = None
        engine, reason = None, "Apps are disabled on this node"
        if apps.enabled:
            cgroups = detect(self.data_dir)
            engine, reason = await container.find_engine(apps.container_runtime)
        self._mechanism = cgroups.kind if cgroups is not None else "rlimit"
        log.info(
            "Apps: %s; limits by %s; container engine: %s",
            "enabled" if apps.enabled else "disabled ([apps] enabled = false)",
            self._mechanism,
            engine.describe() if engine else f"none ({reason})",
        )
        return Context(
            host=host,
            data_dir=self.data_dir,
            node=self.config.node.name,
            log_max_bytes=apps.log_max_bytes,
            logs=self.logs,
            timing=self.timing,
            cgroups=cgroups,
            engine=engine,
            engine_reason=reason,
            enabled=apps.enabled,
            broker_env=broker_env(self.config.mqtt),
            on_status=self._status_changed,
            on_good=self._changed,
        )

    async def _clean_leftovers(self, ctx: Context) -> None:
        """Stop whatever a previous daemon of this data_dir left running (see the module's
        doc), and remove the files of Apps that went away while the daemon was down."""
        wanted = {r.name for r in ctx.host.desired(APP_KIND)}
        names = set(known_apps(self.data_dir))
        if ctx.cgroups is not None:  # App cgroups without a state file (lost, damaged)
            for parent in ctx.cgroups.parents.values():
                with contextlib.suppress(OSError):
                    names.update(p.name for p in parent.iterdir() if p.is_dir())
        await asyncio.gather(*(self._clean_one(ctx, name, name in wanted) for name in names))

    async def _clean_one(self, ctx: Context, name: str, wanted: bool) -> None:
        state = load_state(self.data_dir, name)
        cgroup = app_cgroup_from_json(state.cgroup) if state is not None else None
        if cgroup is None and ctx.cgroups is not None:
            cgroup = ctx.cgroups.app(name)
        stop_signal, grace = int(signal.SIGTERM), float(DEFAULT_GRACE_SECONDS)
        if state is not None and state.current is not None:
            with contextlib.suppress(AppSpecError, ValueError, TypeError, AttributeError):
                spec = app_from_body(state.current.get("body") or {})
                stop_signal, grace = spec.stop_signal, spec.grace
        instance = state.instance if state is not None else None
        if instance is not None and instance.container and ctx.engine is not None:
            await container.remove(ctx.engine, instance.container)

        def find() -> set[int]:
            extra = cgroup.pids() if cgroup is not None else set()
            if instance is None:
                return {p for p in extra if p != os.getpid()}
            return leftovers(instance, extra)

        found = find()
        if found:
            log.warning(
                "App %s: stopping %d process(es) a previous daemon left running (pid %s)",
                name,
                len(found),
                ", ".join(str(p) for p in sorted(found)[:10]),
            )
            left = await stop_leftovers(find, stop_signal, grace)
            if left:
                log.error("App %s: processes %s do not die (SIGKILL)", name, sorted(left))
        if state is not None and state.instance is not None:
            state.instance = None
            with contextlib.suppress(OSError):
                save_state(self.data_dir, state)
        if not wanted:
            with contextlib.suppress(Exception):
                ctx.host.store.delete_twin(record_key(name))  # its rollout record
            if cgroup is not None:
                cgroup.remove()
            if ctx.cgroups is not None:
                remove_parents(ctx.cgroups)
            for folder in (work_dir(self.data_dir, name), node_dir(self.data_dir, name)):
                with contextlib.suppress(OSError):
                    if folder.exists():
                        remove_tree(folder)

    # --- Reconciling ----------------------------------------------------------------------------

    def plans(self, host: NodeHost) -> dict[str, Plan]:
        """Every desired App as this node would run it now (a staged App: the revision
        its rollout record says, after taking in its assignment)."""
        current: dict[str, ConfigEntry] = dict(self.configs.current) if self.configs else {}
        plans: dict[str, Plan] = {}
        assignments = {r.name: r for r in host.desired(ASSIGNMENT_KIND)}
        staged: set[str] = set()
        for resource in host.desired(APP_KIND):
            if not APP_NAME.fullmatch(resource.name):
                # Its name becomes a folder: never trust it (the hub refuses such names).
                log.error("App %r is not runnable here: not a resource name", resource.name[:80])
                continue
            if "strategy" in resource.spec:
                staged.add(resource.name)
                revision = self._staged(host, resource, assignments)
                if revision is None:
                    continue  # not assigned here yet, or stopped after a failed first one
                resource = DesiredResource(resource.key, resource.revision, dict(revision.body))
            plan = make_plan(resource, current)
            plans[plan.name] = plan
        for name in set(self.rollouts) - staged:
            self._forget(host, name)
        return plans

    # --- Staged rollouts (rollout.py) ---------------------------------------------------------

    def _record(self, host: NodeHost, name: str) -> RolloutRecord:
        record = self.rollouts.get(name)
        if record is None:
            data: bytes | None = None
            with contextlib.suppress(Exception):
                data = host.store.get_twin(record_key(name))
            record = RolloutRecord.decode(data, self._clock())
            self.rollouts[name] = record
            if data and record.encode() != data:  # this start counted (or a damaged one)
                try:
                    host.commit([(record_key(name), record.encode())], [])
                except Exception as exc:
                    log.error("App %s: cannot store its rollout record: %s", name, exc)
        return record

    def _staged(
        self, host: NodeHost, app: DesiredResource, assignments: dict[str, DesiredResource]
    ) -> Revision | None:
        """What a staged App runs here: its record after its assignment and its runner's
        reports are taken in (committed when it changed)."""
        name = app.name
        record = self._record(host, name)
        if record == RolloutRecord():
            record = self._adopt(name, record)
        found = assignments.get(assignment_name(name, self.config.node.name))
        offered = None
        if found is not None and found.spec.get("app") == name:
            offered = assigned_revision(app.body, found.body)
            if offered is None:
                log.error("App %s: its assignment is malformed: ignored", name)
        now = self._clock()
        record = assign(record, offered, now)
        revision, problem, terminal = self._problems.get(name, (0, "", False))
        if revision != record.revision:
            problem, terminal = "", False
        record = step(record, now, problem, terminal)
        self._keep(host, name, record)
        return record.current

    def _adopt(self, name: str, record: RolloutRecord) -> RolloutRecord:
        """An App that ran unstaged here before it had a strategy: what it runs is the
        good revision (it keeps running until the hub assigns another)."""
        runner = self.runners.get(name)
        body: dict[str, Any] | None = None
        revision = 0
        if runner is not None and runner.plan.spec is not None:
            body, revision = dict(runner.plan.spec.body), runner.plan.revision
        else:
            state = load_state(self.data_dir, name)
            current = state.current if state is not None else None
            if current is not None and isinstance(current.get("body"), dict):
                body, revision = current["body"], int(current.get("revision") or 0)
        if body is None or revision < 1:
            return record
        return RolloutRecord(Revision(revision, body), self._clock(), confirmed=True)

    def _keep(self, host: NodeHost, name: str, record: RolloutRecord) -> None:
        """Take ``record`` as the App's: committed to the store first when what it says
        changed (a failed commit is logged; the record is tried again at the next change),
        then the runner's status fields."""
        before = self.rollouts.get(name)
        self.rollouts[name] = record
        if before is None or before.to_json() != record.to_json():
            if before is not None and before.revision != record.revision:
                if record.rolled_back and record.revision is not None:
                    log.warning("App %s: %s", name, record.reason)
                elif record.current is None:
                    log.error("App %s: %s", name, record.reason)
                else:
                    log.info("App %s: switching to revision %d", name, record.revision)
            elif before is not None and record.confirmed and not before.confirmed:
                log.info("App %s: revision %s confirmed", name, record.revision)
            try:
                host.commit([(record_key(name), record.encode())], [])
            except Exception as exc:
                log.error("App %s: cannot store its rollout record: %s", name, exc)
        runner = self.runners.get(name)
        if runner is not None:
            runner.set_rollout(record.report())

    def _forget(self, host: NodeHost, name: str) -> None:
        """The App is gone or no longer staged: so is its record."""
        self.rollouts.pop(name, None)
        self._problems.pop(name, None)
        with contextlib.suppress(Exception):
            host.store.delete_twin(record_key(name))

    def _check_rollouts(self, host: NodeHost) -> None:
        """Time passed: confirm or roll back; reconcile when a current revision changed."""
        now = self._clock()
        for name, record in list(self.rollouts.items()):
            revision, problem, terminal = self._problems.get(name, (0, "", False))
            if revision != record.revision:
                problem, terminal = "", False
            after = step(record, now, problem, terminal)
            if after is not record:
                self._keep(host, name, after)
                if after.revision != record.revision or after.good != record.good:
                    self._dirty = True  # what runs, or the artifacts to keep, changed

    def _observe(self, name: str, status: dict[str, Any]) -> None:
        """A staged App's runner reported: its readiness and what is wrong with it."""
        record = self.rollouts.get(name)
        if record is None:
            return
        revision = status.get("revision")
        ready_since = status.get("readySince") if status.get("ready") is True else None
        if not status.get("ready") and isinstance(revision, int):
            words = [str(status.get("phase") or "")]
            if status.get("reason"):
                words.append(f"({status['reason']})")
            if status.get("message"):
                words.append(str(status["message"]))
            terminal = status.get("phase") == FAILED and status.get("reason") in TERMINAL_REASONS
            self._problems[name] = (revision, " ".join(w for w in words if w), terminal)
        after = observe(record, revision if isinstance(revision, int) else None, ready_since)
        if after is not record:
            self.rollouts[name] = after
        if self._wake is not None:
            self._wake.set()

    def _reconcile(self, ctx: Context) -> None:
        plans = self.plans(ctx.host)
        keep: set[str] = set()
        for plan in plans.values():
            keep |= plan.digests
        for runner in self.runners.values():
            keep |= runner.good_digests
        for record in self.rollouts.values():
            keep |= kept_digests(record)
        with contextlib.suppress(Exception):
            ctx.host.artifacts.keep(keep)
        for name, runner in list(self.runners.items()):
            if name not in plans and not runner.removing:
                log.info("App %s: removed (deleted or no longer targeting this node)", name)
                runner.remove()
        for name, plan in plans.items():
            existing = self.runners.get(name)
            if existing is None:
                self._add(ctx, plan)
            elif not existing.removing:
                existing.update(plan)
            # A runner still removing its files: added again once it is done (its task's
            # end marks the service dirty).

    def _add(self, ctx: Context, plan: Plan) -> None:
        runner = AppRunner(ctx, plan, load_state(self.data_dir, plan.name))
        record = self.rollouts.get(plan.name)
        if record is not None:
            runner.set_rollout(record.report())
        self.runners[plan.name] = runner
        task = asyncio.create_task(runner.run(), name=f"app-{plan.name}")
        self._tasks[plan.name] = task

        def done(_: asyncio.Task[None]) -> None:
            if self.runners.get(plan.name) is runner:
                del self.runners[plan.name]
                self._tasks.pop(plan.name, None)
            if not task.cancelled() and task.exception() is not None:
                log.error("App %s: its supervisor failed", plan.name, exc_info=task.exception())
            self._changed()

        task.add_done_callback(done)

    async def _stop_all(self) -> None:
        """Stop every App (in parallel, each within its grace period), bounded."""
        runners = list(self.runners.values())
        tasks = [t for t in self._tasks.values() if not t.done()]
        for runner in runners:
            runner.shutdown()
        if tasks:
            longest = max((r.machine.grace for r in runners), default=0.0)
            _, pending = await asyncio.wait(tasks, timeout=longest + STOP_SLACK_SECONDS)
            for task in pending:
                task.cancel()
            if pending:
                await asyncio.wait(pending)
        if self._ctx is not None and self._ctx.cgroups is not None:
            remove_parents(self._ctx.cgroups)

    # --- apps.json ------------------------------------------------------------------------------

    def _status_changed(self, name: str, status: dict[str, Any] | None) -> None:
        if status is None:
            self._summary.pop(name, None)
        else:
            self._observe(name, status)
            entry = {
                key: status[key]
                for key in ("phase", "ready", "restarts", "revision", "reason", "pid", "runtime")
            }
            if status.get("rolledBack"):
                entry["rolledBack"] = True
                entry["failedRevision"] = status.get("failedRevision")
            self._summary[name] = entry
        self._write_summary()

    def _write_summary(self) -> None:
        ctx = self._ctx
        write_summary(
            self.data_dir,
            {
                "pid": os.getpid(),
                "enabled": self.config.apps.enabled,
                "limits": self._mechanism,
                "engine": ctx.engine.describe() if ctx is not None and ctx.engine else None,
                "engine_reason": ctx.engine_reason if ctx is not None and not ctx.engine else "",
                "apps": dict(sorted(self._summary.items())),
            },
        )

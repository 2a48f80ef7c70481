"""One App on the event loop: the asyncio glue around its :class:`Supervisor`.

The runner does what the supervisor decides (prepare, start, signal, kill, probe) and
tells it what happened; it decides nothing itself. It owns the App's files (work dir,
state file, log), its cgroup and its instance, and reports the App's status — an
``app-status`` uplink record through the host's commit port, coalesced per App — only
when the status changed (download progress at most every DOWNLOAD_REPORT_SECONDS).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import secrets
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Final

from edgenode.apps import container
from edgenode.apps.artifacts import (
    ArtifactDigestError,
    ArtifactError,
    ArtifactQuotaError,
)
from edgenode.apps.container import Engine
from edgenode.apps.health import probe_exec, probe_http, probe_tcp
from edgenode.apps.limits import AppCgroup, Applied, Cgroups, plan_limits, remove_parents
from edgenode.apps.logs import LOG_FILE, AppLogs, RotatingLog
from edgenode.apps.plan import Plan
from edgenode.apps.process import (
    INSTANCE_ENV,
    READ_CHUNK,
    Child,
    Instance,
    Launch,
    boot_id,
    launch,
    leftovers,
    stop_leftovers,
)
from edgenode.apps.spec import AppSpec
from edgenode.apps.state import AppState, node_dir, save_state, work_dir
from edgenode.apps.supervisor import (
    APPS_DISABLED,
    ARTIFACT_QUOTA,
    ARTIFACT_UNAVAILABLE,
    CONFIG_MISSING,
    DIGEST_MISMATCH,
    DOWNLOADING,
    FAILED,
    INVALID_SPEC,
    NO_CONTAINER_ENGINE,
    NODE_STOPPED,
    PENDING,
    PREPARE_FAILED,
    REMOVED,
    STOPPED,
    Action,
    ExitInfo,
    Supervisor,
    Timing,
)
from edgenode.apps.workdir import place_artifact, remove_stale, remove_tree, write_file
from edgenode.service import NodeHost, OutRecord

log = logging.getLogger("edgenode.apps")

STATUS_RECORD: Final = "app-status"
STATUS_PRIORITY: Final = 4
"""Outbox priority of ``app-status`` records (as ``config-status``: before telemetry)."""
DOWNLOAD_REPORT_SECONDS: Final = 5.0
"""Download progress is reported at most this often (and when the phase changes)."""
REPORT_RETRY_SECONDS: Final = 30.0
"""A status record the store refused (a full disk) is tried again after this long."""
OUTPUT_TAIL_BYTES: Final = 4096
"""The end of an instance's output kept in memory to explain its exit."""
MAX_POLL_STEPS: Final = 16
DEFAULT_PATH: Final = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
PASSED_ENV: Final = ("PATH", "LANG", "LC_ALL", "TZ")
"""The only variables of the daemon's environment an App inherits (the daemon's may hold
secrets, e.g. its hub token's path)."""
MEMORY_ERROR_MARKERS: Final = (
    b"memoryerror",
    b"cannot allocate memory",
    b"out of memory",
    b"bad_alloc",
)
"""Output that tells an App under an rlimit died of a failed allocation."""
MEMORY_SIGNALS: Final = (signal.SIGSEGV, signal.SIGABRT, signal.SIGBUS, signal.SIGKILL)


@dataclass
class Context:
    """What every runner of the node shares (the service builds it once)."""

    host: NodeHost
    data_dir: Path
    node: str
    log_max_bytes: int
    logs: AppLogs
    timing: Timing = field(default_factory=Timing)
    cgroups: Cgroups | None = None
    engine: Engine | None = None
    engine_reason: str = ""
    enabled: bool = True
    broker_env: dict[str, str] = field(default_factory=dict)
    """Where the node's MQTT broker is (``EDGENODE_MQTT_HOST``/``_PORT``/``_TLS``): an App
    finds the local bus without its address written into the App's spec."""
    clock: Callable[[], float] = time.monotonic
    wall: Callable[[], float] = time.time
    on_status: Callable[[str, dict[str, Any] | None], None] = lambda name, status: None
    """Called with each App's status when it changed (None: the App went away)."""
    on_good: Callable[[], None] = lambda: None
    """Called when an App's good revision changed (the artifacts to keep changed)."""


def memory_hint(returncode: int, tail: bytes, limit: int) -> str:
    """Under an rlimit, why this exit may be an out-of-memory death ("" if no sign)."""
    lowered = tail.lower()
    if any(marker in lowered for marker in MEMORY_ERROR_MARKERS):
        return f"probably out of memory under its address-space limit (RLIMIT_AS {limit} bytes)"
    if returncode < 0 and -returncode in MEMORY_SIGNALS:
        return f"possibly out of memory under its address-space limit (RLIMIT_AS {limit} bytes)"
    return ""


class AppRunner:
    """One App's files, instance and status, driven by its supervisor."""

    def __init__(self, ctx: Context, plan: Plan, state: AppState | None = None) -> None:
        self.ctx = ctx
        self.name = plan.name
        self.plan = plan
        self.state = state or AppState(plan.name)
        self.removing = False
        spec = plan.spec
        restarts = self.state.restarts if self.state.revision == plan.revision else 0
        self.machine = Supervisor(
            spec.restart_policy if spec else "Never",
            spec.health if spec else None,
            spec.grace if spec else 0.0,
            ctx.timing,
            restarts=restarts,
        )
        self.work = work_dir(ctx.data_dir, self.name)
        self.files = node_dir(ctx.data_dir, self.name)
        self.log = RotatingLog(self.files / LOG_FILE, ctx.log_max_bytes)
        ctx.logs.add(self.name, self.log)
        self.cgroup: AppCgroup | None = None
        self._wake = asyncio.Event()
        self._child: Child | None = None
        self._running: Plan | None = None
        self._prepare_task: asyncio.Task[None] | None = None
        self._prepare_gen = 0
        self._tasks: set[asyncio.Task[None]] = set()
        self._tail = bytearray()
        self._oom_base: int | None = None
        self._failcnt_base: int | None = None
        self._sent: dict[str, Any] | None = None
        self._sent_at = -1e9
        self._report_due: float | None = None
        self._refused_at: float | None = None
        """When the outbox last refused a status record (None: the last one was queued)."""
        self._ready_since: float | None = None
        self._ready_revision = 0
        self.rollout: dict[str, Any] | None = None
        """A staged App's rollout fields for its status records (``rollout.py``)."""
        self._hold_disabled()
        if plan.error:
            self.machine.stop(FAILED, INVALID_SPEC, plan.error, terminal=False)

    def _hold_disabled(self) -> None:
        if not self.ctx.enabled:
            self.machine.stop(
                FAILED,
                APPS_DISABLED,
                "Apps are disabled on this node ([apps] enabled = false)",
                terminal=False,
            )

    # --- Commands from the service ---------------------------------------------------------

    def update(self, plan: Plan) -> None:
        """The App's desired state or a Config it reads changed."""
        old, self.plan = self.plan, plan
        self._wake.set()
        if not self.ctx.enabled:
            return
        if plan.error:
            self.machine.stop(FAILED, INVALID_SPEC, plan.error, terminal=False)
            return
        spec = plan.spec
        assert spec is not None
        self.machine.configure(spec.restart_policy, spec.health, spec.grace, self.ctx.clock())
        if plan.run_key == old.run_key:
            if self._running is not None and self._running.run_key == plan.run_key:
                # The same thing under a new number (an undo brings an old spec back as a
                # new revision): nothing restarts, the status says the new number.
                self._running = plan
            return
        new_revision = plan.revision != old.revision
        if new_revision:
            why = f"revision {plan.revision}"
        elif plan.missing != old.missing:
            why = "the Configs it reads are on the node"
        else:
            why = "a Config it reads changed"
        self.machine.rerun(why, new_revision=new_revision)

    def remove(self) -> None:
        """Deleted, or no longer targeting this node: stop it, then remove its files."""
        self.removing = True
        self.machine.stop(
            STOPPED, REMOVED, "the App was deleted or no longer targets this node", terminal=True
        )
        self._wake.set()

    def shutdown(self) -> None:
        """The daemon stops: stop the instance (it starts again with the daemon)."""
        self.machine.stop(STOPPED, NODE_STOPPED, "the node daemon stopped", terminal=True)
        self._wake.set()

    def set_rollout(self, fields: dict[str, Any] | None) -> None:
        """The rollout fields its status records carry from now on (reported at once)."""
        if fields != self.rollout:
            self.rollout = fields
            self._wake.set()

    @property
    def good_digests(self) -> set[str]:
        good = self.state.good or {}
        digests = good.get("digests")
        return {d for d in digests if isinstance(d, str)} if isinstance(digests, list) else set()

    # --- The loop -------------------------------------------------------------------------------

    async def run(self) -> None:
        """Until the App is removed or the node stops (and nothing of it runs)."""
        try:
            while True:
                self._wake.clear()
                self._step()
                self._report()
                if self.machine.ended:
                    return
                now = self.ctx.clock()
                times = [t for t in (self.machine.deadline(now), self._report_due) if t is not None]
                timeout = max(0.0, min(times) - now) if times else None
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), timeout)
        finally:
            await self._close()

    def _step(self) -> None:
        now = self.ctx.clock()
        for _ in range(MAX_POLL_STEPS):
            actions = self.machine.poll(now)
            if not actions:
                return
            for action in actions:
                self._perform(action, now)

    def _perform(self, action: Action, now: float) -> None:
        if action is Action.PREPARE:
            self._prepare_gen += 1
            self._prepare_task = asyncio.create_task(
                self._prepare(self.plan, self._prepare_gen), name=f"app-{self.name}-prepare"
            )
        elif action is Action.CANCEL_PREPARE:
            if self._prepare_task is not None:
                self._prepare_task.cancel()
        elif action is Action.START:
            self._start(now)
        elif action is Action.SIGNAL:
            self._signal(False)
        elif action is Action.KILL:
            self._signal(True)
        elif action is Action.PROBE:
            self._spawn(self._probe(self.machine.instance), "probe")
        elif action is Action.GOOD:
            self._mark_good()

    def _spawn(self, coro: Any, what: str) -> None:
        task: asyncio.Task[None] = asyncio.create_task(coro, name=f"app-{self.name}-{what}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # --- Preparing --------------------------------------------------------------------------

    async def _prepare(self, plan: Plan, gen: int) -> None:
        machine = self.machine

        def current() -> bool:
            return gen == self._prepare_gen

        try:
            spec = plan.spec
            assert spec is not None
            if plan.missing:
                names = ", ".join(plan.missing)
                machine.waiting(CONFIG_MISSING, f"Config {names} is not on this node")
                return
            if spec.runtime == "container" and self.ctx.engine is None:
                machine.prepare_failed(
                    NO_CONTAINER_ENGINE,
                    f"no container engine on this node: {self.ctx.engine_reason}",
                    self.ctx.clock(),
                    retry=False,
                )
                return
            machine.preparing(PENDING, "preparing")
            paths = await self._fetch(spec, current)
            if not current():
                return
            self._materialize(plan, paths)
            if spec.runtime == "container" and self.ctx.engine is not None:
                error = await container.remove(self.ctx.engine, self._container_name)
                if error and current():
                    machine.prepare_failed(
                        PREPARE_FAILED,
                        f"cannot remove the old container: {error}",
                        self.ctx.clock(),
                        retry=True,
                    )
                    return
            if current():
                machine.prepared()
        except asyncio.CancelledError:
            raise
        except ArtifactDigestError as exc:
            if current():
                machine.prepare_failed(DIGEST_MISMATCH, str(exc), self.ctx.clock(), retry=False)
        except ArtifactQuotaError as exc:
            if current():
                machine.prepare_failed(ARTIFACT_QUOTA, str(exc), self.ctx.clock(), retry=True)
        except ArtifactError as exc:
            if current():
                machine.prepare_failed(ARTIFACT_UNAVAILABLE, str(exc), self.ctx.clock(), retry=True)
        except OSError as exc:
            if current():
                machine.prepare_failed(
                    PREPARE_FAILED,
                    f"cannot prepare the work dir: {exc.strerror or exc}",
                    self.ctx.clock(),
                    retry=True,
                )
        finally:
            self._wake.set()

    async def _fetch(self, spec: AppSpec, current: Callable[[], bool]) -> dict[str, Path]:
        source = self.ctx.host.artifacts
        paths: dict[str, Path] = {}
        wanted: list[str] = []
        for artifact in spec.artifacts:
            cached = source.cached(artifact.sha256)
            if cached is not None:
                paths[artifact.sha256] = cached
            elif artifact.sha256 not in wanted:
                wanted.append(artifact.sha256)
        if not wanted:
            return paths
        progress: dict[str, tuple[int, int]] = {}

        def show() -> None:
            if not current():
                return
            done = sum(p[0] for p in progress.values())
            total = sum(p[1] for p in progress.values())
            if self.ctx.host.hub_connected:
                text = f"fetching {len(wanted)} artifact(s) from the hub"
            else:
                text = "waiting for the hub link to fetch artifacts"
            self.machine.preparing(DOWNLOADING, text, (done, total))
            self._wake.set()

        def tracker(digest: str) -> Callable[[int, int], None]:
            def update(done: int, total: int) -> None:
                progress[digest] = (done, total)
                show()

            return update

        tasks = {
            asyncio.create_task(source.fetch(digest, tracker(digest))): digest for digest in wanted
        }
        try:
            pending: set[asyncio.Task[Path]] = set(tasks)
            while pending:
                show()
                done, pending = await asyncio.wait(
                    pending, timeout=DOWNLOAD_REPORT_SECONDS, return_when=asyncio.FIRST_EXCEPTION
                )
                for task in done:
                    paths[tasks[task]] = task.result()  # raises the ArtifactError
        finally:
            for task in tasks:
                task.cancel()
        return paths

    @property
    def _container_name(self) -> str:
        return container.container_name(self.ctx.node, self.name)

    def _materialize(self, plan: Plan, paths: dict[str, Path]) -> None:
        spec = plan.spec
        assert spec is not None
        from edgenode.files import ensure_dir

        ensure_dir(self.work)
        placed = {}
        for artifact in spec.artifacts:
            placed[artifact.name] = place_artifact(
                self.work,
                artifact.name,
                artifact.sha256,
                paths[artifact.sha256],
                self.state.placed.get(artifact.name),
            )
        for path, data in plan.files:
            write_file(self.work, path, data)
        remove_stale(
            self.work,
            [*self.state.placed, *self.state.files],
            [*placed, *(path for path, _ in plan.files)],
        )
        self.state.placed = placed
        self.state.files = [path for path, _ in plan.files]

    # --- Starting and stopping -------------------------------------------------------------

    def _applied(self, plan: Plan) -> Applied:
        spec = plan.spec
        if spec is None:
            return Applied("none")
        return plan_limits(spec.resources, spec.runtime, self.ctx.cgroups)

    def _env(self, plan: Plan, token: str, app_dir: str) -> dict[str, str]:
        env = {INSTANCE_ENV: token}
        for key in PASSED_ENV:
            if key in os.environ:
                env[key] = os.environ[key]
        env.setdefault("PATH", DEFAULT_PATH)
        env["HOME"] = app_dir
        env.update(self._node_env(plan, app_dir))
        env.update(plan.env)
        env[INSTANCE_ENV] = token
        return env

    def _node_env(self, plan: Plan, app_dir: str) -> dict[str, str]:
        return {
            "EDGENODE_NODE": self.ctx.node,
            "EDGENODE_APP": self.name,
            "EDGENODE_APP_REVISION": str(plan.revision),
            "EDGENODE_APP_DIR": app_dir,
            **self.ctx.broker_env,
        }

    def _start(self, now: float) -> None:
        plan = self.plan
        spec = plan.spec
        assert spec is not None
        wall = self.ctx.wall()
        token = secrets.token_hex(16)
        is_container = spec.runtime == "container"
        name = self._container_name if is_container else ""
        instance = Instance(token, boot_id(), container=name)
        applied = self._applied(plan)
        self.state.instance = instance
        self.state.revision, self.state.run_key = plan.revision, plan.run_key
        self.state.current = {"revision": plan.revision, "body": dict(spec.body)}
        join: list[int] = []
        try:
            if applied.cgroup and self.ctx.cgroups is not None:
                self.cgroup = self.cgroup or self.ctx.cgroups.app(self.name)
                self.ctx.cgroups.ensure()
                self.cgroup.create()
                self.cgroup.set_limits(spec.resources)
                self._oom_base = self.cgroup.oom_kills()
                self._failcnt_base = self.cgroup.failcnt()
                self.state.cgroup = self.cgroup.to_json()
            # The token is on disk before the process exists: a daemon killed right after
            # the start still leaves the next one a way to find this instance.
            save_state(self.ctx.data_dir, self.state)
            if is_container:
                engine = self.ctx.engine
                assert engine is not None
                mount = self.work if (spec.artifacts or spec.files) else None
                node_env = self._node_env(plan, container.CONTAINER_APP_DIR)
                app_env = {**node_env, **plan.env}
                argv = container.run_argv(engine, self._container_name, spec, app_env, mount)
                env = {**os.environ, **app_env, INSTANCE_ENV: token}
            else:
                argv = list(spec.command)
                env = self._env(plan, token, str(self.work))
            if self.cgroup is not None and applied.cgroup:
                join = self.cgroup.open_procs()
            child = launch(Launch(argv, self.work, env, join, applied.address_space))
        except OSError as exc:
            error = f"{exc.strerror or exc}" + (f": {exc.filename}" if exc.filename else "")
            self.log.note(f"cannot start: {error}", wall)
            self.machine.start_failed(error, now, wall)
            self._save_after_exit()
            return
        finally:
            for fd in join:
                os.close(fd)
        self._child, self._running = child, plan
        self._tail.clear()
        self.machine.started(child.pid, now, wall)
        self.state.restarts = self.machine.restarts
        self.state.instance = replace(
            instance, pid=child.pid, start_ticks=child.start_ticks, started_at=wall
        )
        with contextlib.suppress(OSError):
            save_state(self.ctx.data_dir, self.state)
        loop = asyncio.get_running_loop()
        output = child.output
        if output is not None:
            loop.add_reader(output.fileno(), self._on_output, child)
        child.watch(loop, lambda: self._on_exit(child))
        self.log.note(f"started pid {child.pid} (revision {plan.revision})", wall)
        log.info("App %s: started pid %d (revision %d)", self.name, child.pid, plan.revision)

    def _on_output(self, child: Child) -> None:
        output = child.output
        if output is None:
            return
        try:
            data = os.read(output.fileno(), READ_CHUNK)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:
            asyncio.get_running_loop().remove_reader(output.fileno())
            return
        self._keep_tail(data)
        self.log.write(data)

    def _keep_tail(self, data: bytes) -> None:
        self._tail += data[-OUTPUT_TAIL_BYTES:]
        del self._tail[:-OUTPUT_TAIL_BYTES]

    def _drain(self, child: Child) -> None:
        output = child.output
        if output is None:
            return
        loop = asyncio.get_running_loop()
        loop.remove_reader(output.fileno())
        for _ in range(64):  # bounded: what is in the pipe now
            try:
                data = os.read(output.fileno(), READ_CHUNK)
            except OSError:
                break
            if not data:
                break
            self._keep_tail(data)
            self.log.write(data)
        output.close()

    def _on_exit(self, child: Child) -> None:
        """The main process exited (not yet reaped): kill what it left, read its exit."""
        self.machine.process_gone()
        child.signal_group(signal.SIGKILL)
        running = self._running
        if self.cgroup is not None and running is not None and self._applied(running).cgroup:
            self.cgroup.signal(signal.SIGKILL)
        self._spawn(self._finish(child), "finish")
        self._wake.set()

    async def _finish(self, child: Child) -> None:
        plan = self._running or self.plan
        spec = plan.spec
        returncode = child.reap()
        self._drain(child)
        wall = self.ctx.wall()
        oom, hint, start_error = False, "", ""
        applied = self._applied(plan)
        engine = self.ctx.engine
        if spec is not None and spec.runtime == "container" and engine is not None:
            found = await container.inspect_exit(engine, self._container_name)
            if found is not None:
                returncode, oom = found
            await container.remove(engine, self._container_name)
            if returncode in container.ENGINE_ERROR_CODES and not found:
                lines = bytes(self._tail).decode(errors="replace").strip().splitlines()
                start_error = "the container engine could not run it" + (
                    f": {lines[-1]}" if lines else ""
                )
        elif applied.cgroup and self.cgroup is not None:
            oom = self._oom_happened(returncode)
            await self._wait_cgroup_empty()
        else:
            await self._kill_strays()
            if applied.address_space is not None:
                hint = memory_hint(returncode, bytes(self._tail), applied.address_space)
        if start_error:
            info = ExitInfo(None, None, wall, start_error=start_error)
        else:
            info = ExitInfo.from_returncode(returncode, wall, oom=oom, memory_hint=hint)
        self._child = None
        self.log.note(info.describe(), wall)
        log.info("App %s: %s", self.name, info.describe())
        self.machine.exited(info, self.ctx.clock())
        self._save_after_exit()
        self._wake.set()

    def _oom_happened(self, returncode: int) -> bool:
        assert self.cgroup is not None
        after = self.cgroup.oom_kills()
        if after is not None and self._oom_base is not None:
            return after > self._oom_base
        failcnt = self.cgroup.failcnt()
        return (
            returncode == -signal.SIGKILL
            and failcnt is not None
            and self._failcnt_base is not None
            and failcnt > self._failcnt_base
        )

    async def _wait_cgroup_empty(self) -> None:
        from edgenode.apps.process import GONE_POLL_SECONDS, KILL_WAIT_SECONDS

        assert self.cgroup is not None
        deadline = time.monotonic() + KILL_WAIT_SECONDS
        while self.cgroup.pids() and time.monotonic() < deadline:
            self.cgroup.signal(signal.SIGKILL)
            await asyncio.sleep(GONE_POLL_SECONDS)

    async def _kill_strays(self) -> None:
        """Without a cgroup: processes of the instance that left its process group
        (``setsid``, daemonizing) still carry its token; they go with it."""
        instance = self.state.instance
        if instance is None:
            return
        by_token = replace(instance, pid=0)
        stray = leftovers(by_token)
        if stray:
            log.warning(
                "App %s: killing %d process(es) it left outside its process group",
                self.name,
                len(stray),
            )
            await stop_leftovers(lambda: leftovers(by_token), signal.SIGKILL, 0.0)

    def _save_after_exit(self) -> None:
        self.state.instance = None
        self.state.restarts = self.machine.restarts
        if self.machine.last_exit is not None:
            self.state.last_exit = self.machine.last_exit.to_json()
        with contextlib.suppress(OSError):
            save_state(self.ctx.data_dir, self.state)

    def _signal(self, kill: bool) -> None:
        child, plan = self._child, self._running
        if child is None or plan is None or plan.spec is None:
            return
        spec = plan.spec
        signum = signal.SIGKILL if kill else spec.stop_signal
        if spec.runtime == "container" and self.ctx.engine is not None:
            self._spawn(self._signal_container(child, self.ctx.engine, signum), "signal")
            return
        child.signal_group(signum)
        if self.cgroup is not None and self._applied(plan).cgroup:
            self.cgroup.signal(signum)

    async def _signal_container(self, child: Child, engine: Engine, signum: int) -> None:
        await container.kill(engine, self._container_name, signum)
        if signum == signal.SIGKILL:
            child.signal_group(signal.SIGKILL)

    # --- Health and good revisions ----------------------------------------------------------

    async def _probe(self, instance: int) -> None:
        plan = self._running
        check = plan.spec.health if plan is not None and plan.spec is not None else None
        if plan is None or check is None:
            return
        spec = plan.spec
        assert spec is not None
        if check.kind == "exec":
            engine = self.ctx.engine
            if spec.runtime == "container" and engine is not None:
                argv = container.exec_argv(engine, self._container_name, check.exec)
                env = dict(os.environ)
            else:
                argv = list(check.exec)
                token = self.state.instance.token if self.state.instance else ""
                env = self._env(plan, token, str(self.work))
            ok, detail = await probe_exec(argv, self.work, env, check.timeout)
        elif check.kind == "http":
            ok, detail = await probe_http(check.url, check.timeout)
        else:
            ok, detail = await probe_tcp(check.port, check.timeout)
        self.machine.probe_done(instance, ok, detail, self.ctx.clock())
        self._wake.set()

    def _mark_good(self) -> None:
        plan = self._running
        if plan is None or plan.spec is None:
            return
        self.state.good = {
            "revision": plan.revision,
            "run_key": plan.run_key,
            "body": dict(plan.spec.body),
            "digests": sorted(plan.digests),
            "at": round(self.ctx.wall(), 3),
        }
        with contextlib.suppress(OSError):
            save_state(self.ctx.data_dir, self.state)
        self.ctx.on_good()

    # --- Status ----------------------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        """The ``app-status`` record body (docs/apps.md, "Status")."""
        machine = self.machine
        plan = self._running if machine.active and self._running is not None else self.plan
        spec = plan.spec
        applied = self._applied(plan)
        runtime = spec.runtime if spec is not None else "process"
        engine = self.ctx.engine.describe() if runtime == "container" and self.ctx.engine else None
        download = machine.download
        return {
            "app": self.name,
            "revision": plan.revision,
            "generation": self.plan.generation,
            "phase": machine.phase,
            "ready": machine.ready,
            "restarts": machine.restarts,
            "reason": machine.reason,
            "message": machine.message,
            "pid": machine.pid,
            "startedAt": round(machine.started_at, 3)
            if machine.pid is not None and machine.started_at is not None
            else None,
            "lastExit": machine.last_exit.to_json() if machine.last_exit else self.state.last_exit,
            "download": {"done": download[0], "total": download[1]} if download else None,
            "limits": applied.via,
            "unenforced": list(applied.unenforced),
            "runtime": runtime,
            "engine": engine,
        }

    def _report(self) -> None:
        status = self.status()
        now = self.ctx.clock()
        # Since when it has been ready without a break (the hub's minReadySeconds).
        if status["ready"]:
            if self._ready_since is None or self._ready_revision != status["revision"]:
                self._ready_since = round(self.ctx.wall(), 3)
                self._ready_revision = status["revision"]
        else:
            self._ready_since = None
        status["readySince"] = self._ready_since
        if self.rollout is not None:
            status.update(self.rollout)
        if status == self._sent:
            self._report_due = None
            return
        if (
            self._sent is not None
            and status["phase"] == DOWNLOADING == self._sent["phase"]
            and now - self._sent_at < DOWNLOAD_REPORT_SECONDS
        ):
            self._report_due = self._sent_at + DOWNLOAD_REPORT_SECONDS
            return
        body = json.dumps(status, separators=(",", ":"), ensure_ascii=False).encode()
        key = f"{STATUS_RECORD}/{self.name}"
        record = OutRecord(STATUS_RECORD, body, STATUS_PRIORITY, None, key)
        try:
            seqs = self.ctx.host.commit([], [record])
        except Exception as exc:  # the store (a full disk): tried again later
            log.error("App %s: cannot queue its status: %s", self.name, exc)
            self._report_due = now + REPORT_RETRY_SECONDS
            return
        if not seqs or seqs[0] is None:
            # Refused by the outbox's quota (full of more urgent records, as after weeks
            # offline): offered again later, or the hub would never learn this status
            # (a status is written only when it changes). Counted by the store.
            if self._refused_at is None:
                log.warning(
                    "App %s: the outbox refused its status (full); trying again every %g s",
                    self.name,
                    REPORT_RETRY_SECONDS,
                )
            self._refused_at = now
            self._report_due = now + REPORT_RETRY_SECONDS
            return
        self._refused_at = None
        self._sent, self._sent_at, self._report_due = status, now, None
        self.ctx.on_status(self.name, status)

    # --- The end ---------------------------------------------------------------------------

    async def _close(self) -> None:
        tasks = [t for t in (self._prepare_task, *self._tasks) if t is not None and not t.done()]
        for task in tasks:
            if task.get_name().endswith("-finish"):
                continue  # reading an exit: let it end
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        if self._child is not None:  # cancelled with an instance (the service's bound)
            self._child.signal_group(signal.SIGKILL)
        self.ctx.logs.remove(self.name)
        self.log.close()
        cgroup_gone = self.cgroup.remove() if self.cgroup is not None else True
        if self.ctx.cgroups is not None:
            remove_parents(self.ctx.cgroups)  # only if no other App's cgroup is left
        if self.removing and self.machine.ended:
            with contextlib.suppress(OSError):
                remove_tree(self.work)
            with contextlib.suppress(OSError):
                remove_tree(self.files)
            if not cgroup_gone:
                log.warning("App %s: its cgroup could not be removed", self.name)
            self.ctx.on_status(self.name, None)

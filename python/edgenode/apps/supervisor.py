"""One App's life cycle as a state machine: what to do next, and the App's status.

Sans-I/O: the caller (``runner.py``) reports what happened (``prepared``, ``started``,
``exited``, ``probe_done``, commands ``rerun`` and ``stop``) with the monotonic time, and
asks :meth:`Supervisor.poll` what to do now (:class:`Action`) and :meth:`deadline` when to
ask again. Every decision — restart or not, back-off, crash loop, health, phase — is here
and unit-tested with time passed in.

Restart rules:

- ``Always``: every exit is followed by a restart; ``OnFailure``: only an exit with a code
  other than 0, by a signal, or a failing health check; ``Never``: none (the App ends
  ``Stopped`` after code 0, else ``Failed``).
- The delay before a restart doubles with each run in a row that ended within
  STABLE_RUN_SECONDS of its start: RESTART_DELAY_INITIAL, 2x, 4x, ... capped at
  RESTART_DELAY_MAX (1, 2, 4, 8, ... 256, 300 s). A run that lasted STABLE_RUN_SECONDS
  starts the count again.
- From the CRASH_LOOP_AFTER-th short run in a row, the phase while waiting is
  ``CrashLoopBackOff`` (before that ``Pending``, the reason saying why it ended).
- ``restarts`` counts instances started after an exit or a failed health check (not the
  restarts for a new revision or a changed Config, nor those of the node daemon itself).
- What runs changing (a new revision, a changed Config it reads) stops the instance
  (``stopSignal``, SIGKILL after the grace period) and starts the new one at once, with
  the back-off count cleared.
- A preparation that failed (an artifact the hub cannot send, no room in the cache, a
  full disk) is retried with the same back-off, the phase ``Failed`` meanwhile; a digest
  mismatch, an invalid spec, a missing container engine or disabled Apps are not
  retried: they need a change (a new revision, the configuration) or a daemon restart.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Final

from edgenode.apps.health import HealthTracker
from edgenode.apps.process import describe_returncode, signal_name
from edgenode.apps.spec import HealthCheck

# --- Phases ----------------------------------------------------------------------------------

PENDING: Final = "Pending"
DOWNLOADING: Final = "Downloading"
RUNNING: Final = "Running"
FAILED: Final = "Failed"
CRASH_LOOP: Final = "CrashLoopBackOff"
STOPPED: Final = "Stopped"
PHASES: Final = (PENDING, DOWNLOADING, RUNNING, FAILED, CRASH_LOOP, STOPPED)

# --- Reasons (the status field ``reason``; docs/troubleshooting.md has one entry each) ---

CONFIG_MISSING: Final = "ConfigMissing"
INVALID_SPEC: Final = "InvalidSpec"
APPS_DISABLED: Final = "AppsDisabled"
NO_CONTAINER_ENGINE: Final = "NoContainerEngine"
ARTIFACT_UNAVAILABLE: Final = "ArtifactUnavailable"
DIGEST_MISMATCH: Final = "DigestMismatch"
ARTIFACT_QUOTA: Final = "ArtifactQuota"
PREPARE_FAILED: Final = "PrepareFailed"
START_FAILED: Final = "StartFailed"
ERROR: Final = "Error"
COMPLETED: Final = "Completed"
OOM_KILLED: Final = "OOMKilled"
MEMORY_LIMIT: Final = "MemoryLimit"
UNHEALTHY: Final = "Unhealthy"
NODE_STOPPED: Final = "NodeStopped"
REMOVED: Final = "Removed"

# --- Timing ----------------------------------------------------------------------------------

RESTART_DELAY_INITIAL: Final = 1.0
RESTART_DELAY_FACTOR: Final = 2.0
RESTART_DELAY_MAX: Final = 300.0
STABLE_RUN_SECONDS: Final = 60.0
"""A run this long is not a crash: the back-off starts again from RESTART_DELAY_INITIAL.
Also how long an instance must be ready before its revision counts as good (kept for a
later rollback)."""
CRASH_LOOP_AFTER: Final = 3


@dataclass(frozen=True)
class Timing:
    """The back-off numbers (tests shrink them)."""

    restart_initial: float = RESTART_DELAY_INITIAL
    restart_max: float = RESTART_DELAY_MAX
    stable_run: float = STABLE_RUN_SECONDS
    crash_loop_after: int = CRASH_LOOP_AFTER

    def delay(self, failures: int) -> float:
        """The wait before restart number ``failures`` of a series (1-based)."""
        exponent = min(max(failures - 1, 0), 64)
        return min(self.restart_max, self.restart_initial * RESTART_DELAY_FACTOR**exponent)


class Action(enum.Enum):
    PREPARE = "prepare"
    """Start preparing (Configs, artifacts, work dir); report with ``preparing``,
    ``waiting``, ``prepare_failed`` or ``prepared``."""
    CANCEL_PREPARE = "cancel-prepare"
    START = "start"
    """Start the instance now; report ``started`` or ``start_failed``."""
    SIGNAL = "signal"
    """Send the stop signal to the instance."""
    KILL = "kill"
    """SIGKILL the instance (the grace period is over)."""
    PROBE = "probe"
    """Run one health probe; report ``probe_done``."""
    GOOD = "good"
    """The running revision counts as good (ready for STABLE_RUN_SECONDS)."""


class Stage(enum.Enum):
    PREPARE = "prepare"
    PREPARING = "preparing"
    WAITING = "waiting"
    START = "start"
    STARTING = "starting"
    RUNNING = "running"
    STOPPING = "stopping"
    EXITING = "exiting"
    BACKOFF = "backoff"
    DONE = "done"


@dataclass(frozen=True)
class ExitInfo:
    """How an instance ended."""

    code: int | None
    """Exit code; None when killed by a signal or never started."""
    signal: int | None
    at: float
    """Wall clock, for people."""
    oom: bool = False
    """The kernel's OOM killer killed it under its cgroup memory limit (or the engine says
    so)."""
    memory_hint: str = ""
    """Under an rlimit: why a memory-limit death is likely (an honest guess, not a fact)."""
    start_error: str = ""
    """It could not be started at all (the error)."""

    @classmethod
    def from_returncode(
        cls, returncode: int, at: float, *, oom: bool = False, memory_hint: str = ""
    ) -> ExitInfo:
        """From a Popen return code (negative: killed by that signal)."""
        if returncode < 0:
            return cls(None, -returncode, at, oom=oom, memory_hint=memory_hint)
        return cls(returncode, None, at, oom=oom, memory_hint=memory_hint)

    @property
    def failed(self) -> bool:
        return self.code != 0

    @property
    def reason(self) -> str:
        if self.start_error:
            return START_FAILED
        if self.oom:
            return OOM_KILLED
        if self.memory_hint:
            return MEMORY_LIMIT
        return COMPLETED if self.code == 0 else ERROR

    def describe(self) -> str:
        if self.start_error:
            return f"cannot start: {self.start_error}"
        text = describe_returncode(self.code if self.code is not None else -(self.signal or 0))
        if self.oom:
            return f"{text}: out of memory under its memory limit (OOM-killed)"
        if self.memory_hint:
            return f"{text}: {self.memory_hint}"
        return text

    def to_json(self) -> dict[str, object]:
        return {
            "code": self.code,
            "signal": signal_name(self.signal) if self.signal else None,
            "at": round(self.at, 3),
            "reason": self.reason,
        }


class _Cause(enum.Enum):
    RERUN = "rerun"
    UNHEALTHY = "unhealthy"
    FINAL = "final"


@dataclass(frozen=True)
class _Final:
    phase: str
    reason: str
    message: str
    terminal: bool


class Supervisor:
    """The life cycle of one App on this node."""

    def __init__(
        self,
        policy: str,
        health: HealthCheck | None,
        grace: float,
        timing: Timing = Timing(),
        *,
        restarts: int = 0,
    ) -> None:
        self.policy = policy
        self.health = health
        self.grace = grace
        self.timing = timing
        self.stage = Stage.PREPARE
        # Status.
        self.phase = PENDING
        self.reason = ""
        self.message = ""
        self.ready = False
        self.restarts = restarts
        self.pid: int | None = None
        self.started_at: float | None = None
        self.last_exit: ExitInfo | None = None
        self.download: tuple[int, int] | None = None
        self.instance = 0
        """Counts started instances (probe results of an older one are ignored)."""
        self.ended = False
        """A terminal stop (removed, node stopping) is complete."""
        # Internals.
        self._started = 0.0
        self._fast_exits = 0
        self._prepare_failures = 0
        self._wake_at = 0.0
        self._restart_pending = False
        self._tracker: HealthTracker | None = None
        self._good_at: float | None = None
        self._cause: _Cause | None = None
        self._final: _Final | None = None
        self._signalled = False
        self._killed = False
        self._kill_at = 0.0
        self._cancel_prepare = False
        self._unhealthy: tuple[int, str] = (0, "")

    # --- Asking what to do --------------------------------------------------------------

    def poll(self, now: float) -> list[Action]:
        """What to do now (each action is returned once)."""
        actions: list[Action] = []
        if self._cancel_prepare:
            self._cancel_prepare = False
            actions.append(Action.CANCEL_PREPARE)
        if self.stage is Stage.BACKOFF and now >= self._wake_at:
            self.stage = Stage.PREPARE
        if self.stage is Stage.PREPARE:
            self.stage = Stage.PREPARING
            actions.append(Action.PREPARE)
        elif self.stage is Stage.START:
            self.stage = Stage.STARTING
            actions.append(Action.START)
        elif self.stage is Stage.RUNNING:
            if self._tracker is not None and self._tracker.due(now):
                self._tracker.start(now)
                actions.append(Action.PROBE)
            if self._good_at is not None and now >= self._good_at:
                self._good_at = None
                actions.append(Action.GOOD)
        elif self.stage is Stage.STOPPING:
            if not self._signalled:
                self._signalled = True
                self._kill_at = now + self.grace
                actions.append(Action.SIGNAL)
            if not self._killed and now >= self._kill_at:
                self._killed = True
                actions.append(Action.KILL)
        return actions

    def deadline(self, now: float) -> float | None:
        """When :meth:`poll` has something to do next without any event (None: only an
        event can change anything)."""
        if self._cancel_prepare or self.stage in (Stage.PREPARE, Stage.START):
            return now
        if self.stage is Stage.BACKOFF:
            return self._wake_at
        if self.stage is Stage.STOPPING:
            if not self._signalled:
                return now
            return None if self._killed else self._kill_at
        if self.stage is Stage.RUNNING:
            times = [t for t in (self._good_at,) if t is not None]
            if self._tracker is not None and (due := self._tracker.deadline()) is not None:
                times.append(due)
            return min(times) if times else None
        return None

    @property
    def active(self) -> bool:
        """An instance exists (started and not yet reaped)."""
        return self.stage in (Stage.RUNNING, Stage.STOPPING, Stage.EXITING)

    # --- Configuration ------------------------------------------------------------------

    def configure(self, policy: str, health: HealthCheck | None, grace: float, now: float) -> None:
        """Settings that apply to the running revision (no restart)."""
        self.policy = policy
        self.grace = grace
        if health == self.health:
            return
        self.health = health
        if self.stage is Stage.RUNNING:
            self._tracker = HealthTracker(health, now) if health is not None else None
            self.ready = health is None
            self._good_at = now + self.timing.stable_run if self.ready else None

    # --- Preparation --------------------------------------------------------------------

    def preparing(self, phase: str, message: str, download: tuple[int, int] | None = None) -> None:
        if self.stage is not Stage.PREPARING:
            return
        self.phase, self.reason, self.message, self.download = phase, "", message, download

    def waiting(self, reason: str, message: str) -> None:
        """Something it needs is not on the node (a Config): Pending until ``rerun``."""
        if self.stage is not Stage.PREPARING:
            return
        self.stage = Stage.WAITING
        self.phase, self.reason, self.message, self.download = PENDING, reason, message, None

    def prepare_failed(self, reason: str, message: str, now: float, *, retry: bool) -> None:
        if self.stage is not Stage.PREPARING:
            return
        self.phase, self.reason, self.download = FAILED, reason, None
        if not retry:
            self.stage = Stage.DONE
            self.message = message
            return
        self._prepare_failures += 1
        delay = self.timing.delay(self._prepare_failures)
        self.stage = Stage.BACKOFF
        self._wake_at = now + delay
        self.message = f"{message} (trying again in {delay:g} s)"

    def prepared(self) -> None:
        if self.stage is not Stage.PREPARING:
            return
        self.stage = Stage.START
        self._prepare_failures = 0
        self.download = None

    # --- The instance -------------------------------------------------------------------

    def _count_restart(self) -> None:
        if self._restart_pending:
            self._restart_pending = False
            self.restarts += 1

    def started(self, pid: int, now: float, wall: float) -> None:
        self._count_restart()
        self.instance += 1
        self.stage = Stage.RUNNING
        self.phase, self.reason, self.message = RUNNING, "", ""
        self.pid, self.started_at, self._started = pid, wall, now
        self._tracker = HealthTracker(self.health, now) if self.health is not None else None
        self.ready = self.health is None
        self._good_at = now + self.timing.stable_run if self.ready else None

    def start_failed(self, error: str, now: float, wall: float) -> None:
        """The command could not be started: handled as a run that ended at once."""
        self._count_restart()
        self.instance += 1
        self._started = now
        self.stage = Stage.EXITING
        self.exited(ExitInfo(None, None, wall, start_error=error), now)

    def process_gone(self) -> None:
        """The instance's main process ended; its exit is being read (``exited`` follows)."""
        if self.stage in (Stage.RUNNING, Stage.STOPPING):
            self.stage = Stage.EXITING
            self._tracker = None

    def exited(self, info: ExitInfo, now: float) -> None:
        if self.stage not in (Stage.RUNNING, Stage.STOPPING, Stage.EXITING):
            return
        ran = now - self._started
        failures, unhealthy_detail = self._unhealthy
        cause, final = self._cause, self._final
        self._cause, self._final = None, None
        self._signalled = self._killed = False
        self.pid, self.ready, self.last_exit = None, False, info
        self._tracker, self._good_at = None, None
        if cause is _Cause.FINAL and final is not None:
            self._finish(final)
            return
        if cause is _Cause.RERUN:
            self.stage = Stage.PREPARE
            self._fast_exits = 0
            self.phase, self.reason = PENDING, ""
            return
        unhealthy = cause is _Cause.UNHEALTHY
        failure = unhealthy or info.failed
        if unhealthy:
            reason = UNHEALTHY
            message = f"health check failed {failures} times in a row"
            if unhealthy_detail:
                message += f": {unhealthy_detail}"
        else:
            reason, message = info.reason, info.describe()
        restart = self.policy == "Always" or (self.policy == "OnFailure" and failure)
        self.reason = reason
        if not restart:
            self.stage = Stage.DONE
            self.phase = FAILED if failure else STOPPED
            self.message = message
            return
        if ran >= self.timing.stable_run:
            self._fast_exits = 0
        self._fast_exits += 1
        delay = self.timing.delay(self._fast_exits)
        self.stage = Stage.BACKOFF
        self._wake_at = now + delay
        self._restart_pending = True
        crash_loop = self._fast_exits >= self.timing.crash_loop_after
        self.phase = CRASH_LOOP if crash_loop else PENDING
        self.message = f"{message}; restarting in {delay:g} s"

    def probe_done(self, instance: int, ok: bool, detail: str, now: float) -> None:
        if instance != self.instance or self.stage is not Stage.RUNNING:
            return
        if self._tracker is None:
            return
        verdict = self._tracker.record(ok, detail)
        self.ready = verdict.ready
        if verdict.changed:
            self._good_at = now + self.timing.stable_run if verdict.ready else None
        self.message = "" if ok else f"health check failed: {detail}"
        if verdict.unhealthy:
            self._unhealthy = (self._tracker.failures, self._tracker.last_detail)
            self._begin_stop(_Cause.UNHEALTHY, "stopping: health check failed")

    # --- Commands -----------------------------------------------------------------------

    def rerun(self, why: str, *, new_revision: bool) -> None:
        """What the App runs changed: stop the instance if any, then start the new one at
        once (a new revision also starts ``restarts`` from 0)."""
        if self.ended or (self._final is not None and self._final.terminal):
            return
        if new_revision:
            self.restarts = 0
        self._fast_exits = 0
        self._prepare_failures = 0
        self._restart_pending = False
        if self.stage is Stage.RUNNING:
            self._begin_stop(_Cause.RERUN, f"stopping: {why}")
        elif self.stage in (Stage.STOPPING, Stage.EXITING):
            self._cause, self._final = _Cause.RERUN, None
        else:
            if self.stage is Stage.PREPARING:
                self._cancel_prepare = True
            self.stage = Stage.PREPARE
            self.phase, self.reason, self.message, self.download = PENDING, "", why, None

    def stop(self, phase: str, reason: str, message: str, *, terminal: bool) -> None:
        """Stop for good (``terminal``: the App is removed or the node stops; ``ended``
        once nothing runs) or until ``rerun`` (an invalid spec, disabled Apps)."""
        if self.ended:
            return
        final = _Final(phase, reason, message, terminal)
        if self.stage is Stage.RUNNING:
            self._begin_stop(_Cause.FINAL, f"stopping: {message}")
            self._final = final
        elif self.stage in (Stage.STOPPING, Stage.EXITING):
            if self._final is None or not self._final.terminal:
                self._cause, self._final = _Cause.FINAL, final
        else:
            if self.stage is Stage.PREPARING:
                self._cancel_prepare = True
            self._finish(final)

    def _begin_stop(self, cause: _Cause, message: str) -> None:
        self.stage = Stage.STOPPING
        self._cause = cause
        self._signalled = self._killed = False
        self.ready = False
        self._tracker = None
        self._good_at = None
        self.message = message

    def _finish(self, final: _Final) -> None:
        self.stage = Stage.DONE
        self.phase, self.reason, self.message = final.phase, final.reason, final.message
        self.ready, self.pid, self.download = False, None, None
        self._restart_pending = False
        self.ended = final.terminal

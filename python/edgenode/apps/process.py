"""Starting, watching and stopping an App's processes (Linux: ``/proc``, pidfd).

An App's command runs as the leader of its own session and process group (``setsid``),
with stdin from ``/dev/null`` and stdout and stderr on ONE pipe the daemon reads (so
their order is kept). Signals go to the whole group. The daemon learns that the leader
exited from a pidfd (no thread, no SIGCHLD handler, no polling) and kills what the
leader left behind in its group *before* reaping it: while the zombie is not reaped its
pid cannot be reused, so the group id still names this App's group and nobody else's.

**Identity.** What a new daemon may kill after a ``kill -9`` of the old one must be this
App's and nothing else: an :class:`Instance` records the boot id, the leader's pid and
start time (``/proc/PID/stat`` field 22, clock ticks since boot) and a random token
placed in the App's environment (``EDGENODE_APP_INSTANCE``), which every descendant
inherits. :func:`leftovers` finds the processes of a recorded instance: same boot, and
either the leader itself (pid AND start time equal: a reused pid never matches) or a
process whose environment holds the token.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Final

INSTANCE_ENV: Final = "EDGENODE_APP_INSTANCE"
"""The environment variable carrying an instance's token (its identity for leftovers)."""
READ_CHUNK: Final = 64 * 1024
"""Bytes read from an App's output pipe per wake-up."""
EXIT_POLL_SECONDS: Final = 0.5
"""Where ``pidfd_open`` is missing (Linux < 5.3), how often an exit is looked for."""
GONE_POLL_SECONDS: Final = 0.1
"""How often :func:`stop_leftovers` looks whether leftovers are gone."""
KILL_WAIT_SECONDS: Final = 10.0
"""After SIGKILL, how long to wait for a process to disappear (one in uninterruptible
sleep on a dead NFS mount may take longer: then it is logged and left)."""
MAX_COMMAND_OUTPUT: Final = 64 * 1024
"""Output kept from a helper command (health check, container engine call)."""


# --- /proc --------------------------------------------------------------------------------


def boot_id() -> str:
    """This boot's id (``/proc/sys/kernel/random/boot_id``; empty where unreadable)."""
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return ""


@dataclass(frozen=True)
class ProcStat:
    """What ``/proc/PID/stat`` says about a process."""

    pid: int
    state: str
    pgid: int
    sid: int
    start_ticks: int


def proc_stat(pid: int) -> ProcStat | None:
    """``/proc/PID/stat`` parsed; None when the process does not exist."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_bytes()
    except OSError:
        return None
    # The command name (field 2) is in parentheses and may hold spaces and ')'.
    close = raw.rfind(b")")
    fields = raw[close + 2 :].split()
    try:
        return ProcStat(pid, fields[0].decode(), int(fields[2]), int(fields[3]), int(fields[19]))
    except (IndexError, ValueError):
        return None


def alive(pid: int) -> bool:
    """The process exists and is not a zombie."""
    stat = proc_stat(pid)
    return stat is not None and stat.state not in ("Z", "X")


def _environ_has(pid: int, marker: bytes) -> bool:
    try:
        environ = Path(f"/proc/{pid}/environ").read_bytes()
    except OSError:
        return False
    return environ.startswith(marker[1:]) or marker in environ


def all_pids() -> list[int]:
    try:
        return [int(name) for name in os.listdir("/proc") if name.isdigit()]
    except OSError:
        return []


@dataclass(frozen=True)
class Instance:
    """One started instance of an App, as recorded in its state file."""

    token: str
    boot: str
    pid: int = 0
    """0: recorded before the process was started (the token still identifies it)."""
    start_ticks: int = 0
    started_at: float = 0.0
    """Wall clock, for people."""
    container: str = ""
    """The container's name when the App runs in a container."""

    def to_json(self) -> dict[str, object]:
        return {
            "token": self.token,
            "boot": self.boot,
            "pid": self.pid,
            "start_ticks": self.start_ticks,
            "started_at": self.started_at,
            "container": self.container,
        }

    @classmethod
    def from_json(cls, data: object) -> Instance | None:
        if not isinstance(data, dict):
            return None
        try:
            return cls(
                token=str(data["token"]),
                boot=str(data["boot"]),
                pid=int(data.get("pid", 0)),
                start_ticks=int(data.get("start_ticks", 0)),
                started_at=float(data.get("started_at", 0.0)),
                container=str(data.get("container", "")),
            )
        except (KeyError, TypeError, ValueError):
            return None


def leftovers(instance: Instance, extra: Iterable[int] = (), *, me: int | None = None) -> set[int]:
    """Live processes of a recorded ``instance`` (see the module's doc), plus ``extra``
    (the members of its cgroup, whose membership is its identity). Nothing from another
    boot: after a reboot, recorded pids mean nothing."""
    found = {pid for pid in extra if alive(pid)}
    if not instance.token or instance.boot != boot_id():
        return found
    marker = f"\0{INSTANCE_ENV}={instance.token}\0".encode()
    self_pid = os.getpid() if me is None else me
    for pid in all_pids():
        if pid == self_pid or pid in found:
            continue
        stat = proc_stat(pid)
        if stat is None or stat.state in ("Z", "X"):
            continue
        if (pid == instance.pid and stat.start_ticks == instance.start_ticks) or _environ_has(
            pid, marker
        ):
            found.add(pid)
    return found


def signal_pids(pids: Iterable[int], signum: int) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signum)


async def stop_leftovers(find: Callable[[], set[int]], stop_signal: int, grace: float) -> set[int]:
    """Stop what ``find()`` returns: ``stop_signal``, up to ``grace`` seconds, SIGKILL, up
    to KILL_WAIT_SECONDS; what is still there at the end (normally nothing)."""
    import asyncio

    pids = find()
    if not pids:
        return set()
    signal_pids(pids, stop_signal)
    deadline = time.monotonic() + grace
    while (pids := find()) and time.monotonic() < deadline:
        await asyncio.sleep(GONE_POLL_SECONDS)
    deadline = time.monotonic() + KILL_WAIT_SECONDS
    while pids and time.monotonic() < deadline:
        signal_pids(pids, signal.SIGKILL)
        await asyncio.sleep(GONE_POLL_SECONDS)
        pids = find()
    return pids


# --- Starting -----------------------------------------------------------------------------


@dataclass
class Launch:
    """How to start one process."""

    argv: Sequence[str]
    cwd: Path
    env: Mapping[str, str]
    join: Sequence[int] = ()
    """Open ``cgroup.procs`` files (write-only fds) the child joins before it execs."""
    address_space: int | None = None
    """RLIMIT_AS in bytes for the child (the rlimit fallback for a memory limit)."""
    keep_fds: Sequence[int] = field(default_factory=tuple)


def _preexec(join: Sequence[int], address_space: int | None) -> Callable[[], None] | None:
    """What the child does between fork and exec: join the cgroups, set the rlimit. Kept to
    system calls (no imports, no allocation worth naming): it runs in a forked child."""
    if not join and address_space is None:
        return None
    import resource  # imported in the parent: the child must not import

    def preexec() -> None:
        for fd in join:
            os.write(fd, b"0")  # "0": the writing process itself (cgroup v1 and v2)
        if address_space is not None:
            resource.setrlimit(resource.RLIMIT_AS, (address_space, address_space))

    return preexec


class Child:
    """A started process: its output pipe and its exit, on the event loop."""

    def __init__(self, popen: subprocess.Popen[bytes], stat: ProcStat | None) -> None:
        self.popen = popen
        self.pid = popen.pid
        self.start_ticks = stat.start_ticks if stat else 0
        self.returncode: int | None = None
        self._pidfd: int | None = None

    @property
    def output(self) -> IO[bytes] | None:
        return self.popen.stdout

    def watch(self, loop: object, on_exit: Callable[[], None]) -> None:
        """Call ``on_exit()`` on the loop once the process has exited (not yet reaped)."""
        import asyncio

        assert isinstance(loop, asyncio.AbstractEventLoop)
        try:
            self._pidfd = os.pidfd_open(self.pid)
        except (AttributeError, OSError):
            self._pidfd = None
        if self._pidfd is not None:
            fd = self._pidfd

            def readable() -> None:
                loop.remove_reader(fd)
                on_exit()

            loop.add_reader(fd, readable)
            return

        def poll() -> None:  # pragma: no cover - kernels without pidfd
            if self.exited():
                on_exit()
            else:
                loop.call_later(EXIT_POLL_SECONDS, poll)

        loop.call_later(EXIT_POLL_SECONDS, poll)

    def exited(self) -> bool:
        """Whether the process has exited (zombie or reaped), without reaping it."""
        if self.returncode is not None:
            return True
        try:
            info = os.waitid(os.P_PID, self.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT)
        except ChildProcessError:
            return True
        return info is not None

    def signal_group(self, signum: int) -> None:
        """``signum`` to the whole process group (the leader's pid is its group id; while
        the leader is not reaped no other group can have that id)."""
        if self.returncode is not None:
            return
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.pid, signum)

    def reap(self) -> int:
        """Kill what is left in the group, reap the leader; its return code (negative:
        killed by that signal)."""
        if self.returncode is None:
            self.signal_group(signal.SIGKILL)
            self.returncode = self.popen.wait()
        if self._pidfd is not None:
            with contextlib.suppress(OSError):
                os.close(self._pidfd)
            self._pidfd = None
        return self.returncode


def launch(spec: Launch) -> Child:
    """Start ``spec`` in a new session, output on one pipe; OSError if it cannot start
    (no such command, not executable: the message says which)."""
    try:
        popen = subprocess.Popen(
            list(spec.argv),
            cwd=spec.cwd,
            env=dict(spec.env),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            close_fds=True,
            pass_fds=tuple(spec.keep_fds),
            preexec_fn=_preexec(spec.join, spec.address_space),
        )
    except subprocess.SubprocessError as exc:  # the preexec step failed (cgroup, rlimit)
        raise OSError(f"cannot set up the process: {exc}") from None
    if popen.stdout is not None:
        os.set_blocking(popen.stdout.fileno(), False)
    return Child(popen, proc_stat(popen.pid))


def describe_returncode(code: int) -> str:
    """``exited with code 1`` / ``killed by signal SIGKILL``."""
    if code < 0:
        return f"killed by signal {signal_name(-code)}"
    return f"exited with code {code}"


def signal_name(signum: int) -> str:
    try:
        return signal.Signals(signum).name
    except ValueError:
        return f"signal {signum}"


# --- Helper commands ----------------------------------------------------------------------


@dataclass(frozen=True)
class CommandResult:
    code: int | None
    """None: it timed out (and was killed) or could not start."""
    output: bytes
    error: str = ""
    """Why it could not start or did not finish."""


async def run_command(
    argv: Sequence[str],
    *,
    timeout: float,
    cwd: Path | None = None,
    env: Mapping[str, str] | None = None,
) -> CommandResult:
    """Run a short command (health check, container engine call) in its own process
    group, output bounded to MAX_COMMAND_OUTPUT; killed with its group after ``timeout``."""
    import asyncio

    loop = asyncio.get_running_loop()
    try:
        child = launch(Launch(argv, cwd or Path("/"), env if env is not None else dict(os.environ)))
    except OSError as exc:
        return CommandResult(None, b"", f"cannot run {argv[0]}: {exc.strerror or exc}")
    done = loop.create_future()

    def exited() -> None:
        if not done.done():
            done.set_result(None)

    child.watch(loop, exited)
    output = bytearray()
    stream = child.output
    assert stream is not None
    fd = stream.fileno()

    def readable() -> None:
        try:
            data = os.read(fd, READ_CHUNK)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:
            loop.remove_reader(fd)
            return
        if len(output) < MAX_COMMAND_OUTPUT:
            output.extend(data[: MAX_COMMAND_OUTPUT - len(output)])

    loop.add_reader(fd, readable)
    error = ""
    try:
        await asyncio.wait_for(asyncio.shield(done), timeout)
    except TimeoutError:
        error = f"timed out after {timeout:g} s"
        child.signal_group(signal.SIGKILL)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(done), KILL_WAIT_SECONDS)
    finally:
        loop.remove_reader(fd)
        if done.done():
            child.reap()
            readable_rest(fd, output)
        else:  # cancelled, or stuck after SIGKILL: Popen reaps it later
            child.signal_group(signal.SIGKILL)
        stream.close()
    return CommandResult(None if error else child.returncode, bytes(output), error)


def readable_rest(fd: int, output: bytearray) -> None:
    """Read what is left in a non-blocking pipe (up to MAX_COMMAND_OUTPUT in all)."""
    while len(output) < MAX_COMMAND_OUTPUT:
        try:
            data = os.read(fd, READ_CHUNK)
        except OSError:  # BlockingIOError included: nothing more now
            return
        if not data:
            return
        output.extend(data[: MAX_COMMAND_OUTPUT - len(output)])

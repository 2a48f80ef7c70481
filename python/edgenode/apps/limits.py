"""Memory and CPU limits of Apps: cgroups where the node may create them, else rlimits.

Found once when the App service starts (:func:`detect`):

- **cgroup v2** (the unified hierarchy has the ``memory`` controller in the daemon's own
  cgroup, e.g. a systemd unit with ``Delegate=yes``): the daemon enables ``memory`` (and
  ``cpu`` when offered) for its subtree — moving itself into a leaf
  ``edgenode-daemon`` first when its cgroup holds processes (cgroup v2 allows controllers
  only below cgroups without processes, what systemd's delegation expects) — and puts each
  App in ``<own cgroup>/edgenode-apps-<id>/<app>``: ``memory.max``, ``memory.swap.max``
  0, ``memory.oom.group`` 1, ``cpu.max``.
- **cgroup v1** (a writable ``memory`` hierarchy, as on this project's machines): the same
  layout under the daemon's own cgroup in the ``memory`` hierarchy
  (``memory.limit_in_bytes``, ``memory.memsw.limit_in_bytes`` where swap is accounted) and
  in the ``cpu`` hierarchy when it is writable (``cpu.cfs_quota_us``).
- otherwise **rlimit**: ``RLIMIT_AS`` (address space) = ``memoryMax`` for the App's
  process; ``cpuMax`` is then not enforced, and the status says so.

``<id>`` is 8 hex digits of the SHA-256 of data_dir's real path: two daemons on one
machine (tests, several nodes) never share a cgroup. Membership of an App's cgroup is its
processes' identity: everything in it is the App's, whatever became of its process group.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import signal
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

from edgenode.apps.spec import Resources

CGROUP_V2: Final = "cgroup-v2"
CGROUP_V1: Final = "cgroup-v1"
RLIMIT: Final = "rlimit"
ENGINE: Final = "engine"
NONE: Final = "none"
"""Values of the status field ``limits``: how the App's declared limits are enforced
(``none``: it declares none, or nothing here can enforce them: see ``unenforced``)."""

CPU_PERIOD_US: Final = 100_000
MIN_CPU_QUOTA_US: Final = 1_000
"""The kernel's smallest CFS quota: a cpuMax below 0.01 cores is enforced as 0.01."""
APPS_GROUP_PREFIX: Final = "edgenode-apps-"
DAEMON_LEAF: Final = "edgenode-daemon"
MAX_PROCS_READ: Final = 1024 * 1024


def group_id(data_dir: Path) -> str:
    """8 hex digits naming this data_dir's App cgroups."""
    return hashlib.sha256(str(data_dir.resolve()).encode()).hexdigest()[:8]


@dataclass(frozen=True)
class Applied:
    """How one App's declared limits are enforced."""

    via: str
    unenforced: tuple[str, ...] = ()
    address_space: int | None = None
    """RLIMIT_AS for the process (the rlimit fallback)."""
    cgroup: bool = False
    """The App runs in a cgroup of its own (limits or not)."""


def plan_limits(resources: Resources, runtime: str, cgroups: Cgroups | None) -> Applied:
    """Which mechanism enforces ``resources`` for an App of ``runtime`` on this node."""
    declared = resources.memory_max is not None or resources.cpu_max is not None
    if runtime == "container":
        return Applied(ENGINE if declared else NONE)
    if cgroups is not None:
        unenforced = ("cpuMax",) if resources.cpu_max is not None and not cgroups.cpu else ()
        return Applied(cgroups.kind if declared else NONE, unenforced, cgroup=True)
    unenforced = ("cpuMax",) if resources.cpu_max is not None else ()
    if resources.memory_max is not None:
        return Applied(RLIMIT, unenforced, address_space=resources.memory_max)
    return Applied(NONE, unenforced)


# --- Finding the hierarchy ------------------------------------------------------------------


@dataclass(frozen=True)
class Mount:
    root: str
    point: Path
    fstype: str
    options: frozenset[str]


def read_mounts(text: str) -> list[Mount]:
    """cgroup mounts from ``/proc/self/mountinfo``."""
    mounts = []
    for line in text.splitlines():
        left, sep, right = line.partition(" - ")
        if not sep:
            continue
        fields, tail = left.split(), right.split()
        if len(fields) < 5 or len(tail) < 3 or tail[0] not in ("cgroup", "cgroup2"):
            continue
        point = fields[4].replace("\\040", " ")
        mounts.append(Mount(fields[3], Path(point), tail[0], frozenset(tail[2].split(","))))
    return mounts


def read_own(text: str) -> dict[str, str]:
    """``/proc/self/cgroup``: controller (``""`` for v2) → path."""
    own: dict[str, str] = {}
    for line in text.splitlines():
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        for controller in parts[1].split(",") if parts[1] else [""]:
            own[controller] = parts[2]
    return own


def _inside(mount: Mount, path: str) -> Path:
    relative = path
    if mount.root != "/" and (path == mount.root or path.startswith(mount.root + "/")):
        relative = path[len(mount.root) :]
    return mount.point / relative.lstrip("/")


@dataclass(frozen=True)
class Cgroups:
    """Where this daemon may create App cgroups."""

    version: int
    parents: dict[str, Path] = field(default_factory=dict)
    """v1: controller (``memory``, ``cpu``) → the apps folder in that hierarchy; v2:
    ``{"": folder}``."""
    cpu: bool = False
    """Whether cpuMax can be enforced."""
    enable: str = ""
    """v2: the controllers the apps folder enables for its children (``+memory +cpu``)."""

    def ensure(self) -> None:
        """Create the apps folders (before an App's cgroup; they are removed when the
        last App's goes); OSError."""
        for controller, parent in self.parents.items():
            parent.mkdir(exist_ok=True)
            if self.version == 2:
                _write(parent / "cgroup.subtree_control", self.enable)
            elif controller == "memory":
                # Limits count the App's whole subtree (the default on current kernels).
                with contextlib.suppress(OSError):
                    _write(parent / "memory.use_hierarchy", "1")

    @property
    def kind(self) -> str:
        return CGROUP_V2 if self.version == 2 else CGROUP_V1

    def app(self, name: str) -> AppCgroup:
        return AppCgroup(self.version, {c: p / name for c, p in self.parents.items()})


def _write(path: Path, value: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_TRUNC)  # O_TRUNC as a shell does it
    try:
        os.write(fd, value.encode())
    finally:
        os.close(fd)


def _setup_v2(own: Path, group: str) -> Cgroups | None:
    try:
        available = set((own / "cgroup.controllers").read_text().split())
    except OSError:
        return None
    if "memory" not in available:
        return None
    wanted = [c for c in ("memory", "cpu") if c in available]
    enable = " ".join(f"+{c}" for c in wanted)
    try:
        try:
            _write(own / "cgroup.subtree_control", enable)
        except OSError as exc:
            if exc.errno != errno.EBUSY:
                raise
            # Processes in our cgroup (the daemon): move into a leaf, as delegation expects.
            leaf = own / DAEMON_LEAF
            leaf.mkdir(exist_ok=True)
            _write(leaf / "cgroup.procs", str(os.getpid()))
            _write(own / "cgroup.subtree_control", enable)
    except OSError:
        return None
    parent = own / group
    if not _probe(parent):
        return None
    return Cgroups(2, {"": parent}, cpu="cpu" in wanted, enable=enable)


def _probe(parent: Path) -> bool:
    """Whether ``parent`` can be created (it is not left behind: a daemon without Apps,
    or one that is killed, leaves no empty folders)."""
    existed = parent.exists()
    try:
        parent.mkdir(exist_ok=True)
    except OSError:
        return False
    if not existed:
        with contextlib.suppress(OSError):
            parent.rmdir()
    return True


def _setup_v1(mounts: list[Mount], own: dict[str, str], group: str) -> Cgroups | None:
    parents: dict[str, Path] = {}
    for controller in ("memory", "cpu"):
        mount = next((m for m in mounts if m.fstype == "cgroup" and controller in m.options), None)
        if mount is None or controller not in own:
            continue
        parent = _inside(mount, own[controller]) / group
        if _probe(parent):
            parents[controller] = parent
    if "memory" not in parents:
        return None
    return Cgroups(1, parents, cpu="cpu" in parents)


def detect(
    data_dir: Path,
    *,
    mountinfo: Path = Path("/proc/self/mountinfo"),
    self_cgroup: Path = Path("/proc/self/cgroup"),
) -> Cgroups | None:
    """The cgroups this daemon may create for its Apps (v2 preferred), or None: then
    limits fall back to rlimits."""
    try:
        mounts = read_mounts(mountinfo.read_text())
        own = read_own(self_cgroup.read_text())
    except OSError:
        return None
    group = APPS_GROUP_PREFIX + group_id(data_dir)
    unified = next((m for m in mounts if m.fstype == "cgroup2"), None)
    if unified is not None and "" in own:
        found = _setup_v2(_inside(unified, own[""]), group)
        if found is not None:
            return found
    return _setup_v1(mounts, own, group)


# --- One App's cgroup -------------------------------------------------------------------------


class AppCgroup:
    """An App's cgroup (one folder per hierarchy in v1)."""

    def __init__(self, version: int, dirs: dict[str, Path]) -> None:
        self.version = version
        self.dirs = dirs

    @property
    def main(self) -> Path:
        """The folder whose ``cgroup.procs`` lists the App (v1: the memory hierarchy's)."""
        return self.dirs["memory" if self.version == 1 else ""]

    def to_json(self) -> dict[str, object]:
        return {"version": self.version, "dirs": {k: str(v) for k, v in self.dirs.items()}}

    def create(self) -> None:
        for path in self.dirs.values():
            path.mkdir(exist_ok=True)

    def set_limits(self, resources: Resources) -> None:
        """Write the App's limits (clearing those it no longer declares); OSError."""
        memory, cpus = resources.memory_max, resources.cpu_max
        quota = -1 if cpus is None else max(MIN_CPU_QUOTA_US, round(cpus * CPU_PERIOD_US))
        if self.version == 2:
            path = self.dirs[""]
            _write(path / "memory.max", "max" if memory is None else str(memory))
            if (path / "memory.swap.max").exists():
                _write(path / "memory.swap.max", "max" if memory is None else "0")
            if (path / "memory.oom.group").exists():
                _write(path / "memory.oom.group", "1")
            if (path / "cpu.max").exists():
                _write(path / "cpu.max", f"{'max' if quota < 0 else quota} {CPU_PERIOD_US}")
            return
        path = self.dirs["memory"]
        memsw = path / "memory.memsw.limit_in_bytes"
        if memsw.exists():  # memsw >= limit at every step: lift it, set, then lower it
            _write(memsw, "-1")
        _write(path / "memory.limit_in_bytes", "-1" if memory is None else str(memory))
        if memsw.exists() and memory is not None:
            _write(memsw, str(memory))
        if "cpu" in self.dirs:
            _write(self.dirs["cpu"] / "cpu.cfs_period_us", str(CPU_PERIOD_US))
            _write(self.dirs["cpu"] / "cpu.cfs_quota_us", str(quota))

    def open_procs(self) -> list[int]:
        """Write-only fds of each ``cgroup.procs`` (the child writes itself in; close
        them after the start)."""
        fds: list[int] = []
        try:
            for path in self.dirs.values():
                fds.append(os.open(path / "cgroup.procs", os.O_WRONLY | os.O_CLOEXEC))
        except OSError:
            for fd in fds:
                os.close(fd)
            raise
        return fds

    def pids(self) -> set[int]:
        """The processes in the App's cgroup (every hierarchy)."""
        found: set[int] = set()
        for path in self.dirs.values():
            with contextlib.suppress(OSError, ValueError), open(path / "cgroup.procs", "rb") as f:
                found.update(int(x) for x in f.read(MAX_PROCS_READ).split())
        return found

    def signal(self, signum: int) -> None:
        if signum == signal.SIGKILL and self.version == 2 and (self.main / "cgroup.kill").exists():
            with contextlib.suppress(OSError):
                _write(self.main / "cgroup.kill", "1")
                return
        for pid in self.pids():
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signum)

    def oom_kills(self) -> int | None:
        """The kernel's count of OOM kills in this cgroup (None where it has none: v1
        kernels before 4.13 — then :meth:`failcnt` is the hint)."""
        name = "memory.events" if self.version == 2 else "memory.oom_control"
        try:
            text = (self.main / name).read_text()
        except OSError:
            return None
        for line in text.splitlines():
            key, _, value = line.partition(" ")
            if key == "oom_kill":
                with contextlib.suppress(ValueError):
                    return int(value)
        return None

    def failcnt(self) -> int | None:
        """v1: how often the memory limit was hit."""
        if self.version != 1:
            return None
        try:
            return int((self.main / "memory.failcnt").read_text())
        except (OSError, ValueError):
            return None

    def remove(self) -> bool:
        """Remove the folders (they must be empty of processes); whether all went."""
        gone = True
        for path in self.dirs.values():
            try:
                path.rmdir()
            except FileNotFoundError:
                pass
            except OSError:
                gone = False
        return gone


def remove_parents(cgroups: Cgroups) -> None:
    """Remove the apps folders when no App cgroup is left in them (best effort)."""
    for parent in cgroups.parents.values():
        with contextlib.suppress(OSError):
            parent.rmdir()


def app_cgroup_from_json(data: object) -> AppCgroup | None:
    """An App's cgroup as recorded in its state file (:meth:`AppCgroup.to_json`)."""
    if not isinstance(data, dict) or data.get("version") not in (1, 2):
        return None
    dirs = data.get("dirs")
    if not isinstance(dirs, dict) or not all(
        isinstance(k, str) and isinstance(v, str) and v.startswith("/") for k, v in dirs.items()
    ):
        return None
    return AppCgroup(int(data["version"]), {k: Path(v) for k, v in dirs.items()})

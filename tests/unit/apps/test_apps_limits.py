"""Limits: which mechanism applies, what is written to cgroup files (v1 and v2, on a fake
tree), and on this machine a real cgroup v1 memory limit that OOM-kills a process and is
counted (as root with a writable memory hierarchy; skipped with the reason otherwise)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from edgenode.apps.limits import (
    CGROUP_V1,
    CGROUP_V2,
    ENGINE,
    NONE,
    RLIMIT,
    AppCgroup,
    Applied,
    Cgroups,
    app_cgroup_from_json,
    detect,
    group_id,
    plan_limits,
    read_mounts,
    read_own,
    remove_parents,
)
from edgenode.apps.spec import Resources

MOUNTINFO = """\
25 30 0:22 / /sys/fs/cgroup ro,nosuid - tmpfs tmpfs ro,mode=755
26 25 0:23 / /sys/fs/cgroup/unified rw,nosuid - cgroup2 cgroup2 rw
31 25 0:28 / /sys/fs/cgroup/memory rw,nosuid - cgroup cgroup rw,memory
32 25 0:29 / /sys/fs/cgroup/cpu,cpuacct rw,nosuid - cgroup cgroup rw,cpu,cpuacct
33 25 0:30 /docker/abc /sys/fs/cgroup/pids rw - cgroup cgroup rw,pids
"""
SELF_CGROUP = "4:memory:/system.slice/edgenode.service\n2:cpu,cpuacct:/\n0::/\n"


def test_mounts_and_own_cgroups_are_read_from_proc():
    mounts = read_mounts(MOUNTINFO)
    assert [(m.point.name, m.fstype) for m in mounts] == [
        ("unified", "cgroup2"),
        ("memory", "cgroup"),
        ("cpu,cpuacct", "cgroup"),
        ("pids", "cgroup"),
    ]
    assert "memory" in mounts[1].options
    assert mounts[3].root == "/docker/abc"
    assert read_own(SELF_CGROUP) == {
        "memory": "/system.slice/edgenode.service",
        "cpu": "/",
        "cpuacct": "/",
        "": "/",
    }


M, C = Resources(memory_max=64 << 20), Resources(cpu_max=0.5)
BOTH = Resources(64 << 20, 0.5)
V1_CPU = Cgroups(1, {"memory": Path("/m"), "cpu": Path("/c")}, cpu=True)
V2_NO_CPU = Cgroups(2, {"": Path("/u")}, cpu=False)


@pytest.mark.parametrize(
    ("resources", "runtime", "cgroups", "expected"),
    [
        (Resources(), "process", None, Applied(NONE)),
        (M, "process", None, Applied(RLIMIT, address_space=64 << 20)),
        (BOTH, "process", None, Applied(RLIMIT, ("cpuMax",), address_space=64 << 20)),
        (C, "process", None, Applied(NONE, ("cpuMax",))),
        (BOTH, "process", V1_CPU, Applied(CGROUP_V1, cgroup=True)),
        (Resources(), "process", V1_CPU, Applied(NONE, cgroup=True)),
        (BOTH, "process", V2_NO_CPU, Applied(CGROUP_V2, ("cpuMax",), cgroup=True)),
        (BOTH, "container", V1_CPU, Applied(ENGINE)),
        (Resources(), "container", None, Applied(NONE)),
    ],
)
def test_which_mechanism_enforces_what(resources, runtime, cgroups, expected):
    assert plan_limits(resources, runtime, cgroups) == expected


def fake_tree(root: Path, files: dict[str, str]) -> None:
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)


def test_v2_limits_are_written_and_cleared(tmp_path: Path):
    fake_tree(
        tmp_path,
        {n: "" for n in ("memory.max", "memory.swap.max", "memory.oom.group", "cpu.max")},
    )
    cgroup = AppCgroup(2, {"": tmp_path})
    cgroup.set_limits(Resources(64 << 20, 0.25))
    assert (tmp_path / "memory.max").read_text() == str(64 << 20)
    assert (tmp_path / "memory.swap.max").read_text() == "0"
    assert (tmp_path / "memory.oom.group").read_text() == "1"
    assert (tmp_path / "cpu.max").read_text() == "25000 100000"
    cgroup.set_limits(Resources(cpu_max=0.001))  # below the kernel's minimum quota
    assert (tmp_path / "memory.max").read_text() == "max"
    assert (tmp_path / "cpu.max").read_text() == "1000 100000"
    (tmp_path / "memory.events").write_text("low 0\nhigh 0\nmax 4\noom 2\noom_kill 2\n")
    assert cgroup.oom_kills() == 2
    assert app_cgroup_from_json(cgroup.to_json()).dirs == cgroup.dirs  # type: ignore[union-attr]


def test_v1_limits_lift_memsw_first_and_read_the_oom_kill_count(tmp_path: Path):
    memory, cpu = tmp_path / "memory" / "app", tmp_path / "cpu" / "app"
    fake_tree(
        memory,
        {"memory.limit_in_bytes": "", "memory.memsw.limit_in_bytes": "", "memory.failcnt": "3"},
    )
    fake_tree(cpu, {"cpu.cfs_quota_us": "", "cpu.cfs_period_us": ""})
    cgroup = AppCgroup(1, {"memory": memory, "cpu": cpu})
    cgroup.set_limits(Resources(32 << 20, 1.5))
    assert (memory / "memory.limit_in_bytes").read_text() == str(32 << 20)
    assert (memory / "memory.memsw.limit_in_bytes").read_text() == str(32 << 20)
    assert (cpu / "cpu.cfs_quota_us").read_text() == "150000"
    cgroup.set_limits(Resources())
    assert (memory / "memory.limit_in_bytes").read_text() == "-1"
    assert (memory / "memory.memsw.limit_in_bytes").read_text() == "-1"
    assert (cpu / "cpu.cfs_quota_us").read_text() == "-1"
    assert cgroup.oom_kills() is None  # no memory.oom_control: an old kernel
    assert cgroup.failcnt() == 3
    (memory / "memory.oom_control").write_text("oom_kill_disable 0\nunder_oom 0\noom_kill 5\n")
    assert cgroup.oom_kills() == 5


def test_recorded_cgroups_that_are_not_absolute_paths_are_ignored():
    assert app_cgroup_from_json({"version": 1, "dirs": {"memory": "relative/x"}}) is None
    assert app_cgroup_from_json({"version": 3, "dirs": {}}) is None
    assert app_cgroup_from_json("nope") is None


def test_detect_without_any_cgroup_mount_means_rlimits(tmp_path: Path):
    (tmp_path / "mountinfo").write_text("22 1 8:1 / / rw - ext4 /dev/sda1 rw\n")
    (tmp_path / "cgroup").write_text("0::/\n")
    found = detect(tmp_path, mountinfo=tmp_path / "mountinfo", self_cgroup=tmp_path / "cgroup")
    assert found is None


def v1_memory_writable() -> str:
    if os.geteuid() != 0:
        return "needs root to create cgroups"
    if Path("/sys/fs/cgroup/cgroup.controllers").exists():
        return "this machine runs cgroup v2 (this test is the v1 one)"
    if not Path("/sys/fs/cgroup/memory").is_dir():
        return "no cgroup v1 memory hierarchy"
    return ""


@pytest.fixture
def real_v1(tmp_path: Path):
    reason = v1_memory_writable()
    if reason:
        print(f"SKIPPED real cgroup v1 test: {reason}")
        pytest.skip(reason)
    cgroups = detect(tmp_path)
    if cgroups is None or cgroups.version != 1:
        pytest.skip("the cgroup v1 memory hierarchy is not writable here")
    yield cgroups
    for parent in cgroups.parents.values():
        for child in parent.iterdir() if parent.exists() else []:
            if child.is_dir():
                child.rmdir()
    remove_parents(cgroups)
    assert not any(p.exists() for p in cgroups.parents.values())


def test_a_real_v1_memory_limit_oom_kills_and_is_counted(real_v1: Cgroups, tmp_path: Path):
    assert real_v1.parents["memory"].name == "edgenode-apps-" + group_id(tmp_path)
    assert not real_v1.parents["memory"].exists()  # detecting leaves nothing behind
    real_v1.ensure()
    cgroup = real_v1.app("hog")
    cgroup.create()
    cgroup.set_limits(Resources(memory_max=32 << 20))
    before = cgroup.oom_kills()
    fds = cgroup.open_procs()
    try:
        from edgenode.apps.process import _preexec

        proc = subprocess.Popen(
            [
                sys.executable,
                "-c",
                "b = bytearray(200 * 1024 * 1024); b[::4096] = b'x' * len(b[::4096])",
            ],
            preexec_fn=_preexec(fds, None),
        )
    finally:
        for fd in fds:
            os.close(fd)
    assert proc.wait(30) == -9
    after = cgroup.oom_kills()
    assert before is not None
    assert after is not None
    assert after > before
    assert cgroup.pids() == set()
    assert cgroup.remove()

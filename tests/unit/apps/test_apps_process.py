"""Processes of Apps, for real: own session and group, the exit seen through a pidfd,
what the leader left in its group killed, identity of leftovers (a reused pid is never
taken for the App's), stopping leftovers, helper commands bounded in time."""

from __future__ import annotations

import asyncio
import os
import secrets
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from edgenode.apps import process
from edgenode.apps.process import (
    INSTANCE_ENV,
    Instance,
    Launch,
    boot_id,
    launch,
    leftovers,
    proc_stat,
    run_command,
    stop_leftovers,
)

PY = sys.executable


def wait_gone(pid: int, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while process.alive(pid):
        assert time.monotonic() < deadline, f"pid {pid} still alive"
        time.sleep(0.02)


def spawn_marked(
    token: str, code: str = "import time; time.sleep(60)", *args: str
) -> subprocess.Popen[bytes]:
    """A process (own session) with the instance token in its environment, as an App."""
    return subprocess.Popen(
        [PY, "-c", code, *args],
        env={**os.environ, INSTANCE_ENV: token},
        start_new_session=True,
    )


def test_an_app_runs_in_its_own_session_and_its_exit_is_seen_without_polling(tmp_path: Path):
    async def scenario() -> tuple[int, bytes, object]:
        child = launch(
            Launch(
                [PY, "-c", "import os; print(os.getcwd(), os.environ['X']); raise SystemExit(7)"],
                tmp_path,
                {"X": "hello", "PATH": os.environ["PATH"]},
            )
        )
        stat = proc_stat(child.pid)
        assert stat is not None
        loop = asyncio.get_running_loop()
        exited = loop.create_future()
        child.watch(loop, lambda: exited.set_result(child.exited()))
        assert await asyncio.wait_for(exited, 10) is True
        assert child.output is not None
        output = child.output.read()
        return child.reap(), output, stat

    code, output, stat = asyncio.run(scenario())
    assert code == 7
    assert output == f"{tmp_path} hello\n".encode()
    assert stat.pgid == stat.pid == stat.sid  # leader of its own session and group


def test_reaping_kills_what_the_leader_left_in_its_group(tmp_path: Path):
    # The leader starts a grandchild in its group, prints its pid and exits.
    code = (
        "import subprocess, sys; "
        "p = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)']); "
        "print(p.pid, flush=True)"
    )

    async def scenario() -> int:
        child = launch(Launch([PY, "-c", code], tmp_path, dict(os.environ)))
        loop = asyncio.get_running_loop()
        exited = loop.create_future()
        child.watch(loop, lambda: exited.set_result(None))
        await asyncio.wait_for(exited, 10)
        assert child.output is not None
        os.set_blocking(child.output.fileno(), True)
        grandchild = int(child.output.readline())
        assert process.alive(grandchild)
        child.reap()
        return grandchild

    grandchild = asyncio.run(scenario())
    wait_gone(grandchild)


def test_a_command_that_does_not_exist_is_an_os_error(tmp_path: Path):
    with pytest.raises(FileNotFoundError):
        launch(Launch(["/nonexistent/command"], tmp_path, {}))


def test_leftovers_are_found_by_token_or_by_pid_and_start_time_never_by_pid_alone():
    token = secrets.token_hex(8)
    marked = spawn_marked(token)
    plain = subprocess.Popen([PY, "-c", "import time; time.sleep(60)"], start_new_session=True)
    try:
        time.sleep(0.2)
        plain_stat = proc_stat(plain.pid)
        assert plain_stat is not None
        # By token (whatever the recorded pid).
        assert leftovers(Instance(token, boot_id())) == {marked.pid}
        # By pid AND start time: the recorded leader.
        exact = Instance("other", boot_id(), plain.pid, plain_stat.start_ticks)
        assert leftovers(exact) == {plain.pid}
        # A pid that was reused: same number, another start time. Never killed.
        reused = Instance("other", boot_id(), plain.pid, plain_stat.start_ticks - 1)
        assert leftovers(reused) == set()
        # Another boot: recorded pids mean nothing.
        assert leftovers(Instance(token, "another-boot", marked.pid)) == set()
        # Cgroup members count whatever their identity.
        assert leftovers(Instance("", ""), [plain.pid]) == {plain.pid}
    finally:
        for proc in (marked, plain):
            proc.kill()
            proc.wait()


def test_stop_leftovers_signals_then_kills_after_the_grace_period(tmp_path: Path):
    token = secrets.token_hex(8)
    marker = tmp_path / "ignoring"
    stubborn = spawn_marked(
        token,
        "import pathlib, signal, sys, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
        "pathlib.Path(sys.argv[1]).touch(); time.sleep(60)",
        str(marker),
    )
    polite = spawn_marked(token, "import time; time.sleep(60)")
    deadline = time.monotonic() + 20
    while not marker.exists():  # the handler is installed (a loaded machine starts slowly)
        assert time.monotonic() < deadline
        time.sleep(0.02)
    instance = Instance(token, boot_id())
    started = time.monotonic()
    left = asyncio.run(stop_leftovers(lambda: leftovers(instance), signal.SIGTERM, 0.5))
    elapsed = time.monotonic() - started
    assert left == set()
    assert 0.4 < elapsed < 5
    assert polite.wait(5) == -signal.SIGTERM
    assert stubborn.wait(5) == -signal.SIGKILL


def test_run_command_bounds_time_and_output(tmp_path: Path):
    async def scenario():
        ok = await run_command([PY, "-c", "print('x' * 100000)"], timeout=10)
        slow = await run_command([PY, "-c", "import time; time.sleep(30)"], timeout=0.3)
        missing = await run_command(["/nonexistent"], timeout=1)
        return ok, slow, missing

    started = time.monotonic()
    ok, slow, missing = asyncio.run(scenario())
    assert time.monotonic() - started < 10
    assert ok.code == 0
    assert len(ok.output) == process.MAX_COMMAND_OUTPUT
    assert slow.code is None
    assert slow.error == "timed out after 0.3 s"
    assert missing.code is None
    assert "cannot run /nonexistent" in missing.error

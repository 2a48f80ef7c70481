"""The App service on a real daemon host, with real child processes, files and cgroups:
apply → runs (work dir, env, files, own session); killed → restarted and counted;
Never/OnFailure; crash loop with growing delays; health; delete within the grace period;
Config changes; missing Configs; OOM kills (cgroup v1) and the rlimit fallback; disabled
Apps; invalid specs; artifacts; logs; status only on changes; leftovers of a previous
daemon; a clean stop."""

from __future__ import annotations

import itertools
import json
import os
import secrets
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from apps_harness import Harness, app_pids, body, environ, run

from edgenode.apps import runner as runner_module
from edgenode.apps import service as service_module
from edgenode.apps.artifacts import ArtifactCache, ArtifactDigestError
from edgenode.apps.process import INSTANCE_ENV, Instance, boot_id
from edgenode.apps.service import broker_env
from edgenode.apps.state import AppState, load_state, save_state
from edgenode.config import MqttSection

PY = sys.executable
SLEEP = "import time\nwhile True: time.sleep(1)"


def app(command: list[str] | str, **spec: object) -> dict[str, object]:
    argv = [PY, "-c", command] if isinstance(command, str) else command
    return {"node": "apps-unit", "command": argv, **spec}


def test_apply_runs_the_app_in_its_work_dir_with_its_env_and_files(tmp_path: Path):
    script = (
        "import json, os, sys, time\n"
        "print('level', os.environ['LEVEL'], 'interval', os.environ['interval'], flush=True)\n"
        "print('file', json.load(open('conf/tuning.json'))['interval'], flush=True)\n"
        "while True: time.sleep(1)"
    )
    harness = Harness(tmp_path, local_configs=[{"name": "tuning", "data": {"interval": "5"}}])

    async def scenario() -> None:
        async with harness:
            spec = app(
                script,
                env={"LEVEL": "2"},
                envFrom=[{"config": "tuning"}],
                files=[{"config": "tuning", "path": "conf/tuning.json"}],
            )
            harness.apply("App", "sampler", body("App", "sampler", spec, revision=4))
            status = await harness.phase("sampler", "Running")
            pid = status["pid"]
            assert harness.pids("sampler") == [pid]
            assert os.readlink(f"/proc/{pid}/cwd") == str(harness.work("sampler"))
            assert os.getpgid(pid) == pid
            assert os.getsid(pid) == pid
            env = environ(pid)
            assert env["LEVEL"] == "2"
            assert env["interval"] == "5"
            assert env["EDGENODE_APP_REVISION"] == "4"
            assert env["HOME"] == str(harness.work("sampler"))
            assert (env["EDGENODE_MQTT_HOST"], env["EDGENODE_MQTT_PORT"]) == ("127.0.0.1", "1883")
            assert "EDGENODE_MQTT_TLS" not in env
            assert not [
                k for k in env if k.startswith("EDGENODE_HUB") or k == "PYTEST_CURRENT_TEST"
            ]
            await harness.until(lambda: "file 5" in harness.log_text("sampler"))
            assert "level 2 interval 5" in harness.log_text("sampler")
            conf = harness.work("sampler") / "conf" / "tuning.json"
            assert conf.stat().st_mode & 0o777 == 0o600
            assert status["revision"] == 4
            assert status["ready"] is True
            assert status["restarts"] == 0
            assert status["limits"] == "none"
            assert status["runtime"] == "process"
            assert status["startedAt"] > 0
            summary = json.loads((harness.data_dir / "apps.json").read_text())
            assert summary["apps"]["sampler"]["phase"] == "Running"

    run(scenario)


def test_a_killed_process_is_restarted_and_the_restart_counted(tmp_path: Path):
    harness = Harness(tmp_path)

    async def scenario() -> None:
        async with harness:
            harness.apply("App", "worker", body("App", "worker", app(SLEEP)))
            first = (await harness.phase("worker", "Running"))["pid"]
            os.kill(first, signal.SIGKILL)
            status = await harness.phase("worker", "Running", restarts=1)
            assert status["pid"] != first
            assert status["lastExit"]["signal"] == "SIGKILL"
            assert status["lastExit"]["reason"] == "Error"
            assert harness.pids("worker") == [status["pid"]]

    run(scenario)


def test_never_and_on_failure(tmp_path: Path):
    harness = Harness(tmp_path)

    async def scenario() -> None:
        async with harness:
            harness.apply(
                "App",
                "never-fails",
                body("App", "never-fails", app("raise SystemExit(3)", restartPolicy="Never")),
            )
            harness.apply(
                "App", "never-ok", body("App", "never-ok", app("pass", restartPolicy="Never"))
            )
            harness.apply(
                "App", "onfail-ok", body("App", "onfail-ok", app("pass", restartPolicy="OnFailure"))
            )
            harness.apply(
                "App",
                "onfail-fails",
                body("App", "onfail-fails", app("raise SystemExit(1)", restartPolicy="OnFailure")),
            )
            failed = await harness.phase("never-fails", "Failed")
            assert failed["lastExit"]["code"] == 3
            assert failed["restarts"] == 0
            await harness.phase("never-ok", "Stopped", reason="Completed")
            await harness.phase("onfail-ok", "Stopped", reason="Completed")
            await harness.until(lambda: harness.last("onfail-fails").get("restarts", 0) >= 2)
            await asyncio_sleep(0.5)
            for name in ("never-fails", "never-ok", "onfail-ok"):
                assert len([s for s in harness.statuses(name) if s["phase"] == "Running"]) <= 1

    run(scenario)


async def asyncio_sleep(seconds: float) -> None:
    import asyncio

    await asyncio.sleep(seconds)


def test_a_crash_loop_backs_off_with_growing_delays(tmp_path: Path):
    harness = Harness(tmp_path)

    async def scenario() -> None:
        async with harness:
            harness.apply("App", "crasher", body("App", "crasher", app("raise SystemExit(1)")))
            await harness.phase("crasher", "CrashLoopBackOff", timeout=15, restarts=3)
            await harness.until(lambda: harness.last("crasher").get("restarts", 0) >= 5, 15)

    run(scenario)
    starts = [s["startedAt"] for s in harness.statuses("crasher") if s["phase"] == "Running"]
    gaps = [b - a for a, b in itertools.pairwise(starts)]
    # Back-off 0.1, 0.2, 0.4, 0.8 (the cap), plus the run itself.
    assert len(gaps) >= 4
    assert gaps[0] >= 0.1
    assert gaps[1] >= 0.2
    assert gaps[2] >= 0.4
    assert gaps[3] >= 0.8
    assert gaps[2] > gaps[0]
    phases = [s["phase"] for s in harness.statuses("crasher")]
    assert phases.index("CrashLoopBackOff") > phases.index("Pending")
    assert "restarting in" in next(
        s["message"] for s in harness.statuses("crasher") if s["phase"] == "CrashLoopBackOff"
    )


def test_a_failing_health_check_makes_it_not_ready_and_restarts_it(tmp_path: Path):
    harness = Harness(tmp_path)
    check = {
        "exec": [PY, "-c", "import os, sys; sys.exit(0 if os.path.exists('healthy') else 1)"],
        "periodSeconds": 0.2,
        "failureThreshold": 2,
        "timeoutSeconds": 5,
    }

    async def scenario() -> None:
        async with harness:
            harness.apply("App", "web", body("App", "web", app(SLEEP, healthCheck=check)))
            await harness.phase("web", "Running")
            assert harness.last("web")["ready"] is False
            (harness.work("web") / "healthy").write_text("")
            ready = await harness.phase("web", "Running", ready=True)
            first, before = ready["pid"], ready["restarts"]  # restarts before: not healthy yet
            (harness.work("web") / "healthy").unlink()
            status = await harness.phase("web", "Running", restarts=before + 1)
            assert status["pid"] != first
            assert status["ready"] is False
            assert status["lastExit"]["signal"] == "SIGTERM"
            reasons = [s["reason"] for s in harness.statuses("web")]
            assert "Unhealthy" in reasons

    run(scenario)


def test_deleting_an_app_stops_it_within_its_grace_period_and_removes_its_files(tmp_path: Path):
    stubborn = (
        "import signal, time\n"
        "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
        "print('ignoring SIGTERM', flush=True)\n"
        "while True: time.sleep(1)"
    )
    harness = Harness(tmp_path)

    async def scenario() -> float:
        async with harness:
            spec = app(stubborn, terminationGracePeriodSeconds=1)
            harness.apply("App", "stubborn", body("App", "stubborn", spec))
            pid = (await harness.phase("stubborn", "Running"))["pid"]
            await harness.until(lambda: "ignoring SIGTERM" in harness.log_text("stubborn"), 20)
            started = time.monotonic()
            harness.delete("App", "stubborn")
            await harness.until(lambda: not harness.pids("stubborn"), 10)
            took = time.monotonic() - started
            await harness.phase("stubborn", "Stopped", reason="Removed")
            await harness.until(lambda: not harness.work("stubborn").exists())
            assert not (harness.data_dir / "apps" / ".supervisor" / "stubborn").exists()
            assert not os.path.exists(f"/proc/{pid}/stat") or harness.pids("stubborn") == []
            summary = json.loads((harness.data_dir / "apps.json").read_text())
            assert "stubborn" not in summary["apps"]
            return took

    took = run(scenario)
    assert 0.9 <= took < 5.0


def test_a_changed_config_restarts_the_app_with_the_new_env_and_file(tmp_path: Path):
    script = (
        "import json, os, time\n"
        "interval = json.load(open('t.json'))['interval']\n"
        "print('env', os.environ['interval'], 'file', interval, flush=True)\n"
        "while True: time.sleep(1)"
    )
    harness = Harness(tmp_path)

    async def scenario() -> None:
        async with harness:
            harness.apply("Config", "tuning", body("Config", "tuning", {"data": {"interval": "5"}}))
            spec = app(
                script,
                envFrom=[{"config": "tuning"}],
                files=[{"config": "tuning", "path": "t.json"}],
            )
            harness.apply("App", "reader", body("App", "reader", spec))
            first = (await harness.phase("reader", "Running"))["pid"]
            await harness.until(lambda: "env 5 file 5" in harness.log_text("reader"))
            harness.apply("Config", "tuning", body("Config", "tuning", {"data": {"interval": "7"}}))
            await harness.until(lambda: "env 7 file 7" in harness.log_text("reader"), 10)
            status = harness.last("reader")
            assert status["pid"] != first
            assert status["restarts"] == 0
            assert harness.pids("reader") == [status["pid"]]
            # A Config it does not read changes nothing.
            harness.apply("Config", "other", body("Config", "other", {"data": {"a": "b"}}))
            await asyncio_sleep(0.5)
            assert harness.last("reader")["pid"] == status["pid"]

    run(scenario)


def test_a_config_that_is_not_on_the_node_keeps_it_pending_until_it_comes(tmp_path: Path):
    harness = Harness(tmp_path)

    async def scenario() -> None:
        async with harness:
            harness.apply(
                "App", "waiter", body("App", "waiter", app(SLEEP, envFrom=[{"config": "later"}]))
            )
            status = await harness.phase("waiter", "Pending", reason="ConfigMissing")
            assert status["message"] == "Config later is not on this node"
            assert harness.pids("waiter") == []
            harness.apply("Config", "later", body("Config", "later", {"data": {"k": "v"}}))
            status = await harness.phase("waiter", "Running")
            assert environ(status["pid"])["k"] == "v"

    run(scenario)


HOG = "b = bytearray(300 * 1024 * 1024)\nb[::4096] = b'x' * len(b[::4096])\nprint('survived')"


def cgroup_v1_reason() -> str:
    if os.geteuid() != 0:
        return "cgroups need root here"
    if not Path("/sys/fs/cgroup/memory/cgroup.procs").exists():
        return "no writable cgroup v1 memory hierarchy on this machine"
    return ""


def test_over_its_memory_limit_an_app_is_oom_killed_and_reported(tmp_path: Path):
    reason = cgroup_v1_reason()
    if reason:
        print(f"SKIPPED OOM test: {reason}")
        pytest.skip(reason)
    harness = Harness(tmp_path)

    async def scenario() -> None:
        async with harness:
            spec = app(HOG, restartPolicy="Never", resources={"memoryMax": "48Mi", "cpuMax": "0.5"})
            harness.apply("App", "hog", body("App", "hog", spec))
            status = await harness.phase("hog", "Failed", timeout=30)
            assert status["reason"] == "OOMKilled", status
            assert status["lastExit"]["reason"] == "OOMKilled"
            assert status["limits"] == "cgroup-v1"
            assert status["unenforced"] == []
            assert "survived" not in harness.log_text("hog")
            assert "OOM-killed" in harness.log_text("hog")

    run(scenario)


def test_without_cgroups_memory_is_limited_by_rlimit_and_cpu_unenforced(
    tmp_path: Path, monkeypatch
):
    monkeypatch.setattr(service_module, "detect", lambda data_dir: None)
    harness = Harness(tmp_path)

    async def scenario() -> None:
        async with harness:
            spec = app(
                HOG, restartPolicy="Never", resources={"memoryMax": "200Mi", "cpuMax": "0.5"}
            )
            harness.apply("App", "hog", body("App", "hog", spec))
            status = await harness.phase("hog", "Failed", timeout=30)
            assert status["limits"] == "rlimit"
            assert status["unenforced"] == ["cpuMax"]
            assert status["reason"] == "MemoryLimit", status
            assert "RLIMIT_AS 209715200 bytes" in status["message"]
            assert "MemoryError" in harness.log_text("hog")

    run(scenario)


def test_disabled_apps_are_failed_and_nothing_runs(tmp_path: Path):
    harness = Harness(tmp_path, apps={"enabled": False})

    async def scenario() -> None:
        async with harness:
            harness.apply("App", "x", body("App", "x", app(SLEEP)))
            status = await harness.phase("x", "Failed", reason="AppsDisabled")
            assert status["message"] == "Apps are disabled on this node ([apps] enabled = false)"
            await asyncio_sleep(0.3)
            assert harness.pids("x") == []
            assert json.loads((harness.data_dir / "apps.json").read_text())["enabled"] is False

    run(scenario)


def test_an_invalid_spec_is_failed_with_the_field_named(tmp_path: Path):
    harness = Harness(tmp_path)

    async def scenario() -> None:
        async with harness:
            harness.apply("App", "bad", body("App", "bad", app(SLEEP, restartPolicy="Sometimes")))
            status = await harness.phase("bad", "Failed", reason="InvalidSpec")
            assert status["message"].startswith("spec.restartPolicy:")
            # Fixed by a new revision: it runs.
            harness.apply("App", "bad", body("App", "bad", app(SLEEP), revision=2))
            await harness.phase("bad", "Running", revision=2)

    run(scenario)


def test_a_command_that_does_not_exist_fails_to_start_and_backs_off(tmp_path: Path):
    harness = Harness(tmp_path)

    async def scenario() -> None:
        async with harness:
            harness.apply(
                "App",
                "typo",
                body("App", "typo", {"node": "apps-unit", "command": ["no-such-cmd"]}),
            )
            status = await harness.until(
                lambda: harness.last("typo").get("restarts", 0) >= 2 and harness.last("typo")
            )
            assert status["reason"] == "StartFailed"
            assert "No such file or directory" in status["message"]

    run(scenario)


def test_artifacts_are_placed_from_the_cache(tmp_path: Path):
    harness = Harness(tmp_path)
    program = b"import time\nprint('from the artifact', flush=True)\nwhile True: time.sleep(1)\n"
    import hashlib

    digest = hashlib.sha256(program).hexdigest()
    cache = ArtifactCache(harness.data_dir / "artifacts", 1 << 20)
    cache.append(digest, 0, program)
    cached = cache.complete(digest)

    async def scenario() -> None:
        async with harness:
            spec = app([PY, "main.py"], artifacts=[{"name": "main.py", "sha256": digest}])
            harness.apply("App", "art", body("App", "art", spec))
            await harness.phase("art", "Running")
            await harness.until(lambda: "from the artifact" in harness.log_text("art"))
            placed = harness.work("art") / "main.py"
            assert placed.stat().st_ino != cached.stat().st_ino
            assert placed.read_bytes() == program

    run(scenario)


class FakeSource:
    """An artifact source that reports progress, then fails or never finishes."""

    def __init__(self, error: Exception | None) -> None:
        self.error = error
        self.kept: set[str] = set()

    def cached(self, digest: str) -> None:
        return None

    def keep(self, digests) -> None:
        self.kept = set(digests)

    async def fetch(self, digest, progress=None):
        import asyncio

        if progress is not None:
            progress(300, 1000)
        await asyncio.sleep(0.3 if self.error else 3600)
        raise self.error  # type: ignore[misc]


@pytest.mark.parametrize(
    ("error", "phase", "reason"),
    [
        (ArtifactDigestError("artifact aaaa arrived with digest bbbb"), "Failed", "DigestMismatch"),
        (None, "Downloading", ""),
    ],
)
def test_downloads_report_progress_and_a_digest_mismatch_fails(
    tmp_path: Path, error, phase, reason
):
    harness = Harness(tmp_path)
    source = FakeSource(error)

    async def scenario() -> None:
        await harness.start()
        assert harness.daemon is not None
        harness.daemon._downloads = source  # type: ignore[assignment]
        try:
            spec = app([PY, "main.py"], artifacts=[{"name": "main.py", "sha256": "a" * 64}])
            harness.apply("App", "dl", body("App", "dl", spec))
            downloading = await harness.phase("dl", "Downloading")
            assert downloading["download"] == {"done": 300, "total": 1000}
            assert "waiting for the hub link" in downloading["message"]
            assert source.kept == {"a" * 64}
            status = await harness.phase("dl", phase, reason=reason)
            if reason:
                assert status["message"] == "artifact aaaa arrived with digest bbbb"
                await asyncio_sleep(0.5)
                assert harness.last("dl")["phase"] == "Failed"  # not retried
        finally:
            await harness.stop()

    run(scenario)


def test_logs_are_served_tail_and_follow(tmp_path: Path):
    harness = Harness(tmp_path)
    script = "import time\nfor n in range(5): print('line', n, flush=True)\ntime.sleep(3600)"

    async def scenario() -> None:
        async with harness:
            harness.apply("App", "talker", body("App", "talker", app(script)))
            await harness.until(lambda: "line 4" in harness.log_text("talker"))
            assert harness.daemon is not None
            source = harness.daemon._logs.source
            assert source is not None
            reader = source.app_log("talker", 2, False)
            assert reader is not None
            text = b"".join([chunk async for chunk in reader])
            assert text == b"line 3\nline 4\n"
            assert source.app_log("nobody", 2, False) is None
            follower = source.app_log("talker", 1, True)
            assert follower is not None
            first = await follower.__anext__()
            assert first == b"line 4\n"
            pid = harness.last("talker")["pid"]
            os.kill(pid, signal.SIGKILL)
            later = await follower.__anext__()
            assert b"[edgenode " in later
            assert b"killed by signal SIGKILL" in later
            await follower.aclose()

    run(scenario)


def test_status_records_go_out_on_changes_only(tmp_path: Path):
    harness = Harness(tmp_path)
    check = {"exec": [PY, "-c", "pass"], "periodSeconds": 0.1}

    async def scenario() -> None:
        async with harness:
            harness.apply("App", "steady", body("App", "steady", app(SLEEP, healthCheck=check)))
            await harness.phase("steady", "Running", ready=True)
            count = len(harness.statuses("steady"))
            await asyncio_sleep(1.5)  # ~15 health checks
            assert len(harness.statuses("steady")) == count
            assert count <= 4  # Pending, Running, ready

    run(scenario)


def test_a_previous_daemons_instance_is_stopped_before_the_app_starts_again(tmp_path: Path):
    """The unit form of the kill -9 test (tests/integration/apps has the real one): a state
    file recording a live instance, as a killed daemon leaves it."""
    harness = Harness(tmp_path)
    token = secrets.token_hex(16)
    leftover = subprocess.Popen(
        [PY, "-c", SLEEP],
        env={
            **os.environ,
            INSTANCE_ENV: token,
            "EDGENODE_NODE": harness.node,
            "EDGENODE_APP": "svc",
        },
        start_new_session=True,
    )
    unrelated = subprocess.Popen(
        [PY, "-c", SLEEP],
        env={**os.environ, "EDGENODE_NODE": harness.node, "EDGENODE_APP": "svc"},
        start_new_session=True,
    )
    try:
        save_state(
            harness.data_dir, AppState("svc", instance=Instance(token, boot_id(), leftover.pid))
        )
        harness.preload("App", "svc", body("App", "svc", app(SLEEP)))

        async def scenario() -> None:
            async with harness:
                status = await harness.phase("svc", "Running")
                assert leftover.poll() == -signal.SIGTERM  # stopped before the new one started
                assert status["pid"] != leftover.pid
                assert sorted(harness.pids("svc")) == sorted([status["pid"], unrelated.pid])

        run(scenario)
        assert unrelated.poll() is None  # no token, no recorded pid: not the App's
    finally:
        for proc in (leftover, unrelated):
            if proc.poll() is None:
                proc.kill()
            proc.wait()


def test_a_clean_stop_stops_every_app_and_they_start_again_with_the_daemon(tmp_path: Path):
    harness = Harness(tmp_path)

    async def first() -> list[int]:
        async with harness:
            for name in ("one", "two"):
                harness.apply("App", name, body("App", name, app(SLEEP)))
            return [(await harness.phase(name, "Running"))["pid"] for name in ("one", "two")]

    pids = run(first)
    assert harness.service is not None
    assert harness.service._ctx is not None
    cgroups = harness.service._ctx.cgroups
    if cgroups is not None:  # nothing left behind in the cgroup tree either
        assert not any(parent.exists() for parent in cgroups.parents.values())
    for pid in pids:
        assert not os.path.exists(f"/proc/{pid}") or app_pids(harness.node, "one") == []
    assert harness.pids("one") == []
    assert harness.pids("two") == []
    assert harness.last("one")["reason"] == "NodeStopped"
    state = load_state(harness.data_dir, "one")
    assert state is not None
    assert state.instance is None
    summary = json.loads((harness.data_dir / "apps.json").read_text())
    assert summary["apps"]["one"]["phase"] == "Stopped"

    async def second() -> None:
        async with harness:
            await harness.phase("one", "Running")
            await harness.phase("two", "Running")
            assert len(harness.pids("one")) == 1

    run(second)


def test_a_good_revision_is_recorded_with_its_artifacts(tmp_path: Path):
    harness = Harness(tmp_path)

    async def scenario() -> None:
        async with harness:
            harness.apply("App", "g", body("App", "g", app(SLEEP), revision=3))
            await harness.phase("g", "Running")
            await harness.until(lambda: (s := load_state(harness.data_dir, "g")) and s.good, 5)

    run(scenario)
    state = load_state(harness.data_dir, "g")
    assert state is not None
    assert state.good is not None
    assert state.good["revision"] == 3
    assert state.good["body"]["metadata"]["name"] == "g"
    assert state.current is not None
    assert state.current["revision"] == 3


ESCAPE = (
    "import subprocess, sys\n"
    "p = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(600)'],"
    " start_new_session=True)\n"
    "print('escaped', p.pid, flush=True)"
)


@pytest.mark.parametrize("cgroups", [True, False])
def test_what_left_the_process_group_goes_with_the_app(tmp_path: Path, monkeypatch, cgroups):
    if cgroups and cgroup_v1_reason():
        pytest.skip(cgroup_v1_reason())
    if not cgroups:
        monkeypatch.setattr(service_module, "detect", lambda data_dir: None)
    harness = Harness(tmp_path)

    async def scenario() -> int:
        async with harness:
            harness.apply("App", "esc", body("App", "esc", app(ESCAPE, restartPolicy="Never")))
            await harness.phase("esc", "Stopped", reason="Completed")
            line = next(li for li in harness.log_text("esc").splitlines() if "escaped" in li)
            return int(line.split()[1])

    escaped = run(scenario)
    assert proc_gone(escaped)


def proc_gone(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return True
    return state in ("Z", "X")


def test_apps_learn_where_the_broker_is_never_its_credentials():
    mqtt = MqttSection(host="10.0.0.2", port=8883, tls=True, username="node", password="secret")
    assert broker_env(mqtt) == {
        "EDGENODE_MQTT_HOST": "10.0.0.2",
        "EDGENODE_MQTT_PORT": "8883",
        "EDGENODE_MQTT_TLS": "1",
    }
    assert broker_env(MqttSection(enabled=False)) == {}


def test_a_status_the_full_outbox_refused_is_offered_again(tmp_path: Path, monkeypatch):
    """After weeks offline the outbox may hold nothing the quota could evict for an App's
    status (priority 4): the status is refused. A status is written only when it changes,
    so the runner offers it again until it is queued, or the hub would never learn it
    (the ship test found this: the hub showed revision 1 after the node ran revision 2)."""
    monkeypatch.setattr(runner_module, "REPORT_RETRY_SECONDS", 0.2)
    harness = Harness(tmp_path)
    refusing = [True]
    refused: list[str] = []

    async def scenario() -> None:
        async with harness:
            assert harness.daemon is not None
            recording = harness.daemon.commit

            def commit(twins: Any, records: Any) -> list[int | None]:
                if refusing[0] and any(r.kind == "app-status" for r in records):
                    refused.extend(r.kind for r in records)
                    return [None] * len(records)
                return recording(twins, records)

            harness.daemon.commit = commit  # type: ignore[method-assign]
            harness.apply("App", "later", body("App", "later", app(SLEEP)))
            await harness.until(lambda: len(refused) >= 3, what="the status refused, retried")
            assert harness.statuses("later") == []
            refusing[0] = False
            await harness.phase("later", "Running")

    run(scenario)

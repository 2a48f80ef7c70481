"""The App life cycle as a state machine, time passed in: restart policies, back-off and
crash loops, health, stops, reruns, preparation failures. No processes, no clock."""

from __future__ import annotations

import signal

import pytest

from edgenode.apps.spec import HealthCheck
from edgenode.apps.supervisor import (
    CRASH_LOOP,
    FAILED,
    PENDING,
    RESTART_DELAY_INITIAL,
    RESTART_DELAY_MAX,
    RUNNING,
    STOPPED,
    Action,
    ExitInfo,
    Stage,
    Supervisor,
    Timing,
)

T = Timing()


def code(value: int, at: float = 0.0) -> ExitInfo:
    return ExitInfo(value, None, at)


def killed(signum: int, **extra: object) -> ExitInfo:
    return ExitInfo(None, signum, 0.0, **extra)  # type: ignore[arg-type]


def start(machine: Supervisor, now: float, pid: int = 100) -> None:
    """Drive PREPARE → START → started at ``now``."""
    assert machine.poll(now) == [Action.PREPARE]
    machine.prepared()
    assert machine.poll(now) == [Action.START]
    machine.started(pid, now, 1e9 + now)
    assert machine.phase == RUNNING


def exit_at(machine: Supervisor, info: ExitInfo, now: float) -> None:
    machine.process_gone()
    machine.exited(info, now)


def test_the_delays_double_from_one_second_up_to_five_minutes():
    delays = [T.delay(n) for n in range(1, 12)]
    assert delays == [1, 2, 4, 8, 16, 32, 64, 128, 256, 300, 300]
    assert T.delay(10_000) == RESTART_DELAY_MAX
    assert RESTART_DELAY_INITIAL == 1.0


def test_always_restarts_with_growing_delays_then_crash_loop_back_off():
    machine = Supervisor("Always", None, 10.0)
    now = 0.0
    start(machine, now)
    waits = []
    phases = []
    for _ in range(5):
        now += 2.0  # a short run
        exit_at(machine, code(1), now)
        assert machine.stage is Stage.BACKOFF
        phases.append(machine.phase)
        restart_at = machine.deadline(now)
        assert restart_at is not None
        waits.append(restart_at - now)
        assert machine.poll(restart_at - 0.01) == []  # not before its time
        now = restart_at
        start(machine, now)
    assert waits == [1, 2, 4, 8, 16]
    assert phases == [PENDING, PENDING, CRASH_LOOP, CRASH_LOOP, CRASH_LOOP]
    assert machine.restarts == 5
    assert machine.last_exit == code(1)


def test_a_stable_run_starts_the_back_off_again():
    machine = Supervisor("Always", None, 10.0)
    start(machine, 0.0)
    now = 0.0
    for _ in range(4):  # four crashes: next delay would be 16 s
        now += 1.0
        exit_at(machine, code(1), now)
        now = machine.deadline(now) or now
        start(machine, now)
    assert machine.phase == RUNNING
    now += T.stable_run  # this one ran long enough
    exit_at(machine, code(1), now)
    assert machine.deadline(now) == now + RESTART_DELAY_INITIAL
    assert machine.phase == PENDING  # not a crash loop any more
    assert "exited with code 1; restarting in 1 s" in machine.message


def test_always_restarts_after_a_clean_exit_too():
    machine = Supervisor("Always", None, 10.0)
    start(machine, 0.0)
    exit_at(machine, code(0), 5.0)
    assert machine.stage is Stage.BACKOFF
    assert machine.reason == "Completed"


@pytest.mark.parametrize(
    ("policy", "info", "stage", "phase", "reason"),
    [
        ("OnFailure", code(0), Stage.DONE, STOPPED, "Completed"),
        ("OnFailure", code(2), Stage.BACKOFF, PENDING, "Error"),
        ("OnFailure", killed(signal.SIGSEGV), Stage.BACKOFF, PENDING, "Error"),
        ("Never", code(0), Stage.DONE, STOPPED, "Completed"),
        ("Never", code(2), Stage.DONE, FAILED, "Error"),
        ("Never", killed(signal.SIGKILL, oom=True), Stage.DONE, FAILED, "OOMKilled"),
    ],
)
def test_on_failure_and_never(policy, info, stage, phase, reason):
    machine = Supervisor(policy, None, 10.0)
    start(machine, 0.0)
    exit_at(machine, info, 3.0)
    assert (machine.stage, machine.phase, machine.reason) == (stage, phase, reason)
    assert machine.pid is None
    assert not machine.ready
    if stage is Stage.DONE:
        assert machine.deadline(3.0) is None
        assert machine.poll(1e6) == []  # nothing happens any more by itself


def test_exit_reasons_and_their_words():
    assert code(3).describe() == "exited with code 3"
    assert killed(signal.SIGKILL).describe() == "killed by signal SIGKILL"
    oom = killed(signal.SIGKILL, oom=True)
    assert oom.reason == "OOMKilled"
    assert "OOM-killed" in oom.describe()
    hint = ExitInfo(1, None, 0.0, memory_hint="probably out of memory")
    assert hint.reason == "MemoryLimit"
    assert ExitInfo(None, None, 0.0, start_error="No such file").reason == "StartFailed"
    assert ExitInfo.from_returncode(-9, 5.0) == ExitInfo(None, 9, 5.0)
    assert ExitInfo.from_returncode(4, 5.0).to_json() == {
        "code": 4,
        "signal": None,
        "at": 5.0,
        "reason": "Error",
    }
    assert ExitInfo.from_returncode(-15, 5.0).to_json()["signal"] == "SIGTERM"


def test_a_command_that_cannot_start_backs_off_like_a_crash():
    machine = Supervisor("Always", None, 10.0)
    assert machine.poll(0.0) == [Action.PREPARE]
    machine.prepared()
    assert machine.poll(0.0) == [Action.START]
    machine.start_failed("No such file or directory: nope", 0.0, 1e9)
    assert (machine.stage, machine.reason) == (Stage.BACKOFF, "StartFailed")
    assert machine.deadline(0.0) == 1.0
    never = Supervisor("Never", None, 10.0)
    never.poll(0.0)
    never.prepared()
    never.poll(0.0)
    never.start_failed("Permission denied", 0.0, 1e9)
    assert (never.phase, never.reason) == (FAILED, "StartFailed")
    assert "cannot start: Permission denied" in never.message


HEALTH = HealthCheck("tcp", port=8000, period=10.0, failure_threshold=3, initial_delay=5.0)


def test_health_ready_after_the_first_success_and_unhealthy_after_the_threshold():
    machine = Supervisor("Always", HEALTH, 2.0)
    start(machine, 0.0)
    assert not machine.ready
    assert machine.deadline(0.0) == 5.0  # the initial delay
    assert machine.poll(4.9) == []
    assert machine.poll(5.0) == [Action.PROBE]
    assert machine.poll(5.5) == []  # never two probes at once
    machine.probe_done(machine.instance, True, "", 5.2)
    assert machine.ready
    assert machine.deadline(5.2) == 15.0  # one period after the probe started
    now = 15.0
    for failure in range(1, 4):
        assert machine.poll(now) == [Action.PROBE]
        machine.probe_done(machine.instance, False, "connection refused", now + 0.1)
        if failure < 3:
            assert machine.ready  # not yet: failureThreshold is 3
            assert machine.message == "health check failed: connection refused"
        now += 10.0
    assert not machine.ready
    assert machine.stage is Stage.STOPPING
    stop_at = now - 10.0 + 0.1
    assert machine.poll(stop_at) == [Action.SIGNAL]
    assert machine.deadline(stop_at) == pytest.approx(stop_at + 2.0)
    assert machine.poll(stop_at + 2.0) == [Action.KILL]
    exit_at(machine, killed(signal.SIGKILL), stop_at + 2.1)
    assert machine.reason == "Unhealthy"
    assert "health check failed 3 times in a row: connection refused" in machine.message
    assert machine.stage is Stage.BACKOFF


def test_unhealthy_under_never_ends_failed_and_on_failure_restarts():
    for policy, stage in (("Never", Stage.DONE), ("OnFailure", Stage.BACKOFF)):
        check = HealthCheck("tcp", port=1, period=1.0, failure_threshold=1)
        machine = Supervisor(policy, check, 1.0)
        start(machine, 0.0)
        assert machine.poll(0.0) == [Action.PROBE]
        machine.probe_done(machine.instance, False, "refused", 0.1)
        assert machine.poll(0.1) == [Action.SIGNAL]
        exit_at(machine, code(0), 0.2)  # even a clean exit: it was unhealthy
        assert (machine.stage, machine.reason) == (stage, "Unhealthy")
        if stage is Stage.DONE:
            assert machine.phase == FAILED


def test_a_probe_result_of_an_older_instance_is_ignored():
    check = HealthCheck("tcp", port=1, period=1.0, failure_threshold=1)
    machine = Supervisor("Always", check, 1.0)
    start(machine, 0.0)
    machine.poll(0.0)
    old = machine.instance
    exit_at(machine, code(1), 0.5)
    start(machine, machine.deadline(0.5) or 0.0)
    machine.probe_done(old, False, "late", 2.0)
    assert machine.stage is Stage.RUNNING


def test_without_a_health_check_running_is_ready_and_good_after_a_stable_run():
    machine = Supervisor("Always", None, 1.0, Timing(stable_run=60.0))
    start(machine, 0.0)
    assert machine.ready
    assert machine.deadline(0.0) == 60.0
    assert machine.poll(59.0) == []
    assert machine.poll(60.0) == [Action.GOOD]
    assert machine.poll(61.0) == []  # once


def test_good_needs_the_health_check_to_pass_for_a_stable_run():
    check = HealthCheck("tcp", port=1, period=100.0, failure_threshold=1)
    machine = Supervisor("Always", check, 1.0, Timing(stable_run=30.0))
    start(machine, 0.0)
    assert machine.poll(0.0) == [Action.PROBE]
    machine.probe_done(machine.instance, True, "", 1.0)
    assert machine.poll(30.9) == []
    assert machine.poll(31.0) == [Action.GOOD]


def test_a_final_stop_signals_then_kills_after_the_grace_period_and_ends():
    machine = Supervisor("Always", None, 7.0)
    start(machine, 0.0)
    machine.stop(STOPPED, "Removed", "deleted", terminal=True)
    assert not machine.ready
    assert machine.poll(1.0) == [Action.SIGNAL]
    assert machine.deadline(1.0) == 8.0
    assert machine.poll(7.9) == []
    assert machine.poll(8.0) == [Action.KILL]
    assert machine.poll(9.0) == []
    assert not machine.ended
    exit_at(machine, killed(signal.SIGKILL), 8.1)
    assert machine.ended
    assert (machine.phase, machine.reason) == (STOPPED, "Removed")
    machine.rerun("too late", new_revision=True)
    assert machine.stage is Stage.DONE  # a removed App never starts again


def test_grace_zero_kills_at_once():
    machine = Supervisor("Always", None, 0.0)
    start(machine, 0.0)
    machine.stop(STOPPED, "NodeStopped", "stop", terminal=True)
    assert machine.poll(0.0) == [Action.SIGNAL, Action.KILL]


def test_a_final_stop_while_waiting_ends_at_once():
    machine = Supervisor("Always", None, 7.0)
    start(machine, 0.0)
    exit_at(machine, code(1), 0.1)
    machine.stop(STOPPED, "Removed", "deleted", terminal=True)
    assert machine.ended
    assert machine.poll(100.0) == []


def test_a_stop_while_preparing_cancels_the_preparation():
    machine = Supervisor("Always", None, 7.0)
    assert machine.poll(0.0) == [Action.PREPARE]
    machine.stop(STOPPED, "Removed", "deleted", terminal=True)
    assert machine.poll(0.0) == [Action.CANCEL_PREPARE]
    assert machine.ended
    machine.prepared()  # a late result changes nothing
    assert machine.poll(0.0) == []


def test_rerun_stops_the_instance_and_starts_the_new_one_at_once():
    machine = Supervisor("Always", None, 5.0)
    start(machine, 0.0)
    exit_at(machine, code(1), 1.0)
    start(machine, machine.deadline(1.0) or 0.0)
    assert machine.restarts == 1
    machine.rerun("a Config it reads changed", new_revision=False)
    assert machine.poll(10.0) == [Action.SIGNAL]
    exit_at(machine, killed(signal.SIGTERM), 10.5)
    assert machine.stage is Stage.PREPARE
    assert machine.deadline(10.5) == 10.5  # no back-off
    start(machine, 10.5)
    assert machine.restarts == 1  # a rerun is not a restart
    machine.rerun("revision 2", new_revision=True)
    assert machine.restarts == 0  # a new revision counts from 0


def test_rerun_while_waiting_or_done_or_preparing():
    machine = Supervisor("Never", None, 5.0)
    start(machine, 0.0)
    exit_at(machine, code(0), 1.0)
    assert machine.stage is Stage.DONE
    machine.rerun("revision 2", new_revision=True)
    assert machine.poll(2.0) == [Action.PREPARE]
    machine.rerun("revision 3", new_revision=True)
    assert machine.poll(2.0) == [Action.CANCEL_PREPARE, Action.PREPARE]


def test_rerun_replaces_an_unhealthy_stop_and_a_non_terminal_stop_can_be_undone():
    check = HealthCheck("tcp", port=1, period=1.0, failure_threshold=1)
    machine = Supervisor("Never", check, 5.0)
    start(machine, 0.0)
    machine.poll(0.0)
    machine.probe_done(machine.instance, False, "x", 0.1)
    assert machine.stage is Stage.STOPPING
    machine.rerun("revision 2", new_revision=True)
    machine.poll(0.2)
    exit_at(machine, killed(signal.SIGTERM), 0.3)
    assert machine.stage is Stage.PREPARE  # not Failed: the new revision runs
    machine.poll(0.3)
    machine.stop(FAILED, "InvalidSpec", "spec.command: must not be empty", terminal=False)
    assert (machine.phase, machine.reason, machine.ended) == (FAILED, "InvalidSpec", False)
    machine.rerun("revision 3", new_revision=True)
    assert Action.PREPARE in machine.poll(1.0)


def test_preparation_failures_retry_with_back_off_unless_they_cannot_heal():
    machine = Supervisor("Always", None, 5.0)
    machine.poll(0.0)
    machine.preparing("Downloading", "fetching", (10, 100))
    assert machine.download == (10, 100)
    machine.prepare_failed("ArtifactUnavailable", "the hub cannot send it", 0.0, retry=True)
    assert (machine.phase, machine.download) == (FAILED, None)
    assert machine.message == "the hub cannot send it (trying again in 1 s)"
    assert machine.poll(0.5) == []
    assert machine.poll(1.0) == [Action.PREPARE]
    machine.prepare_failed("ArtifactUnavailable", "again", 1.0, retry=True)
    assert machine.deadline(1.0) == 3.0
    machine.poll(3.0)
    machine.prepare_failed("DigestMismatch", "bad bytes", 3.0, retry=False)
    assert (machine.stage, machine.phase) == (Stage.DONE, FAILED)
    assert machine.poll(1e6) == []


def test_waiting_for_a_config_until_the_inputs_change():
    machine = Supervisor("Always", None, 5.0)
    machine.poll(0.0)
    machine.waiting("ConfigMissing", "Config tuning is not on this node")
    assert (machine.phase, machine.reason) == (PENDING, "ConfigMissing")
    assert machine.deadline(0.0) is None
    assert machine.poll(1e6) == []
    machine.rerun("the Configs it reads are on the node", new_revision=False)
    assert machine.poll(5.0) == [Action.PREPARE]


def test_settings_of_the_running_revision_apply_without_a_restart():
    machine = Supervisor("Always", None, 5.0)
    start(machine, 0.0)
    machine.configure("Never", HEALTH, 1.0, 2.0)
    assert machine.stage is Stage.RUNNING
    assert not machine.ready
    assert machine.deadline(2.0) == 7.0
    exit_at(machine, code(0), 3.0)
    assert machine.phase == STOPPED  # Never now

"""The node's side of staged rollouts (``edgenode.apps.rollout``), sans-I/O with time passed
in: which revision runs, when the new one is confirmed (the previous good one released),
when the node rolls back by itself, and that a failed revision is never taken again."""

from __future__ import annotations

from typing import Any

from edgenode.apps.rollout import (
    Revision,
    RolloutRecord,
    Timing,
    assign,
    assigned_revision,
    kept_digests,
    next_check,
    observe,
    step,
)

STRATEGY = {"minReadySeconds": 5, "progressDeadlineSeconds": 30}


def revision(number: int, digest: str = "", **strategy: Any) -> Revision:
    spec: dict[str, Any] = {
        "nodeSelector": {},
        "command": ["./run", str(number)],
        "strategy": {**STRATEGY, **strategy},
    }
    if digest:
        spec["artifacts"] = [{"name": "run", "sha256": digest * 64}]
    body = {
        "kind": "App",
        "metadata": {"name": "svc", "annotations": {"edgenode.io/revision": str(number)}},
        "spec": spec,
    }
    return Revision(number, body)


def confirmed_on(number: int, digest: str = "a") -> RolloutRecord:
    record = assign(RolloutRecord(), revision(number, digest), 0.0)
    record = observe(record, number, 1.0)
    record = step(record, 6.0)
    assert record.confirmed
    assert record.good is None
    return record


def test_an_assignment_builds_the_revision_from_its_template():
    app = {
        "apiVersion": "edgenode.io/v1",
        "kind": "App",
        "metadata": {"name": "svc", "labels": {"a": "b"}, "annotations": {"x": "y"}},
        "spec": {"command": ["./new"]},
    }
    template = {"nodeSelector": {}, "command": ["./old"], "strategy": STRATEGY}
    found = assigned_revision(app, {"spec": {"app": "svc", "revision": 2, "template": template}})
    assert found is not None
    assert found.number == 2
    assert found.spec == template
    assert found.body["metadata"]["annotations"] == {"x": "y", "edgenode.io/revision": "2"}
    assert found.body["metadata"]["labels"] == {"a": "b"}
    for bad in ({"spec": {"revision": 0, "template": {}}}, {"spec": {"revision": 2}}, {}):
        assert assigned_revision(app, bad) is None
    assert Timing.of(found) == Timing(5.0, 30.0)
    assert Timing.of(None) == Timing(0.0, 600.0)
    odd = revision(3, minReadySeconds=True, progressDeadlineSeconds=-1)
    assert Timing.of(odd) == Timing(0.0, 600.0)


def test_a_new_revision_keeps_the_good_one_until_ready_for_min_ready_seconds():
    record = confirmed_on(1, "a")
    record = assign(record, revision(2, "b"), 100.0)
    assert (record.revision, record.good.number if record.good else None) == (2, 1)
    assert not record.confirmed
    assert kept_digests(record) == {"a" * 64, "b" * 64}
    assert next_check(record) == 130.001  # the deadline
    # Ready, then not ready again before minReadySeconds: the clock starts over.
    record = observe(record, 2, 101.0)
    assert next_check(record) == 106.0
    assert step(record, 105.9) is record
    record = observe(record, 2, None)
    assert step(record, 107.0) is record
    record = observe(record, 2, 110.0)
    # A report of another revision (the old one still stopping) changes nothing.
    assert observe(record, 1, None) is record
    record = step(record, 115.0)
    assert record.confirmed
    assert record.good is None
    assert record.revision == 2
    assert kept_digests(record) == {"b" * 64}
    assert next_check(record) is None
    assert record.report() == {"rolledBack": False, "failedRevision": None, "rollbackReason": ""}


def test_not_ready_by_the_deadline_rolls_back_and_the_failed_revision_is_not_retried():
    record = assign(confirmed_on(1), revision(2, "b"), 100.0)
    problem = "CrashLoopBackOff (Error) exited with code 3; restarting in 4 s"
    assert step(record, 130.0, problem) is record  # at the deadline: not yet
    back = step(record, 130.5, problem)
    assert back.revision == 1
    assert back.confirmed
    assert back.rolled_back
    assert back.failed_revision == 2
    assert back.reason == (
        "revision 2 not ready within 30 s: CrashLoopBackOff (Error) exited with code 3; "
        "restarting in 4 s; rolled back to revision 1"
    )
    assert back.report()["rolledBack"] is True
    assert back.report()["failedRevision"] == 2
    # The hub still assigns 2 (it has not heard yet), or assigns 1 (the abort): stays.
    assert assign(back, revision(2, "b"), 140.0) is back
    assert assign(back, revision(1, "a"), 140.0) is back
    # A newer revision is tried; the rollback marks go with the switch.
    newer = assign(back, revision(3, "c"), 150.0)
    assert newer.revision == 3
    assert newer.good is not None
    assert newer.good.number == 1
    assert not newer.rolled_back
    assert newer.failed_revision == 2


def test_a_failure_no_retry_can_fix_rolls_back_at_once():
    record = assign(confirmed_on(1), revision(2), 100.0)
    back = step(record, 100.5, "Failed (DigestMismatch) artifact arrived with digest 00", True)
    assert back.revision == 1
    assert back.rolled_back
    assert back.reason.startswith("revision 2 failed: Failed (DigestMismatch)")


def test_a_failing_first_revision_has_nothing_to_go_back_to_and_stops():
    record = assign(RolloutRecord(), revision(1), 0.0)
    stopped = step(record, 31.0, "CrashLoopBackOff")
    assert stopped.current is None
    assert stopped.failed_revision == 1
    assert not stopped.rolled_back
    assert "no previous good revision" in stopped.reason
    assert assign(stopped, revision(1), 40.0) is stopped
    assert assign(stopped, revision(2), 40.0).revision == 2


def test_a_revision_replaced_before_it_was_confirmed_never_becomes_the_good_one():
    record = assign(confirmed_on(1), revision(2), 100.0)
    record = assign(record, revision(3), 110.0)  # the newest wins
    assert record.revision == 3
    assert record.good is not None
    assert record.good.number == 1
    back = step(record, 141.0)
    assert back.revision == 1
    assert back.failed_revision == 3
    # Sent back to the good revision by the hub before the deadline: nothing else kept.
    record = assign(confirmed_on(1), revision(2), 100.0)
    home = assign(record, revision(1), 105.0)
    assert home.revision == 1
    assert home.confirmed
    assert home.rolled_back
    assert home.failed_revision == 2
    assert home.reason == (
        "revision 2 not confirmed when the hub sent this node back; rolled back to revision 1"
    )
    assert assign(home, revision(2), 106.0) is home
    # Once confirmed, going back to an older revision is a plain switch.
    record = observe(record, 2, 101.0)
    record = step(record, 106.0)
    assert record.confirmed
    home = assign(record, revision(1), 107.0)
    assert home.revision == 1
    assert not home.confirmed
    assert not home.rolled_back
    assert home.good is not None
    assert home.good.number == 2


def test_no_assignment_keeps_what_runs_and_same_revision_edits_are_taken():
    record = confirmed_on(1)
    assert assign(record, None, 10.0) is record
    edited = revision(1)
    edited.spec["healthCheck"] = {"tcp": {"port": 80}}  # type: ignore[index]
    taken = assign(record, edited, 10.0)
    assert taken.current == edited
    assert taken.confirmed


def test_the_record_survives_a_restart_with_a_fresh_deadline():
    record = assign(confirmed_on(1), revision(2, "b"), 100.0)
    record = observe(record, 2, 101.0)
    again = RolloutRecord.decode(record.encode(), 500.0)
    assert again.current == record.current
    assert again.good == record.good
    assert again.switched_at == 500.0
    assert again.ready_since is None
    assert not again.confirmed
    back = step(assign(again, revision(2, "b"), 501.0), 531.0)
    assert back.revision == 1
    assert back.rolled_back
    stored = RolloutRecord.decode(back.encode(), 600.0)
    assert (stored.revision, stored.rolled_back, stored.failed_revision) == (1, True, 2)
    assert stored.reason == back.reason
    for damaged in (b"", b"{", b"[]", None):
        assert RolloutRecord.decode(damaged, 1.0) == RolloutRecord()


def test_a_revision_never_confirmed_over_three_daemon_starts_is_rolled_back():
    record = assign(confirmed_on(1), revision(2, "b"), 100.0)
    for start in (1, 2):
        record = RolloutRecord.decode(record.encode(), 200.0 + start)
        assert record.starts == start
        assert step(record, 210.0 + start) is record  # a fresh deadline each time
    record = RolloutRecord.decode(record.encode(), 300.0)
    assert record.starts == 3
    back = step(record, 300.0)
    assert back.revision == 1
    assert back.rolled_back
    assert back.reason == (
        "revision 2 not ready after 3 starts of the node daemon; rolled back to revision 1"
    )
    assert back.starts == 0
    # Confirmed in time: the count is over.
    record = assign(confirmed_on(1), revision(2), 100.0)
    record = RolloutRecord.decode(record.encode(), 200.0)
    record = step(observe(record, 2, 201.0), 207.0)
    assert record.confirmed
    assert record.starts == 0
    assert RolloutRecord.decode(record.encode(), 300.0).starts == 0

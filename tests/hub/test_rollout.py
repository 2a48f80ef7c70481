"""The rollout planner (sans-I/O, time passed in): waves in order, at most maxUnavailable
moving at a time, done after minReadySeconds ready, failures (rollbacks, the progress
deadline) aborting a wave past its threshold and sending it back, offline nodes pending
rather than failed, pause, and a newer revision during a rollout."""

from __future__ import annotations

from dataclasses import replace

from edgehub.rollout import (
    ABORTED,
    COMPLETE,
    PAUSED,
    PROGRESSING,
    NodeView,
    RolloutState,
    parse_strategy,
    plan,
    start,
)

STRATEGY = parse_strategy(
    {
        "waves": [
            {"name": "canary", "nodeSelector": {"ring": "canary"}},
            {"name": "north", "nodeSelector": {"site": "north"}, "maxUnavailable": 1},
            {"name": "rest"},
        ],
        "minReadySeconds": 30,
        "progressDeadlineSeconds": 600,
    }
)
LABELS = {
    "c1": {"ring": "canary", "site": "north"},
    "n1": {"site": "north"},
    "n2": {"site": "north"},
    "s1": {"site": "south"},
    "s2": {"site": "south"},
}


class Fleet:
    """Nodes reporting what they run, stepping the planner as the hub does."""

    def __init__(self, strategy=STRATEGY, labels=LABELS, previous=1, revision=2) -> None:
        self.strategy = strategy
        self.views = {
            name: NodeView(name, labels_, connected=True, connected_since=0.0, revision=previous,
                           ready=True, ready_since=0.0)
            for name, labels_ in labels.items()
        }  # fmt: skip
        self.state = start(revision, previous, None)
        self.assigned: dict[str, int] = dict.fromkeys(labels, previous)
        self.now = 0.0

    def step(self, *, paused: bool = False):
        result = plan(
            self.strategy, self.state, list(self.views.values()), self.assigned, self.now,
            paused=paused,
        )  # fmt: skip
        self.state = result.state
        self.assigned = result.assignments
        return result

    def run_assigned(self, *, bad: int | None = None) -> None:
        """Every connected node runs its assignment: ready at once, unless it is ``bad``
        (then it rolls back and reports so)."""
        for name, view in self.views.items():
            if not view.connected:
                continue
            revision = self.assigned[name]
            if revision == bad:
                self.views[name] = replace(view, revision=self.state.previous,
                                           failed_revision=bad)  # fmt: skip
            elif view.revision != revision:
                self.views[name] = replace(view, revision=revision, ready=True,
                                           ready_since=self.now)  # fmt: skip

    def on(self, revision: int) -> set[str]:
        return {name for name, rev in self.assigned.items() if rev == revision}


def test_a_good_revision_goes_out_wave_by_wave_and_completes():
    fleet = Fleet()
    fleet.step()
    assert fleet.on(2) == {"c1"}  # the canary first
    fleet.run_assigned()
    fleet.now = 10
    fleet.step()
    assert fleet.on(2) == {"c1"}  # not ready for 30 s yet
    fleet.now = 31
    fleet.step()
    assert fleet.state.wave == 1
    fleet.step()
    assert fleet.on(2) == {"c1", "n1"}  # north one at a time
    fleet.run_assigned()
    fleet.now = 62
    fleet.step()
    assert fleet.on(2) == {"c1", "n1", "n2"}
    fleet.run_assigned()
    fleet.now = 93
    fleet.step()
    fleet.step()
    assert fleet.on(2) == set(LABELS)  # the rest at once
    fleet.run_assigned()
    fleet.now = 124
    result = fleet.step()
    assert fleet.state.state == COMPLETE
    assert [w.name for w in result.waves] == ["canary", "north", "rest"]
    assert all(not w.pending and not w.failed for w in result.waves)


def test_a_bad_revision_fails_in_the_canary_aborts_and_no_later_wave_ever_gets_it():
    fleet = Fleet()
    fleet.step()
    fleet.run_assigned(bad=2)
    fleet.now = 5
    result = fleet.step()
    assert fleet.state.state == ABORTED
    assert "c1: rolled back from revision 2" in fleet.state.reason
    assert fleet.on(2) == set()  # the canary is told to go back
    assert result.waves[0].failed == ("c1",)
    for later in range(10):
        fleet.now = 100 + later * 100
        fleet.step()
        assert fleet.on(2) == set()


def test_a_node_that_never_gets_ready_fails_at_the_progress_deadline():
    fleet = Fleet()
    fleet.step()
    fleet.views["c1"] = replace(fleet.views["c1"], revision=2, ready=False, ready_since=None)
    fleet.now = 599
    fleet.step()
    assert fleet.state.state == PROGRESSING
    fleet.now = 601
    fleet.step()
    assert fleet.state.state == ABORTED
    assert "not ready 600 s after" in fleet.state.failed["c1"]


def test_an_offline_node_is_pending_until_the_deadline_after_it_returns():
    fleet = Fleet(labels={"c1": {"ring": "canary"}, "s1": {}})
    fleet.views["c1"] = replace(fleet.views["c1"], connected=False, connected_since=None)
    fleet.step()
    assert fleet.on(2) == {"c1"}  # moved while offline: it gets it when it returns
    fleet.now = 5000
    fleet.step()
    assert fleet.state.state == PROGRESSING  # pending, not failed, while away
    fleet.views["c1"] = replace(fleet.views["c1"], connected=True, connected_since=5000)
    fleet.now = 5500
    fleet.step()
    assert fleet.state.state == PROGRESSING
    fleet.now = 5601
    fleet.step()
    assert fleet.state.state == ABORTED


def test_a_failure_within_the_threshold_lets_the_wave_complete():
    strategy = parse_strategy({"waves": [{"name": "all"}], "failureThreshold": "50%"})
    fleet = Fleet(strategy=strategy, labels={"a": {}, "b": {}})
    fleet.step()
    fleet.views["a"] = replace(fleet.views["a"], failed_revision=2)
    fleet.views["b"] = replace(fleet.views["b"], revision=2, ready=True, ready_since=0.0)
    result = fleet.step()
    assert fleet.state.state == COMPLETE
    assert result.waves[0].failed == ("a",)


def test_pause_moves_nobody_new_and_resume_goes_on():
    fleet = Fleet()
    fleet.step(paused=True)
    assert fleet.on(2) == set()
    assert fleet.state.state == PAUSED
    fleet.step()
    assert fleet.on(2) == {"c1"}


def test_a_newer_revision_during_a_rollout_restarts_it_from_the_same_previous_good():
    state = RolloutState(2, 1, PROGRESSING, wave=1, moved={"c1": 0.0})
    newer = start(3, previous_good=2, current=state)
    assert (newer.revision, newer.previous, newer.moved) == (3, 1, {})
    done = RolloutState(2, 1, COMPLETE)
    assert start(3, previous_good=2, current=done).previous == 2
    assert start(2, previous_good=1, current=state) is state


def test_state_survives_a_round_trip_through_json():
    state = RolloutState(4, 3, ABORTED, 2, {"a": 1.5}, {"a": "why"}, "reason")
    assert RolloutState.from_json(state.to_json()) == state

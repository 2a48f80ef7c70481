"""Generated operation sequences on TwinService: the invariants hold after every step.

- the reported version counts exactly the reports that changed the reported document;
- the retained delta the device was last given equals the twin's current delta;
- what the store holds is what the service serves (a fresh service on the same file
  answers the same twin) — on both store backends.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from conftest import native_core
from edgenode import _pure
from edgenode.devices import DeviceSpec, Publish, RouteTable, TwinService

KEYS = st.sampled_from(["a", "b", "c"])
LEAF = st.one_of(st.none(), st.booleans(), st.integers(-2, 2), st.sampled_from([1.0, "x", []]))
PATCH = st.recursive(
    st.dictionaries(KEYS, LEAF, max_size=3),
    lambda inner: st.dictionaries(KEYS, st.one_of(LEAF, inner), max_size=3),
    max_leaves=6,
)
OPERATION = st.one_of(
    st.tuples(st.just("report"), PATCH),
    st.tuples(st.just("desired"), PATCH),
    st.tuples(st.just("desired-merge"), PATCH),
    st.tuples(st.just("junk"), st.binary(max_size=20)),
)
DELTA_TOPIC = "$edge/devices/dev/twin/delta"


def run_sequence(store_class: Any, operations: list[tuple[str, Any]]) -> None:
    with tempfile.TemporaryDirectory() as directory:
        path = str(Path(directory) / "node.db")
        store = store_class(path)
        svc = TwinService(store, [DeviceSpec("dev")], RouteTable())
        device_delta: bytes = b""
        changes = 0
        for step, (kind, argument) in enumerate(operations):
            now = float(step)
            before = svc.twin("dev")
            if kind == "report":
                payload = json.dumps({"reported": argument}).encode()
                actions = svc.handle("$edge/devices/dev/twin/update", payload, now)
            elif kind == "junk":
                actions = svc.handle("$edge/devices/dev/twin/update", argument, now)
            else:
                actions = svc.set_desired("dev", argument, now, merge=kind == "desired-merge")
            after = svc.twin("dev")
            if after["reported"] != before["reported"] or _types(after) != _types(before):
                changes += 1
            assert after["version"]["reported"] == changes
            for action in actions:
                if isinstance(action, Publish) and action.topic == DELTA_TOPIC:
                    device_delta = action.payload
            expected = after["delta"]
            held = json.loads(device_delta) if device_delta else None
            assert (held["delta"] if held else {}) == expected
            if held:
                assert held["version"] == after["version"]["desired"]
        store.close()
        reopened = store_class(path)
        try:
            again = TwinService(reopened, [DeviceSpec("dev")], RouteTable())
            assert again.startup_actions() == []
            assert again.twin("dev") == svc.twin("dev")
        finally:
            reopened.close()


def _types(twin: dict[str, Any]) -> str:
    """The reported document with its JSON types visible (``True`` vs ``1``)."""
    return json.dumps(twin["reported"], sort_keys=True)


@settings(max_examples=60)
@given(st.lists(OPERATION, max_size=12))
def test_invariants_hold_on_the_python_store(operations):
    run_sequence(_pure.Store, operations)


@settings(max_examples=60)
@given(st.lists(OPERATION, max_size=12))
def test_invariants_hold_on_the_rust_store(operations):
    run_sequence(native_core().Store, operations)

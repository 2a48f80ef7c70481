"""``handle_batch`` on the Rust core against the pure twin, and against the message-by-message
path it replaces.

The same generated batches of MQTT messages (reports valid, malformed and oversized,
reports of unknown devices, gets, states, telemetry, routed topics, misspelt operations,
QoS 0 and 1, mixed in any order) go through three nodes, each on its own store:

- ``python`` and ``rust``: the batch call of that backend (its Store, DeviceTwin and
  TopicRouter), with the fallback the device layer uses (``DeviceLayer._batch_in_core``);
- ``reference``: the path before the batch call — ``TwinService.handle_many`` on the whole
  batch, the held twins and the enveloped records committed in one ``commit_batch``.

Every result field, every counter, every outbox row (payload bytes included) and every
stored twin must be identical; the three must publish the same bytes.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from twin_strategies import PATCH

from conftest import native_core
from edgenode import _pure
from edgenode.devices import DeviceSpec, RouteSpec, RouteTable, TwinService
from edgenode.devices.actions import Uplink
from edgenode.devices.bus import DeferredTwinWrites
from edgenode.devices.twins import TWIN_UPLINK_PRIORITY
from edgenode.devtwin import MAX_PAYLOAD_BYTES
from edgenode.errors import StoreError
from edgenode.uplink import encode_uplink_raw, envelope_head

ROOT = "$edge/devices"
NODE = "ship-é"
TTL = 3600.0
DEVICES = st.sampled_from(["lamp", "pump", "fan", "ghost", ""])
OVERSIZED = b'{"reported": {"a": "' + b"x" * MAX_PAYLOAD_BYTES + b'"}}'


@st.composite
def update_payloads(draw: st.DrawFn) -> bytes:
    body: dict[str, Any] = {}
    if draw(st.integers(0, 5)):
        body["reported"] = draw(PATCH)
    if draw(st.integers(0, 3)) == 0:
        body["ack"] = {
            "version": draw(st.integers(0, 3)),
            "status": draw(st.sampled_from(["accepted", "rejected", "bad"])),
        }
    token = draw(st.one_of(st.none(), st.sampled_from(["t-1", "é", ""])))
    if token is not None:
        body["clientToken"] = token
    text = json.dumps(body, ensure_ascii=draw(st.booleans()))
    mangle = draw(st.integers(0, 20))
    if mangle == 0:
        text = text[:-1]
    elif mangle == 1:
        text = text.replace('"a"', '"\\ud800"')
    elif mangle == 2:
        text = '{"clientToken": "deep", "reported": ' + "[" * 70 + "]" * 70 + "}"
    elif mangle == 3:
        return b"\xff\xfe"
    elif mangle == 4:
        return OVERSIZED
    return text.encode()


SIMPLE_REPORTS = st.builds(
    lambda reported: json.dumps({"reported": reported}).encode(),
    st.dictionaries(
        st.sampled_from(["a", "b"]), st.sampled_from([1, 2, None, {"c": 2}]), min_size=1
    ),
)
"""Reports that move the deltas of lamp (desired a: 1) and fan (desired b: {c: 2})."""
SERVED = st.sampled_from(["lamp", "pump", "fan"])

MESSAGES = st.one_of(
    st.tuples(SERVED, st.just("twin/update"), SIMPLE_REPORTS),
    st.tuples(SERVED, st.just("twin/update"), SIMPLE_REPORTS),
    st.tuples(SERVED, st.just("twin/update"), update_payloads()),
    st.tuples(DEVICES, st.just("twin/update"), update_payloads()),
    st.tuples(DEVICES, st.just("twin/get"), st.sampled_from([b"", b'{"clientToken":"g"}', b"x"])),
    st.tuples(DEVICES, st.just("state"), st.sampled_from([b"online", b"offline", b"on"])),
    st.tuples(DEVICES, st.sampled_from(["telemetry/t", "twin/updte", "twin/delta"]), st.binary()),
    st.tuples(st.just("other"), st.just("x/y"), st.binary(max_size=8)),
)
BATCH = st.lists(st.tuples(MESSAGES, st.sampled_from([0, 1]), st.integers(1, 65535)), max_size=12)
ROUTED = st.sampled_from([(), ("$edge/devices/pump/#",), ("$edge/devices/+/twin/update", "x/#")])


def topic_of(device: str, operation: str) -> str:
    return operation if device == "other" else f"{ROOT}/{device}/{operation}"


def service(device_twin: Any, store: Any, routes: tuple[str, ...]) -> tuple[Any, Any]:
    writes = DeferredTwinWrites(store)
    table = RouteTable([RouteSpec(f, priority=2) for f in routes])
    svc = TwinService(
        writes,
        [DeviceSpec("lamp", {"a": 1}), DeviceSpec("pump"), DeviceSpec("fan", {"b": {"c": 2}})],
        table,
        now=50.0,
        device_twin=device_twin,
    )
    return svc, writes


def batch_node(core: ModuleType, path: str, routes: tuple[str, ...], batches: list[Any]) -> Any:
    """The batch call of ``core``, with the device layer's fallback."""
    store = core.Store(path)
    try:
        svc, writes = service(core.DeviceTwin, store, routes)
        router = None
        if routes:
            router = core.TopicRouter()
            for index, pattern in enumerate(routes):
                router.add(pattern, index)
        trace: list[Any] = []
        for step, batch in enumerate(batches):
            now = 100.0 + step * 0.25
            messages = [
                (topic_of(device, operation), payload, qos, mid)
                for (device, operation, payload), qos, mid in batch
            ]
            fallen: list[int] = []

            def fallback(
                index: int, messages: Any = messages, now: float = now, fallen: Any = fallen
            ) -> Any:
                fallen.append(index)
                name, payload, _, _ = messages[index]
                publishes, records = [], []
                for action in svc.handle_many([(name, payload)], now):
                    if isinstance(action, Uplink):
                        data = encode_uplink_raw(action.kind, action.body, NODE, now)
                        ttl = TTL if action.ttl is None else action.ttl
                        records.append(
                            (action.kind, data, action.priority, ttl, action.coalesce_key)
                        )
                    else:
                        publishes.append((action.topic, action.payload, action.retain, action.qos))
                return publishes, records, writes.take_fresh()

            heads = (envelope_head("twin", NODE, now), envelope_head("device-state", NODE, now))
            writes.deferring = True
            result = core.handle_batch(
                store,
                svc.cached_twins,
                router,
                messages,
                now,
                heads,
                TWIN_UPLINK_PRIORITY,
                TTL,
                fallback,
            )
            writes.committed()
            svc.counters.update(result.counters)
            trace.append(
                (
                    result.publishes,
                    result.acks,
                    result.counters,
                    result.appended,
                    result.urgent,
                    result.refused,
                    result.oversize,
                    result.fast,
                    fallen,
                )
            )
        return trace, dict(svc.counters), outbox(store), twins(store)
    finally:
        store.close()


def reference_node(path: str, routes: tuple[str, ...], batches: list[Any]) -> Any:
    """The path before the batch call: the whole batch through TwinService, committed."""
    store = _pure.Store(path)
    try:
        svc, writes = service(_pure.DeviceTwin, store, routes)
        publishes_per_batch = []
        for step, batch in enumerate(batches):
            now = 100.0 + step * 0.25
            writes.deferring = True
            actions = svc.handle_many(
                [
                    (topic_of(device, operation), payload)
                    for (device, operation, payload), _, _ in batch
                ],
                now,
            )
            records = [
                (
                    encode_uplink_raw(a.kind, a.body, NODE, now),
                    a.priority,
                    TTL if a.ttl is None else a.ttl,
                    a.coalesce_key,
                )
                for a in actions
                if isinstance(a, Uplink)
            ]
            held = writes.held()
            if records or held:
                store.commit_batch(held, records)
            writes.committed()
            publishes_per_batch.append(
                [
                    (a.topic, a.payload, a.retain, a.qos)
                    for a in actions
                    if not isinstance(a, Uplink)
                ]
            )
        return publishes_per_batch, dict(svc.counters), outbox(store), twins(store)
    finally:
        store.close()


def outbox(store: Any) -> list[tuple[int, int, bytes]]:
    return store.peek(10_000)


def twins(store: Any) -> list[bytes | None]:
    return [store.get_twin(device) for device in ("lamp", "pump", "fan", "ghost")]


@settings(max_examples=80, deadline=None)
@given(st.lists(BATCH, max_size=4), ROUTED)
def test_the_batch_call_is_the_same_on_both_backends_and_as_message_by_message(
    batches: list[Any], routes: tuple[str, ...]
) -> None:
    rust = native_core()
    with tempfile.TemporaryDirectory() as directory:
        python = batch_node(_pure, str(Path(directory) / "python.db"), routes, batches)
        native = batch_node(rust, str(Path(directory) / "rust.db"), routes, batches)
        reference = reference_node(str(Path(directory) / "reference.db"), routes, batches)
    assert python == native
    trace, counters, rows, stored = python
    published, ref_counters, ref_rows, ref_stored = reference
    assert [step[0] for step in trace] == published
    assert counters == ref_counters
    assert rows == ref_rows
    assert stored == ref_stored
    for step, batch in zip(trace, batches, strict=True):
        assert step[1] == [(mid, qos) for _, qos, mid in batch if qos > 0]


def test_reports_of_served_devices_take_the_fast_path_and_others_fall_back(tmp_path: Path) -> None:
    for core in (_pure, native_core()):
        batches = [
            [
                (("lamp", "twin/update", b'{"reported":{"a":1},"clientToken":"x"}'), 1, 7),
                (("ghost", "twin/update", b'{"reported":{"a":1}}'), 1, 8),
                (("pump", "twin/update", b"{not json"), 0, 9),
                (("pump", "twin/update", OVERSIZED), 1, 10),
                (("lamp", "state", b"online"), 1, 11),
                (("pump", "twin/update", b'{"reported":{"b":[1,2]}}'), 1, 12),
            ]
        ]
        trace, counters, rows, _ = batch_node(
            core, str(tmp_path / f"{core.__name__}.db"), (), batches
        )
        (publishes, acks, fast_counters, appended, urgent, refused, oversize, fast, fallen) = trace[
            0
        ]
        assert fast == 2
        assert fallen == [1, 2, 3, 4]
        assert acks == [(7, 1), (8, 1), (10, 1), (11, 1), (12, 1)]
        assert fast_counters["updates_accepted"] == 2
        assert counters["rejected_404"] == 1
        assert counters["rejected_400"] == 1
        assert counters["rejected_413"] == 1
        topics = [p[0] for p in publishes]
        assert topics[:2] == [f"{ROOT}/lamp/twin/update/accepted", f"{ROOT}/lamp/twin/delta"]
        assert f"{ROOT}/ghost/twin/update/rejected" in topics
        assert (appended, urgent, refused, oversize) == (len(rows), 3, [], [])
        kinds = [json.loads(payload)["kind"] for _, _, payload in rows]
        assert kinds == ["twin", "device-state", "twin"]
        assert all(json.loads(payload)["node"] == NODE for _, _, payload in rows)


def test_a_failed_commit_raises_store_error_on_both_backends(tmp_path: Path) -> None:
    message = (f"{ROOT}/lamp/twin/update", b'{"reported":{"a":2}}', 1, 1)
    heads = (envelope_head("twin", NODE, 1.0), envelope_head("device-state", NODE, 1.0))
    for core in (_pure, native_core()):
        store = core.Store(str(tmp_path / f"{core.__name__}.db"))
        twins = {"lamp": core.DeviceTwin("lamp")}
        store.close()
        with pytest.raises(StoreError, match="closed"):
            core.handle_batch(store, twins, None, [message], 1.0, heads, 3, None, None)


@pytest.mark.parametrize(
    "message",
    [
        ("t", b"", 1),
        [f"{ROOT}/lamp/twin/update", b"{}", 1, 1],
        (f"{ROOT}/lamp/twin/update", "{}", 1, 1),
        (f"{ROOT}/lamp/twin/update", b"{}", 3, 1),
        (f"{ROOT}/lamp/twin/update", b"{}", 1, "1"),
    ],
)
def test_bad_messages_are_refused_alike(tmp_path: Path, message: Any) -> None:
    heads = (b"h", b"h")
    errors = []
    for core in (_pure, native_core()):
        store = core.Store(str(tmp_path / f"{core.__name__}.db"))
        try:
            with pytest.raises(TypeError) as caught:
                core.handle_batch(store, {}, None, [message], 1.0, heads, 3, None, None)
            errors.append(str(caught.value))
        finally:
            store.close()
    assert errors[0] == errors[1]
    assert errors[0].startswith("a message must be a (topic: str, payload: bytes")


def test_parts_of_another_backend_are_refused(tmp_path: Path) -> None:
    rust = native_core()
    store = rust.Store(str(tmp_path / "r.db"))
    message = (f"{ROOT}/lamp/twin/update", b"{}", 1, 1)
    try:
        with pytest.raises(TypeError, match="extension's DeviceTwin"):
            rust.handle_batch(
                store, {"lamp": _pure.DeviceTwin("lamp")}, None, [message], 1.0, (b"", b""), 3,
                None, None,
            )  # fmt: skip
    finally:
        store.close()
    with pytest.raises(TypeError, match="extension's Store"):
        rust.handle_batch(object(), {}, None, [], 1.0, (b"", b""), 3, None, None)

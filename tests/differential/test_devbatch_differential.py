"""``handle_batch`` on the Rust core against the pure twin, and against the message-by-message
path it replaces.

The same generated batches of MQTT messages (reports valid, malformed and oversized,
reports of unknown devices, gets, states, telemetry, routed topics, misspelt operations,
QoS 0 and 1, mixed in any order; telemetry and other topics through upstream, disabled
and republish routes, payloads of any bytes, invalid UTF-8 and oversized) go through three
nodes, each on its own store:

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
from edgenode.devices.config import DEFAULT_TELEMETRY_PRIORITY
from edgenode.devices.twins import MAX_TELEMETRY_BYTES, TWIN_UPLINK_PRIORITY
from edgenode.devtwin import MAX_PAYLOAD_BYTES
from edgenode.errors import StoreError
from edgenode.uplink import MAX_BODY_BYTES, encode_uplink_raw, envelope_head

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
TELEMETRY_PAYLOADS = st.one_of(
    st.binary(max_size=12),
    st.text(max_size=12).map(lambda text: text.encode("utf-8", "surrogatepass")),
    st.sampled_from(
        [
            b'{"t": 21.5, "unit": "\xc2\xb0C"}',
            b'"quoted" \\ back\nslash\r\t\x00\x1f\x7f \xe2\x80\xa8',
            b"\xed\xa0\x80",  # a UTF-8-encoded surrogate: not UTF-8, so base64
            b"x" * MAX_TELEMETRY_BYTES,
            b"x" * (MAX_TELEMETRY_BYTES + 1),  # too large to go upstream
            b"\x01" * (MAX_BODY_BYTES // 6 + 1),  # escaped, its body is too large
            b"\xff" * MAX_TELEMETRY_BYTES,  # base64: its body is too large
            b"\xff" * (3 * 1024),  # base64 with two '=' of padding
            b"\xff" * (3 * 1024 + 1),
        ]
    ),
)

MESSAGES = st.one_of(
    st.tuples(SERVED, st.just("twin/update"), SIMPLE_REPORTS),
    st.tuples(SERVED, st.just("twin/update"), SIMPLE_REPORTS),
    st.tuples(SERVED, st.just("twin/update"), update_payloads()),
    st.tuples(DEVICES, st.just("twin/update"), update_payloads()),
    st.tuples(DEVICES, st.just("twin/get"), st.sampled_from([b"", b'{"clientToken":"g"}', b"x"])),
    st.tuples(DEVICES, st.just("state"), st.sampled_from([b"online", b"offline", b"on"])),
    st.tuples(DEVICES, st.sampled_from(["telemetry/t", "twin/updte", "twin/delta"]), st.binary()),
    st.tuples(st.just("other"), st.just("x/y"), st.binary(max_size=8)),
    st.tuples(
        DEVICES, st.sampled_from(["telemetry/t", "telemetry", "telemetry/a/b"]), TELEMETRY_PAYLOADS
    ),
    st.tuples(DEVICES, st.sampled_from(["telemetry/t", "telemetry/a/b"]), TELEMETRY_PAYLOADS),
    st.tuples(st.just("other"), st.sampled_from(["x/y", "x/é", "q", "$SYS/x"]), TELEMETRY_PAYLOADS),
)
BATCH = st.lists(st.tuples(MESSAGES, st.sampled_from([0, 1]), st.integers(1, 65535)), max_size=12)
Route = tuple[str, str, int, float | None, bool]
"""(from, to, priority, ttl, enabled) of a RouteSpec."""
ROUTED: st.SearchStrategy[tuple[Route, ...]] = st.sampled_from(
    [
        (),
        (("$edge/devices/pump/#", "upstream", 2, None, True),),
        (
            ("$edge/devices/+/twin/update", "upstream", 2, None, True),
            ("x/#", "upstream", 2, None, True),
        ),
        (("$edge/devices/+/telemetry/#", "upstream", 4, None, True),),
        (
            ("$edge/devices/+/telemetry/#", "upstream", 4, 60.0, True),
            ("$edge/devices/lamp/telemetry/#", "upstream", 1, 30, True),
            ("$edge/devices/+/telemetry/t", "upstream", 4, None, True),
            ("x/#", "upstream", 4, 90.0, True),
        ),
        (
            ("$edge/devices/fan/telemetry/#", "upstream", 2, None, False),
            ("x/y", "topic:copy/y", 5, None, True),
            ("$edge/devices/ghost/#", "upstream", 6, 5.0, True),
            ("+", "upstream", 9, 7.5, True),
        ),
        (
            ("$edge/devices/+/telemetry/t", "topic:local/t", 5, None, False),
            ("$edge/devices/+/telemetry/t", "topic:local/u/v", 5, None, True),
            ("$edge/devices/+/telemetry/#", "upstream", 3, 10.0, True),
            ("+/+", "upstream", 0, None, False),
        ),
    ]
)


def topic_of(device: str, operation: str) -> str:
    return operation if device == "other" else f"{ROOT}/{device}/{operation}"


def service(device_twin: Any, store: Any, routes: tuple[Route, ...]) -> tuple[Any, Any]:
    writes = DeferredTwinWrites(store)
    table = RouteTable(
        [
            RouteSpec(pattern, to, priority=priority, ttl=ttl, enabled=enabled)
            for pattern, to, priority, ttl, enabled in routes
        ]
    )
    svc = TwinService(
        writes,
        [DeviceSpec("lamp", {"a": 1}), DeviceSpec("pump"), DeviceSpec("fan", {"b": {"c": 2}})],
        table,
        now=50.0,
        device_twin=device_twin,
    )
    return svc, writes


def batch_node(
    core: ModuleType,
    path: str,
    routes: tuple[Route, ...],
    batches: list[Any],
    routed_fast: bool = True,
) -> Any:
    """The batch call of ``core``, with the device layer's fallback (and its ``routing``
    unless not ``routed_fast``)."""
    store = core.Store(path)
    try:
        svc, writes = service(core.DeviceTwin, store, routes)
        router = None
        if routes:
            router = core.TopicRouter()
            for index, (pattern, *_) in enumerate(routes):
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
            routing = (
                svc.routes.batch_rules,
                svc.known_devices,
                envelope_head("telemetry", NODE, now),
                DEFAULT_TELEMETRY_PRIORITY,
            )
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
                routing if routed_fast else None,
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


def reference_node(path: str, routes: tuple[Route, ...], batches: list[Any]) -> Any:
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
    batches: list[Any], routes: tuple[Route, ...]
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


def test_messages_that_only_go_upstream_take_the_fast_path_with_routing(tmp_path: Path) -> None:
    routes: tuple[Route, ...] = (
        ("$edge/devices/+/telemetry/#", "upstream", 4, None, True),
        ("$edge/devices/fan/telemetry/#", "upstream", 1, 20.0, True),
        ("x/#", "upstream", 6, 90, True),
        ("x/copied", "topic:copies/x", 5, None, True),
    )
    batch = [
        (("lamp", "telemetry/t", b'{"t":1}'), 1, 1),  # fast: known, route priority 4
        (("ghost", "telemetry", b"\xff"), 1, 2),  # fast: unknown, but a route wants it
        (("fan", "telemetry/a/b", b"x"), 0, 3),  # fast: the most urgent route, its TTL
        (("lamp", "telemetry/t", b"x" * (MAX_TELEMETRY_BYTES + 1)), 1, 4),  # too large
        (("", "telemetry/t", b"x"), 1, 5),  # names no device
        (("lamp", "twin/update", b'{"reported":{"a":1}}'), 1, 6),  # the report fast path
        (("lamp", "twin/get", b""), 1, 7),  # a reply to publish
        (("other", "x/y", b"plain"), 1, 8),  # fast: a topic outside $ that a route wants
        (("other", "x/copied", b"c"), 1, 9),  # republished too: the fallback's
        (("other", "q", b"q"), 1, 10),  # no route: nowhere
    ]
    results = []
    for core in (_pure, native_core()):
        trace, counters, rows, _ = batch_node(
            core, str(tmp_path / f"{core.__name__}.db"), routes, [batch]
        )
        (publishes, _, fast_counters, appended, urgent, _, _, fast, fallen) = trace[0]
        assert fast == 5
        assert fallen == [3, 4, 6, 8, 9]
        assert fast_counters == {
            "messages": 4 + 1,
            "telemetry": 2,
            "uplink_telemetry": 4,
            "updates_accepted": 1,
            "reports_changed": 1,
            "delta_cleared": 1,
            "uplink_twin": 1,
        }
        assert counters["uplink_too_large"] == 1
        assert counters["uncorrelatable"] == 1
        assert counters["republished"] == 1
        records = [json.loads(payload) for _, _, payload in rows]
        telemetry = [r["body"] for r in records if r["kind"] == "telemetry"]
        # The outbox hands records out by priority: fan's route is the most urgent.
        assert [(b["device"], b["topic"], b["encoding"]) for b in telemetry] == [
            ("fan", f"{ROOT}/fan/telemetry/a/b", "utf-8"),
            ("lamp", f"{ROOT}/lamp/telemetry/t", "utf-8"),
            ("ghost", f"{ROOT}/ghost/telemetry", "base64"),
            (None, f"{ROOT}//telemetry/t", "utf-8"),  # the fallback's, as TwinService does
            (None, "x/y", "utf-8"),
            (None, "x/copied", "utf-8"),
        ]
        assert (appended, urgent) == (len(rows), 1)
        results.append((publishes, counters, rows))
    assert results[0] == results[1]


def test_the_batch_call_without_routing_falls_back_as_before(tmp_path: Path) -> None:
    routes: tuple[Route, ...] = (("$edge/devices/+/telemetry/#", "upstream", 4, None, True),)
    batch = [((device, "telemetry/t", b"1"), 1, n) for n, device in enumerate(["lamp", "ghost"])]
    for core in (_pure, native_core()):
        trace, _, rows, _ = batch_node(
            core, str(tmp_path / f"{core.__name__}.db"), routes, [batch], routed_fast=False
        )
        assert (trace[0][-2], trace[0][-1]) == (0, [0, 1])
        assert len(rows) == 2


def test_the_limits_are_the_device_layers() -> None:
    assert _pure.devbatch.MAX_TELEMETRY_BYTES == MAX_TELEMETRY_BYTES
    assert _pure.devbatch.MAX_BODY_BYTES == MAX_BODY_BYTES


@pytest.mark.parametrize(
    "routing",
    [
        [(), set(), b"h", 5],
        ((), set(), b"h"),
        ((), set(), "h", 5),
        ((), set(), b"h", 10),
        ((), set(), b"h", True),
        ({(False, True, 1, None)}, set(), b"h", 5),
        ([(False, True, 1)], set(), b"h", 5),
        ([(0, True, 1, None)], set(), b"h", 5),
        ([(False, 1, 1, None)], set(), b"h", 5),
        ([(False, True, -1, None)], set(), b"h", 5),
        ([(False, True, 1, "5")], set(), b"h", 5),
        ([(False, True, 1, True)], set(), b"h", 5),
        ([[False, True, 1, None]], set(), b"h", 5),
    ],
)
def test_bad_routing_is_refused_alike(tmp_path: Path, routing: Any) -> None:
    errors = []
    for core in (_pure, native_core()):
        store = core.Store(str(tmp_path / f"{core.__name__}.db"))
        try:
            with pytest.raises(TypeError) as caught:
                core.handle_batch(store, {}, None, [], 1.0, (b"", b""), 3, None, None, routing)
            errors.append(str(caught.value))
        finally:
            store.close()
    assert errors[0] == errors[1]
    assert errors[0].startswith("routing must be a (rules: sequence of (republish: bool")


def test_a_route_index_without_a_rule_is_refused_alike(tmp_path: Path) -> None:
    errors = []
    message = (f"{ROOT}/lamp/telemetry/t", b"1", 1, 1)
    for core in (_pure, native_core()):
        router = core.TopicRouter()
        router.add("$edge/#", 3)
        store = core.Store(str(tmp_path / f"{core.__name__}.db"))
        try:
            with pytest.raises(ValueError, match="no rule") as caught:
                core.handle_batch(
                    store, {}, router, [message], 1.0, (b"", b""), 3, None, None,
                    ([(False, True, 1, None)], {"lamp"}, b"{", 5),
                )  # fmt: skip
            errors.append(str(caught.value))
        finally:
            store.close()
    assert errors == ["routing has no rule for route 3"] * 2

"""TwinService on the Rust DeviceTwin against TwinService on the pure one.

The same generated stream of MQTT messages (reports valid and hostile, acks, gets,
states, unknown devices) and desired changes goes through two services, one per
DeviceTwin backend, each on its own store: every action (topic, payload bytes, retain
flag, uplink record) and every counter must be identical, and so must the stored twins.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st
from twin_strategies import PATCH

from conftest import native_core
from edgenode import _pure
from edgenode.devices import DeviceSpec, RouteTable, TwinService

ROOT = "$edge/devices"
DEVICES = st.sampled_from(["lamp", "pump", "ghost"])
TOKEN = st.one_of(st.none(), st.sampled_from(["t-1", "é", ""]))


@st.composite
def update_payloads(draw: st.DrawFn) -> bytes:
    body: dict[str, Any] = {}
    if draw(st.booleans()):
        body["reported"] = draw(PATCH)
    if draw(st.integers(0, 3)) == 0:
        body["ack"] = {
            "version": draw(st.integers(0, 3)),
            "status": draw(st.sampled_from(["accepted", "rejected", "bad"])),
        }
    token = draw(TOKEN)
    if token is not None:
        body["clientToken"] = token
    text = json.dumps(body, ensure_ascii=draw(st.booleans()))
    mangle = draw(st.integers(0, 8))
    if mangle == 0:
        text = text[:-1]
    elif mangle == 1:
        text = text.replace('"a"', '"\\ud800"')
    elif mangle == 2:
        text = '{"clientToken": "deep", "reported": ' + "[" * 70 + "]" * 70 + "}"
    return text.encode()


MESSAGES = st.one_of(
    st.tuples(st.just("twin/update"), DEVICES, update_payloads()),
    st.tuples(st.just("twin/get"), DEVICES, st.sampled_from([b"", b'{"clientToken":"g"}', b"x"])),
    st.tuples(st.just("state"), DEVICES, st.sampled_from([b"online", b"offline", b"on"])),
    st.tuples(st.just("desired"), st.sampled_from(["lamp", "pump"]), PATCH),
)


def run(device_twin: Any, store_class: Any, path: str, messages: list[Any]) -> Any:
    store = store_class(path)
    try:
        svc = TwinService(
            store,
            [DeviceSpec("lamp", {"a": 1}), DeviceSpec("pump")],
            RouteTable(),
            device_twin=device_twin,
        )
        trace: list[Any] = [svc.startup_actions()]
        for step, (operation, device, argument) in enumerate(messages):
            now = 100.0 + step * 0.25
            if operation == "desired":
                trace.append(svc.set_desired(device, argument, now, merge=step % 2 == 0))
            else:
                trace.append(svc.handle(f"{ROOT}/{device}/{operation}", argument, now))
        trace.append(svc.resync())
        trace.append(dict(svc.counters))
        trace.append([store.get_twin(device) for device in ("lamp", "pump", "ghost")])
        return trace
    finally:
        store.close()


@settings(max_examples=60)
@given(st.lists(MESSAGES, max_size=10))
def test_the_service_acts_identically_on_either_device_twin(messages: list[Any]) -> None:
    rust = native_core()
    with tempfile.TemporaryDirectory() as directory:
        traces = [
            run(twin_class, _pure.Store, str(Path(directory) / f"{name}.db"), messages)
            for name, twin_class in (("python", _pure.DeviceTwin), ("rust", rust.DeviceTwin))
        ]
    assert traces[0] == traces[1]

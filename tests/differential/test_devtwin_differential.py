"""The Rust DeviceTwin against the pure-Python specification, on generated reports.

Sequences of operations (desired changes, device reports as raw payload bytes — valid,
hostile and malformed — states, commits, views) run on one twin of each backend; every
outcome, every byte produced and every exception must be identical. The JSON writer is
also checked against ``json.dumps`` itself, on values the parser reads back.
"""

from __future__ import annotations

import json
import math
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from conftest import native_core
from edgenode import _pure

# Few distinct keys, so that desired, reported and patches overlap.
keys = st.sampled_from(["a", "b", "c", "é", "", "clientToken", "x\u0001"])
big_ints = st.integers(min_value=-(2**80), max_value=2**80)
floats = st.one_of(
    st.floats(allow_nan=False, allow_infinity=False),
    st.sampled_from([0.0, -0.0, 1.0, 1e16, 1e-7, 1e-5, 0.1, 2.0**53, 2.0**64, 1e22, 5e-324]),
    # Few fractional bits: the values that can lie halfway between two shortest reprs.
    st.builds(math.ldexp, st.integers(min_value=-(2**53), max_value=2**53), st.integers(-90, 90)),
)
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-3, max_value=3),
    big_ints,
    floats,
    st.text(alphabet='ab"\\\n\x01\x1f\x7fé€😀\u2028', max_size=4),
)


def json_values(leaves: st.SearchStrategy[Any], max_leaves: int = 10) -> st.SearchStrategy[Any]:
    return st.recursive(
        leaves,
        lambda children: st.one_of(
            st.lists(children, max_size=3),
            st.dictionaries(keys, children, max_size=4),
        ),
        max_leaves=max_leaves,
    )


objects = st.dictionaries(keys, json_values(scalars), max_size=4)


@st.composite
def report_payloads(draw: st.DrawFn) -> bytes:
    """A report as a device might send it: usually valid, sometimes hostile."""
    kind = draw(st.integers(min_value=0, max_value=9))
    body: dict[str, Any] = {}
    if kind <= 5:
        body["reported"] = draw(objects)
    if kind in (4, 5, 6):
        body["ack"] = draw(
            st.fixed_dictionaries(
                {
                    "version": st.one_of(st.integers(min_value=-1, max_value=4), big_ints),
                    "status": st.sampled_from(["accepted", "in-progress", "rejected", "nope"]),
                },
                optional={"reason": st.text(max_size=3), "extra": st.just(1)},
            )
        )
    if draw(st.booleans()):
        body["clientToken"] = draw(st.one_of(st.text(max_size=3), st.integers()))
    if kind == 7:
        body[draw(keys)] = draw(json_values(scalars, 3))
    if kind == 8:
        body["desired"] = {}
    text = json.dumps(body, ensure_ascii=draw(st.booleans()))
    if draw(st.integers(min_value=0, max_value=5)) == 0:
        text = draw(
            st.sampled_from(
                [
                    text[: len(text) // 2],
                    text + " x",
                    text.replace("}", ",}", 1),
                    text.replace(":", " : ", 1),
                    "\ufeff" + text,
                    text.replace('"a"', '"\\ud800"'),
                    text.replace('"a"', '"\\udc00x"'),
                    text.replace('"a"', '"\\ud83d\\ude00"'),
                    text.replace("1", "NaN", 1),
                    text.replace("1", "1e400", 1),
                    text.replace("1", "9" * 4301, 1),
                    text.replace("1", "01", 1),
                    text.replace("{", "[" * 70 + "]" * 70 + "{", 1),
                    '{"reported":' + "[" * 63 + "]" * 63 + "}",
                    '{"reported":{"a":' + "[" * 63 + "]" * 63 + "}}",
                    "[1,2]",
                    "",
                    "null",
                ]
            )
        )
    payload = text.encode()
    if draw(st.integers(min_value=0, max_value=20)) == 0:
        payload = payload[:-1] + b"\xff" + payload[-1:]
    return payload


# The hub's desired version: mostly absent or plausible; sometimes hostile.
versions = st.one_of(
    st.none(),
    st.integers(min_value=1, max_value=30),
    st.sampled_from([0, -1, 2**63 - 1, 2**63, True, 1.5, "3"]),
)

operations = st.one_of(
    st.tuples(st.just("report"), report_payloads()),
    st.tuples(st.just("desired"), objects, st.booleans(), versions),
    st.tuples(st.just("state"), st.sampled_from(["online", "offline"])),
    st.tuples(st.just("commit")),
    st.tuples(st.just("view"), st.one_of(st.none(), st.text(max_size=3))),
)


def outcome_fields(outcome: Any) -> tuple[Any, ...]:
    return (
        outcome.code,
        outcome.message,
        outcome.token,
        outcome.reply,
        outcome.changed,
        outcome.ack_changed,
        outcome.delta,
        outcome.twin_uplink,
        outcome.ack_uplink,
        outcome.document,
    )


def run(twin: Any, operation: tuple[Any, ...], now: float) -> Any:
    try:
        name = operation[0]
        if name == "report":
            return outcome_fields(twin.apply_report(operation[1], now))
        if name == "desired":
            payload = json.dumps(operation[1]).encode()
            return outcome_fields(twin.set_desired(payload, now, operation[2], operation[3]))
        if name == "state":
            return twin.set_state(operation[1], now)
        if name == "commit":
            twin.commit()
            return twin.document()
        return twin.view(now, operation[1])
    except Exception as error:  # the class and message are what must agree
        return (type(error).__name__, str(error))


@settings(max_examples=150)
@given(st.lists(operations, max_size=12), st.sampled_from([0.0, 1.5, 1e16, 1700000000.123]))
def test_both_backends_produce_the_same_bytes_for_every_operation(
    sequence: list[tuple[Any, ...]], start: float
) -> None:
    rust = native_core()
    twins = [_pure.DeviceTwin("lamp"), rust.DeviceTwin("lamp")]
    for step, operation in enumerate(sequence):
        now = start + step
        results = [run(twin, operation, now) for twin in twins]
        assert results[0] == results[1], operation
        # Commit what a service would store, so the states move on.
        if operation[0] in ("report", "desired", "state"):
            for twin in twins:
                twin.commit()
    documents = [twin.document() for twin in twins]
    assert documents[0] == documents[1]
    # The stored document loads back into the same twin on both backends.
    reloaded = [_pure.DeviceTwin("lamp", documents[0]), rust.DeviceTwin("lamp", documents[0])]
    assert reloaded[0].document() == reloaded[1].document() == documents[0]
    assert reloaded[0].delta_message() == reloaded[1].delta_message()


@given(json_values(scalars, 20))
def test_the_rust_writer_writes_what_json_dumps_writes(value: Any) -> None:
    """A desired document goes in as bytes and comes back out in the delta message."""
    rust = native_core()
    twin = rust.DeviceTwin("lamp")
    outcome = twin.set_desired(json.dumps({"v": value}).encode(), 1.0)
    if value is None:
        assert outcome.delta is None
        return
    expected = json.dumps(
        {"version": 1, "delta": {"v": _without_nulls(value)}},
        separators=(",", ":"),
        ensure_ascii=False,
    ).encode()
    assert outcome.delta == expected


def _without_nulls(value: Any) -> Any:
    if type(value) is dict:
        return {k: _without_nulls(v) for k, v in value.items() if v is not None}
    return value


@given(floats)
def test_floats_are_written_as_python_repr(value: float) -> None:
    rust = native_core()
    twin = rust.DeviceTwin("lamp")
    assert math.isfinite(value)
    view = twin.view(value)
    assert view.endswith(b'"timestamp":' + repr(value).encode() + b"}")


@given(st.binary(max_size=40) | st.text(max_size=40).map(str.encode))
def test_arbitrary_bytes_get_the_same_answer(payload: bytes) -> None:
    rust = native_core()
    results = [
        outcome_fields(twin.apply_report(payload, 1.0))
        for twin in (_pure.DeviceTwin("d"), rust.DeviceTwin("d"))
    ]
    assert results[0] == results[1]

"""The features ``artifacts`` and ``logs``: their frames, who may send them when, and their
bounds — a node fetching an App's artifact in chunks, the hub asking a node for an App's
log and cancelling it; refused without the feature, and hostile peers cut off."""

from __future__ import annotations

import cbor2
import pytest

from edgenode.errors import ProtocolError
from edgenode.protocol import (
    HubConfig,
    NodeConfig,
    ProtocolViolation,
)
from edgenode.protocol.constants import MAX_ARTIFACT_REQUESTS, MAX_LOG_REQUESTS, ErrorCode
from edgenode.protocol.events import (
    ArtifactReceived,
    ArtifactRefused,
    ArtifactRequested,
    LogCancelled,
    LogEnded,
    LogReceived,
    LogRequested,
)
from edgenode.protocol.frames import (
    ArtifactDataFrame,
    ArtifactErrorFrame,
    ArtifactFetchFrame,
    LogCancelFrame,
    LogDataFrame,
    LogEndFrame,
    LogQueryFrame,
    decode_frame,
    encode_frame,
)

from .helpers import BIG, Link

DIGEST = "ab" * 32
FRAMES = [
    ArtifactFetchFrame(DIGEST, 0, 65536),
    ArtifactDataFrame(DIGEST, 10, 20, b"0123456789"),
    ArtifactDataFrame(DIGEST, 20, 20, b""),
    ArtifactErrorFrame(DIGEST, 404, "no such artifact"),
    LogQueryFrame(7, "sampler", 100, True),
    LogDataFrame(7, b"line\n"),
    LogEndFrame(7, 0, ""),
    LogCancelFrame(7),
]


@pytest.mark.parametrize("frame", FRAMES, ids=lambda f: type(f).__name__)
def test_every_transfer_frame_round_trips(frame):
    assert decode_frame(encode_frame(frame), BIG) == frame


@pytest.mark.parametrize(
    "obj",
    [
        {"t": "af", "d": "AB" * 32, "o": 0, "n": 1},
        {"t": "af", "d": DIGEST, "o": -1, "n": 1},
        {"t": "af", "d": DIGEST, "o": 0, "n": 0},
        {"t": "ad", "d": DIGEST, "o": 5, "s": 6, "x": b"toolong"},
        {"t": "ad", "d": DIGEST, "o": 2, "s": 6, "x": b""},
        {"t": "ad", "d": DIGEST, "o": 7, "s": 6, "x": b""},
        {"t": "lq", "i": 1, "a": "x", "n": 1, "f": 1},
        {"t": "lq", "i": 1, "a": "", "n": 1, "f": True},
        {"t": "ld", "i": -1, "x": b""},
        {"t": "le", "i": 1, "c": 0, "m": "", "extra": 1},
    ],
)
def test_malformed_transfer_frames_are_refused(obj):
    with pytest.raises(ProtocolError):
        decode_frame(cbor2.dumps(obj), BIG)


def link(**node: object) -> Link:
    return Link.connect(
        node_config=NodeConfig(**node),  # type: ignore[arg-type]
        hub_config=HubConfig(),
    )


def test_a_node_fetches_an_artifact_in_chunks_and_hears_refusals():
    ln = link()
    assert ln.node.features >= {"artifacts", "logs"}
    ln.node.fetch_artifact(DIGEST, 0, 4)
    ln.node.fetch_artifact("cd" * 32, 0, 4)
    ln.pump()
    requests = ln.take_hub_events()
    assert requests == [ArtifactRequested(DIGEST, 0, 4), ArtifactRequested("cd" * 32, 0, 4)]
    ln.hub.send_artifact(DIGEST, 0, 6, b"abcd")
    ln.hub.refuse_artifact("cd" * 32, 404, "no artifact cdcd")
    ln.pump()
    assert ln.take_node_events() == [
        ArtifactReceived(DIGEST, 0, 6, b"abcd"),
        ArtifactRefused("cd" * 32, 404, "no artifact cdcd"),
    ]
    assert ln.node.artifact_fetches == 0
    with pytest.raises(RuntimeError, match="no fetch is waiting"):
        ln.hub.send_artifact(DIGEST, 4, 6, b"ef")


def test_a_chunk_never_exceeds_the_frame_limit_of_either_side():
    ln = link(max_frame_size=8192)
    assert 0 < ln.node.max_artifact_chunk < 8192
    assert ln.hub.max_artifact_chunk == ln.node.max_artifact_chunk
    ln.node.fetch_artifact(DIGEST, 0, ln.node.max_artifact_chunk)
    ln.pump()
    ln.take_hub_events()
    chunk = b"x" * ln.hub.max_artifact_chunk
    ln.hub.send_artifact(DIGEST, 0, 10**6, chunk)
    ln.pump()
    (received,) = ln.take_node_events()
    assert isinstance(received, ArtifactReceived)
    assert received.data == chunk
    ln.node.fetch_artifact(DIGEST, len(chunk), 1)
    ln.pump()
    with pytest.raises(ValueError, match="frame limit"):
        ln.hub.send_artifact(DIGEST, 0, 10**6, chunk + b"x")


def test_outstanding_fetches_are_bounded_on_both_sides():
    ln = link()
    for _ in range(MAX_ARTIFACT_REQUESTS):
        ln.node.fetch_artifact(DIGEST, 0, 1)
    with pytest.raises(ValueError, match="at most"):
        ln.node.fetch_artifact(DIGEST, 0, 1)
    # A node that ignores the bound is cut off by the hub.
    ln.pump()
    frame = encode_frame(ArtifactFetchFrame(DIGEST, 0, 1))
    ln.hub.receive_message(frame, 0.0)
    (event,) = [e for e in ln.hub.events_received() if isinstance(e, ProtocolViolation)]
    assert event.code == ErrorCode.LIMIT_EXCEEDED


def test_data_for_an_artifact_never_asked_for_is_a_violation():
    ln = link()
    ln.node.receive_message(encode_frame(ArtifactDataFrame(DIGEST, 0, 1, b"x")), 0.0)
    (event,) = ln.node.events_received()
    assert isinstance(event, ProtocolViolation)
    assert "never asked for" in event.message


def test_the_hub_asks_for_a_log_gets_it_in_pieces_and_cancels_a_follow():
    ln = link(max_frame_size=4096)
    ln.hub.request_log(1, "sampler", 10, False)
    ln.hub.request_log(2, "sampler", 0, True)
    ln.pump()
    assert ln.take_node_events() == [
        LogRequested(1, "sampler", 10, False),
        LogRequested(2, "sampler", 0, True),
    ]
    big = b"y" * 10_000
    ln.node.send_log(1, big)
    ln.node.end_log(1)
    ln.pump()
    events = ln.take_hub_events()
    assert b"".join(e.data for e in events if isinstance(e, LogReceived)) == big
    assert all(len(m) <= 4096 for m in ln.to_hub)
    assert events[-1] == LogEnded(1, 0, "")
    ln.hub.cancel_log(2)
    ln.pump()
    assert ln.take_node_events() == [LogCancelled(2)]
    ln.node.send_log(2, b"late")  # after the cancel: dropped, not sent
    ln.pump()
    assert ln.take_hub_events() == []
    assert ln.hub.log_requests == frozenset()


def test_log_requests_are_bounded_and_ids_not_reused():
    ln = link()
    for request in range(MAX_LOG_REQUESTS):
        ln.hub.request_log(request, "a", 1, True)
    with pytest.raises(ValueError, match="at most"):
        ln.hub.request_log(99, "a", 1, True)
    ln.pump()
    ln.node.receive_message(encode_frame(LogQueryFrame(0, "a", 1, True)), 0.0)
    (event,) = [e for e in ln.node.events_received() if isinstance(e, ProtocolViolation)]
    assert event.code == ErrorCode.INVALID_SEQUENCE


def test_without_the_features_transfer_frames_are_refused_and_calls_fail():
    ln = Link.connect(node_config=NodeConfig(version=1))
    with pytest.raises(RuntimeError, match="artifacts"):
        ln.node.fetch_artifact(DIGEST, 0, 1)
    with pytest.raises(RuntimeError, match="logs"):
        ln.hub.request_log(1, "a", 1, False)
    ln.hub.receive_message(encode_frame(ArtifactFetchFrame(DIGEST, 0, 1)), 0.0)
    (event,) = [e for e in ln.hub.events_received() if isinstance(e, ProtocolViolation)]
    assert event.code == ErrorCode.UNEXPECTED_FRAME
    assert "feature" in event.message

"""Codes and limits: every error code has a close code, and the numbers are the documented ones."""

from __future__ import annotations

from pathlib import Path

import pytest

from edgenode.protocol import ChangeErrorCode, CloseCode, ErrorCode, close_code_for
from edgenode.protocol.constants import (
    DEFAULT_HEARTBEAT_DEADLINE,
    DEFAULT_HEARTBEAT_INTERVAL,
    DEFAULT_MAX_FRAME_SIZE,
    DEFAULT_MAX_IN_FLIGHT_BYTES,
    MIN_MAX_FRAME_SIZE,
)

DOC = Path(__file__).resolve().parents[3] / "docs" / "protocol.md"


@pytest.mark.parametrize("code", list(ErrorCode))
def test_every_error_code_closes_with_a_standard_or_application_close_code(
    code: ErrorCode,
) -> None:
    close = close_code_for(code)
    assert close in set(CloseCode)
    assert 1000 <= close <= 1015 or 4000 <= close <= 4999


def test_an_unknown_error_code_closes_as_a_protocol_error() -> None:
    assert close_code_for(999) == CloseCode.PROTOCOL_ERROR


def test_the_close_codes_are_the_documented_ones() -> None:
    assert close_code_for(ErrorCode.FRAME_TOO_BIG) == 1009
    assert close_code_for(ErrorCode.LIMIT_EXCEEDED) == 1008
    assert close_code_for(ErrorCode.MALFORMED_FRAME) == 1002
    assert close_code_for(ErrorCode.UNSUPPORTED_VERSION) == 4001
    assert close_code_for(ErrorCode.TIMED_OUT) == 4008


@pytest.mark.parametrize("code", [*ErrorCode, *ChangeErrorCode])
def test_every_code_is_documented_in_protocol_md(code: ErrorCode | ChangeErrorCode) -> None:
    assert f"`{code.name}`" in DOC.read_text()


def test_the_defaults_keep_their_documented_relations() -> None:
    assert DEFAULT_HEARTBEAT_DEADLINE == 3 * DEFAULT_HEARTBEAT_INTERVAL == 45.0
    assert DEFAULT_MAX_FRAME_SIZE == 1024 * 1024
    # One frame of records must always fit the byte window.
    assert DEFAULT_MAX_IN_FLIGHT_BYTES >= DEFAULT_MAX_FRAME_SIZE
    assert MIN_MAX_FRAME_SIZE >= 4096

"""Fixtures of the hub tests: a real ``edgehub serve`` subprocess on free loopback ports,
its admin token, and helpers to call the API and run ``edgectl`` (the launcher is
``edgehub.testing.HubProcess``, shared with the fleet benchmark; here with the tests'
scaled-down timers)."""

from __future__ import annotations

import signal
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from edgehub.testing import HubProcess

HEARTBEAT = 0.2
"""Scaled-down heartbeat interval (deadline is 3 intervals)."""
HANDSHAKE_TIMEOUT = 2.0


@dataclass
class RunningHub(HubProcess):
    """``edgehub serve`` with the tests' scaled-down timers."""

    heartbeat: float = HEARTBEAT
    handshake_timeout: float = HANDSHAKE_TIMEOUT


@pytest.fixture
def hub_factory(tmp_path: Path) -> Iterator[Any]:
    hubs: list[RunningHub] = []

    def make(*extra: str, name: str = "hub") -> RunningHub:
        data = tmp_path / name
        data.mkdir(exist_ok=True)
        hub = RunningHub(data, list(extra))
        hubs.append(hub)
        hub.start()
        return hub

    yield make
    for hub in hubs:
        hub.stop(signal.SIGKILL)


@pytest.fixture
def hub(hub_factory: Any) -> RunningHub:
    return hub_factory()  # type: ignore[no-any-return]

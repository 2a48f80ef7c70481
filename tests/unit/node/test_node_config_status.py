"""A Config's status (``config-status``: which generation the node applied) reaches the hub
even when the outbox refuses it at first: it is written only when a Config changes, so a
status the quota refused (the outbox full of more urgent records after weeks offline) or
the store could not take is offered again every ``REPORT_RETRY_SECONDS``."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from edgenode.config import load_config
from edgenode.node import configs as configs_module
from edgenode.node.configs import ConfigService
from edgenode.service import DesiredResource, OutRecord, RetainedMessages


class Host:
    """What ConfigService uses of the daemon: desired Configs, retained messages, commits
    (refused while ``refusing``; raising while ``failing``)."""

    def __init__(self, config: Any) -> None:
        self.config = config
        self.retained = RetainedMessages()
        self.refusing = True
        self.failing = False
        self.offered: list[dict[str, Any]] = []
        self.queued: list[dict[str, Any]] = []
        self.resources = [
            DesiredResource(
                "Config/default/tuning",
                3,
                {"metadata": {"name": "tuning", "generation": 2}, "spec": {"data": {"a": "1"}}},
            )
        ]

    def desired(self, kind: str) -> list[DesiredResource]:
        return self.resources if kind == "Config" else []

    def commit(self, twins: Sequence[Any], records: Sequence[OutRecord]) -> list[int | None]:
        bodies = [json.loads(r.body) for r in records]
        self.offered.extend(bodies)
        if self.failing:
            raise OSError("disk full")
        if self.refusing:
            return [None] * len(records)
        self.queued.extend(bodies)
        return list(range(1, len(records) + 1))


def service_and_host(tmp_path: Path) -> tuple[ConfigService, Host]:
    path = tmp_path / "node.toml"
    path.write_text("[node]\nname = 'ship-7'\ndata_dir = 'state'\n")
    config = load_config(path, env={})
    return ConfigService(config), Host(config)


@pytest.mark.parametrize("failure", ["refused", "store error"])
def test_a_refused_config_status_is_offered_again_until_queued(tmp_path, monkeypatch, failure):
    monkeypatch.setattr(configs_module, "REPORT_RETRY_SECONDS", 0.05)
    service, host = service_and_host(tmp_path)
    host.failing = failure == "store error"

    async def scenario() -> None:
        task = asyncio.create_task(service.run(host))  # type: ignore[arg-type]
        try:
            for _ in range(200):
                if len(host.offered) >= 3:
                    break
                await asyncio.sleep(0.01)
            assert len(host.offered) >= 3  # the first try, then the retries
            assert host.queued == []
            host.refusing = host.failing = False
            for _ in range(200):
                if host.queued:
                    break
                await asyncio.sleep(0.01)
            assert host.queued == [{"config": "tuning", "generation": 2}]
            offered = len(host.offered)
            await asyncio.sleep(0.2)  # once queued, never offered again
            assert len(host.offered) == offered
        finally:
            task.cancel()

    asyncio.run(scenario())
    # The file was applied whatever happened to the status.
    assert json.loads((tmp_path / "state" / "config" / "tuning.json").read_text()) == {"a": "1"}

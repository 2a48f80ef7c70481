"""A real node daemon (the ``Daemon`` as host: store, commit port, artifact cache) running
the Config and App services in this process, with short back-off numbers; desired state
written into the store the way the link does it; every ``app-status`` record seen."""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from edgenode.apps.service import AppService
from edgenode.apps.supervisor import Timing
from edgenode.config import parse_config
from edgenode.node.configs import ConfigService
from edgenode.node.daemon import Daemon
from edgenode.store import Store

FAST = Timing(restart_initial=0.1, restart_max=0.8, stable_run=2.0, crash_loop_after=3)


def body(
    kind: str, name: str, spec: dict[str, Any], revision: int | None = 1, **meta: Any
) -> bytes:
    metadata: dict[str, Any] = {"name": name, "generation": 1, **meta}
    if revision is not None:
        metadata["annotations"] = {"edgenode.io/revision": str(revision)}
    doc = {"apiVersion": "edgenode.io/v1", "kind": kind, "metadata": metadata, "spec": spec}
    return json.dumps(doc, separators=(",", ":"), sort_keys=True).encode()


def environ(pid: int) -> dict[str, str]:
    try:
        raw = Path(f"/proc/{pid}/environ").read_bytes()
    except OSError:
        return {}
    return dict(
        item.split("=", 1) for item in raw.decode(errors="replace").split("\0") if "=" in item
    )


def app_pids(node: str, app: str) -> list[int]:
    """Live processes of App ``app`` of node ``node`` (by the environment the node gives it)."""
    found = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            state = Path(f"/proc/{name}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except (OSError, IndexError):
            continue
        if state in ("Z", "X"):
            continue
        env = environ(int(name))
        if env.get("EDGENODE_NODE") == node and env.get("EDGENODE_APP") == app:
            found.append(int(name))
    return sorted(found)


class Harness:
    def __init__(
        self,
        tmp_path: Path,
        *,
        node: str = "apps-unit",
        apps: dict[str, Any] | None = None,
        local_configs: list[dict[str, Any]] | None = None,
        timing: Timing = FAST,
    ) -> None:
        self.node = node
        self.data_dir = tmp_path / "data"
        self.data_dir.mkdir(exist_ok=True)
        toml: dict[str, Any] = {
            "node": {"name": node, "data_dir": str(self.data_dir)},
            "metrics": {"listen": ""},
            "status": {"interval": 3600.0},
            "apps": {"container_runtime": "none", **(apps or {})},
        }
        if local_configs:
            toml["config"] = local_configs
        self.config = parse_config(toml, str(tmp_path / "node.toml"), {})
        self.revision = 0
        with_store = Store(str(self.config.db_path))
        self.revision = with_store.applied_revision()
        with_store.close()
        self.timing = timing
        self.records: list[dict[str, Any]] = []
        self.daemon: Daemon | None = None
        self.service: AppService | None = None
        self._task: asyncio.Task[int] | None = None
        self._preload: list[tuple[str, bytes | None]] = []

    # --- desired state, as the link writes it -------------------------------------------------

    def preload(self, kind: str, name: str, data: bytes | None) -> None:
        """Desired state in the store before the daemon starts."""
        store = Store(str(self.config.db_path))
        self.revision += 1
        store.apply_changes([(f"{kind}/default/{name}", self.revision, data)], self.revision)
        store.close()

    def apply(self, kind: str, name: str, data: bytes | None) -> None:
        assert self.daemon is not None
        self.revision += 1
        row = (f"{kind}/default/{name}", self.revision, data)
        self.daemon.store.apply_changes([row], self.revision)
        self.daemon._desired_changed([row], False)

    def delete(self, kind: str, name: str) -> None:
        self.apply(kind, name, None)

    # --- running ------------------------------------------------------------------------------

    async def start(self) -> None:
        configs = ConfigService(self.config)
        self.service = AppService(self.config, configs, timing=self.timing)
        self.daemon = Daemon(self.config, [configs, self.service])
        original = self.daemon.commit

        def commit(twins: Any, records: Any) -> list[int | None]:
            for record in records:
                if record.kind == "app-status":
                    self.records.append(json.loads(record.body))
            return original(twins, records)

        self.daemon.commit = commit  # type: ignore[method-assign]
        self._task = asyncio.create_task(self.daemon.run())
        await self.until(lambda: self.service is not None and self.service._ctx is not None, 15)

    async def stop(self) -> int:
        assert self.daemon is not None
        assert self._task is not None
        self.daemon.request_stop()
        return await asyncio.wait_for(self._task, 60)

    async def __aenter__(self) -> Harness:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._task is not None and not self._task.done():
            await self.stop()

    # --- looking ------------------------------------------------------------------------------

    def statuses(self, app: str) -> list[dict[str, Any]]:
        return [r for r in self.records if r["app"] == app]

    def last(self, app: str) -> dict[str, Any]:
        found = self.statuses(app)
        return found[-1] if found else {}

    def pids(self, app: str) -> list[int]:
        return app_pids(self.node, app)

    def work(self, app: str) -> Path:
        return self.data_dir / "apps" / app

    def log_text(self, app: str) -> str:
        path = self.data_dir / "apps" / ".supervisor" / app / "output.log"
        return path.read_text(errors="replace") if path.exists() else ""

    async def until(self, check: Callable[[], Any], timeout: float = 20.0, what: str = "") -> Any:
        deadline = time.monotonic() + timeout
        while True:
            value = check()
            if value:
                return value
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out after {timeout} s waiting for {what or check}")
            await asyncio.sleep(0.02)

    async def phase(
        self, app: str, phase: str, timeout: float = 20.0, **fields: Any
    ) -> dict[str, Any]:
        def match() -> dict[str, Any] | None:
            last = self.last(app)
            if last.get("phase") != phase:
                return None
            return last if all(last.get(k) == v for k, v in fields.items()) else None

        return await self.until(match, timeout, f"{app} {phase} {fields} (last: {self.last(app)})")


def run(scenario: Callable[[], Any]) -> Any:
    return asyncio.run(scenario())

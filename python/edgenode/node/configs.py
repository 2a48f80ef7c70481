"""The Config service: Config resources reach the programs on the node.

A Config is a map of strings. Each one targeted at this node by the hub, and each
``[[config]]`` table of ``edgenode.toml`` (the hub's Config of the same name wins, as for
devices), becomes:

- a file, ``DATA_DIR/config/NAME.json``: the data map as a JSON object, replaced
  atomically (temporary file + rename, mode 0600), rewritten only when it changes (flash
  wear), removed when the Config is deleted or stops targeting the node;
- a retained message on the local bus, ``$edge/config/NAME``:
  ``{"name": NAME, "generation": G, "data": {...}}`` (an empty retained message when it
  goes away), published by the device layer's broker connection
  (``host.retained``) and again after every reconnect;
- a change event for other services (:meth:`ConfigService.listen`), e.g. Apps that take a
  Config as environment or as a file.

For a hub Config the node then reports the generation it applied with a ``config-status``
uplink record (coalesced per Config, through the outbox), so ``edgectl get configs`` can
show how many targeted nodes run the current generation. Everything is read from the
store, so a node restarted offline serves the Configs it had.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Final

from edgenode.files import CONFIG_DIR, CONFIGS_FILE, ensure_dir, write_bytes_atomic
from edgenode.service import DesiredResource, DesiredRow, NodeHost, OutRecord

if TYPE_CHECKING:
    from edgenode.config import Config

log = logging.getLogger("edgenode.configs")

CONFIG_KIND: Final = "Config"
TOPIC_ROOT: Final = "$edge/config"
STATUS_RECORD: Final = "config-status"
STATUS_PRIORITY: Final = 4
REPORT_RETRY_SECONDS: Final = 30.0
"""A Config status the outbox refused is offered again after this long."""
"""Outbox priority of ``config-status`` records (before telemetry's default of 5)."""
FILE_SUFFIX: Final = ".json"


def topic(name: str) -> str:
    """``$edge/config/NAME``."""
    return f"{TOPIC_ROOT}/{name}"


@dataclass(frozen=True)
class ConfigEntry:
    """One Config as the node applies it; ``generation`` is 0 for a local one."""

    name: str
    data: dict[str, str]
    generation: int = 0
    source: str = "local"
    """``hub`` or ``local`` (a ``[[config]]`` table)."""

    def file_bytes(self) -> bytes:
        return json.dumps(self.data, sort_keys=True, ensure_ascii=False, indent=1).encode()

    def message(self) -> bytes:
        body = {"name": self.name, "generation": self.generation, "data": self.data}
        return json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode()


def entry_from_resource(resource: DesiredResource) -> ConfigEntry:
    """The ConfigEntry of a hub Config (ValueError when its data is not a string map)."""
    data = resource.spec.get("data", {})
    if not isinstance(data, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in data.items()
    ):
        raise ValueError("spec.data is not a map of strings")
    return ConfigEntry(resource.name, dict(data), resource.generation, "hub")


ConfigListener = Callable[[str, "ConfigEntry | None"], None]
"""``listener(name, entry)`` after a Config changed (``None``: it went away)."""


class ConfigService:
    """Files, retained messages and change events for the node's Configs."""

    name: Final = "configs"
    kinds: Final = frozenset({CONFIG_KIND})

    def __init__(self, config: Config) -> None:
        self.config = config
        self.current: dict[str, ConfigEntry] = {}
        self._listeners: list[ConfigListener] = []
        self._reported: dict[str, int] | None = None
        self._unreported = False
        """A status the outbox refused or could not store waits to be offered again."""
        self._dir = Path(config.node.data_dir) / CONFIG_DIR

    def listen(self, listener: ConfigListener) -> None:
        self._listeners.append(listener)

    def wanted(self, host: NodeHost) -> dict[str, ConfigEntry]:
        """``[[config]]`` entries, then the hub's Configs over them (the hub wins)."""
        entries = {c.name: ConfigEntry(c.name, dict(c.data)) for c in self.config.configs}
        for resource in host.desired(CONFIG_KIND):
            try:
                entries[resource.name] = entry_from_resource(resource)
            except ValueError as exc:
                log.warning("hub Config %s cannot be applied: %s", resource.key, exc)
        return entries

    def on_desired(self, host: NodeHost, rows: Sequence[DesiredRow], snapshot: bool) -> None:
        self.apply(host)

    async def run(self, host: NodeHost) -> None:
        """Everything happens on desired changes; at start, make the files match. A
        status the outbox refused (full, as after weeks offline) or could not store is
        offered again every ``REPORT_RETRY_SECONDS``: it is written only on a change, so
        without that the hub would never learn it."""
        self.apply(host)
        while True:
            await asyncio.sleep(REPORT_RETRY_SECONDS)
            if self._unreported:
                self._report(host, [e for e in self.wanted(host).values() if e.source == "hub"])
                self._save_state()

    # --- Applying ---------------------------------------------------------------------------

    def apply(self, host: NodeHost) -> None:
        """Make files, retained messages and listeners match the wanted Configs."""
        if self._reported is None:
            self._reported = self._load_reported()
        wanted = self.wanted(host)
        for name in sorted(set(self.current) - set(wanted)):
            self._remove(host, name)
        self._remove_stale_files(wanted)
        applied: list[ConfigEntry] = []
        for name, entry in sorted(wanted.items()):
            if self.current.get(name) == entry and self._file_matches(entry):
                continue
            if not self._write(host, entry):
                continue
            self.current[name] = entry
            applied.append(entry)
            self._notify(name, entry)
        self._report(host, [e for e in wanted.values() if e.source == "hub"])
        self._save_state()
        if applied:
            log.info("configs applied: %s", ", ".join(f"{e.name}@{e.generation}" for e in applied))

    def _path(self, name: str) -> Path:
        return self._dir / f"{name}{FILE_SUFFIX}"

    def _file_matches(self, entry: ConfigEntry) -> bool:
        try:
            return self._path(entry.name).read_bytes() == entry.file_bytes()
        except OSError:
            return False

    def _write(self, host: NodeHost, entry: ConfigEntry) -> bool:
        try:
            ensure_dir(self._dir)
            if not self._file_matches(entry):
                write_bytes_atomic(self._path(entry.name), entry.file_bytes())
        except OSError as exc:  # a full disk: retried with the next change or restart
            log.error("cannot write Config %s: %s", entry.name, exc.strerror or exc)
            return False
        host.retained.put(topic(entry.name), entry.message())
        return True

    def _remove(self, host: NodeHost, name: str) -> None:
        self.current.pop(name, None)
        if self._reported is not None:
            self._reported.pop(name, None)
        with contextlib.suppress(FileNotFoundError):
            self._path(name).unlink()
        host.retained.put(topic(name), b"")
        self._notify(name, None)

    def _remove_stale_files(self, wanted: dict[str, ConfigEntry]) -> None:
        """Files of Configs that went away while the node was not running."""
        try:
            files = list(self._dir.glob(f"*{FILE_SUFFIX}"))
        except OSError:
            return
        for path in files:
            name = path.name[: -len(FILE_SUFFIX)]
            if name not in wanted and name not in self.current:
                with contextlib.suppress(OSError):
                    path.unlink()

    def _notify(self, name: str, entry: ConfigEntry | None) -> None:
        for listener in self._listeners:
            try:
                listener(name, entry)
            except Exception:
                log.exception("a Config listener failed on %s", name)

    # --- Reporting --------------------------------------------------------------------------

    def _report(self, host: NodeHost, entries: list[ConfigEntry]) -> None:
        """A ``config-status`` record per hub Config whose applied generation the hub has
        not been told yet (the outbox carries it durably, also across restarts)."""
        reported = self._reported if self._reported is not None else {}
        due = [e for e in entries if reported.get(e.name) != e.generation]
        if not due:
            return
        records = [
            OutRecord(
                STATUS_RECORD,
                json.dumps({"config": e.name, "generation": e.generation}).encode(),
                STATUS_PRIORITY,
                None,
                f"{STATUS_RECORD}/{e.name}",
            )
            for e in due
        ]
        try:
            seqs = host.commit([], records)
        except Exception as exc:  # the store (a full disk): offered again by run()
            log.error("cannot queue config status: %s", exc)
            self._unreported = True
            return
        refused = [e.name for e, seq in zip(due, seqs, strict=True) if seq is None]
        for entry, seq in zip(due, seqs, strict=True):
            if seq is not None:
                reported[entry.name] = entry.generation
        self._reported = reported
        if refused and not self._unreported:
            log.warning(
                "the outbox refused the status of Config %s (full); trying again every %g s",
                ", ".join(refused),
                REPORT_RETRY_SECONDS,
            )
        self._unreported = bool(refused)

    def _state_path(self) -> Path:
        return Path(self.config.node.data_dir) / CONFIGS_FILE

    def _load_reported(self) -> dict[str, int]:
        try:
            state = json.loads(self._state_path().read_bytes())
        except (OSError, ValueError):
            return {}
        configs = state.get("configs") if isinstance(state, dict) else None
        if not isinstance(configs, dict):
            return {}
        return {
            name: entry["generation"]
            for name, entry in configs.items()
            if isinstance(entry, dict)
            and entry.get("source") == "hub"
            and isinstance(entry.get("generation"), int)
        }

    def _save_state(self) -> None:
        """``configs.json`` for ``edgenode status`` (and the reported generations)."""
        state = {
            "configs": {
                name: {"generation": e.generation, "source": e.source, "keys": len(e.data)}
                for name, e in sorted(self.current.items())
            },
            "since": time.time(),
        }
        path = self._state_path()
        try:
            old = json.loads(path.read_bytes())
            if isinstance(old, dict) and old.get("configs") == state["configs"]:
                return
        except (OSError, ValueError):
            pass
        with contextlib.suppress(OSError):
            write_bytes_atomic(path, json.dumps(state, sort_keys=True).encode())

"""The daemon behind ``edgenode run``: opens the store, runs the tasks, stops cleanly.

Order of start-up: data_dir, store (``node.db``), pid file, ``READY=1``, metrics, then the
tasks: the cloud link (unless standalone), the status reporter, the watchdog and any
services other parts registered (the device layer). SIGTERM/SIGINT stop it: tasks are
cancelled, the link closes with 1001, the store is closed, ``STOPPING=1`` is sent.

Other parts use three things: ``enqueue_uplink`` (append a record to the outbox, wake the
link), ``add_desired_listener`` (called after desired state was persisted) and
``add_service`` (a coroutine run beside the link, restarted if it fails). Everything runs on
one event loop; store calls are short synchronous SQLite transactions.

The device layer (``edgenode.node.devices``) is registered that way by the constructor when
``Config.device_layer_enabled``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import time
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any, Final

import edgenode
from edgenode.config import Config, parse_listen
from edgenode.errors import StoreCorruptError, StoreError
from edgenode.node.devices import DeviceWiring
from edgenode.node.link import ChangeListener, CloudLink
from edgenode.node.metrics import Metrics
from edgenode.node.notify import Notifier
from edgenode.node.state import (
    STANDALONE,
    STOPPED,
    LinkState,
    remove_pid_file,
    write_link_state,
    write_pid_file,
)
from edgenode.node.status import (
    STATUS_COALESCE_KEY,
    STATUS_KIND,
    STATUS_PRIORITY,
    collect_status,
)
from edgenode.node.uplink import encode_uplink
from edgenode.store import Store

log = logging.getLogger("edgenode.daemon")

DEFAULT_PRIORITY: Final = 5
SERVICE_RESTART_DELAY: Final = 1.0
"""Seconds before a failed service is started again."""
EXIT_OK: Final = 0
EXIT_FAILURE: Final = 1

Service = Callable[["Daemon"], Awaitable[None]]


class DaemonError(Exception):
    """The daemon cannot start (data_dir or store unusable); the message says why."""


class Daemon:
    """One edge node: its store, its cloud link, its reporters."""

    def __init__(self, config: Config, *, notifier: Notifier | None = None) -> None:
        self.config = config
        self.metrics = Metrics(enabled=bool(config.metrics.listen))
        self._notifier = notifier or Notifier()
        self._store: Store | None = None
        self._link: CloudLink | None = None
        self._listeners: list[ChangeListener] = []
        self._services: list[tuple[str, Service]] = []
        self._stop = asyncio.Event()
        self._started = time.monotonic()
        self.devices: DeviceWiring | None = None
        if config.device_layer_enabled:
            self.devices = DeviceWiring(self)
            self.add_service("devices", self.devices.run)
            self.add_desired_listener(self.devices.on_desired)

    # --- The API other parts use ----------------------------------------------------------

    @property
    def store(self) -> Store:
        """The open store (desired cache, twins, outbox); only while ``run`` runs."""
        if self._store is None:
            raise RuntimeError("the store is open only while the daemon runs")
        return self._store

    def enqueue_uplink(
        self,
        kind: str,
        body: Any,
        *,
        priority: int = DEFAULT_PRIORITY,
        ttl: float | None = None,
        coalesce_key: str | None = None,
    ) -> int:
        """Append one uplink record durably; its sequence number.

        ``ttl`` defaults to ``[outbox] default_ttl`` (0: none). ``ValueError`` for a bad
        kind or body, ``OutboxFullError`` when the quota policy rejects it (counted).
        """
        payload = encode_uplink(kind, body, self.config.node.name)
        return self.enqueue_payload(payload, priority, ttl, coalesce_key)

    def enqueue_payload(
        self,
        payload: bytes,
        priority: int = DEFAULT_PRIORITY,
        ttl: float | None = None,
        coalesce_key: str | None = None,
    ) -> int:
        """``enqueue_uplink`` for a payload already encoded with ``encode_uplink`` (the
        device layer encodes its records itself); same defaults and errors."""
        if ttl is None and self.config.outbox.default_ttl > 0:
            ttl = self.config.outbox.default_ttl
        seq = self.store.append(payload, priority, ttl, coalesce_key=coalesce_key)
        if self._link is not None:
            self._link.outbox_changed(priority)
        return seq

    def commit_uplink_batch(
        self,
        twins: Sequence[tuple[str, bytes]],
        records: Sequence[tuple[bytes, int, float | None, str | None]],
    ) -> list[int | None]:
        """Group commit for the device layer: ``(payload, priority, ttl, coalesce_key)``
        records already encoded with ``encode_uplink`` and twin documents, in ONE durable
        transaction (``Store.commit_batch``); per record its sequence number, or None
        where the quota policy refused it (counted). ``ttl`` None means ``[outbox]
        default_ttl``, as in ``enqueue_payload``. StoreError: nothing is committed."""
        default_ttl = self.config.outbox.default_ttl
        if default_ttl > 0:
            records = [
                (payload, priority, default_ttl if ttl is None else ttl, key)
                for payload, priority, ttl, key in records
            ]
        seqs = self.store.commit_batch(twins, records)
        appended = [rec[1] for rec, seq in zip(records, seqs, strict=True) if seq is not None]
        if appended and self._link is not None:
            self._link.outbox_changed(min(appended))
        return seqs

    def add_desired_listener(self, listener: ChangeListener) -> None:
        """Call ``listener(changes, is_snapshot)`` after desired state was persisted."""
        self._listeners.append(listener)

    def add_service(self, name: str, service: Service) -> None:
        """Run ``service(daemon)`` as a task beside the link (before ``run``)."""
        self._services.append((name, service))

    def request_stop(self) -> None:
        self._stop.set()

    @property
    def hub_connected(self) -> bool:
        return self._link is not None and self._link.connected

    # --- Running --------------------------------------------------------------------------

    async def run(self) -> int:
        """Run until SIGTERM/SIGINT or ``request_stop``; the process exit code."""
        self._stop = asyncio.Event()
        try:
            self._open()
        except DaemonError as exc:
            log.error("%s", exc)
            self._record_fatal(str(exc))
            return EXIT_FAILURE
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, self._stop.set)
        tasks: list[asyncio.Task[None]] = []
        try:
            self._notifier.ready(f"store open, revision {self.store.applied_revision()}")
            self._serve_metrics()
            if self._link is not None:
                tasks.append(asyncio.create_task(self._link.run(), name="cloud-link"))
            tasks.append(asyncio.create_task(self._report_status(), name="status"))
            if self._notifier.watchdog_interval is not None:
                tasks.append(asyncio.create_task(self._watchdog(), name="watchdog"))
            for name, service in self._services:
                tasks.append(asyncio.create_task(self._supervise(name, service), name=name))
            await self._stop.wait()
            log.info("stopping")
        finally:
            self._notifier.stopping()
            for task in tasks:
                task.cancel()
            for task in tasks:
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            for signum in (signal.SIGTERM, signal.SIGINT):
                loop.remove_signal_handler(signum)
            self._close()
        return EXIT_OK

    def _open(self) -> None:
        data_dir = Path(self.config.node.data_dir)
        try:
            data_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise DaemonError(
                f"[node] data_dir {data_dir} cannot be created: {exc.strerror or exc}"
            ) from None
        if not data_dir.is_dir():
            raise DaemonError(f"[node] data_dir {data_dir} is not a directory")
        try:
            write_pid_file(data_dir)
        except OSError as exc:
            raise DaemonError(
                f"[node] data_dir {data_dir} is not writable: {exc.strerror or exc}"
            ) from None
        try:
            self._store = Store(
                str(self.config.db_path), outbox_max_bytes=self.config.outbox.max_bytes
            )
        except StoreCorruptError as exc:
            remove_pid_file(data_dir)
            raise DaemonError(
                f"the store is damaged and was left untouched: {exc}. Move it aside or "
                "salvage it (Store.salvage, docs/store.md); the hub resends desired state"
            ) from None
        except StoreError as exc:
            remove_pid_file(data_dir)
            raise DaemonError(f"cannot open the store {self.config.db_path}: {exc}") from None
        log.info(
            "store %s open (backend %s, revision %d, %d resources)",
            self.config.db_path,
            edgenode.backend,
            self._store.applied_revision(),
            len(self._store.list_resources()),
        )
        if self.config.standalone:
            log.info("no [hub] url: running standalone")
            self._write_state(LinkState(state=STANDALONE))
        else:
            self._link = CloudLink(
                self.config, self._store, self.metrics, on_desired=self._desired_changed
            )

    def _close(self) -> None:
        data_dir = Path(self.config.node.data_dir)
        if self._store is not None:
            self._store.close()
            self._store = None
        state = self._link.state if self._link is not None else LinkState(state=STANDALONE)
        if state.state != STANDALONE:
            state.state, state.since = STOPPED, time.time()
        self._write_state(state)
        remove_pid_file(data_dir)
        self._notifier.close()

    def _record_fatal(self, error: str) -> None:
        """Leave the reason in the state file so ``edgenode status`` can show it."""
        state = LinkState(state=STOPPED, last_error=error, last_error_at=time.time())
        with contextlib.suppress(OSError):
            write_link_state(Path(self.config.node.data_dir), state)

    def _write_state(self, state: LinkState) -> None:
        try:
            write_link_state(Path(self.config.node.data_dir), state)
        except OSError as exc:
            log.warning("cannot write the link state file: %s", exc)

    def _serve_metrics(self) -> None:
        listen = self.config.metrics.listen
        if not listen:
            return
        host, port = parse_listen(listen)
        try:
            address = self.metrics.serve(host, port)
        except OSError as exc:  # a busy port must not stop the node
            log.error("metrics endpoint %s unavailable: %s", listen, exc.strerror or exc)
            return
        log.info("metrics on http://%s/metrics", address)
        if self._link is not None:
            self._link.metrics_address = address  # written with the link's next state
        else:
            self._write_state(LinkState(state=STANDALONE, metrics=address))

    def _desired_changed(
        self, changes: Sequence[tuple[str, int, bytes | None]], snap: bool
    ) -> None:
        for listener in self._listeners:
            try:
                listener(changes, snap)
            except Exception:
                log.exception("desired-state listener failed")

    # --- Tasks ----------------------------------------------------------------------------

    async def _report_status(self) -> None:
        interval = self.config.status.interval
        while True:
            try:
                stats = self.store.outbox_stats()
                self.metrics.set_outbox(stats)
                body = collect_status(
                    self.config.node.data_dir, stats, self._started, self.hub_connected
                )
                self.enqueue_uplink(
                    STATUS_KIND, body, priority=STATUS_PRIORITY, coalesce_key=STATUS_COALESCE_KEY
                )
            except StoreError as exc:  # a full disk: report, keep running
                log.error("cannot queue node status: %s", exc)
            except Exception:  # a sensor or psutil failure must not end the reports
                log.exception("cannot collect node status")
            await asyncio.sleep(interval)

    async def _watchdog(self) -> None:
        interval = self._notifier.watchdog_interval
        assert interval is not None  # only started when configured
        while True:
            self._notifier.watchdog()
            await asyncio.sleep(interval)

    async def _supervise(self, name: str, service: Service) -> None:
        while True:
            try:
                await service(self)
                return
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception(
                    "service %s failed; restarting in %.0f s", name, SERVICE_RESTART_DELAY
                )
                await asyncio.sleep(SERVICE_RESTART_DELAY)

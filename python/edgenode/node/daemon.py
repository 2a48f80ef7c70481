"""The daemon behind ``edgenode run``: opens the store, runs the services, stops cleanly.

Order of start-up: data_dir (locked: one daemon per data_dir), store (``node.db``), pid
file, each service's initial desired state, ``READY=1``, metrics, then the tasks: the
cloud link (unless standalone), the status reporter, the watchdog and the services.
SIGTERM/SIGINT stop it: tasks are cancelled, the link closes with 1001, the store is
closed, ``STOPPING=1`` is sent.

The daemon is the host of its services (``edgenode.service.NodeHost``): it gives them the
config, the store, the metrics, the retained messages of the local bus, ONE commit port
(twins and uplink records in one transaction; the record envelope is built here) and the
desired state by kind. Which services run is decided by the caller (the CLI's ``run``
assembles them), not here. Everything runs on one event loop; store calls are short
synchronous SQLite transactions.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import json
import logging
import math
import os
import signal
import time
from collections.abc import Sequence
from pathlib import Path
from typing import IO, Any, Final

import edgenode
from edgenode.apps.artifacts import ArtifactCache, ArtifactSource
from edgenode.config import Config, parse_listen
from edgenode.errors import StoreCorruptError, StoreError
from edgenode.files import ARTIFACTS_DIR, LOCK_FILE, ensure_dir
from edgenode.node.link import CloudLink
from edgenode.node.metrics import Metrics
from edgenode.node.notify import Notifier
from edgenode.node.state import (
    STANDALONE,
    STOPPED,
    LinkState,
    drops_by_priority,
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
from edgenode.node.transfers import ArtifactDownloads, LogStreams
from edgenode.service import (
    BatchTarget,
    DesiredResource,
    DesiredRow,
    LogSource,
    NodeService,
    OutRecord,
    RetainedMessages,
    TwinWrite,
    kind_of,
    parse_desired,
)
from edgenode.store import Store
from edgenode.uplink import encode_uplink_raw

log = logging.getLogger("edgenode.daemon")

DEFAULT_PRIORITY: Final = 5
SERVICE_RESTART_DELAY: Final = 1.0
"""Seconds before a failed service is started again."""
EXIT_OK: Final = 0
EXIT_FAILURE: Final = 1


class DaemonError(Exception):
    """The daemon cannot start (data_dir or store unusable); the message says why."""


class Daemon:
    """One edge node: its store, its cloud link, its services (the host they run on)."""

    def __init__(
        self,
        config: Config,
        services: Sequence[NodeService] = (),
        *,
        notifier: Notifier | None = None,
    ) -> None:
        self._config = config
        self._metrics = Metrics(enabled=bool(config.metrics.listen))
        self._notifier = notifier or Notifier()
        self._store: Store | None = None
        self._link: CloudLink | None = None
        self._services = list(services)
        self._retained = RetainedMessages()
        self._downloads = ArtifactDownloads(
            ArtifactCache(
                Path(config.node.data_dir) / ARTIFACTS_DIR, config.apps.artifacts_max_bytes
            ),
            self._wake_transfers,
        )
        self._logs = LogStreams()
        self._lock: IO[str] | None = None
        self._stop = asyncio.Event()
        self._started = time.monotonic()
        self._unstored_status: bytes | None = None
        """The newest status sample taken while the hub was unreachable and not stored."""

    # --- The host services use (edgenode.service.NodeHost) ---------------------------------

    @property
    def config(self) -> Config:
        return self._config

    @property
    def metrics(self) -> Metrics:
        return self._metrics

    @property
    def retained(self) -> RetainedMessages:
        return self._retained

    @property
    def artifacts(self) -> ArtifactSource:
        return self._downloads

    def serve_logs(self, source: LogSource) -> None:
        self._logs.source = source

    def _wake_transfers(self) -> None:
        if self._link is not None:
            self._link.wake_transfers()

    @property
    def services(self) -> list[NodeService]:
        return list(self._services)

    @property
    def store(self) -> Store:
        """The open store (desired cache, twins, outbox); only while ``run`` runs."""
        if self._store is None:
            raise RuntimeError("the store is open only while the daemon runs")
        return self._store

    def commit(self, twins: Sequence[TwinWrite], records: Sequence[OutRecord]) -> list[int | None]:
        """Store ``twins`` and append ``records`` in ONE durable transaction
        (``Store.commit_batch``); per record its sequence number, or None where it was
        refused: by the outbox's quota policy (counted by the store) or because its
        envelope would exceed the record size limit (logged). A record without a TTL gets
        ``[outbox] default_ttl``. StoreError: nothing is committed."""
        default_ttl = self._config.outbox.default_ttl or None
        node = self._config.node.name
        encoded: list[tuple[bytes, int, float | None, str | None]] = []
        positions: list[int] = []
        seqs: list[int | None] = [None] * len(records)
        for index, record in enumerate(records):
            try:
                payload = encode_uplink_raw(record.kind, record.body, node)
            except ValueError as exc:
                log.error("uplink %s record dropped: %s", record.kind, exc)
                continue
            ttl = default_ttl if record.ttl is None else record.ttl
            encoded.append((payload, record.priority, ttl, record.coalesce_key))
            positions.append(index)
        stored = self.store.commit_batch(twins, encoded)
        for index, seq in zip(positions, stored, strict=True):
            seqs[index] = seq
        appended = [records[i].priority for i, seq in zip(positions, stored, strict=True) if seq]
        if appended and self._link is not None:
            self._link.outbox_changed(min(appended))
        return seqs

    def batch_target(self) -> BatchTarget:
        """:meth:`commit` in parts, for the core's batch call (the device layer's hot path,
        ``edgenode.devtwin.handle_batch``): the same store, envelope, default TTL and
        wake-up of the uplink."""
        return BatchTarget(
            self.store,
            self._config.node.name,
            self._config.outbox.default_ttl or None,
            self._outbox_changed,
        )

    def _outbox_changed(self, priority: int, _count: int) -> None:
        if self._link is not None:
            self._link.outbox_changed(priority)

    def desired(self, kind: str) -> list[DesiredResource]:
        """The current desired resources of ``kind``, from the store (bodies that are not
        JSON maps are left out, logged)."""
        resources = []
        prefix = kind + "/"
        for key, revision, data in self.store.list_resources():
            if data is None or not key.startswith(prefix):
                continue
            try:
                resources.append(parse_desired(key, revision, data))
            except ValueError as exc:
                log.warning("desired resource %s is unreadable: %s", key, exc)
        return resources

    def enqueue_uplink(
        self,
        kind: str,
        body: Any,
        *,
        priority: int = DEFAULT_PRIORITY,
        ttl: float | None = None,
        coalesce_key: str | None = None,
    ) -> int | None:
        """Append one uplink record durably (``commit`` of one record); its sequence
        number, None when refused. ``ValueError`` for a body that is not JSON."""
        data = json.dumps(body, separators=(",", ":"), allow_nan=False, ensure_ascii=False)
        (seq,) = self.commit([], [OutRecord(kind, data.encode(), priority, ttl, coalesce_key)])
        return seq

    def request_stop(self) -> None:
        self._stop.set()

    @property
    def hub_connected(self) -> bool:
        return self._link is not None and self._link.connected

    def add_service(self, service: NodeService) -> None:
        """Run ``service`` too (before ``run``)."""
        self._services.append(service)

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
            self._initial_desired()
            self._notifier.ready(f"store open, revision {self.store.applied_revision()}")
            self._serve_metrics()
            if self._link is not None:
                tasks.append(asyncio.create_task(self._link.run(), name="cloud-link"))
            tasks.append(asyncio.create_task(self._report_status(), name="status"))
            if self._notifier.watchdog_interval is not None:
                tasks.append(asyncio.create_task(self._watchdog(), name="watchdog"))
            for service in self._services:
                tasks.append(
                    asyncio.create_task(self._supervise(service), name=f"service-{service.name}")
                )
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
            try:
                self._store_status()  # a clean stop keeps the newest offline status
            except (StoreError, RuntimeError) as exc:
                log.error("cannot store the last node status: %s", exc)
            self._close()
        return EXIT_OK

    def _open(self) -> None:
        data_dir = Path(self.config.node.data_dir)
        key = f"{self.config.source}: [node] data_dir"  # errors name the file to fix
        try:
            ensure_dir(data_dir)
        except OSError as exc:
            raise DaemonError(
                f"{key} {data_dir} cannot be created: {exc.strerror or exc}"
            ) from None
        if not data_dir.is_dir():
            raise DaemonError(f"{key} {data_dir} is not a directory")
        self._lock_data_dir(data_dir)
        try:
            write_pid_file(data_dir)
        except OSError as exc:
            raise DaemonError(f"{key} {data_dir} is not writable: {exc.strerror or exc}") from None
        try:
            self._store = Store(
                str(self.config.db_path),
                synchronous=self.config.store.synchronous,
                outbox_max_bytes=self.config.outbox.max_bytes,
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
                self.config,
                self._store,
                self.metrics,
                on_desired=self._desired_changed,
                downloads=self._downloads,
                logs=self._logs,
            )

    def _lock_data_dir(self, data_dir: Path) -> None:
        """Hold an exclusive lock on ``DATA_DIR/edgenode.lock`` for the process's life: a
        second daemon on the same data_dir would share ``node.db`` and fight over the hub
        link. The lock goes with the process, however it ends (no stale lock files)."""
        path = data_dir / LOCK_FILE
        try:
            handle = open(path, "a+")  # noqa: SIM115 - held open for the daemon's life
        except OSError as exc:
            raise DaemonError(
                f"{self.config.source}: [node] data_dir {data_dir} is not writable: "
                f"{exc.strerror or exc}"
            ) from None
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            handle.seek(0)
            holder = handle.read().strip() or "unknown"
            handle.close()
            raise DaemonError(
                f"another edgenode daemon (pid {holder}) is running on data_dir {data_dir}; "
                "stop it first, or give this node its own data_dir"
            ) from None
        handle.seek(0)
        handle.truncate()
        handle.write(f"{os.getpid()}\n")
        handle.flush()
        os.chmod(path, 0o600)
        self._lock = handle

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
        if self._lock is not None:
            self._lock.close()  # releases the lock
            self._lock = None

    def _record_fatal(self, error: str) -> None:
        """Leave the reason in the state file so ``edgenode status`` can show it (not
        when another daemon holds the data_dir: its state file is its own)."""
        if "another edgenode daemon" in error:
            return
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
            log.error(
                "metrics endpoint %s unavailable: %s; change [metrics] listen in %s "
                '(or set it to "" to turn the endpoint off)',
                listen,
                exc.strerror or exc,
                self.config.source or "the config file",
            )
            return
        log.info("metrics on http://%s/metrics", address)
        if self._link is not None:
            self._link.metrics_address = address  # written with the link's next state
        else:
            self._write_state(LinkState(state=STANDALONE, metrics=address))

    def _initial_desired(self) -> None:
        """Give every service its kinds' desired state from the store before anything
        runs (as a snapshot), so each starts from what the node last had."""
        rows: list[DesiredRow] = list(self.store.list_resources())
        self._desired_changed(rows, True)

    def _desired_changed(self, changes: Sequence[DesiredRow], snap: bool) -> None:
        """Desired state was persisted: tell each service whose kinds it touches (a
        snapshot concerns every service)."""
        for service in self._services:
            mine = [row for row in changes if kind_of(row[0]) in service.kinds]
            if not mine and not snap:
                continue
            try:
                service.on_desired(self, mine, snap)
            except Exception:
                log.exception("service %s failed on a desired-state change", service.name)

    # --- Tasks ----------------------------------------------------------------------------

    async def _report_status(self) -> None:
        """Node status is a sample, not a record (docs/store.md, "Durability"): while the
        link is up each one goes to the hub without a disk write (``offer_sample``); while
        it is down only the newest is kept, stored (coalesced) at most every
        ``[status] persist_interval`` and at a clean stop."""
        interval = self.config.status.interval
        persist_every = self.config.status.persist_interval
        last_stored = -math.inf
        while True:
            try:
                stats = self.store.outbox_stats()
                drops = self.store.drop_counts()
                self.metrics.set_outbox(stats, drops)
                outbox: dict[str, Any] = {**stats, "dropped_by_priority": drops_by_priority(drops)}
                body = collect_status(
                    self.config.node.data_dir, outbox, self._started, self.hub_connected
                )
                data = json.dumps(
                    body, separators=(",", ":"), allow_nan=False, ensure_ascii=False
                ).encode()
                payload = encode_uplink_raw(STATUS_KIND, data, self.config.node.name)
                if self._link is not None and self._link.offer_sample(payload, STATUS_PRIORITY):
                    self._unstored_status = None
                else:
                    self._unstored_status = data
                    now = time.monotonic()
                    if now - last_stored >= persist_every:
                        last_stored = now
                        self._store_status()
            except StoreError as exc:  # a full disk: report, keep running
                log.error("cannot queue node status: %s", exc)
            except Exception:  # a sensor or psutil failure must not end the reports
                log.exception("cannot collect node status")
            await asyncio.sleep(interval)

    def _store_status(self) -> None:
        """Append the newest unstored status to the outbox (replacing a stored one)."""
        data, self._unstored_status = self._unstored_status, None
        if data is None:
            return
        self.commit([], [OutRecord(STATUS_KIND, data, STATUS_PRIORITY, None, STATUS_COALESCE_KEY)])

    async def _watchdog(self) -> None:
        interval = self._notifier.watchdog_interval
        assert interval is not None  # only started when configured
        while True:
            self._notifier.watchdog()
            await asyncio.sleep(interval)

    async def _supervise(self, service: NodeService) -> None:
        while True:
            try:
                await service.run(self)
                return
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception(
                    "service %s failed; restarting in %.0f s", service.name, SERVICE_RESTART_DELAY
                )
                await asyncio.sleep(SERVICE_RESTART_DELAY)

"""The cloud link: a ``websockets`` client driving ``NodeProtocol`` against the hub, forever.

Thin asyncio glue over the sans-I/O protocol (docs/protocol.md): this module moves
messages, runs the protocol's timers on ``loop.time()`` and answers its events with the
store. It decides nothing the protocol or the store already decide. The rules it adds:

- desired changes are persisted (``Store.apply_changes`` / ``replace_all``, one
  transaction) *before* they are acknowledged; a change that cannot be stored as bytes is
  refused with ``reject_change`` and the revision still advances;
- uplink is read from the outbox in its order (``peek`` with an ``after=`` cursor) and sent
  within the protocol's window; records are deleted only when the hub acknowledges them;
- every failure ends in a reconnect after ``Backoff.next_delay`` (full jitter, capped, at
  least the hub's retry-after); a rejected token or unknown node gets the long back-off.
  Liveness is the protocol's heartbeat deadline, so a blackholed link is noticed in about
  three heartbeat intervals, not by TCP timeouts.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import logging
import ssl
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Final

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus, InvalidURI

import edgenode
from edgenode.backoff import Backoff
from edgenode.config import Config
from edgenode.errors import ConfigError, StoreError
from edgenode.node.metrics import Metrics
from edgenode.node.state import CONNECTED, CONNECTING, DISCONNECTED, LinkState, write_link_state
from edgenode.node.transfers import ArtifactDownloads, LogStreams
from edgenode.protocol import (
    PROTOCOL_VERSION,
    ChangeErrorCode,
    ChangesReceived,
    CloseCode,
    Delete,
    ErrorCode,
    ErrorReceived,
    NodeConfig,
    NodeProtocol,
    PeerTimedOut,
    ProtocolViolation,
    RetryAfter,
    SnapshotReceived,
    State,
    UplinkAcked,
    UplinkRecord,
    Welcomed,
)
from edgenode.protocol.events import (
    ArtifactReceived,
    ArtifactRefused,
    LogCancelled,
    LogRequested,
)
from edgenode.protocol.frames import Body
from edgenode.store import Store

log = logging.getLogger("edgenode.link")

FRAME_SIZE_SLACK: Final = 1024
"""websockets' ``max_size`` is a little above the protocol's limit, so an oversized message
reaches the protocol and gets its precise FRAME_TOO_BIG answer."""
CLOSE_TIMEOUT: Final = 2.0
"""Seconds to wait for the hub's close frame before dropping the TCP connection."""
OPERATOR_ERRORS: Final = frozenset(
    {
        ErrorCode.UNSUPPORTED_VERSION,
        ErrorCode.UNAUTHORIZED,
        ErrorCode.UNKNOWN_NODE,
        ErrorCode.REPLACED,
    }
)
"""Hub answers that retrying soon cannot fix: the long back-off applies."""
AUTH_STATUSES: Final = frozenset({401, 403})
CLOCK_WARNING: Final = 60.0
"""Seconds between the node's and the hub's clocks above which the node warns."""
STABLE_CONNECTION: Final = 10.0
ACK_FLUSH_SECONDS: Final = 5.0
"""Acknowledged records are deleted by the next write transaction (one commit per report
at a lone 1 report/s instead of two: docs/store.md); after this long without another
ack they are deleted on their own."""
"""Seconds a welcomed connection must last for its end to reset the back-off."""

ChangeListener = Callable[[Sequence[tuple[str, int, bytes | None]], bool], None]
"""Called after desired state was persisted: ``(changes, is_snapshot)``."""


def body_bytes(body: Body) -> bytes:
    """How a resource body is stored: bytes as they are, a map body as compact JSON."""
    if isinstance(body, bytes):
        return body
    return json.dumps(body, separators=(",", ":"), sort_keys=True, allow_nan=False).encode()


class _Outcome:
    """How one connection attempt ended, for the back-off decision."""

    def __init__(self) -> None:
        self.retry_after = 0.0
        self.long = False
        self.error = ""
        self.welcomed = False
        self.welcomed_at = 0.0


class CloudLink:
    """Keeps one connection to the hub alive for as long as ``run()`` runs."""

    def __init__(
        self,
        config: Config,
        store: Store,
        metrics: Metrics,
        *,
        on_desired: ChangeListener | None = None,
        on_state: Callable[[str], None] | None = None,
        random: Callable[[], float] | None = None,
        downloads: ArtifactDownloads | None = None,
        logs: LogStreams | None = None,
    ) -> None:
        self._config = config
        self._downloads = downloads
        self._logs = logs
        self._transfers = asyncio.Event()
        """Set when downloads want something sent (log tasks wait for flushes instead)."""
        self._flush_waiters: list[asyncio.Future[None]] = []
        self._store = store
        self._metrics = metrics
        self._on_desired = on_desired
        self._on_state = on_state
        self._backoff = (
            Backoff(config.hub.backoff_base, config.hub.backoff_cap)
            if random is None
            else Backoff(config.hub.backoff_base, config.hub.backoff_cap, random=random)
        )
        self._node_config = NodeConfig(
            max_frame_size=config.hub.max_frame_size,
            handshake_timeout=config.hub.handshake_timeout,
        )
        self._version = PROTOCOL_VERSION
        """The protocol version asked for; lowered when an older hub refuses it."""
        self._outbox_changed = asyncio.Event()
        self._cursor: tuple[int, int] | None = None
        self._sample: tuple[bytes, int] | None = None
        """The newest sample not yet sent (``offer_sample``)."""
        self._samples_in_flight: set[int] = set()
        self._ack_flush: asyncio.TimerHandle | None = None
        self._link_compressed = False
        """The current link negotiated permessage-deflate ([hub] compression)."""
        """Sequence numbers of samples sent on this connection and not yet acked."""
        self.state = LinkState(state=CONNECTING, hub_url=config.hub.url)
        self.metrics_address = ""

    # --- For the daemon -------------------------------------------------------------------

    @property
    def connected(self) -> bool:
        return self.state.state == CONNECTED

    def wake_transfers(self) -> None:
        """An artifact download wants a fetch sent."""
        self._transfers.set()

    def _next_flush(self) -> asyncio.Future[None]:
        """Resolves after the link's next flush (log streams pace themselves on it)."""
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._flush_waiters.append(future)
        self._transfers.set()
        return future

    def offer_sample(self, payload: bytes, priority: int) -> bool:
        """Send ``payload`` (an uplink record envelope) to the hub WITHOUT storing it: a
        sample such as the node status, which the next one replaces. The link holds the
        newest sample until it can send it: after every stored record it finds in the
        outbox (so a stored status of the same kind arrives before it), with a sequence
        number from ``Store.reserve_seq`` (nothing written); its ack deletes nothing. A
        sample lost with a connection is not resent. True if connected now (the caller
        keeps durability for the offline case, docs/store.md)."""
        self._sample = (payload, priority)
        self._outbox_changed.set()
        return self.connected

    def outbox_changed(self, priority: int) -> None:
        """Records were appended: wake the uplink (and rewind for a more urgent one)."""
        if self._cursor is not None and priority < self._cursor[0]:
            self._cursor = None
        self._outbox_changed.set()

    async def run(self) -> None:
        """Connect, serve, and reconnect after every failure, until cancelled."""
        try:
            await self._run()
        finally:
            # The daemon closes the store after this (which deletes deferred acks).
            if self._ack_flush is not None:
                self._ack_flush.cancel()

    async def _run(self) -> None:
        self._write_state()
        while True:
            outcome = _Outcome()
            try:
                await self._connect_once(outcome)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # every loop must recover: log, back off, retry
                log.exception("cloud link failed unexpectedly")
                outcome.error = f"internal error: {type(exc).__name__}: {exc}"
            if outcome.welcomed:
                # A hub may have been upgraded while we were away: ask for the newest again.
                self._version = PROTOCOL_VERSION
            if outcome.welcomed and time.monotonic() - outcome.welcomed_at >= STABLE_CONNECTION:
                # Only a connection that lasted resets the back-off: a hub that welcomes
                # and then fails at once must not be hammered at the base delay forever.
                self._backoff.reset()
            delay = self._backoff.next_delay(outcome.retry_after, long=outcome.long)
            if outcome.welcomed:
                log.warning("link to hub lost (%s), reconnecting in %.2f s", outcome.error, delay)
            elif outcome.long:
                log.error("%s; retrying in %.1f s", outcome.error, delay)
            else:
                log.warning("hub unreachable, retrying in %.2f s (%s)", delay, outcome.error)
            self._set_state(DISCONNECTED, outcome.error)
            await asyncio.sleep(delay)

    # --- One connection -------------------------------------------------------------------

    async def _connect_once(self, outcome: _Outcome) -> None:
        hub = self._config.hub
        self._metrics.reconnects.inc()
        try:
            token = self._config.hub_token()
        except ConfigError as exc:
            outcome.long, outcome.error = True, str(exc)
            return
        ssl_context: ssl.SSLContext | None = None
        if hub.url.startswith("wss://"):
            try:
                ssl_context = ssl.create_default_context(cafile=hub.ca_file or None)
            except (OSError, ssl.SSLError) as exc:
                outcome.long = True
                outcome.error = (
                    f"{self._config.source}: [hub] ca_file: cannot load {hub.ca_file}: {exc}"
                )
                return
        try:
            ws = await connect(
                hub.url,
                additional_headers={"Authorization": f"Bearer {token}"},
                user_agent_header=f"edgenode/{edgenode.__version__}",
                ssl=ssl_context,
                open_timeout=hub.handshake_timeout,
                ping_interval=None,  # liveness is the protocol's heartbeat, both ways
                close_timeout=CLOSE_TIMEOUT,
                max_size=hub.max_frame_size + FRAME_SIZE_SLACK,
                compression="deflate" if hub.compression else None,
                proxy=None,
            )
        except InvalidStatus as exc:
            status = exc.response.status_code
            detail = exc.response.body.decode("utf-8", "replace").strip()[:200]
            if status in AUTH_STATUSES:
                outcome.long = True
                outcome.error = f"hub rejected the token (HTTP {status}): {detail or 'no detail'}"
            else:
                outcome.error = f"hub answered HTTP {status}: {detail or 'no detail'}"
                retry = exc.response.headers.get("Retry-After", "")
                if retry.isdigit():
                    outcome.retry_after = float(retry)
            return
        except ssl.SSLCertVerificationError as exc:
            # Retrying soon cannot fix a certificate: the long back-off, an ERROR log.
            outcome.long = True
            outcome.error = f"hub certificate not trusted: {exc.verify_message or exc.reason}"
            return
        except (OSError, TimeoutError, InvalidHandshake, InvalidURI) as exc:
            outcome.error = _describe(exc)
            return
        try:
            await self._serve(ws, outcome)
        except TimeoutError:
            outcome.error = outcome.error or "the hub stopped reading (send timed out)"
            ws.transport.abort()
        except ConnectionClosed as exc:
            outcome.error = _closed_reason(exc, outcome.error)
        finally:
            # Unacknowledged records are no longer on the wire: the quota and their TTL
            # may drop them again (they are sent again after the reconnect otherwise).
            self._set_in_flight(())
            await ws.close(CloseCode.GOING_AWAY, "node shutting down")

    async def _serve(self, ws: ClientConnection, outcome: _Outcome) -> None:
        loop = asyncio.get_running_loop()
        self._link_compressed = _compressed(ws)
        proto = NodeProtocol(
            self._config.node.name,
            f"edgenode {edgenode.__version__}",
            self._store.applied_revision(),
            loop.time(),
            dataclasses.replace(self._node_config, version=self._version),
            next_seq=self._store.next_seq(),
        )
        self._cursor = None
        self._samples_in_flight.clear()
        recv: asyncio.Task[str | bytes] | None = None
        try:
            more = False
            while True:
                await self._flush(ws, proto)
                self._handle_events(proto, outcome)
                await self._flush(ws, proto)
                close = proto.close_requested()
                if close is not None:
                    if not outcome.error:
                        outcome.error = f"closed by the node ({close.code} {close.reason})"
                    if close.code == CloseCode.PEER_TIMED_OUT:
                        # The hub is silent: a closing handshake would only wait for it.
                        ws.transport.abort()
                    else:
                        await ws.close(close.code, close.reason)
                    return
                if proto.state is State.OPEN:
                    more = self._pump_uplink(proto)
                    self._transfers.clear()
                    if self._downloads is not None and "artifacts" in proto.features:
                        self._downloads.issue(proto)
                    await self._flush(ws, proto)
                if recv is None:
                    recv = asyncio.ensure_future(ws.recv())
                waiters: set[asyncio.Future[object]] = {recv}  # type: ignore[arg-type]
                wake: asyncio.Task[bool] | None = None
                if proto.state is State.OPEN and proto.can_send() and not more:
                    wake = asyncio.ensure_future(self._outbox_changed.wait())
                    waiters.add(wake)  # type: ignore[arg-type]
                transfer: asyncio.Task[bool] | None = None
                if proto.state is State.OPEN:
                    transfer = asyncio.ensure_future(self._transfers.wait())
                    waiters.add(transfer)  # type: ignore[arg-type]
                deadline = proto.next_deadline()
                timeout: float | None = None
                if more:
                    timeout = 0.0
                elif deadline is not None:
                    timeout = max(0.0, deadline - loop.time())
                done, _ = await asyncio.wait(
                    waiters, timeout=timeout, return_when=asyncio.FIRST_COMPLETED
                )
                if wake is not None:
                    wake.cancel()
                if transfer is not None:
                    transfer.cancel()
                if recv in done:
                    task, recv = recv, None
                    try:
                        message = task.result()
                    except ConnectionClosed as exc:
                        outcome.error = _closed_reason(exc, outcome.error)
                        return
                    self._metrics.frames_in.inc()
                    proto.receive_message(message, loop.time())
                else:
                    proto.tick(loop.time())
        finally:
            # Records in flight now: the hub may have them (their ack lost with the
            # connection). Sent again after the reconnect (the hub drops duplicates);
            # if the quota or a TTL drops one first, it is counted dropped though the hub
            # may have it: `in_doubt` bounds how many (docs/store.md, "Records in flight").
            self.state.in_doubt += len(set(proto.in_flight) - self._samples_in_flight)
            if self._downloads is not None:
                self._downloads.disconnected()
            if self._logs is not None:
                self._logs.cancel_all()
            self._flushed()
            if recv is not None:
                recv.cancel()
                with contextlib.suppress(asyncio.CancelledError, ConnectionClosed):
                    await recv

    async def _flush(self, ws: ClientConnection, proto: NodeProtocol) -> None:
        # A hub that stops reading must not stall the loop (and the heartbeat deadline)
        # forever: a send that cannot complete in time ends the connection.
        async with asyncio.timeout(self._config.hub.handshake_timeout):
            for message in proto.data_to_send():
                await ws.send(message)
                self._metrics.frames_out.inc()
        self._flushed()

    def _flushed(self) -> None:
        waiters, self._flush_waiters = self._flush_waiters, []
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(None)

    # --- Events ---------------------------------------------------------------------------

    def _handle_events(self, proto: NodeProtocol, outcome: _Outcome) -> None:
        acked: list[int] = []
        """The acks of every frame read in this step: deleted in ONE store transaction."""
        try:
            self._handle_each(proto, outcome, acked)
        finally:
            if acked:
                self._uplink_acked(acked)

    def _handle_each(self, proto: NodeProtocol, outcome: _Outcome, acked: list[int]) -> None:
        for event in proto.events_received():
            match event:
                case Welcomed():
                    outcome.welcomed = True
                    outcome.welcomed_at = time.monotonic()
                    self.state.hub_revision = event.hub_revision
                    self._clock_check(event.hub_time)
                    if self._downloads is not None:
                        self._downloads.heartbeat = event.heartbeat_interval
                    log.info(
                        "connected to hub %s (hub revision %d, node revision %d%s)",
                        self._config.hub.url,
                        event.hub_revision,
                        self._store.applied_revision(),
                        ", compressed" if self._link_compressed else "",
                    )
                    self._set_state(CONNECTED)
                case ChangesReceived():
                    self._apply_changes(proto, event)
                case SnapshotReceived():
                    self._apply_snapshot(proto, event)
                case UplinkAcked():
                    acked.extend(event.sequences)
                case RetryAfter():
                    outcome.retry_after = max(outcome.retry_after, event.delay)
                    outcome.error = f"hub busy, retry after {event.delay:.1f} s: {event.message}"
                case ErrorReceived():
                    outcome.error = f"hub error {_code_name(event.code)}: {event.message}"
                    if event.code == ErrorCode.UNSUPPORTED_VERSION and self._version > 1:
                        # An older hub: ask for the version before on the next attempt.
                        self._version -= 1
                        log.warning("the hub does not speak protocol version %d", self._version + 1)
                    elif event.code in OPERATOR_ERRORS:
                        outcome.long = True
                case PeerTimedOut():
                    outcome.error = f"hub silent for {event.silence:.1f} s (heartbeat deadline)"
                case ArtifactReceived():
                    if self._downloads is not None:
                        self._downloads.received(event)
                case ArtifactRefused():
                    if self._downloads is not None:
                        self._downloads.refused(event)
                case LogRequested():
                    if self._logs is None:
                        proto.end_log(event.request, 404, "this node runs no Apps")
                    else:
                        self._logs.start(
                            proto, event.request, event.app, event.tail, event.follow,
                            self._next_flush,
                        )  # fmt: skip
                case LogCancelled():
                    if self._logs is not None:
                        self._logs.cancel(event.request)
                case ProtocolViolation():
                    outcome.error = f"hub sent an invalid message ({_code_name(event.code)}): " + (
                        event.message
                    )
                case _:  # pragma: no cover - hub-side events never reach a node
                    pass

    def _uplink_acked(self, sequences: Sequence[int]) -> None:
        samples = self._samples_in_flight
        stored = [seq for seq in sequences if seq not in samples]
        samples.difference_update(sequences)
        if not stored:  # only samples: nothing to delete, nothing written
            self._metrics.uplink_acked.inc(len(sequences))
            return
        try:
            # Deleted by the next write transaction (folded into a report's commit), or
            # by _flush_acks once acks stop coming.
            self._store.ack_deferred(stored)
        except StoreError as exc:
            # The records stay in the outbox and are sent again after the next reconnect;
            # the hub drops the duplicates. Nothing is lost.
            log.error("cannot delete acknowledged uplink records: %s", exc)
            self._record_error(f"cannot delete acknowledged uplink records: {exc}")
            return
        self._metrics.uplink_acked.inc(len(sequences))
        if self._ack_flush is not None:
            self._ack_flush.cancel()
        self._ack_flush = asyncio.get_running_loop().call_later(ACK_FLUSH_SECONDS, self._flush_acks)

    def _flush_acks(self) -> None:
        self._ack_flush = None
        try:
            self._store.flush_acks()
        except StoreError as exc:  # sent again after a restart; the hub drops duplicates
            log.error("cannot delete acknowledged uplink records: %s", exc)
            self._record_error(f"cannot delete acknowledged uplink records: {exc}")

    def _set_in_flight(self, sequences: Sequence[int]) -> None:
        """Tell the store which records are on the wire (spared by quota and TTL)."""
        with contextlib.suppress(StoreError):  # closed while shutting down: nothing to spare
            self._store.set_in_flight(sequences)

    def _apply_changes(self, proto: NodeProtocol, event: ChangesReceived) -> None:
        rows: list[tuple[str, int, bytes | None]] = []
        rejected: list[tuple[str, int, str]] = []
        for change in event.changes:
            if isinstance(change, Delete):
                rows.append((change.key, change.revision, None))
                continue
            try:
                rows.append((change.key, change.revision, body_bytes(change.body)))
            except (TypeError, ValueError) as exc:
                rejected.append((change.key, change.revision, f"body cannot be stored: {exc}"))
        if not self._persist(proto, lambda: self._store.apply_changes(rows, event.revision)):
            return
        for key, revision, message in rejected:
            log.warning("refused desired change %s @%d: %s", key, revision, message)
            proto.reject_change(key, revision, ChangeErrorCode.INVALID_RESOURCE, message)
            self._metrics.changes_rejected.inc()
        proto.ack(event.revision)
        self._metrics.changes_applied.inc(len(rows))
        self._metrics.applied_revision.set(event.revision)
        if rows and self._on_desired is not None:
            self._on_desired(rows, False)

    def _apply_snapshot(self, proto: NodeProtocol, event: SnapshotReceived) -> None:
        rows: list[tuple[str, int, bytes]] = []
        for resource in event.resources:
            try:
                rows.append((resource.key, resource.revision, body_bytes(resource.body)))
            except (TypeError, ValueError) as exc:
                log.warning("refused snapshot resource %s: %s", resource.key, exc)
                proto.reject_change(
                    resource.key, resource.revision, ChangeErrorCode.INVALID_RESOURCE, str(exc)
                )
        if not self._persist(proto, lambda: self._store.replace_all(rows, event.revision)):
            return
        log.info("replaced desired state with a snapshot at revision %d", event.revision)
        proto.ack(event.revision)
        self._metrics.applied_revision.set(event.revision)
        if self._on_desired is not None:
            self._on_desired(list(rows), True)

    def _persist(self, proto: NodeProtocol, write: Callable[[], None]) -> bool:
        """Run the store write; on failure do not ack: tell the hub and reconnect later."""
        try:
            write()
        except (StoreError, ValueError) as exc:
            log.error("cannot persist desired state (not acknowledged): %s", exc)
            self._record_error(f"cannot persist desired state: {exc}")
            proto.send_error(ErrorCode.INTERNAL_ERROR, f"node cannot persist: {exc}")
            return False
        return True

    def _clock_check(self, hub_time: float | None) -> None:
        """Record how far this node's wall clock is from the hub's (a board without a
        real-time clock after a power cut); nothing here decides anything by it."""
        if hub_time is None:
            return
        offset = time.time() - hub_time
        self.state.clock_offset = round(offset, 3)
        if abs(offset) > CLOCK_WARNING:
            log.warning(
                "this node's clock is %.0f s %s the hub's",
                abs(offset),
                "ahead of" if offset > 0 else "behind",
            )

    # --- Uplink ---------------------------------------------------------------------------

    def _pump_uplink(self, proto: NodeProtocol) -> bool:
        """Send what the window admits from the outbox; True if more may be waiting."""
        self._outbox_changed.clear()
        if not proto.can_send():
            return False
        batch = self._config.hub.uplink_batch
        try:
            records = self._store.peek(batch, after=self._cursor)
        except StoreError as exc:
            log.error("cannot read the outbox: %s", exc)
            self._record_error(f"cannot read the outbox: {exc}")
            return False
        in_flight = set(proto.in_flight)
        limit = proto.max_uplink_payload
        examined: list[tuple[int, int]] = []
        sendable: list[tuple[int, UplinkRecord]] = []
        oversized: list[int] = []
        for seq, priority, payload in records:
            examined.append((priority, seq))
            if seq in in_flight:
                continue
            if len(payload) > limit:
                oversized.append(seq)
                continue
            sendable.append((len(examined) - 1, UplinkRecord(seq, priority, payload)))
        if oversized:
            # It can never be sent on this hub: drop it, counted, instead of wedging.
            log.error(
                "dropping %d uplink records over the hub's limit of %d bytes", len(oversized), limit
            )
            try:
                self._store.ack(oversized)
                self._metrics.uplink_oversized.inc(len(oversized))
            except StoreError as exc:
                log.error("cannot drop oversized uplink records: %s", exc)
        sent = proto.send_uplink([record for _, record in sendable])
        if sent:
            self._set_in_flight(proto.in_flight)
        if sent == len(sendable):
            if examined:
                self._cursor = examined[-1]
            more = len(records) == batch and proto.can_send()
            if not more:  # every stored record is on its way: the sample goes after them
                self._send_sample(proto)
            return more
        if sent:
            self._cursor = examined[sendable[sent - 1][0]]
        return False

    def _send_sample(self, proto: NodeProtocol) -> None:
        if self._sample is None or not proto.can_send():
            return
        payload, priority = self._sample
        if len(payload) > proto.max_uplink_payload:
            log.error(
                "dropping an uplink sample of %d bytes: over the hub's limit of %d bytes",
                len(payload),
                proto.max_uplink_payload,
            )
            self._sample = None
            return
        seq = self._store.reserve_seq()
        if proto.send_uplink([UplinkRecord(seq, priority, payload)]):
            self._sample = None
            self._samples_in_flight.add(seq)

    # --- State ----------------------------------------------------------------------------

    def _record_error(self, error: str) -> None:
        self.state.last_error = error
        self.state.last_error_at = time.time()
        self._write_state()

    def _set_state(self, state: str, error: str = "") -> None:
        changed = state != self.state.state
        if changed:
            self.state.state = state
            self.state.since = time.time()
            self._metrics.set_link_state(state)
            if self._on_state is not None:
                self._on_state(state)
        # The same error again (every retry while the hub is away) is not rewritten: weeks
        # offline must not mean thousands of fsyncs a day on an SD card.
        new_error = bool(error) and error != self.state.last_error
        if new_error:
            self.state.last_error = error
            self.state.last_error_at = time.time()
        if changed or new_error:
            self._write_state()

    def _write_state(self) -> None:
        self.state.metrics = self.metrics_address
        try:
            write_link_state(Path(self._config.node.data_dir), self.state)
        except OSError as exc:  # a full disk must not stop the link
            log.warning("cannot write the link state file: %s", exc)


def _compressed(ws: ClientConnection) -> bool:
    """Whether the link negotiated permessage-deflate."""
    return any(e.name == "permessage-deflate" for e in ws.protocol.extensions)


def _code_name(code: int) -> str:
    try:
        return f"{ErrorCode(code).name} ({code})"
    except ValueError:
        return str(code)


def _describe(exc: BaseException) -> str:
    if isinstance(exc, TimeoutError):
        return "timed out connecting"
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused"
    if isinstance(exc, ssl.SSLError):
        return f"TLS error: {exc.reason or exc}"
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


def _closed_reason(exc: ConnectionClosed, previous: str) -> str:
    if previous:
        return previous
    frame = exc.rcvd
    if frame is None:
        return "connection closed without a close frame"
    return f"hub closed the connection ({frame.code} {frame.reason})".rstrip()

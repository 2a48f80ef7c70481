"""The device layer on the wire: the glue between the local broker and TwinService.

:class:`DeviceLayer` is what the node's device service runs. ``run()`` connects to the
broker (username/password and TLS when configured), subscribes to the device API topics
and the route filters, feeds received messages in batches to the sans-I/O
:class:`~edgenode.devices.twins.TwinService`, commits each batch's twin documents and
uplink records in ONE store transaction through its commit port
(:class:`edgenode.service.CommitPort`, the host's one port for durable writes) and
publishes the replies. What does not come from a message (a desired change from the hub,
a device added) goes through the same port. It reconnects forever with jittered
exponential back-off and subscribes again after every reconnect; twin state lives in the
store, so a broker restart loses nothing and, once reconnected, every device's retained
delta is published again.

Retained messages the node owns match its store: after every (re)connect each known
device's delta is published (or cleared), and so is every message of the host's
:class:`~edgenode.service.RetainedMessages` (Configs, ...). A retained message the broker
still holds for something the node no longer serves (a removed device's delta, a deleted
Config) arrives with the retain flag when the node subscribes, and is cleared.

The MQTT client is the node's own (:mod:`edgenode.devices.mqtt`, on the core's packet
codec): it hands over the received messages as the tuples the core's batch call takes and
writes a batch's acknowledgements and replies in one write each.

MQTT 3.1.1 on purpose: Mosquitto delivers one copy of a message matching several of a
client's filters (with MQTT 5 it sends one copy per matching subscription), and a
persistent session (fixed client id, ``clean_session=False``) makes the broker queue
the devices' QoS 1 messages while the node restarts.

At least once: a device's QoS 1 message is acknowledged to the broker (PUBACK) only after
everything it caused is committed — the twin saved, the uplink records appended, the
replies handed to the broker — so a node killed at any moment loses nothing the broker
considers delivered; the broker delivers the unacknowledged messages again when the node
is back. Within a batch the twin writes wait in :class:`DeferredTwinWrites` and are
committed in the same transaction as the batch's uplink records (group commit: one
durable commit per batch, not per record), so a twin change is never stored without its
uplink record (a redelivered report that changes nothing sends nothing upstream). If the
commit fails, nothing of the batch is stored, the in-memory twins are dropped, the batch
stays unacknowledged and the session ends: after the reconnect the broker redelivers and
the node applies the batch again.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
import time
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from typing import Any, Final, cast

from edgenode.backoff import Backoff
from edgenode.devices.actions import Action, Publish, Uplink
from edgenode.devices.config import (
    DEFAULT_TELEMETRY_PRIORITY,
    DeviceSpec,
    MqttSettings,
    RouteSpec,
)
from edgenode.devices.mqtt import Batch, MqttError, MqttOptions, MqttSession
from edgenode.devices.routes import RouteTable
from edgenode.devices.twins import TOPIC_ROOT, TWIN_UPLINK_PRIORITY, TwinService
from edgenode.devtwin import BatchResult, handle_batch
from edgenode.errors import StoreError
from edgenode.service import (
    BatchPort,
    BatchTarget,
    CommitPort,
    OutRecord,
    RetainedMessages,
    TwinWrite,
)
from edgenode.store import Store
from edgenode.uplink import encode_uplink_raw, envelope_head

log = logging.getLogger("edgenode.devices")

MAX_BATCH: Final = 256
WINDOW_STEPS: Final = 10
MIN_WINDOW_STEP: Final = 0.002
"""A commit window is waited in about WINDOW_STEPS sleeps (at least MIN_WINDOW_STEP
seconds each), so a batch that fills up early is committed early."""
WINDOW_ENOUGH: Final = 32
"""Messages queued that end a commit window early: a commit of this many already writes
about 1 KB per message (bench/README.md, the batch sweep), and waiting for more would
only slow a backlog's drain (the broker holds back what the node has not acknowledged)."""
"""Messages already queued by the client are handled together, up to this many (one
router call, then the publishes of the whole batch in flight at once)."""
SUBSCRIBE_QOS: Final = 1
RETAINED_QOS: Final = 1
OWNED_RETAINED_FILTERS: Final = ("$edge/config/+",)
"""Retained topics the node owns besides the twin deltas (subscribed to so that stale
ones left at the broker are seen, and cleared)."""
BROKER_DROPPED_TOPIC: Final = "$SYS/broker/publish/messages/dropped"
"""Mosquitto's count of messages it dropped (queue or in-flight limits) since it started,
published every ``sys_interval`` seconds. A QoS 1 message the broker drops was already
acknowledged to its publisher: the node cannot get it back, but it must never be lost
silently — the node watches this counter and reports what it sees rise."""
DROP_WARNING_INTERVAL: Final = 60.0
"""Seconds between warnings about broker drops (the counter keeps counting)."""


class StoreCommit:
    """A commit port straight onto a :class:`~edgenode.store.Store` (the device layer
    without a node daemon: tests, benchmarks). The daemon's own port adds its default TTL
    and wakes its uplink."""

    def __init__(self, store: Store, node: str = "") -> None:
        self._store = store
        self._node = node

    def batch_target(self) -> BatchTarget | None:
        """The same commit for the core's batch call; None (every commit through
        :meth:`commit`) for a subclass that changes ``commit``."""
        if type(self).commit is not StoreCommit.commit:
            return None
        return BatchTarget(self._store, self._node, None, _nothing)

    def commit(self, twins: Sequence[TwinWrite], records: Sequence[OutRecord]) -> list[int | None]:
        payloads = [encode_uplink_raw(r.kind, r.body, self._node) for r in records]
        return self._store.commit_batch(
            twins,
            [
                (p, r.priority, r.ttl, r.coalesce_key)
                for p, r in zip(payloads, records, strict=True)
            ],
        )


class DeferredTwinWrites:
    """The store as TwinService sees it: while ``deferring``, ``put_twin`` is held (the
    newest document per device) until the bus commits them (:meth:`held`, then
    :meth:`committed`) in the same transaction as the batch's uplink records. Reads see
    the held documents; everything else goes straight to the store."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.deferring = False
        self._held: dict[str, bytes] = {}
        self._fresh: dict[str, bytes] = {}

    def put_twin(self, device: str, doc: bytes) -> None:
        if self.deferring:
            self._held[device] = doc
            self._fresh[device] = doc
        else:
            self.store.put_twin(device, doc)

    def take_fresh(self) -> list[tuple[str, bytes]]:
        """The documents held since the last call (they stay held, for reads)."""
        fresh = list(self._fresh.items())
        self._fresh.clear()
        return fresh

    def get_twin(self, device: str) -> bytes | None:
        held = self._held.get(device)
        return held if held is not None else self.store.get_twin(device)

    def delete_twin(self, device: str) -> bool:
        self._held.pop(device, None)
        self._fresh.pop(device, None)
        return self.store.delete_twin(device)

    def held(self) -> list[tuple[str, bytes]]:
        """The held documents as (device, doc), to commit; they stay held until
        :meth:`committed` or :meth:`discard`."""
        return list(self._held.items())

    def committed(self) -> None:
        """The held documents are stored: stop holding them."""
        self.deferring = False
        self._held.clear()
        self._fresh.clear()

    def discard(self) -> None:
        """Forget the held documents (their changes will be applied again)."""
        self.deferring = False
        self._held.clear()
        self._fresh.clear()


class UplinkFailed(Exception):
    """Internal: a batch could not be committed (for a reason other than the outbox's
    full policy refusing records); the batch must not be acknowledged."""


def tls_context(settings: MqttSettings) -> ssl.SSLContext | None:
    """The TLS context for the broker connection, None without TLS."""
    if not settings.tls:
        return None
    return ssl.create_default_context(cafile=settings.ca_file or None)


class DeviceLayer:
    """The device layer of one node: run ``await layer.run()`` as a task; cancel to stop."""

    def __init__(
        self,
        store: Store,
        settings: MqttSettings,
        devices: Iterable[DeviceSpec],
        routes: Iterable[RouteSpec],
        port: CommitPort | None = None,
        *,
        retained: RetainedMessages | None = None,
        clock: Callable[[], float] = time.time,
        node: str = "",
    ) -> None:
        # node: the node's name, for KubeEdge's membership topics (with settings.kubeedge).
        self.settings = settings
        self._clock = clock
        self._port: CommitPort = port if port is not None else StoreCommit(store)
        self._target = _batch_target(self._port)
        """Where the core commits a batch of messages itself (None: through the port)."""
        self.retained = retained if retained is not None else RetainedMessages()
        self.retained.listen(self._retained_changed)
        self._twin_writes = DeferredTwinWrites(store)
        self.service = TwinService(
            self._twin_writes,
            (),
            RouteTable(routes),
            now=clock(),
            kubeedge_node=node if settings.kubeedge and node else None,
        )
        self.counters: Counter[str] = Counter()
        # The constructor's devices are committed like any later change (their desired
        # documents through the port); what they publish is superseded by the resync on
        # every connect.
        self._apply(lambda: self._set_devices(list(devices)))
        self.connected = asyncio.Event()
        """Set while connected and subscribed (tests and status wait on it)."""
        self.broker_dropped_total: int | None = None
        """The broker's own count of dropped messages, as last published (None: the broker
        publishes no ``$SYS`` counters, or nothing was heard yet)."""
        self._dropped_base: int | None = None
        self._drop_warned = float("-inf")
        self._client: MqttSession | None = None
        self._dropped_before = 0
        """Oversized messages the sessions before the current one dropped."""
        self._left_before = 0
        """Messages the sessions before the current one left to the broker (past the
        client's queue bound: the broker sent them again to the next session)."""
        self._subscribed: set[str] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self._backoff = Backoff(settings.backoff_base, settings.backoff_cap)

    # ------------------------------------------------------ daemon-facing API ----

    def set_desired(
        self,
        device: str,
        desired: dict[str, Any],
        *,
        merge: bool = False,
        version: int | None = None,
    ) -> None:
        """A desired document from the hub or config (see TwinService.set_desired; same
        errors, and UplinkFailed/StoreError when it cannot be committed). The delta goes
        out now if connected, else with the next connect."""
        self._submit(
            lambda: self.service.set_desired(
                device, desired, self._clock(), merge=merge, version=version
            )
        )

    def set_devices(self, devices: Iterable[DeviceSpec]) -> None:
        """Serve exactly these devices (twins of removed ones stay in the store)."""
        specs = list(devices)
        self._submit(lambda: self._set_devices(specs))

    def _set_devices(self, specs: list[DeviceSpec]) -> list[Action]:
        return self.service.serve(specs, self._clock())

    def set_routes(self, routes: Iterable[RouteSpec]) -> None:
        """Replace the routes (ConfigError for a looping set); subscriptions follow."""
        self.service.routes = RouteTable(routes)
        client = self._client
        if client is not None and self.connected.is_set():
            self._spawn(self._sync_subscriptions(client))

    def subscriptions(self) -> frozenset[str]:
        """The filters subscribed on the current connection (empty while disconnected)."""
        return frozenset(self._subscribed)

    def stats(self) -> dict[str, int]:
        """Counters of the layer and its twin service, for the node's metrics."""
        merged = Counter(self.service.counters)
        merged.update(self.counters)
        client = self._client
        dropped = self._dropped_before + (client.dropped if client is not None else 0)
        if dropped:
            merged["oversized_dropped"] = dropped
        left = self._left_before + (client.left_to_broker if client is not None else 0)
        if left:
            merged["left_to_broker"] = left
        return dict(merged)

    # ------------------------------------------------------------------ run ----

    async def run(self) -> None:
        """Connect, serve, reconnect forever; returns only by cancellation."""
        while True:
            try:
                await self._session()
            except MqttError as exc:
                self.counters["disconnects"] += 1
                log.warning("MQTT broker %s:%d: %s", self.settings.host, self.settings.port, exc)
            except (UplinkFailed, StoreError) as exc:
                # Nothing of the batch was acknowledged: after the reconnect the broker
                # delivers it again.
                self.counters["disconnects"] += 1
                self.counters["commit_failures"] += 1
                log.error("device messages not stored (%s); reconnecting to get them again", exc)
            except Exception:  # "forever" includes our own bugs: log, back off, retry
                self.counters["disconnects"] += 1
                self.counters["session_errors"] += 1
                log.exception("device layer session failed; reconnecting")
            finally:
                self.connected.clear()
                if self._client is not None:
                    self._dropped_before += self._client.dropped
                    self._left_before += self._client.left_to_broker
                self._client = None
                self._subscribed.clear()
            delay = self._backoff.next_delay()
            log.info("reconnecting to the MQTT broker in %.2f s", delay)
            await asyncio.sleep(delay)

    def _options(self) -> MqttOptions:
        s = self.settings
        return MqttOptions(
            s.host,
            s.port,
            s.client_id,
            keepalive=s.keepalive,
            clean_session=False,
            username=s.username or None,
            password=(s.password or None) if s.username else None,
            tls=tls_context(s),
        )

    async def _session(self) -> None:
        async with await MqttSession.connect(self._options()) as client:
            self.counters["connects"] += 1
            self._client = client
            self._dropped_base = None  # the counter restarts with the broker
            await self._sync_subscriptions(client)
            resync = self.service.resync(self._clock())
            await self._publish(client, [*resync, *self._retained_publishes()])
            self.connected.set()
            self._backoff.reset()
            log.info("connected to the MQTT broker %s:%d", self.settings.host, self.settings.port)
            while True:
                await client.wait_message()
                await self._gather_window(client)
                await self._handle_batch(client, client.take(MAX_BATCH))

    async def _gather_window(self, client: MqttSession) -> None:
        """With a commit window, let messages gather for up to that long after the first
        of a batch (less once WINDOW_ENOUGH are queued), so they share one commit: fewer
        flash writes, each PUBACK later by at most the window."""
        window = self.settings.commit_window
        if window <= 0:
            return
        loop = asyncio.get_running_loop()
        deadline = loop.time() + window
        step = max(window / WINDOW_STEPS, MIN_WINDOW_STEP)
        while client.queued() < WINDOW_ENOUGH and (left := deadline - loop.time()) > 0:
            await asyncio.sleep(min(step, left))

    async def _handle_batch(self, client: MqttSession, batch: Batch) -> None:
        """Handle, commit, publish the replies, then acknowledge the batch (in order)."""
        self.counters["batches"] += 1
        target = self._target
        if target is None:
            await self._handle_batch_via_port(client, batch)
            return
        messages = batch.messages
        if any(message[0] == BROKER_DROPPED_TOPIC for message in messages):
            self._broker_counters([(name, payload) for name, payload, _, _ in messages])
        result = self._batch_in_core(target, messages)
        publishes = result.publishes
        stale = self._stale_retained(batch)
        if stale:
            publishes = [*publishes, *((p.topic, p.payload, p.retain, p.qos) for p in stale)]
        await self._publish_all(client, publishes)
        client.ack(result.acks)
        self.counters["acked"] += len(messages)

    def _batch_in_core(
        self, target: BatchTarget, messages: list[tuple[str, bytes, int, int]]
    ) -> BatchResult:
        """The batch in ONE core call (``edgenode.devtwin.handle_batch``): the reports of
        served devices, and the messages that only go upstream (telemetry through the
        routes), are handled, enveloped and committed there; every other message
        comes back here (``fallback``) for the TwinService, in order, and what it did is
        committed in the same transaction. On a failure nothing is stored and the twins
        held in memory are dropped, as ``_apply`` does."""
        now = self._clock()
        service = self.service
        writes = self._twin_writes
        node, default_ttl = target.node, target.default_ttl

        def fallback(index: int) -> Any:
            name, payload, _, _ = messages[index]
            if name == BROKER_DROPPED_TOPIC:
                return [], [], []  # counted above
            publishes: list[tuple[str, bytes, bool, int]] = []
            records: list[tuple[str, bytes, int, float | None, str | None]] = []
            for action in service.handle_many([(name, payload)], now):
                if isinstance(action, Uplink):
                    try:
                        data = encode_uplink_raw(action.kind, action.body, node, now)
                    except ValueError as exc:
                        self.counters["uplink_oversize"] += 1
                        log.error("uplink %s record dropped: %s", action.kind, exc)
                        continue
                    ttl = default_ttl if action.ttl is None else action.ttl
                    records.append((action.kind, data, action.priority, ttl, action.coalesce_key))
                else:
                    publishes.append((action.topic, action.payload, action.retain, action.qos))
            return publishes, records, writes.take_fresh()

        heads = (envelope_head("twin", node, now), envelope_head("device-state", node, now))
        routes = service.routes
        routing = (
            routes.batch_rules,
            service.known_devices,
            envelope_head("telemetry", node, now),
            DEFAULT_TELEMETRY_PRIORITY,
        )
        writes.deferring = True
        try:
            result = handle_batch(
                target.store,
                service.cached_twins,
                routes.router,
                messages,
                now,
                heads,
                TWIN_UPLINK_PRIORITY,
                default_ttl,
                fallback,
                routing,
            )
        except StoreError as exc:
            writes.discard()
            service.forget_cached()
            self.counters["uplink_errors"] += 1
            raise UplinkFailed(f"a batch of {len(messages)} messages not committed: {exc}") from exc
        except BaseException:
            writes.discard()
            service.forget_cached()
            raise
        writes.committed()
        service.counters.update(result.counters)
        self.counters["uplinks"] += result.appended
        self.counters["batch_fast"] += result.fast
        if result.urgent is not None:
            target.appended(result.urgent, result.appended)
        if result.refused:
            self.counters["uplink_rejected"] += len(result.refused)
            kinds = ", ".join(sorted(set(result.refused)))
            log.warning("outbox full: %d records dropped (%s)", len(result.refused), kinds)
        if result.oversize:
            self.counters["uplink_oversize"] += len(result.oversize)
            log.error("%d uplink records too large dropped", len(result.oversize))
        return result

    async def _handle_batch_via_port(self, client: MqttSession, batch: Batch) -> None:
        """The batch through the commit port (a port without a batch target)."""
        messages = [(name, payload) for name, payload, _, _ in batch.messages]
        if any(name == BROKER_DROPPED_TOPIC for name, _ in messages):
            messages = self._broker_counters(messages)
        publishes = self._apply(lambda: self.service.handle_many(messages, self._clock()))
        publishes += self._stale_retained(batch)
        await self._publish(client, publishes)
        client.ack([(mid, qos) for _, _, qos, mid in batch.messages if qos])
        self.counters["acked"] += len(messages)

    async def _sync_subscriptions(self, client: MqttSession) -> None:
        wanted = list(
            dict.fromkeys(
                [
                    *self.service.subscriptions(),
                    *OWNED_RETAINED_FILTERS,
                    BROKER_DROPPED_TOPIC,
                    *self.service.routes.filters(),
                ]
            )
        )
        stale = [f for f in self._subscribed if f not in wanted]
        if stale:
            await client.unsubscribe(stale)
        fresh = [(f, SUBSCRIBE_QOS) for f in wanted if f not in self._subscribed]
        if fresh:
            codes = await client.subscribe(fresh)
            refused = [name for (name, _), code in zip(fresh, codes, strict=False) if code == 0x80]
            if refused:
                # The broker's ACL: the node serves the rest; say which ones it cannot hear.
                self.counters["subscriptions_refused"] += len(refused)
                log.error("the MQTT broker refused the subscriptions %s", ", ".join(refused))
        self._subscribed = set(wanted)

    def _apply(self, produce: Callable[[], list[Action]]) -> list[Publish]:
        """Run ``produce`` (a TwinService call) with its twin writes held, then commit the
        twins and its uplink records in one transaction through the port; the publishes
        left to do. On any failure nothing is stored and the twins only memory held are
        forgotten, so the change can be applied again (a redelivered batch, the next
        desired update)."""
        self._twin_writes.deferring = True
        try:
            return self._commit(produce())
        except BaseException:
            self._twin_writes.discard()
            self.service.forget_cached()
            raise

    def _commit(self, actions: Sequence[Action]) -> list[Publish]:
        """Commit the held twins and the actions' uplinks in one transaction; the
        publishes left to do. UplinkFailed: nothing is committed."""
        publishes: list[Publish] = []
        uplinks: list[Uplink] = []
        for action in actions:
            if isinstance(action, Uplink):
                uplinks.append(action)
            else:
                publishes.append(action)
        twins = self._twin_writes.held()
        if uplinks or twins:
            try:
                seqs = self._port.commit(twins, [u.record() for u in uplinks])
            except Exception as exc:
                self.counters["uplink_errors"] += 1
                raise UplinkFailed(
                    f"{len(uplinks)} records and {len(twins)} twins not committed: {exc}"
                ) from exc
            refused = [u.kind for u, seq in zip(uplinks, seqs, strict=True) if seq is None]
            if refused:
                # Dropped by the outbox's full policy, as the store documents: counted.
                self.counters["uplink_rejected"] += len(refused)
                kinds = ", ".join(sorted(set(refused)))
                log.warning("outbox full: %d records dropped (%s)", len(refused), kinds)
            self.counters["uplinks"] += len(uplinks) - len(refused)
        self._twin_writes.committed()
        return publishes

    # ---------------------------------------------------------- broker drops ----

    def _broker_counters(self, messages: list[tuple[str, bytes]]) -> list[tuple[str, bytes]]:
        """Take the broker's drop counter out of a batch; count what it rose by."""
        rest: list[tuple[str, bytes]] = []
        for name, payload in messages:
            if name != BROKER_DROPPED_TOPIC:
                rest.append((name, payload))
                continue
            try:
                total = int(payload.strip())
            except ValueError:
                continue
            self.broker_dropped_total = total
            if self._dropped_base is None or total < self._dropped_base:
                self._dropped_base = total  # first value of this connection
                continue
            risen = total - self._dropped_base
            self._dropped_base = total
            if risen > 0:
                self.counters["broker_dropped"] += risen
                now = time.monotonic()
                if now - self._drop_warned >= DROP_WARNING_INTERVAL:
                    self._drop_warned = now
                    log.warning(
                        "the MQTT broker dropped %d messages (%d since the node connected): "
                        "its queue limits are too small for this load (docs/device-api.md, "
                        '"Delivery")',
                        risen,
                        self.counters["broker_dropped"],
                    )
        return rest

    # ------------------------------------------------------- retained messages ----

    def _retained_publishes(self) -> list[Publish]:
        return [
            Publish(topic, payload, retain=True, qos=RETAINED_QOS)
            for topic, payload in self.retained.items()
        ]

    def _retained_changed(self, topic: str, payload: bytes) -> None:
        client = self._client
        if client is not None:
            self._spawn(self._publish(client, [Publish(topic, payload, True, RETAINED_QOS)]))

    def _stale_retained(self, batch: Batch) -> list[Publish]:
        """Clears for retained messages the broker kept for what the node no longer
        serves (they arrive with the retain flag when the node subscribes)."""
        clears: list[Publish] = []
        for index in batch.retained:
            name, payload, _, _ = batch.messages[index]
            if self._owned_but_gone(name) and payload:
                clears.append(Publish(name, b"", retain=True, qos=RETAINED_QOS))
        if clears:
            self.counters["stale_retained_cleared"] += len(clears)
            log.info("clearing %d stale retained messages", len(clears))
        return clears

    def _owned_but_gone(self, name: str) -> bool:
        if name.startswith("$edge/config/"):
            return not self.retained.owns(name) or self.retained.get(name) == b""
        levels = name.split("/")
        return (
            len(levels) == 5
            and name.startswith(TOPIC_ROOT + "/")
            and levels[3:] == ["twin", "delta"]
            and not self.service.is_known(levels[2])
        )

    async def _publish(self, client: MqttSession, publishes: Sequence[Publish]) -> None:
        await self._publish_all(client, [(p.topic, p.payload, p.retain, p.qos) for p in publishes])

    async def _publish_all(
        self, client: MqttSession, publishes: Sequence[tuple[str, bytes, bool, int]]
    ) -> None:
        """Publish (topic, payload, retain, qos) in order and wait for the broker's acks:
        MAX_BATCH at a time (a resync of 1,000 devices' deltas), each chunk one write and
        one wait for all its PUBACKs."""
        for first in range(0, len(publishes), MAX_BATCH):
            chunk = publishes[first : first + MAX_BATCH]
            await client.publish(chunk)
            self.counters["published"] += len(chunk)

    # ------------------------------------------------------------ out-of-band ----

    def _submit(self, produce: Callable[[], list[Action]]) -> None:
        """Carry out a change that did not come from a message (desired, device changes):
        committed through the port now, published now if a broker connection exists (also
        while (re)subscribing: the resync may already be on its way with the older state,
        and this publish follows it), else with the resync of the next connect."""
        publishes = self._apply(produce)
        client = self._client
        if publishes and client is not None:
            self._spawn(self._publish(client, publishes))

    def _spawn(self, work: Any) -> None:
        task: asyncio.Task[None] = asyncio.get_running_loop().create_task(self._guard(work))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _guard(self, work: Any) -> None:
        try:
            await work
        except MqttError as exc:
            # The next connect resyncs every delta and subscription.
            log.warning("MQTT operation failed (will resync on reconnect): %s", exc)


def _nothing(priority: int, count: int) -> None:
    """No one to wake (a port without an uplink)."""


def _batch_target(port: CommitPort) -> BatchTarget | None:
    """The port's batch target, if it offers one (:class:`~edgenode.service.BatchPort`)."""
    method = getattr(port, "batch_target", None)
    if method is None:
        return None
    target: BatchTarget | None = cast(BatchPort, port).batch_target()
    return target

"""The cloud link in this process (a real Store file, the real hub over real sockets):
outbox order, the uplink window, snapshots."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

from edgenode.config import Config, parse_config
from edgenode.node.link import CloudLink
from edgenode.node.metrics import Metrics
from edgenode.store import Store
from node.fakehub import FakeHub

RUN_TIMEOUT = 10.0


def link_config(tmp_path: Path, hub: FakeHub) -> Config:
    data = {
        "node": {"name": "ship-7", "data_dir": str(tmp_path)},
        "hub": {"url": hub.url, "token": "secret", "backoff_base": 0.05, "backoff_cap": 0.2},
        "metrics": {"listen": ""},
    }
    return parse_config(data, str(tmp_path / "node.toml"), env={})


async def run_until(link: CloudLink, done, timeout: float = RUN_TIMEOUT) -> None:
    """Run the link until ``done()`` is true (checked every 20 ms), then cancel it."""
    task = asyncio.create_task(link.run())
    try:
        async with asyncio.timeout(timeout):
            while not done():
                await asyncio.sleep(0.02)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


def test_uplink_goes_in_outbox_order_priority_first(hub: FakeHub, tmp_path):
    store = Store(str(tmp_path / "node.db"))
    priorities = [5, 1, 9, 0, 5, 1]
    seqs = {store.append(f"p{p}".encode(), p): p for p in priorities}
    link = CloudLink(link_config(tmp_path, hub), store, Metrics())
    # Done when the hub has them all and their acks came back (the outbox is empty).
    asyncio.run(run_until(link, lambda: store.outbox_stats()["messages"] == 0))
    order = [seqs[s] for s in hub.wire]
    assert order == sorted(priorities)
    store.close()


def test_a_more_urgent_record_overtakes_the_queue(hub: FakeHub, tmp_path):
    hub.window_records = 2
    hub.ack_uplink = True
    store = Store(str(tmp_path / "node.db"))
    for index in range(200):
        store.append(json.dumps({"i": index}).encode(), 8)
    link = CloudLink(link_config(tmp_path, hub), store, Metrics())

    async def scenario() -> None:
        task = asyncio.create_task(link.run())
        try:
            async with asyncio.timeout(RUN_TIMEOUT):
                while len(hub.wire) < 20:
                    await asyncio.sleep(0.001)
                urgent = store.append(b"urgent", 0)
                link.outbox_changed(0)
                while urgent not in hub.wire:
                    await asyncio.sleep(0.001)
                # It went ahead of the ~180 low-priority records still queued.
                assert hub.wire.index(urgent) < 200 - 50
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    asyncio.run(scenario())
    store.close()


def test_the_uplink_window_bounds_what_is_in_flight(hub: FakeHub, tmp_path):
    hub.window_records = 10
    hub.ack_uplink = False  # a slow hub: nothing is acknowledged
    store = Store(str(tmp_path / "node.db"))
    for index in range(50):
        store.append(str(index).encode(), 5)
    link = CloudLink(link_config(tmp_path, hub), store, Metrics())

    async def scenario() -> None:
        task = asyncio.create_task(link.run())
        try:
            async with asyncio.timeout(RUN_TIMEOUT):
                while len(hub.wire) < 10:
                    await asyncio.sleep(0.02)
            await asyncio.sleep(0.5)  # room for a window violation to show
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    asyncio.run(scenario())
    # Exactly the window went out, on one connection (exceeding it would be a violation).
    assert len(hub.wire) == 10
    assert len(hub.hellos) == 1
    assert store.outbox_stats()["messages"] == 50
    store.close()


def test_a_snapshot_replaces_the_desired_state_even_from_a_restored_hub(hub: FakeHub, tmp_path):
    store = Store(str(tmp_path / "node.db"))
    store.apply_changes([("Config/x/old", 8, b"{}"), ("Config/x/keep", 9, b"{}")], 10)
    hub.set_resources(3, {"Config/x/keep": {"v": 2}, "Config/x/new": {"v": 3}})
    seen = []
    link = CloudLink(
        link_config(tmp_path, hub),
        store,
        Metrics(),
        on_desired=lambda rows, snapshot: seen.append((rows, snapshot)),
    )
    asyncio.run(run_until(link, lambda: hub.acked_revision.get("ship-7") == 3))
    assert store.applied_revision() == 3
    assert [key for key, _, _ in store.list_resources()] == ["Config/x/keep", "Config/x/new"]
    assert json.loads(store.get_resource("Config/x/new")[1]) == {"v": 3}
    assert seen[-1][1] is True
    store.close()


def test_a_body_that_cannot_be_stored_is_rejected_and_the_revision_still_advances(
    hub: FakeHub, tmp_path
):
    store = Store(str(tmp_path / "node.db"))
    revision = hub.publish([("Config/x/nan", {"v": float("nan")}), ("Config/x/ok", {"v": 1})])
    link = CloudLink(link_config(tmp_path, hub), store, Metrics())
    asyncio.run(run_until(link, lambda: hub.acked_revision.get("ship-7") == revision))
    assert store.applied_revision() == revision
    assert [key for key, _, _ in store.list_resources()] == ["Config/x/ok"]
    store.close()


def test_the_hello_tells_the_hub_where_the_outbox_numbering_stands(hub: FakeHub, tmp_path):
    """The hub forgets sequences at and above it (a restored or new store numbers again
    from below what it has seen): the hello carries the store's next sequence number."""
    store = Store(str(tmp_path / "node.db"))
    store.append_many([(b"a", 5, None), (b"b", 5, None)])
    link = CloudLink(link_config(tmp_path, hub), store, Metrics())
    asyncio.run(run_until(link, lambda: store.outbox_stats()["messages"] == 0))
    assert hub.hellos[0].next_seq == 3 == store.next_seq()
    store.close()

"""How the device layer finds the core's batch call (``BatchTarget``) on its commit port."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from edgenode.devices.bus import StoreCommit, _batch_target
from edgenode.devices.twins import STATE_UPLINK_PRIORITY, TWIN_UPLINK_PRIORITY
from edgenode.service import OutRecord
from edgenode.store import Store
from edgenode.uplink import encode_uplink_raw, envelope_head


def test_a_report_gives_its_twin_and_state_records_one_priority() -> None:
    # handle_batch takes one priority for both records of a report.
    assert TWIN_UPLINK_PRIORITY == STATE_UPLINK_PRIORITY


def test_a_store_port_offers_its_store_and_a_port_that_changes_commit_does_not(
    tmp_path: Path,
) -> None:
    store = Store(str(tmp_path / "n.db"))
    try:
        target = _batch_target(StoreCommit(store, "ship"))
        assert target is not None
        assert (target.store, target.node, target.default_ttl) == (store, "ship", None)

        class Custom(StoreCommit):
            def commit(
                self, twins: Sequence[tuple[str, bytes]], records: Sequence[OutRecord]
            ) -> list[int | None]:
                return super().commit(twins, records)

        assert _batch_target(Custom(store)) is None

        class Plain:
            def commit(self, twins: object, records: object) -> list[int | None]:
                return []

        assert _batch_target(Plain()) is None  # type: ignore[arg-type]
    finally:
        store.close()


def test_the_envelope_head_is_the_record_up_to_its_body() -> None:
    body = b'{"device":"lamp","v":"\xc3\xa9"}'
    head = envelope_head("twin", "ship-\u00e9", 12.3456)
    assert head + body + b"}" == encode_uplink_raw("twin", body, "ship-\u00e9", 12.3456)

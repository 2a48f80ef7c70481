"""Crash-test writer: appends and acks outbox batches forever, reporting only what returned.

Usage: ``python store_writer.py DB BACKEND`` (BACKEND is ``python`` or ``rust``).
Each record's payload is :func:`payload_for` of its sequence number, so a reader can
check it. Lines on stdout, each flushed only after the call returned:

* ``appended LO HI``  append_many returned sequence numbers LO..HI
* ``acking LO HI``    about to ack_ranges([(LO, HI)]) (may or may not happen)
* ``acked LO HI``     ack_ranges returned
"""

from __future__ import annotations

import random
import sys

BATCH_MIN = 1
BATCH_MAX = 60
ACK_EVERY_BATCHES = 4  # ack the oldest printed batch this often


def payload_for(seq: int) -> bytes:
    """The payload the writer gives record ``seq``: checkable and of varying length."""
    return (b"%010d|" % seq) * (1 + seq % 23)


def main(path: str, backend: str) -> None:
    if backend == "python":
        from edgenode import _pure as core
    else:
        from edgenode import _edgecore_fast as core
    store = core.Store(path)
    rng = random.Random()
    out = sys.stdout
    pending: list[tuple[int, int]] = []
    batches = 0
    while True:
        first = store.outbox_stats()["next_seq"]
        size = rng.randint(BATCH_MIN, BATCH_MAX)
        records = [(payload_for(first + i), rng.randint(0, 9), None) for i in range(size)]
        seqs = store.append_many(records)
        if seqs != list(range(first, first + size)):
            raise SystemExit(f"unexpected sequence numbers {seqs[0]}..{seqs[-1]}, wanted {first}")
        out.write(f"appended {seqs[0]} {seqs[-1]}\n")
        out.flush()
        pending.append((seqs[0], seqs[-1]))
        batches += 1
        if batches % ACK_EVERY_BATCHES == 0:
            lo, hi = pending.pop(0)
            out.write(f"acking {lo} {hi}\n")
            out.flush()
            store.ack_ranges([(lo, hi)])
            out.write(f"acked {lo} {hi}\n")
            out.flush()


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])

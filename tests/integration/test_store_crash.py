"""Crash safety of the store: a writer process is SIGKILLed at random moments.

Every sequence number the writer reported (printed after ``append_many`` returned)
must be in the database with its exact payload, unless the writer was acking it;
every reported ack must be durable; sequence numbers stay unique and increasing
across kills; no record in the file is corrupted. Each database is reopened after
each kill by the same backend and by the other one.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import ModuleType

import pytest

from conftest import native_core
from edgenode import _pure

WRITER = Path(__file__).with_name("store_writer.py")
sys.path.insert(0, str(WRITER.parent))
from store_writer import payload_for  # noqa: E402

KILLS_PER_BACKEND = 15
DELAY_RANGE_S = (0.02, 0.30)
STARTUP_TIMEOUT_S = 10.0
EVERYTHING = 10_000_000


class Ledger:
    """What the writer reported across all its runs."""

    def __init__(self) -> None:
        self.appended: list[tuple[int, int]] = []
        self.acked: set[int] = set()
        self.maybe_acked: set[int] = set()

    def read(self, output: str) -> None:
        lines = output.split("\n")[:-1]  # a line cut by the kill has no newline
        for line in lines:
            verb, lo_text, hi_text = line.split()
            lo, hi = int(lo_text), int(hi_text)
            span = set(range(lo, hi + 1))
            if verb == "appended":
                if self.appended:
                    assert lo > self.appended[-1][1], "sequence numbers went backwards or repeated"
                assert hi >= lo
                self.appended.append((lo, hi))
            elif verb == "acking":
                self.maybe_acked |= span
            else:
                self.acked |= span
                self.maybe_acked -= span

    def check(self, core: ModuleType, path: Path) -> None:
        store = core.Store(str(path))
        try:
            rows = store.peek(EVERYTHING)
            present = {seq: payload for seq, _, payload in rows}
            assert len(present) == len(rows), "a sequence number appears twice"
            for seq, payload in present.items():
                assert payload == payload_for(seq), f"record {seq} is corrupted"
            assert not (self.acked & present.keys()), "an acknowledged record came back"
            for lo, hi in self.appended:
                for seq in range(lo, hi + 1):
                    if seq not in self.acked and seq not in self.maybe_acked:
                        assert seq in present, f"reported record {seq} was lost"
            stats = store.outbox_stats()
            if self.appended:
                assert stats["next_seq"] > self.appended[-1][1]
            assert stats["bytes"] == sum(len(p) for p in present.values())
        finally:
            store.close()


def run_writer_and_kill(path: Path, backend: str, delay: float) -> str:
    writer = subprocess.Popen(
        [sys.executable, str(WRITER), str(path), backend],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        time.sleep(delay)
        writer.send_signal(signal.SIGKILL)
        output, errors = writer.communicate(timeout=STARTUP_TIMEOUT_S)
    finally:
        if writer.poll() is None:
            writer.kill()
            writer.wait()
    assert writer.returncode == -signal.SIGKILL, errors
    return output


@pytest.mark.parametrize("backend", ["python", "rust"])
def test_reported_appends_and_acks_survive_sigkill_at_random_moments(tmp_path, backend):
    native = native_core()
    core, other = (_pure, native) if backend == "python" else (native, _pure)
    seed = random.randrange(2**32)
    rng = random.Random(seed)
    path = tmp_path / "node.db"
    ledger = Ledger()
    for kill in range(KILLS_PER_BACKEND):
        # later kills wait longer: the interpreter start-up eats the first ~100 ms
        delay = rng.uniform(*DELAY_RANGE_S) + (0.15 if kill % 2 else 0.0)
        ledger.read(run_writer_and_kill(path, backend, delay))
        ledger.check(core, path)
        ledger.check(other, path)
    assert len(ledger.appended) > KILLS_PER_BACKEND, f"writer barely ran (seed {seed})"
    assert ledger.acked, f"no ack was ever reported (seed {seed})"
    assert os.path.getsize(path) > 0


ACK_THEN_DIE = """
import os, signal, sys
from edgenode import _pure, _edgecore_fast
core = _pure if sys.argv[2] == "python" else _edgecore_fast
store = core.Store(sys.argv[1])
store.append_many([(b"%d" % i, i % 10, None) for i in range(1, 11)], now=0)
store.ack([1, 2])
store.ack_ranges([(3, 5)])
os.kill(os.getpid(), signal.SIGKILL)
"""


@pytest.mark.parametrize("backend", ["python", "rust"])
def test_acks_that_returned_before_a_sigkill_are_durable(tmp_path, backend):
    path = tmp_path / "node.db"
    done = subprocess.run(
        [sys.executable, "-c", ACK_THEN_DIE, str(path), backend],
        capture_output=True,
        text=True,
        timeout=STARTUP_TIMEOUT_S,
        check=False,
    )
    assert done.returncode == -signal.SIGKILL, done.stderr
    for core in (_pure, native_core()):
        store = core.Store(str(path))
        assert sorted(seq for seq, _, _ in store.peek(now=0)) == [6, 7, 8, 9, 10]
        assert store.outbox_stats(now=0)["next_seq"] == 11
        store.close()

"""App logs: rotation bounds the disk, tail reads the last lines across the rotated
file, follow streams new output, a slow follower is bounded."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

from edgenode.apps import logs as logs_module
from edgenode.apps.logs import AppLogs, RotatingLog, tail_start


def collect(iterator, limit: int | None = None) -> bytes:
    async def run() -> bytes:
        out = b""
        async for chunk in iterator:
            out += chunk
            if limit is not None and len(out) >= limit:
                break
        await iterator.aclose()
        return out

    return asyncio.run(run())


def test_rotation_keeps_one_old_file_and_never_more_than_twice_the_limit(tmp_path: Path):
    log = RotatingLog(tmp_path / "output.log", 1000)
    for n in range(500):
        log.write(f"line {n:04d}\n".encode())  # 10 bytes each: 5000 bytes written
        sizes = [p.stat().st_size for p in tmp_path.iterdir()]
        assert sum(sizes) <= 2000
        assert all(s <= 1000 for s in sizes)
    log.close()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["output.log", "output.log.1"]
    assert (tmp_path / "output.log.1").read_bytes().startswith(b"line 0")
    assert (tmp_path / "output.log").read_bytes().endswith(b"line 0499\n")
    assert oct((tmp_path / "output.log").stat().st_mode & 0o777) == "0o600"


def test_a_write_larger_than_the_limit_keeps_its_end(tmp_path: Path):
    log = RotatingLog(tmp_path / "output.log", 100)
    log.write(b"x" * 50)
    log.write(b"a" * 150 + b"END\n")
    log.close()
    assert (tmp_path / "output.log").read_bytes() == (b"a" * 150 + b"END\n")[-100:]
    assert (tmp_path / "output.log.1").read_bytes() == b"x" * 50


def test_the_daemons_notes_start_on_a_new_line(tmp_path: Path):
    log = RotatingLog(tmp_path / "output.log", 10_000)
    log.write(b"no newline")
    log.note("exited with code 1", 0.0)
    log.note("started pid 5 (revision 2)", 0.0)
    log.close()
    assert (tmp_path / "output.log").read_bytes() == (
        b"no newline\n[edgenode 1970-01-01T00:00:00Z] exited with code 1\n"
        b"[edgenode 1970-01-01T00:00:00Z] started pid 5 (revision 2)\n"
    )


def test_tail_counts_lines_across_both_files(tmp_path: Path, monkeypatch):
    monkeypatch.setattr(logs_module, "READ_BLOCK", 7)  # blocks smaller than lines
    log = RotatingLog(tmp_path / "output.log", 40)
    for n in range(10):
        log.write(f"line-{n}\n".encode())  # 7 bytes: the 6th write rotates
    logs = AppLogs()
    logs.add("a", log)
    assert collect(logs.app_log("a", 3, False)) == b"line-7\nline-8\nline-9\n"
    whole = collect(logs.app_log("a", 0, False))
    assert (
        whole == (tmp_path / "output.log.1").read_bytes() + (tmp_path / "output.log").read_bytes()
    )
    assert collect(logs.app_log("a", 8, False)).startswith(b"line-2\n")  # into the old file
    assert collect(logs.app_log("a", 1000, False)) == whole
    log.write(b"partial")
    assert collect(logs.app_log("a", 2, False)) == b"line-9\npartial"
    assert logs.app_log("nope", 1, False) is None


def test_tail_start_of_empty_and_single_line_logs(tmp_path: Path):
    empty = tmp_path / "e"
    empty.write_bytes(b"")
    with open(empty, "rb") as handle:
        assert tail_start([(handle, 0)], 5) == (0, 0)
    one = tmp_path / "o"
    one.write_bytes(b"only\n")
    with open(one, "rb") as handle:
        assert tail_start([(handle, 5)], 1) == (0, 0)
        assert tail_start([(handle, 5)], 0) == (0, 0)


def test_follow_streams_what_is_written_after_the_tail_and_ends_with_the_app(tmp_path: Path):
    log = RotatingLog(tmp_path / "output.log", 1000)
    log.write(b"old 1\nold 2\n")
    logs = AppLogs()
    logs.add("a", log)

    async def scenario() -> bytes:
        reader = logs.app_log("a", 1, True)
        assert reader is not None
        out = b""

        async def consume() -> None:
            nonlocal out
            async for chunk in reader:
                out += chunk

        task = asyncio.create_task(consume())
        await asyncio.sleep(0.01)
        for n in range(3):
            log.write(f"new {n}\n".encode())
            await asyncio.sleep(0)
        await asyncio.sleep(0.01)
        logs.remove("a")  # the App went away: the stream ends
        await asyncio.wait_for(task, 2)
        return out

    assert asyncio.run(scenario()) == b"old 2\nnew 0\nnew 1\nnew 2\n"


def test_a_slow_follower_gets_a_bounded_queue_and_a_line_saying_what_it_missed(
    tmp_path: Path, monkeypatch
):
    monkeypatch.setattr(logs_module, "FOLLOW_QUEUE_BYTES", 100)
    log = RotatingLog(tmp_path / "output.log", 100_000)
    logs = AppLogs()
    logs.add("a", log)

    async def scenario() -> bytes:
        reader = logs.app_log("a", 0, True)
        assert reader is not None
        for _ in range(10):
            log.write(b"y" * 40)  # 400 bytes while nobody reads
        log.close()
        out = b""
        async for chunk in reader:
            out += chunk
        return out

    out = asyncio.run(scenario())
    assert out.startswith(b"y" * 80)
    assert b"320 bytes of output skipped: the reader is too slow" in out


def test_a_reader_closed_before_it_started_releases_its_follower(tmp_path: Path):
    log = RotatingLog(tmp_path / "output.log", 1000)
    log.write(b"x\n")
    logs = AppLogs()
    logs.add("a", log)

    async def scenario() -> None:
        reader = logs.app_log("a", 0, True)
        assert reader is not None
        assert len(log._followers) == 1
        await reader.aclose()
        assert not log._followers

    asyncio.run(scenario())


def test_a_full_disk_drops_output_counted_and_keeps_going(tmp_path: Path, monkeypatch):
    log = RotatingLog(tmp_path / "output.log", 1000)
    log.write(b"a\n")

    def full(fd: int, data: object) -> int:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "write", full)
    log.write(b"lost\n")
    monkeypatch.undo()
    log.write(b"b\n")
    log.close()
    assert log.dropped == 5
    assert (tmp_path / "output.log").read_bytes() == b"a\nb\n"

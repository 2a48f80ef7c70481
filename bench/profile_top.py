"""The top lines of a py-spy profile (``--format raw``: collapsed stacks, one per line with
its sample count), by own time and by inclusive time.

    .venv/bin/python bench/profile_top.py profile.txt [--top 25]
"""

from __future__ import annotations

import argparse
import re
from collections import Counter
from pathlib import Path

LINE_NUMBER = re.compile(r":\d+\)$")


def frame_name(frame: str) -> str:
    """``func (path/to/module.py:123)`` as ``func (module.py)``: lines folded together."""
    name = LINE_NUMBER.sub(")", frame.strip())
    head, _, where = name.partition(" (")
    if where:
        short = where.rstrip(")").split("/")
        where = "/".join(short[-2:]) + ")"
        return f"{head} ({where}"
    return head


def package(frame: str) -> str:
    """Which part of the node a frame is in (by its file's path)."""
    if "devices/mqtt.py" in frame or "mqttcodec" in frame:
        return "edgenode's MQTT client (devices/mqtt.py, mqttcodec)"
    if "aiomqtt" in frame:
        return "aiomqtt"
    if "/paho/" in frame or "mqtt/" in frame:
        return "paho-mqtt"
    if any(part in frame for part in ("asyncio", "selectors", "threading", "socket.py")):
        return "asyncio and the stdlib around the loop"
    if "edgenode" in frame:
        return "edgenode"
    if "json" in frame:
        return "json"
    return "other"


def by_package(path: Path) -> tuple[int, Counter[str]]:
    """Samples by the package of their innermost frame."""
    counts: Counter[str] = Counter()
    total = 0
    for line in path.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        total += int(count_text)
        counts[package(stack.split(";")[-1])] += int(count_text)
    return total, counts


def summarize(path: Path) -> tuple[int, Counter[str], Counter[str]]:
    own: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    total = 0
    for line in path.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        total += count
        frames = [frame_name(f) for f in stack.split(";") if f]
        if not frames:
            continue
        own[frames[-1]] += count
        for name in set(frames):
            inclusive[name] += count
    return total, own, inclusive


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("profile", type=Path)
    parser.add_argument("--top", type=int, default=25)
    parser.add_argument("--packages", action="store_true", help="own time by package")
    args = parser.parse_args()
    if args.packages:
        total, counts = by_package(args.profile)
        for name, count in counts.most_common():
            print(f"  {100 * count / total:5.1f}%  {name}")
        return
    total, own, inclusive = summarize(args.profile)
    print(f"{total} samples")
    print("own time:")
    for name, count in own.most_common(args.top):
        print(f"  {100 * count / total:5.1f}%  {name}")
    print("inclusive time:")
    for name, count in inclusive.most_common(args.top):
        print(f"  {100 * count / total:5.1f}%  {name}")


if __name__ == "__main__":
    main()

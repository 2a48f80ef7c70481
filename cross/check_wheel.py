"""Run inside the emulated ARM CPython: is the installed wheel the real thing?

Asserts that ``edgenode`` comes from the installed wheel (not the source tree), that the
Rust backend is loaded, that the interpreter runs on the expected machine, and exercises
the extension once per component (router, twin, store on a real SQLite file).
Usage: ``python check_wheel.py MACHINE SITE_DIR``.
"""

from __future__ import annotations

import platform
import sys
import tempfile
from pathlib import Path

EXPECTED_BACKEND = "rust"


def main(machine: str, site: str) -> None:
    import edgenode
    from edgenode import _edgecore_fast, router, store, twin

    site_dir = Path(site).resolve()
    extension = Path(_edgecore_fast.__file__).resolve()
    assert platform.machine() == machine, f"machine {platform.machine()!r}, want {machine!r}"
    assert edgenode.backend == EXPECTED_BACKEND, f"backend {edgenode.backend!r}"
    assert site_dir in extension.parents, f"extension {extension} is not from {site_dir}"
    assert extension.name == "_edgecore_fast.abi3.so", extension.name

    topic_router = router.TopicRouter()
    topic_router.add("sensors/+/temp", 1)
    topic_router.add("sensors/#", 2)
    assert sorted(topic_router.match("sensors/pi/temp")) == [1, 2]

    merged = twin.merge_patch({"led": {"on": False}, "fan": 1}, {"led": {"on": True}, "fan": None})
    assert merged == {"led": {"on": True}}, merged
    assert twin.delta({"fan": 2}, {"fan": 1}) == {"fan": 2}

    with tempfile.TemporaryDirectory() as tmp:
        db = store.Store(str(Path(tmp) / "node.db"))
        seq = db.append(b"hello", priority=1)
        assert [record[2] for record in db.peek()] == [b"hello"]
        assert db.ack([seq]) == 1
        db.close()

    print(
        f"ok: edgenode {edgenode.__version__} backend={edgenode.backend} "
        f"machine={platform.machine()} python={platform.python_version()} "
        f"extension={extension}"
    )


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])

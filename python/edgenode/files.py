"""Files in the node's data_dir: their names, and how they are written.

Everything the node writes there may hold secrets (Config data, tokens, twins), so files
are created 0600 and folders 0700 whatever the process umask, and replaced atomically
(temporary file, fsync, rename): a reader sees the old or the new file, never half.
"""

from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path
from typing import Any, Final

FILE_MODE: Final = 0o600
DIR_MODE: Final = 0o700

STATE_FILE: Final = "link-state.json"
PID_FILE: Final = "edgenode.pid"
LOCK_FILE: Final = "edgenode.lock"
DB_FILE: Final = "node.db"
DEVICES_FILE: Final = "devices.json"
"""The device layer's served devices and broker state (written by devices/service.py)."""
CONFIGS_FILE: Final = "configs.json"
"""The Configs the node applied, with their generations (written by the Config service)."""
ARTIFACTS_DIR: Final = "artifacts"
"""``DATA_DIR/artifacts``: the Apps' artifacts, verified (``sha256/``) and partial."""
APPS_FILE: Final = "apps.json"
"""Every App's phase, the container engine and the limits mechanism (the App service)."""
APPS_DIR: Final = "apps"
"""``DATA_DIR/apps/NAME/``: each App's work dir, logs and state."""
CONFIG_DIR: Final = "config"
"""``DATA_DIR/config/NAME.json``: one file per Config, its data map."""


def ensure_dir(path: Path) -> None:
    """Create ``path`` and its missing parents as 0700 whatever the umask (``mkdir -p``
    would give the parents the umask's mode); folders that exist are left as their owner
    made them."""
    missing = [path, *path.parents]
    missing = list(reversed([p for p in missing if not p.exists()]))
    for folder in missing:
        try:
            folder.mkdir(mode=DIR_MODE)
        except FileExistsError:
            continue  # made meanwhile (another process)
        os.chmod(folder, DIR_MODE)  # mkdir's mode is masked by the umask; this is not


def write_bytes_atomic(path: Path, data: bytes, mode: int = FILE_MODE) -> None:
    """Replace ``path`` with ``data`` (created with ``mode``, fsynced, renamed into place)."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, mode)  # O_CREAT's mode is masked by the umask; this is not
        os.replace(tmp, path)
    except OSError:
        # A full disk: leave no half-written temporary file taking space behind.
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise


def write_json_atomic(path: Path, data: dict[str, Any]) -> None:
    """Replace ``path`` with ``data`` as JSON (see :func:`write_bytes_atomic`)."""
    write_bytes_atomic(path, json.dumps(data, sort_keys=True).encode())

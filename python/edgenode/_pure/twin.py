"""Placeholder until the twin work lands."""

from typing import Any

MAX_DEPTH = 32
MAX_DOCUMENT_BYTES = 65536
MAX_KEY_BYTES = 256
check_limits: Any = None
delta: Any = None
merge_patch: Any = None
stamp: Any = None

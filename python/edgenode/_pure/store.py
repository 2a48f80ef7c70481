"""Placeholder until the store work lands."""

from typing import Any

SCHEMA_VERSION = 1
DEFAULT_OUTBOX_MAX_BYTES = 64 * 1024 * 1024
Store: Any = None

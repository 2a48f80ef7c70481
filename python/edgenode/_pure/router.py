"""Placeholder until the router work lands."""

from typing import Any

MAX_TOPIC_BYTES = 65535
TopicRouter: Any = None
validate_filter: Any = None
validate_topic: Any = None

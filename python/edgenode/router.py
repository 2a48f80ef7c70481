"""MQTT topic routing: filters to integer targets (backend chosen by edgenode._backend)."""

from typing import TYPE_CHECKING

from edgenode._backend import core

if TYPE_CHECKING:  # the pure twin is the typed specification of both backends
    from edgenode._pure.router import MAX_TOPIC_BYTES, TopicRouter, validate_filter, validate_topic
else:
    TopicRouter = core.TopicRouter
    validate_filter = core.validate_filter
    validate_topic = core.validate_topic
    MAX_TOPIC_BYTES = core.MAX_TOPIC_BYTES

__all__ = ["MAX_TOPIC_BYTES", "TopicRouter", "validate_filter", "validate_topic"]

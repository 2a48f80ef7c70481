"""edgehub: the edgenode cloud hub and the edgectl operator CLI."""

__version__ = "0.1.0"

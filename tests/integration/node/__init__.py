"""Integration tests of the node daemon (real processes, real sockets, real SQLite)."""

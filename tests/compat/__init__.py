"""Compatibility tests: a protocol-1 client written from docs/PROTOCOL.md alone."""

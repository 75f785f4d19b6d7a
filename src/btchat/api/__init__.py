"""The daemon's local HTTP + WebSocket API: facade, server, client and OpenAPI document.

Kept separate from the node so the CLI, scripts and GUIs depend on one small, versioned
surface (``/v1``) rather than on the daemon's internals.
"""

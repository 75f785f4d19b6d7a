"""One-to-one file transfer: manifests, the hash tree, safe names, the piece protocol.

Sans-I/O throughout: :mod:`btchat.node.files` is the shell that reads and writes the
disk and drives these cores over a session's substreams (``docs/PROTOCOL.md``, "Files").
"""

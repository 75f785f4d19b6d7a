"""Which of two connections between the same two endpoints both ends keep.

If both sides dial at once, two connections may complete. Each side decides alone,
without a message, so the rule must give both the same answer from what both know: the
two endpoint keys and who dialled each connection. Both keep the connection dialled by
the smaller key; between two dialled by the same side, the older one stays (so a
redial cannot knock out a working connection). One rule ranks above that: a direct
connection replaces a relayed one and is never replaced by one (both ends know which
is which: the dialler chose the relay, the target accepted through it), so the later
direct path takes over a session that had to go through a relay. Used for 1:1 sessions
(:mod:`btchat.node.peering`) and channel links (:mod:`btchat.channels.service`), the
keys being identity keys in both.
"""

from __future__ import annotations

__all__ = ["keeper", "replaces"]


def keeper(a: bytes, b: bytes) -> bytes:
    """The key whose dialled connection both ends keep."""
    return min(a, b)


def replaces(
    local: bytes,
    remote: bytes,
    current_dialler: bytes,
    new_dialler: bytes,
    *,
    current_relayed: bool = False,
    new_relayed: bool = False,
) -> bool:
    """True if a new connection (dialled by ``new_dialler``) replaces the current one.

    ``local`` and ``remote`` are the two endpoint keys; a dialler is one of them. A
    direct connection beats a relayed one whoever dialled either.
    """
    if current_relayed != new_relayed:
        return current_relayed
    keep = keeper(local, remote)
    return current_dialler != keep and new_dialler == keep

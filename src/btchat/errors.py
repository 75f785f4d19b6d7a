"""The roots of every btchat exception, so a caller can tell who is at fault.

Three kinds of failure need three different answers, and the root says which:

* :class:`PeerError`: a remote sent something malformed, forged or out of bounds. The
  core drops it (and counts it); it never reaches the user as a crash. Decoders of
  remote input raise a subclass of this and nothing else.
* :class:`UsageError`: the caller misused the API (a 19-byte key, an unknown state).
  It is raised at once; it also derives from :class:`ValueError`, so code that caught
  ``ValueError`` before keeps working.
* :class:`EnvironmentFault`: the local machine let us down (the database cannot be
  opened, the key file is damaged, a tracker or the DHT is unreachable). The message
  reads well to a user; :class:`StorageError` and :class:`NetworkError` narrow it.

Every package-level exception derives from one of these, so ``except BtchatError``
catches everything btchat raises on purpose, and anything else that escapes is a bug.
This module imports nothing: any layer may use it.
"""

from __future__ import annotations

__all__ = [
    "BtchatError",
    "EnvironmentFault",
    "NetworkError",
    "PeerError",
    "StorageError",
    "UsageError",
]


class BtchatError(Exception):
    """Anything btchat raises on purpose."""


class PeerError(BtchatError, ValueError):
    """The peer misbehaved: remote input was malformed, forged or over a limit.

    A ``ValueError`` too, because the decoders that raise it always were.
    """


class UsageError(BtchatError, ValueError):
    """The caller misused the API: a programming error, reported at once."""


class EnvironmentFault(BtchatError):
    """Something outside btchat failed (disk, network, a damaged file): tell the user."""


class StorageError(EnvironmentFault):
    """A local file (database, key file, state file) cannot be read or written."""


class NetworkError(EnvironmentFault):
    """The network (the DHT, a tracker, a peer's address) did not answer as needed."""

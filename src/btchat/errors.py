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
  :class:`StorageFault` narrows storage errors to the machine's conditions that pass
  (a full disk, an I/O error, a read-only mount): the node backs off and retries on
  those instead of failing the operation for good.

:class:`ApiError` is the one refusal the node hands its front ends as it is: a status
(HTTP's numbers, which the API answers with), a stable code and a sentence. The node
raises it and the API maps it, so it lives here, below both, and the node never imports
the API layer to say "unknown contact".

Every package-level exception derives from one of these, so ``except BtchatError``
catches everything btchat raises on purpose, and anything else that escapes is a bug.
This module imports nothing: any layer may use it.
"""

from __future__ import annotations

__all__ = [
    "ApiError",
    "BtchatError",
    "DiskFull",
    "EnvironmentFault",
    "NetworkError",
    "PeerError",
    "ReadOnlyStorage",
    "StorageError",
    "StorageFault",
    "StorageIOError",
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


class StorageFault(StorageError):
    """The machine cannot store right now (disk full, I/O error, read-only): it may pass.

    ``condition`` names it in a few words for logs and ``status`` ("disk full").
    """

    condition = "storage unavailable"


class DiskFull(StorageFault):
    """No space left (SQLITE_FULL, ENOSPC, EDQUOT)."""

    condition = "disk full"


class StorageIOError(StorageFault):
    """The disk failed a read or write (SQLITE_IOERR, EIO)."""

    condition = "I/O error"


class ReadOnlyStorage(StorageFault):
    """The file or its file system refuses writes (SQLITE_READONLY, EROFS)."""

    condition = "read-only"


class NetworkError(EnvironmentFault):
    """The network (the DHT, a tracker, a peer's address) did not answer as needed."""


class ApiError(BtchatError):
    """A failure the caller should see as-is: an HTTP status, a stable code and a sentence.

    Raised by the messenger so the API can map domain errors (unknown contact, name taken)
    to 404/409/... without the messenger knowing about HTTP.
    """

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.status!r}, {self.code!r}, {self.message!r})"

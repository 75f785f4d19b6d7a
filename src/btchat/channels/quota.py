"""How much one channel member can make every other member store, relay and remember.

How this works: anyone holding an open channel's secret may author, and keys are free,
so the limits are layered (issue 14 item 4; PROTOCOL.md "Channel quotas"):

* **Per-author windows** (:class:`AuthorWindows`): in each :attr:`ChannelQuota.window`
  seconds of *our* clock, an author gets at most ``author_messages`` new messages and
  ``author_bytes`` of them, and ``author_presence`` presence messages. Beyond that its
  messages are refused: not stored, not shown, not relayed (so a flood also stops at
  the first honest member instead of crossing the mesh). The table of authors is
  itself bounded (``tracked_authors``; the oldest window goes first).
* **Stored, per author** (``author_stored``): past it, the author's own oldest stored
  message is evicted, so one key cannot displace everyone else's history.
* **Stored, per channel** (``channel_messages``, ``channel_bytes``): past either, the
  oldest messages by arrival are evicted. Eviction rather than refusal: a full channel
  that refused would stop storing every honest member's new messages for good, while
  the oldest messages are the ones no late joiner is sent (history sync sends the
  newest). Arrival order, not Lamport order, since the author picks its Lamport time.
* **Presence** entries (who was heard from when): at most ``presence_entries``, an
  entry expires after ``presence_expiry``; when full the longest-silent one goes.

Everything here is plain data and ``now``; the engine counts each refusal in its stats.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["AuthorWindows", "ChannelQuota"]


@dataclass(frozen=True)
class ChannelQuota:
    #: Length of one per-author window (seconds of our clock).
    window: float = 600.0
    #: New messages (text) one author may have stored per window: ten a minute for ten
    #: minutes is a fast typist; a late joiner's history from one author fits too.
    author_messages: int = 1000
    #: Bytes of those messages per window (a message is at most 64 KiB).
    author_bytes: int = 8 * 1024 * 1024
    #: Presence messages per author per window (one a minute is the protocol's rate).
    author_presence: int = 30
    #: Authors whose windows are tracked at once (bounds the table, not the authors).
    tracked_authors: int = 4096
    #: Stored messages per author per channel; past it the author's oldest go.
    author_stored: int = 5000
    #: Stored messages and wire bytes per channel; past either the oldest go. Above the
    #: largest ``history`` option (10,000), so history sync still fills a joiner.
    channel_messages: int = 20_000
    channel_bytes: int = 64 * 1024 * 1024
    #: Presence entries kept, and how long one lasts without news of its member.
    presence_entries: int = 1024
    presence_expiry: float = 3600.0


@dataclass
class _Window:
    start: float
    messages: int = 0
    bytes: int = 0
    presence: int = 0
    refused: bool = False  # already said so (one log line per author per window)


class AuthorWindows:
    """Fixed windows per author; :meth:`admit` says whether one more message fits."""

    def __init__(self, quota: ChannelQuota) -> None:
        self.quota = quota
        self._windows: dict[bytes, _Window] = {}

    def __len__(self) -> int:
        return len(self._windows)

    def _window(self, author: bytes, now: float) -> _Window:
        w = self._windows.get(author)
        if w is None or now >= w.start + self.quota.window or now < w.start:
            if w is not None:
                del self._windows[author]  # re-inserted last: the dict stays in start order
            while len(self._windows) >= self.quota.tracked_authors:
                del self._windows[next(iter(self._windows))]
            w = self._windows[author] = _Window(now)
        return w

    def admit(self, author: bytes, size: int, *, presence: bool, now: float) -> str | None:
        """Count one message; None if it fits, else why not (and it is not counted)."""
        w = self._window(author, now)
        q = self.quota
        if presence:
            if w.presence >= q.author_presence:
                return "presence"
            w.presence += 1
            return None
        if w.messages >= q.author_messages:
            return "messages"
        if w.bytes + size > q.author_bytes:
            return "bytes"
        w.messages += 1
        w.bytes += size
        return None

    def first_refusal(self, author: bytes) -> bool:
        """True the first time in its window an author is refused (to log it once)."""
        w = self._windows.get(author)
        if w is None or w.refused:
            return False
        w.refused = True
        return True

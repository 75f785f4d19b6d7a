"""Channel membership the same on all our devices: joined, created or left on one device,
joined or left on the others (``messaging/own_sync.py`` has the ``channels`` format).

Membership is per person, links per device: every device of ours that is in a channel
holds its own links there (``channels/engine.py`` keys links by identity and device).
This module only decides *which* channels each device is in. Each join or leave is
recorded with its time and this device's id, like a contact change
(``node/contact_sync.py``), and sent to our other devices that are up; a device coming
up gets the whole set. A change newer than what a device has (a tie goes to the higher
device id) is applied there, so every device ends in the same channels whatever order
the notes arrive in. A join carries what the other device needs to take part: the
``.chat`` file and, for an invite-only channel, the generation secrets and member list
held here (the owner key is the identity key, which every device holds already; the
owner grants no generation secret to itself, so its other devices get them here).

A channel the owner changes the member list of is recorded again, so its new secret and
list reach our other devices. What the applying takes (starting or stopping a channel's
service) is the caller's: ``apply`` gets each change that won, with its parsed file.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from btchat.channels.chatfile import ChatFile, ChatFileError
from btchat.channels.store import ChannelStore
from btchat.messaging.own_sync import ChannelChange, ChannelsNote, encode_channels
from btchat.storage import register_migrations, sql_step

__all__ = ["ChannelSync"]

log = logging.getLogger(__name__)

MIGRATIONS = (
    sql_step(
        (
            """CREATE TABLE channel_changes (
                id BLOB PRIMARY KEY CHECK (length(id) = 32),
                joined INTEGER NOT NULL,
                changed_ms INTEGER NOT NULL,
                device BLOB NOT NULL
            ) WITHOUT ROWID""",
        )
    ),
)
register_migrations("channel_sync", MIGRATIONS)


class ChannelSync:
    def __init__(
        self,
        store: ChannelStore,
        device_id: bytes,
        send_to_all: Callable[[bytes], None],
        apply: Callable[[ChannelChange, ChatFile | None], None],
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.channels = store
        self.db = store.store
        self.db.migrate()
        self.device_id = device_id
        self._send_to_all = send_to_all
        #: Told of each change from another device that won: (change, its .chat file
        #: parsed, or None for a leave). The caller joins or leaves.
        self._apply = apply
        self._clock = clock
        self.stats = {"applied": 0, "stale": 0, "refused": 0}

    # ------------------------------------------------------------- what we have

    def _stored(self, channel: bytes) -> ChannelChange | None:
        rows = self.db.query(
            "SELECT joined, changed_ms, device FROM channel_changes WHERE id = ?", (channel,)
        )
        if not rows:
            return None
        joined, changed, device = rows[0]
        return ChannelChange(int(changed), bytes(device), channel, bool(joined))

    def current(self, channel: bytes) -> ChannelChange | None:
        """The last change of ``channel`` known here (without what it carries); a channel
        from before sync counts as joined when it was, by this device."""
        stored = self._stored(channel)
        if stored is not None:
            return stored
        row = self.channels.channel(channel)
        if row is None:
            return None
        return ChannelChange(row.joined_ms, self.device_id, channel, True)

    def _full(self, change: ChannelChange) -> ChannelChange:
        """``change`` with what a device needs to join, read from the store now."""
        row = self.channels.channel(change.channel) if change.joined else None
        if row is None:
            return ChannelChange(change.changed_ms, change.device, change.channel, False)
        keys = tuple(sorted(self.channels.keys(change.channel).items(), reverse=True))
        return ChannelChange(change.changed_ms, change.device, change.channel, True,
                             bytes(row.chatfile), keys, bytes(row.member_list or b""))  # fmt: skip

    def _save(self, change: ChannelChange) -> None:
        with self.db.transaction() as conn:
            conn.execute(
                "INSERT OR REPLACE INTO channel_changes (id, joined, changed_ms, device)"
                " VALUES (?, ?, ?, ?)",
                (change.channel, int(change.joined), change.changed_ms, change.device),
            )

    def payloads(self) -> list[bytes]:
        """Every channel joined or left, for a device that comes up."""
        known = {bytes(c) for (c,) in self.db.query("SELECT id FROM channel_changes")} | {
            row.id for row in self.channels.channels()
        }
        changes = [self._full(c) for ch in sorted(known) if (c := self.current(ch)) is not None]
        return encode_channels(changes)

    # ------------------------------------------------------------- changes here

    def record(self, channel: bytes, *, joined: bool) -> None:
        """The user joined or created ``channel`` here (call once it is stored), changed
        its member list, or is about to leave it (``joined=False``: call while it is still
        stored, or after; a leave carries nothing)."""
        previous = self.current(channel)
        now = int(self._clock() * 1000)
        at = now if previous is None else max(now, previous.changed_ms + 1)
        change = ChannelChange(at, self.device_id, channel, joined)
        self._save(change)
        for payload in encode_channels([self._full(change)]):
            self._send_to_all(payload)

    # ------------------------------------------------------------ changes there

    def undo(self, channel: bytes) -> None:
        """A change that won could not be carried out here (stopping, no port, a full
        disk): forget it, so the same change, sent again when a device comes up, wins
        again instead of being taken for one already applied."""
        with self.db.transaction() as conn:
            conn.execute("DELETE FROM channel_changes WHERE id = ?", (channel,))

    def merge(self, note: ChannelsNote) -> None:
        for change in note.changes:
            local = self.current(change.channel)
            if local is not None and change.stamp <= local.stamp:
                self.stats["stale"] += 1
                continue
            chat = None
            if change.joined:
                try:
                    chat = ChatFile.from_bytes(change.chatfile)
                    if chat.channel_id != change.channel:
                        raise ChatFileError("malformed", "the .chat file is of another channel")
                except ChatFileError as exc:
                    self.stats["refused"] += 1
                    log.warning("a channel change from our other device was refused: %s", exc)
                    continue
            self._save(change)
            self.stats["applied"] += 1
            self._apply(change, chat)

"""The session-borne parts of offline delivery, sans I/O: prekeys and friend backup.

How this works: while a session to a contact is live, we hand it a one-time prekey (so
it can write to our mailbox without fetching our bundle) and the pending packets for
our *other* contacts it may meet before we do (``hold``); it hands back what it holds
for us (``held``) and we tell it what we took (``held_ack``) so it can forget those.
Every function returns the bodies to send to that contact as ``(type, body)`` pairs;
the shell (the daemon, the simulator) signs them as envelopes and sends them over the
session. One copy for both shells, so the simulator exercises the daemon's own path.
"""

from __future__ import annotations

import logging
from typing import Any

from btchat.messaging.envelope import MAX_ENVELOPE
from btchat.offline.mailbox import Mailbox
from btchat.offline.packet import OfflinePacket, PacketError
from btchat.offline.ratchet import RatchetError, decode_prekey_body

__all__ = ["BACKUP_TYPES", "HELD", "HELD_ACK", "HOLD", "PREKEY", "Courier", "Message"]

log = logging.getLogger(__name__)

PREKEY, HOLD, HELD, HELD_ACK = b"prekey", b"hold", b"held", b"held_ack"
BACKUP_TYPES = (PREKEY, HOLD, HELD, HELD_ACK)
#: Packet bytes per backup envelope, well inside MAX_ENVELOPE.
BACKUP_BYTES = MAX_ENVELOPE - 8 * 1024

#: One body for the contact: (envelope type, body).
Message = tuple[bytes, dict[bytes, Any]]


def _packets(body: dict[bytes, Any]) -> list[bytes]:
    packets = body.get(b"p")
    if type(packets) is not list:
        return []
    return [p for p in packets if type(p) is bytes]


def _sender(packet: bytes) -> bytes | None:
    try:
        return OfflinePacket.parse(packet).sender
    except PacketError:
        return None


def _batches(packets: list[bytes]) -> list[list[bytes]]:
    batches: list[list[bytes]] = [[]]
    size = 0
    for packet in packets:
        if batches[-1] and size + len(packet) > BACKUP_BYTES:
            batches.append([])
            size = 0
        batches[-1].append(packet)
        size += len(packet) + 8
    return [b for b in batches if b]


class Courier:
    """What goes over a live session for offline delivery, around one :class:`Mailbox`."""

    def __init__(self, mailbox: Mailbox) -> None:
        self.mailbox = mailbox
        self.state = mailbox.state
        self.ratchet = mailbox.ratchet

    def session_up(self, peer: bytes, now: float) -> list[Message]:
        """What a contact that just came online needs from us offline."""
        out: list[Message] = []
        if not self.ratchet.has_session(peer):
            given = self.state.peer(peer).given_prekey
            if given is not None:  # still unused: hand the same key, do not burn another
                olm_key, one_time = self.ratchet.olm_key, given
            else:
                olm_key, one_time = self.ratchet.one_time_key()
                self.state.set_given_prekey(peer, one_time)
            out.append((PREKEY, {b"k": olm_key, b"o": one_time}))
        out += self.backups_for(peer, now)
        out += [(HELD, {b"p": batch}) for batch in _batches(self.mailbox.held_for(peer))]
        return out

    def backups_for(self, friend: bytes, now: float) -> list[Message]:
        """Pending packets for others that ``friend`` (online now) has not been given."""
        return [(HOLD, {b"p": batch}) for batch in _batches(self.mailbox.backup_for(friend, now))]

    def on_envelope(
        self, peer: bytes, kind: bytes, body: dict[bytes, Any], contacts: set[bytes], now: float
    ) -> list[Message]:
        """A verified session body of one of BACKUP_TYPES from ``peer``; returns replies.

        Packets taken from a ``held`` body come out of the mailbox as its events."""
        if kind == PREKEY:
            try:
                olm_key, one_time = decode_prekey_body(body)
            except RatchetError as exc:
                log.warning("prekey from %s refused: %s", peer.hex()[:16], exc)
                return []
            self.state.set_prekey(peer, olm_key, one_time)
        elif kind == HOLD:
            held = self.mailbox.accept_hold(peer, _packets(body), contacts, now)
            log.info("holding %d packet(s) from %s for offline contacts", held, peer.hex()[:16])
        elif kind == HELD:
            packets = [p for p in _packets(body) if _sender(p) in contacts]
            release = self.mailbox.take_held(peer, packets, now)
            if release:
                return [(HELD_ACK, {b"a": [[s, n] for s, n in release]})]
        elif kind == HELD_ACK:
            items = body.get(b"a")
            if type(items) is list:
                pairs = [
                    (i[0], i[1])
                    for i in items
                    if type(i) is list and len(i) == 2 and type(i[0]) is bytes and type(i[1]) is int
                ]
                self.mailbox.release_held(peer, pairs)
        return []

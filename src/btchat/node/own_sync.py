"""Keeping our devices' histories the same (``messaging/own_sync.py`` has the format).

Peering holds a session to each of our other devices it reaches (they are found like
contacts, through the rendezvous of our identity with itself). For each, this sends the
rows above that device's cursor, one batch at a time, and moves the cursor when the
device acknowledges; it stores what our other devices send. A new message stored here
(sent, received, or copied in) wakes every idle sync, so a message reaches the others
at once while they are up, and later, in order, when they come back.

Our outgoing rows still in the outbox travel with their signed envelopes: a device
adopts those it lacks into its own outbox, so the device that runs offline delivery
deposits a message written on another for a contact who is away, and any device the
contact reaches offers it. A receipt that reached one device goes to the others as a
``state`` note (and the last ones again to a device coming up), so every device shows
it and stops offering what the contact has.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

from btchat.messaging import envelope as env_mod
from btchat.messaging.envelope import Envelope, EnvelopeError
from btchat.messaging.messages import MessageRow
from btchat.messaging.own_sync import (
    BATCH_ROWS,
    READ_IDS,
    Batch,
    ChannelsNote,
    ContactsNote,
    DevicesNote,
    NamesNote,
    ProfileChange,
    ReadNote,
    ReceivedNote,
    StateNote,
    SyncError,
    decode_sync,
    encode_batch,
    encode_state,
    encode_synced,
)
from btchat.messaging.store import Store
from btchat.storage import register_migrations, sql_step

__all__ = ["OwnSync"]

log = logging.getLogger(__name__)

MIGRATIONS = (
    sql_step(
        (
            """CREATE TABLE own_sync (
                device_id BLOB PRIMARY KEY CHECK (length(device_id) = 16),
                upto INTEGER NOT NULL
            ) WITHOUT ROWID""",
        )
    ),
)
register_migrations("own_sync", MIGRATIONS)

#: ``channels`` notes kept while the channels start (a device's whole set is a few).
EARLY_CHANNEL_NOTES = 32
#: An envelope another device sent is adopted only while our outbox holds fewer.
ADOPT_LIMIT = 2000
#: Receipts sent again to a device coming up: those of our latest outgoing messages.
STATES_ON_UP = READ_IDS
_RANK = {"pending": 0, "sent": 1, "failed": 1, "delivered": 2, "read": 3}


class OwnSync:
    def __init__(
        self,
        store: Store,
        send: Callable[[bytes, bytes], bool],
        emit: Callable[[dict[str, Any]], None],
        devices: Callable[[], bytes] | None = None,
        on_devices: Callable[[DevicesNote], None] | None = None,
        contacts: Callable[[], list[bytes]] | None = None,
        on_contacts: Callable[[ContactsNote], None] | None = None,
    ) -> None:
        self.store = store
        store.migrate()
        self._send = send  # (device id, payload) -> taken
        self._emit = emit
        #: Our devices as we know them (a ``devices`` note), and what to do with one.
        self._devices = devices
        self._on_devices = on_devices
        #: Our contact changes as ``contacts`` payloads, and what to do with one.
        self._contacts = contacts
        self._on_contacts = on_contacts
        #: Our profile as payloads for a device coming up, and what to do with a note.
        self._profile: Callable[[], list[bytes]] = list
        self._on_profile: Callable[[ProfileChange], None] = lambda change: None
        #: The same for our devices' names (``node/device_names.py``).
        self._names: Callable[[], list[bytes]] = list
        self._on_names: Callable[[NamesNote], None] = lambda note: None
        #: The same for channel membership (``node/channel_sync.py``), once attached.
        self._channels: Callable[[], list[bytes]] | None = None
        self._on_channels: Callable[[ChannelsNote], None] | None = None
        #: Notes that came before channel sync was attached, applied when it is.
        self._early_channels: list[ChannelsNote] = []
        #: Our identity key (the envelopes our devices hand over must be signed by it),
        #: what to do with those adopted (offline delivery deposits them) and with ids
        #: the contact acknowledged (offline delivery drops their packets).
        self.me: bytes | None = None
        self.on_adopted: Callable[[list[Envelope]], None] = lambda envs: None
        self.on_acknowledged: Callable[[list[bytes]], None] = lambda ids: None
        #: How far this device received each contact's offline packets (``received``
        #: payloads for a device coming up), and what to do with another's (1.6).
        self.received_payloads: Callable[[], list[bytes]] = list
        self.on_received: Callable[[ReceivedNote], None] = lambda note: None
        self._up: set[bytes] = set()
        self._gone: set[bytes] = set()  # revoked devices, since this start
        self._in_flight: dict[bytes, int] = {}  # device -> last seq of the batch sent
        self.stats = {
            "batches_sent": 0,
            "bytes_sent": 0,
            "rows_received": 0,
            "rows_new": 0,
            "malformed": 0,
            "envelopes_adopted": 0,
            "envelopes_refused": 0,
            "states_applied": 0,
            "from_revoked": 0,
        }

    def cursor(self, device: bytes) -> int:
        rows = self.store.query("SELECT upto FROM own_sync WHERE device_id = ?", (device,))
        return int(rows[0][0]) if rows else 0

    def _advance(self, device: bytes, upto: int) -> None:
        with self.store.transaction() as conn:
            conn.execute(
                "INSERT INTO own_sync (device_id, upto) VALUES (?, ?) ON CONFLICT (device_id)"
                " DO UPDATE SET upto = max(upto, excluded.upto)",
                (device, upto),
            )

    def behind(self, device: bytes) -> int:
        """Messages stored here that ``device`` has not acknowledged yet."""
        rows = self.store.query(
            "SELECT count(*) FROM messages WHERE seq > ?", (self.cursor(device),)
        )
        return int(rows[0][0])

    def is_up(self, device: bytes) -> bool:
        return device in self._up

    def device_up(self, device: bytes) -> None:
        if device in self._gone:
            return
        self._up.add(device)
        self._in_flight.pop(device, None)  # a batch lost with the old session goes again
        if self._devices is not None:
            self._send(device, self._devices())
        for payload in self._contacts() if self._contacts is not None else []:
            self._send(device, payload)
        for payload in [*self._profile(), *self._names()]:
            self._send(device, payload)
        for payload in self._channels() if self._channels is not None else []:
            self._send(device, payload)
        for payload in [*self._recent_states(), *self.received_payloads()]:
            self._send(device, payload)
        self._next(device)

    def _recent_states(self) -> list[bytes]:
        """``state`` notes for our latest outgoing messages the contact has (a receipt
        that came while the other device was away)."""
        rows = self.store.query(
            "SELECT peer, state, id FROM messages WHERE direction = 'out'"
            " AND state IN ('delivered', 'read') ORDER BY seq DESC LIMIT ?",
            (STATES_ON_UP,),
        )
        groups: dict[tuple[bytes, str], list[bytes]] = {}
        for peer, state, msg_id in reversed(rows):
            groups.setdefault((bytes(peer), state), []).append(bytes(msg_id))
        return [p for (peer, state), ids in groups.items() for p in encode_state(peer, state, ids)]

    def attach_contacts(
        self, payloads: Callable[[], list[bytes]], merge: Callable[[ContactsNote], None]
    ) -> None:
        """Contact sync: the book for a device coming up, and what to do with a note."""
        self._contacts, self._on_contacts = payloads, merge

    def attach_channels(
        self, payloads: Callable[[], list[bytes]], merge: Callable[[ChannelsNote], None]
    ) -> None:
        """Channel sync (attached when the channels start, maybe after a device came
        up): the whole set for a device coming up, sent now to those already up."""
        self._channels, self._on_channels = payloads, merge
        early, self._early_channels = self._early_channels, []
        for note in early:
            merge(note)
        if self._up:
            for payload in payloads():
                self.send_to_all(payload)

    def attach_profile(
        self, payloads: Callable[[], list[bytes]], merge: Callable[[ProfileChange], None]
    ) -> None:
        """Profile sync: ours for a device coming up, and what to do with a note."""
        self._profile, self._on_profile = payloads, merge

    def attach_names(
        self, payloads: Callable[[], list[bytes]], merge: Callable[[NamesNote], None]
    ) -> None:
        """Device names: all of them for a device coming up, and what to do with a note."""
        self._names, self._on_names = payloads, merge

    def send_to_all(self, payload: bytes) -> None:
        """A note for every device up (a contact changed here)."""
        for device in list(self._up):
            self._send(device, payload)

    def devices_changed(self, revoked: frozenset[bytes] = frozenset()) -> None:
        """Tell every device up what we now know of our devices, before anything else
        (a revoked one too, so it knows), then send the ``revoked`` nothing more: however
        we learned it (revoked here, a note of another device, our lists in the DHT)."""
        if self._devices is not None:
            note = self._devices()
            for device in list(self._up):
                self._send(device, note)
        for device in revoked:
            self.forget(device)

    def device_down(self, device: bytes) -> None:
        self._up.discard(device)
        self._in_flight.pop(device, None)

    def forget(self, device: bytes) -> None:
        """A revoked device: nothing more is sent to it or taken from it, even on a
        session that comes up later (a dial that was in flight)."""
        self._gone.add(device)
        self.device_down(device)
        with self.store.transaction() as conn:
            conn.execute("DELETE FROM own_sync WHERE device_id = ?", (device,))

    def changed(self) -> None:
        """Something was stored here: every idle sync sends what is new."""
        for device in list(self._up):
            if device not in self._in_flight:
                self._next(device)

    def _next(self, device: bytes) -> None:
        rows = self.store.rows_after(self.cursor(device), BATCH_ROWS)
        if not rows:
            return
        outgoing = [row.id for _, row in rows if row.direction == "out"]
        envelopes = self.store.outbox_envelopes(outgoing) if outgoing else {}
        payload, upto = encode_batch(rows, envelopes)
        if self._send(device, payload):
            self._in_flight[device] = upto
            self.stats["batches_sent"] += 1
            self.stats["bytes_sent"] += len(payload)

    def receive(self, device: bytes, payload: bytes) -> None:
        if device in self._gone:
            self.stats["from_revoked"] += 1
            return
        try:
            got = decode_sync(payload, int(time.time() * 1000))
        except SyncError as exc:
            self.stats["malformed"] += 1
            log.warning("dropped a malformed sync payload from our device %s: %s",
                        device.hex()[:8], exc)  # fmt: skip
            return
        if isinstance(got, ReadNote):
            self._read_there(got)
        elif isinstance(got, StateNote):
            self._state_there(device, got)
        elif isinstance(got, ReceivedNote):
            self.on_received(got)
        elif isinstance(got, ProfileChange):
            self._on_profile(got)
        elif isinstance(got, NamesNote):
            self._on_names(got)
        elif isinstance(got, ChannelsNote):
            if self._on_channels is not None:
                self._on_channels(got)
            elif len(self._early_channels) < EARLY_CHANNEL_NOTES:
                self._early_channels.append(got)
        elif isinstance(got, ContactsNote):
            if self._on_contacts is not None:
                self._on_contacts(got)
        elif isinstance(got, DevicesNote):
            if self._on_devices is not None:
                self._on_devices(got)
        elif isinstance(got, Batch):
            self._store(device, got)
        elif self._in_flight.get(device) == got:
            del self._in_flight[device]
            self._advance(device, got)
            self._next(device)

    def _read_there(self, note: ReadNote) -> None:
        """Another of our devices read these: so have we (no receipt: it sent them)."""
        unread = [
            i
            for i in self.store.message_ids(note.ids, note.peer, "in")
            if (row := self.store.get_message(i)) is not None and row.state != "read"
        ]
        if unread:
            self.store.mark_state(unread, "read")
            self._emit(
                {"type": "read", "contact": note.peer.hex(), "ids": [i.hex() for i in unread]}
            )

    def _state_there(self, device: bytes, note: StateNote) -> None:
        """The contact acknowledged these on another of our devices: shown here too
        (never backwards), and no longer offered or deposited from here."""
        mine = self.store.message_ids(note.ids, note.peer, "out")
        if not mine:
            return
        ids = [i for i in dict.fromkeys(note.ids) if i in mine]
        moved = [
            i
            for i in ids
            if (row := self.store.get_message(i)) is not None
            and _RANK.get(row.state, 0) < _RANK[note.state]
        ]
        self.store.mark_state(ids, note.state)
        self.store.ack_outbox(ids)
        self.on_acknowledged(ids)
        if moved:
            self.stats["states_applied"] += len(moved)
            self._emit({"type": "receipt", "contact": note.peer.hex(), "state": note.state,
                        "ids": [i.hex() for i in moved], "device": device.hex()})  # fmt: skip

    def _store(self, device: bytes, batch: Batch) -> None:
        new = self.store.save_synced(batch.rows)  # committed before it is acknowledged
        self.stats["rows_received"] += len(batch.rows)
        self.stats["rows_new"] += len(new)
        adopted = self._adopt(batch) if batch.envelopes and self.me is not None else []
        self._send(device, encode_synced(batch.upto))
        for row in new:
            self._emit({"type": "message", "message": row.to_json()})
        if adopted:
            self.on_adopted(adopted)

    def _adopt(self, batch: Batch) -> list[Envelope]:
        """The envelopes of a batch that are ours, for one of its outgoing rows, and
        unchanged from it: queued here too (those that fail are dropped and counted)."""
        rows: dict[bytes, MessageRow] = {r.id: r for r in batch.rows if r.direction == "out"}
        good = []
        now = time.time()
        for blob in batch.envelopes:
            try:
                env = env_mod.parse_envelope(blob)
                row = rows.get(env.id)
                if row is None:
                    raise EnvelopeError("bad_body", "no outgoing row of the batch has its id")
                env_mod.verify_envelope(
                    env, expected_sender=self.me, expected_recipient=row.peer, now=now
                )
                if env.type.decode() != row.type or env.lamport != row.lamport:
                    raise EnvelopeError("bad_body", "the envelope is not its row's message")
            except EnvelopeError as exc:
                self.stats["envelopes_refused"] += 1
                log.warning("dropped an envelope handed over by our device: %s", exc)
                continue
            good.append(env)
        adopted = self.store.adopt_outbox(good, int(now * 1000), ADOPT_LIMIT) if good else []
        self.stats["envelopes_adopted"] += len(adopted)
        return adopted

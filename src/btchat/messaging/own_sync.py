"""History sync between the devices of one identity: what one has, the others get.

How this works: every message a device stores (sent from it, received from a contact,
or copied from another of our devices) has a local ``seq``. For each of our other
devices we keep a cursor: the highest ``seq`` that device has acknowledged. While a
session to it is up, we send the rows above its cursor in batches (``sync``), oldest
first; it stores those it lacks (by message id, so a row arrives at most once however
many devices send it), answers ``synced`` with the batch's last ``seq``, and we move
the cursor and send the next. A device back after weeks catches up by batches, and
every device orders a conversation by (Lamport, sender, id), so all show one order.

The session between two of our devices authenticates both as our identity, so a copy
is trusted as our own record; it carries the row, not the contact's signed envelope.

The payloads (bencoded, on a session between our own devices only):
``{t: "sync", m: [[id, peer, sender, direction, ts, lamport, type, text], ...], u: seq}``,
``{t: "synced", u: seq}``, and ``{t: "devices", c: [certificate, ...], r: [id, ...]}``:
what the sender knows of our devices (sent when the session comes up and after every
change), so a device linked on one reaches the others at once, not at the next read
of the DHT; and ``{t: "contacts", c: [[key, petname, flags, changed_ms, device], ...]}``:
the last change the sender knows of each contact (flags: 1 blocked, 2 verified, 4
removed), merged last-writer-wins; and ``{t: "read", p: contact, i: [id, ...]}``:
messages from that contact the sender marked read (at most 500); and ``{t: "profile",
n: name, s: status, a: avatar, c: changed_ms, d: device}``: our own profile as the
sender last knows it (empty strings for fields not set), last-writer-wins like a
contact; and ``{t: "channels", c: [[id, flags, changed_ms, device, chatfile, keys,
member list], ...]}``: the last join or leave the sender knows of each channel, with
what a device needs to join it (the ``.chat`` file, and for an invite-only channel the
generation secrets and the signed member list held), merged last-writer-wins.

Since 1.5 a ``sync`` batch may carry ``e: [envelope, ...]``: the signed envelopes of its
outgoing rows that the sender's outbox still holds (the contact has not acknowledged
them), so whichever of our devices runs offline delivery can leave them in the DHT
mailbox for a contact that is away; and ``{t: "state", p: contact, s: state, i: [id,
...]}`` says that the contact acknowledged those outgoing messages (``delivered`` or
``read``), so every device shows it and stops offering them. Also since 1.5, ``{t:
"names", n: [[device, name, changed_ms, by], ...]}``: the names we gave our devices
("laptop"), each a last-writer-wins register, so the device to revoke can be told
apart on every device. Since 1.6, ``{t: "received", c: [[contact, n], ...]}``: every
offline packet of that contact up to counter ``n`` reached the sender (through the DHT
mailbox, which each device reads since 1.6), so the receiver fetches none of them
again and its mailbox head never acknowledges less. Pure: rows in, bytes out, and back.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from btchat.codec.bencode import DecodeError, decode, encode
from btchat.identity.devices import MAX_DEVICES, MAX_REVOKED
from btchat.messaging.messages import MessageRow

__all__ = [
    "BATCH_BYTES",
    "BATCH_ROWS",
    "Batch",
    "ChannelChange",
    "ChannelsNote",
    "ContactChange",
    "ContactsNote",
    "DeviceName",
    "DevicesNote",
    "NamesNote",
    "ProfileChange",
    "ReadNote",
    "ReceivedNote",
    "StateNote",
    "SyncError",
    "decode_sync",
    "encode_batch",
    "encode_channels",
    "encode_contacts",
    "encode_devices",
    "encode_names",
    "encode_profile",
    "encode_read",
    "encode_received",
    "encode_state",
    "encode_synced",
]

#: Rows per batch, and about the most bytes of one (a session frame holds 64 KiB).
BATCH_ROWS = 200
BATCH_BYTES = 48 * 1024
_TEXT_MAX = 16 * 1024 * 4  # a stored text never exceeds this many UTF-8 bytes
#: A larger envelope is not carried, so one row and its envelope always fit a session
#: frame (a text is at most 16 KiB, an inline file's offer about 17 KiB).
CARRIED_MAX = 32 * 1024
_DIRECTIONS = {b"in", b"out"}


class SyncError(ValueError):
    """A sync payload that is malformed: dropped and counted, the session goes on."""


@dataclass(frozen=True)
class Batch:
    rows: list[MessageRow]
    upto: int
    #: Signed envelopes of outgoing rows still unacknowledged on the sender (1.5), not
    #: yet verified: the receiver checks each against our identity and its row.
    envelopes: tuple[bytes, ...] = ()


@dataclass(frozen=True)
class DevicesNote:
    """Our devices as another of them knows them: certificates still to verify."""

    certs: list[bytes]
    revoked: frozenset[bytes]


@dataclass(frozen=True, order=True)
class ContactChange:
    """The state one of our devices gave a contact, and when: a last-writer-wins
    register per contact. Later ``changed_ms`` wins; a tie goes to the higher device id,
    so every device picks the same winner."""

    changed_ms: int
    device: bytes
    pk: bytes
    name: str
    blocked: bool
    verified: bool
    removed: bool


@dataclass(frozen=True)
class ContactsNote:
    changes: list[ContactChange]


#: Contact changes per ``contacts`` payload (a longer book goes in several).
CONTACTS_PER_NOTE = 200
_NAME_MAX = 256


def encode_contacts(changes: list[ContactChange]) -> bytes:
    items = [
        [
            c.pk,
            c.name.encode(),
            int(c.blocked) | int(c.verified) << 1 | int(c.removed) << 2,
            c.changed_ms,
            c.device,
        ]
        for c in changes[:CONTACTS_PER_NOTE]
    ]
    return encode({b"t": b"contacts", b"c": items})


def _contact_change(item: object) -> ContactChange:
    if not isinstance(item, list) or len(item) != 5:
        raise SyncError("a contact change is a list of 5")
    pk, name, flags, changed, device = item
    if not (
        isinstance(pk, bytes)
        and len(pk) == 32
        and isinstance(name, bytes)
        and 1 <= len(name) <= _NAME_MAX
        and isinstance(flags, int)
        and 0 <= flags < 8
        and isinstance(changed, int)
        and 0 <= changed < 2**53
        and isinstance(device, bytes)
        and len(device) == 16
    ):
        raise SyncError("a contact change has a field of the wrong type or size")
    try:
        text = name.decode("utf-8")
    except UnicodeDecodeError:
        raise SyncError("a contact's petname is not UTF-8") from None
    return ContactChange(changed, device, pk, text, bool(flags & 1), bool(flags & 2),
                         bool(flags & 4))  # fmt: skip


@dataclass(frozen=True)
class ProfileChange:
    """Our own profile as one of our devices set it, and when: one last-writer-wins
    register (as :class:`ContactChange`), so an edit on any device reaches all and no
    device's republishing puts back an older name."""

    changed_ms: int
    device: bytes
    name: str | None
    status: str | None
    avatar: bytes | None


#: Longest name and status in a ``profile`` note (bytes; as a published profile).
PROFILE_NAME_MAX, PROFILE_STATUS_MAX = 256, 560


def encode_profile(change: ProfileChange) -> bytes:
    return encode({
        b"t": b"profile",
        b"n": (change.name or "").encode(),
        b"s": (change.status or "").encode(),
        b"a": change.avatar or b"",
        b"c": change.changed_ms,
        b"d": change.device,
    })  # fmt: skip


def _profile_change(value: dict[bytes, object]) -> ProfileChange:
    name, status, avatar = value.get(b"n"), value.get(b"s"), value.get(b"a")
    changed, device = value.get(b"c"), value.get(b"d")
    if not (
        isinstance(name, bytes)
        and len(name) <= PROFILE_NAME_MAX
        and isinstance(status, bytes)
        and len(status) <= PROFILE_STATUS_MAX
        and isinstance(avatar, bytes)
        and len(avatar) in (0, 32)
        and isinstance(changed, int)
        and 0 <= changed < 2**53
        and isinstance(device, bytes)
        and len(device) == 16
    ):
        raise SyncError("a profile note has a field of the wrong type or size")
    try:
        name_text, status_text = name.decode("utf-8"), status.decode("utf-8")
    except UnicodeDecodeError:
        raise SyncError("a profile note's name or status is not UTF-8") from None
    return ProfileChange(changed, device, name_text or None, status_text or None, avatar or None)


@dataclass(frozen=True)
class DeviceName:
    """What we call one of our devices, set on device ``by`` at ``changed_ms``: a
    last-writer-wins register per device (then the higher ``by`` on a tie)."""

    device: bytes
    name: str
    changed_ms: int
    by: bytes

    def stamp(self) -> tuple[int, bytes]:
        return (self.changed_ms, self.by)


@dataclass(frozen=True)
class NamesNote:
    names: list[DeviceName]


#: Names in one ``names`` note (our devices and those revoked), and a name's bytes.
NAMES_PER_NOTE = MAX_DEVICES + MAX_REVOKED
DEVICE_NAME_MAX = 128


def encode_names(names: list[DeviceName]) -> bytes:
    items = [[n.device, n.name.encode(), n.changed_ms, n.by] for n in names[:NAMES_PER_NOTE]]
    return encode({b"t": b"names", b"n": items})


def _names_note(value: dict[bytes, object]) -> NamesNote:
    items = value.get(b"n")
    if not isinstance(items, list) or len(items) > NAMES_PER_NOTE:
        raise SyncError(f"a names note holds a list of at most {NAMES_PER_NOTE} names")
    out = []
    for item in items:
        if not (
            isinstance(item, list)
            and len(item) == 4
            and isinstance(item[0], bytes)
            and len(item[0]) == 16
            and isinstance(item[1], bytes)
            and 0 < len(item[1]) <= DEVICE_NAME_MAX
            and isinstance(item[2], int)
            and 0 <= item[2] < 2**53
            and isinstance(item[3], bytes)
            and len(item[3]) == 16
        ):
            raise SyncError("a device name is [id (16), name (1-128 bytes), changed_ms, by (16)]")
        try:
            name = item[1].decode("utf-8")
        except UnicodeDecodeError:
            raise SyncError("a device name is not UTF-8") from None
        out.append(DeviceName(item[0], name, item[2], item[3]))
    return NamesNote(out)


@dataclass(frozen=True)
class ChannelChange:
    """Joined or left, as one of our devices last set it for a channel: a last-writer-wins
    register per channel id (``changed_ms``, then the higher device id on a tie), with
    what a device needs to join: the ``.chat`` file (empty for a channel left), and for an
    invite-only channel the generation secrets held (the owner grants none to itself) and
    the newest signed member list (empty if none)."""

    changed_ms: int
    device: bytes
    channel: bytes
    joined: bool
    chatfile: bytes = b""
    keys: tuple[tuple[int, bytes], ...] = ()
    member_list: bytes = b""

    @property
    def stamp(self) -> tuple[int, bytes]:
        """What orders two changes of one channel: the later wins, then the higher id."""
        return (self.changed_ms, self.device)


@dataclass(frozen=True)
class ChannelsNote:
    changes: list[ChannelChange]


#: Channel changes per ``channels`` payload, and about the most bytes of one (one entry
#: alone may be larger, up to a full ``.chat`` file and member list, and still fit a
#: session frame of 64 KiB).
CHANNELS_PER_NOTE = 64
CHANNELS_BYTES = 40 * 1024
#: Bounds of what an entry carries, as the channel formats bound them
#: (``channels/chatfile.py`` MAX_CHATFILE, ``channels/members.py`` MAX_MEMBER_LIST);
#: the newest CHANNEL_KEYS generation secrets are carried, older ones are not.
CHATFILE_MAX = 4096
MEMBER_LIST_MAX = 48 * 1024
CHANNEL_KEYS = 16
_GENERATION_MAX = 2**32 - 1


def _channel_item(c: ChannelChange) -> list[object]:
    keys = sorted(c.keys, reverse=True)[:CHANNEL_KEYS]
    return [c.channel, int(c.joined), c.changed_ms, c.device, c.chatfile,
            [[g, k] for g, k in keys], c.member_list]  # fmt: skip


def encode_channels(changes: list[ChannelChange]) -> list[bytes]:
    """``channels`` payloads for ``changes``: as many per payload as fit (at least one)."""
    out: list[bytes] = []
    items: list[list[object]] = []
    size = 0
    for change in changes:
        item = _channel_item(change)
        cost = len(encode(item))
        if items and (size + cost > CHANNELS_BYTES or len(items) >= CHANNELS_PER_NOTE):
            out.append(encode({b"t": b"channels", b"c": items}))
            items, size = [], 0
        items.append(item)
        size += cost
    if items:
        out.append(encode({b"t": b"channels", b"c": items}))
    return out


def _channel_change(item: object) -> ChannelChange:
    if not isinstance(item, list) or len(item) != 7:
        raise SyncError("a channel change is a list of 7")
    channel, flags, changed, device, chatfile, keys, members = item
    if not (
        isinstance(channel, bytes)
        and len(channel) == 32
        and flags in (0, 1)
        and isinstance(changed, int)
        and 0 <= changed < 2**53
        and isinstance(device, bytes)
        and len(device) == 16
        and isinstance(chatfile, bytes)
        and len(chatfile) <= CHATFILE_MAX
        and isinstance(keys, list)
        and len(keys) <= CHANNEL_KEYS
        and isinstance(members, bytes)
        and len(members) <= MEMBER_LIST_MAX
    ):
        raise SyncError("a channel change has a field of the wrong type or size")
    if bool(flags) != bool(chatfile):
        raise SyncError("a channel joined carries its .chat file, one left carries none")
    pairs: list[tuple[int, bytes]] = []
    for pair in keys:
        if not (
            isinstance(pair, list)
            and len(pair) == 2
            and isinstance(pair[0], int)
            and 0 <= pair[0] <= _GENERATION_MAX
            and isinstance(pair[1], bytes)
            and len(pair[1]) == 32
        ):
            raise SyncError("a channel key is [generation, 32 bytes]")
        pairs.append((pair[0], pair[1]))
    return ChannelChange(changed, device, channel, bool(flags), chatfile, tuple(pairs), members)


@dataclass(frozen=True)
class ReadNote:
    peer: bytes
    ids: list[bytes]


#: Ids per ``read`` payload (as a receipt carries).
READ_IDS = 500


def encode_read(peer: bytes, ids: list[bytes]) -> list[bytes]:
    """``read`` payloads for ``ids``, in pieces of 500."""
    return [
        encode({b"t": b"read", b"p": peer, b"i": ids[i : i + READ_IDS]})
        for i in range(0, len(ids), READ_IDS)
    ]


@dataclass(frozen=True)
class StateNote:
    """The contact acknowledged these outgoing messages: ``delivered`` or ``read``."""

    peer: bytes
    state: str
    ids: list[bytes]


#: The states a ``state`` note carries (forward only: sent < delivered < read).
NOTE_STATES = ("delivered", "read")


def encode_state(peer: bytes, state: str, ids: list[bytes]) -> list[bytes]:
    """``state`` payloads for ``ids``, in pieces of 500."""
    if state not in NOTE_STATES:
        raise ValueError(f"a state note says delivered or read, not {state!r}")
    return [
        encode({b"t": b"state", b"p": peer, b"s": state.encode(), b"i": ids[i : i + READ_IDS]})
        for i in range(0, len(ids), READ_IDS)
    ]


def _state_note(value: dict[bytes, object]) -> StateNote:
    peer, state, ids = value.get(b"p"), value.get(b"s"), value.get(b"i")
    if not (
        isinstance(peer, bytes)
        and len(peer) == 32
        and state in (b"delivered", b"read")
        and isinstance(ids, list)
        and len(ids) <= READ_IDS
        and all(isinstance(i, bytes) and len(i) == 16 for i in ids)
    ):
        raise SyncError("a state note is a 32-byte key, delivered or read, and 500 ids")
    assert isinstance(state, bytes)
    return StateNote(peer, state.decode(), ids)


@dataclass(frozen=True)
class ReceivedNote:
    """(contact, n): every offline packet of that contact up to ``n`` reached the sender."""

    counters: list[tuple[bytes, int]]


#: Contacts per ``received`` payload.
RECEIVED_PEERS = 200
_MAX_COUNTER = 2**53 - 1


def encode_received(counters: list[tuple[bytes, int]]) -> list[bytes]:
    """``received`` payloads for ``counters``, in pieces of 200."""
    items = [[peer, n] for peer, n in counters]
    return [
        encode({b"t": b"received", b"c": items[i : i + RECEIVED_PEERS]})
        for i in range(0, len(items), RECEIVED_PEERS)
    ]


def _received_note(value: dict[bytes, object]) -> ReceivedNote:
    items = value.get(b"c")
    if not isinstance(items, list) or len(items) > RECEIVED_PEERS:
        raise SyncError("a received note is a list of at most 200 counters")
    out = []
    for item in items:
        if not (
            isinstance(item, list)
            and len(item) == 2
            and isinstance(item[0], bytes)
            and len(item[0]) == 32
            and type(item[1]) is int
            and 0 <= item[1] <= _MAX_COUNTER
        ):
            raise SyncError("a received counter is [32-byte key, counter]")
        out.append((item[0], item[1]))
    return ReceivedNote(out)


def encode_devices(certs: list[bytes], revoked: frozenset[bytes]) -> bytes:
    return encode({b"t": b"devices", b"c": certs, b"r": sorted(revoked)})


def _row_item(row: MessageRow) -> list[object]:
    return [
        row.id,
        row.peer,
        row.sender,
        row.direction.encode(),
        row.ts_ms,
        row.lamport,
        row.type.encode(),
        (row.text or "").encode("utf-8", "replace"),
    ]


def encode_batch(
    rows: list[tuple[int, MessageRow]], envelopes: Mapping[bytes, bytes] | None = None
) -> tuple[bytes, int]:
    """A ``sync`` payload of the first rows that fit, and the last ``seq`` it covers.
    ``rows`` are (seq, row), oldest first; at least one row is always taken.
    ``envelopes`` (message id -> signed envelope) go with their outgoing rows (``e``)
    and count towards the batch's size."""
    items: list[list[object]] = []
    carried: list[bytes] = []
    size = 0
    upto = rows[0][0] if rows else 0
    for seq, row in rows[:BATCH_ROWS]:
        item = _row_item(row)
        env = (envelopes or {}).get(row.id) if row.direction == "out" else None
        if env is not None and len(env) > CARRIED_MAX:
            env = None
        cost = len(encode(item)) + (len(env) + 8 if env is not None else 0)
        if items and size + cost > BATCH_BYTES:
            break
        items.append(item)
        if env is not None:
            carried.append(env)
        size += cost
        upto = seq
    value: dict[bytes, object] = {b"t": b"sync", b"m": items, b"u": upto}
    if carried:
        value[b"e"] = carried
    return encode(value), upto


def encode_synced(upto: int) -> bytes:
    return encode({b"t": b"synced", b"u": upto})


def _row(item: object, now_ms: int) -> MessageRow:
    if not isinstance(item, list) or len(item) != 8:
        raise SyncError("a synced row is a list of 8")
    msg_id, peer, sender, direction, ts, lamport, kind, text = item
    if not (
        isinstance(msg_id, bytes)
        and len(msg_id) == 16
        and isinstance(peer, bytes)
        and len(peer) == 32
        and isinstance(sender, bytes)
        and len(sender) == 32
        and direction in _DIRECTIONS
        and isinstance(ts, int)
        and 0 <= ts < 2**53
        and isinstance(lamport, int)
        and 0 <= lamport < 2**53
        and isinstance(kind, bytes)
        and 1 <= len(kind) <= 32
        and isinstance(text, bytes)
        and len(text) <= _TEXT_MAX
    ):
        raise SyncError("a synced row has a field of the wrong type or size")
    try:
        kind_text, body = kind.decode("ascii"), text.decode("utf-8")
    except UnicodeDecodeError:
        raise SyncError("a synced row's type or text is not text") from None
    assert isinstance(direction, bytes)
    return MessageRow(
        msg_id, peer, sender, direction.decode(), ts, lamport, kind_text,
        body or None, "delivered" if direction == b"in" else "sent", now_ms,
    )  # fmt: skip


Payload = (
    Batch
    | int
    | DevicesNote
    | ContactsNote
    | ReadNote
    | ProfileChange
    | ChannelsNote
    | StateNote
    | NamesNote
    | ReceivedNote
)


def decode_sync(payload: bytes, now_ms: int) -> Payload:
    """A ``sync`` batch, the ``seq`` a ``synced`` acknowledges, or a note (``devices``,
    ``contacts``, ``read``, ``profile``, ``channels``, ``state``, ``names``,
    ``received``); SyncError
    else."""
    try:
        value = decode(payload)
    except DecodeError as exc:
        raise SyncError(f"not bencode: {exc}") from None
    if isinstance(value, dict) and value.get(b"t") == b"state":
        return _state_note(value)
    if isinstance(value, dict) and value.get(b"t") == b"received":
        return _received_note(value)
    if isinstance(value, dict) and value.get(b"t") == b"profile":
        return _profile_change(value)
    if isinstance(value, dict) and value.get(b"t") == b"names":
        return _names_note(value)
    if isinstance(value, dict) and value.get(b"t") == b"read":
        peer, ids = value.get(b"p"), value.get(b"i")
        if not (
            isinstance(peer, bytes)
            and len(peer) == 32
            and isinstance(ids, list)
            and len(ids) <= READ_IDS
            and all(isinstance(i, bytes) and len(i) == 16 for i in ids)
        ):
            raise SyncError("a read note is a 32-byte key and at most 500 16-byte ids")
        return ReadNote(peer, ids)
    if isinstance(value, dict) and value.get(b"t") == b"channels":
        items = value.get(b"c")
        if not isinstance(items, list) or len(items) > CHANNELS_PER_NOTE:
            raise SyncError("a channels note holds a list of at most 64 changes")
        return ChannelsNote([_channel_change(i) for i in items])
    if isinstance(value, dict) and value.get(b"t") == b"contacts":
        items = value.get(b"c")
        if not isinstance(items, list) or len(items) > CONTACTS_PER_NOTE:
            raise SyncError("a contacts note holds a list of at most 200 changes")
        return ContactsNote([_contact_change(i) for i in items])
    if isinstance(value, dict) and value.get(b"t") == b"devices":
        certs, revoked = value.get(b"c"), value.get(b"r")
        if not (isinstance(certs, list) and isinstance(revoked, list)):
            raise SyncError("a devices note has lists c and r")
        return DevicesNote(
            [c for c in certs[:MAX_DEVICES] if isinstance(c, bytes)],
            frozenset(r for r in revoked[:MAX_REVOKED] if isinstance(r, bytes) and len(r) == 16),
        )
    if not isinstance(value, dict) or not isinstance(value.get(b"u"), int):
        raise SyncError("a sync payload is a dictionary with an integer u")
    upto = value[b"u"]
    if value.get(b"t") == b"synced":
        return upto
    rows = value.get(b"m")
    if value.get(b"t") != b"sync" or not isinstance(rows, list) or len(rows) > BATCH_ROWS:
        raise SyncError("a sync batch holds a list of at most 200 rows")
    envelopes = value.get(b"e", [])
    if not (
        isinstance(envelopes, list)
        and len(envelopes) <= len(rows)
        and all(isinstance(e, bytes) and 0 < len(e) <= CARRIED_MAX for e in envelopes)
    ):
        raise SyncError("a sync batch's envelopes are at most one byte string per row")
    return Batch([_row(item, now_ms) for item in rows], upto, tuple(envelopes))

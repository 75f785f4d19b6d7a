"""One joined channel, sans I/O: what to say on each member link, what to show.

The runtime (:mod:`btchat.channels.service`) opens links, passes what arrives on them
to :meth:`ChannelEngine.on_payload` with the current time, and drives the engine the
way every core is driven (:mod:`btchat.sansio`): ``handle_timer(now)`` at ``get_timer()``,
then ``next_event()`` until ``None``; a payload for a member comes out as a :class:`Send`
event. Everything a channel does happens here:

* **Messages** are signed by their author and encrypted for the channel (or for chosen
  members); stored once by id whatever path delivered them; shown in Lamport order.
* **Relaying**: each member forwards a new message to the linked members that, as far
  as the link sets they advertise show, neither the author nor the member it came from
  reaches directly. So a full mesh costs one copy per member, and a member that
  reaches a single other member still gets everything. A periodic exchange of recent
  ids repairs whatever stale link sets made anyone miss.
* **History**: a new link starts with each side's recent ids; each sends the other what
  it lacks (up to the channel's ``history`` option), so a late joiner catches up.
* **Peer exchange**: links carry the addresses of the members each side is linked to;
  the runtime dials those it is not linked with, so the channel converges to a mesh.
* **Invite-only**: only keys on the owner-signed member list may link or author; the
  owner's changes are gossiped; removing a member moves the channel to a new key
  generation whose secret is granted (sealed) to the remaining members only.
* **Several devices of one member**: links are keyed by *link key*, the member's
  identity followed by the device id its ``hello`` names (``dev``), so each of a
  person's devices holds its own links (to the others' devices and to its own
  siblings) while membership, presence and authorship stay the identity's. A member
  that names no device (before it knew how) is one link per identity, as before.
  The device that posts a message says so (``o`` in the ``msg`` frame), so relaying
  can tell which of the author's devices already sent it where.
"""

from __future__ import annotations

import contextlib
import ipaddress
import logging
import random
from collections import Counter, deque
from dataclasses import dataclass, field
from typing import Any

from btchat.channels.chatfile import ChatFile
from btchat.channels.keys import (
    ChannelKeyError,
    new_generation_key,
    open_generation_key,
    seal_generation_key,
)
from btchat.channels.members import MemberList, MemberListError
from btchat.channels.messages import (
    FILE,
    PRESENCE,
    TEXT,
    ChannelMessage,
    MessageError,
    file_of,
    open_content,
    seal_message,
    text_of,
)
from btchat.channels.quota import AuthorWindows, ChannelQuota
from btchat.channels.store import ChannelStore, StoredMessage
from btchat.codec.bencode import DecodeError, decode, encode
from btchat.errors import StorageFault
from btchat.identity.keys import Identity
from btchat.transfer.manifest import Manifest

__all__ = [
    "ANTI_ENTROPY_INTERVAL",
    "PRESENCE_INTERVAL",
    "ChannelEngine",
    "Dial",
    "Drop",
    "NotAMember",
    "Removed",
    "Send",
    "Shown",
]

log = logging.getLogger(__name__)

PRESENCE_INTERVAL = 60.0
#: A member heard from (directly or relayed) within this is shown online.
PRESENCE_WINDOW = 2.5 * PRESENCE_INTERVAL
ANTI_ENTROPY_INTERVAL = 30.0
#: Link-set changes are announced at most this often.
LINKS_DEBOUNCE = 1.0
#: Recent ids exchanged by anti-entropy (history sync uses the channel's option).
ANTI_ENTROPY_IDS = 64
#: Anti-entropy leaves out messages younger than this (normal delivery is under way).
ENTROPY_GRACE = 5.0
MAX_PAYLOAD = 65000
MAX_PEX = 200
#: Link keys read from one member's link set (``links``, ``ll``).
MAX_LINK_SET = 1000
#: The presence status a member sends as it leaves or shuts down.
OFFLINE = b"offline"
#: Member addresses we remember (learned from links and peer exchange). In an open
#: channel any key counts as a member, so this bounds what one member can make us keep.
MAX_KNOWN_ADDRS = 1024
#: A device id, as a link key's tail (``identity/keys.py`` device certificates).
DEVICE_ID_LEN = 16


def identity_of(link: bytes) -> bytes:
    """The member a link key belongs to: its first 32 bytes (identity, then device)."""
    return link[:32]


def _link_key(value: object) -> bytes | None:
    """A link key from the wire: an identity, or an identity and a device id."""
    if type(value) is bytes and len(value) in (32, 32 + DEVICE_ID_LEN):
        return value
    return None


def pex_address(ip: bytes, port: int) -> tuple[str, int] | None:
    """A peer-exchange address we may dial: an IP literal (never a host name, which
    would make us resolve what a stranger chose) that is unicast and not unspecified."""
    try:
        parsed = ipaddress.ip_address(ip.decode("ascii"))
    except (UnicodeDecodeError, ValueError):
        return None
    if parsed.is_multicast or parsed.is_unspecified or not 0 < port < 65536:
        return None
    if isinstance(parsed, ipaddress.IPv4Address) and parsed == ipaddress.IPv4Address(
        "255.255.255.255"
    ):
        return None
    return (str(parsed), port)


@dataclass(frozen=True)
class Shown:
    """A message this member can read arrived (or was sent) and was stored."""

    message: StoredMessage


@dataclass(frozen=True)
class Dial:
    """A member's address learned by peer exchange."""

    addr: tuple[str, int]
    member: bytes


@dataclass(frozen=True)
class Drop:
    """Close the link to ``member``: no longer on the member list."""

    member: bytes
    reason: str


class NotAMember(ValueError):
    """We may not post: the owner's member list no longer holds us."""


@dataclass(frozen=True)
class Removed:
    """We were removed from this invite-only channel."""


@dataclass(frozen=True)
class Send:
    """Send ``payload`` on the link to ``member`` (dropped if that link is gone)."""

    member: bytes
    payload: bytes


#: What the runtime shows or acts on; :class:`Send` is the engine's other output.
Event = Shown | Dial | Drop | Removed


@dataclass
class _Link:
    addr: tuple[str, int] | None  # the member's listening address, once known
    links: frozenset[bytes] = frozenset()  # whom it says it is linked to (link keys)
    #: It lists its links by device (``ll``); else by identity only (an older member).
    devices: bool = False


@dataclass
class _Presence:
    last_heard: dict[bytes, float] = field(default_factory=dict)
    status: dict[bytes, str] = field(default_factory=dict)


class ChannelEngine:
    def __init__(
        self,
        chat: ChatFile,
        identity: Identity,
        store: ChannelStore,
        *,
        listen_port: int,
        now: float,
        quota: ChannelQuota | None = None,
        device_id: bytes | None = None,
    ) -> None:
        if device_id is not None and len(device_id) != DEVICE_ID_LEN:
            raise ValueError(f"a device id is {DEVICE_ID_LEN} bytes")
        self.chat = chat
        self.identity = identity
        self.me = identity.public_key
        #: This device (None: one link per identity, and none with our other devices).
        self.device_id = device_id
        #: Our own link key, as the others key their link with us.
        self.link_id = self.me + device_id if device_id is not None else self.me
        self.id = chat.channel_id
        self.store = store
        self.listen_port = listen_port
        self.stats: Counter[str] = Counter()
        self.links: dict[bytes, _Link] = {}
        self.presence = _Presence()
        #: What one member can make us store, relay and remember (:mod:`.quota`).
        self.quota = quota if quota is not None else ChannelQuota()
        self._windows = AuthorWindows(self.quota)
        self._usage = list(store.usage(self.id))  # [messages, wire bytes] stored
        self._out: deque[Send] = deque()
        self._events: deque[Event] = deque()
        # Timers are jittered so members that started together do not all fire at once.
        self._rng = random.Random()
        self._next_presence = now + self._rng.uniform(0, 5)
        self._next_entropy = now + ANTI_ENTROPY_INTERVAL * self._rng.uniform(0.5, 1.5)
        self._recent: dict[int, list[StoredMessage]] = {}  # limit -> newest messages
        self._known_addrs: dict[bytes, tuple[str, int]] = {}
        self._seen_presence: set[bytes] = set()
        self._links_dirty = False
        self._next_links = now
        row = store.channel(self.id)
        self.members: MemberList | None = None
        if row is not None and row.member_list:
            try:
                self.members = MemberList.from_bytes(row.member_list)
            except MemberListError:
                self.members = None

    # -------------------------------------------------------------- plumbing

    def next_event(self) -> Send | Event | None:
        """The oldest output not yet taken: every queued payload before the other events
        (so a member being dropped still gets what was queued for it first)."""
        if self._out:
            return self._out.popleft()
        if self._events:
            return self._events.popleft()
        return None

    def _send(self, peer: bytes, payload: dict[bytes, Any]) -> None:
        self._send_encoded(peer, encode(payload))

    def _send_encoded(self, peer: bytes, data: bytes) -> None:
        if len(data) > MAX_PAYLOAD:
            log.warning("channel payload of %d bytes not sent", len(data))
            return
        self._out.append(Send(peer, data))

    def _broadcast(self, payload: dict[bytes, Any], *, exclude: set[bytes] | None = None) -> None:
        for peer in self.links:
            if not exclude or peer not in exclude:
                self._send(peer, payload)

    @property
    def invite_only(self) -> bool:
        return self.chat.invite_only

    # -------------------------------------------------------------- keys

    def _generation(self) -> int:
        if not self.invite_only:
            return 0
        keys = self.store.keys(self.id)
        return max(keys) if keys else -1

    def _traffic_key(self, generation: int) -> bytes | None:
        if not self.invite_only:
            return self.chat.keys.traffic_key(generation)
        secret = self.store.keys(self.id).get(generation)
        return self.chat.keys.traffic_key(generation, secret) if secret is not None else None

    # -------------------------------------------------------------- admission

    def authorize(self, member: bytes) -> bool:
        """May this identity (which proved the channel secret) link with us?"""
        if member == self.me:
            # Another of our devices (only ours can prove our identity), if we tell
            # devices apart; ourselves, dialled through our own address, shows at
            # ``link_key`` and is dropped there.
            return self.device_id is not None
        if not self.invite_only:
            return True
        if self.members is None:
            # A new invitee has no list yet: it learns it from the first member.
            return True
        return member in self.members

    def may_author(self, member: bytes) -> bool:
        return not self.invite_only or self.members is None or member in self.members

    @property
    def removed(self) -> bool:
        """The owner's member list no longer holds us: nobody would take what we post."""
        return not self.may_author(self.me)

    # -------------------------------------------------------------- links

    def hello(self, exclude: bytes | None = None) -> bytes:
        """Our first DATA frame on a link (the runtime sends it as the link comes up,
        before it knows which device of the member it reached)."""
        hello: dict[bytes, Any] = {
            b"t": b"hello",
            b"port": self.listen_port,
            b"have": [m.id for m in self._recent_messages(self.chat.history)],
            **self._link_set(exclude),
        }
        if self.device_id is not None:
            hello[b"dev"] = self.device_id
        if self.members is not None and self.members.signature is not None:
            hello[b"ml"] = self.members.to_bytes()
        return encode(hello)

    def link_key(self, identity: bytes, first: bytes) -> bytes:
        """The key of a new link to ``identity`` whose first DATA frame is ``first``
        (its ``hello``): the identity and the device it names, if we tell devices apart
        and it names one; else the identity. Equal to :attr:`link_id` for a link to
        ourselves, which the runtime drops."""
        if self.device_id is None:
            return identity
        try:
            hello = decode(first, max_depth=4, max_size=MAX_PAYLOAD)
        except DecodeError:
            return identity
        dev = hello.get(b"dev") if type(hello) is dict else None
        if type(dev) is bytes and len(dev) == DEVICE_ID_LEN:
            return identity + dev
        # Our own identity naming no device is ourselves or a device too old to link
        # with us (it refuses our identity): either way not a link to keep.
        return self.link_id if identity == self.me else identity

    def link_up(self, peer: bytes, remote_ip: str, now: float, *, greeted: bool = False) -> None:
        """A link to ``peer`` (a link key) is up; ``greeted``: our hello went already."""
        self.links[peer] = _Link(addr=(remote_ip, 0))
        self._heard(identity_of(peer), now)
        if not greeted:
            self._send_encoded(peer, self.hello(exclude=peer))
        member = identity_of(peer)
        for recipient, generation, sealed in self.store.grants(self.id):
            if recipient == member:
                self._send(peer, {b"t": b"grant", b"to": recipient, b"g": generation, b"x": sealed})
        self._links_changed(exclude=peer)

    def link_down(self, peer: bytes) -> None:
        if self.links.pop(peer, None) is not None:
            self._links_changed()

    def _linked(self) -> set[bytes]:
        """The identities we hold a link with (any of their devices)."""
        return {identity_of(k) for k in self.links}

    def _link_set(self, exclude: bytes | None) -> dict[bytes, Any]:
        """What we tell a member of our links: ``links`` (identities, as every version
        reads), ``ll`` (link keys, by device), ``pex`` addresses with ``pd`` (the device
        of each, or empty) beside them."""
        pex, pd = self._pex(exclude)
        return {
            b"links": sorted(self._linked()),
            b"ll": sorted(self.links)[:MAX_LINK_SET],
            b"pex": pex,
            b"pd": pd,
        }

    def _pex(self, exclude: bytes | None) -> tuple[list[list[Any]], list[bytes]]:
        out, devices = [], []
        for key, link in self.links.items():
            if key != exclude and link.addr is not None and link.addr[1]:
                out.append([link.addr[0].encode(), link.addr[1], identity_of(key)])
                devices.append(key[32:])
        return out[:MAX_PEX], devices[:MAX_PEX]

    def _links_changed(self, exclude: bytes | None = None) -> None:
        """Tell linked members our link set changed, at most once per LINKS_DEBOUNCE:
        while a mesh forms, every member gains a link per member, and telling everyone
        each time would cost the cube of the channel's size."""
        self._links_dirty = True

    def _announce_links(self, now: float) -> None:
        self._links_dirty = False
        self._next_links = now + LINKS_DEBOUNCE
        for peer in self.links:
            self._send(peer, {b"t": b"links", **self._link_set(exclude=peer)})

    def known_addresses(self) -> dict[bytes, tuple[str, int]]:
        return dict(self._known_addrs)

    # -------------------------------------------------------------- input

    def on_payload(self, peer: bytes, data: bytes, now: float) -> None:
        if peer not in self.links:
            return
        try:
            payload = decode(data, max_depth=4, max_size=MAX_PAYLOAD)
            if type(payload) is not dict or type(payload.get(b"t")) is not bytes:
                raise DecodeError("not a typed dictionary")
        except DecodeError as exc:
            self.stats["malformed"] += 1
            log.warning("malformed channel payload from %s: %s", peer.hex()[:16], exc)
            return
        self._heard(identity_of(peer), now)
        kind = payload[b"t"]
        handler = {
            b"hello": self._on_hello,
            b"links": self._on_links,
            b"msg": self._on_msg,
            b"have": self._on_have,
            b"ml": self._on_member_list,
            b"grant": self._on_grant,
        }.get(kind)
        if handler is None:
            self.stats["unknown"] += 1
            return
        try:
            handler(peer, payload, now)
        except StorageFault as exc:
            # A full disk: not stored, so not relayed either; anti-entropy and the next
            # link's history sync bring it again once there is room. The record carries
            # the fault so the daemon's log filter turns a flood of these into one line.
            self.stats["not_stored"] += 1
            log.warning("channel %s: %r not stored", self.id.hex()[:8], kind, exc_info=exc)
        except (TypeError, ValueError, KeyError, AttributeError) as exc:
            self.stats["malformed"] += 1
            log.warning("bad %r from %s: %s", kind, peer.hex()[:16], exc)

    def _on_hello(self, peer: bytes, p: dict[bytes, Any], now: float) -> None:
        port = p.get(b"port")
        link = self.links[peer]
        if type(port) is int and 0 < port < 65536 and link.addr is not None:
            link.addr = (link.addr[0], port)
            self._known_addrs[peer] = link.addr
        if b"ml" in p:
            self._on_member_list(peer, {b"ml": p[b"ml"]}, now)
        self._on_links(peer, p, now)
        self._on_have(peer, {b"ids": p.get(b"have", [])}, now, limit=self.chat.history)
        self._links_changed(exclude=peer)  # others learn this member's address

    def _on_links(self, peer: bytes, p: dict[bytes, Any], now: float) -> None:
        link = self.links[peer]
        by_device, links = p.get(b"ll"), p.get(b"links", [])
        if type(by_device) is list:
            link.links = frozenset(k for k in map(_link_key, by_device[:MAX_LINK_SET]) if k)
            link.devices = True
        elif type(links) is list:
            link.links = frozenset(
                k for k in links[:MAX_LINK_SET] if type(k) is bytes and len(k) == 32
            )
        devices = p.get(b"pd")
        if type(devices) is not list:
            devices = []
        for n, entry in enumerate(p.get(b"pex", [])[:MAX_PEX]):
            if type(entry) is not list or len(entry) != 3:
                continue
            ip, port, member = entry
            dev = devices[n] if n < len(devices) else b""
            if not (
                type(ip) is bytes
                and type(port) is int
                and 0 < port < 65536
                and type(member) is bytes
                and len(member) == 32
            ):
                continue
            key = member + dev if type(dev) is bytes and len(dev) == DEVICE_ID_LEN else member
            if key == self.link_id or member == key == self.me or not self.authorize(member):
                continue  # ourselves (or our device, named without its id)
            member = key
            addr = pex_address(ip, port)
            if addr is None:
                self.stats["pex_refused_address"] += 1
                continue
            if member not in self._known_addrs and len(self._known_addrs) >= MAX_KNOWN_ADDRS:
                self.stats["pex_known_full"] += 1
                continue
            self._known_addrs[member] = addr
            if member not in self.links:
                self._events.append(Dial(addr, member))

    def _on_have(
        self, peer: bytes, p: dict[bytes, Any], now: float, *, limit: int = ANTI_ENTROPY_IDS
    ) -> None:
        ids = p.get(b"ids", [])
        if type(ids) is not list:
            return
        theirs = {i for i in ids[:10_000] if type(i) is bytes}
        # Repair, not race: a message younger than this may still be on its way to them.
        fresh_ms = (now - ENTROPY_GRACE) * 1000 if limit == ANTI_ENTROPY_IDS else None
        for msg in self._recent_messages(limit):
            if fresh_ms is not None and msg.ts_ms > fresh_ms:
                continue
            if msg.id not in theirs and self._for_peer(msg, identity_of(peer)):
                self.stats["history_sent"] += 1
                self._send(peer, {b"t": b"msg", b"m": msg.wire})

    def _recent_messages(self, limit: int) -> list[StoredMessage]:
        """The newest messages, read once per change rather than once per link."""
        cached = self._recent.get(limit)
        if cached is None:
            cached = self._recent[limit] = self.store.recent(self.id, limit)
        return cached

    def _for_peer(self, msg: StoredMessage, peer: bytes) -> bool:
        return not self.invite_only or self.members is None or peer in self.members

    def _on_msg(self, peer: bytes, p: dict[bytes, Any], now: float) -> None:
        wire = p.get(b"m")
        if type(wire) is not bytes:
            raise ValueError("msg without bytes")
        self.receive_wire(wire, now, via=peer, origin=_link_key(p.get(b"o")))

    def receive_wire(
        self, wire: bytes, now: float, *, via: bytes | None, origin: bytes | None = None
    ) -> bool:
        """Verify, store once, show, relay. True if it was new. ``origin``: the link key
        of the device that posted it, as the frame says (ignored unless the author's)."""
        try:
            msg = ChannelMessage.parse(wire, self.id)
        except MessageError as exc:
            self.stats["refused"] += 1
            log.warning("channel message refused: %s", exc)
            return False
        if not self.may_author(msg.author):
            self.stats["refused_author"] += 1
            log.warning("channel message from a non-member %s refused", msg.author.hex()[:16])
            return False
        if origin is not None and identity_of(origin) != msg.author:
            origin = None  # a hint of someone else's device: not taken
        if msg.kind == PRESENCE:
            return self._on_presence(msg, wire, now, via, origin)
        if self.store.has_message(self.id, msg.id):
            self.stats["duplicates"] += 1
            return False
        if not self._admit(msg.author, len(wire), presence=False, now=now):
            return False
        self._heard(msg.author, now)
        text, manifest = self._read(msg)
        stored = self._stored(msg, wire, text, manifest)
        if not self.store.save_message(stored, int(now * 1000)):
            self.stats["duplicates"] += 1
            return False
        self._account(msg.author, len(wire))
        self._recent.clear()
        self.store.next_lamport(self.id, msg.lamport)
        self.stats["received"] += 1
        if text is not None:
            self._events.append(Shown(stored))
        self._relay(msg, wire, via, origin)
        return True

    # -------------------------------------------------------------- quotas

    def _admit(self, author: bytes, size: int, *, presence: bool, now: float) -> bool:
        """Within the author's window? Refused ones are counted (and logged once)."""
        why = self._windows.admit(author, size, presence=presence, now=now)
        if why is None:
            return True
        self.stats[f"quota_author_{why}"] += 1
        if self._windows.first_refusal(author):
            log.warning(
                "channel %s: %s is over its %s quota; its messages are dropped for now",
                self.id.hex()[:8],
                author.hex()[:16],
                why,
            )
        return False

    def _account(self, author: bytes, size: int) -> None:
        """A message was stored: evict the oldest past the author's and the channel's caps."""
        q = self.quota
        self._usage[0] += 1
        self._usage[1] += size
        over = self.store.author_count(self.id, author) - q.author_stored
        if over > 0:
            n, freed = self.store.evict_oldest(self.id, count=over, author=author)
            self._usage[0] -= n
            self._usage[1] -= freed
            self.stats["evicted_author"] += n
        over_n, over_b = self._usage[0] - q.channel_messages, self._usage[1] - q.channel_bytes
        if over_n > 0 or over_b > 0:
            n, freed = self.store.evict_oldest(self.id, count=max(over_n, 0), size=max(over_b, 0))
            self._usage[0] -= n
            self._usage[1] -= freed
            self.stats["evicted_channel"] += n

    def stored_usage(self) -> tuple[int, int]:
        """Messages and wire bytes stored for this channel (kept under the caps)."""
        return self._usage[0], self._usage[1]

    def _heard(self, member: bytes, now: float) -> None:
        """Note news of ``member``; the table is bounded (expired, then longest silent)."""
        heard = self.presence.last_heard
        if member not in heard and len(heard) >= self.quota.presence_entries:
            self._expire_presence(now)
            if len(heard) >= self.quota.presence_entries:
                linked = self._linked()
                unlinked = (k for k in heard if k not in linked)
                victim = min(unlinked, key=heard.__getitem__, default=None)
                if victim is None:
                    self.stats["presence_refused"] += 1
                    return
                self._forget(victim)
                self.stats["presence_evicted"] += 1
        heard[member] = now

    def _forget(self, member: bytes) -> None:
        self.presence.last_heard.pop(member, None)
        self.presence.status.pop(member, None)

    def _expire_presence(self, now: float) -> None:
        horizon = now - self.quota.presence_expiry
        linked = self._linked()
        for key, when in list(self.presence.last_heard.items()):
            if when < horizon and key not in linked:
                self._forget(key)
                self.stats["presence_expired"] += 1

    def _stored(
        self, msg: ChannelMessage, wire: bytes, text: str | None, manifest: Manifest | None = None
    ) -> StoredMessage:
        return StoredMessage(
            self.id,
            msg.id,
            msg.author,
            msg.lamport,
            msg.ts_ms,
            msg.private,
            text,
            tuple(k for k, _ in msg.recipients),
            wire,
            manifest,
        )

    def _read(self, msg: ChannelMessage) -> tuple[str | None, Manifest | None]:
        """What we show of ``msg`` (a file: its name) and a file message's manifest."""
        try:
            body = open_content(msg, self.identity, self._traffic_key(msg.generation))
            if body is None:
                return None, None
            if msg.kind == FILE:
                manifest = file_of(body)
                return manifest.name, manifest
            return (text_of(body) if msg.kind == TEXT else None), None
        except MessageError as exc:
            self.stats["undecryptable"] += 1
            log.warning("channel message %s unreadable: %s", msg.id.hex()[:8], exc)
            return None, None

    def _relay(
        self, msg: ChannelMessage, wire: bytes, via: bytes | None, origin: bytes | None
    ) -> None:
        frame: dict[bytes, Any] = {b"t": b"msg", b"m": wire}
        if origin is not None:
            frame[b"o"] = origin
        for peer, link in self.links.items():
            if peer == via:
                continue
            if origin is not None:
                # The posting device sent it to every device it is linked to; the
                # author's other devices are members like any other.
                if peer == origin or self._reaches(link, origin):
                    continue
            elif identity_of(peer) == msg.author or self._reaches_member(link, msg.author):
                continue  # no device named: the author reaches it directly, as before
            if via is not None and self._reaches(link, via):
                continue  # the member we got it from reaches it directly
            self.stats["relayed"] += 1
            self._send(peer, frame)

    def _reaches(self, link: _Link, key: bytes) -> bool:
        """Does this member say it is linked to ``key`` (a link key)? One that lists
        identities only is taken at its word for any device of that identity but ours:
        it keeps one link per identity, and to ours that is the link with us."""
        if key in link.links:
            return True
        if link.devices or (identity_of(key) == self.me and key != self.link_id):
            return False
        return identity_of(key) in link.links

    def _reaches_member(self, link: _Link, member: bytes) -> bool:
        """Does this member say it is linked to any device of ``member`` (ours apart)?"""
        if not link.devices:
            return member in link.links and member != self.me
        return any(identity_of(k) == member and k != self.link_id for k in link.links)

    def _on_presence(
        self,
        msg: ChannelMessage,
        wire: bytes,
        now: float,
        via: bytes | None,
        origin: bytes | None = None,
    ) -> bool:
        if msg.id in self._seen_presence:
            return False
        if not self._admit(msg.author, len(wire), presence=True, now=now):
            return False
        if len(self._seen_presence) > 10_000:
            self._seen_presence.clear()
        self._seen_presence.add(msg.id)
        body = None
        with contextlib.suppress(MessageError):
            body = open_content(msg, self.identity, self._traffic_key(msg.generation))
        status = body.get(b"s") if body else None
        if status == OFFLINE:  # leaving or shutting down: not "online" for minutes more
            self._forget(msg.author)
        else:
            self._heard(msg.author, now)
            known = msg.author in self.presence.last_heard  # not if the table refused it
            if known and type(status) is bytes and len(status) <= 16:
                self.presence.status[msg.author] = status.decode("ascii", "replace")
        self._relay(msg, wire, via, origin)
        return True

    # -------------------------------------------------------------- invite-only

    def offer_member_list(self, data: bytes, now: float) -> None:
        """A member list another of our devices holds: adopted if it is newer and
        verifies, as one a member sends."""
        self._on_member_list(None, {b"ml": data}, now)

    def _on_member_list(self, peer: bytes | None, p: dict[bytes, Any], now: float) -> None:
        if not self.invite_only or self.chat.owner is None:
            return
        data = p.get(b"ml")
        if type(data) is not bytes:
            raise ValueError("member list without bytes")
        try:
            new = MemberList.from_bytes(data)
            if self.members is not None and new.version <= self.members.version:
                return  # old news
            previous = self.members if self.members is not None else None
            if previous is not None and new.version != previous.version + 1:
                # We missed lists in between: only an owner-signed list may skip ahead.
                previous = None
            new.verify(previous, channel_id=self.id, owner=self.chat.owner)
        except MemberListError as exc:
            self.stats["member_list_refused"] += 1
            log.warning("member list from %s refused: %s", peer.hex()[:16] if peer else "us", exc)
            return
        self._adopt(new, exclude=peer)

    def _adopt(self, new: MemberList, *, exclude: bytes | None = None) -> None:
        self.members = new
        self.store.set_member_list(self.id, new.to_bytes())
        self._broadcast(
            {b"t": b"ml", b"ml": new.to_bytes()}, exclude={exclude} if exclude else set()
        )
        if self.me not in new:
            self._events.append(Removed())
            return
        for peer in list(self.links):
            if identity_of(peer) not in new:
                self._events.append(Drop(peer, "removed from the channel"))

    def _on_grant(self, peer: bytes, p: dict[bytes, Any], now: float) -> None:
        to, generation, sealed = p.get(b"to"), p.get(b"g"), p.get(b"x")
        if not (type(to) is bytes and type(generation) is int and type(sealed) is bytes):
            raise ValueError("grant malformed")
        if not self.store.save_grant(self.id, to, generation, sealed):
            return  # known: already handled and forwarded
        grant = {b"t": b"grant", b"to": to, b"g": generation, b"x": sealed}
        if to == self.me:
            self._open_grant(sealed)
        # Every device of the recipient we are linked to (ours too: sealed to the
        # identity, any of its devices opens it); if none, everyone else.
        devices = [k for k in self.links if identity_of(k) == to and k != peer]
        for key in devices:
            self._send(key, grant)
        if not devices and to != self.me:
            self._broadcast(grant, exclude={peer})

    def _open_grant(self, sealed: bytes) -> None:
        if self.members is None:
            return
        try:
            grant = open_generation_key(
                self.identity, sealed, channel_id=self.id, issuers=self.members.key_issuers
            )
        except ChannelKeyError as exc:
            self.stats["grant_refused"] += 1
            log.warning("generation key grant refused: %s", exc)
            return
        self.store.save_key(self.id, grant.generation, grant.key)
        self.keys_added({grant.generation})

    def keys_added(self, generations: set[int]) -> None:
        """Generation secrets were stored (a grant, or from another of our devices):
        messages of those generations that arrived before them can be read now."""
        for msg in self.store.unreadable(self.id):
            parsed = ChannelMessage.parse(msg.wire, self.id)
            if parsed.generation in generations:
                text, manifest = self._read(parsed)
                if text is not None:
                    self.store.set_text(self.id, msg.id, text, manifest)
                    self._recent.clear()
                    shown = {**msg.__dict__, "text": text, "file": manifest}
                    self._events.append(Shown(StoredMessage(**shown)))

    def start_invite_only(self, now: float) -> None:
        """The owner's first list and generation 0, when the channel is created."""
        members = MemberList.create(self.id, self.me, now=now).sign(self.identity)
        self.members = members
        self.store.set_member_list(self.id, members.to_bytes())
        key = new_generation_key()
        self.store.save_key(self.id, 0, key)

    def change_members(
        self, *, add: list[bytes] | None = None, remove: list[bytes] | None = None, now: float
    ) -> MemberList:
        """Owner/admin: sign the next member list; on removal, a new generation granted
        to the remaining members only."""
        if self.members is None:
            raise MemberListError("unsigned", "no member list yet")
        add, remove = add or [], remove or []
        new = self.members.apply(add=add, remove=remove, now=now).sign(self.identity)
        new.verify(self.members, channel_id=self.id, owner=self.chat.owner or self.me)
        keys = self.store.keys(self.id)
        if new.generation not in keys:
            keys[new.generation] = new_generation_key()
            self.store.save_key(self.id, new.generation, keys[new.generation])
        self._adopt(new)
        recipients = new.keys - {self.me} if remove else set(add)
        for member in sorted(recipients):
            sealed = seal_generation_key(
                self.identity,
                member,
                channel_id=self.id,
                generation=new.generation,
                key=keys[new.generation],
                member_list_version=new.version,
            )
            self.store.save_grant(self.id, member, new.generation, sealed)
            grant = {b"t": b"grant", b"to": member, b"g": new.generation, b"x": sealed}
            self._broadcast(grant)
        return new

    # -------------------------------------------------------------- output

    def post(self, text: str, now: float, *, to: list[bytes] | None = None) -> StoredMessage:
        """Author a message: to everyone, or privately to ``to`` (members).

        Raises :class:`NotAMember` once the owner has removed us, :class:`ValueError`
        while we hold no key yet."""
        return self._author(TEXT, {b"t": text.encode()}, text, None, now, to)

    def post_file(self, manifest: Manifest, now: float) -> StoredMessage:
        """Offer a file to the whole channel (its bytes then travel over the links'
        transfer substreams, from any member holding them: ``node/channel_files.py``)."""
        return self._author(FILE, manifest.body(), manifest.name, manifest, now, None)

    def _author(
        self,
        kind: bytes,
        body: dict[bytes, Any],
        text: str,
        manifest: Manifest | None,
        now: float,
        to: list[bytes] | None,
    ) -> StoredMessage:
        if self.removed:
            raise NotAMember("the owner removed you from this channel: nobody would read it")
        generation = self._generation()
        key = self._traffic_key(generation) if generation >= 0 else None
        if not to and key is None:
            raise ValueError("no key for this channel yet (waiting for the owner's grant)")
        msg = seal_message(
            self.identity,
            self.id,
            kind=kind,
            body=body,
            lamport=self.store.next_lamport(self.id, None),
            now=now,
            generation=max(generation, 0),
            traffic_key=key,
            recipients=to,
        )
        wire = msg.encode()
        stored = self._stored(msg, wire, text, manifest)
        if self.store.save_message(stored, int(now * 1000)):  # persist, then send
            self._account(self.me, len(wire))
        self._recent.clear()
        for peer in self.links:
            self._send(peer, {b"t": b"msg", b"m": wire, b"o": self.link_id})
        self.stats["posted"] += 1
        return stored

    def _announce_presence(self, status: bytes, now: float) -> None:
        generation = self._generation()
        key = self._traffic_key(generation) if generation >= 0 else None
        if key is not None and self.links:
            msg = seal_message(
                self.identity,
                self.id,
                kind=PRESENCE,
                body={b"s": status},
                lamport=0,
                now=now,
                generation=generation,
                traffic_key=key,
            )
            self._broadcast({b"t": b"msg", b"m": msg.encode(), b"o": self.link_id})

    def goodbye(self, now: float) -> None:
        """We are leaving the channel or shutting down: say so, so members show us
        offline at once instead of after the presence window."""
        self._announce_presence(OFFLINE, now)

    def handle_timer(self, now: float) -> None:
        """Link-set announcements, presence and anti-entropy that are due at ``now``."""
        if self._links_dirty and now >= self._next_links:
            self._announce_links(now)
        if now >= self._next_presence:
            self._next_presence = now + PRESENCE_INTERVAL * self._rng.uniform(0.8, 1.2)
            self._announce_presence(b"online", now)
            self._expire_presence(now)
        if now >= self._next_entropy:
            self._next_entropy = now + ANTI_ENTROPY_INTERVAL * self._rng.uniform(0.8, 1.2)
            ids = [m.id for m in self._recent_messages(ANTI_ENTROPY_IDS)]
            self._broadcast({b"t": b"have", b"ids": ids})

    def get_timer(self) -> float:
        """The next deadline (always one: presence and anti-entropy recur)."""
        deadline = min(self._next_presence, self._next_entropy)
        return min(deadline, self._next_links) if self._links_dirty else deadline

    def member_view(self, now: float) -> list[dict[str, Any]]:
        """Members with presence: everyone on the list (invite-only) or heard from."""
        linked = self._linked()
        keys: set[bytes] = set(self.presence.last_heard) | linked | {self.me}
        roles: dict[bytes, str] = {}
        if self.members is not None:
            keys = set(self.members.keys) | {self.me}
            roles = {m.key: m.role for m in self.members.members}
        out = []
        for key in sorted(keys):
            heard = self.presence.last_heard.get(key)
            online = (
                key == self.me
                or key in linked
                or (heard is not None and now - heard < PRESENCE_WINDOW)
            )
            out.append(
                {
                    "public_key": key.hex(),
                    "role": roles.get(key),
                    "online": online,
                    "linked": key in linked,
                    "me": key == self.me,
                    "last_heard": int(heard * 1000) if heard else None,
                }
            )
        return out

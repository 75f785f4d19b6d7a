"""Contacts find each other on a LAN with no DHT: a private, encrypted LAN announcement.

How this works: the DHT rendezvous (:mod:`btchat.discovery.rendezvous`) needs the DHT,
and the Noise IK dialler needs the responder's device certificate, which comes from
the DHT device list or an earlier session. On a LAN with no internet neither exists.
So each node also multicasts, on the BEP 14 group and port (``239.192.152.143:6771``),
one datagram per contact it has no session with::

    MAGIC || tag (16) || nonce (24) || XChaCha20-Poly1305(key, nonce, aad=MAGIC || tag,
                                                         bencode({c: [cert], p: port}))

``tag`` and ``key`` are keyed BLAKE2b of the pair's secret
(:func:`btchat.identity.rendezvous.pairwise_secret`) with their own labels, the
announcer, the seeker and the hour (the DHT rendezvous epoch). Only the contact can tell
what a datagram is for or read it; to anyone else it is 16 random-looking bytes that
change every hour, then noise. The receiver keeps a table ``tag -> (contact, epoch)``
for the epochs around now, opens what matches, checks that the certificate is the
contact's and reports a :class:`LanPeer` (the contact, its certificates, the UDP source
IP and the advertised port) to peering, which dials it as it dials what the DHT finds.

BEP 14 parsers drop our datagrams (no ``BT-SEARCH`` request line); we drop theirs (no
``MAGIC``). Everything a LAN host can make us do is bounded: datagram size, datagrams
per source IP (a token bucket, before any crypto), announcements per contact, candidates
per source IP, and a replay cache of nonces; what fails is dropped and counted in
:attr:`LanRendezvous.stats`. A replay from another IP can at most make us dial an address
whose IK handshake then fails (docs/SECURITY.md).

A sans-I/O datagram core (:mod:`btchat.sansio`): ``now`` is wall-clock seconds (epochs
are wall-clock hours), ``receive_datagram`` / ``handle_timer`` in, ``datagrams_to_send``
and ``next_event`` out. The shell is :mod:`btchat.discovery.lan_service`.
"""

from __future__ import annotations

import ipaddress
import os
from collections import Counter, OrderedDict, deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from nacl.bindings import (
    crypto_aead_xchacha20poly1305_ietf_decrypt,
    crypto_aead_xchacha20poly1305_ietf_encrypt,
)
from nacl.encoding import RawEncoder
from nacl.exceptions import CryptoError
from nacl.hash import blake2b

from btchat.codec.bencode import DecodeError, decode, encode
from btchat.dht.ratelimit import RateLimiter
from btchat.errors import PeerError
from btchat.identity.keys import DeviceCertificate, Identity
from btchat.identity.rendezvous import (
    EPOCH_SECONDS,
    InvalidPeerKey,
    announce_epochs,
    epoch_of,
    pairwise_secret,
)

__all__ = [
    "ANNOUNCE_INTERVAL",
    "KEY_CONTEXT",
    "MAGIC",
    "MAX_CERTS",
    "MAX_DATAGRAM",
    "MIN_ANNOUNCE_INTERVAL",
    "NONCE_SIZE",
    "TAG_CONTEXT",
    "TAG_SIZE",
    "LanError",
    "LanPeer",
    "LanRendezvous",
    "lan_key",
    "lan_tag",
    "open_announcement",
    "seal_announcement",
]

#: Starts every datagram: not "BT-SEARCH", so BEP 14 parsers drop it (and we theirs).
MAGIC = b"btchat-lan\x01"
TAG_SIZE = 16
NONCE_SIZE = 24  # XChaCha20-Poly1305 (libsodium crypto_aead_xchacha20poly1305_ietf)
MAC_SIZE = 16
#: Labels of the two derivations; never the DHT infohash's ("btchat rendezvous v1").
TAG_CONTEXT = b"btchat lan tag v1"
KEY_CONTEXT = b"btchat lan key v1"
#: BEP 14 asks for datagrams that do not fragment; we send and read at most this.
MAX_DATAGRAM = 1400
#: Certificates per announcement (one device speaks for itself; kept small anyway).
MAX_CERTS = 4
_HEADER = len(MAGIC) + TAG_SIZE + NONCE_SIZE

#: Each contact without a session is announced this often, never twice within the
#: minimum (also after :meth:`LanRendezvous.announce_now` or hearing them).
ANNOUNCE_INTERVAL = 60.0
MIN_ANNOUNCE_INTERVAL = 5.0
#: Contacts announced to per timer run, the rest a moment later: a node with hundreds
#: of contacts does not put hundreds of datagrams on the LAN in one burst.
TX_BURST = 32
TX_PACE = 0.5
#: Datagrams accepted per source IP (token bucket), checked before any crypto: a real
#: peer sends one per contact per minute, so this only bounds a hostile host.
RX_RATE = 5.0
RX_BURST = 50.0
RX_MAX_SOURCES = 1024
#: Announcements accepted per contact (a replay flood of one contact's datagram).
CONTACT_RATE = 0.5
CONTACT_BURST = 6.0
#: Candidates reported per source IP: a source is one host, with a few of our contacts
#: at most; a host that claims more (replays from elsewhere) is cut off.
CANDIDATE_RATE = 0.2
CANDIDATE_BURST = 8.0
#: Nonces remembered (oldest forgotten first): the same datagram is opened once.
MAX_NONCES = 4096
#: Events queued and not yet taken (the shell takes them at once; a bound anyway).
MAX_EVENTS = 256

_EPSILON = 1e-3


@dataclass(frozen=True, slots=True)
class LanPeer:
    """``contact``'s device(s) ``certs`` announced on the LAN from ``addr`` (source IP,
    advertised session port): a candidate for peering."""

    contact: bytes
    certs: tuple[DeviceCertificate, ...]
    addr: tuple[str, int]


# ---------------------------------------------------------------- derivations


def _derive(context: bytes, size: int, secret: bytes, announcer: bytes, seeker: bytes,
            epoch: int) -> bytes:  # fmt: skip
    if len(secret) != 32 or len(announcer) != 32 or len(seeker) != 32:
        raise ValueError("the secret and both keys are 32 bytes")
    if not 0 <= epoch < 1 << 64:
        raise ValueError("epoch out of range")
    data = context + announcer + seeker + epoch.to_bytes(8, "big")
    return blake2b(data, digest_size=size, key=secret, encoder=RawEncoder)


def lan_tag(secret: bytes, announcer: bytes, seeker: bytes, epoch: int) -> bytes:
    """The 16 bytes that tell ``seeker`` "this is ``announcer``, for you" in ``epoch``.

    Directional like the DHT infohash, so our own datagrams (looped back) never match."""
    return _derive(TAG_CONTEXT, TAG_SIZE, secret, announcer, seeker, epoch)


def lan_key(secret: bytes, announcer: bytes, seeker: bytes, epoch: int) -> bytes:
    """The XChaCha20-Poly1305 key of ``announcer``'s announcements to ``seeker``."""
    return _derive(KEY_CONTEXT, 32, secret, announcer, seeker, epoch)


def seal_announcement(key: bytes, tag: bytes, nonce: bytes, port: int,
                      certs: list[DeviceCertificate]) -> bytes:  # fmt: skip
    """One datagram: MAGIC || tag || nonce || AEAD(bencode({c: certs, p: port}))."""
    if not 1 <= port <= 65535:
        raise ValueError("port must be 1..65535")
    if len(nonce) != NONCE_SIZE or len(tag) != TAG_SIZE:
        raise ValueError("the nonce is 24 bytes and the tag 16")
    if not 1 <= len(certs) <= MAX_CERTS:
        raise ValueError(f"1..{MAX_CERTS} certificates")
    plain = encode({b"c": [c.encode() for c in certs], b"p": port})
    aad = MAGIC + tag
    sealed = crypto_aead_xchacha20poly1305_ietf_encrypt(plain, aad, nonce, key)
    data = aad + nonce + sealed
    if len(data) > MAX_DATAGRAM:
        raise ValueError("announcement too large")
    return data


class LanError(PeerError):
    """A datagram that is not a valid announcement; :attr:`reason` is its stats key."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def open_announcement(
    key: bytes, data: bytes, contact: bytes
) -> tuple[int, list[DeviceCertificate]]:
    """(port, certificates of ``contact``) from a datagram whose tag matched; raises
    :class:`LanError` with the reason (``rx_bad_auth``, ``rx_malformed``, ``rx_bad_cert``)."""
    if not data.startswith(MAGIC) or not _HEADER + MAC_SIZE <= len(data) <= MAX_DATAGRAM:
        raise LanError("rx_malformed")
    aad = data[: len(MAGIC) + TAG_SIZE]
    nonce = data[len(aad) : _HEADER]
    sealed = data[_HEADER:]
    try:
        plain = crypto_aead_xchacha20poly1305_ietf_decrypt(sealed, aad, nonce, key)
    except CryptoError:
        raise LanError("rx_bad_auth") from None
    try:
        value = decode(plain)
    except DecodeError:
        raise LanError("rx_malformed") from None
    if not isinstance(value, dict) or set(value) != {b"c", b"p"}:
        raise LanError("rx_malformed")
    port, raw = value[b"p"], value[b"c"]
    if not isinstance(port, int) or not 1 <= port <= 65535:
        raise LanError("rx_malformed")
    if not isinstance(raw, list) or not 1 <= len(raw) <= MAX_CERTS:
        raise LanError("rx_malformed")
    certs = DeviceCertificate.all_of(contact, raw)
    if len(certs) != len(raw):
        # Sealed with the pair's key, so only the contact (or a leak of the pair's
        # secret) can send it: a bad certificate is a bug or an attack; trust none.
        raise LanError("rx_bad_cert")
    return port, certs


def _usable_source(ip: str) -> bool:
    try:
        addr = ipaddress.ip_address(ip)
    except ValueError:
        return False
    if isinstance(addr, ipaddress.IPv4Address) and addr == ipaddress.IPv4Address(0xFFFFFFFF):
        return False
    return not (addr.is_unspecified or addr.is_multicast)


# ----------------------------------------------------------------------- core


@dataclass
class _Contact:
    secret: bytes
    due: float  # next announcement
    last: float | None = None  # last announcement sent


class LanRendezvous:
    """Announces us to every contact without a session and hears theirs (see module).

    The caller keeps the contact list current with :meth:`set_contacts` (whom to
    announce to and hear: contacts with no live session) and takes :class:`LanPeer`
    events from :meth:`next_event`. ``rng(n)`` gives the nonces (``os.urandom``).
    """

    def __init__(
        self,
        identity: Identity,
        certificate: DeviceCertificate,
        port: int,
        *,
        dest: tuple[str, int],
        interval: float = ANNOUNCE_INTERVAL,
        min_interval: float = MIN_ANNOUNCE_INTERVAL,
        rng: Callable[[int], bytes] = os.urandom,
    ) -> None:
        if not 1 <= port <= 65535:
            raise ValueError("port must be 1..65535")
        if not interval > 0 or not 0 <= min_interval <= interval:
            raise ValueError("interval must be positive and min_interval in [0, interval]")
        if certificate.identity != identity.public_key:
            raise ValueError("the certificate is not this identity's")
        self.identity = identity
        self.me = identity.public_key
        self.certificate = certificate
        self.port = port
        self.dest = dest
        self.interval = interval
        self.min_interval = min_interval
        self._rng = rng
        self.stats: Counter[str] = Counter()
        self._contacts: dict[bytes, _Contact] = {}
        self._secrets: dict[bytes, bytes] = {}  # contact -> pairwise secret (cached)
        self._table: dict[bytes, tuple[bytes, int]] = {}  # tag -> (contact, epoch)
        self._table_epoch: int | None = None
        self._out: list[tuple[bytes, tuple[str, int]]] = []
        self._events: deque[LanPeer] = deque()
        self._rx_limit = RateLimiter(RX_RATE, RX_BURST, max_sources=RX_MAX_SOURCES)
        self._contact_limit = RateLimiter(CONTACT_RATE, CONTACT_BURST)
        self._candidate_limit = RateLimiter(
            CANDIDATE_RATE, CANDIDATE_BURST, max_sources=RX_MAX_SOURCES
        )
        self._nonces: OrderedDict[bytes, None] = OrderedDict()

    # ------------------------------------------------------------- contacts

    @property
    def contacts(self) -> frozenset[bytes]:
        return frozenset(self._contacts)

    def set_contacts(self, contacts: Iterable[bytes], now: float) -> None:
        """Announce to and hear exactly ``contacts`` from now on; a new one is announced
        at once. Keys that are not usable curve points are skipped (and counted)."""
        wanted = set(contacts) - {self.me}
        for gone in set(self._contacts) - wanted:
            del self._contacts[gone]
        added = False
        for pk in wanted - set(self._contacts):
            secret = self._secret(pk)
            if secret is not None:
                self._contacts[pk] = _Contact(secret, now)
                added = True
        self._secrets = {pk: s for pk, s in self._secrets.items() if pk in wanted}
        if added or self._table_epoch is None:
            self._table_epoch = None  # rebuilt lazily for the new set
        else:
            self._table = {t: v for t, v in self._table.items() if v[0] in self._contacts}

    def announce_now(self, now: float, contact: bytes | None = None) -> None:
        """Announce (to ``contact``, or to everyone) as soon as the minimum allows."""
        for pk, c in self._contacts.items():
            if contact is None or pk == contact:
                c.due = min(c.due, self._earliest(c, now))

    def _secret(self, pk: bytes) -> bytes | None:
        secret = self._secrets.get(pk)
        if secret is None:
            try:
                secret = self._secrets[pk] = pairwise_secret(self.identity, pk)
            except (InvalidPeerKey, ValueError):
                self.stats["bad_contact_keys"] += 1
                return None
        return secret

    def _refresh_table(self, now: float) -> None:
        """Tags of the previous, this and the next epoch: skew up to an hour still meets."""
        epoch = epoch_of(now)
        if self._table_epoch == epoch:
            return
        self._table = {}
        for pk, c in self._contacts.items():
            for e in (epoch - 1, epoch, epoch + 1):
                if e >= 0:
                    self._table[lan_tag(c.secret, pk, self.me, e)] = (pk, e)
        self._table_epoch = epoch

    # ---------------------------------------------------------------- timer

    def get_timer(self) -> float | None:
        """The next announcement due, or the next epoch (the tag table rolls over)."""
        due = min((c.due for c in self._contacts.values()), default=None)
        if due is None:
            return None
        if self._table_epoch is not None:
            due = min(due, (self._table_epoch + 1) * EPOCH_SECONDS)
        return due

    def handle_timer(self, now: float) -> None:
        self._refresh_table(now)
        due = sorted((c.due, pk) for pk, c in self._contacts.items() if c.due <= now + _EPSILON)
        for _, pk in due[TX_BURST:]:
            self._contacts[pk].due = now + TX_PACE
        for _, pk in due[:TX_BURST]:
            c = self._contacts[pk]
            c.last = now
            c.due = now + self.interval
            for epoch in announce_epochs(now):  # and the next one near its end
                key = lan_key(c.secret, self.me, pk, epoch)
                tag = lan_tag(c.secret, self.me, pk, epoch)
                data = seal_announcement(
                    key, tag, self._rng(NONCE_SIZE), self.port, [self.certificate]
                )
                self._out.append((data, self.dest))
                self.stats["tx"] += 1

    def datagrams_to_send(self) -> list[tuple[bytes, tuple[str, int]]]:
        out, self._out = self._out, []
        return out

    def next_event(self) -> LanPeer | None:
        return self._events.popleft() if self._events else None

    # -------------------------------------------------------------- receive

    def receive_datagram(self, data: bytes, addr: tuple[str, int], now: float) -> None:
        """One datagram from ``addr``; an announcement of a contact becomes a
        :class:`LanPeer`. Never raises on remote input: drops and counts."""
        if not data.startswith(MAGIC):
            self.stats["rx_foreign"] += 1  # BEP 14, or anything else on the port
            return
        src = str(addr[0])
        if not self._rx_limit.allow(src, now):
            self.stats["rx_rate_limited"] += 1
            return
        if len(data) > MAX_DATAGRAM or len(data) < _HEADER + MAC_SIZE:
            self.stats["rx_malformed"] += 1
            return
        self._refresh_table(now)
        found = self._table.get(data[len(MAGIC) : len(MAGIC) + TAG_SIZE])
        if found is None:
            self.stats["rx_unknown_tag"] += 1  # a stranger's pair, or our own looped back
            return
        contact, epoch = found
        if not _usable_source(src):
            self.stats["rx_bad_source"] += 1
            return
        secret = self._contacts[contact].secret
        try:
            port, certs = open_announcement(lan_key(secret, contact, self.me, epoch), data, contact)
        except LanError as refused:
            self.stats[refused.reason] += 1
            return
        nonce = data[len(MAGIC) + TAG_SIZE : _HEADER]
        if nonce in self._nonces:
            self.stats["rx_replay"] += 1
            return
        self._nonces[nonce] = None
        while len(self._nonces) > MAX_NONCES:
            self._nonces.popitem(last=False)
        # Charged only for genuine, fresh announcements: the tag travels in clear, so a
        # forger (or replayer) spending this contact's tokens would silence it.
        if not self._contact_limit.allow(contact, now):
            self.stats["rx_contact_limited"] += 1
            return
        if not self._candidate_limit.allow(src, now):
            self.stats["rx_candidates_limited"] += 1
            return
        if len(self._events) >= MAX_EVENTS:
            self.stats["rx_events_full"] += 1
            return
        self.stats["rx_announcements"] += 1
        self._events.append(LanPeer(contact, tuple(certs), (src, port)))
        # They are here and do not know of us: answer soon, so that whichever side can
        # accept a connection is dialled (their dial to us may be what works).
        self.announce_now(now, contact)

    def _earliest(self, c: _Contact, now: float) -> float:
        return now if c.last is None else max(now, c.last + self.min_interval)

"""Contact rendezvous through the DHT: where I am for them, where they are for me.

How this works: for every contact we derive a pairwise secret and from it rotating
rendezvous infohashes (``identity/rendezvous.py``). We announce our DHT socket's
reflexive address (``implied_port``: sessions share that socket over QUIC) on "where I
am for them" and look up "where they are for me"; a DHT observer sees random
infohashes that change every hour. The announce carries one address; each device also
writes a sealed, signed *candidate record* per contact and hour (``discovery/candidates.py``:
its TCP port, gateway mapping, LAN and IPv6 addresses, onion service), read alongside
the lookup. To authenticate a session one needs the contact's
device keys, which their identity publishes as a signed device list (a BEP 44 mutable
item under the identity key); we publish ours and fetch and verify theirs. What a
lookup finds is reported to a :class:`Reacher` (peering) as candidates: an address
where one of the contact's devices may listen.

Each contact is tended on its own schedule (announce refresh, lookup, exponential
backoff after a miss) in its own task, at most ``max_lookups`` at once: one unreachable
contact (a lookup that times out, a dial that hangs) never delays the others.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from btchat.codec import bencode
from btchat.dht import bep44
from btchat.dht.node import PutResult
from btchat.discovery import candidates as cand
from btchat.identity.devices import (
    DEVICES_SALT,
    MAX_DEVICES,
    MAX_REVOKED,
    REVOKED_SALT,
    decode_device_list,
    decode_revoked,
    encode_device_list,
    encode_revoked,
)
from btchat.identity.keys import DeviceCertificate, Identity
from btchat.identity.rendezvous import (
    announce_epochs,
    announce_targets,
    epoch_of,
    lookup_epochs,
    lookup_targets,
    pairwise_secret,
)
from btchat.net.dht_service import DhtError, DhtService

__all__ = [
    "DEVICES_SALT",
    "MAX_DEVICES",
    "Candidate",
    "Directory",
    "FixedDirectory",
    "OwnCerts",
    "Reacher",
    "Rendezvous",
    "RendezvousConfig",
    "decode_device_list",
    "encode_device_list",
    "put_again_in",
]

log = logging.getLogger(__name__)

Addr = tuple[str, int]


@dataclass(frozen=True)
class RendezvousConfig:
    round_interval: float = 20.0  # how often each missing contact is looked for
    first_retry: float = 0.5  # after a failed lookup, retry soon, then back off
    max_retry: float = 60.0
    reannounce: float = 600.0  # BEP 5 peers expire after 30 min; refresh well before
    republish: float = 1800.0  # BEP 44 items expire after ~2 h
    max_lookups: int = 8  # contacts tended at once
    # A device-list put that landed on fewer than this many of the k closest nodes is
    # done again soon (from ``reput_first``, doubled up to ``republish``): one storing
    # node used to count as success, and lookups missed the list for minutes.
    min_stored: int = 5
    reput_first: float = 1.0
    # A contact's device list and revocations are read again this often (and at the
    # first lookup after start): a new device of theirs gets dialled, a revoked one
    # dropped, within this time even while a session is up.
    device_refresh: float = 600.0


def put_again_in(stored_at: int, refused: int, known_nodes: int, k: int, tries: int,
                 config: RendezvousConfig) -> float:  # fmt: skip
    """Seconds until our device list is put again after ``tries`` thin puts in a row
    (``stored_at`` nodes stored it, ``refused`` timed out or refused, ``known_nodes`` in
    our routing table). Enough copies: the normal republish. A swarm smaller than
    ``min_stored`` that stored it everywhere it could is not asked again sooner."""
    could = min(config.min_stored, k, max(known_nodes, stored_at + refused))
    if stored_at >= could:
        return config.republish
    return min(config.reput_first * 2 ** max(tries - 1, 0), config.republish)


@dataclass(frozen=True)
class Candidate:
    """Device ``cert`` of ``identity`` may listen at ``addr``: over ``transport`` ("tcp"
    or "udp"; None: either, as for an announced address), a candidate of ``kind``
    ("announced", or a record's: host, mapped, reflexive, onion)."""

    identity: bytes
    cert: DeviceCertificate
    addr: Addr
    transport: str | None = None
    kind: str = "announced"


class Directory(Protocol):
    """Whom to look for and what we know of their devices (the node's contact book)."""

    def reachable(self) -> list[bytes]:
        """The contacts to hold sessions with and look for (all but the blocked)."""
        ...

    def certs_of(self, contact: bytes) -> list[DeviceCertificate]: ...

    def save_certs(self, contact: bytes, certs: list[DeviceCertificate]) -> None: ...

    def revoked_devices(self, contact: bytes) -> frozenset[bytes]:
        """Every device id ``contact`` has revoked (never dialled, never accepted)."""
        ...

    def learn_devices(
        self,
        contact: bytes,
        list_seq: int | None,
        certs: list[DeviceCertificate] | None,
        revoked_seq: int | None,
        revoked: frozenset[bytes],
    ) -> frozenset[bytes]:
        """What one read of ``contact``'s device and revocation lists said (None: that
        item was not found). Keeps the certificates unless the list is older than one
        seen (rollback), keeps revocations for good; returns the ids newly revoked."""
        ...


@dataclass
class FixedDirectory:
    """A :class:`Directory` held in memory: a given list of contacts (the list itself, so
    its owner may change it) and what is learned of their certificates. For peerings run
    by hand (tests, benchmarks, the NAT lab); a node's own is its contact book."""

    contacts: list[bytes]
    certs: dict[bytes, list[DeviceCertificate]] = field(default_factory=dict)
    revoked: dict[bytes, frozenset[bytes]] = field(default_factory=dict)
    seqs: dict[bytes, int] = field(default_factory=dict)

    def reachable(self) -> list[bytes]:
        return list(self.contacts)

    def certs_of(self, contact: bytes) -> list[DeviceCertificate]:
        gone = self.revoked.get(contact, frozenset())
        return [c for c in self.certs.get(contact, []) if c.device_id not in gone]

    def save_certs(self, contact: bytes, certs: list[DeviceCertificate]) -> None:
        self.certs[contact] = list(certs)

    def revoked_devices(self, contact: bytes) -> frozenset[bytes]:
        return self.revoked.get(contact, frozenset())

    def learn_devices(
        self,
        contact: bytes,
        list_seq: int | None,
        certs: list[DeviceCertificate] | None,
        revoked_seq: int | None,
        revoked: frozenset[bytes],
    ) -> frozenset[bytes]:
        old = self.revoked.get(contact, frozenset())
        self.revoked[contact] = old | revoked
        if certs is not None and (list_seq or 0) >= self.seqs.get(contact, -1):
            self.seqs[contact] = list_seq or 0
            self.certs[contact] = list(certs)
        return revoked - old


class OwnCerts(Protocol):
    """Our identity's devices (node/devices.py ``OwnDevices``)."""

    #: Another of our devices revoked this one (learned from our revocation list).
    this_revoked: bool

    def certs(self) -> list[DeviceCertificate]:
        """What the device list names: this device first, at most MAX_DEVICES."""
        ...

    def revoked(self) -> frozenset[bytes]:
        """What the revocation list names."""
        ...

    def watch(self, callback: Callable[[], None]) -> None:
        """Have ``callback`` called after every change."""
        ...

    def merge_published(
        self, certs: list[DeviceCertificate], revoked: frozenset[bytes], revoked_seq: int | None
    ) -> bool:
        """Take in what our lists in the DHT say (put by another of our devices)."""
        ...


class Reacher(Protocol):
    """Whoever opens sessions to what the rendezvous finds (peering)."""

    def connected(self, contact: bytes) -> bool:
        """A session to (some device of) ``contact`` is live: no lookup needed."""
        ...

    async def reach(self, candidates: list[Candidate]) -> bool:
        """Try the candidates; True once a session to the contact is live."""
        ...

    def revoked(self, contact: bytes, device_ids: frozenset[bytes]) -> None:
        """``contact`` revoked these devices: end any session to them."""
        ...


class Rendezvous:
    """The announce/lookup loop for every contact and the device-list publisher."""

    def __init__(
        self,
        identity: Identity,
        certificate: DeviceCertificate,
        dht: DhtService,
        config: RendezvousConfig,
        reacher: Reacher,
        contacts: Directory,
        own: OwnCerts | None = None,
        candidates: Callable[[], list[cand.Addr]] | None = None,
    ) -> None:
        self.identity = identity
        self.me = identity.public_key
        self.certificate = certificate
        self.dht = dht
        self.config = config
        self.reacher = reacher
        self.contacts = contacts
        self.port = 0
        self.stats: dict[str, int] = {
            "lookups": 0,
            "found": 0,
            "records_put": 0,  # candidate records written (one per contact and epoch)
            "records_read": 0,  # records that opened and verified
            "records_dropped": 0,  # records that did not open, parse or verify
            "records_stale": 0,  # older than one already seen
            "record_candidates": 0,  # candidates those records named
        }
        #: Our candidates for contacts (peering); None: no records written or read.
        self.candidates = candidates
        self._fresh = cand.Freshness()
        #: (contact, epoch) -> (the candidates last put there, when: monotonic)
        self._records_put: dict[tuple[bytes, int], tuple[tuple[cand.Addr, ...], float]] = {}
        self._record_t = 0  # the last record's t (ms): each put's BEP 44 seq is above it
        self._secrets: dict[bytes, bytes] = {}
        self._announced: dict[bytes, float] = {}
        self._due: dict[bytes, float] = {}  # contact -> next tend (monotonic)
        self._next_try: dict[bytes, float] = {}  # contact -> next lookup after a miss
        self._backoff: dict[bytes, float] = {}
        self._tending: set[bytes] = set()
        self._slots = asyncio.Semaphore(config.max_lookups)
        self._wake = asyncio.Event()
        self._devices_due: dict[bytes, float] = {}  # contact -> next device-list read
        #: Our device certificates to publish; without it, only this device's.
        self.own = own
        self._republish = asyncio.Event()
        #: Called after lists changed by a link or a revocation are in the DHT.
        self.on_published: Callable[[], None] | None = None
        self._seqs: dict[bytes, int] = {}  # salt -> the highest seq put or seen
        if own is not None:
            own.watch(self.republish)

    # ------------------------------------------------------------------ loops

    async def run(self, port: int, spawn: Callable[[Any], asyncio.Task[Any]]) -> None:
        """Publish our device list and tend every contact; ``spawn`` owns the tasks."""
        self.port = port
        spawn(self._publish_loop())
        while True:
            self._wake.clear()
            now = time.monotonic()
            for contact in self._tended():
                if contact not in self._tending and now >= self._due.get(contact, 0.0):
                    self._tending.add(contact)
                    spawn(self._tend(contact))
            waits = [t - now for c, t in self._due.items() if c not in self._tending]
            delay = min([self.config.round_interval, *waits])
            with contextlib.suppress(TimeoutError):  # not wait_for: see ChannelService
                async with asyncio.timeout(max(0.05, delay)):
                    await self._wake.wait()

    def _others(self) -> list[DeviceCertificate]:
        """Our other devices (found like contacts: our identity's rendezvous with itself)."""
        if self.own is None:
            return []
        return [c for c in self.own.certs() if c.device_id != self.certificate.device_id]

    def _tended(self) -> list[bytes]:
        contacts = self.contacts.reachable()
        return [*contacts, self.me] if self._others() else contacts

    def poke(self, contact: bytes | None = None) -> None:
        """Look for contacts now (a contact was added, the network came back...)."""
        if contact is not None:
            self._due.pop(contact, None)
            self._next_try.pop(contact, None)
            self._backoff.pop(contact, None)
        else:
            self._due.clear()
            self._next_try.clear()
        self._wake.set()

    def candidates_changed(self) -> None:
        """Our candidates changed (a mapping gained or lost, an onion service up): write
        every contact's record again now, looking for nobody sooner than planned."""
        self._records_put.clear()
        self._due.clear()
        self._wake.set()

    def republish(self) -> None:
        """Publish the device list now (a device was added)."""
        self._republish.set()

    def _next_seq(self, salt: bytes) -> int:
        """Unix seconds, but always above the last put or seen: a list republished at
        once after a change must not carry the seq of the one it replaces (BEP 44: same
        seq, other value is refused), nor one below what another of our devices put."""
        self._seqs[salt] = max(int(time.time()), self._seqs.get(salt, -1) + 1)
        return self._seqs[salt]

    def _put(self, salt: bytes, value: bytes) -> Any:
        item = bep44.sign_mutable(self.identity.private_key, value, self._next_seq(salt), salt)
        return self.dht.put_mutable(item)

    async def _merge_own(self) -> None:
        """Read our own lists back: another of our devices may have linked or revoked
        one. What it knew and we did not is taken in, then goes out in our next put."""
        if self.own is None:
            return
        try:
            listed, revocations = await asyncio.gather(
                self.dht.get_mutable(self.me, DEVICES_SALT),
                self.dht.get_mutable(self.me, REVOKED_SALT),
            )
        except DhtError as exc:  # publish what we have; merge at the next round
            log.debug("could not read our own device lists back: %s", exc)
            return
        for salt, got in ((DEVICES_SALT, listed), (REVOKED_SALT, revocations)):
            if got.seq is not None:
                self._seqs[salt] = max(self._seqs.get(salt, -1), got.seq)
        certs = (
            decode_device_list(listed.v_bencoded, self.me) if listed.v_bencoded is not None else []
        )
        revoked = (
            decode_revoked(revocations.v_bencoded)
            if revocations.v_bencoded is not None
            else frozenset()
        )
        self.own.merge_published(certs, revoked, revocations.seq)

    def device_certs(self) -> list[DeviceCertificate]:
        return self.own.certs() if self.own is not None else [self.certificate]

    async def _publish_own(self) -> PutResult | None:
        """One round: read our lists back, merge, put the device list (and revocations).
        None when another of our devices revoked this one: it speaks for the identity no
        more, so it puts no list (one naming it, or its revocations)."""
        await self._merge_own()
        if self.own is not None and self.own.this_revoked:
            log.warning("this device was revoked: not publishing device lists")
            return None
        result = await self._put(DEVICES_SALT, encode_device_list(self.device_certs()))
        revoked = self.own.revoked() if self.own is not None else frozenset()
        if revoked:
            await self._put(REVOKED_SALT, encode_revoked(sorted(revoked)[:MAX_REVOKED]))
        return result

    async def _publish_loop(self) -> None:
        thin = 0  # puts in a row that landed on too few nodes
        while True:
            changed = self._republish.is_set()
            self._republish.clear()
            try:
                result = await self._publish_own()
                if result is None:
                    return
                if changed and self.on_published is not None:
                    try:
                        self.on_published()  # contacts may read the new lists now
                    except Exception:  # the loop goes on: contacts also read every 10 min
                        log.exception("telling contacts of our new device lists failed")
                delay = put_again_in(
                    result.stored_at, len(result.errors), self.dht.routing_size,
                    self.dht.bucket_size, thin + 1, self.config,
                )  # fmt: skip
                thin = 0 if delay >= self.config.republish else thin + 1
                self.stats["device_list_stored_at"] = result.stored_at
                if thin:
                    log.info("device list on only %d nodes; again in %.0f s",
                             result.stored_at, delay)  # fmt: skip
            except DhtError as exc:
                # Usually: not joined yet. Retry soon; contacts need this list to dial us.
                log.info("could not publish the device list yet: %s", exc)
                delay = 0.5
            if len(self.device_certs()) > 1:  # our other devices' changes come in soon
                delay = min(delay, self.config.device_refresh)
            with contextlib.suppress(TimeoutError):  # a new device: publish at once
                async with asyncio.timeout(delay):
                    await self._republish.wait()

    async def fetch_certs(self, contact: bytes) -> list[DeviceCertificate]:
        """The contact's certificates: those known, read again from the DHT when none
        are known or ``device_refresh`` has passed since the last read."""
        if contact == self.me:
            return self._others()  # our own lists are merged by the publish loop
        certs = self.contacts.certs_of(contact)
        if certs and time.monotonic() < self._devices_due.get(contact, 0.0):
            return certs
        try:
            await self.refresh_devices(contact)
        except DhtError:
            if not certs:
                raise
        return self.contacts.certs_of(contact)

    async def refresh_devices(self, contact: bytes) -> None:
        """Read ``contact``'s device list and revocation list; what is revoked ends."""
        self._devices_due[contact] = time.monotonic() + self.config.device_refresh
        listed, revocations = await asyncio.gather(
            self.dht.get_mutable(contact, DEVICES_SALT),
            self.dht.get_mutable(contact, REVOKED_SALT),
        )
        certs = (
            decode_device_list(listed.v_bencoded, contact)
            if listed.v_bencoded is not None
            else None
        )
        revoked = (
            decode_revoked(revocations.v_bencoded)
            if revocations.v_bencoded is not None
            else frozenset()
        )
        gone = self.contacts.learn_devices(
            contact,
            listed.seq if certs else None,
            certs or None,
            revocations.seq if revocations.v_bencoded is not None else None,
            revoked,
        )
        if gone:
            log.info("%s revoked %d device(s)", contact.hex()[:16], len(gone))
            self.reacher.revoked(contact, gone)

    # ------------------------------------------------------------ one contact

    def _secret(self, contact: bytes) -> bytes:
        secret = self._secrets.get(contact)
        if secret is None:
            secret = self._secrets[contact] = pairwise_secret(self.identity, contact)
        return secret

    async def _tend(self, contact: bytes) -> None:
        """Refresh our announcements for ``contact``; look for it unless connected."""
        try:
            async with self._slots:
                secret = self._secret(contact)
                await asyncio.gather(
                    self._announce(contact, secret), self._put_records(contact, secret)
                )
                now = time.monotonic()
                if self.reacher.connected(contact):
                    found: bool | None = True
                    if contact != self.me and now >= self._devices_due.get(contact, 0.0):
                        with contextlib.suppress(DhtError):
                            await self.refresh_devices(contact)
                elif now < self._next_try.get(contact, 0.0):
                    found = None  # backing off: only the announcements were due
                else:
                    found = await self._look(contact, secret, time.time())
            self._schedule(contact, found)
        finally:
            self._tending.discard(contact)
            self._wake.set()  # the loop picks up this contact's new schedule

    def _schedule(self, contact: bytes, found: bool | None) -> None:
        now = time.monotonic()
        if found:
            self._backoff.pop(contact, None)
            self._next_try.pop(contact, None)
        elif found is False:
            previous = self._backoff.get(contact)
            backoff = (
                self.config.first_retry
                if previous is None
                else min(previous * 2, self.config.max_retry)
            )
            self._backoff[contact] = backoff
            self._next_try[contact] = now + backoff
        next_round = now + self.config.round_interval
        self._due[contact] = min(next_round, self._next_try.get(contact, next_round))

    async def _announce(self, contact: bytes, secret: bytes) -> None:
        now = time.monotonic()
        for ih in announce_targets(secret, self.me, contact, time.time()):
            if now - self._announced.get(ih, -1e18) >= self.config.reannounce:
                try:
                    # implied_port (BEP 5): the storing node records the port our DHT
                    # socket is seen from, i.e. its NAT mapping, where QUIC sessions
                    # share the socket (and TCP listens on the same number if it can).
                    await self.dht.announce(ih, self.port, implied_port=True)
                    self._announced[ih] = now
                except DhtError as exc:
                    log.debug("rendezvous announce failed: %s", exc)

    # ------------------------------------------------------- candidate records

    async def _put_records(self, contact: bytes, secret: bytes) -> None:
        """Write our record for ``contact`` in each epoch we announce in, when its
        candidates changed or ``republish`` has passed (items live about 2 h)."""
        if self.candidates is None:
            return
        found = tuple(self.candidates()[: cand.MAX_CANDIDATES])
        if not found:
            return  # nothing to say beyond the announce (or nothing at all)
        wall, now = time.time(), time.monotonic()
        self._records_put = {
            k: v for k, v in self._records_put.items() if k[1] >= epoch_of(wall) - 1
        }
        for epoch in announce_epochs(wall):
            last = self._records_put.get((contact, epoch))
            if last is not None and last[0] == found and now - last[1] < self.config.republish:
                continue
            self._record_t = max(int(wall * 1000), self._record_t + 1)
            record = cand.Record(contact, self.certificate.device_id, epoch, self._record_t, found)
            where = cand.slot(secret, self.me, contact, self.certificate.device_id, epoch)
            try:
                value = bencode.encode(cand.seal(self.identity, where, record))
                item = bep44.sign_mutable(
                    Ed25519PrivateKey.from_private_bytes(where.seed), value, record.t
                )
                await self.dht.put_mutable(item)
            except (DhtError, ValueError) as exc:
                log.debug("candidate record for %s not put: %s", contact.hex()[:16], exc)
                continue
            self.stats["records_put"] += 1
            self._records_put[(contact, epoch)] = (found, now)

    async def _records(
        self, contact: bytes, secret: bytes, wall: float
    ) -> tuple[list[DeviceCertificate], list[Candidate]]:
        """The contact's certificates and what its devices' records for us say, in the
        epochs we look in: at most MAX_DEVICES x 2 gets, all at once."""
        if self.candidates is None:
            return [], []
        known = self._others() if contact == self.me else self.contacts.certs_of(contact)
        if not known and time.monotonic() < self._devices_due.get(contact, 0.0):
            return [], []  # its device list was read a moment ago and named nobody
        try:
            certs = await self.fetch_certs(contact)
        except DhtError:
            return [], []
        reads = [
            self._read_record(contact, secret, cert, epoch)
            for cert in certs[:MAX_DEVICES]
            for epoch in lookup_epochs(wall)
        ]
        found = [c for got in await asyncio.gather(*reads) for c in got]
        return certs, found

    async def _read_record(
        self, contact: bytes, secret: bytes, cert: DeviceCertificate, epoch: int
    ) -> list[Candidate]:
        where = cand.slot(secret, contact, self.me, cert.device_id, epoch)
        try:
            got = await self.dht.get_mutable(where.public_key)
        except DhtError:
            return []
        if got.v_bencoded is None:
            return []
        try:
            record = cand.open_record(got.value, where, contact, self.me, cert.device_id, epoch)
        except cand.CandidateError as exc:
            self.stats["records_dropped"] += 1
            log.info("dropped a candidate record of %s: %s", contact.hex()[:16], exc.reason)
            return []
        if not self._fresh.accept(contact, cert.device_id, epoch, record.t):
            self.stats["records_stale"] += 1
            return []
        self.stats["records_read"] += 1
        self.stats["record_candidates"] += len(record.candidates)
        return [Candidate(contact, cert, a.addr, a.transport, a.kind) for a in record.candidates]

    # ------------------------------------------------------------ lookups

    async def _peers(self, contact: bytes, secret: bytes, wall: float) -> list[Addr]:
        addrs: list[Addr] = []
        for ih in lookup_targets(secret, self.me, contact, wall):
            self.stats["lookups"] += 1
            try:
                result = await self.dht.get_peers(ih)
            except DhtError:
                continue
            addrs += [a for a in result.peers if a not in addrs]
        return addrs

    async def _look(self, contact: bytes, secret: bytes, wall: float) -> bool:
        """The announce and the records at once; then every candidate is dialled, the
        announced addresses first (over TCP and QUIC), then the records' not among them."""
        addrs, (certs, recorded) = await asyncio.gather(
            self._peers(contact, secret, wall), self._records(contact, secret, wall)
        )
        if not addrs and not recorded:
            return False
        if not certs:
            try:
                certs = await self.fetch_certs(contact)
            except DhtError:
                certs = []
        if not certs:
            log.info("found %s but not its device list yet", contact.hex()[:16])
            return False
        self.stats["found"] += 1
        announced = [Candidate(contact, cert, addr) for addr in addrs for cert in certs]
        extra = [c for c in recorded if c.addr not in addrs]
        return await self.reacher.reach(announced + extra)

"""Sessions to our contacts' devices: the listener, dialling, and one session per device.

How this works: :class:`~btchat.discovery.rendezvous.Rendezvous` finds where a
contact's devices may listen and asks us to reach them; we dial, or accept a dial, and
run a Noise IK session over TCP (``session/``). A responder answers only contacts, so a
prober learns nothing about who is behind a port. Sessions are keyed by (identity,
device): a contact with several devices has several sessions, and a payload for the
contact goes to each. The daemon hears of a contact coming online when its first
device session is up, and going offline when its last one ends.

If both sides dial at once, two sessions to one device may complete; both keep the
same one by the rule in :mod:`btchat.net.tiebreak`. When the kept one replaces a session
already in use, the daemon hears of it (``on_switched``): whatever went over the closed
one may be lost (each side drops what arrives on a session it no longer keeps), so it
reconciles again over the kept one, as on a reconnect.

Relays (:mod:`btchat.net.relay`): when no direct dial to a device works, peering asks
up to ``max_relays`` live, relay-capable contacts at once to carry the session; the
Noise IK session runs end to end over the circuit. While relayed the rendezvous keeps
looking (``connected`` counts direct sessions only), and a direct session that comes
up later replaces the relayed one (:mod:`btchat.net.tiebreak`). It need not wait for
the rendezvous: over the relayed session itself the two sides swap candidate addresses,
time the round trip and punch at once (:mod:`btchat.net.dcutr`).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import ipaddress
import logging
import socket
from collections import Counter
from collections.abc import Callable, Coroutine, Iterable
from dataclasses import dataclass, field
from typing import Any

from btchat.discovery import candidates as cand
from btchat.discovery.lan_service import LanConfig, LanService
from btchat.discovery.rendezvous import (
    DEVICES_SALT,
    Candidate,
    Directory,
    OwnCerts,
    Rendezvous,
    RendezvousConfig,
    decode_device_list,
    encode_device_list,
)
from btchat.identity.keys import DeviceCertificate, DeviceKey, Identity
from btchat.net import dcutr, dht_proxy, tiebreak
from btchat.net.admission import Admission, AdmissionConfig, Ticket
from btchat.net.dht_proxy import DhtProxyServer, DhtViaContacts, serves_dht
from btchat.net.dht_proxy_core import MAGIC as DHT_PROXY_MAGIC
from btchat.net.dht_proxy_core import DhtProxyLimits
from btchat.net.dht_service import DhtService
from btchat.net.proxy import ProxyDialer
from btchat.net.quic import QuicDialer, QuicEndpoint, QuicListener, QuicStream
from btchat.net.relay import RelayDialer, RelayService, RelayStream, relay_capable
from btchat.net.relay_core import RelayLimits
from btchat.net.timer import CoreTimer
from btchat.net.transport import (
    Address,
    ByteStream,
    Dialer,
    TcpDialer,
    TcpListener,
    WatchedStream,
    admitted,
    listen_v6,
)
from btchat.node.tasks import TaskOwner
from btchat.session.connection import SessionConnection, run_session_over
from btchat.session.core import (
    DataReceived,
    HandshakeComplete,
    Session,
    SessionClosed,
    SessionConfig,
    SessionFailed,
)
from btchat.stream.events import (
    StreamClosed,
    StreamData,
    StreamOpened,
    StreamReset,
    StreamsAvailable,
    StreamWritable,
)
from btchat.stream.frames import CAPS_DHT, CAPS_RELAY, CAPS_UPGRADE, Service

__all__ = [
    "DEVICES_SALT",
    "PeerKey",
    "Peering",
    "PeeringConfig",
    "decode_device_list",
    "encode_device_list",
]

log = logging.getLogger(__name__)

#: A peer is one device of one identity: (identity key, device id).
PeerKey = tuple[bytes, bytes]


@dataclass(frozen=True)
class PeeringConfig:
    host: str = "0.0.0.0"
    port: int = 0  # TCP port for sessions; 0 = the DHT's port number if free, else any
    udp: bool = True  # sessions over QUIC on the DHT's socket too (with a real DhtService)
    round_interval: float = 20.0  # how often missing contacts are looked for
    first_retry: float = 0.5  # after a failed lookup, retry soon, then back off
    max_retry: float = 60.0
    reannounce: float = 600.0  # BEP 5 peers expire after 30 min; refresh well before
    republish: float = 1800.0  # BEP 44 items expire after ~2 h
    dial_timeout: float = 5.0
    max_lookups: int = 8  # contacts looked for at once (one slow one delays no other)
    #: Sessions announce substreams: file transfer runs on them (docs/PROTOCOL.md "Files");
    #: 60 KiB chunks cost a quarter of the frames of 16 KiB ones (bench ``file_transfer``);
    #: a burst of two whole chunks (a 64 KiB one split every other frame into 60 + 4 KiB),
    #: and chat waits behind at most those 120 KiB.
    session: SessionConfig = field(
        default_factory=lambda: SessionConfig(
            substreams=True, chunk_size=60 * 1024, burst=120 * 1024
        )
    )
    #: Bounds on inbound connections (see :mod:`btchat.net.admission`).
    admission: AdmissionConfig = field(default_factory=AdmissionConfig)
    #: What we relay for our contacts (``enabled=False``: nothing) and accept through relays.
    relay: RelayLimits = field(default_factory=RelayLimits)
    #: What we spend running our contacts' DHT operations (``enabled=False``: nothing).
    dht_proxy: DhtProxyLimits = field(default_factory=DhtProxyLimits)
    #: Relays tried at once for a device no direct dial reaches.
    max_relays: int = 3
    #: Seconds of direct dialling after which relays are tried too (if none worked yet).
    relay_after: float = 2.0
    #: Contacts announced on the LAN too (no DHT needed); None: off (Tor mode, tests).
    lan: LanConfig | None = None
    #: Upgrade relayed sessions to direct ones by punching coordinated over them.
    upgrade: bool = True
    #: Write and read candidate records (PROTOCOL.md "Candidate records (1.6)").
    candidates: bool = True

    def rendezvous(self) -> RendezvousConfig:
        return RendezvousConfig(
            round_interval=self.round_interval,
            first_retry=self.first_retry,
            max_retry=self.max_retry,
            reannounce=self.reannounce,
            republish=self.republish,
            max_lookups=self.max_lookups,
        )


@dataclass(eq=False)
class _Live:
    peer: PeerKey
    conn: SessionConnection
    initiator: bytes  # identity key of the side that dialled
    via: str = "tcp"  # what carries it: "tcp", "udp" (QUIC, maybe punched), "relay via ..."
    relay: bytes | None = None  # identity key of the relay that carries it, if any
    cert: DeviceCertificate | None = None  # the peer's, as its handshake showed it
    upgrade: dcutr.Upgrade | None = None  # relayed: the exchange toward a direct path
    timer: CoreTimer | None = None

    @property
    def contact(self) -> bytes:
        return self.peer[0]


class Peering:
    """Owns the session listener, the rendezvous and the live sessions (one per device)."""

    def __init__(
        self,
        identity: Identity,
        device: DeviceKey,
        certificate: DeviceCertificate,
        dht: DhtService | DhtViaContacts | None,
        config: PeeringConfig,
        *,
        contacts: Directory,
        on_established: Callable[[bytes], None],
        on_closed: Callable[[bytes, str], None],
        on_data: Callable[[bytes, bytes, bytes], None],
        on_switched: Callable[[bytes], None] | None = None,
        dialer: Dialer | None = None,
        on_stream: Callable[[PeerKey, SessionConnection, object], None] | None = None,
        own_devices: OwnCerts | None = None,
        on_own_device: Callable[[bytes, bool], None] | None = None,
    ) -> None:
        self.identity = identity
        #: How sessions are carried: any "connect me to this address" -> byte stream.
        self.dialer: Dialer = dialer if dialer is not None else TcpDialer()
        self.me = identity.public_key
        self.device = device
        self.certificate = certificate
        self.dht = dht
        self.config = config
        self._contacts = contacts
        self._on_established = on_established
        self._on_closed = on_closed
        self._on_data = on_data
        #: Told when a session in use is replaced by the one both ends keep.
        self._on_switched = on_switched or (lambda contact: None)
        #: Substream events of an authenticated session, and its end (file transfer).
        self._on_stream = on_stream
        #: Our other devices: sessions to them carry history sync, not conversations.
        self._own = own_devices
        self._on_own_device = on_own_device or (lambda device, up: None)
        #: Told when a contact revokes one of its devices (offline delivery resets).
        self.on_contact_revoked: Callable[[bytes], None] | None = None
        self.sessions: dict[PeerKey, _Live] = {}
        #: Without any DHT (not even through a contact) there is no rendezvous: sessions
        #: are only dialled by hand (:meth:`dial`) or accepted.
        self.rendezvous: Rendezvous | None = None
        if dht is not None:
            self.rendezvous = Rendezvous(
                identity, certificate, dht, config.rendezvous(), self, contacts, own_devices,
                candidates=self.own_candidates if config.candidates else None,
            )  # fmt: skip
        #: Our onion service (Tor mode), a candidate for contacts: ``xxx.onion:PORT``.
        self.onion: tuple[str, int] | None = None
        self._tasks = TaskOwner()
        self._server: TcpListener | None = None
        #: Inbound connections: per-source caps, eviction, a pool for refusals.
        self.admission = Admission(config.admission)
        #: QUIC on the DHT's socket (None without a real DHT socket, or udp off).
        self.quic: QuicEndpoint | None = None
        self._quic_dialer: QuicDialer | None = None
        self._quic_listener: QuicListener | None = None
        #: The LAN rendezvous (discovery/lan_service.py), when configured and started.
        self.lan: LanService | None = None
        self.port = 0
        # Sessions speak substreams (relay hops ride on them) and say whether we relay
        # and whether we run DHT operations for the peer (only with a DHT of our own).
        own_dht = dht if isinstance(dht, DhtService) else None
        #: Our contacts' DHT operations, run on our DHT (PROTOCOL.md "The DHT through a
        #: contact"); and, in Tor mode, ours through theirs.
        self.dht_server = DhtProxyServer(own_dht, config.dht_proxy, self._spawn)
        self.dht_client = dht if isinstance(dht, DhtViaContacts) else None
        caps = config.session.extra_caps | (CAPS_RELAY if config.relay.enabled else 0)
        caps |= CAPS_DHT if self.dht_server.enabled and own_dht is not None else 0
        if config.upgrade and config.udp and isinstance(dht, DhtService):
            caps |= CAPS_UPGRADE
        self._session_config = dataclasses.replace(config.session, substreams=True, extra_caps=caps)
        self.relay = RelayService(
            self.me,
            config.relay,
            session_of=self._direct_conn,
            on_incoming=self._accept_relayed,
            spawn=self._spawn,
            timeout=config.dial_timeout,
        )
        #: Devices the last reach() found but could not reach, direct or relayed (at
        #: most one entry per contact device).
        self._unreached: dict[PeerKey, DeviceCertificate] = {}
        self._sweeping = False
        self.stats: dict[str, int] = {
            "dials": 0,
            "accepted": 0,
            "refused": 0,  # not a contact, or a revoked device
            "sessions_tcp": 0,
            "sessions_udp": 0,
            "sessions_relay": 0,
            "relay_dials": 0,
            "substreams_refused": 0,  # a substream for a service we do not run
            "upgrades": 0,  # relayed sessions an upgrade exchange ran on
            "upgrade_dropped": 0,  # upgrade payloads on a session that runs none
            "candidates_refused": 0,  # a record's candidate we may not dial (see dialable)
        }
        #: What the upgrade exchanges did and dropped, all sessions together.
        self.upgrade_stats: Counter[str] = Counter()

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        udp = isinstance(self.dht, DhtService) and self.config.udp
        port = self.config.port
        if port == 0 and isinstance(self.dht, DhtService):
            # The rendezvous announces the DHT socket's port (implied_port): a public
            # host is then reachable on TCP and UDP at the one address others find.
            try:
                self._server = await TcpListener.start(
                    self.config.host, self.dht.addr[1], self._accept
                )
            except OSError:
                log.info("TCP port %d is taken; sessions listen on another", self.dht.addr[1])
        if self._server is None:
            self._server = await TcpListener.start(self.config.host, port, self._accept)
        self.port = self._server.port
        if isinstance(self.dht, DhtService) and (addr6 := self.dht.addr6) is not None:
            await listen_v6(self._server, addr6)
        if udp:
            assert isinstance(self.dht, DhtService)
            self.quic = QuicEndpoint.on(self.dht)
            self._quic_listener = QuicListener(self.quic, self.dht.addr[1], self._accept)
            self._quic_dialer = QuicDialer(self.quic, timeout=self.config.dial_timeout)
        if self.rendezvous is not None:
            self._spawn(self.rendezvous.run(self.port, self._spawn))
        if self.config.lan is not None:
            try:
                self.lan = await LanService.start(
                    self.identity, self.certificate, self.port, self.config.lan, self,
                    self._contacts, self._spawn,
                )  # fmt: skip
            except OSError as exc:  # no multicast route, no such interface
                log.warning("no LAN discovery of contacts: %s", exc)

    async def stop(self) -> None:
        if self.lan is not None:
            self.lan.close()
        if self._server is not None:
            self._server.close()
        if self._quic_listener is not None:
            await self._quic_listener.aclose()
        for live in list(self.sessions.values()):
            live.conn.close("shutting down")
        await self._tasks.cancel_all()
        self.relay.close()
        if self._server is not None:
            await self._server.aclose()
        if self.quic is not None:
            await self.quic.aclose()
            if isinstance(self.dht, DhtService):
                self.dht.share_socket(None)

    def _spawn(self, coro: Any) -> asyncio.Task[Any]:
        return self._tasks.spawn(coro)

    def poke(self, contact: bytes | None = None) -> None:
        """Look for contacts now (a contact was added, the network came back...)."""
        if self.rendezvous is not None:
            self.rendezvous.poke(contact)
        if self.lan is not None:
            self.lan.refresh(contact, announce=True)

    # ------------------------------------------------------------------ sessions

    def _of(self, contact: bytes) -> list[_Live]:
        return [live for key, live in self.sessions.items() if key[0] == contact]

    def is_online(self, contact: bytes) -> bool:
        return bool(self._of(contact))

    def connected(self, contact: bytes) -> bool:
        """A direct session to every device of ``contact`` we know (the rendezvous keeps
        looking while one is missing or only relayed)."""
        direct = {key[1] for key, live in self.sessions.items()
                  if key[0] == contact and live.relay is None}  # fmt: skip
        return bool(direct) and all(c.device_id in direct for c in self.certs_of(contact))

    def certs_of(self, contact: bytes) -> list[DeviceCertificate]:
        """The devices of ``contact`` to hold sessions with; for us, our other devices."""
        if contact == self.me:
            if self._own is None:
                return []
            return [c for c in self._own.certs() if c.device_id != self.certificate.device_id]
        return self._contacts.certs_of(contact)

    def send_to(self, peer: PeerKey, payload: bytes) -> bool:
        """Send ``payload`` to one device; True if its session took it."""
        live = self.sessions.get(peer)
        if live is None:
            return False
        try:
            live.conn.send(payload)
        except Exception:
            return False
        return True

    def _direct(self, peer: PeerKey) -> bool:
        live = self.sessions.get(peer)
        return live is not None and live.relay is None

    def _direct_conn(self, peer: PeerKey) -> SessionConnection | None:
        """The direct session to ``peer``, for relay hops (no relay over a relay)."""
        live = self.sessions.get(peer)
        return live.conn if live is not None and live.relay is None else None

    def dht_servers(self) -> list[tuple[PeerKey, SessionConnection]]:
        """Live sessions whose peers run DHT operations for us, contacts before our own
        devices, in a stable order."""
        found = [(key, live.conn) for key, live in self.sessions.items() if serves_dht(live.conn)]
        return sorted(found, key=lambda s: (s[0][0] == self.me, s[0]))

    def online_contacts(self) -> set[bytes]:
        return {identity for identity, _ in self.sessions if identity != self.me}

    def send(self, contact: bytes, payload: bytes) -> bool:
        """Send ``payload`` to every live device of ``contact``; True if any took it."""
        sent = False
        for live in self._of(contact):
            try:
                live.conn.send(payload)
            except Exception:
                continue
            sent = True
        return sent

    def path(self, contact: bytes) -> list[str]:
        """What carries each live session to ``contact``: "tcp", "udp" or
        "relay via <relay id, 16 hex digits>"; a direct one over IPv6 says so."""
        return [
            f"{live.via} over IPv6" if _over_ipv6(live) else live.via for live in self._of(contact)
        ]

    def rtt(self, contact: bytes) -> float | None:
        """The smallest measured round-trip time over the live sessions to ``contact``."""
        measured = [live.conn.core.rtt for live in self._of(contact)]
        return min((r for r in measured if r is not None), default=None)

    def drop(self, contact: bytes, reason: str) -> None:
        for live in self._of(contact):
            live.conn.close(reason)

    def revoked_now(self, contact: bytes, device_id: bytes) -> bool:
        """``contact`` (or we: our own identity) has revoked ``device_id``, as known now."""
        if contact == self.me:
            return self._own is not None and device_id in self._own.revoked()
        return device_id in self._contacts.revoked_devices(contact)

    def revoked(self, contact: bytes, device_ids: frozenset[bytes]) -> None:
        """``contact`` revoked these devices: their sessions end now."""
        if contact != self.me and self.on_contact_revoked is not None:
            self.on_contact_revoked(contact)
        for (identity, device), live in list(self.sessions.items()):
            if identity == contact and device in device_ids:
                live.conn.close("device revoked")
        for key in [k for k in self._unreached if k[0] == contact and k[1] in device_ids]:
            del self._unreached[key]

    async def reach(self, candidates: list[Candidate]) -> bool:
        """Dial what the rendezvous found: each device not yet connected, at the
        addresses not yet known to be another of its devices."""
        taken: set[tuple[str, int]] = set()
        contact = b""
        candidates = self._dialable(candidates)
        if self.quic is not None:
            # Punch every address first: the peer's dial, from its own lookup, then
            # passes our NAT while we are still dialling its other addresses.
            for c in candidates:
                if c.transport != "tcp" and not self._direct((c.identity, c.cert.device_id)):
                    # Until a direct session is up: a relayed one keeps punching going.
                    self.quic.punch(
                        c.addr, lambda c=c: self._direct((c.identity, c.cert.device_id))
                    )
        # Relays join in once the direct dials are done, or after ``relay_after`` s of
        # them (a symmetric NAT publishes many ports, each dialled in turn); a direct
        # session that comes up later still replaces the relayed one.
        directs_done = asyncio.Event()
        relayed = asyncio.ensure_future(self._reach_relayed(candidates, directs_done))
        try:
            for c in candidates:
                contact = c.identity
                if self._direct((c.identity, c.cert.device_id)) or c.addr in taken:
                    continue
                if await self.connect(c.identity, c.cert, c.addr, c.transport):
                    taken.add(c.addr)
            directs_done.set()
            await relayed
        finally:
            relayed.cancel()
        return bool(contact) and self.is_online(contact)

    def _dialable(self, candidates: list[Candidate]) -> list[Candidate]:
        """What a record names and we may dial (announced addresses pass as before)."""
        onion_ok = isinstance(self.dialer, ProxyDialer)  # only Tor resolves an onion
        loopback_ok = _is_loopback(self.config.host)
        kept: list[Candidate] = []
        for c in candidates:
            if c.kind != "announced":
                addr = cand.Addr(c.kind, c.transport or "tcp", str(c.addr[0]), c.addr[1])
                if not cand.dialable(addr, onion_ok=onion_ok, loopback_ok=loopback_ok):
                    self.stats["candidates_refused"] += 1
                    continue
                if c.transport == "udp" and self.quic is None:
                    continue  # no QUIC here (a proxy, Tor mode, or udp off)
            kept.append(c)
        return kept

    def set_onion(self, address: str | None) -> None:
        """Our onion service (``xxx.onion:PORT``) is up (or gone): a candidate to publish."""
        if address is None:
            self.onion = None
        else:
            host, _, port = address.rpartition(":")
            self.onion = (host, int(port))
        self.candidates_changed()

    def candidates_changed(self) -> None:
        """A gateway mapping came or went, or the onion service: records are rewritten."""
        if self.rendezvous is not None:
            self.rendezvous.candidates_changed()

    def own_candidates(self) -> list[cand.Addr]:
        """Where contacts may dial this device, best first, for the candidate record:
        the onion service; the gateway's mappings; the reflexive UDP address the DHT's
        nodes agree on; our host addresses (TCP at the session port, UDP at the DHT's).
        Without a DHT node of our own (Tor mode) only the onion: nothing else about our
        network may leave the machine."""
        found: list[cand.Addr] = []
        if self.onion is not None:
            found.append(cand.Addr("onion", "tcp", *self.onion))
        dht = self.dht
        if isinstance(dht, DhtService):
            udp = self.quic is not None
            if dht.port_mapping is not None:
                for proto in ("tcp", "udp") if udp else ("tcp",):
                    if (m := dht.port_mapping.external(proto.upper())) is not None:
                        found.append(cand.Addr("mapped", proto, *m))
            seen = dht.reachability
            if udp and seen.external_ip is not None and seen.external_port is not None:
                found.append(cand.Addr("reflexive", "udp", seen.external_ip, seen.external_port))
            for host, port in self._host_addrs():
                found.append(cand.Addr("host", "tcp", host, self.port))
                if udp:
                    found.append(cand.Addr("host", "udp", host, port))
        kept = [
            a for a in dict.fromkeys(found)
            if a.kind == "onion" or (_literal(a.host) and a.port > 0)
        ]  # fmt: skip
        return kept[: cand.MAX_CANDIDATES]

    async def _reach_relayed(self, candidates: list[Candidate], directs: asyncio.Event) -> None:
        """Each device of ``candidates`` still without a session, through a relay."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(directs.wait(), self.config.relay_after)
        seen: set[bytes] = set()
        for c in candidates:
            device = c.cert.device_id
            if (c.identity, device) not in self.sessions and device not in seen:
                seen.add(device)
                if not await self.connect_relayed(c.identity, c.cert):
                    # Tried again as soon as a relay comes online (_relay_arrived).
                    self._unreached[(c.identity, device)] = c.cert

    def _relay_arrived(self, relay: bytes) -> None:
        """A contact that relays is online: try it for the devices no dial reached."""
        waiting = [(k, c) for k, c in self._unreached.items() if k[0] != relay]
        if waiting and not self._sweeping:
            self._sweeping = True
            self._spawn(self._relay_sweep(waiting))

    async def _relay_sweep(self, waiting: list[tuple[PeerKey, DeviceCertificate]]) -> None:
        try:
            for key, cert in waiting:
                if key not in self.sessions and key[0] in self._contacts.reachable():
                    await self.connect_relayed(key[0], cert)
        finally:
            self._sweeping = False

    def relays_for(self, contact: bytes) -> list[PeerKey]:
        """Live devices of other contacts that announced relaying, over direct sessions."""
        return [
            key
            for key, live in self.sessions.items()
            if key[0] != contact and live.relay is None and relay_capable(live.conn)
        ]

    async def connect_relayed(self, contact: bytes, cert: DeviceCertificate) -> bool:
        """Dial ``contact``'s device ``cert`` through up to ``max_relays`` relays at once;
        the first session wins, the others are cancelled (or closed as duplicates)."""
        relays = self.relays_for(contact)[: self.config.max_relays]
        if not relays:
            return False
        target = (contact, cert.device_id)
        self.stats["relay_dials"] += 1
        return await _first_to_succeed(
            self.dial(contact, cert, ("relay", 0), RelayDialer(self.relay, r, target))
            for r in relays
        )

    async def dial_known(self, contact: bytes, addr: tuple[str, int]) -> bool:
        """Dial ``contact`` at an address given by hand, expecting the devices whose
        certificates we already hold (learned over an earlier session or a request):
        the way in when there is no rendezvous (Tor mode)."""
        certs = self._contacts.certs_of(contact)
        return await self.reach([Candidate(contact, c, addr) for c in certs])

    async def connect(
        self,
        contact: bytes,
        cert: DeviceCertificate,
        addr: Address,
        transport: str | None = None,
    ) -> bool:
        """Happy eyeballs: dial ``addr`` over TCP and QUIC at once (or only the
        ``transport`` a candidate names); the first authenticated session wins and the
        other attempt is cancelled (or, if it too completes, closed as a duplicate by
        :meth:`_adopt`). An onion address goes over TCP only, through the proxy."""
        dialers: list[Dialer] = [self.dialer] if transport != "udp" else []
        if self._quic_dialer is not None and transport != "tcp" and _literal(str(addr[0])):
            dialers.append(self._quic_dialer)
        return await _first_to_succeed(self.dial(contact, cert, addr, d) for d in dialers)

    # ------------------------------------------------------------ dial and accept

    async def dial(
        self,
        contact: bytes,
        cert: DeviceCertificate,
        addr: Address,
        dialer: Dialer | None = None,
    ) -> bool:
        """Open a session to ``addr`` (through ``dialer``, by default the TCP one),
        expecting ``contact``'s device ``cert``."""
        self.stats["dials"] += 1
        try:
            async with asyncio.timeout(self.config.dial_timeout):
                stream = await (dialer or self.dialer).dial(addr)
        except (OSError, TimeoutError) as exc:
            if isinstance(dialer, RelayDialer):
                log.info("relay %s: %s", dialer.relay[0].hex()[:16], exc)
            return False

        def authorize(identity: bytes, remote: DeviceCertificate) -> bool:
            if identity == contact and self.revoked_now(contact, remote.device_id):
                # The certificate was read before the revocation came (from any source):
                # a dial that was in flight makes no session with the revoked device.
                self.stats["refused"] += 1
                log.warning("no session with %s's device %s: revoked while dialling",
                            contact.hex()[:16], remote.device_id.hex()[:8])  # fmt: skip
                return False
            return identity == contact and remote.device_key == cert.device_key

        try:
            session = Session(
                "initiator",
                self.device,
                self.certificate,
                authorize,
                remote_static=cert.device_key,
                now=asyncio.get_running_loop().time(),
                config=self._session_config,
            )
        except ValueError as exc:  # e.g. a low-order key in a published certificate
            log.warning("cannot dial %s: %s", contact.hex()[:16], exc)
            stream.abort()
            return False
        ready: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self._spawn(self._run(session, stream, initiator=self.me, ready=ready))
        try:
            return await asyncio.wait_for(ready, self.config.session.handshake_timeout + 1)
        except TimeoutError:
            return False

    async def _accept_relayed(self, stream: RelayStream) -> None:
        """A circuit a relay brought us: the normal accept path, admission included."""
        await self._accept(stream)

    async def _accept(self, stream: ByteStream) -> None:
        with admitted(self.admission, stream) as (ticket, watched):
            await self._respond(ticket, watched)

    async def _respond(self, ticket: Ticket, stream: ByteStream) -> None:
        """Run an admitted inbound stream as a session responder."""
        admission = self.admission
        contacts = set(self._contacts.reachable())

        def authorize(identity: bytes, remote: DeviceCertificate) -> bool:
            if identity == self.me:  # another of our devices, if it is one we list
                ok = any(c.device_key == remote.device_key for c in self.certs_of(self.me))
                if not ok:
                    self.stats["refused"] += 1
                    admission.refused(ticket)
                    log.warning("refused a session from an unlisted device of ours")
                return ok
            if identity in contacts and remote.device_id in self._contacts.revoked_devices(
                identity
            ):
                self.stats["refused"] += 1
                admission.refused(ticket)
                log.warning("refused a session from a revoked device of %s", identity.hex()[:16])
                return False
            ok = identity in contacts
            if not ok:
                self.stats["refused"] += 1
                admission.refused(ticket)  # lingers in its own pool, not a handshake slot
                log.warning(
                    "refused a session from a key that is not a contact: %s", identity.hex()[:16]
                )
            return ok

        session = Session(
            "responder",
            self.device,
            self.certificate,
            authorize,
            now=asyncio.get_running_loop().time(),
            config=self._session_config,
        )
        await self._run(
            session,
            stream,
            initiator=None,
            ready=None,
            on_handshake=lambda: admission.established(ticket),
            on_failed=lambda: admission.refused(ticket),
        )

    async def _run(
        self,
        session: Session,
        stream: ByteStream,
        *,
        initiator: bytes | None,
        ready: asyncio.Future[bool] | None,
        on_handshake: Callable[[], None] | None = None,
        on_failed: Callable[[], None] | None = None,
    ) -> None:
        peer: list[PeerKey] = []  # set once the handshake has authenticated it
        inner = stream.inner if isinstance(stream, WatchedStream) else stream
        stream_relayed = isinstance(inner, RelayStream)
        conn_box: list[SessionConnection] = []
        owners: dict[int, int] = {}  # the peer's substreams: id -> the Service named

        def on_event(event: object) -> None:
            if isinstance(event, HandshakeComplete):
                if on_handshake is not None:
                    on_handshake()
                contact = event.remote_identity
                peer.append((contact, event.remote_certificate.device_id))
                dialler = initiator if initiator is not None else contact
                carrier = stream.inner if isinstance(stream, WatchedStream) else stream
                via = "udp" if isinstance(carrier, QuicStream) else "tcp"
                relay = carrier.relay if isinstance(carrier, RelayStream) else None
                if relay is not None:
                    via = f"relay via {relay.hex()[:16]}"
                live = _Live(peer[0], conn_box[0], dialler, via, relay, event.remote_certificate)
                if self._adopt(live):
                    self.stats["sessions_relay" if relay else f"sessions_{via}"] += 1
                else:
                    conn_box[0].close("duplicate session")
                if ready is not None and not ready.done():
                    ready.set_result(True)  # ours or the one kept: a session exists
            elif isinstance(event, DataReceived):
                live = self.sessions.get(peer[0]) if peer else None
                if event.payload.startswith(dcutr.MAGIC):
                    self._upgrade_received(live, conn_box[0], event.payload)
                elif live is not None and live.conn is conn_box[0]:
                    if event.payload.startswith(DHT_PROXY_MAGIC):
                        dht_proxy.route(
                            event.payload, peer[0], live.conn, self.dht_server, self.dht_client
                        )
                    else:
                        self._on_data(peer[0][0], peer[0][1], event.payload)
            elif isinstance(event, _SUBSTREAM_EVENTS):
                if peer:
                    self._on_substream(peer[0], conn_box[0], owners, event)
            elif isinstance(event, StreamsAvailable):
                if peer and relay_capable(conn_box[0]) and not stream_relayed:
                    self._relay_arrived(peer[0][0])
                if peer and self.dht_client is not None:
                    self.dht_client.servers_changed()  # its capabilities are known now
                    if serves_dht(conn_box[0]):
                        self.poke()  # the DHT is reachable now: look for every contact
                if peer and stream_relayed:
                    self._upgrade_start(peer[0], conn_box[0])
                if peer:
                    self._to_files(peer[0], conn_box[0], event)
            if isinstance(event, SessionClosed | SessionFailed):
                if peer:
                    self._to_files(peer[0], conn_box[0], event)
                if isinstance(event, SessionFailed):
                    log.info("session failed: %s", event.reason)
                    if on_failed is not None:
                        on_failed()
                if ready is not None and not ready.done():
                    ready.set_result(False)

        conn = SessionConnection.over(stream, session)
        conn_box.append(conn)
        try:
            await run_session_over(conn, on_event)
        except Exception as exc:
            log.info("session ended with %s", exc)
        finally:
            self.relay.session_ended(conn)
            self.dht_server.session_ended(conn)
            if (ended := self.sessions.get(peer[0]) if peer else None) and ended.conn is conn:
                self._upgrade_end(ended)
            if ready is not None and not ready.done():
                ready.set_result(False)
            live = self.sessions.get(peer[0]) if peer else None
            if live is not None and live.conn is conn:
                del self.sessions[live.peer]
                if self.dht_client is not None:
                    self.dht_client.session_ended(live.peer)
                if live.contact == self.me:
                    self._on_own_device(live.peer[1], False)
                elif not self.is_online(live.contact):
                    self._on_closed(live.contact, "disconnected")
                self.poke(live.contact)
            if not stream.is_closing():
                stream.abort()  # the pump closes it; this is for a pump that never ran

    # ------------------------------------------------ relayed -> direct (dcutr)

    def _upgrade_of(self, live: _Live | None, conn: SessionConnection) -> dcutr.Upgrade | None:
        """The upgrade exchange of a kept relayed session to a peer that runs them."""
        if live is None or live.conn is not conn or live.relay is None or self.quic is None:
            return None
        if live.upgrade is None and self.config.upgrade and conn.core.peer_caps & CAPS_UPGRADE:
            upgrade = dcutr.Upgrade(
                live.initiator == self.me,
                self._own_addrs,
                self._own_hosts,
                stats=self.upgrade_stats,
            )
            live.upgrade = upgrade
            live.timer = CoreTimer(
                None,
                upgrade.next_timer,
                lambda: self._upgrade_act(live, upgrade.handle_timer(_now())),
            )
            self.stats["upgrades"] += 1
        return live.upgrade

    def _upgrade_start(self, peer: PeerKey, conn: SessionConnection) -> None:
        """A relayed session's peer announced its capabilities: the dialler begins."""
        upgrade = self._upgrade_of(self.sessions.get(peer), conn)
        if upgrade is not None:
            self._upgrade_act(self.sessions[peer], upgrade.start(_now()))

    def _upgrade_received(
        self, live: _Live | None, conn: SessionConnection, payload: bytes
    ) -> None:
        upgrade = self._upgrade_of(live, conn)
        if upgrade is None or live is None:
            self.stats["upgrade_dropped"] += 1  # direct, not kept, or we run none
            return
        self._upgrade_act(live, upgrade.receive(payload, _now()))

    def _upgrade_act(self, live: _Live, actions: list[dcutr.Send | dcutr.Punch]) -> None:
        for action in actions:
            if isinstance(action, dcutr.Send):
                with contextlib.suppress(Exception):  # the session is ending
                    live.conn.send(action.payload)
            elif action.addrs and self.quic is not None and live.cert is not None:
                log.info(
                    "punching %s at %d addresses learned over the relay",
                    live.contact.hex()[:16],
                    len(action.addrs),
                )
                for addr in action.addrs:  # until direct, or the relayed one is gone
                    self.quic.punch(addr, lambda: self.sessions.get(live.peer) is not live)
                cert = live.cert
                self._spawn(
                    _first_to_succeed(self.connect(live.contact, cert, a) for a in action.addrs)
                )
        if live.timer is not None:
            live.timer.rearm()

    @staticmethod
    def _upgrade_end(live: _Live) -> None:
        """The relayed session is replaced or over: its exchange stops."""
        if live.upgrade is not None:
            live.upgrade.finish()
        if live.timer is not None:
            live.timer.cancel()

    def _own_addrs(self) -> list[Address]:
        """Where we may be reached, for a peer's punch: the gateway's mapping, the
        reflexive address the DHT's nodes agree on, and our host addresses."""
        dht = self.dht
        if not isinstance(dht, DhtService):
            return []
        found: list[Address] = []
        if dht.port_mapping is not None and (m := dht.port_mapping.external("UDP")) is not None:
            found.append(m)
        seen = dht.reachability
        if seen.external_ip is not None and seen.external_port is not None:
            found.append((seen.external_ip, seen.external_port))
        found += self._host_addrs()
        return [a for a in dict.fromkeys(found) if _literal(a[0])][: dcutr.MAX_ADDRS]

    def _own_hosts(self) -> list[str]:
        return [host for host, _ in self._host_addrs()]

    def _host_addrs(self) -> list[Address]:
        """The DHT sockets' own addresses; for one bound to any address, the one the
        system sends from by its default route (on IPv6 often the public address)."""
        dht = self.dht
        if not isinstance(dht, DhtService):
            return []
        out: list[Address] = []
        for addr, family in ((dht.addr, socket.AF_INET), (dht.addr6, socket.AF_INET6)):
            if addr is None:
                continue
            host: str | None = addr[0]
            if host in ("0.0.0.0", "::"):
                host = route_source(family)
            if host is not None:
                out.append((host, addr[1]))
        return out

    def _on_substream(
        self, peer: PeerKey, conn: SessionConnection, owners: dict[int, int], event: Any
    ) -> None:
        """Hand a substream event to the service its OPEN named; ours go to every one."""
        sid = event.stream_id
        if isinstance(event, StreamOpened):
            owners[sid] = event.service
            if event.service not in (Service.RELAY, Service.FILES):
                self.stats["substreams_refused"] += 1
                log.info("reset a substream for service %d, which we do not run", event.service)
                conn.reset_stream(sid, "unknown service")
                return
        service = owners.get(sid)
        if isinstance(event, StreamClosed | StreamReset):
            owners.pop(sid, None)
        if service is None or service == Service.RELAY:
            self.relay.on_stream_event(peer, conn, event)
        if service is None or service == Service.FILES:
            self._to_files(peer, conn, event)

    def _to_files(self, peer: PeerKey, conn: SessionConnection, event: object) -> None:
        """File transfer runs on the session kept for a device (and hears it end)."""
        if self._on_stream is None:
            return
        live = self.sessions.get(peer)
        ended = isinstance(event, SessionClosed | SessionFailed)
        if ended or (live is not None and live.conn is conn):
            self._on_stream(peer, conn, event)

    def _adopt(self, live: _Live) -> bool:
        """Register a new session; if one to that device exists, keep the one both
        sides keep (:func:`btchat.net.tiebreak.replaces`)."""
        current = self.sessions.get(live.peer)
        if current is not None:
            if not tiebreak.replaces(
                self.me,
                live.contact,
                current.initiator,
                live.initiator,
                current_relayed=current.relay is not None,
                new_relayed=live.relay is not None,
            ):
                return False
            log.info("a duplicate session with %s replaces the one in use", live.contact.hex()[:16])
            current.conn.close("duplicate session")
            self._upgrade_end(current)
        first = not self.is_online(live.contact)
        self.sessions[live.peer] = live
        self._unreached.pop(live.peer, None)
        if live.contact == self.me:
            self._on_own_device(live.peer[1], True)
        elif first:
            if self.lan is not None:
                self.lan.refresh()  # stop announcing to it
            self._on_established(live.contact)
        elif current is not None:
            self._on_switched(live.contact)
        return True


#: Substream events: relay hops (:mod:`btchat.net.relay`).
_SUBSTREAM_EVENTS = (StreamOpened, StreamData, StreamClosed, StreamReset, StreamWritable)


async def _first_to_succeed(dials: Iterable[Coroutine[Any, Any, bool]]) -> bool:
    """Run ``dials`` at once; True as soon as one of them is, the rest cancelled."""
    attempts = [asyncio.ensure_future(d) for d in dials]
    try:
        for done in asyncio.as_completed(attempts):
            if await done:
                return True
        return False
    finally:
        for attempt in attempts:
            attempt.cancel()
        await asyncio.gather(*attempts, return_exceptions=True)


def _now() -> float:
    return asyncio.get_running_loop().time()


#: Where "the internet" is for :func:`route_source` (documentation ranges: no packet is
#: sent, only the system's route to them is looked up).
_SOMEWHERE = {socket.AF_INET: "198.51.100.1", socket.AF_INET6: "2001:db8::1"}


def route_source(family: int) -> str | None:
    """The address this host sends from by its default route of ``family`` (connecting
    a UDP socket sends nothing); None without such a route, or a link-local one."""
    try:
        with socket.socket(family, socket.SOCK_DGRAM) as probe:
            probe.connect((_SOMEWHERE[family], 9))
            host = str(probe.getsockname()[0])
    except OSError:
        return None
    ip = ipaddress.ip_address(host.split("%")[0])
    return None if ip.is_link_local or ip.is_unspecified else host


def _literal(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def _is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _over_ipv6(live: _Live) -> bool:
    """A direct session whose carrier's peer address is IPv6."""
    addr = live.conn.stream.remote_address if live.relay is None else None
    return addr is not None and ":" in str(addr[0])

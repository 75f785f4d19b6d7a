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
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from btchat.discovery.rendezvous import (
    DEVICES_SALT,
    Candidate,
    Rendezvous,
    RendezvousConfig,
    decode_device_list,
    encode_device_list,
)
from btchat.identity.keys import DeviceCertificate, DeviceKey, Identity
from btchat.net import tiebreak
from btchat.net.dht_service import DhtService
from btchat.net.transport import ByteStream, Dialer, TcpDialer, TcpListener
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

__all__ = [
    "DEVICES_SALT",
    "PeerKey",
    "Peering",
    "PeeringConfig",
    "decode_device_list",
    "encode_device_list",
]

log = logging.getLogger(__name__)

#: Inbound connections still in their handshake at once. A refused handshake holds its
#: socket until the handshake deadline (so every refusal looks alike); this bounds what
#: a prober can make us hold.
MAX_PENDING_HANDSHAKES = 64

#: A peer is one device of one identity: (identity key, device id).
PeerKey = tuple[bytes, bytes]


@dataclass(frozen=True)
class PeeringConfig:
    host: str = "0.0.0.0"
    port: int = 0  # TCP port for sessions; 0 = any
    round_interval: float = 20.0  # how often missing contacts are looked for
    first_retry: float = 0.5  # after a failed lookup, retry soon, then back off
    max_retry: float = 60.0
    reannounce: float = 600.0  # BEP 5 peers expire after 30 min; refresh well before
    republish: float = 1800.0  # BEP 44 items expire after ~2 h
    dial_timeout: float = 5.0
    max_lookups: int = 8  # contacts looked for at once (one slow one delays no other)
    session: SessionConfig = field(default_factory=SessionConfig)

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
        dht: DhtService,
        config: PeeringConfig,
        *,
        contacts: Callable[[], list[bytes]],
        certs_of: Callable[[bytes], list[DeviceCertificate]],
        save_certs: Callable[[bytes, list[DeviceCertificate]], None],
        on_established: Callable[[bytes], None],
        on_closed: Callable[[bytes, str], None],
        on_data: Callable[[bytes, bytes, bytes], None],
        on_switched: Callable[[bytes], None],
        dialer: Dialer | None = None,
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
        self._on_switched = on_switched
        self.sessions: dict[PeerKey, _Live] = {}
        self.rendezvous = Rendezvous(
            identity,
            certificate,
            dht,
            config.rendezvous(),
            self,
            contacts=contacts,
            certs_of=certs_of,
            save_certs=save_certs,
        )
        self._tasks = TaskOwner()
        self._server: TcpListener | None = None
        self._handshaking = 0
        self.port = 0
        self.stats: dict[str, int] = {"dials": 0, "accepted": 0, "refused": 0}

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        self._server = await TcpListener.start(self.config.host, self.config.port, self._accept)
        self.port = self._server.port
        self._spawn(self.rendezvous.run(self.port, self._spawn))

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
        for live in list(self.sessions.values()):
            live.conn.close("shutting down")
        await self._tasks.cancel_all()
        if self._server is not None:
            await self._server.aclose()

    def _spawn(self, coro: Any) -> asyncio.Task[Any]:
        return self._tasks.spawn(coro)

    def poke(self, contact: bytes | None = None) -> None:
        """Look for contacts now (a contact was added, the network came back...)."""
        self.rendezvous.poke(contact)

    # ------------------------------------------------------------------ sessions

    def _of(self, contact: bytes) -> list[_Live]:
        return [live for key, live in self.sessions.items() if key[0] == contact]

    def is_online(self, contact: bytes) -> bool:
        return bool(self._of(contact))

    def connected(self, contact: bytes) -> bool:
        return self.is_online(contact)

    def online_contacts(self) -> set[bytes]:
        return {identity for identity, _ in self.sessions}

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

    def drop(self, contact: bytes, reason: str) -> None:
        for live in self._of(contact):
            live.conn.close(reason)

    async def reach(self, candidates: list[Candidate]) -> bool:
        """Dial what the rendezvous found: each device not yet connected, at the
        addresses not yet known to be another of its devices."""
        taken: set[tuple[str, int]] = set()
        contact = b""
        for c in candidates:
            contact = c.identity
            if (c.identity, c.cert.device_id) in self.sessions or c.addr in taken:
                continue
            if await self.dial(c.identity, c.cert, c.addr):
                taken.add(c.addr)
        return bool(contact) and self.is_online(contact)

    # ------------------------------------------------------------ dial and accept

    async def dial(self, contact: bytes, cert: DeviceCertificate, addr: tuple[str, int]) -> bool:
        """Open a session to ``addr``, expecting ``contact``'s device ``cert``."""
        self.stats["dials"] += 1
        try:
            async with asyncio.timeout(self.config.dial_timeout):
                stream = await self.dialer.dial(addr)
        except (OSError, TimeoutError):
            return False

        def authorize(identity: bytes, remote: DeviceCertificate) -> bool:
            return identity == contact and remote.device_key == cert.device_key

        try:
            session = Session(
                "initiator",
                self.device,
                self.certificate,
                authorize,
                remote_static=cert.device_key,
                now=asyncio.get_running_loop().time(),
                config=self.config.session,
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

    async def _accept(self, stream: ByteStream) -> None:
        if self._handshaking >= MAX_PENDING_HANDSHAKES:
            self.stats["refused"] += 1
            stream.abort()
            return
        contacts = set(self._contacts())

        def authorize(identity: bytes, remote: DeviceCertificate) -> bool:
            ok = identity in contacts
            if not ok:
                self.stats["refused"] += 1
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
            config=self.config.session,
        )
        self._handshaking += 1
        released = False

        def handshake_over() -> None:
            # Once per connection: when the handshake completes, or when it never does.
            nonlocal released
            if not released:
                released = True
                self._handshaking -= 1

        try:
            await self._run(
                session,
                stream,
                initiator=None,
                ready=None,
                on_handshake=handshake_over,
            )
        finally:
            handshake_over()

    async def _run(
        self,
        session: Session,
        stream: ByteStream,
        *,
        initiator: bytes | None,
        ready: asyncio.Future[bool] | None,
        on_handshake: Callable[[], None] | None = None,
    ) -> None:
        peer: list[PeerKey] = []  # set once the handshake has authenticated it
        conn_box: list[SessionConnection] = []

        def on_event(event: object) -> None:
            if isinstance(event, HandshakeComplete):
                if on_handshake is not None:
                    on_handshake()
                contact = event.remote_identity
                peer.append((contact, event.remote_certificate.device_id))
                dialler = initiator if initiator is not None else contact
                if not self._adopt(_Live(peer[0], conn_box[0], dialler)):
                    conn_box[0].close("duplicate session")
                if ready is not None and not ready.done():
                    ready.set_result(True)  # ours or the one kept: a session exists
            elif isinstance(event, DataReceived):
                live = self.sessions.get(peer[0]) if peer else None
                if live is not None and live.conn is conn_box[0]:
                    self._on_data(peer[0][0], peer[0][1], event.payload)
            elif isinstance(event, SessionClosed | SessionFailed):
                if isinstance(event, SessionFailed):
                    log.info("session failed: %s", event.reason)
                if ready is not None and not ready.done():
                    ready.set_result(False)

        conn = SessionConnection.over(stream, session)
        conn_box.append(conn)
        try:
            await run_session_over(conn, on_event)
        except Exception as exc:
            log.info("session ended with %s", exc)
        finally:
            if ready is not None and not ready.done():
                ready.set_result(False)
            live = self.sessions.get(peer[0]) if peer else None
            if live is not None and live.conn is conn:
                del self.sessions[live.peer]
                if not self.is_online(live.contact):
                    self._on_closed(live.contact, "disconnected")
                self.poke(live.contact)
            if not stream.is_closing():
                stream.abort()  # the pump closes it; this is for a pump that never ran

    def _adopt(self, live: _Live) -> bool:
        """Register a new session; if one to that device exists, keep the one both
        sides keep (:func:`btchat.net.tiebreak.replaces`)."""
        current = self.sessions.get(live.peer)
        if current is not None:
            if not tiebreak.replaces(self.me, live.contact, current.initiator, live.initiator):
                return False
            log.info("a duplicate session with %s replaces the one in use", live.contact.hex()[:16])
            current.conn.close("duplicate session")
        first = not self.is_online(live.contact)
        self.sessions[live.peer] = live
        if first:
            self._on_established(live.contact)
        elif current is not None:
            self._on_switched(live.contact)
        return True

"""Finding contacts through the DHT rendezvous and keeping one session per contact.

How this works: for every contact we derive a pairwise secret and from it rotating
rendezvous infohashes (``identity/rendezvous.py``). We announce our session port on
"where I am for them" and look up "where they are for me"; a DHT observer sees random
infohashes that change every hour. To authenticate a session we need the contact's
device key, which their identity publishes as a signed device list (a BEP 44 mutable
item); we fetch and verify it. Sessions are Noise IK over TCP (``session/``): a
responder answers only contacts, so a prober learns nothing about who is behind a port.

If both sides dial at once, two sessions may complete. Both sides keep the one dialled
by the smaller identity key and close the other, so they converge on the same one.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from btchat.codec.bencode import DecodeError, decode, encode
from btchat.dht import bep44
from btchat.identity.keys import CertificateError, DeviceCertificate, DeviceKey, Identity
from btchat.identity.rendezvous import announce_targets, lookup_targets, pairwise_secret
from btchat.net.dht_service import DhtError, DhtService
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

__all__ = ["DEVICES_SALT", "Peering", "PeeringConfig", "decode_device_list", "encode_device_list"]

log = logging.getLogger(__name__)

#: BEP 44 salt of the signed device list published under an identity key.
DEVICES_SALT = b"btchat/devices"
#: Devices listed per identity (the item must stay under BEP 44's 1000 bytes).
MAX_DEVICES = 5
#: Inbound connections still in their handshake at once. A refused handshake holds its
#: socket until the handshake deadline (so every refusal looks alike); this bounds what
#: a prober can make us hold.
MAX_PENDING_HANDSHAKES = 64


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
    session: SessionConfig = field(default_factory=SessionConfig)


def encode_device_list(certs: list[DeviceCertificate]) -> bytes:
    return encode({b"certs": [c.encode() for c in certs[:MAX_DEVICES]]})


def decode_device_list(v_bencoded: bytes, identity: bytes) -> list[DeviceCertificate]:
    """Certificates in a fetched device list that verify and belong to ``identity``."""
    try:
        value = decode(v_bencoded)
    except DecodeError:
        return []
    raw = value.get(b"certs") if isinstance(value, dict) else None
    out: list[DeviceCertificate] = []
    for blob in raw if isinstance(raw, list) else []:
        if not isinstance(blob, bytes):
            continue
        try:
            cert = DeviceCertificate.decode(blob)
        except CertificateError:
            continue
        if cert.identity == identity:
            out.append(cert)
    return out[:MAX_DEVICES]


@dataclass(eq=False)
class _Live:
    contact: bytes
    conn: SessionConnection
    initiator: bytes  # identity key of the side that dialled


class Peering:
    """Owns the session listener, the rendezvous loop and the live sessions."""

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
        self._certs_of = certs_of
        self._save_certs = save_certs
        self._on_established = on_established
        self._on_closed = on_closed
        self._on_data = on_data
        self.sessions: dict[bytes, _Live] = {}
        self._secrets: dict[bytes, bytes] = {}
        self._announced: dict[bytes, float] = {}
        self._next_try: dict[bytes, float] = {}
        self._backoff: dict[bytes, float] = {}
        self._dialing: set[bytes] = set()
        self._tasks = TaskOwner()
        self._server: TcpListener | None = None
        self._wake = asyncio.Event()
        self._handshaking = 0
        self.port = 0
        self.stats: dict[str, int] = {"dials": 0, "accepted": 0, "refused": 0, "lookups": 0}

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        self._server = await TcpListener.start(self.config.host, self.config.port, self._accept)
        self.port = self._server.port
        self._spawn(self._publish_loop())
        self._spawn(self._rendezvous_loop())

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
        if contact is not None:
            self._next_try.pop(contact, None)
            self._backoff.pop(contact, None)
        else:
            self._next_try.clear()
        self._wake.set()

    def is_online(self, contact: bytes) -> bool:
        return contact in self.sessions

    def send(self, contact: bytes, payload: bytes) -> bool:
        live = self.sessions.get(contact)
        if live is None:
            return False
        try:
            live.conn.send(payload)
        except Exception:
            return False
        return True

    def drop(self, contact: bytes, reason: str) -> None:
        live = self.sessions.get(contact)
        if live is not None:
            live.conn.close(reason)

    # ------------------------------------------------------------------ publishing

    async def _publish_loop(self) -> None:
        while True:
            try:
                item = bep44.sign_mutable(
                    self.identity.private_key,
                    encode_device_list([self.certificate]),
                    int(time.time()),
                    DEVICES_SALT,
                )
                await self.dht.put_mutable(item)
                delay = self.config.republish
            except DhtError as exc:
                # Usually: not joined yet. Retry soon; contacts need this list to dial us.
                log.info("could not publish the device list yet: %s", exc)
                delay = 0.5
            await asyncio.sleep(delay)

    async def fetch_certs(self, contact: bytes) -> list[DeviceCertificate]:
        certs = self._certs_of(contact)
        if certs:
            return certs
        result = await self.dht.get_mutable(contact, DEVICES_SALT)
        if result.v_bencoded is None:
            return []
        certs = decode_device_list(result.v_bencoded, contact)
        if certs:
            self._save_certs(contact, certs)
        return certs

    # ------------------------------------------------------------------ rendezvous

    def _secret(self, contact: bytes) -> bytes:
        secret = self._secrets.get(contact)
        if secret is None:
            secret = self._secrets[contact] = pairwise_secret(self.identity, contact)
        return secret

    async def _rendezvous_loop(self) -> None:
        while True:
            self._wake.clear()
            contacts = self._contacts()
            await asyncio.gather(*(self._tend(c) for c in contacts), return_exceptions=True)
            now = time.monotonic()
            waits = [t - now for c, t in self._next_try.items() if c not in self.sessions]
            delay = min([self.config.round_interval, *waits])
            with contextlib.suppress(TimeoutError):  # not wait_for: see ChannelService
                async with asyncio.timeout(max(0.05, delay)):
                    await self._wake.wait()

    async def _tend(self, contact: bytes) -> None:
        secret = self._secret(contact)
        wall, now = time.time(), time.monotonic()
        for ih in announce_targets(secret, self.me, contact, wall):
            if now - self._announced.get(ih, -1e18) >= self.config.reannounce:
                try:
                    await self.dht.announce(ih, self.port)
                    self._announced[ih] = now
                except DhtError as exc:
                    log.debug("rendezvous announce failed: %s", exc)
        if contact in self.sessions or contact in self._dialing:
            return
        if now < self._next_try.get(contact, 0.0):
            return
        found = await self._look_and_dial(contact, secret, wall)
        if found:
            self._backoff.pop(contact, None)
            self._next_try.pop(contact, None)
        else:
            previous = self._backoff.get(contact)
            backoff = (
                self.config.first_retry
                if previous is None
                else min(previous * 2, self.config.max_retry)
            )
            self._backoff[contact] = backoff
            self._next_try[contact] = time.monotonic() + backoff

    async def _look_and_dial(self, contact: bytes, secret: bytes, wall: float) -> bool:
        addrs: list[tuple[str, int]] = []
        for ih in lookup_targets(secret, self.me, contact, wall):
            self.stats["lookups"] += 1
            try:
                result = await self.dht.get_peers(ih)
            except DhtError:
                continue
            addrs += [a for a in result.peers if a not in addrs]
        if not addrs:
            return False
        try:
            certs = await self.fetch_certs(contact)
        except DhtError:
            certs = []
        if not certs:
            log.info("found %s but not its device list yet", contact.hex()[:16])
            return False
        for addr in addrs:
            for cert in certs:
                if contact in self.sessions:
                    return True
                if await self.dial(contact, cert, addr):
                    return True
        return False

    # ------------------------------------------------------------------ sessions

    async def dial(self, contact: bytes, cert: DeviceCertificate, addr: tuple[str, int]) -> bool:
        """Open a session to ``addr``, expecting ``contact``'s device ``cert``."""
        self._dialing.add(contact)
        self.stats["dials"] += 1
        try:
            async with asyncio.timeout(self.config.dial_timeout):
                stream = await self.dialer.dial(addr)
        except (OSError, TimeoutError):
            self._dialing.discard(contact)
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
            self._dialing.discard(contact)
            return False
        ready: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self._spawn(self._run(session, stream, initiator=self.me, ready=ready))
        try:
            return await asyncio.wait_for(ready, self.config.session.handshake_timeout + 1)
        except TimeoutError:
            return False
        finally:
            self._dialing.discard(contact)

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
        state: dict[str, Any] = {"contact": None, "device": b""}
        conn_box: list[SessionConnection] = []

        def on_event(event: object) -> None:
            if isinstance(event, HandshakeComplete):
                if on_handshake is not None:
                    on_handshake()
                contact = event.remote_identity
                state["contact"] = contact
                state["device"] = event.remote_certificate.device_id
                dialler = initiator if initiator is not None else contact
                live = _Live(contact, conn_box[0], dialler)
                if self._adopt(live):
                    if ready is not None and not ready.done():
                        ready.set_result(True)
                else:
                    conn_box[0].close("duplicate session")
                    if ready is not None and not ready.done():
                        ready.set_result(True)  # a session to them exists: good enough
            elif isinstance(event, DataReceived):
                contact = state["contact"]
                live = self.sessions.get(contact) if contact else None
                if live is not None and live.conn is conn_box[0]:
                    self._on_data(contact, state["device"], event.payload)
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
            contact = state["contact"]
            live = self.sessions.get(contact) if contact else None
            if live is not None and live.conn is conn:
                del self.sessions[contact]
                self._on_closed(contact, "disconnected")
                self.poke(contact)
            if not stream.is_closing():
                stream.abort()  # the pump closes it; this is for a pump that never ran

    def _adopt(self, live: _Live) -> bool:
        """Register a new session; if one exists, keep the one both sides would keep."""
        current = self.sessions.get(live.contact)
        if current is not None:
            keeper = min(self.me, live.contact)
            # Both sides keep the session dialled by the smaller identity key; between two
            # sessions dialled by the same side, the older one stays.
            if current.initiator == keeper or live.initiator != keeper:
                return False
            current.conn.close("duplicate session")
        self.sessions[live.contact] = live
        self._on_established(live.contact)
        return True

"""Linking a device, the asyncio shell: a listener and the DHT on the old device, a
short-lived DHT node and a dial on the new one. The protocol is ``identity/linking.py``.

How this works. On the device with the identity, :class:`DeviceLinking` (the API's
``devices`` part) opens one offer at a time: a TCP listener on an ephemeral port of the
session host, announced (``implied_port`` 0) on the nameplate's infohash through the
daemon's DHT node until the offer ends. Each connection is one attempt of the offer; the
first that gets past the PAKE decides it. The new device's certificate goes into
:class:`~btchat.node.devices.OwnDevices` (persisted, then acknowledged), which
republishes the device list at once.

On the new device, :func:`join_device` runs with no daemon: it checks the data directory
is empty, asks for the passphrase first (nothing is written if the user has none), finds
the offer (``--addr``, or a DHT node of its own joined through the configured bootstrap
and a ``get_peers`` on the infohash), runs the exchange, and only when the old device has
said done writes the message database (contacts, profile, the old device's
certificates) and, last, the key file: a data directory with a key file is a linked one.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from btchat.errors import ApiError, StorageError, UsageError
from btchat.identity.keys import DeviceCertificate, DeviceKey, Identity
from btchat.identity.keystore import KeyStore, KeyStoreError, LoadedKeys
from btchat.identity.linking import (
    OFFER_LIFETIME,
    CertificateReceived,
    Failed,
    Joiner,
    LinkCode,
    LinkedContact,
    LinkerConnection,
    LinkOffer,
    LinkPayload,
    OfferClosed,
    PayloadReceived,
    link_infohash,
    parse_code,
)
from btchat.messaging.store import Store, StoreError
from btchat.net.dht_service import DhtError, DhtService, resolve_addrs
from btchat.node.devices import DeviceListFull, OwnDevices
from btchat.node.history import DB_FILE
from btchat.node.profile import Profiles

__all__ = [
    "ATTEMPT_TIMEOUT",
    "DeviceLinking",
    "JoinError",
    "JoinResult",
    "check_empty",
    "join_device",
]

log = logging.getLogger(__name__)

#: One attempt (a connection) gets this long, start to done; then it is closed.
ATTEMPT_TIMEOUT = 60.0
#: A connection that has not sent its SPAKE2 message by then is closed: it would hold
#: the offer (one attempt at a time) without spending its guess.
PAKE_TIMEOUT = 10.0
#: Bytes read from a link connection at a time.
READ_SIZE = 65536
#: The announce of an offer is retried this often until it lands, then refreshed.
ANNOUNCE_RETRY, ANNOUNCE_REFRESH = 2.0, 300.0
#: The joiner looks up the nameplate this long, this often, before giving up.
FIND_FOR, FIND_EVERY = 90.0, 2.0
#: Addresses tried per lookup round (a stranger could announce many on a nameplate).
MAX_CANDIDATES = 8
DIAL_TIMEOUT = 10.0

Addr = tuple[str, int]
Emit = Callable[[dict[str, Any]], None]


async def _pump(
    side: LinkerConnection | Joiner,
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    on_event: Callable[[Any], None],
) -> None:
    """Feed the core what arrives, send what it has, hand events to ``on_event`` (which
    may answer the core), until it is finished or the stream ends."""
    while True:
        while True:  # events first: an answer to one is sent in the same turn
            while (event := side.next_event()) is not None:
                on_event(event)
            out = side.data_to_send()
            if not out:
                break
            writer.write(out)
            await writer.drain()
        if side.finished:
            return
        data = await reader.read(READ_SIZE)
        if not data:
            side.connection_lost()
        else:
            side.receive_data(data)


async def _close(writer: asyncio.StreamWriter) -> None:
    writer.close()
    with contextlib.suppress(OSError, ConnectionError):
        await writer.wait_closed()


# ------------------------------------------------------------------ the old device


class DeviceLinking:
    """The linker: at most one offer at a time, announced while it is open."""

    def __init__(
        self,
        identity: Identity,
        store: Store,
        own: OwnDevices,
        profiles: Profiles,
        *,
        host: str,
        emit: Emit,
        spawn: Callable[[Any], None],
        lifetime: float = OFFER_LIFETIME,
    ) -> None:
        self.identity = identity
        self.lifetime = lifetime
        self.store = store
        self.own = own
        self.profiles = profiles
        self.host = host
        #: Set once the daemon's DHT runs (never in Tor mode: ``--addr`` only then).
        self.dht: DhtService | None = None
        self._emit = emit
        self._spawn = spawn
        self.offer: LinkOffer | None = None
        self._server: asyncio.Server | None = None
        self._ended = asyncio.Event()
        self._attempts: set[asyncio.Task[Any]] = set()
        self.stats: dict[str, int] = {"offers": 0, "attempts": 0, "refused": 0, "linked": 0}

    def payload(self) -> LinkPayload:
        """What the new device gets: the identity, our devices, contacts and profile."""
        contacts = tuple(
            LinkedContact(c.pk, c.name, c.added_ms, c.verified, c.blocked, c.certs)
            for c in self.store.list_contacts()
        )
        profile = self.profiles.of(self.identity.public_key)
        return LinkPayload(
            self.identity.seed,
            tuple(self.own.certs()),
            contacts,
            profile.get("name") or None,
            profile.get("status") or None,
        )

    async def link(self) -> dict[str, Any]:
        """Open an offer: ``{code, expires_at (ms), port}``."""
        if self.offer is not None and self.offer.open:
            raise ApiError(
                409,
                "link_open",
                "a link offer is already open: cancel it first (`btchat device link --cancel`)",
            )
        self.own.check_not_revoked()
        if self.own.room() <= 0:
            raise ApiError(409, "too_many_devices", "this identity already has 5 devices")
        try:
            offer = LinkOffer(self.payload(), time.time(), lifetime=self.lifetime)
        except UsageError as exc:
            raise ApiError(413, "too_large", str(exc)) from None
        server = await asyncio.start_server(
            lambda r, w: self._serve(offer, r, w), self.host, 0, limit=READ_SIZE
        )
        port = server.sockets[0].getsockname()[1]
        self.offer, self._server, self._ended = offer, server, asyncio.Event()
        self.stats["offers"] += 1
        self._spawn(self._run(offer, server, port, self._ended))
        expires = int(offer.expires_at * 1000)
        self._emit({"type": "device_link_waiting", "code": str(offer.code), "expires_at": expires})
        return {"code": str(offer.code), "expires_at": expires, "port": port}

    async def cancel_link(self) -> None:
        if self.offer is None or not self.offer.open:
            raise ApiError(404, "no_link", "no link offer is open")
        self.offer.cancel()
        self._settle(self.offer)

    async def _run(
        self, offer: LinkOffer, server: asyncio.Server, port: int, ended: asyncio.Event
    ) -> None:
        """Announce until the offer ends; expire it (once no attempt runs); close."""
        announcing = asyncio.ensure_future(self._announce(offer, port))
        try:
            while not ended.is_set():
                wait = max(0.0, offer.expires_at - time.time())
                if offer.state == "busy":
                    wait = max(wait, 1.0)  # its own deadline bounds it; look again soon
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(wait):
                        await ended.wait()
                if offer.expire(time.time()):
                    self._settle(offer)
        finally:
            announcing.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await announcing
            server.close()

    async def _announce(self, offer: LinkOffer, port: int) -> None:
        ih = link_infohash(offer.code.nameplate)
        while offer.open:
            delay = ANNOUNCE_RETRY
            if self.dht is not None:
                try:
                    await self.dht.announce(ih, port, implied_port=False)
                    delay = ANNOUNCE_REFRESH
                except DhtError as exc:  # usually: not joined yet
                    log.info("link offer not announced yet: %s", exc)
            await asyncio.sleep(delay)

    async def _serve(
        self, offer: LinkOffer, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        try:
            conn = offer.attempt(time.time())
        except OfferClosed:
            conn = None
        if conn is None:  # over, or another attempt runs: say nothing, close
            self.stats["refused"] += 1
            await _close(writer)
            return
        self.stats["attempts"] += 1
        task = asyncio.current_task()
        if task is not None:  # owned here: close() ends it with the daemon
            self._attempts.add(task)
            task.add_done_callback(self._attempts.discard)

        def on_event(event: Any) -> None:
            if isinstance(event, CertificateReceived):
                try:
                    self.own.add(event.cert)  # persisted (and republished) before "done"
                except (DeviceListFull, UsageError) as exc:
                    conn.abort("too_many_devices", str(exc))
                    return
                except StorageError as exc:  # a full disk: the new device is told no
                    conn.abort("storage", f"cannot store the new device: {exc}")
                    return
                conn.accept()

        def idle_check() -> None:  # a caller that says nothing must not hold the offer
            if not conn.pake_done:
                writer.transport.abort()

        idle = asyncio.get_running_loop().call_later(PAKE_TIMEOUT, idle_check)
        try:
            async with asyncio.timeout(ATTEMPT_TIMEOUT):
                await _pump(conn, reader, writer, on_event)
        except TimeoutError:
            conn.abort("timeout", "the new device took too long")
        except (OSError, ConnectionError):
            conn.connection_lost()
        finally:
            idle.cancel()
            offer.attempt_ended(conn)
            await _close(writer)
        if conn.state == "linked":
            self.stats["linked"] += 1
        self._settle(offer, conn.cert)

    def _settle(self, offer: LinkOffer, cert: DeviceCertificate | None = None) -> None:
        """Say how an offer that has ended ended, once; stop announcing it."""
        if offer.open or offer is not self.offer or self._ended.is_set():
            return
        self._ended.set()
        if self._server is not None:
            self._server.close()
        if offer.state == "linked" and cert is not None:
            self._emit({"type": "device_linked", "device_id": cert.device_id.hex()})
        else:
            self._emit({"type": "device_link_failed", "reason": offer.reason or "closed"})

    async def close(self) -> None:
        if self.offer is not None and self.offer.open:
            self.offer.cancel()
            self._settle(self.offer)
        if self._server is not None:
            self._server.close()
        for task in list(self._attempts):
            task.cancel()


# ------------------------------------------------------------------ the new device


class JoinError(Exception):
    """Linking failed; ``reason`` is one of FAIL_REASONS, the text says it to a user."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True)
class JoinResult:
    keys: LoadedKeys
    contacts: int
    devices: int


_MESSAGES = {
    "wrong_code": "the code does not match (mistyped, or already used): "
    "start `btchat device link` again on the other device",
    "not_found": "no device is waiting with this code (expired, or not announced yet?)",
    "too_many_devices": "the other device already has 5 devices linked",
    "timeout": "the other device stopped answering",
}


def _failure(failed: Failed | None) -> JoinError:
    reason, detail = (failed.reason, failed.detail) if failed else ("not_found", "")
    return JoinError(reason, _MESSAGES.get(reason, f"linking failed ({reason}): {detail}"))


async def _attempt(code: LinkCode, addr: Addr) -> tuple[Joiner, DeviceKey]:
    """One dial and exchange; the Joiner ends linked or failed."""
    joiner = Joiner(code)
    device = DeviceKey.generate()

    def on_event(event: Any) -> None:
        if isinstance(event, PayloadReceived):
            cert = event.payload.identity.certify(device, int(time.time()))
            joiner.send_certificate(cert)

    try:
        async with asyncio.timeout(DIAL_TIMEOUT):
            reader, writer = await asyncio.open_connection(*addr, limit=READ_SIZE)
    except (OSError, TimeoutError) as exc:
        joiner.abort("closed", f"cannot connect to {addr[0]}:{addr[1]}: {exc}")
        return joiner, device
    try:
        async with asyncio.timeout(ATTEMPT_TIMEOUT):
            await _pump(joiner, reader, writer, on_event)
    except TimeoutError:
        joiner.abort("timeout", "the other device stopped answering")
    except (OSError, ConnectionError):
        joiner.connection_lost()
    finally:
        await _close(writer)
    return joiner, device


async def _find(
    dht: DhtService, bootstrap: list[Addr], code: LinkCode, tried: set[Addr]
) -> list[Addr]:
    """New addresses announced on the code's nameplate (joining the DHT first)."""
    if len(dht.node.routing) == 0:
        addrs = await resolve_addrs(bootstrap)
        if addrs:
            await dht.bootstrap(addrs)
    result = await dht.get_peers(link_infohash(code.nameplate))
    return [a for a in result.peers if a not in tried][:MAX_CANDIDATES]


def check_empty(data_dir: Path) -> None:
    """Refuse a data directory that already holds an identity or a history."""
    if KeyStore(data_dir).exists():
        raise JoinError("exists", f"an identity already exists in {data_dir}; use an empty one")
    if (data_dir / DB_FILE).exists():
        raise JoinError("exists", f"{data_dir} already holds a message database; use an empty one")


async def join_device(
    data_dir: Path,
    code_text: str,
    passphrase: str | None,
    *,
    addr: Addr | None = None,
    bootstrap: list[Addr] | None = None,
    dht_host: str = "0.0.0.0",
    notice: Callable[[str], None] = lambda text: None,
) -> JoinResult:
    """Link this (new, empty) data directory to the identity showing ``code_text``.

    ``passphrase`` None stores the keys unencrypted (the caller asked for that)."""
    try:
        code = parse_code(code_text)
    except UsageError as exc:
        raise JoinError("bad_code", str(exc)) from None
    check_empty(data_dir)
    if addr is not None:
        joiner, device = await _attempt(code, addr)
        if joiner.state == "linked":
            return _save(data_dir, joiner, device, passphrase)
        raise _failure(joiner.failure)
    failure: Failed | None = None
    dht = await DhtService.start(host=dht_host, port=0, state_dir=None)
    try:
        tried: set[Addr] = set()
        deadline = time.monotonic() + FIND_FOR
        while time.monotonic() < deadline:
            try:
                found = await _find(dht, bootstrap or [], code, tried)
            except DhtError as exc:
                log.info("looking for the link offer: %s", exc)
                found = []
            for peer in found:
                tried.add(peer)
                notice(f"trying {peer[0]}:{peer[1]}")
                joiner, device = await _attempt(code, peer)
                if joiner.state == "linked":
                    return _save(data_dir, joiner, device, passphrase)
                if failure is None or failure.reason != "wrong_code":
                    failure = joiner.failure  # "wrong code" says the most; kept
            if failure is not None and failure.reason == "wrong_code":
                break  # every offer found was tried: a stranger's on our nameplate, or ours
            await asyncio.sleep(FIND_EVERY)
    finally:
        dht.close()
    raise _failure(failure)


def _save(data_dir: Path, joiner: Joiner, device: DeviceKey, passphrase: str | None) -> JoinResult:
    """Write what was received: the database first, the key file last (the commit)."""
    payload, cert = joiner.payload, joiner.certificate
    assert payload is not None and cert is not None
    identity = payload.identity
    keys = LoadedKeys(identity, device, cert, KeyStore.new_db_key(passphrase))
    db_path = data_dir / DB_FILE
    try:
        data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        store = Store.open(db_path, keys.db_key)
    except (OSError, StoreError) as exc:
        raise JoinError("storage", f"cannot create the message database: {exc}") from None
    try:
        with store.transaction():  # one commit for the whole contact book
            for c in payload.contacts:
                store.add_contact(c.pk, c.name, c.added_ms)
                store.set_verified(c.pk, c.verified)
                store.set_blocked(c.pk, c.blocked)
                store.set_certs(c.pk, list(c.certs))
        own = OwnDevices(store, cert)
        for other in payload.devices:
            own.add(other)
        devices = len(own.certs())
        if payload.profile_name or payload.profile_status:
            Profiles(identity, store).set_mine(payload.profile_name, payload.profile_status, None)
        store.close()
        KeyStore(data_dir).save_new(keys, passphrase)
    except (KeyStoreError, StoreError, UsageError) as exc:
        store.close()
        for suffix in ("", "-wal", "-shm"):
            Path(f"{db_path}{suffix}").unlink(missing_ok=True)
        raise JoinError("storage", f"cannot save the linked identity: {exc}") from None
    return JoinResult(keys, len(payload.contacts), devices)

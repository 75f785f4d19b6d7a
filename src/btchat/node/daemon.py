"""``btchat up``: the messenger daemon that composes DHT, rendezvous, sessions, storage, API.

The daemon is the composition root and the asyncio shell of the 1:1 conversation core
(:mod:`btchat.messaging.conversation`): it feeds the core what peering receives and when
sessions come and go, and carries out what the core asks (send over a session, deposit
in the offline mailbox, tell API subscribers). The message flow itself (persist, then
act; receipts; outbox replay and reconciliation) lives in the core.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from btchat import __version__
from btchat.api.facade import ApiError
from btchat.channels.service import ChannelConfig
from btchat.codec.bencode import encode
from btchat.dht import bep44
from btchat.identity.idtext import IdError, format_id, format_uri, parse_contact_ref
from btchat.identity.keys import DeviceCertificate
from btchat.identity.keystore import LoadedKeys
from btchat.identity.safety import safety_number
from btchat.messaging import conversation as conv
from btchat.messaging.conversation import Conversations
from btchat.messaging.envelope import Envelope
from btchat.messaging.store import Store
from btchat.net.dht_service import DhtError, DhtService, resolve_addrs
from btchat.node import requests as creq
from btchat.node.channels import ChannelManager
from btchat.node.offline import BACKUP_TYPES, OfflineDelivery
from btchat.node.peering import Peering, PeeringConfig
from btchat.node.requests import REQUEST_POW_BITS
from btchat.node.tasks import TaskOwner
from btchat.offline.mailbox import MAX_RETENTION, MIN_RETENTION, MailboxConfig

__all__ = ["Daemon", "DaemonConfig"]

log = logging.getLogger(__name__)

MAX_TEXT = 16 * 1024
#: Events a slow subscriber may fall behind before the oldest are dropped.
SUBSCRIBER_QUEUE = 1000
#: BEP 44 salt of the public profile published under the identity key.
PROFILE_SALT = b"btchat/profile"
#: Profiles are republished this often (public DHT nodes keep items about two hours).
PROFILE_REPUBLISH = 1800.0
#: Replay ids are kept for the envelope window (15 days) plus skew, then pruned.
SEEN_RETENTION = 15 * 86400.0 + 600.0


@dataclass(frozen=True)
class DaemonConfig:
    data_dir: Path
    # Host names are resolved again at every join attempt: DNS may come back later.
    bootstrap: list[tuple[str, int]] = field(default_factory=list)
    dht_host: str = "0.0.0.0"
    dht_port: int = 6881
    peering: PeeringConfig = field(default_factory=PeeringConfig)
    request_poll: float = 300.0  # how often our DHT request slots are read
    request_pow_bits: int = REQUEST_POW_BITS
    mailbox: MailboxConfig = field(default_factory=MailboxConfig)
    channels: ChannelConfig = field(default_factory=ChannelConfig)


def _now_ms() -> int:
    return int(time.time() * 1000)


class Daemon:
    """Implements :class:`btchat.api.facade.Messenger` on top of the real components."""

    def __init__(self, config: DaemonConfig, keys: LoadedKeys, store: Store) -> None:
        self.config = config
        self.keys = keys
        self.me = keys.identity.public_key
        self.store = store
        self.dht: DhtService | None = None
        self.peering: Peering | None = None
        self.offline: OfflineDelivery | None = None
        self.channels: ChannelManager | None = None
        self.started = time.monotonic()
        self._subscribers: set[asyncio.Queue[dict[str, Any]]] = set()
        self._tasks = TaskOwner()
        self._joined = asyncio.Event()
        self._profile_changed = asyncio.Event()
        self.conversations = Conversations(keys.identity, keys.device.device_id, store)
        self._conv_timer: asyncio.TimerHandle | None = None
        self._conv_handlers: dict[type, Any] = {
            conv.Transmit: self._on_transmit,
            conv.Deposit: self._on_deposit,
            conv.MessageStored: lambda e: self._emit_new_message(e.envelope),
            conv.ReceiptReceived: self._on_receipt,
            conv.PresenceChanged: lambda e: self._emit(
                {
                    "type": "presence",
                    "contact": e.peer.hex(),
                    "status": e.status,
                    "note": e.note,
                    "last_seen": e.last_seen_ms,
                }
            ),
            conv.Typing: lambda e: self._emit(
                {"type": "typing", "contact": e.peer.hex(), "on": e.on}
            ),
            conv.Refused: lambda e: self._emit(
                {"type": "refused", "contact": e.peer.hex(), "reason": e.reason}
            ),
            conv.Unhandled: self._on_unhandled,
        }

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        self.dht = await DhtService.start(
            host=self.config.dht_host,
            port=self.config.dht_port,
            state_dir=self.config.data_dir / "dht",
        )
        self.peering = Peering(
            self.keys.identity,
            self.keys.device,
            self.keys.certificate,
            self.dht,
            self.config.peering,
            contacts=self._reachable_contacts,
            certs_of=self._certs_of,
            save_certs=self._save_certs,
            on_established=self._on_established,
            on_closed=self._on_closed,
            on_data=self._on_data,
        )
        await self.peering.start()
        self.offline = OfflineDelivery(
            self.keys.identity,
            self.store,
            self.dht,
            contacts=self._reachable_contacts,
            is_online=self.peering.is_online,
            send=self._send_body,
            emit=self._emit,
            on_message=self._emit_new_message,
            config=self.config.mailbox,
        )
        await self.offline.start(self._joined)
        self.channels = ChannelManager(
            self.keys.identity, self.store, self.dht, self.config.channels, self._emit
        )
        await self.channels.start()
        self._spawn(self._join_loop())
        self._spawn(self._housekeeping())
        self._spawn(self._request_loop())
        self._spawn(self._profile_loop())

    async def stop(self) -> None:
        await self._tasks.cancel_all()
        if self.offline is not None:
            await self.offline.stop()
        if self.channels is not None:
            await self.channels.stop()
        if self.peering is not None:
            await self.peering.stop()
        if self.dht is not None:
            self.dht.close()
        self.store.close()

    def _spawn(self, coro: Any) -> None:
        self._tasks.spawn(coro)

    @property
    def joined(self) -> bool:
        """Our routing table is not empty: DHT operations can work."""
        return self._joined.is_set()

    async def _join_loop(self) -> None:
        """Join the DHT; offline, say so plainly and keep trying."""
        assert self.dht is not None
        delay = 2.0
        while True:
            if len(self.dht.node.routing) > 0:
                if not self.joined:
                    self._joined.set()
                    self._emit({"type": "dht", "joined": True, "nodes": len(self.dht.node.routing)})
                    log.warning("joined the DHT (%d nodes known)", len(self.dht.node.routing))
                    if self.peering is not None:
                        self.peering.poke()
                await asyncio.sleep(30)
                continue
            self._joined.clear()
            try:
                addrs = await resolve_addrs(self.config.bootstrap)
                if addrs:
                    await self.dht.bootstrap(addrs)
                    continue
            except DhtError:
                pass
            log.warning("no DHT node answers (offline?); retrying in %.0f s", delay)
            self._emit({"type": "dht", "joined": False})
            await asyncio.sleep(delay)
            delay = min(delay * 2, 120.0)

    async def _housekeeping(self) -> None:
        while True:
            self.store.prune_seen(int((time.time() - SEEN_RETENTION) * 1000))
            await asyncio.sleep(3600)

    # ---------------------------------------------------------------- events

    def _emit(self, event: dict[str, Any]) -> None:
        for queue in list(self._subscribers):
            if queue.full():
                with contextlib.suppress(asyncio.QueueEmpty):
                    queue.get_nowait()
            queue.put_nowait(event)

    async def subscribe(self) -> AsyncIterator[dict[str, Any]]:
        queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue(SUBSCRIBER_QUEUE)
        self._subscribers.add(queue)
        try:
            while True:
                yield await queue.get()
        finally:
            self._subscribers.discard(queue)

    # ---------------------------------------------------------------- contacts

    def _reachable_contacts(self) -> list[bytes]:
        return [c.pk for c in self.store.list_contacts() if not c.blocked]

    def _certs_of(self, contact: bytes) -> list[DeviceCertificate]:
        row = self.store.get_contact(contact)
        return list(row.certs) if row is not None else []

    def _save_certs(self, contact: bytes, certs: list[DeviceCertificate]) -> None:
        if self.store.get_contact(contact) is not None:
            self.store.set_certs(contact, certs)

    def _resolve(self, ref: str) -> bytes:
        """A contact by petname, ID text, URI or hex key; 404 when unknown."""
        for row in self.store.list_contacts():
            if row.name == ref:
                return row.pk
        try:
            pk, _ = parse_contact_ref(ref)
        except IdError:
            raise ApiError(404, "unknown_contact", f"no contact named {ref!r}") from None
        if self.store.get_contact(pk) is None:
            raise ApiError(404, "unknown_contact", f"{ref!r} is not one of your contacts")
        return pk

    def _check_name_free(self, name: str, pk: bytes) -> None:
        """Petnames address contacts in the CLI and API, so two may not share one."""
        if any(c.name == name and c.pk != pk for c in self.store.list_contacts()):
            raise ApiError(409, "name_taken", f"another contact is already called {name!r}")

    def _contact_json(self, pk: bytes) -> dict[str, Any]:
        row = self.store.get_contact(pk)
        assert row is not None
        online = self.peering is not None and self.peering.is_online(pk)
        return {
            "id": format_id(pk),
            "public_key": pk.hex(),
            "name": row.name,
            "verified": bool(row.verified),
            "blocked": bool(row.blocked),
            "presence": row.presence if online else "offline",
            "last_seen": row.last_seen_ms,
            "online": online,
            "profile": self._profile_of(pk),
            "retention_days": self._retention_days(pk),
        }

    def _retention_days(self, pk: bytes) -> float:
        """How long a message to this contact is retried while they are offline."""
        if self.offline is None:
            return self.config.mailbox.retention / 86400
        return self.offline.mailbox.retention_of(pk) / 86400

    def _profile_of(self, pk: bytes) -> dict[str, Any]:
        raw = self.store.kv_get(f"profile:{pk.hex()}")
        empty = {"name": None, "status": None, "avatar": None}
        if not raw:
            return empty
        try:
            return {**empty, **json.loads(raw)}
        except ValueError:
            return empty

    async def list_contacts(self) -> list[dict[str, Any]]:
        return [self._contact_json(c.pk) for c in self.store.list_contacts()]

    async def add_contact(self, ref: str, name: str | None) -> dict[str, Any]:
        try:
            pk, suggested = parse_contact_ref(ref)
        except IdError as exc:
            raise ApiError(400, "bad_id", str(exc)) from None
        if pk == self.me:
            raise ApiError(400, "self", "that is your own ID")
        name = name or suggested or format_id(pk)[:12]
        self._check_name_free(name, pk)
        if self.store.get_contact(pk) is not None:
            raise ApiError(409, "exists", "already a contact")
        self.store.add_contact(pk, name, _now_ms())
        self._emit({"type": "contact", "action": "added", "contact": self._contact_json(pk)})
        if self.peering is not None:
            self.peering.poke(pk)
        self._spawn(self._fetch_profile(pk))
        return self._contact_json(pk)

    async def get_contact(self, c: str) -> dict[str, Any]:
        return self._contact_json(self._resolve(c))

    async def update_contact(
        self,
        c: str,
        name: str | None = None,
        verified: bool | None = None,
        blocked: bool | None = None,
        retention_days: float | None = None,
    ) -> dict[str, Any]:
        pk = self._resolve(c)
        if retention_days is not None:
            seconds = int(retention_days * 86400)
            if not MIN_RETENTION <= seconds <= MAX_RETENTION:
                raise ApiError(400, "bad_retention", "retention must be 1 to 14 days")
            if self.offline is not None:
                self.offline.state.set_retention(pk, seconds)
        if name is not None:
            self._check_name_free(name, pk)
            self.store.rename_contact(pk, name)
        if verified is not None:
            self.store.set_verified(pk, verified)
        if blocked is not None:
            self.store.set_blocked(pk, blocked)
            if blocked and self.peering is not None:
                self.peering.drop(pk, "blocked")
        return self._contact_json(pk)

    async def remove_contact(self, c: str) -> None:
        pk = self._resolve(c)
        if self.peering is not None:
            self.peering.drop(pk, "removed")
        self.store.remove_contact(pk)
        self._emit({"type": "contact", "action": "removed", "public_key": pk.hex()})

    async def safety_number(self, c: str) -> dict[str, Any]:
        pk = self._resolve(c)
        return {"contact": self._contact_json(pk), "safety_number": safety_number(self.me, pk)}

    # ---------------------------------------------------------------- messages

    # --------------------------------------------------- the conversation core

    def _drive(self) -> None:
        """Carry out what the conversation core asks, and re-arm its one timer."""
        while (event := self.conversations.next_event()) is not None:
            self._conv_handlers[type(event)](event)
        if self._conv_timer is not None:
            self._conv_timer.cancel()
            self._conv_timer = None
        deadline = self.conversations.get_timer()
        if deadline is not None:
            loop = asyncio.get_running_loop()
            self._conv_timer = loop.call_later(max(0.0, deadline - time.time()), self._on_timer)

    def _on_timer(self) -> None:
        self._conv_timer = None
        self.conversations.handle_timer(time.time())
        self._drive()

    def _on_transmit(self, event: conv.Transmit) -> None:
        if self.peering is not None:
            self.peering.send(event.peer, event.data)

    def _on_deposit(self, event: conv.Deposit) -> None:
        if self.offline is not None:  # not reachable now: leave it in the DHT mailbox
            self.offline.deposit(event.peer, event.envelope, event.data)

    def _on_receipt(self, event: conv.ReceiptReceived) -> None:
        if self.offline is not None:
            self.offline.acknowledged(list(event.ids))
        self._emit(
            {
                "type": "receipt",
                "contact": event.peer.hex(),
                "state": event.state,
                "ids": [i.hex() for i in event.ids],
            }
        )

    def _on_unhandled(self, event: conv.Unhandled) -> None:
        if event.envelope.type in BACKUP_TYPES and self.offline is not None:
            self.offline.on_envelope(event.peer, event.envelope)
        else:
            log.info("ignoring envelope of unknown type %r", event.envelope.type)

    def _send_body(self, to: bytes, kind: bytes, body: dict[bytes, Any]) -> bool:
        sent = self.conversations.send_body(to, kind, body, time.time())
        self._drive()
        return sent

    def _emit_new_message(self, envelope: Envelope) -> None:
        row = self.store.get_message(envelope.id)
        if row is not None:
            self._emit({"type": "message", "message": row.to_json()})

    async def send_message(self, c: str, text: str) -> dict[str, Any]:
        pk = self._resolve(c)
        if not text or len(text.encode()) > MAX_TEXT:
            raise ApiError(400, "bad_text", f"text must be 1 to {MAX_TEXT} bytes")
        envelope = self.conversations.send_text(pk, text, time.time())
        self._drive()
        row = self.store.get_message(envelope.id)
        return row.to_json()

    async def history(self, c: str, limit: int, before: int | None) -> list[dict[str, Any]]:
        pk = self._resolve(c)
        return [r.to_json() for r in self.store.history(pk, limit=limit, before_lamport=before)]

    async def search(self, q: str, contact: str | None, limit: int) -> list[dict[str, Any]]:
        peer = self._resolve(contact) if contact else None
        return [r.to_json() for r in self.store.search(q, peer=peer, limit=limit)]

    async def mark_read(self, c: str, up_to: str | None) -> dict[str, Any]:
        pk = self._resolve(c)
        marked = self.conversations.mark_read(pk, up_to, time.time())
        self._drive()
        return {"contact": self._contact_json(pk), "marked": marked}

    async def set_presence(self, status: str, note: str | None) -> dict[str, Any]:
        if status not in conv.PRESENCE_STATES:
            states = ", ".join(conv.PRESENCE_STATES)
            raise ApiError(400, "bad_presence", f"presence is one of {states}")
        if note is not None and len(note.encode()) > 140:
            raise ApiError(400, "bad_note", "the status note is at most 140 bytes")
        self.conversations.set_presence(status, note, time.time())
        self._drive()
        return {"status": status, "note": note}

    # ------------------------------------------------------------ profile

    async def get_profile(self) -> dict[str, Any]:
        return self._profile_of(self.me)

    async def set_profile(
        self, name: str | None, status: str | None, avatar: str | None
    ) -> dict[str, Any]:
        profile = self._profile_of(self.me)
        for key, value in (("name", name), ("status", status), ("avatar", avatar)):
            if value is not None:
                profile[key] = value or None
        self.store.kv_set(f"profile:{self.me.hex()}", json.dumps(profile).encode())
        if profile["name"]:
            self.store.kv_set("profile_name", profile["name"].encode())
        self._profile_changed.set()
        return profile

    def _profile_value(self) -> bytes:
        profile = self._profile_of(self.me)
        value: dict[bytes, Any] = {}
        if profile["name"]:
            value[b"n"] = profile["name"].encode()
        if profile["status"]:
            value[b"s"] = profile["status"].encode()
        if profile["avatar"]:
            value[b"a"] = bytes.fromhex(profile["avatar"])
        return encode(value)

    async def _profile_loop(self) -> None:
        """Publish our profile as a BEP 44 item under the identity key, and keep it alive."""
        assert self.dht is not None
        while True:
            await self._joined.wait()
            self._profile_changed.clear()
            item = bep44.sign_mutable(
                self.keys.identity.private_key,
                self._profile_value(),
                int(time.time() * 1000),
                PROFILE_SALT,
            )
            try:
                await self.dht.put_mutable(item)
                wait = PROFILE_REPUBLISH
            except DhtError as exc:
                log.info("could not publish the profile yet: %s", exc)
                wait = 10.0
            with contextlib.suppress(TimeoutError):  # not wait_for: see ChannelService
                async with asyncio.timeout(wait):
                    await self._profile_changed.wait()

    async def _fetch_profile(self, pk: bytes) -> None:
        """A contact's profile from the DHT (signature checked by the DHT layer)."""
        if self.dht is None:
            return
        try:
            result = await self.dht.get_mutable(pk, PROFILE_SALT)
        except DhtError:
            return
        value = result.value
        if not isinstance(value, dict):
            return

        def text(key: bytes, limit: int) -> str | None:
            raw = value.get(key)
            if not isinstance(raw, bytes) or len(raw) > limit:
                return None
            return raw.decode("utf-8", "replace")

        avatar = value.get(b"a")
        profile = {
            "name": text(b"n", 256),
            "status": text(b"s", 560),
            "avatar": avatar.hex() if isinstance(avatar, bytes) and len(avatar) == 32 else None,
        }
        if self.store.get_contact(pk) is None or profile == self._profile_of(pk):
            return
        self.store.kv_set(f"profile:{pk.hex()}", json.dumps(profile).encode())
        self._emit({"type": "contact", "action": "profile", "contact": self._contact_json(pk)})

    async def send_typing(self, c: str, on: bool) -> None:
        pk = self._resolve(c)
        self.conversations.send_typing(pk, on, time.time())
        self._drive()

    # ------------------------------------------------------------- requests

    async def list_requests(self) -> list[dict[str, Any]]:
        return [self._request_json(r.id) for r in self.store.list_requests()]

    def _request_json(self, req_id: bytes) -> dict[str, Any]:
        row = self.store.get_request(req_id)
        assert row is not None
        return {
            "id": row.id.hex(),
            "public_key": row.pk.hex(),
            "contact_id": format_id(row.pk),
            "direction": row.direction,
            "name": row.name,
            "note": row.note,
            "state": row.state,
            "created": row.created_ms,
        }

    async def send_request(self, ref: str, note: str | None) -> dict[str, Any]:
        """Ask a stranger to become a contact: seal a proof-of-work request into one of
        their DHT request slots, and add them on our side so rendezvous can start."""
        assert self.dht is not None
        try:
            pk, suggested = parse_contact_ref(ref)
        except IdError as exc:
            raise ApiError(400, "bad_id", str(exc)) from None
        if pk == self.me:
            raise ApiError(400, "self", "that is your own ID")
        if self.store.get_contact(pk) is not None:
            raise ApiError(409, "exists", "already a contact")
        now = time.time()
        my_name = (self.store.kv_get("profile_name") or b"").decode()
        try:
            sealed = await asyncio.to_thread(
                creq.seal_request,
                self.keys.identity,
                self.keys.certificate,
                pk,
                name=my_name,
                note=note or "",
                now=now,
                pow_bits=self.config.request_pow_bits,
            )
        except ValueError as exc:
            raise ApiError(400, "bad_request", str(exc)) from None
        day = creq.day_of(now)
        slots = [creq.slot_key(pk, day, i) for i in range(creq.SLOTS)]
        publics = [k.public_key().public_bytes_raw() for k in slots]
        found = await asyncio.gather(
            *(self.dht.get_mutable(p) for p in publics), return_exceptions=True
        )
        empty = [
            i for i, r in enumerate(found) if not isinstance(r, BaseException) and r.value is None
        ]
        index = empty[0] if empty else int.from_bytes(os.urandom(1), "big") % creq.SLOTS
        item = bep44.sign_mutable(slots[index], encode(sealed), int(now * 1000))
        try:
            await self.dht.put_mutable(item)
        except DhtError as exc:
            raise ApiError(503, "dht_unavailable", f"could not store the request: {exc}") from None
        ts_ms = int(now * 1000)
        req_id = creq.request_id(self.me, ts_ms)
        self.store.add_request(req_id, pk, "out", note, ts_ms, name=suggested)
        await self.add_contact(ref, suggested)
        return self._request_json(req_id)

    async def answer_request(self, id: str, accept: bool, name: str | None) -> dict[str, Any]:
        try:
            req_id = bytes.fromhex(id)
        except ValueError:
            raise ApiError(404, "unknown_request", "no such contact request") from None
        row = self.store.get_request(req_id)
        if row is None or row.direction != "in":
            raise ApiError(404, "unknown_request", "no such contact request")
        if row.state != "pending":
            raise ApiError(409, "answered", f"this request was already {row.state}")
        self.store.set_request_state(req_id, "accepted" if accept else "declined")
        if accept and self.store.get_contact(row.pk) is None:
            await self.add_contact(row.pk.hex(), name or row.name or None)
            if row.payload:
                with contextlib.suppress(Exception):
                    self.store.set_certs(row.pk, [DeviceCertificate.decode(row.payload)])
        return self._request_json(req_id)

    async def _request_loop(self) -> None:
        """Read our DHT request slots (today's and yesterday's) for requests."""
        assert self.dht is not None
        while True:
            await self._joined.wait()
            now = time.time()
            for day in (creq.day_of(now), creq.day_of(now) - 1):
                keys = [
                    creq.slot_key(self.me, day, i).public_key().public_bytes_raw()
                    for i in range(creq.SLOTS)
                ]
                found = await asyncio.gather(
                    *(self.dht.get_mutable(k) for k in keys), return_exceptions=True
                )
                for result in found:
                    if isinstance(result, BaseException) or not isinstance(result.value, bytes):
                        continue
                    self._consider_request(result.value, now)
            await asyncio.sleep(self.config.request_poll)

    def _consider_request(self, sealed: bytes, now: float) -> None:
        try:
            req = creq.open_request(
                self.keys.identity, sealed, now=now, pow_bits=self.config.request_pow_bits
            )
        except creq.RequestError as exc:
            log.info("ignored a request slot: %s", exc)
            return
        known = self.store.get_contact(req.sender)
        if known is not None:
            return  # already a contact (or blocked): nothing to ask the user
        if self.store.add_request(
            req.request_id,
            req.sender,
            "in",
            req.note or None,
            req.ts_ms,
            name=req.name or None,
            payload=req.certificate.encode(),
        ):
            log.warning("contact request from %s", format_id(req.sender)[:16])
            self._emit({"type": "request", "request": self._request_json(req.request_id)})

    # ------------------------------------------------------------ status

    async def identity(self) -> dict[str, Any]:
        return {
            "id": format_id(self.me),
            "uri": format_uri(self.me),
            "public_key": self.me.hex(),
            "device_id": self.keys.device.device_id.hex(),
        }

    async def status(self) -> dict[str, Any]:
        dht = self.dht
        return {
            **(await self.identity()),
            "version": __version__,
            "pid": os.getpid(),
            "dht": {
                "joined": self.joined,
                "nodes": len(dht.node.routing) if dht else 0,
                "addr": f"{dht.addr[0]}:{dht.addr[1]}" if dht else None,
            },
            "listen_port": self.peering.port if self.peering else None,
            "contacts": len(self.store.list_contacts()),
            "contacts_online": len(self.peering.online_contacts()) if self.peering else 0,
            "uptime": time.monotonic() - self.started,
            "mailbox": self.offline.summary() if self.offline else None,
            "sync": dict(self.conversations.stats),
        }

    # ------------------------------------------------------------ sessions

    def _on_established(self, pk: bytes) -> None:
        log.info("session with %s established", format_id(pk)[:16])
        self.conversations.session_up(pk, time.time())
        self._emit({"type": "session", "state": "up", "contact": self._contact_json(pk)})
        self._spawn(self._fetch_profile(pk))
        self._drive()
        if self.offline is not None:
            self.offline.session_up(pk)

    def _on_closed(self, pk: bytes, reason: str) -> None:
        self.conversations.session_down(pk, time.time())
        self._drive()
        if self.store.get_contact(pk) is None:
            return
        self._emit(
            {
                "type": "session",
                "state": "down",
                "reason": reason,
                "contact": self._contact_json(pk),
            }
        )

    def _on_data(self, pk: bytes, device: bytes, payload: bytes) -> None:
        self.conversations.receive(pk, device, payload, time.time())
        self._drive()

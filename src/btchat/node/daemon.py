"""``btchat up``: the messenger daemon that composes DHT, rendezvous, sessions, storage, API.

Message flow (persist, then act):

* sending: the envelope is signed and committed to the store with an outbox row
  *before* it is transmitted; the outbox is replayed in Lamport order on every new
  session until the recipient's "delivered" receipt arrives.
* receiving: an envelope is verified (version, signature, sender = the session's
  authenticated identity, recipient = us, time window), then saved together with its id
  in the replay table in one transaction, and only then acknowledged with a signed
  "delivered" receipt. A duplicate (replay, or a resend after a lost receipt) is not
  stored again, but is acknowledged again so the sender can stop resending.

Ordering is by Lamport clock with the sender key as tie-break, so both sides show one
order whatever the arrival order.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import time
from collections import Counter
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
from btchat.messaging import envelope as env_mod
from btchat.messaging.envelope import Envelope, EnvelopeError
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

PRESENCE_STATES = ("online", "away", "busy", "offline")
MAX_TEXT = 16 * 1024
#: Events a slow subscriber may fall behind before the oldest are dropped.
SUBSCRIBER_QUEUE = 1000
#: Queued envelopes older than this are re-signed before a resend, well inside the
#: receivers' 15-day window.
RESIGN_AFTER = 7 * 86400.0
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


#: Reconciliation on reconnect: the ids offered, and those the peer does not have.
SYNC, SYNC_WANT = b"sync", b"sync_want"
#: An offer not answered in this time is followed by a full resend.
SYNC_TIMEOUT = 10.0


def _id_list(body: dict[bytes, Any]) -> list[bytes]:
    ids = body.get(b"ids")
    if type(ids) is not list:
        return []
    return [i for i in ids[: env_mod.MAX_RECEIPT_IDS] if type(i) is bytes and len(i) == 16]


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
        self._sync_waiting: set[bytes] = set()
        #: Reconnect reconciliation: ids offered, resent, and copies received twice.
        self.sync_stats: Counter[str] = Counter()

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

    def _envelope(self, to: bytes, kind: bytes, body: dict[bytes, Any]) -> Envelope:
        return env_mod.create(
            self.keys.identity,
            self.keys.device.device_id,
            to,
            kind,
            body,
            lamport=self.store.next_lamport(to, None),
            now=time.time(),
        )

    def _send_body(self, to: bytes, kind: bytes, body: dict[bytes, Any]) -> bool:
        return self._transmit(to, self._envelope(to, kind, body))

    def _emit_new_message(self, envelope: Envelope) -> None:
        row = self.store.get_message(envelope.id)
        if row is not None:
            self._emit({"type": "message", "message": row.to_json()})

    def _transmit(self, to: bytes, envelope: Envelope) -> bool:
        return self.peering is not None and self.peering.send(to, env_mod.encode_envelope(envelope))

    async def send_message(self, c: str, text: str) -> dict[str, Any]:
        pk = self._resolve(c)
        if not text or len(text.encode()) > MAX_TEXT:
            raise ApiError(400, "bad_text", f"text must be 1 to {MAX_TEXT} bytes")
        envelope = self._envelope(pk, b"text", env_mod.text_body(text))
        self.store.save_outgoing(envelope, time.time())  # persist, then act
        if self._transmit(pk, envelope):
            self.store.mark_state([envelope.id], "sent")
        elif self.offline is not None:  # not reachable now: leave it in the DHT mailbox
            self.offline.deposit(pk, envelope, env_mod.encode_envelope(envelope))
        row = self.store.get_message(envelope.id)
        message = row.to_json()
        self._emit({"type": "message", "message": message})
        return message

    async def history(self, c: str, limit: int, before: int | None) -> list[dict[str, Any]]:
        pk = self._resolve(c)
        return [r.to_json() for r in self.store.history(pk, limit=limit, before_lamport=before)]

    async def search(self, q: str, contact: str | None, limit: int) -> list[dict[str, Any]]:
        peer = self._resolve(contact) if contact else None
        return [r.to_json() for r in self.store.search(q, peer=peer, limit=limit)]

    async def mark_read(self, c: str, up_to: str | None) -> dict[str, Any]:
        pk = self._resolve(c)
        unread = [
            r
            for r in self.store.history(pk, limit=500)
            if r.direction == "in" and r.state != "read"
        ]
        if up_to is not None:
            ids = [r.id.hex() for r in unread]
            if up_to in ids:
                unread = unread[: ids.index(up_to) + 1]
        ids_b = [r.id for r in unread]
        if ids_b:
            self.store.mark_state(ids_b, "read")
            self._queue_read_receipt(pk, ids_b)
        return {"contact": self._contact_json(pk), "marked": len(ids_b)}

    def _queue_read_receipt(self, pk: bytes, ids: list[bytes]) -> None:
        pending = self.store.kv_get(f"read_receipts:{pk.hex()}") or b""
        self.store.kv_set(f"read_receipts:{pk.hex()}", pending + b"".join(ids))
        self._flush_read_receipts(pk)

    def _flush_read_receipts(self, pk: bytes) -> None:
        pending = self.store.kv_get(f"read_receipts:{pk.hex()}") or b""
        if not pending or self.peering is None or not self.peering.is_online(pk):
            return
        ids = [pending[i : i + 16] for i in range(0, len(pending), 16)]
        for start in range(0, len(ids), 200):
            receipt = self._envelope(
                pk, b"receipt", env_mod.receipt_body(ids[start : start + 200], b"read")
            )
            if not self._transmit(pk, receipt):
                return
        self.store.kv_set(f"read_receipts:{pk.hex()}", b"")

    async def set_presence(self, status: str, note: str | None) -> dict[str, Any]:
        if status not in PRESENCE_STATES:
            raise ApiError(400, "bad_presence", f"presence is one of {', '.join(PRESENCE_STATES)}")
        if note is not None and len(note.encode()) > 140:
            raise ApiError(400, "bad_note", "the status note is at most 140 bytes")
        self.store.kv_set("presence", status.encode())
        self.store.kv_set("presence_note", (note or "").encode())
        for pk in self._reachable_contacts():
            self._send_presence(pk)
        return {"status": status, "note": note}

    def _send_presence(self, pk: bytes) -> None:
        if self.peering is None or not self.peering.is_online(pk):
            return
        status = (self.store.kv_get("presence") or b"online").decode()
        note = (self.store.kv_get("presence_note") or b"").decode()
        self._transmit(
            pk,
            self._envelope(pk, b"presence", env_mod.presence_body(status, _now_ms(), note or None)),
        )

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
        if self.peering is not None and self.peering.is_online(pk):
            self._transmit(pk, self._envelope(pk, b"typing", env_mod.typing_body(on)))

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
            "contacts_online": len(self.peering.sessions) if self.peering else 0,
            "uptime": time.monotonic() - self.started,
            "mailbox": self.offline.summary() if self.offline else None,
            "sync": dict(self.sync_stats),
        }

    # ------------------------------------------------------------ sessions

    def _on_established(self, pk: bytes) -> None:
        log.info("session with %s established", format_id(pk)[:16])
        self.store.set_presence(pk, "online", _now_ms())
        self._emit({"type": "session", "state": "up", "contact": self._contact_json(pk)})
        self._spawn(self._fetch_profile(pk))
        self._send_presence(pk)
        # Reconcile before resending: offer the ids still unacknowledged (they may have
        # arrived through the DHT mailbox or a friend meanwhile); the peer acknowledges
        # what it has and asks for the rest, which is then replayed in causal order.
        ids = [queued.id for queued, _ in self._outbox(pk)]
        for start in range(0, len(ids), env_mod.MAX_RECEIPT_IDS):
            self._send_body(pk, SYNC, {b"ids": ids[start : start + env_mod.MAX_RECEIPT_IDS]})
        self.sync_stats["offered"] += len(ids)
        if ids:
            self._sync_waiting.add(pk)
            self._spawn(self._sync_fallback(pk))
        self._flush_read_receipts(pk)
        if self.offline is not None:
            self.offline.session_up(pk)

    def _outbox(self, pk: bytes) -> list[tuple[Envelope, bytes]]:
        """The outbox to ``pk``: parseable envelopes only, in Lamport order."""
        out = []
        for blob in self.store.pending_outbox(pk):
            try:
                out.append((env_mod.parse_envelope(blob), blob))
            except EnvelopeError:
                continue
        return out

    def _replay_outbox(self, pk: bytes, only: set[bytes] | None) -> None:
        """Resend unacknowledged messages (all, or those the peer asked for)."""
        sent = []
        horizon_ms = (time.time() - RESIGN_AFTER) * 1000
        for queued, blob in self._outbox(pk):
            if only is not None and queued.id not in only:
                continue
            if queued.ts_ms < horizon_ms:
                # Queued longer than the receiver's window: same id and order, fresh
                # timestamp and signature (a receiver that has it still drops the copy).
                queued = env_mod.resign(self.keys.identity, queued, now=time.time())
                self.store.replace_outbox(queued)
                blob = env_mod.encode_envelope(queued)
            if not self.peering or not self.peering.send(pk, blob):
                break
            sent.append(queued.id)
        if sent:
            self.store.mark_state(sent, "sent")
        self.sync_stats["resent"] += len(sent)

    async def _sync_fallback(self, pk: bytes) -> None:
        """A peer that never answers the offer (an older client) gets everything."""
        await asyncio.sleep(SYNC_TIMEOUT)
        if pk in self._sync_waiting:
            self._sync_waiting.discard(pk)
            self._replay_outbox(pk, None)

    def _on_sync(self, pk: bytes, envelope: Envelope) -> None:
        ids = _id_list(envelope.body)
        if envelope.type == SYNC:
            have = [i for i in ids if self._is_incoming_from(i, pk)]
            for start in range(0, len(have), env_mod.MAX_RECEIPT_IDS):
                chunk = have[start : start + env_mod.MAX_RECEIPT_IDS]
                self._send_body(pk, b"receipt", env_mod.receipt_body(chunk, b"delivered"))
            self._send_body(pk, SYNC_WANT, {b"ids": [i for i in ids if i not in set(have)]})
        else:
            self._sync_waiting.discard(pk)
            self._replay_outbox(pk, set(ids))

    def _is_incoming_from(self, msg_id: bytes, pk: bytes) -> bool:
        row = self.store.get_message(msg_id)
        return row is not None and row.direction == "in" and row.peer == pk

    def _on_closed(self, pk: bytes, reason: str) -> None:
        if self.store.get_contact(pk) is None:
            return
        self.store.set_presence(pk, "offline", _now_ms())
        self._emit(
            {
                "type": "session",
                "state": "down",
                "reason": reason,
                "contact": self._contact_json(pk),
            }
        )

    def _on_data(self, pk: bytes, device: bytes, payload: bytes) -> None:
        try:
            envelope = env_mod.parse_envelope(payload)
            env_mod.verify_envelope(
                envelope, expected_sender=pk, expected_recipient=self.me, now=time.time()
            )
            if envelope.device != device:
                # Signed by the identity, but naming another device than the one whose
                # certified key this session authenticated.
                raise EnvelopeError("wrong_device", "envelope names another device")
        except EnvelopeError as exc:
            log.warning("refused an envelope from %s: %s", format_id(pk)[:16], exc)
            self._emit({"type": "refused", "contact": pk.hex(), "reason": str(exc)})
            return
        self.store.next_lamport(pk, envelope.lamport)  # advance our clock past theirs
        kind = envelope.type
        if kind == b"text":
            fresh = self.store.save_incoming(envelope, time.time())  # persist, then ack
            self._transmit(
                pk,
                self._envelope(pk, b"receipt", env_mod.receipt_body([envelope.id], b"delivered")),
            )
            if fresh:
                self._emit_new_message(envelope)
            else:
                self.sync_stats["duplicates_received"] += 1
        elif kind == b"receipt":
            ids, state = env_mod.decode_receipt(envelope)
            mine = [i for i in ids if self._is_outgoing_to(i, pk)]
            if mine:
                self.store.mark_state(mine, state.decode())
                self.store.ack_outbox(mine)
                if self.offline is not None:
                    self.offline.acknowledged(mine)
                self._emit(
                    {
                        "type": "receipt",
                        "contact": pk.hex(),
                        "state": state.decode(),
                        "ids": [i.hex() for i in mine],
                    }
                )
        elif kind == b"presence":
            status, last_seen, note = env_mod.decode_presence(envelope)
            self.store.set_presence(pk, status, last_seen)
            self._emit(
                {
                    "type": "presence",
                    "contact": pk.hex(),
                    "status": status,
                    "note": note,
                    "last_seen": last_seen,
                }
            )
        elif kind == b"typing":
            self._emit(
                {"type": "typing", "contact": pk.hex(), "on": env_mod.decode_typing(envelope)}
            )
        elif kind in (SYNC, SYNC_WANT):
            self._on_sync(pk, envelope)
        elif kind in BACKUP_TYPES:
            if self.offline is not None:
                self.offline.on_envelope(pk, envelope)
        else:
            log.info("ignoring envelope of unknown type %r", kind)

    def _is_outgoing_to(self, msg_id: bytes, pk: bytes) -> bool:
        row = self.store.get_message(msg_id)
        return row is not None and row.direction == "out" and row.peer == pk

"""What the user does with contacts and contact requests: add, change, remove, dial by
hand, ask a stranger, answer one (the daemon's facade methods for these delegate here).

Each action touches several parts (the store, peering, offline delivery, profiles, the
event stream), which is why it is not in :class:`~btchat.node.contacts.ContactBook`:
the book only names and describes contacts, and peering reads it. Peering, offline
delivery and the DHT (in Tor mode, the DHT through a contact) start after this object
is built, so those are attributes the daemon sets once they run.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any

from btchat.errors import ApiError
from btchat.identity.idtext import format_id
from btchat.identity.keys import DeviceCertificate
from btchat.identity.safety import safety_number
from btchat.messaging.contacts import ContactChange
from btchat.messaging.store import Store
from btchat.net.dht_proxy import DhtViaContacts
from btchat.net.dht_service import DhtError, DhtService
from btchat.net.proxy import ProxyDialer
from btchat.net.transport import Dialer
from btchat.node.config import parse_ip_port
from btchat.node.contact_requests import ContactRequests
from btchat.node.contacts import ContactBook
from btchat.node.offline import OfflineDelivery
from btchat.node.peering import Peering
from btchat.node.profile import Profiles
from btchat.offline.mailbox import MAX_RETENTION, MIN_RETENTION, MailboxConfig

__all__ = ["ContactManager"]

Emit = Callable[[dict[str, Any]], None]
Spawn = Callable[[Coroutine[Any, Any, Any]], None]


def _now_ms() -> int:
    return int(time.time() * 1000)


@dataclass(eq=False)
class ContactManager:
    book: ContactBook
    store: Store
    profiles: Profiles
    requests: ContactRequests
    emit: Emit
    spawn: Spawn
    dialer: Dialer
    mailbox: MailboxConfig
    peering: Peering | None = None
    offline: OfflineDelivery | None = None
    dht: DhtService | DhtViaContacts | None = None
    #: Told of every change the user makes to a contact, ``(key, removing)``: our other
    #: devices get it (``contact_sync.py``).
    on_changed: Callable[[bytes, bool], None] | None = None

    def _changed(self, pk: bytes, *, removing: bool = False) -> None:
        if self.on_changed is not None:
            self.on_changed(pk, removing)

    # ---------------------------------------------------------------- contacts

    def json(self, pk: bytes) -> dict[str, Any]:
        online = self.peering is not None and self.peering.is_online(pk)
        out = self.book.json(pk, online=online, retention_days=self._retention_days(pk))
        out["path"] = self.peering.path(pk) if self.peering is not None else []
        rtt = self.peering.rtt(pk) if self.peering is not None else None
        out["rtt_ms"] = round(rtt * 1000, 1) if rtt is not None else None
        return out

    def _retention_days(self, pk: bytes) -> float:
        """How long a message to this contact is retried while they are offline."""
        if self.offline is None:
            return self.mailbox.retention / 86400
        return self.offline.mailbox.retention_of(pk) / 86400

    def list(self) -> list[dict[str, Any]]:
        return [self.json(c.pk) for c in self.store.list_contacts()]

    def add(self, ref: str, name: str | None) -> dict[str, Any]:
        pk, suggested = self.book.parse_new(ref)
        return self.add_key(pk, name, suggested)

    def add_key(self, pk: bytes, name: str | None, suggested: str | None) -> dict[str, Any]:
        """``name`` is the user's (checked: an error if unusable); ``suggested`` came from
        a link or the peer (used only if safe and free)."""
        self.book.check_not_known(pk)
        self.store.add_contact(pk, self.book.name_for(pk, name, suggested), _now_ms())
        self._changed(pk)
        self.emit({"type": "contact", "action": "added", "contact": self.json(pk)})
        if self.peering is not None:
            self.peering.poke(pk)
        self.spawn(self.fetch_profile(pk))
        return self.json(pk)

    def get(self, c: str) -> dict[str, Any]:
        return self.json(self.book.resolve(c))

    def update(self, c: str, change: ContactChange) -> dict[str, Any]:
        pk = self.book.resolve(c)
        if change.retention_days is not None:
            seconds = int(change.retention_days * 86400)
            if not MIN_RETENTION <= seconds <= MAX_RETENTION:
                raise ApiError(400, "bad_retention", "retention must be 1 to 14 days")
            if self.offline is not None:
                self.offline.state.set_retention(pk, seconds)
        if change.name is not None:
            self.store.rename_contact(pk, self.book.check_name(change.name, pk))
        if change.verified is not None:
            self.store.set_verified(pk, change.verified)
        if change.blocked is not None:
            self.store.set_blocked(pk, change.blocked)
            if change.blocked and self.peering is not None:
                self.peering.drop(pk, "blocked")
        if change.name is not None or change.verified is not None or change.blocked is not None:
            self._changed(pk)
        return self.json(pk)

    def remove(self, c: str) -> None:
        pk = self.book.resolve(c)
        if self.peering is not None:
            self.peering.drop(pk, "removed")
        self._changed(pk, removing=True)
        self.store.remove_contact(pk)
        self.emit({"type": "contact", "action": "removed", "public_key": pk.hex()})

    def safety_number(self, c: str) -> dict[str, Any]:
        pk = self.book.resolve(c)
        return {"contact": self.json(pk), "safety_number": safety_number(self.book.me, pk)}

    async def dial(self, c: str, address: str) -> dict[str, Any]:
        """A session to ``c`` at an address given by hand: Tor mode's only way out (it
        has no rendezvous), and a shortcut elsewhere. It needs the contact's device
        certificates, learned from their DHT device list or an earlier session."""
        pk = self.book.resolve(c)
        proxied = isinstance(self.dialer, ProxyDialer)
        try:
            addr = parse_ip_port(address, proxied=proxied)
        except ValueError as exc:
            raise ApiError(400, "bad_address", str(exc)) from None
        if not self.book.certs_of(pk):
            raise ApiError(
                409,
                "no_certificate",
                "no device certificate of this contact is known yet: it comes from their "
                "DHT device list or an earlier session",
            )
        assert self.peering is not None
        if not await self.peering.dial_known(pk, addr):
            why = (isinstance(self.dialer, ProxyDialer) and self.dialer.last_error) or (
                "nobody answered"
            )
            raise ApiError(504, "unreachable", f"no session at {address}: {why}")
        return self.json(pk)

    async def fetch_profile(self, pk: bytes) -> None:
        """Their published profile; a contact never named by the user takes its name."""
        if self.dht is None or not await self.profiles.fetch(self.dht, pk):
            return
        row = self.store.get_contact(pk)
        if row is not None and row.name == format_id(pk)[:12]:
            better = self.book.name_for(pk, None, self.profiles.of(pk)["name"])
            if better != row.name:
                self.store.rename_contact(pk, better)
        self.emit({"type": "contact", "action": "profile", "contact": self.json(pk)})

    # ------------------------------------------------------------- requests

    def list_requests(self) -> list[dict[str, Any]]:
        return [self.requests.json(r.id) for r in self.store.list_requests()]

    async def send_request(self, ref: str, note: str | None) -> dict[str, Any]:
        """Ask a stranger to become a contact: seal a proof-of-work request into one of
        their DHT request slots, and add them on our side so rendezvous can start."""
        if self.dht is None:
            raise ApiError(503, "dht_unavailable", "contact requests travel through the DHT")
        if isinstance(self.dht, DhtViaContacts) and not self.dht.joined.is_set():
            raise ApiError(
                503,
                "dht_unavailable",
                "no DHT (no contact serving): in Tor mode contact requests go through a "
                "contact's DHT; dial one that serves first",
            )
        pk, suggested = self.book.parse_new(ref)
        self.book.check_not_known(pk)
        try:
            req_id = await self.requests.send(self.dht, pk, note, suggested)
        except ValueError as exc:
            raise ApiError(400, "bad_request", str(exc)) from None
        except DhtError as exc:
            raise ApiError(503, "dht_unavailable", f"could not store the request: {exc}") from None
        self.add_key(pk, None, suggested)
        return self.requests.json(req_id)

    def answer_request(self, id: str, accept: bool, name: str | None) -> dict[str, Any]:
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
            self.add_key(row.pk, name, row.name)
            if row.payload:
                with contextlib.suppress(Exception):
                    self.store.set_certs(row.pk, [DeviceCertificate.decode(row.payload)])
        return self.requests.json(req_id)

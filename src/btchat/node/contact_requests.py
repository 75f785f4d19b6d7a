"""Contact requests over the DHT: sealing ours into a stranger's slots, reading our own.

The sealing, proof of work and slot keys are the sans-I/O :mod:`btchat.node.requests`;
this is its asyncio side. A request goes into one of the recipient's daily request
slots (an empty one if we can find it); we read our own slots, today's every ``poll``
seconds and yesterday's less often, and a valid request from someone not yet a contact
is stored and announced to API subscribers for the user to accept or decline.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Callable
from typing import Any

from btchat.codec.bencode import encode
from btchat.dht import bep44
from btchat.errors import StorageFault
from btchat.identity.idtext import format_id
from btchat.identity.keys import DeviceCertificate, Identity
from btchat.messaging.store import Store
from btchat.net.dht_service import DhtError, DhtService
from btchat.node import requests as creq
from btchat.node.profile import PROFILE_SALT

__all__ = ["ContactRequests", "fetch_inbox"]

log = logging.getLogger(__name__)

INBOX_KEY = "request_inbox"
#: After a move, the previous inbox is still read this long (profiles are fetched fresh
#: by a sender just before it writes, so an hour covers every honest late writer).
PREVIOUS_INBOX_GRACE = 3600.0
#: Moves closer together than this are skipped: one per squatting wave is enough.
MIN_ROTATION = 600.0
#: A profile lookup that finds nothing is tried again after this long, while the first
#: began less than PROFILE_RETRY_WITHIN ago: one lookup can miss a profile being put
#: right now (someone who just came online) or answered by lossy nodes.
PROFILE_RETRY_AFTER = 1.5
PROFILE_RETRY_WITHIN = 8.0


async def fetch_inbox(dht: DhtService, pk: bytes) -> bytes | None:
    """``pk``'s current inbox value from its signed profile, or None if not found."""
    try:
        result = await dht.get_mutable(pk, PROFILE_SALT)
    except DhtError:
        return None
    value = result.value
    inbox = value.get(b"i") if isinstance(value, dict) else None
    return inbox if isinstance(inbox, bytes) and len(inbox) == creq.INBOX_SIZE else None


class ContactRequests:
    """Requests we sent and received, in the store and in the DHT request slots."""

    def __init__(
        self,
        identity: Identity,
        certificate: DeviceCertificate,
        store: Store,
        *,
        pow_bits: int,
        emit: Callable[[dict[str, Any]], None],
    ) -> None:
        self.identity = identity
        self.me = identity.public_key
        self.certificate = certificate
        self.store = store
        self.pow_bits = pow_bits
        self._emit = emit
        self.stats: dict[str, int] = {"squatted_slots": 0, "inbox_moves": 0, "last_move_ms": 0}

    def json(self, req_id: bytes) -> dict[str, Any]:
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

    def contact_reached(self, pk: bytes) -> None:
        """A session came up with ``pk``: if we had asked them, they accepted (a node
        answers sessions from its contacts only), so our request says so."""
        for row in self.store.list_requests():
            mine = row.direction == "out" and row.pk == pk and row.state == "pending"
            if mine and self.store.set_request_state(row.id, "accepted"):
                self._emit({"type": "request", "request": self.json(row.id)})

    async def send(
        self, dht: DhtService, pk: bytes, note: str | None, suggested: str | None
    ) -> bytes:
        """Seal a request to ``pk`` into one of its slots; returns the stored request id.

        Raises ValueError for a request that cannot be sealed, DhtError when it could
        not be stored."""
        now = time.time()
        my_name = (self.store.kv_get("profile_name") or b"").decode()
        started = time.monotonic()
        inbox = await fetch_inbox(dht, pk)
        while inbox is None and time.monotonic() - started < PROFILE_RETRY_WITHIN:
            await asyncio.sleep(PROFILE_RETRY_AFTER)
            inbox = await fetch_inbox(dht, pk)
        if inbox is None:
            raise DhtError(
                "their profile, which says where requests go, is not in the DHT "
                "(they have not been online for a few hours, or run an older version)"
            )
        sealed = await asyncio.to_thread(
            creq.seal_request,
            self.identity,
            self.certificate,
            pk,
            name=my_name,
            note=note or "",
            now=now,
            pow_bits=self.pow_bits,
        )
        day = creq.day_of(now)
        slots = [creq.slot_key(pk, day, i, inbox) for i in range(creq.SLOTS)]
        publics = [k.public_key().public_bytes_raw() for k in slots]
        found = await asyncio.gather(*(dht.get_mutable(p) for p in publics), return_exceptions=True)
        usable = [
            i
            for i, r in enumerate(found)
            if isinstance(r, BaseException) or r.seq is None or not creq.squatted(r.seq, now)
        ]
        if not usable:
            raise DhtError(
                "every request slot of theirs is squatted by someone; their node moves to "
                "fresh slots when it sees this (within minutes): try again later"
            )
        empty = [
            i for i in usable if not isinstance(found[i], BaseException) and found[i].value is None
        ]
        index = empty[0] if empty else usable[int.from_bytes(os.urandom(1), "big") % len(usable)]
        await dht.put_mutable(bep44.sign_mutable(slots[index], encode(sealed), int(now * 1000)))
        ts_ms = int(now * 1000)
        req_id = creq.request_id(self.me, ts_ms)
        self.store.add_request(req_id, pk, "out", note, ts_ms, name=suggested)
        return req_id

    # ------------------------------------------------------------------ our inbox

    def _inbox_state(self) -> tuple[bytes, bytes | None, float]:
        """(current inbox, previous one or None, when we moved off the previous)."""
        raw = self.store.kv_get(INBOX_KEY) or b""
        size = creq.INBOX_SIZE
        if len(raw) != 2 * size + 8:
            return self._rotate(None, 0.0)  # the first inbox: a move may follow at once
        current, previous = raw[:size], raw[size : 2 * size]
        rotated = int.from_bytes(raw[2 * size :], "big") / 1000
        return current, (previous if any(previous) else None), rotated

    def _rotate(self, previous: bytes | None, now: float) -> tuple[bytes, bytes | None, float]:
        current = os.urandom(creq.INBOX_SIZE)
        kept = previous if previous is not None else bytes(creq.INBOX_SIZE)
        self.store.kv_set(INBOX_KEY, current + kept + int(now * 1000).to_bytes(8, "big"))
        return current, previous, now

    @property
    def inbox(self) -> bytes:
        """The value senders need (published in our profile as ``i``)."""
        return self._inbox_state()[0]

    def _inboxes(self, now: float) -> list[bytes]:
        """Where to look: the current inbox, and the previous one for a while after a
        move (senders who read our profile before it may still write there)."""
        current, previous, rotated = self._inbox_state()
        if previous is not None and now - rotated < PREVIOUS_INBOX_GRACE:
            return [current, previous]
        return [current]

    async def poll_loop(
        self,
        dht: DhtService,
        joined: asyncio.Event,
        every: float,
        on_rotate: Callable[[bytes], None] = lambda inbox: None,
    ) -> None:
        """Read today's request slots every ``every`` seconds, and yesterday's (which
        matter only for requests sent before midnight) every fifth round. Slots found
        squatted move us to a fresh inbox (``on_rotate`` republishes the profile)."""
        rounds = 0
        while True:
            await joined.wait()
            try:
                await self.poll_once(
                    dht, time.time(), yesterday=rounds % 5 == 0, on_rotate=on_rotate
                )
            except StorageFault as exc:  # a full disk: the slots are read again next round
                log.warning("contact requests not stored: %s", exc, exc_info=exc)
            rounds += 1
            await asyncio.sleep(every)

    async def poll_once(
        self,
        dht: DhtService,
        now: float,
        *,
        yesterday: bool = True,
        on_rotate: Callable[[bytes], None] = lambda inbox: None,
    ) -> None:
        """One read of our slots (see :meth:`poll_loop`)."""
        today = creq.day_of(now)
        days = (today, today - 1) if yesterday else (today,)
        current = self.inbox
        squats = 0
        for inbox in self._inboxes(now):
            for day in days:
                keys = [
                    creq.slot_key(self.me, day, i, inbox).public_key().public_bytes_raw()
                    for i in range(creq.SLOTS)
                ]
                found = await asyncio.gather(
                    *(dht.get_mutable(k) for k in keys), return_exceptions=True
                )
                for result in found:
                    if isinstance(result, BaseException):
                        continue
                    if result.seq is not None and creq.squatted(result.seq, now):
                        squats += inbox == current
                        continue
                    if isinstance(result.value, bytes):
                        self._consider(result.value, now)
        if squats:
            self._on_squatted(squats, now, on_rotate)

    def _on_squatted(self, squats: int, now: float, on_rotate: Callable[[bytes], None]) -> None:
        self.stats["squatted_slots"] += squats
        current, _, rotated = self._inbox_state()
        if now - rotated < MIN_ROTATION:
            return  # moved very recently: the squatter is watching; do not thrash
        fresh = self._rotate(current, now)[0]
        self.stats["inbox_moves"] += 1
        self.stats["last_move_ms"] = int(now * 1000)
        log.warning(
            "%d of our contact-request slots were squatted (seq far in the future): "
            "moved to a fresh inbox",
            squats,
        )
        on_rotate(fresh)
        self._emit({"type": "inbox_moved", "squatted": squats})

    def _consider(self, sealed: bytes, now: float) -> None:
        try:
            req = creq.open_request(self.identity, sealed, now=now, pow_bits=self.pow_bits)
        except creq.RequestError as exc:
            log.info("ignored a request slot: %s", exc)
            return
        if self.store.get_contact(req.sender) is not None:
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
            self._emit({"type": "request", "request": self.json(req.request_id)})

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
from btchat.identity.idtext import format_id
from btchat.identity.keys import DeviceCertificate, Identity
from btchat.messaging.store import Store
from btchat.net.dht_service import DhtService
from btchat.node import requests as creq

__all__ = ["ContactRequests"]

log = logging.getLogger(__name__)


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
        slots = [creq.slot_key(pk, day, i) for i in range(creq.SLOTS)]
        publics = [k.public_key().public_bytes_raw() for k in slots]
        found = await asyncio.gather(*(dht.get_mutable(p) for p in publics), return_exceptions=True)
        empty = [
            i for i, r in enumerate(found) if not isinstance(r, BaseException) and r.value is None
        ]
        index = empty[0] if empty else int.from_bytes(os.urandom(1), "big") % creq.SLOTS
        await dht.put_mutable(bep44.sign_mutable(slots[index], encode(sealed), int(now * 1000)))
        ts_ms = int(now * 1000)
        req_id = creq.request_id(self.me, ts_ms)
        self.store.add_request(req_id, pk, "out", note, ts_ms, name=suggested)
        return req_id

    async def poll_loop(self, dht: DhtService, joined: asyncio.Event, every: float) -> None:
        """Read today's request slots every ``every`` seconds, and yesterday's (which
        matter only for requests sent before midnight) every fifth round."""
        rounds = 0
        while True:
            await joined.wait()
            now = time.time()
            today = creq.day_of(now)
            days = (today, today - 1) if rounds % 5 == 0 else (today,)
            rounds += 1
            for day in days:
                keys = [
                    creq.slot_key(self.me, day, i).public_key().public_bytes_raw()
                    for i in range(creq.SLOTS)
                ]
                found = await asyncio.gather(
                    *(dht.get_mutable(k) for k in keys), return_exceptions=True
                )
                for result in found:
                    if isinstance(result, BaseException) or not isinstance(result.value, bytes):
                        continue
                    self._consider(result.value, now)
            await asyncio.sleep(every)

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

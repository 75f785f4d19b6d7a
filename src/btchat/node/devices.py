"""Our own devices: the certificates of every installation of our identity.

How this works: each device of an identity has its own X25519 key and device id,
certified by the identity (``identity/keys.py``). The device list we publish in the
DHT (``discovery/rendezvous.py``) must name all of them, or contacts could not dial
the others. :class:`OwnDevices` keeps those certificates in the message database
(table ``own_devices``), this device's own first, and tells whoever watches (the
publish loop) when one is added, so the new list goes out at once instead of at the
next 30-minute republish. Linking a device (``node/linking.py``) adds the new device's
certificate here on the old device, and the old device's certificates on the new one.

Only certificates by our identity that verify are kept, at most
:data:`~btchat.discovery.rendezvous.MAX_DEVICES` (what one BEP 44 item can list).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any, Protocol

from btchat.discovery.rendezvous import MAX_DEVICES
from btchat.errors import ApiError, UsageError
from btchat.identity.devices import MAX_REVOKED
from btchat.identity.keys import CertificateError, DeviceCertificate
from btchat.messaging.store import Store
from btchat.node.device_lists import DeviceLists
from btchat.storage import register_migrations, sql_step

__all__ = ["DeviceListFull", "DevicePart", "OwnDevices"]

log = logging.getLogger(__name__)


class DeviceListFull(UsageError):
    """Our identity already has the most devices one device list can name."""


#: Ordered steps of the own-devices table; append only, never edit a released one.
MIGRATIONS = (
    sql_step(  # 1: certificates of our identity's other devices (ours is in the key file)
        (
            """CREATE TABLE own_devices (
                device_id BLOB PRIMARY KEY CHECK (length(device_id) = 16),
                cert BLOB NOT NULL,
                added_ms INTEGER NOT NULL
            ) WITHOUT ROWID""",
        )
    ),
)
register_migrations("devices", MIGRATIONS)


class OwnDevices:
    """Our identity's device certificates: ``certs()`` to publish, ``add()`` a new one."""

    def __init__(self, store: Store, certificate: DeviceCertificate) -> None:
        self.store = store
        #: This device's certificate (from the key file): always first, never stored.
        self.certificate = certificate
        self.me = certificate.identity
        self._watchers: list[Callable[[], None]] = []
        store.migrate()  # the table, if this file predates it
        #: The ids we (on any of our devices) have revoked, kept for good.
        self.lists = DeviceLists(store)
        #: Another of our devices revoked this one: it must stop speaking for us.
        self.this_revoked = self.lists.is_revoked(self.me, certificate.device_id)

    def watch(self, callback: Callable[[], None]) -> None:
        """Call ``callback`` after every change (the publish loop republishes)."""
        self._watchers.append(callback)

    def _stored(self) -> list[DeviceCertificate]:
        """Stored certificates, re-verified on every read: one that fails is skipped."""
        out = []
        for (blob,) in self.store.query(
            "SELECT cert FROM own_devices ORDER BY added_ms, device_id"
        ):
            try:
                cert = DeviceCertificate.decode(bytes(blob))
            except CertificateError:
                log.warning("skipping a stored own-device certificate that does not verify")
                continue
            if (
                cert.identity == self.me
                and cert.device_id != self.certificate.device_id
                and not self.lists.is_revoked(self.me, cert.device_id)
            ):
                out.append(cert)
        return out

    def certs(self) -> list[DeviceCertificate]:
        """This device's certificate first, then the others in the order they came; at
        most MAX_DEVICES."""
        return [self.certificate, *self._stored()][:MAX_DEVICES]

    def knows(self, device_id: bytes) -> bool:
        return any(c.device_id == device_id for c in self.certs())

    def check_not_revoked(self) -> None:
        """A device revoked by another of ours speaks for the identity no more: it may not
        revoke or link devices (the seed it holds could, but our software does not)."""
        if self.this_revoked:
            raise ApiError(
                403,
                "this_revoked",
                "this device was revoked by another of your devices: it can no longer "
                "revoke or link devices",
            )

    def room(self) -> int:
        """How many more devices the list can name."""
        return MAX_DEVICES - len(self.certs())

    def add(self, cert: DeviceCertificate, *, now_ms: int | None = None) -> bool:
        """Keep ``cert`` (a valid certificate by our identity); True if the list changed.

        The same device again with a newer certificate replaces the old one; an older
        or identical one changes nothing. Raises UsageError for a certificate that is not
        ours or does not verify, DeviceListFull when the list has no room.
        """
        if cert.identity != self.me or not cert.verify():
            raise UsageError("not a valid device certificate of this identity")
        if cert.device_id == self.certificate.device_id:
            return False  # this device: its certificate lives in the key file
        if self.lists.is_revoked(self.me, cert.device_id):
            raise UsageError("that device was revoked; a revoked device never comes back")
        existing = {c.device_id: c for c in self._stored()}
        old = existing.get(cert.device_id)
        if old is not None and old.created >= cert.created:
            return False
        if old is None and self.room() <= 0:
            raise DeviceListFull(f"an identity lists at most {MAX_DEVICES} devices")
        added = int(time.time() * 1000) if now_ms is None else now_ms
        with self.store.transaction() as conn:
            conn.execute(
                "INSERT INTO own_devices (device_id, cert, added_ms) VALUES (?, ?, ?)"
                " ON CONFLICT (device_id) DO UPDATE SET cert = excluded.cert",
                (cert.device_id, cert.encode(), added),
            )
        for callback in self._watchers:
            callback()
        return True

    # ---------------------------------------------------------------- revocation

    def revoked(self) -> frozenset[bytes]:
        return self.lists.revoked(self.me)

    def find(self, ref: str, *, this_one: bool = False) -> DeviceCertificate:
        """One of our other devices (``this_one``: or this one) by its id in hex, or a
        unique prefix of 4+ digits."""
        ref = ref.strip().lower()
        if len(ref) < 4 or any(ch not in "0123456789abcdef" for ch in ref):
            raise ApiError(400, "bad_device", "name a device by its id in hex (4+ digits)")
        if this_one and self.certificate.device_id.hex().startswith(ref):
            return self.certificate
        if self.certificate.device_id.hex().startswith(ref):
            raise ApiError(
                400,
                "this_device",
                "that is this device: revoke it from another of your devices"
                " (or make a new identity if all are lost)",
            )
        found = [c for c in self._stored() if c.device_id.hex().startswith(ref)]
        if not found:
            raise ApiError(404, "unknown_device", f"no other device of yours has id {ref}...")
        if len(found) > 1:
            raise ApiError(409, "ambiguous", f"{ref} names {len(found)} devices: give more digits")
        return found[0]

    def revoke(self, device_id: bytes) -> None:
        """Cut ``device_id`` off for good: it leaves the device list, joins the revocation
        list, and every contact that reads either stops dialling and accepting it."""
        if device_id == self.certificate.device_id:
            raise ApiError(400, "this_device", "revoke this device from another of yours")
        self.check_not_revoked()
        if len(self.revoked()) >= MAX_REVOKED:
            raise ApiError(409, "too_many", f"an identity revokes at most {MAX_REVOKED} devices")
        self.lists.learn(self.me, revoked=frozenset({device_id}))
        with self.store.transaction() as conn:
            conn.execute("DELETE FROM own_devices WHERE device_id = ?", (device_id,))
        log.warning("revoked device %s", device_id.hex())
        for callback in self._watchers:
            callback()

    def merge_published(
        self,
        certs: list[DeviceCertificate],
        revoked: frozenset[bytes],
        revoked_seq: int | None,
    ) -> bool:
        """What our identity's lists in the DHT say (another of our devices may have put
        them): keep certificates we lack and revocations for good. True if we learned
        anything, so the merged lists go out."""
        learned = self.lists.learn(self.me, revoked_seq=revoked_seq, revoked=revoked)
        changed = bool(learned.newly_revoked)
        if learned.newly_revoked:
            with self.store.transaction() as conn:
                conn.executemany(
                    "DELETE FROM own_devices WHERE device_id = ?",
                    [(d,) for d in learned.newly_revoked],
                )
            for callback in self._watchers:
                callback()
        if self.certificate.device_id in learned.newly_revoked and not self.this_revoked:
            self.this_revoked = True
            log.error(
                "this device was revoked by another of your devices: contacts no longer "
                "accept it; link it again to use it"
            )
        known = {c.device_id for c in self.certs()}
        for cert in certs:
            if cert.device_id in known or cert.device_id in self.revoked():
                continue
            try:
                changed |= self.add(cert)
            except UsageError as exc:  # full, or not ours: keep what we have
                log.info("not adding a listed device %s: %s", cert.device_id.hex()[:8], exc)
        return changed

    def mailbox_device(self) -> bytes:
        """The one device of ours that runs offline delivery: the oldest (then the lowest
        id), so linking a device never moves it, only revoking this one does. The DHT
        mailbox keeps one ratchet and one counter per pair of identities, so two devices
        using it at once would overwrite each other's packets and acknowledgements; the
        others get what it receives through the sync between our devices."""
        return min(self.certs(), key=lambda c: (c.created, c.device_id)).device_id

    def listing(self) -> dict[str, Any]:
        """The API's device list."""
        return {
            "devices": [
                {
                    "device_id": c.device_id.hex(),
                    "created": c.created,
                    "this_device": c.device_id == self.certificate.device_id,
                }
                for c in self.certs()
            ],
            "revoked": sorted(d.hex() for d in self.revoked()),
            "this_revoked": self.this_revoked,
            "mailbox_device": self.mailbox_device().hex(),
        }


class SyncView(Protocol):
    """What the listing says of the sync with each device (``node/own_sync.py``)."""

    stats: dict[str, int]

    def behind(self, device: bytes) -> int: ...

    def is_up(self, device: bytes) -> bool: ...


class Names(Protocol):
    """What we call our devices (``node/device_names.py``)."""

    def of(self, device: bytes) -> str | None: ...

    def rename(self, device: bytes, text: str) -> str: ...


class Linker(Protocol):
    """What links a new device (``node/linking.py``'s ``DeviceLinking``)."""

    async def link(self) -> dict[str, Any]: ...

    async def cancel_link(self) -> None: ...


class DevicePart:
    """The API's ``devices`` part (``api/facade.py`` ``Devices``) over :class:`OwnDevices`
    (whose watchers end what we hold with a revoked device), the sync and the linker."""

    def __init__(
        self, own: OwnDevices, sync: SyncView, linker: Linker, names: Names | None = None
    ) -> None:
        self.own = own
        self.sync = sync
        self.linker = linker
        self.names = names

    async def link(self) -> dict[str, Any]:
        return await self.linker.link()

    async def cancel_link(self) -> None:
        await self.linker.cancel_link()

    def _listing(self) -> dict[str, Any]:
        out = self.own.listing()
        for entry, cert in zip(out["devices"], self.own.certs(), strict=True):
            entry["name"] = self.names.of(cert.device_id) if self.names is not None else None
            if not entry["this_device"]:
                entry["online"] = self.sync.is_up(cert.device_id)
                entry["to_sync"] = self.sync.behind(cert.device_id)
        out["sync"] = dict(self.sync.stats)
        return out

    async def list(self) -> dict[str, Any]:
        return self._listing()

    async def revoke(self, device: str) -> dict[str, Any]:
        cert = self.own.find(device)
        self.own.revoke(cert.device_id)
        return self._listing()

    async def rename(self, device: str, name: str) -> dict[str, Any]:
        if self.names is None:
            raise ApiError(501, "no_names", "this daemon keeps no device names")
        cert = self.own.find(device, this_one=True)
        self.names.rename(cert.device_id, name)
        return self._listing()

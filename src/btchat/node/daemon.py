"""``btchat up``: the messenger daemon, the composition root of a running node.

It builds and wires the parts and implements the API facade
(:class:`btchat.api.facade.Messenger`) by delegating to them: the DHT service and the
join loop, peering (sessions per device, with the rendezvous), the conversation core
and its shell (:mod:`btchat.node.chat`: messages, receipts, outbox replay, presence),
offline delivery, channels, profiles, contact requests and the event stream. The
protocol logic lives in those parts; what is left here is who talks to whom.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import os
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from btchat import __version__
from btchat.channels.service import ChannelConfig
from btchat.errors import ApiError, StorageFault
from btchat.identity.idtext import format_id, format_uri
from btchat.identity.keys import DeviceCertificate
from btchat.identity.keystore import LoadedKeys
from btchat.messaging import conversation as conv
from btchat.messaging.contacts import ContactChange
from btchat.messaging.conversation import Conversations
from btchat.messaging.envelope import Envelope
from btchat.messaging.own_sync import (
    NOTE_STATES,
    ReceivedNote,
    encode_devices,
    encode_read,
    encode_received,
    encode_state,
)
from btchat.messaging.store import Store
from btchat.net.dht_proxy import DhtViaContacts
from btchat.net.dht_service import DhtError, DhtService
from btchat.net.onion import OnionError, OnionService, check_control
from btchat.net.portmap import PortMapper, PortMapState
from btchat.net.proxy import ProxyDialer, ProxyUrl
from btchat.net.transport import Dialer, TcpDialer
from btchat.net.upnp import UpnpPortMapper
from btchat.node.channel_files import ChannelFilesConfig
from btchat.node.channels import ChannelManager
from btchat.node.chat import Chat
from btchat.node.contact_manager import ContactManager
from btchat.node.contact_requests import ContactRequests
from btchat.node.contact_sync import ContactSync
from btchat.node.contacts import ContactBook
from btchat.node.device_names import DeviceNames
from btchat.node.devices import DevicePart, OwnDevices
from btchat.node.events import EventHub
from btchat.node.files import Files, FilesConfig
from btchat.node.join import join_loop
from btchat.node.linking import DeviceLinking
from btchat.node.offline import OfflineDelivery
from btchat.node.own_sync import OwnSync
from btchat.node.peering import Peering, PeeringConfig
from btchat.node.profile import Profiles
from btchat.node.profile_sync import ProfileSync
from btchat.node.requests import REQUEST_POW_BITS
from btchat.node.settings_file import SettingsFile
from btchat.node.storage_guard import StorageGuard, probe_store
from btchat.node.tasks import TaskOwner
from btchat.offline.mailbox import MailboxConfig

__all__ = ["Daemon", "DaemonConfig"]

#: Least time between two reads of one contact's device lists on its notice.
DEVICES_NOTICE_EVERY = 10.0

log = logging.getLogger(__name__)

MAX_TEXT = 16 * 1024
#: Replay ids are kept for the envelope window (15 days) plus skew, then pruned.
SEEN_RETENTION = 15 * 86400.0 + 600.0


@dataclass(frozen=True)
class DaemonConfig:
    data_dir: Path
    # Host names are resolved again at every join attempt: DNS may come back later.
    bootstrap: list[tuple[str, int]] = field(default_factory=list)
    dht_host: str = "0.0.0.0"
    dht_port: int = 6881
    dht_host6: str | None = None  # BEP 32: the IPv6 DHT socket (None: IPv4 only)
    dht_ipv4: bool = True  # False (with dht_host6): an IPv6-only node
    peering: PeeringConfig = field(default_factory=PeeringConfig)
    request_poll: float = 60.0  # how often our DHT request slots are read
    request_pow_bits: int = REQUEST_POW_BITS
    mailbox: MailboxConfig = field(default_factory=MailboxConfig)
    channels: ChannelConfig = field(default_factory=ChannelConfig)
    #: Sessions and channel links are dialled through this proxy when set.
    proxy: ProxyUrl | None = None
    #: Tor mode: no DHT node and no UDP socket at all; every dial goes through ``proxy``.
    tor: bool = False
    #: Tor mode: Tor's control port (loopback), to make an onion service for sessions.
    tor_control: tuple[str, int] | None = None
    #: Where accepted files are saved (default: ``<data dir>/files``).
    files_dir: Path | None = None

    def __post_init__(self) -> None:
        # The last line of defence: a Tor-mode daemon that would send anything from our
        # own IP refuses to be built, whoever composed its config.
        if self.tor:
            if self.proxy is None:
                raise ValueError("Tor mode needs a proxy (Tor's SOCKS port)")
            ways = self.channels
            if ways.dht or ways.trackers or ways.lsd or self.peering.lan is not None:
                raise ValueError("Tor mode allows no DHT, tracker or LAN discovery")
        if self.tor_control is not None:
            check_control(self.tor_control)

    # Map our ports on the home gateway (UPnP-IGD). Off unless asked: a node built in a
    # test must not search the LAN; ``btchat up`` turns it on (Settings.upnp).
    upnp: bool = False


def _hostport(addr: tuple[str, int] | None) -> str | None:
    return None if addr is None else f"{addr[0]}:{addr[1]}"


def _ipv6_status(dht: DhtService | None) -> dict[str, Any]:
    """BEP 32: the IPv6 DHT socket and table, for ``status``."""
    addr6 = dht.addr6 if dht is not None else None
    if dht is None or addr6 is None:
        return {}
    return {"addr6": f"[{addr6[0]}]:{addr6[1]}", "nodes6": len(dht.node.tables[6])}


class Daemon:
    """Implements :class:`btchat.api.facade.Messenger` on top of the real components."""

    def __init__(self, config: DaemonConfig, keys: LoadedKeys, store: Store) -> None:
        self.config = config
        self.keys = keys
        self.me = keys.identity.public_key
        self.store = store
        self.dht: DhtService | None = None
        #: Tor mode: the DHT through a contact that serves it (no DHT node of our own).
        self.dht_via: DhtViaContacts | None = None
        #: Tor mode with a control port: the onion service for our session listener.
        self.onion: OnionService | None = None
        self.onion_error: str | None = None
        #: How every session and channel link is dialled (the proxy, when configured).
        self.dialer: Dialer = ProxyDialer(config.proxy) if config.proxy is not None else TcpDialer()
        self.peering: Peering | None = None
        self.offline: OfflineDelivery | None = None
        #: On a device that is not our mailbox device: reads v2 packets wrapped for it.
        self.offline_reader: OfflineDelivery | None = None
        self.channels: ChannelManager | None = None
        self.portmap: UpnpPortMapper | None = None
        self.started = time.monotonic()
        self.events = EventHub()
        self._emit = self._emit_event
        self.own_sync: OwnSync | None = None
        self._devices_read_at: dict[bytes, float] = {}  # contact -> next allowed read
        self._taking_over = False  # offline delivery starting here after a revocation
        self._tasks = TaskOwner()
        self._joined = asyncio.Event()
        self.profiles = Profiles(keys.identity, store)
        #: Our identity's devices (this one and those linked), for the device list.
        self.own_devices = OwnDevices(store, keys.certificate)
        self.own_sync = OwnSync(
            store,
            self._send_to_own,
            self._emit,
            devices=lambda: encode_devices(
                [c.encode() for c in self.own_devices.certs()], self.own_devices.revoked()
            ),
            on_devices=lambda note: self.own_devices.merge_published(
                DeviceCertificate.all_of(self.me, note.certs), note.revoked, None
            ),
        )
        self.own_sync.me = self.me
        self.own_sync.on_adopted = self._adopted
        self.own_sync.on_acknowledged = self._acknowledged_there
        self.own_sync.on_received = self._received_there
        self.own_sync.received_payloads = self._received_payloads
        self.own_devices.watch(self._own_devices_changed)
        self.contact_sync = ContactSync(
            store,
            keys.device.device_id,
            lambda payload: self.own_sync.send_to_all(payload) if self.own_sync else None,
            self._contact_synced,
        )
        self.own_sync.attach_contacts(self.contact_sync.payloads, self.contact_sync.merge)
        self.profile_sync = ProfileSync(
            store, self.profiles, keys.device.device_id, self.own_sync.send_to_all, self._emit
        )
        self.own_sync.attach_profile(self.profile_sync.payloads, self.profile_sync.merge)
        self.device_names = DeviceNames(
            store, keys.device.device_id, self.own_sync.send_to_all, self._emit
        )
        self.own_sync.attach_names(self.device_names.payloads, self.device_names.merge)
        self.contacts = ContactBook(self.me, store, self.profiles)
        self.requests = ContactRequests(
            keys.identity,
            keys.certificate,
            store,
            pow_bits=config.request_pow_bits,
            emit=self._emit,
        )
        self.contact_manager = ContactManager(
            self.contacts,
            store,
            self.profiles,
            self.requests,
            emit=self._emit,
            spawn=self._spawn,
            dialer=self.dialer,
            mailbox=config.mailbox,
            on_changed=lambda pk, removing: self.contact_sync.record(pk, removing=removing),
        )
        #: Linking a new device with a one-time code.
        self.linking = DeviceLinking(
            keys.identity, store, self.own_devices, self.profiles,
            host=config.peering.host, emit=self._emit, spawn=self._spawn,
        )  # fmt: skip
        #: The API's ``devices`` part: list, revoke, link.
        self.devices = DevicePart(self.own_devices, self.own_sync, self.linking, self.device_names)
        #: The API's ``settings`` part (the config file), set by ``node/boot.py``.
        self.settings: SettingsFile | None = None
        self.conversations = Conversations(keys.identity, keys.device.device_id, store)
        self.chat = Chat(self.conversations, store, send=self._transmit, emit=self._emit)
        #: A full (failing, read-only) disk: one log line, a status, no acks, back-off.
        self.guard = StorageGuard(
            probe=probe_store(store),
            reconnect=lambda pk, why: self.peering.drop(pk, why) if self.peering else None,
        )
        self.storage = self.guard.health
        self.chat.on_fault = self._on_store_fault
        files_dir = config.files_dir or config.data_dir / "files"
        self.files = Files(
            FilesConfig(save_dir=files_dir, state_dir=config.data_dir / "transfers"),
            store,
            self.conversations,
            resolve=self.contacts.resolve,
            drive=self.chat.drive,
            emit=self._emit,
        )
        self.chat.files = self.files

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        """Start every part; in Tor mode, only those that send nothing but through the
        proxy: no DHT node (rendezvous lookups, device lists, profiles, contact requests
        and the offline mailbox go through a contact that serves the DHT, once a session
        with one is up), channels without discovery."""
        dht_ops: DhtService | DhtViaContacts
        if not self.config.tor:
            dht_ops = self.dht = await DhtService.start(
                host=self.config.dht_host,
                port=self.config.dht_port,
                state_dir=self.config.data_dir / "dht",
                host6=self.config.dht_host6,
                ipv4=self.config.dht_ipv4,
            )
        else:
            # "Joined" means here: some session's peer serves the DHT for us.
            dht_ops = self.dht_via = DhtViaContacts(
                lambda: self.peering.dht_servers() if self.peering else [], joined=self._joined
            )
        self.peering = Peering(
            self.keys.identity,
            self.keys.device,
            self.keys.certificate,
            dht_ops,
            self.config.peering,
            contacts=self.contacts,
            on_established=self.guard.shield("session start", self._on_established),
            on_closed=self.guard.shield("session end", self._on_closed),
            on_data=self.guard.shield("receiving", self._on_data),
            dialer=self.dialer,
            on_switched=self.guard.shield("session switch", self._on_switched),
            on_stream=self.files.on_stream,
            own_devices=self.own_devices,
            on_own_device=self.guard.shield("own device session", self._own_device),
        )
        await self.peering.start()
        if self.config.tor and self.config.tor_control is not None:
            await self._start_onion(self.config.tor_control, self.peering.port)
        if self.peering.rendezvous is not None:
            self.peering.rendezvous.on_published = self._own_lists_published
        self.chat.devices_changed = self._contact_devices_changed
        self.contact_manager.peering = self.peering
        self.contact_manager.dht = dht_ops
        self.channels = ChannelManager(
            self.keys.identity,
            self.store,
            self.dht,
            self.config.channels,
            self._emit,
            dialer=self.dialer,
            device_id=self.keys.device.device_id,
            own_sync=self.own_sync,
            files=ChannelFilesConfig(
                save_dir=self.files.config.save_dir,
                state_dir=self.config.data_dir / "channel_files",
                max_size=self.files.config.max_size,
            ),
        )
        await self.channels.start()
        self.guard.install()
        self._spawn(self.guard.run())
        self._spawn(self._housekeeping())
        # Full-text indexing in idle time (and rows a crash left pending, at once).
        self._spawn(self.chat.index_loop(lambda exc: self.guard.report(exc, "indexing")))
        await self._start_dht_parts(dht_ops, self.peering)

    async def _start_dht_parts(self, dht: DhtService | DhtViaContacts, peering: Peering) -> None:
        """What needs the DHT: port mapping, joining and linking (our own DHT node only),
        offline delivery, contact requests, profiles."""
        if isinstance(dht, DhtService):
            self._start_port_mapping(dht, peering)
            self.linking.dht = dht  # any of our devices links a new one, mailbox or not
        mailbox_device = self.own_devices.mailbox_device()
        if mailbox_device != self.keys.device.device_id:
            log.info(
                "offline delivery runs on your device %s: this one reaches contacts over "
                "sessions, gets what came by the DHT mailbox from it, and reads the "
                "mailbox itself while it is away",
                mailbox_device.hex()[:8],
            )
            await self._start_offline(dht, peering, reader=True)
        else:
            await self._start_offline(dht, peering)
        if isinstance(dht, DhtService):
            self._spawn(
                join_loop(dht, self.config.bootstrap, self._joined, self._emit, peering.poke)
            )
        self.profiles.inbox = self.requests.inbox
        self._spawn(
            self.requests.poll_loop(dht, self._joined, self.config.request_poll, self._inbox_moved)
        )
        self._spawn(self.profiles.publish_loop(dht, self._joined))

    async def _start_offline(
        self, dht: DhtService | DhtViaContacts, peering: Peering, *, reader: bool = False
    ) -> None:
        if not reader and self.offline_reader is not None:  # taking over from a reader
            await self.offline_reader.stop()
            self.offline_reader = None
        delivery = OfflineDelivery(
            self.keys.identity,
            self.store,
            dht,
            contacts=self.contacts.reachable,
            is_online=peering.is_online,
            send=self.chat.send_body,
            emit=self._emit,
            on_message=self.chat.emit_message,
            config=self.config.mailbox,
            device_id=self.keys.device.device_id,
            devices_of=lambda pk: [c.device_id for c in peering.certs_of(pk)],
            reader=reader,
            polling=self._mailbox_device_away,
        )
        delivery.on_received = self._received_here
        if reader:
            self.offline_reader = delivery
            await delivery.start(self._joined)
            return
        self.offline = delivery
        self.chat.offline = self.contact_manager.offline = self.offline
        await self.offline.start(self._joined)
        # A contact revoked a device: the ratchet with it may be that device's (it held
        # the Olm account the contact's bundle named), so the next packet starts anew.
        peering.on_contact_revoked = self.offline.state.drop_sessions

    def _received_here(self, peer: bytes, n: int) -> None:
        """A packet came in by the DHT mailbox: our other devices fetch none up to ``n``
        again, and no head of theirs acknowledges less (1.6)."""
        if self.own_sync is not None and n >= 0:
            for payload in encode_received([(peer, n)]):
                self.own_sync.send_to_all(payload)

    def _received_payloads(self) -> list[bytes]:
        delivery = self.offline or self.offline_reader
        return encode_received(delivery.state.received_counters()) if delivery else []

    def _received_there(self, note: ReceivedNote) -> None:
        for delivery in (self.offline, self.offline_reader):
            if delivery is not None:
                delivery.learn_received(note.counters)

    def _mailbox_device_away(self) -> bool:
        """No session with our mailbox device: a reader reads the mailbox itself."""
        mailbox = self.own_devices.mailbox_device()
        return self.own_sync is None or not self.own_sync.is_up(mailbox)

    async def _start_onion(self, control: tuple[str, int], port: int) -> None:
        """Make our session listener reachable as ``xxx.onion``; a Tor that is not there
        is a warning and a status line, not a failed start."""
        try:
            self.onion = await OnionService.start(
                control, (self.config.peering.host, port), self.config.data_dir
            )
        except OnionError as exc:
            self.onion_error = str(exc)
            log.warning("no onion service: %s", exc)
            return
        if self.peering is not None:
            self.peering.set_onion(self.onion.address)  # contacts find it in our records

    def _start_port_mapping(self, dht: DhtService, peering: Peering) -> None:
        """Map the DHT's UDP port and the session TCP port on the gateway, if any.

        Not for a loopback bind: nothing outside this machine could use the mapping."""
        if not self.config.upnp or ipaddress.ip_address(dht.addr[0]).is_loopback:
            return
        core = PortMapper({"UDP": dht.addr[1], "TCP": peering.port})
        self.portmap = UpnpPortMapper(core, host=dht.addr[0], on_change=self._on_port_mapping)
        self._spawn(self.portmap.run())

    def _on_port_mapping(self, state: PortMapState) -> None:
        if self.dht is not None:
            before = {p: self.dht.external_addr(p) for p in ("TCP", "UDP")}
            self.dht.port_mapping = state
            after = {p: self.dht.external_addr(p) for p in ("TCP", "UDP")}
            if before != after and self.peering is not None:
                self.peering.candidates_changed()  # a mapping gained or lost

    async def stop(self) -> None:
        self.chat.close()
        self.guard.uninstall()
        await self.linking.close()
        await self._tasks.cancel_all()
        if self.portmap is not None:
            await self.portmap.close()  # a clean exit leaves no mapping on the gateway
        if self.onion is not None:
            await self.onion.close()
        for delivery in (self.offline, self.offline_reader):
            if delivery is not None:
                await delivery.stop()
        if self.channels is not None:
            await self.channels.stop()
        if self.peering is not None:
            await self.peering.stop()
        if self.dht is not None:
            self.dht.close()
        if self.dht_via is not None:
            self.dht_via.close()
        self.files.close()
        self.store.close()

    def _transmit(self, peer: bytes, data: bytes) -> bool:
        return self.peering is not None and self.peering.send(peer, data)

    def _spawn(self, coro: Any) -> None:
        self._tasks.spawn(coro)

    @property
    def joined(self) -> bool:
        """Our routing table is not empty: DHT operations can work."""
        return self._joined.is_set()

    async def _housekeeping(self) -> None:
        while True:
            try:
                self.store.prune_seen(int((time.time() - SEEN_RETENTION) * 1000))
            except StorageFault as exc:  # a full disk: noted once; pruning waits an hour
                self.guard.report(exc, "pruning")
            await asyncio.sleep(3600)

    @property
    def joined_event(self) -> asyncio.Event:
        """Set while the DHT routing table holds nodes (never in Tor mode), to wait on."""
        return self._joined

    def subscribe(self) -> AsyncIterator[dict[str, Any]]:
        return self.events.subscribe()  # closing the iterator unsubscribes

    # ---------------------------------------------------------------- contacts

    async def list_contacts(self) -> list[dict[str, Any]]:
        return self.contact_manager.list()

    async def add_contact(self, ref: str, name: str | None) -> dict[str, Any]:
        return self.contact_manager.add(ref, name)

    async def get_contact(self, c: str) -> dict[str, Any]:
        return self.contact_manager.get(c)

    async def update_contact(self, c: str, change: ContactChange) -> dict[str, Any]:
        return self.contact_manager.update(c, change)

    async def remove_contact(self, c: str) -> None:
        self.contact_manager.remove(c)

    def _emit_event(self, event: dict[str, Any]) -> None:
        self.events.emit(event)
        if self.own_sync is None:
            return
        if event.get("type") == "message":
            self.own_sync.changed()  # our other devices get it too
        elif event.get("type") == "read":  # marked read here: on our other devices too
            peer = bytes.fromhex(event["contact"])
            for payload in encode_read(peer, [bytes.fromhex(i) for i in event["ids"]]):
                self.own_sync.send_to_all(payload)
        elif (
            event.get("type") == "receipt"
            and event.get("state") in NOTE_STATES
            and "device" not in event  # not one another of our devices told us of
        ):  # the contact has them: every device shows it and stops offering them
            peer, ids = bytes.fromhex(event["contact"]), [bytes.fromhex(i) for i in event["ids"]]
            for payload in encode_state(peer, event["state"], ids):
                self.own_sync.send_to_all(payload)

    def _adopted(self, envelopes: list[Envelope]) -> None:
        """Another of our devices handed over messages its contact has not acknowledged:
        deposited here if this device runs offline delivery, and offered to a contact
        whose session is up here."""
        if self.offline is not None:
            self.offline.wake()  # the mailbox loop deposits outbox rows not in the DHT yet
        now = time.time()
        by_peer: dict[bytes, list[bytes]] = {}
        for env in envelopes:
            by_peer.setdefault(env.recipient, []).append(env.id)
        for peer, ids in by_peer.items():
            self.conversations.offer(peer, ids, now)
        self.chat.drive()

    def _acknowledged_there(self, ids: list[bytes]) -> None:
        """The contact acknowledged these on another of our devices: no packet of them
        stays in the DHT mailbox from here."""
        if self.offline is not None:
            self.offline.acknowledged(ids)

    def _send_to_own(self, device: bytes, payload: bytes) -> bool:
        return self.peering is not None and self.peering.send_to((self.me, device), payload)

    def _own_device(self, device: bytes, up: bool) -> None:
        assert self.own_sync is not None
        log.info("session with our device %s %s", device.hex()[:8], "up" if up else "down")
        if up and not self.own_devices.knows(device):
            # Revoked (or unlisted) since the session began: it gets nothing, and goes.
            log.warning("closing the session with our revoked device %s", device.hex()[:8])
            if self.peering is not None:
                self.peering.revoked(self.me, frozenset({device}))
            return
        if up:
            self.own_sync.device_up(device)
        else:
            self.own_sync.device_down(device)
            if self.offline_reader is not None and device == self.own_devices.mailbox_device():
                self.offline_reader.poll_now()  # what it would have brought, read here

    def _own_devices_changed(self) -> None:
        """Our device list changed (linked, revoked, here or on another device): tell
        our other devices (a revoked one too, so it knows), then cut the revoked off and
        look for new ones."""
        assert self.own_sync is not None
        revoked = self.own_devices.revoked()
        self.own_sync.devices_changed(revoked)
        if self.peering is not None:
            self.peering.revoked(self.me, revoked)
            self.peering.poke(self.me)
            mailbox = self.own_devices.mailbox_device() == self.keys.device.device_id
            dht = self.dht or self.dht_via
            if mailbox and self.offline is None and dht is not None and not self._taking_over:
                log.info("the device that ran offline delivery was revoked: this one takes over")
                self._taking_over = True
                self._spawn(self._start_offline(dht, self.peering))

    def _contact_synced(self, pk: bytes, action: str) -> None:
        """Another of our devices added, changed or removed a contact: act as if here."""
        if action == "removed":
            if self.peering is not None:
                self.peering.drop(pk, "removed")
            self._emit({"type": "contact", "action": "removed", "public_key": pk.hex()})
            return
        row = self.store.get_contact(pk)
        if row is not None and row.blocked and self.peering is not None:
            self.peering.drop(pk, "blocked")
        elif self.peering is not None:
            self.peering.poke(pk)
        if action == "added":
            self._spawn(self.contact_manager.fetch_profile(pk))
        self._emit({"type": "contact", "action": action, "contact": self.contact_manager.json(pk)})

    def _own_lists_published(self) -> None:
        """Our changed lists are in the DHT: contacts online read them again now (a
        revoked device is dropped, a new one dialled) instead of at their next refresh."""
        now = time.time()
        if self.peering is not None:
            for contact in self.peering.online_contacts():
                self.conversations.send_body(contact, conv.DEVICES_CHANGED, {}, now)
        self.chat.drive()

    def _contact_devices_changed(self, contact: bytes) -> None:
        """A contact says its devices changed: read its lists, at most once per
        ``DEVICES_NOTICE_EVERY`` s (a contact cannot make us look up without end)."""
        now = time.monotonic()
        if now < self._devices_read_at.get(contact, 0.0) or self.peering is None:
            return
        rendezvous = self.peering.rendezvous
        if rendezvous is None:
            return
        self._devices_read_at[contact] = now + DEVICES_NOTICE_EVERY

        async def read() -> None:
            try:
                await rendezvous.refresh_devices(contact)
            except DhtError as exc:
                log.info("could not read %s's device lists: %s", format_id(contact)[:16], exc)

        self._spawn(read())

    async def safety_number(self, c: str) -> dict[str, Any]:
        return self.contact_manager.safety_number(c)

    async def dial_contact(self, c: str, address: str) -> dict[str, Any]:
        return await self.contact_manager.dial(c, address)

    # ---------------------------------------------------------------- messages

    async def send_message(self, c: str, text: str) -> dict[str, Any]:
        pk = self.contacts.resolve(c)
        if not text or len(text.encode()) > MAX_TEXT:
            raise ApiError(400, "bad_text", f"text must be 1 to {MAX_TEXT} bytes")
        envelope = await self.chat.send_text(pk, text)  # group commit, then sent
        row = self.store.get_message(envelope.id)
        return row.to_json()

    async def history(self, c: str, limit: int, before: int | None) -> list[dict[str, Any]]:
        pk = self.contacts.resolve(c)
        return [r.to_json() for r in self.store.history(pk, limit=limit, before_lamport=before)]

    async def search(self, q: str, contact: str | None, limit: int) -> list[dict[str, Any]]:
        peer = self.contacts.resolve(contact) if contact else None
        return [r.to_json() for r in self.store.search(q, peer=peer, limit=limit)]

    async def mark_read(self, c: str, up_to: str | None) -> dict[str, Any]:
        pk = self.contacts.resolve(c)
        marked = self.conversations.mark_read(pk, up_to, time.time())
        self.chat.drive()
        return {"contact": self.contact_manager.json(pk), "marked": marked}

    async def set_presence(self, status: str, note: str | None) -> dict[str, Any]:
        if status not in conv.PRESENCE_STATES:
            states = ", ".join(conv.PRESENCE_STATES)
            raise ApiError(400, "bad_presence", f"presence is one of {states}")
        if note is not None and len(note.encode()) > 140:
            raise ApiError(400, "bad_note", "the status note is at most 140 bytes")
        self.conversations.set_presence(status, note, time.time())
        self.chat.drive()
        return {"status": status, "note": note}

    # ------------------------------------------------------------ profile

    async def get_profile(self) -> dict[str, Any]:
        return self.profiles.of(self.me)

    async def set_profile(
        self, name: str | None, status: str | None, avatar: str | None
    ) -> dict[str, Any]:
        return self.profile_sync.set(name, status, avatar)

    def _inbox_moved(self, inbox: bytes) -> None:
        self.profiles.inbox = inbox
        self.profiles.republish()

    async def send_typing(self, c: str, on: bool) -> None:
        pk = self.contacts.resolve(c)
        self.conversations.send_typing(pk, on, time.time())
        self.chat.drive()

    # ------------------------------------------------------------- requests

    async def list_requests(self) -> list[dict[str, Any]]:
        return self.contact_manager.list_requests()

    async def send_request(self, ref: str, note: str | None) -> dict[str, Any]:
        return await self.contact_manager.send_request(ref, note)

    async def answer_request(self, id: str, accept: bool, name: str | None) -> dict[str, Any]:
        return self.contact_manager.answer_request(id, accept, name)

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
        portmap = (
            self.portmap.state.to_dict(asyncio.get_running_loop().time()) if self.portmap else None
        )
        return {
            **(await self.identity()),
            "version": __version__,
            "pid": os.getpid(),
            "dht": {
                "joined": self.joined,
                "nodes": len(dht.node.routing) if dht else 0,
                "addr": f"{dht.addr[0]}:{dht.addr[1]}" if dht else None,
                "external_addr": _hostport(dht.external_addr("UDP")) if dht else None,
                "reachability": dht.reachability.to_dict() if dht else None,
                **_ipv6_status(dht),
            },
            "listen_port": self.peering.port if self.peering else None,
            "external_tcp": _hostport(dht.external_addr("TCP")) if dht else None,
            "port_mapping": portmap,
            "contacts": len(self.store.list_contacts()),
            "contacts_online": len(self.peering.online_contacts()) if self.peering else 0,
            "uptime": time.monotonic() - self.started,
            "mailbox": self.offline.summary() if self.offline else None,
            "mailbox_reader": self.offline_reader.summary() if self.offline_reader else None,
            "sync": dict(self.conversations.stats),
            "requests": dict(self.requests.stats),
            "proxy": self.dialer.status() if isinstance(self.dialer, ProxyDialer) else None,
            "tor": self.config.tor,
            "dht_via": self._dht_via_status(),
            "onion": (
                {"address": self.onion.address if self.onion else None, "error": self.onion_error}
                if self.config.tor_control is not None
                else None
            ),
            "dht_serving": self.peering.dht_server.summary() if self.peering else None,
            "rendezvous": self._rendezvous_status(),
            "storage": self.storage.state(),  # "ok", or e.g. "disk full since ..."
            "storage_detail": self.storage.status(time.time()),
        }

    def _rendezvous_status(self) -> dict[str, int] | None:
        """Lookups and candidate records (written, read, dropped) and refused candidates."""
        if self.peering is None or self.peering.rendezvous is None:
            return None
        refused = self.peering.stats["candidates_refused"]
        return {**self.peering.rendezvous.stats, "candidates_refused": refused}

    def _dht_via_status(self) -> dict[str, Any] | None:
        """Tor mode: which contact our DHT operations go through (None: none serves)."""
        if self.dht_via is None or self.peering is None:
            return None
        servers = self.peering.dht_servers()
        via = self.dht_via.via
        current = next((k for k, _ in servers if k == via), servers[0][0] if servers else None)
        if current is None:
            return {"contact": None, "name": None, **self.dht_via.summary()}
        row = self.store.get_contact(current[0]) if current[0] != self.me else None
        name = row.name if row is not None else "another device of yours"
        return {"contact": current[0].hex(), "name": name, **self.dht_via.summary()}

    # ------------------------------------------------------------ sessions

    def _on_established(self, pk: bytes) -> None:
        log.info("session with %s established", format_id(pk)[:16])
        self._emit({"type": "session", "state": "up", "contact": self.contact_manager.json(pk)})
        self._spawn(self.contact_manager.fetch_profile(pk))
        self.requests.contact_reached(pk)
        self._reconcile(pk)

    def _on_switched(self, pk: bytes) -> None:
        """Both ends now use another session to a device of ``pk`` (a simultaneous dial):
        what was in flight on the closed one (an outbox offer, a receipt, a resend) may
        be lost, and nothing would ask again until the next reconnect."""
        self._reconcile(pk)

    def _reconcile(self, pk: bytes) -> None:
        """Offer the outbox, presence and read receipts, and the offline hand-over."""
        self.chat.flush()
        self.conversations.session_up(pk, time.time())
        self.chat.drive()
        if self.offline is not None:
            self.offline.session_up(pk)

    def _on_closed(self, pk: bytes, reason: str) -> None:
        self.chat.flush()  # what the session delivered is handled before it goes down
        self.conversations.session_down(pk, time.time())
        self.chat.drive()
        if self.store.get_contact(pk) is None:
            return
        self._emit(
            {
                "type": "session",
                "state": "down",
                "reason": reason,
                "contact": self.contact_manager.json(pk),
            }
        )

    def _on_store_fault(self, exc: StorageFault, peers: list[bytes]) -> None:
        for peer in peers or [None]:
            self.guard.report(exc, "storing a batch", peer)

    def _on_data(self, pk: bytes, device: bytes, payload: bytes) -> None:
        if pk == self.me:
            assert self.own_sync is not None
            self.own_sync.receive(device, payload)
            return
        self.chat.receive(pk, device, payload)  # one commit for all of this loop turn

"""One joined channel, running: a TCP listener, member links, and discovery.

Members are found by the channel's rotating infohash on three independent paths, any
of which is enough: the DHT (announce + get_peers), the BitTorrent trackers listed in
the ``.chat`` file (HTTP or UDP announce), and BEP 14 multicast on the LAN (the sources
of :mod:`btchat.discovery.sources`, each reporting what it found to :meth:`_found`);
then by peer exchange over the links themselves. Every address found is dialled; a link is a
Noise XXpsk3 session keyed by the channel secret (:mod:`btchat.channels.link`) and
authenticated by both identities, and the :class:`ChannelEngine` decides what flows.

A link is keyed once the member's first DATA frame (its ``hello``) names the device it
runs on (:meth:`ChannelEngine.link_key`): until then it only carries our own hello.
So two devices of one person each hold their own links, and a link to ourselves (our
own address, found by discovery) is dropped and backed off like a failed dial.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from btchat.channels.chatfile import ChatFile
from btchat.channels.engine import (
    MAX_PAYLOAD,
    ChannelEngine,
    Dial,
    Drop,
    Event,
    Removed,
    Send,
    identity_of,
)
from btchat.channels.link import (
    Link,
    LinkClosed,
    LinkConfig,
    LinkData,
    LinkEstablished,
    LinkEvent,
    LinkFailed,
)
from btchat.channels.link_connection import LinkConnection, run_link_over
from btchat.channels.store import ChannelStore, StoredMessage
from btchat.discovery.found import Found
from btchat.discovery.sources import DhtSource, LsdSource, TrackerSource
from btchat.identity.keys import Identity
from btchat.net import tiebreak
from btchat.net.admission import Admission, AdmissionConfig, Ticket
from btchat.net.dht_service import DhtService
from btchat.net.transport import ByteStream, Dialer, TcpDialer, TcpListener, admitted
from btchat.sansio import drain_events
from btchat.stream.events import StreamOpened, StreamsAvailable
from btchat.tasks import TaskOwner
from btchat.transfer.manifest import Manifest

__all__ = ["ChannelConfig", "ChannelService"]


MAX_LINKS = 128
#: An address that failed (or was ourselves) is not dialled again for this long, doubling
#: with each further failure up to MAX_BACKOFF: a member cannot make us retry forever.
DIAL_BACKOFF = 30.0
MAX_BACKOFF = 3600.0
#: Connection attempts in flight at once (more wait their turn), and failed addresses
#: remembered (oldest forgotten first).
MAX_DIALS = 16
MAX_FAILED = 4096
#: Known members without a link are dialled again this often.
REDIAL_INTERVAL = 20.0
MAX_SEEDS = 256
#: Seconds a stopping channel waits for its goodbye to be written to its links.
GOODBYE_GRACE = 0.2
#: Seconds a link may be up without its member's ``hello`` (which keys it) before it is
#: closed: a link that only answers PINGs would otherwise hold a place in MAX_LINKS.
HELLO_TIMEOUT = 10.0
#: Links of a channel whose files we transfer announce substreams (files ride on them).
_FILES_LINK = LinkConfig(substreams=True, chunk_size=60 * 1024)  # as sessions: fewer frames


@dataclass(frozen=True)
class ChannelConfig:
    host: str = "0.0.0.0"
    port: int = 0
    dht: bool = True
    trackers: bool = True
    lsd: bool = True
    lsd_options: dict[str, Any] = field(default_factory=dict)  # LsdService.start keywords
    discovery_interval: float = 300.0
    #: Only for tests of partial meshes: refuse to dial or accept these members.
    blocked: frozenset[bytes] = frozenset()
    #: Bounds on inbound link handshakes (see :mod:`btchat.net.admission`).
    admission: AdmissionConfig = field(default_factory=AdmissionConfig)


class ChannelService:
    def __init__(
        self,
        chat: ChatFile,
        identity: Identity,
        store: ChannelStore,
        dht: DhtService | None,
        config: ChannelConfig,
        *,
        on_event: Callable[[ChatFile, Event | dict[str, Any]], None],
        dialer: Dialer | None = None,
        device_id: bytes | None = None,
        on_stream: Callable[[bytes, LinkConnection, object], None] | None = None,
    ) -> None:
        self.chat = chat
        #: Substream events of each keyed link (link key, connection, event), for files;
        #: with it our links announce substreams.
        self.on_stream = on_stream
        #: This device's id (None: one link per identity, none with our own devices).
        self.device_id = device_id
        #: How links are carried: any "connect me to this address" -> byte stream.
        self.dialer: Dialer = dialer if dialer is not None else TcpDialer(timeout=10.0)
        self.identity = identity
        self.store = store
        self.dht = dht
        self.config = config
        self.on_event = on_event
        self.engine: ChannelEngine | None = None
        #: link key (identity, then device id) -> (conn, we dialled)
        self.links: dict[bytes, tuple[LinkConnection, bool]] = {}
        #: Links up whose member has not said yet which device it is (counted in MAX_LINKS).
        self._greeting: set[LinkConnection] = set()
        self._server: TcpListener | None = None
        self._tasks = TaskOwner()
        self._dialling: set[tuple[str, int]] = set()
        self._seeds: set[tuple[str, int]] = set()  # every address ever dialled
        #: Connection attempts in flight (bounded by MAX_DIALS), and the addresses
        #: waiting for one to end (at most MAX_SEEDS), oldest first.
        self._connecting = 0
        self._queued: dict[tuple[str, int], None] = {}
        #: address -> (not before, failures so far)
        self._failed: dict[tuple[str, int], tuple[float, int]] = {}
        self._lsd: LsdSource | None = None
        self._wake = asyncio.Event()
        self._tick_at = 0.0
        self._accepted: set[asyncio.Task[Any]] = set()
        #: Inbound links in their handshake: per-source shares, eviction, a deadline.
        self.admission = Admission(config.admission)
        self._stopping = False
        self.port = 0
        self.peer_id = b"-BC0001-" + os.urandom(12)
        self.stats: dict[str, int] = {"dht_found": 0, "tracker_found": 0, "lsd_found": 0}

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        self._server = await TcpListener.start(self.config.host, self.config.port, self._accept)
        self.port = self._server.port
        self.engine = ChannelEngine(
            self.chat,
            self.identity,
            self.store,
            listen_port=self.port,
            now=time.time(),
            device_id=self.device_id,
        )
        self._tasks.spawn(self._tick_loop())
        common: dict[str, Any] = {
            "targets": self.chat.keys,
            "port": self.port,
            "on_found": self._found,
        }
        if self.config.dht and self.dht is not None:
            dht = DhtSource(dht=self.dht, interval=self._interval, **common)
            self._tasks.spawn(dht.run())
        if self.config.trackers and self.chat.trackers:
            trackers = TrackerSource(
                urls=self.chat.trackers, peer_id=self.peer_id, interval=self._interval, **common
            )
            self._tasks.spawn(trackers.run())
        if self.config.lsd:
            lsd = LsdSource(options=self.config.lsd_options, **common)
            if await lsd.start():
                self._lsd = lsd
                self._tasks.spawn(lsd.run())

    async def stop(self) -> None:
        self._stopping = True
        if self.engine is not None and self.links:
            # Say goodbye while the links still run, then close them (CLOSE follows the
            # goodbye on each), and give the pumps a moment to write both.
            self.engine.goodbye(time.time())
            self._flush()
            for conn, _ in list(self.links.values()):
                conn.close("leaving")
            await asyncio.sleep(GOODBYE_GRACE)
        await self._tasks.cancel_all()
        accepted = list(self._accepted)
        for task in accepted:
            task.cancel()
        if accepted:
            await asyncio.wait(accepted, timeout=5)
        for conn, _ in list(self.links.values()):
            conn.close("leaving")
        if self._server is not None:
            await self._server.aclose()
        if self._lsd is not None:
            self._lsd.close()

    # ------------------------------------------------------------------ links

    def _new_link(self, role: str) -> Link:
        assert self.engine is not None
        return Link(
            role,  # type: ignore[arg-type]
            identity=self.identity,
            channel_id=self.chat.channel_id,
            psk=self.chat.keys.proof_key,
            authorize=self._authorize,
            now=asyncio.get_running_loop().time(),  # the clock the pump drives it with
            config=_FILES_LINK if self.on_stream is not None else LinkConfig(),
        )

    def _full(self) -> bool:
        return len(self.links) + len(self._greeting) >= MAX_LINKS

    def _authorize(self, member: bytes) -> bool:
        return (
            member not in self.config.blocked
            and self.engine is not None
            and self.engine.authorize(member)
        )

    async def _accept(self, stream: ByteStream) -> None:
        if self._full():
            stream.abort()
            return
        peer = stream.remote_address
        task = asyncio.current_task()
        if task is not None:
            self._accepted.add(task)
        try:
            with admitted(self.admission, stream) as (ticket, watched):
                link = self._new_link("responder")
                await self._run(link, watched, peer[0] if peer else "", False, ticket)
        except asyncio.CancelledError:
            if not self._stopping:
                raise  # only our own stop() ends an accepted link quietly
        finally:
            if task is not None:
                self._accepted.discard(task)

    def dial(self, addr: tuple[str, int]) -> None:
        if len(self._seeds) < MAX_SEEDS:
            self._seeds.add(addr)
        now = time.monotonic()
        if addr in self._dialling or self._failed.get(addr, (0.0, 0))[0] > now:
            return
        if self._full() or addr[1] == 0:
            return
        if self._connecting >= MAX_DIALS:
            if len(self._queued) < MAX_SEEDS:
                self._queued[addr] = None  # dialled when one in flight ends
            return
        if any(
            self.engine and self.engine.links.get(m) and self.engine.links[m].addr == addr
            for m in self.links
        ):
            return
        self._dialling.add(addr)
        self._connecting += 1
        self._tasks.spawn(self._dial(addr))

    async def _dial(self, addr: tuple[str, int]) -> None:
        try:  # counted in _connecting by dial(), before this task ran
            stream = await self.dialer.dial(addr)
        except (OSError, TimeoutError):
            self._dialling.discard(addr)
            self._dial_failed(addr)
            return
        finally:
            self._connecting -= 1
            self._next_queued()
        try:
            ok = await self._run(self._new_link("initiator"), stream, addr[0], True)
        finally:
            self._dialling.discard(addr)
        if ok:
            self._failed.pop(addr, None)
        else:
            self._dial_failed(addr)

    def _next_queued(self) -> None:
        while self._queued and self._connecting < MAX_DIALS:
            queued = next(iter(self._queued))
            del self._queued[queued]
            self.dial(queued)

    def _dial_failed(self, addr: tuple[str, int]) -> None:
        """Back off from ``addr``, doubling per failure; the table is bounded."""
        failures = self._failed.pop(addr, (0.0, 0))[1] + 1
        wait = min(DIAL_BACKOFF * 2 ** (failures - 1), MAX_BACKOFF)
        self._failed[addr] = (time.monotonic() + wait, failures)
        while len(self._failed) > MAX_FAILED:
            del self._failed[next(iter(self._failed))]

    async def _run(
        self,
        link: Link,
        stream: ByteStream,
        remote_ip: str,
        dialled: bool,
        ticket: Ticket | None = None,
    ) -> bool:
        """Run one link to its end; True if it was established. ``ticket``: an inbound
        link's admission (it leaves the pending pool once established)."""
        state: dict[str, Any] = {
            "identity": None,
            "member": None,
            "duplicate": False,
            "streams": False,  # the peer announced substreams (before or after its hello)
        }
        conn_box: list[LinkConnection] = []

        def keyed(first: bytes) -> bytes | None:
            """The member's first frame names its device: key the link, or drop it."""
            assert self.engine is not None
            conn = conn_box[0]
            self._greeting.discard(conn)
            identity, state["identity"] = state["identity"], None
            key = self.engine.link_key(identity, first)
            if key == self.engine.link_id:
                conn.close("a link to ourselves")  # a failure: the address is backed off
                return None
            if not self._keep(key, dialled):
                state["duplicate"] = True  # not a failure: the address is good
                conn.close("duplicate link")
                return None
            state["member"] = key
            self.links[key] = (conn, dialled)
            self.engine.link_up(key, remote_ip, time.time(), greeted=True)
            if state["streams"] and self.on_stream is not None:
                self.on_stream(key, conn, StreamsAvailable())
            return key

        def current(member: bytes | None) -> bool:
            return member is not None and self.links.get(member, (None,))[0] is conn_box[0]

        def on_event(event: LinkEvent) -> None:
            assert self.engine is not None
            if isinstance(event, LinkEstablished):
                if ticket is not None:
                    self.admission.established(ticket)
                state["identity"] = event.identity
                conn = conn_box[0]
                self._greeting.add(conn)
                asyncio.get_running_loop().call_later(HELLO_TIMEOUT, self._no_hello, conn)
                hello = self.engine.hello()
                if len(hello) <= MAX_PAYLOAD:
                    conn_box[0].send(hello)
            elif isinstance(event, LinkData):
                member = state["member"]
                if member is None and state["identity"] is not None:
                    member = keyed(event.payload)
                if current(member):
                    self.engine.on_payload(member, event.payload, time.time())
                self._flush()
            elif isinstance(event, LinkClosed | LinkFailed):
                if ticket is not None and isinstance(event, LinkFailed):
                    self.admission.refused(ticket)
                if conn_box:
                    self._greeting.discard(conn_box[0])
                if self.on_stream is not None and state["member"] is not None:
                    self.on_stream(state["member"], conn_box[0], event)
                self._gone(state["member"], conn_box[0] if conn_box else None)
            elif self.on_stream is not None:  # substreams: files
                if isinstance(event, StreamsAvailable):
                    state["streams"] = True
                if current(state["member"]):
                    self.on_stream(state["member"], conn_box[0], event)
                elif isinstance(event, StreamOpened):
                    conn_box[0].reset_stream(event.stream_id, "no hello yet")

        conn = LinkConnection.over(stream, link)
        conn_box.append(conn)
        try:
            await run_link_over(conn, on_event)
        finally:
            self._greeting.discard(conn)
            self._gone(state["member"], conn)
        return state["member"] is not None or state["duplicate"]

    def _no_hello(self, conn: LinkConnection) -> None:
        if conn in self._greeting:
            conn.close("no hello")

    def _keep(self, member: bytes, dialled: bool) -> bool:
        """One link per pair, by the rule sessions follow too: both ends keep the link the
        smaller key dialled, and of two dialled by one side the older
        (:func:`btchat.net.tiebreak.replaces`). True if the new link is kept. The keys
        compared are link keys (a member naming no device: identities, as it does)."""
        existing = self.links.get(member)
        if existing is None:
            return True
        me = self.identity.public_key
        if len(member) > 32 and self.device_id is not None:
            me += self.device_id  # our link key, as the member keys its link with us
        current_dialler = me if existing[1] else member
        if not tiebreak.replaces(me, member, current_dialler, me if dialled else member):
            return False
        existing[0].close("duplicate link")
        self.links.pop(member, None)
        if self.engine is not None:
            self.engine.link_down(member)
        return True

    def _gone(self, member: bytes | None, conn: LinkConnection | None) -> None:
        if member is None or conn is None:
            return
        current = self.links.get(member)
        if current is not None and current[0] is conn:
            del self.links[member]
            if self.engine is not None:
                self.engine.link_down(member)
                self._flush()

    def _flush(self) -> None:
        assert self.engine is not None
        for event in drain_events(self.engine):
            if isinstance(event, Send):
                link = self.links.get(event.member)
                if link is not None:
                    link[0].send(event.payload)
                continue
            if isinstance(event, Dial):
                if identity_of(event.member) not in self.config.blocked:
                    self.dial(event.addr)
            elif isinstance(event, Drop):
                link = self.links.get(event.member)
                if link is not None:
                    link[0].close(event.reason)
            elif isinstance(event, Removed):
                for conn, _ in list(self.links.values()):
                    conn.close("removed from the channel")
            self.on_event(self.chat, event)
        if self.engine.get_timer() < self._tick_at:
            self._wake.set()  # the engine wants its timer sooner than the loop planned

    # ------------------------------------------------------------------ API

    def post(self, text: str, to: list[bytes] | None = None) -> StoredMessage:
        assert self.engine is not None
        stored = self.engine.post(text, time.time(), to=to)
        self._flush()
        return stored

    def post_file(self, manifest: Manifest) -> StoredMessage:
        assert self.engine is not None
        stored = self.engine.post_file(manifest, time.time())
        self._flush()
        return stored

    def from_our_device(self, member_list: bytes, generations: set[int]) -> None:
        """What another of our devices holds of this channel: its member list (adopted
        if newer and valid) and generation secrets just stored (``generations``)."""
        assert self.engine is not None
        if member_list:
            self.engine.offer_member_list(member_list, time.time())
        if generations:
            self.engine.keys_added(generations)
        self._flush()

    def change_members(
        self, *, add: list[bytes] | None = None, remove: list[bytes] | None = None
    ) -> None:
        assert self.engine is not None
        self.engine.change_members(add=add, remove=remove, now=time.time())
        if add:
            self._failed.clear()  # someone refused before the invitation may now link
        self._flush()

    # ------------------------------------------------------------------ loops

    async def _tick_loop(self) -> None:
        assert self.engine is not None
        next_redial = time.time() + REDIAL_INTERVAL
        while True:
            now = time.time()
            self.engine.handle_timer(now)
            if now >= next_redial:
                next_redial = now + REDIAL_INTERVAL
                self._redial()
            self._flush()
            self._wake.clear()
            self._tick_at = min(self.engine.get_timer(), next_redial)
            delay = max(0.05, self._tick_at - time.time())
            # asyncio.timeout, not wait_for: on 3.11 wait_for can swallow a cancellation
            # that arrives as the wake-up fires, and then stop() would wait forever.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(delay):
                    await self._wake.wait()

    def _redial(self) -> None:
        """Members we know an address of but have no link with, and the addresses that
        discovery or the user gave: try again (each address has its own back-off)."""
        assert self.engine is not None
        for member, addr in self.engine.known_addresses().items():
            if member not in self.links and identity_of(member) not in self.config.blocked:
                self.dial(addr)
        if not self.links:
            for addr in list(self._seeds):
                self.dial(addr)

    def _found(self, found: Found) -> None:
        """What every discovery source reports: count it and dial it."""
        self.stats[f"{found.source}_found"] += 1
        self.dial(found.addr)

    def _interval(self) -> float:
        # Early on, look more often: a channel of one finds the second member faster.
        if self.links:
            return self.config.discovery_interval
        return min(15.0, self.config.discovery_interval)

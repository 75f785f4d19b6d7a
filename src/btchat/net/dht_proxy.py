"""The asyncio shell of the DHT through a contact: the serving side and the client.

How this works (docs/PROTOCOL.md "The DHT through a contact (1.5)"; messages and limits
in :mod:`btchat.net.dht_proxy_core`). Peering hands every session DATA body that begins
with :data:`~btchat.net.dht_proxy_core.MAGIC` here instead of to the conversation:

- :class:`DhtProxyServer` (a node with a DHT of its own) runs a contact's request on
  its :class:`~btchat.net.dht_service.DhtService` when :class:`ServeLimits` admits it,
  and answers on the same session; what the DHT sees is the serving node's IP;
- :class:`DhtViaContacts` (a Tor-mode node) is shaped like ``DhtService`` for what
  rendezvous, device lists, profiles, contact requests and the offline mailbox call
  (``get_peers``, ``announce``, ``get_*``/``put_*``), and sends each operation to one
  live session whose peer announced serving (capability bit 2), trying another on a
  refusal, a timeout or the session's end. It checks what comes back: a mutable item
  must verify under the key asked for, an immutable one must hash to its target, so a
  serving contact can withhold or delay results but cannot forge them.

Garbage from a peer (a body that does not parse, an answer nobody waits for, or one
from another peer than the one asked) is dropped and counted, never raised.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import Any

from btchat.codec import bencode
from btchat.codec.bencode import DecodeError
from btchat.dht import bep44
from btchat.dht.node import AnnounceResult, GetItemResult, GetPeersResult, PutResult
from btchat.net.dht_proxy_core import (
    MAGIC,
    MAX_PEERS,
    Code,
    DhtProxyLimits,
    Failure,
    GetItem,
    GetPeers,
    ItemFound,
    PeersFound,
    PutImmutable,
    PutMutable,
    Request,
    Response,
    ServeLimits,
    Stored,
    decode,
    encode,
)
from btchat.net.dht_service import DhtError, DhtService
from btchat.session.connection import SessionConnection
from btchat.stream.frames import CAPS_DHT

__all__ = ["MAGIC", "DhtProxyServer", "DhtViaContacts", "route", "serves_dht"]

log = logging.getLogger(__name__)

#: A peer is one device of one identity: (identity key, device id).
PeerKey = tuple[bytes, bytes]
#: A live session that may carry requests: its peer and its connection.
Server = tuple[PeerKey, SessionConnection]
#: How long a client waits for one serving node's answer (a lookup takes seconds).
CLIENT_TIMEOUT = 40.0
#: Serving nodes one operation is tried on before it fails.
MAX_TRIES = 3
#: With no serving contact online, how long an operation waits for one before it fails.
WAIT_FOR_SERVER = 5.0


def serves_dht(conn: SessionConnection) -> bool:
    """The peer of ``conn`` announced that it runs DHT operations for us."""
    return bool(conn.core.peer_caps & CAPS_DHT)


def _send(conn: SessionConnection, body: bytes) -> bool:
    try:
        conn.send(body)
    except (RuntimeError, ValueError):  # the session ended meanwhile
        return False
    return True


class DhtProxyServer:
    """Runs contacts' DHT operations on our own DHT node, within :class:`ServeLimits`."""

    def __init__(
        self,
        dht: DhtService | None,
        limits: DhtProxyLimits,
        spawn: Callable[[Any], asyncio.Task[Any]],
    ) -> None:
        #: None (Tor mode, or no DHT): every request is answered ``off``.
        self.dht = dht
        self.limits = limits
        self.core = ServeLimits(limits if dht is not None else DhtProxyLimits(enabled=False))
        self._spawn = spawn
        self._running: dict[int, set[asyncio.Task[Any]]] = {}  # id(conn) -> operations
        self.stats: dict[str, int] = {
            "requests": 0,
            "served": 0,
            "failed": 0,
            "refused_off": 0,
            "refused_busy": 0,
            "refused_rate": 0,
            "refused_not_joined": 0,
            "malformed": 0,
            "unexpected_answers": 0,
        }

    @property
    def enabled(self) -> bool:
        return self.core.limits.enabled

    def on_request(
        self, peer: PeerKey, conn: SessionConnection, request: Request, size: int
    ) -> None:
        """Answer ``request`` from ``peer`` (now if refused, else when the DHT has)."""
        self.stats["requests"] += 1
        loop = asyncio.get_running_loop()
        refusal = self.core.admit(peer[0], size, loop.time())
        if refusal is None and self.dht is not None and len(self.dht.node.routing) == 0:
            self.core.done(peer[0])
            refusal = Code.NOT_JOINED
        if refusal is not None:
            self.stats[f"refused_{refusal.name.lower()}"] += 1
            _send(conn, encode(Response(request.id, Failure(refusal))))
            return
        task = self._spawn(self._serve(peer, conn, request))
        running = self._running.setdefault(id(conn), set())
        running.add(task)
        task.add_done_callback(running.discard)

    def malformed(self, peer: PeerKey, why: str) -> None:
        """A request that does not parse: counted and dropped (no id to answer)."""
        self.stats["malformed"] += 1
        log.debug("malformed DHT proxy request from %s: %s", peer[0].hex()[:16], why)

    async def _serve(self, peer: PeerKey, conn: SessionConnection, request: Request) -> None:
        try:
            async with asyncio.timeout(self.limits.timeout):
                result = await self._run(request)
            self.stats["served"] += 1
        except (DhtError, bep44.ItemError) as exc:
            self.stats["failed"] += 1
            result = Failure(Code.FAILED, str(exc) or type(exc).__name__)
        except TimeoutError:
            self.stats["failed"] += 1
            result = Failure(Code.FAILED, "the DHT operation timed out")
        finally:
            self.core.done(peer[0])
        _send(conn, encode(Response(request.id, result)))

    async def _run(self, request: Request) -> PeersFound | ItemFound | Stored:
        dht = self.dht
        assert dht is not None
        op = request.op
        if isinstance(op, GetPeers):
            found = await dht.get_peers(op.infohash)
            return PeersFound(found.peers[:MAX_PEERS], found.queries, found.responded)
        if isinstance(op, GetItem):
            if op.public_key is not None:
                item = await dht.get_mutable(op.public_key, op.salt)
            else:
                assert op.target is not None
                item = await dht.get_immutable(op.target)
            return ItemFound(item.v_bencoded, item.seq, item.signature, item.queries)
        if isinstance(op, PutMutable):
            bep44.check_mutable(op.item)  # a bad signature is not sent on from our IP
            put = await dht.put_mutable(op.item, cas=op.cas)
        else:
            put = await dht.put_immutable(op.v_bencoded)
        return Stored(put.stored_at, list(put.errors), put.queries, len(dht.node.routing))

    def session_ended(self, conn: SessionConnection) -> None:
        """The session the requests came on ended: their operations are cancelled."""
        for task in self._running.pop(id(conn), set()):
            task.cancel()

    def summary(self) -> dict[str, Any]:
        return {"serving": self.enabled and self.dht is not None, **self.stats}


class DhtViaContacts:
    """A ``DhtService`` for a node without one: every operation through a contact."""

    def __init__(
        self,
        servers: Callable[[], list[Server]],
        *,
        joined: asyncio.Event | None = None,
        timeout: float = CLIENT_TIMEOUT,
    ) -> None:
        #: The live sessions whose peers serve (peering's, filtered by capability).
        self._servers = servers
        #: Set while some contact serves: what waits for "joined" waits for this.
        self.joined = joined if joined is not None else asyncio.Event()
        self.timeout = timeout
        #: The peer the last operation went through (tried first next time).
        self.via: PeerKey | None = None
        self._next_id = 1
        self._pending: dict[int, tuple[PeerKey, asyncio.Future[Any]]] = {}
        #: The serving node's routing table size, as its last put answer said.
        self.routing_size = 0
        self.bucket_size = 8
        self.closed = False
        self.stats: dict[str, int] = {
            "sent": 0,
            "answered": 0,
            "refused": 0,
            "timeouts": 0,
            "forged": 0,
            "unexpected": 0,
            "malformed": 0,
        }

    # ----------------------------------------------------------- peering's calls

    def servers_changed(self) -> None:
        """A session came up, announced its capabilities or ended."""
        if self._servers():
            self.joined.set()
        else:
            self.joined.clear()
            self.via = None

    def on_response(self, peer: PeerKey, response: Response) -> None:
        waiting = self._pending.get(response.id)
        if waiting is None or waiting[0] != peer:  # nobody asked, or asked someone else
            self.stats["unexpected"] += 1
            return
        if not waiting[1].done():
            waiting[1].set_result(response.result)

    def malformed(self, peer: PeerKey, why: str) -> None:
        self.stats["malformed"] += 1
        log.debug("malformed DHT proxy answer from %s: %s", peer[0].hex()[:16], why)

    def session_ended(self, peer: PeerKey) -> None:
        """Requests waiting on ``peer`` go to another serving contact at once."""
        for who, fut in list(self._pending.values()):
            if who == peer and not fut.done():
                fut.set_exception(ConnectionError("the session ended"))
        self.servers_changed()

    def close(self) -> None:
        self.closed = True
        for _, fut in self._pending.values():
            if not fut.done():
                fut.set_exception(DhtError("shutting down"))

    # ----------------------------------------------------------- the exchange

    def _order(self, tried: set[PeerKey]) -> list[Server]:
        servers = [s for s in self._servers() if s[0] not in tried]
        servers.sort(key=lambda s: s[0] != self.via)  # the one that worked last first
        return servers

    async def _call(self, op: Any, check: Callable[[Any], bool]) -> Any:
        """Send ``op`` to a serving contact; on a refusal, a timeout, the session's end or
        an answer that fails ``check``, to another one (at most :data:`MAX_TRIES`)."""
        tried: set[PeerKey] = set()
        why = "no DHT: no contact serving"
        if not self.joined.is_set():
            # Loops that retry soon after a failure (the device-list publisher) would
            # otherwise spin while no contact is online; a session may come up meanwhile.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(WAIT_FOR_SERVER):
                    await self.joined.wait()
        for _ in range(MAX_TRIES):
            if self.closed:
                break
            servers = self._order(tried)
            if not servers:
                break
            peer, conn = servers[0]
            tried.add(peer)
            rid = self._next_id
            self._next_id = self._next_id % (2**32 - 1) + 1
            fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
            self._pending[rid] = (peer, fut)
            try:
                if not _send(conn, encode(Request(rid, op))):
                    continue
                self.stats["sent"] += 1
                result = await asyncio.wait_for(fut, self.timeout)
            except TimeoutError:
                self.stats["timeouts"] += 1
                why = f"{peer[0].hex()[:16]} did not answer in {self.timeout:.0f} s"
                continue
            except ConnectionError:
                why = f"the session with {peer[0].hex()[:16]} ended"
                continue
            finally:
                self._pending.pop(rid, None)
            self.stats["answered"] += 1
            if isinstance(result, Failure):
                if not result.code.retry_elsewhere:
                    self.via = peer
                    raise DhtError(result.message or "the DHT operation failed")
                self.stats["refused"] += 1
                why = f"{peer[0].hex()[:16]} refused: {result.code.name.lower()}"
                continue
            if not check(result):
                self.stats["forged"] += 1
                log.warning("a DHT answer from %s does not check out", peer[0].hex()[:16])
                why = f"{peer[0].hex()[:16]} answered something that does not check out"
                continue
            self.via = peer
            return result
        raise DhtError(why)

    # ----------------------------------------------------------- DhtService's shape

    async def get_peers(self, infohash: bytes) -> GetPeersResult:
        r = await self._call(GetPeers(infohash), lambda r: isinstance(r, PeersFound))
        return GetPeersResult(list(r.peers), r.queries, r.responded)

    async def announce(
        self, infohash: bytes, port: int, *, implied_port: bool = False
    ) -> AnnounceResult:
        """Nothing to announce: a BEP 5 announce stores the sender's IP, and ours is not
        to be published (contacts find us by our lookups of them, and we dial them)."""
        raise DhtError("Tor mode announces no address")

    async def get_mutable(self, public_key: bytes, salt: bytes = b"") -> GetItemResult:
        def verified(r: Any) -> bool:
            if not isinstance(r, ItemFound):
                return False
            if r.v_bencoded is None:
                return True
            if r.seq is None or r.signature is None:
                return False
            return bep44.MutableItem(public_key, salt, r.seq, r.v_bencoded, r.signature).verify()

        r = await self._call(GetItem(public_key=public_key, salt=salt), verified)
        return _item(r)

    async def get_immutable(self, target: bytes) -> GetItemResult:
        def verified(r: Any) -> bool:
            return isinstance(r, ItemFound) and (
                r.v_bencoded is None or bep44.immutable_target(r.v_bencoded) == target
            )

        return _item(await self._call(GetItem(target=target), verified))

    async def put_mutable(self, item: bep44.MutableItem, *, cas: int | None = None) -> PutResult:
        r = await self._call(PutMutable(item, cas), lambda r: isinstance(r, Stored))
        self.routing_size = r.nodes
        return PutResult(item.target, r.stored_at, list(r.errors), r.queries)

    async def put_immutable(self, v_bencoded: bytes) -> PutResult:
        r = await self._call(PutImmutable(v_bencoded), lambda r: isinstance(r, Stored))
        self.routing_size = r.nodes
        return PutResult(bep44.immutable_target(v_bencoded), r.stored_at, list(r.errors), r.queries)

    def summary(self) -> dict[str, Any]:
        return {"via": self.via[0].hex() if self.via else None, **self.stats}


def _item(r: ItemFound) -> GetItemResult:
    value = bencode.decode(r.v_bencoded) if r.v_bencoded is not None else None
    return GetItemResult(value, r.v_bencoded, r.seq, r.signature, r.queries)


def route(
    body: bytes,
    peer: PeerKey,
    conn: SessionConnection,
    server: DhtProxyServer,
    client: DhtViaContacts | None,
) -> None:
    """One DATA body that begins with :data:`MAGIC`: a request to serve or an answer."""
    try:
        message = decode(body)
    except DecodeError as exc:
        # Which side it was for is unknown; a Tor-mode node only asks, others only serve.
        (client or server).malformed(peer, str(exc))
        return
    if isinstance(message, Request):
        server.on_request(peer, conn, message, len(body))
    elif client is not None:
        client.on_response(peer, message)
    else:
        server.stats["unexpected_answers"] += 1  # an answer to a node that asks nobody

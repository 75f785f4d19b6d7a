"""Sessions between placements in the NAT lab: every pair of (public host, home of each NAT
type) runs real peerings over a sandbox DHT on the lab's internet and we record which
pairs got a session, over what, and how fast.

Each placement is one node (a ``DhtService`` and a ``Peering`` made inside its
namespace with :meth:`Lab.inside`, all in this one asyncio loop); a node's contacts are
its partners in the pairs, and the public host is a contact of every home (so it is a
mutual contact of every pair, and relays the pairs that cannot punch). TCP dials open
their sockets in the node's namespace too, so nothing leaves the lab. What NAT theory says
each pair can do is :func:`expected`.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import random
import socket
import time
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field

from btchat.discovery.rendezvous import FixedDirectory
from btchat.identity.keys import DeviceCertificate, DeviceKey, Identity
from btchat.net.dht_service import DhtService
from btchat.net.transport import TcpDialer
from btchat.node.peering import Peering, PeeringConfig
from btchat.sandbox import SANDBOX_CONFIG, start_swarm
from btchat.session.core import SessionConfig
from natlab.lab import PUBLIC_ADDRS, PUBLIC_HOST, Lab, NatType

__all__ = [
    "PUBLIC",
    "Outcome",
    "Place",
    "Upgraded",
    "expected",
    "matrix_pairs",
    "run_pairs",
    "time_upgrade",
]

#: The placement of a public node (no NAT).
PUBLIC = "public"
#: A placement: PUBLIC, a NAT type (the first home of it), or (type, 2) for the second.
Place = str | NatType | tuple[NatType, int]

_RELAY_ONLY = {
    frozenset({NatType.SYMMETRIC, NatType.PORT_RESTRICTED}),
    frozenset({NatType.SYMMETRIC}),
}


def _kind(place: Place) -> str | NatType:
    return place[0] if isinstance(place, tuple) else place


def expected(a: Place, b: Place) -> bool:
    """NAT theory: can ``a`` and ``b`` reach each other directly (public, or punched)?

    Endpoint-independent mappings (full cone, address- and port-restricted) all punch
    with each other; a symmetric NAT maps each destination to a new port, so its peer
    must accept a port it never saw: a full cone accepts anyone, an address-restricted
    NAT anyone at an address it sent to; a port-restricted or symmetric NAT does not.
    """
    kinds = frozenset({_kind(a), _kind(b)})
    return PUBLIC in kinds or kinds not in _RELAY_ONLY


def matrix_pairs(nats: Sequence[NatType] = tuple(NatType)) -> list[tuple[Place, Place]]:
    """Every pair of placements: public and each first home, plus each type with its
    second home (two port-restricted homes, two symmetric ones, ...)."""
    places: list[Place] = [PUBLIC, *nats]
    return [*itertools.combinations(places, 2), *((n, (n, 2)) for n in nats)]


@dataclass
class Outcome:
    """One pair: when its session came up (seconds from start), over what, messages."""

    a: Place
    b: Place
    setup: float | None = None
    via: list[str] = field(default_factory=list)
    delivered: bool = False

    @property
    def label(self) -> str:
        def name(p: Place) -> str:
            return f"{p[0]}#2" if isinstance(p, tuple) else str(p)

        return f"{name(self.a)} <-> {name(self.b)}"


@dataclass
class _Node:
    place: Place
    ns: str
    ip: str
    identity: Identity
    device: DeviceKey
    cert: DeviceCertificate
    partners: dict[bytes, DeviceCertificate] = field(default_factory=dict)
    up: dict[bytes, float] = field(default_factory=dict)
    data: list[tuple[bytes, bytes]] = field(default_factory=list)
    dht: DhtService | None = None
    peering: Peering | None = None


def _where(lab: Lab, place: Place) -> tuple[str, str]:
    if place == PUBLIC:
        return lab.ns("host"), PUBLIC_HOST
    if isinstance(place, tuple):
        home = lab.seconds[place[0]]
    else:
        assert isinstance(place, NatType)
        home = lab.homes[place]
    return home.ns, home.ip


def _wan_ip(lab: Lab, place: Place) -> str:
    home = lab.seconds[place[0]] if isinstance(place, tuple) else lab.homes[place]  # type: ignore[index]
    return home.wan_ip


def _ns_socket(lab: Lab, ns: str) -> socket.socket:
    with lab.inside(ns):
        return socket.socket(socket.AF_INET, socket.SOCK_STREAM)


@contextlib.asynccontextmanager
async def _started(
    lab: Lab,
    pairs: Sequence[tuple[Place, Place]],
    *,
    seed: int,
    upgrade: bool = True,
    prepare: Callable[[_Node], None] = lambda node: None,
) -> AsyncIterator[tuple[dict[Place, _Node], float]]:
    """A node per placement with the pairs as contacts (the public host a contact of
    every home) on a fresh sandbox swarm; yields the nodes and when peering started.
    ``prepare`` sees each node before its peering starts."""
    rng = random.Random(seed)
    places = list(dict.fromkeys(p for pair in pairs for p in pair))
    nodes: dict[Place, _Node] = {}
    for place in places:
        ns, ip = _where(lab, place)
        identity, device = Identity.generate(), DeviceKey.generate()
        nodes[place] = _Node(
            place, ns, ip, identity, device, identity.certify(device, int(time.time()))
        )
    links = list(pairs)
    if PUBLIC in nodes:  # the public host knows every home: the relay of last resort
        links += [(PUBLIC, p) for p in places if p != PUBLIC]
    for a, b in links:
        nodes[a].partners[nodes[b].identity.public_key] = nodes[b].cert
        nodes[b].partners[nodes[a].identity.public_key] = nodes[a].cert
    with lab.inside(lab.ns("pub")):
        swarm = await start_swarm(16, seed=seed, hosts=PUBLIC_ADDRS[:2])
    loop = asyncio.get_running_loop()
    try:
        for n in nodes.values():
            with lab.inside(n.ns):
                n.dht = await DhtService.start(
                    host=n.ip, config=SANDBOX_CONFIG, rng=random.Random(rng.random())
                )
        seeds = [swarm.services[0].addr, swarm.services[1].addr]
        await asyncio.gather(*(n.dht.bootstrap(seeds) for n in nodes.values() if n.dht))
        start = loop.time()
        for n in nodes.values():
            assert n.dht is not None
            config = PeeringConfig(
                host=n.ip,
                round_interval=3.0,
                first_retry=0.5,
                max_retry=2.0,
                dial_timeout=3.0,
                session=SessionConfig(handshake_timeout=5.0),
                upgrade=upgrade,
            )
            n.peering = Peering(
                n.identity,
                n.device,
                n.cert,
                n.dht,
                config,
                contacts=FixedDirectory(
                    list(n.partners), {pk: [c] for pk, c in n.partners.items()}
                ),
                on_established=lambda pk, n=n: n.up.setdefault(pk, loop.time() - start),  # type: ignore[misc]
                on_closed=lambda pk, reason: None,
                on_data=lambda pk, dev, payload, n=n: n.data.append((pk, payload)),  # type: ignore[misc]
                dialer=TcpDialer(timeout=3.0, make_socket=lambda n=n: _ns_socket(lab, n.ns)),  # type: ignore[misc]
            )
            prepare(n)
            with lab.inside(n.ns):
                await n.peering.start()
        yield nodes, start
    finally:
        for n in nodes.values():
            if n.peering is not None:
                await n.peering.stop()
            if n.dht is not None:
                n.dht.close()
        swarm.close()


async def run_pairs(
    lab: Lab,
    pairs: Sequence[tuple[Place, Place]],
    *,
    timeout: float = 60.0,
    at_least: float = 15.0,
    seed: int = 0,
) -> list[Outcome]:
    """Start a node per placement with the pairs as contacts; wait (up to ``timeout``)
    for every pair theory allows, and ``at_least`` this long (several rounds of lookups,
    punches and dials) for those it does not; then send a message each way on each."""
    loop = asyncio.get_running_loop()
    async with _started(lab, pairs, seed=seed) as (nodes, start):

        def both_up(a: Place, b: Place) -> bool:
            na, nb = nodes[a], nodes[b]
            return nb.identity.public_key in na.up and na.identity.public_key in nb.up

        def settled(a: Place, b: Place) -> bool:
            """Up; and direct if theory allows (a relayed one is replaced when the punch
            works, so a punchable pair is waited for until then)."""
            if not both_up(a, b):
                return False
            peering = nodes[a].peering
            assert peering is not None
            return not expected(a, b) or peering.connected(nodes[b].identity.public_key)

        deadline, earliest = start + timeout, start + at_least
        while loop.time() < deadline and (
            loop.time() < earliest or not all(settled(a, b) for a, b in pairs)
        ):
            await asyncio.sleep(0.2)

        outcomes = []
        for a, b in pairs:
            na, nb = nodes[a], nodes[b]
            out = Outcome(a, b)
            ka, kb = na.identity.public_key, nb.identity.public_key
            if both_up(a, b):
                out.setup = max(na.up[kb], nb.up[ka])
                assert na.peering is not None and nb.peering is not None
                out.via = na.peering.path(kb)
                na.peering.send(kb, b"hello from " + out.label.encode())
                nb.peering.send(ka, b"and back")
            outcomes.append(out)
        wait_until = loop.time() + 10
        while loop.time() < wait_until:
            for out in outcomes:
                na, nb = nodes[out.a], nodes[out.b]
                ka, kb = na.identity.public_key, nb.identity.public_key
                out.delivered = (ka, b"hello from " + out.label.encode()) in nb.data and (
                    kb,
                    b"and back",
                ) in na.data
            if all(o.delivered for o in outcomes if o.setup is not None):
                break
            await asyncio.sleep(0.1)
        return outcomes


@dataclass
class Upgraded:
    """One try of :func:`time_upgrade` (times in seconds from the start of peering)."""

    relayed: float | None  # the relayed session was up at both ends
    direct: float | None  # a direct one had replaced it at both ends
    via: list[str]  # what carried the session at the end
    circuits_left: int  # circuits the relay still held a second after
    delivered: bool  # a message each way after the switch
    stats: dict[str, int]  # the two sides' upgrade counters, summed
    public_sessions: int  # sessions the public host held at the end
    public_admitted: int  # connections the public host took in after the relayed session

    @property
    def upgrade_time(self) -> float | None:
        if self.relayed is None or self.direct is None:
            return None
        return self.direct - self.relayed


async def time_upgrade(
    lab: Lab,
    a: Place,
    b: Place,
    *,
    upgrade: bool,
    heal: bool = False,
    b_claims: Callable[[dict[Place, _Node]], list[tuple[str, int]]] | None = None,
    seed: int = 0,
    wait: float = 30.0,
) -> Upgraded:
    """``a`` and ``b`` (homes), with the public host as their mutual contact, where
    ``b`` announces nothing, so ``a``'s rendezvous never finds it: ``b`` finds ``a``,
    punches and dials, but ``a`` never sends toward ``b``, so ``a``'s filtering NAT drops
    it all and the two end up relayed by the public host. Then wait (``wait`` s after the
    relayed session is up) for a direct session to replace it. ``heal``: once relayed,
    ``b`` announces again (and ``a``'s DHT node may meet ``b``'s), so the rendezvous
    alone can find the direct path, as it did before the upgrade existed. ``b_claims``:
    the addresses ``b`` sends in its CONNECTs instead of its own (a lying peer)."""
    healers: list[Callable[[], None]] = []

    def silence_b(node: _Node) -> None:
        assert node.peering is not None and node.dht is not None
        if node.place == b:
            assert node.peering.rendezvous is not None

            async def no_announce(contact: bytes, secret: bytes) -> None:
                return None

            rendezvous = node.peering.rendezvous
            rendezvous._announce = no_announce  # type: ignore[method-assign]
            # Nor its candidate records (1.6), which would tell a where to dial it.
            rendezvous._put_records = no_announce  # type: ignore[method-assign]
            healers.append(lambda: delattr(rendezvous, "_announce"))
            healers.append(lambda: delattr(rendezvous, "_put_records"))
        elif node.place == a:
            # Nor does a's DHT node query b's (in a real DHT two nodes rarely meet): its
            # KRPC would open a's NAT toward b, on the socket QUIC shares.
            dht, send, b_wan = node.dht, node.dht._send, _wan_ip(lab, b)

            def krpc(data: bytes, addr: tuple[str, int]) -> None:
                if addr[0] != b_wan:
                    send(data, addr)

            def shared(data: bytes, addr: tuple[str, int]) -> None:
                if not dht.closed:
                    send(data, addr)

            dht._send = krpc  # type: ignore[method-assign]
            dht.send_datagram = shared  # type: ignore[method-assign]
            healers.append(lambda: delattr(dht, "_send"))

    loop = asyncio.get_running_loop()
    pairs = [(a, b), (PUBLIC, a), (PUBLIC, b)]
    async with _started(lab, pairs, seed=seed, upgrade=upgrade, prepare=silence_b) as (
        nodes,
        start,
    ):
        na, nb = nodes[a], nodes[b]
        pa, pb = na.peering, nb.peering
        assert pa is not None and pb is not None
        ka, kb = na.identity.public_key, nb.identity.public_key
        if b_claims is not None:
            pb._own_addrs = lambda: b_claims(nodes)  # type: ignore[method-assign]
        relayed = direct = None
        public = nodes[PUBLIC].peering
        assert public is not None
        admitted = 0
        deadline = start + 60.0
        while loop.time() < deadline:
            now = loop.time() - start
            if relayed is None and any(v.startswith("relay") for v in pa.path(kb)) and pb.path(ka):
                relayed, deadline = now, loop.time() + wait
                admitted = public.admission.stats["admitted"]
                for cure in healers if heal else ():
                    cure()
            if relayed is not None and pa.connected(kb) and pb.connected(ka):
                direct = now
                break
            # Often: with candidate records (1.6) the upgrade can follow the relayed
            # session within 50 ms, and a coarser look missed the relayed stage.
            await asyncio.sleep(0.005)
        await asyncio.sleep(1.0)
        pa.send(kb, b"direct hello")
        pb.send(ka, b"and back")
        until = loop.time() + 5.0
        delivered = False
        while loop.time() < until and not delivered:
            delivered = (ka, b"direct hello") in nb.data and (kb, b"and back") in na.data
            await asyncio.sleep(0.05)
        stats = dict(pa.upgrade_stats + pb.upgrade_stats)
        return Upgraded(
            relayed,
            direct,
            pa.path(kb),
            len(public.relay.core),
            delivered,
            stats,
            len(public.sessions),
            public.admission.stats["admitted"] - admitted if relayed is not None else 0,
        )

"""The NAT lab for real: each router measured against RFC 4787, then DHT nodes behind them.

Needs root, iproute2 and nftables (``scripts/setup`` installs them as root). Without them
the tests skip with the reason; in CI (``CI`` set) they fail instead, so CI cannot pass
without having run them.
"""

from __future__ import annotations

import asyncio
import random
import subprocess
import sys
from collections.abc import Iterator

import pytest
from natlab.lab import PUBLIC_ADDRS, PUBLIC_HOST, Lab, NatType, lab_or_skip
from natlab.probe import input_dropped, measure_router, tcp_through

from btchat.dht.node import NodeConfig
from btchat.dht.reachability import Filtering, Mapping, ReachabilitySummary
from btchat.net.dht_service import DhtError, DhtService
from btchat.sandbox import SANDBOX_CONFIG, start_swarm

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def lab() -> Iterator[Lab]:
    with lab_or_skip() as built:
        yield built


# RFC 4787: (endpoint-independent mapping, filtering) per router type.
EXPECTED_ROUTERS = {
    NatType.FULL_CONE: (True, "endpoint-independent"),
    NatType.ADDRESS_RESTRICTED: (True, "address-dependent"),
    NatType.PORT_RESTRICTED: (True, "address-and-port-dependent"),
    NatType.SYMMETRIC: (False, "address-and-port-dependent"),
}


def test_each_router_behaves_as_rfc_4787_describes(lab: Lab) -> None:
    assert not input_dropped(lab, PUBLIC_HOST)  # control: a plain host answers ICMP
    measured = {}
    for nat, home in lab.homes.items():
        b = measure_router(lab, home)
        measured[nat] = (b.endpoint_independent_mapping, b.filtering)
        print(f"{nat}: A saw {b.seen_by_a}, B saw {b.seen_by_b}, filtering {b.filtering}")
        assert b.seen_by_a[0] == home.wan_ip
        assert b.input_dropped, f"{nat}: the router answers unsolicited WAN traffic itself"
        if nat is not NatType.SYMMETRIC:
            assert b.port_preserved, nat  # the lab's cone NATs keep the internal port
        seen, inbound = tcp_through(lab, home)
        assert seen[0] == home.wan_ip and not inbound, nat  # TCP: out yes, in unasked no
    assert measured == EXPECTED_ROUTERS


EXPECTED_LABELS = {
    "public": "public",
    NatType.FULL_CONE: "full cone",
    NatType.ADDRESS_RESTRICTED: "restricted cone",
    NatType.PORT_RESTRICTED: "port-restricted",
    NatType.SYMMETRIC: "symmetric",
}
#: Read-only (BEP 43), so no routing table holds them and our nodes never query them:
#: whatever they send to a node is unsolicited.
PROBER_CONFIG = NodeConfig(short_timeout=0.5, query_timeout=2.0, read_only=True)


async def _pings(pairs: list[tuple[DhtService, tuple[str, int]]]) -> list[bool]:
    async def one(service: DhtService, addr: tuple[str, int]) -> bool:
        try:
            await service.ping(addr)
        except DhtError:
            return False
        return True

    return list(await asyncio.gather(*(one(s, a) for s, a in pairs)))


async def test_dht_nodes_learn_what_network_they_are_on(lab: Lab) -> None:
    pub = lab.ns("pub")
    with lab.inside(pub):
        swarm = await start_swarm(16, seed=5, hosts=PUBLIC_ADDRS[:2])
    nodes: dict[object, DhtService] = {}
    external = {"public": PUBLIC_HOST, **{nat: h.wan_ip for nat, h in lab.homes.items()}}
    try:
        with lab.inside(lab.ns("host")):
            nodes["public"] = await DhtService.start(
                host=PUBLIC_HOST, config=SANDBOX_CONFIG, rng=random.Random(1)
            )
        for i, (nat, home) in enumerate(lab.homes.items()):
            with lab.inside(home.ns):
                nodes[nat] = await DhtService.start(
                    host=home.ip, config=SANDBOX_CONFIG, rng=random.Random(10 + i)
                )
        seeds = [swarm.services[0].addr, swarm.services[1].addr]
        await asyncio.gather(*(n.bootstrap(seeds) for n in nodes.values()))

        # Where the swarm's routing tables hold our nodes, by their external address.
        def held() -> dict[object, list[tuple[DhtService, tuple[str, int]]]]:
            return {
                name: [
                    (s, info.addr)
                    for s in swarm.services
                    for info in s.node.routing
                    if info.addr[0] == ip
                ]
                for name, ip in external.items()
            }

        # Solicited traffic: swarm nodes ping our nodes where their tables hold them.
        solicited = held()
        for name, pairs in solicited.items():
            owners = [id(s) for s, _ in pairs]  # BEP 42: one entry per public IP per table
            assert len(owners) == len(set(owners)), f"{name}: a swarm table lists it twice"
        answered = dict(
            zip(solicited, await asyncio.gather(*map(_pings, solicited.values())), strict=True)
        )
        # Unsolicited: probers on a third address and on a swarm address (new port) ping
        # every address the swarm holds for each node, as anyone it hands them to would.
        probers = []
        for ip in (PUBLIC_ADDRS[2], PUBLIC_ADDRS[0]):
            with lab.inside(pub):
                probers.append(await DhtService.start(host=ip, config=PROBER_CONFIG))
        try:
            probed = {
                name: await _pings([(p, a) for p in probers for a in {a for _, a in pairs}])
                for name, pairs in solicited.items()
            }
        finally:
            for p in probers:
                p.close()

        summaries: dict[object, ReachabilitySummary] = {n: s.reachability for n, s in nodes.items()}
        for name, s in summaries.items():
            entries = solicited[name]
            print(
                f"{name}: {s.label} ({s.mapping}, {s.filtering}) at {s.external_ip}:"
                f"{s.external_port}; reports {s.agreeing}/{s.reports}, ports"
                f" {s.distinct_ports}, strangers {s.from_strangers}, known hosts"
                f" {s.from_known_hosts}, contacted {s.from_contacted}; in {len(entries)} swarm"
                f" table entries under {len({a for _, a in entries})} ports,"
                f" {sum(answered[name])} answered the table's owner,"
                f" {sum(probed[name])}/{len(probed[name])} answered a prober"
            )
        assert {n: s.label for n, s in summaries.items()} == EXPECTED_LABELS
        for name, s in summaries.items():
            assert s.external_ip == external[name], name
        for nat in (NatType.FULL_CONE, NatType.ADDRESS_RESTRICTED, NatType.PORT_RESTRICTED):
            assert summaries[nat].external_port == nodes[nat].addr[1]  # port-preserving
            assert summaries[nat].distinct_ports == 1
        sym = summaries[NatType.SYMMETRIC]
        assert sym.mapping is Mapping.DEPENDENT and sym.filtering is Filtering.FILTERED
        assert sym.external_port is None and sym.distinct_ports > 1
        assert summaries["public"].mapping is Mapping.NONE
        # Every table's own entry works for its owner, whatever the NAT ...
        assert all(ok and all(ok) for ok in answered.values())
        # ... but handed to anyone else, only as far as the router's filtering allows.
        assert all(probed["public"]) and all(probed[NatType.FULL_CONE])
        assert (
            sum(probed[NatType.ADDRESS_RESTRICTED]) == len(probed[NatType.ADDRESS_RESTRICTED]) // 2
        )
        assert not any(probed[NatType.PORT_RESTRICTED] + probed[NatType.SYMMETRIC])
    finally:
        for n in nodes.values():
            n.close()
        swarm.close()


def test_lab_runs_commands_and_processes_inside_a_namespace(lab: Lab) -> None:
    home = lab.homes[NatType.SYMMETRIC]
    assert "192.168.1.10/24" in lab.run(home.ns, "ip", "-4", "-o", "addr", "show", "eth0")
    code = "import socket; print(socket.if_nameindex())"
    with lab.popen(home.ns, [sys.executable, "-c", code], stdout=subprocess.PIPE) as proc:
        out, _ = proc.communicate(timeout=30)
    assert "eth0" in out and proc.returncode == 0

"""A LAN with no internet: contacts find each other by private LAN announcements and chat.

The lab is one switch and three hosts (``natlab.lab.build_lan``), no router, no default
route, so no DHT node is reachable. First the parts: two :class:`Peering` (no DHT at
all) in two hosts, contacts who never had a session and hold no certificate of each
other, get a session, learn the certificate and exchange data; a third host that is
nobody's contact hears only noise. Then the whole daemon: two ``btchat up`` processes
(a DHT node each, bootstrapping into nothing), contacts added by ID only, chat both
ways, and a channel between them works there too (its members meet by BEP 14 LSD).
Root, iproute2 and nftables, as tests/test_natlab.py; skipped without them, failing
under CI.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Awaitable, Iterator
from pathlib import Path
from typing import Any

import pytest
from harness import until
from natlab.lab import LAN_ADDRS, Lab, kill_all, lab_or_skip
from natlab.lan import LanNode, start_lan_node

from btchat.discovery.lan_service import LanService
from btchat.discovery.lsd import LSD_GROUP_V4, LSD_PORT
from btchat.discovery.lsd_service import multicast_interfaces, multicast_socket
from btchat.identity.keys import Identity

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def lab() -> Iterator[Lab]:
    with lab_or_skip(lan=True) as built:
        yield built


async def test_two_peerings_without_a_dht_find_each_other_on_the_lan(lab: Lab) -> None:
    alice, bob, eve = (Identity.generate() for _ in range(3))
    a, b = alice.public_key, bob.public_key
    nodes: list[LanNode] = []
    try:
        # Eve first, so she hears what alice and bob announce; she lists bob, but bob
        # does not list her.
        for host, who, contacts in ((2, eve, [b]), (0, alice, [b]), (1, bob, [a])):
            with lab.inside(lab.ns(f"lan{host}")):
                assert multicast_interfaces() == [LAN_ADDRS[host]]  # "any interface" here
            nodes.append(await start_lan_node(lab, host, who, contacts))
            assert isinstance(nodes[-1].peering.lan, LanService)
        ne, na, nb = nodes
        await until(lambda: b in na.up and a in nb.up, 20, "alice and bob in session")
        # What the announcements taught whoever dialled: the other's certificate, kept
        # (the side dialled learns the dialler's in the handshake).
        dialled = [(n, o) for n, o in ((na, nb), (nb, na)) if _lan(n).stats["reached"]]
        assert dialled
        for n, other in dialled:
            assert n.directory.certs_of(other.pk) == [other.cert]
        assert na.peering.send(b, b"hello over the LAN") and nb.peering.send(a, b"and back")
        await until(lambda: nb.data == [b"hello over the LAN"] and na.data == [b"and back"], 10,
                    "data both ways")  # fmt: skip
        # Connected: they stop announcing to each other.
        await until(lambda: b not in _lan(na).core.contacts, 5, "alice quiet")
        # Bob never answers eve, and she can read none of bob's announcements (they are
        # for alice): no session, no certificate.
        await asyncio.sleep(2.5)
        assert ne.up == {} and ne.directory.certs_of(b) == []
        assert _lan(ne).stats["rx_announcements"] == 0
        assert _lan(ne).stats["rx_unknown_tag"] >= 1  # she did hear alice and bob
        assert _lan(nb).stats["rx_unknown_tag"] >= 1  # eve's, noise to bob
    finally:
        for n in nodes:
            await n.peering.stop()


async def test_a_replayed_announcement_only_costs_a_failed_dial(lab: Lab) -> None:
    """Eve records Alice's announcement and, with Alice gone, multicasts it from her own
    IP, where she listens on Alice's port without Alice's keys: Bob opens it (it is
    genuine), dials Eve once, the IK handshake fails, and the same replay again is
    dropped without a dial."""
    alice, bob = Identity.generate(), Identity.generate()
    with lab.inside(lab.ns("lan2")):
        ear = multicast_socket(LSD_GROUP_V4, LSD_PORT, LAN_ADDRS[2], 1, False)
    ear.settimeout(10)
    na = await start_lan_node(lab, 0, alice, [bob.public_key])
    try:
        recorded, _ = await asyncio.to_thread(ear.recvfrom, 2048)
    finally:
        ear.close()
        await na.peering.stop()
    dialled: list[bytes] = []

    async def impostor(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        dialled.append(await reader.read(4096))  # Bob's first handshake message
        writer.write(bytes(96))  # no keys of Alice's: garbage is all she can answer
        await writer.drain()
        writer.close()

    with lab.inside(lab.ns("lan2")):
        server = await asyncio.start_server(impostor, LAN_ADDRS[2], na.peering.port)
        mouth = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    mouth.bind((LAN_ADDRS[2], 0))
    mouth.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF, socket.inet_aton(LAN_ADDRS[2]))
    nb = await start_lan_node(lab, 1, bob, [alice.public_key])
    try:
        await asyncio.sleep(0.2)
        mouth.sendto(recorded, (LSD_GROUP_V4, LSD_PORT))
        await until(lambda: bool(dialled) and _lan(nb).stats["found"] == 1, 10, "bob dials eve")
        await until(lambda: _lan(nb).stats["unreached"] == 1, 10, "the dial to fail")
        mouth.sendto(recorded, (LSD_GROUP_V4, LSD_PORT))
        await until(lambda: _lan(nb).stats["rx_replay"] == 1, 5, "the replay dropped")
        assert nb.up == {} and _lan(nb).stats["reached"] == 0 and len(dialled) == 1
    finally:
        mouth.close()
        server.close()
        await nb.peering.stop()


def _lan(node: LanNode) -> LanService:
    assert node.peering.lan is not None
    return node.peering.lan


async def test_two_daemons_on_a_lan_with_no_dht_chat_and_share_a_channel(
    lab: Lab, tmp_path: Path
) -> None:
    """``btchat up`` in two LAN hosts, bootstrap pointing at nothing: contacts added by
    ID only (no session ever, no device list anywhere) find each other and chat both
    ways; a channel one creates and the other joins links and carries posts both ways."""
    from test_messenger_e2e import Person, base_env, cli, online, texts, until_true

    env = base_env(tmp_path)
    people: dict[str, Person] = {}

    async def channel_texts(p: Person, name: str) -> list[str]:
        return sorted(m["text"] for m in (await cli(p, "channel", "history", name))["messages"])

    async def links(p: Person, name: str) -> int:
        listed = {c["name"]: c for c in (await cli(p, "channels"))["channels"]}
        return int(listed[name]["links"]) if name in listed else -1

    try:
        for i, name in enumerate(("alice", "bob")):
            wrap = ["ip", "netns", "exec", lab.ns(f"lan{i}")]
            # Bootstrap: a port on the host's own loopback where nothing listens.
            people[name] = await asyncio.to_thread(Person, name, tmp_path, env, "127.0.0.1:9", wrap)
            # Alice as ``btchat up`` is by default (any interface: with no default route
            # every LAN interface is joined), Bob on his LAN address.
            host = "0.0.0.0" if name == "alice" else LAN_ADDRS[i]
            await asyncio.to_thread(people[name].up, "--host", host, "--no-upnp")
        alice, bob = people["alice"], people["bob"]
        await cli(alice, "contact", "add", bob.id, "bob")
        await cli(bob, "contact", "add", alice.id, "alice")
        await until_true(lambda: online(alice, "bob"), 60, "alice sees bob online")
        await until_true(lambda: online(bob, "alice"), 30, "bob sees alice online")
        assert not (await cli(alice, "status"))["dht"]["joined"]  # no DHT helped
        await cli(alice, "send", "bob", "hello on the LAN")
        await until_true(lambda: _eq(texts(bob, "alice"), ["hello on the LAN"]), 30, "bob hears")
        await cli(bob, "send", "alice", "and back")
        await until_true(
            lambda: _eq(texts(alice, "bob"), ["hello on the LAN", "and back"]), 30, "alice hears"
        )

        created = await cli(alice, "channel", "create", "lanroom", "--out", str(tmp_path))
        await cli(bob, "channel", "join", created["file"])
        await until_true(lambda: _eq(links(alice, "lanroom"), 1), 60, "a channel link")
        await until_true(lambda: _eq(links(bob, "lanroom"), 1), 30, "the link on bob's side")
        await cli(alice, "channel", "send", "lanroom", "alice in the room")
        await cli(bob, "channel", "send", "lanroom", "bob in the room")
        both = ["alice in the room", "bob in the room"]
        await until_true(lambda: _eq(channel_texts(alice, "lanroom"), both), 30, "alice's room")
        await until_true(lambda: _eq(channel_texts(bob, "lanroom"), both), 30, "bob's room")
    finally:
        await kill_all(p.proc for p in people.values())


async def _eq(got: Awaitable[Any], want: Any) -> bool:
    return await got == want

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
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from harness import until
from natlab.lab import LAN_ADDRS, Lab, lab_or_skip

from btchat.discovery.lan_service import LanConfig, LanService
from btchat.discovery.lsd_service import multicast_interfaces
from btchat.discovery.rendezvous import FixedDirectory
from btchat.identity.keys import DeviceKey, Identity
from btchat.net.transport import TcpDialer
from btchat.node.peering import Peering, PeeringConfig
from btchat.session.core import SessionConfig

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def lab() -> Iterator[Lab]:
    with lab_or_skip(lan=True) as built:
        yield built


def _ns_socket(lab: Lab, ns: str) -> socket.socket:
    with lab.inside(ns):
        return socket.socket(socket.AF_INET, socket.SOCK_STREAM)


async def test_two_peerings_without_a_dht_find_each_other_on_the_lan(lab: Lab) -> None:
    people = [Identity.generate() for _ in range(3)]
    devices = [DeviceKey.generate() for _ in range(3)]
    certs = [p.certify(d, int(time.time())) for p, d in zip(people, devices, strict=True)]
    a, b, _ = (p.public_key for p in people)
    contacts = [[b], [a], [b]]  # eve lists bob; bob does not list eve
    directories = [FixedDirectory(c) for c in contacts]
    up: list[list[bytes]] = [[], [], []]
    data: list[list[bytes]] = [[], [], []]
    peerings: list[Peering] = []
    try:
        for i in (2, 0, 1):  # eve first: she hears what alice and bob announce
            ns, ip = lab.ns(f"lan{i}"), LAN_ADDRS[i]
            config = PeeringConfig(
                host=ip,
                dial_timeout=2.0,
                session=SessionConfig(handshake_timeout=3.0),
                lan=LanConfig(interface=ip, interval=2.0, min_interval=0.5),
            )
            peering = Peering(
                people[i],
                devices[i],
                certs[i],
                None,  # no DHT at all: the LAN is all there is
                config,
                contacts=directories[i],
                on_established=up[i].append,
                on_closed=lambda pk, reason: None,
                on_data=lambda pk, dev, payload, i=i: data[i].append(payload),  # type: ignore[misc]
                dialer=TcpDialer(timeout=2.0, make_socket=lambda ns=ns: _ns_socket(lab, ns)),  # type: ignore[misc]
            )
            with lab.inside(ns):
                assert multicast_interfaces() == [ip]  # what "any interface" joins here
                await peering.start()
            assert isinstance(peering.lan, LanService)
            peerings.append(peering)
        pe, pa, pb = peerings
        await until(lambda: b in up[0] and a in up[1], 20, "alice and bob in session")
        # What the announcements taught whoever dialled: the other's certificate, kept
        # (the side dialled learns the dialler's in the handshake).
        dialled = [p for p in (pa, pb) if p.lan is not None and p.lan.stats["reached"]]
        assert dialled
        for p in dialled:
            i = (pa, pb).index(p)
            assert directories[i].certs_of(contacts[i][0]) == [certs[1 - i]]
        assert pa.send(b, b"hello over the LAN") and pb.send(a, b"and back")
        await until(lambda: data[1] == [b"hello over the LAN"] and data[0] == [b"and back"], 10,
                    "data both ways")  # fmt: skip
        # Connected: they stop announcing to each other.
        await until(lambda: pa.lan is not None and b not in pa.lan.core.contacts, 5, "a quiet")
        # Eve lists bob, but bob does not list eve: bob never answers her announcements,
        # and she can read none of bob's (they are for alice): no session, no certificate.
        await asyncio.sleep(2.5)
        assert up[2] == [] and directories[2].certs_of(b) == []
        assert pe.lan is not None and pe.lan.stats["rx_announcements"] == 0
        assert pe.lan.stats["rx_unknown_tag"] >= 1  # she did hear alice and bob
        assert pb.lan is not None and pb.lan.stats["rx_unknown_tag"] >= 1  # eve's
    finally:
        for peering in peerings:
            await peering.stop()


async def test_two_daemons_on_a_lan_with_no_dht_chat_and_share_a_channel(
    lab: Lab, tmp_path: Path
) -> None:
    """``btchat up`` in two LAN hosts, bootstrap pointing at nothing: contacts added by
    ID only (no session ever, no device list anywhere) find each other and chat both
    ways; a channel one creates and the other joins links and carries posts both ways."""
    from test_messenger_e2e import Person, base_env

    env = base_env(tmp_path)
    people: dict[str, Person] = {}

    async def cli(p: Person, *args: str) -> Any:
        return await asyncio.to_thread(p.cli, *args)

    async def until_true(pred: Callable[[], Awaitable[bool]], timeout: float, what: str) -> None:
        deadline = asyncio.get_running_loop().time() + timeout
        while not await pred():
            assert asyncio.get_running_loop().time() < deadline, f"timed out: {what}"
            await asyncio.sleep(0.5)

    async def online(p: Person, other: str) -> bool:
        contacts = (await cli(p, "contacts"))["contacts"]
        return any(c["name"] == other and c["online"] for c in contacts)

    async def texts(p: Person, other: str) -> list[str]:
        return [m["text"] for m in (await cli(p, "history", other))["messages"]]

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
        for p in people.values():
            if p.proc is not None:
                p.proc.kill()
                await asyncio.to_thread(p.proc.wait, 10)


async def _eq(got: Awaitable[Any], want: Any) -> bool:
    return await got == want

"""Inbound connection admission: per-source caps, eviction of the oldest, a deadline for
the first bytes, a separate pool for refusals (issue 14 item 1)."""

from __future__ import annotations

import asyncio
import time

import pytest
from harness import until

from btchat.discovery.rendezvous import FixedDirectory
from btchat.identity.keys import DeviceKey, Identity
from btchat.net.admission import Admission, AdmissionConfig, source_of
from btchat.node.peering import Peering, PeeringConfig


class Closed:
    def __init__(self) -> None:
        self.count = 0

    def __call__(self) -> None:
        self.count += 1


def test_sources_are_addresses_and_ipv6_slash_64s() -> None:
    assert source_of("192.0.2.7") == "192.0.2.7"
    assert source_of("2001:db8:1:2:aaaa::1") == source_of("2001:db8:1:2:ffff::9")
    assert source_of("2001:db8:1:3::1") != source_of("2001:db8:1:2::1")
    assert source_of("::ffff:192.0.2.7") == "192.0.2.7"


def test_one_source_gets_its_share_and_pushes_out_only_its_own() -> None:
    adm = Admission(AdmissionConfig(total=10, per_source=2))
    for _ in range(5):  # this machine is not limited
        adm.admit("127.0.0.1", 0.0, Closed())
    assert adm.pending == 5 and adm.stats["evicted_same_source"] == 0
    other = Closed()
    adm.admit("192.0.2.2", 0.0, other)
    closers = [Closed() for _ in range(3)]
    for i, c in enumerate(closers):
        adm.admit("192.0.2.1", float(i), c)
    assert [c.count for c in closers] == [1, 0, 0] and other.count == 0
    assert adm.pending == 8 and adm.stats["evicted_same_source"] == 1


def test_a_full_pool_pushes_out_its_oldest() -> None:
    adm = Admission(AdmissionConfig(total=3, per_source=3))
    closers = [Closed() for _ in range(4)]
    tickets = [adm.admit(f"192.0.2.{i}", float(i), closers[i]) for i in range(4)]
    assert all(tickets) and adm.pending == 3
    assert [c.count for c in closers] == [1, 0, 0, 0]
    assert adm.stats["evicted"] == 1
    adm.established(tickets[1])  # type: ignore[arg-type]
    assert adm.pending == 2  # an established connection holds no slot


def test_silence_past_the_deadline_is_closed_and_talk_is_not() -> None:
    adm = Admission(AdmissionConfig(first_bytes=3.0))
    quiet, chatty = adm.admit("192.0.2.1", 0.0, Closed()), adm.admit("192.0.2.2", 0.0, Closed())
    assert quiet and chatty
    adm.heard(chatty)
    assert not adm.check_silent(quiet, 2.9)
    assert adm.check_silent(quiet, 3.0) and not adm.check_silent(chatty, 3.0)
    assert adm.pending == 1 and adm.stats["silent"] == 1


def test_refusals_linger_in_their_own_bounded_pool() -> None:
    adm = Admission(AdmissionConfig(total=2, per_source=2, lingering=2))
    closers = [Closed() for _ in range(3)]
    for i in range(3):
        ticket = adm.admit("192.0.2.1", float(i), closers[i])
        adm.refused(ticket)
        assert adm.pending == 0  # the handshake slot is free at once
    assert adm.lingering == 2 and [c.count for c in closers] == [1, 0, 0]
    assert adm.stats["linger_evicted"] == 1


def responder(contacts: list[bytes], admission: AdmissionConfig) -> Peering:
    from test_node_peering import NoDht

    ident, device = Identity.generate(), DeviceKey.generate()
    return Peering(
        ident,
        device,
        ident.certify(device, int(time.time())),
        NoDht(),  # type: ignore[arg-type]
        PeeringConfig(host="127.0.0.1", round_interval=3600.0, admission=admission),
        contacts=FixedDirectory(contacts),
        on_established=lambda pk: None,
        on_closed=lambda pk, reason: None,
        on_data=lambda pk, device, payload: None,
    )


async def test_a_contact_gets_in_during_a_flood_of_idle_connections() -> None:
    """300 idle connections from 60 addresses, some sending one byte and stalling: the
    pool of 64 stays full, yet a contact's dial completes (it used to be refused for as
    long as the flood lasted)."""
    from test_node_peering import node

    alice_id = Identity.generate()
    # Loopback stands in for the internet here, so it gets per-source shares too.
    bob = responder([alice_id.public_key], AdmissionConfig(loopback_unlimited=False))
    alice = node(alice_id, [bob.me])
    await bob.start()
    await alice.peering.start()
    held: list[asyncio.StreamWriter] = []
    try:
        for i in range(300):
            _, writer = await asyncio.open_connection(
                "127.0.0.1", bob.port, local_addr=(f"127.0.0.{2 + i % 60}", 0)
            )
            if i % 2:
                writer.write(b"\x00")  # one byte, then nothing: holds until the deadline
            held.append(writer)
        for _ in range(10):  # one host alone gets its share
            held.append((await asyncio.open_connection("127.0.0.1", bob.port))[1])
        await until(lambda: bob.admission.stats["admitted"] == 310, 5.0, "the flood admitted")
        assert bob.admission.pending == 64
        assert bob.admission.stats["evicted_same_source"] == 10 - bob.admission.config.per_source
        assert (
            bob.admission.stats["evicted"] == 310 - 64 - bob.admission.stats["evicted_same_source"]
        )
        # Alice dials from 127.0.0.1 too, whose share the last flooder holds.
        bob_cert = bob.certificate
        assert await alice.peering.dial(bob.me, bob_cert, ("127.0.0.1", bob.port))
        await until(lambda: alice.peering.connected(bob.me), 5.0, "alice connected")
    finally:
        for w in held:
            w.close()
        await alice.peering.stop()
        await bob.stop()


@pytest.mark.parametrize("talk", [False, True])
async def test_a_silent_connection_is_closed_at_the_first_bytes_deadline(talk: bool) -> None:
    bob = responder([], AdmissionConfig(first_bytes=0.3))
    await bob.start()
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", bob.port)
        if talk:
            writer.write(b"\x00\x05hello")  # talks: held until the handshake deadline instead
        started = time.monotonic()
        try:
            data = await asyncio.wait_for(reader.read(1), 2.0)
            closed = data == b""
        except TimeoutError:
            closed = False
        except ConnectionResetError:
            closed = True
        assert closed != talk
        if not talk:
            assert time.monotonic() - started < 2.0
            assert bob.admission.stats["silent"] == 1
        writer.close()
    finally:
        await bob.stop()

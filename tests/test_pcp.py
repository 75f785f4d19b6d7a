"""PCP (RFC 6887): the MAP and ANNOUNCE messages byte for byte, the version negotiation
with NAT-PMP, the epoch check, the retransmission schedule, and the client against a
gateway on loopback that drops, answers junk or another mapping's answer, refuses, or
is impersonated by a stranger. The real gateway (miniupnpd) is in test_natlab_upnp.py."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import random
import socket
import struct
from collections.abc import Callable

import pytest
from fake_gateway import mapping_answer, serve
from harness import until

from btchat.net import pcp, upnp
from btchat.net.gateway_udp import Malformed
from btchat.net.pcp import (
    Announced,
    AnnounceListener,
    EpochCheck,
    MapAnswer,
    PcpClient,
    PcpError,
    PcpUnsupported,
    decode_announcement,
    decode_response,
    encode_announce,
    encode_map,
    retransmit_waits,
)
from btchat.net.portmap import Phase, PortMapper
from btchat.net.upnp import UpnpPortMapper

NONCE = bytes(range(1, 13))
MAPPED_V4 = "00000000000000000000ffff"


def answer(request: bytes, *, result: int = 0, epoch: int = 1000, external: int | None = None,
           ip: str = "198.51.100.7", lifetime: int | None = None) -> bytes:  # fmt: skip
    """What a PCP gateway answers to ``request`` (MAP or ANNOUNCE)."""
    op = request[1]
    asked = struct.unpack("!I", request[4:8])[0]
    header = struct.pack("!BBBBII12x", 2, 0x80 | op, 0, result, asked if lifetime is None
                         else lifetime, epoch)  # fmt: skip
    if op == 0:
        return header
    nonce_proto_internal = request[24:42]
    suggested = struct.unpack("!H", request[42:44])[0]
    port = suggested if external is None else external
    return header + nonce_proto_internal + struct.pack("!H", port) + pcp._ip16(ip)


def test_the_messages_byte_for_byte() -> None:
    assert encode_announce("192.168.1.10").hex() == "02000000" + "00000000" + MAPPED_V4 + "c0a8010a"
    req = encode_map(NONCE, "UDP", 6881, 6881, 3600, "192.168.1.10")
    assert req.hex() == (
        "02010000" "00000e10" + MAPPED_V4 + "c0a8010a"  # header: v2, MAP, lifetime
        + NONCE.hex() + "11000000" + "1ae1" "1ae1" + MAPPED_V4 + "00000000"
    )  # fmt: skip
    assert len(req) == 60 and encode_map(NONCE, "TCP", 1, 0, 0, "10.0.0.1")[36] == 6
    ok = answer(req, external=40000, lifetime=1800)
    assert decode_response(ok, req) == MapAnswer(1000, "UDP", 6881, 40000, "198.51.100.7", 1800)
    # Options the gateway adds (here a THIRD_PARTY-shaped one) are skipped.
    option = bytes([1, 0, 0, 16]) + bytes(16)
    assert decode_response(ok + option, req).external_port == 40000
    ann = encode_announce("192.168.1.10")
    assert decode_response(answer(ann, epoch=7), ann) == Announced(7)
    assert decode_announcement(answer(ann, epoch=7)) == Announced(7)
    with pytest.raises(ValueError):
        encode_map(NONCE[:8], "UDP", 1, 1, 1, "10.0.0.1")


def test_failure_codes_are_answers_and_version_mismatch_means_not_pcp() -> None:
    req = encode_map(NONCE, "TCP", 7000, 7000, 3600, "192.168.1.10")
    with pytest.raises(PcpError, match="NOT_AUTHORIZED") as err:
        decode_response(answer(req, result=2, lifetime=30), req)
    assert err.value.code == 2 and err.value.lifetime == 30
    with pytest.raises(PcpError, match="NO_RESOURCES"):  # a header-only failure
        decode_response(answer(req, result=8)[:24], req)
    # Version negotiation (section 9): a NAT-PMP gateway answers version 0, result 1...
    with pytest.raises(PcpUnsupported):
        decode_response(bytes.fromhex("0081 0001 00000065"), req)
    # ... a PCP gateway of another version says UNSUPP_VERSION in its own.
    with pytest.raises(PcpUnsupported):
        decode_response(bytes([1]) + answer(req, result=1)[1:24], req)
    assert not issubclass(PcpError, Malformed)


@pytest.mark.parametrize(
    "bad",
    [
        "short",
        "not a multiple of 4",
        "too long",
        "request not answer",
        "another opcode",
        "version 3 success",
        "another nonce",
        "another internal port",
        "another protocol",
        "truncated option",
        "no external address",
    ],
)
def test_malformed_answers_are_refused_as_malformed(bad: str) -> None:
    req = encode_map(NONCE, "UDP", 6881, 6881, 3600, "192.168.1.10")
    ok = bytearray(answer(req))
    mangled = {
        "short": bytes(ok[:20]),
        "not a multiple of 4": bytes(ok) + b"\x00",
        "too long": bytes(ok) + bytes(1100),
        "request not answer": req,
        "another opcode": bytes(ok[:1]) + b"\x82" + bytes(ok[2:]),
        "version 3 success": b"\x03" + bytes(ok[1:]),
        "another nonce": bytes(ok[:24]) + b"\xff" + bytes(ok[25:]),
        "another internal port": bytes(ok[:40]) + b"\x00\x01" + bytes(ok[42:]),
        "another protocol": bytes(ok[:36]) + b"\x06" + bytes(ok[37:]),
        "truncated option": bytes(ok) + bytes([1, 0, 0, 16]) + bytes(4),
        "no external address": answer(req, ip="0.0.0.0"),
    }[bad]
    with pytest.raises(Malformed):
        decode_response(mangled, req)


def test_the_epoch_tells_a_gateway_that_lost_its_state() -> None:
    check = EpochCheck()
    assert check.valid(5000, 10.0)  # first answer: nothing to compare
    assert check.valid(5100, 110.0)  # both clocks moved alike
    assert check.valid(5101, 110.5)  # within the RFC's slack
    assert not check.valid(3, 120.0)  # went backwards: it rebooted
    assert check.valid(60, 177.0)
    assert not check.valid(600, 180.0)  # the gateway's clock leapt ahead of ours
    assert not EpochCheck(100.0, 5000).valid(5010, 300.0)  # ours leapt ahead: lost state


def test_the_retransmission_schedule_is_the_rfcs() -> None:
    waits = retransmit_waits(14, random.Random(1))
    assert 2.7 <= waits[0] <= 3.3  # IRT 3 s, +-10 %
    for prev, wait in itertools.pairwise(waits):
        assert 0.9 * min(2 * prev, 1024) <= wait <= 1.1 * min(2 * prev, 1024)
    assert max(waits) <= 1.1 * 1024  # MRT


async def test_lost_requests_are_sent_again_and_junk_and_others_answers_dropped(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(pcp, "IRT", 0.05)

    def reply(data: bytes, n: int) -> list[bytes]:
        if n < 3:
            return []  # the first two requests are lost
        stale = bytearray(answer(data, external=1))
        stale[24] ^= 0xFF  # an answer for a mapping of before (another nonce)
        return [b"junk", b"\x02" * 24, bytes(stale), answer(data, external=40000)]

    gw, port, stop = await serve(reply)
    try:
        client = PcpClient("127.0.0.1", "127.0.0.1", port)
        got = await client.map("TCP", 7000, 7000, 3600)
        assert got == MapAnswer(1000, "TCP", 7000, 40000, "198.51.100.7", 3600)
        assert gw.seen == 3 and client.dropped == 3
    finally:
        stop()


async def test_renewal_and_deletion_carry_the_mappings_nonce(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(pcp, "IRT", 0.05)
    seen: list[bytes] = []
    epochs = iter([1000, 1001, 5, 6])  # the third answer comes from a rebooted gateway

    def reply(data: bytes, n: int) -> list[bytes]:
        seen.append(data)
        return [answer(data, epoch=next(epochs))]

    _, port, stop = await serve(reply)
    try:
        client = PcpClient("127.0.0.1", "127.0.0.1", port)
        await client.map("UDP", 6881, 6881, 3600)
        await client.map("UDP", 6881, 6881, 3600)
        assert not client.restarted
        assert (await client.map("UDP", 6881, 6881, 0)).lifetime == 0
        assert client.restarted  # the epoch went back
        nonces = {data[24:36] for data in seen}
        assert len(seen) == 3 and len(nonces) == 1 and NONCE not in nonces
        assert struct.unpack("!I", seen[2][4:8]) == (0,)
        await client.map("UDP", 6881, 6881, 3600)  # a new mapping after the deletion
        assert seen[3][24:36] not in nonces
    finally:
        stop()


async def test_a_gateway_without_pcp_a_refusal_and_silence_end_in_bounded_time(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(pcp, "IRT", 0.05)
    nat_pmp = bytes.fromhex("0080 0001 00000065")  # NAT-PMP's "unsupported version"
    _, port, stop = await serve(lambda data, n: [nat_pmp])
    try:
        with pytest.raises(PcpUnsupported):
            await PcpClient("127.0.0.1", "127.0.0.1", port).probe()
    finally:
        stop()
    _, port, stop = await serve(lambda data, n: [answer(data, result=2)])
    try:
        with pytest.raises(PcpError, match="NOT_AUTHORIZED"):
            await PcpClient("127.0.0.1", "127.0.0.1", port).map("UDP", 6881, 6881, 3600)
    finally:
        stop()
    silent, port, stop = await serve(lambda data, n: [])
    try:
        with pytest.raises(TimeoutError):
            await PcpClient("127.0.0.1", "127.0.0.1", port).probe()
        assert silent.seen == pcp.PROBE_TRIES
    finally:
        stop()


async def test_a_strangers_forged_answer_never_reaches_the_client(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(pcp, "IRT", 0.05)
    stranger = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    stranger.bind(("127.0.0.1", 0))

    def reply(data: bytes, n: int) -> list[bytes]:
        client_addr = gw.last_from
        stranger.sendto(answer(data, external=6666), client_addr)  # a forgery, first
        return [] if n < 2 else [answer(data, external=40000)]

    gw, port, stop = await serve(reply)
    try:
        client = PcpClient("127.0.0.1", "127.0.0.1", port)
        got = await client.map("UDP", 6881, 6881, 3600)
        assert got.external_port == 40000 and client.dropped == 0  # never even read
    finally:
        stop()
        stranger.close()


async def test_announcements_are_heard_from_the_gateway_only() -> None:
    heard: list[int] = []
    listener = AnnounceListener("192.168.1.1", heard.append)
    ann = answer(encode_announce("192.168.1.10"), epoch=0)
    listener.datagram_received(ann, ("192.168.1.1", 5351))
    listener.datagram_received(ann, ("192.168.1.66", 5351))  # a stranger on the LAN
    listener.datagram_received(ann, ("192.168.1.1", 4000))  # not the PCP server's port
    listener.datagram_received(ann[:20], ("192.168.1.1", 5351))
    listener.datagram_received(answer(encode_announce("192.168.1.10"), result=1),
                               ("192.168.1.1", 5351))  # fmt: skip
    assert heard == [0] and listener.dropped == 4


def natpmp_or_pcp(speaks_pcp: bool, seen: list[bytes]) -> Callable[[bytes, int], list[bytes]]:
    """A gateway that speaks NAT-PMP and, if ``speaks_pcp``, PCP; ``seen`` collects
    what it was sent."""

    def reply(data: bytes, n: int) -> list[bytes]:
        seen.append(data)
        if data[0] == 2:
            return [answer(data)] if speaks_pcp else [bytes.fromhex("0081 0001 00000065")]
        if data[1] == 0:  # NAT-PMP: the external address
            return [bytes.fromhex("0080 0000 00000064 c6336408")]  # 198.51.100.8
        return [mapping_answer(data)]

    return reply


@pytest.mark.parametrize("speaks_pcp", [True, False])
async def test_the_mapper_asks_in_pcp_first_and_in_nat_pmp_when_pcp_is_not_spoken(
    monkeypatch: pytest.MonkeyPatch, speaks_pcp: bool
) -> None:
    async def no_upnp(*_: object) -> list[str]:
        return []

    monkeypatch.setattr(upnp, "default_gateway_here", lambda: "127.0.0.1")
    monkeypatch.setattr(UpnpPortMapper, "_search", no_upnp)
    seen: list[bytes] = []
    _, port, stop = await serve(natpmp_or_pcp(speaks_pcp, seen))
    mapper = UpnpPortMapper(PortMapper({"UDP": 6881}), host="127.0.0.1", pmp_ports=(port, 0))
    task = asyncio.create_task(mapper.run())
    try:
        await until(lambda: mapper.state.phase is Phase.MAPPED, 5, "mapped")
        state = mapper.state
        how = "pcp" if speaks_pcp else "natpmp"
        assert state.gateway == f"{how}://127.0.0.1"
        assert state.external_ip == ("198.51.100.7" if speaks_pcp else "198.51.100.8")
        assert seen[0][:2] == b"\x02\x00"  # PCP's ANNOUNCE is always asked first
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await mapper.close()
        stop()
    deletion = seen[-1]
    if speaks_pcp:  # lifetime 0 with the nonce of the mapping
        assert deletion[:2] == b"\x02\x01" and deletion[4:8] == bytes(4)
        assert deletion[24:36] == seen[1][24:36]
    else:
        assert deletion == bytes.fromhex("0001 0000 1ae1 0000 00000000")

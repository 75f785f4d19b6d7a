"""NAT-PMP (RFC 6886): the four messages byte for byte, the default gateway from
/proc/net/route, and the client against a gateway on loopback that drops, answers junk,
refuses, or is not there. The real gateway (miniupnpd) is in test_natlab_upnp.py."""

from __future__ import annotations

import asyncio

import pytest
from fake_gateway import mapping_answer, serve

from btchat.net import natpmp
from btchat.net.natpmp import (
    ExternalAddress,
    Mapped,
    NatPmpClient,
    NatPmpError,
    decode_response,
    default_gateway,
    encode_external_address,
    encode_map,
)

ROUTES = """Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT
eth0\t0000A8C0\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0
eth0\t00000000\t0101A8C0\t0003\t0\t0\t0\t00000000\t0\t0\t0
"""


def test_the_messages_byte_for_byte() -> None:
    assert encode_external_address() == b"\x00\x00"
    assert encode_map("UDP", 6881, 6881, 3600).hex() == "000100001ae11ae100000e10"
    assert encode_map("TCP", 7000, 0, 0).hex() == "000200001b58000000000000"
    ext = bytes.fromhex("0080 0000 00000064 cb007101")
    assert decode_response(ext, encode_external_address()) == ExternalAddress(100, "203.0.113.1")
    req = encode_map("UDP", 6881, 6881, 3600)
    ok = bytes.fromhex("0081 0000 00000065 1ae1 1b00 00000708")
    assert decode_response(ok, req) == Mapped(101, "UDP", 6881, 6912, 1800)
    with pytest.raises(NatPmpError, match="not authorized") as err:
        decode_response(bytes.fromhex("0081 0002 00000065 1ae1 0000 00000000"), req)
    assert err.value.code == 2
    for bad in (
        ok[:12],
        b"\x01" + ok[1:],
        ok[:1] + b"\x82" + ok[2:],
        ok[:8] + b"\x00\x01" + ok[10:],
    ):
        with pytest.raises(NatPmpError):
            decode_response(bad, req)


def test_the_default_gateway_from_the_route_table() -> None:
    assert default_gateway(ROUTES) == "192.168.1.1"
    assert default_gateway(ROUTES.splitlines()[0] + "\n") is None
    assert default_gateway("junk\nx y z\n") is None


async def test_lost_requests_are_sent_again_and_junk_is_skipped(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(natpmp, "FIRST_WAIT", 0.05)
    # The first two requests are lost; the third gets junk first, then the answer.
    gw, port, stop = await serve(
        lambda data, n: [] if n < 3 else [b"junk", mapping_answer(data, external=40000)]
    )
    try:
        got = await NatPmpClient("127.0.0.1", "127.0.0.1", port).map("TCP", 7000, 7000, 3600)
        assert got == Mapped(7, "TCP", 7000, 40000, 3600) and gw.seen == 3
    finally:
        stop()


async def test_a_refusal_an_absent_gateway_and_silence_end_in_bounded_time(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(natpmp, "FIRST_WAIT", 0.05)
    _, port, stop = await serve(lambda data, n: [mapping_answer(data, result=4)])
    try:
        with pytest.raises(NatPmpError, match="out of resources"):
            await NatPmpClient("127.0.0.1", "127.0.0.1", port).map("UDP", 6881, 6881, 3600)
    finally:
        stop()
    silent, port, stop = await serve(lambda data, n: [])
    try:
        loop = asyncio.get_running_loop()
        started = loop.time()
        with pytest.raises(TimeoutError):
            await NatPmpClient("127.0.0.1", "127.0.0.1", port).external_address()
        assert silent.seen == natpmp.TRIES and loop.time() - started < 2.0
    finally:
        stop()
    with pytest.raises(OSError):  # nothing listens: the port-unreachable says so at once
        await NatPmpClient("127.0.0.1", "127.0.0.1", port).external_address()

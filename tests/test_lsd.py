"""BEP 14 Local Service Discovery: wire format, announce schedule, and real multicast.

The multicast tests never touch a real network. Each one re-executes this file under
``unshare --net`` (with ``--user --map-root-user`` when not root): a fresh network
namespace that holds nothing but its own loopback and the veth pairs the scenario
creates, and that disappears with its last process. The scenario prints one JSON line
of what it saw; the test asserts on it. Where no namespace can be made (no ``unshare``,
no ``ip``, not Linux, no privileges), those tests are skipped and say why.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from btchat.discovery.lsd import (
    LSD_GROUP_V4,
    LSD_PORT,
    MAX_ANNOUNCE_SIZE,
    MAX_REMEMBERED,
    MAX_SEND_SIZE,
    LsdAnnounce,
    LsdAnnouncer,
    LsdError,
    build_announce,
    build_announces,
    parse_announce,
)
from btchat.discovery.lsd_service import LsdService
from btchat.sansio import drain_events

IH1 = bytes.fromhex("0123456789abcdef0123456789abcdef01234567")
IH2 = b"\x22" * 20
IH3 = b"\x33" * 20
HEX1 = IH1.hex()


def announce(
    *headers: str, end: str = "\r\n\r\n\r\n", start: str = "BT-SEARCH * HTTP/1.1"
) -> bytes:
    return (start + "".join("\r\n" + h for h in headers) + end).encode("latin-1")


VALID = ("Host: 239.192.152.143:6771", "Port: 6881", f"Infohash: {HEX1}")

# --------------------------------------------------------------------------- parser


def test_parse_libtorrent_announce() -> None:
    # Exactly what libtorrent's render_lsd_packet produces.
    data = (
        f"BT-SEARCH * HTTP/1.1\r\nHost: 239.192.152.143:6771\r\nPort: 6881\r\n"
        f"Infohash: {HEX1}\r\ncookie: 4aed9a78\r\n\r\n\r\n"
    ).encode()
    assert parse_announce(data) == LsdAnnounce(6881, [IH1], "4aed9a78")


def test_parse_transmission_announce_without_cookie_and_uppercase_hex() -> None:
    data = announce("Host: 239.192.152.143:6771", "Port: 51413", f"Infohash: {HEX1.upper()}")
    assert parse_announce(data) == LsdAnnounce(51413, [IH1], None)


def test_parse_is_case_insensitive_merges_duplicates_and_ignores_unknown_headers() -> None:
    data = announce(
        "HOST: [ff15::efc0:988f]:6771",
        "x-client: some client/1.0",
        "pORT:\t 7000 ",
        f"INFOHASH: {HEX1}",
        f"infohash:{IH2.hex()}",
        f"Infohash: {HEX1}",
        "COOKIE: abc",
    )
    assert parse_announce(data) == LsdAnnounce(7000, [IH1, IH2], "abc")


@pytest.mark.parametrize("end", ["\r\n\r\n", "\r\n\r\n\r\n"])
def test_parse_accepts_headers_ended_with_or_without_the_extra_crlf(end: str) -> None:
    assert parse_announce(announce(*VALID, end=end)).port == 6881


MALFORMED: dict[str, bytes] = {
    "empty": b"",
    "http get": announce(*VALID, start="GET / HTTP/1.1"),
    "ssdp m-search": announce(*VALID, start="M-SEARCH * HTTP/1.1"),
    "lowercase method": announce(*VALID, start="bt-search * HTTP/1.1"),
    "http/1.0": announce(*VALID, start="BT-SEARCH * HTTP/1.0"),
    "bare lf": announce(*VALID).replace(b"\r\n", b"\n"),
    "bare cr in value": announce("Host: 239.192.152.143:6771", "Port: 68\r81", f"Infohash: {HEX1}"),
    "no empty line": announce(*VALID, end="\r\n"),
    "body after headers": announce(*VALID, end="\r\n\r\nhello"),
    "two extra crlf": announce(*VALID, end="\r\n\r\n\r\n\r\n"),
    "missing host": announce("Port: 6881", f"Infohash: {HEX1}"),
    "missing port": announce("Host: h", f"Infohash: {HEX1}"),
    "missing infohash": announce("Host: h", "Port: 6881"),
    "port 0": announce("Host: h", "Port: 0", f"Infohash: {HEX1}"),
    "port 65536": announce("Host: h", "Port: 65536", f"Infohash: {HEX1}"),
    "port plus": announce("Host: h", "Port: +80", f"Infohash: {HEX1}"),
    "port leading zero": announce("Host: h", "Port: 0080", f"Infohash: {HEX1}"),
    "port letters": announce("Host: h", "Port: 80a", f"Infohash: {HEX1}"),
    "port empty": announce("Host: h", "Port:", f"Infohash: {HEX1}"),
    "repeated port": announce("Host: h", "Port: 1", "Port: 2", f"Infohash: {HEX1}"),
    "repeated host": announce("Host: h", "Host: h", "Port: 1", f"Infohash: {HEX1}"),
    "bad host": announce("Host: a b", "Port: 1", f"Infohash: {HEX1}"),
    "infohash 39": announce("Host: h", "Port: 1", f"Infohash: {HEX1[:39]}"),
    "infohash 41": announce("Host: h", "Port: 1", f"Infohash: {HEX1}0"),
    "infohash not hex": announce("Host: h", "Port: 1", "Infohash: " + "g" * 40),
    "infohash two in one": announce("Host: h", "Port: 1", f"Infohash: {HEX1} {HEX1}"),
    "repeated cookie": announce(*VALID, "cookie: a", "cookie: b"),
    "empty cookie": announce(*VALID, "cookie:"),
    "long cookie": announce(*VALID, "cookie: " + "c" * 65),
    "non-ascii cookie": announce(*VALID, "cookie: caf\xe9"),
    "folded header": announce(*VALID, " continued"),
    "no colon": announce(*VALID, "X-Foo bar"),
    "space before colon": announce("Host: h", "Port : 1", f"Infohash: {HEX1}"),
    "nul in unknown header": announce(*VALID, "X-Foo: a\x00b"),
    "too many headers": announce(*VALID, *["X: y"] * 62),
    "too large": announce(*VALID, "X-Pad: " + "p" * MAX_ANNOUNCE_SIZE),
}


@pytest.mark.parametrize("data", MALFORMED.values(), ids=MALFORMED.keys())
def test_parse_rejects_malformed(data: bytes) -> None:
    with pytest.raises(LsdError):
        parse_announce(data)


def test_parse_size_and_header_caps_are_exact() -> None:
    pad = MAX_ANNOUNCE_SIZE - len(announce(*VALID, "X: "))
    assert parse_announce(announce(*VALID, "X: " + "p" * pad)).port == 6881
    assert parse_announce(announce(*VALID, *["X: y"] * 61)).port == 6881


# --------------------------------------------------------------------------- builder


def test_build_matches_bep14_layout() -> None:
    assert (
        build_announce([IH1], 6881, "c00k1e")
        == (
            f"BT-SEARCH * HTTP/1.1\r\nHost: 239.192.152.143:6771\r\nPort: 6881\r\n"
            f"Infohash: {HEX1}\r\ncookie: c00k1e\r\n\r\n\r\n"
        ).encode()
    )


def test_build_several_infohashes_round_trips_and_merges_duplicates() -> None:
    data = build_announce([IH1, IH2, IH1], 7000, "k", host="[ff15::efc0:988f]:6771")
    assert parse_announce(data) == LsdAnnounce(7000, [IH1, IH2], "k")


def test_build_refuses_misuse() -> None:
    with pytest.raises(ValueError):
        build_announce([], 1, "k")
    with pytest.raises(ValueError):
        build_announce([b"x" * 19], 1, "k")
    for port in (0, 65536):
        with pytest.raises(ValueError):
            build_announce([IH1], port, "k")
    for cookie in ("", "a b", "\xe9", "c" * 65):
        with pytest.raises(ValueError):
            build_announce([IH1], 1, cookie)
    with pytest.raises(ValueError):
        build_announce([IH1], 1, "k", host="bad host")
    with pytest.raises(ValueError):  # 30 infohashes exceed 1400 bytes
        build_announce([bytes([i]) * 20 for i in range(30)], 1, "k")


def test_build_announces_packs_into_datagrams_under_the_mtu() -> None:
    ihs = [i.to_bytes(20, "big") for i in range(60)]
    datagrams = build_announces(ihs, 6881, "k" * 64)
    assert len(datagrams) == 3
    assert all(len(d) <= MAX_SEND_SIZE for d in datagrams)
    assert [ih for d in datagrams for ih in parse_announce(d).infohashes] == ihs


# ----------------------------------------------------------------------------- fuzz

_NAMES = st.sampled_from(
    [b"Host", b"host", b"PORT", b"Port", b"Infohash", b"infohash", b"cookie", b"X-A", b"", b"Po rt"]
)
_VALUES = st.one_of(
    st.sampled_from([b"239.192.152.143:6771", b"6881", b"0", b"65535", HEX1.encode(), b"k"]),
    st.binary(max_size=50),
    st.text("0123456789abcdefABCDEF :\t\r\n[]", max_size=45).map(str.encode),
)
_HEADER = st.tuples(_NAMES, st.sampled_from([b": ", b":", b" : ", b""]), _VALUES).map(
    lambda t: b"".join(t)
)
_STRUCTURED = st.builds(
    lambda start, hs, end: start + b"".join(b"\r\n" + h for h in hs) + end,
    st.sampled_from([b"BT-SEARCH * HTTP/1.1", b"BT-SEARCH * HTTP/1.0", b""]),
    st.lists(_HEADER, max_size=12),
    st.sampled_from([b"\r\n\r\n\r\n", b"\r\n\r\n", b"\r\n", b"\n\n", b""]),
)


@st.composite
def _mutated(draw: st.DrawFn) -> bytes:
    data = bytearray(build_announce([IH1, IH2], 6881, "cookie"))
    for _ in range(draw(st.integers(1, 4))):
        pos = draw(st.integers(0, len(data)))
        op = draw(st.sampled_from(["flip", "insert", "delete", "truncate"]))
        if op == "flip" and pos < len(data):
            data[pos] = draw(st.integers(0, 255))
        elif op == "insert":
            data[pos:pos] = draw(st.binary(min_size=1, max_size=8))
        elif op == "delete":
            del data[pos : pos + draw(st.integers(1, 8))]
        else:
            del data[pos:]
    return bytes(data)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.one_of(st.binary(max_size=MAX_ANNOUNCE_SIZE + 100), _STRUCTURED, _mutated()))
def test_fuzz_only_lsd_error_escapes(data: bytes) -> None:
    try:
        result = parse_announce(data)
    except LsdError:
        pass
    else:
        assert 1 <= result.port <= 65535
        assert result.infohashes and all(len(ih) == 20 for ih in result.infohashes)
        assert len(set(result.infohashes)) == len(result.infohashes)
    core = LsdAnnouncer(1, cookie="me")
    core.add(IH1, 0.0)
    for ih, (ip, port) in receive(core, data, "192.0.2.7", 0.0):  # never raises
        assert ih == IH1 and ip == "192.0.2.7" and 1 <= port <= 65535


@given(
    # 24 infohash lines fit in 1400 bytes beside the longest header and cookie; 25 do not
    # (build_announce refuses them; build_announces splits them).
    st.lists(st.binary(min_size=20, max_size=20), min_size=1, max_size=24),
    st.integers(1, 65535),
    st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7E), min_size=1, max_size=64),
)
def test_build_parse_round_trip(ihs: list[bytes], port: int, cookie: str) -> None:
    assert parse_announce(build_announce(ihs, port, cookie)) == LsdAnnounce(
        port, list(dict.fromkeys(ihs)), cookie
    )


# ------------------------------------------------------------ schedule (fake clock)


def sent(datagrams: list[bytes]) -> list[bytes]:
    return [ih for d in datagrams for ih in parse_announce(d).infohashes]


def fire(core: LsdAnnouncer, now: float) -> list[bytes]:
    """Run the core's timer; the announces it queued, all to the BEP 14 group."""
    core.handle_timer(now)
    out = core.datagrams_to_send()
    assert all(dest == (LSD_GROUP_V4, LSD_PORT) for _, dest in out)
    return [data for data, _ in out]


def found(core: LsdAnnouncer) -> list[tuple[bytes, tuple[str, int]]]:
    events = list(drain_events(core))
    assert all(e.source == "lsd" for e in events)
    return [(e.infohash, e.addr) for e in events]


def receive(
    core: LsdAnnouncer, data: bytes, ip: str, now: float
) -> list[tuple[bytes, tuple[str, int]]]:
    core.receive_datagram(data, (ip, LSD_PORT), now)
    return found(core)


def add(core: LsdAnnouncer, ih: bytes, now: float) -> list[tuple[bytes, tuple[str, int]]]:
    core.add(ih, now)
    return found(core)


def test_first_announce_is_immediate_then_every_interval() -> None:
    core = LsdAnnouncer(6881, cookie="k")
    assert core.get_timer() is None and fire(core, 0.0) == []
    core.add(IH1, 5.0)
    assert core.get_timer() == 5.0
    assert sent(fire(core, 5.0)) == [IH1]
    assert core.get_timer() == 305.0
    assert fire(core, 304.0) == []
    assert sent(fire(core, 305.0)) == [IH1]


def test_new_infohash_goes_at_once_and_others_ride_along_when_allowed() -> None:
    core = LsdAnnouncer(6881, cookie="k")
    core.add(IH1, 0.0)
    fire(core, 0.0)
    core.add(IH2, 10.0)
    assert sent(fire(core, 10.0)) == [IH2]  # IH1 went out 10 s ago: not yet
    core.add(IH3, 70.0)
    assert sorted(sent(fire(core, 70.0))) == [IH1, IH2, IH3]  # schedules merge
    assert core.get_timer() == 370.0
    assert core.stats["tx_infohashes"] == 5


def test_rate_limit_survives_remove_add_and_announce_now() -> None:
    core = LsdAnnouncer(6881, cookie="k")
    core.add(IH1, 0.0)
    fire(core, 0.0)
    core.remove(IH1)
    assert core.get_timer() is None
    core.add(IH1, 2.0)
    assert core.get_timer() == 60.0 and fire(core, 2.0) == []
    core.announce_now(30.0)
    assert core.get_timer() == 60.0
    assert sent(fire(core, 60.0)) == [IH1]
    core.announce_now(200.0)  # asks early: goes out at once, since 140 s have passed
    assert core.get_timer() == 200.0


def test_forgotten_infohashes_do_not_accumulate() -> None:
    core = LsdAnnouncer(6881, cookie="k")
    for i in range(100):
        ih = i.to_bytes(20, "big")
        core.add(ih, float(i * 100))
        fire(core, float(i * 100))
        core.remove(ih)
    assert len(core._last) <= 1


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.floats(0.0, 200.0),
            st.sampled_from(["add", "remove", "now"]),
            st.sampled_from([IH1, IH2, IH3]),
        ),
        max_size=30,
    )
)
def test_never_more_than_once_per_min_interval_and_never_silent(
    ops: list[tuple[float, str, bytes]],
) -> None:
    core = LsdAnnouncer(6881, cookie="k")
    now, last_sent, added_at = 0.0, {}, {}
    for step, op, ih in [*ops, (2000.0, "end", IH1)]:
        end = now + step
        while (t := core.get_timer()) is not None and t <= end:
            now = max(now, t)
            for got in sent(fire(core, now)):
                assert now - last_sent.get(got, -1e9) >= 60.0 - 1e-3
                last_sent[got] = now
        now = end
        for held in core.infohashes:  # announced at least once per interval while held
            assert now - max(last_sent.get(held, -1e9), added_at[held]) <= 300.0 + 1e-6
        if op == "add":
            if ih not in core.infohashes:
                added_at[ih] = now
            core.add(ih, now)
        elif op == "remove":
            core.remove(ih)
        elif op == "now":
            core.announce_now(now)


def test_receive_reports_only_held_infohashes_with_the_source_ip() -> None:
    core = LsdAnnouncer(7000, cookie="me")
    core.add(IH1, 0.0)
    data = build_announce([IH1, IH2], 6881, "you")
    assert receive(core, data, "10.0.0.5", 1.0) == [(IH1, ("10.0.0.5", 6881))]
    assert receive(core, build_announce([IH1], 6881, "me"), "10.0.0.5", 1.0) == []
    assert receive(core, b"junk", "10.0.0.5", 1.0) == []
    assert receive(core, data, "0.0.0.0", 1.0) == []
    core.remove(IH1)
    assert receive(core, data, "10.0.0.5", 1.0) == []
    assert core.stats["rx_announces"] == 2
    assert core.stats["rx_own"] == 1
    assert core.stats["rx_malformed"] == 1
    assert core.stats["rx_bad_source"] == 1
    assert core.stats["rx_peers"] == 1


def test_add_reports_peers_heard_within_the_interval() -> None:
    core = LsdAnnouncer(7000, cookie="me")
    receive(core, build_announce([IH1, IH2], 6881, "you"), "10.0.0.5", 10.0)
    receive(core, build_announce([IH1], 6882, "me"), "10.0.0.6", 10.0)  # our own: not kept
    receive(core, build_announce([IH1], 6883, "other"), "10.0.0.7", 200.0)
    assert add(core, IH1, 250.0) == [(IH1, ("10.0.0.5", 6881)), (IH1, ("10.0.0.7", 6883))]
    assert add(core, IH1, 250.0) == []  # already held: nothing new to report
    assert add(core, IH2, 320.0) == []  # heard 310 s ago: it may be gone


def test_heard_peers_are_bounded() -> None:
    core = LsdAnnouncer(7000, cookie="me")
    ihs = [i.to_bytes(20, "big") for i in range(MAX_REMEMBERED + 50)]
    for n, start in enumerate(range(0, len(ihs), 25)):
        receive(core, build_announce(ihs[start : start + 25], 6881, "x"), f"10.0.0.{n}", 0.0)
    assert len(core._heard) == MAX_REMEMBERED
    assert add(core, ihs[0], 1.0) == []  # the oldest went first
    assert add(core, ihs[-1], 1.0) == [(ihs[-1], ("10.0.0.42", 6881))]


def test_receive_rate_limits_per_source() -> None:
    core = LsdAnnouncer(7000, cookie="me")
    core.add(IH1, 0.0)
    data = build_announce([IH1], 6881, "you")
    results = [receive(core, data, "10.0.0.5", 1.0) for _ in range(30)]
    assert sum(1 for r in results if r) == 20
    assert core.stats["rx_rate_limited"] == 10
    assert receive(core, data, "10.0.0.6", 1.0)  # another host is unaffected
    assert receive(core, data, "10.0.0.5", 2.0)  # and the bucket refills


def test_misuse_raises_value_error() -> None:
    core = LsdAnnouncer(7000)
    with pytest.raises(ValueError):
        core.add(b"short", 0.0)
    with pytest.raises(ValueError):
        LsdAnnouncer(0)
    with pytest.raises(ValueError):
        LsdAnnouncer(1, interval=0.0)


async def test_service_refuses_bad_arguments_before_opening_a_socket() -> None:
    with pytest.raises(ValueError):
        await LsdService.start(6881, lambda ih, peer: None, group="10.0.0.1")
    with pytest.raises(ValueError):
        await LsdService.start(6881, lambda ih, peer: None, interface="eth0")
    with pytest.raises(ValueError):
        await LsdService.start(6881, lambda ih, peer: None, ttl=256)


# ------------------------------------------- real multicast in a network namespace


def _netns_prefix() -> list[str]:
    if os.geteuid() == 0:
        return ["unshare", "--net", "--"]
    return ["unshare", "--user", "--map-root-user", "--net", "--"]


@pytest.fixture(scope="module")
def netns() -> list[str]:
    """The command prefix that runs a process in a new, empty network namespace."""
    if not sys.platform.startswith("linux"):
        pytest.skip("network namespaces are Linux-only")
    missing = [tool for tool in ("unshare", "ip") if shutil.which(tool) is None]
    if missing:
        pytest.skip(f"cannot isolate multicast: {', '.join(missing)} not installed")
    prefix = _netns_prefix()
    try:
        probe = subprocess.run(
            [*prefix, "ip", "link", "set", "lo", "up"], capture_output=True, text=True, timeout=10
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        pytest.skip(f"cannot create a network namespace: {exc}")
    if probe.returncode != 0:
        pytest.skip(f"cannot create a network namespace: {probe.stderr.strip()}")
    return prefix


def run_scenario(netns: list[str], name: str) -> dict[str, Any]:
    proc = subprocess.run(
        [*netns, sys.executable, os.path.abspath(__file__), "scenario", name],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert proc.returncode == 0, f"scenario {name} failed:\n{proc.stdout}\n{proc.stderr}"
    return json.loads(proc.stdout.strip().splitlines()[-1])


def peers(found: list[list[Any]]) -> set[tuple[str, str, int]]:
    return {(ih, ip, port) for ih, ip, port in found}


def test_lo_services_in_process_and_subprocess_discover_each_other(netns: list[str]) -> None:
    r = run_scenario(netns, "lo")
    shared, only_a, only_b = IH1.hex(), IH2.hex(), IH3.hex()
    lo = "127.0.0.1"
    # a, b (in this process) and c (another process) announced on add: all three meet.
    assert {(shared, lo, 7002), (shared, lo, 7003)} <= peers(r["a"])
    assert {(shared, lo, 7001), (shared, lo, 7003)} <= peers(r["b"])
    assert peers(r["c"]) >= {(shared, lo, 7001), (shared, lo, 7002)}
    # A late joiner is heard at once (it hears the others at their next announce, within
    # the interval); its short interval makes it re-announce on its own timer.
    assert (shared, lo, 7004) in peers(r["a"]) and r["stats"]["d"]["tx"] >= 3
    assert r["stats"]["d"]["rx_own"] >= 3
    # Infohashes are reported only to who holds them; foreign senders are understood.
    assert (only_a, lo, 7009) in peers(r["a"]) and only_a not in {p[0] for p in peers(r["b"])}
    assert (only_b, lo, 7010) in peers(r["b"]) and only_b not in {p[0] for p in peers(r["a"])}
    assert (shared, lo, 7011) not in peers(r["a"])  # a removed it first
    assert (shared, lo, 7011) in peers(r["b"])
    for name in "abce":
        stats = r["stats"][name]
        assert stats["rx_own"] >= 1, name  # multicast loopback brought our own back
        assert stats["rx_malformed"] >= 1, name
    assert r["a_rate_limited"], "announce_now must not beat the one-per-minute limit"
    assert r["stats"]["e"]["on_peer_errors"] >= 1
    assert r["stats"]["e"]["rx_malformed"] >= 1  # still serving after its callback raised


def test_veth_between_two_namespaces_reports_the_peer_lan_address(netns: list[str]) -> None:
    r = run_scenario(netns, "veth")
    shared = IH1.hex()
    assert (shared, "10.231.0.2", 7102) in peers(r["a"])
    assert (shared, "10.231.0.1", 7101) in peers(r["b"])
    # x joined the group on lo only: what arrives on the veth is not its business.
    assert r["x"] == [] and r["stats"]["x"].get("rx_announces", 0) == 0
    assert r["stats"]["a"].get("rx_own", 0) == 0  # loopback off: our own never comes back


@pytest.mark.interop
def test_libtorrent_and_lsd_service_find_each_other(netns: list[str]) -> None:
    pytest.importorskip("libtorrent")
    r = run_scenario(netns, "libtorrent")
    assert (IH1.hex(), "10.231.0.1", 7200) in peers(r["ours"]), r
    assert "10.231.0.1:7300" in r["lt_lsd_peers"], r


# -------------------------------------------- scenario side (runs in the namespace)


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True)


def _emit(obj: Any) -> None:
    print(json.dumps(obj), flush=True)


async def _until(cond: Callable[[], bool], timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(0.02)
    return True


async def _link_up(dev: str) -> None:
    """Wait for carrier: an announce sent before the veth is up would be lost."""
    for _ in range(150):
        out = subprocess.run(["ip", "-o", "link", "show", "dev", dev], capture_output=True)
        if b"LOWER_UP" in out.stdout:
            return
        await asyncio.sleep(0.02)
    raise RuntimeError(f"{dev} did not come up")


def _recorder(found: list[list[Any]]) -> Callable[[bytes, tuple[str, int]], None]:
    return lambda ih, peer: found.append([ih.hex(), peer[0], peer[1]])


class _Peer:
    """An LsdService in a child process, driven line by line over stdin/stdout."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc
        self.messages: list[Any] = []
        self.found: list[list[Any]] = []
        self._reader = asyncio.ensure_future(self._read())

    @classmethod
    async def spawn(cls, *args: str, prefix: tuple[str, ...] = ()) -> _Peer:
        proc = await asyncio.create_subprocess_exec(
            *prefix,
            sys.executable,
            os.path.abspath(__file__),
            "peer",
            *args,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
        )
        return cls(proc)

    async def _read(self) -> None:
        assert self.proc.stdout is not None
        while line := await self.proc.stdout.readline():
            msg = json.loads(line)
            self.messages.append(msg)
            if isinstance(msg, dict) and "peer" in msg:
                self.found.append(msg["peer"])

    async def expect(self, msg: Any, timeout: float = 10.0) -> None:
        if not await _until(lambda: msg in self.messages, timeout):
            raise RuntimeError(f"peer never said {msg!r}; said {self.messages}")

    def send(self, line: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(line.encode() + b"\n")

    async def finish(self) -> dict[str, Any]:
        self.send("quit")
        await asyncio.wait_for(self.proc.wait(), 10.0)
        await self._reader
        return next(m for m in self.messages if isinstance(m, dict) and "stats" in m)


def _raw_sender(interface: str) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind((interface, 0))
    sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF, socket.inet_aton(interface))
    sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_LOOP, 1)
    return sock


async def _scenario_lo() -> dict[str, Any]:
    _ip("link", "set", "lo", "up")
    _ip("link", "set", "lo", "multicast", "on")
    # With a source address, because 127.0.0.1 has host scope and would not be picked.
    _ip("route", "add", "224.0.0.0/4", "dev", "lo", "src", "127.0.0.1")
    found: dict[str, list[list[Any]]] = {k: [] for k in "abde"}

    def broken(ih: bytes, peer: tuple[str, int]) -> None:
        raise RuntimeError("a bug in the caller")

    lo = "127.0.0.1"
    a = await LsdService.start(7001, _recorder(found["a"]), interface=lo, loopback=True)
    b = await LsdService.start(7002, _recorder(found["b"]), loopback=True)  # route decides
    e = await LsdService.start(7005, broken, interface=lo, loopback=True)
    c = await _Peer.spawn("--port", "7003", "--interface", lo, "--loopback", "--ih", IH1.hex())
    await c.expect("started")
    for svc, ihs in ((a, [IH1, IH2]), (b, [IH1, IH3]), (e, [IH1])):
        for ih in ihs:
            svc.add(ih)
    c.send("add")
    await _until(lambda: len(found["a"]) >= 2 and len(found["b"]) >= 2 and len(c.found) >= 2)

    d = await LsdService.start(
        7004, _recorder(found["d"]), interface=lo, loopback=True, interval=0.25, min_interval=0.25
    )
    d.add(IH1)
    await _until(lambda: d.stats["tx"] >= 3 and d.stats["rx_own"] >= 3)
    d.close()  # enough: everyone shares 127.0.0.1, and so one per-source rate limit

    tx = a.stats["tx"]
    a.announce_now()
    await asyncio.sleep(0.1)
    a_rate_limited = a.stats["tx"] == tx

    a.remove(IH1)
    raw = _raw_sender(lo)
    for data in (
        b"garbage",
        build_announce([IH2], 7009, "stranger"),
        announce("Host: 239.192.152.143:6771", "Port: 7010", f"Infohash: {IH3.hex()}"),
        build_announce([IH1], 7011, "stranger"),
    ):
        raw.sendto(data, (LSD_GROUP_V4, LSD_PORT))
    raw.close()
    await _until(
        lambda: (
            [IH2.hex(), lo, 7009] in found["a"]
            and [IH3.hex(), lo, 7010] in found["b"]
            and [IH1.hex(), lo, 7011] in found["b"]
        )
    )
    await asyncio.sleep(0.1)  # let the others' counters catch up
    c_result = await c.finish()
    services = {"a": a, "b": b, "d": d, "e": e}
    stats = {k: dict(s.stats) for k, s in services.items()}
    for s in services.values():
        s.close()
    stats["c"] = c_result["stats"]
    return {**found, "c": c_result["found"], "stats": stats, "a_rate_limited": a_rate_limited}


async def _scenario_veth() -> dict[str, Any]:
    # This namespace (A) and a child's (B), joined by a veth pair: two hosts on a LAN.
    _ip("link", "set", "lo", "up")
    _ip("link", "set", "lo", "multicast", "on")
    peer = await _Peer.spawn(
        "--port", "7102", "--interface", "10.231.0.2", "--ih", IH1.hex(),
        "--link-dev", "vb", "--link-addr", "10.231.0.2/24",
        prefix=("unshare", "--net", "--"),
    )  # fmt: skip
    await peer.expect("ns-ready")
    _ip("link", "add", "va", "type", "veth", "peer", "name", "vb", "netns", str(peer.proc.pid))
    _ip("addr", "add", "10.231.0.1/24", "dev", "va")
    _ip("link", "set", "va", "up")
    peer.send("link")
    await peer.expect("started")
    await _link_up("va")
    found: dict[str, list[list[Any]]] = {"a": [], "x": []}
    a = await LsdService.start(7101, _recorder(found["a"]), interface="10.231.0.1")
    x = await LsdService.start(7109, _recorder(found["x"]), interface="127.0.0.1")
    a.add(IH1)
    x.add(IH1)
    peer.send("add")
    await _until(lambda: bool(found["a"]) and bool(peer.found))
    await asyncio.sleep(0.2)
    result = await peer.finish()
    stats = {"a": dict(a.stats), "x": dict(x.stats), "b": result["stats"]}
    a.close()
    x.close()
    return {**found, "b": result["found"], "stats": stats}


_KEEP_ALIVE: list[Any] = []


async def _scenario_libtorrent() -> dict[str, Any]:
    import libtorrent as lt

    # libtorrent runs LSD on its listen interfaces, not on lo: a veth pair, both ends here.
    _ip("link", "set", "lo", "up")
    _ip("link", "add", "va", "type", "veth", "peer", "name", "vb")
    _ip("addr", "add", "10.231.0.1/24", "dev", "va")
    _ip("link", "set", "va", "up")
    _ip("link", "set", "vb", "up")
    await _link_up("va")
    session = lt.session(
        {
            "listen_interfaces": "10.231.0.1:7200",
            "enable_lsd": True,
            "enable_dht": False,
            "enable_upnp": False,
            "enable_natpmp": False,
            "alert_mask": int(lt.alert.category_t.all_categories),
        }
    )
    ours: list[list[Any]] = []
    svc = await LsdService.start(7300, _recorder(ours), interface="10.231.0.1", loopback=True)
    svc.add(IH1)
    params = lt.add_torrent_params()
    params.info_hashes = lt.info_hash_t(lt.sha1_hash(IH1))
    params.save_path = "/tmp"
    session.add_torrent(params)
    lt_peers: list[str] = []

    def poll() -> bool:
        for alert in session.pop_alerts():
            if alert.what() == "lsd_peer":  # the bindings expose no endpoint field
                lt_peers.extend(re.findall(r"\d+\.\d+\.\d+\.\d+:\d+", alert.message())[:1])
        return bool(ours) and bool(lt_peers)

    await _until(poll, 8.0)
    svc.close()
    _KEEP_ALIVE.append(session)  # destroying it blocks for seconds: see _main
    return {"ours": ours, "lt_lsd_peers": lt_peers}


async def _peer_main(args: argparse.Namespace) -> None:
    loop = asyncio.get_running_loop()

    async def readline() -> str:
        return (await loop.run_in_executor(None, sys.stdin.readline)).strip()

    if args.link_dev:
        _emit("ns-ready")  # our namespace exists: the parent may move a veth end into it
        if await readline() != "link":
            return
        _ip("addr", "add", args.link_addr, "dev", args.link_dev)
        _ip("link", "set", args.link_dev, "up")
        _ip("link", "set", "lo", "up")
        await _link_up(args.link_dev)
    found: list[list[Any]] = []

    def on_peer(ih: bytes, peer: tuple[str, int]) -> None:
        found.append([ih.hex(), peer[0], peer[1]])
        _emit({"peer": found[-1]})

    svc = await LsdService.start(
        args.port, on_peer, interface=args.interface, loopback=args.loopback
    )
    _emit("started")
    while (line := await readline()) not in ("quit", ""):
        if line == "add":
            svc.add(bytes.fromhex(args.ih))
    _emit({"stats": dict(svc.stats), "found": found})
    svc.close()


SCENARIOS = {"lo": _scenario_lo, "veth": _scenario_veth, "libtorrent": _scenario_libtorrent}


def _main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    sub = parser.add_subparsers(dest="mode", required=True)
    sc = sub.add_parser("scenario")
    sc.add_argument("name", choices=sorted(SCENARIOS))
    pp = sub.add_parser("peer")
    pp.add_argument("--port", type=int, required=True)
    pp.add_argument("--interface", required=True)
    pp.add_argument("--ih", required=True)
    pp.add_argument("--loopback", action="store_true")
    pp.add_argument("--link-dev")
    pp.add_argument("--link-addr")
    args = parser.parse_args()
    # Refuse to run outside a namespace we made: never multicast on a real network.
    links = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True).stdout
    if any(
        line.split(":")[1].strip().split("@")[0] not in ("lo", "vb") for line in links.splitlines()
    ):
        sys.exit(f"refusing to run: this network namespace has real interfaces:\n{links}")
    if args.mode == "scenario":
        _emit(asyncio.run(SCENARIOS[args.name]()))
        # A libtorrent session takes seconds to shut down; the namespace and everything
        # in it go away with this process anyway.
        os._exit(0)
    else:
        asyncio.run(_peer_main(args))


if __name__ == "__main__":
    _main()


def test_the_largest_announce_fits_and_one_more_infohash_does_not() -> None:
    ihs = [bytes([i]) * 20 for i in range(25)]
    assert len(build_announce(ihs[:24], 65535, "c" * 64)) <= 1400
    with pytest.raises(ValueError, match="do not fit"):
        build_announce(ihs, 65535, "c" * 64)

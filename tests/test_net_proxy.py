"""Sessions through a proxy: a real SOCKS5 server (Dante), an HTTP CONNECT proxy, Tor mode.

Dante (Debian ``dante-server``, installed by ``scripts/setup`` as root) runs on loopback
with a generated config and logs every connection it makes; the log proves a session
went through it. The HTTP CONNECT proxy is a small one written here. Tor mode is checked
twice: in-process (the daemon opens no UDP socket at all) and in network namespaces,
where nftables counters on the node's own interface show that nothing but its
connections to the proxy left it.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import pytest
from harness import PeerNode, peer_node, skip_unless_ci, until, wait_for
from natlab.lab import INTERNET, PREFIX, Lab, unavailable

from btchat.api.facade import ApiError
from btchat.cli.main import main as cli_main
from btchat.identity.keys import Identity
from btchat.net.proxy import PROXY_TIMEOUT, ProxyDialer, ProxyError, ProxyUrl, parse_proxy
from btchat.node.boot import RunningNode, daemon_config, start_node
from btchat.node.config import ConfigError, Settings, parse_ip_port, resolve
from btchat.node.daemon import DaemonConfig

# ------------------------------------------------------------------ parsing


def test_proxy_urls_parse_and_print_without_the_password() -> None:
    p = parse_proxy("socks5://alice:s%3Acret@127.0.0.1:1080")
    assert p == ProxyUrl("socks5", "127.0.0.1", 1080, "alice", "s:cret")
    assert str(p) == "socks5://alice@127.0.0.1:1080"
    assert parse_proxy("HTTP://[::1]:3128/") == ProxyUrl("http", "::1", 3128)
    assert str(parse_proxy("http://[::1]:3128")) == "http://[::1]:3128"


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ("socks4://127.0.0.1:1080", "scheme"),
        ("127.0.0.1:1080", "scheme"),
        ("socks5://localhost:9050", "host name"),
        ("socks5://127.0.0.1", "host and a port"),
        ("socks5://127.0.0.1:99999", "host and a port"),
        ("socks5://alice@127.0.0.1:1080", "password"),
        ("http://127.0.0.1:3128/path", "no path"),
        (f"socks5://{'u' * 256}:p@127.0.0.1:1080", "1 to 255"),
    ],
)
def test_bad_proxy_urls_are_refused_with_the_reason(text: str, why: str) -> None:
    with pytest.raises(ValueError, match=why):
        parse_proxy(text)


def test_proxy_and_tor_come_from_flags_then_env_then_file(tmp_path: Path) -> None:
    conf = tmp_path / "config.toml"
    conf.write_text('[net]\nproxy = "http://127.0.0.3:3128"\ntor = true\n')
    env = {"BTCHAT_PROXY": "socks5://127.0.0.2:1080", "BTCHAT_TOR": "no"}
    flag = parse_proxy("socks5://127.0.0.1:9150")
    assert resolve({"proxy": flag}, config_file=conf, environ=env).proxy == flag
    from_env = resolve({}, config_file=conf, environ=env)
    assert from_env.proxy == parse_proxy("socks5://127.0.0.2:1080") and from_env.tor is False
    from_file = resolve({}, config_file=conf, environ={})
    assert from_file.proxy == parse_proxy("http://127.0.0.3:3128") and from_file.tor is True
    conf.write_text('[net]\nproxy = "socks5://tor.example:9050"\n')
    with pytest.raises(ConfigError, match=r"config net\.proxy: .*host name"):
        resolve({}, config_file=conf, environ={})
    conf.write_text("")
    with pytest.raises(ConfigError, match="BTCHAT_TOR"):
        resolve({}, config_file=conf, environ={"BTCHAT_TOR": "maybe"})


def test_tor_mode_derives_a_config_that_cannot_leak(tmp_path: Path) -> None:
    tor = Settings(data_dir=tmp_path, bootstrap=[], tor=True)
    config = daemon_config(tor)
    assert config.tor and str(config.proxy) == "socks5://127.0.0.1:9050"
    assert config.peering.host == config.channels.host == "127.0.0.1"
    assert config.peering.dial_timeout > PROXY_TIMEOUT  # the dialer's error ends a slow dial
    assert not (config.channels.dht or config.channels.trackers or config.channels.lsd)
    with pytest.raises(ConfigError, match="loopback only"):
        daemon_config(Settings(data_dir=tmp_path, bootstrap=[], tor=True, host="192.0.2.7"))
    # Whoever builds the daemon's config by hand: Tor mode with a leak is refused.
    with pytest.raises(ValueError, match="needs a proxy"):
        DaemonConfig(data_dir=tmp_path, tor=True)
    with pytest.raises(ValueError, match="no DHT, tracker or LAN"):
        DaemonConfig(data_dir=tmp_path, tor=True, proxy=config.proxy)  # default channels


# ------------------------------------------------------------------ Dante


def _free_port(host: str) -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


@dataclass
class Dante:
    """A running ``danted`` and the log it writes every connection to."""

    url: ProxyUrl
    log: Path
    proc: subprocess.Popen[bytes]

    def connects_to(self, addr: tuple[str, int]) -> int:
        """Sessions Dante opened to ``addr`` (its "tcp/connect [" line names the target)."""
        target = f" {addr[0]}.{addr[1]}"
        text = self.log.read_text() if self.log.exists() else ""
        return sum(1 for line in text.splitlines() if "tcp/connect [" in line and target in line)


def _danted() -> str:
    path = shutil.which("danted") or "/usr/sbin/danted"
    if os.geteuid() != 0 or not os.access(path, os.X_OK):
        skip_unless_ci("needs root and danted (apt-get install dante-server; scripts/setup does)")
    return path


@contextlib.contextmanager
def run_dante(tmp: Path, host: str, port: int, prefix: tuple[str, ...] = ()) -> Iterator[Dante]:
    """Dante on ``host:port`` (inside a namespace when ``prefix`` is ``ip netns exec NS``),
    allowing CONNECT to anywhere without authentication, logging each connection."""
    log = tmp / "danted.log"
    conf = tmp / "danted.conf"
    conf.write_text(
        f"logoutput: {log}\n"
        f"internal: {host} port = {port}\nexternal: {host}\n"
        "socksmethod: none\nclientmethod: none\n"
        "user.privileged: root\nuser.unprivileged: nobody\n"
        "client pass {\n  from: 0.0.0.0/0 to: 0.0.0.0/0\n  log: connect disconnect error\n}\n"
        "socks pass {\n  from: 0.0.0.0/0 to: 0.0.0.0/0\n  command: connect\n"
        "  log: connect disconnect error\n}\n"
    )
    proc = subprocess.Popen(
        [*prefix, _danted(), "-f", str(conf), "-N", "1"],
        start_new_session=True,  # its own process group: it forks children
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 10
        while "running" not in (log.read_text() if log.exists() else ""):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"danted did not start: {log.read_text()[-500:]}")
            time.sleep(0.05)
        yield Dante(parse_proxy(f"socks5://{host}:{port}"), log, proc)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=10)


@pytest.fixture
def dante(tmp_path: Path) -> Iterator[Dante]:
    with run_dante(tmp_path, "127.0.0.1", _free_port("127.0.0.1")) as d:
        yield d


@contextlib.asynccontextmanager
async def pair_through(dialer: ProxyDialer) -> AsyncIterator[tuple[PeerNode, PeerNode]]:
    """Alice dials only through ``dialer``; Bob listens plainly."""
    alice_id, bob_id = Identity.generate(), Identity.generate()
    alice = peer_node(alice_id, [bob_id.public_key], dialer=dialer)
    bob = peer_node(bob_id, [alice_id.public_key])
    await alice.peering.start()
    await bob.peering.start()
    try:
        yield alice, bob
    finally:
        await alice.peering.stop()
        await bob.peering.stop()


async def _both_ways(alice: PeerNode, bob: PeerNode) -> None:
    a, b = alice.identity.public_key, bob.identity.public_key
    assert await alice.peering.dial(b, bob.cert, bob.addr)
    await until(lambda: bool(bob.up), 5.0, "bob's side of the session")
    assert alice.peering.send(b, b"hello through the proxy")
    assert bob.peering.send(a, b"and back")
    await until(lambda: bool(alice.data and bob.data), 5.0, "a payload each way")
    assert bob.data == [(a, alice.device.device_id, b"hello through the proxy")]
    assert alice.data == [(b, bob.device.device_id, b"and back")]


async def test_a_session_through_dante_carries_messages_both_ways(dante: Dante) -> None:
    dialer = ProxyDialer(dante.url, timeout=5.0)
    async with pair_through(dialer) as (alice, bob):
        assert dante.connects_to(bob.addr) == 0
        await _both_ways(alice, bob)
        # Dante's own log names the connection it opened to Bob for Alice.
        assert await wait_for(lambda: dante.connects_to(bob.addr) == 1, 5.0), dante.log
    assert dialer.stats == {"dials": 1, "connected": 1, "failed": 0}
    assert dialer.status()["last_error"] is None


async def test_a_refused_target_says_the_proxy_refused(dante: Dante) -> None:
    dialer = ProxyDialer(dante.url, timeout=5.0)
    closed = ("127.0.0.1", _free_port("127.0.0.1"))
    with pytest.raises(ProxyError, match=f"proxy {dante.url} refused 127.0.0.1:{closed[1]}"):
        await dialer.dial(closed)
    assert dialer.stats["failed"] == 1 and "refused" in str(dialer.last_error)


async def test_a_proxy_that_is_down_is_a_clear_error_and_no_crash() -> None:
    down = parse_proxy(f"socks5://127.0.0.1:{_free_port('127.0.0.1')}")
    dialer = ProxyDialer(down, timeout=5.0)
    async with pair_through(dialer) as (alice, bob):
        with pytest.raises(ProxyError, match="is not reachable: Connection refused"):
            await dialer.dial(bob.addr)
        assert not await alice.peering.dial(bob.identity.public_key, bob.cert, bob.addr)
        assert alice.peering.sessions == {} and bob.up == []
        assert dialer.status() == {
            "url": str(down),
            "dials": 2,
            "connected": 0,
            "failed": 2,
            "last_error": f"proxy {down} is not reachable: Connection refused",
        }


async def test_a_proxy_that_never_answers_costs_one_timeout() -> None:
    held: list[asyncio.StreamWriter] = []

    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        held.append(writer)  # accept, read nothing, answer nothing

    server = await asyncio.start_server(silent, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    dialer = ProxyDialer(parse_proxy(f"socks5://127.0.0.1:{port}"), timeout=0.5)
    started = time.monotonic()
    with pytest.raises(ProxyError, match=r"did not connect us to 127.0.0.1:9 within 0.5 s"):
        await dialer.dial(("127.0.0.1", 9))
    assert 0.4 < time.monotonic() - started < 2.0
    for w in held:
        w.close()
    server.close()
    await server.wait_closed()


async def test_host_names_are_never_sent_to_the_proxy() -> None:
    dialer = ProxyDialer(parse_proxy("socks5://127.0.0.1:9"), timeout=1.0)
    with pytest.raises(ProxyError, match="must be an IP address"):
        await dialer.dial(("example.com", 443))
    assert dialer.stats["dials"] == 0  # refused before any connection


# ------------------------------------------------------------------ HTTP CONNECT


class ConnectProxy:
    """An RFC 9110 CONNECT proxy with Basic authentication, counting its tunnels."""

    def __init__(self, user: str, password: str) -> None:
        self.auth = "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()
        self.tunnels: list[tuple[str, int]] = []
        self.refused = 0
        self.server: asyncio.Server | None = None

    async def start(self) -> int:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        return int(self.server.sockets[0].getsockname()[1])

    async def close(self) -> None:
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = (await reader.readuntil(b"\r\n\r\n")).decode().split("\r\n")
        method, target, _ = head[0].split(" ")
        headers = dict(h.split(": ", 1) for h in head[1:] if h)
        if method != "CONNECT" or headers.get("Proxy-Authorization") != self.auth:
            self.refused += 1
            writer.write(b"HTTP/1.1 407 Proxy Authentication Required\r\n\r\n")
            writer.close()
            return
        host, port = target.rsplit(":", 1)
        up_reader, up_writer = await asyncio.open_connection(host, int(port))
        self.tunnels.append((host, int(port)))
        writer.write(b"HTTP/1.1 200 Connection established\r\n\r\n")

        await asyncio.gather(_pipe(reader, up_writer), _pipe(up_reader, writer))


@pytest.fixture
async def connect_proxy() -> AsyncIterator[tuple[ConnectProxy, int]]:
    proxy = ConnectProxy("alice", "secret")
    port = await proxy.start()
    try:
        yield proxy, port
    finally:
        await proxy.close()


async def test_a_session_through_http_connect_with_credentials(
    connect_proxy: tuple[ConnectProxy, int],
) -> None:
    proxy, port = connect_proxy
    dialer = ProxyDialer(parse_proxy(f"http://alice:secret@127.0.0.1:{port}"))
    async with pair_through(dialer) as (alice, bob):
        await _both_ways(alice, bob)
        assert proxy.tunnels == [bob.addr] and proxy.refused == 0
        wrong = ProxyDialer(parse_proxy(f"http://alice:wrong@127.0.0.1:{port}"))
        with pytest.raises(ProxyError, match="refused"):
            await wrong.dial(bob.addr)
        assert proxy.refused == 1 and len(proxy.tunnels) == 1


# ------------------------------------------------------------------ Tor mode, in-process


def _udp_sockets() -> set[int]:
    """Inodes of the UDP sockets this process holds (IPv4 and IPv6)."""
    inodes: set[int] = set()
    for table in ("/proc/net/udp", "/proc/net/udp6"):
        with contextlib.suppress(FileNotFoundError), open(table) as f:
            inodes |= {int(line.split()[9]) for line in list(f)[1:]}
    mine = set()
    for fd in os.listdir("/proc/self/fd"):
        with contextlib.suppress(OSError):
            link = os.readlink(f"/proc/self/fd/{fd}")
            if link.startswith("socket:["):
                mine.add(int(link[8:-1]))
    return mine & inodes


async def start(tmp: Path, name: str, **settings: object) -> RunningNode:
    """A node in ``tmp/name`` on loopback that joins no DHT (there is none to join)."""
    base = Settings(
        data_dir=tmp / name, bootstrap=[], host="127.0.0.1", dht_port=0, no_passphrase=True
    )
    return await start_node(
        Settings(**{**base.__dict__, **settings}),  # type: ignore[arg-type]
        notice=lambda text: None,
    )


def befriend(a: RunningNode, b: RunningNode) -> None:
    """Each knows the other, and ``a`` holds ``b``'s device certificate, as after an
    earlier session: all a Tor-mode node has to dial by hand."""
    if a.store.get_contact(b.daemon.me) is None:
        a.store.add_contact(b.daemon.me, "b", 0)
    a.store.set_certs(b.daemon.me, [b.daemon.keys.certificate])
    b.store.add_contact(a.daemon.me, "a", 0)


async def _chat_both_ways(a: RunningNode, b: RunningNode, b_addr: tuple[str, int]) -> None:
    contact = await a.daemon.dial_contact("b", f"{b_addr[0]}:{b_addr[1]}")
    assert contact["online"] is True
    await a.daemon.send_message("b", "hello from Tor mode")
    await b.daemon.send_message("a", "hello back")

    def texts(node: RunningNode, peer: bytes) -> list[str]:
        return sorted(r.text for r in node.store.history(peer, limit=10) if r.text)

    both = sorted(["hello from Tor mode", "hello back"])
    await until(
        lambda: texts(a, b.daemon.me) == both and texts(b, a.daemon.me) == both,
        10.0,
        "both messages on both sides",
    )


class RecordingSocket(socket.socket):
    """``socket.socket`` that notes every datagram socket made, however briefly."""

    datagrams: ClassVar[list[tuple[int, int]]] = []

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if self.type == socket.SOCK_DGRAM:
            RecordingSocket.datagrams.append((self.family, self.type))


async def test_tor_mode_opens_no_udp_socket_and_chats_through_dante(
    tmp_path: Path, dante: Dante, monkeypatch: pytest.MonkeyPatch
) -> None:
    before = _udp_sockets()
    RecordingSocket.datagrams.clear()
    with monkeypatch.context() as patch:
        patch.setattr(socket, "socket", RecordingSocket)
        # The default DHT port too: not even a port probe may open a UDP socket.
        tor = await start(tmp_path, "tor", tor=True, proxy=dante.url, dht_port=6881)
    try:
        assert RecordingSocket.datagrams == []  # no DHT node, LSD, UDP tracker or probe
        assert not _udp_sockets() - before
        status = await tor.daemon.status()
        assert status["tor"] is True and status["dht"]["addr"] is None
        assert status["proxy"]["url"] == str(dante.url)
        with pytest.raises(ApiError, match="no contact serving"):
            await tor.daemon.send_request("b" * 64, None)
        plain = await start(tmp_path, "plain")
        try:
            assert plain.daemon.peering is not None
            addr = ("127.0.0.1", plain.daemon.peering.port)
            tor.store.add_contact(plain.daemon.me, "b", 0)
            with pytest.raises(ApiError, match="no device certificate"):
                await tor.daemon.dial_contact("b", f"127.0.0.1:{addr[1]}")
            befriend(tor, plain)
            with pytest.raises(ApiError, match="IP:PORT"):
                await tor.daemon.dial_contact("b", f"localhost:{addr[1]}")
            closed = _free_port("127.0.0.1")
            with pytest.raises(
                ApiError, match=f"no session at 127.0.0.1:{closed}: proxy .*refused"
            ):
                await tor.daemon.dial_contact("b", f"127.0.0.1:{closed}")
            await _chat_both_ways(tor, plain, addr)
            assert dante.connects_to(addr) == 1
            # After a session and two messages the only new UDP sockets are the plain
            # node's DHT: IPv4 and (BEP 32, on a host with IPv6) IPv6.
            assert plain.daemon.dht is not None
            assert len(_udp_sockets() - before) == 1 + (plain.daemon.config.dht_host6 is not None)
        finally:
            await plain.stop()
    finally:
        await tor.stop()


# ------------------------------------------------------------------ Tor mode, in namespaces

PROXY_IP, PEER_IP, TOR_IP = f"{INTERNET}.30", f"{INTERNET}.40", f"{INTERNET}.50"
DANTE_PORT = 1080

#: Counters on the Tor-mode node's own output: packets to the proxy's port, and every
#: other packet that is not loopback. The route to the whole "internet" stays, so a leak
#: (a DHT packet, a direct dial to the peer) would really leave and be counted here,
#: instead of failing before the output hook for want of a route.
LEAK_COUNTERS = f"""table inet leak {{
  counter to_proxy {{}}
  counter other {{}}
  chain out {{ type filter hook output priority filter; policy accept;
    oif "lo" accept
    ip daddr {PROXY_IP} tcp dport {DANTE_PORT} counter name to_proxy accept
    counter name other drop
  }}
}}
"""


def _packets(lab: Lab, ns: str, counter: str) -> int:
    out = lab.run(ns, "nft", "list", "counter", "inet", "leak", counter)
    return int(out.split("packets")[1].split()[0])


@pytest.fixture
def proxy_lab() -> Iterator[Lab]:
    """The internet bridge with three hosts on it: the proxy, a peer, the Tor-mode node."""
    if (why := unavailable()) is not None:
        skip_unless_ci(why)
    lab = Lab(tag=f"{PREFIX}{os.getpid()}-px")
    try:
        lab.add_internet()
        lab.add_public("proxy", [PROXY_IP])
        lab.add_public("peer", [PEER_IP])
        tor = lab.add_public("tor", [TOR_IP])
        # No IPv6 on the node: the kernel's own router solicitations are not ours to count.
        lab.run(tor, "sysctl", "-qw", "net.ipv6.conf.all.disable_ipv6=1")
        lab.run(tor, "nft", "-f", "-", stdin=LEAK_COUNTERS)
        yield lab
    finally:
        lab.close()


@pytest.mark.slow
async def test_in_tor_mode_nothing_leaves_the_node_but_to_the_proxy(
    proxy_lab: Lab, tmp_path: Path
) -> None:
    lab = proxy_lab
    tor_ns, peer_ns = lab.ns("tor"), lab.ns("peer")
    prefix = ("ip", "netns", "exec", lab.ns("proxy"))
    with run_dante(tmp_path, PROXY_IP, DANTE_PORT, prefix) as dante:
        with lab.inside(peer_ns):  # its sockets stay there: it listens, and only accepts
            peer = await start(tmp_path, "peer", host=PEER_IP)
        try:
            assert peer.daemon.peering is not None
            peer_addr = (PEER_IP, peer.daemon.peering.port)
            # The whole life of the Tor-mode node is inside its namespace: every socket it
            # ever makes, at start or when it dials, is made there.
            with lab.inside(tor_ns):
                node = await start(tmp_path, "tor", tor=True, proxy=dante.url)
                try:
                    befriend(node, peer)
                    await _chat_both_ways(node, peer, peer_addr)
                finally:
                    await node.stop()
        finally:
            await peer.stop()
        assert dante.connects_to(peer_addr) == 1, dante.log.read_text()
    sent_to_proxy, other = _packets(lab, tor_ns, "to_proxy"), _packets(lab, tor_ns, "other")
    print(f"Tor-mode node: {sent_to_proxy} packets to the proxy, {other} anywhere else")
    assert sent_to_proxy > 0 and other == 0
    # Control: the counter does see a packet that leaves the node elsewhere (a DHT-like
    # datagram to the peer), so the zero above is a measurement, not a blind spot.
    with (
        lab.inside(tor_ns),
        socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp,
        contextlib.suppress(PermissionError),  # counted, then dropped: EPERM
    ):
        udp.sendto(b"d1:ad2:id20:xxxxxxxxxxxxxxxxxxxxe1:q4:ping1:t2:aa1:y1:qe", (PEER_IP, 6881))
    assert _packets(lab, tor_ns, "other") == 1


async def test_a_tor_mode_node_links_to_a_channel_member_through_dante(
    tmp_path: Path, dante: Dante
) -> None:
    tor = await start(tmp_path, "tor", tor=True, proxy=dante.url)
    plain = await start(tmp_path, "plain")
    try:
        assert tor.daemon.channels is not None and plain.daemon.channels is not None
        created = await plain.daemon.channels.create("friends", False, [])
        await tor.daemon.channels.join(created["uri"])
        with pytest.raises(ApiError, match="IP:PORT"):
            await tor.daemon.channels.dial("friends", "localhost:1")
        member = ("127.0.0.1", created["port"])
        await tor.daemon.channels.dial("friends", f"{member[0]}:{member[1]}")

        async def links(node: RunningNode) -> int:
            assert node.daemon.channels is not None
            return int((await node.daemon.channels.get("friends"))["links"])

        deadline = time.monotonic() + 10
        while (await links(tor), await links(plain)) != (1, 1):
            assert time.monotonic() < deadline, "no channel link through the proxy"
            await asyncio.sleep(0.05)
        await tor.daemon.channels.post("friends", "from Tor mode", [])
        await plain.daemon.channels.post("friends", "from plain", [])
        both = ["from Tor mode", "from plain"]

        async def texts(node: RunningNode) -> list[str]:
            assert node.daemon.channels is not None
            return sorted(m["text"] for m in await node.daemon.channels.history("friends", 10))

        deadline = time.monotonic() + 10
        while (await texts(tor), await texts(plain)) != (both, both):
            assert time.monotonic() < deadline, "channel posts did not cross"
            await asyncio.sleep(0.05)
        assert dante.connects_to(member) == 1
    finally:
        await plain.stop()
        await tor.stop()


def test_dht_commands_refuse_in_tor_mode(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    monkeypatch.setenv("BTCHAT_TOR", "1")
    monkeypatch.setenv("BTCHAT_CONFIG", str(tmp_path / "none.toml"))
    (tmp_path / "none.toml").write_text("")
    before = _udp_sockets()
    for argv in (["dht", "ping", "127.0.0.1:9"], ["dht", "get-peers", "00" * 20]):
        assert cli_main(argv) == 1
        assert "Tor mode is on" in capsys.readouterr().err
    assert not _udp_sockets() - before


# ------------------------------------------------------------------ onion addresses

ONION = "a" * 52 + "mbqd.onion"  # 56 base32 characters: the shape of a v3 address


class OnionSocks:
    """A SOCKS5 server (RFC 1928, no authentication) standing in for Tor: it reaches the
    onion names it knows, as Tor reaches onion services, and records what it was asked."""

    def __init__(self, services: dict[str, tuple[str, int]]) -> None:
        self.services = services
        self.asked: list[tuple[int, str, int]] = []  # (ATYP, host, port)
        self.server: asyncio.Server | None = None

    async def start(self) -> ProxyUrl:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        return parse_proxy(f"socks5://127.0.0.1:{self.server.sockets[0].getsockname()[1]}")

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        _, n = await reader.readexactly(2)
        await reader.readexactly(n)
        writer.write(b"\x05\x00")  # no authentication
        _, cmd, _, atyp = await reader.readexactly(4)
        if atyp == 3:  # a domain name, sent for the proxy to resolve
            host = (await reader.readexactly((await reader.readexactly(1))[0])).decode()
        else:
            host = socket.inet_ntoa(await reader.readexactly(4))
        port = int.from_bytes(await reader.readexactly(2), "big")
        self.asked.append((atyp, host, port))
        target = self.services.get(host)
        if cmd != 1 or target is None:
            writer.write(b"\x05\x04\x00\x01" + bytes(6))  # host unreachable
            writer.close()
            return
        up_reader, up_writer = await asyncio.open_connection(*target)
        writer.write(b"\x05\x00\x00\x01" + bytes(6))
        await asyncio.gather(_pipe(reader, up_writer), _pipe(up_reader, writer))

    async def close(self) -> None:
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()


async def _pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
    with contextlib.suppress(OSError):
        while data := await src.read(65536):
            dst.write(data)
            await dst.drain()
    dst.close()


async def test_an_onion_address_goes_to_the_proxy_unresolved(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    alice_id, bob_id = Identity.generate(), Identity.generate()
    bob = peer_node(bob_id, [alice_id.public_key])
    await bob.peering.start()
    tor = OnionSocks({ONION: bob.addr})  # as a torrc HiddenServicePort would forward
    dialer = ProxyDialer(await tor.start(), timeout=5.0)

    async def no_dns(host: object, *args: object, **kwargs: object) -> object:
        if host != "127.0.0.1":
            raise AssertionError(f"a DNS lookup of {host!r}")
        return await real(host, *args, **kwargs)

    loop = asyncio.get_running_loop()
    real = loop.getaddrinfo
    monkeypatch.setattr(loop, "getaddrinfo", no_dns)
    alice = peer_node(alice_id, [bob_id.public_key], dialer=dialer)
    await alice.peering.start()
    try:
        assert await alice.peering.dial(bob_id.public_key, bob.cert, (ONION.upper(), 40000))
        assert tor.asked == [(3, ONION, 40000)]  # ATYP 3: the name itself, for Tor
        assert alice.peering.send(bob_id.public_key, b"via an onion")
        await until(lambda: bool(bob.data), 5.0, "the payload at the onion service")
        with pytest.raises(ProxyError, match="refused"):  # one the proxy cannot reach
            await dialer.dial(("b" * 52 + "mbqd.onion", 1))
        with pytest.raises(ProxyError, match=r"host name 'www\.onion\.example'"):
            await dialer.dial(("www.onion.example", 1))
    finally:
        await alice.peering.stop()
        await bob.peering.stop()
        await tor.close()


def test_an_onion_address_is_dialled_by_hand_only_through_a_proxy() -> None:
    assert parse_ip_port(f"{ONION}:40000", proxied=True) == (ONION, 40000)
    assert parse_ip_port("[::1]:5", proxied=False) == ("::1", 5)
    with pytest.raises(ValueError, match="only through Tor"):
        parse_ip_port(f"{ONION}:40000", proxied=False)
    with pytest.raises(ValueError, match="IP:PORT"):
        parse_ip_port("example.com:80", proxied=True)

"""Port mapping against a real gateway: miniupnpd on a lab router (tests/natlab),
speaking UPnP-IGD, PCP, or NAT-PMP only (PCP refused by the router).

The homes sit behind a symmetric NAT that drops unsolicited WAN input, so a peer on the
public segment cannot reach the home's node until the node maps its port on the gateway;
then a KRPC ping (UDP) and a TCP connection to the mapped port get through, and after a
clean exit they do not any more. A PCP gateway that restarts gets the mappings again.
A home without a gateway finds none in bounded time.
Needs root, iproute2, nftables and miniupnpd (``scripts/setup``); skips without them,
fails in CI.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from harness import skip_unless_ci, until
from natlab.lab import (
    HOME_IP,
    NATPMP_WAN,
    PCP_WAN,
    PUBLIC_ADDRS,
    PUBLIC_HOST,
    UPNP_WAN,
    Home,
    Lab,
    NatType,
    build_lab,
    kill_all,
    miniupnpd_unavailable,
    unavailable,
)

from btchat.cli.chat import network_text
from btchat.dht.node import NodeConfig
from btchat.net.dht_service import DhtError, DhtService
from btchat.net.portmap import Phase, PortMapper
from btchat.net.upnp import UpnpPortMapper
from btchat.node.boot import start_node
from btchat.node.config import Settings
from btchat.sandbox import SANDBOX_CONFIG, start_swarm

pytestmark = pytest.mark.slow

PEER_CONFIG = NodeConfig(short_timeout=0.5, query_timeout=1.5, read_only=True)
#: How long an unanswered TCP connect is given before it counts as "does not get in".
CONNECT_WAIT = 1.5


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    with contextlib.ExitStack() as stack:
        try:
            if (why := unavailable() or miniupnpd_unavailable()) is not None:
                raise RuntimeError(why)
            built = stack.enter_context(build_lab([NatType.SYMMETRIC]))
            home = built.add_home(NatType.SYMMETRIC, UPNP_WAN, role="u")
            built.start_miniupnpd(home, tmp_path_factory.mktemp("miniupnpd"))
            pmp = built.add_home(NatType.SYMMETRIC, NATPMP_WAN, role="p")
            built.start_miniupnpd(pmp, tmp_path_factory.mktemp("natpmp"), speaks="natpmp")
            pcp = built.add_home(NatType.SYMMETRIC, PCP_WAN, role="c")
            built.start_miniupnpd(pcp, tmp_path_factory.mktemp("pcp"), speaks="pcp")
        except Exception as exc:
            skip_unless_ci(f"the UPnP lab cannot be built: {exc}")
        yield built


def in_home(lab: Lab, home: Home, scenario: object) -> None:
    """Run ``scenario`` (a coroutine) on a loop whose every socket is made in the home,
    as a node's would be; peers make theirs in the public namespace (``lab.inside``)."""
    with lab.inside(home.ns):
        asyncio.run(scenario)  # type: ignore[arg-type]


async def _pinged(lab: Lab, addr: tuple[str, int]) -> bytes | None:
    """A KRPC ping from a fresh public socket (no conntrack entry to ride on)."""
    with lab.inside(lab.ns("host")):
        peer = await DhtService.start(host=PUBLIC_HOST, config=PEER_CONFIG)
    try:
        return await peer.ping(addr)
    except DhtError:
        return None
    finally:
        peer.close()


async def _tcp_hello(lab: Lab, addr: tuple[str, int], *, read: bool = True) -> bytes | None:
    """What a fresh TCP connection from the public host to ``addr`` reads (``read``
    False: b"" once connected), or None when it does not get through."""
    with lab.inside(lab.ns("host")):
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setblocking(False)
    try:
        async with asyncio.timeout(CONNECT_WAIT):
            await asyncio.get_running_loop().sock_connect(sock, addr)
            reader, writer = await asyncio.open_connection(sock=sock)
            line = await reader.readline() if read else b""
            writer.close()
            return line
    except (TimeoutError, OSError):
        sock.close()
        return None


def test_a_peer_reaches_the_node_through_the_mapping_and_not_after_it_is_removed(
    lab: Lab,
) -> None:
    home = lab.extra["u"]

    async def scenario() -> None:
        node = await DhtService.start(host=HOME_IP, config=SANDBOX_CONFIG, rng=random.Random(3))
        port = node.addr[1]

        async def hello(_r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
            w.write(b"hello\n")
            await w.drain()
            w.close()

        server = await asyncio.start_server(hello, HOME_IP, port)  # TCP on the UDP's port
        mapper = UpnpPortMapper(
            PortMapper({"UDP": port, "TCP": port}),
            host=HOME_IP,
            on_change=lambda state: setattr(node, "port_mapping", state),
        )
        target = (UPNP_WAN, port)
        try:
            # Before: the router drops what nobody inside asked for.
            assert await _pinged(lab, target) is None
            assert await _tcp_hello(lab, target) is None
            assert node.external_addr("TCP") is None

            task = asyncio.create_task(mapper.run())
            started = time.monotonic()
            await until(lambda: mapper.state.phase is Phase.MAPPED, 15, "the mapping")
            print(f"mapped in {time.monotonic() - started:.2f} s: {mapper.state}")
            assert mapper.state.error is None
            assert node.external_addr("UDP") == node.external_addr("TCP") == target
            assert f"dport {port}" in lab.upnp_rules(home)

            # Through the mapping: a stranger's ping is answered, a TCP connect accepted.
            assert await _pinged(lab, target) == node.node_id
            assert await _tcp_hello(lab, target) == b"hello\n"

            # Clean exit: the gateway forgets the mapping, the door closes again.
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            await mapper.close()
            assert mapper.state.phase is Phase.CLOSED
            assert "dnat" not in lab.upnp_rules(home)
            assert await _pinged(lab, target) is None
            assert await _tcp_hello(lab, target) is None
        finally:
            await mapper.close()
            server.close()
            node.close()

    in_home(lab, home, scenario())


def test_a_home_without_a_gateway_finds_none_in_bounded_time(lab: Lab) -> None:
    home = lab.homes[NatType.SYMMETRIC]  # the same NAT, no miniupnpd

    async def scenario() -> None:
        mapper = UpnpPortMapper(PortMapper({"UDP": 6881}, discovery_timeout=1.0), host=HOME_IP)
        task = asyncio.create_task(mapper.run())
        started = time.monotonic()
        try:
            await until(lambda: mapper.state.phase is Phase.NO_GATEWAY, 5, "no gateway")
            took = time.monotonic() - started
            print(f"no gateway after {took:.2f} s: {mapper.state.error}")
            assert took < 3.0 and mapper.state.mappings == {}
            assert not task.done()  # still running: it will look again later
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            await mapper.close()

    in_home(lab, home, scenario())


@pytest.mark.parametrize(("role", "how"), [("u", "UPnP"), ("c", "PCP")])
def test_the_daemon_maps_its_ports_and_status_shows_the_external_address(
    lab: Lab, tmp_path: Path, role: str, how: str
) -> None:
    home = lab.extra[role]
    wan = home.wan_ip
    settings = Settings(
        data_dir=tmp_path,
        bootstrap=[],
        host=HOME_IP,
        port=0,
        dht_port=0,
        upnp=True,
        no_passphrase=True,
    )

    async def scenario() -> None:
        node = await start_node(settings, notice=lambda _: None)
        try:

            async def mapped() -> dict[str, object]:
                return await node.daemon.status()

            status: dict = {}
            deadline = time.monotonic() + 15
            while time.monotonic() < deadline:
                status = await mapped()
                if (status.get("port_mapping") or {}).get("state") == "mapped":
                    break
                await asyncio.sleep(0.1)
            pm = status["port_mapping"]
            assert pm["state"] == "mapped", pm
            dht_port = int(status["dht"]["addr"].rpartition(":")[2])
            assert status["dht"]["external_addr"] == f"{wan}:{dht_port}"
            assert status["external_tcp"] == f"{wan}:{status['listen_port']}"
            assert set(pm["mappings"]) == {"udp", "tcp"}
            text = network_text(status)
            print(text)
            assert f"external address {wan}:{dht_port}" in text
            assert f"port mapping ({how}): mapped" in text
            # The DHT node and the session port are reachable from the internet.
            assert await _pinged(lab, (wan, dht_port)) is not None
            tcp = (wan, int(status["listen_port"]))
            assert await _tcp_hello(lab, tcp, read=False) == b""
        finally:
            await node.stop()
        assert "dnat" not in lab.upnp_rules(home)  # stopping removed the mappings

    in_home(lab, home, scenario())


async def _hello(_r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
    w.write(b"hello\n")
    await w.drain()
    w.close()


async def _maps_then_closes(lab: Lab, home: Home, how: str) -> UpnpPortMapper:
    """A node's UDP and TCP port mapped on ``home``'s gateway speaking ``how`` ("pcp",
    "natpmp"): a stranger's ping and TCP connect get in through the mapping, and after
    a clean exit they do not. The mapper is returned, closed, for more checks."""
    node = await DhtService.start(host=HOME_IP, config=SANDBOX_CONFIG, rng=random.Random(4))
    port = node.addr[1]
    server = await asyncio.start_server(_hello, HOME_IP, port)
    mapper = UpnpPortMapper(
        PortMapper({"UDP": port, "TCP": port}, discovery_timeout=1.0),
        host=HOME_IP,
        on_change=lambda state: setattr(node, "port_mapping", state),
    )
    try:
        assert await _pinged(lab, (home.wan_ip, port)) is None
        task = asyncio.create_task(mapper.run())
        started = time.monotonic()
        await until(lambda: mapper.state.phase is Phase.MAPPED, 20, f"the {how} mapping")
        print(f"mapped over {how} in {time.monotonic() - started:.2f} s: {mapper.state}")
        state = mapper.state
        assert state.gateway == f"{how}://192.168.1.1" and state.external_ip == home.wan_ip
        assert set(state.mappings) == {"UDP", "TCP"} and state.error is None
        udp, tcp = node.external_addr("UDP"), node.external_addr("TCP")
        assert udp is not None and tcp is not None and udp[0] == tcp[0] == home.wan_ip
        assert await _pinged(lab, udp) == node.node_id
        assert await _tcp_hello(lab, tcp) == b"hello\n"
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await mapper.close()  # lifetime 0: the gateway drops them
        assert "dnat" not in lab.upnp_rules(home)
        assert await _pinged(lab, udp) is None
        assert await _tcp_hello(lab, tcp) is None
    finally:
        await mapper.close()
        server.close()
        node.close()
    return mapper


def test_a_gateway_that_speaks_only_nat_pmp_maps_the_ports_too(lab: Lab) -> None:
    home = lab.extra["p"]
    in_home(lab, home, _maps_then_closes(lab, home, "natpmp"))


def test_a_gateway_that_speaks_pcp_maps_the_ports_over_pcp(lab: Lab) -> None:
    """miniupnpd with UPnP off speaks PCP and NAT-PMP: PCP is asked first and kept."""
    home = lab.extra["c"]

    async def scenario() -> None:
        mapper = await _maps_then_closes(lab, home, "pcp")
        assert mapper.dropped == 0

    in_home(lab, home, scenario())


def test_a_pcp_gateway_that_restarts_gets_the_mappings_again(lab: Lab) -> None:
    """miniupnpd restarted with its rules gone, as a rebooted router: its unsolicited
    ANNOUNCE (epoch back at 0) makes the node map again, and a stranger gets in again."""
    home = lab.extra["c"]
    (proc,) = [p for p in lab.processes if "pcp" in " ".join(map(str, p.args))]

    async def scenario() -> None:
        node = await DhtService.start(host=HOME_IP, config=SANDBOX_CONFIG, rng=random.Random(5))
        mapper = UpnpPortMapper(
            PortMapper({"UDP": node.addr[1]}, discovery_timeout=1.0),
            host=HOME_IP,
            on_change=lambda state: setattr(node, "port_mapping", state),
        )
        task = asyncio.create_task(mapper.run())
        try:
            await until(lambda: mapper.state.phase is Phase.MAPPED, 20, "the PCP mapping")
            target = node.external_addr("UDP")
            assert target is not None and await _pinged(lab, target) == node.node_id
            await asyncio.sleep(2.5)  # an epoch the restart visibly resets
            proc.terminate()
            await asyncio.to_thread(proc.wait, 10)
            lab.run(home.router, "nft", "delete", "table", "inet", "miniupnpd")  # rebooted
            assert await _pinged(lab, target) is None
            started = time.monotonic()
            lab.processes.remove(proc)
            lab.start_miniupnpd(home, Path(str(proc.args[-1])).parent, speaks="pcp")
            await until(lambda: "dnat" in lab.upnp_rules(home), 15, "mapped again")
            print(f"mapped again {time.monotonic() - started:.2f} s after the restart")
            assert await _pinged(lab, target) == node.node_id
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            await mapper.close()
            node.close()

    in_home(lab, home, scenario())


async def test_a_peer_reaches_a_mapped_session_port_only_through_the_candidate_record(
    lab: Lab, tmp_path: Path
) -> None:
    """Alice behind the UPnP gateway (a symmetric NAT that drops unasked input) maps her
    ports; her session port is not her DHT port and she has no QUIC (a dead proxy: her
    own dials fail). What her announce stores is where her DHT socket's packets come
    from, which takes no TCP: only the mapped TCP candidate in her record reaches her.
    The control: with records off, Bob on the public host finds her and never gets in."""
    from test_messenger_e2e import Person, base_env, cli, until_true

    home = lab.extra["u"]
    with lab.inside(lab.ns("pub")):
        swarm = await start_swarm(16, seed=9, hosts=PUBLIC_ADDRS[:2])
    env = base_env(tmp_path)
    bootstrap = "{}:{}".format(*swarm.services[0].addr)
    wraps = {
        "alice": ["ip", "netns", "exec", home.ns],
        "bob": ["ip", "netns", "exec", lab.ns("host")],
    }
    people = {
        n: await asyncio.to_thread(Person, n, tmp_path, dict(env), bootstrap, w)
        for n, w in wraps.items()
    }
    alice, bob = people["alice"], people["bob"]
    alice_args = ["--host", HOME_IP, "--port", "40111", "--proxy", "socks5://127.0.0.1:9"]
    common = ["--no-lan", "--no-ipv6"]

    async def rendezvous(p: Person) -> dict[str, int]:
        return (await cli(p, "status"))["rendezvous"]

    async def bob_reached() -> list[str] | None:
        for c in (await cli(bob, "contacts"))["contacts"]:
            if c["name"] == "alice" and c["online"]:
                return list(c["path"])
        return None

    try:
        alice.env["BTCHAT_CANDIDATES"] = "0"
        await asyncio.to_thread(alice.up, *alice_args, *common)
        await asyncio.to_thread(bob.up, "--host", PUBLIC_HOST, *common)
        await cli(alice, "contact", "add", bob.id, "bob")
        await cli(bob, "contact", "add", alice.id, "alice")

        async def found_twice() -> bool:
            return (await rendezvous(bob))["found"] >= 2

        await until_true(found_twice, 120, "bob to find alice's announce")
        assert await bob_reached() is None
        await asyncio.to_thread(alice.down)

        del alice.env["BTCHAT_CANDIDATES"]
        await asyncio.to_thread(alice.up, *alice_args, *common)

        async def mapped() -> bool:
            return (await cli(alice, "status")).get("external_tcp") is not None

        await until_true(mapped, 30, "alice's TCP mapping")
        external = (await cli(alice, "status"))["external_tcp"]
        assert external.startswith(f"{home.wan_ip}:")

        async def reached() -> bool:
            return await bob_reached() == ["tcp"]

        await until_true(reached, 120, "bob to reach alice through her mapped port")
        seen = await rendezvous(bob)
        assert seen["records_read"] >= 1 and seen["records_dropped"] == 0
    finally:
        await kill_all(p.proc for p in people.values())
        swarm.close()

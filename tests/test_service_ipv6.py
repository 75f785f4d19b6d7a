"""The DHT shell dual-stack on loopback (BEP 32): 127.0.0.1 and ::1, real sockets."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest

from btchat.net.dht_service import STATE_FILE, DhtService, has_ipv6, resolve_addrs
from btchat.node.boot import daemon_config
from btchat.node.config import ConfigError, Settings, resolve
from btchat.sandbox import SANDBOX_CONFIG, start_swarm

pytestmark = pytest.mark.skipif(not has_ipv6(), reason="this host has no IPv6 loopback")


async def test_dual_stack_service_binds_both_families_v6only() -> None:
    service = await DhtService.start(host="127.0.0.1", host6="::1", config=SANDBOX_CONFIG)
    try:
        assert service.node.families == (4, 6)
        assert service.addr[0] == "127.0.0.1"
        assert service.addr6 is not None and service.addr6[0] == "::1"
        assert service.addr6[1] == service.addr[1]  # same port number when it is free
        assert service.transport6 is not None
        sock = service.transport6.get_extra_info("socket")
        assert sock.getsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY) == 1
    finally:
        service.close()


async def test_ipv4_only_service_has_no_ipv6_socket_and_drops_ipv6_sends() -> None:
    service = await DhtService.start(host="127.0.0.1", config=SANDBOX_CONFIG)
    try:
        assert service.node.families == (4,) and service.addr6 is None
        service.send_datagram(b"x", ("::1", 9))
        assert service.node.stats["tx_no_socket_for_family"] == 1
    finally:
        service.close()


async def test_mixed_loopback_swarm_finds_peers_of_each_family(tmp_path: Path) -> None:
    swarm = await start_swarm(16, seed=3, hosts6=("::1",))
    v6_only = await DhtService.start(
        host6="::1", ipv4=False, config=SANDBOX_CONFIG, state_dir=tmp_path
    )
    v4_only = await DhtService.start(host="127.0.0.1", config=SANDBOX_CONFIG)
    try:
        assert v6_only.node.families == (6,) and v6_only.addr[0] == "::1"
        await v6_only.bootstrap(await resolve_addrs(swarm.bootstrap_addrs, families=(6,)))
        await v4_only.bootstrap([swarm.bootstrap_addr])
        ih = os.urandom(20)
        dual = swarm.services[7]
        done = await dual.announce(ih, 0, implied_port=True)
        assert done.stored_at >= 2 * 4  # both DHTs took it
        assert set((await v6_only.get_peers(ih)).peers) == {dual.addr6}
        assert set((await v4_only.get_peers(ih)).peers) == {dual.addr}
        assert set((await swarm.services[3].get_peers(ih)).peers) == {dual.addr, dual.addr6}
        # The IPv6 table is saved under its own key; the IPv4 one is absent.
        v6_only.save_state()
        saved = (tmp_path / STATE_FILE).read_text()
        assert '"routing6"' in saved and '"routing"' not in saved
    finally:
        v6_only.close()
        v4_only.close()
        swarm.close()


# ------------------------------------------------------------------ settings


def _settings(tmp: Path, text: str = "", **kw: object) -> Settings:
    (tmp / "c.toml").write_text(text)
    return resolve({"data_dir": tmp, "bootstrap": [], **kw}, config_file=tmp / "c.toml", environ={})


@pytest.mark.parametrize(
    ("flags", "text", "host6", "ipv4"),
    [
        ({"host": "127.0.0.1"}, "", "::1", True),  # loopback stays loopback
        ({"host": "0.0.0.0"}, "", "::", True),
        ({}, '[dht]\nbind6 = "::1"\n', "::1", True),
        ({"bind6": "[::1]"}, "", "::1", True),
        ({}, '[dht]\nbind6 = "off"\n', None, True),
        ({}, "[net]\nipv6 = false\n", None, True),
        ({"host": "127.0.0.1"}, "[net]\nipv4 = false\n", "::1", False),
    ],
)
def test_bind6_defaults_and_switches(
    tmp_path: Path, flags: dict[str, object], text: str, host6: str | None, ipv4: bool
) -> None:
    config = daemon_config(_settings(tmp_path, text, **flags))
    assert (config.dht_host6, config.dht_ipv4) == (host6, ipv4)


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ('[dht]\nbind6 = "127.0.0.1"\n', "not an IPv6 address"),
        ('[net]\nipv4 = false\n[dht]\nbind6 = "off"\n', "leaves no DHT"),
    ],
)
def test_bad_ipv6_settings_say_why(tmp_path: Path, text: str, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        daemon_config(_settings(tmp_path, text))

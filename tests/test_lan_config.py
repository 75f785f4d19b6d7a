"""LAN discovery of contacts: on by default, off by flag, environment or file, never in
Tor mode or from a loopback host; and how the certificates heard are kept."""

from __future__ import annotations

from pathlib import Path

import pytest

from btchat.channels.service import ChannelConfig
from btchat.cli.main import build_parser
from btchat.discovery.lan_service import LanConfig, _save_certs
from btchat.discovery.rendezvous import MAX_DEVICES, FixedDirectory
from btchat.identity.keys import DeviceKey, Identity
from btchat.net.proxy import parse_proxy
from btchat.node.boot import daemon_config, lan_config
from btchat.node.config import Settings, resolve
from btchat.node.daemon import DaemonConfig
from btchat.node.peering import PeeringConfig


def test_on_unless_a_flag_the_environment_or_the_file_says_off(tmp_path: Path) -> None:
    empty, off = tmp_path / "empty.toml", tmp_path / "off.toml"
    empty.write_text("")
    off.write_text("[net]\nlan = false\n")
    assert resolve({}, config_file=empty, environ={}).lan is True
    assert resolve({}, config_file=off, environ={}).lan is False
    assert resolve({}, config_file=off, environ={"BTCHAT_LAN": "on"}).lan is True
    assert resolve({}, config_file=empty, environ={"BTCHAT_LAN": "0"}).lan is False
    assert resolve({"lan": False}, config_file=empty, environ={"BTCHAT_LAN": "1"}).lan is False
    args = build_parser().parse_args(["up", "--no-lan"])
    assert args.lan is False
    assert build_parser().parse_args(["up"]).lan is None  # not given: env, file, default


def test_where_it_runs() -> None:
    lan = Settings(data_dir=Path("."), bootstrap=[], host="10.0.0.5")
    assert lan_config(lan) == LanConfig(interface="10.0.0.5")
    assert daemon_config(lan).peering.lan == LanConfig(interface="10.0.0.5")
    anywhere = Settings(data_dir=Path("."), bootstrap=[])
    assert lan_config(anywhere) == LanConfig(interface="0.0.0.0")  # every LAN interface
    off = Settings(data_dir=Path("."), bootstrap=[], host="10.0.0.5", lan=False)
    assert lan_config(off) is None
    loop = Settings(data_dir=Path("."), bootstrap=[], host="127.0.0.1")
    assert lan_config(loop) is None  # tests on one host: not unless asked
    asked = Settings(data_dir=Path("."), bootstrap=[], host="127.0.0.1", lsd_interface="127.0.0.1")
    assert lan_config(asked) == LanConfig(interface="127.0.0.1")
    tor = Settings(data_dir=Path("."), bootstrap=[], tor=True)
    assert lan_config(tor) is None and daemon_config(tor).peering.lan is None


def test_a_tor_daemon_with_lan_discovery_refuses_to_be_built() -> None:
    quiet = ChannelConfig(dht=False, trackers=False, lsd=False)
    proxy = parse_proxy("socks5://127.0.0.1:9050")
    with pytest.raises(ValueError, match="LAN"):
        DaemonConfig(
            data_dir=Path("."), tor=True, proxy=proxy, channels=quiet,
            peering=PeeringConfig(lan=LanConfig()),
        )  # fmt: skip
    DaemonConfig(data_dir=Path("."), tor=True, proxy=proxy, channels=quiet)


def test_certificates_heard_are_merged_per_device_newest_first() -> None:
    alice = Identity.generate()
    devices = [DeviceKey.generate() for _ in range(MAX_DEVICES + 1)]
    old = alice.certify(devices[0], 100)
    directory = FixedDirectory([alice.public_key], {alice.public_key: [old]})
    writes: list[object] = []
    save = directory.save_certs
    directory.save_certs = lambda c, certs: (writes.append(certs), save(c, certs))  # type: ignore[method-assign]
    _save_certs(directory, alice.public_key, [old])
    assert writes == []  # nothing new: nothing written
    newer = alice.certify(devices[0], 200)
    other = alice.certify(devices[1], 50)
    _save_certs(directory, alice.public_key, [other, newer])
    assert directory.certs_of(alice.public_key) == [other, newer]  # one per device, newest
    _save_certs(directory, alice.public_key, [old])  # an older one heard again: kept out
    assert directory.certs_of(alice.public_key) == [newer, other]
    many = [alice.certify(d, 300) for d in devices[2:]]
    _save_certs(directory, alice.public_key, many)
    kept = directory.certs_of(alice.public_key)
    assert len(kept) == MAX_DEVICES and kept[: len(many)] == many

"""BEP 42 node IDs against the BEP's test vectors, plus exemptions and IPv6."""

from __future__ import annotations

import ipaddress
import random

import pytest

from btchat.dht import bep42

# BEP 42 test vectors: IP, rand, example node ID.
VECTORS = [
    ("124.31.75.21", 1, "5fbfbff10c5d6a4ec8a88e4c6ab4c28b95eee401"),
    ("21.75.31.124", 86, "5a3ce9c14e7a08645677bbd1cfe7d8f956d53256"),
    ("65.23.51.170", 22, "a5d43220bc8f112a3d426c84764f8c2a1150e616"),
    ("84.124.73.14", 65, "1b0321dd1bb1fe518101ceef99462b947a01ff41"),
    ("43.213.53.83", 90, "e56f6cbf5b7c4be0237986d5243b87aa6d51305a"),
]


def test_crc32c_check_value() -> None:
    assert bep42.crc32c(b"123456789") == 0xE3069283
    assert bep42.crc32c(b"") == 0
    # The ``crc`` argument continues a running checksum.
    assert bep42.crc32c(b"56789", bep42.crc32c(b"1234")) == 0xE3069283


@pytest.mark.parametrize(("ip", "rand", "node_id_hex"), VECTORS)
def test_vectors(ip: str, rand: int, node_id_hex: str) -> None:
    node_id = bytes.fromhex(node_id_hex)
    crc = bep42.id_prefix(ip, rand & 0x7)
    # BEP 42: the first 21 bits of the ID match the first 21 bits of the CRC32C...
    assert int.from_bytes(node_id[:4], "big") >> 11 == crc >> 11
    # ...and the last byte is the random number used to generate it.
    assert node_id[19] == rand
    assert bep42.is_compliant(node_id, ip)


@pytest.mark.parametrize(("ip", "rand", "node_id_hex"), VECTORS)
def test_vector_id_wrong_for_other_ip(ip: str, rand: int, node_id_hex: str) -> None:
    assert not bep42.is_compliant(bytes.fromhex(node_id_hex), "8.8.8.8")


@pytest.mark.parametrize("ip", [v[0] for v in VECTORS] + ["1.2.3.4", "203.0.113.9"])
def test_generate_then_verify_ipv4(ip: str) -> None:
    rng = random.Random(ip)
    for _ in range(50):
        node_id = bep42.node_id_for_ip(ip, rng)
        assert len(node_id) == 20
        assert bep42.is_compliant(node_id, ip)


@pytest.mark.parametrize("ip", ["2001:db8::1", "2a00:1450:4001:82b::200e", "2606:4700::1111"])
def test_generate_then_verify_ipv6(ip: str) -> None:
    rng = random.Random(ip)
    for _ in range(50):
        node_id = bep42.node_id_for_ip(ip, rng)
        assert bep42.is_compliant(node_id, ip)
        assert not bep42.is_exempt(ip)


def test_ipv6_hashes_only_high_64_bits() -> None:
    rng = random.Random(1)
    node_id = bep42.node_id_for_ip("2001:db8:1:2::1", rng)
    assert bep42.is_compliant(node_id, "2001:db8:1:2:ffff:eeee:dddd:cccc")


def test_generated_ids_vary() -> None:
    rng = random.Random(7)
    ids = {bep42.node_id_for_ip("1.2.3.4", rng) for _ in range(100)}
    assert len(ids) == 100
    assert {i[19] & 7 for i in ids} == set(range(8))


def test_non_compliant_rejected() -> None:
    rng = random.Random(3)
    ip = "124.31.75.21"
    node_id = bytearray(bep42.node_id_for_ip(ip, rng))
    node_id[2] ^= 0x08  # flip the 21st bit
    assert not bep42.is_compliant(bytes(node_id), ip)
    node_id[2] ^= 0x08
    node_id[2] ^= 0x07  # the low 3 bits of byte 2 are free
    assert bep42.is_compliant(bytes(node_id), ip)
    node_id[19] ^= 0x01  # a different r changes the required prefix
    assert not bep42.is_compliant(bytes(node_id), ip)
    assert not bep42.is_compliant(bytes(20), ip)
    assert not bep42.is_compliant(bytes(node_id[:19]), ip)


def test_ipv4_mapped_address_judged_as_ipv4() -> None:
    ip, _, node_id_hex = VECTORS[0]
    assert bep42.is_compliant(bytes.fromhex(node_id_hex), "::ffff:" + ip)


@pytest.mark.parametrize(
    "ip",
    [
        "10.1.2.3",
        "172.16.0.1",
        "172.31.255.255",
        "192.168.1.1",
        "169.254.3.4",
        "127.0.0.1",
        "127.5.6.7",
        "::1",
        "fe80::1",
        "fd12:3456::1",
        "::ffff:192.168.0.1",
    ],
)
def test_exempt_addresses(ip: str) -> None:
    assert bep42.is_exempt(ip)
    assert bep42.is_compliant(bytes(20), ip)


@pytest.mark.parametrize("ip", ["172.32.0.1", "11.0.0.1", "8.8.8.8", "2001:db8::1", "100.64.0.1"])
def test_not_exempt(ip: str) -> None:
    assert not bep42.is_exempt(ip)
    # An all-zero ID is compliant only if the r=0 prefix happens to be zero.
    assert bep42.is_compliant(bytes(20), ip) == (bep42.id_prefix(ip, 0) >> 11 == 0)


def test_site_local_ipv6_exempt_and_global_not() -> None:
    assert bep42.is_exempt("fec0::1")
    assert not bep42.is_exempt("fe00::1")
    assert not bep42.is_exempt("::2")


def test_ipv4_exemption_matches_bep_blocks() -> None:
    blocks = [
        ipaddress.ip_network(n)
        for n in ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "169.254.0.0/16", "127.0.0.0/8")
    ]
    rng = random.Random(5)
    for _ in range(5000):
        addr = ipaddress.IPv4Address(rng.getrandbits(32))
        assert bep42.is_exempt(str(addr)) == any(addr in net for net in blocks)
    for net in blocks:
        assert bep42.is_exempt(str(net.network_address))
        assert bep42.is_exempt(str(net.broadcast_address))
        assert not bep42.is_exempt(str(net.broadcast_address + 1))


@pytest.mark.parametrize("ip", ["", "1.2.3", "not-an-ip", "1::2::3"])
def test_malformed_ip_raises(ip: str) -> None:
    with pytest.raises(ValueError):
        bep42.is_compliant(bytes(20), ip)

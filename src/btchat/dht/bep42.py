"""BEP 42 secure node IDs: tie a node ID's top 21 bits to its external IP via CRC32C.

This limits how many IDs near a chosen infohash an attacker can take with a given IP
block. We follow libtorrent byte for byte: IPv4 hashes the 4 masked octets (as the BEP's
test vectors do, despite its "8 bytes" sentence), IPv6 hashes the 8 high octets.
"""

from __future__ import annotations

import functools
import random
import socket

from btchat.dht.ids import ID_BYTES

__all__ = [
    "crc32c",
    "id_prefix",
    "is_compliant",
    "is_exempt",
    "is_loopback",
    "node_id_for_ip",
    "source_key",
]

#: CRC32C (Castagnoli) polynomial, bit-reflected.
_CASTAGNOLI = 0x82F63B78


def _make_table() -> tuple[int, ...]:
    table = []
    for byte in range(256):
        crc = byte
        for _ in range(8):
            crc = (crc >> 1) ^ _CASTAGNOLI if crc & 1 else crc >> 1
        table.append(crc)
    return tuple(table)


_TABLE = _make_table()


def crc32c(data: bytes, crc: int = 0) -> int:
    """CRC32C, the hash BEP 42 mandates; no stdlib version exists, so a table-driven one."""
    crc ^= 0xFFFFFFFF
    for byte in data:
        crc = _TABLE[(crc ^ byte) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF


#: BEP 42 masks: each octet keeps more bits the less significant it is, so IDs a single
#: operator controls grow with its number of distinct /8, /16, /24 blocks, not IPs.
_V4_MASK = 0x030F3FFF
_V6_MASK = 0x0103070F1F3F7FFF

_V4_MAPPED = bytes(10) + b"\xff\xff"
_V6_LOOPBACK = bytes(15) + b"\x01"


def _parse(ip: str) -> bytes:
    """Packed address: 4 bytes for IPv4, 16 for IPv6. Raises ValueError if malformed."""
    try:
        if ":" not in ip:
            return socket.inet_pton(socket.AF_INET, ip)
        packed = socket.inet_pton(socket.AF_INET6, ip)
    except OSError:
        raise ValueError(f"not an IP address: {ip!r}") from None
    # A dual-stack socket reports IPv4 peers as ::ffff:a.b.c.d; judge them as IPv4.
    return packed[12:] if packed[:12] == _V4_MAPPED else packed


def _is_exempt(packed: bytes) -> bool:
    a, b = packed[0], packed[1]
    if len(packed) == 4:
        # BEP 42 "Enforcement": 10/8, 172.16/12, 192.168/16, 169.254/16 and 127/8 are exempt.
        return (
            a == 10
            or (a == 172 and b & 0xF0 == 16)
            or (a == 192 and b == 168)
            or (a == 169 and b == 254)
            or a == 127
        )
    # The BEP lists IPv4 blocks only; for IPv6 we mirror libtorrent's is_local(): loopback
    # ::1, link-local fe80::/10, site-local fec0::/10 and unique-local fc00::/7.
    return packed == _V6_LOOPBACK or (a == 0xFE and b & 0x80 != 0) or a & 0xFE == 0xFC


def _prefix(packed: bytes, r: int) -> int:
    if len(packed) == 4:
        # BEP 42: crc32c((ip & 0x030f3fff) | (r << 29)). As in the BEP's test vectors and
        # libtorrent, the big-endian value is hashed as 4 bytes, not 8.
        value = (int.from_bytes(packed, "big") & _V4_MASK) | ((r & 0x7) << 29)
        return crc32c(value.to_bytes(4, "big"))
    # BEP 42: crc32c((ip & 0x0103070f1f3f7fff) | (r << 61)), ip = high 64 bits, 8 bytes.
    value = (int.from_bytes(packed[:8], "big") & _V6_MASK) | ((r & 0x7) << 61)
    return crc32c(value.to_bytes(8, "big"))


@functools.lru_cache(maxsize=4096)  # every query's rate limit asks it
def is_exempt(ip: str) -> bool:
    """True for local-network addresses, whose IDs BEP 42 does not restrict."""
    return _is_exempt(_parse(ip))


@functools.lru_cache(maxsize=4096)  # on every query's path (rate limit, routing table)
def source_key(ip: str) -> str:
    """Who is one source for per-IP limits: an IPv4 address, or a public IPv6 /64.

    An IPv6 subscriber gets at least a /64 and may use any address in it, so limits per
    /128 would be limits per nothing (libtorrent's restrict_*_ips also count /64s).
    """
    packed = _parse(ip)
    if len(packed) == 4 or _is_exempt(packed):
        return ip
    return socket.inet_ntop(socket.AF_INET6, packed[:8] + bytes(8)) + "/64"


@functools.lru_cache(maxsize=4096)
def is_loopback(ip: str) -> bool:
    """True for 127/8 and ::1: traffic only this machine can send."""
    packed = _parse(ip)
    return packed[0] == 127 if len(packed) == 4 else packed == _V6_LOOPBACK


def id_prefix(ip: str, r: int) -> int:
    """The CRC32C whose top 21 bits a node at ``ip`` using random ``r`` (0..7) must carry."""
    return _prefix(_parse(ip), r)


def node_id_for_ip(ip: str, rng: random.Random) -> bytes:
    """A BEP 42 compliant node ID for external address ``ip``.

    As in the BEP's example code and libtorrent, the last byte is a random byte whose low
    3 bits are ``r``; every bit not fixed by the CRC is random.
    """
    rand = rng.getrandbits(8)
    crc = _prefix(_parse(ip), rand & 0x7)
    node_id = bytearray(rng.randbytes(ID_BYTES))
    # BEP 42: the first 21 bits of the node ID MUST match the first 21 bits of the hash.
    node_id[0] = (crc >> 24) & 0xFF
    node_id[1] = (crc >> 16) & 0xFF
    node_id[2] = ((crc >> 8) & 0xF8) | (node_id[2] & 0x07)
    # BEP 42: the last byte carries the random number r used to generate the hash.
    node_id[19] = rand
    return bytes(node_id)


def is_compliant(node_id: bytes, ip: str) -> bool:
    """True if ``node_id`` is valid for ``ip`` under BEP 42, or ``ip`` is exempt.

    ``ip`` comes from our own socket layer, so a malformed string raises ``ValueError``.
    """
    if len(node_id) != ID_BYTES:
        return False
    packed = _parse(ip)
    # BEP 42 "Enforcement": any peer on a local network address is exempt.
    if _is_exempt(packed):
        return True
    # BEP 42: r is the low 3 bits of the ID's last byte, as libtorrent's verify_id reads it.
    crc = _prefix(packed, node_id[19] & 0x7)
    # BEP 42: the first (most significant) 21 bits of the node ID MUST match the hash.
    return (
        node_id[0] == (crc >> 24) & 0xFF
        and node_id[1] == (crc >> 16) & 0xFF
        and node_id[2] & 0xF8 == (crc >> 8) & 0xF8
    )

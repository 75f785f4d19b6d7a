"""Node IDs, XOR distance and the compact encodings of BEP 5 (IPv4) and BEP 32 (IPv6)."""

from __future__ import annotations

import functools
import socket
import struct
from dataclasses import dataclass
from typing import Any

__all__ = [
    "ID_BYTES",
    "NODE6_BYTES",
    "NODE_BYTES",
    "V4",
    "V6",
    "Addr",
    "NodeInfo",
    "decode_nodes",
    "decode_nodes6",
    "decode_peers",
    "decode_peers_counted",
    "distance",
    "encode_nodes",
    "encode_nodes6",
    "encode_peer",
    "family_of",
]

#: BEP 5: node IDs and infohashes are 160-bit numbers.
ID_BYTES = 20

Addr = tuple[str, int]

#: Address families, as BEP 32 names them in ``want`` ("n4", "n6").
V4 = 4
V6 = 6
#: BEP 5 compact node info: 20-byte ID, 4-byte IPv4 address, 2-byte port.
NODE_BYTES = 26
#: BEP 32 compact IPv6 node info: 20-byte ID, 16-byte IPv6 address, 2-byte port.
NODE6_BYTES = 38


def family_of(addr: Addr) -> int:
    """The family of a (host, port) from our own socket layer: IPv6 hosts contain ':'."""
    return V6 if ":" in addr[0] else V4


@dataclass(frozen=True, slots=True)
class NodeInfo:
    """A DHT contact: its ID and the UDP endpoint it answered from."""

    node_id: bytes
    addr: Addr


def distance(a: bytes, b: bytes) -> int:
    """BEP 5: distance(A, B) = |A xor B|, compared as an unsigned integer."""
    return int.from_bytes(a, "big") ^ int.from_bytes(b, "big")


@functools.lru_cache(maxsize=4096)  # the same contacts are encoded into many answers
def encode_peer(addr: Addr) -> bytes:
    """BEP 5 "Compact IP-address/port info": 4 (or 16, BEP 32) bytes IP + 2 bytes port."""
    host, port = addr
    if ":" in host:
        return socket.inet_pton(socket.AF_INET6, host) + struct.pack("!H", port)
    return socket.inet_aton(host) + struct.pack("!H", port)


def decode_peers(values: list[bytes]) -> list[Addr]:
    """Decode a get_peers ``values`` list; entries of the wrong length are skipped."""
    out: list[Addr] = []
    for v in values:
        if isinstance(v, bytes) and len(v) == 6:
            out.append((socket.inet_ntoa(v[:4]), struct.unpack("!H", v[4:])[0]))
        elif isinstance(v, bytes) and len(v) == 18:
            out.append((socket.inet_ntop(socket.AF_INET6, v[:16]), struct.unpack("!H", v[16:])[0]))
    return out


def decode_peers_counted(values: list[Any]) -> tuple[list[Addr], int]:
    """Decode ``values`` as the node uses them: also count the entries dropped.

    BEP 32: a reader must accept a hybrid list of 6-byte IPv4 and 18-byte IPv6 entries.
    Anything else, port 0, and an IPv6 entry that is really IPv4 (``::ffff:a.b.c.d``) or
    unspecified is dropped.
    """
    out: list[Addr] = []
    dropped = 0
    for v in values:
        if isinstance(v, bytes) and len(v) == 6:
            port = struct.unpack("!H", v[4:])[0]
            if port:
                out.append((socket.inet_ntoa(v[:4]), port))
                continue
        elif isinstance(v, bytes) and len(v) == 18:
            port = struct.unpack("!H", v[16:])[0]
            if port and _usable_v6(v[:16]):
                out.append((socket.inet_ntop(socket.AF_INET6, v[:16]), port))
                continue
        dropped += 1
    return out, dropped


def _usable_v6(packed: bytes) -> bool:
    """Not ``::``, not an IPv4-mapped address (those belong in the IPv4 DHT, BEP 32)."""
    return packed != bytes(16) and packed[:12] != bytes(10) + b"\xff\xff"


def encode_nodes(nodes: list[NodeInfo]) -> bytes:
    """BEP 5 "Compact node info": 20-byte ID + compact IPv4 address, concatenated."""
    return b"".join(n.node_id + encode_peer(n.addr) for n in nodes if ":" not in n.addr[0])


def decode_nodes(blob: bytes) -> list[NodeInfo]:
    """Decode a ``nodes`` string (26 bytes per node). Port 0 entries are skipped."""
    out: list[NodeInfo] = []
    usable = len(blob) - len(blob) % NODE_BYTES
    for i in range(0, usable, NODE_BYTES):
        port = (blob[i + 24] << 8) | blob[i + 25]
        if port == 0:
            continue
        out.append(NodeInfo(blob[i : i + 20], (socket.inet_ntoa(blob[i + 20 : i + 24]), port)))
    return out


def encode_nodes6(nodes: list[NodeInfo]) -> bytes:
    """BEP 32 ``nodes6``: 20-byte ID + 16-byte IPv6 address + 2-byte port, concatenated."""
    return b"".join(n.node_id + encode_peer(n.addr) for n in nodes if ":" in n.addr[0])


def decode_nodes6(blob: bytes) -> tuple[list[NodeInfo], int]:
    """Decode a BEP 32 ``nodes6`` string; also return how many entries were dropped.

    A trailing partial entry, port 0, ``::`` and IPv4-mapped addresses count as dropped.
    """
    out: list[NodeInfo] = []
    dropped = 1 if len(blob) % NODE6_BYTES else 0
    usable = len(blob) - len(blob) % NODE6_BYTES
    for i in range(0, usable, NODE6_BYTES):
        packed = blob[i + 20 : i + 36]
        port = (blob[i + 36] << 8) | blob[i + 37]
        if port == 0 or not _usable_v6(packed):
            dropped += 1
            continue
        out.append(NodeInfo(blob[i : i + 20], (socket.inet_ntop(socket.AF_INET6, packed), port)))
    return out, dropped

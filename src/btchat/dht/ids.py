"""Node IDs, XOR distance and the compact encodings of BEP 5 (IPv4) and BEP 32 (IPv6)."""

from __future__ import annotations

import functools
import socket
import struct
from dataclasses import dataclass

__all__ = [
    "ID_BYTES",
    "Addr",
    "NodeInfo",
    "decode_nodes",
    "decode_peers",
    "distance",
    "encode_nodes",
    "encode_peer",
]

#: BEP 5: node IDs and infohashes are 160-bit numbers.
ID_BYTES = 20

Addr = tuple[str, int]


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


def encode_nodes(nodes: list[NodeInfo]) -> bytes:
    """BEP 5 "Compact node info": 20-byte ID + compact IPv4 address, concatenated."""
    return b"".join(n.node_id + encode_peer(n.addr) for n in nodes if ":" not in n.addr[0])


def decode_nodes(blob: bytes) -> list[NodeInfo]:
    """Decode a ``nodes`` string (26 bytes per node). Port 0 entries are skipped."""
    out: list[NodeInfo] = []
    usable = len(blob) - len(blob) % 26
    for i in range(0, usable, 26):
        port = (blob[i + 24] << 8) | blob[i + 25]
        if port == 0:
            continue
        out.append(NodeInfo(blob[i : i + 20], (socket.inet_ntoa(blob[i + 20 : i + 24]), port)))
    return out

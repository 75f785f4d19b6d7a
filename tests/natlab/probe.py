"""Measure a lab router the way RFC 4787 defines its behaviour: a UDP reflector.

How this works. A client in the home sends one datagram from one socket to reflector A
and to reflector B (two public addresses); each reports the source it saw. The same
external port towards both is endpoint-independent mapping (RFC 4787 section 4.1).
Then three public sockets send to the port A saw: A itself (control: always allowed),
A's address from another port, and a third address the client never sent to. What gets
in is the filtering (section 5). Last, an unsolicited datagram to a closed port on the
router's own WAN address: a router that drops WAN input stays silent, a host without
that rule answers ICMP port unreachable (the public host is the control).

Everything runs in the calling thread with blocking sockets made inside the namespaces
(:meth:`Lab.inside`): no threads, no processes, about a second per router.
"""

from __future__ import annotations

import socket
from dataclasses import dataclass

from natlab.lab import HOME_IP, PUBLIC_ADDRS, Home, Lab

__all__ = ["RouterBehaviour", "input_dropped", "measure_router", "tcp_through"]

WAIT = 0.3  # seconds to wait for a datagram that a filter may drop
REFLECTOR_PORT = 3478  # STUN's port, for the look of it


@dataclass(frozen=True)
class RouterBehaviour:
    seen_by_a: tuple[str, int]
    seen_by_b: tuple[str, int]
    internal_port: int
    other_port_gets_in: bool  # A's address, another port
    other_address_gets_in: bool  # an address the client never sent to
    input_dropped: bool

    @property
    def endpoint_independent_mapping(self) -> bool:
        return self.seen_by_a == self.seen_by_b

    @property
    def port_preserved(self) -> bool:
        return self.seen_by_a[1] == self.internal_port

    @property
    def filtering(self) -> str:
        """RFC 4787 section 5 in words: who may send to a mapping."""
        if self.other_address_gets_in:
            return "endpoint-independent"
        if self.other_port_gets_in:
            return "address-dependent"
        return "address-and-port-dependent"


def _udp(lab: Lab, ns: str, addr: tuple[str, int]) -> socket.socket:
    with lab.inside(ns):
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(addr)  # the socket is in ``ns`` for good; binding needs no setns
    sock.settimeout(WAIT)
    return sock


def _received(sock: socket.socket) -> set[bytes]:
    got: set[bytes] = set()
    while True:
        try:
            got.add(sock.recv(64))
        except TimeoutError:
            return got


def input_dropped(lab: Lab, target_ip: str, port: int = 9) -> bool:
    """True if a datagram to a closed port of ``target_ip`` draws no ICMP unreachable."""
    with lab.inside(lab.ns("pub")):
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    with sock:
        sock.settimeout(WAIT)
        sock.connect((target_ip, port))
        sock.send(b"hello?")
        try:
            sock.recv(64)
        except ConnectionRefusedError:
            return False  # the ICMP port unreachable came back: input was not dropped
        except TimeoutError:
            return True
    return False  # something answered: certainly not dropped


def _tcp(lab: Lab, ns: str, addr: tuple[str, int]) -> socket.socket:
    with lab.inside(ns):
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.settimeout(WAIT)
    sock.bind(addr)
    return sock


def tcp_through(lab: Lab, home: Home) -> tuple[tuple[str, int], bool]:
    """TCP through ``home``'s router: the source a public server sees for an outbound
    connection, and whether an unsolicited inbound connection to the same port gets in."""
    server = _tcp(lab, lab.ns("pub"), (PUBLIC_ADDRS[0], 0))
    listener = _tcp(lab, home.ns, (HOME_IP, 0))
    client = _tcp(lab, home.ns, (HOME_IP, 0))
    dialer = _tcp(lab, lab.ns("pub"), (PUBLIC_ADDRS[2], 0))
    try:
        server.listen()
        listener.listen()
        client.connect(server.getsockname())
        accepted, seen = server.accept()
        accepted.close()
        try:
            dialer.connect((home.wan_ip, listener.getsockname()[1]))
        except (TimeoutError, ConnectionRefusedError):
            return (seen[0], seen[1]), False
        return (seen[0], seen[1]), True
    finally:
        for sock in (server, listener, client, dialer):
            sock.close()


def measure_router(lab: Lab, home: Home) -> RouterBehaviour:
    """Measure ``home``'s router with reflectors on the lab's public addresses."""
    a_ip, b_ip, c_ip = PUBLIC_ADDRS
    pub = lab.ns("pub")
    socks = {
        "a": _udp(lab, pub, (a_ip, REFLECTOR_PORT)),
        "a2": _udp(lab, pub, (a_ip, REFLECTOR_PORT + 1)),
        "b": _udp(lab, pub, (b_ip, REFLECTOR_PORT)),
        "c": _udp(lab, pub, (c_ip, REFLECTOR_PORT)),
    }
    client = _udp(lab, home.ns, (HOME_IP, 0))
    try:
        client.sendto(b"map", (a_ip, REFLECTOR_PORT))
        client.sendto(b"map", (b_ip, REFLECTOR_PORT))
        _, seen_a = socks["a"].recvfrom(64)
        _, seen_b = socks["b"].recvfrom(64)
        for name in ("a2", "c", "a"):
            socks[name].sendto(name.encode(), seen_a)
        got = _received(client)
        assert b"a" in got, f"{home.nat}: the reflector's own answer did not get back"
        return RouterBehaviour(
            seen_by_a=(seen_a[0], seen_a[1]),
            seen_by_b=(seen_b[0], seen_b[1]),
            internal_port=client.getsockname()[1],
            other_port_gets_in=b"a2" in got,
            other_address_gets_in=b"c" in got,
            input_dropped=input_dropped(lab, home.wan_ip),
        )
    finally:
        client.close()
        for sock in socks.values():
            sock.close()

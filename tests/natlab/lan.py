"""Peerings on the lab's internet-less LAN (:func:`natlab.lab.build_lan`): one node per
host, no DHT at all, LAN announcements the only way to meet. For the LAN test and the
LAN benchmark (``bench/lan.py``)."""

from __future__ import annotations

import asyncio
import socket
import time
from dataclasses import dataclass, field

from btchat.discovery.lan_service import LanConfig
from btchat.discovery.rendezvous import FixedDirectory
from btchat.identity.keys import DeviceCertificate, DeviceKey, Identity
from btchat.net.transport import TcpDialer
from btchat.node.peering import Peering, PeeringConfig
from btchat.session.core import SessionConfig
from natlab.lab import LAN_ADDRS, Lab

__all__ = ["LanNode", "start_lan_node"]


@dataclass
class LanNode:
    """One host's peering and what it heard: when each contact came up (loop time)."""

    identity: Identity
    cert: DeviceCertificate
    directory: FixedDirectory
    peering: Peering
    up: dict[bytes, float] = field(default_factory=dict)
    data: list[bytes] = field(default_factory=list)

    @property
    def pk(self) -> bytes:
        return self.identity.public_key


def _ns_socket(lab: Lab, ns: str) -> socket.socket:
    with lab.inside(ns):
        return socket.socket(socket.AF_INET, socket.SOCK_STREAM)


async def start_lan_node(
    lab: Lab,
    host: int,
    identity: Identity,
    contacts: list[bytes],
    *,
    interval: float = 2.0,
) -> LanNode:
    """A started peering on LAN host ``host`` (``lan<host>``, :data:`LAN_ADDRS`) that
    knows ``contacts`` by key only (no certificate) and has no DHT."""
    ns, ip = lab.ns(f"lan{host}"), LAN_ADDRS[host]
    device = DeviceKey.generate()
    cert = identity.certify(device, int(time.time()))
    directory = FixedDirectory(list(contacts))
    loop = asyncio.get_running_loop()
    up: dict[bytes, float] = {}
    data: list[bytes] = []
    config = PeeringConfig(
        host=ip,
        dial_timeout=2.0,
        session=SessionConfig(handshake_timeout=3.0),
        lan=LanConfig(interface=ip, interval=interval, min_interval=min(0.5, interval)),
    )
    peering = Peering(
        identity,
        device,
        cert,
        None,  # no DHT at all: the LAN is all there is
        config,
        contacts=directory,
        on_established=lambda pk: up.setdefault(pk, loop.time()),  # type: ignore[func-returns-value]
        on_closed=lambda pk, reason: None,
        on_data=lambda pk, dev, payload: data.append(payload),
        dialer=TcpDialer(timeout=2.0, make_socket=lambda: _ns_socket(lab, ns)),
    )
    with lab.inside(ns):
        await peering.start()
    return LanNode(identity, cert, directory, peering, up, data)

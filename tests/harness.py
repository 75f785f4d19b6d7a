"""Shared test helpers: pairs of sans-I/O cores, event draining, waiting on a predicate.

Every test file imports these instead of keeping its own copy (``tests/conftest.py``
puts this folder on ``sys.path``, so ``from harness import ...`` works from any
subfolder too).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import struct
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar

import pytest

from btchat.codec.bencode import decode, encode
from btchat.dht.node import DhtNode
from btchat.discovery.rendezvous import FixedDirectory
from btchat.identity.keys import DeviceCertificate, DeviceKey, Identity
from btchat.net.relay_core import RelayLimits
from btchat.net.transport import Dialer
from btchat.node.peering import Peering, PeeringConfig
from btchat.sansio import TimedCore, drain_events
from btchat.session.core import SessionConfig
from btchat.storage import Database, StoreError

__all__ = [
    "ByteCore",
    "FaultyDatabase",
    "PeerNode",
    "events",
    "in_ci",
    "peer_node",
    "raw_query",
    "skip_unless_ci",
    "split_frames",
    "transfer",
    "until",
    "wait_for",
]

E = TypeVar("E")


class ByteCore(Protocol):
    def receive_data(self, data: bytes, now: float) -> None: ...

    def data_to_send(self) -> bytes: ...


def transfer(
    a: ByteCore, b: ByteCore, now: float = 0.0, log: list[tuple[str, bytes]] | None = None
) -> int:
    """Move bytes both ways until neither side has anything to send; returns bytes moved.

    With ``log``, every chunk moved is recorded as ``("a", bytes)`` (sent by ``a``) or
    ``("b", bytes)``.
    """
    moved = 0
    while True:
        ab, ba = a.data_to_send(), b.data_to_send()
        if not ab and not ba:
            return moved
        if log is not None:
            log += [("a", ab)] if ab else []
            log += [("b", ba)] if ba else []
        if ab:
            b.receive_data(ab, now)
        if ba:
            a.receive_data(ba, now)
        moved += len(ab) + len(ba)


def events(core: TimedCore[E] | Any) -> list[E]:
    """Every event the core has queued, oldest first."""
    return list(drain_events(core))


def split_frames(data: bytes, *, keep_prefix: bool = True) -> list[bytes]:
    """Cut a byte stream of ``length:uint16be || message`` frames into its frames."""
    frames, pos = [], 0
    while pos < len(data):
        (length,) = struct.unpack_from(">H", data, pos)
        start = pos if keep_prefix else pos + 2
        frames.append(data[start : pos + 2 + length])
        pos += 2 + length
    assert pos == len(data), "the stream does not end on a frame boundary"
    return frames


async def wait_for(pred: Callable[[], bool], timeout: float, interval: float = 0.05) -> bool:
    """Poll ``pred`` until it holds (True) or ``timeout`` seconds pass (False)."""
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(interval)
    return True


async def until(pred: Callable[[], bool], timeout: float, what: str) -> None:
    """Like :func:`wait_for`, but fail the test, naming ``what``, on time-out."""
    if not await wait_for(pred, timeout):
        raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def in_ci() -> bool:
    """True under CI (``CI`` set, as CI runs ``.ci/run``)."""
    return os.environ.get("CI", "").lower() not in ("", "0", "false")


def skip_unless_ci(reason: str) -> None:
    """Skip a test whose system parts are missing here, saying what is missing; under CI,
    where ``scripts/setup`` installs them, fail instead: a skipped test proves nothing."""
    if in_ci():
        pytest.fail(f"CI must run this test, but {reason}")
    pytest.skip(reason)


@dataclass
class PeerNode:
    """One device's :class:`Peering` on loopback, recording what it hears; no rendezvous
    runs unless ``dht`` is given, so tests dial by hand (``peering.dial``/``reach``)."""

    identity: Identity
    device: DeviceKey
    cert: DeviceCertificate
    contacts: list[bytes]
    dialer: Dialer | None = None
    dht: Any = None
    relay: RelayLimits = field(default_factory=RelayLimits)
    up: list[bytes] = field(default_factory=list)
    down: list[bytes] = field(default_factory=list)
    switched: list[bytes] = field(default_factory=list)
    data: list[tuple[bytes, bytes, bytes]] = field(default_factory=list)
    #: Our identity's devices (``OwnDevices`` or a stand-in), for sessions between them.
    own: Any = None
    peering: Peering = field(init=False)
    directory: FixedDirectory = field(init=False)

    def __post_init__(self) -> None:
        self.directory = FixedDirectory(self.contacts)
        self.peering = Peering(
            self.identity,
            self.device,
            self.cert,
            self.dht,
            PeeringConfig(
                host="127.0.0.1",
                round_interval=3600.0,
                dial_timeout=2.0,
                session=SessionConfig(handshake_timeout=3.0),
                relay=self.relay,
            ),
            contacts=self.directory,
            on_established=self.up.append,
            on_closed=lambda pk, reason: self.down.append(pk),
            on_data=lambda pk, device, payload: self.data.append((pk, device, payload)),
            on_switched=self.switched.append,
            dialer=self.dialer,
            own_devices=self.own,
        )

    @property
    def addr(self) -> tuple[str, int]:
        return ("127.0.0.1", self.peering.port)


def peer_node(
    identity: Identity,
    contacts: list[bytes],
    *,
    dialer: Dialer | None = None,
    dht: Any = None,
    relay: RelayLimits | None = None,
) -> PeerNode:
    """A :class:`PeerNode` for a new device of ``identity``."""
    device = DeviceKey.generate()
    cert = identity.certify(device, int(time.time()))
    return PeerNode(identity, device, cert, contacts, dialer, dht, relay or RelayLimits())


class FaultyDatabase:
    """A :class:`Database` whose write transactions fail with ``fault`` while it is set,
    before anything is written, as SQLite does on a full disk; reads still work.

    Swap it in with ``store.db = FaultyDatabase(store.db)``; ``refused`` counts attempts.
    """

    def __init__(self, inner: Database) -> None:
        self.inner = inner
        self.fault: type[StoreError] | None = None
        self.refused = 0

    @contextlib.contextmanager
    def transaction(self) -> Iterator[Any]:
        if self.fault is not None:
            self.refused += 1
            raise self.fault("message database error: database or disk is full")
        with self.inner.transaction() as conn:
            yield conn

    def write(self, sql: str, params: Any = ()) -> int:
        with self.transaction() as conn:
            return int(conn.execute(sql, tuple(params)).rowcount)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


def raw_query(
    node: DhtNode, src: tuple[str, int], method: bytes, args: dict[bytes, Any], **top: Any
) -> dict[bytes, Any] | None:
    """Send one hand-made KRPC query to a sans-I/O DHT node; its decoded reply, if any."""
    msg = {b"t": b"xy", b"y": b"q", b"q": method, b"a": {b"id": b"R" * 20, **args}}
    msg.update({k.encode(): v for k, v in top.items()})
    node.receive_datagram(encode(msg), src, 0.0)
    out = node.datagrams_to_send()
    assert all(dst == src for _, dst in out)
    return decode(out[0][0]) if out else None

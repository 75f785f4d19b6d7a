"""Shared test helpers: pairs of sans-I/O cores, event draining, waiting on a predicate.

Every test file imports these instead of keeping its own copy (``tests/conftest.py``
puts this folder on ``sys.path``, so ``from harness import ...`` works from any
subfolder too).
"""

from __future__ import annotations

import asyncio
import os
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar

import pytest

from btchat.identity.keys import DeviceCertificate
from btchat.sansio import TimedCore, drain_events

__all__ = [
    "ByteCore",
    "ContactList",
    "events",
    "in_ci",
    "skip_unless_ci",
    "split_frames",
    "transfer",
    "until",
    "wait_for",
]

E = TypeVar("E")


@dataclass
class ContactList:
    """A contact book for peering and rendezvous (``discovery.rendezvous.Directory``):
    whom to look for (the list itself, so a test may change it) and their certificates."""

    contacts: list[bytes]
    certs: dict[bytes, list[DeviceCertificate]] = field(default_factory=dict)

    def reachable(self) -> list[bytes]:
        return list(self.contacts)

    def certs_of(self, contact: bytes) -> list[DeviceCertificate]:
        return list(self.certs.get(contact, []))

    def save_certs(self, contact: bytes, certs: list[DeviceCertificate]) -> None:
        self.certs[contact] = list(certs)


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

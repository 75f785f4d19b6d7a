"""The one driving interface of every sans-I/O core in btchat.

Why one shape: a shell (asyncio glue, the simulator, a unit test) should drive any core
the same way, so that a new transport or a fake clock needs no new glue. The shape is
aioquic's: time goes in through ``handle_timer(now)`` and out as ``get_timer()`` (the
one next deadline, or ``None``); everything a core wants done goes out through
``next_event()`` until it returns ``None``. Bytes are the exception only for speed: a
byte-stream core hands its output to ``data_to_send()`` and a datagram core to
``datagrams_to_send()``, since a write per event would cost a system call each.

What goes in besides time is the core's own business (``receive_data``,
``receive_datagram``, or calls such as ``send``/``deposit``), always with ``now``.
No core reads a clock, imports asyncio or touches a socket; ``tests/test_layers.py``
fails when one does.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Protocol, TypeVar, runtime_checkable

__all__ = ["DatagramCore", "StreamCore", "TimedCore", "drain_events"]

E_co = TypeVar("E_co", covariant=True)


@runtime_checkable
class TimedCore(Protocol[E_co]):
    """A core with a clock input and an event output."""

    def get_timer(self) -> float | None:
        """The next deadline on the caller's clock, or ``None`` when nothing is due."""
        ...

    def handle_timer(self, now: float) -> None:
        """Run everything due at or before ``now``."""
        ...

    def next_event(self) -> E_co | None:
        """The oldest event not yet taken, or ``None``."""
        ...


@runtime_checkable
class StreamCore(TimedCore[E_co], Protocol[E_co]):
    """A core that speaks over one reliable, ordered byte stream."""

    def receive_data(self, data: bytes, now: float) -> None: ...

    def data_to_send(self) -> bytes: ...

    def connection_lost(self, now: float) -> None: ...


@runtime_checkable
class DatagramCore(TimedCore[E_co], Protocol[E_co]):
    """A core that speaks in datagrams (UDP, or the simulated network)."""

    def receive_datagram(self, data: bytes, addr: tuple[str, int], now: float) -> None: ...

    def datagrams_to_send(self) -> list[tuple[bytes, tuple[str, int]]]: ...


def drain_events(core: TimedCore[E_co]) -> Iterator[E_co]:
    """Every event the core has queued, oldest first."""
    while (event := core.next_event()) is not None:
        yield event

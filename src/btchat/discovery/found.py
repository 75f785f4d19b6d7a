"""The one thing every discovery source reports: an address found for an infohash.

LAN discovery, trackers and the DHT each find peer addresses their own way; whoever
asked (a channel, a contact's rendezvous) gets them in one shape, through one callback,
and need not know which source it was (``source`` is there for counting).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

__all__ = ["Found", "OnFound", "Source"]

#: Where an address came from.
Source = Literal["dht", "tracker", "lsd"]


@dataclass(frozen=True, slots=True)
class Found:
    """``addr`` (IP, port) announced itself for ``infohash``; learned by ``source``."""

    infohash: bytes
    addr: tuple[str, int]
    source: Source


#: How a discovery source reports to whoever asked it.
OnFound = Callable[[Found], None]

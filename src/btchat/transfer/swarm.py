"""One file fetched from many sources (a channel's members), sans I/O.

How this works: a :class:`Swarm` knows the manifest, which pieces we hold (a
:class:`~btchat.transfer.download.Bitmap` the shell persists, so a restart resumes) and,
once fetched from any source and checked against the offered root, the piece layer.
Each source (a member's link) tells us which pieces it holds (BITFIELD, then HAVE per
new piece). :meth:`Swarm.requests` says what to send to whom: GET_LAYER to one source
at a time until the layer is in, then GETs for missing pieces, **rarest first** (fewest
sources holding it; ties broken by a fixed random order, so fetchers of one file spread
out), each from the least loaded source holding it, keeping at most ``per_source``
pieces in flight per source. :meth:`Swarm.on_piece` verifies a piece against its layer
hash before the shell may write it. A bad piece is refused and counted against the
source that sent it; that source is not asked for that piece again, so it is fetched
from another, and a source with ``max_bad`` bad pieces (or layers) is dropped for good.
A lost source (link down, CANCEL) gives back what was in flight; a request unanswered
after ``timeout`` seconds is asked again, elsewhere if possible. A piece we hold is
never asked for again.
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Hashable
from dataclasses import dataclass, field

from btchat.transfer import wire
from btchat.transfer.download import Bitmap, Verdict, layer_fits, piece_fits
from btchat.transfer.manifest import Manifest

__all__ = ["MAX_BAD_PER_SOURCE", "PER_SOURCE", "REQUEST_TIMEOUT", "Swarm"]

#: Pieces in flight per source (several, so one round trip does not stall a source).
PER_SOURCE = 8
#: Bad pieces or layers from one source before it is dropped for this file.
MAX_BAD_PER_SOURCE = 4
#: Seconds a request may go unanswered before it is asked again.
REQUEST_TIMEOUT = 60.0
#: HAVEs (of pieces others held already) before the rarest-first order is sorted again.
REORDER_AFTER = 32


@dataclass(eq=False)
class _Source:
    have: Bitmap
    in_flight: dict[int, float] = field(default_factory=dict)  # index -> asked at
    bad: int = 0
    refused: set[int] = field(default_factory=set)  # pieces it sent bad once


class Swarm:
    def __init__(
        self,
        offer: bytes,
        manifest: Manifest,
        have: Bitmap,
        layer: list[bytes] | None = None,
        *,
        per_source: int = PER_SOURCE,
        max_bad: int = MAX_BAD_PER_SOURCE,
        timeout: float = REQUEST_TIMEOUT,
        rng: random.Random | None = None,
    ) -> None:
        if have.pieces != manifest.pieces:
            raise ValueError("bitmap does not fit the manifest")
        self.offer = offer
        self.manifest = manifest
        self.have = have
        self.per_source = per_source
        self.max_bad = max_bad
        self.timeout = timeout
        self.stats: Counter[str] = Counter()
        self.sources: dict[Hashable, _Source] = {}
        self.banned: set[Hashable] = set()
        self.layer: list[bytes] | None = layer if manifest.pieces else []
        if self.layer is not None and not layer_fits(self.manifest, self.layer):
            self.layer = None  # a stored layer that does not check out is fetched again
        self._layer_asked: tuple[Hashable, float] | None = None
        self._avail = [0] * manifest.pieces
        self._order: list[int] = []  # see _ordered
        self._start = 0
        self._stale = True
        self._changes = 0
        order = list(range(manifest.pieces))
        if rng is not None:
            rng.shuffle(order)
        self._rank = [0] * manifest.pieces
        for rank, index in enumerate(order):
            self._rank[index] = rank

    # ------------------------------------------------------------------ state

    @property
    def complete(self) -> bool:
        return self.have.complete

    @property
    def in_flight(self) -> int:
        return sum(len(s.in_flight) for s in self.sources.values())

    def availability(self, index: int) -> int:
        """Sources (not dropped) that hold piece ``index``."""
        return self._avail[index]

    # ------------------------------------------------------------------ sources

    def add_source(self, key: Hashable, bits: bytes) -> bool:
        """A source's BITFIELD (again: replaces the old one); False if malformed or dropped."""
        if key in self.banned:
            return False
        try:
            have = Bitmap(self.manifest.pieces, bits or None)
        except ValueError:
            if bits:
                self.stats["bad_bitfield"] += 1
                return False
            have = Bitmap(self.manifest.pieces)
        if have.pieces % 8 and bits and bits[-1] & (0xFF >> (have.pieces % 8)):
            self.stats["bad_bitfield"] += 1  # bits set past the last piece
            return False
        old = self.sources.get(key)
        if old is not None:
            self._count(old.have, -1)
            old.have = have
        else:
            self.sources[key] = _Source(have)
        self._count(have, +1)
        return True

    def _count(self, have: Bitmap, delta: int) -> None:
        self._stale = True
        if have.count:
            for i in range(self.manifest.pieces):
                if have[i]:
                    self._avail[i] += delta

    def on_have(self, key: Hashable, index: int) -> bool:
        """A source now holds piece ``index``; False if unknown source or bad index."""
        source = self.sources.get(key)
        if source is None:
            return False
        if not 0 <= index < self.manifest.pieces:
            self.stats["bad_have"] += 1
            return False
        if not source.have[index]:
            source.have.set(index)
            self._avail[index] += 1
            if self._avail[index] == 1:
                self._stale = True  # a piece nobody held before: ask for it now
            else:
                self._changes += 1
        return True

    def remove_source(self, key: Hashable) -> None:
        """The source is gone (link down, or it said it serves nothing): what was in
        flight from it is asked elsewhere."""
        source = self.sources.pop(key, None)
        if source is not None:
            self._count(source.have, -1)
        if self._layer_asked is not None and self._layer_asked[0] == key:
            self._layer_asked = None

    def _bad(self, key: Hashable, what: str) -> None:
        self.stats["bad"] += 1
        self.stats[what] += 1
        source = self.sources.get(key)
        if source is None:
            return
        source.bad += 1
        if source.bad >= self.max_bad:
            self.stats["sources_dropped"] += 1
            self.remove_source(key)
            self.banned.add(key)

    # ------------------------------------------------------------------ requests

    def expire(self, now: float) -> None:
        """Forget requests older than ``timeout`` (asked again by :meth:`requests`)."""
        horizon = now - self.timeout
        for source in self.sources.values():
            late = [i for i, at in source.in_flight.items() if at < horizon]
            for i in late:
                del source.in_flight[i]
            self.stats["timeouts"] += len(late)
        if self._layer_asked is not None and self._layer_asked[1] < horizon:
            self._layer_asked = None
            self.stats["timeouts"] += 1

    def _ordered(self) -> list[int]:
        """Missing pieces some source holds, rarest first: sorted again after a source
        came or went, a piece became available, or REORDER_AFTER other HAVEs (so a busy
        swarm does not sort on every HAVE); pieces held since are skipped from the front."""
        if self._stale or self._changes >= REORDER_AFTER:
            self._order = sorted(
                (i for i in range(self.manifest.pieces) if not self.have[i] and self._avail[i]),
                key=lambda i: (self._avail[i], self._rank[i]),
            )
            self._start, self._stale, self._changes = 0, False, 0
        order = self._order
        while self._start < len(order) and self.have[order[self._start]]:
            self._start += 1
        return order

    def forget_requests(self) -> None:
        """What is in flight will not be taken (paused): ask again from the start."""
        for source in self.sources.values():
            source.in_flight.clear()
        self._layer_asked = None

    def requests(self, now: float) -> list[tuple[Hashable, wire.Message]]:
        """(source, message) pairs to send now; none while complete or waiting."""
        if self.complete or not self.sources:
            return []
        if self.layer is None:
            if self._layer_asked is not None:
                return []
            # Anyone who holds a piece holds the layer (it checked every piece by it).
            holders = [k for k, s in self.sources.items() if s.have.count]
            if not holders:
                return []
            key = min(holders, key=lambda k: self.sources[k].bad)
            self._layer_asked = (key, now)
            return [(key, wire.GetLayer(self.offer))]
        room = {k: self.per_source - len(s.in_flight) for k, s in self.sources.items()}
        open_ = {k: self.sources[k] for k, r in room.items() if r > 0}
        if not open_:
            return []
        flying: set[int] = set()
        for s in self.sources.values():
            flying.update(s.in_flight)
        order = self._ordered()
        wanted: dict[Hashable, list[int]] = {}
        held = 0
        for pos in range(self._start, len(order)):
            i = order[pos]
            if self.have[i]:
                held += 1
                continue
            if i in flying:
                continue
            holders = [k for k, s in open_.items() if s.have[i] and i not in s.refused]
            if not holders:
                continue
            key = max(holders, key=lambda k: room[k])  # the least loaded
            room[key] -= 1
            if not room[key]:
                del open_[key]
            wanted.setdefault(key, []).append(i)
            self.sources[key].in_flight[i] = now
            if not open_:
                break
        if held > 64:  # held pieces behind a slow one at the front: drop them from the order
            self._order = [i for i in order[self._start :] if not self.have[i]]
            self._start = 0
        out: list[tuple[Hashable, wire.Message]] = []
        for key, indices in wanted.items():
            self.stats["requested"] += len(indices)
            for k in range(0, len(indices), wire.MAX_GET):
                out.append((key, wire.Get(self.offer, tuple(indices[k : k + wire.MAX_GET]))))
        return out

    # ------------------------------------------------------------------ answers

    def on_layer(self, key: Hashable, hashes: list[bytes]) -> bool:
        """A piece layer from ``key``; False (counted against it) if it does not check."""
        if self._layer_asked is not None and self._layer_asked[0] == key:
            self._layer_asked = None
        if self.layer is not None:
            return True
        if not layer_fits(self.manifest, hashes):
            self._bad(key, "bad_layer")
            return False
        self.layer = list(hashes)
        return True

    def wants(self, key: Hashable, index: int, length: int) -> bool:
        """Would piece ``index`` of ``length`` bytes from ``key`` be checked now (asked of
        it, not held, the right length)? Only then is it worth hashing."""
        source = self.sources.get(key)
        return (
            self.layer is not None
            and source is not None
            and 0 <= index < self.manifest.pieces
            and index in source.in_flight
            and not self.have[index]
            and length == self.manifest.piece_length(index)
        )

    def expected(self, index: int) -> bytes:
        """The piece hash piece ``index`` must have (once the layer is held)."""
        assert self.layer is not None
        return self.layer[index]

    def on_piece(
        self, key: Hashable, index: int, data: bytes, digest: bytes | None = None
    ) -> Verdict:
        """Check one piece from ``key``; only an ``ok`` piece may be written (then
        :meth:`written`). ``bad``: refused, counted against ``key``, asked elsewhere.
        ``digest``: the piece hash of ``data`` if the caller computed it already."""
        source = self.sources.get(key)
        if not 0 <= index < self.manifest.pieces or self.layer is None or source is None:
            self.stats["unexpected"] += 1
            return Verdict("unexpected", index)
        if source.in_flight.pop(index, None) is None:
            self.stats["unexpected"] += 1
            return Verdict("unexpected", index)
        if self.have[index]:
            self.stats["duplicate"] += 1
            return Verdict("duplicate", index)
        if not piece_fits(self.manifest, self.layer, index, data, digest):
            source.refused.add(index)
            self._bad(key, "bad_piece")
            return Verdict("bad", index)
        return Verdict("ok", index)

    def written(self, index: int) -> None:
        """The shell wrote piece ``index``: it is held from now on."""
        self.have.set(index)
        self.stats["verified"] += 1

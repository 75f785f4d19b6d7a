"""The receiving side of one transfer, sans I/O: what to ask for next, what to keep.

How this works: a :class:`Download` knows the manifest, which pieces it has (a
:class:`Bitmap` the shell persists) and, once fetched and checked against the offered
root, the piece layer. :meth:`Download.requests` says what to send: first GET_LAYER,
then GETs for missing pieces not already in flight, keeping at most ``window`` pieces
in flight. :meth:`Download.on_piece` verifies a piece against its layer hash before the
shell may write it; a bad piece is refused, counted, and asked for again (a source that
sends :data:`MAX_BAD_PIECES` bad ones fails the transfer). A piece we have is never
asked for again, so a piece is fetched once however often the session drops
(:meth:`Download.session_lost` forgets only what was in flight).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

from btchat.transfer import wire
from btchat.transfer.manifest import Manifest
from btchat.transfer.tree import layer_root, piece_hash

__all__ = ["MAX_BAD_PIECES", "Bitmap", "Download", "Verdict", "layer_fits", "piece_fits"]

#: Bad pieces (or layers) from one source before the transfer is given up.
MAX_BAD_PIECES = 16


class Bitmap:
    """Which pieces are held; its bytes are what the shell persists (bit 7 of byte 0 is piece 0)."""

    def __init__(self, pieces: int, data: bytes | None = None) -> None:
        self.pieces = pieces
        size = (pieces + 7) // 8
        if data is not None and len(data) != size:
            raise ValueError("bitmap of the wrong length")
        self._bits = bytearray(data if data is not None else size)
        self.count = sum(self[i] for i in range(pieces))

    def __getitem__(self, index: int) -> bool:
        return bool(self._bits[index >> 3] & (0x80 >> (index & 7)))

    def set(self, index: int) -> None:
        if not self[index]:
            self._bits[index >> 3] |= 0x80 >> (index & 7)
            self.count += 1

    def to_bytes(self) -> bytes:
        return bytes(self._bits)

    @property
    def complete(self) -> bool:
        return self.count == self.pieces


def layer_fits(manifest: Manifest, hashes: list[bytes]) -> bool:
    """Is ``hashes`` the piece layer of the offered file (one per piece, up to its root)?"""
    m = manifest
    return len(hashes) == m.pieces and layer_root(hashes, m.piece_size) == m.root


def piece_fits(
    manifest: Manifest, layer: list[bytes], index: int, data: bytes, digest: bytes | None = None
) -> bool:
    """Are ``data`` the bytes of piece ``index`` (its length, and its hash in ``layer``)?
    ``digest``: their piece hash, if it was computed already (off the event loop)."""
    m = manifest
    if len(data) != m.piece_length(index):
        return False
    if digest is None:
        digest = piece_hash(data, m.pieces, m.piece_size)
    return digest == layer[index]


@dataclass(frozen=True)
class Verdict:
    """What became of a received piece: ``ok`` (write it), ``bad``, ``duplicate``,
    ``unexpected`` (never asked for), ``failed`` (bad once too often)."""

    outcome: str
    index: int


class Download:
    def __init__(
        self,
        offer: bytes,
        manifest: Manifest,
        have: Bitmap,
        layer: list[bytes] | None = None,
        *,
        window: int = 16,
    ) -> None:
        if have.pieces != manifest.pieces:
            raise ValueError("bitmap does not fit the manifest")
        self.offer = offer
        self.manifest = manifest
        self.have = have
        self.layer = layer if manifest.pieces else []
        self.window = window
        self.stats: Counter[str] = Counter()
        self._in_flight: set[int] = set()
        self._layer_asked = False
        self._next = 0  # lowest index that may be missing
        if self.layer is not None and not self._layer_ok(self.layer):
            self.layer = None  # a stored layer that does not check out is fetched again

    @property
    def complete(self) -> bool:
        return self.have.complete

    @property
    def failed(self) -> bool:
        return self.stats["bad"] >= MAX_BAD_PIECES

    @property
    def in_flight(self) -> int:
        return len(self._in_flight)

    def _layer_ok(self, hashes: list[bytes]) -> bool:
        return layer_fits(self.manifest, hashes)

    def requests(self) -> list[wire.Message]:
        """The messages to send now (none while complete, failed or waiting)."""
        if self.complete or self.failed:
            return []
        if self.layer is None:
            if self._layer_asked:
                return []
            self._layer_asked = True
            return [wire.GetLayer(self.offer)]
        room = self.window - len(self._in_flight)
        wanted: list[int] = []
        i = self._next
        while room > 0 and i < self.manifest.pieces:
            if not self.have[i] and i not in self._in_flight:
                wanted.append(i)
                room -= 1
            i += 1
        while self._next < self.manifest.pieces and self.have[self._next]:
            self._next += 1
        self._in_flight.update(wanted)
        self.stats["requested"] += len(wanted)
        return [
            wire.Get(self.offer, tuple(wanted[k : k + wire.MAX_GET]))
            for k in range(0, len(wanted), wire.MAX_GET)
        ]

    def on_layer(self, hashes: list[bytes]) -> bool:
        """The piece layer arrived; False (counted, asked again) if it does not check."""
        if self.layer is not None:
            return True
        self._layer_asked = False
        if not self._layer_ok(hashes):
            self.stats["bad"] += 1
            self.stats["bad_layer"] += 1
            return False
        self.layer = list(hashes)
        return True

    def wants(self, index: int, length: int) -> bool:
        """Would a piece ``index`` of ``length`` bytes be checked now (asked for, not
        held, the right length)? Only then is it worth hashing."""
        m = self.manifest
        return (
            self.layer is not None
            and 0 <= index < m.pieces
            and not self.have[index]
            and index in self._in_flight
            and length == m.piece_length(index)
        )

    def expected(self, index: int) -> bytes:
        """The piece hash piece ``index`` must have (once the layer is held)."""
        assert self.layer is not None
        return self.layer[index]

    def on_piece(self, index: int, data: bytes, digest: bytes | None = None) -> Verdict:
        """Check one piece; only an ``ok`` piece may be written (then :meth:`written`).

        ``digest``: the piece hash of ``data`` if the caller computed it already."""
        if not 0 <= index < self.manifest.pieces or self.layer is None:
            self.stats["unexpected"] += 1
            return Verdict("unexpected", index)
        if self.have[index]:
            self.stats["duplicate"] += 1
            return Verdict("duplicate", index)
        if index not in self._in_flight:
            self.stats["unexpected"] += 1
            return Verdict("unexpected", index)
        self._in_flight.discard(index)
        if not piece_fits(self.manifest, self.layer, index, data, digest):
            self.stats["bad"] += 1
            self._next = min(self._next, index)  # asked for again by requests()
            return Verdict("failed" if self.failed else "bad", index)
        return Verdict("ok", index)

    def written(self, index: int) -> None:
        """The shell wrote piece ``index``: it is held from now on."""
        self.have.set(index)
        self.stats["verified"] += 1

    def session_lost(self) -> None:
        """What was in flight will not come: ask again on the next session."""
        self._in_flight.clear()
        self._layer_asked = False
        self._next = 0

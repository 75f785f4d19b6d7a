"""The content id of a file: the root of a SHA-256 hash tree over 16 KiB leaves (BEP 52).

How this works (BEP 52, "merkle tree"): the file is cut into 16 KiB blocks (the last may
be shorter); each leaf is SHA-256 of its block's bytes. The number of leaves is padded
to a power of two with leaves of 32 zero bytes, and each interior node is
SHA-256(left || right). The *piece layer* is the layer whose nodes each cover one piece
(``piece_size / 16 KiB`` leaves); its padding nodes are the roots of all-zero subtrees of
that height. A file of at most one piece has no piece layer of its own: its piece hash is
the root (its leaves are padded only to the next power of two). The empty file, which
BEP 52 leaves out, has no pieces and the root SHA-256(""), by our convention.

The receiver first fetches the piece layer (32 bytes per piece) and checks it against
the root it was offered (:func:`layer_root`); from then on every piece is checked on its
own (:func:`piece_hash`) before a byte of it is written. Only the current piece is ever
in memory, so hashing a file of any size is flat in memory (:class:`PieceHasher`).
"""

from __future__ import annotations

import hashlib

__all__ = [
    "EMPTY_ROOT",
    "LEAF_SIZE",
    "PieceHasher",
    "layer_root",
    "merkle_root",
    "pad_hash",
    "piece_count",
    "piece_hash",
]

#: BEP 52: leaves cover 16 KiB blocks.
LEAF_SIZE = 16 * 1024
HASH_LEN = 32
#: Our convention for the empty file (BEP 52 gives it no root).
EMPTY_ROOT = hashlib.sha256(b"").digest()
_ZERO = bytes(HASH_LEN)


def _h(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


def pad_hash(height: int) -> bytes:
    """Root of a subtree of ``2**height`` all-zero leaf hashes (BEP 52 padding)."""
    pad = _ZERO
    for _ in range(height):
        pad = _h(pad + pad)
    return pad


def _next_pow2(n: int) -> int:
    return 1 if n <= 1 else 1 << (n - 1).bit_length()


def merkle_root(hashes: list[bytes], width: int, pad: bytes = _ZERO) -> bytes:
    """Root over ``hashes`` padded to ``width`` (a power of two) nodes of value ``pad``.

    Padding a level to even length is enough: a subtree of padding hashes to the next
    level's padding value.
    """
    if width < len(hashes) or width & (width - 1):
        raise ValueError("width must be a power of two no smaller than the layer")
    layer = list(hashes)
    while width > 1:
        if len(layer) % 2:
            layer.append(pad)
        layer = [_h(layer[i] + layer[i + 1]) for i in range(0, len(layer), 2)]
        pad = _h(pad + pad)
        width //= 2
    return layer[0] if layer else pad


def piece_count(size: int, piece_size: int) -> int:
    return -(-size // piece_size)


def piece_hash(data: bytes | memoryview, pieces: int, piece_size: int) -> bytes:
    """The piece-layer node of one piece's bytes (of a file of ``pieces`` pieces)."""
    view = memoryview(data)
    leaves = [_h(view[i : i + LEAF_SIZE]) for i in range(0, len(view), LEAF_SIZE)] or [_ZERO]
    width = piece_size // LEAF_SIZE if pieces > 1 else _next_pow2(len(leaves))
    return merkle_root(leaves, width)


def layer_root(layer: list[bytes], piece_size: int) -> bytes:
    """The root of the tree whose piece layer is ``layer`` (EMPTY_ROOT for no pieces)."""
    if not layer:
        return EMPTY_ROOT
    height = (piece_size // LEAF_SIZE).bit_length() - 1
    return merkle_root(layer, _next_pow2(len(layer)), pad_hash(height))


class PieceHasher:
    """Feed a file's bytes in any chunks; collects the piece layer, one piece in memory."""

    def __init__(self, size: int, piece_size: int) -> None:
        self.size = size
        self.piece_size = piece_size
        self.pieces = piece_count(size, piece_size)
        self.layer: list[bytes] = []
        self._buf = bytearray()
        self._fed = 0

    def update(self, data: bytes) -> None:
        self._fed += len(data)
        if self._fed > self.size:
            raise ValueError("more bytes than the size given")
        self._buf += data
        while len(self._buf) >= self.piece_size:
            self.layer.append(
                piece_hash(self._buf[: self.piece_size], self.pieces, self.piece_size)
            )
            del self._buf[: self.piece_size]

    def root(self) -> bytes:
        """The content id, once every byte was fed."""
        if self._fed != self.size:
            raise ValueError(f"fed {self._fed} of {self.size} bytes")
        if self._buf:
            self.layer.append(piece_hash(bytes(self._buf), self.pieces, self.piece_size))
            self._buf.clear()
        return layer_root(self.layer, self.piece_size)
